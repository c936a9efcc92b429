//! Shards (PutShard, GetShard answers), stripe manifests and tx locations.
#![no_main]
use libfuzzer_sys::fuzz_target;
use storage::{Shard, StripeManifest, TxLocation};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Shard::from_bytes(data) {
        let e = s.to_bytes();
        assert_eq!(Shard::from_bytes(&e).expect("re-decodes").to_bytes(), e);
    }
    if let Ok(m) = StripeManifest::decode(data) {
        let e = m.encode();
        assert_eq!(StripeManifest::decode(&e).expect("re-decodes").encode(), e);
    }
    let _ = TxLocation::decode(data);
});

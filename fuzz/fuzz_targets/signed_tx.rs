//! SignedTx and canonical Tx bodies from untrusted bytes (SubmitTx, gossip, archive).
#![no_main]
use dag_core::{SignedTx, Tx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = SignedTx::decode(data) {
        let e = s.encode();
        assert_eq!(SignedTx::decode(&e).expect("re-decodes").encode(), e);
    }
    if let Ok(t) = Tx::decode(data) {
        let e = t.encode();
        assert_eq!(Tx::decode(&e).expect("re-decodes").encode(), e);
    }
});

//! Signed receipts (PoH_ACK) from untrusted light nodes.
#![no_main]
use dag_core::SignedReceipt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = SignedReceipt::decode(data) {
        let e = r.encode();
        assert_eq!(SignedReceipt::decode(&e).expect("re-decodes").encode(), e);
    }
});

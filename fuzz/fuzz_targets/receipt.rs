//! Receipts (PoH_ACK) from untrusted light nodes.
#![no_main]
use dag_core::{Receipt, SignedReceipt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = SignedReceipt::decode(data) {
        let e = r.encode();
        assert_eq!(SignedReceipt::decode(&e).expect("re-decodes").encode(), e);
    }
    if let Ok(r) = Receipt::decode(data) {
        let e = r.encode();
        assert_eq!(Receipt::decode(&e).expect("re-decodes").encode(), e);
    }
});

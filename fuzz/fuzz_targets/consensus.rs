//! Consensus envelopes' messages and records: messages, certificates, signed batches,
//! checkpoints, Merkle proofs.
#![no_main]
use dag_core::consensus::{Certificate, Checkpoint, Message, SignedBatch};
use dag_core::merkle::{ConsistencyProof, InclusionProof};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let e = m.encode();
        assert_eq!(Message::decode(&e).expect("re-decodes").encode(), e);
    }
    if let Ok(c) = Certificate::decode(data) {
        let e = c.encode();
        assert_eq!(Certificate::decode(&e).expect("re-decodes").encode(), e);
    }
    let _ = SignedBatch::decode(data);
    if let Ok(c) = Checkpoint::decode(data, 1024) {
        let e = c.encode();
        assert_eq!(Checkpoint::decode(&e, 1024).expect("re-decodes").encode(), e);
    }
    let _ = InclusionProof::decode(data);
    let _ = ConsistencyProof::decode(data);
});

//! Federation messages: checkpoint headers, certified checkpoints, committee handovers,
//! receipts, tree heads, proofs and a tx's offline proof.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rpc::{
    CertifiedCheckpoint, CertifiedHandover, CheckpointHeader, CommitteeHandover, FederationProof,
    InclusionReceipt, SignedTreeHead, TreeHeadPush, TxProof,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = CheckpointHeader::decode(data) {
        let e = h.encode();
        assert_eq!(CheckpointHeader::decode(&e).expect("re-decodes").encode(), e);
    }
    if let Ok(c) = CertifiedCheckpoint::decode(data) {
        let e = c.encode();
        assert_eq!(CertifiedCheckpoint::decode(&e).expect("re-decodes").encode(), e);
    }
    if let Ok(h) = CommitteeHandover::decode(data) {
        let e = h.encode();
        assert_eq!(CommitteeHandover::decode(&e).expect("re-decodes").encode(), e);
        assert!(h.committee().is_some(), "a decoded handover names a committee");
    }
    if let Ok(c) = CertifiedHandover::decode(data) {
        let e = c.encode();
        assert_eq!(CertifiedHandover::decode(&e).expect("re-decodes").encode(), e);
    }
    let _ = InclusionReceipt::decode(data);
    let _ = SignedTreeHead::decode(data);
    let _ = TreeHeadPush::decode(data);
    let _ = FederationProof::decode(data);
    let _ = TxProof::decode(data);
});

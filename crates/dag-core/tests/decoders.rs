//! Structure-aware decoder properties for every dag-core wire type (see `it/mutate.rs`):
//! tx, signed tx, receipt, vote, batch header, signed batch, certificate, equivocation,
//! checkpoint, inclusion and consistency proofs. The valid starting points are the pinned
//! vectors (real key and signature sizes) and small hand-built values that reach every
//! optional field (object sets, payload, weak links, many votes). One test in its own
//! binary: the counting allocator sees only the decoder it measures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "it/mutate.rs"]
mod mutate;

use dag_core::consensus::{
    BatchDigest, BatchHeader, BatchItem, Certificate, Checkpoint, Equivocation, SignedBatch, Vote,
};
use dag_core::merkle::{ConsistencyProof, InclusionProof, MerkleLog};
use dag_core::{
    AccountId, CityId, Hash32, NodeId, ObjectId, Position, PositionMethod, Receipt, ShardHash,
    SignedReceipt, SignedTx, StripeId, Tx, TxId, TxKind,
};

fn vector(name: &str, pointer: &str) -> Vec<u8> {
    let path = format!("{}/../../tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    hex::decode(v.pointer(pointer).unwrap().as_str().unwrap()).unwrap()
}

/// Short stand-ins for a key and a signature: decoding never verifies, and short values
/// keep every length field within the exhaustive part of the mutations.
fn key(b: u8) -> Vec<u8> {
    vec![b; 40]
}

fn tx() -> Tx {
    Tx::fresh(
        AccountId::from_bytes([1; 32]),
        AccountId::from_bytes([2; 32]),
        5,
        6,
        7,
        CityId::new("JP-13").unwrap(),
        Position::from_degrees(35.0, 139.0).unwrap(),
        PositionMethod::Wifi,
    )
    .with_kind(TxKind::RepairAck)
    .with_read_set(vec![
        ObjectId::from_bytes([3; 32]),
        ObjectId::from_bytes([4; 32]),
    ])
    .with_write_set(vec![ObjectId::from_bytes([5; 32])])
    .with_payload(vec![9; 24])
}

fn header(round: u64, author: u8, weak: bool) -> BatchHeader {
    BatchHeader {
        epoch: 0,
        round,
        author: NodeId::from_bytes([author; 32]),
        timestamp_ms: 1_000,
        parents: (0..3).map(|i| BatchDigest(Hash32([i; 32]))).collect(),
        weak_links: if weak {
            vec![BatchDigest(Hash32([7; 32]))]
        } else {
            Vec::new()
        },
        items: vec![
            BatchItem::Tx(TxId::from_bytes([8; 32])),
            BatchItem::Stripe(StripeId::from_bytes([9; 32])),
        ],
    }
}

fn signed_batch(round: u64, weak: bool) -> SignedBatch {
    SignedBatch {
        header: header(round, 1, weak),
        signature: key(0xaa),
    }
}

/// Runs every mutation of `valid` through `decode` (see `mutate::check`) and prints the tally.
fn check<T, E: std::fmt::Debug>(
    name: &str,
    valid: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
) {
    let o = mutate::check(name, valid, decode, encode);
    println!(
        "{name}: {} mutated inputs, {} decoded to values",
        o.tried, o.decoded
    );
}

fn tx_and_signed_tx() {
    let enc = tx().encode();
    check("tx", &enc, Tx::decode, Tx::encode);
    let s = SignedTx {
        tx: tx(),
        public_key: key(1),
        signature: key(2),
    };
    check("signed tx", &s.encode(), SignedTx::decode, SignedTx::encode);
    // The pinned signed tx: real key (2,592 B) and signature (4,627 B) lengths.
    let real = vector("txs.json", "/signed/encoded");
    check(
        "signed tx (vector)",
        &real,
        SignedTx::decode,
        SignedTx::encode,
    );
}

fn receipt() {
    let r = SignedReceipt {
        receipt: Receipt {
            stripe_id: StripeId::from_bytes([1; 32]),
            shard_index: 3,
            shard_hash: ShardHash::from_bytes([2; 32]),
            holder: NodeId::from_bytes([3; 32]),
            time_ms: 99,
        },
        holder_public_key: key(4),
        signature: key(5),
    };
    check(
        "receipt",
        &r.encode(),
        SignedReceipt::decode,
        SignedReceipt::encode,
    );
}

fn vote_batch_certificate_equivocation() {
    let vote = Vote {
        digest: BatchDigest(Hash32([1; 32])),
        voter: NodeId::from_bytes([2; 32]),
        signature: key(3),
    };
    check("vote", &vote.encode(), Vote::decode, Vote::encode);
    for weak in [false, true] {
        let h = header(2, 1, weak);
        check(
            "batch header",
            &h.encode(),
            BatchHeader::decode,
            BatchHeader::encode,
        );
        let b = signed_batch(2, weak);
        check(
            "signed batch",
            &b.encode(),
            SignedBatch::decode,
            SignedBatch::encode,
        );
        let cert = Certificate {
            batch: b,
            votes: (0..3u8)
                .map(|i| (NodeId::from_bytes([i; 32]), key(i)))
                .collect(),
        };
        check(
            "certificate",
            &cert.encode(),
            Certificate::decode,
            Certificate::encode,
        );
    }
    let mut other = header(2, 1, false);
    other.timestamp_ms += 1;
    let eq = Equivocation::new(
        signed_batch(2, false),
        SignedBatch {
            header: other,
            signature: key(0xbb),
        },
    )
    .unwrap();
    check(
        "equivocation",
        &eq.encode(),
        Equivocation::decode,
        Equivocation::encode,
    );
    let real = vector("consensus.json", "/certificate");
    check(
        "certificate (vector)",
        &real,
        Certificate::decode,
        Certificate::encode,
    );
}

fn checkpoint_and_proofs() {
    let cp = Checkpoint {
        sequence: 3,
        leader_round: 6,
        leader: BatchDigest(Hash32([1; 32])),
        batches: (0..3).map(|i| BatchDigest(Hash32([i; 32]))).collect(),
        prev_hash: Hash32([4; 32]),
    };
    check(
        "checkpoint",
        &cp.encode(),
        |b| Checkpoint::decode(b, 1024),
        Checkpoint::encode,
    );
    let mut log = MerkleLog::new();
    for i in 0..11u32 {
        log.append(&i.to_le_bytes());
    }
    let p = InclusionProof {
        index: 5,
        size: 11,
        path: log.inclusion_proof(5, 11).unwrap(),
    };
    check(
        "inclusion proof",
        &p.encode(),
        InclusionProof::decode,
        InclusionProof::encode,
    );
    let c = ConsistencyProof {
        old_size: 6,
        new_size: 11,
        path: log.consistency_proof(6, 11).unwrap(),
    };
    check(
        "consistency proof",
        &c.encode(),
        ConsistencyProof::decode,
        ConsistencyProof::encode,
    );
}

#[test]
fn every_wire_type_decodes_to_its_bytes_or_a_typed_error() {
    tx_and_signed_tx();
    receipt();
    vote_batch_certificate_equivocation();
    checkpoint_and_proofs();
}

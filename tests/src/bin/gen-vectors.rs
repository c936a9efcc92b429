//! Writes the pinned test vectors in `tests/vectors/` (JSON): canonical bytes and ids of a
//! tx of every kind, a fixed ML-DSA-87 key pair (from a fixed seed) with a signed tx, a 4+2
//! stripe's shards, a signed receipt, a certificate of a 4-member committee, a checkpoint
//! and a Merkle log with an inclusion proof. Run through `scripts/gen-vectors`; the tests in
//! dag-core, pqc and storage load the files and compare byte for byte, so an encoding change
//! fails until the vectors are deliberately regenerated. ML-DSA signing in aws-lc-rs is
//! hedged (randomised), so signatures are pinned as verify-only: a regeneration changes
//! their bytes, never the keys, ids, digests, shards or roots.

#![allow(clippy::expect_used)]

use dag_core::consensus::{BatchHeader, BatchItem, Certificate, Checkpoint, SignedBatch, Vote};
use dag_core::merkle::{InclusionProof, MerkleLog, leaf_hash};
use dag_core::{
    AccountId, CityId, Hash32, NodeId, ObjectId, Position, PositionMethod, Receipt, SignedReceipt,
    Signer, Tx, TxKind,
};
use pqc::{Keypair, sign_tx};
use serde_json::{Value, json};
use std::path::PathBuf;
use storage::{ErasureConfig, MicroBatch};

/// The seed of the vectors' key pair: bytes 0, 1, …, 31.
fn seed(first: u8) -> [u8; 32] {
    std::array::from_fn(|i| first.wrapping_add(i as u8))
}

fn key(first: u8) -> Keypair {
    Keypair::from_seed(&seed(first)).expect("a 32-byte seed makes a key")
}

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

fn write(dir: &std::path::Path, name: &str, v: &Value) {
    let mut s = serde_json::to_string_pretty(v).expect("json");
    s.push('\n');
    std::fs::write(dir.join(name), s).expect("write vector file");
}

/// The txs: one of every kind, the last with object sets and a payload.
fn txs(sender: &Keypair) -> Vec<(&'static str, Tx)> {
    let base = Tx::fresh(
        sender.account_id(),
        AccountId::from_bytes([0x22; 32]),
        1_000,
        7,
        1_767_225_600_000,
        CityId::new("JP-13").expect("city"),
        Position::from_degrees(35.6895, 139.6917).expect("position"),
        PositionMethod::Gps,
    );
    let mut out = Vec::new();
    for (name, kind) in [
        ("fresh_tx", TxKind::FreshTx),
        ("poh_request", TxKind::PohRequest),
        ("poh_ack", TxKind::PohAck),
        ("repair_request", TxKind::RepairRequest),
        ("repair_ack", TxKind::RepairAck),
        ("checkpoint", TxKind::Checkpoint),
        ("system_tx", TxKind::SystemTx),
    ] {
        out.push((name, base.clone().with_kind(kind)));
    }
    out.push((
        "fresh_tx_with_sets_and_payload",
        Tx {
            method: PositionMethod::Wifi,
            position: Position::from_degrees(-33.8688, 151.2093).expect("position"),
            ..base.clone()
        }
        .with_read_set(vec![
            ObjectId::from_bytes([0x0b; 32]),
            ObjectId::from_bytes([0x0a; 32]),
        ])
        .with_write_set(vec![ObjectId::from_bytes([0x0c; 32])])
        .with_payload(b"hello, city chain".to_vec()),
    ));
    out
}

fn tx_json(name: &str, t: &Tx) -> Value {
    json!({
        "name": name,
        "kind": t.kind.name(),
        "kind_byte": t.kind.as_u8(),
        "sender": t.sender.to_hex(),
        "receiver": t.receiver.to_hex(),
        "amount": t.amount,
        "nonce": t.nonce,
        "timestamp_ms": t.timestamp_ms,
        "city_id": t.city_id.as_str(),
        "lat_e7": t.position.lat_e7,
        "lon_e7": t.position.lon_e7,
        "method": t.method as u8,
        "read_set": t.read_set.iter().map(|o| o.to_hex()).collect::<Vec<_>>(),
        "write_set": t.write_set.iter().map(|o| o.to_hex()).collect::<Vec<_>>(),
        "payload": h(&t.payload),
        "canonical": h(&t.encode()),
        "id": t.id().to_hex(),
    })
}

fn main() {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tests/vectors"));
    std::fs::create_dir_all(&dir).expect("vector dir");
    let kp = key(0);

    // keys.json
    write(
        &dir,
        "keys.json",
        &json!({
            "about": "ML-DSA-87 (FIPS 204) key pair from a fixed 32-byte seed (ML-DSA.KeyGen_internal); account id = node id = BLAKE3(public key)",
            "seed": h(&seed(0)),
            "public_key": h(kp.public_key()),
            "account_id": kp.account_id().to_hex(),
            "node_id": kp.node_id().to_hex(),
        }),
    );

    // txs.json: a tx of every kind, and the first one signed.
    let all = txs(&kp);
    let signed = sign_tx(all[0].1.clone(), &kp);
    write(
        &dir,
        "txs.json",
        &json!({
            "about": "canonical tx bodies (little-endian integers; see README 'Test vectors') and ids = BLAKE3(canonical); the signed tx is signed by keys.json's key over signing_message = \"citychain/tx/v1\" ‖ id. Signatures are hedged (randomised): verify them, do not compare them",
            "txs": all.iter().map(|(n, t)| tx_json(n, t)).collect::<Vec<_>>(),
            "signed": {
                "tx": all[0].0,
                "signing_message": h(&Tx::signing_message(&signed.id())),
                "public_key": h(&signed.public_key),
                "signature": h(&signed.signature),
                "encoded": h(&signed.encode()),
                "id": signed.id().to_hex(),
            },
        }),
    );

    // stripe.json: a micro-batch of two signed txs, 4 + 2 shards (default codec).
    let second = sign_tx(all[7].1.clone(), &kp);
    let tx_bytes = vec![signed.encode(), second.encode()];
    let batch = MicroBatch::from_tx_bytes(&tx_bytes).expect("micro-batch");
    let cfg = ErasureConfig::default();
    let shards = cfg.encode(&batch.stripe).expect("encode");
    write(
        &dir,
        "stripe.json",
        &json!({
            "about": "a micro-batch of txs.json's signed tx and a second one (same key) laid out as one stripe, its id = BLAKE3(stripe), and the k + m shards in the versioned shard format; any k of them decode the stripe",
            "codec": cfg.codec.name(),
            "k": cfg.k,
            "m": cfg.m,
            "txs": tx_bytes.iter().map(|b| h(b)).collect::<Vec<_>>(),
            "locations": batch.locations.iter().map(|l| h(&l.encode())).collect::<Vec<_>>(),
            "stripe": h(&batch.stripe),
            "stripe_id": batch.stripe_id.to_hex(),
            "shards": shards.iter().map(|s| json!({
                "index": s.index(),
                "hash": s.hash().to_hex(),
                "bytes": h(&s.to_bytes()),
            })).collect::<Vec<_>>(),
        }),
    );

    // receipt.json: keys.json's key signs a receipt for shard 2 of the stripe.
    let receipt = Receipt {
        stripe_id: batch.stripe_id,
        shard_index: 2,
        shard_hash: shards[2].hash(),
        holder: kp.node_id(),
        time_ms: 1_767_225_601_234,
    };
    let sr = SignedReceipt::sign(receipt, &kp);
    write(
        &dir,
        "receipt.json",
        &json!({
            "about": "a storage receipt (PoH_ACK) by keys.json's key for shard 2 of stripe.json; signed over \"citychain/receipt/v1\" ‖ encoded. The signature is hedged: verify it",
            "stripe_id": receipt.stripe_id.to_hex(),
            "shard_index": receipt.shard_index,
            "shard_hash": receipt.shard_hash.to_hex(),
            "holder": receipt.holder.to_hex(),
            "time_ms": receipt.time_ms,
            "encoded": h(&receipt.encode()),
            "signing_message": h(&receipt.signing_message()),
            "signed": h(&sr.encode()),
        }),
    );

    // consensus.json: a committee of four keys (seeds starting at 1, 2, 3, 4, equal
    // stake), a round-1 batch by member 0 naming three round-0 parents, its certificate
    // with three votes, a checkpoint, and a log of checkpoints with an inclusion proof.
    let members: Vec<Keypair> = (1..=4).map(key).collect();
    let parents: Vec<dag_core::consensus::BatchDigest> = (0u8..3)
        .map(|i| dag_core::consensus::BatchDigest(Hash32::digest(&[i])))
        .collect();
    let header = BatchHeader {
        epoch: 0,
        round: 1,
        author: members[0].node_id(),
        timestamp_ms: 1_767_225_602_000,
        parents: parents.clone(),
        weak_links: Vec::new(),
        items: vec![
            BatchItem::Stripe(batch.stripe_id),
            BatchItem::Tx(signed.id()),
        ],
    };
    let digest = header.digest();
    let sb = SignedBatch::sign(header.clone(), &members[0]);
    let votes: Vec<(NodeId, Vec<u8>)> = members[..3]
        .iter()
        .map(|m| {
            let v = Vote::sign(digest, m.node_id(), m);
            (v.voter, v.signature)
        })
        .collect();
    let cert = Certificate { batch: sb, votes };
    let mut checkpoints = Vec::new();
    let mut prev = Hash32::default();
    for seq in 0..5u64 {
        let c = Checkpoint {
            sequence: seq,
            leader_round: 2 * seq,
            leader: if seq == 4 {
                digest
            } else {
                dag_core::consensus::BatchDigest(Hash32::digest(&seq.to_le_bytes()))
            },
            batches: if seq == 4 {
                vec![parents[0], digest]
            } else {
                vec![dag_core::consensus::BatchDigest(Hash32::digest(
                    &seq.to_le_bytes(),
                ))]
            },
            prev_hash: prev,
        };
        prev = c.hash();
        checkpoints.push(c);
    }
    let mut log = MerkleLog::new();
    for c in &checkpoints {
        log.append(&c.encode());
    }
    let (index, size) = (3u64, log.size());
    let proof = InclusionProof {
        index,
        size,
        path: log.inclusion_proof(index, size).expect("in range"),
    };
    write(
        &dir,
        "consensus.json",
        &json!({
            "about": "committee: four keys from seeds whose bytes count up from 1, 2, 3, 4 (keys.json's from 0), stake 1 each; a round-1 batch by member 0, its digest = BLAKE3(header), signed over \"citychain/dag-batch/v1\" ‖ round u64 LE ‖ digest; its certificate with votes of members 0-2 over \"citychain/dag-vote/v1\" ‖ digest (signatures hedged: verify them); five chained checkpoints (hash = BLAKE3(\"citychain/dag-checkpoint/v1\" ‖ encoded)) and an RFC 6962-shaped BLAKE3 Merkle log (leaf = BLAKE3(0x00 ‖ data), node = BLAKE3(0x01 ‖ left ‖ right)) whose leaves are the checkpoints' encodings, with the inclusion proof of leaf 3",
            "committee": members.iter().zip(1u8..).map(|(m, first)| json!({
                "seed": h(&seed(first)),
                "public_key": h(m.public_key()),
                "node_id": m.node_id().to_hex(),
            })).collect::<Vec<_>>(),
            "batch": {
                "round": header.round,
                "author": header.author.to_hex(),
                "timestamp_ms": header.timestamp_ms,
                "parents": parents.iter().map(|p| p.0.to_hex()).collect::<Vec<_>>(),
                "header": h(&header.encode()),
                "digest": digest.0.to_hex(),
                "signing_message": h(&header.signing_message()),
            },
            "certificate": h(&cert.encode()),
            "checkpoints": checkpoints.iter().map(|c| json!({
                "sequence": c.sequence,
                "encoded": h(&c.encode()),
                "hash": c.hash().to_hex(),
            })).collect::<Vec<_>>(),
            "merkle": {
                "leaves": checkpoints.iter().map(|c| leaf_hash(&c.encode()).to_hex()).collect::<Vec<_>>(),
                "root": log.root().to_hex(),
                "proof_index": index,
                "proof_size": size,
                "proof_path": proof.path.iter().map(Hash32::to_hex).collect::<Vec<_>>(),
                "proof_encoded": h(&proof.encode()),
            },
        }),
    );
    println!("wrote test vectors to {}", dir.display());
}

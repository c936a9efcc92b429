//! The pinned vectors (`tests/vectors/*.json`, written by `scripts/gen-vectors`): every
//! tx kind, the receipt, the batch header, certificate, checkpoints and the Merkle log are
//! rebuilt from their fields and compared byte for byte with the pinned canonical bytes and
//! ids. An encoding change fails here until the vectors are deliberately regenerated.
//! (Signatures are verified in pqc's vector test: dag-core has no ML-DSA.)

use dag_core::consensus::{BatchDigest, Certificate, Checkpoint, MAX_PARENTS};
use dag_core::merkle::{InclusionProof, MerkleLog, leaf_hash, verify_inclusion};
use dag_core::{
    AccountId, CityId, Hash32, NodeId, ObjectId, Position, PositionMethod, Receipt, ShardHash,
    SignedReceipt, SignedTx, StripeId, Tx, TxKind,
};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/../../tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).expect("valid hex")
}

fn h32(v: &Value) -> [u8; 32] {
    bytes(v).try_into().expect("32 bytes")
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().expect("an unsigned integer")
}

fn tx_from(v: &Value) -> Tx {
    let kind = TxKind::from_u8(u8::try_from(u64_of(&v["kind_byte"])).unwrap()).unwrap();
    assert_eq!(kind.name(), v["kind"].as_str().unwrap());
    let ids = |k: &str| -> Vec<ObjectId> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|o| ObjectId::from_bytes(h32(o)))
            .collect()
    };
    Tx {
        kind,
        sender: AccountId::from_bytes(h32(&v["sender"])),
        receiver: AccountId::from_bytes(h32(&v["receiver"])),
        amount: u64_of(&v["amount"]),
        nonce: u64_of(&v["nonce"]),
        timestamp_ms: u64_of(&v["timestamp_ms"]),
        city_id: CityId::new(v["city_id"].as_str().unwrap()).unwrap(),
        position: Position {
            lat_e7: i32::try_from(v["lat_e7"].as_i64().unwrap()).unwrap(),
            lon_e7: i32::try_from(v["lon_e7"].as_i64().unwrap()).unwrap(),
        },
        method: match u64_of(&v["method"]) {
            0 => PositionMethod::Gps,
            1 => PositionMethod::Wifi,
            other => panic!("unknown position method {other}"),
        },
        read_set: ids("read_set"),
        write_set: ids("write_set"),
        payload: bytes(&v["payload"]),
    }
}

#[test]
fn txs_of_every_kind_encode_to_the_pinned_bytes_and_ids() {
    let v = load("txs.json");
    let txs = v["txs"].as_array().unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for t in txs {
        let name = t["name"].as_str().unwrap();
        let tx = tx_from(t);
        kinds.insert(tx.kind.as_u8());
        let canonical = bytes(&t["canonical"]);
        assert_eq!(tx.encode(), canonical, "{name}: canonical bytes");
        assert_eq!(tx.id().to_hex(), t["id"].as_str().unwrap(), "{name}: id");
        assert_eq!(Tx::decode(&canonical).unwrap(), tx, "{name}: decodes back");
    }
    assert_eq!(kinds.len(), 7, "a tx of every kind");

    let s = &v["signed"];
    let encoded = bytes(&s["encoded"]);
    let signed = SignedTx::decode(&encoded).unwrap();
    assert_eq!(signed.encode(), encoded);
    assert_eq!(signed.id().to_hex(), s["id"].as_str().unwrap());
    assert_eq!(signed.public_key, bytes(&s["public_key"]));
    assert_eq!(signed.signature, bytes(&s["signature"]));
    assert_eq!(
        Tx::signing_message(&signed.id()),
        bytes(&s["signing_message"])
    );
    let named = txs
        .iter()
        .find(|t| t["name"] == s["tx"])
        .expect("the signed tx is one of the txs");
    assert_eq!(signed.tx, tx_from(named));
    assert_eq!(
        AccountId::from_public_key(&signed.public_key),
        signed.tx.sender
    );
}

#[test]
fn receipt_encodes_to_the_pinned_bytes() {
    let v = load("receipt.json");
    let r = Receipt {
        stripe_id: StripeId::from_bytes(h32(&v["stripe_id"])),
        shard_index: u16::try_from(u64_of(&v["shard_index"])).unwrap(),
        shard_hash: ShardHash::from_bytes(h32(&v["shard_hash"])),
        holder: NodeId::from_bytes(h32(&v["holder"])),
        time_ms: u64_of(&v["time_ms"]),
    };
    assert_eq!(r.encode(), bytes(&v["encoded"]));
    assert_eq!(r.signing_message(), bytes(&v["signing_message"]));
    let signed = bytes(&v["signed"]);
    let sr = SignedReceipt::decode(&signed).unwrap();
    assert_eq!(sr.receipt, r);
    assert_eq!(sr.encode(), signed);
    assert_eq!(NodeId::from_public_key(&sr.holder_public_key), r.holder);
}

#[test]
fn batch_certificate_checkpoints_and_log_match_the_pinned_bytes() {
    let v = load("consensus.json");
    let b = &v["batch"];
    let cert_bytes = bytes(&v["certificate"]);
    let cert = Certificate::decode(&cert_bytes).unwrap();
    assert_eq!(cert.encode(), cert_bytes, "certificate re-encodes");
    let header = &cert.batch.header;
    assert_eq!(header.encode(), bytes(&b["header"]));
    assert_eq!(header.digest().0.to_hex(), b["digest"].as_str().unwrap());
    assert_eq!(header.signing_message(), bytes(&b["signing_message"]));
    assert_eq!(header.round, u64_of(&b["round"]));
    assert_eq!(header.author.to_hex(), b["author"].as_str().unwrap());
    assert_eq!(header.timestamp_ms, u64_of(&b["timestamp_ms"]));
    let parents: Vec<BatchDigest> = b["parents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| BatchDigest(Hash32(h32(p))))
        .collect();
    assert_eq!(header.parents, parents);
    assert!(header.parents.len() <= MAX_PARENTS);
    // The committee's members cast the votes.
    let members: Vec<NodeId> = v["committee"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let id = NodeId::from_public_key(&bytes(&m["public_key"]));
            assert_eq!(id.to_hex(), m["node_id"].as_str().unwrap());
            id
        })
        .collect();
    assert_eq!(header.author, members[0]);
    assert_eq!(
        cert.votes.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        members[..3]
    );

    // Checkpoints: canonical bytes, running hashes, the chain.
    let mut prev = Hash32::default();
    let mut log = MerkleLog::new();
    let cps = v["checkpoints"].as_array().unwrap();
    for (i, c) in cps.iter().enumerate() {
        let enc = bytes(&c["encoded"]);
        let cp = Checkpoint::decode(&enc, 1024).unwrap();
        assert_eq!(cp.encode(), enc);
        assert_eq!(cp.sequence, i as u64);
        assert_eq!(cp.sequence, u64_of(&c["sequence"]));
        assert_eq!(cp.prev_hash, prev, "checkpoint {i} chains to the previous");
        assert_eq!(cp.hash().to_hex(), c["hash"].as_str().unwrap());
        prev = cp.hash();
        log.append(&enc);
    }
    assert_eq!(
        cps.last()
            .map(|c| Checkpoint::decode(&bytes(&c["encoded"]), 1024)
                .unwrap()
                .leader),
        Some(header.digest()),
        "the last checkpoint commits the certified batch"
    );

    // The Merkle log: leaves, root, the inclusion proof (decoded, re-encoded, verified).
    let m = &v["merkle"];
    for (i, l) in m["leaves"].as_array().unwrap().iter().enumerate() {
        assert_eq!(log.leaf(i as u64).unwrap().to_hex(), l.as_str().unwrap());
        assert_eq!(
            leaf_hash(&bytes(&cps[i]["encoded"])).to_hex(),
            l.as_str().unwrap()
        );
    }
    let root = Hash32(h32(&m["root"]));
    assert_eq!(log.root(), root);
    let proof_bytes = bytes(&m["proof_encoded"]);
    let proof = InclusionProof::decode(&proof_bytes).unwrap();
    assert_eq!(proof.encode(), proof_bytes);
    assert_eq!(proof.index, u64_of(&m["proof_index"]));
    assert_eq!(proof.size, u64_of(&m["proof_size"]));
    let path: Vec<Hash32> = m["proof_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Hash32(h32(p)))
        .collect();
    assert_eq!(proof.path, path);
    assert_eq!(log.inclusion_proof(proof.index, proof.size).unwrap(), path);
    let leaf = log.leaf(proof.index).unwrap();
    proof.verify(&leaf, &root).unwrap();
    // A proof for another leaf, or against another root, fails.
    assert!(
        verify_inclusion(&log.leaf(0).unwrap(), proof.index, proof.size, &path, &root).is_err()
    );
    assert!(proof.verify(&leaf, &Hash32::digest(b"other")).is_err());
}

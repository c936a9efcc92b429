//! The pinned vectors' cryptography (`tests/vectors/`, written by `scripts/gen-vectors`):
//! the key pair derives from its seed byte for byte; the signed tx, the receipt, the batch
//! and every vote of the certificate verify under the pinned keys (ML-DSA-87 signing is
//! hedged, so signatures are pinned verify-only) and fail once a byte changes.

use dag_core::consensus::{Certificate, Committee};
use dag_core::{SignatureVerifier, SignedReceipt, SignedTx, Signer};
use pqc::{Keypair, MlDsa87};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/../../tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn from_seed(v: &Value) -> Keypair {
    Keypair::from_seed(&bytes(v).try_into().unwrap()).unwrap()
}

#[test]
fn the_key_pair_derives_from_its_seed() {
    let v = load("keys.json");
    let kp = from_seed(&v["seed"]);
    assert_eq!(kp.public_key(), bytes(&v["public_key"]).as_slice());
    assert_eq!(kp.account_id().to_hex(), v["account_id"].as_str().unwrap());
    assert_eq!(kp.node_id().to_hex(), v["node_id"].as_str().unwrap());
    // The committee's keys too.
    for m in load("consensus.json")["committee"].as_array().unwrap() {
        assert_eq!(
            from_seed(&m["seed"]).public_key(),
            bytes(&m["public_key"]).as_slice()
        );
    }
}

#[test]
fn signing_is_hedged_so_signatures_are_pinned_verify_only() {
    // The vectors' README says signatures are randomised: two signatures of one message by
    // one key differ, and both verify.
    let kp = from_seed(&load("keys.json")["seed"]);
    let msg = bytes(&load("txs.json")["signed"]["signing_message"]);
    let (a, b) = (kp.sign(&msg), kp.sign(&msg));
    assert_ne!(a, b, "aws-lc-rs ML-DSA-87 signing is hedged");
    MlDsa87.verify(kp.public_key(), &msg, &a).unwrap();
    MlDsa87.verify(kp.public_key(), &msg, &b).unwrap();
}

#[test]
fn the_signed_tx_verifies_and_a_changed_byte_does_not() {
    let v = load("txs.json");
    let encoded = bytes(&v["signed"]["encoded"]);
    let signed = SignedTx::decode(&encoded).unwrap();
    assert_eq!(
        signed.public_key,
        bytes(&load("keys.json")["public_key"]),
        "signed by the pinned key"
    );
    let verified = signed.clone().verify(&MlDsa87).unwrap();
    assert_eq!(verified.id().to_hex(), v["signed"]["id"].as_str().unwrap());
    // Raw verify over the pinned signing message.
    let msg = bytes(&v["signed"]["signing_message"]);
    MlDsa87
        .verify(&signed.public_key, &msg, &signed.signature)
        .unwrap();
    let mut bad = signed.clone();
    bad.signature[100] ^= 1;
    assert!(bad.verify(&MlDsa87).is_err());
    let mut other = signed;
    other.tx.amount += 1;
    assert!(other.verify(&MlDsa87).is_err());
}

#[test]
fn the_receipt_verifies() {
    let v = load("receipt.json");
    let sr = SignedReceipt::decode(&bytes(&v["signed"])).unwrap();
    sr.clone().verify(&MlDsa87).unwrap();
    let mut bad = sr;
    bad.receipt.shard_index += 1;
    assert!(bad.verify(&MlDsa87).is_err());
}

#[test]
fn the_certificate_verifies_against_the_pinned_committee() {
    let v = load("consensus.json");
    let keys: Vec<Vec<u8>> = v["committee"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| bytes(&m["public_key"]))
        .collect();
    let committee = Committee::equal(keys).unwrap();
    let cert = Certificate::decode(&bytes(&v["certificate"])).unwrap();
    let verified = cert.clone().verify(&committee, &MlDsa87).unwrap();
    assert_eq!(
        verified.digest().0.to_hex(),
        v["batch"]["digest"].as_str().unwrap()
    );
    // One vote short of the quorum (3 of 4 by stake), or one bad vote: refused.
    let mut short = cert.clone();
    short.votes.pop();
    assert!(short.verify(&committee, &MlDsa87).is_err());
    let mut forged = cert;
    forged.votes[1].1[7] ^= 1;
    assert!(forged.verify(&committee, &MlDsa87).is_err());
}

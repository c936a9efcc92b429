//! Receipts with real ML-DSA-87 keys: issue, verify into Held, and every way to forge one.

use dag_core::{NodeId, Receipt, SignedReceipt, Signer};
use pqc::{Keypair, MlDsa87};
use std::sync::OnceLock;
use storage::{
    ErasureConfig, Error, Held, HeldRules, MicroBatch, StripeLayout, issue_receipt, verify_receipt,
    verify_receipt_from,
};

/// Key generation is the slow part: six keys for the whole file.
fn keys() -> &'static [Keypair] {
    static KEYS: OnceLock<Vec<Keypair>> = OnceLock::new();
    KEYS.get_or_init(|| (0..6).map(|_| Keypair::generate()).collect())
}

fn stripe() -> (StripeLayout, Vec<storage::Shard>) {
    let batch = MicroBatch::from_tx_bytes(&[b"a".to_vec(), b"b".to_vec()]).unwrap();
    let shards = ErasureConfig::default().encode(&batch.stripe).unwrap();
    (StripeLayout::from_shards(&shards).unwrap(), shards)
}

fn all_receipts(shards: &[storage::Shard]) -> Vec<SignedReceipt> {
    shards
        .iter()
        .zip(keys())
        .map(|(s, k)| issue_receipt(&s.header, k, 1_700_000_000_000))
        .collect()
}

#[test]
fn n_distinct_receipts_make_held() {
    let (layout, shards) = stripe();
    let held = Held::verify(
        &layout,
        all_receipts(&shards),
        &MlDsa87,
        HeldRules::default(),
    )
    .unwrap();
    assert!(held.is_complete());
    assert!(!held.colocated());
    assert_eq!(held.receipts().len(), 6);
    for (i, h) in held.manifest().holders.iter().enumerate() {
        assert_eq!(*h, Some(keys()[i].node_id()));
    }
    // receipts survive their canonical encoding
    let r = &held.receipts()[0];
    let back = SignedReceipt::decode(&r.signed().encode()).unwrap();
    verify_receipt(&layout, back, &MlDsa87).unwrap();
}

#[test]
fn min_receipts_and_missing_indexes() {
    let (layout, shards) = stripe();
    let mut rs = all_receipts(&shards);
    rs.truncate(5);
    let rules = HeldRules {
        min_receipts: Some(5),
        ..HeldRules::default()
    };
    let held = Held::verify(&layout, rs.clone(), &MlDsa87, rules).unwrap();
    assert!(!held.is_complete());
    assert_eq!(held.missing_indexes(), vec![5]);
    let err = Held::verify(&layout, rs, &MlDsa87, HeldRules::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooFewReceipts {
                got: 5,
                needed: 6,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn forged_receipts_are_rejected() {
    let (layout, shards) = stripe();
    let good = issue_receipt(&shards[0].header, &keys()[0], 5);

    // signed by the wrong key (key of node 1, claiming node 0)
    let mut wrong_key = SignedReceipt::sign(good.receipt, &keys()[1]);
    wrong_key.receipt.holder = keys()[0].node_id();
    assert!(matches!(
        verify_receipt(&layout, wrong_key, &MlDsa87),
        Err(Error::BadReceipt { .. })
    ));

    // a valid signature over another shard's receipt, relabelled
    let mut other_shard = good.clone();
    other_shard.receipt.shard_index = 1;
    let err = verify_receipt(&layout, other_shard, &MlDsa87).unwrap_err();
    assert!(err.to_string().contains("names shard hash"), "{err}");

    // signed honestly, but for a hash the manifest does not have
    let forged = Receipt {
        shard_hash: dag_core::ShardHash::from_bytes([1; 32]),
        ..good.receipt
    };
    let forged = SignedReceipt::sign(forged, &keys()[0]);
    assert!(verify_receipt(&layout, forged, &MlDsa87).is_err());

    // tampered time: signature no longer verifies
    let mut tampered = good.clone();
    tampered.receipt.time_ms += 1;
    let err = verify_receipt(&layout, tampered, &MlDsa87).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");

    // another stripe
    let (other_layout, _) = {
        let s = ErasureConfig::default().encode(b"other").unwrap();
        (StripeLayout::from_shards(&s).unwrap(), s)
    };
    assert!(verify_receipt(&other_layout, good.clone(), &MlDsa87).is_err());

    // right receipt, unexpected holder
    assert!(verify_receipt_from(&layout, good.clone(), &keys()[1].node_id(), &MlDsa87).is_err());
    verify_receipt_from(&layout, good, &keys()[0].node_id(), &MlDsa87).unwrap();
}

#[test]
fn holders_must_be_distinct_unless_allowed() {
    let (layout, shards) = stripe();
    // node 0 holds shards 0 and 1
    let mut rs = all_receipts(&shards);
    rs[1] = issue_receipt(&shards[1].header, &keys()[0], 7);
    let err = Held::verify(&layout, rs.clone(), &MlDsa87, HeldRules::default()).unwrap_err();
    assert!(matches!(err, Error::DuplicateReceipt { .. }), "{err}");
    let rules = HeldRules {
        allow_colocated: true,
        ..HeldRules::default()
    };
    let held = Held::verify(&layout, rs, &MlDsa87, rules).unwrap();
    assert!(held.colocated());
    assert_eq!(
        held.manifest().indexes_held_by(&keys()[0].node_id()),
        vec![0, 1]
    );
    // two receipts for one index
    let mut rs = all_receipts(&shards);
    rs[1] = issue_receipt(&shards[0].header, &keys()[1], 7);
    assert!(Held::verify(&layout, rs, &MlDsa87, rules).is_err());
}

#[test]
fn manifest_round_trips() {
    let (layout, shards) = stripe();
    let held = Held::verify(
        &layout,
        all_receipts(&shards),
        &MlDsa87,
        HeldRules::default(),
    )
    .unwrap();
    let m = held.manifest().clone();
    assert_eq!(storage::StripeManifest::decode(&m.encode()).unwrap(), m);
    let mut unplaced = storage::StripeManifest::unplaced(layout);
    assert_eq!(
        storage::StripeManifest::decode(&unplaced.encode()).unwrap(),
        unplaced
    );
    unplaced
        .set_holder(3, NodeId::from_public_key(keys()[3].public_key()))
        .unwrap();
    assert!(unplaced.set_holder(6, NodeId::default()).is_err());
    let mut b = m.encode();
    b.push(0);
    assert!(storage::StripeManifest::decode(&b).is_err());
}

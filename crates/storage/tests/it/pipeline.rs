//! The city pipeline end to end, in-process, with the library only: micro-batch signed txs,
//! encode, put to six light-node stores, gather receipts into Held, lose two holders,
//! restore every tx from the rest, plan re-replication, rebuild and place the lost shards.

use dag_core::{AccountId, CityId, Position, PositionMethod, Tx};
use pqc::{Keypair, MlDsa87, sign_tx};
use storage::{
    Challenge, ChallengeNonce, ErasureConfig, Held, HeldRules, LiveNode, MicroBatch, ShardStore,
    StoreConfig, StripeManifest, issue_receipt, plan_rereplication, prove, tx_at,
    verify_receipt_from,
};

struct Light {
    key: Keypair,
    store: ShardStore,
    zone: String,
    alive: bool,
}

#[test]
fn hold_lose_two_restore_and_rereplicate() {
    let user = Keypair::generate();
    let txs: Vec<_> = (0..5u64)
        .map(|i| {
            let tx = Tx::fresh(
                user.account_id(),
                AccountId::from_bytes([2; 32]),
                100 + i,
                i,
                1_700_000_000_000 + i,
                CityId::new("JP-13").unwrap(),
                Position::from_degrees(35.68, 139.69).unwrap(),
                PositionMethod::Gps,
            );
            sign_tx(tx, &user)
        })
        .collect();
    let mut lights: Vec<Light> = (0..8)
        .map(|i| Light {
            key: Keypair::generate(),
            store: ShardStore::in_memory(StoreConfig::default()).unwrap(),
            zone: format!("zone-{}", i % 4),
            alive: true,
        })
        .collect();

    // City: micro-batch → stripe → shards; put shard i on light i; verify each receipt.
    let (batch, index) = MicroBatch::from_signed(&txs).unwrap();
    let shards = ErasureConfig::default().encode(&batch.stripe).unwrap();
    let layout = storage::StripeLayout::from_shards(&shards).unwrap();
    assert_eq!(layout.stripe_id, batch.stripe_id);
    let mut receipts = Vec::new();
    for (s, l) in shards.iter().zip(&lights) {
        // light node side
        let wire = s.to_bytes();
        let got = storage::Shard::from_bytes(&wire).unwrap();
        l.store.put(&got).unwrap();
        let r = issue_receipt(&got.header, &l.key, 1_700_000_000_500);
        // city side
        receipts.push(verify_receipt_from(&layout, r, &l.key.node_id(), &MlDsa87).unwrap());
    }
    let held = Held::from_verified(&layout, receipts, HeldRules::default()).unwrap();
    let mut manifest: StripeManifest = held.manifest().clone();

    // Audit: a precomputed challenge for light 2 passes.
    let nonce = ChallengeNonce([42; 32]);
    let ch = Challenge::new(
        layout.stripe_id,
        2,
        layout.shard_hashes[2],
        nonce,
        &shards[2].data,
    );
    let held_shard = lights[2].store.get(&layout.stripe_id, 2).unwrap().unwrap();
    ch.check(&prove(&nonce, &held_shard.data)).unwrap();

    // Lights 1 and 4 vanish.
    lights[1].alive = false;
    lights[4].alive = false;
    let fetch = |lights: &[Light], manifest: &StripeManifest| -> Vec<storage::Shard> {
        manifest
            .holders
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let l = lights
                    .iter()
                    .find(|l| l.alive && Some(l.key.node_id()) == *h)?;
                l.store.get(&manifest.stripe_id(), i as u16).ok().flatten()
            })
            .collect()
    };
    let stripe = manifest.layout.decode(&fetch(&lights, &manifest)).unwrap();
    for (tx, entry) in txs.iter().zip(&index) {
        let restored = tx_at(&stripe, &entry.location).unwrap();
        assert_eq!(restored.id(), entry.tx_id);
        assert_eq!(&restored, tx);
        restored.verify(&MlDsa87).unwrap();
    }

    // Re-replication, one departure at a time.
    for gone in [1usize, 4] {
        let live: Vec<LiveNode> = lights
            .iter()
            .filter(|l| l.alive)
            .map(|l| LiveNode {
                id: l.key.node_id(),
                failure_domain: l.zone.clone(),
            })
            .collect();
        let plan = plan_rereplication(&manifest, &live, &lights[gone].key.node_id()).unwrap();
        assert!(!plan.colocated());
        let sources: Vec<storage::Shard> = plan
            .sources
            .iter()
            .map(|(i, node)| {
                let l = lights.iter().find(|l| l.key.node_id() == *node).unwrap();
                l.store.get(&manifest.stripe_id(), *i).unwrap().unwrap()
            })
            .collect();
        let lost: Vec<u16> = plan.placements.iter().map(|p| p.index).collect();
        let rebuilt = manifest.layout.rebuild(&sources, &lost).unwrap();
        for (p, s) in plan.placements.iter().zip(&rebuilt) {
            let l = lights.iter().find(|l| l.key.node_id() == p.target).unwrap();
            assert!(l.alive);
            l.store.put(s).unwrap();
            let r = issue_receipt(&s.header, &l.key, 1_700_000_001_000);
            verify_receipt_from(&manifest.layout, r, &p.target, &MlDsa87).unwrap();
            manifest.set_holder(p.index, p.target).unwrap();
        }
    }
    // Every index has a live holder again, all distinct.
    let alive: Vec<_> = lights
        .iter()
        .filter(|l| l.alive)
        .map(|l| l.key.node_id())
        .collect();
    assert!(
        manifest
            .holders
            .iter()
            .all(|h| h.is_some_and(|h| alive.contains(&h)))
    );
    assert_eq!(manifest.distinct_holders().len(), 6);
    assert_eq!(fetch(&lights, &manifest).len(), 6);
    assert_eq!(
        manifest.layout.decode(&fetch(&lights, &manifest)).unwrap(),
        batch.stripe
    );
}

//! The repair protocol against a devnet's real light nodes over gRPC: a held tx whose
//! holders lose 2 of 6 (crashed, still listed) is restored through REPAIR_REQUEST txs
//! signed by the representative and the holders' REPAIR_ACKs (shard + receipt, each
//! checked), the 2 missing shards are re-placed on spare light nodes, and every step is an
//! event. The local-store tier is left out of the service here: the tx's local copy counts
//! as gone, so the light-node tier must serve it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dag_core::{AccountId, CityId, Position, PositionMethod, Tx};
use devnet::{CITY, CITY_POS, Devnet, DevnetConfig};
use gateway::{EventKind, RepairState};
use node::{LightRepairTier, PipelineConfig, RepairConfig, RepairService, RepairTier};
use pqc::{Keypair, sign_tx};
use rpc::{CityClient, TxState};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_through_repair_request_and_ack_with_two_holders_gone() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DevnetConfig {
        lights: 8,
        heartbeat: Duration::from_millis(200),
        // Crashed holders stay listed (silent), so background re-replication does not race
        // the repair.
        presence_ttl: Duration::from_secs(120),
        pipeline: PipelineConfig {
            call_timeout: Duration::from_secs(2),
            ..PipelineConfig::default()
        },
        ..DevnetConfig::default()
    };
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(8, Duration::from_secs(20)).await);
    let client = CityClient::connect(&net.city().addr().to_string())
        .await
        .unwrap();
    let user = Keypair::generate();
    let tx = sign_tx(
        Tx::fresh(
            user.account_id(),
            AccountId::from_bytes([7; 32]),
            5,
            0,
            1_700_000_000_000,
            CityId::new(CITY).unwrap(),
            Position::from_degrees(CITY_POS.0, CITY_POS.1).unwrap(),
            PositionMethod::Gps,
        ),
        &user,
    );
    let id = tx.id();
    let s = client.submit(&tx).await.unwrap();
    assert_eq!(s.state, TxState::Held);
    assert_eq!(s.receipts.len(), 6);
    // Crash two of the six holders.
    let holders: Vec<_> = s.receipts.iter().map(|r| r.receipt.holder).collect();
    let mut crashed = 0;
    for i in 0..net.lights.len() {
        if crashed < 2 && holders.contains(&net.lights[i].id) {
            net.crash_light(i).await;
            crashed += 1;
        }
    }
    assert_eq!(crashed, 2);

    let node = net.city().node().clone();
    let bus = node.events().clone();
    let tier: Arc<dyn RepairTier> = Arc::new(LightRepairTier::new(
        Arc::downgrade(&node),
        net.reps()[0].key.clone(),
        CityId::new(CITY).unwrap(),
        Position::from_degrees(CITY_POS.0, CITY_POS.1).unwrap(),
        Duration::from_secs(2),
    ));
    let svc = Arc::new(RepairService::new(
        RepairConfig {
            deadline: Duration::from_secs(30),
            ..RepairConfig::default()
        },
        vec![tier],
        bus.clone(),
    ));
    let mut live = bus.subscribe(None).live;
    let ticket = svc.start(id).unwrap();
    let mut kinds = Vec::new();
    let mut acked_holders = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(45), live.recv())
            .await
            .expect("repair events keep coming")
            .unwrap();
        if e.tx_id != id {
            continue;
        }
        if e.kind == EventKind::RepairAcknowledged
            && let Some(h) = e.detail["holder"].as_str()
        {
            acked_holders.push(h.to_string());
        }
        kinds.push(e.kind);
        if matches!(e.kind, EventKind::RepairCompleted | EventKind::RepairFailed) {
            break;
        }
    }
    assert_eq!(kinds.first(), Some(&EventKind::RepairRequested));
    assert_eq!(kinds.last(), Some(&EventKind::RepairCompleted), "{kinds:?}");
    assert_eq!(
        acked_holders.len(),
        4,
        "k = 4 good REPAIR_ACKs from live holders"
    );
    let done = svc.status(ticket.request_id).unwrap();
    let RepairState::Completed {
        tier,
        shards_rebuilt,
    } = done.state
    else {
        panic!("not completed: {done:?}");
    };
    assert_eq!(tier, "light_nodes");
    assert_eq!(shards_rebuilt, 2, "the two lost shards are placed again");
    // More repairs of other txs (fresh micro-batches) for the tier's latency figures.
    for nonce in 1..=8u64 {
        let t = sign_tx(
            Tx::fresh(
                user.account_id(),
                AccountId::from_bytes([7; 32]),
                5,
                nonce,
                1_700_000_000_000,
                CityId::new(CITY).unwrap(),
                Position::from_degrees(CITY_POS.0, CITY_POS.1).unwrap(),
                PositionMethod::Gps,
            ),
            &user,
        );
        assert_eq!(client.submit(&t).await.unwrap().state, TxState::Held);
        let n = svc.start(t.id()).unwrap().request_id;
        let mut state = RepairState::Running;
        for _ in 0..600 {
            state = svc.status(n).unwrap().state;
            if state != RepairState::Running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            matches!(&state, RepairState::Completed { tier, .. } if tier == "light_nodes"),
            "{state:?}"
        );
    }
    let lat = svc.latencies();
    println!(
        "repair latency light_nodes tier: p50 {:.1} ms p99 {:.1} ms over {}",
        lat[0].p50_seconds * 1e3,
        lat[0].p99_seconds * 1e3,
        lat[0].count
    );
    net.shutdown().await.unwrap();
}

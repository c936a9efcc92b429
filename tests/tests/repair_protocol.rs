//! The repair protocol against a devnet's real light nodes over gRPC.
//!
//! - A held tx whose local copy is gone (evicted from the representative's tx store: its
//!   shards hold it) and whose holders lose 2 of 6 (crashed, still listed) is repaired
//!   through the gateway (`POST /v1/repair_requests`): the local-store tier misses, the
//!   light-node tier sends REPAIR_REQUEST txs signed by the representative and uses the
//!   holders' REPAIR_ACKs (shard + receipt, each checked), the 2 missing shards are re-placed
//!   on spare light nodes, and every step is an event.
//! - A light node that answers REPAIR_REQUESTs over gRPC with a wrong shard is detected by
//!   hash and never used.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/light_repair.rs"]
mod light_repair;

use dag_core::{CityId, Position};
use devnet::{CITY, CITY_POS, Devnet, DevnetConfig};
use gateway::{EventKind, RepairState};
use node::{LightRepairTier, PipelineConfig, RepairConfig, RepairService, RepairTier};
use pqc::Keypair;
use rpc::{CityClient, TxState};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_through_repair_request_and_ack_with_two_holders_gone() {
    let dir = tempfile::tempdir().unwrap();
    // Crashed holders stay listed (silent): re-replication does not race the repair.
    let cfg = DevnetConfig::crashed_stay_listed(8, Duration::from_secs(2));
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(8, Duration::from_secs(20)).await);
    let client = CityClient::connect(&net.city().addr().to_string())
        .await
        .unwrap();
    let user = Keypair::generate();
    let tx = e2e::tokyo_payment(&user, 5, 0, CITY_POS);
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

    // The local copy goes: the shards keep the tx, replay protection stays.
    assert!(node.evict_held_copy(id).await.unwrap());
    assert!(node.store().get(&id).unwrap().is_none(), "local copy gone");

    // Through the gateway: local store misses, the light nodes serve.
    let base = format!("http://{}", net.gateway_addr(0).expect("gateway on"));
    let http = reqwest::Client::new();
    let mut live = bus.subscribe(None).live;
    let r = http
        .post(format!("{base}/v1/repair_requests"))
        .json(&serde_json::json!({ "tx_id": id.to_hex() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let n = r.json::<serde_json::Value>().await.unwrap()["request_id"]
        .as_u64()
        .unwrap();
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
    let done: serde_json::Value = http
        .get(format!("{base}/v1/repair_requests/{n}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["tier"], "light_nodes", "{done}");
    assert_eq!(
        done["shards_rebuilt"], 2,
        "the two lost shards are placed again"
    );
    assert_eq!(kinds.first(), Some(&EventKind::RepairRequested));
    assert_eq!(kinds.last(), Some(&EventKind::RepairCompleted), "{kinds:?}");
    assert_eq!(
        acked_holders.len(),
        4,
        "k = 4 good REPAIR_ACKs from live holders"
    );
    // GetTx restores it from the shards too.
    let rec = client.get(id).await.unwrap().expect("found");
    assert_eq!(rec.tx.as_ref(), Some(&tx));

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
    // More repairs of other txs (fresh micro-batches) for the tier's latency figures.
    for nonce in 1..=8u64 {
        let t = e2e::tokyo_payment(&user, 5, nonce, CITY_POS);
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

/// A holder that stores shards honestly (so it becomes a holder) but answers every
/// REPAIR_REQUEST with a shard one byte off.
struct Liar(Arc<node::LightNode>);

impl rpc::RepairResponder for Liar {
    async fn answer(
        &self,
        request: dag_core::SignedTx,
    ) -> Result<rpc::RepairAnswer, tonic::Status> {
        let mut a = rpc::RepairResponder::answer(&*self.0, request).await?;
        let last = a.shard.len() - 1;
        a.shard[last] ^= 0x01;
        Ok(a)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_node_answering_a_wrong_shard_over_grpc_is_detected_and_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DevnetConfig {
        lights: 5,
        // The liar below is a bare plaintext tonic server: links stay plaintext here (this
        // test is about the repair protocol's checks; TLS is tests/tests/security.rs's).
        tls: false,
        heartbeat: Duration::from_millis(200),
        presence_ttl: Duration::from_secs(120),
        pipeline: PipelineConfig {
            call_timeout: Duration::from_secs(2),
            ..PipelineConfig::default()
        },
        ..DevnetConfig::default()
    };
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();

    // The liar: a real shard store over gRPC, a lying Repair service beside it, logged in
    // to presence as a light node of the city, so it is one of the 6 holders of every stripe.
    let (store, _) = storage::ShardStore::open_or_quarantine(
        dir.path().join("liar.redb"),
        storage::StoreConfig::default(),
        0,
    )
    .unwrap();
    let liar_key = Keypair::generate();
    let liar_id = liar_key.node_id();
    let light = Arc::new(node::LightNode::new(
        store,
        liar_key,
        Arc::new(node::runtime::SystemClock),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(rpc::ShardStoreService::new(light.clone()).into_server())
            .add_service(rpc::RepairGrpc::new(Arc::new(Liar(light))).into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    net.presence()
        .login(node::node_info(
            liar_id,
            dag_core::Role::Light,
            addr.to_string(),
            CITY,
            "zone-liar",
            CITY_POS,
            1 << 30,
            node::runtime::now_ms(),
        ))
        .await
        .unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);

    let client = CityClient::connect(&net.city().addr().to_string())
        .await
        .unwrap();
    let user = Keypair::generate();
    let tx = e2e::tokyo_payment(&user, 5, 0, CITY_POS);
    let id = tx.id();
    let s = client.submit(&tx).await.unwrap();
    assert_eq!(s.state, TxState::Held);
    let holders: Vec<_> = s.receipts.iter().map(|r| r.receipt.holder).collect();
    assert!(holders.contains(&liar_id), "the liar holds a shard");
    // Two honest holders crash: 3 honest answers + the liar's would be k = 4 if the lie
    // were believed.
    let mut crashed = 0;
    for i in 0..net.lights.len() {
        if crashed < 2 && holders.contains(&net.lights[i].id) {
            net.crash_light(i).await;
            crashed += 1;
        }
    }
    assert_eq!(crashed, 2);

    let node = net.city().node().clone();
    let (state, acked) =
        light_repair::repair_through_lights(&node, net.reps()[0].key.clone(), id).await;
    assert!(
        !acked.contains(&liar_id.to_hex()),
        "the lie was acknowledged"
    );
    assert_eq!(acked.len(), 3, "the three live honest holders: {acked:?}");
    let RepairState::Failed { reason } = state else {
        panic!("3 good shards of 4 cannot restore: the wrong one must not be used");
    };
    assert!(
        reason.contains(&format!("from {}", liar_id.short())),
        "the liar is named: {reason}"
    );
    assert!(reason.contains("3 good shards of the 4 needed"), "{reason}");
    server.abort();
    net.shutdown().await.unwrap();
}

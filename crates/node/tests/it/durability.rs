//! Durability under pressure, over real gRPC on loopback with real redb files: light nodes
//! that fill up never weaken Held (no stripe gets two shards on one node) and every Held tx
//! survives two further losses; the city's own store filling up gives clean rejections and
//! NOT_SERVING, then heals by itself once space returns; a light node whose store is corrupt
//! starts empty under the same identity, the audit finds the loss and repair clears it.
//!
//! "Full" is a real limit on a real file: quotas for the light nodes, and for the city's
//! `txs.redb` a file-size cap (`storage::CappedFileBackend`) whose writes past the cap fail
//! with `StorageFull`, the error ENOSPC maps to, so redb poisons itself exactly as on a full
//! disk. No tmpfs is mounted.

use crate::info;
use audit::{GrpcProbe, HolderProbe, audit_stripes};
use dag_core::{AccountId, CityId, NodeId, NodeInfo, Position, PositionMethod, Tx, TxId};
use node::{
    CityConfig, CityParts, GrpcTransport, LightConfig, LightHandle, Pipeline, PipelineConfig,
    PipelineError, StaticDirectory, StorageParts, start_city_with, start_light,
};
use pqc::{BatchVerifier, Keypair, MlDsa87, sign_tx};
use rpc::{CityClient, TxState};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;

/// A light node in `dir` (its key is kept there, so a restart keeps the identity).
async fn light_in(dir: &Path, quota_bytes: u64) -> LightHandle {
    let cfg = LightConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        quota_bytes,
        // Plaintext links, chosen explicitly (the default is TLS).
        links: rpc::tls::LinkSecurity::Insecure,
        ..LightConfig::default()
    };
    let key = node::load_or_create_key(dir).unwrap();
    start_light(&cfg, key).await.unwrap()
}

fn signed(user: &Keypair, nonce: u64) -> dag_core::SignedTx {
    let tx = Tx::fresh(
        user.account_id(),
        AccountId::from_bytes([7; 32]),
        10,
        nonce,
        1_767_225_600_000 + nonce,
        CityId::new("JP-13").unwrap(),
        Position::from_degrees(35.68, 139.69).unwrap(),
        PositionMethod::Gps,
    );
    sign_tx(tx, user)
}

fn distinct_holders(receipts: &[dag_core::SignedReceipt]) -> BTreeSet<NodeId> {
    receipts.iter().map(|r| r.receipt.holder).collect()
}

async fn health(addr: std::net::SocketAddr, service: &str) -> i32 {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

/// Polls `health` until it reports `want` (generous deadline: a liveness bound, not a
/// timing assertion).
async fn wait_health(addr: std::net::SocketAddr, service: &str, want: ServingStatus) {
    for _ in 0..400 {
        if health(addr, service).await == want as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{service} on {addr} never reported {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_full_lights_never_colocate_and_every_held_tx_survives_two_more_losses() {
    let dirs: Vec<_> = (0..10).map(|_| tempfile::tempdir().unwrap()).collect();
    // Two small nodes hold only a few shards (one tx's stripe has ~2.5 KB shards).
    let small = 12_000;
    let mut lights = Vec::new();
    for (i, d) in dirs.iter().take(6).enumerate() {
        let quota = if i < 2 { small } else { 1 << 30 };
        lights.push(Some(light_in(d.path(), quota).await));
    }
    let infos: Vec<NodeInfo> = lights
        .iter()
        .enumerate()
        .map(|(i, h)| info(h.as_ref().unwrap(), i))
        .collect();
    let directory = Arc::new(StaticDirectory::new(infos.clone()));
    let city_dir = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::start(
        PipelineConfig {
            call_timeout: Duration::from_secs(5),
            capacity_wait: Duration::from_millis(100),
            // Full nodes stay out for the rest of the test once they refuse.
            node_cooldown: Duration::from_secs(600),
            ..PipelineConfig::default()
        },
        &city_dir.path().join("stripes.redb"),
        Arc::new(GrpcTransport::default()),
        directory.clone(),
        Arc::new(BatchVerifier::new(1).unwrap()),
    )
    .unwrap();

    // Fill: one tx per stripe until the small nodes refuse.
    let user = Keypair::generate();
    let mut held: Vec<TxId> = Vec::new();
    let mut not_held = Vec::new();
    for nonce in 0..16u64 {
        let v = signed(&user, nonce).verify(&MlDsa87).unwrap();
        let id = v.id();
        match pipeline.hold(v).await {
            Ok(h) => {
                assert_eq!(h.receipts.len(), 6);
                assert_eq!(distinct_holders(&h.receipts).len(), 6, "Held = 6 distinct");
                assert!(!h.colocated);
                held.push(id);
            }
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        PipelineError::NoRoom { .. } | PipelineError::NotHeld { .. }
                    ),
                    "{e}"
                );
                not_held.push(e);
            }
        }
    }
    assert!(
        !held.is_empty(),
        "some txs were Held before the nodes filled"
    );
    assert!(
        not_held.len() >= 8,
        "with two of six nodes full nothing can be Held: {not_held:?}"
    );
    assert!(
        matches!(
            not_held.last(),
            Some(PipelineError::NoRoom {
                usable: 4,
                needed: 6,
                ..
            })
        ),
        "{:?}",
        not_held.last()
    );
    for (i, l) in lights.iter().take(2).enumerate() {
        let store = l.as_ref().unwrap().node().store();
        assert!(store.free_bytes().unwrap() < 3_000, "node {i} is full");
    }
    // No stripe the city recorded has two shards on one holder.
    for (m, receipts) in pipeline.manifests().unwrap() {
        let holders: BTreeSet<_> = m.holders.iter().flatten().collect();
        assert_eq!(holders.len(), 6);
        assert_eq!(distinct_holders(&receipts).len(), 6);
    }

    // Two other light nodes die: every Held tx still restores from shards alone.
    for i in [2, 3] {
        lights[i].take().unwrap().kill().await;
        directory.remove(&infos[i].node_id);
    }
    let mut restored = 0;
    for id in &held {
        let r = pipeline.restore(*id).await.unwrap();
        assert_eq!(r.tx.id(), *id);
        assert_eq!(r.shards_used, 4);
        restored += 1;
    }

    // Capacity returns (four fresh nodes join): Held again, on six distinct holders that
    // are neither full nor dead.
    for (j, d) in dirs.iter().skip(6).enumerate() {
        let h = light_in(d.path(), 1 << 30).await;
        directory.add(info(&h, 6 + j));
        lights.push(Some(h));
    }
    let excluded: BTreeSet<NodeId> = (0..4).map(|i| infos[i].node_id).collect();
    let mut held_again = 0;
    for nonce in 100..104u64 {
        let v = signed(&user, nonce).verify(&MlDsa87).unwrap();
        let h = pipeline.hold(v).await.unwrap();
        let holders = distinct_holders(&h.receipts);
        assert_eq!(holders.len(), 6);
        assert!(
            holders.is_disjoint(&excluded),
            "no shard on a full or dead node"
        );
        held_again += 1;
    }
    let no_room = not_held
        .iter()
        .filter(|e| matches!(e, PipelineError::NoRoom { .. }))
        .count();
    println!(
        "figures: 16 submitted with 2 of 6 lights filling: {} Held (all on 6 distinct holders), \
         {} not Held ({no_room} NoRoom, {} NotHeld), 0 colocated; after 2 more lights killed: \
         {restored}/{} Held txs restored from shards; after 4 fresh lights joined: {held_again}/4 Held",
        held.len(),
        not_held.len(),
        not_held.len() - no_room,
        held.len()
    );
    for h in lights.into_iter().flatten() {
        h.shutdown().await.unwrap();
    }
}

/// The HTTP status of `GET path` on `addr` (a plain HTTP/1.1 request).
fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn city_with_lights(
    city_dir: &Path,
    light_dirs: &[tempfile::TempDir],
) -> (
    node::CityHandle,
    CityClient,
    Vec<LightHandle>,
    Arc<StaticDirectory>,
) {
    let mut lights = Vec::new();
    for d in light_dirs {
        lights.push(light_in(d.path(), 1 << 30).await);
    }
    let infos: Vec<NodeInfo> = lights.iter().enumerate().map(|(i, h)| info(h, i)).collect();
    let directory = Arc::new(StaticDirectory::new(infos));
    let cfg = CityConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: city_dir.to_path_buf(),
        verify_threads: 1,
        archive: false,
        gateway: Some(gateway::GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..gateway::GatewayConfig::default()
        }),
        // Plaintext links, chosen explicitly (the default is TLS).
        links: rpc::tls::LinkSecurity::Insecure,
        ..CityConfig::default()
    };
    let parts = CityParts {
        storage: Some(StorageParts {
            transport: Arc::new(GrpcTransport::default()),
            directory: directory.clone(),
            config: PipelineConfig {
                call_timeout: Duration::from_secs(5),
                ..PipelineConfig::default()
            },
        }),
        ..CityParts::default()
    };
    let city = start_city_with(&cfg, &Keypair::generate(), parts)
        .await
        .unwrap();
    let client = CityClient::connect(&city.addr().to_string()).await.unwrap();
    (city, client, lights, directory)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_city_store_rejects_cleanly_goes_not_serving_and_heals_without_restart() {
    let city_dir = tempfile::tempdir().unwrap();
    let light_dirs: Vec<_> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let (city, client, lights, _dir) = city_with_lights(city_dir.path(), &light_dirs).await;
    const SVC: &str = "citychain.v1.CityNodeService";
    assert_eq!(
        health(city.addr(), SVC).await,
        ServingStatus::Serving as i32
    );
    let user = Keypair::generate();
    let mut held: Vec<TxId> = Vec::new();
    let mut nonce = 0;
    for _ in 0..5 {
        let s = client.submit(&signed(&user, nonce)).await.unwrap();
        assert_eq!(s.state, TxState::Held);
        held.push(s.tx_id);
        nonce += 1;
    }

    // The disk fills: the store file may not grow any more.
    let store = city.node().store().clone();
    let len = std::fs::metadata(store.path()).unwrap().len();
    store.file_cap().set(len);
    let mut rejected = 0;
    for _ in 0..2_000 {
        match client.submit(&signed(&user, nonce)).await {
            Ok(s) => {
                assert_eq!(s.state, TxState::Held);
                held.push(s.tx_id);
            }
            Err(rpc::ClientError::Rejected(r)) => {
                assert_eq!(r.code, rpc::RejectCode::Unavailable, "{r:?}");
                rejected += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
        nonce += 1;
        if rejected > 0 {
            break;
        }
    }
    assert_eq!(rejected, 1, "the full store rejects");
    wait_health(city.addr(), SVC, ServingStatus::NotServing).await;
    assert!(store.is_failed());
    let http = city.gateway_addr().unwrap();
    assert_eq!(
        http_status(http, "/healthz"),
        503,
        "HTTP health says so too"
    );
    // While full: every submission is a clean rejection, the process keeps serving reads.
    for _ in 0..5 {
        match client.submit(&signed(&user, nonce)).await {
            Err(rpc::ClientError::Rejected(r)) => {
                assert_eq!(r.code, rpc::RejectCode::Unavailable);
                assert!(r.message.contains("commit failed"), "{}", r.message);
            }
            other => panic!("expected a rejection while full, got {other:?}"),
        }
        nonce += 1;
    }
    let first = client.get(held[0]).await.unwrap().unwrap();
    assert_eq!(first.state, TxState::Held);

    // Space is freed: the store reopens by itself, health says SERVING, Held again.
    store.file_cap().set(u64::MAX);
    wait_health(city.addr(), SVC, ServingStatus::Serving).await;
    assert!(!store.is_failed());
    assert_eq!(http_status(http, "/healthz"), 200);
    for _ in 0..3 {
        let s = client.submit(&signed(&user, nonce)).await.unwrap();
        assert_eq!(s.state, TxState::Held);
        held.push(s.tx_id);
        nonce += 1;
    }
    // Every tx answered Held is found, Held.
    for id in &held {
        let rec = client.get(*id).await.unwrap().expect("held tx found");
        assert_eq!(rec.state, TxState::Held, "{id}");
    }
    println!(
        "figures: store capped at {len} bytes: {} Held before the first rejection, then 5/5 \
         rejected UNAVAILABLE while NOT_SERVING; cap lifted, no restart: SERVING, 3/3 Held; \
         {}/{} Held txs found Held",
        held.len() - 3,
        held.len(),
        held.len()
    );
    city.shutdown().await.unwrap();
    for l in lights {
        l.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_light_store_restarts_empty_the_audit_finds_the_loss_and_repair_clears_it() {
    let city_dir = tempfile::tempdir().unwrap();
    let light_dirs: Vec<_> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let (city, client, mut lights, directory) =
        city_with_lights(city_dir.path(), &light_dirs).await;
    let user = Keypair::generate();
    let mut held = Vec::new();
    for nonce in 0..4 {
        let s = client.submit(&signed(&user, nonce)).await.unwrap();
        assert_eq!(s.state, TxState::Held);
        held.push(s.tx_id);
    }
    let probe: Arc<dyn HolderProbe> = Arc::new(GrpcProbe::new(Duration::from_secs(5)));
    let before = audit_stripes(
        probe.clone(),
        &client.list_stripes().await.unwrap(),
        4,
        |_| {},
    )
    .await;
    assert!(before.is_clean(), "{}", before.table());

    // Light 0 stops; bytes of its store are flipped, as a torn write after kill -9 leaves.
    let victim = lights.remove(0);
    let id = victim.node().node_id();
    let held_there = victim.node().store().list_stripes().unwrap().len();
    assert!(held_there > 0);
    victim.shutdown().await.unwrap();
    let path = light_dirs[0].path().join("shards.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().take(8192).step_by(7) {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();

    // It starts again: empty, same identity, the bad file kept aside.
    let again = light_in(light_dirs[0].path(), 1 << 30).await;
    assert_eq!(again.node().node_id(), id);
    let aside = again.quarantined().expect("moved aside").to_path_buf();
    assert_eq!(std::fs::read(&aside).unwrap(), bytes);
    assert!(again.node().store().list_stripes().unwrap().is_empty());
    directory.remove(&id);
    directory.add(info(&again, 0));

    // The audit reports the loss: each stripe lost its shard on that node.
    let lost = audit_stripes(
        probe.clone(),
        &client.list_stripes().await.unwrap(),
        4,
        |_| {},
    )
    .await;
    assert!(!lost.is_clean());
    assert_eq!(lost.missing(), held_there, "{}", lost.table());
    assert_eq!(lost.underplaced_stripes, held_there);

    // Repair re-creates every lost shard; the audit is clean again.
    let mut rebuilt = 0;
    for tx in &held {
        rebuilt += client
            .repair(*tx, true)
            .await
            .unwrap()
            .unwrap()
            .shards_rebuilt;
    }
    assert_eq!(rebuilt as usize, held_there);
    let after = audit_stripes(probe, &client.list_stripes().await.unwrap(), 4, |_| {}).await;
    assert!(after.is_clean(), "{}", after.table());
    println!(
        "figures: light restarted empty (bad file kept at {}); audit before repair: {} missing, \
         {} stripes under-placed; repair re-created {rebuilt}; audit after: clean\n{}{}",
        aside.display(),
        lost.missing(),
        lost.underplaced_stripes,
        lost.table(),
        after.table()
    );
    assert_eq!(after.one_loss_from_unrecoverable, 0);
    city.shutdown().await.unwrap();
    again.shutdown().await.unwrap();
    for l in lights {
        l.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_store_io_error_is_not_serving_until_it_reopens_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let light = light_in(dir.path(), 1 << 30).await;
    const SVC: &str = "citychain.v1.ShardStoreService";
    assert_eq!(
        health(light.addr(), SVC).await,
        ServingStatus::Serving as i32
    );
    let client = rpc::ShardStoreClient::connect(&light.addr().to_string())
        .await
        .unwrap();
    let shards = |seed: u8| {
        storage::ErasureConfig::default()
            .encode(&vec![seed; 200_000])
            .unwrap()
    };
    let mut stored = Vec::new();
    for s in shards(1) {
        client.put_shard(&s).await.unwrap();
        stored.push(s);
    }
    // The disk fills under the store: the next growth fails with ENOSPC's error kind.
    let store = light.node().store().clone();
    store.file_cap().set(
        std::fs::metadata(dir.path().join("shards.redb"))
            .unwrap()
            .len(),
    );
    let mut refused = None;
    for seed in 2..40u8 {
        if let Some(e) = futures::future::join_all(shards(seed).iter().map(|s| client.put_shard(s)))
            .await
            .into_iter()
            .find_map(Result::err)
        {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("a capped store fills");
    assert!(e.to_string().contains("STORE"), "{e}");
    wait_health(light.addr(), SVC, ServingStatus::NotServing).await;
    assert!(!light.is_serving());
    // Puts are refused with UNAVAILABLE naming the reason; reads still work.
    let e = client.put_shard(&shards(99)[0]).await.unwrap_err();
    assert!(e.to_string().contains("STORE_UNAVAILABLE"), "{e}");
    let got = client
        .get_shard(stored[0].stripe_id(), stored[0].index())
        .await
        .unwrap();
    assert_eq!(got, stored[0]);

    // Space returns: the node reopens its store by itself and serves puts again.
    store.file_cap().set(u64::MAX);
    wait_health(light.addr(), SVC, ServingStatus::Serving).await;
    client.put_shard(&shards(99)[0]).await.unwrap();
    for s in &stored {
        assert_eq!(
            &client.get_shard(s.stripe_id(), s.index()).await.unwrap(),
            s
        );
    }
    light.shutdown().await.unwrap();
}

/// Held's promise cannot be kept (five distinct light nodes for a 4+2 stripe): the sender gets
/// a retryable OVERLOADED naming the reason, the admission is withdrawn (the tx is not found,
/// its nonce is free), and the same signed tx is Held once a sixth holder is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_holders_is_a_retryable_rejection_and_nothing_stays_admitted() {
    let city_dir = tempfile::tempdir().unwrap();
    let light_dirs: Vec<_> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let (city, client, mut lights, directory) =
        city_with_lights(city_dir.path(), &light_dirs).await;
    let user = Keypair::generate();
    let first = client.submit(&signed(&user, 0)).await.unwrap();
    assert_eq!(first.state, TxState::Held);

    let gone = lights.pop().unwrap();
    directory.remove(&gone.node().node_id());
    gone.shutdown().await.unwrap();
    let tx = signed(&user, 1);
    let mut events = city.node().events().subscribe(None).live;
    match client.submit(&tx).await {
        Err(rpc::ClientError::Rejected(r)) => {
            assert_eq!(r.code, rpc::RejectCode::Overloaded, "{r:?}");
            assert!(r.message.contains("distinct holders"), "{}", r.message);
        }
        other => panic!("expected a retryable rejection, got {other:?}"),
    }
    // A subscriber that saw `admitted` learns that the admission was taken back.
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.tx_id == tx.id() {
            seen.push((e.kind, e.detail["code"].as_str().map(str::to_string)));
        }
    }
    assert_eq!(
        seen,
        vec![
            (node::gateway::EventKind::Admitted, None),
            (
                node::gateway::EventKind::Withdrawn,
                Some("OVERLOADED".to_string())
            )
        ]
    );
    assert!(
        client.get(tx.id()).await.unwrap().is_none(),
        "a tx that was not Held is not kept as admitted"
    );

    let dir = tempfile::tempdir().unwrap();
    let back = light_in(dir.path(), 1 << 30).await;
    directory.add(info(&back, 6));
    let again = client.submit(&tx).await.unwrap();
    assert_eq!(
        again.state,
        TxState::Held,
        "the same tx is Held once capacity returns"
    );
    assert_eq!(distinct_holders(&again.receipts).len(), 6);
    assert_eq!(
        client.get(tx.id()).await.unwrap().unwrap().state,
        TxState::Held
    );
    back.shutdown().await.unwrap();
    for h in lights {
        h.shutdown().await.unwrap();
    }
    city.shutdown().await.unwrap();
}

/// Placement sees a light node's free capacity move as it fills: the role logs in again with
/// the new figure (an update in presence), and never after it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_node_advertises_its_free_capacity_as_it_fills() {
    let dir = tempfile::tempdir().unwrap();
    let presence: Arc<dyn presence::PresenceStore> = Arc::new(presence::MemoryPresenceStore::new(
        Duration::from_secs(60),
        Arc::new(presence::SystemClock),
    ));
    let cfg = LightConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        quota_bytes: 64 << 20,
        // Plaintext links, chosen explicitly (the default is TLS).
        links: rpc::tls::LinkSecurity::Insecure,
        ..LightConfig::default()
    };
    let role = node::run_light_with(
        &cfg,
        Keypair::generate(),
        &node::MembershipConfig::default(),
        presence.clone(),
    )
    .await
    .unwrap();
    let id = role.light_handle().unwrap().node().node_id();
    let advertised = || {
        let presence = presence.clone();
        async move {
            presence
                .list(&presence::ListFilter::default())
                .await
                .unwrap()
                .into_iter()
                .find(|n| n.node_id == id)
                .map(|n| n.free_capacity)
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let before = loop {
        if let Some(f) = advertised().await {
            break f;
        }
        assert!(std::time::Instant::now() < deadline, "never logged in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(before > 60 << 20, "{before}");

    // 12 MiB of shards arrive (two 6 MiB shards of one stripe).
    let store = role.light_handle().unwrap().node().store().clone();
    let shards = storage::ErasureConfig::default()
        .encode(&vec![5u8; 24 << 20])
        .unwrap();
    for s in &shards[..2] {
        store.put(s).unwrap();
    }
    let now_free = store.free_bytes().unwrap();
    assert!(now_free <= before - (12 << 20));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let f = advertised().await.unwrap();
        if f == now_free {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "presence still says {f} free, the store {now_free}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    role.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        advertised().await,
        None,
        "logged out, and not logged back in"
    );
}

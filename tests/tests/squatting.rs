//! Squatting shards do not stop a repair (issue 14): every light node that is not a holder
//! of a stripe stores bogus shards under the stripe's real (stripe id, index) slots — same
//! ids, wrong bytes, each with a receipt the squatter signs itself — and answers repair
//! requests with them over real gRPC. With two of the six holders crashed, the repair still
//! restores the tx from the holders the manifest names (shard hash + receipt checked), never
//! uses a squatter's answer, and the re-placement that finds only squatters left reports
//! every one of them with a typed error instead of recording a bogus holder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/light_repair.rs"]
mod light_repair;

use dag_core::{CityId, NodeId, Position, SignedTx, StripeId, TxId};
use devnet::{CITY, CITY_POS, Devnet, DevnetConfig};
use gateway::RepairState;
use node::{PipelineConfig, PipelineError};
use pqc::Keypair;
use rpc::{CityClient, TxState};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use storage::{ErasureConfig, Shard, StripeLayout};

/// Squatters started beside the six honest light nodes (every one of them a non-holder).
const SQUATTERS: usize = 4;

/// Shards with the real stripe's ids (stripe id, every index, codec, k, m, length) but
/// other bytes: self-consistent (a light node's store takes them), wrong for the manifest.
fn squatting_shards(layout: &StripeLayout, seed: u8) -> Vec<Shard> {
    let cfg = ErasureConfig {
        codec: layout.codec,
        k: layout.k,
        m: layout.m,
    };
    let len = usize::try_from(layout.len).unwrap();
    let junk: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    let mut shards = cfg.encode(&junk).unwrap();
    for s in &mut shards {
        s.header.stripe_id = layout.stripe_id;
        s.header.stripe_hash = layout.stripe_id.0;
        s.check().expect("a squatting shard is self-consistent");
        assert!(
            layout.check_shard(s).is_err(),
            "but not the manifest's shard"
        );
    }
    shards
}

/// A REPAIR_REQUEST for (stripe, index) of tx `id`, signed by a representative, to `to`.
fn repair_request(key: &Keypair, stripe: StripeId, index: u16, id: TxId, to: NodeId) -> SignedTx {
    let now = node::runtime::now_ms();
    let tx = dag_core::Tx {
        kind: dag_core::TxKind::RepairRequest,
        sender: key.account_id(),
        receiver: dag_core::AccountId::from_bytes(*to.as_bytes()),
        amount: 0,
        nonce: now.saturating_mul(64) + u64::from(index),
        timestamp_ms: now,
        city_id: CityId::new(CITY).unwrap(),
        position: Position::from_degrees(CITY_POS.0, CITY_POS.1).unwrap(),
        method: dag_core::PositionMethod::Gps,
        read_set: Vec::new(),
        write_set: Vec::new(),
        payload: rpc::RepairRequestPayload {
            stripe,
            index,
            tx: id,
        }
        .encode(),
    };
    pqc::sign_tx(tx, key)
}

struct Squatter {
    id: NodeId,
    addr: String,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// A real light node (real shard store and repair responder over gRPC) whose store was
/// filled with squatting shards before it logged in to presence as a light node of the city.
async fn start_squatter(net: &Devnet, layout: &StripeLayout, seed: u8) -> Squatter {
    let store = storage::ShardStore::in_memory(storage::StoreConfig::default()).unwrap();
    for s in squatting_shards(layout, seed) {
        store.put(&s).unwrap();
    }
    let key = Keypair::generate();
    let id = key.node_id();
    let light = Arc::new(node::LightNode::new(
        store,
        key,
        Arc::new(node::runtime::SystemClock),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(rpc::ShardStoreService::new(light.clone()).into_server())
            .add_service(rpc::RepairGrpc::new(light).into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    net.presence()
        .login(node::node_info(
            id,
            dag_core::Role::Light,
            addr.to_string(),
            CITY,
            &format!("zone-squat-{seed}"),
            CITY_POS,
            1 << 30,
            node::runtime::now_ms(),
        ))
        .await
        .unwrap();
    Squatter {
        id,
        addr: addr.to_string(),
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squatting_shards_on_every_non_holder_do_not_stop_a_repair() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DevnetConfig {
        lights: 6,
        // The squatters are bare plaintext tonic servers (like repair_protocol's liar): links
        // stay plaintext; what is tested is what the city believes of the answers.
        tls: false,
        heartbeat: Duration::from_millis(200),
        // Crashed holders stay listed (silent), so background re-replication does not race
        // the repair below.
        presence_ttl: Duration::from_secs(120),
        pipeline: PipelineConfig {
            call_timeout: Duration::from_secs(2),
            ..PipelineConfig::default()
        },
        ..DevnetConfig::default()
    };
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);
    let client = CityClient::connect(&net.city().addr().to_string())
        .await
        .unwrap();
    let user = Keypair::generate();
    let tx = e2e::tokyo_payment(&user, 5, 0, CITY_POS);
    let id = tx.id();
    let s = client.submit(&tx).await.unwrap();
    assert_eq!(s.state, TxState::Held);
    let holders: BTreeSet<NodeId> = s.receipts.iter().map(|r| r.receipt.holder).collect();
    assert_eq!(holders.len(), 6);

    let node = net.city().node().clone();
    let pipeline = node.pipeline().unwrap().clone();
    let held = pipeline.held(&id).unwrap().unwrap();
    let (manifest, receipts) = pipeline
        .manifests()
        .unwrap()
        .into_iter()
        .find(|(m, _)| m.stripe_id() == held.stripe_id)
        .unwrap();
    let layout = manifest.layout.clone();

    // Every light node that joins now is a non-holder, and every one squats every slot.
    let mut squatters = Vec::new();
    for seed in 0..SQUATTERS {
        squatters.push(start_squatter(&net, &layout, u8::try_from(seed).unwrap() + 1).await);
    }
    assert!(
        net.wait_for_lights(6 + SQUATTERS, Duration::from_secs(20))
            .await
    );
    let squatter_ids: BTreeSet<NodeId> = squatters.iter().map(|s| s.id).collect();
    assert!(squatter_ids.is_disjoint(&holders));

    // Asked directly, each squatter does answer a representative's REPAIR_REQUEST, with a
    // bogus shard and a receipt it signed itself: what a repair that trusted any answer
    // under the right (stripe, index) would take.
    let rep_key = net.reps()[0].key.clone();
    for sq in &squatters {
        let c = rpc::RepairClient::connect(&sq.addr, Duration::from_secs(5))
            .await
            .unwrap();
        for index in 0..layout.n() {
            let a = c
                .request(&repair_request(
                    &rep_key,
                    layout.stripe_id,
                    index,
                    id,
                    sq.id,
                ))
                .await
                .expect("a squatter answers");
            let shard = Shard::from_bytes(&a.shard).unwrap();
            assert_eq!(
                (shard.stripe_id(), shard.index()),
                (layout.stripe_id, index)
            );
            assert!(layout.check_shard(&shard).is_err(), "bogus bytes");
            assert_eq!(a.receipt.receipt.holder, sq.id, "signed by the squatter");
            assert!(
                storage::verify_receipt(&layout, a.receipt, &pqc::MlDsa87).is_err(),
                "its receipt does not match the manifest's shard"
            );
        }
    }

    // Two honest holders crash (still listed live, silent).
    let mut crashed = BTreeSet::new();
    for i in 0..net.lights.len() {
        if crashed.len() < 2 && holders.contains(&net.lights[i].id) {
            crashed.insert(net.lights[i].id);
            net.crash_light(i).await;
        }
    }
    assert_eq!(crashed.len(), 2);

    // Re-placing the two lost shards finds only squatters to take them: each refuses (its
    // slot holds a conflicting shard), every one is named, and no squatter is recorded.
    let err = pipeline.repair_stripe_of(id).await.unwrap_err();
    let PipelineError::NoRoom { reason, .. } = &err else {
        panic!("expected NoRoom, got {err}");
    };
    for sq in &squatters {
        assert!(
            reason.contains(&sq.id.short()),
            "squatter {} reported: {reason}",
            sq.id.short()
        );
    }
    assert!(reason.contains("SHARD_CONFLICT"), "{reason}");
    let (after, after_receipts) = pipeline
        .manifests()
        .unwrap()
        .into_iter()
        .find(|(m, _)| m.stripe_id() == layout.stripe_id)
        .unwrap();
    assert_eq!(after, manifest, "the manifest names the same holders");
    assert!(
        after_receipts.iter().all(|r| receipts.contains(r)),
        "no new receipt recorded"
    );
    assert!(after.distinct_holders().is_disjoint(&squatter_ids));

    // The repair through the repair protocol restores the tx from the manifest's live
    // holders only, every answer checked (hash + receipt).
    let (state, acked) = light_repair::repair_through_lights(&node, rep_key.clone(), id).await;
    assert!(
        matches!(&state, RepairState::Completed { tier, .. } if tier == "light_nodes"),
        "{state:?}"
    );
    assert_eq!(acked.len(), 4, "k = 4 good answers: {acked:?}");
    for h in &acked {
        let h = holders
            .iter()
            .find(|x| x.to_hex() == *h)
            .expect("only holders the manifest names are used");
        assert!(!crashed.contains(h));
    }
    // GetTx restores it from the shards as well, and the manifest never names a squatter.
    let rec = client.get(id).await.unwrap().expect("found");
    assert_eq!(rec.tx.as_ref(), Some(&tx));
    let now = pipeline.held(&id).unwrap().unwrap();
    assert!(
        now.receipts
            .iter()
            .all(|r| !squatter_ids.contains(&r.receipt.holder))
    );
    println!(
        "squatting: {SQUATTERS} squatters on every slot, 2 of 6 holders down; repair {state:?}, \
         re-placement refused: {reason}"
    );

    for sq in squatters {
        sq.server.abort();
        let _ = sq.server.await;
    }
    net.shutdown().await.unwrap();
}

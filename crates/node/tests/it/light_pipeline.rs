//! The city pipeline over real gRPC: six light nodes on loopback, txs Held with receipts
//! from six distinct holders, a shard corrupted on disk, two nodes killed (one abruptly),
//! every tx restored, re-replication back to six distinct live holders.

use crate::info;
use dag_core::{AccountId, CityId, NodeInfo, Position, PositionMethod, Tx};
use node::{GrpcTransport, LightConfig, Pipeline, PipelineConfig, StaticDirectory, start_light};
use pqc::{BatchVerifier, Keypair, MlDsa87, sign_tx};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_lights_kill_two_restore_and_rereplicate() {
    let dirs: Vec<_> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut lights = Vec::new();
    for d in &dirs {
        let cfg = LightConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: d.path().to_path_buf(),
            quota_bytes: 1 << 30,
            // Plaintext links, chosen explicitly (the default is TLS).
            links: rpc::tls::LinkSecurity::Insecure,
            ..LightConfig::default()
        };
        lights.push(Some(start_light(&cfg, Keypair::generate()).await.unwrap()));
    }
    let infos: Vec<NodeInfo> = lights
        .iter()
        .enumerate()
        .map(|(i, h)| info(h.as_ref().unwrap(), i % 4))
        .collect();
    let directory = Arc::new(StaticDirectory::new(infos.clone()));
    let city_dir = tempfile::tempdir().unwrap();
    let cfg = PipelineConfig {
        call_timeout: Duration::from_secs(5),
        ..PipelineConfig::default()
    };
    let pipeline = Pipeline::start(
        cfg,
        &city_dir.path().join("stripes.redb"),
        Arc::new(GrpcTransport::default()),
        directory.clone(),
        Arc::new(BatchVerifier::new(1).unwrap()),
    )
    .unwrap();

    let user = Keypair::generate();
    let mut ids = Vec::new();
    let mut holds = Vec::new();
    for i in 0..12u64 {
        let tx = Tx::fresh(
            user.account_id(),
            AccountId::from_bytes([7; 32]),
            10 + i,
            i,
            1_767_225_600_000 + i,
            CityId::new("JP-13").unwrap(),
            Position::from_degrees(35.68, 139.69).unwrap(),
            PositionMethod::Gps,
        );
        let v = sign_tx(tx, &user).verify(&MlDsa87).unwrap();
        ids.push(v.id());
        let p = pipeline.clone();
        holds.push(tokio::spawn(async move { p.hold(v).await }));
    }
    for h in holds {
        let held = h.await.unwrap().unwrap();
        assert!(!held.colocated);
        let holders: BTreeSet<_> = held.receipts.iter().map(|r| r.receipt.holder).collect();
        assert_eq!(holders.len(), 6, "six distinct holders");
    }

    let restore_all = |pipeline: Arc<Pipeline>, ids: Vec<dag_core::TxId>| async move {
        for id in ids {
            let r = pipeline.restore(id).await.unwrap();
            assert_eq!(r.tx.id(), id);
            r.tx.verify(&MlDsa87).unwrap();
        }
    };

    // A shard corrupted on disk is refused by its holder and counts as missing.
    let (manifest, _) = pipeline.manifests().unwrap().remove(0);
    let sid = manifest.stripe_id();
    let pos = |id: dag_core::NodeId| infos.iter().position(|n| n.node_id == id).unwrap();
    let victim = pos(manifest.holders[0].unwrap());
    let store = lights[victim].as_ref().unwrap().node().store().clone();
    store
        .corrupt_for_test(&sid, 0, |b| *b.last_mut().unwrap() ^= 1)
        .unwrap();
    let client = rpc::ShardStoreClient::connect(&infos[victim].grpc_addr)
        .await
        .unwrap();
    let e = client.get_shard(sid, 0).await.unwrap_err();
    assert!(e.to_string().contains("CORRUPT"), "{e}");
    restore_all(pipeline.clone(), ids.clone()).await;

    // Kill two holders of that stripe: the corrupt one abruptly, another gracefully.
    let second = pos(manifest.holders[1].unwrap());
    lights[victim].take().unwrap().kill().await;
    lights[second].take().unwrap().shutdown().await.unwrap();
    restore_all(pipeline.clone(), ids.clone()).await;

    // Node-list reports both gone: re-replication brings every stripe back to n holders.
    for gone in [victim, second] {
        directory.remove(&infos[gone].node_id);
    }
    let mut placed = 0;
    for gone in [victim, second] {
        let report = pipeline.rereplicate(infos[gone].node_id).await.unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        placed += report.shards_placed;
    }
    assert!(placed >= 2, "placed {placed}");
    let alive: BTreeSet<_> = lights
        .iter()
        .flatten()
        .map(|h| h.node().node_id())
        .collect();
    for (m, receipts) in pipeline.manifests().unwrap() {
        let holders: BTreeSet<_> = m.holders.iter().map(|h| h.unwrap()).collect();
        assert_eq!(
            holders.len(),
            6,
            "stripe {} has 6 distinct holders",
            m.stripe_id()
        );
        assert!(
            holders.is_subset(&alive),
            "all holders of {} are live",
            m.stripe_id()
        );
        assert_eq!(receipts.len(), 6);
    }
    restore_all(pipeline.clone(), ids.clone()).await;
    for h in lights.into_iter().flatten() {
        h.shutdown().await.unwrap();
    }
}

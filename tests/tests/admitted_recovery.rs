//! A crash between the tx store's commit and the hold leaves txs Admitted (stored durably,
//! in no stripe). The representative is killed at exactly that point — its transport to the
//! light nodes never completes a put, so the hold cannot finish — and restarted on the same data
//! directory: the start-up scan finds the txs, puts them through the pipeline again, and
//! they are Held (then ordered) without being submitted again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use dag_core::{NodeInfo, SignedReceipt, StripeId};
use devnet::{CITY_POS, Devnet, DevnetConfig};
use node::{ShardTransport, TransportError};
use pqc::Keypair;
use rpc::{CityClient, TxState};
use std::sync::Arc;
use std::time::Duration;
use storage::Shard;
use tokio::sync::watch;

/// The crashed process's transport to the light nodes: a put waits until the process is
/// declared dead, then fails, as does every later put (its calls never complete). Nothing
/// it does reaches a light node, so nothing can be held behind the test's back.
struct Stuck {
    dead: watch::Sender<bool>,
}

#[async_trait]
impl ShardTransport for Stuck {
    async fn put_shard(
        &self,
        node: &NodeInfo,
        _shard: &Shard,
    ) -> Result<SignedReceipt, TransportError> {
        let _ = self.dead.subscribe().wait_for(|dead| *dead).await;
        Err(TransportError::Unreachable {
            node: node.node_id.short(),
            reason: "the process crashed mid-call".into(),
        })
    }

    async fn get_shard(
        &self,
        node: &NodeInfo,
        _stripe: StripeId,
        _index: u16,
    ) -> Result<Shard, TransportError> {
        Err(TransportError::Unreachable {
            node: node.node_id.short(),
            reason: "the process crashed".into(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txs_left_admitted_by_a_crash_are_held_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (dead, _) = watch::channel(false);
    let stuck = Arc::new(Stuck { dead });
    let cfg = DevnetConfig {
        lights: 6,
        pipeline: node::PipelineConfig {
            // The hold waits on the stuck transport well past the kill.
            call_timeout: Duration::from_secs(30),
            ..node::PipelineConfig::default()
        },
        transport: Some(stuck.clone()),
        ..DevnetConfig::default()
    };
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);
    let addr = net.city().addr().to_string();
    let client = CityClient::connect(&addr).await.unwrap();
    let user = Keypair::generate();
    let txs: Vec<_> = (0..4)
        .map(|nonce| e2e::tokyo_payment(&user, 5, nonce, CITY_POS))
        .collect();
    // Submissions wait in the hold; their answers never come (the node is killed).
    let pending: Vec<_> = txs
        .iter()
        .map(|t| {
            let (c, t) = (client.clone(), t.clone());
            tokio::spawn(async move { c.submit(&t).await })
        })
        .collect();
    // Stored durably, not held: the window a crash can hit.
    for t in &txs {
        let mut state = None;
        for _ in 0..500 {
            state = client.get(t.id()).await.unwrap().map(|r| r.state);
            if state.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(state, Some(TxState::Admitted), "tx {}", t.id());
    }
    net.kill_rep(0).await;
    for p in pending {
        assert!(p.await.unwrap().is_err(), "no answer from a killed node");
    }
    drop(client);
    stuck.dead.send_replace(true);

    // The restarted process talks gRPC to the light nodes.
    net.set_transport(None);
    net.start_rep(0).await.unwrap();
    let client = CityClient::connect(&addr).await.unwrap();
    for t in &txs {
        let mut rec = None;
        for _ in 0..600 {
            rec = client.get(t.id()).await.unwrap();
            if rec.as_ref().is_some_and(|r| r.state != TxState::Admitted) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rec = rec.expect("still stored after the restart");
        assert_ne!(rec.state, TxState::Admitted, "tx {} never held", t.id());
        assert_eq!(rec.receipts.len(), 6, "held by n = 6 distinct light nodes");
        assert_eq!(rec.tx.as_ref(), Some(t));
    }
    let status = client.status().await.unwrap();
    assert_eq!(status.stored_txs, 4, "nothing stored twice");
    drop(client);
    net.shutdown().await.unwrap();
}

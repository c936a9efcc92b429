//! Four representatives from one genesis file order each other's held txs: every tx
//! submitted to any of them reaches Ordered (and Federated) on every live one, with one
//! identical checkpoint sequence, through a representative's crash and a continent restart.

use dag_core::{AccountId, CityId, Position, PositionMethod, SignedTx, Tx, TxId};
use devnet::{CITY, Devnet, DevnetConfig};
use pqc::{Keypair, sign_tx};
use rpc::{CityClient, TxState};
use std::time::{Duration, Instant};

fn signed(from: &Keypair, nonce: u64) -> SignedTx {
    sign_tx(
        Tx::fresh(
            from.account_id(),
            AccountId::from_bytes([7; 32]),
            100,
            nonce,
            1_767_225_600_000,
            CityId::new(CITY).unwrap(),
            Position::from_degrees(35.6895, 139.6917).unwrap(),
            PositionMethod::Gps,
        ),
        from,
    )
}

async fn submit_all(net: &Devnet, live: &[usize], txs: &[SignedTx]) -> Vec<TxId> {
    let mut clients = Vec::new();
    for &i in live {
        clients.push(
            CityClient::connect(&net.rep(i).unwrap().addr().to_string())
                .await
                .unwrap(),
        );
    }
    let mut held = Vec::new();
    for (k, tx) in txs.iter().enumerate() {
        let s = clients[k % clients.len()].submit(tx).await.unwrap();
        assert_eq!(s.state, TxState::Held, "tx {k}");
        held.push(s.tx_id);
    }
    held
}

/// Waits until every tx is at least `want` on every representative in `live`.
async fn wait_state(net: &Devnet, live: &[usize], ids: &[TxId], want: TxState) {
    let genesis = node::genesis::Genesis::load(net.genesis_path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for &i in live {
        let c = CityClient::connect(&net.rep(i).unwrap().addr().to_string())
            .await
            .unwrap();
        for id in ids {
            loop {
                let rec = c.get(*id).await.unwrap();
                if let Some(r) = &rec
                    && r.state == TxState::Federated
                {
                    // Every Federated answer carries a proof that checks offline.
                    let proof = r.proof.as_ref().expect("Federated carries its proof");
                    audit::verify_tx_proof(proof, *id, &genesis).unwrap();
                }
                let st = rec.map(|r| r.state);
                let ok = match want {
                    TxState::Ordered => {
                        matches!(st, Some(TxState::Ordered) | Some(TxState::Federated))
                    }
                    other => st == Some(other),
                };
                if ok {
                    break;
                }
                if Instant::now() >= deadline {
                    let mut why = String::new();
                    for j in 0..4 {
                        if let Some(r) = net.rep(j) {
                            let o = r.node().order_store().unwrap();
                            let st = *r.representative().unwrap().status().borrow();
                            why += &format!(
                                "\nrep {j}: order committed {} ordering {:?} status {st:?} local {:?}",
                                o.committed(),
                                o.ordering(id).unwrap(),
                                r.node().store().get(id).unwrap().is_some(),
                            );
                        }
                    }
                    panic!("tx {id} on representative {i} is {st:?}, want {want:?}{why}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The checkpoint running hashes of representative `i`, in sequence order.
fn sequence(net: &Devnet, i: usize) -> Vec<dag_core::Hash32> {
    let store = net.rep(i).unwrap().node().order_store().unwrap().clone();
    (0..store.committed())
        .map(|s| store.checkpoint(s).unwrap().unwrap().checkpoint.hash())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committee_orders_and_federates_through_a_crash_and_a_continent_restart() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let cfg = DevnetConfig {
        reps: 4,
        // Short fixed proposal interval: ordering is awaited (default: dynamic 0.5–5 s).
        batch_interval_ms: Some(50),
        ..DevnetConfig::default()
    };
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);
    let users: Vec<Keypair> = (0..8).map(|_| Keypair::generate()).collect();
    let txs: Vec<SignedTx> = (0..120)
        .map(|i| signed(&users[i % users.len()], i as u64))
        .collect();

    // Phase 1: all four up; representative 3 is killed -9 right after its last Held answer
    // (some of its held txs are still only queued for proposal), and the continent too.
    let first = submit_all(&net, &[0, 1, 2, 3], &txs[..60]).await;
    net.kill_rep(3).await;
    net.kill_continent().await;
    // Phase 2: three keep admitting and ordering while the continent is down.
    let second = submit_all(&net, &[0, 1, 2], &txs[60..]).await;
    net.start_continent().await.unwrap();
    let all: Vec<TxId> = first.iter().chain(&second).copied().collect();
    let others: Vec<TxId> = all
        .iter()
        .enumerate()
        .filter(|(k, _)| *k >= 60 || k % 4 != 3)
        .map(|(_, id)| *id)
        .collect();
    wait_state(&net, &[0, 1, 2], &others, TxState::Federated).await;

    // The crashed representative comes back: what it held but had not got ordered is
    // proposed again; every tx reaches Federated on all four.
    net.start_rep(3).await.unwrap();
    wait_state(&net, &[0, 1, 2, 3], &all, TxState::Federated).await;

    // One history: the sequences are equal in full (up to the shortest), nothing twice.
    let seqs: Vec<_> = (0..4).map(|i| sequence(&net, i)).collect();
    let n = seqs.iter().map(Vec::len).min().unwrap();
    assert!(n > 0);
    for s in &seqs {
        assert_eq!(s[..n], seqs[0][..n]);
    }
    for i in 0..4 {
        let store = net.rep(i).unwrap().node().order_store().unwrap().clone();
        assert_eq!(store.duplicates(), 0, "representative {i}");
    }
    net.shutdown().await.unwrap();
}

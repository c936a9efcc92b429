//! The working store leaves: over a devnet of four representatives, once the txs a
//! representative admitted are ordered, executed, held and archived, their bodies leave its
//! tx store (txs.redb back to empty) — and `GetTx` on that representative still answers
//! every one with its intact body (from its archive, else the shards), through a kill -9 and restart of one
//! representative mid-load.

#![allow(clippy::unwrap_used)]

use dag_core::{AccountId, CityId, Position, PositionMethod, SignedTx, Tx, TxId};
use devnet::{CITY, Devnet, DevnetConfig};
use pqc::{Keypair, sign_tx};
use rpc::{CityClient, TxState};
use std::time::{Duration, Instant};

const USERS: usize = 4;

fn transfer(from: &Keypair, to: AccountId, nonce: u64) -> SignedTx {
    sign_tx(
        Tx::fresh(
            from.account_id(),
            to,
            10,
            nonce,
            1_767_225_600_000 + nonce,
            CityId::new(CITY).unwrap(),
            Position::from_degrees(35.6895, 139.6917).unwrap(),
            PositionMethod::Gps,
        ),
        from,
    )
}

/// Submits `txs[k]` to representative `live[k % live.len()]`; returns (author, id) pairs.
async fn submit(net: &Devnet, live: &[usize], txs: &[SignedTx]) -> Vec<(usize, TxId)> {
    let mut clients = Vec::new();
    for &i in live {
        clients.push(
            CityClient::connect(&net.rep(i).unwrap().addr().to_string())
                .await
                .unwrap(),
        );
    }
    let mut out = Vec::new();
    for (k, tx) in txs.iter().enumerate() {
        let s = clients[k % clients.len()]
            .submit_retrying(tx, &e2e::WALLET_RETRY)
            .await
            .unwrap_or_else(|e| panic!("tx {k}: {e}"));
        assert_eq!(s.state, TxState::Held, "tx {k}: {s:?}");
        out.push((live[k % live.len()], s.tx_id));
    }
    out
}

/// Waits (generously) until every representative's working store is empty.
async fn drained(net: &Devnet) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left: Vec<u64> = (0..4)
            .map(|i| net.rep(i).unwrap().node().store().len().unwrap())
            .collect();
        if left.iter().all(|n| *n == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bodies still in the working stores: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executed_and_archived_txs_leave_the_working_store_and_gettx_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<Keypair> = (0..USERS).map(|_| Keypair::generate()).collect();
    let cfg = DevnetConfig {
        reps: 4,
        gateway: false,
        accounts: users.iter().map(|u| (u.account_id(), 1_000_000)).collect(),
        ..DevnetConfig::default()
    };
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);
    let to = AccountId::from_bytes([0x5a; 32]);
    let txs: Vec<SignedTx> = (0..32u64)
        .map(|k| transfer(&users[k as usize % USERS], to, k / USERS as u64))
        .collect();

    // Phase 1: all four admit; representative 1 is killed -9 (its pruner running) and
    // comes back; then more load on all four.
    let mut sent = submit(&net, &[0, 1, 2, 3], &txs[..16]).await;
    net.kill_rep(1).await;
    net.start_rep(1).await.unwrap();
    sent.extend(submit(&net, &[0, 1, 2, 3], &txs[16..]).await);

    // Every representative's working store empties once its txs are executed and archived.
    drained(&net).await;

    // GetTx on the admitting representative still answers every tx, body intact.
    for (k, (author, id)) in sent.iter().enumerate() {
        let c = CityClient::connect(&net.rep(*author).unwrap().addr().to_string())
            .await
            .unwrap();
        let rec = c.get(*id).await.unwrap().unwrap();
        assert_eq!(rec.tx.as_ref(), Some(&txs[k]), "tx {k} from rep {author}");
        assert!(
            rec.source.starts_with("shards") || rec.source == "archive",
            "tx {k}: answered from {}",
            rec.source
        );
        assert!(
            matches!(
                rec.state,
                TxState::Ordered | TxState::Federated | TxState::Completed
            ),
            "tx {k}: {:?}",
            rec.state
        );
    }
    // Replay protection stands after the bodies left: the same tx again is a duplicate
    // (answered with its state), never admitted twice.
    let c = CityClient::connect(&net.rep(sent[0].0).unwrap().addr().to_string())
        .await
        .unwrap();
    let again = c.submit(&txs[0]).await.unwrap();
    assert_eq!(again.tx_id, sent[0].1);
    assert_eq!(net.rep(sent[0].0).unwrap().node().store().len().unwrap(), 0);
    net.shutdown().await.unwrap();
}

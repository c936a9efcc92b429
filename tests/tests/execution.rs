//! Execution over a devnet of four representatives: every committed transfer is executed
//! by every representative — also the ones that never saw its body (fetched from the
//! admitting representative and verified) — with identical outcomes, balances equal to a
//! reference ledger computed here, supply unchanged, equal state roots per checkpoint, the
//! same root in the quorum-certified header the continent logged, and all of that through
//! a kill -9 and restart of one representative mid-load.

#![allow(clippy::unwrap_used)]

use dag_core::{AccountId, CityId, Position, PositionMethod, SignedTx, Tx, TxId};
use devnet::{CITY, Devnet, DevnetConfig};
use ledger::{FailReason, Outcome};
use pqc::{Keypair, sign_tx};
use rpc::{CityClient, ClientError, ExecutionOutcome, FederationProof, RejectCode, TxState};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const USERS: usize = 6;
const OPENING: u64 = 10_000;

fn transfer(from: &Keypair, to: AccountId, amount: u64, nonce: u64) -> SignedTx {
    sign_tx(
        Tx::fresh(
            from.account_id(),
            to,
            amount,
            nonce,
            1_767_225_600_000 + nonce,
            CityId::new(CITY).unwrap(),
            Position::from_degrees(35.6895, 139.6917).unwrap(),
            PositionMethod::Gps,
        ),
        from,
    )
}

/// Submits `txs[k]` to representative `live[k % live.len()]`; every one must be Held.
async fn submit(net: &Devnet, live: &[usize], txs: &[SignedTx]) -> Vec<TxId> {
    let mut clients = Vec::new();
    for &i in live {
        clients.push(
            CityClient::connect(&net.rep(i).unwrap().addr().to_string())
                .await
                .unwrap(),
        );
    }
    let mut ids = Vec::new();
    for (k, tx) in txs.iter().enumerate() {
        let c = &clients[k % clients.len()];
        // An honest UNAVAILABLE (holders slow to answer on a loaded machine) is submitted
        // again, as a wallet would.
        let s = c
            .submit_retrying(tx, &e2e::WALLET_RETRY)
            .await
            .unwrap_or_else(|e| panic!("tx {k}: {e}"));
        assert_eq!(s.state, TxState::Held, "tx {k}: {s:?}");
        ids.push(s.tx_id);
    }
    ids
}

/// Waits until representative `i` has an outcome for every id, then returns them.
async fn outcomes(net: &Devnet, i: usize, ids: &[TxId]) -> Vec<Outcome> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let exec = net.rep(i).unwrap().node().execution().unwrap().clone();
    let ledger = exec.ledger().unwrap().clone();
    let mut out = Vec::new();
    for id in ids {
        loop {
            if let Some((_, o)) = ledger.outcome(id).unwrap() {
                out.push(o);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "representative {i}: tx {id} not executed; executed {} blocked {:?}",
                exec.executed(),
                exec.blocked()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_representatives_execute_the_same_history() {
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<Keypair> = (0..USERS).map(|_| Keypair::generate()).collect();
    let newcomer = AccountId::from_bytes([0x5a; 32]);
    let cfg = DevnetConfig {
        reps: 4,
        gateway: false,
        accounts: users.iter().map(|u| (u.account_id(), OPENING)).collect(),
        ..DevnetConfig::default()
    };
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);

    // Transfers whose outcomes do not depend on the order they commit in: each user sends
    // at most its opening balance in total (receipts only add), plus overdrafts larger than
    // the whole supply (always refused) and credits to an account genesis does not know.
    let mut txs = Vec::new();
    let mut reference: BTreeMap<AccountId, u64> =
        users.iter().map(|u| (u.account_id(), OPENING)).collect();
    let mut expected = Vec::new();
    let mut nonces = [0u64; USERS];
    let mut next_nonce = [0u64; USERS];
    for k in 0..48usize {
        let from = k % USERS;
        let nonce = nonces[from];
        nonces[from] += 1;
        let (to, amount, outcome) = match k % 8 {
            7 => (
                users[(from + 1) % USERS].account_id(),
                u64::MAX / 2,
                Outcome::Failed(FailReason::InsufficientFunds {
                    balance: 0, // checked separately: depends on what arrived first
                    amount: u64::MAX / 2,
                }),
            ),
            3 => (newcomer, 100 + k as u64, Outcome::Applied),
            _ => (
                users[(from + 1 + k % 3) % USERS].account_id(),
                50 + k as u64,
                Outcome::Applied,
            ),
        };
        if outcome == Outcome::Applied {
            next_nonce[from] = next_nonce[from].max(nonce + 1);
            *reference.get_mut(&users[from].account_id()).unwrap() -= amount;
            *reference.entry(to).or_default() += amount;
        }
        expected.push(outcome);
        txs.push(transfer(&users[from], to, amount, nonce));
    }

    // Phase 1: all four admit; then representative 3 is killed -9 mid-load.
    let mut ids = submit(&net, &[0, 1, 2, 3], &txs[..24]).await;
    net.kill_rep(3).await;
    // Phase 2: three keep going; 3 comes back and catches up (bodies it never had are
    // fetched from the others and verified).
    ids.extend(submit(&net, &[0, 1, 2], &txs[24..]).await);
    net.start_rep(3).await.unwrap();

    let mut per_rep = Vec::new();
    for i in 0..4 {
        per_rep.push(outcomes(&net, i, &ids).await);
    }
    for (k, want) in expected.iter().enumerate() {
        for (i, got) in per_rep.iter().enumerate() {
            match want {
                Outcome::Failed(FailReason::InsufficientFunds { amount, .. }) => assert!(
                    matches!(got[k], Outcome::Failed(FailReason::InsufficientFunds { amount: a, .. }) if a == *amount),
                    "rep {i} tx {k}: {:?}",
                    got[k]
                ),
                w => assert_eq!(&got[k], w, "rep {i} tx {k}"),
            }
        }
    }
    // Identical outcomes everywhere (including the balance seen by each overdraft).
    for i in 1..4 {
        assert_eq!(per_rep[i], per_rep[0], "representative {i}");
    }

    // Wait until every representative executed the same number of checkpoints, then
    // compare state roots per checkpoint, balances with the reference, and the supply.
    let deadline = Instant::now() + Duration::from_secs(60);
    let target = loop {
        let counts: Vec<u64> = (0..4)
            .map(|i| {
                net.rep(i)
                    .unwrap()
                    .node()
                    .order_store()
                    .unwrap()
                    .committed()
            })
            .collect();
        let n = *counts.iter().min().unwrap();
        let executed: Vec<u64> = (0..4)
            .map(|i| net.rep(i).unwrap().node().execution().unwrap().executed())
            .collect();
        if executed.iter().all(|e| *e >= n) {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "execution lags: {executed:?} of {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(target > 0);
    for seq in 0..target {
        let r0 = net
            .rep(0)
            .unwrap()
            .node()
            .execution()
            .unwrap()
            .checkpoint(seq)
            .unwrap()
            .unwrap();
        let names: Vec<&str> = r0.roots.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["dpos", "ledger"],
            "the state machines, in name order"
        );
        for i in 1..4 {
            let ri = net
                .rep(i)
                .unwrap()
                .node()
                .execution()
                .unwrap()
                .checkpoint(seq)
                .unwrap()
                .unwrap();
            assert_eq!(ri, r0, "representative {i}, checkpoint {seq}");
        }
    }
    let supply = u128::from(OPENING) * USERS as u128;
    for i in 0..4 {
        let l = net
            .rep(i)
            .unwrap()
            .node()
            .execution()
            .unwrap()
            .ledger()
            .unwrap()
            .clone();
        assert_eq!(l.total_supply().unwrap(), supply, "representative {i}");
        for (a, balance) in &reference {
            assert_eq!(
                l.account(a).unwrap().map(|x| x.balance),
                Some(*balance),
                "representative {i}, account {a}"
            );
        }
    }

    // Over gRPC on the representative that was killed: GetTx reports each outcome (txs
    // admitted by the others included), GetAccount balance and nonce.
    let c3 = CityClient::connect(&net.rep(3).unwrap().addr().to_string())
        .await
        .unwrap();
    for (k, id) in ids.iter().enumerate() {
        let e = c3.execution(*id).await.unwrap().expect("executed");
        match expected[k] {
            Outcome::Applied => assert_eq!(e.outcome, ExecutionOutcome::Applied, "tx {k}"),
            _ => {
                assert_eq!(e.outcome, ExecutionOutcome::InsufficientFunds, "tx {k}");
                assert!(e.detail.contains("insufficient funds"), "{}", e.detail);
            }
        }
    }
    for (u, want) in users.iter().zip(next_nonce) {
        let a = c3.account(u.account_id()).await.unwrap();
        assert!(a.exists);
        assert_eq!(a.balance, reference[&u.account_id()]);
        assert_eq!(a.nonce, want, "account {}", u.account_id());
    }
    let nobody = c3.account(AccountId::from_bytes([0x77; 32])).await.unwrap();
    assert!(!nobody.exists);
    assert_eq!((nobody.balance, nobody.nonce), (0, 0));
    // A transfer whose declared write set omits the receiver is refused at admission.
    let mut bad = transfer(&users[0], users[1].account_id(), 1, 999)
        .tx
        .clone()
        .with_write_set(vec![ledger::account_object(&users[0].account_id())]);
    bad.nonce = 1_000;
    let bad = sign_tx(bad, &users[0]);
    match c3.submit(&bad).await {
        Err(ClientError::Rejected(r)) => {
            assert_eq!(r.code, RejectCode::Malformed);
            assert!(r.message.contains("write set"), "{}", r.message);
        }
        other => panic!("a transfer with an uncovering write set was answered {other:?}"),
    }

    // The wallet client: sign, submit, wait for the outcome; then the balance moved.
    let key_path = dir.path().join("alice.key");
    users[0].save(&key_path).unwrap();
    let alice = wallet::load_key(&key_path).unwrap();
    let rep2 = net.rep(2).unwrap().addr().to_string();
    let before = wallet::balance(&rep2, newcomer).await.unwrap().balance;
    let sent = wallet::send(
        &rep2,
        &alice,
        &wallet::Transfer {
            to: newcomer,
            amount: 7,
            nonce: None,
            city: CITY.into(),
            to_city: None,
            lat: 35.6895,
            lon: 139.6917,
            wait: Duration::from_secs(60),
        },
        1_767_225_700_000,
    )
    .await
    .unwrap();
    assert!(sent.applied(), "{sent:?}");
    assert_eq!(sent.nonce, next_nonce[0]);
    assert_eq!(
        wallet::balance(&rep2, newcomer).await.unwrap().balance,
        before + 7
    );

    // The federated header of every federated checkpoint carries that root.
    let deadline = Instant::now() + Duration::from_secs(60);
    let order = net.rep(0).unwrap().node().order_store().unwrap().clone();
    while order.federated_upto().unwrap() < target {
        assert!(Instant::now() < deadline, "federation lags");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let exec0 = net.rep(0).unwrap().node().execution().unwrap().clone();
    for seq in 0..target {
        let (bytes, _) = order.federated(seq).unwrap().unwrap();
        let proof = FederationProof::decode(&bytes).unwrap();
        assert_eq!(
            proof.certified.header.state_hash,
            exec0.checkpoint(seq).unwrap().unwrap().state_root,
            "checkpoint {seq}"
        );
    }
    net.shutdown().await.unwrap();
}

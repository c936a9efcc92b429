//! Two cities (Tokyo JP-13 and Osaka JP-27), each its own committee of four
//! representatives with its own light nodes, and one continent both federate to:
//! `TRANSFERS` transfers each way plus `SAME_CITY` same-city transfers in each city, with
//! one representative of each city killed (a crash: no flush, no goodbye) mid-load and
//! restarted. Checks: every cross-city transfer Completed in its sender city and Credited
//! in its receiver city on every representative, every same-city transfer Applied;
//! balances equal a reference ledger computed here; total supply unchanged and nothing
//! left in escrow; state roots equal per checkpoint across each committee. Prints the
//! cross-city completion latency (submit → Completed on the sender city's first
//! representative) p50/p99. Then `GetTx` on both sides answers Completed with both proofs,
//! which verify offline against the genesis committees (a tampered one fails), and one more
//! transfer sent by the wallet client (`wallet::send` with `to_city`) waits for Completed.

#![allow(clippy::unwrap_used)]

use dag_core::{AccountId, SignedTx, TxId};
use devnet::{CITY, Devnet, DevnetConfig};
use e2e::city_transfer as transfer;
use futures::StreamExt;
use ledger::{OutState, Outcome, Verdict};
use pqc::Keypair;
use rpc::{CityClient, TxState};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The second city.
const OSAKA: &str = "JP-27";
/// Cross-city transfers in each direction (the issue asks 1,000; see the closing note for
/// the largest N measured). `TWO_CITIES_TRANSFERS` overrides it for a measurement run.
const TRANSFERS: usize = 40;
/// Same-city transfers in each city.
const SAME_CITY: usize = 20;
/// Users per city.
const USERS: usize = 8;
const OPENING: u64 = 1_000_000;

/// Submits every tx to the representatives in `live` (round robin, 8 in flight); each must
/// be Held. Returns (id, submit time) per tx.
async fn submit(net: &Devnet, live: &[usize], txs: &[SignedTx]) -> Vec<(TxId, Instant)> {
    let mut clients = Vec::new();
    for &i in live {
        clients.push(
            CityClient::connect(&net.rep(i).unwrap().addr().to_string())
                .await
                .unwrap(),
        );
    }
    let clients = &clients;
    futures::stream::iter(txs.iter().enumerate())
        .map(|(k, tx)| async move {
            let c = &clients[k % clients.len()];
            let t0 = Instant::now();
            // An honest UNAVAILABLE or OVERLOADED ("retry later": holders slow, or a light
            // node's heartbeat late on a loaded machine) is submitted again, as a wallet
            // would, at most 20 times.
            let mut tries = 0;
            let s = loop {
                match c.submit(tx).await {
                    Ok(s) => break s,
                    Err(rpc::ClientError::Rejected(rej))
                        if matches!(
                            rej.code,
                            rpc::RejectCode::Unavailable | rpc::RejectCode::Overloaded
                        ) && tries < 20 =>
                    {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => panic!("tx {k}: {e}"),
                }
            };
            assert_eq!(s.state, TxState::Held, "tx {k}: {s:?}");
            (s.tx_id, t0)
        })
        .buffered(8)
        .collect()
        .await
}

fn ledger_of(net: &Devnet, i: usize) -> std::sync::Arc<ledger::Ledger> {
    net.rep(i)
        .unwrap()
        .node()
        .execution()
        .unwrap()
        .ledger()
        .unwrap()
        .clone()
}

/// One city's users, transfers and reference.
struct City {
    name: &'static str,
    users: Vec<Keypair>,
    nonces: Vec<u64>,
}

impl City {
    fn new(name: &'static str) -> Self {
        City {
            name,
            users: (0..USERS).map(|_| Keypair::generate()).collect(),
            nonces: vec![0; USERS],
        }
    }
    fn next(&mut self, u: usize) -> u64 {
        let n = self.nonces[u];
        self.nonces[u] += 1;
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_between_two_cities_complete_once_through_a_crash_in_each() {
    let transfers: usize = std::env::var("TWO_CITIES_TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TRANSFERS);
    let dir = tempfile::tempdir().unwrap();
    let mut tokyo = City::new(CITY);
    let mut osaka = City::new(OSAKA);
    let mut accounts = Vec::new();
    for (c, city) in [(&tokyo, CITY), (&osaka, OSAKA)] {
        for u in &c.users {
            accounts.push((u.account_id(), OPENING, city.to_string()));
        }
    }
    // A Tokyo account used only by the wallet client (`wallet::send` to Osaka).
    let walleteer = std::sync::Arc::new(Keypair::generate());
    accounts.push((walleteer.account_id(), OPENING, CITY.to_string()));
    const WALLET_AMOUNT: u64 = 77;
    let cfg = DevnetConfig {
        reps: 4,
        gateway: false,
        ..DevnetConfig::default()
    };
    let (mut a, mut b) = Devnet::start_two_cities(cfg.clone(), cfg, OSAKA, &accounts, dir.path())
        .await
        .unwrap();
    assert!(a.wait_for_lights(6, Duration::from_secs(30)).await);
    assert!(b.wait_for_lights(6, Duration::from_secs(30)).await);

    // The reference ledger, computed here from what is sent (every amount is far below a
    // user's opening balance, so no outcome depends on the commit order).
    let mut reference: BTreeMap<AccountId, u64> =
        accounts.iter().map(|(a, b, _)| (*a, *b)).collect();
    let supply: u64 = reference.values().sum();
    // Per sender city: (tx, cross-city?).
    let mut plan: [Vec<(SignedTx, bool)>; 2] = [Vec::new(), Vec::new()];
    for k in 0..transfers.max(SAME_CITY) {
        // Cross-city both ways.
        if k < transfers {
            let amount = 1 + (k % 13) as u64;
            let (u, v) = (k % USERS, (k * 3 + 1) % USERS);
            let to = osaka.users[v].account_id();
            let n = tokyo.next(u);
            plan[0].push((
                transfer(&tokyo.users[u], CITY, to, Some(OSAKA), amount, n),
                true,
            ));
            *reference.get_mut(&tokyo.users[u].account_id()).unwrap() -= amount;
            *reference.get_mut(&to).unwrap() += amount;
            let to = tokyo.users[u].account_id();
            let n = osaka.next(v);
            plan[1].push((
                transfer(&osaka.users[v], OSAKA, to, Some(CITY), amount + 1, n),
                true,
            ));
            *reference.get_mut(&osaka.users[v].account_id()).unwrap() -= amount + 1;
            *reference.get_mut(&to).unwrap() += amount + 1;
        }
        if k < SAME_CITY {
            for (side, c) in [(0, &mut tokyo), (1, &mut osaka)] {
                let (u, v) = (k % USERS, (k + 1) % USERS);
                let amount = 2 + (k % 7) as u64;
                let to = c.users[v].account_id();
                let n = c.next(u);
                plan[side].push((transfer(&c.users[u], c.name, to, None, amount, n), false));
                *reference.get_mut(&c.users[u].account_id()).unwrap() -= amount;
                *reference.get_mut(&to).unwrap() += amount;
            }
        }
    }

    // Phase 1: half of each city's txs through all four; then representative 3 of each
    // city is killed mid-load; phase 2 through the other three; then both come back.
    let half = [plan[0].len() / 2, plan[1].len() / 2];
    let txs = |s: usize, r: std::ops::Range<usize>| -> Vec<SignedTx> {
        plan[s][r].iter().map(|(t, _)| t.clone()).collect()
    };
    let (first_a, first_b) = (txs(0, 0..half[0]), txs(1, 0..half[1]));
    let (mut sub_a, mut sub_b) = futures::join!(
        submit(&a, &[0, 1, 2, 3], &first_a),
        submit(&b, &[0, 1, 2, 3], &first_b),
    );
    a.kill_rep(3).await;
    b.kill_rep(3).await;
    let (rest_a, rest_b) = (
        txs(0, half[0]..plan[0].len()),
        txs(1, half[1]..plan[1].len()),
    );
    let (more_a, more_b) = futures::join!(
        submit(&a, &[0, 1, 2], &rest_a),
        submit(&b, &[0, 1, 2], &rest_b),
    );
    sub_a.extend(more_a);
    sub_b.extend(more_b);
    a.start_rep(3).await.unwrap();
    b.start_rep(3).await.unwrap();

    // The wallet client sends one more transfer to Osaka and waits for Completed, while
    // the load completes.
    *reference.get_mut(&walleteer.account_id()).unwrap() -= WALLET_AMOUNT;
    *reference.get_mut(&osaka.users[0].account_id()).unwrap() += WALLET_AMOUNT;
    let wallet_send = {
        let addr = a.rep(1).unwrap().addr().to_string();
        let key = walleteer.clone();
        let to = osaka.users[0].account_id();
        tokio::spawn(async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            wallet::send(
                &addr,
                &key,
                &wallet::Transfer {
                    to,
                    amount: WALLET_AMOUNT,
                    nonce: None,
                    city: CITY.into(),
                    to_city: Some(OSAKA.into()),
                    lat: 35.6895,
                    lon: 139.6917,
                    wait: Duration::from_secs(240),
                },
                now,
            )
            .await
        })
    };

    // Wait for completion on the sender city's representative 0, timing each cross tx.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut latencies = Vec::new();
    for (net, subs, side) in [(&a, &sub_a, 0usize), (&b, &sub_b, 1usize)] {
        let l0 = ledger_of(net, 0);
        let mut waiting: Vec<(TxId, Instant)> = subs
            .iter()
            .zip(&plan[side])
            .filter(|(_, (_, cross))| *cross)
            .map(|(s, _)| *s)
            .collect();
        while !waiting.is_empty() {
            let book = l0.cross_book().unwrap();
            waiting.retain(|(id, t0)| {
                let done = book.as_ref().and_then(|bk| bk.out_state(id).cloned())
                    == Some(OutState::Completed);
                if done {
                    latencies.push(t0.elapsed());
                }
                !done
            });
            assert!(
                Instant::now() < deadline,
                "{} cross-city transfers of city {side} not completed; escrowed {:?}",
                waiting.len(),
                book.map(|b| b.escrowed())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Every representative of both cities: the same outcome everywhere.
    for (net, other, subs, side) in [(&a, &b, &sub_a, 0usize), (&b, &a, &sub_b, 1usize)] {
        for i in 0..4 {
            let l = ledger_of(net, i);
            let lo = ledger_of(other, i);
            let deadline = Instant::now() + Duration::from_secs(120);
            for ((id, _), (_, cross)) in subs.iter().zip(&plan[side]) {
                loop {
                    let ok = if *cross {
                        let here = l.cross_book().unwrap();
                        let there = lo.cross_book().unwrap();
                        here.and_then(|b| b.out_state(id).cloned()) == Some(OutState::Completed)
                            && there.and_then(|b| b.in_verdict(id)) == Some(Verdict::Credited)
                            && matches!(l.outcome(id).unwrap(), Some((_, Outcome::Applied)))
                    } else {
                        matches!(l.outcome(id).unwrap(), Some((_, Outcome::Applied)))
                    };
                    if ok {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "city {side} rep {i}: tx {id} not done everywhere"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    // Over gRPC (CrossCityService), on representative 0 of each city: Completed in the sender's
    // city (escrow and settle checkpoints named), Credited in the receiver's (the answer's
    // checkpoint named), the same certified statement on both sides.
    for (net, other, subs, side) in [(&a, &b, &sub_a, 0usize), (&b, &a, &sub_b, 1usize)] {
        let here = rpc::CrossCityClient::connect(&net.rep(0).unwrap().addr().to_string())
            .await
            .unwrap();
        let there = rpc::CrossCityClient::connect(&other.rep(0).unwrap().addr().to_string())
            .await
            .unwrap();
        for ((id, _), (tx, cross)) in subs.iter().zip(&plan[side]) {
            let mine = here.get(*id).await.unwrap();
            if !*cross {
                assert_eq!(mine, None, "a same-city transfer has no cross-city record");
                continue;
            }
            let mine = mine.unwrap();
            let theirs = there.get(*id).await.unwrap().unwrap();
            assert_eq!(mine.state, rpc::CrossState::Completed);
            assert_eq!(theirs.state, rpc::CrossState::Credited);
            assert_eq!(mine.statement, theirs.statement);
            let body = mine.body.unwrap();
            assert_eq!((body.amount, body.receiver), (tx.tx.amount, tx.tx.receiver));
            assert_eq!(body.to_city, other.city_id());
            assert!(mine.escrow_checkpoint.unwrap() <= mine.settle_checkpoint.unwrap());
            assert!(theirs.answer_checkpoint.is_some());
        }
    }

    // The wallet's transfer: Completed, with both proofs (checked below with the genesis).
    let sent = wallet_send.await.unwrap().unwrap();
    assert_eq!(sent.state, TxState::Completed);
    assert!(sent.applied(), "{sent:?}");

    // GetTx on representative 0 of both cities (over loopback gRPC): a cross-city transfer
    // answers Completed on either side with both proofs, which verify offline against the
    // genesis committees and name this transfer; a tampered proof fails. Same-city: Completed
    // (executed Applied, federated), no cross record.
    let genesis = node::genesis::Genesis::load(a.genesis_path()).unwrap();
    let certs = node::genesis_certificates(None, &genesis.cities);
    let proven = rpc::verify_cross_tx(sent.cross.as_ref().unwrap(), &certs).unwrap();
    assert!(proven.credited());
    assert_eq!(
        (proven.transfer.id, proven.transfer.amount),
        (sent.tx, WALLET_AMOUNT)
    );
    // (transfer-out proof, answer proof) sizes in bytes, for the note.
    let mut proof_bytes: Vec<(usize, usize)> = Vec::new();
    for (net, other, subs, side) in [(&a, &b, &sub_a, 0usize), (&b, &a, &sub_b, 1usize)] {
        let here = CityClient::connect(&net.rep(0).unwrap().addr().to_string())
            .await
            .unwrap();
        let there = CityClient::connect(&other.rep(0).unwrap().addr().to_string())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        for ((id, _), (tx, cross)) in subs.iter().zip(&plan[side]) {
            let (mine, theirs) = loop {
                let mine = here.get(*id).await.unwrap().unwrap();
                let theirs = if *cross {
                    there.get(*id).await.unwrap()
                } else {
                    None
                };
                let done = mine.state == TxState::Completed
                    && (!*cross
                        || theirs
                            .as_ref()
                            .is_some_and(|t| t.state == TxState::Completed));
                if done {
                    break (mine, theirs);
                }
                assert!(
                    Instant::now() < deadline,
                    "city {side}: GetTx {id} not Completed: {:?} / {:?}",
                    (mine.state, &mine.cross.as_ref().map(|c| c.state)),
                    theirs.map(|t| (t.state, t.cross.map(|c| c.state)))
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if !*cross {
                assert_eq!(mine.cross, None);
                continue;
            }
            let theirs = theirs.unwrap();
            assert_eq!(theirs.tx, None, "the receiver city never stored the body");
            assert_eq!(theirs.source, "cross");
            let (mc, tc) = (mine.cross.unwrap(), theirs.cross.unwrap());
            assert_eq!(mc.state, rpc::CrossState::Completed);
            assert_eq!(tc.state, rpc::CrossState::Credited);
            for c in [&mc, &tc] {
                assert_eq!(
                    (c.from_city.as_str(), c.to_city.as_str()),
                    (net.city_id(), other.city_id())
                );
                let proven = rpc::verify_cross_tx(c, &certs).unwrap();
                assert!(proven.credited());
                assert_eq!(proven.transfer.id, *id);
                assert_eq!(
                    (
                        proven.transfer.amount,
                        proven.transfer.receiver,
                        proven.transfer.sender
                    ),
                    (tx.tx.amount, tx.tx.receiver, tx.tx.sender)
                );
            }
            assert_eq!(mc.statement, tc.statement);
            proof_bytes.push((
                mc.transfer_out_proof.as_ref().unwrap().len(),
                mc.answer_proof.as_ref().unwrap().len(),
            ));
            // Tampered: the receiver city's answer proof with a byte of its certificate
            // flipped, or the other transfer's proof swapped in.
            let mut bad = mc.clone();
            let mut relay = ledger::CrossRelay::decode(bad.answer_proof.as_ref().unwrap()).unwrap();
            let last = relay.checkpoint.len() - 1;
            relay.checkpoint[last] ^= 1;
            bad.answer_proof = Some(relay.encode());
            assert!(rpc::verify_cross_tx(&bad, &certs).is_err());
            let mut swapped = mc.clone();
            swapped.transfer_out_proof = swapped.answer_proof.clone();
            assert!(rpc::verify_cross_tx(&swapped, &certs).is_err());
        }
    }

    // Balances equal the reference on every representative; supply unchanged; no escrow.
    for (net, c) in [(&a, &tokyo), (&b, &osaka)] {
        for i in 0..4 {
            let l = ledger_of(net, i);
            for side_users in [&tokyo.users, &osaka.users] {
                for u in side_users.iter() {
                    let home = if std::ptr::eq(side_users, &c.users) {
                        reference[&u.account_id()]
                    } else {
                        // Accounts of the other city appear here only if credited here: never.
                        0
                    };
                    let got = l.account(&u.account_id()).unwrap().map_or(0, |x| x.balance);
                    assert_eq!(got, home, "{} rep {i}: account {}", c.name, u.account_id());
                }
            }
            if c.name == CITY {
                let got = l
                    .account(&walleteer.account_id())
                    .unwrap()
                    .map_or(0, |x| x.balance);
                assert_eq!(
                    got,
                    reference[&walleteer.account_id()],
                    "rep {i}: the wallet's account"
                );
            }
            assert_eq!(l.cross_book().unwrap().unwrap().escrowed(), 0);
        }
    }
    let total = ledger_of(&a, 0).total_supply().unwrap() + ledger_of(&b, 0).total_supply().unwrap();
    assert_eq!(total, u128::from(supply));

    // State roots equal per checkpoint across each committee.
    for (net, name) in [(&a, CITY), (&b, OSAKA)] {
        let deadline = Instant::now() + Duration::from_secs(60);
        let n = loop {
            let executed: Vec<u64> = (0..4)
                .map(|i| net.rep(i).unwrap().node().execution().unwrap().executed())
                .collect();
            let committed: Vec<u64> = (0..4)
                .map(|i| {
                    net.rep(i)
                        .unwrap()
                        .node()
                        .order_store()
                        .unwrap()
                        .committed()
                })
                .collect();
            let n = *committed.iter().min().unwrap();
            if executed.iter().all(|e| *e >= n) {
                break n;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: execution lags {executed:?} of {committed:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(n > 0);
        for seq in 0..n {
            let roots: Vec<_> = (0..4)
                .map(|i| {
                    net.rep(i)
                        .unwrap()
                        .node()
                        .execution()
                        .unwrap()
                        .checkpoint(seq)
                        .unwrap()
                        .unwrap()
                        .state_root
                })
                .collect();
            assert!(
                roots.iter().all(|r| *r == roots[0]),
                "{name} checkpoint {seq}: {roots:?}"
            );
        }
    }

    println!(
        "two cities: GetTx Completed with both proofs on both sides for {} cross-city transfers; proof bytes (transfer-out, answer) min {:?} max {:?}",
        proof_bytes.len(),
        proof_bytes.iter().min(),
        proof_bytes.iter().max()
    );
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "two cities: {} cross-city transfers ({transfers} each way) + {} same-city; completion latency p50 {:?} p99 {:?} max {:?}",
        latencies.len(),
        2 * SAME_CITY,
        pct(0.50),
        pct(0.99),
        latencies.last().unwrap()
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

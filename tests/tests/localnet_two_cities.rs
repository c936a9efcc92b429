//! Two cities as deployed: `city-node localnet --second-city JP-27`'s library starts, as
//! separate OS processes of the real binaries on loopback, a presence server, light nodes
//! and a committee of four representatives for Tokyo (JP-13) and for Osaka (JP-27), one
//! continent both federate to and a global log, from one genesis file that opens every
//! user's account in its home city.
//!
//! `TRANSFERS` transfers each way plus `SAME_CITY` same-city transfers in each city are
//! submitted over every representative; half-way one representative of each city is
//! killed -9 (no flush, no goodbye) and the load goes on over the other three; then both
//! come back. Checked over gRPC only, on **every** representative of both cities:
//! - every cross-city transfer Completed in its sender city and Credited in its receiver
//!   city (`CrossCityService`), the same certified statement on both sides;
//! - every tx executed Applied (`GetTx`); every same-city tx and every tenth cross-city
//!   one answered Completed by `GetTx` in its city and, cross-city, in the receiver's city
//!   too, with its two proofs — the sender committee's transfer-out, the receiver
//!   committee's answer — verified offline against the genesis file;
//! - every balance equals a reference ledger computed here from what was sent; the total
//!   supply is unchanged (so nothing is left in escrow, nothing created);
//! - every tx's executing checkpoint has the same state root on every representative of
//!   its city.
//!
//! Prints the cross-city completion latency (Held → Completed seen on the sender city's
//! first representative) p50/p99; nothing is asserted on time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dag_core::{AccountId, SignedTx, TxId};
use devnet::localnet::{Localnet, LocalnetConfig};
use e2e::city_transfer as transfer;
use futures::StreamExt;
use pqc::Keypair;
use rpc::{CityClient, ClientError, CrossCityClient, CrossState, ExecutionOutcome, RejectCode};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TOKYO: &str = "JP-13";
const OSAKA: &str = "JP-27";
/// Cross-city transfers in each direction (`LOCALNET_TWO_CITIES_TRANSFERS` overrides it).
const TRANSFERS: usize = 1_000;
/// Same-city transfers in each city.
const SAME_CITY: usize = 100;
/// Funded users per city.
const USERS: usize = 8;
const OPENING: u64 = 1_000_000;

/// Submits `txs` to `addr` over one stream; each must be Held (an honest UNAVAILABLE —
/// holders too slow on a loaded machine, nothing of the tx kept — is submitted again, as
/// a wallet does). Returns (id, Held time) per tx.
async fn submit(addr: String, txs: Vec<SignedTx>) -> Vec<(TxId, Instant)> {
    let client = CityClient::connect(&addr).await.unwrap();
    let ids: Vec<TxId> = txs.iter().map(SignedTx::id).collect();
    let again = txs.clone();
    let mut out = client
        .submit_stream(futures::stream::iter(txs))
        .await
        .unwrap();
    let mut held = Vec::new();
    while let Some((i, r)) = out.next().await {
        let s = match r {
            Ok(s) => s,
            Err(ClientError::Rejected(rej))
                if matches!(rej.code, RejectCode::Unavailable | RejectCode::Overloaded) =>
            {
                client
                    .submit_retrying(&again[i as usize], &e2e::WALLET_RETRY)
                    .await
                    .unwrap_or_else(|e| panic!("resubmitting tx {i} to {addr}: {e}"))
            }
            Err(e) => panic!("tx {i} to {addr}: {e}"),
        };
        assert_eq!(s.state, rpc::TxState::Held, "tx {i} to {addr}");
        assert_eq!(s.tx_id, ids[i as usize]);
        held.push((s.tx_id, Instant::now()));
    }
    assert_eq!(held.len(), again.len());
    held
}

/// Waits until the representative at `addr` answers Held for a tx of an unfunded account
/// (it executes as a failed transfer: no balance moves): its view holds enough light nodes
/// and its links to them are open.
async fn warm_up(addr: &str, city: &str) {
    let client = CityClient::connect(addr).await.unwrap();
    let user = Keypair::generate();
    let t0 = Instant::now();
    for nonce in 0.. {
        let tx = transfer(
            &user,
            city,
            AccountId(dag_core::Hash32([7; 32])),
            None,
            1,
            nonce,
        );
        match client.submit(&tx).await {
            Ok(s) if s.state == rpc::TxState::Held => return,
            other => {
                assert!(
                    t0.elapsed() < Duration::from_secs(90),
                    "{addr}: no Held answer within 90 s: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Submits each city's part of `plan` over `reps` (tx k to rep k % reps), both cities at
/// once.
async fn submit_both(
    reps: [&[String]; 2],
    plan: [&[(SignedTx, bool)]; 2],
) -> [Vec<(TxId, Instant)>; 2] {
    let mut tasks = Vec::new();
    for side in 0..2 {
        let n = reps[side].len();
        for (r, addr) in reps[side].iter().enumerate() {
            let part: Vec<SignedTx> = plan[side]
                .iter()
                .skip(r)
                .step_by(n)
                .map(|(t, _)| t.clone())
                .collect();
            tasks.push((side, tokio::spawn(submit(addr.clone(), part))));
        }
    }
    let mut out = [Vec::new(), Vec::new()];
    for (side, t) in tasks {
        out[side].extend(t.await.unwrap());
    }
    out
}

/// Polls `pending` (tx ids) on `addr` until each has `want` there; returns when each was
/// first seen so (ids in any order).
async fn wait_cross(
    addr: &str,
    mut pending: Vec<TxId>,
    want: CrossState,
    deadline: Instant,
) -> BTreeMap<TxId, Instant> {
    let client = CrossCityClient::connect(addr).await.unwrap();
    let mut seen = BTreeMap::new();
    let mut rounds = 0u64;
    while !pending.is_empty() {
        let client = &client;
        let states: Vec<(TxId, Option<CrossState>)> = futures::stream::iter(pending.clone())
            .map(|id| async move {
                let r = client.get(id).await.unwrap();
                (id, r.map(|c| c.state))
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let now = Instant::now();
        let mut left = Vec::new();
        let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
        for (_, s) in &states {
            *by_state.entry(format!("{s:?}")).or_default() += 1;
        }
        if rounds.is_multiple_of(20) {
            eprintln!("{addr}: waiting for {want:?}: {by_state:?}");
        }
        rounds += 1;
        for (id, s) in states {
            if s == Some(want) {
                seen.insert(id, now);
            } else {
                assert_ne!(
                    s,
                    Some(CrossState::Refunded),
                    "{addr}: transfer {id} refunded"
                );
                assert_ne!(
                    s,
                    Some(CrossState::Expired),
                    "{addr}: transfer {id} expired"
                );
                left.push(id);
            }
        }
        pending = left;
        assert!(
            Instant::now() < deadline,
            "{addr}: {} transfers not {want:?} in time ({by_state:?}), e.g. {:?}",
            pending.len(),
            pending.first()
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    seen
}

/// How `c` executed tx `id`, waiting until it has.
async fn wait_executed(c: &CityClient, id: TxId, city: &str) -> rpc::TxExecution {
    let t0 = Instant::now();
    loop {
        if let Some(e) = c.execution(id).await.unwrap() {
            return e;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{city}: tx {id} not executed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_city_localnet_completes_every_transfer_once_through_a_kill_9_in_each_city() {
    let transfers: usize = std::env::var("LOCALNET_TWO_CITIES_TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TRANSFERS);
    let users: [Vec<Keypair>; 2] = [
        (0..USERS).map(|_| Keypair::generate()).collect(),
        (0..USERS).map(|_| Keypair::generate()).collect(),
    ];
    let cities = [TOKYO, OSAKA];
    let mut dir = tempfile::tempdir().unwrap();
    // LOCALNET_KEEP=1 keeps the directory (keys, genesis, every node's log) for a post-mortem.
    if std::env::var_os("LOCALNET_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("localnet directory kept: {}", dir.path().display());
    }
    let mut cfg = LocalnetConfig::new(dir.path());
    cfg.city_node_bin = e2e::workspace_bin("city-node");
    cfg.presence_bin = e2e::workspace_bin("presence-server");
    cfg.batch_interval_ms = Some(50);
    cfg.lights = 8;
    cfg.second_city = Some(OSAKA.into());
    for (side, us) in users.iter().enumerate() {
        for u in us {
            cfg.accounts.push(node::genesis::GenesisAccount {
                account: u.account_id().to_hex(),
                balance: OPENING,
                city: Some(cities[side].to_string()),
            });
        }
    }
    let mut net = Localnet::start(cfg).await.expect("the localnet starts");
    let reps: [Vec<String>; 2] = cities.map(|c| {
        net.manifest()
            .by_role_in("city", c)
            .iter()
            .map(|n| n.addr.to_string())
            .collect()
    });
    let names: [Vec<String>; 2] = cities.map(|c| {
        net.manifest()
            .by_role_in("city", c)
            .iter()
            .map(|n| n.name.clone())
            .collect()
    });
    assert_eq!((reps[0].len(), reps[1].len()), (4, 4));
    for (side, rs) in reps.iter().enumerate() {
        for r in rs {
            warm_up(r, cities[side]).await;
        }
    }

    // The plan and the reference ledger (every amount is far below a user's opening
    // balance, so no outcome depends on the commit order).
    let mut reference: BTreeMap<AccountId, u64> = users
        .iter()
        .flatten()
        .map(|u| (u.account_id(), OPENING))
        .collect();
    let supply: u64 = reference.values().sum();
    let mut nonces = [vec![0u64; USERS], vec![0u64; USERS]];
    let mut next = |side: usize, u: usize| {
        let n = nonces[side][u];
        nonces[side][u] += 1;
        n
    };
    let mut plan: [Vec<(SignedTx, bool)>; 2] = [Vec::new(), Vec::new()];
    for k in 0..transfers.max(SAME_CITY) {
        if k < transfers {
            for side in 0..2 {
                let other = 1 - side;
                let amount = 1 + (k % 13) as u64 + side as u64;
                let (u, v) = (k % USERS, (k * 3 + 1) % USERS);
                let (from, to) = (&users[side][u], users[other][v].account_id());
                let n = next(side, u);
                plan[side].push((
                    transfer(from, cities[side], to, Some(cities[other]), amount, n),
                    true,
                ));
                *reference.get_mut(&from.account_id()).unwrap() -= amount;
                *reference.get_mut(&to).unwrap() += amount;
            }
        }
        if k < SAME_CITY {
            for side in 0..2 {
                let (u, v) = (k % USERS, (k + 1) % USERS);
                let amount = 2 + (k % 7) as u64;
                let (from, to) = (&users[side][u], users[side][v].account_id());
                let n = next(side, u);
                plan[side].push((transfer(from, cities[side], to, None, amount, n), false));
                *reference.get_mut(&from.account_id()).unwrap() -= amount;
                *reference.get_mut(&to).unwrap() += amount;
            }
        }
    }

    // Phase 1: the first half over all four representatives of each city; then one
    // representative of each city is killed -9; phase 2: the rest over the other three.
    let half = [plan[0].len() / 2, plan[1].len() / 2];
    let t_load = Instant::now();
    let [mut held_a, mut held_b] = submit_both(
        [&reps[0], &reps[1]],
        [&plan[0][..half[0]], &plan[1][..half[1]]],
    )
    .await;
    net.kill(&names[0][3]).await;
    net.kill(&names[1][3]).await;
    let [more_a, more_b] = submit_both(
        [&reps[0][..3], &reps[1][..3]],
        [&plan[0][half[0]..], &plan[1][half[1]..]],
    )
    .await;
    held_a.extend(more_a);
    held_b.extend(more_b);
    let load_secs = t_load.elapsed().as_secs_f64();
    net.restart(&names[0][3]).await.unwrap();
    net.restart(&names[1][3]).await.unwrap();
    let held = [held_a, held_b];
    let is_cross: [BTreeMap<TxId, bool>; 2] = [0, 1].map(|side| {
        plan[side]
            .iter()
            .map(|(t, cross)| (t.id(), *cross))
            .collect()
    });

    // Cross-city: Completed in the sender city, Credited in the receiver city, on every
    // representative (the sender's first one timed from each tx's Held answer).
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut latencies = Vec::new();
    for side in 0..2 {
        let cross: Vec<TxId> = held[side]
            .iter()
            .filter(|(id, _)| is_cross[side][id])
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(cross.len(), transfers);
        let seen = wait_cross(
            &reps[side][0],
            cross.clone(),
            CrossState::Completed,
            deadline,
        )
        .await;
        for (id, at) in &held[side] {
            if let Some(done) = seen.get(id) {
                latencies.push(done.saturating_duration_since(*at));
            }
        }
        let mut checks = Vec::new();
        for r in &reps[side][1..] {
            checks.push(wait_cross(
                r,
                cross.clone(),
                CrossState::Completed,
                deadline,
            ));
        }
        for r in &reps[1 - side] {
            checks.push(wait_cross(r, cross.clone(), CrossState::Credited, deadline));
        }
        futures::future::join_all(checks).await;
        // The same certified statement, amount and receiver on both sides.
        let here = CrossCityClient::connect(&reps[side][0]).await.unwrap();
        let there = CrossCityClient::connect(&reps[1 - side][0]).await.unwrap();
        let txs: BTreeMap<TxId, &SignedTx> = plan[side].iter().map(|(t, _)| (t.id(), t)).collect();
        let (here, there, txs) = (&here, &there, &txs);
        futures::stream::iter(cross.iter())
            .for_each_concurrent(16, |id| async move {
                let (mine, theirs) = futures::join!(here.get(*id), there.get(*id));
                let (mine, theirs) = (mine.unwrap().unwrap(), theirs.unwrap().unwrap());
                assert_eq!(mine.statement, theirs.statement, "tx {id}");
                let body = mine.body.unwrap();
                assert_eq!(
                    (body.amount, body.receiver),
                    (txs[id].tx.amount, txs[id].tx.receiver),
                    "tx {id}"
                );
                assert!(theirs.answer_checkpoint.is_some(), "tx {id}");
            })
            .await;
    }

    // Every tx of each city executed Applied (on the first representative), answered
    // Completed by GetTx there and, for a cross-city transfer, in the receiver city; then
    // every checkpoint that executed one has the same state root on every representative of
    // the city (a root commits to the whole state after it, so equal roots at a sequence mean
    // equal execution up to it).
    let genesis = node::genesis::Genesis::load(&net.genesis_path()).unwrap();
    let certs = node::genesis_certificates(None, &genesis.cities);
    for side in 0..2 {
        let clients = futures::future::join_all(
            reps[side]
                .iter()
                .map(|r| async move { CityClient::connect(r).await.unwrap() }),
        )
        .await;
        let receiver = CityClient::connect(&reps[1 - side][0]).await.unwrap();
        let (clients, city, receiver) = (&clients, cities[side], &receiver);
        let (certs, is_cross) = (&certs, &is_cross[side]);
        let by_seq: BTreeMap<u64, (TxId, Option<dag_core::Hash32>)> =
            futures::stream::iter(held[side].iter().enumerate())
                .map(|(k, (id, _))| async move {
                    let e = wait_executed(&clients[0], *id, city).await;
                    assert_eq!(
                        e.outcome,
                        ExecutionOutcome::Applied,
                        "tx {id}: {}",
                        e.detail
                    );
                    assert!(e.state_root.is_some(), "tx {id}: no state root");
                    // GetTx answers Completed in the sender's city and, for a cross-city
                    // transfer, in the receiver's (without the body there), with its two
                    // proofs verified offline against the genesis committees: every
                    // same-city tx and every tenth cross-city one (every cross-city one's
                    // Completed/Credited state was checked above on every representative
                    // of both cities; a GetTx answering a pruned tx from the archive is
                    // the slow read of a loaded localnet).
                    let cross = is_cross[id];
                    if cross && k % 10 != 0 {
                        return (e.sequence, (*id, e.state_root));
                    }
                    let mut sides = vec![&clients[0]];
                    if cross {
                        sides.push(receiver);
                    }
                    for (n, c) in sides.into_iter().enumerate() {
                        let rec = c.get(*id).await.unwrap().unwrap();
                        assert_eq!(
                            rec.state,
                            rpc::TxState::Completed,
                            "{city} tx {id} side {n}"
                        );
                        assert_eq!(rec.cross.is_some(), cross, "{city} tx {id} side {n}");
                        if let Some(x) = rec.cross {
                            let proven = rpc::verify_cross_tx(&x, certs)
                                .unwrap_or_else(|e| panic!("{city} tx {id} side {n}: {e}"));
                            assert!(proven.credited() && proven.transfer.id == *id);
                        }
                    }
                    (e.sequence, (*id, e.state_root))
                })
                .buffer_unordered(16)
                .collect()
                .await;
        futures::stream::iter(by_seq.iter())
            .for_each_concurrent(16, |(seq, (id, root))| async move {
                for (i, c) in clients.iter().enumerate().skip(1) {
                    let e = wait_executed(c, *id, city).await;
                    assert_eq!(
                        (e.sequence, e.state_root),
                        (*seq, *root),
                        "{city}: checkpoint {seq} differs on representative {i}"
                    );
                }
            })
            .await;
        println!(
            "{city}: {} txs in {} checkpoints, the same state root on all four representatives",
            held[side].len(),
            by_seq.len()
        );
    }

    // Balances equal the reference on every representative of the account's home city,
    // accounts never credited elsewhere; the total is the genesis supply.
    let mut total = 0u128;
    for side in 0..2 {
        for (i, r) in reps[side].iter().enumerate() {
            let c = CityClient::connect(r).await.unwrap();
            for u in &users[side] {
                let a = c.account(u.account_id()).await.unwrap();
                assert_eq!(
                    a.balance,
                    reference[&u.account_id()],
                    "{} rep {i}: account {}",
                    cities[side],
                    u.account_id()
                );
                if i == 0 {
                    total += u128::from(a.balance);
                }
            }
            for u in &users[1 - side] {
                let a = c.account(u.account_id()).await.unwrap();
                assert!(!a.exists && a.balance == 0, "{} rep {i}", cities[side]);
            }
        }
    }
    assert_eq!(total, u128::from(supply), "supply changed");

    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)].as_secs_f64()
    };
    println!(
        "localnet two cities: {} cross-city transfers ({transfers} each way) + {} same-city, \
         submitted in {load_secs:.1} s with a kill -9 per city; Held → Completed p50 {:.1} s \
         p99 {:.1} s max {:.1} s",
        latencies.len(),
        2 * SAME_CITY,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let unclean = net.stop().await;
    assert!(unclean.is_empty(), "did not stop cleanly: {unclean:?}");
}

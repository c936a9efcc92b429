//! Stake runs the network, as deployed: a localnet of separate processes (presence, a
//! continent and a global log, 6 light nodes, 4 representatives from one genesis file) with a
//! short DPoS term. Representative 0 runs the equivocation test hook
//! (`CITYCHAIN_TEST_EQUIVOCATE=1`): its peers catch the double sign and report it, and dpos
//! slashes it. With the real `city-node stake` CLI and key files: a representative's operator
//! bonds more with its node key, an account delegates to another representative, a light
//! node registers with its node key. The term ends: the committee of the next epoch is the
//! elected set (the slashed representative out, weights = dpos stakes) and keeps committing
//! without a gap across the boundary. The light node claims the rewards the representatives
//! recorded for the stripes it held, and its balance rises by what the domain's formula
//! gives (computed here). Then the member with the least stake is killed -9: the others'
//! missed-round monitors report it (`ReportIncident`, +20 suspicion once) while they keep
//! committing. A fifth city node, outside the genesis committee, runs as a standby
//! (`[consensus] standby = true`): in term 0 its operator registers it as a full node,
//! bonds and publishes its endpoint with the CLI; it follows the committee's checkpoints,
//! and at the term's end dpos elects it in the slashed representative's place — it runs
//! epoch 1 as a member and the committee stays at four. Finally, with the processes
//! stopped, every representative's stores (the newcomer's included) are read: one
//! checkpoint chain and the same dpos state root at every checkpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dag_core::{AccountId, Hash32, TxId};
use devnet::localnet::{Localnet, LocalnetConfig};
use pqc::Keypair;
use rpc::{CityClient, TxState};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: u64 = 1_000_000;
const CITY: &str = devnet::localnet::LOCALNET_CITY;
/// The term: long enough for the three staking requests and the slash to be applied in
/// term 0 on a loaded 2-core machine, short enough to keep the test quick.
const TERM_MS: u64 = 30_000;
/// Each representative's opening balance (so its operator can bond with the node key).
const REP_BALANCE: u64 = 10 * TOKEN;
const BOND: u64 = 2 * TOKEN;
const DELEGATION: u64 = TOKEN;
/// What the standby's operator bonds to it (so it ranks between the delegatee and the
/// third representative).
const NEWCOMER_BOND: u64 = 3 * TOKEN / 2;
/// Tokyo's city hall (inside JP-13: proof of place is checked).
const AT: (f64, f64) = (35.6895, 139.6917);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What the rules pay per reward epoch, from the domain's formula (not dpos's code):
/// `score × rate × 10` tokens; a light node registered by the CLI reports default metrics
/// (no errors, nothing else), so its score is `(1 − 0) × 0.1` = 0.1 point, at the light
/// rate 1.0: 1 token.
fn light_reward_per_epoch() -> u64 {
    let score_milli = 1_000 / 10; // (1 − error rate) × 0.1, in thousandths of a point
    let rate_tenths = 10;
    score_milli * rate_tenths * TOKEN / 1_000
}

/// `city-node stake …` until the representative admits it (it answers UNAVAILABLE while
/// too few light nodes are live, or their links are still cold).
async fn stake_cli(bin: &Path, key: &Path, node: &str, nonce: u64, op: &[&str]) -> TxId {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (bin, key, node) = (bin.to_path_buf(), key.to_path_buf(), node.to_string());
        let op_owned: Vec<String> = op.iter().map(|s| s.to_string()).collect();
        let r = tokio::task::spawn_blocking(move || {
            let op: Vec<&str> = op_owned.iter().map(String::as_str).collect();
            e2e::stake_cli(&bin, &key, &node, CITY, nonce, &op)
        })
        .await
        .unwrap();
        match r {
            Ok(id) => return id,
            Err(e) => {
                assert!(Instant::now() < deadline, "never admitted: {e}");
                eprintln!("not admitted yet ({}), again", e.trim());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Waits (≤ `secs`) until `f` answers `Some`, polling every 100 ms.
async fn until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn balance(c: &CityClient, a: AccountId) -> u64 {
    c.account(a).await.map_or(0, |i| i.balance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn localnet_stake_elects_slashes_hands_over_and_pays_holders() {
    let t_start = Instant::now();
    let mut dir = tempfile::tempdir().unwrap();
    // LOCALNET_KEEP=1 keeps the directory (keys, genesis, every node's log) for a post-mortem.
    if std::env::var_os("LOCALNET_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("localnet directory kept: {}", dir.path().display());
    }
    let voter = Keypair::generate();
    let payer = Keypair::generate();
    let voter_key = dir.path().join("voter.key");
    voter.save(&voter_key).unwrap();
    let rules = dpos::DposConfig {
        term_ms: TERM_MS,
        stake_lock_ms: 1_000,
        ..dpos::DposConfig::default()
    };
    let mut cfg = LocalnetConfig::new(dir.path().join("net"));
    let bin = e2e::workspace_bin("city-node");
    cfg.city_node_bin = bin.clone();
    cfg.presence_bin = e2e::workspace_bin("presence-server");
    // Requests are awaited one after another inside a short term: a fixed 100 ms proposal
    // interval instead of the dynamic 0.5–5 s.
    cfg.batch_interval_ms = Some(100);
    cfg.dpos = Some(rules.clone());
    cfg.rep_balance = REP_BALANCE;
    cfg.equivocating_rep = Some(0);
    cfg.standbys = 1;
    // Small windows, so a member killed -9 is reported within seconds.
    cfg.missed_rounds = Some(node::MissedRule {
        window_rounds: 16,
        min_slots: 2,
        lag_rounds: 4,
    });
    cfg.accounts = [&voter, &payer]
        .iter()
        .map(|k| node::genesis::GenesisAccount {
            account: k.account_id().to_hex(),
            balance: 100 * TOKEN,
            city: None,
        })
        .collect();
    let net_dir = cfg.dir.clone();
    let mut net = Localnet::start(cfg).await.expect("the localnet starts");
    let t_started = t_start.elapsed();
    let node_dir = |name: &str| -> PathBuf { net_dir.join(name) };
    let key_of =
        |name: &str| -> Keypair { Keypair::load(&node_dir(name).join("node.key")).unwrap() };
    let addrs: Vec<String> = (0..4)
        .map(|i| {
            net.manifest()
                .get(&format!("rep-{i}"))
                .unwrap()
                .addr
                .to_string()
        })
        .collect();
    let mut clients = Vec::new();
    for a in &addrs {
        clients.push(CityClient::connect(a).await.unwrap());
    }
    let mut reps: Vec<AccountId> = (0..4)
        .map(|i| key_of(&format!("rep-{i}")).account_id())
        .collect();
    let light = key_of("light-0").account_id();
    let light_key = node_dir("light-0").join("node.key");
    // The standby: a city node of the same city outside the genesis committee.
    let newcomer = key_of("standby-0").account_id();
    let newcomer_key = node_dir("standby-0").join("node.key");
    let newcomer_addr = net.manifest().get("standby-0").unwrap().addr.to_string();
    let standby_client = CityClient::connect(&newcomer_addr).await.unwrap();
    // It refuses submissions while it is not in the committee.
    let refused = standby_client
        .submit(&e2e::tokyo_tx(&payer, 0, AT))
        .await
        .expect_err("a standby refuses submissions");
    assert!(
        refused.to_string().contains("standby"),
        "a typed refusal naming the standby: {refused}"
    );
    assert!(standby_client.committee().await.unwrap().standby);
    // From here on it is index 4 (the fifth "representative").
    clients.push(standby_client.clone());
    reps.push(newcomer);
    let names: Vec<String> = (0..4)
        .map(|i| format!("rep-{i}"))
        .chain(["standby-0".to_string()])
        .collect();

    // Rep 0 sends its twin batches to the peer with the highest id, whose evidence reporter
    // then signs DoubleSign txs with its own nonces: the bonding operator is another one, so
    // the CLI's nonce never races the reporter's.
    let mut peers: Vec<usize> = (1..4).collect();
    peers.sort_by_key(|&i| reps[i]);
    let (bonder, delegatee, third) = (peers[0], peers[1], peers[2]);
    let bonder_key = node_dir(&format!("rep-{bonder}")).join("node.key");

    // Term 0: the three requests go in at once (three accounts, three nonces of their own),
    // all through the bonder's representative.
    let via = addrs[bonder].clone();
    let reg = {
        let (bin, key, via) = (bin.clone(), light_key.clone(), via.clone());
        tokio::spawn(async move {
            stake_cli(&bin, &key, &via, 0, &["register", "--kind", "light"]).await
        })
    };
    let bond = {
        let (bin, key, via) = (bin.clone(), bonder_key.clone(), via.clone());
        let (c, me, amount) = (clients[bonder].clone(), reps[bonder], BOND.to_string());
        tokio::spawn(async move {
            // The representative's own reporters sign with the same key from the same
            // nonces: should one of their txs take the nonce first, the bond is refused (a
            // no-op everywhere) and goes again with the next nonce.
            for _ in 0..3 {
                let nonce = c.account(me).await.unwrap().nonce;
                let id = stake_cli(&bin, &key, &via, nonce, &["bond", "--amount", &amount]).await;
                let after = until("the bond's nonce used", 40, || {
                    let c = c.clone();
                    async move { c.account(me).await.ok().filter(|a| a.nonce > nonce) }
                })
                .await;
                if after.balance == REP_BALANCE - BOND {
                    return id;
                }
                eprintln!("bond {id} lost nonce {nonce} to the representative's own tx; again");
            }
            panic!("the bond was never applied");
        })
    };
    let delegate = {
        let (bin, key, via) = (bin.clone(), voter_key.clone(), via.clone());
        let (to, amount) = (reps[delegatee].to_hex(), DELEGATION.to_string());
        tokio::spawn(async move {
            stake_cli(
                &bin,
                &key,
                &via,
                0,
                &["delegate", "--validator", &to, "--amount", &amount],
            )
            .await
        })
    };
    // The newcomer's operator, with its node key: register as a full node, bond, publish
    // the endpoint — each once the previous one is applied (one account, nonces in order).
    let join = {
        let (bin, key, via) = (bin.clone(), newcomer_key.clone(), via.clone());
        let c = clients[bonder].clone();
        let (amount, addr) = (NEWCOMER_BOND.to_string(), newcomer_addr.clone());
        tokio::spawn(async move {
            let steps: [&[&str]; 3] = [
                &["register", "--kind", "full"],
                &["bond", "--amount", &amount],
                &["endpoint", "--address", &addr],
            ];
            for (nonce, op) in steps.iter().enumerate() {
                let nonce = nonce as u64;
                let id = stake_cli(&bin, &key, &via, nonce, op).await;
                until(&format!("the newcomer's {} applied", op[0]), 40, || {
                    let c = c.clone();
                    async move { c.account(newcomer).await.ok().filter(|a| a.nonce > nonce) }
                })
                .await;
                eprintln!("newcomer: {} {id} applied", op[0]);
            }
        })
    };
    let (reg, bond, delegate) = (
        reg.await.unwrap(),
        bond.await.unwrap(),
        delegate.await.unwrap(),
    );
    join.await.unwrap();
    eprintln!("admitted: register {reg}, bond {bond}, delegate {delegate}; the newcomer joined");

    // Applied: the ledger moved the bonded amounts (one balance state), the light node's
    // registration used its nonce.
    let c = &clients[bonder];
    until("bond and delegation applied", 40, || async {
        let b = balance(c, reps[bonder]).await;
        let v = balance(c, voter.account_id()).await;
        (b == REP_BALANCE - BOND && v == 100 * TOKEN - DELEGATION).then_some(())
    })
    .await;
    until("light node registered", 40, || async {
        c.account(light)
            .await
            .ok()
            .filter(|a| a.nonce == 1)
            .map(|_| ())
    })
    .await;
    // … in term 0, and the equivocator slashed in term 0 by the automatic evidence path
    // (nobody in this test submits evidence).
    let stake = |i: usize, a: AccountId| {
        let c = clients[i].clone();
        async move { c.stake(a).await.unwrap() }
    };
    let s = stake(bonder, reps[bonder]).await;
    assert_eq!(s.term, 0, "the requests were applied in term 0");
    assert_eq!(s.bonded, TOKEN + BOND, "self-bond: genesis + bond");
    let n = stake(bonder, newcomer).await;
    assert_eq!(n.term, 0, "the newcomer joined in term 0");
    assert_eq!(n.bonded, NEWCOMER_BOND);
    assert!(n.node.as_ref().unwrap().active);
    let slashed = until("the equivocator slashed", 40, || async {
        let s = stake(delegatee, reps[0]).await;
        (!s.node.as_ref().unwrap().active).then_some(s)
    })
    .await;
    assert_eq!(slashed.term, 0, "slashed within term 0");
    assert!(slashed.node.unwrap().stake < TOKEN, "slashed stake");

    // Ordinary txs, held on the light nodes (6 lights, 6 shards: light 0 holds a shard of
    // each stripe), ordered and committed; the representative that placed each stripe
    // records its holders' contributions on its own.
    let t_payments = now_ms();
    for n in 0..4u64 {
        let s = clients[bonder]
            .submit_retrying(&e2e::tokyo_tx(&payer, n, AT), &e2e::WALLET_RETRY)
            .await
            .unwrap();
        assert_eq!(s.state, TxState::Held, "{s:?}");
    }

    // The term ends: every representative's consensus reaches the boundary; the elected
    // three run epoch 1, representative 0 is left out.
    // The standby is elected in the slashed representative's place: it starts its driver
    // for epoch 1 with the state it followed.
    let first = until("epoch 1 on the elected representatives", 60, || async {
        let mut first = None;
        for c in &clients[1..] {
            let c = c.committee().await.ok()?;
            if c.epoch != 1 {
                return None;
            }
            first = Some(c.epoch_first_seq);
        }
        let c0 = clients[0].committee().await.ok()?;
        c0.removed.then_some(first?)
    })
    .await;
    assert!(first > 0);
    // The committee is the elected set with dpos's stakes: the bonder (1 + 2 tokens) before
    // the delegatee (1 + 1) before the third (1); the slashed one absent.
    let want = [
        (reps[bonder], TOKEN + BOND),
        (reps[delegatee], TOKEN + DELEGATION),
        (newcomer, NEWCOMER_BOND),
        (reps[third], TOKEN),
    ];
    for (i, c) in clients.iter().enumerate().skip(1) {
        let c = c.committee().await.unwrap();
        assert_eq!(c.epoch_first_seq, first, "representative {i}");
        let mut got: Vec<(AccountId, u64)> = c
            .members
            .iter()
            .map(|m| (AccountId::from_bytes(*m.node_id.as_bytes()), m.weight))
            .collect();
        got.sort_by_key(|(_, w)| std::cmp::Reverse(*w));
        assert_eq!(got, want, "representative {i}: the running committee");
        assert_eq!(c.dpos.as_ref().unwrap().term, 1, "representative {i}");
        assert!(!c.standby && !c.removed, "representative {i}");
    }

    // The light node's rewards were recorded (one payment per reward epoch it was paid
    // for); it claims with its node key after the change: the new committee applies it and
    // the ledger balance rises by exactly what was accrued, on every member.
    let accrued = until("a contribution recorded", 40, || async {
        let r = stake(bonder, light).await.rewards;
        (r > 0).then_some(r)
    })
    .await;
    let per_epoch = light_reward_per_epoch();
    assert_eq!(per_epoch, TOKEN, "0.1 point × 1.0 × 10 tokens");
    assert_eq!(accrued % per_epoch, 0, "{accrued}");
    let claim = stake_cli(&bin, &light_key, &addrs[delegatee], 1, &["claim"]).await;
    eprintln!("claim {claim}");
    for (i, c) in clients.iter().enumerate().skip(1) {
        let c = c.clone();
        until(&format!("representative {i}: the claim paid"), 40, || {
            let c = c.clone();
            async move { (balance(&c, light).await == accrued).then_some(()) }
        })
        .await;
        assert_eq!(stake(i, light).await.rewards, 0, "representative {i}");
    }
    // Liveness and no gap: the new committee keeps committing past the boundary.
    for (i, c) in clients.iter().enumerate().skip(1) {
        let c = c.clone();
        until(
            &format!("representative {i}: commits after the change"),
            30,
            || {
                let c = c.clone();
                async move {
                    c.committee()
                        .await
                        .ok()
                        .filter(|x| x.committed >= first + 3)
                        .map(|_| ())
                }
            },
        )
        .await;
    }
    // Federation goes on across the change: the continent took the old committee's
    // certified handover and logs checkpoints the new committee (the newcomer in it)
    // certifies.
    let genesis = node::genesis::Genesis::load(&net_dir.join("genesis.toml")).unwrap();
    let continent = genesis.continent.clone().unwrap();
    let city_hash = genesis.cities.get(CITY).unwrap().city;
    let links = rpc::tls::LinkSecurity::Tls(
        rpc::tls::TlsContext::new(rpc::tls::TlsIdentity::generate(&Keypair::generate()).unwrap())
            .unwrap(),
    );
    let fed = rpc::FederationClient::lazy_over(
        &continent.address,
        Duration::from_secs(5),
        &links,
        Some(continent.node_id),
    )
    .unwrap();
    until(
        "the continent logs the new epoch's checkpoints",
        60,
        || async {
            fed.city_head(city_hash)
                .await
                .ok()
                .filter(|h| h.next_sequence >= first + 3)
                .map(|_| ())
        },
    )
    .await;
    let t_payments_end = now_ms();

    // The monitor's incidents: the member with the least stake (1 of 6 tokens: the other
    // two hold the quorum) is killed -9 and misses its leader slots; every member's
    // missed-round monitor decides the same incident, dpos records it once (+20 suspicion,
    // not a double sign's +100), and the two honest members are not reported meanwhile.
    let suspicion = |i: usize, a: AccountId| {
        let c = clients[i].clone();
        async move { c.stake(a).await.unwrap().node.unwrap().suspicion }
    };
    let honest_before = (
        suspicion(bonder, reps[bonder]).await,
        suspicion(bonder, reps[delegatee]).await,
    );
    let third_before = suspicion(bonder, reps[third]).await;
    net.kill(&format!("rep-{third}")).await;
    let third_after = until("an incident against the killed member", 60, || async {
        let s = suspicion(bonder, reps[third]).await;
        (s > third_before).then_some(s)
    })
    .await;
    assert_eq!(
        third_after,
        third_before + rules.incident_suspicion,
        "one incident, counted once"
    );
    assert_eq!(
        (
            suspicion(bonder, reps[bonder]).await,
            suspicion(bonder, reps[delegatee]).await
        ),
        honest_before,
        "the live members were not reported"
    );
    // The two left keep committing, and agree on the dpos state.
    let (b, d) = (clients[bonder].clone(), clients[delegatee].clone());
    until("the same dpos root on the two live members", 30, || {
        let (b, d) = (b.clone(), d.clone());
        async move {
            let (x, y) = (
                b.committee().await.ok()?.dpos?,
                d.committee().await.ok()?.dpos?,
            );
            (x.applied_upto == y.applied_upto && x.state_root == y.state_root).then_some(())
        }
    })
    .await;
    let t_live = t_start.elapsed();

    // Stop the processes and read every representative's stores.
    let unclean = net.stop().await;
    assert!(unclean.is_empty(), "did not stop cleanly: {unclean:?}");
    let city = genesis.cities.get(CITY).unwrap();
    let mut chains: Vec<Vec<Hash32>> = Vec::new();
    let mut latencies = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let order = node::OrderStore::open(&node_dir(name).join("order.redb")).unwrap();
        let upto = order.committed();
        // Representative 0 follows the chain to the boundary and stops there.
        if i == 0 {
            assert_eq!(
                upto, first,
                "the removed representative's chain ends at the boundary"
            );
        } else {
            // (the killed one may not have recorded its last commits)
            let want = if i == third { first + 1 } else { first + 3 };
            assert!(upto >= want, "representative {i}: {upto}");
        }
        let hashes = e2e::checkpoint_chain(&format!("representative {i}"), upto, |seq| {
            order.checkpoint(seq).unwrap().map(|c| c.checkpoint)
        });
        // (the newcomer took the old epoch's checkpoints from the committee: its commit
        // times there are when it fetched them)
        if i > 0 && i < 4 {
            let last_old = order
                .checkpoint(first - 1)
                .unwrap()
                .unwrap()
                .committed_at_ms;
            let first_new = order.checkpoint(first).unwrap().unwrap().committed_at_ms;
            latencies.push(first_new.saturating_sub(last_old));
        }
        chains.push(hashes);
        let epoch = node::consensus::EpochState::load(&node_dir(name))
            .unwrap()
            .expect("an epoch state after the change");
        if i == 0 {
            assert_eq!(epoch.left_after, Some(first - 1), "{epoch:?}");
        } else {
            assert_eq!(
                (epoch.epoch, epoch.left_after),
                (1, None),
                "representative {i}"
            );
        }
    }
    // One chain: every representative's checkpoints are a prefix of the longest one.
    let longest = chains.iter().max_by_key(|c| c.len()).unwrap().clone();
    for (i, c) in chains.iter().enumerate() {
        assert_eq!(c[..], longest[..c.len()], "representative {i}: one chain");
    }

    // The same dpos state root at every checkpoint on every representative, and the state
    // the test expects.
    let mut stores = Vec::new();
    for name in &names {
        let (g, keys) = node::dpos_genesis_of(city, rules.clone()).unwrap();
        stores.push(node::StakeStore::open(&node_dir(name).join("stake.redb"), g, keys).unwrap());
    }
    let upto = stores.iter().map(node::StakeStore::next_seq).max().unwrap();
    assert!(upto > first);
    for seq in 0..upto {
        let roots: Vec<Option<Hash32>> = stores.iter().map(|s| s.root_at(seq).unwrap()).collect();
        let root =
            roots[bonder].unwrap_or_else(|| panic!("representative {bonder} has no root at {seq}"));
        for (i, r) in roots.iter().enumerate() {
            if (i == 0 && seq >= first) || (i == third && r.is_none()) {
                continue; // the removed one stopped at the boundary, the killed one earlier
            }
            assert_eq!(*r, Some(root), "representative {i}, checkpoint {seq}");
        }
    }
    let st = &stores[bonder];
    assert!(st.read(|s| s.term().index).unwrap() >= 1);
    assert!(!st.read(|s| s.is_active(&reps[0])).unwrap());
    let mut elected = st.read(|s| s.representatives().to_vec()).unwrap();
    elected.sort();
    assert!(
        elected.contains(&newcomer),
        "the newcomer replaced the slashed member"
    );
    let mut want_ids: Vec<AccountId> = want.iter().map(|(a, _)| *a).collect();
    want_ids.sort();
    assert_eq!(elected, want_ids);
    // The claim paid one light-rate payment per reward epoch the rules recorded.
    let epochs = st
        .read(|s| {
            (rules.epoch_of(t_payments)..=rules.epoch_of(t_payments_end))
                .filter(|e| s.was_rewarded(&light, *e))
                .count() as u64
        })
        .unwrap();
    assert!(epochs >= 1);
    assert_eq!(accrued, per_epoch * epochs);
    assert_eq!(st.read(|s| s.accrued_rewards(&light)).unwrap(), 0);
    eprintln!(
        "localnet stake: started in {t_started:?}, live part done at {t_live:?}, total {:?}; \
         epoch change at checkpoint {first}: last commit of the old committee → first of the \
         new, per member: {latencies:?} ms",
        t_start.elapsed()
    );
}

//! DPoS applied live over a devnet of four representatives: staking requests are admitted,
//! held, ordered and applied by every representative through the execution feed; bonds
//! debit the ledger; a double sign (proved with the representative's real key) slashes it;
//! the term ends after a few seconds and the election's winners — the newcomer in, the
//! slashed representative out — form the next term; every representative reports the same
//! dpos root at every checkpoint, and the combined root the header certifies includes it.
//!
//! The first test checks the stake state's switch; its newcomer has no node (dpos's
//! `RegisterNode` carries no address), so consensus keeps its committee into the next epoch.
//! The second checks the handover of the running consensus among genesis members: one
//! representative equivocates (test hook) and is slashed through the automatic evidence →
//! DoubleSign path, the term ends, it leaves, the remaining three (re-weighted by a
//! delegation) run the next epoch, commits continue without a gap (also across a member's
//! crash and restart), and the removed one's proposals are refused.
//! The third: two light nodes register with their node keys (one light, one full), ordinary
//! txs are held on them and committed, the representatives record the holders'
//! contributions on their own, the light node claims and its ledger balance rises by what
//! the domain's formula gives (computed in the test), a second claim pays nothing, and the
//! dpos root is the same on every representative at every checkpoint; `city-node stake
//! show` / `committee` print the rewards, balance and committee the node reads.
//! The second test also reads the stake over gRPC (`GetStake`, `GetCommittee`): the
//! delegation, a member's node record, an unknown account, the committee before and after
//! the term boundary, the removed representative's view.

#![allow(clippy::unwrap_used)]

use dag_core::{AccountId, CityId, Hash32, SignedTx};
use devnet::{CITY, Devnet, DevnetConfig};
use dpos::{DoubleSignEvidence, SignedHeaderDigest, SlashLevel, SystemPayload};
use pqc::Keypair;
use rpc::{CityClient, ConsensusClient, TxState};
use std::time::{Duration, Instant};

const TOKEN: u64 = 1_000_000;

fn sys(key: &Keypair, nonce: u64, payload: SystemPayload) -> SignedTx {
    dpos::sign_system_tx(&payload, nonce, 1, CityId::new(CITY).unwrap(), key)
}

/// Submits `tx` (it must be Held), then waits until representative 0 has applied it.
async fn apply(net: &Devnet, client: &CityClient, tx: SignedTx) {
    let s = client.submit(&tx).await.unwrap();
    assert_eq!(s.state, TxState::Held, "{s:?}");
    let stake = net.rep(0).unwrap().stake().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match stake.verdict(&s.tx_id) {
            Some(true) => return,
            Some(false) => panic!("{} refused by the rules", tx.tx.nonce),
            None => {}
        }
        assert!(Instant::now() < deadline, "tx {} never applied", s.tx_id);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stake_is_applied_live_and_the_term_switch_replaces_the_slashed_representative() {
    let dir = tempfile::tempdir().unwrap();
    let voter = Keypair::generate();
    let newcomer = Keypair::generate();
    let cfg = DevnetConfig {
        reps: 4,
        gateway: false,
        // Four requests are applied one after the other before the 8 s term ends: propose
        // every 50 ms rather than on the domain's dynamic interval (0.5–5 s).
        batch_interval_ms: Some(50),
        accounts: vec![
            (voter.account_id(), 1_000 * TOKEN),
            (newcomer.account_id(), 500 * TOKEN),
        ],
        dpos: dpos::DposConfig {
            term_ms: 8_000,
            stake_lock_ms: 1_000,
            ..dpos::DposConfig::default()
        },
        ..DevnetConfig::default()
    };
    let net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);
    let client = CityClient::connect(&net.rep(1).unwrap().addr().to_string())
        .await
        .unwrap();
    let reps: Vec<AccountId> = (0..4)
        .map(|i| net.rep_key(i).unwrap().account_id())
        .collect();

    apply(
        &net,
        &client,
        sys(
            &newcomer,
            0,
            SystemPayload::RegisterNode {
                kind: dpos::NodeKind::Full,
                metrics: dpos::Metrics::default(),
            },
        ),
    )
    .await;
    apply(
        &net,
        &client,
        sys(
            &newcomer,
            1,
            SystemPayload::Bond {
                amount: 100 * TOKEN,
            },
        ),
    )
    .await;
    apply(
        &net,
        &client,
        sys(
            &voter,
            0,
            SystemPayload::Delegate {
                validator: newcomer.account_id(),
                amount: 200 * TOKEN,
            },
        ),
    )
    .await;
    // Representative 0 signed two different batch headers for one round.
    let k0 = net.rep_key(0).unwrap().clone();
    let evidence = DoubleSignEvidence::new(
        SlashLevel::City,
        SignedHeaderDigest::sign(SlashLevel::City, 1 << 40, Hash32([1; 32]), &k0),
        SignedHeaderDigest::sign(SlashLevel::City, 1 << 40, Hash32([2; 32]), &k0),
    )
    .unwrap();
    apply(
        &net,
        &client,
        sys(&voter, 1, SystemPayload::DoubleSign(evidence)),
    )
    .await;

    // The term ends 8 s after checkpoint 0: wait for the switch on every representative.
    let deadline = Instant::now() + Duration::from_secs(40);
    for i in 0..4 {
        let stake = net.rep(i).unwrap().stake().unwrap().clone();
        while stake.read(|s| s.term().index).unwrap_or(0) < 1 {
            assert!(
                Instant::now() < deadline,
                "representative {i}: no term switch"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stake0 = net.rep(0).unwrap().stake().unwrap().clone();
    let elected = stake0.read(|s| s.representatives().to_vec()).unwrap();
    assert_eq!(elected.len(), 4);
    assert_eq!(
        elected[0],
        newcomer.account_id(),
        "300 tokens bonded: first"
    );
    assert!(
        !elected.contains(&reps[0]),
        "the slashed representative left"
    );
    for r in &reps[1..] {
        assert!(elected.contains(r));
    }
    // The consensus committee of the new term is readable from the state.
    let committee = stake0.committee().unwrap();
    assert_eq!(committee.size(), 4);
    check_committee_read_keeps_the_committee(&net, &newcomer).await;

    // Bonds debited the ledger (one balance state).
    let ledger = net
        .rep(2)
        .unwrap()
        .node()
        .execution()
        .unwrap()
        .ledger()
        .unwrap()
        .clone();
    let bal = |a: AccountId| ledger.account(&a).unwrap().map_or(0, |x| x.balance);
    assert_eq!(bal(voter.account_id()), 800 * TOKEN);
    assert_eq!(bal(newcomer.account_id()), 400 * TOKEN);

    // Every representative, every checkpoint: the same dpos root, and the executed record
    // (whose combined root the header certifies) carries it.
    let upto = (0..4)
        .map(|i| net.rep(i).unwrap().stake().unwrap().next_seq())
        .min()
        .unwrap();
    assert!(upto > 4);
    for seq in 0..upto {
        let root = stake0.root_at(seq).unwrap().unwrap();
        for i in 1..4 {
            let other = net.rep(i).unwrap().stake().unwrap().root_at(seq).unwrap();
            assert_eq!(other, Some(root), "representative {i}, checkpoint {seq}");
        }
        let exec = net.rep(0).unwrap().node().execution().unwrap().clone();
        if let Some(rec) = exec.checkpoint(seq).unwrap() {
            assert!(
                rec.roots.iter().any(|(n, r)| n == "dpos" && *r == root),
                "checkpoint {seq}: {:?}",
                rec.roots
            );
        }
    }
    net.shutdown().await.unwrap();
}

/// `GetCommittee` once consensus reached epoch 1 (it kept its committee: the elected
/// newcomer has no address): the next epoch keeps the running committee too, and the read
/// names the newcomer as the unreachable member.
async fn check_committee_read_keeps_the_committee(net: &Devnet, newcomer: &Keypair) {
    let client = CityClient::connect(&net.rep(1).unwrap().addr().to_string())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = loop {
        let c = client.committee().await.unwrap();
        if c.epoch == 1 && c.dpos.as_ref().is_some_and(|d| d.term == 1) {
            break c;
        }
        assert!(Instant::now() < deadline, "no epoch 1: {c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let genesis: Vec<_> = (0..4).map(|i| net.rep_key(i).unwrap().node_id()).collect();
    let members: Vec<_> = c.members.iter().map(|m| m.node_id).collect();
    assert_eq!(members, genesis, "epoch 1 kept the genesis committee");
    let d = c.dpos.unwrap();
    assert!(!d.next_elected);
    assert_eq!(d.next_unreachable, vec![newcomer.node_id()]);
    assert_eq!(d.next, c.members, "the next epoch keeps it as well");
}

/// Submits `tx` (Held), then waits until representative `via` applied it.
async fn apply_at(net: &Devnet, via: usize, client: &CityClient, tx: SignedTx) {
    let s = client.submit(&tx).await.unwrap();
    assert_eq!(s.state, TxState::Held, "{s:?}");
    let stake = net.rep(via).unwrap().stake().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match stake.verdict(&s.tx_id) {
            Some(true) => return,
            Some(false) => panic!("{} refused by the rules", tx.tx.nonce),
            None => {}
        }
        assert!(Instant::now() < deadline, "tx {} never applied", s.tx_id);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_consensus_hands_over_to_the_elected_committee_at_the_term_boundary() {
    use dag_core::consensus::{BatchHeader, Message, SignedBatch};
    let dir = tempfile::tempdir().unwrap();
    let voter = Keypair::generate();
    let cfg = DevnetConfig {
        reps: 4,
        gateway: false,
        batch_interval_ms: Some(50),
        // Plain links: the test below delivers a consensus message as representative 0.
        tls: false,
        // Representative 0 equivocates on every proposal (the test hook): its peers catch
        // it, report a DoubleSign tx on their own, and dpos slashes it.
        equivocating_rep: Some(0),
        accounts: vec![(voter.account_id(), 1_000 * TOKEN)],
        dpos: dpos::DposConfig {
            term_ms: 8_000,
            stake_lock_ms: 1_000,
            ..dpos::DposConfig::default()
        },
        ..DevnetConfig::default()
    };
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);
    let client = CityClient::connect(&net.rep(1).unwrap().addr().to_string())
        .await
        .unwrap();
    let reps: Vec<AccountId> = (0..4)
        .map(|i| net.rep_key(i).unwrap().account_id())
        .collect();
    let rep_ids: Vec<dag_core::NodeId> =
        (0..4).map(|i| net.rep_key(i).unwrap().node_id()).collect();
    for i in 0..4 {
        let st = net.rep(i).unwrap().representative().unwrap().status();
        assert_eq!(st.borrow().epoch, 0);
    }
    // Re-weighting: one more token behind representative 1.
    apply_at(
        &net,
        1,
        &client,
        sys(
            &voter,
            0,
            SystemPayload::Delegate {
                validator: reps[1],
                amount: TOKEN,
            },
        ),
    )
    .await;
    // Stake reads over gRPC (GetStake, GetCommittee) answer what dpos holds.
    let reads0 = CityClient::connect(&net.rep(0).unwrap().addr().to_string())
        .await
        .unwrap();
    check_stake_reads_before_the_term(&net, &client, &voter, &reps).await;
    // Nobody submits evidence here: the equivocation is caught by consensus, reported as a
    // DoubleSign tx by the representative that saw both batches, and applied.
    let k0 = net.rep_key(0).unwrap().clone();
    let stake1 = net.rep(1).unwrap().stake().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stake1.read(|s| s.is_active(&reps[0])).unwrap() {
        assert!(
            Instant::now() < deadline,
            "the equivocation was never slashed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stake1.read(|s| s.term().index).unwrap(),
        0,
        "slashed within term 0"
    );
    assert!(stake1.read(|s| s.stake_of(&reps[0])).unwrap() < TOKEN);

    // The term ends 8 s after checkpoint 0: every representative's consensus reaches the
    // boundary; 1–3 start epoch 1, 0 is left out.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..4 {
        let mut st = net.rep(i).unwrap().representative().unwrap().status();
        loop {
            let now = *st.borrow_and_update();
            if (i == 0 && now.removed) || (i > 0 && now.epoch == 1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "representative {i}: no epoch change ({now:?})"
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), st.changed()).await;
        }
    }
    // The committee in consensus is the elected one: 1, 2, 3 with their dpos stakes.
    let elected = stake1.committee().unwrap();
    assert_eq!(stake1.read(|s| s.term().index).unwrap(), 1);
    assert_eq!(elected.size(), 3, "the slashed representative left");
    for i in 1..4 {
        let running = net.rep(i).unwrap().representative().unwrap().committee();
        assert_eq!(running.epoch(), 1);
        assert_eq!(running.size(), 3);
        assert!(running.authority(&rep_ids[0]).is_none());
        for a in elected.authorities() {
            assert_eq!(running.stake_of(&a.id), a.stake, "representative {i}");
        }
        assert!(running.stake_of(&rep_ids[1]) > running.stake_of(&rep_ids[2]));
    }

    check_committee_reads_after_the_term(&net, &client, &reads0, &rep_ids).await;

    // Liveness after the change: a staking request submitted now is ordered and applied by
    // the new committee.
    apply_at(
        &net,
        2,
        &client,
        sys(
            &voter,
            1,
            SystemPayload::Delegate {
                validator: reps[2],
                amount: TOKEN,
            },
        ),
    )
    .await;

    // No gap: every checkpoint from 0 chains to the one before, across the boundary, on
    // every member of the new committee; the epoch-change latency is the gap in commit
    // time between the old committee's last checkpoint and the new one's first.
    let first = net
        .rep(1)
        .unwrap()
        .representative()
        .unwrap()
        .status()
        .borrow()
        .epoch_first_seq;
    assert!(first > 0);
    let mut latencies = Vec::new();
    for i in 1..4 {
        let order = net.rep(i).unwrap().node().order_store().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        while order.committed() < first + 3 {
            assert!(
                Instant::now() < deadline,
                "representative {i}: no commits after the change"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut prev = Hash32::default();
        for seq in 0..first + 3 {
            let cp = order
                .checkpoint(seq)
                .unwrap()
                .unwrap_or_else(|| panic!("{i}: gap at {seq}"));
            assert_eq!(cp.checkpoint.sequence, seq);
            assert_eq!(
                cp.checkpoint.prev_hash, prev,
                "representative {i}, checkpoint {seq}"
            );
            prev = cp.checkpoint.hash();
        }
        let last_old = order
            .checkpoint(first - 1)
            .unwrap()
            .unwrap()
            .committed_at_ms;
        let first_new = order.checkpoint(first).unwrap().unwrap().committed_at_ms;
        latencies.push(first_new.saturating_sub(last_old));
    }
    eprintln!(
        "epoch change at checkpoint {first}: last commit of the old committee → first commit of \
         the new one, per member of the new committee: {latencies:?} ms"
    );

    // The continent followed the change: the old committee handed it over to the new one,
    // whose checkpoints are federated, certified by the new committee.
    let new_committee = net.rep(1).unwrap().representative().unwrap().committee();
    assert_eq!(new_committee.epoch(), 1);
    let order1 = net.rep(1).unwrap().node().order_store().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let proof = loop {
        if let Some((bytes, _)) = order1.federated(first + 1).unwrap() {
            break rpc::FederationProof::decode(&bytes).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "checkpoint {} of the new committee is not federated",
            first + 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    proof
        .verify(&new_committee, &net.continent_public_key())
        .unwrap();
    let chain = net
        .continent()
        .unwrap()
        .log()
        .committee_chain(&proof.certified.header.city);
    assert_eq!(chain.len(), 2, "the continent knows both committees");
    assert_eq!((chain[1].0, chain[1].1), (1, first));
    assert_eq!(chain[1].2.authorities(), new_committee.authorities());

    // A member of the new committee crashes and restarts: it rebuilds epoch 1's driver
    // from its persisted epoch state and records, and follows the same chain.
    net.kill_rep(3).await;
    let order1 = net.rep(1).unwrap().node().order_store().unwrap().clone();
    let before = order1.committed();
    net.start_rep(3).await.unwrap();
    let st3 = *net
        .rep(3)
        .unwrap()
        .representative()
        .unwrap()
        .status()
        .borrow();
    assert_eq!(st3.epoch_first_seq, first, "{st3:?}");
    assert_eq!(
        net.rep(3)
            .unwrap()
            .representative()
            .unwrap()
            .committee()
            .epoch(),
        1
    );
    let order3 = net.rep(3).unwrap().node().order_store().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(40);
    while order3.committed() < before + 3 {
        assert!(
            Instant::now() < deadline,
            "the restarted member does not follow"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for seq in 0..before + 3 {
        let a = order1.checkpoint(seq).unwrap().map(|c| c.checkpoint.hash());
        let b = order3.checkpoint(seq).unwrap().map(|c| c.checkpoint.hash());
        if a.is_some() {
            assert_eq!(a, b, "checkpoint {seq} after the restart");
        }
    }

    // The removed representative's proposals are refused by the new committee's members.
    let c = ConsensusClient::lazy(
        &net.rep(1).unwrap().addr().to_string(),
        Duration::from_secs(5),
    )
    .unwrap();
    let proposal = SignedBatch::sign(
        BatchHeader {
            epoch: 1,
            round: 0,
            author: rep_ids[0],
            timestamp_ms: 1,
            parents: vec![],
            weak_links: vec![],
            items: vec![],
        },
        &k0,
    );
    let err = c
        .deliver(rep_ids[0], &Message::Propose(proposal))
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("PermissionDenied")
            || format!("{err}").contains("UNKNOWN_SENDER"),
        "{err:?}"
    );
    // It stopped proposing: its driver stays retired.
    let st0 = *net
        .rep(0)
        .unwrap()
        .representative()
        .unwrap()
        .status()
        .borrow();
    assert!(st0.removed && st0.epoch == 0, "{st0:?}");

    // Every member of the new committee: the same dpos root at every checkpoint.
    let upto = (1..4)
        .map(|i| net.rep(i).unwrap().stake().unwrap().next_seq())
        .min()
        .unwrap();
    assert!(upto > first);
    for seq in 0..upto {
        let root = stake1.root_at(seq).unwrap().unwrap();
        for i in 2..4 {
            let other = net.rep(i).unwrap().stake().unwrap().root_at(seq).unwrap();
            assert_eq!(other, Some(root), "representative {i}, checkpoint {seq}");
        }
    }
    net.shutdown().await.unwrap();
}

/// Stake reads, term 0: the voter's delegation, a representative's node record and an
/// unknown account as `GetStake` answers them, equal to representative 1's dpos state at
/// the sequence the answer names; `GetCommittee`: epoch 0, the four genesis members, dpos's
/// current election as the next committee.
async fn check_stake_reads_before_the_term(
    net: &Devnet,
    client: &CityClient,
    voter: &Keypair,
    reps: &[AccountId],
) {
    let stake1 = net.rep(1).unwrap().stake().unwrap().clone();
    let ledger1 = net
        .rep(1)
        .unwrap()
        .node()
        .execution()
        .unwrap()
        .ledger()
        .unwrap()
        .clone();
    let s = client.stake(voter.account_id()).await.unwrap();
    assert!(s.exists);
    assert_eq!(s.bonded, TOKEN);
    assert_eq!(s.delegations.len(), 1, "{s:?}");
    assert_eq!(s.delegations[0].validator, reps[1]);
    assert_eq!(s.delegations[0].amount, TOKEN);
    assert!(s.unbonding.is_empty() && s.node.is_none());
    assert_eq!(s.term, 0);
    // The answer names the state it read: its root is the one recorded after checkpoint
    // `dpos_applied_upto - 1`.
    assert_eq!(
        stake1.root_at(s.dpos_applied_upto - 1).unwrap(),
        Some(s.dpos_state_root)
    );
    let liquid = ledger1
        .account(&voter.account_id())
        .unwrap()
        .unwrap()
        .balance;
    assert_eq!(s.balance, liquid);
    assert!(liquid <= 999 * TOKEN, "the delegation left the ledger");

    let r1 = client.stake(reps[1]).await.unwrap();
    let node = r1.node.expect("a genesis member is a registered node");
    assert_eq!(node.kind, rpc::StakeNodeKind::Full);
    assert!(node.active && node.representative);
    assert_eq!(
        node.stake,
        stake1.read(|st| st.stake_of(&reps[1])).unwrap(),
        "the stake dpos holds"
    );
    assert_eq!(
        node.stake,
        r1.bonded + TOKEN,
        "self-bond plus the delegation"
    );
    assert_eq!(r1.delegations[0].validator, reps[1]);

    let nobody = client
        .stake(Keypair::generate().account_id())
        .await
        .unwrap();
    assert!(!nobody.exists && nobody.bonded == 0 && nobody.delegations.is_empty());

    let genesis: Vec<_> = (0..4).map(|i| net.rep_key(i).unwrap().node_id()).collect();
    // The equivocating representative may be slashed at any checkpoint: compare the
    // answer's next committee with dpos's election at the very state it read (retry until
    // no checkpoint was applied between the answer and the local read).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = client.committee().await.unwrap();
        assert_eq!(c.epoch, 0);
        assert!(!c.removed);
        let ids: Vec<_> = c.members.iter().map(|m| m.node_id).collect();
        assert_eq!(ids, genesis, "the genesis committee, in order");
        assert!(c.members.iter().all(|m| m.address.is_some()));
        let d = c.dpos.expect("dpos started");
        assert_eq!(d.term, 0);
        assert!(!d.next_elected);
        assert_eq!(d.ends_at_ms, d.started_at_ms + 8_000);
        assert_eq!(
            stake1.root_at(d.applied_upto - 1).unwrap(),
            Some(d.state_root)
        );
        let elected: Vec<_> = stake1
            .read(|st| st.election())
            .unwrap()
            .into_iter()
            .map(|c| (c.account, c.stake))
            .collect();
        if stake1.next_seq() == d.applied_upto {
            let next: Vec<_> = d
                .next
                .iter()
                .map(|m| (AccountId::from_bytes(*m.node_id.as_bytes()), m.dpos_stake))
                .collect();
            assert_eq!(next, elected);
            assert!(!next.is_empty());
            break;
        }
        assert!(Instant::now() < deadline, "dpos never stood still");
    }
}

/// Committee reads after the term boundary: representative 1 runs epoch 1 with the
/// elected three (weights as its consensus weighs them), the removed representative 0
/// still reports epoch 0, `removed`, and dpos's term-1 set as the already elected next.
async fn check_committee_reads_after_the_term(
    net: &Devnet,
    client: &CityClient,
    reads0: &CityClient,
    rep_ids: &[dag_core::NodeId],
) {
    let c = client.committee().await.unwrap();
    let running = net.rep(1).unwrap().representative().unwrap().committee();
    assert_eq!(c.epoch, 1);
    assert_eq!(c.epoch, running.epoch());
    assert!(c.epoch_first_seq > 0);
    let members: Vec<_> = c.members.iter().map(|m| (m.node_id, m.weight)).collect();
    let expected: Vec<_> = running
        .authorities()
        .iter()
        .map(|a| (a.id, a.stake))
        .collect();
    assert_eq!(members, expected);
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|(id, _)| *id != rep_ids[0]));
    assert_eq!(c.dpos.as_ref().unwrap().term, 1);

    let c0 = reads0.committee().await.unwrap();
    assert!(c0.removed && c0.epoch == 0, "{c0:?}");
    let d0 = c0.dpos.unwrap();
    assert!(d0.next_elected, "dpos is in term {} past epoch 0", d0.term);
    let next0: Vec<_> = d0.next.iter().map(|m| (m.node_id, m.dpos_stake)).collect();
    assert_eq!(next0.len(), 3);
    assert!(next0.iter().all(|(id, _)| *id != rep_ids[0]));
    let slashed = reads0
        .stake(AccountId::from_bytes(*rep_ids[0].as_bytes()))
        .await
        .unwrap();
    let node = slashed.node.unwrap();
    assert!(!node.active && !node.representative, "{node:?}");
}

/// What the rules pay per reward epoch, computed here from the domain's formula (not from
/// dpos): `score × rate × 10` tokens with score = access × 0.2 + memory_GB × 0.0005 +
/// harmony × 0.2 + bandwidth × 0.15 + uptime × 0.15 + (1 − error) × 0.1 + min(stake/100, 2).
/// The inputs here are exact in thousandths of a point.
fn per_epoch_units(m: &dpos::Metrics, rate_tenths: u64) -> u64 {
    let milli = |ppm: u32| u64::from(ppm) / 1_000; // a ppm fraction in thousandths
    let score_milli = milli(m.access_rate_ppm) * 2 / 10
        + u64::from(m.memory_gb) / 2
        + milli(m.harmony_ppm) * 2 / 10
        + milli(m.bandwidth_ppm) * 15 / 100
        + milli(m.uptime_ppm) * 15 / 100
        + (1_000 - milli(m.error_rate_ppm)) / 10;
    // score/1000 points × rate/10 × 10 tokens × TOKEN units.
    score_milli * rate_tenths * TOKEN / 1_000
}

/// Waits for `id`'s verdict on representative `via`: true applied, false refused.
async fn verdict(net: &Devnet, via: usize, id: dag_core::TxId) -> bool {
    let stake = net.rep(via).unwrap().stake().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(v) = stake.verdict(&id) {
            return v;
        }
        assert!(Instant::now() < deadline, "tx {id} never applied");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_nodes_that_hold_committed_stripes_claim_their_rewards() {
    let dir = tempfile::tempdir().unwrap();
    let payer = Keypair::generate();
    let cfg = DevnetConfig {
        reps: 4,
        gateway: false,
        batch_interval_ms: Some(50),
        accounts: vec![(payer.account_id(), 1_000 * TOKEN)],
        ..DevnetConfig::default()
    };
    let net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);
    let client = CityClient::connect(&net.rep(1).unwrap().addr().to_string())
        .await
        .unwrap();
    // The devnet runs the default rules (reward epoch: one day).
    let rules = dpos::DposConfig::default();

    // Two light nodes register with their node keys (the account is the node id). Light 0
    // as its operator would: `city-node stake register --kind light` with the key file
    // (default metrics); light 1 as a full node with reported metrics (the rpc
    // equivalent), to see both rates. Their accounts hold nothing.
    let start_ms = e2e_now_ms();
    let light = net.lights[0].key.clone();
    let full = net.lights[1].key.clone();
    let light_key_file = dir.path().join("light-0.key");
    light.save(&light_key_file).unwrap();
    let cli = StakeCli {
        bin: e2e::workspace_bin("city-node"),
        key: light_key_file,
        node: net.rep(1).unwrap().addr().to_string(),
    };
    let registered = cli.run(0, &["register", "--kind", "light"]).await;
    assert!(
        verdict(&net, 0, registered).await,
        "light node registration refused"
    );
    let metrics = dpos::Metrics {
        access_rate_ppm: 500_000,
        memory_gb: 8,
        uptime_ppm: 1_000_000,
        error_rate_ppm: 20_000,
        ..dpos::Metrics::default()
    };
    apply(
        &net,
        &client,
        sys(
            &full,
            0,
            SystemPayload::RegisterNode {
                kind: dpos::NodeKind::Full,
                metrics,
            },
        ),
    )
    .await;

    // Ordinary txs: held on the light nodes, ordered and committed. Nobody in the test records contributions: the representative
    // that placed a committed stripe reports its holders' receipts.
    for n in 0..6u64 {
        let tx = dag_core::Tx::fresh(
            payer.account_id(),
            AccountId::from_bytes([7; 32]),
            TOKEN,
            n,
            1_767_225_600_000 + n,
            CityId::new(CITY).unwrap(),
            dag_core::Position::from_degrees(35.6895, 139.6917).unwrap(),
            dag_core::PositionMethod::Gps,
        );
        let s = client
            .submit_retrying(&pqc::sign_tx(tx, &payer), &e2e::WALLET_RETRY)
            .await
            .unwrap();
        assert_eq!(s.state, TxState::Held, "{s:?}");
    }
    let stake0 = net.rep(0).unwrap().stake().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(40);
    while stake0
        .read(|s| {
            s.accrued_rewards(&light.account_id()) == 0
                || s.accrued_rewards(&full.account_id()) == 0
        })
        .unwrap()
    {
        assert!(Instant::now() < deadline, "no contribution recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end_ms = e2e_now_ms();
    // One payment per (holder, reward epoch): the epochs the test ran in that were rewarded.
    let epochs = |a: AccountId| {
        stake0
            .read(|s| {
                (rules.epoch_of(start_ms)..=rules.epoch_of(end_ms))
                    .filter(|e| s.was_rewarded(&a, *e))
                    .count() as u64
            })
            .unwrap()
    };
    let light_per_epoch = per_epoch_units(&dpos::Metrics::default(), 10);
    let full_per_epoch = per_epoch_units(&metrics, 15);
    assert_eq!(light_per_epoch, TOKEN, "0.1 point (no errors) × 1.0 × 10");
    assert_eq!(full_per_epoch, 5_280_000, "0.352 points × 1.5 × 10");
    let light_due = light_per_epoch * epochs(light.account_id());
    let full_due = full_per_epoch * epochs(full.account_id());
    assert!(light_due > 0 && full_due > 0);
    assert_eq!(
        stake0
            .read(|s| s.accrued_rewards(&light.account_id()))
            .unwrap(),
        light_due
    );
    assert_eq!(
        stake0
            .read(|s| s.accrued_rewards(&full.account_id()))
            .unwrap(),
        full_due
    );

    // The light node's operator claims with `city-node stake claim` and its key file: the
    // ledger balance rises by what the rules computed, on every representative.
    let ledgers: Vec<_> = (0..4)
        .map(|i| {
            let exec = net.rep(i).unwrap().node().execution().unwrap().clone();
            exec.ledger().unwrap().clone()
        })
        .collect();
    let bal = |i: usize, a: AccountId| ledgers[i].account(&a).unwrap().map_or(0, |x| x.balance);
    assert_eq!(bal(0, light.account_id()), 0);
    // `city-node stake show --json` reads what dpos holds for the light node (its key
    // file's account): the accrued rewards, its node record; the same JSON as the gateway.
    let shown: serde_json::Value =
        serde_json::from_str(&cli.read(&["show", "--json"]).await).unwrap();
    assert_eq!(shown["account"], light.account_id().to_hex());
    assert_eq!(shown["rewards"], light_due, "{shown}");
    assert_eq!(shown["node"]["kind"], "light");
    assert_eq!(shown["balance"], 0);
    let claim = cli.run(1, &["claim"]).await;
    assert!(verdict(&net, 0, claim).await, "the claim was refused");
    let deadline = Instant::now() + Duration::from_secs(40);
    for i in 0..4 {
        while bal(i, light.account_id()) != light_due {
            assert!(
                Instant::now() < deadline,
                "representative {i}: balance {} after the claim",
                bal(i, light.account_id())
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    assert_eq!(
        stake0
            .read(|s| s.accrued_rewards(&light.account_id()))
            .unwrap(),
        0
    );
    // The human form after the claim, read from representative 1 once its dpos state
    // holds the claim (its ledger was written before).
    assert!(verdict(&net, 1, claim).await);
    let shown = cli.read(&["show"]).await;
    assert!(shown.contains("rewards: 0\n"), "{shown}");
    assert!(
        shown.contains(&format!("balance: {light_due}\n")),
        "{shown}"
    );
    let committee = cli.read(&["committee"]).await;
    assert!(committee.starts_with("epoch: 0 "), "{committee}");
    assert!(committee.contains("members: 4\n"), "{committee}");
    for i in 0..4 {
        let id = net.rep_key(i).unwrap().node_id();
        assert!(
            committee.contains(&format!("  {id} weight ")),
            "{committee}"
        );
    }
    // A second claim pays nothing: admitted, then refused by the rules (nothing to claim),
    // a no-op on every representative.
    let again = cli.run(2, &["claim"]).await;
    for i in 0..4 {
        assert!(
            !verdict(&net, i, again).await,
            "representative {i} paid twice"
        );
    }
    for i in 0..4 {
        assert_eq!(bal(i, light.account_id()), light_due, "representative {i}");
    }

    // Every representative, every checkpoint: the same dpos root.
    let upto = (0..4)
        .map(|i| net.rep(i).unwrap().stake().unwrap().next_seq())
        .min()
        .unwrap();
    for seq in 0..upto {
        let root = stake0.root_at(seq).unwrap().unwrap();
        for i in 1..4 {
            let other = net.rep(i).unwrap().stake().unwrap().root_at(seq).unwrap();
            assert_eq!(other, Some(root), "representative {i}, checkpoint {seq}");
        }
    }
    net.shutdown().await.unwrap();
}

/// `city-node stake` run as an operator would, with a key file.
struct StakeCli {
    bin: std::path::PathBuf,
    key: std::path::PathBuf,
    node: String,
}

impl StakeCli {
    /// Runs `city-node stake <read…>` (`show`, `committee`) with the key file; it must
    /// succeed. Returns what it printed.
    async fn read(&self, read: &[&str]) -> String {
        let mut c = std::process::Command::new(&self.bin);
        c.arg("stake")
            .arg("--key")
            .arg(&self.key)
            .args(["--node", &self.node])
            .args(read);
        let out = tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{read:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs `city-node stake --nonce <nonce> <op…>`; it must succeed (admitted). Returns
    /// the tx id it prints.
    async fn run(&self, nonce: u64, op: &[&str]) -> dag_core::TxId {
        let (bin, key, node) = (self.bin.clone(), self.key.clone(), self.node.clone());
        let op: Vec<String> = op.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let op: Vec<&str> = op.iter().map(String::as_str).collect();
            e2e::stake_cli(&bin, &key, &node, CITY, nonce, &op)
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn e2e_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

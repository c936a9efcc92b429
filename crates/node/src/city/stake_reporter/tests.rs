//! The sender against a stake store fed by a committer that orders what is submitted; and
//! contribution payloads the rules accept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::city::stake::StakeStore;
use dag_core::{Hash32, NodeId, Receipt, ShardHash, StripeId, VerifiedTx};
use dpos::{DposConfig, NodeKind, Outcome, SignedHeaderDigest, SlashLevel};
use parking_lot::Mutex;
use pqc::MlDsa87;
use std::sync::LazyLock;

const TOKEN: u64 = 1_000_000;

static KEYS: LazyLock<Vec<Keypair>> = LazyLock::new(|| {
    (0..6u8)
        .map(|i| Keypair::from_seed(&[i + 40; 32]).unwrap())
        .collect()
});

fn k(i: usize) -> &'static Keypair {
    &KEYS[i]
}
fn acc(i: usize) -> AccountId {
    k(i).account_id()
}
fn city() -> CityId {
    CityId::new("JP-13").unwrap()
}

/// 0–3 full nodes (representatives), 4 a light node, 5 unregistered.
fn genesis(config: DposConfig) -> dpos::Genesis {
    let mut g = dpos::Genesis {
        config,
        ..dpos::Genesis::default()
    };
    for i in 0..5 {
        let kind = if i < 4 {
            NodeKind::Full
        } else {
            NodeKind::Light
        };
        g.nodes.push((acc(i), kind, dpos::Metrics::default()));
        g.bonds.push(dpos::GenesisBond {
            delegator: acc(i),
            validator: acc(i),
            amount: 100 * TOKEN,
        });
    }
    g
}

/// Orders every admitted tx into its own checkpoint, applied at once.
struct Committer {
    store: Arc<StakeStore>,
    seq: Mutex<u64>,
    admitted: Mutex<Vec<VerifiedTx>>,
}

#[async_trait::async_trait]
impl SystemTxSink for Committer {
    async fn submit(&self, tx: SignedTx) -> std::result::Result<(), rpc::Rejection> {
        let v = tx.verify(&MlDsa87).unwrap();
        self.admitted.lock().push(v.clone());
        let mut seq = self.seq.lock();
        self.store.apply_commit(*seq, 1_000 + *seq, &[v]).unwrap();
        *seq += 1;
        Ok(())
    }
}

#[tokio::test]
async fn a_refused_report_consumes_no_nonce_and_the_next_tx_still_applies() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        StakeStore::open(
            &dir.path().join("stake.redb"),
            genesis(DposConfig::default()),
            Vec::new(),
        )
        .unwrap(),
    );
    store.apply_commit(0, 1_000, &[]).unwrap();
    let sink = Arc::new(Committer {
        store: store.clone(),
        seq: Mutex::new(1),
        admitted: Mutex::new(Vec::new()),
    });
    let cfg = SenderConfig {
        city: city(),
        commit_timeout: Duration::from_secs(30),
    };
    let (otx, mut orx) = mpsc::unbounded_channel();
    // Representative 0 equivocated; 2 and 3 both caught it.
    let evidence = DoubleSignEvidence::new(
        SlashLevel::City,
        SignedHeaderDigest::sign(SlashLevel::City, 3, Hash32([1; 32]), k(0)),
        SignedHeaderDigest::sign(SlashLevel::City, 3, Hash32([2; 32]), k(0)),
    )
    .unwrap();
    let s2 = SystemTxSender::spawn(
        k(2).clone(),
        store.clone(),
        sink.clone(),
        cfg.clone(),
        Some(otx.clone()),
    );
    let s3 = SystemTxSender::spawn(k(3).clone(), store.clone(), sink.clone(), cfg, Some(otx));
    let (etx, erx) = mpsc::unbounded_channel();
    let reporter = spawn_evidence_reporter(erx, s2.queue());
    etx.send(evidence.clone()).unwrap();
    assert!(matches!(orx.recv().await.unwrap(), SendOutcome::Applied(_)));
    assert!(s3.send(SystemPayload::DoubleSign(evidence)));
    assert!(matches!(orx.recv().await.unwrap(), SendOutcome::Refused(_)));
    // 3's refused report left its nonce at 0: its next tx carries 0 and applies.
    assert_eq!(store.next_nonce(&acc(3)).unwrap(), 0);
    assert!(s3.send(SystemPayload::ReportIncident {
        node: acc(1),
        incident: Hash32([9; 32]),
    }));
    assert!(matches!(orx.recv().await.unwrap(), SendOutcome::Applied(_)));
    assert_eq!(store.next_nonce(&acc(3)).unwrap(), 1);
    let slashed = store.read(|s| s.node(&acc(0)).unwrap().suspicion).unwrap();
    assert_eq!(slashed, 100);
    assert_eq!(sink.admitted.lock().len(), 3);
    drop(etx);
    reporter.await.unwrap();
    s2.shutdown().await;
    s3.shutdown().await;
}

fn receipt(holder: &Keypair, time_ms: u64, n: u8) -> SignedReceipt {
    SignedReceipt::sign(
        Receipt {
            stripe_id: StripeId::from_bytes([n; 32]),
            shard_index: u16::from(n),
            shard_hash: ShardHash::from_bytes([n; 32]),
            holder: NodeId::from_public_key(dag_core::Signer::public_key(holder)),
            time_ms,
        },
        holder,
    )
}

#[test]
fn contribution_payloads_are_what_the_rules_accept() {
    let day = dpos::DAY_MS;
    let mut state = dpos::DposState::genesis(genesis(DposConfig {
        claim_window_epochs: 20,
        ..DposConfig::default()
    }))
    .unwrap();
    let now = 30 * day;
    let mut receipts = Vec::new();
    // The light node held shards on 10 days in the window: 10 contributions.
    for d in 0..10u8 {
        receipts.push(receipt(k(4), (20 + u64::from(d)) * day, d));
        // A second receipt the same day counts once.
        receipts.push(receipt(k(4), (20 + u64::from(d)) * day + 5, d + 100));
    }
    receipts.push(receipt(k(1), now, 200)); // a full node, once
    receipts.push(receipt(k(5), now, 201)); // unregistered: left out
    receipts.push(receipt(k(1), 5 * day, 202)); // before the window: left out
    receipts.push(receipt(k(1), now + day, 203)); // from the future: left out
    let payloads = contribution_payloads(&state, &receipts, now);
    let sizes: Vec<usize> = payloads
        .iter()
        .map(|p| match p {
            SystemPayload::RecordContribution { receipts } => receipts.len(),
            _ => panic!("not a contribution"),
        })
        .collect();
    assert_eq!(sizes, vec![8, 3]);
    let mut credits = Vec::new();
    for (n, p) in payloads.iter().enumerate() {
        let tx = dpos::sign_system_tx(p, n as u64, now, city(), k(2));
        match state
            .apply_signed(tx, &MlDsa87, &dpos::ApplyCtx { now_ms: now })
            .unwrap()
        {
            Outcome::Rewarded { credits: c, .. } => credits.extend(c),
            o => panic!("{o:?}"),
        }
    }
    assert_eq!(credits.len(), 11);
    let per = |a: AccountId| credits.iter().find(|c| c.0 == a).unwrap().2;
    // Same score (metrics and stake): full rate 1.5 vs light rate 1.0.
    assert_eq!(per(acc(1)) * 2, per(acc(4)) * 3);
    // Everything is rewarded now: nothing is left to report.
    assert!(contribution_payloads(&state, &receipts, now).is_empty());
}

#[test]
fn one_representative_is_in_charge_and_the_others_wait_their_grace() {
    let day = dpos::DAY_MS;
    let mut state = dpos::DposState::genesis(genesis(DposConfig::default())).unwrap();
    let now = 30 * day + 1_000;
    let epoch = state.config().epoch_of(now);
    let reps: Vec<AccountId> = (0..4).map(acc).collect();
    let charged: Vec<&AccountId> = reps
        .iter()
        .filter(|r| in_charge(&state, r, &acc(4), epoch))
        .collect();
    assert_eq!(charged.len(), 1, "exactly one representative in charge");
    assert!(
        !in_charge(&state, &acc(5), &acc(4), epoch),
        "not a representative"
    );
    let boss = *charged[0];
    let other = *reps.iter().find(|r| **r != boss).unwrap();

    let fill = |p: &mut Pending, state: &dpos::DposState| {
        p.add(state, 10, receipt(k(4), now - 10, 1));
        p.add(state, 11, receipt(k(4), now - 5, 2)); // same holder and epoch: kept once
        p.add(state, 10, receipt(k(5), now - 10, 3)); // unregistered
    };
    let none = std::collections::BTreeSet::new();
    let mut p = Pending::default();
    fill(&mut p, &state);
    assert_eq!(p.len(), 2);
    // A holder that failed a storage challenge is not reported, even by the one in charge;
    // its receipt waits.
    let failed: std::collections::BTreeSet<NodeId> =
        [NodeId::from_public_key(dag_core::Signer::public_key(k(4)))].into();
    assert!(p.due(&state, &boss, 10, now, &failed).is_empty());
    assert_eq!(p.len(), 1);
    fill(&mut p, &state);
    let due = p.due(&state, &boss, 10, now, &none);
    assert_eq!(due.len(), 1);
    assert_eq!(
        due[0].receipt.shard_index, 1,
        "the first receipt seen is reported"
    );
    assert_eq!(p.len(), 1, "the unregistered holder's receipt is dropped");

    let mut q = Pending::default();
    fill(&mut q, &state);
    assert!(
        q.due(&state, &other, 10, now, &none).is_empty(),
        "waits for the one in charge"
    );
    assert!(
        q.due(&state, &other, 10 + GRACE_CHECKPOINTS - 1, now, &none)
            .is_empty()
    );
    assert_eq!(
        q.due(&state, &other, 10 + GRACE_CHECKPOINTS, now, &none)
            .len(),
        1
    );

    // Once the state rewarded the holder for the epoch, nothing is due and nothing waits.
    for payload in contribution_payloads(&state, &due, now) {
        let tx = dpos::sign_system_tx(&payload, 0, now, city(), k(2));
        state
            .apply_signed(tx, &MlDsa87, &dpos::ApplyCtx { now_ms: now })
            .unwrap();
    }
    assert!(state.was_rewarded(&acc(4), epoch));
    assert!(q.due(&state, &other, 100, now, &none).is_empty());
    assert!(q.is_empty());
}

#[test]
fn holders_that_failed_the_newest_audit_epoch_are_the_failed_ones() {
    use crate::city::challenges::{ChallengeResult, ContributionLog, ContributionRecord};
    let dir = tempfile::tempdir().unwrap();
    let log = ContributionLog::open(&dir.path().join("contributions.redb")).unwrap();
    assert!(log.failed_holders().unwrap().is_empty(), "no audit yet");
    let node = |i: u8| NodeId::from_bytes([i; 32]);
    let rec = |epoch, holder, index, result| ContributionRecord {
        epoch,
        holder,
        stripe: StripeId::from_bytes([9; 32]),
        index,
        passed: result == ChallengeResult::Passed,
        result,
    };
    log.append(&[
        rec(4, node(1), 0, ChallengeResult::NotHeld),
        rec(4, node(2), 1, ChallengeResult::Passed),
    ])
    .unwrap();
    log.append(&[
        rec(5, node(1), 0, ChallengeResult::Passed),
        rec(5, node(2), 1, ChallengeResult::WrongProof),
        rec(5, node(3), 2, ChallengeResult::Unreachable),
        rec(5, node(4), 3, ChallengeResult::Passed),
    ])
    .unwrap();
    // Epoch 5 is the newest: 1 passed again, 2 and 3 failed.
    assert_eq!(
        log.failed_holders().unwrap(),
        [node(2), node(3)].into_iter().collect()
    );
}

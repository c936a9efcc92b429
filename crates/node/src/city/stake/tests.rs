//! The stake applier against committed sequences built here: hostile txs are identical
//! no-ops, roots agree across stores, survive a reopen and are reproduced by a replay from
//! genesis; the term switch replaces a slashed representative with the elected newcomer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use dag_core::Signer;
use dpos::{DoubleSignEvidence, DposConfig, SignedHeaderDigest, SlashLevel, SystemPayload};
use pqc::Keypair;
use std::collections::BTreeMap;
use std::sync::LazyLock;

const TOKEN: u64 = 1_000_000;
const TERM_MS: u64 = 10_000;
const LOCK_MS: u64 = 4_000;

/// Four genesis representatives (0–3), a voter (4), a newcomer full node (5), a stranger
/// (6) and a light node (7).
static KEYS: LazyLock<Vec<Keypair>> = LazyLock::new(|| {
    (0..8u8)
        .map(|i| Keypair::from_seed(&[i + 1; 32]).unwrap())
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

fn genesis() -> (dpos::Genesis, Vec<Vec<u8>>) {
    let config = DposConfig {
        term_ms: TERM_MS,
        stake_lock_ms: LOCK_MS,
        ..DposConfig::default()
    };
    let mut g = dpos::Genesis {
        config,
        balances: vec![(acc(4), 1_000 * TOKEN), (acc(5), 500 * TOKEN)],
        ..dpos::Genesis::default()
    };
    for i in 0..4 {
        g.nodes
            .push((acc(i), dpos::NodeKind::Full, dpos::Metrics::default()));
        g.bonds.push(dpos::GenesisBond {
            delegator: acc(i),
            validator: acc(i),
            amount: (40 + 10 * i as u64) * TOKEN,
        });
    }
    let keys = (0..4).map(|i| k(i).public_key().to_vec()).collect();
    (g, keys)
}

fn stx(i: usize, nonce: u64, payload: SystemPayload) -> VerifiedTx {
    dpos::sign_system_tx(&payload, nonce, 0, city(), k(i))
        .verify(&MlDsa87)
        .unwrap()
}

fn open(dir: &Path) -> StakeStore {
    let (g, keys) = genesis();
    StakeStore::open(&dir.join("stake.redb"), g, keys).unwrap()
}

/// A committed sequence: `(seq, at_ms, txs)`.
fn sequence() -> Vec<(u64, u64, Vec<VerifiedTx>)> {
    let delegate = stx(
        4,
        0,
        SystemPayload::Delegate {
            validator: acc(3),
            amount: 300 * TOKEN,
        },
    );
    let fresh = {
        let tx = dpos::system_tx(&SystemPayload::ClaimRewards, acc(6), 0, 0, city())
            .with_kind(TxKind::FreshTx)
            .with_payload(Vec::new());
        pqc::sign_tx(tx, k(6)).verify(&MlDsa87).unwrap()
    };
    // Real double sign by representative 1 at round 7.
    let equivocation = DoubleSignEvidence::new(
        SlashLevel::City,
        SignedHeaderDigest::sign(SlashLevel::City, 7, Hash32([1; 32]), k(1)),
        SignedHeaderDigest::sign(SlashLevel::City, 7, Hash32([2; 32]), k(1)),
    )
    .unwrap();
    // Forged evidence against honest representative 2: the second "signature" is the
    // first one over a different digest.
    let honest = SignedHeaderDigest::sign(SlashLevel::City, 9, Hash32([3; 32]), k(2));
    let forged = DoubleSignEvidence::new(
        SlashLevel::City,
        honest.clone(),
        SignedHeaderDigest {
            digest: Hash32([4; 32]),
            ..honest
        },
    )
    .unwrap();
    vec![
        (
            0,
            1_000,
            vec![
                delegate.clone(),
                // Overdraft.
                stx(
                    4,
                    1,
                    SystemPayload::Delegate {
                        validator: acc(0),
                        amount: 1_000_000 * TOKEN,
                    },
                ),
                // Replay of the first tx.
                delegate,
                // Not dpos's: skipped.
                fresh,
                stx(
                    5,
                    0,
                    SystemPayload::RegisterNode {
                        kind: dpos::NodeKind::Full,
                        metrics: dpos::Metrics::default(),
                    },
                ),
                stx(
                    5,
                    1,
                    SystemPayload::Bond {
                        amount: 200 * TOKEN,
                    },
                ),
            ],
        ),
        (
            1,
            2_000,
            vec![
                // Unbond before the lock ends.
                stx(
                    4,
                    1,
                    SystemPayload::Unbond {
                        validator: acc(3),
                        amount: TOKEN,
                    },
                ),
                // A stranger reports an incident (only representatives may).
                stx(
                    6,
                    0,
                    SystemPayload::ReportIncident {
                        node: acc(0),
                        incident: Hash32([5; 32]),
                    },
                ),
                // A consensus endpoint from an account that is no registered full node.
                stx(
                    6,
                    0,
                    SystemPayload::SetEndpoint {
                        address: "10.0.0.6:7700".into(),
                    },
                ),
                // Evidence against an honest node, then real evidence (by a representative
                // that saw it), then the same evidence again.
                stx(0, 0, SystemPayload::DoubleSign(forged)),
                stx(0, 0, SystemPayload::DoubleSign(equivocation.clone())),
                stx(3, 0, SystemPayload::DoubleSign(equivocation)),
                // Claim with nothing accrued.
                stx(4, 1, SystemPayload::ClaimRewards),
                // The full node registered at checkpoint 0 publishes its endpoint.
                stx(
                    5,
                    2,
                    SystemPayload::SetEndpoint {
                        address: "10.0.0.5:7700".into(),
                    },
                ),
            ],
        ),
        (2, 9_999, vec![]),
        // The term (10 s from checkpoint 0's time, 1 000) ends here.
        (3, 11_000, vec![]),
        // The lock (4 s from 1 000) is over: the voter takes 100 back.
        (
            4,
            12_000,
            vec![stx(
                4,
                1,
                SystemPayload::Unbond {
                    validator: acc(3),
                    amount: 100 * TOKEN,
                },
            )],
        ),
    ]
}

fn apply_all(store: &StakeStore, seq: &[(u64, u64, Vec<VerifiedTx>)]) -> Vec<CommitReport> {
    seq.iter()
        .map(|(s, at, txs)| store.apply_commit(*s, *at, txs).unwrap())
        .collect()
}

#[test]
fn hostile_sequence_is_deterministic_durable_and_replays_to_the_same_roots() {
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let seq = sequence();
    let a = open(da.path());
    assert_eq!(a.root(), None, "no state before checkpoint 0");
    let ra = apply_all(&a, &seq);
    let rb = apply_all(&open(db.path()), &seq);
    // Every representative reports the same root at every checkpoint.
    let roots: Vec<Hash32> = ra.iter().map(|r| r.root).collect();
    assert_eq!(roots, rb.iter().map(|r| r.root).collect::<Vec<_>>());
    assert_eq!(
        ra.iter().map(|r| r.rejected.clone()).collect::<Vec<_>>(),
        rb.iter().map(|r| r.rejected.clone()).collect::<Vec<_>>()
    );
    // Each hostile tx is a typed no-op.
    let reasons: Vec<String> = ra[0]
        .rejected
        .iter()
        .chain(&ra[1].rejected)
        .map(|(_, e)| format!("{e:?}"))
        .collect();
    for (i, want) in [
        "InsufficientBalance",
        "BadNonce",
        "StakeLocked",
        "NotRepresentative",
        "NotFullNode",
        "EvidenceSignature",
        "EvidenceReplayed",
        "NothingToClaim",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            reasons[i].starts_with(want),
            "rejection {i}: {}",
            reasons[i]
        );
    }
    assert_eq!(ra[0].applied.len(), 3, "delegate, register, bond");
    assert!(matches!(ra[1].applied[0].1, Outcome::Slashed { .. }));
    assert!(matches!(ra[1].applied[1].1, Outcome::EndpointSet { .. }));
    assert_eq!(
        a.endpoints()
            .unwrap()
            .get(&dag_core::NodeId::from_bytes(*acc(5).as_bytes())),
        Some(&"10.0.0.5:7700".to_string())
    );
    // Roots change only when the state does.
    assert_ne!(roots[0], roots[1]);
    assert_eq!(
        roots[1], roots[2],
        "an empty checkpoint before the term end"
    );
    assert_ne!(roots[2], roots[3], "the term switch changes the state");
    for (i, r) in roots.iter().enumerate() {
        assert_eq!(a.root_at(i as u64).unwrap(), Some(*r));
    }
    // Replays answer the recorded root and change nothing.
    let again = a.apply_commit(1, 2_000, &seq[1].2).unwrap();
    assert!(again.replay);
    assert_eq!(again.root, roots[1]);
    assert_eq!(a.root(), Some(roots[4]));
    // A skipped checkpoint is refused.
    assert!(matches!(
        a.apply_commit(6, 13_000, &[]),
        Err(Error::Stake(StakeError::Gap {
            seq: 6,
            expected: 5
        }))
    ));
    // Reopened from disk: same state, and it keeps going like a store that never stopped.
    drop(a);
    let a = open(da.path());
    assert_eq!((a.next_seq(), a.root()), (5, Some(roots[4])));
    // Replaying the committed sequence from genesis reproduces every root.
    let c = open(dc.path());
    let rc = apply_all(&c, &seq);
    assert_eq!(rc.iter().map(|r| r.root).collect::<Vec<_>>(), roots);
    let next = (5, 13_000, vec![]);
    assert_eq!(
        a.apply_commit(next.0, next.1, &next.2).unwrap().root,
        c.apply_commit(next.0, next.1, &next.2).unwrap().root
    );
}

#[test]
fn term_switch_replaces_the_slashed_representative_with_the_elected_one() {
    let d = tempfile::tempdir().unwrap();
    let store = open(d.path());
    let reports = apply_all(&store, &sequence());
    let elected: Vec<_> = reports.iter().filter_map(|r| r.elected.clone()).collect();
    assert_eq!(elected.len(), 1, "exactly one switch");
    let (term, reps) = &elected[0];
    assert_eq!(*term, 1);
    assert_eq!(reports[3].elected.as_ref().map(|e| e.0), Some(1));
    // 1 double-signed (inactive); 5 registered and bonded 200; 3 got 300 of votes.
    assert_eq!(reps, &vec![acc(3), acc(5), acc(2), acc(0)]);
    let committee = store.committee().unwrap();
    let ids: Vec<AccountId> = committee
        .authorities()
        .iter()
        .map(|a| AccountId::from_bytes(*a.id.as_bytes()))
        .collect();
    assert_eq!(ids, *reps);
    assert!(!ids.contains(&acc(1)), "the slashed representative left");
    // Stake weights are the bonded stake (3: 70 own + 300 votes − 100 unbonded).
    assert_eq!(committee.authorities()[0].stake, 270 * TOKEN);
    assert_eq!(
        store.read(|s| s.stake_of(&acc(1))).unwrap(),
        25 * TOKEN,
        "slashed 50 %"
    );
    assert!(matches!(reports[4].applied[0].1, Outcome::Unbonded { .. }));
}

#[test]
fn committee_needs_every_elected_key() {
    let d = tempfile::tempdir().unwrap();
    let (g, mut keys) = genesis();
    keys.pop(); // representative 3's key unknown
    let store = StakeStore::open(&d.path().join("stake.redb"), g, keys).unwrap();
    assert!(matches!(
        store.committee(),
        Err(Error::Stake(StakeError::NotStarted))
    ));
    store.apply_commit(0, 1_000, &[]).unwrap();
    assert!(matches!(
        store.committee(),
        Err(Error::Stake(StakeError::UnknownKey(a))) if a == acc(3)
    ));
}

#[test]
fn bad_genesis_is_refused_at_open() {
    let d = tempfile::tempdir().unwrap();
    let (mut g, keys) = genesis();
    g.config.representatives = 0;
    assert!(matches!(
        StakeStore::open(&d.path().join("stake.redb"), g, keys),
        Err(Error::Stake(StakeError::Genesis(_)))
    ));
}

// ---------------------------------------------------------------- liquid balances in the ledger

fn ledger_at(dir: &Path) -> Arc<ledger::Ledger> {
    let alloc: BTreeMap<AccountId, u64> = [(acc(4), 1_000 * TOKEN), (acc(5), 500 * TOKEN)]
        .into_iter()
        .collect();
    Arc::new(
        ledger::Ledger::open(
            &dir.join("ledger.redb"),
            &alloc,
            ledger::LedgerConfig::default(),
        )
        .unwrap(),
    )
}

fn ledger_genesis() -> (dpos::Genesis, Vec<Vec<u8>>) {
    let (mut g, keys) = genesis();
    g.balances.clear(); // liquid balances are the ledger's
    (g, keys)
}

fn liquid(l: &ledger::Ledger, a: AccountId) -> u64 {
    l.account(&a).unwrap().map_or(0, |x| x.balance)
}

#[test]
fn bonds_debit_the_ledger_in_the_same_checkpoint_write_and_a_crash_between_is_finished() {
    let seq = sequence();
    let run = |dir: &Path| {
        let ledger = ledger_at(dir);
        let (g, keys) = ledger_genesis();
        let stake = Arc::new(StakeStore::open(&dir.join("stake.redb"), g, keys).unwrap());
        (
            DposApplier {
                stake,
                ledger: ledger.clone(),
            },
            ledger,
        )
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, la) = run(d1.path());
    let mut roots = Vec::new();
    for (s, at, txs) in &seq {
        roots.push(a.apply(*s, *at, txs).unwrap());
        // The ledger's own applier then finds the checkpoint applied.
        let lr = la.root_after(*s).unwrap().unwrap();
        assert_eq!(CommitApplier::apply(la.as_ref(), *s, *at, txs).unwrap(), lr);
    }
    // Voter: 1 000 − 300 delegated (the overdraft moved nothing) + 0 (unbonded, not yet
    // withdrawn). Newcomer: 500 − 200 bonded.
    assert_eq!(liquid(&la, acc(4)), 700 * TOKEN);
    assert_eq!(liquid(&la, acc(5)), 300 * TOKEN);
    let supply = a.stake.read(|s| s.supply()).unwrap();
    assert_eq!(supply.deposited, 500 * TOKEN);
    assert_eq!(
        a.stake.read(|s| s.balance(&acc(4))).unwrap(),
        0,
        "dpos holds no liquid"
    );

    // A replica that crashes after the ledger committed checkpoint 1 (with dpos's moves)
    // and before dpos recorded it.
    let (b, lb) = run(d2.path());
    b.apply(0, seq[0].1, &seq[0].2).unwrap();
    {
        let inner = b.stake.inner.lock();
        lb.apply_with(1, seq[1].1, &seq[1].2, |book| {
            let mut book = LedgerBook {
                inner: book,
                failure: std::cell::RefCell::new(None),
            };
            let p = b
                .stake
                .prepare(&inner, 1, seq[1].1, &seq[1].2, Some(&mut book))
                .unwrap();
            b.stake.write_pending(&p).unwrap();
            Ok(())
        })
        .unwrap();
    }
    drop(b);
    let (b, lb) = (
        DposApplier {
            stake: Arc::new({
                let (g, keys) = ledger_genesis();
                StakeStore::open(&d2.path().join("stake.redb"), g, keys).unwrap()
            }),
            ledger: lb.clone(),
        },
        lb,
    );
    assert_eq!((b.next_seq(), lb.next_seq()), (1, 2));
    for (s, at, txs) in &seq[1..] {
        assert_eq!(
            b.apply(*s, *at, txs).unwrap(),
            roots[*s as usize],
            "seq {s}"
        );
    }
    assert_eq!(liquid(&lb, acc(4)), 700 * TOKEN);
    // A gap is the feed's typed error.
    assert!(matches!(
        b.apply(9, 20_000, &[]),
        Err(ApplyError::Gap {
            name: "dpos",
            seq: 9,
            expected: 5
        })
    ));
}

#[test]
fn ledger_ahead_without_a_pending_result_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let ledger = ledger_at(d.path());
    let (g, keys) = ledger_genesis();
    let a = DposApplier {
        stake: Arc::new(StakeStore::open(&d.path().join("stake.redb"), g, keys).unwrap()),
        ledger: ledger.clone(),
    };
    // The ledger applied checkpoint 0 by itself (dpos never ran it).
    CommitApplier::apply(ledger.as_ref(), 0, 1_000, &[]).unwrap();
    let e = a.apply(0, 1_000, &[]).unwrap_err();
    assert!(e.to_string().contains("no pending result"), "{e}");
}

#[test]
fn dpos_rules_come_from_the_city_config_toml() {
    let cfg: crate::CityConfig = toml::from_str("[dpos]\nterm_ms = 5000\n").unwrap();
    assert_eq!(cfg.dpos.term_ms, 5_000);
    assert_eq!(cfg.dpos.representatives, 4, "3f + 1 by default");
    assert!(toml::from_str::<crate::CityConfig>("[dpos]\nterm = 5\n").is_err());
}

// ---------------------------------------------------------------- one nonce across kinds

fn fresh(i: usize, to: AccountId, amount: u64, nonce: u64) -> VerifiedTx {
    pqc::sign_tx(
        dag_core::Tx::fresh(
            acc(i),
            to,
            amount,
            nonce,
            1_767_225_600_000,
            city(),
            dag_core::Position::from_degrees(35.6895, 139.6917).unwrap(),
            dag_core::PositionMethod::Gps,
        ),
        k(i),
    )
    .verify(&MlDsa87)
    .unwrap()
}

#[test]
fn one_nonce_per_account_across_transfers_and_staking() {
    let d = tempfile::tempdir().unwrap();
    let ledger = ledger_at(d.path());
    let (g, keys) = ledger_genesis();
    let stake = Arc::new(StakeStore::open(&d.path().join("stake.redb"), g, keys).unwrap());
    stake.use_ledger_nonces(ledger.clone());
    let a = DposApplier {
        stake: stake.clone(),
        ledger: ledger.clone(),
    };
    let bond = |i: usize, nonce| {
        stx(
            i,
            nonce,
            SystemPayload::Delegate {
                validator: acc(3),
                amount: 100 * TOKEN,
            },
        )
    };
    let outcome = |tx: &VerifiedTx| ledger.outcome(&tx.id()).unwrap().map(|(_, o)| o);
    let mut seq = 0u64;
    let mut commit = |txs: &[VerifiedTx]| {
        let r = stake
            .apply_commit_with_ledger(&ledger, seq, 1_000 + seq, txs)
            .unwrap();
        assert_eq!(CommitApplier::next_seq(&a), seq + 1);
        seq += 1;
        r
    };

    // Voter (4), one kind per checkpoint: transfer 0, stake 1, transfer 2 all execute.
    let t0 = fresh(4, acc(6), 10 * TOKEN, 0);
    commit(std::slice::from_ref(&t0));
    assert_eq!(outcome(&t0), Some(ledger::Outcome::Applied));
    assert_eq!(stake.next_nonce(&acc(4)).unwrap(), 1);
    let s1 = bond(4, 1);
    let r = commit(std::slice::from_ref(&s1));
    assert_eq!(r.applied.len(), 1, "{:?}", r.rejected);
    assert_eq!(stake.next_nonce(&acc(4)).unwrap(), 2);
    let t2 = fresh(4, acc(6), 10 * TOKEN, 2);
    commit(std::slice::from_ref(&t2));
    assert_eq!(outcome(&t2), Some(ledger::Outcome::Applied));
    assert_eq!(stake.next_nonce(&acc(4)).unwrap(), 3);
    assert_eq!(liquid(&ledger, acc(4)), (1_000 - 10 - 100 - 10) * TOKEN);

    // A nonce reused across kinds is refused either way, and moves nothing.
    let stake_again = bond(4, 2); // used by the transfer t2
    let transfer_again = fresh(4, acc(6), TOKEN, 1); // used by the bond s1
    let r = commit(&[transfer_again.clone(), stake_again.clone()]);
    assert!(r.applied.is_empty());
    assert!(matches!(
        r.rejected.as_slice(),
        [(id, dpos::Error::NonceReused { nonce: 2, .. })] if *id == stake_again.id()
    ));
    assert_eq!(
        outcome(&transfer_again),
        Some(ledger::Outcome::Failed(ledger::FailReason::NonceReused {
            nonce: 1
        }))
    );
    assert_eq!(liquid(&ledger, acc(4)), (1_000 - 120) * TOKEN);

    // Newcomer (5), all three kinds in one checkpoint: transfers execute first, then the
    // system tx, and none takes another's nonce.
    let batch = [
        fresh(5, acc(6), TOKEN, 0),
        bond(5, 1),
        fresh(5, acc(6), TOKEN, 2),
    ];
    let r = commit(&batch);
    assert_eq!(r.applied.len(), 1, "{:?}", r.rejected);
    assert_eq!(outcome(&batch[0]), Some(ledger::Outcome::Applied));
    assert_eq!(outcome(&batch[2]), Some(ledger::Outcome::Applied));
    assert_eq!(stake.next_nonce(&acc(5)).unwrap(), 3);
    assert_eq!(liquid(&ledger, acc(5)), (500 - 2 - 100) * TOKEN);
    // dpos kept no nonce of its own.
    assert_eq!(stake.read(|s| s.next_nonce(&acc(4))).unwrap(), 0);
}

//! The persisted ledger: genesis, execution of signed transfers in commit order,
//! idempotence per checkpoint, restart, supply conservation and the balance hooks.

#![allow(clippy::unwrap_used)]

mod cross_ledger;
mod cross_sim;

use dag_core::consensus::{TestSigner, TestVerifier};
use dag_core::execution::{ApplyError, CommitApplier};
use dag_core::{
    AccountId, CityId, Position, PositionMethod, SignedTx, Signer, Tx, TxKind, VerifiedTx,
};
use ledger::{Error, FailReason, Ledger, LedgerConfig, Outcome, account_object};
use std::collections::BTreeMap;

fn account(s: &TestSigner) -> AccountId {
    AccountId::from_public_key(s.public_key())
}

fn transfer(from: &TestSigner, to: AccountId, amount: u64, nonce: u64) -> VerifiedTx {
    let tx = Tx::fresh(
        account(from),
        to,
        amount,
        nonce,
        1_767_225_600_000,
        CityId::new("JP-13").unwrap(),
        Position::from_degrees(35.6895, 139.6917).unwrap(),
        PositionMethod::Gps,
    );
    sign(tx, from)
}

fn sign(tx: Tx, from: &TestSigner) -> VerifiedTx {
    let id = tx.id();
    let signature = from.sign(&Tx::signing_message(&id));
    SignedTx {
        tx,
        public_key: from.public_key().to_vec(),
        signature,
    }
    .verify(&TestVerifier)
    .unwrap()
}

fn setup(n: u64, balance: u64) -> (Vec<TestSigner>, BTreeMap<AccountId, u64>) {
    let users: Vec<TestSigner> = (0..n).map(TestSigner::new).collect();
    let alloc = users.iter().map(|u| (account(u), balance)).collect();
    (users, alloc)
}

#[test]
fn executes_in_order_persists_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let (u, alloc) = setup(3, 100);
    let stranger = AccountId::from_bytes([0xee; 32]);
    let l = Ledger::open(&path, &alloc, LedgerConfig::default()).unwrap();
    assert_eq!(l.next_seq(), 0);
    assert_eq!(l.total_supply().unwrap(), 300);

    let t0 = transfer(&u[0], account(&u[1]), 70, 0);
    let t1 = transfer(&u[0], stranger, 50, 1); // only 30 left
    let t2 = transfer(&u[1], stranger, 20, 0); // new account created on credit
    let r0 = l
        .apply(0, 1_000, &[t0.clone(), t1.clone(), t2.clone()])
        .unwrap();
    assert_eq!(l.outcome(&t0.id()).unwrap(), Some((0, Outcome::Applied)));
    assert_eq!(
        l.outcome(&t1.id()).unwrap(),
        Some((
            0,
            Outcome::Failed(FailReason::InsufficientFunds {
                balance: 30,
                amount: 50
            })
        ))
    );
    assert_eq!(l.account(&stranger).unwrap().unwrap().balance, 20);
    assert_eq!(l.account(&account(&u[1])).unwrap().unwrap().balance, 150);
    assert_eq!(l.account(&account(&u[0])).unwrap().unwrap().next_nonce, 1);
    assert_eq!(l.total_supply().unwrap(), 300);

    // Idempotent per sequence; a gap is refused; a repeated tx id executes once.
    assert_eq!(l.apply(0, 1_000, &[]).unwrap(), r0);
    assert!(matches!(
        l.apply(2, 1_000, &[]),
        Err(ApplyError::Gap { expected: 1, .. })
    ));
    let r1 = l.apply(1, 2_000, std::slice::from_ref(&t0)).unwrap();
    assert_eq!(l.outcome(&t0.id()).unwrap(), Some((0, Outcome::Applied)));
    assert_ne!(r1, r0);
    // A new tx reusing an applied (sender, nonce) fails.
    let replay = transfer(&u[0], account(&u[2]), 1, 0);
    l.apply(2, 3_000, std::slice::from_ref(&replay)).unwrap();
    assert_eq!(
        l.outcome(&replay.id()).unwrap().unwrap().1,
        Outcome::Failed(FailReason::NonceReused { nonce: 0 })
    );
    drop(l);

    // Reopen: resumes at 3 with the same roots; another allocation is refused.
    let l = Ledger::open(&path, &alloc, LedgerConfig::default()).unwrap();
    assert_eq!(l.next_seq(), 3);
    assert_eq!(l.root_after(0).unwrap(), Some(r0));
    let mut other = alloc.clone();
    other.insert(stranger, 1);
    drop(l);
    assert!(matches!(
        Ledger::open(&path, &other, LedgerConfig::default()),
        Err(Error::GenesisMismatch { .. })
    ));
}

#[test]
fn equal_histories_give_equal_roots_and_different_ones_do_not() {
    let (u, alloc) = setup(4, 1_000);
    let txs: Vec<VerifiedTx> = (0..200u64)
        .map(|i| {
            transfer(
                &u[(i % 4) as usize],
                account(&u[((i + 1) % 4) as usize]),
                i,
                i,
            )
        })
        .collect();
    let run = |threads: usize, parallel_min: usize, txs: &[VerifiedTx]| {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(
            &dir.path().join("l.redb"),
            &alloc,
            LedgerConfig {
                threads,
                parallel_min,
                ..LedgerConfig::default()
            },
        )
        .unwrap();
        let mut root = l.genesis_root();
        for (seq, chunk) in txs.chunks(50).enumerate() {
            root = l.apply(seq as u64, seq as u64, chunk).unwrap();
        }
        assert_eq!(l.total_supply().unwrap(), 4_000);
        root
    };
    let a = run(1, usize::MAX, &txs);
    assert_eq!(a, run(2, 1, &txs), "parallel equals sequential");
    let mut swapped = txs.clone();
    swapped.swap(10, 11);
    assert_ne!(a, run(2, 1, &swapped), "another order is another history");
}

#[test]
fn declared_sets_are_bound_to_sender_and_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let (u, alloc) = setup(2, 100);
    let l = Ledger::open(&dir.path().join("l.redb"), &alloc, LedgerConfig::default()).unwrap();
    let to = account(&u[1]);
    let mk = |ws: Vec<dag_core::ObjectId>, nonce| {
        let mut tx = transfer(&u[0], to, 10, nonce).tx().clone();
        tx = tx.with_write_set(ws);
        sign(tx, &u[0])
    };
    let good = mk(
        vec![account_object(&account(&u[0])), account_object(&to)],
        0,
    );
    let bad = mk(vec![account_object(&account(&u[0]))], 1);
    l.apply(0, 0, &[good.clone(), bad.clone()]).unwrap();
    assert_eq!(l.outcome(&good.id()).unwrap().unwrap().1, Outcome::Applied);
    assert_eq!(
        l.outcome(&bad.id()).unwrap().unwrap().1,
        Outcome::Failed(FailReason::SetsDoNotCover {
            missing: account_object(&to)
        })
    );
    assert_eq!(l.account(&to).unwrap().unwrap().balance, 110);
}

#[test]
fn other_kinds_are_not_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let (u, alloc) = setup(1, 100);
    let l = Ledger::open(&dir.path().join("l.redb"), &alloc, LedgerConfig::default()).unwrap();
    let mut tx = transfer(&u[0], AccountId::from_bytes([1; 32]), 10, 0)
        .tx()
        .clone();
    tx.kind = TxKind::SystemTx;
    let sys = sign(tx, &u[0]);
    l.apply(0, 0, std::slice::from_ref(&sys)).unwrap();
    assert_eq!(l.outcome(&sys.id()).unwrap(), None);
    assert_eq!(l.account(&account(&u[0])).unwrap().unwrap().balance, 100);
}

#[test]
fn balance_hooks_are_atomic_with_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (u, alloc) = setup(2, 100);
    let (a, b) = (account(&u[0]), account(&u[1]));
    let l = Ledger::open(&dir.path().join("l.redb"), &alloc, LedgerConfig::default()).unwrap();
    let t = transfer(&u[0], b, 40, 0);
    // A hook that overdraws applies nothing, not even the transfer.
    let e = l
        .apply_with(0, 0, std::slice::from_ref(&t), |bal| bal.debit(&a, 61))
        .unwrap_err();
    assert!(matches!(
        e,
        Error::Insufficient {
            balance: 60,
            amount: 61,
            ..
        }
    ));
    assert_eq!(l.next_seq(), 0);
    assert_eq!(l.outcome(&t.id()).unwrap(), None);
    assert_eq!(l.account(&a).unwrap().unwrap().balance, 100);
    // A hook that moves money sees the transfer's effects and is part of the root.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Ledger::open(
        &plain_dir.path().join("l.redb"),
        &alloc,
        LedgerConfig::default(),
    )
    .unwrap();
    let r_plain = plain.apply(0, 0, std::slice::from_ref(&t)).unwrap();
    let r = l
        .apply_with(0, 0, std::slice::from_ref(&t), |bal| {
            assert_eq!(bal.balance(&a)?, 60);
            bal.debit(&a, 10)?;
            bal.credit(&b, 10)
        })
        .unwrap();
    assert_ne!(r, r_plain);
    assert_eq!(l.account(&a).unwrap().unwrap().balance, 50);
    assert_eq!(l.account(&b).unwrap().unwrap().balance, 150);
    assert_eq!(l.total_supply().unwrap(), 200);
}

#[test]
fn nonces_consumed_by_other_state_machines_are_the_accounts_nonces() {
    let dir = tempfile::tempdir().unwrap();
    let (u, alloc) = setup(2, 100);
    let (a, b) = (account(&u[0]), account(&u[1]));
    let l = Ledger::open(&dir.path().join("l.redb"), &alloc, LedgerConfig::default()).unwrap();
    let system_tx = dag_core::TxId::from_bytes([9; 32]);
    // Checkpoint 0: a transfer at nonce 0, then (the hook) a staking request at nonce 1.
    let t0 = transfer(&u[0], b, 10, 0);
    l.apply_with(0, 0, std::slice::from_ref(&t0), |bal| {
        assert!(
            bal.nonce_used(&a, 0)?,
            "the transfer's nonce, same checkpoint"
        );
        assert!(!bal.nonce_used(&a, 1)?);
        bal.use_nonce(&a, 1, &system_tx)
    })
    .unwrap();
    assert_eq!(l.account(&a).unwrap().unwrap().next_nonce, 2);
    // Checkpoint 1: a transfer reusing the staking request's nonce fails.
    let t1 = transfer(&u[0], b, 10, 1);
    l.apply(1, 1, std::slice::from_ref(&t1)).unwrap();
    assert_eq!(
        l.outcome(&t1.id()).unwrap().unwrap().1,
        Outcome::Failed(FailReason::NonceReused { nonce: 1 })
    );
    // Checkpoint 2: a hook reusing the transfer's nonce is refused and applies nothing.
    let t2 = transfer(&u[0], b, 10, 2);
    let e = l
        .apply_with(2, 2, std::slice::from_ref(&t2), |bal| {
            bal.use_nonce(&a, 0, &system_tx)
        })
        .unwrap_err();
    assert!(matches!(e, Error::NonceReused { nonce: 0, .. }), "{e}");
    assert_eq!(l.next_seq(), 2);
    assert_eq!(l.outcome(&t2.id()).unwrap(), None);
    assert_eq!(l.account(&a).unwrap().unwrap().balance, 90);
}

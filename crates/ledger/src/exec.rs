//! Pure execution of a checkpoint's transfers over an in-memory snapshot: sequentially,
//! or in parallel by object sets on a bounded rayon pool. Both give the same effects (the
//! property tests check it): transfers whose footprints overlap run in commit order, the
//! others run side by side.

use crate::transfer::{Account, FailReason, Outcome, Transfer, check_sets};
use dag_core::{AccountId, ObjectId, TxId};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The state a checkpoint's execution reads: every account its transfers touch (absent =
/// a new, empty account), which (sender, nonce) pairs were applied, which tx ids already
/// have an outcome.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Accounts by id (only the touched ones need to be present).
    pub accounts: HashMap<AccountId, Account>,
    /// Applied (sender, nonce) pairs among the touched senders.
    pub used_nonces: HashSet<(AccountId, u64)>,
    /// Tx ids that already have an outcome (a tx committed twice executes once).
    pub decided: HashSet<TxId>,
}

/// What executing a checkpoint changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// One outcome per executed transfer, in commit order (repeated ids skipped).
    pub outcomes: Vec<(TxId, Outcome)>,
    /// The final state of every account written, by id.
    pub accounts: BTreeMap<AccountId, Account>,
    /// (sender, nonce, tx) of every applied transfer, in commit order.
    pub nonces: Vec<(AccountId, u64, TxId)>,
}

/// The writes of one transfer.
struct Step {
    outcome: Outcome,
    writes: Vec<(AccountId, Account)>,
    nonce: Option<(AccountId, u64)>,
}

/// Executes one transfer against `get` (account state) and `used` (nonce applied?).
fn step(
    t: &Transfer,
    get: impl Fn(&AccountId) -> Account,
    used: impl Fn(&AccountId, u64) -> bool,
) -> Step {
    let fail = |r| Step {
        outcome: Outcome::Failed(r),
        writes: Vec::new(),
        nonce: None,
    };
    if let Err(missing) = check_sets(&t.sender, &t.receiver, &t.read_set, &t.write_set) {
        return fail(FailReason::SetsDoNotCover { missing });
    }
    if used(&t.sender, t.nonce) {
        return fail(FailReason::NonceReused { nonce: t.nonce });
    }
    let mut s = get(&t.sender);
    if s.balance < t.amount {
        return fail(FailReason::InsufficientFunds {
            balance: s.balance,
            amount: t.amount,
        });
    }
    s.next_nonce = s.next_nonce.max(t.nonce.saturating_add(1));
    s.version += 1;
    if t.sender == t.receiver {
        return Step {
            outcome: Outcome::Applied,
            writes: vec![(t.sender, s)],
            nonce: Some((t.sender, t.nonce)),
        };
    }
    let mut r = get(&t.receiver);
    let Some(credited) = r.balance.checked_add(t.amount) else {
        return fail(FailReason::BalanceOverflow);
    };
    s.balance -= t.amount;
    r.balance = credited;
    r.version += 1;
    Step {
        outcome: Outcome::Applied,
        writes: vec![(t.sender, s), (t.receiver, r)],
        nonce: Some((t.sender, t.nonce)),
    }
}

/// The overlay of one checkpoint's execution on a snapshot.
struct Overlay<'a> {
    base: &'a Snapshot,
    accounts: HashMap<AccountId, Account>,
    nonces: HashSet<(AccountId, u64)>,
    effects: Effects,
}

impl<'a> Overlay<'a> {
    fn new(base: &'a Snapshot) -> Self {
        Overlay {
            base,
            accounts: HashMap::new(),
            nonces: HashSet::new(),
            effects: Effects::default(),
        }
    }
    fn get(&self, a: &AccountId) -> Account {
        self.accounts
            .get(a)
            .or_else(|| self.base.accounts.get(a))
            .copied()
            .unwrap_or_default()
    }
    fn used(&self, a: &AccountId, n: u64) -> bool {
        self.nonces.contains(&(*a, n)) || self.base.used_nonces.contains(&(*a, n))
    }
    fn run(&self, t: &Transfer) -> Step {
        step(t, |a| self.get(a), |a, n| self.used(a, n))
    }
    fn commit(&mut self, id: TxId, s: Step) {
        for (a, acc) in s.writes {
            self.accounts.insert(a, acc);
            self.effects.accounts.insert(a, acc);
        }
        if let Some((a, n)) = s.nonce {
            self.nonces.insert((a, n));
            self.effects.nonces.push((a, n, id));
        }
        self.effects.outcomes.push((id, s.outcome));
    }
}

/// The transfers to execute: commit order, each id once, ids decided earlier dropped.
fn fresh<'t>(snapshot: &Snapshot, txs: &'t [Transfer]) -> Vec<&'t Transfer> {
    let mut seen = HashSet::with_capacity(txs.len());
    txs.iter()
        .filter(|t| !snapshot.decided.contains(&t.id) && seen.insert(t.id))
        .collect()
}

/// Executes `txs` one after another in commit order.
pub fn execute_sequential(snapshot: &Snapshot, txs: &[Transfer]) -> Effects {
    let mut o = Overlay::new(snapshot);
    for t in fresh(snapshot, txs) {
        let s = o.run(t);
        o.commit(t.id, s);
    }
    o.effects
}

/// Groups `txs` into waves: a transfer goes one wave after the latest earlier transfer
/// whose footprint overlaps its own, so transfers in one wave touch disjoint objects and
/// every overlapping pair keeps its commit order. Returns indexes into `txs` per wave, each
/// wave in commit order.
pub fn waves(txs: &[&Transfer]) -> Vec<Vec<usize>> {
    let mut last: HashMap<ObjectId, usize> = HashMap::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, t) in txs.iter().enumerate() {
        let fp = t.footprint();
        let wave = fp
            .iter()
            .filter_map(|o| last.get(o).map(|w| w + 1))
            .max()
            .unwrap_or(0);
        for o in fp {
            last.insert(o, wave);
        }
        if out.len() <= wave {
            out.resize_with(wave + 1, Vec::new);
        }
        out[wave].push(i);
    }
    out
}

/// Executes `txs` by waves ([`waves`]) on `pool`: the transfers of one wave run in
/// parallel against the state after the previous wave, then their writes are merged in
/// commit order. The outcomes are listed in commit order, as [`execute_sequential`] lists
/// them, and the effects are equal to its effects.
pub fn execute_parallel(
    pool: &rayon::ThreadPool,
    snapshot: &Snapshot,
    txs: &[Transfer],
) -> Effects {
    let txs = fresh(snapshot, txs);
    let mut o = Overlay::new(snapshot);
    let mut results: Vec<Option<Step>> = (0..txs.len()).map(|_| None).collect();
    for wave in waves(&txs) {
        let steps: Vec<(usize, Step)> = {
            let view = &o;
            if wave.len() < 2 {
                wave.iter().map(|&i| (i, view.run(txs[i]))).collect()
            } else {
                pool.install(|| wave.par_iter().map(|&i| (i, view.run(txs[i]))).collect())
            }
        };
        for (i, s) in steps {
            // Writes of one wave are disjoint: applying them now keeps later waves exact.
            for (a, acc) in &s.writes {
                o.accounts.insert(*a, *acc);
            }
            if let Some(n) = s.nonce {
                o.nonces.insert(n);
            }
            results[i] = Some(s);
        }
    }
    // Record effects in commit order.
    let mut effects = Effects::default();
    for (t, s) in txs.iter().zip(results) {
        let Some(s) = s else { continue };
        for (a, acc) in s.writes {
            effects
                .accounts
                .insert(a, o.accounts.get(&a).copied().unwrap_or(acc));
        }
        if let Some((a, n)) = s.nonce {
            effects.nonces.push((a, n, t.id));
        }
        effects.outcomes.push((t.id, s.outcome));
    }
    effects
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::transfer::account_object;
    use proptest::prelude::*;

    fn acct(b: u8) -> AccountId {
        AccountId::from_bytes([b; 32])
    }

    fn t(id: u8, s: u8, r: u8, amount: u64, nonce: u64) -> Transfer {
        Transfer {
            id: TxId::from_bytes([id; 32]),
            sender: acct(s),
            receiver: acct(r),
            amount,
            nonce,
            read_set: Vec::new(),
            write_set: Vec::new(),
        }
    }

    fn funded(pairs: &[(u8, u64)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (a, b) in pairs {
            s.accounts.insert(
                acct(*a),
                Account {
                    balance: *b,
                    ..Account::default()
                },
            );
        }
        s
    }

    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    }

    #[test]
    fn outcomes_in_commit_order() {
        let snap = funded(&[(1, 100)]);
        let txs = vec![
            t(1, 1, 2, 60, 0),
            t(2, 1, 3, 60, 1), // insufficient after the first
            t(3, 2, 3, 10, 0),
            t(4, 1, 2, 10, 0), // nonce 0 of account 1 already applied
            t(1, 1, 2, 1, 5),  // repeated id: skipped
        ];
        let e = execute_sequential(&snap, &txs);
        assert_eq!(
            e.outcomes,
            vec![
                (TxId::from_bytes([1; 32]), Outcome::Applied),
                (
                    TxId::from_bytes([2; 32]),
                    Outcome::Failed(FailReason::InsufficientFunds {
                        balance: 40,
                        amount: 60
                    })
                ),
                (TxId::from_bytes([3; 32]), Outcome::Applied),
                (
                    TxId::from_bytes([4; 32]),
                    Outcome::Failed(FailReason::NonceReused { nonce: 0 })
                ),
            ]
        );
        assert_eq!(e.accounts[&acct(1)].balance, 40);
        assert_eq!(e.accounts[&acct(1)].next_nonce, 1);
        assert_eq!(e.accounts[&acct(2)].balance, 50);
        assert_eq!(e.accounts[&acct(3)].balance, 10);
        assert_eq!(execute_parallel(&pool(), &snap, &txs), e);
    }

    #[test]
    fn sets_that_omit_an_account_fail_and_move_nothing() {
        let snap = funded(&[(1, 100)]);
        let mut bad = t(1, 1, 2, 10, 0);
        bad.write_set = vec![account_object(&acct(1))];
        let e = execute_sequential(&snap, &[bad]);
        assert_eq!(
            e.outcomes[0].1,
            Outcome::Failed(FailReason::SetsDoNotCover {
                missing: account_object(&acct(2))
            })
        );
        assert!(e.accounts.is_empty());
    }

    #[test]
    fn overflow_is_an_outcome() {
        let snap = funded(&[(1, 10), (2, u64::MAX)]);
        let e = execute_sequential(&snap, &[t(1, 1, 2, 1, 0)]);
        assert_eq!(
            e.outcomes[0].1,
            Outcome::Failed(FailReason::BalanceOverflow)
        );
    }

    #[test]
    fn waves_keep_conflicts_in_order() {
        let txs = [
            t(1, 1, 2, 1, 0),
            t(2, 3, 4, 1, 0),
            t(3, 2, 5, 1, 0),
            t(4, 6, 7, 1, 0),
        ];
        let refs: Vec<&Transfer> = txs.iter().collect();
        assert_eq!(waves(&refs), vec![vec![0, 1, 3], vec![2]]);
    }

    fn total(snap: &Snapshot, e: &Effects) -> u128 {
        let mut all: HashMap<AccountId, Account> = snap.accounts.clone();
        for (a, acc) in &e.accounts {
            all.insert(*a, *acc);
        }
        all.values().map(|a| u128::from(a.balance)).sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Any committed sequence: parallel execution equals sequential, and no money is
        /// created or lost.
        #[test]
        fn parallel_equals_sequential(
            balances in proptest::collection::vec(0u64..1_000, 1..12),
            txs in proptest::collection::vec((0u8..40, 0u8..14, 0u8..14, 0u64..400, 0u64..6, any::<bool>()), 0..120),
        ) {
            let pairs: Vec<(u8, u64)> = balances.iter().enumerate().map(|(i, b)| (i as u8, *b)).collect();
            let snap = funded(&pairs);
            let txs: Vec<Transfer> = txs.into_iter().map(|(id, s, r, amount, nonce, declare)| {
                let mut x = t(id, s, r, amount, nonce);
                if declare {
                    // Sometimes a correct declaration, sometimes one that omits the receiver.
                    let mut ws = vec![account_object(&x.sender)];
                    if id % 3 != 0 { ws.push(account_object(&x.receiver)); }
                    ws.sort(); ws.dedup();
                    x.write_set = ws;
                }
                x
            }).collect();
            let seq = execute_sequential(&snap, &txs);
            let par = execute_parallel(&pool(), &snap, &txs);
            prop_assert_eq!(&par, &seq);
            prop_assert_eq!(total(&snap, &seq), snap.accounts.values().map(|a| u128::from(a.balance)).sum::<u128>());
        }
    }
}

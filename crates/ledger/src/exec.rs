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
    /// (sender, nonce, tx) of every applied transfer, in commit order, then of every nonce
    /// another state machine consumed through [`crate::Balances::use_nonce`].
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

/// Groups `txs` into independent components: two transfers whose footprints share an
/// object — directly or through a chain of others — are in one component. Components touch
/// disjoint objects, so they can run side by side; inside one, transfers run in commit
/// order. Returns indexes into `txs` per component (each in commit order), largest first.
pub fn components(txs: &[&Transfer]) -> Vec<Vec<usize>> {
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut parent: Vec<usize> = (0..txs.len()).collect();
    let mut owner: HashMap<ObjectId, usize> = HashMap::with_capacity(txs.len() * 2);
    for (i, t) in txs.iter().enumerate() {
        for o in t.footprint() {
            match owner.get(&o) {
                Some(&j) => {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    if a != b {
                        // The earlier transfer's root stays the root.
                        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                        parent[hi] = lo;
                    }
                }
                None => {
                    owner.insert(o, i);
                }
            }
        }
    }
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..txs.len() {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    let mut out: Vec<Vec<usize>> = groups.into_values().collect();
    out.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
    out
}

/// Executes `txs` by components ([`components`]) on `pool`: each component runs in commit
/// order on one worker against the snapshot (no other component touches its objects);
/// components run in parallel. The effects are listed in commit order and equal
/// [`execute_sequential`]'s.
pub fn execute_parallel(
    pool: &rayon::ThreadPool,
    snapshot: &Snapshot,
    txs: &[Transfer],
) -> Effects {
    let txs = fresh(snapshot, txs);
    let groups = components(&txs);
    // Small components are batched into chunks so the pool is not flooded with tiny tasks.
    let threads = pool.current_num_threads().max(1);
    let target = txs.len().div_ceil(threads * 4).max(1);
    let mut chunks: Vec<Vec<&[usize]>> = Vec::new();
    let mut size = 0;
    for g in &groups {
        if chunks.is_empty() || size + g.len() > target {
            chunks.push(Vec::new());
            size = 0;
        }
        size += g.len();
        if let Some(c) = chunks.last_mut() {
            c.push(g.as_slice());
        }
    }
    let run_chunk = |chunk: &Vec<&[usize]>| -> Vec<(usize, Step)> {
        let mut out = Vec::new();
        for group in chunk {
            let mut o = Overlay::new(snapshot);
            for &i in group.iter() {
                let s = o.run(txs[i]);
                for (a, acc) in &s.writes {
                    o.accounts.insert(*a, *acc);
                }
                if let Some(n) = s.nonce {
                    o.nonces.insert(n);
                }
                out.push((i, s));
            }
        }
        out
    };
    let done: Vec<Vec<(usize, Step)>> = if chunks.len() < 2 {
        chunks.iter().map(run_chunk).collect()
    } else {
        pool.install(|| chunks.par_iter().map(run_chunk).collect())
    };
    let mut results: Vec<Option<Step>> = (0..txs.len()).map(|_| None).collect();
    for (i, s) in done.into_iter().flatten() {
        results[i] = Some(s);
    }
    // Record effects in commit order: the last write of an account is its final state.
    let mut o = Overlay::new(snapshot);
    for (t, s) in txs.iter().zip(results) {
        if let Some(s) = s {
            o.commit(t.id, s);
        }
    }
    o.effects
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
    fn components_join_transitive_conflicts_in_commit_order() {
        let txs = [
            t(1, 1, 2, 1, 0),
            t(2, 3, 4, 1, 0),
            t(3, 2, 5, 1, 0),
            t(4, 6, 7, 1, 0),
            t(5, 5, 3, 1, 0), // joins {1, 2, 5} and {3, 4}
        ];
        let refs: Vec<&Transfer> = txs.iter().collect();
        assert_eq!(components(&refs), vec![vec![0, 1, 2, 4], vec![3]]);
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

//! The persisted ledger (`ledger.redb`): accounts, applied nonces, outcomes and the root
//! after every checkpoint, written in one redb transaction per checkpoint, so a crash
//! leaves either all of a checkpoint's effects or none. It is the ledger's
//! [`CommitApplier`]: idempotent per sequence, resumes where it stopped.

use crate::exec::{Effects, Snapshot, execute_parallel, execute_sequential};
use crate::transfer::{Account, Outcome, Transfer};
use crate::{Error, Result};
use dag_core::execution::{ApplyError, CommitApplier};
use dag_core::{AccountId, Hash32, TxId, VerifiedTx};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Account id → [`Account::encode`].
const ACCOUNTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("accounts");
/// sender 32 ‖ nonce u64 BE → tx id of the applied transfer.
const NONCES: TableDefinition<&[u8; 40], &[u8; 32]> = TableDefinition::new("nonces");
/// Tx id → sequence u64 ‖ [`Outcome::encode`].
const OUTCOMES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("outcomes");
/// Sequence → root after it.
const ROOTS: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("roots");
/// "genesis_root" → 32 bytes.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Domain tag of the genesis root.
const GENESIS_DOMAIN: &[u8] = b"citychain/ledger-genesis/v1";
/// Domain tag of a checkpoint's ledger root.
const ROOT_DOMAIN: &[u8] = b"citychain/ledger-root/v1";

/// Settings of a [`Ledger`]. `Default`: one execution thread per core, parallel execution
/// from 64 transfers in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Threads of the execution pool (0 = one per core).
    pub threads: usize,
    /// Fewest transfers in a checkpoint worth running in parallel; fewer run sequentially
    /// (the result is the same either way).
    pub parallel_min: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            threads: 0,
            parallel_min: 64,
        }
    }
}

/// The root of a genesis allocation: BLAKE3 over the tag and the accounts in id order.
pub fn genesis_root(allocation: &BTreeMap<AccountId, u64>) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(GENESIS_DOMAIN);
    h.update(&(allocation.len() as u64).to_le_bytes());
    for (a, b) in allocation {
        h.update(a.as_bytes());
        h.update(&b.to_le_bytes());
    }
    Hash32(*h.finalize().as_bytes())
}

/// The ledger root after a checkpoint: BLAKE3 of the tag ‖ the previous root ‖ seq u64 ‖
/// at_ms u64 ‖ outcomes (count, then tx id ‖ u8 length ‖ [`Outcome::encode`] each, commit
/// order) ‖ written accounts (count, then id ‖ [`Account::encode`] each, id order). It
/// chains every state change since genesis, so two representatives have equal roots exactly
/// when they executed the same history to the same state.
pub fn checkpoint_root(prev: &Hash32, seq: u64, at_ms: u64, effects: &Effects) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(ROOT_DOMAIN);
    h.update(&prev.0);
    h.update(&seq.to_le_bytes());
    h.update(&at_ms.to_le_bytes());
    h.update(&(effects.outcomes.len() as u64).to_le_bytes());
    for (id, o) in &effects.outcomes {
        let e = o.encode();
        h.update(id.as_bytes());
        h.update(&[e.len() as u8]);
        h.update(&e);
    }
    h.update(&(effects.accounts.len() as u64).to_le_bytes());
    for (a, acc) in &effects.accounts {
        h.update(a.as_bytes());
        h.update(&acc.encode());
    }
    Hash32(*h.finalize().as_bytes())
}

fn nonce_key(a: &AccountId, n: u64) -> [u8; 40] {
    let mut k = [0; 40];
    k[..32].copy_from_slice(a.as_bytes());
    k[32..].copy_from_slice(&n.to_be_bytes());
    k
}

/// Balances inside one checkpoint's apply, after its transfers (see
/// [`Ledger::apply_with`]): what another state machine (DPoS liquid balances) reads and
/// moves in the same atomic write. Checked arithmetic; every change is part of the root.
pub struct Balances<'a> {
    table: &'a redb::Table<'a, &'static [u8; 32], &'static [u8]>,
    nonces: &'a redb::Table<'a, &'static [u8; 40], &'static [u8; 32]>,
    path: &'a Path,
    effects: &'a mut Effects,
}

impl Balances<'_> {
    fn get(&self, a: &AccountId) -> Result<Account> {
        if let Some(acc) = self.effects.accounts.get(a) {
            return Ok(*acc);
        }
        read_account(self.table, self.path, a).map(Option::unwrap_or_default)
    }
    /// The balance of `account` (0 for an account never credited).
    pub fn balance(&self, account: &AccountId) -> Result<u64> {
        Ok(self.get(account)?.balance)
    }
    /// Adds `amount` to `account` (created if new); [`Error::Overflow`] past `u64::MAX`.
    pub fn credit(&mut self, account: &AccountId, amount: u64) -> Result<()> {
        let mut acc = self.get(account)?;
        acc.balance = acc.balance.checked_add(amount).ok_or(Error::Overflow {
            account: *account,
            balance: acc.balance,
            amount,
        })?;
        acc.version += 1;
        self.effects.accounts.insert(*account, acc);
        Ok(())
    }
    /// Whether `account` already used `nonce` — by an applied transfer or by an earlier
    /// [`Balances::use_nonce`] (the account's one nonce space, across every kind of tx).
    pub fn nonce_used(&self, account: &AccountId, nonce: u64) -> Result<bool> {
        if self
            .effects
            .nonces
            .iter()
            .any(|(a, n, _)| a == account && *n == nonce)
        {
            return Ok(true);
        }
        Ok(self
            .nonces
            .get(&nonce_key(account, nonce))
            .map_err(|e| Error::store(self.path, e))?
            .is_some())
    }
    /// Consumes `nonce` of `account` for the (non-transfer) tx `tx` that another state
    /// machine applied: recorded like a transfer's nonce, and the account's next nonce
    /// advances past it (the account object is written, so the root covers it).
    /// [`Error::NonceReused`] when it was used.
    pub fn use_nonce(&mut self, account: &AccountId, nonce: u64, tx: &TxId) -> Result<()> {
        if self.nonce_used(account, nonce)? {
            return Err(Error::NonceReused {
                account: *account,
                nonce,
            });
        }
        let mut acc = self.get(account)?;
        acc.next_nonce = acc.next_nonce.max(nonce.saturating_add(1));
        acc.version += 1;
        self.effects.accounts.insert(*account, acc);
        self.effects.nonces.push((*account, nonce, *tx));
        Ok(())
    }
    /// Takes `amount` from `account`; [`Error::Insufficient`] when the balance is lower.
    pub fn debit(&mut self, account: &AccountId, amount: u64) -> Result<()> {
        let mut acc = self.get(account)?;
        acc.balance = acc.balance.checked_sub(amount).ok_or(Error::Insufficient {
            account: *account,
            balance: acc.balance,
            amount,
        })?;
        acc.version += 1;
        self.effects.accounts.insert(*account, acc);
        Ok(())
    }
}

fn read_account(
    t: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    path: &Path,
    a: &AccountId,
) -> Result<Option<Account>> {
    match t.get(a.as_bytes()).map_err(|e| Error::store(path, e))? {
        Some(v) => Account::decode(v.value())
            .map(Some)
            .map_err(|_| Error::Corrupt {
                path: path.to_path_buf(),
                table: "accounts",
                reason: "account record is not 24 bytes",
            }),
        None => Ok(None),
    }
}

/// A city's ledger of accounts (see the crate docs).
pub struct Ledger {
    db: Database,
    path: PathBuf,
    pool: rayon::ThreadPool,
    cfg: LedgerConfig,
    next: AtomicU64,
    genesis: Hash32,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .field("next_seq", &self.next.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens the ledger at `path`, creating it from `allocation` (the genesis accounts) the
    /// first time; a store created from another allocation is refused
    /// ([`Error::GenesisMismatch`]).
    pub fn open(
        path: &Path,
        allocation: &BTreeMap<AccountId, u64>,
        cfg: LedgerConfig,
    ) -> Result<Self> {
        let mut supply: u64 = 0;
        for (a, b) in allocation {
            supply = supply
                .checked_add(*b)
                .ok_or(Error::SupplyOverflow { account: *a })?;
        }
        let given = genesis_root(allocation);
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| Error::store(path, redb::Error::Io(e)))?;
        }
        let err = |e: redb::Error| Error::store(path, e);
        let db = Database::create(path).map_err(|e| err(e.into()))?;
        let w = db.begin_write().map_err(|e| err(e.into()))?;
        let stored = {
            let mut meta = w.open_table(META).map_err(|e| err(e.into()))?;
            w.open_table(NONCES).map_err(|e| err(e.into()))?;
            w.open_table(OUTCOMES).map_err(|e| err(e.into()))?;
            w.open_table(ROOTS).map_err(|e| err(e.into()))?;
            let mut accounts = w.open_table(ACCOUNTS).map_err(|e| err(e.into()))?;
            let stored = meta
                .get("genesis_root")
                .map_err(|e| err(e.into()))?
                .map(|v| v.value().to_vec());
            match stored {
                Some(s) => Some(s),
                None => {
                    for (a, b) in allocation {
                        let acc = Account {
                            balance: *b,
                            ..Account::default()
                        };
                        accounts
                            .insert(a.as_bytes(), acc.encode().as_slice())
                            .map_err(|e| err(e.into()))?;
                    }
                    meta.insert("genesis_root", given.0.as_slice())
                        .map_err(|e| err(e.into()))?;
                    None
                }
            }
        };
        w.commit().map_err(|e| err(e.into()))?;
        if let Some(s) = stored {
            let stored = <[u8; 32]>::try_from(s.as_slice()).map_err(|_| Error::Corrupt {
                path: path.to_path_buf(),
                table: "meta",
                reason: "genesis root is not 32 bytes",
            })?;
            if stored != given.0 {
                return Err(Error::GenesisMismatch {
                    path: path.to_path_buf(),
                    stored: Hash32(stored),
                    given,
                });
            }
        }
        let next = {
            let r = db.begin_read().map_err(|e| err(e.into()))?;
            let t = r.open_table(ROOTS).map_err(|e| err(e.into()))?;
            t.last()
                .map_err(|e| err(e.into()))?
                .map_or(0, |(k, _)| k.value() + 1)
        };
        let threads = if cfg.threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            cfg.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ledger-exec-{i}"))
            .build()
            .map_err(|_| Error::Corrupt {
                path: path.to_path_buf(),
                table: "-",
                reason: "cannot start the execution pool",
            })?;
        Ok(Ledger {
            db,
            path: path.to_path_buf(),
            pool,
            cfg,
            next: AtomicU64::new(next),
            genesis: given,
        })
    }

    /// The genesis root.
    pub fn genesis_root(&self) -> Hash32 {
        self.genesis
    }

    /// The first checkpoint sequence not applied.
    pub fn next_seq(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    fn err(&self) -> impl Fn(redb::Error) -> Error + '_ {
        |e| Error::store(&self.path, e)
    }

    /// An account (None: never credited).
    pub fn account(&self, id: &AccountId) -> Result<Option<Account>> {
        let err = self.err();
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(ACCOUNTS).map_err(|e| err(e.into()))?;
        read_account(&t, &self.path, id)
    }

    /// The outcome of a committed transfer and the checkpoint that executed it.
    pub fn outcome(&self, id: &TxId) -> Result<Option<(u64, Outcome)>> {
        let err = self.err();
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(OUTCOMES).map_err(|e| err(e.into()))?;
        let Some(v) = t.get(id.as_bytes()).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        let bytes = v.value();
        let corrupt = || Error::Corrupt {
            path: self.path.clone(),
            table: "outcomes",
            reason: "outcome record does not decode",
        };
        if bytes.len() < 8 {
            return Err(corrupt());
        }
        let mut s = [0; 8];
        s.copy_from_slice(&bytes[..8]);
        let o = Outcome::decode(&bytes[8..]).map_err(|_| corrupt())?;
        Ok(Some((u64::from_le_bytes(s), o)))
    }

    /// The ledger root after checkpoint `seq`, if applied.
    pub fn root_after(&self, seq: u64) -> Result<Option<Hash32>> {
        let err = self.err();
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(ROOTS).map_err(|e| err(e.into()))?;
        Ok(t.get(seq)
            .map_err(|e| err(e.into()))?
            .map(|v| Hash32(*v.value())))
    }

    /// The sum of all balances (a full scan; for audits and tests).
    pub fn total_supply(&self) -> Result<u128> {
        let err = self.err();
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(ACCOUNTS).map_err(|e| err(e.into()))?;
        let mut sum = 0u128;
        for row in t.iter().map_err(|e| err(e.into()))? {
            let (_, v) = row.map_err(|e| err(e.into()))?;
            let a = Account::decode(v.value()).map_err(|_| Error::Corrupt {
                path: self.path.clone(),
                table: "accounts",
                reason: "account record is not 24 bytes",
            })?;
            sum += u128::from(a.balance);
        }
        Ok(sum)
    }

    /// Accounts stored.
    pub fn accounts(&self) -> Result<u64> {
        let err = self.err();
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(ACCOUNTS).map_err(|e| err(e.into()))?;
        t.len().map_err(|e| err(e.into()))
    }

    /// Reads what `txs` touch.
    fn snapshot(&self, txs: &[Transfer]) -> Result<Snapshot> {
        let err = self.err();
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let accounts = r.open_table(ACCOUNTS).map_err(|e| err(e.into()))?;
        let nonces = r.open_table(NONCES).map_err(|e| err(e.into()))?;
        let outcomes = r.open_table(OUTCOMES).map_err(|e| err(e.into()))?;
        let mut s = Snapshot::default();
        for t in txs {
            for a in [t.sender, t.receiver] {
                if !s.accounts.contains_key(&a)
                    && let Some(acc) = read_account(&accounts, &self.path, &a)?
                {
                    s.accounts.insert(a, acc);
                }
            }
            if nonces
                .get(&nonce_key(&t.sender, t.nonce))
                .map_err(|e| err(e.into()))?
                .is_some()
            {
                s.used_nonces.insert((t.sender, t.nonce));
            }
            if outcomes
                .get(t.id.as_bytes())
                .map_err(|e| err(e.into()))?
                .is_some()
            {
                s.decided.insert(t.id);
            }
        }
        Ok(s)
    }

    /// Applies checkpoint `seq` (the [`CommitApplier`] contract), with `hook` run after the
    /// transfers inside the same atomic write: what it moves through [`Balances`] is part
    /// of the checkpoint's effects and root; an error from it applies nothing. Returns the
    /// root after `seq`.
    pub fn apply_with(
        &self,
        seq: u64,
        at_ms: u64,
        txs: &[VerifiedTx],
        hook: impl FnOnce(&mut Balances<'_>) -> Result<()>,
    ) -> Result<Hash32> {
        let next = self.next_seq();
        if seq < next {
            return self.root_after(seq)?.ok_or_else(|| Error::Corrupt {
                path: self.path.clone(),
                table: "roots",
                reason: "an applied checkpoint has no root",
            });
        }
        if seq > next {
            return Err(Error::Gap {
                seq,
                expected: next,
            });
        }
        let transfers: Vec<Transfer> = txs
            .iter()
            .filter_map(|t| Transfer::from_tx(t.id(), t.tx()))
            .collect();
        let snapshot = self.snapshot(&transfers)?;
        let mut effects = if transfers.len() >= self.cfg.parallel_min {
            execute_parallel(&self.pool, &snapshot, &transfers)
        } else {
            execute_sequential(&snapshot, &transfers)
        };
        let prev = match seq.checked_sub(1) {
            None => self.genesis,
            Some(p) => self.root_after(p)?.ok_or_else(|| Error::Corrupt {
                path: self.path.clone(),
                table: "roots",
                reason: "the previous checkpoint has no root",
            })?,
        };
        let err = self.err();
        let w = self.db.begin_write().map_err(|e| err(e.into()))?;
        let root = self.write(&w, seq, at_ms, &prev, &mut effects, hook)?;
        w.commit().map_err(|e| err(e.into()))?;
        self.next.store(seq + 1, Ordering::Release);
        Ok(root)
    }

    fn write(
        &self,
        w: &WriteTransaction,
        seq: u64,
        at_ms: u64,
        prev: &Hash32,
        effects: &mut Effects,
        hook: impl FnOnce(&mut Balances<'_>) -> Result<()>,
    ) -> Result<Hash32> {
        let err = self.err();
        let mut accounts = w.open_table(ACCOUNTS).map_err(|e| err(e.into()))?;
        let mut nonces = w.open_table(NONCES).map_err(|e| err(e.into()))?;
        {
            let mut b = Balances {
                table: &accounts,
                nonces: &nonces,
                path: &self.path,
                effects,
            };
            hook(&mut b)?;
        }
        let root = checkpoint_root(prev, seq, at_ms, effects);
        for (a, acc) in &effects.accounts {
            accounts
                .insert(a.as_bytes(), acc.encode().as_slice())
                .map_err(|e| err(e.into()))?;
        }
        for (a, n, id) in &effects.nonces {
            nonces
                .insert(&nonce_key(a, *n), id.as_bytes())
                .map_err(|e| err(e.into()))?;
        }
        let mut outcomes = w.open_table(OUTCOMES).map_err(|e| err(e.into()))?;
        for (id, o) in &effects.outcomes {
            let mut v = seq.to_le_bytes().to_vec();
            v.extend_from_slice(&o.encode());
            outcomes
                .insert(id.as_bytes(), v.as_slice())
                .map_err(|e| err(e.into()))?;
        }
        let mut roots = w.open_table(ROOTS).map_err(|e| err(e.into()))?;
        roots.insert(seq, &root.0).map_err(|e| err(e.into()))?;
        Ok(root)
    }
}

impl CommitApplier for Ledger {
    fn name(&self) -> &'static str {
        "ledger"
    }
    fn next_seq(&self) -> u64 {
        Ledger::next_seq(self)
    }
    fn apply(
        &self,
        seq: u64,
        at_ms: u64,
        txs: &[VerifiedTx],
    ) -> std::result::Result<Hash32, ApplyError> {
        self.apply_with(seq, at_ms, txs, |_| Ok(()))
            .map_err(|e| match e {
                Error::Gap { seq, expected } => ApplyError::Gap {
                    name: "ledger",
                    seq,
                    expected,
                },
                other => ApplyError::Storage {
                    name: "ledger",
                    seq,
                    reason: other.to_string(),
                },
            })
    }
}

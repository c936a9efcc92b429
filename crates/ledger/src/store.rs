//! The persisted ledger (`ledger.redb`): accounts, applied nonces, outcomes and the root
//! after every checkpoint, written in one redb transaction per checkpoint, so a crash
//! leaves either all of a checkpoint's effects or none. It is the ledger's
//! [`CommitApplier`]: idempotent per sequence, resumes where it stopped.

use crate::cross::{Certified, CrossBook, CrossTransfer, Funds, SendOutcome, Settled};
use crate::exec::{Effects, Snapshot, execute_parallel, execute_sequential};
use crate::relay::{
    CheckpointCertificates, CrossRelay, DirOnly, Proven, RelayItem, StatementProof, ledger_root,
    statements_root,
};
use crate::transfer::{Account, FailReason, Outcome, Transfer, check_sets};
use crate::{Error, Result};
use dag_core::execution::{ApplyError, CommitApplier};
use dag_core::merkle::{MerkleLog, leaf_hash};
use dag_core::{AccountId, CityId, DecodeError, Hash32, Reader, TxId, TxKind, VerifiedTx, Writer};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Account id → [`Account::encode`].
const ACCOUNTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("accounts");
/// sender 32 ‖ nonce u64 BE → tx id of the applied transfer.
const NONCES: TableDefinition<&[u8; 40], &[u8; 32]> = TableDefinition::new("nonces");
/// Tx id → sequence u64 ‖ [`Outcome::encode`].
const OUTCOMES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("outcomes");
/// Sequence → root after it.
const ROOTS: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("roots");
/// "book" → [`CrossBook::encode`].
const CROSS: TableDefinition<&str, &[u8]> = TableDefinition::new("cross");
/// Sequence → [`CheckpointStatements::encode`].
const STATEMENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("statements");
/// Transfer-out id → sequence of the checkpoint that escrowed it.
const OUT_AT: TableDefinition<&[u8; 32], u64> = TableDefinition::new("out_at");
/// 2 (answered first) or 3 (settled) ‖ transfer id → sequence of that checkpoint.
const CROSS_AT: TableDefinition<&[u8; 33], u64> = TableDefinition::new("cross_at");
/// 1 (a transfer-out this city verified as the receiver's) or 2 (an answer this city
/// verified as the sender's) ‖ transfer id → BLAKE3 of the checkpoint certificate ‖
/// [`crate::cross_proof`] with an empty certificate. One per transfer and kind (the first
/// verified), so it stays bounded per transfer.
const PROOFS: TableDefinition<&[u8; 33], &[u8]> = TableDefinition::new("cross_proofs");
/// BLAKE3 of a checkpoint certificate → the certificate (shared by the proofs of one
/// checkpoint's statements).
const PROOF_CERTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("cross_certs");
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
    /// Page cache of `ledger.redb`, bytes. Default 16 MiB (redb's own default, 1 GiB,
    /// let the ledger's memory grow with history).
    pub cache_bytes: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            threads: 0,
            parallel_min: 64,
            cache_bytes: 16 << 20,
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

fn cross_key(kind: u8, id: &TxId) -> [u8; 33] {
    let mut k = [0; 33];
    k[0] = kind;
    k[1..].copy_from_slice(id.as_bytes());
    k
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
    cross: OnceLock<CrossSetup>,
}

/// What a ledger needs to take part in cross-city transfers ([`Ledger::enable_cross`]).
#[derive(Clone)]
pub struct CrossSetup {
    /// This ledger's city.
    pub city: CityId,
    /// The directory of cities and the check of their checkpoint certificates.
    pub certs: Arc<dyn CheckpointCertificates>,
    /// A transfer-out's deadline: its checkpoint's agreed time plus this (ms).
    pub timeout_ms: u64,
}

impl std::fmt::Debug for CrossSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossSetup")
            .field("city", &self.city)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

/// One statement a checkpoint emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementEntry {
    /// 1: a transfer-out escrowed here; 2: an answer to a transfer-in.
    pub kind: u8,
    /// The transfer's id.
    pub id: TxId,
    /// The city the statement is for.
    pub to_city: CityId,
    /// The statement ([`CrossTransfer::statement`] or [`crate::Answer::statement`]).
    pub statement: Hash32,
}

/// The statements a checkpoint emitted and the other parts of its ledger root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointStatements {
    /// The chained root ([`checkpoint_root`]).
    pub chain: Hash32,
    /// The cross book's root after the checkpoint.
    pub book_root: Hash32,
    /// The statements in emission (commit) order.
    pub entries: Vec<StatementEntry>,
}

impl CheckpointStatements {
    /// The ledger root these parts give.
    pub fn ledger_root(&self) -> Hash32 {
        let s: Vec<Hash32> = self.entries.iter().map(|e| e.statement).collect();
        ledger_root(&self.chain, &self.book_root, &statements_root(&s))
    }

    /// The proof of entry `index`.
    pub fn proof(&self, index: usize) -> Option<StatementProof> {
        let size = self.entries.len() as u64;
        let log =
            MerkleLog::from_leaf_hashes(self.entries.iter().map(|e| leaf_hash(&e.statement.0)));
        Some(StatementProof {
            chain: self.chain,
            book_root: self.book_root,
            size,
            index: index as u64,
            path: log.inclusion_proof(index as u64, size).ok()?,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(&self.chain.0)
            .raw(&self.book_root.0)
            .u64(self.entries.len() as u64);
        for e in &self.entries {
            w.u8(e.kind)
                .raw(e.id.as_bytes())
                .bytes_u8(e.to_city.as_str().as_bytes())
                .raw(&e.statement.0);
        }
        w.finish()
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let chain = Hash32(r.bytes32("chain")?);
        let book_root = Hash32(r.bytes32("book_root")?);
        let n = r.u64("entries")?;
        let mut entries = Vec::new();
        for _ in 0..n {
            let kind = r.u8("kind")?;
            let id = TxId::from_bytes(r.bytes32("id")?);
            let c = r.bytes_u8("to_city", 255)?;
            let to_city = std::str::from_utf8(c)
                .ok()
                .and_then(|c| CityId::new(c).ok())
                .ok_or(DecodeError::Invalid {
                    field: "to_city",
                    reason: "not a city id",
                })?;
            entries.push(StatementEntry {
                kind,
                id,
                to_city,
                statement: Hash32(r.bytes32("statement")?),
            });
        }
        r.finish()?;
        Ok(CheckpointStatements {
            chain,
            book_root,
            entries,
        })
    }
}

/// Which of the two certified statements of a cross-city transfer a stored proof is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProofKind {
    /// The sender city's transfer-out, as the receiver city verified it when it credited
    /// (or expired) the transfer.
    TransferOut,
    /// The receiver city's answer, as the sender city verified it when it settled.
    Answer,
}

impl ProofKind {
    fn code(self) -> u8 {
        match self {
            ProofKind::TransferOut => 1,
            ProofKind::Answer => 2,
        }
    }
}

/// A proof verified while executing a relay, to store with the checkpoint.
struct VerifiedProof {
    kind: ProofKind,
    id: TxId,
    cert_hash: [u8; 32],
    cert: Arc<Vec<u8>>,
    /// [`crate::cross_proof`] with an empty certificate.
    rest: Vec<u8>,
}

/// A committed tx the cross-city part of the ledger executes.
enum CrossOp<'t> {
    /// A FRESH_TX naming another city (`None`: an invalid city id).
    Send(Transfer, Option<CityId>),
    /// A relay of another city's certified statements.
    Relay(&'t [u8]),
}

/// [`Funds`] over [`Balances`]: a storage failure is kept and fails the whole apply.
struct FundsOf<'x, 'a> {
    b: &'x mut Balances<'a>,
    err: Option<Error>,
}

impl Funds for FundsOf<'_, '_> {
    fn credit(&mut self, account: &AccountId, amount: u64) -> bool {
        match self.b.credit(account, amount) {
            Ok(()) => true,
            Err(Error::Overflow { .. }) => false,
            Err(e) => {
                self.err.get_or_insert(e);
                false
            }
        }
    }
    fn debit(&mut self, account: &AccountId, amount: u64) -> bool {
        match self.b.debit(account, amount) {
            Ok(()) => true,
            Err(Error::Insufficient { .. }) => false,
            Err(e) => {
                self.err.get_or_insert(e);
                false
            }
        }
    }
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
        let db = Database::builder()
            .set_cache_size(cfg.cache_bytes)
            .create(path)
            .map_err(|e| err(e.into()))?;
        let w = db.begin_write().map_err(|e| err(e.into()))?;
        let stored = {
            let mut meta = w.open_table(META).map_err(|e| err(e.into()))?;
            w.open_table(NONCES).map_err(|e| err(e.into()))?;
            w.open_table(OUTCOMES).map_err(|e| err(e.into()))?;
            w.open_table(ROOTS).map_err(|e| err(e.into()))?;
            w.open_table(CROSS).map_err(|e| err(e.into()))?;
            w.open_table(STATEMENTS).map_err(|e| err(e.into()))?;
            w.open_table(OUT_AT).map_err(|e| err(e.into()))?;
            w.open_table(CROSS_AT).map_err(|e| err(e.into()))?;
            w.open_table(PROOFS).map_err(|e| err(e.into()))?;
            w.open_table(PROOF_CERTS).map_err(|e| err(e.into()))?;
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
            cross: OnceLock::new(),
        })
    }

    /// Takes part in cross-city transfers as `setup.city` (once; later calls are ignored):
    /// a FRESH_TX naming another city ([`crate::to_city_payload`]) is escrowed, relays of
    /// other cities' certified statements are executed. Without it, such a transfer fails
    /// with [`FailReason::UnknownCity`] and relays are ignored.
    pub fn enable_cross(&self, setup: CrossSetup) {
        let _ = self.cross.set(setup);
    }

    /// The cross-city book (None: nothing cross-city was ever executed).
    pub fn cross_book(&self) -> Result<Option<CrossBook>> {
        let err = self.err();
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(CROSS).map_err(|e| err(e.into()))?;
        self.read_book(&t)
    }

    fn read_book(
        &self,
        t: &impl ReadableTable<&'static str, &'static [u8]>,
    ) -> Result<Option<CrossBook>> {
        match t.get("book").map_err(|e| Error::store(&self.path, e))? {
            None => Ok(None),
            Some(v) => CrossBook::decode(v.value())
                .map(Some)
                .map_err(|_| Error::Corrupt {
                    path: self.path.clone(),
                    table: "cross",
                    reason: "the cross book does not decode",
                }),
        }
    }

    /// The statements checkpoint `seq` emitted (None: not applied, or none).
    pub fn cross_statements(&self, seq: u64) -> Result<Option<CheckpointStatements>> {
        let err = self.err();
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(STATEMENTS).map_err(|e| err(e.into()))?;
        match t.get(seq).map_err(|e| err(e.into()))? {
            None => Ok(None),
            Some(v) => CheckpointStatements::decode(v.value())
                .map(Some)
                .map_err(|_| Error::Corrupt {
                    path: self.path.clone(),
                    table: "statements",
                    reason: "checkpoint statements do not decode",
                }),
        }
    }

    /// The other city's certified statement about transfer `id` that this city verified in
    /// commit order, as canonical [`crate::cross_proof`] bytes: in the receiver city the
    /// sender city's transfer-out ([`ProofKind::TransferOut`], stored when it was credited or
    /// expired), in the sender city the receiver city's answer ([`ProofKind::Answer`],
    /// stored when it settled). `None`: not (yet) verified here.
    pub fn cross_proof(&self, kind: ProofKind, id: &TxId) -> Result<Option<Vec<u8>>> {
        let err = self.err();
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(PROOFS).map_err(|e| err(e.into()))?;
        let Some(v) = t
            .get(&cross_key(kind.code(), id))
            .map_err(|e| err(e.into()))?
        else {
            return Ok(None);
        };
        let corrupt = || Error::Corrupt {
            path: self.path.clone(),
            table: "cross_proofs",
            reason: "a stored proof does not decode",
        };
        let v = v.value();
        let (hash, rest) = v.split_first_chunk::<32>().ok_or_else(corrupt)?;
        let certs = r.open_table(PROOF_CERTS).map_err(|e| err(e.into()))?;
        let cert = certs
            .get(hash)
            .map_err(|e| err(e.into()))?
            .ok_or_else(corrupt)?;
        let mut relay = CrossRelay::decode(rest).map_err(|_| corrupt())?;
        relay.checkpoint = cert.value().to_vec();
        Ok(Some(relay.encode()))
    }

    /// The checkpoint that first answered transfer-in `id` (receiver city).
    pub fn answered_at(&self, id: &TxId) -> Result<Option<u64>> {
        self.cross_at(2, id)
    }

    /// The checkpoint that settled transfer-out `id` (sender city).
    pub fn settled_at(&self, id: &TxId) -> Result<Option<u64>> {
        self.cross_at(3, id)
    }

    fn cross_at(&self, kind: u8, id: &TxId) -> Result<Option<u64>> {
        let err = self.err();
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(CROSS_AT).map_err(|e| err(e.into()))?;
        Ok(t.get(&cross_key(kind, id))
            .map_err(|e| err(e.into()))?
            .map(|v| v.value()))
    }

    /// The checkpoint that escrowed transfer-out `id`.
    pub fn escrowed_at(&self, id: &TxId) -> Result<Option<u64>> {
        let err = self.err();
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(OUT_AT).map_err(|e| err(e.into()))?;
        Ok(t.get(id.as_bytes())
            .map_err(|e| err(e.into()))?
            .map(|v| v.value()))
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
        // Same-city transfers run first (in parallel by object sets), then the cross-city
        // txs in commit order, then the hook: deterministic on every representative.
        let mut transfers: Vec<Transfer> = Vec::with_capacity(txs.len());
        let mut cross: Vec<CrossOp<'_>> = Vec::new();
        for t in txs {
            let tx = t.tx();
            match tx.kind {
                TxKind::FreshTx => {
                    let Some(tr) = Transfer::from_tx(t.id(), tx) else {
                        continue;
                    };
                    match crate::relay::destination(&tx.payload) {
                        None => transfers.push(tr),
                        Some(city) => cross.push(CrossOp::Send(tr, city)),
                    }
                }
                TxKind::SystemTx => {
                    if let Some(rest) = tx.payload.strip_prefix(crate::relay::RELAY_TAG) {
                        cross.push(CrossOp::Relay(rest));
                    }
                }
                _ => {}
            }
        }
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
        let root = self.write(&w, seq, at_ms, &prev, &mut effects, &cross, hook)?;
        w.commit().map_err(|e| err(e.into()))?;
        self.next.store(seq + 1, Ordering::Release);
        Ok(root)
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        w: &WriteTransaction,
        seq: u64,
        at_ms: u64,
        prev: &Hash32,
        effects: &mut Effects,
        cross: &[CrossOp<'_>],
        hook: impl FnOnce(&mut Balances<'_>) -> Result<()>,
    ) -> Result<Hash32> {
        let err = self.err();
        let mut accounts = w.open_table(ACCOUNTS).map_err(|e| err(e.into()))?;
        let mut nonces = w.open_table(NONCES).map_err(|e| err(e.into()))?;
        let mut cross_t = w.open_table(CROSS).map_err(|e| err(e.into()))?;
        let mut book = self.read_book(&cross_t)?;
        let mut entries = Vec::new();
        let mut settled = Vec::new();
        let mut proofs = Vec::new();
        {
            let outcomes = w.open_table(OUTCOMES).map_err(|e| err(e.into()))?;
            let mut b = Balances {
                table: &accounts,
                nonces: &nonces,
                path: &self.path,
                effects,
            };
            if !cross.is_empty() {
                settled = self.execute_cross(
                    &mut b,
                    &outcomes,
                    &mut book,
                    (&mut entries, &mut proofs),
                    at_ms,
                    cross,
                )?;
            }
            hook(&mut b)?;
        }
        let chain = checkpoint_root(prev, seq, at_ms, effects);
        let book_root = book.as_ref().map_or(Hash32([0; 32]), CrossBook::root);
        let parts = CheckpointStatements {
            chain,
            book_root,
            entries,
        };
        let root = parts.ledger_root();
        if let Some(book) = &book {
            cross_t
                .insert("book", book.encode().as_slice())
                .map_err(|e| err(e.into()))?;
        }
        if !parts.entries.is_empty() || !settled.is_empty() {
            let mut out_at = w.open_table(OUT_AT).map_err(|e| err(e.into()))?;
            let mut at = w.open_table(CROSS_AT).map_err(|e| err(e.into()))?;
            for e in &parts.entries {
                if e.kind == 1 {
                    out_at
                        .insert(e.id.as_bytes(), seq)
                        .map_err(|e| err(e.into()))?;
                } else {
                    let k = cross_key(2, &e.id);
                    if at.get(&k).map_err(|e| err(e.into()))?.is_none() {
                        at.insert(&k, seq).map_err(|e| err(e.into()))?;
                    }
                }
            }
            for id in &settled {
                at.insert(&cross_key(3, id), seq)
                    .map_err(|e| err(e.into()))?;
            }
        }
        if !proofs.is_empty() {
            let mut pt = w.open_table(PROOFS).map_err(|e| err(e.into()))?;
            let mut ct = w.open_table(PROOF_CERTS).map_err(|e| err(e.into()))?;
            for p in &proofs {
                let k = cross_key(p.kind.code(), &p.id);
                if pt.get(&k).map_err(|e| err(e.into()))?.is_some() {
                    continue;
                }
                if ct.get(&p.cert_hash).map_err(|e| err(e.into()))?.is_none() {
                    ct.insert(&p.cert_hash, p.cert.as_slice())
                        .map_err(|e| err(e.into()))?;
                }
                let mut v = p.cert_hash.to_vec();
                v.extend_from_slice(&p.rest);
                pt.insert(&k, v.as_slice()).map_err(|e| err(e.into()))?;
            }
        }
        let mut st = w.open_table(STATEMENTS).map_err(|e| err(e.into()))?;
        st.insert(seq, parts.encode().as_slice())
            .map_err(|e| err(e.into()))?;
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

impl Ledger {
    /// The cross-city txs of one checkpoint, in commit order (see [`Ledger::enable_cross`]).
    fn execute_cross(
        &self,
        b: &mut Balances<'_>,
        outcomes: &redb::Table<'_, &'static [u8; 32], &'static [u8]>,
        book: &mut Option<CrossBook>,
        (entries, proofs): (&mut Vec<StatementEntry>, &mut Vec<VerifiedProof>),
        at_ms: u64,
        cross: &[CrossOp<'_>],
    ) -> Result<Vec<TxId>> {
        let setup = self.cross.get();
        let mut settled = Vec::new();
        for op in cross {
            match op {
                CrossOp::Send(t, city) => {
                    let decided = outcomes
                        .get(t.id.as_bytes())
                        .map_err(|e| Error::store(&self.path, e))?
                        .is_some()
                        || b.effects.outcomes.iter().any(|(id, _)| *id == t.id);
                    if decided {
                        continue;
                    }
                    let outcome = if let Err(missing) =
                        check_sets(&t.sender, &t.receiver, &t.read_set, &t.write_set)
                    {
                        Outcome::Failed(FailReason::SetsDoNotCover { missing })
                    } else if b.nonce_used(&t.sender, t.nonce)? {
                        Outcome::Failed(FailReason::NonceReused { nonce: t.nonce })
                    } else {
                        match (setup, city) {
                            (Some(setup), Some(to)) => {
                                let book =
                                    book.get_or_insert_with(|| CrossBook::new(setup.city.clone()));
                                let ct = CrossTransfer {
                                    id: t.id,
                                    from_city: setup.city.clone(),
                                    to_city: to.clone(),
                                    sender: t.sender,
                                    receiver: t.receiver,
                                    amount: t.amount,
                                    deadline_ms: at_ms.saturating_add(setup.timeout_ms),
                                };
                                let statement = ct.statement();
                                let balance = b.balance(&t.sender)?;
                                let mut funds = FundsOf {
                                    b: &mut *b,
                                    err: None,
                                };
                                let sent = book.send(&mut funds, ct, &DirOnly(&*setup.certs));
                                if let Some(e) = funds.err {
                                    return Err(e);
                                }
                                match sent {
                                    SendOutcome::Escrowed => {
                                        b.use_nonce(&t.sender, t.nonce, &t.id)?;
                                        entries.push(StatementEntry {
                                            kind: 1,
                                            id: t.id,
                                            to_city: to.clone(),
                                            statement,
                                        });
                                        Outcome::Applied
                                    }
                                    SendOutcome::Duplicate => continue,
                                    SendOutcome::InsufficientFunds => {
                                        Outcome::Failed(FailReason::InsufficientFunds {
                                            balance,
                                            amount: t.amount,
                                        })
                                    }
                                    SendOutcome::UnknownCity => {
                                        Outcome::Failed(FailReason::UnknownCity)
                                    }
                                }
                            }
                            _ => Outcome::Failed(FailReason::UnknownCity),
                        }
                    };
                    b.effects.outcomes.push((t.id, outcome));
                }
                CrossOp::Relay(bytes) => {
                    // A relay that does not decode, or arrives where cross-city transfers
                    // are off, moves nothing (admission refuses undecodable ones).
                    let (Some(setup), Ok(relay)) = (setup, CrossRelay::decode(bytes)) else {
                        continue;
                    };
                    let book = book.get_or_insert_with(|| CrossBook::new(setup.city.clone()));
                    let cert_hash = *blake3::hash(&relay.checkpoint).as_bytes();
                    let cert = Arc::new(relay.checkpoint.clone());
                    let verified =
                        |kind, id, item: &RelayItem, proof: &StatementProof| VerifiedProof {
                            kind,
                            id,
                            cert_hash,
                            cert: cert.clone(),
                            rest: crate::relay::cross_proof(
                                relay.from_city.clone(),
                                Vec::new(),
                                item.clone(),
                                proof.clone(),
                            ),
                        };
                    for (item, proof) in &relay.items {
                        let proven = Proven {
                            certs: &*setup.certs,
                            checkpoint: &relay.checkpoint,
                            proof,
                        };
                        let mut funds = FundsOf {
                            b: &mut *b,
                            err: None,
                        };
                        match item {
                            RelayItem::Out(t) => {
                                let msg = Certified {
                                    body: t.clone(),
                                    cert: Vec::new(),
                                };
                                if let Ok(answer) = book.receive(&mut funds, &msg, at_ms, &proven) {
                                    proofs.push(verified(
                                        ProofKind::TransferOut,
                                        t.id,
                                        item,
                                        proof,
                                    ));
                                    entries.push(StatementEntry {
                                        kind: 2,
                                        id: t.id,
                                        to_city: t.from_city.clone(),
                                        statement: answer.statement(),
                                    });
                                }
                            }
                            RelayItem::Answer { answer, .. } => {
                                let msg = Certified {
                                    body: answer.clone(),
                                    cert: Vec::new(),
                                };
                                if let Ok(Settled::Completed | Settled::Refunded) =
                                    book.settle(&mut funds, &msg, &proven)
                                {
                                    settled.push(answer.id);
                                    proofs.push(verified(
                                        ProofKind::Answer,
                                        answer.id,
                                        item,
                                        proof,
                                    ));
                                }
                            }
                        }
                        if let Some(e) = funds.err {
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(settled)
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

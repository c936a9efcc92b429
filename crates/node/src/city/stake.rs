//! The durable DPoS applier of a representative: the city's one [`DposState`], fed with the
//! verified txs of every committed checkpoint in sequence order, persisted in
//! `<data_dir>/stake.redb`, with the dpos state root recorded per checkpoint.
//!
//! - **Deterministic**: the outcome depends only on the state, the checkpoint's agreed
//!   time and its txs in commit order. A system tx that the rules refuse (overdraft, early
//!   unbond, double claim, replayed nonce, evidence against an honest node, …) is a no-op
//!   with a typed reason in the [`CommitReport`], identical on every representative; other
//!   kinds of tx are not dpos's and are skipped.
//! - **Epochs**: after each checkpoint's txs, [`DposState::advance_term`] runs with the
//!   checkpoint's time, so the election's winners take over at the first checkpoint
//!   boundary at or after the term's end on every representative alike.
//! - **Genesis**: term 0 starts at the time of checkpoint 0 (the first agreed time there
//!   is); before it the store holds no state.
//! - **Durable and idempotent**: checkpoint `seq` is applied in one redb transaction that
//!   writes the snapshot, the root after `seq` and `next_seq = seq + 1`; a replayed `seq`
//!   changes nothing and answers the root recorded for it; a skipped `seq` is refused.
//! - **Keys**: the public key of every account that signed an applied system tx is kept, so
//!   the elected representatives can be turned into a consensus [`Committee`].

use crate::runtime::{db_err, open_db};
use crate::{Error, Result};
use dag_core::consensus::Committee;
use dag_core::execution::{ApplyError, CommitApplier};
use dag_core::{AccountId, CityId, Hash32, SignedTx, TxId, TxKind, VerifiedTx};
use dpos::{ApplyCtx, DposState, Outcome, VerifiedSystemTx};
use parking_lot::Mutex;
use pqc::MlDsa87;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `"snapshot"` → `DposState::snapshot`; `"next_seq"` → u64 LE.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("stake_meta");
/// Checkpoint sequence → dpos state root after applying it.
const ROOTS: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("stake_roots");
/// Account id → ML-DSA-87 public key (accounts that signed an applied system tx, and the
/// genesis members).
const KEYS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("stake_keys");

/// The name this state machine goes by in the combined checkpoint state root.
pub const STAKE_APPLIER: &str = "dpos";

/// Why the stake applier refused to open or to apply.
#[derive(Debug, thiserror::Error)]
pub enum StakeError {
    /// The genesis does not make a valid dpos state.
    #[error("dpos genesis: {0}")]
    Genesis(#[source] dpos::Error),
    /// The stored snapshot does not restore (or a stored field is malformed).
    #[error("stake store {path}: stored state is corrupt: {reason}")]
    Corrupt {
        /// Database file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint would be skipped.
    #[error("stake applier: checkpoint {seq} arrived before {expected}")]
    Gap {
        /// Offered sequence.
        seq: u64,
        /// Expected sequence.
        expected: u64,
    },
    /// The term change itself failed (an arithmetic overflow in the rules' time).
    #[error("epoch switch at checkpoint {seq}: {source}")]
    EpochSwitch {
        /// The checkpoint.
        seq: u64,
        /// The rule's error.
        source: dpos::Error,
    },
    /// No state yet: nothing was committed (term 0 starts at checkpoint 0).
    #[error("no dpos state before the first checkpoint")]
    NotStarted,
    /// An elected representative's public key is unknown (it never signed a system tx and
    /// is not a genesis member), so it cannot be made a committee member.
    #[error("representative {0} has no known public key")]
    UnknownKey(AccountId),
    /// The elected set does not make a committee (empty, or zero stake).
    #[error("the elected representatives do not form a committee: {0}")]
    BadCommittee(&'static str),
}

/// What applying one checkpoint did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitReport {
    /// The checkpoint.
    pub seq: u64,
    /// The dpos state root after it.
    pub root: Hash32,
    /// It had been applied before (a replay): nothing changed.
    pub replay: bool,
    /// Applied system txs, in commit order, with what they did.
    pub applied: Vec<(TxId, Outcome)>,
    /// System txs the rules refused (deterministic no-ops), with the reason.
    pub rejected: Vec<(TxId, dpos::Error)>,
    /// The term switch this checkpoint triggered, if any.
    pub elected: Option<(u64, Vec<AccountId>)>,
}

/// How many recent tx verdicts [`StakeStore::verdict`] remembers.
const RECENT_VERDICTS: usize = 4_096;

struct Inner {
    /// None until checkpoint 0 (term 0 starts at its time).
    state: Option<DposState>,
    /// `state`'s root (computed once per applied checkpoint, not per read).
    root: Option<Hash32>,
    /// The election's winners on `state` (account, stake), computed at the first read
    /// after a checkpoint applied (the stake reads' `next`).
    election: Option<Vec<(AccountId, u64)>>,
    next_seq: u64,
    keys: BTreeMap<AccountId, Vec<u8>>,
    /// Verdicts on the most recent system txs (true = applied), oldest first.
    recent: std::collections::VecDeque<(TxId, bool)>,
}

/// The durable DPoS state of one representative (see the module docs).
pub struct StakeStore {
    db: Database,
    path: PathBuf,
    genesis: dpos::Genesis,
    inner: Mutex<Inner>,
    applied_upto: tokio::sync::watch::Sender<u64>,
    /// The ledger whose accounts keep the nonces (one per account across kinds), once the
    /// store is driven through it ([`StakeStore::use_ledger_nonces`]).
    nonce_book: std::sync::OnceLock<Arc<ledger::Ledger>>,
}

impl std::fmt::Debug for StakeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StakeStore")
            .field("path", &self.path)
            .field("next_seq", &self.next_seq())
            .finish()
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    StakeError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
    .into()
}

/// The dpos genesis of a city's first committee: each member a full node self-bonded with
/// its genesis stake in whole tokens (`stake × units_per_token`), under `config`'s rules.
/// Liquid balances are the ledger's (the genesis file's `accounts`), so the dpos state holds
/// none. Its `time_ms` is set by the store at checkpoint 0. Also returns the members'
/// public keys.
pub fn dpos_genesis_of(
    city: &genesis::CityCommittee,
    config: dpos::DposConfig,
) -> Result<(dpos::Genesis, Vec<Vec<u8>>)> {
    let mut g = dpos::Genesis {
        config,
        time_ms: 0,
        balances: Vec::new(),
        nodes: Vec::new(),
        bonds: Vec::new(),
    };
    let mut keys = Vec::new();
    for a in city.committee.authorities() {
        let acc = AccountId::from_bytes(*a.id.as_bytes());
        let amount = a
            .stake
            .checked_mul(g.config.units_per_token)
            .ok_or(StakeError::Genesis(dpos::Error::Overflow {
                what: "genesis stake in base units",
            }))?;
        g.nodes
            .push((acc, dpos::NodeKind::Full, dpos::Metrics::default()));
        g.bonds.push(dpos::GenesisBond {
            delegator: acc,
            validator: acc,
            amount,
        });
        keys.push(a.public_key.clone());
    }
    Ok((g, keys))
}

impl StakeStore {
    /// Opens (or creates) the store at `path`. `genesis` (its `time_ms` is ignored) is
    /// checked now and applied at checkpoint 0; `genesis_keys` are the public keys of the
    /// genesis members. A reopened store restores its snapshot and checks every invariant.
    pub fn open(path: &Path, genesis: dpos::Genesis, genesis_keys: Vec<Vec<u8>>) -> Result<Self> {
        DposState::genesis(genesis.clone()).map_err(StakeError::Genesis)?;
        let db = open_db(path, |w| {
            w.open_table(META)?;
            w.open_table(ROOTS)?;
            w.open_table(KEYS)?;
            Ok(())
        })?;
        let err = db_err(path);
        let mut keys: BTreeMap<AccountId, Vec<u8>> = genesis_keys
            .into_iter()
            .map(|k| (AccountId::from_public_key(&k), k))
            .collect();
        let (state, next_seq) = {
            let r = db.begin_read().map_err(|e| err(e.into()))?;
            let meta = r.open_table(META).map_err(|e| err(e.into()))?;
            let next_seq = match meta.get("next_seq").map_err(|e| err(e.into()))? {
                None => 0,
                Some(v) => u64::from_le_bytes(
                    v.value()
                        .try_into()
                        .map_err(|_| corrupt(path, "next_seq is not 8 bytes"))?,
                ),
            };
            let state = match meta.get("snapshot").map_err(|e| err(e.into()))? {
                None => None,
                Some(v) => Some(
                    DposState::restore(v.value())
                        .map_err(|e| corrupt(path, format!("snapshot: {e}")))?,
                ),
            };
            if state.is_none() != (next_seq == 0) {
                return Err(corrupt(path, "snapshot and next_seq disagree"));
            }
            let kt = r.open_table(KEYS).map_err(|e| err(e.into()))?;
            for row in kt.iter().map_err(|e| err(e.into()))? {
                let (k, v) = row.map_err(|e| err(e.into()))?;
                let acc = AccountId::from_bytes(*k.value());
                if AccountId::from_public_key(v.value()) != acc {
                    return Err(corrupt(path, format!("key of {acc} does not hash to it")));
                }
                keys.insert(acc, v.value().to_vec());
            }
            (state, next_seq)
        };
        Ok(StakeStore {
            db,
            path: path.to_path_buf(),
            genesis,
            inner: Mutex::new(Inner {
                root: state.as_ref().map(DposState::state_root),
                election: None,
                state,
                next_seq,
                keys,
                recent: std::collections::VecDeque::new(),
            }),
            applied_upto: tokio::sync::watch::channel(next_seq).0,
            nonce_book: std::sync::OnceLock::new(),
        })
    }

    /// The first checkpoint sequence not applied yet.
    pub fn next_seq(&self) -> u64 {
        self.inner.lock().next_seq
    }

    /// Wakes after every applied checkpoint; the value is [`StakeStore::next_seq`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_upto.subscribe()
    }

    /// The verdict on a recently committed system tx: `Some(true)` applied, `Some(false)`
    /// refused by the rules, `None` not seen (yet, or too long ago).
    pub fn verdict(&self, tx: &TxId) -> Option<bool> {
        let inner = self.inner.lock();
        inner
            .recent
            .iter()
            .rev()
            .find(|(id, _)| id == tx)
            .map(|(_, ok)| *ok)
    }

    /// Declares that checkpoints are applied through `ledger`
    /// ([`StakeStore::apply_commit_with_ledger`]), whose accounts keep the one nonce per
    /// account that transfers and system txs share: [`StakeStore::next_nonce`] reads it
    /// there. A second call is ignored.
    pub fn use_ledger_nonces(&self, ledger: Arc<ledger::Ledger>) {
        let _ = self.nonce_book.set(ledger);
    }

    /// The nonce `account`'s next system tx should carry: the ledger account's next nonce
    /// (above every nonce it used, for any kind of tx) when the ledger keeps nonces, else
    /// dpos's own counter (0 before checkpoint 0).
    pub fn next_nonce(&self, account: &AccountId) -> Result<u64> {
        if let Some(ledger) = self.nonce_book.get() {
            return Ok(ledger
                .account(account)
                .map_err(|source| Error::Ledger { source })?
                .map_or(0, |a| a.next_nonce));
        }
        let inner = self.inner.lock();
        Ok(inner.state.as_ref().map_or(0, |s| s.next_nonce(account)))
    }

    /// The current dpos state root (`None` before checkpoint 0).
    pub fn root(&self) -> Option<Hash32> {
        self.inner.lock().root
    }

    /// The dpos state root recorded after checkpoint `seq`.
    pub fn root_at(&self, seq: u64) -> Result<Option<Hash32>> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(ROOTS).map_err(|e| err(e.into()))?;
        Ok(t.get(seq)
            .map_err(|e| err(e.into()))?
            .map(|v| Hash32(*v.value())))
    }

    /// Runs `f` on the current state (reads: balances, bonds, rewards, term, …).
    pub fn read<T>(&self, f: impl FnOnce(&DposState) -> T) -> Result<T> {
        let inner = self.inner.lock();
        let s = inner.state.as_ref().ok_or(StakeError::NotStarted)?;
        Ok(f(s))
    }

    /// The consensus endpoints full nodes published (`SetEndpoint`), by node id.
    pub fn endpoints(&self) -> Result<BTreeMap<dag_core::NodeId, String>> {
        self.read(|s| {
            s.endpoints()
                .map(|(a, e)| (dag_core::NodeId::from_bytes(*a.as_bytes()), e.to_string()))
                .collect()
        })
    }

    /// The public key of `account`, if it signed an applied system tx or is a genesis member.
    pub fn public_key(&self, account: &AccountId) -> Option<Vec<u8>> {
        self.inner.lock().keys.get(account).cloned()
    }

    /// The consensus committee of the current term: the elected representatives, weighted
    /// by the stake bonded to them (base units), in election order.
    pub fn committee(&self) -> Result<Committee> {
        let inner = self.inner.lock();
        let s = inner.state.as_ref().ok_or(StakeError::NotStarted)?;
        committee_of(s, &inner.keys)
    }

    /// Applies checkpoint `seq` (blocking: one fsync) with liquid balances kept in the dpos
    /// state itself. See the module docs.
    pub fn apply_commit(&self, seq: u64, at_ms: u64, txs: &[VerifiedTx]) -> Result<CommitReport> {
        let mut inner = self.inner.lock();
        if let Some(r) = self.settled(&inner, seq)? {
            return Ok(r);
        }
        let prepared = self.prepare(&inner, seq, at_ms, txs, None)?;
        self.persist(&mut inner, prepared)
    }

    /// Applies checkpoint `seq` with liquid balances in the ledger: the ledger's transfers
    /// and dpos's balance moves (bond debits, withdrawal and claim credits) are one atomic
    /// ledger write ([`ledger::Ledger::apply_with`]); the dpos result is recorded as pending
    /// inside that write's hook and promoted after it, so a crash between the two files is
    /// finished on restart from the pending record, never re-executed against moved
    /// balances.
    pub fn apply_commit_with_ledger(
        &self,
        ledger: &ledger::Ledger,
        seq: u64,
        at_ms: u64,
        txs: &[VerifiedTx],
    ) -> Result<CommitReport> {
        let mut inner = self.inner.lock();
        if let Some(r) = self.settled(&inner, seq)? {
            return Ok(r);
        }
        if ledger.next_seq() > seq {
            // The ledger holds this checkpoint (and our moves): finish from the pending record.
            let prepared = self.read_pending(seq)?;
            return self.persist(&mut inner, prepared);
        }
        let mut prepared = None;
        let mut failure: Option<Error> = None;
        let ledger_result = ledger.apply_with(seq, at_ms, txs, |b| {
            let mut book = LedgerBook {
                inner: b,
                failure: std::cell::RefCell::new(None),
            };
            let p = self.prepare(&inner, seq, at_ms, txs, Some(&mut book));
            if let Some(e) = book.failure.into_inner() {
                return Err(e);
            }
            let p = match p.and_then(|p| self.write_pending(&p).map(|()| p)) {
                Ok(p) => p,
                Err(e) => {
                    failure = Some(e);
                    return Err(ledger::Error::Corrupt {
                        path: self.path.clone(),
                        table: "stake pending",
                        reason: "the dpos side of the checkpoint failed (see the stake error)",
                    });
                }
            };
            prepared = Some(p);
            Ok(())
        });
        if let Some(e) = failure {
            return Err(e);
        }
        ledger_result.map_err(|source| Error::Ledger { source })?;
        let prepared = match prepared {
            Some(p) => p,
            // The ledger had applied `seq` already (a race with its own applier).
            None => self.read_pending(seq)?,
        };
        self.persist(&mut inner, prepared)
    }

    /// For `seq` below the next sequence, the recorded root; above it, a gap error.
    fn settled(&self, inner: &Inner, seq: u64) -> Result<Option<CommitReport>> {
        if seq < inner.next_seq {
            let root = self
                .root_at(seq)?
                .ok_or_else(|| corrupt(&self.path, format!("no root recorded for {seq}")))?;
            return Ok(Some(CommitReport {
                seq,
                root,
                replay: true,
                applied: Vec::new(),
                rejected: Vec::new(),
                elected: None,
            }));
        }
        if seq > inner.next_seq {
            return Err(StakeError::Gap {
                seq,
                expected: inner.next_seq,
            }
            .into());
        }
        Ok(None)
    }

    /// Executes checkpoint `seq` on a copy of the state (nothing is written).
    fn prepare(
        &self,
        inner: &Inner,
        seq: u64,
        at_ms: u64,
        txs: &[VerifiedTx],
        mut book: Option<&mut dyn dpos::LiquidBalances>,
    ) -> Result<Prepared> {
        let mut state = match &inner.state {
            Some(s) => s.clone(),
            None => DposState::genesis(dpos::Genesis {
                time_ms: at_ms,
                ..self.genesis.clone()
            })
            .map_err(StakeError::Genesis)?,
        };
        let ctx = ApplyCtx { now_ms: at_ms };
        let mut applied = Vec::new();
        let mut rejected = Vec::new();
        let mut new_keys: Vec<(AccountId, Vec<u8>)> = Vec::new();
        for tx in txs {
            if tx.tx().kind != TxKind::SystemTx || ledger::is_relay(&tx.tx().payload) {
                continue;
            }
            let r = VerifiedSystemTx::from_verified_tx(tx, &MlDsa87).and_then(|stx| {
                match book.as_deref_mut() {
                    Some(b) => state.apply_with(&stx, &ctx, b),
                    None => state.apply(&stx, &ctx),
                }
            });
            match r {
                Ok(outcome) => {
                    let sender = tx.tx().sender;
                    if !inner.keys.contains_key(&sender)
                        && !new_keys.iter().any(|(a, _)| *a == sender)
                    {
                        new_keys.push((sender, tx.signed().public_key.clone()));
                    }
                    applied.push((tx.id(), outcome));
                }
                Err(e) => rejected.push((tx.id(), e)),
            }
        }
        let elected = match state
            .advance_term(at_ms)
            .map_err(|source| StakeError::EpochSwitch { seq, source })?
        {
            Some(Outcome::Elected {
                term,
                representatives,
            }) => Some((term, representatives)),
            _ => None,
        };
        let snapshot = state.snapshot();
        Ok(Prepared {
            seq,
            root: Hash32::digest(&snapshot),
            snapshot,
            state,
            applied,
            rejected,
            elected,
            new_keys,
        })
    }

    /// Records `p` as the pending result of its checkpoint (see
    /// [`StakeStore::apply_commit_with_ledger`]).
    fn write_pending(&self, p: &Prepared) -> Result<()> {
        let mut w = dag_core::Writer::default();
        w.u64(p.seq)
            .u32(u32::try_from(p.snapshot.len()).unwrap_or(u32::MAX));
        w.raw(&p.snapshot);
        w.u32(u32::try_from(p.new_keys.len()).unwrap_or(u32::MAX));
        for (_, pk) in &p.new_keys {
            w.u32(u32::try_from(pk.len()).unwrap_or(u32::MAX)).raw(pk);
        }
        let bytes = w.finish();
        let err = db_err(&self.path);
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| err(e.into()))?;
            meta.insert("pending", bytes.as_slice())
                .map_err(|e| err(e.into()))?;
        }
        tx.commit().map_err(|e| err(e.into()))?;
        Ok(())
    }

    /// The pending result recorded for `seq`.
    fn read_pending(&self, seq: u64) -> Result<Prepared> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let meta = r.open_table(META).map_err(|e| err(e.into()))?;
        let v = meta
            .get("pending")
            .map_err(|e| err(e.into()))?
            .ok_or_else(|| {
                corrupt(
                    &self.path,
                    format!("the ledger holds checkpoint {seq} but dpos has no pending result"),
                )
            })?;
        let bytes = v.value();
        let bad = |e: dag_core::DecodeError| corrupt(&self.path, format!("pending record: {e}"));
        let mut rd = dag_core::Reader::new(bytes);
        let pseq = rd.u64("pending seq").map_err(bad)?;
        if pseq != seq {
            return Err(corrupt(
                &self.path,
                format!("pending record is for {pseq}, expected {seq}"),
            ));
        }
        let n = rd.u32("snapshot length").map_err(bad)? as usize;
        let snapshot = rd.take(n, "snapshot").map_err(bad)?.to_vec();
        let mut new_keys = Vec::new();
        for _ in 0..rd.u32("keys").map_err(bad)? {
            let n = rd.u32("key length").map_err(bad)? as usize;
            let pk = rd.take(n, "key").map_err(bad)?.to_vec();
            new_keys.push((AccountId::from_public_key(&pk), pk));
        }
        rd.finish().map_err(bad)?;
        let state = DposState::restore(&snapshot)
            .map_err(|e| corrupt(&self.path, format!("pending snapshot: {e}")))?;
        let elected = None;
        Ok(Prepared {
            seq,
            root: Hash32::digest(&snapshot),
            snapshot,
            state,
            applied: Vec::new(),
            rejected: Vec::new(),
            elected,
            new_keys,
        })
    }

    /// Writes `p` (snapshot, root, next sequence, new keys; clears any pending record) in
    /// one transaction, then installs it in memory.
    fn persist(&self, inner: &mut Inner, p: Prepared) -> Result<CommitReport> {
        let Prepared {
            seq,
            root,
            snapshot,
            state,
            applied,
            rejected,
            elected,
            new_keys,
        } = p;
        let err = db_err(&self.path);
        let w = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut meta = w.open_table(META).map_err(|e| err(e.into()))?;
            meta.insert("snapshot", snapshot.as_slice())
                .map_err(|e| err(e.into()))?;
            meta.insert("next_seq", (seq + 1).to_le_bytes().as_slice())
                .map_err(|e| err(e.into()))?;
            meta.remove("pending").map_err(|e| err(e.into()))?;
            let mut roots = w.open_table(ROOTS).map_err(|e| err(e.into()))?;
            roots.insert(seq, &root.0).map_err(|e| err(e.into()))?;
            let mut kt = w.open_table(KEYS).map_err(|e| err(e.into()))?;
            for (acc, pk) in &new_keys {
                kt.insert(acc.as_bytes(), pk.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
        }
        w.commit().map_err(|e| err(e.into()))?;
        inner.state = Some(state);
        inner.root = Some(root);
        inner.election = None;
        inner.next_seq = seq + 1;
        inner.keys.extend(new_keys);
        let verdicts = applied
            .iter()
            .map(|(id, _)| (*id, true))
            .chain(rejected.iter().map(|(id, _)| (*id, false)));
        inner.recent.extend(verdicts);
        while inner.recent.len() > RECENT_VERDICTS {
            inner.recent.pop_front();
        }
        self.applied_upto.send_replace(seq + 1);
        if !rejected.is_empty() {
            metrics::counter!("citychain_stake_rejected_total").increment(rejected.len() as u64);
        }
        metrics::counter!("citychain_stake_applied_total").increment(applied.len() as u64);
        if let Some((term, reps)) = &elected {
            tracing::info!(
                seq,
                term,
                representatives = reps.len(),
                "dpos term switched"
            );
        }
        Ok(CommitReport {
            seq,
            root,
            replay: false,
            applied,
            rejected,
            elected,
        })
    }
}

/// The DPoS state machine of the execution feed: drives the ledger's checkpoint write so
/// the liquid balances are the ledger's ([`StakeStore::apply_commit_with_ledger`]). Its name
/// ([`STAKE_APPLIER`], `"dpos"`) sorts before `"ledger"`, so the feed runs it first and the
/// ledger's own applier then finds the checkpoint applied (and answers its root).
#[derive(Debug)]
pub struct DposApplier {
    /// The dpos state.
    pub stake: Arc<StakeStore>,
    /// The ledger holding liquid balances.
    pub ledger: Arc<ledger::Ledger>,
}

impl CommitApplier for DposApplier {
    fn name(&self) -> &'static str {
        STAKE_APPLIER
    }
    fn next_seq(&self) -> u64 {
        self.stake.next_seq()
    }
    fn apply(
        &self,
        seq: u64,
        at_ms: u64,
        txs: &[VerifiedTx],
    ) -> std::result::Result<Hash32, ApplyError> {
        self.stake
            .apply_commit_with_ledger(&self.ledger, seq, at_ms, txs)
            .map(|r| r.root)
            .map_err(|e| match e {
                Error::Stake(StakeError::Gap { seq, expected }) => ApplyError::Gap {
                    name: STAKE_APPLIER,
                    seq,
                    expected,
                },
                other => ApplyError::Storage {
                    name: STAKE_APPLIER,
                    seq,
                    reason: other.to_string(),
                },
            })
    }
}

/// A checkpoint's dpos result before it is written.
struct Prepared {
    seq: u64,
    root: Hash32,
    snapshot: Vec<u8>,
    state: DposState,
    applied: Vec<(TxId, Outcome)>,
    rejected: Vec<(TxId, dpos::Error)>,
    elected: Option<(u64, Vec<AccountId>)>,
    new_keys: Vec<(AccountId, Vec<u8>)>,
}

/// The ledger's balances inside its checkpoint write, as dpos's [`dpos::LiquidBalances`].
/// A storage failure is kept (the tx looks refused) and ends the hook with that error, so
/// the whole checkpoint is retried rather than decided on a failed read.
struct LedgerBook<'a, 'b> {
    inner: &'a mut ledger::Balances<'b>,
    failure: std::cell::RefCell<Option<ledger::Error>>,
}

impl LedgerBook<'_, '_> {
    fn fail(&self, e: ledger::Error) -> dpos::Error {
        self.failure.borrow_mut().get_or_insert(e);
        dpos::Error::Overflow {
            what: "ledger unavailable",
        }
    }
}

impl dpos::LiquidBalances for LedgerBook<'_, '_> {
    fn balance(&self, account: &AccountId) -> u64 {
        // A failed read is kept and fails the whole checkpoint (see the type docs).
        self.inner.balance(account).unwrap_or_else(|e| {
            self.fail(e);
            0
        })
    }
    fn credit(&mut self, account: &AccountId, amount: u64) -> dpos::Result<u64> {
        match self.inner.credit(account, amount) {
            Ok(()) => Ok(self.balance(account)),
            Err(ledger::Error::Overflow { .. }) => Err(dpos::Error::Overflow { what: "balance" }),
            Err(e) => Err(self.fail(e)),
        }
    }
    fn debit(&mut self, account: &AccountId, amount: u64) -> dpos::Result<u64> {
        match self.inner.debit(account, amount) {
            Ok(()) => Ok(self.balance(account)),
            Err(ledger::Error::Insufficient { balance, .. }) => {
                Err(dpos::Error::InsufficientBalance {
                    account: *account,
                    needed: amount,
                    available: balance,
                })
            }
            Err(e) => Err(self.fail(e)),
        }
    }
    fn keeps_nonces(&self) -> bool {
        true
    }
    fn nonce_used(&self, account: &AccountId, nonce: u64) -> bool {
        // A failed read is kept and fails the whole checkpoint (see the type docs).
        self.inner.nonce_used(account, nonce).unwrap_or_else(|e| {
            self.fail(e);
            true
        })
    }
    fn use_nonce(&mut self, account: &AccountId, nonce: u64, tx: &TxId) -> dpos::Result<()> {
        match self.inner.use_nonce(account, nonce, tx) {
            Ok(()) => Ok(()),
            Err(ledger::Error::NonceReused { account, nonce }) => {
                Err(dpos::Error::NonceReused { account, nonce })
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

/// The consensus committee of `state`'s current term (see [`StakeStore::committee`]).
pub fn committee_of(state: &DposState, keys: &BTreeMap<AccountId, Vec<u8>>) -> Result<Committee> {
    let mut members = Vec::new();
    for (acc, stake) in state.representative_stakes() {
        let pk = keys.get(&acc).ok_or(StakeError::UnknownKey(acc))?;
        if stake == 0 {
            return Err(StakeError::BadCommittee("a representative has no stake").into());
        }
        members.push((pk.clone(), stake));
    }
    Committee::new(members)
        .ok_or_else(|| StakeError::BadCommittee("empty, repeated or overflowing stake").into())
}

/// A signed `DoubleSign` system tx carrying `evidence`, from the representative `key` that
/// caught it (`nonce` is its next dpos nonce).
pub fn double_sign_tx(
    evidence: dpos::DoubleSignEvidence,
    key: &pqc::Keypair,
    nonce: u64,
    timestamp_ms: u64,
    city: CityId,
) -> SignedTx {
    dpos::sign_system_tx(
        &dpos::SystemPayload::DoubleSign(evidence),
        nonce,
        timestamp_ms,
        city,
        key,
    )
}

pub(crate) mod reads;

#[cfg(test)]
mod tests;

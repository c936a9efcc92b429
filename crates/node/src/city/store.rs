//! The city node's durable store of admitted txs, on redb, with group commit.
//!
//! Admission is decided inside one write transaction per group: a tx is refused if its id is
//! already stored (replay) or its (sender, nonce) was used by another tx. Each redb commit is
//! durable (fsync), so many admissions share one commit; a caller is answered only after the
//! commit that holds its tx, so nothing acknowledged is lost.
//!
//! After an I/O error (ENOSPC, EIO) redb refuses every later write until the database is
//! closed and reopened. The store then refuses groups at once (`StoreCommit`, retryable,
//! nothing admitted), and [`TxStore::heal`] (driven by [`TxStore::spawn_watchdog`], which also
//! flips gRPC health to NOT_SERVING and back) reopens the file and checks that every tx it
//! acknowledged is still there.
//!
//! The store is a *working* store: once a tx is ordered, executed, archived and (for a
//! cross-city transfer) settled, the city's pruner ([`super::prune`]) removes its body with
//! [`TxStore::prune`]; its (sender, nonce) stays, so replay protection stands (a pruned tx
//! submitted again is still a `DuplicateTx`), and `GetTx` answers it from the shards or
//! the archive. The pruner's progress (next checkpoint to examine, txs it must look at
//! again) lives in the same file and changes in the same transaction as the bodies it
//! removes, so a crash mid-prune loses nothing and repeats nothing. Gauge:
//! `citychain_working_store_txs` (bodies stored).

use crate::runtime::db_err;
use crate::{Error, Result};
use dag_core::{SignedTx, TxId, VerifiedTx};
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use storage::FileCap;
use tokio::sync::{mpsc, oneshot};

/// tx id → canonical signed tx bytes.
const TXS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("txs");
/// sender (32) ‖ nonce (u64 BE) → tx id.
const NONCES: TableDefinition<&[u8; 40], &[u8; 32]> = TableDefinition::new("nonces");

/// The pruner's progress: `"next_seq"` → the first checkpoint sequence it has not examined.
const PRUNE: TableDefinition<&str, u64> = TableDefinition::new("prune");
/// Txs the pruner examined but could not prune yet (not archived or not settled): id → the
/// checkpoint that ordered it.
const DEFERRED: TableDefinition<&[u8; 32], u64> = TableDefinition::new("prune_deferred");

/// Most admissions committed in one redb transaction.
const MAX_GROUP: usize = 2048;

/// Least time between the starts of two group commits. A commit's cost is mostly fixed (page
/// writes of the tree's spine, the header, an fsync), so under load the writer lets
/// admissions gather for this long after the previous commit began instead of committing
/// every one or two; an admission after an idle spell is committed at once. It bounds the
/// commits to ~330/s and adds at most this much to an admission's latency.
const COMMIT_SPACING: Duration = Duration::from_millis(3);

/// Why an admission was refused by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// This tx id is already stored.
    DuplicateTx,
    /// The (sender, nonce) pair belongs to the stored tx `other`.
    NonceReused {
        /// The tx that used the nonce first.
        other: TxId,
    },
}

/// The (sender, nonce) key of `tx` in the nonce table.
pub(crate) fn nonce_key(tx: &SignedTx) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(tx.tx.sender.as_bytes());
    k[32..].copy_from_slice(&tx.tx.nonce.to_be_bytes());
    k
}

struct WriteReq {
    tx: VerifiedTx,
    reply: oneshot::Sender<Result<std::result::Result<(), Conflict>>>,
}

/// Durable store of admitted txs. Cloning shares the same database and writer; when the
/// last clone is dropped the writer finishes its group and the database file is released.
#[derive(Clone)]
pub struct TxStore {
    db: Arc<Shared>,
    writer: mpsc::Sender<WriteReq>,
    path: Arc<std::path::PathBuf>,
    // Declared last: fields drop in order, so the writer's sender above is gone (and the
    // thread can finish) before the closer joins it.
    _closer: Arc<Closer>,
}

/// The database and its health, shared by the handles, the writer and the watchdog.
struct Shared {
    /// `None` only while [`TxStore::heal`] swaps the file.
    db: RwLock<Option<Database>>,
    path: std::path::PathBuf,
    cap: FileCap,
    /// Shared with the watchdog, which must not keep the database open by checking it.
    failed: Arc<AtomicBool>,
    failure: Mutex<Option<String>>,
    /// Txs stored: counted at open, plus every acknowledged insert.
    stored: AtomicU64,
}

impl Shared {
    fn read<R>(&self, f: impl FnOnce(&Database) -> Result<R>) -> Result<R> {
        let g = self.db.read();
        let db = g.as_ref().ok_or(Error::StoreClosed)?;
        f(db)
    }

    /// Publishes the number of bodies stored (`citychain_working_store_txs`).
    fn publish(&self) {
        metrics::gauge!("citychain_working_store_txs")
            .set(self.stored.load(Ordering::SeqCst) as f64);
    }

    fn fail(&self, e: &redb::Error) {
        if storage::is_io_failure(e) {
            let mut g = self.failure.lock();
            if g.is_none() {
                *g = Some(e.to_string());
            }
            self.failed.store(true, Ordering::SeqCst);
        }
    }
}

/// Opens (or creates) the txs database at `path` under `cap`, tables created.
fn open_file(path: &Path, cap: &FileCap) -> Result<Database> {
    crate::runtime::open_db_capped(path, cap, |w| {
        w.open_table(TXS)?;
        w.open_table(NONCES)?;
        w.open_table(PRUNE)?;
        w.open_table(DEFERRED)?;
        Ok(())
    })
}

/// One pruning step, applied in one durable transaction by [`TxStore::prune`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PruneStep {
    /// Bodies to remove (their (sender, nonce) stays); also leave the deferred list.
    pub(crate) remove: Vec<TxId>,
    /// Txs to look at again later, with the checkpoint that ordered each.
    pub(crate) defer: Vec<(TxId, u64)>,
    /// Deferred txs that no longer need looking at (their body is already gone).
    pub(crate) forget: Vec<TxId>,
    /// The first checkpoint not examined after this step (never moves back).
    pub(crate) next_seq: u64,
}

/// The pruner's durable progress, as [`TxStore::prune_state`] reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PruneState {
    /// The first checkpoint sequence not examined yet.
    pub(crate) next_seq: u64,
    /// Txs examined but not pruned yet, with their checkpoint.
    pub(crate) deferred: Vec<(TxId, u64)>,
}

fn count(db: &Database, path: &Path) -> Result<u64> {
    let err = db_err(path);
    let r = db.begin_read().map_err(|e| err(e.into()))?;
    let txs = r.open_table(TXS).map_err(|e| err(e.into()))?;
    txs.len().map_err(|e| err(e.into()))
}

/// Joins the writer thread when the last handle goes, so reopening the same file works.
struct Closer {
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for TxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxStore").field("path", &self.path).finish()
    }
}

impl TxStore {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_capped(path, FileCap::unlimited())
    }

    /// Like [`TxStore::open`], with the file's size limited by `cap` (past it, writes fail
    /// as on a full disk; raising the cap is "freeing space").
    pub fn open_capped(path: &Path, cap: FileCap) -> Result<Self> {
        let db = open_file(path, &cap)?;
        let stored = count(&db, path)?;
        let db = Arc::new(Shared {
            db: RwLock::new(Some(db)),
            path: path.to_path_buf(),
            cap,
            failed: Arc::new(AtomicBool::new(false)),
            failure: Mutex::new(None),
            stored: AtomicU64::new(stored),
        });
        db.publish();
        let (writer, rx) = mpsc::channel(MAX_GROUP * 4);
        let thread_db = db.clone();
        let thread_path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("txstore-writer".into())
            .spawn(move || writer_loop(thread_db, rx, thread_path))
            .map_err(|e| Error::Io {
                path: path.to_path_buf(),
                source: e,
            })?;
        Ok(TxStore {
            db,
            writer,
            path: Arc::new(path.to_path_buf()),
            _closer: Arc::new(Closer {
                thread: parking_lot::Mutex::new(Some(thread)),
            }),
        })
    }

    /// The limit on the file's size (shared: changing it takes effect at once).
    pub fn file_cap(&self) -> &FileCap {
        &self.db.cap
    }

    /// True while the store refuses writes after an I/O error (until [`TxStore::heal`]).
    pub fn is_failed(&self) -> bool {
        self.db.failed.load(Ordering::SeqCst)
    }

    /// Closes and reopens the database after an I/O error and checks that it holds every
    /// tx it acknowledged; returns that count, or `Ok(None)` if the store was not failed.
    /// On failure the store stays failed (the caller retries later).
    pub fn heal(&self) -> Result<Option<u64>> {
        heal(&self.db)
    }

    /// Watches the store: on an I/O error, gRPC health (`readiness`'s service and "") says
    /// NOT_SERVING and the store is reopened every `every` until that works; then SERVING
    /// again. Each transition is logged and counted. The task ends when the store is dropped.
    pub(crate) fn spawn_watchdog(
        &self,
        readiness: crate::runtime::Readiness,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Shared> = Arc::downgrade(&self.db);
        let failed_flag = self.db.failed.clone();
        let health = crate::runtime::StoreHealth::new(readiness, "txs");
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if weak.strong_count() == 0 {
                    break;
                }
                // Only a failed store is touched: holding it while healthy could keep the
                // file open past the last handle and race a restart on the same file.
                if !failed_flag.load(Ordering::SeqCst) {
                    // Healed by a direct `heal()` call, or still fine: no-op when up.
                    health.up(false).await;
                    continue;
                }
                let Some(shared) = weak.upgrade() else { break };
                if health.down().await {
                    tracing::error!(path = %shared.path.display(), failure = ?shared.failure.lock().clone(),
                        "tx store I/O error: NOT_SERVING, submissions refused until it reopens");
                }
                let s = shared.clone();
                match crate::runtime::run_blocking("tx store reopen", move || heal(&s)).await {
                    Ok(Ok(Some(n))) => {
                        health.up(true).await;
                        tracing::info!(path = %shared.path.display(), txs = n,
                            "tx store reopened, every acknowledged tx present: SERVING again");
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(path = %shared.path.display(), error = %e, "tx store still down");
                    }
                    Err(_) => break,
                }
            }
        })
    }

    /// Admits a verified tx durably, unless it is a replay. Returns after the commit.
    pub async fn admit(&self, tx: VerifiedTx) -> Result<std::result::Result<(), Conflict>> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(WriteReq { tx, reply })
            .await
            .map_err(|_| Error::StoreClosed)?;
        rx.await.map_err(|_| Error::StoreClosed)?
    }

    /// Takes back an admission that was never answered: the tx and its (sender, nonce) are
    /// removed in one durable commit, so the sender may submit it again. Used when the tx
    /// could not be Held (fewer than n distinct holders): the client gets a retryable error,
    /// and no admitted-but-unheld copy stays behind. `key` is the tx's [`nonce_key`]. Returns
    /// whether the tx was stored.
    pub(crate) async fn withdraw(&self, key: [u8; 40], id: &TxId) -> Result<bool> {
        let shared = self.db.clone();
        let path = self.path.clone();
        let id = *id;
        let res = crate::runtime::run_blocking("tx store withdraw", move || {
            let g = shared.db.read();
            let db = g.as_ref().ok_or(Error::StoreClosed)?;
            let err = db_err(&path);
            let run = || -> std::result::Result<bool, redb::Error> {
                let w = db.begin_write()?;
                let removed = {
                    let mut txs = w.open_table(TXS)?;
                    let removed = txs.remove(id.as_bytes())?.is_some();
                    let mut nonces = w.open_table(NONCES)?;
                    let owned = nonces
                        .get(&key)?
                        .is_some_and(|v| v.value() == id.as_bytes());
                    if owned {
                        nonces.remove(&key)?;
                    }
                    removed
                };
                w.commit()?;
                Ok(removed)
            };
            match run() {
                Ok(removed) => {
                    if removed {
                        shared.stored.fetch_sub(1, Ordering::SeqCst);
                        shared.publish();
                    }
                    Ok(removed)
                }
                Err(e) => {
                    shared.fail(&e);
                    Err(err(e))
                }
            }
        })
        .await;
        res?
    }

    /// Drops the stored body of `id` but keeps its (sender, nonce), so replay protection
    /// stands: for a tx whose shards hold it (the caller checks), the local copy is a cache.
    /// Returns whether a body was removed.
    pub(crate) async fn evict(&self, id: &TxId) -> Result<bool> {
        let shared = self.db.clone();
        let path = self.path.clone();
        let id = *id;
        crate::runtime::run_blocking("tx store evict", move || {
            let g = shared.db.read();
            let db = g.as_ref().ok_or(Error::StoreClosed)?;
            let run = || -> std::result::Result<bool, redb::Error> {
                let w = db.begin_write()?;
                let removed = w.open_table(TXS)?.remove(id.as_bytes())?.is_some();
                w.commit()?;
                Ok(removed)
            };
            match run() {
                Ok(removed) => {
                    if removed {
                        shared.stored.fetch_sub(1, Ordering::SeqCst);
                        shared.publish();
                    }
                    Ok(removed)
                }
                Err(e) => {
                    shared.fail(&e);
                    Err(db_err(&path)(e))
                }
            }
        })
        .await?
    }

    /// Which of `ids` still have their body here (one read).
    pub(crate) fn contains_all(&self, ids: &[TxId]) -> Result<Vec<bool>> {
        self.db.read(|db| {
            let err = db_err(&self.path);
            let r = db.begin_read().map_err(|e| err(e.into()))?;
            let t = r.open_table(TXS).map_err(|e| err(e.into()))?;
            ids.iter()
                .map(|id| Ok(t.get(id.as_bytes()).map_err(|e| err(e.into()))?.is_some()))
                .collect()
        })
    }

    /// The pruner's durable progress.
    pub(crate) fn prune_state(&self) -> Result<PruneState> {
        self.db.read(|db| {
            let err = db_err(&self.path);
            let r = db.begin_read().map_err(|e| err(e.into()))?;
            let p = r.open_table(PRUNE).map_err(|e| err(e.into()))?;
            let next_seq = p
                .get("next_seq")
                .map_err(|e| err(e.into()))?
                .map_or(0, |v| v.value());
            let d = r.open_table(DEFERRED).map_err(|e| err(e.into()))?;
            let mut deferred = Vec::new();
            for row in d.iter().map_err(|e| err(e.into()))? {
                let (k, v) = row.map_err(|e| err(e.into()))?;
                deferred.push((TxId::from_bytes(*k.value()), v.value()));
            }
            Ok(PruneState { next_seq, deferred })
        })
    }

    /// Applies one pruning step in one durable transaction (blocking: call it off the async
    /// runtime): the bodies in `step.remove` go (their (sender, nonce) stays), the deferred
    /// list and the next sequence change with them — all or nothing. Returns the number of
    /// bodies removed. The caller guarantees that every removed tx is held on light nodes
    /// and durably archived.
    pub(crate) fn prune(&self, step: &PruneStep) -> Result<u64> {
        let shared = &self.db;
        let g = shared.db.read();
        let db = g.as_ref().ok_or(Error::StoreClosed)?;
        let run = || -> std::result::Result<u64, redb::Error> {
            let w = db.begin_write()?;
            let mut removed = 0;
            {
                let mut txs = w.open_table(TXS)?;
                let mut deferred = w.open_table(DEFERRED)?;
                for id in &step.remove {
                    if txs.remove(id.as_bytes())?.is_some() {
                        removed += 1;
                    }
                    deferred.remove(id.as_bytes())?;
                }
                for id in &step.forget {
                    deferred.remove(id.as_bytes())?;
                }
                for (id, seq) in &step.defer {
                    deferred.insert(id.as_bytes(), *seq)?;
                }
                let mut p = w.open_table(PRUNE)?;
                let at = p.get("next_seq")?.map_or(0, |v| v.value());
                p.insert("next_seq", at.max(step.next_seq))?;
            }
            w.commit()?;
            Ok(removed)
        };
        match run() {
            Ok(removed) => {
                shared.stored.fetch_sub(removed, Ordering::SeqCst);
                shared.publish();
                Ok(removed)
            }
            Err(e) => {
                shared.fail(&e);
                Err(db_err(&self.path)(e))
            }
        }
    }

    /// Read-only replay check (the writer re-checks authoritatively).
    pub fn precheck(&self, tx: &SignedTx, id: &TxId) -> Result<std::result::Result<(), Conflict>> {
        self.db.read(|db| self.precheck_in(db, tx, id))
    }

    fn precheck_in(
        &self,
        db: &Database,
        tx: &SignedTx,
        id: &TxId,
    ) -> Result<std::result::Result<(), Conflict>> {
        let err = db_err(&self.path);
        let r = db.begin_read().map_err(|e| err(e.into()))?;
        let txs = r.open_table(TXS).map_err(|e| err(e.into()))?;
        if txs.get(id.as_bytes()).map_err(|e| err(e.into()))?.is_some() {
            return Ok(Err(Conflict::DuplicateTx));
        }
        let nonces = r.open_table(NONCES).map_err(|e| err(e.into()))?;
        if let Some(other) = nonces.get(&nonce_key(tx)).map_err(|e| err(e.into()))? {
            return Ok(Err(nonce_conflict(id, TxId::from_bytes(*other.value()))));
        }
        Ok(Ok(()))
    }

    /// Reads a stored tx, checking that its bytes hash to the id asked for.
    pub fn get(&self, id: &TxId) -> Result<Option<SignedTx>> {
        self.db.read(|db| self.get_in(db, id))
    }

    fn get_in(&self, db: &Database, id: &TxId) -> Result<Option<SignedTx>> {
        let err = db_err(&self.path);
        let r = db.begin_read().map_err(|e| err(e.into()))?;
        let txs = r.open_table(TXS).map_err(|e| err(e.into()))?;
        let Some(v) = txs.get(id.as_bytes()).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        let signed = SignedTx::decode(v.value()).map_err(|e| Error::Corrupt {
            id: *id,
            reason: e.to_string(),
        })?;
        if signed.id() != *id {
            return Err(Error::Corrupt {
                id: *id,
                reason: format!("stored bytes hash to {}", signed.id()),
            });
        }
        Ok(Some(signed))
    }

    /// Number of stored txs.
    pub fn len(&self) -> Result<u64> {
        self.db.read(|db| count(db, &self.path))
    }

    /// Every stored tx id, in id order (a full scan: for start-up work, not the hot path).
    pub fn ids(&self) -> Result<Vec<TxId>> {
        self.db.read(|db| self.ids_in(db))
    }

    fn ids_in(&self, db: &Database) -> Result<Vec<TxId>> {
        let err = db_err(&self.path);
        let r = db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(TXS).map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err(e.into()))? {
            let (k, _) = row.map_err(|e| err(e.into()))?;
            out.push(TxId::from_bytes(*k.value()));
        }
        Ok(out)
    }

    /// True if nothing is stored.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

type Outcome = std::result::Result<(), Conflict>;

/// The conflict of a tx `id` whose (sender, nonce) belongs to `owner`: the same tx again
/// (its body may have been pruned: the nonce record is what remains) or another tx.
fn nonce_conflict(id: &TxId, owner: TxId) -> Conflict {
    if owner == *id {
        Conflict::DuplicateTx
    } else {
        Conflict::NonceReused { other: owner }
    }
}

fn heal(shared: &Shared) -> Result<Option<u64>> {
    if !shared.failed.load(Ordering::SeqCst) {
        return Ok(None);
    }
    if let Some(reason) = storage::no_room_to_reopen(&shared.path, &shared.cap) {
        return Err(Error::StoreCommit {
            path: shared.path.clone(),
            reason: format!("not reopened yet: {reason}"),
        });
    }
    let mut g = shared.db.write();
    // Close first: redb allows one open handle per file.
    drop(g.take());
    let reopened = open_file(&shared.path, &shared.cap).and_then(|db| {
        let n = count(&db, &shared.path)?;
        let acked = shared.stored.load(Ordering::SeqCst);
        if n < acked {
            return Err(Error::StoreCommit {
                path: shared.path.clone(),
                reason: format!(
                    "after reopening, {n} txs are stored but {acked} were acknowledged"
                ),
            });
        }
        Ok((db, n))
    });
    match reopened {
        Ok((db, n)) => {
            *g = Some(db);
            *shared.failure.lock() = None;
            shared.failed.store(false, Ordering::SeqCst);
            Ok(Some(n))
        }
        Err(e) => {
            // Keep a handle so reads go on where they can.
            *g = open_file(&shared.path, &shared.cap).ok();
            Err(e)
        }
    }
}

fn writer_loop(db: Arc<Shared>, mut rx: mpsc::Receiver<WriteReq>, path: std::path::PathBuf) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut next_start = Instant::now();
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        if let Some(wait) = next_start.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        next_start = Instant::now() + COMMIT_SPACING;
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        if db.failed.load(Ordering::SeqCst) {
            let reason = format!(
                "store unavailable until reopened after an I/O error ({}); nothing in the group was admitted",
                db.failure.lock().clone().unwrap_or_default()
            );
            for req in group.drain(..) {
                let _ = req.reply.send(Err(Error::StoreCommit {
                    path: path.clone(),
                    reason: reason.clone(),
                }));
            }
            continue;
        }
        metrics::histogram!("citychain_working_store_commit_txs").record(group.len() as f64);
        let committed = {
            let g = db.db.read();
            match g.as_ref() {
                Some(d) => commit_group(d, &group),
                None => Err(redb::Error::PreviousIo),
            }
        };
        match committed {
            Ok(outcomes) => {
                let stored = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
                db.stored.fetch_add(stored, Ordering::SeqCst);
                db.publish();
                for (req, out) in group.drain(..).zip(outcomes) {
                    let _ = req.reply.send(Ok(out));
                }
            }
            Err(e) => {
                db.fail(&e);
                tracing::error!(path = %path.display(), error = %e, "txstore commit failed; group refused");
                for req in group.drain(..) {
                    let _ = req.reply.send(Err(Error::StoreCommit {
                        path: path.clone(),
                        reason: e.to_string(),
                    }));
                }
            }
        }
    }
}

fn commit_group(
    db: &Database,
    group: &[WriteReq],
) -> std::result::Result<Vec<Outcome>, redb::Error> {
    let w = db.begin_write()?;
    let mut outcomes = Vec::with_capacity(group.len());
    {
        let mut txs = w.open_table(TXS)?;
        let mut nonces = w.open_table(NONCES)?;
        let mut seen_ids = HashSet::with_capacity(group.len());
        let mut seen_nonces: std::collections::HashMap<[u8; 40], TxId> =
            std::collections::HashMap::with_capacity(group.len());
        for req in group {
            let id = req.tx.id();
            let signed = req.tx.signed();
            let nk = nonce_key(signed);
            let outcome = if seen_ids.contains(&id) || txs.get(id.as_bytes())?.is_some() {
                Err(Conflict::DuplicateTx)
            } else if let Some(other) = seen_nonces.get(&nk) {
                Err(Conflict::NonceReused { other: *other })
            } else if let Some(other) = nonces.get(&nk)? {
                Err(nonce_conflict(&id, TxId::from_bytes(*other.value())))
            } else {
                txs.insert(id.as_bytes(), signed.encode().as_slice())?;
                nonces.insert(&nk, id.as_bytes())?;
                seen_ids.insert(id);
                seen_nonces.insert(nk, id);
                Ok(())
            };
            outcomes.push(outcome);
        }
    }
    w.commit()?;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::{AccountId, CityId, Position, PositionMethod, Tx};

    fn txs(n: u64) -> Vec<VerifiedTx> {
        let kp = pqc::Keypair::generate();
        (0..n)
            .map(|i| {
                let tx = Tx::fresh(
                    kp.account_id(),
                    AccountId::from_bytes([3; 32]),
                    i,
                    i,
                    0,
                    CityId::new("JP-13").unwrap(),
                    Position::from_degrees(35.0, 139.0).unwrap(),
                    PositionMethod::Gps,
                );
                pqc::sign_tx(tx, &kp).verify(&pqc::MlDsa87).unwrap()
            })
            .collect()
    }

    /// The child side of the kill -9 test: prunes the store in `dir` one tx per durable
    /// step, printing each step, until it is killed.
    fn prune_until_killed(dir: &Path) {
        let store = TxStore::open(&dir.join("txs.redb")).unwrap();
        let ids = store.ids().unwrap();
        for (k, id) in ids.iter().enumerate() {
            let step = PruneStep {
                remove: vec![*id],
                defer: ids
                    .get(k + 1)
                    .map(|n| (*n, k as u64 + 1))
                    .into_iter()
                    .collect(),
                forget: Vec::new(),
                next_seq: k as u64 + 1,
            };
            assert_eq!(store.prune(&step).unwrap(), 1);
            println!("pruned {}", k + 1);
        }
        println!("all pruned");
    }

    const CHILD_ENV: &str = "CITYCHAIN_PRUNE_KILL_CHILD";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kill_9_mid_prune_loses_nothing_and_repeats_nothing() {
        use std::io::BufRead;
        if let Ok(dir) = std::env::var(CHILD_ENV) {
            prune_until_killed(Path::new(&dir));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("txs.redb");
        let all = txs(1_500);
        {
            let store = TxStore::open(&path).unwrap();
            let answers =
                futures::future::join_all(all.iter().map(|t| store.admit(t.clone()))).await;
            assert!(answers.into_iter().all(|a| a.unwrap().is_ok()));
        }
        // This very test binary, as the child, on the same file; killed -9 once it has
        // pruned some (every prune is its own durable commit, so it is mid-way).
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "city::store::tests::kill_9_mid_prune_loses_nothing_and_repeats_nothing",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut seen = 0u64;
        for line in out.lines() {
            let line = line.unwrap();
            assert_ne!(
                line, "all pruned",
                "the child finished before it was killed"
            );
            if let Some(n) = line.strip_prefix("pruned ") {
                seen = n.parse().unwrap();
                if seen >= 40 {
                    break;
                }
            }
        }
        assert!(seen >= 40, "the child stopped early");
        // SIGKILL, no clean-up of any kind.
        child.kill().unwrap();
        child.wait().unwrap();

        let store = TxStore::open(&path).unwrap();
        let ids = store.ids().unwrap();
        let state = store.prune_state().unwrap();
        let k = state.next_seq as usize;
        assert!(
            k >= seen as usize && k < all.len(),
            "next_seq {k}, child said {seen}"
        );
        // The bodies removed are exactly the first k (removal and progress in one commit),
        // the deferred list is the one of step k, the count matches.
        let mut sorted: Vec<TxId> = all.iter().map(|t| t.id()).collect();
        sorted.sort();
        assert_eq!(ids, sorted[k..].to_vec());
        assert_eq!(state.deferred, vec![(sorted[k], k as u64)]);
        assert_eq!(store.len().unwrap(), (all.len() - k) as u64);
        // Nothing is lost for replay protection: every tx, pruned or not, is a duplicate.
        for t in &all {
            assert_eq!(
                store.precheck(t.signed(), &t.id()).unwrap(),
                Err(Conflict::DuplicateTx)
            );
        }
        assert_eq!(
            store.admit(all[0].clone()).await.unwrap(),
            Err(Conflict::DuplicateTx)
        );
    }

    #[tokio::test]
    async fn a_full_file_refuses_cleanly_and_heals_only_with_room_keeping_every_ack() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("txs.redb");
        let store = TxStore::open_capped(&path, FileCap::unlimited()).unwrap();
        let all = txs(400);
        let mut acked = Vec::new();
        store
            .file_cap()
            .set(std::fs::metadata(&path).unwrap().len());
        let mut refused = 0;
        for t in &all {
            match store.admit(t.clone()).await {
                Ok(Ok(())) => acked.push(t.id()),
                Ok(Err(c)) => panic!("{c:?}"),
                Err(Error::StoreCommit { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
            if refused >= 3 {
                break;
            }
        }
        assert_eq!(refused, 3);
        assert!(store.is_failed());
        // Still full: no reopen.
        assert!(store.heal().is_err());
        assert!(store.is_failed());
        // Reads go on.
        if let Some(first) = acked.first() {
            assert!(store.get(first).unwrap().is_some());
        }
        store.file_cap().set(u64::MAX);
        let n = store.heal().unwrap().unwrap();
        assert_eq!(n, acked.len() as u64);
        assert_eq!(store.heal().unwrap(), None);
        let next = all.last().unwrap().clone();
        assert_eq!(store.admit(next).await.unwrap(), Ok(()));
        for id in &acked {
            assert!(store.get(id).unwrap().is_some());
        }
    }
}

//! [`ShardStore`]: a light node's local shard store on redb, content-addressed by
//! (stripe id, index), with a per-node quota.
//!
//! A shard is kept as page-sized pieces under (stripe id, index, piece): redb gives a value
//! larger than a page the next power of two, so a 36 KB shard stored whole took 64 KiB on
//! disk; in pieces it takes about its size. Shards stored whole by older versions are still
//! read, listed, counted and deleted.
//!
//! Every shard is checked before it is stored and again when it is read; a shard that fails
//! on read is reported as [`Error::CorruptOnDisk`] and never returned. The quota counts the
//! encoded bytes (header + data) of every stored shard; a put that would exceed it fails
//! with [`Error::OverQuota`] and writes nothing. Each put/delete is one durable redb
//! transaction (an fsync); calls block, so async callers use `spawn_blocking`.
//!
//! Disk pressure: a put that would leave less than [`StoreConfig::min_free_bytes`] on the
//! file system (statvfs) fails with [`Error::DiskFull`] before the disk is full. If an I/O
//! error still happens (ENOSPC, EIO), redb poisons the open database; the store then refuses
//! writes with [`Error::StoreUnavailable`] (reads are still tried) until [`ShardStore::heal`]
//! closes and reopens the file and checks what it holds. A file that no longer opens as a
//! database is moved aside by [`ShardStore::open_or_quarantine`].

use crate::capped::{CappedFileBackend, FileCap, disk_free_bytes, is_io_failure};
use crate::shard::Shard;
use crate::{Error, Result};
use dag_core::StripeId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

/// Key: stripe id (32) ‖ index (u16 big endian, so a stripe's shards sort together) →
/// the whole encoded shard. Written by older versions; still read, deleted and counted.
const SHARDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("shards");
/// Key: stripe id (32) ‖ index (u16 BE) ‖ piece (u16 BE) → that piece of the encoded
/// shard (see [`pieces`]). Where every shard is written now.
const PIECES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("shard_pieces");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const USED: &str = "used_bytes";

/// The sizes a shard's bytes are cut into, largest first: each fills one redb leaf page
/// (16, 8 or 4 KiB) with its key. A value just over a page size takes the next power of
/// two: a 35,960-byte shard (a stripe of ~19 txs) stored whole took a 64 KiB page, 1.82×
/// its size on disk; cut into 16,200 + 16,200 + 3,560 bytes it takes ~1.03×.
const PIECE_SIZES: [usize; 3] = [16_200, 8_100, 4_000];

/// `bytes` cut into pieces: repeatedly the largest of [`PIECE_SIZES`] that the rest still
/// fills, and the rest (under 4,000 bytes) last.
fn pieces(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let take = PIECE_SIZES
            .iter()
            .copied()
            .find(|s| *s <= rest.len())
            .unwrap_or(rest.len());
        let (piece, tail) = rest.split_at(take);
        out.push(piece);
        rest = tail;
    }
    out
}

fn piece_key(k: &[u8; 34], piece: u16) -> [u8; 36] {
    let mut pk = [0u8; 36];
    pk[..34].copy_from_slice(k);
    pk[34..].copy_from_slice(&piece.to_be_bytes());
    pk
}

type StoreTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// The stored bytes under `k`: its pieces joined, or a whole value written by an older
/// version. `None`: not stored.
fn load(
    shards: &impl ReadableTable<&'static [u8], &'static [u8]>,
    parts: &impl ReadableTable<&'static [u8], &'static [u8]>,
    k: &[u8; 34],
) -> std::result::Result<Option<Vec<u8>>, redb::StorageError> {
    let (lo, hi) = (piece_key(k, 0), piece_key(k, u16::MAX));
    let mut out: Option<Vec<u8>> = None;
    for item in parts.range(lo.as_slice()..=hi.as_slice())? {
        let (_, v) = item?;
        out.get_or_insert_with(Vec::new)
            .extend_from_slice(v.value());
    }
    if out.is_some() {
        return Ok(out);
    }
    Ok(shards.get(k.as_slice())?.map(|g| g.value().to_vec()))
}

/// Removes whatever is stored under `k` (pieces, or an older whole value); returns its
/// length in bytes if something was.
fn remove(
    shards: &mut StoreTable<'_>,
    parts: &mut StoreTable<'_>,
    k: &[u8; 34],
) -> std::result::Result<Option<u64>, redb::StorageError> {
    let (lo, hi) = (piece_key(k, 0), piece_key(k, u16::MAX));
    let mut found = None;
    let mut keys = Vec::new();
    for item in parts.range(lo.as_slice()..=hi.as_slice())? {
        let (pk, v) = item?;
        *found.get_or_insert(0) += v.value().len() as u64;
        keys.push(pk.value().to_vec());
    }
    for pk in keys {
        parts.remove(pk.as_slice())?;
    }
    if let Some(g) = shards.remove(k.as_slice())? {
        *found.get_or_insert(0) += g.value().len() as u64;
    }
    Ok(found)
}

/// Writes `bytes` under `k` as pieces (nothing may be stored there: [`remove`] first).
fn store(
    parts: &mut StoreTable<'_>,
    k: &[u8; 34],
    bytes: &[u8],
) -> std::result::Result<(), redb::StorageError> {
    for (i, piece) in pieces(bytes).into_iter().enumerate() {
        let i = u16::try_from(i).map_err(|_| {
            redb::StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a shard of more than 65,535 pieces",
            ))
        })?;
        parts.insert(piece_key(k, i).as_slice(), piece)?;
    }
    Ok(())
}

fn key(stripe: &StripeId, index: u16) -> [u8; 34] {
    let mut k = [0u8; 34];
    k[..32].copy_from_slice(stripe.as_bytes());
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Configuration of a [`ShardStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most bytes (encoded shards) this node stores. Default 1 GiB.
    pub quota_bytes: u64,
    /// Bytes that must stay free on the file system after a put (statvfs). Default 64 MiB;
    /// 0 turns the check off (in-memory stores never check).
    pub min_free_bytes: u64,
    /// Most bytes the store file may grow to (`u64::MAX` = no limit, the default); past it
    /// writes fail as on a full disk.
    pub max_file_bytes: u64,
    /// redb's page cache, bytes. Default 4 MiB (redb's own default is 1 GiB, which a light
    /// node on a phone or a small board cannot spare); shards are written once and read
    /// rarely (a challenge or a repair), so a small cache costs little.
    pub cache_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            quota_bytes: 1 << 30,
            min_free_bytes: 64 << 20,
            max_file_bytes: u64::MAX,
            cache_bytes: 4 << 20,
        }
    }
}

/// What [`ShardStore::heal`] found after reopening the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealReport {
    /// Shards found, each readable.
    pub shards: u64,
    /// Their encoded bytes (must equal the recorded usage).
    pub bytes: u64,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The shard was stored.
    Stored,
    /// The same shard was already stored (puts are idempotent).
    AlreadyStored,
    /// A corrupt copy was on disk and was replaced by this good one.
    Repaired,
}

/// A node's shard store. Cheap to share behind an `Arc`; methods take `&self`.
pub struct ShardStore {
    /// `None` only for the moment [`ShardStore::heal`] swaps the file.
    db: RwLock<Option<Database>>,
    config: StoreConfig,
    /// The file (None in memory: nothing to reopen).
    path: Option<PathBuf>,
    cap: FileCap,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl std::fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ShardStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let cap = FileCap::new(config.max_file_bytes);
        let db = open_file(&path, &cap, config.cache_bytes)?;
        Self::init(db, config, Some(path), cap)
    }

    /// Opens the store at `path`; if the file exists but is not a readable database
    /// (corrupted after a crash, or not a redb file), renames it to
    /// `<file>.corrupt-<now_ms>` (kept for forensics) and starts an empty store there.
    /// Returns the store and the path the bad file was moved to, if any. I/O errors other
    /// than corruption (permissions, a full disk) are returned, never treated as corruption.
    pub fn open_or_quarantine(
        path: impl AsRef<Path>,
        config: StoreConfig,
        now_ms: u64,
    ) -> Result<(Self, Option<PathBuf>)> {
        let path = path.as_ref();
        match Self::open(path, config) {
            Ok(s) => Ok((s, None)),
            Err(Error::Db { source, .. }) if is_corruption(&source) => {
                let mut aside = path.as_os_str().to_owned();
                aside.push(format!(".corrupt-{now_ms}"));
                let aside = PathBuf::from(aside);
                std::fs::rename(path, &aside)
                    .map_err(|e| Error::db("quarantine", redb::Error::Io(e)))?;
                Ok((Self::open(path, config)?, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    /// A store in memory (tests, demos).
    pub fn in_memory(config: StoreConfig) -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| Error::db("open", e))?;
        Self::init(db, config, None, FileCap::unlimited())
    }

    fn init(
        db: Database,
        config: StoreConfig,
        path: Option<PathBuf>,
        cap: FileCap,
    ) -> Result<Self> {
        init_tables(&db)?;
        Ok(ShardStore {
            db: RwLock::new(Some(db)),
            config,
            path,
            cap,
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> StoreConfig {
        self.config
    }

    /// The limit on the store file's size (shared: changing it takes effect at once).
    pub fn file_cap(&self) -> &FileCap {
        &self.cap
    }

    /// True while the store refuses writes after an I/O error (until [`ShardStore::heal`]).
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The I/O error that took the store down, while it is down.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|g| g.clone())
    }

    /// Runs `f` on the open database; an I/O failure marks the store failed.
    fn with_db<R>(&self, write: bool, f: impl FnOnce(&Database) -> Result<R>) -> Result<R> {
        if write && self.is_failed() {
            return Err(Error::StoreUnavailable {
                reason: self.failure().unwrap_or_default(),
            });
        }
        let guard = self.db.read().map_err(|_| Error::StoreUnavailable {
            reason: "store lock poisoned".into(),
        })?;
        let Some(db) = guard.as_ref() else {
            return Err(Error::StoreUnavailable {
                reason: "the store is being reopened".into(),
            });
        };
        let r = f(db);
        if let Err(Error::Db { source, op }) = &r
            && is_io_failure(source)
        {
            if let Ok(mut g) = self.failure.lock()
                && g.is_none()
            {
                *g = Some(format!("{op}: {source}"));
            }
            self.failed.store(true, Ordering::SeqCst);
        }
        r
    }

    /// Closes and reopens the store file after an I/O error, then reads every shard to
    /// check that what it acknowledged is intact. `Ok(None)` if the store was not failed.
    /// Fails (and stays failed) while the disk is below the free-space floor or the file
    /// still does not open; the caller retries later.
    pub fn heal(&self) -> Result<Option<HealReport>> {
        if !self.is_failed() {
            return Ok(None);
        }
        let Some(path) = self.path.as_ref() else {
            return Err(Error::StoreUnavailable {
                reason: "an in-memory store cannot be reopened".into(),
            });
        };
        self.check_floor(path, 0)?;
        if let Some(reason) = crate::capped::no_room_to_reopen(path, &self.cap) {
            return Err(Error::StoreUnavailable {
                reason: format!("no room to reopen yet: {reason}"),
            });
        }
        let mut guard = self.db.write().map_err(|_| Error::StoreUnavailable {
            reason: "store lock poisoned".into(),
        })?;
        // Close first: redb allows one open handle per file.
        drop(guard.take());
        let reopened = open_file(path, &self.cap, self.config.cache_bytes).and_then(|db| {
            init_tables(&db)?;
            let report = check_all(&db)?;
            Ok((db, report))
        });
        match reopened {
            Ok((db, report)) => {
                *guard = Some(db);
                self.failed.store(false, Ordering::SeqCst);
                if let Ok(mut g) = self.failure.lock() {
                    *g = None;
                }
                Ok(Some(report))
            }
            Err(e) => {
                // Leave a handle in place so reads keep working where they can.
                *guard = open_file(path, &self.cap, self.config.cache_bytes).ok();
                Err(e)
            }
        }
    }

    fn check_floor(&self, path: &Path, needed: u64) -> Result<()> {
        let floor = self.config.min_free_bytes;
        if floor == 0 {
            return Ok(());
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let free = disk_free_bytes(dir).map_err(|e| Error::db("statvfs", redb::Error::Io(e)))?;
        if free < needed.saturating_add(floor) {
            return Err(Error::DiskFull {
                needed,
                free,
                floor,
            });
        }
        Ok(())
    }

    /// Bytes in use (encoded shards).
    pub fn used_bytes(&self) -> Result<u64> {
        self.with_db(false, |db| {
            let tx = db.begin_read().map_err(|e| Error::db("read", e))?;
            let meta = tx.open_table(META).map_err(|e| Error::db("read", e))?;
            let used = meta.get(USED).map_err(|e| Error::db("read", e))?;
            Ok(used.map_or(0, |g| g.value()))
        })
    }

    /// Bytes this node can still take: the quota left, bounded by the disk's free space
    /// above the floor (and by the file cap); 0 while the store is failed.
    pub fn free_bytes(&self) -> Result<u64> {
        if self.is_failed() {
            return Ok(0);
        }
        let used = self.used_bytes()?;
        let mut free = self.config.quota_bytes.saturating_sub(used);
        if let Some(path) = &self.path {
            if self.config.min_free_bytes > 0 {
                let dir = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let disk =
                    disk_free_bytes(dir).map_err(|e| Error::db("statvfs", redb::Error::Io(e)))?;
                free = free.min(disk.saturating_sub(self.config.min_free_bytes));
            }
            if self.cap.get() != u64::MAX {
                let len = std::fs::metadata(path).map_or(0, |m| m.len());
                free = free.min(self.cap.get().saturating_sub(len));
            }
        }
        Ok(free)
    }

    /// Stores a shard after checking it ([`Shard::check`]). Idempotent for the same shard;
    /// a different valid shard under the same (stripe, index) is [`Error::ShardConflict`];
    /// over quota is [`Error::OverQuota`]. On any error nothing is written.
    pub fn put(&self, shard: &Shard) -> Result<PutOutcome> {
        self.with_db(true, |db| {
            shard.check().map_err(|problem| Error::BadShard {
                stripe_id: Some(shard.stripe_id()),
                index: Some(shard.index()),
                problem,
            })?;
            let (sid, idx) = (shard.stripe_id(), shard.index());
            let k = key(&sid, idx);
            let bytes = shard.to_bytes();
            if let Some(path) = &self.path {
                self.check_floor(path, bytes.len() as u64)?;
            }
            let op = |e| Error::db("put", e);
            let tx = db.begin_write().map_err(|e| Error::db("put", e))?;
            let outcome = {
                let mut table = tx.open_table(SHARDS).map_err(|e| Error::db("put", e))?;
                let mut parts = tx.open_table(PIECES).map_err(|e| Error::db("put", e))?;
                let mut meta = tx.open_table(META).map_err(|e| Error::db("put", e))?;
                let used = meta.get(USED).map_err(op)?.map_or(0, |g| g.value());
                let existing = load(&table, &parts, &k).map_err(op)?;
                let replacing = existing.is_some();
                let (outcome, freed) = match existing {
                    Some(old) if old == bytes => return Ok(PutOutcome::AlreadyStored),
                    Some(old) => match Shard::from_bytes(&old) {
                        Ok(s) if s.stripe_id() == sid && s.index() == idx => {
                            return Err(Error::ShardConflict {
                                stripe_id: sid,
                                index: idx,
                            });
                        }
                        _ => (PutOutcome::Repaired, old.len() as u64),
                    },
                    None => (PutOutcome::Stored, 0),
                };
                let needed = bytes.len() as u64;
                let after = used.saturating_sub(freed).saturating_add(needed);
                if after > self.config.quota_bytes {
                    return Err(Error::OverQuota {
                        needed,
                        used,
                        quota: self.config.quota_bytes,
                    });
                }
                if replacing {
                    remove(&mut table, &mut parts, &k).map_err(op)?;
                }
                store(&mut parts, &k, &bytes).map_err(op)?;
                meta.insert(USED, after).map_err(op)?;
                outcome
            };
            tx.commit().map_err(|e| Error::db("put", e))?;
            Ok(outcome)
        })
    }

    /// The shard (stripe, index), checked: `Ok(None)` if not held, `Err(CorruptOnDisk)` if
    /// the stored bytes fail any check (they are never returned).
    pub fn get(&self, stripe: &StripeId, index: u16) -> Result<Option<Shard>> {
        self.with_db(false, |db| {
            let op = |e| Error::db("get", e);
            let tx = db.begin_read().map_err(|e| Error::db("get", e))?;
            let table = tx.open_table(SHARDS).map_err(|e| Error::db("get", e))?;
            let parts = tx.open_table(PIECES).map_err(|e| Error::db("get", e))?;
            let Some(bytes) = load(&table, &parts, &key(stripe, index)).map_err(op)? else {
                return Ok(None);
            };
            let corrupt = |problem| Error::CorruptOnDisk {
                stripe_id: *stripe,
                index,
                problem,
            };
            let shard = Shard::from_bytes(&bytes).map_err(|e| match e {
                Error::BadShard { problem, .. } => corrupt(problem),
                other => other,
            })?;
            if shard.stripe_id() != *stripe {
                return Err(corrupt(crate::ShardProblem::WrongStripe {
                    got: shard.stripe_id(),
                }));
            }
            if shard.index() != index {
                return Err(corrupt(crate::ShardProblem::Inconsistent {
                    field: "index",
                }));
            }
            Ok(Some(shard))
        })
    }

    /// True if (stripe, index) is stored (not checked; use [`ShardStore::get`] to read).
    pub fn contains(&self, stripe: &StripeId, index: u16) -> Result<bool> {
        self.with_db(false, |db| {
            let op = |e| Error::db("contains", e);
            let tx = db.begin_read().map_err(|e| Error::db("contains", e))?;
            let table = tx
                .open_table(SHARDS)
                .map_err(|e| Error::db("contains", e))?;
            let parts = tx
                .open_table(PIECES)
                .map_err(|e| Error::db("contains", e))?;
            let k = key(stripe, index);
            let first = piece_key(&k, 0);
            Ok(parts.get(first.as_slice()).map_err(op)?.is_some()
                || table.get(k.as_slice()).map_err(op)?.is_some())
        })
    }

    /// Deletes one shard; true if it was stored.
    pub fn delete(&self, stripe: &StripeId, index: u16) -> Result<bool> {
        self.with_db(true, |db| {
            let op = |e| Error::db("delete", e);
            let tx = db.begin_write().map_err(|e| Error::db("delete", e))?;
            let removed = {
                let mut table = tx.open_table(SHARDS).map_err(|e| Error::db("delete", e))?;
                let mut parts = tx.open_table(PIECES).map_err(|e| Error::db("delete", e))?;
                let mut meta = tx.open_table(META).map_err(|e| Error::db("delete", e))?;
                let len = remove(&mut table, &mut parts, &key(stripe, index)).map_err(op)?;
                if let Some(len) = len {
                    let used = meta.get(USED).map_err(op)?.map_or(0, |g| g.value());
                    meta.insert(USED, used.saturating_sub(len)).map_err(op)?;
                }
                len.is_some()
            };
            tx.commit().map_err(|e| Error::db("delete", e))?;
            Ok(removed)
        })
    }

    /// The stripes with at least one stored shard, in id order.
    pub fn list_stripes(&self) -> Result<Vec<StripeId>> {
        self.with_db(false, |db| {
            let op = |e| Error::db("list", e);
            let tx = db.begin_read().map_err(|e| Error::db("list", e))?;
            let table = tx.open_table(SHARDS).map_err(|e| Error::db("list", e))?;
            let parts = tx.open_table(PIECES).map_err(|e| Error::db("list", e))?;
            let mut out = std::collections::BTreeSet::new();
            for t in [&table, &parts] {
                for item in t.iter().map_err(op)? {
                    let (k, _) = item.map_err(op)?;
                    let id =
                        StripeId::from_slice(&k.value()[..32]).map_err(|source| Error::Decode {
                            what: "store key",
                            source,
                        })?;
                    out.insert(id);
                }
            }
            Ok(out.into_iter().collect())
        })
    }

    /// The indexes of `stripe` stored here.
    pub fn list_shards(&self, stripe: &StripeId) -> Result<Vec<u16>> {
        self.with_db(false, |db| {
            let op = |e| Error::db("list", e);
            let tx = db.begin_read().map_err(|e| Error::db("list", e))?;
            let table = tx.open_table(SHARDS).map_err(|e| Error::db("list", e))?;
            let parts = tx.open_table(PIECES).map_err(|e| Error::db("list", e))?;
            let (lo, hi) = (key(stripe, 0), key(stripe, u16::MAX));
            let (plo, phi) = (piece_key(&lo, 0), piece_key(&hi, u16::MAX));
            let mut out = std::collections::BTreeSet::new();
            for item in table.range(lo.as_slice()..=hi.as_slice()).map_err(op)? {
                let (k, _) = item.map_err(op)?;
                let k = k.value();
                out.insert(u16::from_be_bytes([k[32], k[33]]));
            }
            for item in parts.range(plo.as_slice()..=phi.as_slice()).map_err(op)? {
                let (k, _) = item.map_err(op)?;
                let k = k.value();
                out.insert(u16::from_be_bytes([k[32], k[33]]));
            }
            Ok(out.into_iter().collect())
        })
    }

    /// Test hook: rewrites the stored bytes of (stripe, index) with `f`, bypassing every
    /// check, to simulate corruption on disk.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn corrupt_for_test(
        &self,
        stripe: &StripeId,
        index: u16,
        f: impl FnOnce(&mut Vec<u8>),
    ) -> Result<()> {
        self.with_db(true, |db| {
            let op = |e| Error::db("corrupt", e);
            let tx = db.begin_write().map_err(|e| Error::db("corrupt", e))?;
            {
                let mut table = tx.open_table(SHARDS).map_err(|e| Error::db("corrupt", e))?;
                let mut parts = tx.open_table(PIECES).map_err(|e| Error::db("corrupt", e))?;
                let k = key(stripe, index);
                let mut bytes = load(&table, &parts, &k).map_err(op)?.unwrap_or_default();
                f(&mut bytes);
                remove(&mut table, &mut parts, &k).map_err(op)?;
                store(&mut parts, &k, &bytes).map_err(op)?;
            }
            tx.commit().map_err(|e| Error::db("corrupt", e))?;
            Ok(())
        })
    }
}

fn open_file(path: &Path, cap: &FileCap, cache_bytes: usize) -> Result<Database> {
    let backend = CappedFileBackend::open(path, cap.clone())
        .map_err(|e| Error::db("open", redb::Error::Io(e)))?;
    Database::builder()
        .set_cache_size(cache_bytes)
        .create_with_backend(backend)
        .map_err(|e| Error::db("open", e))
}

fn init_tables(db: &Database) -> Result<()> {
    let tx = db.begin_write().map_err(|e| Error::db("init", e))?;
    {
        tx.open_table(SHARDS).map_err(|e| Error::db("init", e))?;
        tx.open_table(PIECES).map_err(|e| Error::db("init", e))?;
        tx.open_table(META).map_err(|e| Error::db("init", e))?;
    }
    tx.commit().map_err(|e| Error::db("init", e))?;
    Ok(())
}

/// Reads every stored shard back (each must parse and pass its hash) and checks the sum
/// of their sizes against the recorded usage.
fn check_all(db: &Database) -> Result<HealReport> {
    let op = |e| Error::db("check", e);
    let tx = db.begin_read().map_err(|e| Error::db("check", e))?;
    let table = tx.open_table(SHARDS).map_err(|e| Error::db("check", e))?;
    let parts = tx.open_table(PIECES).map_err(|e| Error::db("check", e))?;
    let meta = tx.open_table(META).map_err(|e| Error::db("check", e))?;
    let used = meta.get(USED).map_err(op)?.map_or(0, |g| g.value());
    let mut report = HealReport {
        shards: 0,
        bytes: 0,
    };
    let mut check = |k: &[u8], bytes: &[u8]| -> Result<()> {
        let stripe_id = StripeId::from_slice(&k[..32]).map_err(|source| Error::Decode {
            what: "store key",
            source,
        })?;
        let index = u16::from_be_bytes([k[32], k[33]]);
        let shard = Shard::from_bytes(bytes).map_err(|_| Error::CorruptOnDisk {
            stripe_id,
            index,
            problem: crate::ShardProblem::HashMismatch,
        })?;
        shard.check().map_err(|problem| Error::CorruptOnDisk {
            stripe_id,
            index,
            problem,
        })?;
        report.shards += 1;
        report.bytes += bytes.len() as u64;
        Ok(())
    };
    for item in table.iter().map_err(op)? {
        let (k, v) = item.map_err(op)?;
        check(k.value(), v.value())?;
    }
    // Pieces sort by (stripe, index, piece): join each shard's run.
    let mut current: Option<([u8; 34], Vec<u8>)> = None;
    for item in parts.iter().map_err(op)? {
        let (k, v) = item.map_err(op)?;
        let Some(head) = k.value().first_chunk::<34>() else {
            continue;
        };
        match &mut current {
            Some((h, bytes)) if h == head => bytes.extend_from_slice(v.value()),
            _ => {
                if let Some((h, bytes)) = current.take() {
                    check(&h, &bytes)?;
                }
                current = Some((*head, v.value().to_vec()));
            }
        }
    }
    if let Some((h, bytes)) = current {
        check(&h, &bytes)?;
    }
    if report.bytes != used {
        return Err(Error::StoreUnavailable {
            reason: format!(
                "after reopening, stored shards add up to {} bytes but {used} are recorded",
                report.bytes
            ),
        });
    }
    Ok(report)
}

/// True if opening failed because the file is not a readable database.
fn is_corruption(e: &redb::Error) -> bool {
    match e {
        redb::Error::Corrupted(_) => true,
        redb::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{ErasureConfig, ShardProblem};

    fn shards(n: usize) -> Vec<Shard> {
        ErasureConfig::default().encode(&vec![5u8; n]).unwrap()
    }

    #[test]
    fn put_get_delete_list() {
        let store = ShardStore::in_memory(StoreConfig::default()).unwrap();
        let s = shards(1000);
        assert_eq!(store.put(&s[0]).unwrap(), PutOutcome::Stored);
        assert_eq!(store.put(&s[0]).unwrap(), PutOutcome::AlreadyStored);
        store.put(&s[3]).unwrap();
        let used = store.used_bytes().unwrap();
        assert_eq!(used, (s[0].encoded_len() + s[3].encoded_len()) as u64);
        assert_eq!(store.get(&s[0].stripe_id(), 0).unwrap().unwrap(), s[0]);
        assert_eq!(store.get(&s[0].stripe_id(), 1).unwrap(), None);
        assert_eq!(store.list_stripes().unwrap(), vec![s[0].stripe_id()]);
        assert_eq!(store.list_shards(&s[0].stripe_id()).unwrap(), vec![0, 3]);
        assert!(store.delete(&s[0].stripe_id(), 0).unwrap());
        assert!(!store.delete(&s[0].stripe_id(), 0).unwrap());
        assert_eq!(store.used_bytes().unwrap(), s[3].encoded_len() as u64);
    }

    #[test]
    fn bad_shard_is_not_stored() {
        let store = ShardStore::in_memory(StoreConfig::default()).unwrap();
        let mut s = shards(100).remove(2);
        s.data[0] ^= 1;
        assert!(matches!(
            store.put(&s),
            Err(Error::BadShard {
                problem: ShardProblem::HashMismatch,
                ..
            })
        ));
        assert!(store.list_stripes().unwrap().is_empty());
        assert_eq!(store.used_bytes().unwrap(), 0);
    }

    #[test]
    fn over_quota_writes_nothing() {
        let s = shards(1000);
        let quota = (s[0].encoded_len() * 2) as u64;
        let store = ShardStore::in_memory(StoreConfig {
            quota_bytes: quota,
            ..StoreConfig::default()
        })
        .unwrap();
        store.put(&s[0]).unwrap();
        store.put(&s[1]).unwrap();
        let err = store.put(&s[2]).unwrap_err();
        assert!(matches!(err, Error::OverQuota { .. }), "{err}");
        assert!(!store.contains(&s[2].stripe_id(), 2).unwrap());
        assert_eq!(store.used_bytes().unwrap(), quota);
        assert_eq!(store.free_bytes().unwrap(), 0);
    }

    #[test]
    fn corrupt_on_disk_is_never_returned_and_can_be_replaced() {
        let store = ShardStore::in_memory(StoreConfig::default()).unwrap();
        let s = shards(300);
        let sid = s[1].stripe_id();
        store.put(&s[1]).unwrap();
        store
            .corrupt_for_test(&sid, 1, |b| *b.last_mut().unwrap() ^= 1)
            .unwrap();
        assert!(matches!(
            store.get(&sid, 1),
            Err(Error::CorruptOnDisk {
                index: 1,
                problem: ShardProblem::HashMismatch,
                ..
            })
        ));
        // a valid shard stored under the wrong key is also corrupt
        let other = s[2].to_bytes();
        store.corrupt_for_test(&sid, 1, |b| *b = other).unwrap();
        assert!(matches!(
            store.get(&sid, 1),
            Err(Error::CorruptOnDisk { .. })
        ));
        assert_eq!(store.put(&s[1]).unwrap(), PutOutcome::Repaired);
        assert_eq!(store.get(&sid, 1).unwrap().unwrap(), s[1]);
    }

    #[test]
    fn conflicting_shard_is_refused() {
        let store = ShardStore::in_memory(StoreConfig::default()).unwrap();
        let s = shards(300);
        store.put(&s[0]).unwrap();
        let mut forged = s[0].clone();
        forged.data[0] ^= 1;
        forged.header.shard_hash = dag_core::ShardHash(dag_core::Hash32::digest(&forged.data));
        assert!(matches!(
            store.put(&forged),
            Err(Error::ShardConflict { index: 0, .. })
        ));
        assert_eq!(store.get(&s[0].stripe_id(), 0).unwrap().unwrap(), s[0]);
    }
}

#[cfg(test)]
mod pressure_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ErasureConfig;

    fn stripe(seed: u8) -> Vec<Shard> {
        ErasureConfig::default()
            .encode(&vec![seed; 40_000])
            .unwrap()
    }

    #[test]
    fn shards_are_cut_into_page_sized_pieces() {
        let sizes =
            |n: usize| -> Vec<usize> { pieces(&vec![0u8; n]).iter().map(|p| p.len()).collect() };
        assert_eq!(sizes(35_960), [16_200, 16_200, 3_560]);
        assert_eq!(sizes(24_100), [16_200, 4_000, 3_900]);
        assert_eq!(sizes(12_000), [8_100, 3_900]);
        assert_eq!(sizes(4_000), [4_000]);
        assert_eq!(sizes(100), [100]);
        assert!(sizes(0).is_empty());
        let bytes: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        assert_eq!(pieces(&bytes).concat(), bytes);
    }

    /// Distinct shards of about 36 KB (one of the 4 + 2 shards of a 140 KiB stripe).
    fn big_shards(n: usize) -> Vec<Shard> {
        (0..n)
            .map(|i| {
                let mut data = vec![0u8; 140 * 1024];
                let mut h = blake3::Hasher::new();
                h.update(&(i as u64).to_le_bytes());
                h.finalize_xof().fill(&mut data);
                ErasureConfig::default()
                    .encode(&data)
                    .unwrap()
                    .swap_remove(i % 6)
            })
            .collect()
    }

    #[test]
    fn a_shard_on_disk_takes_about_its_size_not_the_next_power_of_two() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shards.redb");
        let store = ShardStore::open(&path, StoreConfig::default()).unwrap();
        let shards = big_shards(300);
        for s in &shards {
            assert_eq!(store.put(s).unwrap(), PutOutcome::Stored);
        }
        let stored = store.used_bytes().unwrap();
        assert_eq!(
            stored,
            shards.iter().map(|s| s.encoded_len() as u64).sum::<u64>()
        );
        drop(store);
        // Stored whole, each ~36 KB shard took a 64 KiB page (~1.8x).
        let on_disk = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(
            on_disk < stored + stored / 4,
            "{on_disk} bytes on disk for {stored} bytes of shards"
        );
        let store = ShardStore::open(&path, StoreConfig::default()).unwrap();
        for s in &shards {
            assert_eq!(
                store.get(&s.stripe_id(), s.index()).unwrap().as_ref(),
                Some(s)
            );
        }
    }

    #[test]
    fn shards_stored_whole_by_an_older_version_still_read_list_count_and_delete() {
        let store = ShardStore::in_memory(StoreConfig::default()).unwrap();
        let old = big_shards(2);
        let new = big_shards(3).pop().unwrap();
        // The older layout: the whole encoded shard under (stripe, index) in `shards`.
        store
            .with_db(true, |db| {
                let tx = db.begin_write().unwrap();
                {
                    let mut t = tx.open_table(SHARDS).unwrap();
                    let mut meta = tx.open_table(META).unwrap();
                    let mut used = 0;
                    for s in &old {
                        let k = key(&s.stripe_id(), s.index());
                        t.insert(k.as_slice(), s.to_bytes().as_slice()).unwrap();
                        used += s.encoded_len() as u64;
                    }
                    meta.insert(USED, used).unwrap();
                }
                tx.commit().unwrap();
                Ok(())
            })
            .unwrap();
        assert_eq!(store.put(&new).unwrap(), PutOutcome::Stored);
        for s in old.iter().chain([&new]) {
            assert!(store.contains(&s.stripe_id(), s.index()).unwrap());
            assert_eq!(
                store.get(&s.stripe_id(), s.index()).unwrap().as_ref(),
                Some(s)
            );
            assert_eq!(store.list_shards(&s.stripe_id()).unwrap(), [s.index()]);
            // Putting it again is a no-op whichever layout holds it.
            assert_eq!(store.put(s).unwrap(), PutOutcome::AlreadyStored);
        }
        let mut stripes: Vec<StripeId> = old.iter().chain([&new]).map(|s| s.stripe_id()).collect();
        stripes.sort();
        assert_eq!(store.list_stripes().unwrap(), stripes);
        let report = store.with_db(false, check_all).unwrap();
        assert_eq!(report.shards, 3);
        assert_eq!(report.bytes, store.used_bytes().unwrap());
        assert!(store.delete(&old[0].stripe_id(), old[0].index()).unwrap());
        assert!(
            store
                .get(&old[0].stripe_id(), old[0].index())
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store.used_bytes().unwrap(),
            (old[1].encoded_len() + new.encoded_len()) as u64
        );
    }

    #[test]
    fn a_full_file_fails_writes_and_heals_after_reopen_with_everything_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shards.redb");
        let cfg = StoreConfig {
            max_file_bytes: 2 << 20,
            min_free_bytes: 0,
            ..StoreConfig::default()
        };
        let store = ShardStore::open(&path, cfg).unwrap();
        let mut acked = Vec::new();
        let mut err = None;
        'fill: for seed in 0..=255u8 {
            for s in stripe(seed) {
                match store.put(&s) {
                    Ok(_) => acked.push(s),
                    Err(e) => {
                        err = Some(e);
                        break 'fill;
                    }
                }
            }
        }
        let err = err.expect("a 2 MiB file fills");
        assert!(matches!(err, Error::Db { .. }), "{err}");
        assert!(store.is_failed());
        assert_eq!(store.free_bytes().unwrap(), 0);
        // Writes are refused with the typed answer; no heal while it cannot write either.
        let next = stripe(250).remove(0);
        assert!(matches!(
            store.put(&next),
            Err(Error::StoreUnavailable { .. })
        ));
        // Space returns: reopen, everything acknowledged is there and writes work again.
        store.file_cap().set(u64::MAX);
        let report = store.heal().unwrap().unwrap();
        assert_eq!(report.shards, acked.len() as u64);
        assert!(!store.is_failed());
        for s in &acked {
            assert_eq!(
                store.get(&s.stripe_id(), s.index()).unwrap().as_ref(),
                Some(s)
            );
        }
        assert_eq!(store.put(&next).unwrap(), PutOutcome::Stored);
        assert_eq!(store.heal().unwrap(), None, "nothing to heal");
    }

    #[test]
    fn the_free_space_floor_refuses_before_the_disk_fills() {
        let dir = tempfile::tempdir().unwrap();
        let free = disk_free_bytes(dir.path()).unwrap();
        let store = ShardStore::open(
            dir.path().join("shards.redb"),
            StoreConfig {
                min_free_bytes: free + (1 << 30),
                ..StoreConfig::default()
            },
        )
        .unwrap();
        let s = stripe(1).remove(0);
        assert!(matches!(store.put(&s), Err(Error::DiskFull { .. })));
        assert!(!store.contains(&s.stripe_id(), 0).unwrap());
        assert_eq!(store.free_bytes().unwrap(), 0);
        assert!(!store.is_failed(), "a refusal is not a failure");
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_the_store_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shards.redb");
        {
            let store = ShardStore::open(&path, StoreConfig::default()).unwrap();
            for s in stripe(3) {
                store.put(&s).unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip bytes across the header and the first pages, as a torn write would.
        for b in bytes.iter_mut().take(8192).step_by(7) {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(ShardStore::open(&path, StoreConfig::default()).is_err());
        let (store, aside) =
            ShardStore::open_or_quarantine(&path, StoreConfig::default(), 1234).unwrap();
        let aside = aside.expect("the bad file is moved aside");
        assert!(
            aside
                .to_string_lossy()
                .ends_with("shards.redb.corrupt-1234")
        );
        assert_eq!(std::fs::read(&aside).unwrap(), bytes, "kept byte for byte");
        assert!(store.list_stripes().unwrap().is_empty());
        store.put(&stripe(4).remove(0)).unwrap();
        // A healthy file is opened as is.
        drop(store);
        let (again, none) =
            ShardStore::open_or_quarantine(&path, StoreConfig::default(), 1235).unwrap();
        assert!(none.is_none());
        assert_eq!(again.list_stripes().unwrap().len(), 1);
    }
}

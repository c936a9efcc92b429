//! The embedded backend (the default): one redb file, one write transaction per batch.
//!
//! Tables: `records` (tx id → encrypted record), `by_sender` (sender tag ‖ ts ‖ tx id → ()),
//! `by_time` (ts ‖ tx id → sender tag) and `wrapped_keys` (BLAKE3 of a batch's wrapped key →
//! count of records naming it ‖ the wrapped key), all written in the same transaction, so a
//! crash leaves either the whole batch or nothing. Records are written with their batch's
//! wrapped key by reference (see the record module: a 7.3 KB tx's record then fits one 8 KiB
//! page instead of 16 KiB); records written before, with the key inline, stay readable. A
//! key's count falls as its records are purged or re-wrapped, and it is removed at zero.
//! Timestamps in keys are big endian so byte order
//! is time order.
//!
//! [`RedbArchive::rewrap_blocking`] moves records to the key ring's current key (another KEM
//! after `ArchiveKeys::rotate_to`) a chunk of records per transaction; see there why no
//! record is ever unreadable, even when the process dies in the middle.

use crate::error::redb_err;
use crate::record::StoredRecord;
use crate::{
    Archive, ArchiveConfig, ArchiveEntry, ArchiveKeys, ArchivedTx, DagNode, Error, PutOutcome,
    Result,
};
use dag_core::{AccountId, TxId};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const BY_SENDER: TableDefinition<&[u8], ()> = TableDefinition::new("by_sender");
const BY_TIME: TableDefinition<&[u8], &[u8; 32]> = TableDefinition::new("by_time");
/// BLAKE3(wrapped batch key) → records naming it (u64 big endian) ‖ the wrapped key.
const WRAPPED_KEYS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("wrapped_keys");

/// Changes to the record counts of wrapped keys in one transaction: reference → (delta, the
/// key's bytes when this transaction may be the first to name it).
type KeyRefDeltas = std::collections::BTreeMap<[u8; 32], (i64, Option<Vec<u8>>)>;

/// A `wrapped_keys` value split into its record count and the wrapped key.
fn split_key_entry(v: &[u8]) -> Option<(u64, &[u8])> {
    let (count, key) = v.split_first_chunk::<8>()?;
    (!key.is_empty()).then(|| (u64::from_be_bytes(*count), key))
}

/// The wrapped key stored under `key_ref`, for [`StoredRecord::decode_with`].
fn resolve_key(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    tx_id: TxId,
    key_ref: &[u8; 32],
) -> Result<Vec<u8>> {
    let entry = table.get(key_ref).map_err(redb_err("get"))?;
    match entry.as_ref().and_then(|g| split_key_entry(g.value())) {
        Some((_, key)) => Ok(key.to_vec()),
        None => Err(Error::CorruptRecord {
            tx_id,
            reason: "its wrapped key is missing from the key table".into(),
        }),
    }
}

/// Adds `delta` to the record counts of wrapped keys (`wrapped` gives the bytes of a key new
/// to the table); a key whose count reaches zero is removed.
fn adjust_key_refs(
    table: &mut redb::Table<&'static [u8; 32], &'static [u8]>,
    deltas: &KeyRefDeltas,
) -> Result<()> {
    for (key_ref, (delta, wrapped)) in deltas {
        let current = table
            .get(key_ref)
            .map_err(redb_err("get"))?
            .and_then(|g| split_key_entry(g.value()).map(|(n, k)| (n, k.to_vec())));
        let (count, bytes) = match current {
            Some(found) => found,
            None => match wrapped {
                Some(w) => (0, w.clone()),
                // Nothing to count down (a damaged table): leave it.
                None => continue,
            },
        };
        let count = (count as i64).saturating_add(*delta).max(0) as u64;
        if count == 0 {
            table.remove(key_ref).map_err(redb_err("remove"))?;
        } else {
            let mut v = Vec::with_capacity(8 + bytes.len());
            v.extend_from_slice(&count.to_be_bytes());
            v.extend_from_slice(&bytes);
            table
                .insert(key_ref, v.as_slice())
                .map_err(redb_err("insert"))?;
        }
    }
    Ok(())
}

/// File name of the store inside a data directory.
pub const ARCHIVE_FILE: &str = "archive.redb";
/// File name of the key ring inside a data directory.
pub const KEYRING_FILE: &str = "archive.keyring";

/// Records removed per write transaction when purging.
const PURGE_CHUNK: usize = 4096;
/// Records re-wrapped per write transaction by [`RedbArchive::rewrap_blocking`].
pub const DEFAULT_REWRAP_CHUNK: usize = 256;

/// Progress of [`RedbArchive::rewrap_blocking`], after each committed chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewrapStats {
    /// Records looked at so far.
    pub scanned: u64,
    /// Records whose data key was re-wrapped under the current key (and committed).
    pub rewrapped: u64,
    /// Records already under the current key, left as they were.
    pub already_current: u64,
    /// Chunks (write transactions) committed.
    pub chunks: u64,
    /// True when every record has been looked at (false if the caller stopped early).
    pub done: bool,
}

fn sender_key(tag: &[u8; 32], ts: u64, id: &TxId) -> [u8; 72] {
    let mut k = [0u8; 72];
    k[..32].copy_from_slice(tag);
    k[32..40].copy_from_slice(&ts.to_be_bytes());
    k[40..].copy_from_slice(id.as_bytes());
    k
}

fn time_key(ts: u64, id: &TxId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&ts.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

struct Inner {
    db: Database,
    keys: Arc<ArchiveKeys>,
    config: ArchiveConfig,
    path: PathBuf,
}

/// The embedded redb archive. Cheap to clone (shared handle).
///
/// ```no_run
/// # async fn demo(tx: dag_core::VerifiedTx) -> archive::Result<()> {
/// use archive::{Archive, ArchiveEntry, RedbArchive};
///
/// let archive = RedbArchive::open_in_dir(std::path::Path::new("/var/lib/city"))?;
/// let id = tx.id();
/// archive.put(ArchiveEntry::new(tx, 1_700_000_000_000)).await?;
/// let back = archive.get(id).await?.expect("archived");
/// assert_eq!(back.id(), id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedbArchive {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedbArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbArchive")
            .field("path", &self.inner.path)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl RedbArchive {
    /// Opens (or creates) the store at `path`, encrypting under `keys`. A file left by a
    /// crashed process is repaired by redb on open; committed batches are all there.
    pub fn open(path: &Path, keys: Arc<ArchiveKeys>, config: ArchiveConfig) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = Database::builder()
            .set_cache_size(config.cache_bytes)
            .create(path)
            .map_err(redb_err("open"))?;
        let w = db.begin_write().map_err(redb_err("begin write"))?;
        {
            w.open_table(RECORDS).map_err(redb_err("open table"))?;
            w.open_table(BY_SENDER).map_err(redb_err("open table"))?;
            w.open_table(BY_TIME).map_err(redb_err("open table"))?;
            w.open_table(WRAPPED_KEYS).map_err(redb_err("open table"))?;
        }
        w.commit().map_err(redb_err("commit"))?;
        Ok(RedbArchive {
            inner: Arc::new(Inner {
                db,
                keys,
                config,
                path: path.to_path_buf(),
            }),
        })
    }

    /// The default archive of a node: `<dir>/archive.redb`, keys in `<dir>/archive.keyring`
    /// (created with mode 0600 on first use), retention 180 days.
    pub fn open_in_dir(dir: &Path) -> Result<Self> {
        let keys = ArchiveKeys::open_or_create(&dir.join(KEYRING_FILE))?;
        Self::open(
            &dir.join(ARCHIVE_FILE),
            Arc::new(keys),
            ArchiveConfig::default(),
        )
    }

    /// The keys (to rotate them, or share them with another backend).
    pub fn keys(&self) -> &Arc<ArchiveKeys> {
        &self.inner.keys
    }

    /// The configuration.
    pub fn config(&self) -> &ArchiveConfig {
        &self.inner.config
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Blocking [`Archive::put_batch`]: encrypts every entry, then writes them in one
    /// durable transaction (one fsync per batch).
    pub fn put_batch_blocking(
        &self,
        entries: Vec<ArchiveEntry>,
    ) -> Result<Vec<Result<PutOutcome>>> {
        // One batch key (one KEM encapsulation) for the whole batch.
        let sealed = StoredRecord::seal_all(&self.inner.keys, &entries)?;
        let w = self
            .inner
            .db
            .begin_write()
            .map_err(redb_err("begin write"))?;
        let outcomes = Self::write_records(&w, &sealed)?;
        w.commit().map_err(redb_err("commit"))?;
        Ok(outcomes)
    }

    fn write_records(
        w: &WriteTransaction,
        sealed: &[StoredRecord],
    ) -> Result<Vec<Result<PutOutcome>>> {
        let mut records = w.open_table(RECORDS).map_err(redb_err("open table"))?;
        let mut by_sender = w.open_table(BY_SENDER).map_err(redb_err("open table"))?;
        let mut by_time = w.open_table(BY_TIME).map_err(redb_err("open table"))?;
        let mut wrapped_keys = w.open_table(WRAPPED_KEYS).map_err(redb_err("open table"))?;
        let mut outcomes = Vec::with_capacity(sealed.len());
        let mut refs = KeyRefDeltas::new();
        for rec in sealed {
            let id = rec.tx_id;
            let existing = records
                .get(id.as_bytes().as_slice())
                .map_err(redb_err("get"))?
                .map(|g| g.value().to_vec());
            if let Some(bytes) = existing {
                let old = StoredRecord::decode_with(id, &bytes, |r| {
                    // A key this batch adds is not in the table yet.
                    match refs.get(r) {
                        Some((_, Some(w))) => Ok(w.clone()),
                        _ => resolve_key(&wrapped_keys, id, r),
                    }
                });
                outcomes.push(match old {
                    Ok(old) if old.fingerprint == rec.fingerprint => Ok(PutOutcome::Unchanged),
                    Ok(_) => Err(Error::Conflict { tx_id: id }),
                    // Never overwrite, even a damaged record: report it.
                    Err(e) => Err(e),
                });
                continue;
            }
            records
                .insert(id.as_bytes().as_slice(), rec.encode_by_ref().as_slice())
                .map_err(redb_err("insert"))?;
            let entry = refs
                .entry(rec.wrapped_key_ref())
                .or_insert_with(|| (0, Some(rec.wrapped_key_bytes().to_vec())));
            entry.0 += 1;
            by_sender
                .insert(sender_key(&rec.sender_tag, rec.ts_ms, &id).as_slice(), ())
                .map_err(redb_err("insert"))?;
            by_time
                .insert(time_key(rec.ts_ms, &id).as_slice(), &rec.sender_tag)
                .map_err(redb_err("insert"))?;
            outcomes.push(Ok(PutOutcome::Inserted));
        }
        adjust_key_refs(&mut wrapped_keys, &refs)?;
        Ok(outcomes)
    }

    fn stored(&self, id: TxId) -> Result<Option<StoredRecord>> {
        let r = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
        let t = r.open_table(RECORDS).map_err(redb_err("open table"))?;
        let Some(g) = t.get(id.as_bytes().as_slice()).map_err(redb_err("get"))? else {
            return Ok(None);
        };
        let keys = r.open_table(WRAPPED_KEYS).map_err(redb_err("open table"))?;
        StoredRecord::decode_with(id, g.value(), |k| resolve_key(&keys, id, k)).map(Some)
    }

    /// Blocking [`Archive::get`].
    pub fn get_blocking(&self, id: TxId) -> Result<Option<ArchivedTx>> {
        self.stored(id)?
            .map(|rec| rec.open(&self.inner.keys))
            .transpose()
    }

    /// Blocking [`Archive::dag_node`].
    pub fn dag_node_blocking(&self, id: TxId) -> Result<Option<DagNode>> {
        Ok(self.stored(id)?.map(|rec| rec.dag_node()))
    }

    /// Blocking [`Archive::query_by_sender`].
    pub fn query_by_sender_blocking(
        &self,
        sender: AccountId,
        range: Range<u64>,
        limit: usize,
    ) -> Result<Vec<ArchivedTx>> {
        if range.start >= range.end || limit == 0 {
            return Ok(Vec::new());
        }
        let tag = self.inner.keys.sender_tag(&sender);
        let zero = TxId::from_bytes([0; 32]);
        let from = sender_key(&tag, range.start, &zero);
        let to = sender_key(&tag, range.end, &zero);
        let mut recs = Vec::new();
        {
            let r = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
            let idx = r.open_table(BY_SENDER).map_err(redb_err("open table"))?;
            let records = r.open_table(RECORDS).map_err(redb_err("open table"))?;
            let keys = r.open_table(WRAPPED_KEYS).map_err(redb_err("open table"))?;
            for item in idx
                .range::<&[u8]>(from.as_slice()..to.as_slice())
                .map_err(redb_err("range"))?
                .take(limit)
            {
                let (k, _) = item.map_err(redb_err("range"))?;
                let id = TxId::from_slice(&k.value()[40..]).map_err(|e| Error::CorruptRecord {
                    tx_id: TxId::default(),
                    reason: format!("sender index key: {e}"),
                })?;
                let Some(g) = records
                    .get(id.as_bytes().as_slice())
                    .map_err(redb_err("get"))?
                else {
                    return Err(Error::CorruptRecord {
                        tx_id: id,
                        reason: "listed in the sender index but missing".into(),
                    });
                };
                recs.push(StoredRecord::decode_with(id, g.value(), |k| {
                    resolve_key(&keys, id, k)
                })?);
            }
        }
        recs.iter()
            .map(|rec| {
                let tx = rec.open(&self.inner.keys)?;
                // The blind index is keyed; a hit for another sender means a broken index.
                if tx.signed.tx.sender != sender {
                    return Err(Error::CorruptRecord {
                        tx_id: rec.tx_id,
                        reason: "sender index points at another sender's tx".into(),
                    });
                }
                Ok(tx)
            })
            .collect()
    }

    /// Blocking [`Archive::purge_expired`]: removes expired records in chunks of 4096 per
    /// transaction.
    pub fn purge_expired_blocking(&self, now_ms: u64) -> Result<u64> {
        let cutoff = self.inner.config.cutoff_ms(now_ms);
        let end = time_key(cutoff, &TxId::from_bytes([0; 32]));
        let mut removed = 0u64;
        loop {
            let w = self
                .inner
                .db
                .begin_write()
                .map_err(redb_err("begin write"))?;
            let n = {
                let mut records = w.open_table(RECORDS).map_err(redb_err("open table"))?;
                let mut by_sender = w.open_table(BY_SENDER).map_err(redb_err("open table"))?;
                let mut by_time = w.open_table(BY_TIME).map_err(redb_err("open table"))?;
                let mut wrapped_keys =
                    w.open_table(WRAPPED_KEYS).map_err(redb_err("open table"))?;
                let mut refs = KeyRefDeltas::new();
                let mut victims = Vec::new();
                for item in by_time
                    .range::<&[u8]>(..end.as_slice())
                    .map_err(redb_err("range"))?
                    .take(PURGE_CHUNK)
                {
                    let (k, tag) = item.map_err(redb_err("range"))?;
                    victims.push((k.value().to_vec(), *tag.value()));
                }
                for (k, tag) in &victims {
                    let ts = u64::from_be_bytes(k[..8].try_into().unwrap_or([0; 8]));
                    let id = TxId::from_slice(&k[8..]).map_err(|e| Error::CorruptRecord {
                        tx_id: TxId::default(),
                        reason: format!("time index key: {e}"),
                    })?;
                    let gone = records
                        .remove(id.as_bytes().as_slice())
                        .map_err(redb_err("remove"))?
                        .and_then(|g| StoredRecord::key_ref_of(id, g.value()));
                    if let Some(key_ref) = gone {
                        refs.entry(key_ref).or_insert((0, None)).0 -= 1;
                    }
                    by_sender
                        .remove(sender_key(tag, ts, &id).as_slice())
                        .map_err(redb_err("remove"))?;
                    by_time.remove(k.as_slice()).map_err(redb_err("remove"))?;
                }
                adjust_key_refs(&mut wrapped_keys, &refs)?;
                victims.len()
            };
            w.commit().map_err(redb_err("commit"))?;
            removed += n as u64;
            if n < PURGE_CHUNK {
                return Ok(removed);
            }
        }
    }

    /// Moves every record to the key ring's current key: for each record wrapped under an
    /// older key (after `ArchiveKeys::rotate_to` another KEM, e.g. ML-KEM-1024), the data key
    /// is unwrapped, wrapped under the current key, and the record's sealed fields re-bound to
    /// the new header. Records already under the current key are left alone, so running it
    /// again after an interruption just finishes the job. Indexes are untouched (tags and
    /// times do not change).
    ///
    /// No window in which data is unreadable: the current key was saved in the ring file
    /// before anything was wrapped under it, old keys are never dropped from the ring, and
    /// each chunk of `chunk` records is replaced in one redb transaction. Whenever the
    /// process dies, each record is either its old version (its old key is in the ring) or
    /// its new one (so is the new key).
    pub fn rewrap_blocking(&self, chunk: usize) -> Result<RewrapStats> {
        self.rewrap_blocking_with(chunk, |_| std::ops::ControlFlow::Continue(()))
    }

    /// [`RedbArchive::rewrap_blocking`], calling `progress` after each committed chunk; it
    /// stops after the chunk when `progress` returns `Break` (the stats then say
    /// `done: false`).
    pub fn rewrap_blocking_with(
        &self,
        chunk: usize,
        mut progress: impl FnMut(&RewrapStats) -> std::ops::ControlFlow<()>,
    ) -> Result<RewrapStats> {
        let chunk = chunk.max(1);
        let keys = &self.inner.keys;
        let mut stats = RewrapStats::default();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let w = self
                .inner
                .db
                .begin_write()
                .map_err(redb_err("begin write"))?;
            let seen = {
                let mut records = w.open_table(RECORDS).map_err(redb_err("open table"))?;
                let mut wrapped_keys =
                    w.open_table(WRAPPED_KEYS).map_err(redb_err("open table"))?;
                let mut refs = KeyRefDeltas::new();
                let mut batch = Vec::with_capacity(chunk);
                {
                    let range = match &after {
                        None => records.range::<&[u8]>(..),
                        Some(k) => records.range::<&[u8]>((
                            std::ops::Bound::Excluded(k.as_slice()),
                            std::ops::Bound::Unbounded,
                        )),
                    }
                    .map_err(redb_err("range"))?;
                    for item in range.take(chunk) {
                        let (k, v) = item.map_err(redb_err("range"))?;
                        batch.push((k.value().to_vec(), v.value().to_vec()));
                    }
                }
                for (k, v) in &batch {
                    let id = TxId::from_slice(k).map_err(|e| Error::CorruptRecord {
                        tx_id: TxId::default(),
                        reason: format!("record key: {e}"),
                    })?;
                    let old =
                        StoredRecord::decode_with(id, v, |r| resolve_key(&wrapped_keys, id, r))?;
                    match old.rewrap(keys)? {
                        Some(rec) => {
                            // Each re-wrapped record has a key of its own: kept inline.
                            records
                                .insert(k.as_slice(), rec.encode().as_slice())
                                .map_err(redb_err("insert"))?;
                            if StoredRecord::is_by_ref(v) {
                                // Resolved above: its key hashes to the reference.
                                refs.entry(old.wrapped_key_ref()).or_insert((0, None)).0 -= 1;
                            }
                            stats.rewrapped += 1;
                        }
                        None => stats.already_current += 1,
                    }
                }
                adjust_key_refs(&mut wrapped_keys, &refs)?;
                after = batch.last().map(|(k, _)| k.clone());
                batch.len()
            };
            // An error above drops `w` uncommitted: the chunk is all old, never half new.
            w.commit().map_err(redb_err("commit"))?;
            stats.scanned += seen as u64;
            stats.chunks += 1;
            if seen < chunk {
                stats.done = true;
                // Finished: there is nothing left for a `Break` to stop.
                let _ = progress(&stats);
                return Ok(stats);
            }
            if progress(&stats).is_break() {
                return Ok(stats);
            }
        }
    }

    /// How many records are wrapped under each key id (for audits and rewrap progress).
    pub fn key_usage_blocking(&self) -> Result<Vec<(pqc::KeyId, u64)>> {
        let r = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
        let t = r.open_table(RECORDS).map_err(redb_err("open table"))?;
        let keys = r.open_table(WRAPPED_KEYS).map_err(redb_err("open table"))?;
        let mut counts: std::collections::BTreeMap<pqc::KeyId, u64> = Default::default();
        for item in t.iter().map_err(redb_err("iter"))? {
            let (k, v) = item.map_err(redb_err("iter"))?;
            let id = TxId::from_slice(k.value()).map_err(|e| Error::CorruptRecord {
                tx_id: TxId::default(),
                reason: format!("record key: {e}"),
            })?;
            *counts
                .entry(
                    StoredRecord::decode_with(id, v.value(), |k| resolve_key(&keys, id, k))?
                        .wrapped_key_id()?,
                )
                .or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }

    /// [`RedbArchive::rewrap_blocking`] on tokio's blocking pool.
    pub async fn rewrap(&self, chunk: usize) -> Result<RewrapStats> {
        self.blocking(move |a| a.rewrap_blocking(chunk)).await
    }

    /// Blocking [`Archive::count`].
    pub fn count_blocking(&self) -> Result<u64> {
        let r = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
        let t = r.open_table(RECORDS).map_err(redb_err("open table"))?;
        t.len().map_err(redb_err("len"))
    }

    /// Every archived tx id, in id order (for audits and the crash test).
    pub fn ids_blocking(&self) -> Result<Vec<TxId>> {
        let r = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
        let t = r.open_table(RECORDS).map_err(redb_err("open table"))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(redb_err("iter"))? {
            let (k, _) = item.map_err(redb_err("iter"))?;
            out.push(
                TxId::from_slice(k.value()).map_err(|e| Error::CorruptRecord {
                    tx_id: TxId::default(),
                    reason: format!("record key: {e}"),
                })?,
            );
        }
        Ok(out)
    }

    /// Sizes of the two index tables: (by sender, by time). Both equal the record count in
    /// a consistent store.
    pub fn index_counts_blocking(&self) -> Result<(u64, u64)> {
        let r = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
        let s = r.open_table(BY_SENDER).map_err(redb_err("open table"))?;
        let t = r.open_table(BY_TIME).map_err(redb_err("open table"))?;
        Ok((
            s.len().map_err(redb_err("len"))?,
            t.len().map_err(redb_err("len"))?,
        ))
    }

    /// Runs a blocking operation on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&RedbArchive) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    #[cfg(test)]
    pub(crate) fn raw_put_for_test(&self, id: TxId, bytes: &[u8]) -> Result<()> {
        let w = self
            .inner
            .db
            .begin_write()
            .map_err(redb_err("begin write"))?;
        {
            let mut t = w.open_table(RECORDS).map_err(redb_err("open table"))?;
            t.insert(id.as_bytes().as_slice(), bytes)
                .map_err(redb_err("insert"))?;
        }
        w.commit().map_err(redb_err("commit"))
    }

    /// The wrapped-key table: reference → record count.
    #[cfg(test)]
    pub(crate) fn wrapped_keys_for_test(&self) -> Result<Vec<([u8; 32], u64)>> {
        let r = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
        let t = r.open_table(WRAPPED_KEYS).map_err(redb_err("open table"))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(redb_err("iter"))? {
            let (k, v) = item.map_err(redb_err("iter"))?;
            let (count, _) = split_key_entry(v.value()).unwrap_or_default();
            out.push((*k.value(), count));
        }
        Ok(out)
    }

    #[cfg(test)]
    pub(crate) fn raw_get_for_test(&self, id: TxId) -> Result<Option<Vec<u8>>> {
        let r = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
        let t = r.open_table(RECORDS).map_err(redb_err("open table"))?;
        Ok(t.get(id.as_bytes().as_slice())
            .map_err(redb_err("get"))?
            .map(|g| g.value().to_vec()))
    }
}

impl Archive for RedbArchive {
    async fn put_batch(&self, entries: Vec<ArchiveEntry>) -> Result<Vec<Result<PutOutcome>>> {
        self.blocking(move |a| a.put_batch_blocking(entries)).await
    }

    async fn get(&self, id: TxId) -> Result<Option<ArchivedTx>> {
        self.blocking(move |a| a.get_blocking(id)).await
    }

    async fn dag_node(&self, id: TxId) -> Result<Option<DagNode>> {
        self.blocking(move |a| a.dag_node_blocking(id)).await
    }

    async fn query_by_sender(
        &self,
        sender: AccountId,
        range: Range<u64>,
        limit: usize,
    ) -> Result<Vec<ArchivedTx>> {
        self.blocking(move |a| a.query_by_sender_blocking(sender, range, limit))
            .await
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<u64> {
        self.blocking(move |a| a.purge_expired_blocking(now_ms))
            .await
    }

    async fn count(&self) -> Result<u64> {
        self.blocking(|a| a.count_blocking()).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::record::tests::{keys, verified};
    use pqc::{Keyring, NtruParams};
    use std::collections::HashMap;

    fn open(dir: &Path, keys: Arc<ArchiveKeys>) -> RedbArchive {
        RedbArchive::open(&dir.join("a.redb"), keys, ArchiveConfig::default()).unwrap()
    }

    #[test]
    fn corrupt_and_truncated_records_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path(), Arc::new(keys()));
        let v = verified(10, b"x");
        let id = v.id();
        a.put_batch_blocking(vec![ArchiveEntry::new(v.clone(), 1)])
            .unwrap();
        let good = a.raw_get_for_test(id).unwrap().unwrap();

        a.raw_put_for_test(id, &good[..good.len() / 2]).unwrap();
        assert!(
            matches!(a.get_blocking(id), Err(Error::CorruptRecord { tx_id, .. }) if tx_id == id)
        );
        a.raw_put_for_test(id, b"").unwrap();
        assert!(matches!(
            a.get_blocking(id),
            Err(Error::CorruptRecord { .. })
        ));
        let mut flipped = good.clone();
        let n = flipped.len();
        flipped[n - 5] ^= 1; // inside the sealed signature
        a.raw_put_for_test(id, &flipped).unwrap();
        assert!(matches!(
            a.get_blocking(id),
            Err(Error::Tampered {
                field: "signature",
                ..
            })
        ));
        // A damaged record is never overwritten by a put: the same tx again is a no-op, the
        // same body signed again (ML-DSA signing is randomised) is a conflict.
        let same = a
            .put_batch_blocking(vec![ArchiveEntry::new(v.clone(), 1)])
            .unwrap();
        assert!(matches!(same[0], Ok(PutOutcome::Unchanged)));
        let resigned = a.put_batch_blocking(vec![ArchiveEntry::new(verified(10, b"x"), 1)]);
        assert!(matches!(resigned.unwrap()[0], Err(Error::Conflict { tx_id }) if tx_id == id));
        assert_eq!(a.raw_get_for_test(id).unwrap().unwrap(), flipped);

        // Another tx's record stored under this id: caught before decryption.
        let w = verified(11, b"y");
        let wid = w.id();
        a.put_batch_blocking(vec![ArchiveEntry::new(w, 1)]).unwrap();
        let other = a.raw_get_for_test(wid).unwrap().unwrap();
        a.raw_put_for_test(id, &other).unwrap();
        assert!(matches!(
            a.get_blocking(id),
            Err(Error::CorruptRecord { .. })
        ));
    }

    #[test]
    fn a_batch_stores_its_wrapped_key_once_and_drops_it_with_its_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(keys());
        let a = open(dir.path(), keys.clone());
        // A tx the size of the bench's (7.3 KB: payload up to the usual size).
        let entries: Vec<ArchiveEntry> = (0..3)
            .map(|i| ArchiveEntry::new(verified(200 + i, &[i as u8; 40]), 1_000 + i))
            .collect();
        a.put_batch_blocking(entries.clone()).unwrap();
        let table = a.wrapped_keys_for_test().unwrap();
        assert_eq!(table.len(), 1, "one wrapped key for the whole batch");
        assert_eq!(table[0].1, 3);
        for e in &entries {
            let raw = a.raw_get_for_test(e.id()).unwrap().unwrap();
            assert_eq!(&raw[..4], b"CCAK");
            let inline = StoredRecord::decode_with(e.id(), &raw, |r| {
                assert_eq!(r, &table[0].0);
                resolve_key(
                    &a.inner
                        .db
                        .begin_read()
                        .unwrap()
                        .open_table(WRAPPED_KEYS)
                        .unwrap(),
                    e.id(),
                    r,
                )
            })
            .unwrap();
            // The stored record is the inline one less the wrapped key plus a 32-byte ref.
            let wrapped = inline.wrapped_key_bytes().len();
            assert!(wrapped > 1_000, "an NTRU ciphertext: {wrapped} bytes");
            assert_eq!(raw.len(), inline.encode().len() - 2 - wrapped + 32);
            let got = a.get_blocking(e.id()).unwrap().unwrap();
            assert_eq!(&got.signed, e.tx.signed());
        }
        // A record written inline (before this layout) is still read.
        let old = verified(300, b"old");
        let rec = StoredRecord::seal(&keys, &ArchiveEntry::new(old.clone(), 900)).unwrap();
        a.raw_put_for_test(old.id(), &rec.encode()).unwrap();
        assert_eq!(
            &a.get_blocking(old.id()).unwrap().unwrap().signed,
            old.signed()
        );
        // A second batch has a key of its own; purging the first batch's records (archived
        // at 1 000–1 002) drops its key, not the second's.
        let later = ArchiveEntry::new(verified(400, b"later"), 5_000);
        a.put_batch_blocking(vec![later.clone()]).unwrap();
        assert_eq!(a.wrapped_keys_for_test().unwrap().len(), 2);
        let retention = u64::try_from(a.config().retention.as_millis()).unwrap();
        assert_eq!(a.purge_expired_blocking(retention + 1_003).unwrap(), 3);
        let left = a.wrapped_keys_for_test().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1, 1);
        assert!(a.get_blocking(later.id()).unwrap().is_some());
        // A record whose key is gone from the table is a typed error, not a panic.
        // (First: another tx's record under this id is caught as corrupt.)
        let later_raw = a.raw_get_for_test(later.id()).unwrap().unwrap();
        a.raw_put_for_test(entries[0].id(), &later_raw).unwrap();
        assert!(matches!(
            a.get_blocking(entries[0].id()),
            Err(Error::CorruptRecord { .. })
        ));
        {
            let w = a.inner.db.begin_write().unwrap();
            w.open_table(WRAPPED_KEYS)
                .unwrap()
                .remove(&left[0].0)
                .unwrap();
            w.commit().unwrap();
        }
        assert!(matches!(
            a.get_blocking(later.id()),
            Err(Error::CorruptRecord { tx_id, .. }) if tx_id == later.id()
        ));
    }

    #[test]
    fn unknown_key_id_and_wrong_ring() {
        let dir = tempfile::tempdir().unwrap();
        let v = verified(12, b"z");
        let id = v.id();
        {
            let a = open(dir.path(), Arc::new(keys()));
            a.put_batch_blocking(vec![ArchiveEntry::new(v, 1)]).unwrap();
        }
        // Reopened with a ring that lacks the key.
        let stranger = ArchiveKeys::new(Keyring::generate(NtruParams::default()).unwrap());
        let a = open(dir.path(), Arc::new(stranger));
        assert!(matches!(a.get_blocking(id), Err(Error::UnknownKey { tx_id, .. }) if tx_id == id));
        // The DAG node (clear part) is still readable.
        assert_eq!(a.dag_node_blocking(id).unwrap().unwrap().tx_id, id);
    }

    #[test]
    fn rewrap_to_ml_kem_stopped_midway_leaves_every_record_readable_and_resumes() {
        use pqc::Kem;
        use std::ops::ControlFlow;
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(keys());
        let entries: Vec<ArchiveEntry> = (0..20)
            .map(|i| ArchiveEntry::new(verified(100 + i, &[i as u8; 50]), 1_000 + i))
            .collect();
        let ntru_key = keys.current_key_id();
        {
            let a = open(dir.path(), keys.clone());
            a.put_batch_blocking(entries.clone()).unwrap();
        }
        let ml_key = keys.rotate_to(Kem::MlKem1024).unwrap();
        assert_eq!(keys.current_kem(), Kem::MlKem1024);
        {
            // The "crash": the process stops after two committed chunks of four.
            let a = open(dir.path(), keys.clone());
            let stats = a
                .rewrap_blocking_with(4, |s| {
                    if s.chunks == 2 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .unwrap();
            assert!(!stats.done);
            assert_eq!((stats.scanned, stats.rewrapped), (8, 8));
        }
        let check_all = |a: &RedbArchive| {
            for e in &entries {
                let got = a.get_blocking(e.id()).unwrap().expect("present");
                assert_eq!(&got.signed, e.tx.signed());
                assert_eq!(got.ts_ms, e.ts_ms);
            }
            assert_eq!(a.index_counts_blocking().unwrap(), (20, 20));
        };
        let a = open(dir.path(), keys.clone());
        assert_eq!(
            a.key_usage_blocking()
                .unwrap()
                .into_iter()
                .collect::<HashMap<_, _>>(),
            HashMap::from([(ntru_key, 12), (ml_key, 8)])
        );
        check_all(&a);
        // The batch's one wrapped key is still named by the 12 records not yet moved.
        assert_eq!(
            a.wrapped_keys_for_test()
                .unwrap()
                .iter()
                .map(|(_, n)| *n)
                .collect::<Vec<_>>(),
            vec![12]
        );
        // Run again: it finishes the job and leaves the moved records alone.
        let stats = a.rewrap_blocking(4).unwrap();
        assert!(stats.done);
        assert_eq!((stats.rewrapped, stats.already_current), (12, 8));
        assert_eq!(a.wrapped_keys_for_test().unwrap(), vec![]);
        assert_eq!(a.key_usage_blocking().unwrap(), vec![(ml_key, 20)]);
        check_all(&a);
        // New records use ML-KEM too; a put of an archived tx is still a no-op.
        let again = a.put_batch_blocking(vec![entries[0].clone()]).unwrap();
        assert!(matches!(again[0], Ok(PutOutcome::Unchanged)));
        let by_sender = a
            .query_by_sender_blocking(entries[0].tx.signed().tx.sender, 0..u64::MAX, 100)
            .unwrap();
        assert_eq!(by_sender.len(), 20);
        assert!(by_sender.iter().all(|t| t.key_id == ml_key));
    }

    #[test]
    fn a_chunk_that_fails_is_not_half_rewrapped() {
        use pqc::Kem;
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(keys());
        let a = open(dir.path(), keys.clone());
        let entries: Vec<ArchiveEntry> = (0..6)
            .map(|i| ArchiveEntry::new(verified(200 + i, b"p"), 1))
            .collect();
        a.put_batch_blocking(entries.clone()).unwrap();
        // A record under a key this ring does not hold, among the others.
        let stranger = ArchiveKeys::new(Keyring::generate(NtruParams::default()).unwrap());
        let odd = ArchiveEntry::new(verified(299, b"odd"), 1);
        let rec = StoredRecord::seal(&stranger, &odd).unwrap();
        a.raw_put_for_test(odd.id(), &rec.encode()).unwrap();
        let before = a.key_usage_blocking().unwrap();
        keys.rotate_to(Kem::MlKem1024).unwrap();
        assert!(matches!(
            a.rewrap_blocking(100),
            Err(Error::UnknownKey { tx_id, .. }) if tx_id == odd.id()
        ));
        // One chunk, one transaction: nothing of it was written.
        assert_eq!(a.key_usage_blocking().unwrap(), before);
        for e in &entries {
            assert!(a.get_blocking(e.id()).unwrap().is_some());
        }
    }
}

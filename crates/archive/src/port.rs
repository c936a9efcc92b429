//! The [`Archive`] trait every backend implements, and its configuration.
//!
//! # Async design
//!
//! The trait uses native `async fn` (written as `fn … -> impl Future + Send`), so it is used
//! **generically** (`impl Archive`, `A: Archive`), not as `dyn Archive`. To choose a backend at
//! run time, hold an [`crate::AnyArchive`], an enum over the backends that implements the
//! trait by dispatch. Backends never block the caller's reactor: the redb backend runs each
//! call (store I/O, NTRU and AEAD work) on tokio's blocking pool, and also offers the same
//! operations as plain blocking methods for callers outside a runtime.

use crate::{ArchiveEntry, ArchivedTx, DagNode, Error, Result};
use dag_core::{AccountId, TxId};
use std::future::Future;
use std::ops::Range;
use std::time::Duration;

/// Default retention: 180 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(180 * 24 * 3600);

/// Archive settings shared by the backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// How long a record is kept, counted from its archive time. Default 180 days.
    pub retention: Duration,
    /// Page cache of the embedded (redb) store, bytes. Default 32 MiB (redb's own default,
    /// 1 GiB, let the archive's memory grow with history).
    pub cache_bytes: usize,
}

/// Default page cache of the embedded archive store: 32 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            retention: DEFAULT_RETENTION,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

impl ArchiveConfig {
    /// Records with an archive time strictly before this are expired at `now_ms`.
    pub fn cutoff_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX))
    }
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The record was written.
    Inserted,
    /// The same tx (same signed bytes, same parents) was already archived: nothing changed.
    Unchanged,
}

/// The long-term record of held txs.
///
/// Guarantees every backend keeps (checked by the conformance suite in `tests/it`):
/// - **Idempotent put by tx id**: the same signed tx and parents again is
///   [`PutOutcome::Unchanged`]; different content under an existing id is
///   [`Error::Conflict`] and the stored record is left as it was.
/// - **Atomic batches** (redb): a batch is one transaction; after a crash either all of its
///   records are there or none.
/// - **Encrypted fields**: amount, parties (sender, receiver, public key), payload and
///   signature reach the store only as ciphertexts under a per-record data key wrapped by
///   NTRU-KEM; reading checks the decrypted tx's id against the id asked for.
/// - **Retention**: [`Archive::purge_expired`] removes exactly the records whose archive
///   time is older than the retention at the given time.
pub trait Archive: Send + Sync {
    /// Writes a batch. The outer error is a store failure (nothing of the batch written, for
    /// redb); each entry's own result is its outcome or [`Error::Conflict`].
    fn put_batch(
        &self,
        entries: Vec<ArchiveEntry>,
    ) -> impl Future<Output = Result<Vec<Result<PutOutcome>>>> + Send;

    /// Writes one entry.
    fn put(&self, entry: ArchiveEntry) -> impl Future<Output = Result<PutOutcome>> + Send {
        async move {
            let id = entry.id();
            self.put_batch(vec![entry])
                .await?
                .pop()
                .unwrap_or_else(|| Err(Error::Task(format!("no outcome for tx {id}"))))
        }
    }

    /// Reads and decrypts the tx with this id; `None` if not archived.
    fn get(&self, id: TxId) -> impl Future<Output = Result<Option<ArchivedTx>>> + Send;

    /// The DAG node of a tx (id, parents, archive time), read without decrypting.
    fn dag_node(&self, id: TxId) -> impl Future<Output = Result<Option<DagNode>>> + Send;

    /// Txs from `sender` with archive time in `range` (ms, end exclusive), oldest first, at
    /// most `limit`.
    fn query_by_sender(
        &self,
        sender: AccountId,
        range: Range<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ArchivedTx>>> + Send;

    /// Removes every record whose archive time is before `now_ms − retention`; returns how
    /// many were removed. Time is passed in, never read here.
    fn purge_expired(&self, now_ms: u64) -> impl Future<Output = Result<u64>> + Send;

    /// Number of archived records.
    fn count(&self) -> impl Future<Output = Result<u64>> + Send;
}

//! [`ArchiveWriter`]: writes entries in the background through a bounded queue, in batches
//! (one redb transaction each), with back-pressure when the queue is full.

use crate::{Archive, ArchiveEntry, Error, PutOutcome, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Settings of an [`ArchiveWriter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveWriterConfig {
    /// Entries the queue holds before [`ArchiveWriter::submit`] waits and
    /// [`ArchiveWriter::try_submit`] fails. Default 4096.
    pub queue: usize,
    /// Most entries written per batch. Default 256.
    pub max_batch: usize,
    /// Attempts per batch on a store failure, with 100 ms × attempt between them. Default 3.
    pub attempts: u32,
    /// Least time between the starts of two batches (default 50 ms). Each batch is one
    /// durable commit (an fsync) and one KEM encapsulation, so under steady load the writer
    /// gathers what arrives in this window into one batch instead of committing every few
    /// entries; after an idle spell the first entry is written at once. Zero: write
    /// whatever is queued as soon as the previous batch is done.
    pub linger: Duration,
}

impl Default for ArchiveWriterConfig {
    fn default() -> Self {
        ArchiveWriterConfig {
            queue: 4096,
            max_batch: 256,
            attempts: 3,
            linger: Duration::from_millis(50),
        }
    }
}

/// Counters of an [`ArchiveWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Records written.
    pub inserted: u64,
    /// Entries already archived with the same content.
    pub unchanged: u64,
    /// Entries refused: conflict or damaged existing record (nothing overwritten).
    pub rejected: u64,
    /// Entries lost because every attempt at their batch failed.
    pub failed: u64,
    /// Batches written.
    pub batches: u64,
}

#[derive(Debug, Default)]
struct Counters {
    inserted: AtomicU64,
    unchanged: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    batches: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WriterStats {
        WriterStats {
            inserted: self.inserted.load(Ordering::Relaxed),
            unchanged: self.unchanged.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }
}

/// A background task that archives entries in batches. Submitting never blocks a thread:
/// [`ArchiveWriter::submit`] waits asynchronously for room (back-pressure),
/// [`ArchiveWriter::try_submit`] fails at once with [`Error::QueueFull`].
/// [`ArchiveWriter::shutdown`] writes what is queued and stops.
#[derive(Debug)]
pub struct ArchiveWriter {
    tx: mpsc::Sender<ArchiveEntry>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl ArchiveWriter {
    /// Starts the writer on the current tokio runtime.
    pub fn spawn<A: Archive + 'static>(archive: A, config: ArchiveWriterConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(archive, rx, config, counters.clone()));
        ArchiveWriter { tx, task, counters }
    }

    /// Queues an entry, waiting while the queue is full.
    pub async fn submit(&self, entry: ArchiveEntry) -> Result<()> {
        self.tx.send(entry).await.map_err(|_| Error::WriterClosed)
    }

    /// Queues an entry if there is room; [`Error::QueueFull`] otherwise.
    pub fn try_submit(&self, entry: ArchiveEntry) -> Result<()> {
        self.tx.try_send(entry).map_err(|e| match e {
            mpsc::error::TrySendError::Full(e) => Error::QueueFull { tx_id: e.id() },
            mpsc::error::TrySendError::Closed(_) => Error::WriterClosed,
        })
    }

    /// Entries waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// Writes everything queued, stops the task and returns the final counters.
    pub async fn shutdown(self) -> Result<WriterStats> {
        let ArchiveWriter { tx, task, counters } = self;
        drop(tx);
        task.await.map_err(|e| Error::Task(e.to_string()))?;
        Ok(counters.snapshot())
    }
}

async fn run<A: Archive>(
    archive: A,
    mut rx: mpsc::Receiver<ArchiveEntry>,
    config: ArchiveWriterConfig,
    counters: Arc<Counters>,
) {
    let max_batch = config.max_batch.max(1);
    let mut buf = Vec::with_capacity(max_batch);
    let mut due = tokio::time::Instant::now();
    while rx.recv_many(&mut buf, max_batch).await > 0 {
        // Under load, gather until `linger` after the previous batch began (or the batch is
        // full); an entry after an idle spell goes at once (`due` has passed).
        while buf.len() < max_batch && due > tokio::time::Instant::now() {
            let room = max_batch - buf.len();
            match tokio::time::timeout_at(due, rx.recv_many(&mut buf, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        due = tokio::time::Instant::now() + config.linger;
        let batch = std::mem::take(&mut buf);
        let n = batch.len() as u64;
        let mut attempt = 1;
        loop {
            match archive.put_batch(batch.clone()).await {
                Ok(outcomes) => {
                    for o in outcomes {
                        let c = match o {
                            Ok(PutOutcome::Inserted) => &counters.inserted,
                            Ok(PutOutcome::Unchanged) => &counters.unchanged,
                            Err(_) => &counters.rejected,
                        };
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    counters.batches.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(_) if attempt < config.attempts => {
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(_) => {
                    counters.failed.fetch_add(n, Ordering::Relaxed);
                    break;
                }
            }
        }
        buf = Vec::with_capacity(max_batch);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::RedbArchive;
    use crate::record::tests::verified;

    #[tokio::test]
    async fn writes_everything_in_batches_and_applies_back_pressure() {
        let dir = tempfile::tempdir().unwrap();
        let a = RedbArchive::open_in_dir(dir.path()).unwrap();
        let entries: Vec<ArchiveEntry> = (0..40)
            .map(|i| ArchiveEntry::new(verified(1000 + i, b"w"), i))
            .collect();
        let w = ArchiveWriter::spawn(
            a.clone(),
            ArchiveWriterConfig {
                queue: 4,
                max_batch: 8,
                attempts: 1,
                linger: Duration::ZERO,
            },
        );
        for e in entries.iter().cloned() {
            w.submit(e).await.unwrap();
        }
        // The same entry again is counted as unchanged.
        w.submit(entries[0].clone()).await.unwrap();
        let stats = w.shutdown().await.unwrap();
        assert_eq!(stats.inserted, 40);
        assert_eq!(stats.unchanged, 1);
        assert_eq!((stats.rejected, stats.failed), (0, 0));
        assert!(stats.batches >= 41 / 8, "{stats:?}");
        for e in &entries {
            assert!(a.get(e.id()).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn under_load_a_batch_gathers_what_arrives_within_the_linger() {
        let dir = tempfile::tempdir().unwrap();
        let a = RedbArchive::open_in_dir(dir.path()).unwrap();
        let w = ArchiveWriter::spawn(
            a.clone(),
            ArchiveWriterConfig {
                linger: Duration::from_secs(2),
                ..ArchiveWriterConfig::default()
            },
        );
        // After an idle spell the first entry is written at once, alone.
        w.submit(ArchiveEntry::new(verified(3000, b"l"), 1))
            .await
            .unwrap();
        let t0 = tokio::time::Instant::now();
        while w.stats().batches == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "first entry never written"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The next ones, arriving within the linger, share one batch (one commit).
        for i in 0..10 {
            w.submit(ArchiveEntry::new(verified(3001 + i, b"l"), 1))
                .await
                .unwrap();
        }
        let stats = w.shutdown().await.unwrap();
        assert_eq!(stats.inserted, 11);
        assert_eq!(stats.batches, 2, "{stats:?}");
        assert_eq!(a.count_blocking().unwrap(), 11);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn try_submit_reports_a_full_queue() {
        let dir = tempfile::tempdir().unwrap();
        let a = RedbArchive::open_in_dir(dir.path()).unwrap();
        let w = ArchiveWriter::spawn(
            a,
            ArchiveWriterConfig {
                queue: 2,
                max_batch: 8,
                attempts: 1,
                linger: Duration::ZERO,
            },
        );
        // On a current-thread runtime the writer cannot run until we yield: the queue fills.
        w.try_submit(ArchiveEntry::new(verified(2000, b""), 1))
            .unwrap();
        w.try_submit(ArchiveEntry::new(verified(2001, b""), 1))
            .unwrap();
        assert_eq!(w.queued(), 2);
        let third = verified(2002, b"");
        let id = third.id();
        assert!(matches!(
            w.try_submit(ArchiveEntry::new(third, 1)),
            Err(Error::QueueFull { tx_id }) if tx_id == id
        ));
        let stats = w.shutdown().await.unwrap();
        assert_eq!(stats.inserted, 2);
    }
}

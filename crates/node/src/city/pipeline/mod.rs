//! The city's storage pipeline: admitted txs are micro-batched, each micro-batch becomes one
//! erasure-coded stripe put to n distinct light nodes in parallel (per-call deadline,
//! retries, a failed holder's shard goes to another node), and a tx is **Held** once the
//! holders' signed receipts (PoH_ACK) are verified and the stripe index is durable.
//! It also restores a tx from any k shards and re-replicates shards of a departed node.
//!
//! This file holds the [`Pipeline`] type, its [`PipelineConfig`], its errors and its ports
//! ([`ShardTransport`], [`HolderDirectory`]). One file per concern:
//!
//! - [`batcher`]: queueing a tx ([`Pipeline::hold`]) and cutting a micro-batch whenever a
//!   placement slot frees (natural batching), with a bound on micro-batches in flight.
//! - [`put`]: encoding a micro-batch and placing its shards on distinct holders (deadline,
//!   retries, failover, receipt verification), and the Held decision.
//! - [`stripe_index`]: the stripe records and tx locations persisted in redb
//!   ([`Pipeline::held`], [`Pipeline::manifests`]).
//! - [`restore`]: restoring a tx or a whole stripe from any k shards.
//! - [`repair`]: per-stripe repair, re-replication after a departure, and the `apply_plan`
//!   both share.

mod batcher;
pub use batcher::HoldPriority;
mod put;
mod repair;
mod restore;
mod stripe_index;
#[cfg(test)]
mod test_utils;

use crate::{Error, Result};
use async_trait::async_trait;
use dag_core::{NodeInfo, SignedReceipt, SignedTx, StripeId};
use redb::Database;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use storage::{ErasureConfig, Shard};
use tokio::sync::{mpsc, oneshot};

/// Why a call to a light node failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The node did not answer in time.
    #[error("{node}: no answer within {ms} ms")]
    Timeout {
        /// The node.
        node: String,
        /// Deadline.
        ms: u64,
    },
    /// The node could not be reached.
    #[error("{node}: unreachable: {reason}")]
    Unreachable {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// The node refused (over quota, bad shard …).
    #[error("{node}: refused: {reason}")]
    Refused {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// The node does not hold the shard asked for.
    #[error("{node}: does not hold shard {index} of stripe {stripe}")]
    NotHeld {
        /// The node.
        node: String,
        /// Stripe.
        stripe: String,
        /// Index.
        index: u16,
    },
}

/// How the city talks to light nodes (gRPC `ShardStore` in production; an in-memory double
/// in tests).
#[async_trait]
pub trait ShardTransport: Send + Sync + 'static {
    /// Stores `shard` on `node`; returns the node's signed receipt (not yet verified).
    async fn put_shard(
        &self,
        node: &NodeInfo,
        shard: &Shard,
    ) -> std::result::Result<SignedReceipt, TransportError>;
    /// Fetches a shard from `node` (not yet checked).
    async fn get_shard(
        &self,
        node: &NodeInfo,
        stripe: StripeId,
        index: u16,
    ) -> std::result::Result<Shard, TransportError>;
    /// Sets up the connection to `node` (over TLS: the handshake with its ML-KEM key
    /// exchange and NodeId check), bounded by the transport's own connect timeout. The
    /// pipeline calls it before each put or get, outside that call's deadline, so a cold
    /// handshake never eats the call's time. Default: nothing to set up.
    async fn connect(&self, node: &NodeInfo) -> std::result::Result<(), TransportError> {
        let _ = node;
        Ok(())
    }
}

/// Who can hold shards right now, best first for a given stripe.
pub trait HolderDirectory: Send + Sync + 'static {
    /// Live light nodes.
    fn live_lights(&self) -> Vec<NodeInfo>;
    /// Live light nodes ranked for `stripe` (the first n become its holders); `urgent` when
    /// the micro-batch carries urgent txs. The default ranks by rendezvous hash of
    /// (stripe, node), which is stable under churn.
    fn rank(&self, stripe: &StripeId, nodes: Vec<NodeInfo>, urgent: bool) -> Vec<NodeInfo> {
        let _ = urgent;
        let mut v: Vec<([u8; 32], NodeInfo)> = nodes
            .into_iter()
            .map(|n| {
                let mut h = blake3::Hasher::new();
                h.update(stripe.as_bytes()).update(n.node_id.as_bytes());
                (*h.finalize().as_bytes(), n)
            })
            .collect();
        v.sort_by_key(|a| a.0);
        v.into_iter().map(|(_, n)| n).collect()
    }
}

/// Pipeline settings. `Default`: RS 4+2 (simd), micro-batches of at most 512 txs or 2 MiB
/// cut whenever one of 2 placement slots frees (natural batching; a 2 ms flush timer only
/// when nothing is in flight), 500 ms per put (the design's 200 ms city-tier timeout proved
/// too tight for ~0.5 MiB shards on a loaded 2-core machine), 3 attempts, all n receipts,
/// a 2 s cool-down for a node that refused or failed a put, and up to 1 s of waiting for n
/// usable holders.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Codec, k, m.
    pub erasure: ErasureConfig,
    /// Most txs in one micro-batch.
    pub max_batch_txs: usize,
    /// Most bytes (encoded txs) in one micro-batch (the last tx may cross it).
    pub max_batch_bytes: usize,
    /// How long a tx waits for company when the pipeline is idle (no micro-batch in
    /// flight); under load a batch is cut at once when a slot frees.
    pub flush_after: Duration,
    /// Deadline of one PutShard / GetShard call.
    pub call_timeout: Duration,
    /// Attempts per holder before the shard goes to another node.
    pub attempts: u32,
    /// Receipts needed to answer Held (`None` = all n); the rest are placed in the background.
    pub min_receipts: Option<usize>,
    /// Micro-batches being stored at once (placement slots). Few slots make batches grow
    /// with the load: each stripe's fixed costs (6 receipts signed and verified, 6 fsyncs)
    /// are shared by more txs. Default 2: on the separate-process bench, 4 slots cut
    /// stripes of ~13 txs at 80 % load, 2 slots ~24–35 (peak Held tx/s ×1.35, light-node CPU
    /// per tx −43 %), 1 slot ~100 but p99 past 500 ms at 80 %.
    pub max_batches_in_flight: usize,
    /// Least time between two micro-batches cut (default 10 ms). Each stripe has fixed
    /// costs — n receipts signed by the holders and verified here, n holder commits, one
    /// stripe-record commit — so at moderate load, when a slot is free at once, cutting
    /// every few milliseconds makes stripes of a handful of txs; this spacing lets them
    /// gather (at most 100 stripes/s by default, adding at most this much latency). Zero:
    /// cut whenever a slot is free.
    pub stripe_spacing: Duration,
    /// How long a node that refused a put (full) or was unreachable on every attempt gets
    /// no shards.
    pub node_cooldown: Duration,
    /// How long a micro-batch waits for n distinct usable holders before it fails with
    /// [`PipelineError::NoRoom`].
    pub capacity_wait: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            erasure: ErasureConfig::default(),
            max_batch_txs: 512,
            max_batch_bytes: 2 << 20,
            flush_after: Duration::from_millis(2),
            call_timeout: Duration::from_millis(500),
            attempts: 3,
            min_receipts: None,
            max_batches_in_flight: 2,
            stripe_spacing: Duration::from_millis(10),
            node_cooldown: Duration::from_secs(2),
            capacity_wait: Duration::from_secs(1),
        }
    }
}

/// A held tx: its stripe and the verified holders' receipts.
#[derive(Debug, Clone)]
pub struct HeldTx {
    /// The stripe (micro-batch) holding the tx.
    pub stripe_id: StripeId,
    /// Receipts of the stripe's holders, one per placed shard. Shared by every tx of the
    /// stripe (one list per micro-batch, not a copy per tx).
    pub receipts: Arc<Vec<SignedReceipt>>,
    /// True if some node holds two shards. New stripes never are; a stripe recorded so by an
    /// older version is spread out by repair.
    pub colocated: bool,
}

/// A tx restored from shards.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The tx, signature verified.
    pub tx: SignedTx,
    /// The receipts, verified.
    pub receipts: Vec<SignedReceipt>,
    /// Shards fetched and used.
    pub shards_used: usize,
}

/// Outcome of re-replicating after a departure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Stripes that had a shard on the departed node.
    pub stripes_affected: usize,
    /// Shards re-created and placed with a verified receipt.
    pub shards_placed: usize,
    /// Stripes that could not be fully repaired (with why).
    pub failures: Vec<(StripeId, String)>,
}

/// How well the recorded stripes are placed, from the manifests and the city's live view
/// (no probing: `repair-cli audit` proves each shard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlacementHealth {
    /// Stripes recorded.
    pub stripes: usize,
    /// Stripes with fewer than n distinct live holders (colocated, unplaced or departed).
    pub underplaced: usize,
    /// Stripes with two or more shards on one node.
    pub colocated: usize,
    /// Stripes with exactly k distinct live holders: one more loss and they are lost.
    pub one_loss_from_unrecoverable: usize,
}

/// Pipeline errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PipelineError {
    /// Not enough receipts arrived.
    #[error("stripe {stripe}: only {got} of {needed} receipts ({reasons})")]
    NotHeld {
        /// Stripe.
        stripe: String,
        /// Receipts verified.
        got: usize,
        /// Needed.
        needed: usize,
        /// Last failures.
        reasons: String,
    },
    /// Fewer than n distinct light nodes can take a shard now (too few live, full, or
    /// failing): the txs are not Held. Retryable once capacity returns.
    #[error(
        "not held: only {usable} light nodes can take a shard, {needed} distinct holders are needed ({reason}); retry later"
    )]
    NoRoom {
        /// Nodes that could take a shard.
        usable: usize,
        /// Distinct holders needed (n).
        needed: usize,
        /// Why the others could not.
        reason: String,
    },
    /// The tx is not in any stripe of this city.
    #[error("tx {0} is not held by this city")]
    UnknownTx(String),
    /// Storage-level failure (encoding, decoding, verification).
    #[error("{0}")]
    Storage(String),
    /// The pipeline has stopped.
    #[error("the storage pipeline is stopped")]
    Stopped,
}

/// The running pipeline. Cheap to share behind an `Arc`.
pub struct Pipeline {
    cfg: PipelineConfig,
    transport: Arc<dyn ShardTransport>,
    directory: Arc<dyn HolderDirectory>,
    db: Arc<Database>,
    path: std::path::PathBuf,
    queue: mpsc::Sender<batcher::Pending>,
    verify_pool: Arc<pqc::BatchVerifier>,
    /// Txs queued for a micro-batch, not yet cut into one.
    waiting: std::sync::atomic::AtomicUsize,
    /// Nodes that refused or failed a put, and until when they get no shards.
    cooling: parking_lot::Mutex<std::collections::HashMap<dag_core::NodeId, tokio::time::Instant>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("path", &self.path)
            .finish()
    }
}

/// How often the placement gauges are recomputed (a scan of every manifest, not of the
/// receipts).
const PLACEMENT_GAUGES_EVERY: Duration = Duration::from_secs(15);

/// Keeps the placement gauges fresh until the pipeline is dropped.
async fn placement_gauges(p: std::sync::Weak<Pipeline>) {
    loop {
        tokio::time::sleep(PLACEMENT_GAUGES_EVERY).await;
        let Some(p) = p.upgrade() else { return };
        let scan = p.clone();
        let res =
            crate::runtime::run_blocking("placement gauges", move || scan.placement_health()).await;
        match res {
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "placement gauges: could not read the stripe index")
            }
            Err(_) => return,
            Ok(Ok(_)) => {}
        }
    }
}

fn perr(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Storage(e.to_string())
}

impl Pipeline {
    /// Opens the stripe index at `path` and starts the micro-batcher.
    pub fn start(
        cfg: PipelineConfig,
        path: &Path,
        transport: Arc<dyn ShardTransport>,
        directory: Arc<dyn HolderDirectory>,
        verify_pool: Arc<pqc::BatchVerifier>,
    ) -> Result<Arc<Self>> {
        cfg.erasure
            .validate()
            .map_err(|source| Error::Erasure { source })?;
        let db = stripe_index::open(path)?;
        let (queue, rx) = mpsc::channel(65_536);
        let p = Arc::new(Pipeline {
            cfg,
            transport,
            directory,
            db: Arc::new(db),
            path: path.to_path_buf(),
            queue,
            verify_pool,
            waiting: std::sync::atomic::AtomicUsize::new(0),
            cooling: parking_lot::Mutex::new(std::collections::HashMap::new()),
        });
        tokio::spawn(batcher::batcher(Arc::downgrade(&p), rx));
        tokio::spawn(placement_gauges(Arc::downgrade(&p)));
        Ok(p)
    }

    /// The settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Live light nodes in the pipeline's directory (the city's live view).
    pub fn live_lights(&self) -> Vec<NodeInfo> {
        self.directory.live_lights()
    }

    /// Counts under-placed, colocated and one-loss-from-unrecoverable stripes against the
    /// live view, and publishes them as gauges (`citychain_stripes_underplaced`,
    /// `citychain_stripes_colocated`, `citychain_stripes_one_loss_from_unrecoverable`).
    pub fn placement_health(&self) -> std::result::Result<PlacementHealth, PipelineError> {
        let live: std::collections::BTreeSet<dag_core::NodeId> = self
            .directory
            .live_lights()
            .into_iter()
            .map(|n| n.node_id)
            .collect();
        let mut h = PlacementHealth::default();
        self.for_each_manifest(|m| {
            h.stripes += 1;
            let placed: Vec<dag_core::NodeId> = m.holders.iter().flatten().copied().collect();
            let distinct: std::collections::BTreeSet<_> = placed.iter().copied().collect();
            if distinct.len() < placed.len() {
                h.colocated += 1;
            }
            let healthy = distinct.iter().filter(|id| live.contains(id)).count();
            if healthy < usize::from(m.layout.n()) {
                h.underplaced += 1;
            }
            if healthy == usize::from(m.layout.k) {
                h.one_loss_from_unrecoverable += 1;
            }
        })?;
        metrics::gauge!("citychain_stripes_underplaced").set(h.underplaced as f64);
        metrics::gauge!("citychain_stripes_colocated").set(h.colocated as f64);
        metrics::gauge!("citychain_stripes_one_loss_from_unrecoverable")
            .set(h.one_loss_from_unrecoverable as f64);
        Ok(h)
    }

    /// The node's signature-verification pool (shared with admission), for other callers
    /// that verify in bulk (the execution feed's fetched bodies).
    pub(crate) fn verify_pool(&self) -> &Arc<pqc::BatchVerifier> {
        &self.verify_pool
    }

    /// Runs `f` on the verification pool (CPU-heavy work stays off the I/O reactor).
    async fn on_pool<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::result::Result<R, PipelineError> {
        let (tx, rx) = oneshot::channel();
        self.verify_pool.spawn(move || {
            let _ = tx.send(f());
        });
        rx.await.map_err(|_| PipelineError::Stopped)
    }
}

//! The city's storage pipeline: admitted txs are micro-batched, each micro-batch becomes one
//! erasure-coded stripe put to n distinct light nodes in parallel (per-call deadline,
//! retries, a failed holder's shard goes to another node), and a tx is **Held** once the
//! holders' signed receipts (PoH_ACK) are verified and the stripe index is durable.
//! It also restores a tx from any k shards and re-replicates shards of a departed node.

use crate::{Error, Result};
use async_trait::async_trait;
use dag_core::{NodeId, NodeInfo, SignedReceipt, SignedTx, StripeId, TxId, VerifiedTx};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::{
    ErasureConfig, LiveNode, MicroBatch, Shard, StripeLayout, StripeManifest, TxLocation,
    plan_rereplication, tx_at, verify_receipt, verify_receipt_from,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

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

/// Pipeline settings. `Default`: RS 4+2 (simd), flush at 256 txs, 1 MiB or 5 ms, 500 ms
/// per put (the design's 200 ms city-tier timeout proved too tight for ~0.5 MiB shards on a
/// loaded 2-core machine), 3 attempts, all n receipts, 8 micro-batches in flight (bounds the
/// queue at each light node).
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Codec, k, m.
    pub erasure: ErasureConfig,
    /// Flush a micro-batch at this many txs.
    pub max_batch_txs: usize,
    /// … or at this many bytes.
    pub max_batch_bytes: usize,
    /// … or this long after its first tx arrived.
    pub flush_after: Duration,
    /// Deadline of one PutShard / GetShard call.
    pub call_timeout: Duration,
    /// Attempts per holder before the shard goes to another node.
    pub attempts: u32,
    /// Receipts needed to answer Held (`None` = all n); the rest are placed in the background.
    pub min_receipts: Option<usize>,
    /// Micro-batches being stored at once.
    pub max_batches_in_flight: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            erasure: ErasureConfig::default(),
            max_batch_txs: 256,
            max_batch_bytes: 1 << 20,
            flush_after: Duration::from_millis(5),
            call_timeout: Duration::from_millis(500),
            attempts: 3,
            min_receipts: None,
            max_batches_in_flight: 8,
        }
    }
}

/// A held tx: its stripe and the verified holders' receipts.
#[derive(Debug, Clone)]
pub struct HeldTx {
    /// The stripe (micro-batch) holding the tx.
    pub stripe_id: StripeId,
    /// Receipts of the stripe's holders, one per placed shard.
    pub receipts: Vec<SignedReceipt>,
    /// True if some node holds two shards (fewer than n light nodes were live).
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
    /// Too few light nodes are live.
    #[error("{live} light nodes are live; at least {needed} are needed")]
    TooFewNodes {
        /// Live.
        live: usize,
        /// Needed (k).
        needed: usize,
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

const STRIPES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("stripes");
const TXLOC: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("tx_locations");

/// A stripe's durable record: manifest and receipts.
#[derive(Debug, Clone)]
struct StripeRecord {
    manifest: StripeManifest,
    receipts: Vec<SignedReceipt>,
}

impl StripeRecord {
    fn encode(&self) -> Vec<u8> {
        let mut w = dag_core::Writer::default();
        w.bytes_u32(&self.manifest.encode());
        w.u16(self.receipts.len() as u16);
        for r in &self.receipts {
            w.bytes_u32(&r.encode());
        }
        w.finish()
    }
    fn decode(b: &[u8]) -> std::result::Result<Self, String> {
        let mut r = dag_core::Reader::new(b);
        let m = r
            .bytes_u32("manifest", 1 << 20)
            .map_err(|e| e.to_string())?;
        let manifest = StripeManifest::decode(m).map_err(|e| e.to_string())?;
        let n = r.u16("receipts").map_err(|e| e.to_string())?;
        let mut receipts = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let rb = r.bytes_u32("receipt", 1 << 16).map_err(|e| e.to_string())?;
            receipts.push(SignedReceipt::decode(rb).map_err(|e| e.to_string())?);
        }
        r.finish().map_err(|e| e.to_string())?;
        Ok(StripeRecord { manifest, receipts })
    }
}

struct Pending {
    tx: VerifiedTx,
    urgent: bool,
    reply: oneshot::Sender<std::result::Result<HeldTx, PipelineError>>,
}

/// The running pipeline. Cheap to share behind an `Arc`.
pub struct Pipeline {
    cfg: PipelineConfig,
    transport: Arc<dyn ShardTransport>,
    directory: Arc<dyn HolderDirectory>,
    db: Arc<Database>,
    path: std::path::PathBuf,
    queue: mpsc::Sender<Pending>,
    verify_pool: Arc<pqc::BatchVerifier>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("path", &self.path)
            .finish()
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
        let db = crate::runtime::open_db(path, |w| {
            w.open_table(STRIPES)?;
            w.open_table(TXLOC)?;
            Ok(())
        })?;
        let (queue, rx) = mpsc::channel(65_536);
        let p = Arc::new(Pipeline {
            cfg,
            transport,
            directory,
            db: Arc::new(db),
            path: path.to_path_buf(),
            queue,
            verify_pool,
        });
        tokio::spawn(batcher(Arc::downgrade(&p), rx));
        Ok(p)
    }

    /// The settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Queues an admitted tx and waits until its micro-batch is Held.
    pub async fn hold(&self, tx: VerifiedTx) -> std::result::Result<HeldTx, PipelineError> {
        self.hold_flagged(tx, false).await
    }

    /// Like [`Pipeline::hold`]; `urgent` (from the tx's flag) makes holder choice favour
    /// latency for its micro-batch.
    pub async fn hold_flagged(
        &self,
        tx: VerifiedTx,
        urgent: bool,
    ) -> std::result::Result<HeldTx, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Pending { tx, urgent, reply })
            .await
            .map_err(|_| PipelineError::Stopped)?;
        rx.await.map_err(|_| PipelineError::Stopped)?
    }

    fn record(
        &self,
        stripe: &StripeId,
    ) -> std::result::Result<Option<StripeRecord>, PipelineError> {
        let r = self.db.begin_read().map_err(perr)?;
        let t = r.open_table(STRIPES).map_err(perr)?;
        match t.get(stripe.as_bytes()).map_err(perr)? {
            Some(v) => Ok(Some(
                StripeRecord::decode(v.value()).map_err(PipelineError::Storage)?,
            )),
            None => Ok(None),
        }
    }

    fn location(&self, id: &TxId) -> std::result::Result<Option<TxLocation>, PipelineError> {
        let r = self.db.begin_read().map_err(perr)?;
        let t = r.open_table(TXLOC).map_err(perr)?;
        match t.get(id.as_bytes()).map_err(perr)? {
            Some(v) => Ok(Some(TxLocation::decode(v.value()).map_err(perr)?)),
            None => Ok(None),
        }
    }

    /// The stripe and receipts of a held tx, if it is held.
    pub fn held(&self, id: &TxId) -> std::result::Result<Option<HeldTx>, PipelineError> {
        let Some(loc) = self.location(id)? else {
            return Ok(None);
        };
        let rec = self.record(&loc.stripe_id)?.ok_or_else(|| {
            PipelineError::Storage(format!(
                "stripe {} of tx {id} is missing",
                loc.stripe_id.short()
            ))
        })?;
        let holders: Vec<_> = rec.manifest.holders.iter().flatten().collect();
        let distinct: BTreeSet<_> = holders.iter().collect();
        Ok(Some(HeldTx {
            stripe_id: loc.stripe_id,
            colocated: distinct.len() < holders.len(),
            receipts: rec.receipts,
        }))
    }

    /// Every stripe manifest (for audits and re-replication).
    pub fn manifests(
        &self,
    ) -> std::result::Result<Vec<(StripeManifest, Vec<SignedReceipt>)>, PipelineError> {
        let r = self.db.begin_read().map_err(perr)?;
        let t = r.open_table(STRIPES).map_err(perr)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(perr)? {
            let (_, v) = item.map_err(perr)?;
            let rec = StripeRecord::decode(v.value()).map_err(PipelineError::Storage)?;
            out.push((rec.manifest, rec.receipts));
        }
        Ok(out)
    }

    /// Restores a tx from any k shards of its stripe: receipts verified, every shard checked
    /// against the manifest, the tx's signature verified.
    pub async fn restore(&self, id: TxId) -> std::result::Result<Restored, PipelineError> {
        let loc = self
            .location(&id)?
            .ok_or_else(|| PipelineError::UnknownTx(id.to_hex()))?;
        let rec = self.record(&loc.stripe_id)?.ok_or_else(|| {
            PipelineError::Storage(format!("stripe {} missing", loc.stripe_id.short()))
        })?;
        let layout = rec.manifest.layout.clone();
        // Receipts are checked again before use: a record is only as good as its signatures.
        let receipts = rec.receipts.clone();
        let lay = layout.clone();
        let verified = self
            .on_pool(move || {
                receipts
                    .into_iter()
                    .map(|r| verify_receipt(&lay, r, &pqc::MlDsa87).map(|v| v.signed().clone()))
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .await?
            .map_err(perr)?;
        let shards = self.fetch_k(&rec.manifest, &[]).await?;
        let used = shards.len();
        let lay = layout.clone();
        let signed = self
            .on_pool(move || -> std::result::Result<SignedTx, String> {
                let stripe = lay.decode(&shards).map_err(|e| e.to_string())?;
                let tx = tx_at(&stripe, &loc).map_err(|e| e.to_string())?;
                if tx.id() != id {
                    return Err(format!(
                        "stripe yields tx {} where {id} was indexed",
                        tx.id()
                    ));
                }
                tx.clone()
                    .verify(&pqc::MlDsa87)
                    .map_err(|e| e.to_string())?;
                Ok(tx)
            })
            .await?
            .map_err(PipelineError::Storage)?;
        metrics::counter!("citychain_restores_total").increment(1);
        Ok(Restored {
            tx: signed,
            receipts: verified,
            shards_used: used,
        })
    }

    /// Restores every tx of one stripe from any k of its shards (one fetch for the whole
    /// micro-batch), each tx's signature verified. For audits and bulk recovery.
    pub async fn restore_stripe(
        &self,
        stripe: StripeId,
    ) -> std::result::Result<Vec<SignedTx>, PipelineError> {
        let rec = self.record(&stripe)?.ok_or_else(|| {
            PipelineError::Storage(format!(
                "stripe {} is not held by this city",
                stripe.short()
            ))
        })?;
        let shards = self.fetch_k(&rec.manifest, &[]).await?;
        let layout = rec.manifest.layout.clone();
        self.on_pool(move || -> std::result::Result<Vec<SignedTx>, String> {
            use rayon::prelude::*;
            let bytes = layout.decode(&shards).map_err(|e| e.to_string())?;
            let txs = storage::split_micro_batch(&bytes).map_err(|e| e.to_string())?;
            txs.par_iter()
                .map(|b| {
                    let tx = SignedTx::decode(b).map_err(|e| e.to_string())?;
                    tx.clone()
                        .verify(&pqc::MlDsa87)
                        .map_err(|e| e.to_string())?;
                    Ok(tx)
                })
                .collect()
        })
        .await?
        .map_err(PipelineError::Storage)
    }

    /// Fetches k good shards of a stripe from its live holders (all asked in parallel; a
    /// shard failing its check counts as missing). `skip` lists indexes not to fetch.
    async fn fetch_k(
        &self,
        manifest: &StripeManifest,
        skip: &[u16],
    ) -> std::result::Result<Vec<Shard>, PipelineError> {
        let layout = &manifest.layout;
        let k = usize::from(layout.k);
        let live: BTreeMap<NodeId, NodeInfo> = self
            .directory
            .live_lights()
            .into_iter()
            .map(|n| (n.node_id, n))
            .collect();
        let mut calls = FuturesUnordered::new();
        for (i, h) in manifest.holders.iter().enumerate() {
            let (Some(h), Ok(i)) = (h, u16::try_from(i)) else {
                continue;
            };
            if skip.contains(&i) {
                continue;
            }
            let Some(node) = live.get(h).cloned() else {
                continue;
            };
            let t = self.transport.clone();
            let sid = layout.stripe_id;
            let timeout = self.cfg.call_timeout;
            calls.push(async move {
                let ms = timeout.as_millis() as u64;
                match tokio::time::timeout(timeout, t.get_shard(&node, sid, i)).await {
                    Ok(r) => r,
                    Err(_) => Err(TransportError::Timeout {
                        node: node.node_id.short(),
                        ms,
                    }),
                }
            });
        }
        let mut good = Vec::with_capacity(k);
        let mut problems = Vec::new();
        while let Some(r) = calls.next().await {
            match r {
                Ok(shard) => match layout.check_shard(&shard) {
                    Ok(()) => {
                        good.push(shard);
                        if good.len() == k {
                            return Ok(good);
                        }
                    }
                    Err(e) => {
                        metrics::counter!("citychain_corrupt_shards_total").increment(1);
                        problems.push(e.to_string());
                    }
                },
                Err(e) => problems.push(e.to_string()),
            }
        }
        Err(PipelineError::Storage(format!(
            "stripe {}: {} good shards of the {k} needed ({})",
            layout.stripe_id.short(),
            good.len(),
            problems.join("; ")
        )))
    }

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

    /// Puts one shard, trying `first` then the other candidates in order, each with
    /// retries; returns the verified receipt and the node that took it.
    async fn place_shard(
        &self,
        layout: &StripeLayout,
        shard: &Shard,
        candidates: &[NodeInfo],
        taken: &parking_lot::Mutex<BTreeSet<NodeId>>,
        allow_colocated: bool,
    ) -> std::result::Result<(SignedReceipt, NodeId), String> {
        let mut last = String::from("no candidate node");
        for node in candidates {
            // Never two shards of a stripe on one node unless fewer than n nodes exist.
            if !taken.lock().insert(node.node_id) && !allow_colocated {
                continue;
            }
            for attempt in 0..self.cfg.attempts.max(1) {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                }
                let res = tokio::time::timeout(
                    self.cfg.call_timeout,
                    self.transport.put_shard(node, shard),
                )
                .await;
                match res {
                    Ok(Ok(receipt)) => {
                        let lay = layout.clone();
                        let holder = node.node_id;
                        let checked = self
                            .on_pool(move || {
                                verify_receipt_from(&lay, receipt, &holder, &pqc::MlDsa87)
                            })
                            .await
                            .map_err(|e| e.to_string())?;
                        match checked {
                            Ok(v) => return Ok((v.signed().clone(), holder)),
                            Err(e) => {
                                // A forged or mismatched receipt: that node is not trusted
                                // with this shard.
                                metrics::counter!("citychain_bad_receipts_total").increment(1);
                                last = e.to_string();
                                break;
                            }
                        }
                    }
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => {
                        last = format!(
                            "{}: no answer within {} ms",
                            node.node_id.short(),
                            self.cfg.call_timeout.as_millis()
                        )
                    }
                }
            }
            if !allow_colocated {
                // Keep it marked taken: it failed, so it must not get another shard either.
            }
        }
        Err(last)
    }

    async fn store_batch(self: Arc<Self>, batch: Vec<Pending>) {
        let t0 = Instant::now();
        let signed: Vec<SignedTx> = batch.iter().map(|p| p.tx.signed().clone()).collect();
        let erasure = self.cfg.erasure;
        let encoded = self
            .on_pool(move || -> std::result::Result<_, String> {
                let (mb, entries) = MicroBatch::from_signed(&signed).map_err(|e| e.to_string())?;
                let shards = erasure.encode(&mb.stripe).map_err(|e| e.to_string())?;
                let layout = StripeLayout::from_shards(&shards).map_err(|e| e.to_string())?;
                Ok((entries, shards, layout))
            })
            .await;
        let (entries, shards, layout) = match encoded {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return fail_all(batch, PipelineError::Storage(e)),
            Err(e) => return fail_all(batch, e),
        };
        let n = shards.len();
        let live = self.directory.live_lights();
        if live.len() < usize::from(layout.k) {
            return fail_all(
                batch,
                PipelineError::TooFewNodes {
                    live: live.len(),
                    needed: usize::from(layout.k),
                },
            );
        }
        let allow_colocated = live.len() < n;
        let urgent = batch.iter().any(|p| p.urgent);
        let ranked = self.directory.rank(&layout.stripe_id, live, urgent);
        let taken = Arc::new(parking_lot::Mutex::new(BTreeSet::new()));
        let needed = self
            .cfg
            .min_receipts
            .unwrap_or(n)
            .clamp(usize::from(layout.k), n);

        // Shard i goes first to ranked[i], then to the nodes after the first n.
        let mut puts = FuturesUnordered::new();
        for (i, shard) in shards.into_iter().enumerate() {
            let mut cands: Vec<NodeInfo> = Vec::new();
            cands.push(ranked[i % ranked.len()].clone());
            cands.extend(ranked.iter().skip(n).cloned());
            if allow_colocated {
                cands.extend(ranked.iter().cloned());
            }
            // Last resort when every distinct candidate failed (a holder is slow or down
            // and no spare node exists): a node that already holds a shard of this stripe
            // takes it too, and the answer says the stripe is colocated.
            let fallback: Vec<NodeInfo> = ranked
                .iter()
                .filter(|n| !cands.iter().any(|c| c.node_id == n.node_id))
                .cloned()
                .collect();
            let me = self.clone();
            let layout = layout.clone();
            let taken = taken.clone();
            puts.push(async move {
                let mut r = me
                    .place_shard(&layout, &shard, &cands, &taken, allow_colocated)
                    .await;
                if r.is_err() && !allow_colocated && !fallback.is_empty() {
                    metrics::counter!("citychain_colocated_fallbacks_total").increment(1);
                    tracing::warn!(stripe = %layout.stripe_id.short(), index = shard.index(), "no distinct holder answered; colocating");
                    r = me.place_shard(&layout, &shard, &fallback, &taken, true).await;
                }
                (shard.index(), r)
            });
        }
        let mut receipts: Vec<(SignedReceipt, NodeId)> = Vec::with_capacity(n);
        let mut failures = Vec::new();
        let mut waiting = Some(batch);
        while let Some((index, r)) = puts.next().await {
            match r {
                Ok(x) => receipts.push(x),
                Err(e) => failures.push(format!("shard {index}: {e}")),
            }
            if receipts.len() >= needed && waiting.is_some() {
                // Enough to answer: persist and reply now, keep placing the rest.
                match self.persist(&layout, &receipts, &entries) {
                    Ok(held) => {
                        if let Some(b) = waiting.take() {
                            metrics::histogram!("citychain_hold_seconds")
                                .record(t0.elapsed().as_secs_f64());
                            for p in b {
                                let _ = p.reply.send(Ok(held.clone()));
                            }
                        }
                    }
                    Err(e) => {
                        if let Some(b) = waiting.take() {
                            fail_all(b, e);
                        }
                        return;
                    }
                }
            }
        }
        match waiting {
            Some(b) => fail_all(
                b,
                PipelineError::NotHeld {
                    stripe: layout.stripe_id.short(),
                    got: receipts.len(),
                    needed,
                    reasons: failures.join("; "),
                },
            ),
            None if receipts.len() > needed => {
                // Background placements finished after the answer: record them too.
                if let Err(e) = self.persist(&layout, &receipts, &entries) {
                    tracing::error!(stripe = %layout.stripe_id.short(), error = %e, "could not record late receipts");
                }
            }
            None => {}
        }
        if !failures.is_empty() {
            tracing::warn!(stripe = %layout.stripe_id.short(), failures = %failures.join("; "), "some shards were not placed");
        }
    }

    /// Replaces a stripe's durable record (manifest and receipts) in one transaction.
    fn write_record(
        &self,
        stripe: &StripeId,
        rec: &StripeRecord,
    ) -> std::result::Result<(), PipelineError> {
        let w = self.db.begin_write().map_err(perr)?;
        {
            let mut st = w.open_table(STRIPES).map_err(perr)?;
            st.insert(stripe.as_bytes(), rec.encode().as_slice())
                .map_err(perr)?;
        }
        w.commit().map_err(perr)
    }

    fn persist(
        &self,
        layout: &StripeLayout,
        receipts: &[(SignedReceipt, NodeId)],
        entries: &[storage::TxIndexEntry],
    ) -> std::result::Result<HeldTx, PipelineError> {
        let mut manifest = StripeManifest::unplaced(layout.clone());
        let mut rs: Vec<SignedReceipt> = receipts.iter().map(|(r, _)| r.clone()).collect();
        rs.sort_by_key(|r| r.receipt.shard_index);
        for (r, node) in receipts {
            manifest
                .set_holder(r.receipt.shard_index, *node)
                .map_err(perr)?;
        }
        let rec = StripeRecord {
            manifest,
            receipts: rs.clone(),
        };
        let w = self.db.begin_write().map_err(perr)?;
        {
            let mut st = w.open_table(STRIPES).map_err(perr)?;
            st.insert(layout.stripe_id.as_bytes(), rec.encode().as_slice())
                .map_err(perr)?;
            let mut tl = w.open_table(TXLOC).map_err(perr)?;
            for e in entries {
                tl.insert(e.tx_id.as_bytes(), e.location.encode().as_slice())
                    .map_err(perr)?;
            }
        }
        w.commit().map_err(perr)?;
        let distinct: BTreeSet<_> = receipts.iter().map(|(_, n)| n).collect();
        Ok(HeldTx {
            stripe_id: layout.stripe_id,
            receipts: rs,
            colocated: distinct.len() < receipts.len(),
        })
    }

    /// Live light nodes in the pipeline's directory (the city's live view).
    pub fn live_lights(&self) -> Vec<NodeInfo> {
        self.directory.live_lights()
    }

    /// Repairs the stripe holding tx `id` now: every placed shard whose holder is not live,
    /// does not answer within `call_timeout`, or returns a shard failing the manifest's
    /// check is re-created from k good ones and placed on another live node (receipt
    /// verified, manifest and receipts updated). Returns the shards placed (0 if the stripe
    /// was whole).
    pub async fn repair_stripe_of(&self, id: TxId) -> std::result::Result<usize, PipelineError> {
        let loc = self
            .location(&id)?
            .ok_or_else(|| PipelineError::UnknownTx(id.to_hex()))?;
        let rec = self.record(&loc.stripe_id)?.ok_or_else(|| {
            PipelineError::Storage(format!("stripe {} missing", loc.stripe_id.short()))
        })?;
        let live = self.directory.live_lights();
        let by_id: BTreeMap<NodeId, NodeInfo> =
            live.iter().map(|n| (n.node_id, n.clone())).collect();
        // Probe every live holder: a silent or corrupt one is treated as gone.
        let layout = rec.manifest.layout.clone();
        let mut probes = FuturesUnordered::new();
        for (i, h) in rec.manifest.holders.iter().enumerate() {
            let (Some(h), Ok(i)) = (h, u16::try_from(i)) else {
                continue;
            };
            let Some(node) = by_id.get(h).cloned() else {
                continue;
            };
            let t = self.transport.clone();
            let timeout = self.cfg.call_timeout;
            let sid = layout.stripe_id;
            probes.push(async move {
                let ok = match tokio::time::timeout(timeout, t.get_shard(&node, sid, i)).await {
                    Ok(Ok(shard)) => Some(shard),
                    _ => None,
                };
                (node.node_id, ok)
            });
        }
        let mut silent = BTreeSet::new();
        while let Some((node, shard)) = probes.next().await {
            match shard {
                Some(s) if layout.check_shard(&s).is_ok() => {}
                _ => {
                    silent.insert(node);
                }
            }
        }
        let live_nodes: Vec<LiveNode> = live
            .iter()
            .filter(|n| !silent.contains(&n.node_id))
            .map(LiveNode::from)
            .collect();
        let departed = silent.iter().next().copied().unwrap_or_default();
        let plan = plan_rereplication(&rec.manifest, &live_nodes, &departed).map_err(perr)?;
        if plan.is_empty() {
            return Ok(0);
        }
        let by_id: BTreeMap<NodeId, NodeInfo> = by_id
            .into_iter()
            .filter(|(id, _)| !silent.contains(id))
            .collect();
        let placed = self
            .apply_plan(&rec.manifest, rec.receipts, &plan, &by_id)
            .await?;
        metrics::counter!("citychain_rereplicated_shards_total").increment(placed as u64);
        Ok(placed)
    }

    /// Carries out a repair plan: rebuilds the lost shards from k others and places each on
    /// its planned target; a target that does not take it (a node still listed live but
    /// silent) is replaced by the next live node that holds no shard of the stripe, and only
    /// if none takes it, by a surviving holder (colocated). Updates manifest and receipts.
    async fn apply_plan(
        &self,
        manifest: &StripeManifest,
        receipts: Vec<SignedReceipt>,
        plan: &storage::RepairPlan,
        live: &BTreeMap<NodeId, NodeInfo>,
    ) -> std::result::Result<usize, PipelineError> {
        let layout = manifest.layout.clone();
        let sources = self.fetch_k(manifest, &plan.lost).await?;
        let lost = plan.lost.clone();
        let lay = layout.clone();
        let rebuilt = self
            .on_pool(move || lay.rebuild(&sources, &lost))
            .await?
            .map_err(perr)?;
        let keep: BTreeSet<NodeId> = manifest
            .holders
            .iter()
            .enumerate()
            .filter(|(i, _)| !plan.lost.iter().any(|l| usize::from(*l) == *i))
            .filter_map(|(_, h)| *h)
            .collect();
        let allow_colocated = live.len() < usize::from(layout.n());
        let others: Vec<NodeInfo> = self.directory.rank(
            &layout.stripe_id,
            live.values()
                .filter(|n| !keep.contains(&n.node_id))
                .cloned()
                .collect(),
            false,
        );
        let taken = parking_lot::Mutex::new(keep.clone());
        let mut new_manifest = manifest.clone();
        let mut new_receipts: Vec<SignedReceipt> = receipts
            .into_iter()
            .filter(|r| !plan.lost.contains(&r.receipt.shard_index))
            .collect();
        let mut placed = 0;
        for p in &plan.placements {
            let Some(shard) = rebuilt.iter().find(|s| s.index() == p.index) else {
                continue;
            };
            let mut cands: Vec<NodeInfo> = live.get(&p.target).cloned().into_iter().collect();
            cands.extend(others.iter().filter(|n| n.node_id != p.target).cloned());
            if allow_colocated {
                cands.extend(live.values().cloned());
            }
            let mut res = self
                .place_shard(&layout, shard, &cands, &taken, allow_colocated)
                .await;
            if res.is_err() && !allow_colocated {
                // Every node without a shard of the stripe failed: fewer than n nodes answer,
                // so a surviving holder takes a second shard (the manifest shows it).
                let holders: Vec<NodeInfo> =
                    keep.iter().filter_map(|id| live.get(id).cloned()).collect();
                res = self
                    .place_shard(&layout, shard, &holders, &taken, true)
                    .await;
            }
            let (r, holder) = res.map_err(|e| {
                PipelineError::Storage(format!(
                    "stripe {}: shard {} could not be placed: {e}",
                    layout.stripe_id.short(),
                    p.index
                ))
            })?;
            new_manifest.set_holder(p.index, holder).map_err(perr)?;
            new_receipts.push(r);
            placed += 1;
        }
        new_receipts.sort_by_key(|r| r.receipt.shard_index);
        let rec = StripeRecord {
            manifest: new_manifest,
            receipts: new_receipts,
        };
        self.write_record(&layout.stripe_id, &rec)?;
        Ok(placed)
    }

    /// Re-creates every shard that `departed` held (or any shard whose holder is no longer
    /// live) from k others and places it on another live node, verifying its receipt and
    /// updating the manifest. Stripes are handled one after another.
    pub async fn rereplicate(
        &self,
        departed: NodeId,
    ) -> std::result::Result<RepairReport, PipelineError> {
        let live = self.directory.live_lights();
        let live_nodes: Vec<LiveNode> = live
            .iter()
            .filter(|n| n.node_id != departed)
            .map(LiveNode::from)
            .collect();
        let by_id: BTreeMap<NodeId, NodeInfo> = live
            .into_iter()
            .filter(|n| n.node_id != departed)
            .map(|n| (n.node_id, n))
            .collect();
        let mut report = RepairReport::default();
        for (manifest, receipts) in self.manifests()? {
            let plan = match plan_rereplication(&manifest, &live_nodes, &departed) {
                Ok(p) if p.is_empty() => continue,
                Ok(p) => p,
                Err(e) => {
                    report.stripes_affected += 1;
                    report.failures.push((manifest.stripe_id(), e.to_string()));
                    continue;
                }
            };
            report.stripes_affected += 1;
            match self.apply_plan(&manifest, receipts, &plan, &by_id).await {
                Ok(placed) => report.shards_placed += placed,
                Err(e) => report.failures.push((manifest.stripe_id(), e.to_string())),
            }
        }
        metrics::counter!("citychain_rereplicated_shards_total")
            .increment(report.shards_placed as u64);
        Ok(report)
    }
}

fn fail_all(batch: Vec<Pending>, e: PipelineError) {
    for p in batch {
        let _ = p.reply.send(Err(e.clone()));
    }
}

/// Collects pending txs into micro-batches: flush at `max_batch_txs`, `max_batch_bytes`, or
/// `flush_after` after the first tx of the batch arrived.
async fn batcher(p: std::sync::Weak<Pipeline>, mut rx: mpsc::Receiver<Pending>) {
    let Some(cfg) = p.upgrade().map(|p| p.cfg.clone()) else {
        return;
    };
    let slots = Arc::new(Semaphore::new(cfg.max_batches_in_flight.max(1)));
    while let Some(first) = rx.recv().await {
        let mut bytes = first.tx.signed().encoded_len();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + cfg.flush_after;
        while batch.len() < cfg.max_batch_txs && bytes < cfg.max_batch_bytes {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => {
                    bytes += next.tx.signed().encoded_len();
                    batch.push(next);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let Some(pipeline) = p.upgrade() else { return };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        metrics::histogram!("citychain_micro_batch_txs").record(batch.len() as f64);
        tokio::spawn(async move {
            pipeline.store_batch(batch).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::city::test_utils::{MemoryTransport, StaticDirectory};
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

    struct Fixture {
        transport: Arc<MemoryTransport>,
        dir: Arc<StaticDirectory>,
        nodes: Vec<NodeInfo>,
        pipeline: Arc<Pipeline>,
        _tmp: tempfile::TempDir,
    }

    fn fixture(lights: usize, cfg: PipelineConfig) -> Fixture {
        let transport = Arc::new(MemoryTransport::default());
        let nodes: Vec<NodeInfo> = (0..lights)
            .map(|i| transport.add_node(&format!("zone-{}", i % 3)).unwrap())
            .collect();
        let dir = Arc::new(StaticDirectory::new(nodes.clone()));
        let tmp = tempfile::tempdir().unwrap();
        let pipeline = Pipeline::start(
            cfg,
            &tmp.path().join("stripes.redb"),
            transport.clone(),
            dir.clone(),
            Arc::new(pqc::BatchVerifier::new(2).unwrap()),
        )
        .unwrap();
        Fixture {
            transport,
            dir,
            nodes,
            pipeline,
            _tmp: tmp,
        }
    }

    async fn hold_all(
        p: &Arc<Pipeline>,
        txs: &[VerifiedTx],
    ) -> Vec<std::result::Result<HeldTx, PipelineError>> {
        let futs: Vec<_> = txs.iter().map(|t| p.hold(t.clone())).collect();
        futures::future::join_all(futs).await
    }

    #[tokio::test]
    async fn held_with_n_distinct_receipts_and_restored_after_two_losses() {
        let f = fixture(8, PipelineConfig::default());
        let txs = txs(40);
        let held = hold_all(&f.pipeline, &txs).await;
        for h in &held {
            let h = h.as_ref().unwrap();
            assert_eq!(h.receipts.len(), 6);
            assert!(!h.colocated);
            let holders: BTreeSet<_> = h.receipts.iter().map(|r| r.receipt.holder).collect();
            assert_eq!(holders.len(), 6, "holders must be distinct");
        }
        // Kill two holders of the first stripe: everything still restores.
        let first = held[0].as_ref().unwrap();
        for r in first.receipts.iter().take(2) {
            f.transport
                .node(&r.receipt.holder)
                .unwrap()
                .set_alive(false);
        }
        for t in &txs {
            let r = f.pipeline.restore(t.id()).await.unwrap();
            assert_eq!(r.tx, *t.signed());
            assert_eq!(r.shards_used, 4);
        }
        // A third loss in the same stripe is too many for 4+2.
        f.transport
            .node(&first.receipts[2].receipt.holder)
            .unwrap()
            .set_alive(false);
        let err = f.pipeline.restore(txs[0].id()).await.unwrap_err();
        assert!(
            err.to_string().contains("good shards of the 4 needed"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn corrupt_shard_is_never_used() {
        let f = fixture(6, PipelineConfig::default());
        let txs = txs(3);
        let held = hold_all(&f.pipeline, &txs).await;
        let h = held[0].as_ref().unwrap();
        // Corrupt one shard on disk and kill another holder: 4 good remain, restore works
        // and never returns the corrupt one.
        let r0 = &h.receipts[0].receipt;
        f.transport
            .node(&r0.holder)
            .unwrap()
            .store
            .corrupt_for_test(&r0.stripe_id, r0.shard_index, |b| {
                let last = b.len() - 1;
                b[last] ^= 0xFF;
            })
            .unwrap();
        f.transport
            .node(&h.receipts[1].receipt.holder)
            .unwrap()
            .set_alive(false);
        let r = f.pipeline.restore(txs[1].id()).await.unwrap();
        assert_eq!(r.tx, *txs[1].signed());
    }

    #[tokio::test]
    async fn failed_holder_shard_goes_elsewhere_and_forged_receipts_never_count() {
        let f = fixture(
            8,
            PipelineConfig {
                call_timeout: Duration::from_millis(100),
                attempts: 1,
                ..PipelineConfig::default()
            },
        );
        f.transport
            .node(&f.nodes[0].node_id)
            .unwrap()
            .set_alive(false);
        f.transport
            .node(&f.nodes[1].node_id)
            .unwrap()
            .set_forging(true);
        let held = hold_all(&f.pipeline, &txs(5)).await;
        for h in held {
            let h = h.unwrap();
            assert_eq!(h.receipts.len(), 6);
            for r in &h.receipts {
                assert_ne!(r.receipt.holder, f.nodes[0].node_id);
                assert_ne!(
                    r.receipt.holder, f.nodes[1].node_id,
                    "a forged receipt was accepted"
                );
            }
        }
    }

    #[tokio::test]
    async fn too_few_nodes_is_a_clear_error_and_colocation_is_reported() {
        let f = fixture(3, PipelineConfig::default());
        let err = hold_all(&f.pipeline, &txs(1)).await.remove(0).unwrap_err();
        assert!(
            matches!(err, PipelineError::TooFewNodes { live: 3, needed: 4 }),
            "{err}"
        );
        let f = fixture(5, PipelineConfig::default());
        let h = hold_all(&f.pipeline, &txs(1)).await.remove(0).unwrap();
        assert!(
            h.colocated,
            "5 nodes for 6 shards must be reported as colocated"
        );
        assert_eq!(h.receipts.len(), 6);
    }

    #[tokio::test]
    async fn repair_stripe_of_replaces_silent_and_corrupt_holders() {
        let f = fixture(7, PipelineConfig::default());
        let txs = txs(4);
        let held = hold_all(&f.pipeline, &txs).await;
        let h = held[0].as_ref().unwrap();
        let id = txs[0].id();
        assert_eq!(f.pipeline.repair_stripe_of(id).await.unwrap(), 0);
        // A holder dies but stays listed live: repair re-creates its shard on the spare.
        let dead = h.receipts[0].receipt.holder;
        f.transport.node(&dead).unwrap().set_alive(false);
        assert_eq!(f.pipeline.repair_stripe_of(id).await.unwrap(), 1);
        let after = f.pipeline.held(&id).unwrap().unwrap();
        let holders: BTreeSet<_> = after.receipts.iter().map(|r| r.receipt.holder).collect();
        assert_eq!(holders.len(), 6);
        assert!(!holders.contains(&dead));
        // A shard corrupted on disk: the only non-holder left is the dead node (planned,
        // fails), so the shard goes to a surviving holder, reported as colocated.
        let r1 = &after.receipts[1].receipt;
        f.transport
            .node(&r1.holder)
            .unwrap()
            .store
            .corrupt_for_test(&r1.stripe_id, r1.shard_index, |b| {
                let last = b.len() - 1;
                b[last] ^= 0xFF;
            })
            .unwrap();
        assert_eq!(f.pipeline.repair_stripe_of(id).await.unwrap(), 1);
        let again = f.pipeline.held(&id).unwrap().unwrap();
        assert!(again.colocated);
        assert_eq!(again.receipts.len(), 6);
        assert!(again.receipts.iter().all(|r| r.receipt.holder != dead));
        assert_eq!(f.pipeline.restore(id).await.unwrap().tx, *txs[0].signed());
        assert!(matches!(
            f.pipeline.repair_stripe_of(TxId::from_bytes([1; 32])).await,
            Err(PipelineError::UnknownTx(_))
        ));
    }

    #[tokio::test]
    async fn rereplication_returns_every_stripe_to_n_holders() {
        let f = fixture(9, PipelineConfig::default());
        let txs = txs(30);
        let held = hold_all(&f.pipeline, &txs).await;
        assert!(held.iter().all(|h| h.is_ok()));
        let gone = held[0].as_ref().unwrap().receipts[0].receipt.holder;
        f.transport.node(&gone).unwrap().set_alive(false);
        f.dir.remove(&gone);
        let report = f.pipeline.rereplicate(gone).await.unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert!(report.shards_placed >= 1);
        for (m, receipts) in f.pipeline.manifests().unwrap() {
            let holders: BTreeSet<_> = m.holders.iter().flatten().collect();
            assert_eq!(holders.len(), 6);
            assert!(!holders.contains(&gone));
            assert_eq!(receipts.len(), 6);
            for r in receipts {
                verify_receipt(&m.layout, r, &pqc::MlDsa87).unwrap();
            }
        }
        // A second loss is still survivable.
        let second = held[0].as_ref().unwrap().receipts[1].receipt.holder;
        f.transport.node(&second).unwrap().set_alive(false);
        f.transport
            .node(&held[0].as_ref().unwrap().receipts[2].receipt.holder)
            .unwrap()
            .set_alive(false);
        for t in &txs {
            assert_eq!(f.pipeline.restore(t.id()).await.unwrap().tx, *t.signed());
        }
    }
}

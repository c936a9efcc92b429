//! Micro-batching: admitted txs wait in a bounded queue and are cut into a micro-batch
//! whenever a placement slot frees (natural batching: batches grow with the load), with a
//! bound on micro-batches in flight and a short flush timer only when the pipeline is idle. When txs compete for a
//! micro-batch slot they are served by their flag: the urgent lane first, then by kind
//! (CHECKPOINT > REPAIR_ACK > REPAIR_REQ > POH_ACK > POH_REQUEST > FRESH_TX > SYSTEM_TX),
//! first come first served among equals; oversize txs take their own path (micro-batches
//! of oversize txs only, so a large tx never delays the small ones sharing its stripe).

use super::{HeldTx, Pipeline, PipelineError};
use dag_core::{TxKind, VerifiedTx};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Txs taken off the channel into the priority queues at most (the channel holds as many
/// again): beyond that they wait in the channel, in arrival order.
const MAX_BUFFERED: usize = 65_536;

/// Where a tx waits for its micro-batch, from its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldPriority {
    kind: TxKind,
    key: (u8, u8, bool),
}

impl HoldPriority {
    /// From the tx's flag (urgency, class, oversize).
    pub fn from_flag(flag: &flagging::Flag) -> Self {
        HoldPriority {
            kind: flag.kind,
            key: flag.queue_key(),
        }
    }

    /// A tx of `kind` in the normal lane, not oversize.
    pub fn of_kind(kind: TxKind) -> Self {
        HoldPriority {
            kind,
            key: (1, kind.processing_rank(), false),
        }
    }

    fn urgent(&self) -> bool {
        self.key.0 == 0
    }

    fn oversize(&self) -> bool {
        self.key.2
    }

    fn lane(&self) -> &'static str {
        if self.oversize() {
            "oversize"
        } else if self.urgent() {
            "urgent"
        } else {
            "normal"
        }
    }
}

/// A tx waiting for its micro-batch to be Held, with where to send the answer.
pub(super) struct Pending {
    pub(super) tx: VerifiedTx,
    pub(super) urgent: bool,
    pub(super) priority: HoldPriority,
    pub(super) reply: oneshot::Sender<std::result::Result<HeldTx, PipelineError>>,
}

impl Pipeline {
    /// Queues an admitted tx and waits until its micro-batch is Held.
    pub async fn hold(&self, tx: VerifiedTx) -> std::result::Result<HeldTx, PipelineError> {
        let priority = HoldPriority::of_kind(tx.tx().kind);
        self.hold_with(tx, priority).await
    }

    /// Like [`Pipeline::hold`]; `urgent` (from the tx's flag) makes holder choice favour
    /// latency for its micro-batch and puts it in the urgent lane.
    pub async fn hold_flagged(
        &self,
        tx: VerifiedTx,
        urgent: bool,
    ) -> std::result::Result<HeldTx, PipelineError> {
        let mut priority = HoldPriority::of_kind(tx.tx().kind);
        if urgent {
            priority.key.0 = 0;
        }
        self.hold_with(tx, priority).await
    }

    /// Like [`Pipeline::hold`], served in the order of `priority` when txs compete for a
    /// micro-batch slot (urgent lane also favours latency in holder choice).
    pub async fn hold_with(
        &self,
        tx: VerifiedTx,
        priority: HoldPriority,
    ) -> std::result::Result<HeldTx, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        if self
            .queue
            .send(Pending {
                tx,
                urgent: priority.urgent(),
                priority,
                reply,
            })
            .await
            .is_err()
        {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(PipelineError::Stopped);
        }
        rx.await.map_err(|_| PipelineError::Stopped)?
    }

    /// Txs waiting for a micro-batch (queued, not yet cut into one).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

struct Queued {
    seq: u64,
    p: Pending,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// The max-heap pops the smallest queue key first, then the oldest.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .p
            .priority
            .key
            .cmp(&self.p.priority.key)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// The two paths: small txs (0) and oversize txs (1), each a priority queue.
struct Queues {
    heaps: [BinaryHeap<Queued>; 2],
    seq: u64,
}

impl Queues {
    fn len(&self) -> usize {
        self.heaps[0].len() + self.heaps[1].len()
    }
    fn push(&mut self, p: Pending) {
        self.seq += 1;
        let path = usize::from(p.priority.oversize());
        self.heaps[path].push(Queued { seq: self.seq, p });
    }
    /// Moves what the channel holds now into the queues (up to [`MAX_BUFFERED`]); false
    /// when the channel is closed.
    fn drain(&mut self, rx: &mut mpsc::Receiver<Pending>) -> bool {
        while self.len() < MAX_BUFFERED {
            match rx.try_recv() {
                Ok(p) => self.push(p),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        true
    }
    /// The path whose best tx goes first.
    fn best_path(&self) -> Option<usize> {
        match (self.heaps[0].peek(), self.heaps[1].peek()) {
            (Some(a), Some(b)) => Some(if b > a { 1 } else { 0 }),
            (Some(_), None) => Some(0),
            (None, Some(_)) => Some(1),
            (None, None) => None,
        }
    }
}

/// Collects pending txs into micro-batches, naturally: a batch is cut as soon as a
/// placement slot is free, from the best waiting txs of one path (up to `max_batch_txs` /
/// `max_batch_bytes`), without waiting for more — so batches grow with the load while
/// slots are busy and stay small when it is light. Cuts are at least `stripe_spacing`
/// apart, so at moderate load (a slot free at once) a stripe still gathers what arrived
/// meanwhile. Only when the pipeline is idle (no other micro-batch in flight) does a lone
/// tx wait up to `flush_after` for company.
pub(super) async fn batcher(p: std::sync::Weak<Pipeline>, mut rx: mpsc::Receiver<Pending>) {
    let Some(cfg) = p.upgrade().map(|p| p.cfg.clone()) else {
        return;
    };
    let in_flight = cfg.max_batches_in_flight.max(1);
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut q = Queues {
        heaps: [BinaryHeap::new(), BinaryHeap::new()],
        seq: 0,
    };
    let mut open = true;
    let mut next_cut = tokio::time::Instant::now();
    loop {
        if q.len() == 0 {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(first) => q.push(first),
                None => return,
            }
        }
        // Wait for a free slot first: under load the work queues meanwhile, and the batch
        // is cut from the best of it.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        // At most one cut per `stripe_spacing`: at moderate load a slot is free at once,
        // and this is what lets a stripe gather more than a handful of txs.
        if next_cut > tokio::time::Instant::now() {
            tokio::time::sleep_until(next_cut).await;
        }
        let Some(pipeline) = p.upgrade() else { return };
        if open {
            open = q.drain(&mut rx);
        }
        // Idle (this is the only slot taken): a short wait lets a burst share one stripe.
        if open && slots.available_permits() + 1 == in_flight && q.len() < cfg.max_batch_txs {
            let deadline = tokio::time::Instant::now() + cfg.flush_after;
            while open && q.len() < cfg.max_batch_txs {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(next)) => {
                        q.push(next);
                        open = q.drain(&mut rx);
                    }
                    Ok(None) => open = false,
                    Err(_) => break,
                }
            }
        }
        let Some(path) = q.best_path() else {
            continue;
        };
        next_cut = tokio::time::Instant::now() + cfg.stripe_spacing;
        let mut batch: Vec<Pending> = Vec::new();
        let mut bytes = 0;
        let mut abandoned = 0u64;
        while batch.len() < cfg.max_batch_txs && bytes < cfg.max_batch_bytes {
            let Some(next) = q.heaps[path].pop() else {
                break;
            };
            pipeline.waiting.fetch_sub(1, Ordering::SeqCst);
            // A tx whose admission stopped waiting (it expired in the working set) is not
            // stored.
            if next.p.reply.is_closed() {
                abandoned += 1;
                continue;
            }
            bytes += next.p.tx.signed().encoded_len();
            metrics::counter!("citychain_pipeline_batched_total",
                "kind" => next.p.priority.kind.name(), "lane" => next.p.priority.lane())
            .increment(1);
            batch.push(next.p);
        }
        if abandoned > 0 {
            metrics::counter!("citychain_pipeline_abandoned_total").increment(abandoned);
        }
        metrics::gauge!("citychain_pipeline_waiting").set(pipeline.waiting() as f64);
        if batch.is_empty() {
            continue;
        }
        let path_name = if path == 1 { "oversize" } else { "normal" };
        metrics::histogram!("citychain_micro_batch_txs", "path" => path_name)
            .record(batch.len() as f64);
        metrics::histogram!("citychain_micro_batch_bytes", "path" => path_name)
            .record(bytes as f64);
        metrics::counter!("citychain_stripes_cut_total", "path" => path_name).increment(1);
        tokio::spawn(async move {
            pipeline.store_batch(batch).await;
            drop(permit);
        });
    }
}

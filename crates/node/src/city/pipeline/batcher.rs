//! Micro-batching: admitted txs wait in a bounded queue and are cut into micro-batches on
//! size, bytes or time; a bounded number of micro-batches are stored at once.

use super::{HeldTx, Pipeline, PipelineError};
use dag_core::VerifiedTx;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// A tx waiting for its micro-batch to be Held, with where to send the answer.
pub(super) struct Pending {
    pub(super) tx: VerifiedTx,
    pub(super) urgent: bool,
    pub(super) reply: oneshot::Sender<std::result::Result<HeldTx, PipelineError>>,
}

impl Pipeline {
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
}

/// Collects pending txs into micro-batches: flush at `max_batch_txs`, `max_batch_bytes`, or
/// `flush_after` after the first tx of the batch arrived.
pub(super) async fn batcher(p: std::sync::Weak<Pipeline>, mut rx: mpsc::Receiver<Pending>) {
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
        // A tx whose admission stopped waiting (it expired in the working set) is not stored.
        let before = batch.len();
        batch.retain(|p| !p.reply.is_closed());
        if batch.len() < before {
            metrics::counter!("citychain_pipeline_abandoned_total")
                .increment((before - batch.len()) as u64);
        }
        if batch.is_empty() {
            continue;
        }
        metrics::histogram!("citychain_micro_batch_txs").record(batch.len() as f64);
        tokio::spawn(async move {
            pipeline.store_batch(batch).await;
            drop(permit);
        });
    }
}

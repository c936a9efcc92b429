//! Storing a micro-batch: it is encoded into one stripe whose shards go to distinct holders
//! in parallel (per-call deadline, retries, failover to other nodes), every receipt
//! verified; the batch is answered Held once enough receipts are durable.

use super::batcher::Pending;
use super::{Pipeline, PipelineError};
use dag_core::{NodeId, NodeInfo, SignedReceipt, SignedTx};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use resilience::{Jitter, RetryDecision, RetryError, RetryPolicy, retry_with};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::{MicroBatch, Shard, StripeLayout, verify_receipt_from};

/// Why one attempt to put a shard on a node failed.
enum PutFailure {
    /// No answer in time, unreachable or refused: the same node is tried again.
    Transient(String),
    /// A forged or mismatched receipt: the next candidate is tried.
    BadReceipt(String),
    /// The verification pool has stopped: placement gives up.
    Stopped(String),
}

/// Attempts per holder with 20 ms before the first retry, doubling, no jitter.
fn put_retry_policy(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts.max(1),
        base_delay: Duration::from_millis(20),
        multiplier: 2.0,
        max_delay: Duration::MAX,
        jitter: Jitter::None,
    }
}

impl Pipeline {
    /// Puts one shard, trying `first` then the other candidates in order, each with
    /// retries; returns the verified receipt and the node that took it.
    pub(super) async fn place_shard(
        &self,
        layout: &StripeLayout,
        shard: &Shard,
        candidates: &[NodeInfo],
        taken: &parking_lot::Mutex<BTreeSet<NodeId>>,
        allow_colocated: bool,
    ) -> std::result::Result<(SignedReceipt, NodeId), String> {
        let mut last = String::from("no candidate node");
        let policy = put_retry_policy(self.cfg.attempts);
        for node in candidates {
            // Never two shards of a stripe on one node unless fewer than n nodes exist.
            if !taken.lock().insert(node.node_id) && !allow_colocated {
                continue;
            }
            let decide = |e: &PutFailure| match e {
                PutFailure::Transient(_) => RetryDecision::Retry,
                PutFailure::BadReceipt(_) | PutFailure::Stopped(_) => RetryDecision::Stop,
            };
            let put = retry_with(&policy, None, decide, |_| {
                self.put_once(layout, shard, node)
            })
            .await
            .map_err(RetryError::into_inner);
            match put {
                Ok(placed) => return Ok(placed),
                Err(PutFailure::Transient(e) | PutFailure::BadReceipt(e)) => last = e,
                Err(PutFailure::Stopped(e)) => return Err(e),
            }
            // A node that failed stays marked taken: it must not get another shard either.
        }
        Err(last)
    }

    /// One put of `shard` on `node` within the call deadline, its receipt verified on the
    /// pool.
    async fn put_once(
        &self,
        layout: &StripeLayout,
        shard: &Shard,
        node: &NodeInfo,
    ) -> std::result::Result<(SignedReceipt, NodeId), PutFailure> {
        let res =
            tokio::time::timeout(self.cfg.call_timeout, self.transport.put_shard(node, shard))
                .await;
        match res {
            Ok(Ok(receipt)) => {
                let lay = layout.clone();
                let holder = node.node_id;
                let checked = self
                    .on_pool(move || verify_receipt_from(&lay, receipt, &holder, &pqc::MlDsa87))
                    .await
                    .map_err(|e| PutFailure::Stopped(e.to_string()))?;
                match checked {
                    Ok(v) => Ok((v.signed().clone(), holder)),
                    Err(e) => {
                        // A forged or mismatched receipt: that node is not trusted with this
                        // shard.
                        metrics::counter!("citychain_bad_receipts_total").increment(1);
                        Err(PutFailure::BadReceipt(e.to_string()))
                    }
                }
            }
            Ok(Err(e)) => Err(PutFailure::Transient(e.to_string())),
            Err(_) => Err(PutFailure::Transient(format!(
                "{}: no answer within {} ms",
                node.node_id.short(),
                self.cfg.call_timeout.as_millis()
            ))),
        }
    }

    pub(super) async fn store_batch(self: Arc<Self>, batch: Vec<Pending>) {
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
}

fn fail_all(batch: Vec<Pending>, e: PipelineError) {
    for p in batch {
        let _ = p.reply.send(Err(e.clone()));
    }
}

#[cfg(test)]
mod tests {
    use crate::city::pipeline::test_utils::{fixture_for_test, hold_all_for_test, txs_for_test};
    use crate::city::pipeline::{PipelineConfig, PipelineError};
    use std::collections::BTreeSet;
    use std::time::Duration;

    #[tokio::test]
    async fn held_with_n_distinct_receipts_and_restored_after_two_losses() {
        let f = fixture_for_test(8, PipelineConfig::default());
        let txs = txs_for_test(40);
        let held = hold_all_for_test(&f.pipeline, &txs).await;
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
    async fn failed_holder_shard_goes_elsewhere_and_forged_receipts_never_count() {
        let f = fixture_for_test(
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
        let held = hold_all_for_test(&f.pipeline, &txs_for_test(5)).await;
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
        let f = fixture_for_test(3, PipelineConfig::default());
        let err = hold_all_for_test(&f.pipeline, &txs_for_test(1))
            .await
            .remove(0)
            .unwrap_err();
        assert!(
            matches!(err, PipelineError::TooFewNodes { live: 3, needed: 4 }),
            "{err}"
        );
        let f = fixture_for_test(5, PipelineConfig::default());
        let h = hold_all_for_test(&f.pipeline, &txs_for_test(1))
            .await
            .remove(0)
            .unwrap();
        assert!(
            h.colocated,
            "5 nodes for 6 shards must be reported as colocated"
        );
        assert_eq!(h.receipts.len(), 6);
    }
}

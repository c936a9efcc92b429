//! Storing a micro-batch: it is encoded into one stripe whose shards go to distinct holders
//! in parallel (per-call deadline, retries, failover to other nodes), every receipt
//! verified; the batch is answered Held once enough receipts are durable.
//!
//! Held means n distinct holders: a node never takes two shards of a stripe, and when zones
//! are configured and at least n distinct zones can take a shard, no zone takes two. Nodes
//! that refused a put (full: `RESOURCE_EXHAUSTED`) or were unreachable or unavailable on
//! every attempt (a slow node that timed out is not) are skipped for
//! [`PipelineConfig::node_cooldown`](super::PipelineConfig::node_cooldown). With fewer than n
//! usable nodes the micro-batch waits (bounded by `capacity_wait`) and then fails with
//! [`PipelineError::NoRoom`], naming why; nothing is recorded. Shards already put for a
//! stripe that ends not Held are orphans: no manifest names them, they are never served as
//! Held data, and they only use space on their holders (there is no delete call to light
//! nodes yet, see ARCHITECTURE "Durability").

use super::batcher::Pending;
use super::{Pipeline, PipelineError, TransportError};
use dag_core::{NodeId, NodeInfo, SignedReceipt, VerifiedTx};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use resilience::{Jitter, RetryDecision, RetryError, RetryPolicy, retry_with};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::{MicroBatch, Shard, StripeLayout, verify_receipt_from};

/// Why one attempt to put a shard on a node failed.
enum PutFailure {
    /// No answer in time: the same node is tried again (a slow node is not cooled down).
    Transient(String),
    /// Unreachable or unavailable (down, store failed): tried again, then cooled down.
    Down(String),
    /// A forged or mismatched receipt: the next candidate is tried.
    BadReceipt(String),
    /// The node refused (full, conflict …): the next candidate is tried at once.
    Refused(String),
    /// The verification pool has stopped: placement gives up.
    Stopped(String),
}

/// The nodes (and, when zones are strict, the zones) that already hold a shard of the
/// stripe being placed.
#[derive(Debug, Default)]
pub(super) struct Taken {
    nodes: BTreeSet<NodeId>,
    zones: BTreeSet<String>,
    strict_zones: bool,
}

impl Taken {
    /// Holders `nodes` already hold a shard; zones are exclusive when `strict_zones`.
    pub(super) fn new(nodes: &[&NodeInfo], strict_zones: bool) -> Self {
        let mut t = Taken {
            strict_zones,
            ..Taken::default()
        };
        for n in nodes {
            t.nodes.insert(n.node_id);
            if strict_zones && !n.zone.is_empty() {
                t.zones.insert(n.zone.clone());
            }
        }
        t
    }

    /// Claims `n` for one shard; false if it (or its zone, when strict) already has one.
    fn claim(&mut self, n: &NodeInfo) -> bool {
        if self.nodes.contains(&n.node_id)
            || (self.strict_zones && !n.zone.is_empty() && self.zones.contains(&n.zone))
        {
            return false;
        }
        self.nodes.insert(n.node_id);
        if self.strict_zones && !n.zone.is_empty() {
            self.zones.insert(n.zone.clone());
        }
        true
    }

    /// `n` failed: it stays taken (it must not get another shard of this stripe) but its
    /// zone is free again for another node.
    fn release_zone(&mut self, n: &NodeInfo) {
        self.zones.remove(&n.zone);
    }
}

/// True if at least `n` distinct non-empty zones are among `nodes`: then no zone takes two
/// shards of a stripe.
pub(super) fn zones_suffice(nodes: &[NodeInfo], n: usize) -> bool {
    nodes
        .iter()
        .filter(|x| !x.zone.is_empty())
        .map(|x| x.zone.as_str())
        .collect::<BTreeSet<_>>()
        .len()
        >= n
}

/// How often a micro-batch waiting for holders looks again.
const CAPACITY_POLL: Duration = Duration::from_millis(50);

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
    /// Puts one shard on the first candidate that takes it, each tried with retries,
    /// never on a node (or, when strict, in a zone) that already holds a shard of the
    /// stripe; returns the verified receipt and the node that took it.
    pub(super) async fn place_shard(
        &self,
        layout: &StripeLayout,
        shard: &Shard,
        candidates: &[NodeInfo],
        taken: &parking_lot::Mutex<Taken>,
    ) -> std::result::Result<(SignedReceipt, NodeId), String> {
        // Every candidate that refused or failed is named in the error, so a repair blocked
        // by nodes squatting the slot (a conflicting shard) or forging receipts reports them.
        let mut failed: Vec<String> = Vec::new();
        let policy = put_retry_policy(self.cfg.attempts);
        for node in candidates {
            // Never two shards of a stripe on one node: Held means n distinct holders.
            if !taken.lock().claim(node) {
                continue;
            }
            let decide = |e: &PutFailure| match e {
                PutFailure::Transient(_) | PutFailure::Down(_) => RetryDecision::Retry,
                PutFailure::BadReceipt(_) | PutFailure::Refused(_) | PutFailure::Stopped(_) => {
                    RetryDecision::Stop
                }
            };
            let put = retry_with(&policy, None, decide, |_| {
                self.put_once(layout, shard, node)
            })
            .await
            .map_err(RetryError::into_inner);
            match put {
                Ok(placed) => return Ok(placed),
                Err(PutFailure::Down(e) | PutFailure::Refused(e)) => {
                    // Full, down or its store failing: no more shards for it for a while.
                    self.cool_down(node, &e);
                    failed.push(e);
                }
                Err(PutFailure::Transient(e)) => failed.push(e),
                Err(PutFailure::BadReceipt(e)) => {
                    failed.push(format!("{}: bad receipt: {e}", node.node_id.short()));
                }
                Err(PutFailure::Stopped(e)) => return Err(e),
            }
            // A node that failed stays marked taken: it must not get another shard either.
            taken.lock().release_zone(node);
        }
        if failed.is_empty() {
            return Err("no distinct holder left to try".into());
        }
        Err(failed.join("; "))
    }

    /// One put of `shard` on `node` within the call deadline, its receipt verified on the
    /// pool.
    async fn put_once(
        &self,
        layout: &StripeLayout,
        shard: &Shard,
        node: &NodeInfo,
    ) -> std::result::Result<(SignedReceipt, NodeId), PutFailure> {
        // Connection set-up (a cold TLS handshake) has its own bound, not the put's.
        match self.transport.connect(node).await {
            Ok(()) => {}
            Err(e @ TransportError::Refused { .. }) => {
                return Err(PutFailure::Refused(e.to_string()));
            }
            Err(e) => return Err(PutFailure::Down(e.to_string())),
        }
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
            Ok(Err(e @ TransportError::Refused { .. })) => Err(PutFailure::Refused(e.to_string())),
            Ok(Err(e @ TransportError::Unreachable { .. })) => Err(PutFailure::Down(e.to_string())),
            Ok(Err(e)) => Err(PutFailure::Transient(e.to_string())),
            Err(_) => Err(PutFailure::Transient(format!(
                "{}: no answer within {} ms",
                node.node_id.short(),
                self.cfg.call_timeout.as_millis()
            ))),
        }
    }

    /// Marks `node` as not taking shards for `node_cooldown` (it refused or failed).
    pub(super) fn cool_down(&self, node: &NodeInfo, why: &str) {
        let until = tokio::time::Instant::now() + self.cfg.node_cooldown;
        if self.cooling.lock().insert(node.node_id, until).is_none() {
            metrics::counter!("citychain_holder_cooldowns_total").increment(1);
            tracing::warn!(node = %node.node_id.short(), reason = %why,
                cooldown_ms = self.cfg.node_cooldown.as_millis() as u64,
                "light node refused or failed a put; not placing on it for a while");
        }
    }

    /// The live nodes that can take a shard of `shard_bytes` now: not cooling down after a
    /// refusal or failure, and advertising at least that much free capacity (0 = unknown
    /// counts as room). Also says why the others were left out.
    pub(super) fn usable_holders(&self, shard_bytes: u64) -> (Vec<NodeInfo>, usize, usize) {
        let now = tokio::time::Instant::now();
        let live = self.directory.live_lights();
        let mut cooling = self.cooling.lock();
        cooling.retain(|_, until| *until > now);
        let (mut full, mut cool) = (0, 0);
        let usable = live
            .into_iter()
            .filter(|n| {
                if cooling.contains_key(&n.node_id) {
                    cool += 1;
                    false
                } else if n.free_capacity != 0 && n.free_capacity < shard_bytes {
                    full += 1;
                    false
                } else {
                    true
                }
            })
            .collect();
        (usable, full, cool)
    }

    /// Waits (bounded by `capacity_wait`) until at least `n` distinct usable holders exist;
    /// returns them and whether zones are exclusive, or [`PipelineError::NoRoom`] naming
    /// why there are too few.
    async fn wait_for_holders(
        &self,
        n: usize,
        shard_bytes: u64,
    ) -> std::result::Result<(Vec<NodeInfo>, bool), PipelineError> {
        let deadline = tokio::time::Instant::now() + self.cfg.capacity_wait;
        loop {
            let (usable, full, cooling) = self.usable_holders(shard_bytes);
            if usable.len() >= n {
                let strict = zones_suffice(&usable, n);
                return Ok((usable, strict));
            }
            if tokio::time::Instant::now() >= deadline {
                let live = usable.len() + full + cooling;
                return Err(PipelineError::NoRoom {
                    usable: usable.len(),
                    needed: n,
                    reason: format!(
                        "{live} light nodes live, {full} advertise too little free space, \
                         {cooling} refused or failed a put recently"
                    ),
                });
            }
            tokio::time::sleep(CAPACITY_POLL).await;
        }
    }

    pub(super) async fn store_batch(self: Arc<Self>, batch: Vec<Pending>) {
        let t0 = Instant::now();
        let urgent = batch.iter().any(|p| p.urgent);
        // The txs move into the stripe encoder (no copy); only the replies wait here.
        let (txs, batch): (Vec<VerifiedTx>, Vec<Reply>) =
            batch.into_iter().map(|p| (p.tx, p.reply)).unzip();
        let erasure = self.cfg.erasure;
        let encoded = self
            .on_pool(move || -> std::result::Result<_, String> {
                let (mb, entries) = MicroBatch::from_verified(&txs).map_err(|e| e.to_string())?;
                // The stripe and each shard are hashed once (when laid out and encoded).
                let shards = erasure.encode_batch(&mb).map_err(|e| e.to_string())?;
                let layout = StripeLayout::from_encoded(&shards).map_err(|e| e.to_string())?;
                Ok((entries, shards, layout))
            })
            .await;
        let (entries, shards, layout) = match encoded {
            Ok(Ok((entries, shards, layout))) => (Arc::new(entries), shards, layout),
            Ok(Err(e)) => return fail_all(batch, PipelineError::Storage(e)),
            Err(e) => return fail_all(batch, e),
        };
        let n = shards.len();
        let shard_bytes = shards.first().map_or(0, |s| s.encoded_len() as u64);
        let (usable, strict_zones) = match self.wait_for_holders(n, shard_bytes).await {
            Ok(v) => v,
            Err(e) => {
                metrics::counter!("citychain_no_room_total").increment(1);
                return fail_all(batch, e);
            }
        };
        let ranked = self.directory.rank(&layout.stripe_id, usable, urgent);
        let taken = Arc::new(parking_lot::Mutex::new(Taken::new(&[], strict_zones)));
        let needed = self
            .cfg
            .min_receipts
            .unwrap_or(n)
            .clamp(usize::from(layout.k), n);

        // Shard i goes first to ranked[i], then to the nodes after the first n, and last to
        // the other shards' first choices (a failed holder's zone-mate may be one of them:
        // when zones are strict it is the only place left for that shard); never to a node
        // or (strict) zone that already took a shard of this stripe.
        let mut puts = FuturesUnordered::new();
        for (i, shard) in shards.into_iter().enumerate() {
            let first = i % ranked.len();
            let mut cands: Vec<NodeInfo> = Vec::with_capacity(ranked.len());
            cands.push(ranked[first].clone());
            cands.extend(ranked.iter().skip(n).cloned());
            cands.extend(
                ranked
                    .iter()
                    .take(n)
                    .enumerate()
                    .filter(|(j, _)| *j != first)
                    .map(|(_, x)| x.clone()),
            );
            let me = self.clone();
            let layout = layout.clone();
            let taken = taken.clone();
            puts.push(async move {
                let r = me.place_shard(&layout, &shard, &cands, &taken).await;
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
                // Enough to answer: persist (a durable redb commit, on the blocking pool,
                // not on a runtime worker) and reply now, keep placing the rest.
                match self.persist_off_runtime(&layout, &receipts, &entries).await {
                    Ok(held) => {
                        if let Some(b) = waiting.take() {
                            metrics::histogram!("citychain_hold_seconds")
                                .record(t0.elapsed().as_secs_f64());
                            for reply in b {
                                let _ = reply.send(Ok(held.clone()));
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
                if let Err(e) = self.persist_off_runtime(&layout, &receipts, &entries).await {
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

impl Pipeline {
    /// [`Pipeline::persist`] on the blocking pool: the commit's fsync never holds a
    /// runtime worker.
    async fn persist_off_runtime(
        self: &Arc<Self>,
        layout: &StripeLayout,
        receipts: &[(SignedReceipt, NodeId)],
        entries: &Arc<Vec<storage::TxIndexEntry>>,
    ) -> std::result::Result<super::HeldTx, PipelineError> {
        let (me, layout, receipts, entries) = (
            self.clone(),
            layout.clone(),
            receipts.to_vec(),
            entries.clone(),
        );
        crate::runtime::run_blocking("stripe index", move || {
            me.persist(&layout, &receipts, &entries)
        })
        .await
        .map_err(|_| PipelineError::Stopped)?
    }
}

/// Where a micro-batch's tx gets its answer.
type Reply = tokio::sync::oneshot::Sender<std::result::Result<super::HeldTx, PipelineError>>;

fn fail_all(batch: Vec<Reply>, e: PipelineError) {
    for reply in batch {
        let _ = reply.send(Err(e.clone()));
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
        // Every tx of a stripe gets the stripe's one receipt list (shared, not copied).
        let first = held[0].as_ref().unwrap();
        let same: Vec<_> = held
            .iter()
            .map(|h| h.as_ref().unwrap())
            .filter(|h| h.stripe_id == first.stripe_id)
            .collect();
        assert!(same.len() > 1, "the 40 txs share stripes");
        assert!(
            same.iter()
                .all(|h| std::sync::Arc::ptr_eq(&h.receipts, &first.receipts))
        );
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
    async fn stripes_are_cut_no_closer_than_the_spacing_so_a_trickle_shares_one() {
        let f = fixture_for_test(
            8,
            PipelineConfig {
                stripe_spacing: Duration::from_secs(1),
                ..PipelineConfig::default()
            },
        );
        let txs = txs_for_test(6);
        // The first is cut at once (nothing was cut before) and is Held alone.
        let first = f.pipeline.hold(txs[0].clone()).await.unwrap();
        // The next five trickle in 20 ms apart, each with a slot free: without the spacing
        // each would be cut alone after the idle flush (2 ms); with it they wait for the
        // next cut and share its stripe.
        let mut waits = Vec::new();
        for t in &txs[1..] {
            let (p, t) = (f.pipeline.clone(), t.clone());
            waits.push(tokio::spawn(async move { p.hold(t).await }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut stripes = BTreeSet::new();
        for w in waits {
            stripes.insert(w.await.unwrap().unwrap().stripe_id);
        }
        assert_eq!(stripes.len(), 1, "the trickle shares one stripe");
        assert!(!stripes.contains(&first.stripe_id));
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
            for r in h.receipts.iter() {
                assert_ne!(r.receipt.holder, f.nodes[0].node_id);
                assert_ne!(
                    r.receipt.holder, f.nodes[1].node_id,
                    "a forged receipt was accepted"
                );
            }
        }
    }

    #[tokio::test]
    async fn too_few_distinct_holders_is_a_typed_error_never_a_colocated_held() {
        let quick = PipelineConfig {
            capacity_wait: Duration::ZERO,
            ..PipelineConfig::default()
        };
        for lights in [3, 5] {
            let f = fixture_for_test(lights, quick.clone());
            let err = hold_all_for_test(&f.pipeline, &txs_for_test(1))
                .await
                .remove(0)
                .unwrap_err();
            assert!(
                matches!(err, PipelineError::NoRoom { usable, needed: 6, .. } if usable == lights),
                "{err}"
            );
            assert!(err.to_string().contains("retry later"), "{err}");
            assert!(
                f.pipeline.manifests().unwrap().is_empty(),
                "nothing recorded"
            );
        }
    }

    #[tokio::test]
    async fn a_failing_holder_with_no_spare_fails_the_stripe_then_heals() {
        let f = fixture_for_test(
            6,
            PipelineConfig {
                call_timeout: Duration::from_millis(100),
                attempts: 1,
                capacity_wait: Duration::ZERO,
                node_cooldown: Duration::from_millis(200),
                ..PipelineConfig::default()
            },
        );
        let down = f.transport.node(&f.nodes[0].node_id).unwrap();
        down.set_alive(false);
        let txs = txs_for_test(2);
        // Five nodes answer, the sixth does not: not Held, and no node got two shards.
        let err = f.pipeline.hold(txs[0].clone()).await.unwrap_err();
        assert!(
            matches!(err, PipelineError::NotHeld { got: 5, .. }),
            "{err}"
        );
        assert!(f.pipeline.manifests().unwrap().is_empty());
        // While it cools down, the next batch fails fast without trying it.
        let err = f.pipeline.hold(txs[1].clone()).await.unwrap_err();
        assert!(
            matches!(err, PipelineError::NoRoom { usable: 5, .. }),
            "{err}"
        );
        // It comes back: Held again on six distinct holders.
        down.set_alive(true);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let h = f.pipeline.hold(txs[1].clone()).await.unwrap();
        let holders: BTreeSet<_> = h.receipts.iter().map(|r| r.receipt.holder).collect();
        assert_eq!(holders.len(), 6);
        assert!(!h.colocated);
    }

    #[tokio::test]
    async fn with_enough_zones_no_zone_takes_two_shards() {
        use crate::city::pipeline::Pipeline;
        use crate::city::test_utils::{MemoryTransport, StaticDirectory};
        use std::sync::Arc;
        let transport = Arc::new(MemoryTransport::default());
        // Twelve nodes in six zones, two per zone.
        let nodes: Vec<_> = (0..12)
            .map(|i| transport.add_node(&format!("z{}", i % 6)).unwrap())
            .collect();
        let tmp = tempfile::tempdir().unwrap();
        let pipeline = Pipeline::start(
            PipelineConfig::default(),
            &tmp.path().join("stripes.redb"),
            transport.clone(),
            Arc::new(StaticDirectory::new(nodes.clone())),
            Arc::new(pqc::BatchVerifier::new(2).unwrap()),
        )
        .unwrap();
        // One node of zone z0 is down: its shard must go to z0's other node, not to a
        // zone that already has one.
        transport.node(&nodes[0].node_id).unwrap().set_alive(false);
        let zone_of = |id| nodes.iter().find(|n| n.node_id == id).unwrap().zone.clone();
        for h in hold_all_for_test(&pipeline, &txs_for_test(12)).await {
            let h = h.unwrap();
            let zones: BTreeSet<_> = h
                .receipts
                .iter()
                .map(|r| zone_of(r.receipt.holder))
                .collect();
            assert_eq!(zones.len(), 6, "six shards in six zones");
        }
        // Fewer zones than n: zones are not exclusive, nodes still are.
        assert!(!super::zones_suffice(&nodes[..5], 6));
        assert!(super::zones_suffice(&nodes, 6));
        let mut t = super::Taken::new(&[&nodes[0]], true);
        assert!(!t.claim(&nodes[0]), "a node never takes two");
        assert!(!t.claim(&nodes[6]), "nor a zone, when strict");
        assert!(t.claim(&nodes[1]));
        t.release_zone(&nodes[1]);
        assert!(t.claim(&nodes[7]), "a failed node's zone is free again");
    }
}

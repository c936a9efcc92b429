//! The working store leaves: a representative's pruner removes from the city's tx store
//! (`txs.redb`) the body of every tx whose work there is done, keeping only what replay
//! protection and lookup need — its (sender, nonce) in the store and its stripe location
//! in the stripe index; `GetTx` then answers the tx from the shards or the archive.
//!
//! A tx's body is removed only when all of these hold:
//! - it is **ordered and executed**: it is in a checkpoint this node executed, and that
//!   checkpoint was executed at least [`PruneConfig::delay`] ago (the other representatives
//!   executing behind this one fetch its body with `GetTx`; served from this store it
//!   costs one read instead of a shard restore);
//! - it is **held**: its stripe's durable record names it (n shards on distinct light
//!   nodes with signed receipts);
//! - it is **durably archived** (a committed record in this node's archive); a node without
//!   an archive never prunes;
//! - for a **cross-city transfer-out**, the ledger has **settled** it (completed or refunded
//!   by the receiver city's answer); a pending one is looked at again on later passes.
//!
//! Crash safety: each pass is one redb transaction of the store ([`TxStore::prune`]) that
//! removes the bodies, records which examined txs must be looked at again, and moves the
//! next checkpoint to examine — all or nothing, after the archive and stripe records it
//! relies on were committed. A crash mid-pass leaves the store as before the pass; the next
//! start resumes from the recorded sequence.

use super::admission::CityNode;
use super::execution::Execution;
use super::order::OrderStore;
use super::store::{PruneStep, TxStore};
use crate::runtime::run_blocking;
use crate::{Error, Result};
use dag_core::TxId;
use dag_core::consensus::BatchItem;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Pruner settings. `Default`: a pass every second (and on every executed checkpoint),
/// checkpoints pruned 10 s after this node executed them, at most 256 checkpoints per pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PruneConfig {
    /// Longest wait between passes (deferred txs are looked at again on each).
    pub(crate) interval: Duration,
    /// How long after this node executed a checkpoint its txs' bodies stay (for the
    /// representatives still executing it).
    pub(crate) delay: Duration,
    /// Most checkpoints examined in one pass (one transaction).
    pub(crate) max_checkpoints: u64,
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            interval: Duration::from_secs(1),
            delay: Duration::from_secs(10),
            max_checkpoints: 256,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PruneReport {
    /// Checkpoints examined.
    pub(crate) checkpoints: u64,
    /// Bodies removed.
    pub(crate) pruned: u64,
    /// Txs whose body stays for now (not archived, not settled), to be looked at again.
    pub(crate) deferred: u64,
}

/// Why a stored tx is kept for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Not in a durable stripe record.
    Unheld,
    /// No committed archive record.
    Unarchived,
    /// A cross-city transfer-out still pending.
    Unsettled,
}

/// The parts a pass reads.
pub(crate) struct Pruner {
    node: Arc<CityNode>,
    order: Arc<OrderStore>,
    exec: Arc<Execution>,
    archive: Option<archive::RedbArchive>,
}

impl Pruner {
    /// A pruner of `node`'s store over its committee's `order` and `exec`; `archive` is the
    /// node's archive (without one nothing is pruned).
    pub(crate) fn new(
        node: Arc<CityNode>,
        order: Arc<OrderStore>,
        exec: Arc<Execution>,
        archive: Option<archive::RedbArchive>,
    ) -> Self {
        Pruner {
            node,
            order,
            exec,
            archive,
        }
    }

    fn store(&self) -> &TxStore {
        self.node.store()
    }

    /// The txs first carried by the batches of checkpoint `seq` (a tx committed again
    /// later appears twice; pruning it twice is harmless).
    fn ids_of(&self, seq: u64) -> Result<Vec<TxId>> {
        let Some(cp) = self.order.checkpoint(seq)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for digest in &cp.checkpoint.batches {
            if let Some(h) = self.order.batch(digest)? {
                out.extend(h.items.iter().filter_map(|i| match i {
                    BatchItem::Tx(id) => Some(*id),
                    BatchItem::Stripe(_) => None,
                }));
            }
        }
        Ok(out)
    }

    fn keep(&self, id: &TxId, held: bool) -> Result<Option<Keep>> {
        if !held {
            return Ok(Some(Keep::Unheld));
        }
        let Some(a) = &self.archive else {
            return Ok(Some(Keep::Unarchived));
        };
        let archived = a
            .dag_node_blocking(*id)
            .map_err(|source| Error::Archive { source })?
            .is_some();
        if !archived {
            return Ok(Some(Keep::Unarchived));
        }
        if let Some(l) = self.exec.ledger() {
            let ledger_err = |source| Error::Ledger { source };
            if l.escrowed_at(id).map_err(ledger_err)?.is_some()
                && l.settled_at(id).map_err(ledger_err)?.is_none()
            {
                return Ok(Some(Keep::Unsettled));
            }
        }
        Ok(None)
    }

    /// One pass (blocking): examines the deferred txs and the checkpoints from the recorded
    /// next sequence up to (not including) `upto` (at most `max` of them), and prunes in
    /// one transaction.
    pub(crate) fn pass(&self, upto: u64, max: u64) -> Result<PruneReport> {
        let Some(pipeline) = self.node.pipeline() else {
            return Ok(PruneReport::default());
        };
        let state = self.store().prune_state()?;
        let end = upto.min(state.next_seq.saturating_add(max.max(1)));
        let mut candidates: Vec<(TxId, u64)> = state.deferred.clone();
        let mut seen: HashSet<TxId> = candidates.iter().map(|(id, _)| *id).collect();
        for seq in state.next_seq..end {
            for id in self.ids_of(seq)? {
                if seen.insert(id) {
                    candidates.push((id, seq));
                }
            }
        }
        if candidates.is_empty() && end <= state.next_seq {
            return Ok(PruneReport::default());
        }
        let ids: Vec<TxId> = candidates.iter().map(|(id, _)| *id).collect();
        let present = self.store().contains_all(&ids)?;
        let held = pipeline
            .held_ids(&ids)
            .map_err(|source| Error::Pipeline { source })?;
        let deferred: HashSet<TxId> = state.deferred.iter().map(|(id, _)| *id).collect();
        let mut step = PruneStep {
            next_seq: end.max(state.next_seq),
            ..PruneStep::default()
        };
        for (((id, seq), present), held) in candidates.into_iter().zip(present).zip(held) {
            if !present {
                // Never stored here (another representative admitted it) or already gone.
                if deferred.contains(&id) {
                    step.forget.push(id);
                }
                continue;
            }
            match self.keep(&id, held)? {
                None => step.remove.push(id),
                Some(why) => {
                    tracing::trace!(tx = %id, ?why, "body kept for now");
                    if !deferred.contains(&id) {
                        step.defer.push((id, seq));
                    }
                }
            }
        }
        let checkpoints = step.next_seq - state.next_seq;
        let pruned = self.store().prune(&step)?;
        metrics::counter!("citychain_working_store_pruned_total").increment(pruned);
        let removed_deferred = step
            .remove
            .iter()
            .filter(|id| deferred.contains(*id))
            .count();
        let still = deferred.len() + step.defer.len() - step.forget.len() - removed_deferred;
        metrics::gauge!("citychain_working_store_deferred").set(still as f64);
        Ok(PruneReport {
            checkpoints,
            pruned,
            deferred: still as u64,
        })
    }
}

/// The checkpoints executed at least `delay` ago, from samples of [`Execution::executed`].
#[derive(Debug, Default)]
struct Aged {
    samples: VecDeque<(Instant, u64)>,
}

impl Aged {
    /// Records `executed` seen at `now`; returns the largest value seen at or before
    /// `now - delay` (0 if none).
    fn observe(&mut self, now: Instant, executed: u64, delay: Duration) -> u64 {
        if self.samples.back().is_none_or(|(_, e)| *e != executed) {
            self.samples.push_back((now, executed));
        }
        let Some(cut) = now.checked_sub(delay) else {
            return 0;
        };
        // Keep one sample at or before the cut (the answer) and everything after it.
        while self.samples.len() > 1 && self.samples[1].0 <= cut {
            self.samples.pop_front();
        }
        match self.samples.front() {
            Some((t, e)) if *t <= cut => *e,
            _ => 0,
        }
    }
}

/// A running pruner. Drop does not stop it: call [`PrunerHandle::shutdown`].
#[derive(Debug)]
pub(crate) struct PrunerHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl PrunerHandle {
    /// Stops after the pass in flight and waits.
    pub(crate) async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take()
            && let Err(e) = t.await
            && e.is_panic()
        {
            tracing::error!(error = %e, "working-store pruner panicked");
        }
    }
}

/// Starts pruning with `pruner` under `cfg`.
pub(crate) fn spawn(pruner: Pruner, cfg: PruneConfig) -> PrunerHandle {
    let (stop, mut stopped) = watch::channel(false);
    let pruner = Arc::new(pruner);
    let task = tokio::spawn(async move {
        let mut executed = pruner.exec.subscribe();
        let mut aged = Aged::default();
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                r = executed.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(cfg.interval) => {}
            }
            if *stopped.borrow() {
                return;
            }
            let upto = aged.observe(Instant::now(), pruner.exec.executed(), cfg.delay);
            let p = pruner.clone();
            match run_blocking("working store prune", move || {
                p.pass(upto, cfg.max_checkpoints)
            })
            .await
            {
                Ok(Ok(r)) if r.pruned > 0 || r.checkpoints > 0 => {
                    tracing::debug!(?r, upto, "working store pruned");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "working store prune failed; retrying"),
                Err(_) => return,
            }
        }
    });
    PrunerHandle {
        stop,
        task: Some(task),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::city::pipeline::{Pipeline, PipelineConfig};
    use crate::city::test_utils::until;
    use crate::city::test_utils::{MemoryTransport, StaticDirectory};
    use dag_core::{AccountId, CityId, Position, PositionMethod, SignedTx, Tx};
    use pqc::Keypair;
    use rpc::{CityApi, RejectCode, TxState};
    use std::collections::BTreeMap;

    fn signed(kp: &Keypair, nonce: u64) -> SignedTx {
        pqc::sign_tx(
            Tx::fresh(
                kp.account_id(),
                AccountId::from_bytes([3; 32]),
                10,
                nonce,
                1_767_225_600_000,
                CityId::new("JP-13").unwrap(),
                Position::from_degrees(35.6895, 139.6917).unwrap(),
                PositionMethod::Gps,
            ),
            kp,
        )
    }

    /// A city node over in-memory light nodes with a real store, stripe index and archive,
    /// an order store and an execution record (nothing executed: the test passes `upto`).
    struct Fixture {
        node: Arc<CityNode>,
        order: Arc<OrderStore>,
        exec: Arc<Execution>,
        archive: archive::RedbArchive,
        _tmp: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let transport = Arc::new(MemoryTransport::default());
        let nodes: Vec<_> = (0..6)
            .map(|i| transport.add_node(&format!("zone-{}", i % 3)).unwrap())
            .collect();
        let verifier = Arc::new(pqc::BatchVerifier::new(2).unwrap());
        let pipeline = Pipeline::start(
            PipelineConfig::default(),
            &tmp.path().join("stripes.redb"),
            transport,
            Arc::new(StaticDirectory::new(nodes)),
            verifier.clone(),
        )
        .unwrap();
        let archive = archive::RedbArchive::open_in_dir(&tmp.path().join("archive")).unwrap();
        let writer =
            archive::ArchiveWriter::spawn(archive.clone(), archive::ArchiveWriterConfig::default());
        let store = TxStore::open(&tmp.path().join("txs.redb")).unwrap();
        let node = Arc::new(
            CityNode::new(Keypair::generate().node_id(), store, verifier, 1_000)
                .with_pipeline(pipeline)
                .with_archive(archive.clone(), writer),
        );
        let order = Arc::new(OrderStore::open(&tmp.path().join("order.redb")).unwrap());
        let (appliers, ledger) =
            super::super::execution::state_machines(tmp.path(), &BTreeMap::new()).unwrap();
        let exec = Arc::new(
            Execution::open(&tmp.path().join("execution.redb"), appliers, Some(ledger)).unwrap(),
        );
        Fixture {
            node,
            order,
            exec,
            archive,
            _tmp: tmp,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_held_archived_txs_leave_and_gettx_still_answers_them() {
        let f = fixture();
        let alice = Keypair::generate();
        let txs: Vec<SignedTx> = (0..6).map(|n| signed(&alice, n)).collect();
        for t in &txs {
            assert_eq!(f.node.submit(t.clone()).await.unwrap().state, TxState::Held);
        }
        // One more stored but never held (admitted, then the node stopped before the hold).
        let unheld = signed(&alice, 6).verify(&pqc::MlDsa87).unwrap();
        assert_eq!(f.node.store().admit(unheld.clone()).await.unwrap(), Ok(()));
        let mut items: Vec<BatchItem> = txs.iter().map(|t| BatchItem::Tx(t.id())).collect();
        items.push(BatchItem::Tx(unheld.id()));
        for s in &super::super::order::tests::commits(items) {
            f.order.apply(s, 1).unwrap();
        }
        let upto = f.order.committed();
        assert!(upto > 0);
        assert_eq!(f.node.store().len().unwrap(), 7);

        // Without an archive nothing leaves: every stored tx is deferred, progress recorded.
        let no_archive = Pruner::new(f.node.clone(), f.order.clone(), f.exec.clone(), None);
        let r = no_archive.pass(upto, 256).unwrap();
        assert_eq!((r.checkpoints, r.pruned, r.deferred), (upto, 0, 7));
        assert_eq!(f.node.store().len().unwrap(), 7);
        assert_eq!(f.node.store().prune_state().unwrap().next_seq, upto);

        // With the archive, once it durably holds them: the held ones leave, the unheld one
        // stays deferred.
        let archive = f.archive.clone();
        until("the archive to hold the six", || {
            archive.count_blocking().unwrap() == 6
        })
        .await;
        let pruner = Pruner::new(
            f.node.clone(),
            f.order.clone(),
            f.exec.clone(),
            Some(f.archive.clone()),
        );
        let r = pruner.pass(upto, 256).unwrap();
        assert_eq!((r.checkpoints, r.pruned, r.deferred), (0, 6, 1));
        assert_eq!(f.node.store().len().unwrap(), 1);
        let state = f.node.store().prune_state().unwrap();
        assert_eq!(state.deferred, vec![(unheld.id(), state.deferred[0].1)]);
        // Nothing more to do: a second pass changes nothing.
        let r = pruner.pass(upto, 256).unwrap();
        assert_eq!((r.pruned, r.deferred), (0, 1));

        // GetTx answers every pruned tx from the archive with its stripe's receipts, body
        // intact.
        for t in &txs {
            let rec = f.node.get(t.id()).await.unwrap().unwrap();
            assert_eq!(rec.tx.as_ref(), Some(t), "{}", rec.source);
            assert_eq!(rec.source, "archive");
            assert!(
                !rec.receipts.is_empty(),
                "a held tx comes with its receipts"
            );
            assert_eq!(rec.state, TxState::Held);
        }
        // Replay protection stands: the same tx again is a duplicate (answered Held), the
        // same (sender, nonce) in another tx is refused.
        assert_eq!(
            f.node.submit(txs[0].clone()).await.unwrap().state,
            TxState::Held
        );
        let mut other = signed(&alice, 0);
        other.tx.amount = 11;
        let other = pqc::sign_tx(other.tx, &alice);
        assert_eq!(
            f.node.submit(other).await.unwrap_err().code,
            RejectCode::NonceReused
        );
        assert_eq!(f.node.store().len().unwrap(), 1);
    }

    #[test]
    fn only_checkpoints_executed_long_enough_ago_are_released() {
        let t0 = Instant::now();
        let d = Duration::from_secs(10);
        let mut a = Aged::default();
        assert_eq!(a.observe(t0, 3, d), 0);
        assert_eq!(a.observe(t0 + Duration::from_secs(5), 7, d), 0);
        assert_eq!(a.observe(t0 + Duration::from_secs(10), 9, d), 3);
        assert_eq!(a.observe(t0 + Duration::from_secs(15), 9, d), 7);
        assert_eq!(a.observe(t0 + Duration::from_secs(30), 12, d), 9);
        assert!(a.samples.len() <= 2, "{:?}", a.samples);
        // No delay: what is executed now.
        let mut b = Aged::default();
        assert_eq!(b.observe(t0, 4, Duration::ZERO), 4);
    }
}

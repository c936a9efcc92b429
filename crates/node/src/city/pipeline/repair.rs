//! Repair: re-creating lost shards from k others and placing them on other live nodes,
//! either for one stripe on demand (silent or corrupt holders) or for every stripe a
//! departed node held; both carry out their plan with one `apply_plan`.
//!
//! Repair keeps Held's promise of n distinct holders: a re-created shard never goes to a
//! node that holds another shard of the stripe, and a stripe recorded with two shards on one
//! node (by an older version) has the extra shards re-created on other nodes ("spread out").
//! When no distinct node takes a shard, the stripe stays under-placed and the error says so.

use super::put::{Taken, zones_suffice};
use super::restore::live_holders;
use super::stripe_index::StripeRecord;
use super::{Pipeline, PipelineError, RepairReport, TransportError, perr};
use dag_core::{NodeId, NodeInfo, SignedReceipt, TxId};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::collections::{BTreeMap, BTreeSet};
use storage::{LiveNode, StripeManifest, plan_rereplication};

impl Pipeline {
    /// Repairs the stripe holding tx `id` now: every placed shard whose holder is not live,
    /// does not answer within `call_timeout`, or returns a shard failing the manifest's
    /// check is re-created from k good ones and placed on another live node (receipt
    /// verified, manifest and receipts updated). Returns the shards placed (0 if the stripe
    /// was whole).
    pub async fn repair_stripe_of(&self, id: TxId) -> std::result::Result<usize, PipelineError> {
        let (_, mut rec) = self.located_record(&id)?;
        let spread = spread_colocated(&mut rec.manifest);
        let live = self.directory.live_lights();
        let by_id: BTreeMap<NodeId, NodeInfo> =
            live.iter().map(|n| (n.node_id, n.clone())).collect();
        // Probe every live holder: a silent or corrupt one is treated as gone.
        let layout = rec.manifest.layout.clone();
        let mut probes = FuturesUnordered::new();
        for (i, node) in live_holders(&rec.manifest, &by_id) {
            let node = node.clone();
            let sid = layout.stripe_id;
            probes.push(async move {
                let got = self.get_shard_within_deadline(&node, sid, i).await;
                (node.node_id, got)
            });
        }
        // A holder that lost or corrupted its shard is re-planned; one that does not answer
        // is also left out of the targets (one that answers may take its shard back: a put
        // replaces a corrupt copy, and a node restarted empty has room).
        let mut lost_here = BTreeSet::new();
        let mut silent = BTreeSet::new();
        while let Some((node, got)) = probes.next().await {
            match got {
                Ok(s) if layout.check_shard(&s).is_ok() => {}
                Ok(_) | Err(TransportError::NotHeld { .. }) => {
                    lost_here.insert(node);
                }
                Err(_) => {
                    lost_here.insert(node);
                    silent.insert(node);
                }
            }
        }
        let live_nodes: Vec<LiveNode> = live
            .iter()
            .filter(|n| !lost_here.contains(&n.node_id))
            .map(LiveNode::from)
            .collect();
        let departed = lost_here.iter().next().copied().unwrap_or_default();
        let plan = plan_rereplication(&rec.manifest, &live_nodes, &departed).map_err(perr)?;
        if plan.is_empty() {
            return Ok(0);
        }
        if spread > 0 {
            metrics::counter!("citychain_colocated_spread_total").increment(spread as u64);
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
    pub(super) async fn apply_plan(
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
        let n = usize::from(layout.n());
        let live_list: Vec<NodeInfo> = live.values().cloned().collect();
        let strict_zones = zones_suffice(&live_list, n);
        let kept: Vec<&NodeInfo> = keep.iter().filter_map(|id| live.get(id)).collect();
        let taken = parking_lot::Mutex::new(Taken::new(&kept, strict_zones));
        // Targets: live nodes without a shard of the stripe that are not cooling down
        // after a refusal, best first.
        let shard_bytes = rebuilt.first().map_or(0, |s| s.encoded_len() as u64);
        let usable: BTreeSet<NodeId> = self
            .usable_holders(shard_bytes)
            .0
            .into_iter()
            .map(|n| n.node_id)
            .collect();
        let others: Vec<NodeInfo> = self.directory.rank(
            &layout.stripe_id,
            live.values()
                .filter(|n| !keep.contains(&n.node_id) && usable.contains(&n.node_id))
                .cloned()
                .collect(),
            false,
        );
        let mut new_manifest = manifest.clone();
        let mut new_receipts: Vec<SignedReceipt> = receipts
            .into_iter()
            .filter(|r| !plan.lost.contains(&r.receipt.shard_index))
            .collect();
        let mut placed = 0;
        let mut failures = Vec::new();
        for p in &plan.placements {
            let Some(shard) = rebuilt.iter().find(|s| s.index() == p.index) else {
                continue;
            };
            let mut cands: Vec<NodeInfo> = live
                .get(&p.target)
                .filter(|_| !p.colocated)
                .cloned()
                .into_iter()
                .collect();
            cands.extend(others.iter().filter(|n| n.node_id != p.target).cloned());
            match self.place_shard(&layout, shard, &cands, &taken).await {
                Ok((r, holder)) => {
                    new_manifest.set_holder(p.index, holder).map_err(perr)?;
                    new_receipts.push(r);
                    placed += 1;
                }
                Err(e) => failures.push(format!("shard {}: {e}", p.index)),
            }
        }
        new_receipts.sort_by_key(|r| r.receipt.shard_index);
        let rec = StripeRecord {
            manifest: new_manifest,
            receipts: new_receipts,
        };
        // What was placed is recorded even if another shard found no distinct holder.
        self.write_record(&layout.stripe_id, &rec)?;
        if !failures.is_empty() {
            return Err(PipelineError::NoRoom {
                usable: others.len(),
                needed: plan.placements.len(),
                reason: format!(
                    "stripe {} stays under-placed: {}",
                    layout.stripe_id.short(),
                    failures.join("; ")
                ),
            });
        }
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
        for (mut manifest, receipts) in self.manifests()? {
            spread_colocated(&mut manifest);
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

/// Marks every shard beyond the first on the same holder as unplaced, so the planner
/// re-creates it on another node; returns how many were marked.
fn spread_colocated(manifest: &mut StripeManifest) -> usize {
    let mut seen = BTreeSet::new();
    let mut marked = 0;
    for h in manifest.holders.iter_mut() {
        if let Some(id) = *h
            && !seen.insert(id)
        {
            *h = None;
            marked += 1;
        }
    }
    marked
}

#[cfg(test)]
mod tests {
    use crate::city::pipeline::PipelineConfig;
    use crate::city::pipeline::PipelineError;
    use crate::city::pipeline::test_utils::{fixture_for_test, hold_all_for_test, txs_for_test};
    use dag_core::TxId;
    use std::collections::BTreeSet;
    use storage::verify_receipt;

    #[tokio::test]
    async fn repair_stripe_of_replaces_silent_and_corrupt_holders() {
        let f = fixture_for_test(7, PipelineConfig::default());
        let txs = txs_for_test(4);
        let held = hold_all_for_test(&f.pipeline, &txs).await;
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
        // A shard corrupted on disk: the only non-holder left is the dead node, so the
        // good shard goes back to the holder that corrupted it (a put replaces a corrupt
        // copy), never to a node that holds another shard of the stripe.
        f.corrupt_shard_for_test(&after.receipts[1]);
        assert_eq!(f.pipeline.repair_stripe_of(id).await.unwrap(), 1);
        let again = f.pipeline.held(&id).unwrap().unwrap();
        assert!(!again.colocated);
        assert_eq!(again.receipts.len(), 6);
        assert!(again.receipts.iter().all(|r| r.receipt.holder != dead));
        assert_eq!(
            f.pipeline.repair_stripe_of(id).await.unwrap(),
            0,
            "whole again"
        );
        // Two holders silent, one spare that is dead too: no distinct node answers, so the
        // stripe stays under-placed with a typed error (never colocated).
        let h = again.receipts[2].receipt.holder;
        f.transport.node(&h).unwrap().set_alive(false);
        let err = f.pipeline.repair_stripe_of(id).await.unwrap_err();
        assert!(matches!(err, PipelineError::NoRoom { .. }), "{err}");
        assert!(!f.pipeline.held(&id).unwrap().unwrap().colocated);
        assert_eq!(f.pipeline.restore(id).await.unwrap().tx, *txs[0].signed());
        assert!(matches!(
            f.pipeline.repair_stripe_of(TxId::from_bytes([1; 32])).await,
            Err(PipelineError::UnknownTx(_))
        ));
    }

    #[tokio::test]
    async fn rereplication_returns_every_stripe_to_n_holders() {
        let f = fixture_for_test(9, PipelineConfig::default());
        let txs = txs_for_test(30);
        let held = hold_all_for_test(&f.pipeline, &txs).await;
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

    #[tokio::test]
    async fn repair_spreads_a_colocated_stripe_onto_distinct_holders() {
        let f = fixture_for_test(7, PipelineConfig::default());
        let txs = txs_for_test(2);
        hold_all_for_test(&f.pipeline, &txs).await;
        let id = txs[0].id();
        // Make the stripe colocated, as an older version did: shard 1 also on shard 0's node.
        let (_, mut rec) = f.pipeline.located_record(&id).unwrap();
        let h0 = rec.manifest.holders[0].unwrap();
        let h1 = rec.manifest.holders[1].unwrap();
        let sid = rec.manifest.stripe_id();
        let shard1 = f
            .transport
            .node(&h1)
            .unwrap()
            .store
            .get(&sid, 1)
            .unwrap()
            .unwrap();
        let n0 = f.transport.node(&h0).unwrap();
        n0.store.put(&shard1).unwrap();
        let r = storage::issue_receipt(&shard1.header, &n0.key, 1_767_225_600_000);
        rec.manifest.set_holder(1, h0).unwrap();
        rec.receipts.retain(|x| x.receipt.shard_index != 1);
        rec.receipts.push(r);
        f.pipeline.write_record(&sid, &rec).unwrap();
        assert!(f.pipeline.held(&id).unwrap().unwrap().colocated);
        let h = f.pipeline.placement_health().unwrap();
        assert_eq!((h.stripes, h.colocated, h.underplaced), (1, 1, 1));
        // Repair re-creates the extra shard on a node without one.
        assert_eq!(f.pipeline.repair_stripe_of(id).await.unwrap(), 1);
        let after = f.pipeline.held(&id).unwrap().unwrap();
        assert!(!after.colocated);
        let holders: BTreeSet<_> = after.receipts.iter().map(|r| r.receipt.holder).collect();
        assert_eq!(holders.len(), 6);
        for r in after.receipts.iter() {
            verify_receipt(&rec.manifest.layout, r.clone(), &pqc::MlDsa87).unwrap();
        }
        assert_eq!(f.pipeline.restore(id).await.unwrap().tx, *txs[0].signed());
        assert_eq!(
            f.pipeline.placement_health().unwrap(),
            crate::city::pipeline::PlacementHealth {
                stripes: 1,
                ..Default::default()
            }
        );
        // Two holders leave the live view: exactly k left, one loss from unrecoverable.
        for r in after.receipts.iter().take(2) {
            f.dir.remove(&r.receipt.holder);
        }
        let h = f.pipeline.placement_health().unwrap();
        assert_eq!((h.underplaced, h.one_loss_from_unrecoverable), (1, 1));
    }
}

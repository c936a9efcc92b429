//! Restoring from shards: a tx, or every tx of a stripe, from any k good shards fetched in
//! parallel from the stripe's live holders; receipts and signatures verified.

use super::{Pipeline, PipelineError, Restored, TransportError, perr};
use dag_core::{NodeId, NodeInfo, SignedTx, StripeId, TxId};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::collections::BTreeMap;
use storage::{Shard, StripeManifest, tx_at, verify_receipt};

/// The placed shards of `manifest` whose holder is in `live`, as (index, holder).
pub(super) fn live_holders<'a>(
    manifest: &'a StripeManifest,
    live: &'a BTreeMap<NodeId, NodeInfo>,
) -> impl Iterator<Item = (u16, &'a NodeInfo)> + 'a {
    manifest
        .holders
        .iter()
        .enumerate()
        .filter_map(move |(i, h)| {
            let (Some(h), Ok(i)) = (h, u16::try_from(i)) else {
                return None;
            };
            live.get(h).map(|node| (i, node))
        })
}

impl Pipeline {
    /// Restores a tx from any k shards of its stripe: receipts verified, every shard checked
    /// against the manifest, the tx's signature verified.
    pub async fn restore(&self, id: TxId) -> std::result::Result<Restored, PipelineError> {
        let (loc, rec) = self.located_record(&id)?;
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

    /// Restores every tx of a stripe placed by *another* representative (no manifest
    /// here): asks every live light node for each shard index of this city's erasure
    /// layout, keeps shards that pass their own hash check and name `stripe`, and decodes
    /// from any k whose headers agree; the decoded bytes must hash to `stripe` and every
    /// tx's signature must verify. The execution feed's last tier.
    pub async fn restore_foreign_stripe(
        &self,
        stripe: StripeId,
    ) -> std::result::Result<Vec<SignedTx>, PipelineError> {
        let n = self.cfg.erasure.n();
        let mut calls = FuturesUnordered::new();
        for node in self.directory.live_lights() {
            for i in 0..n {
                let node = node.clone();
                calls.push(async move { self.get_shard_within_deadline(&node, stripe, i).await });
            }
        }
        let mut good: BTreeMap<u16, Shard> = BTreeMap::new();
        while let Some(r) = calls.next().await {
            let Ok(shard) = r else { continue };
            if shard.header.stripe_id != stripe || shard.check().is_err() {
                continue;
            }
            let k = usize::from(shard.header.k);
            good.entry(shard.header.index).or_insert(shard);
            if good.len() >= k {
                break;
            }
        }
        let shards: Vec<Shard> = good.into_values().collect();
        self.on_pool(move || -> std::result::Result<Vec<SignedTx>, String> {
            let bytes = storage::decode(stripe, &shards).map_err(|e| e.to_string())?;
            let txs = storage::split_micro_batch(&bytes).map_err(|e| e.to_string())?;
            txs.iter()
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
    pub(super) async fn fetch_k(
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
        for (i, node) in live_holders(manifest, &live) {
            if skip.contains(&i) {
                continue;
            }
            let sid = layout.stripe_id;
            calls.push(self.get_shard_within_deadline(node, sid, i));
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

    /// Fetches shard `index` of `stripe` from `node` within the call deadline (not yet
    /// checked).
    pub(super) async fn get_shard_within_deadline(
        &self,
        node: &NodeInfo,
        stripe: StripeId,
        index: u16,
    ) -> std::result::Result<Shard, TransportError> {
        let timeout = self.cfg.call_timeout;
        let ms = timeout.as_millis() as u64;
        // Connection set-up (a cold TLS handshake) has its own bound, not the get's.
        self.transport.connect(node).await?;
        match tokio::time::timeout(timeout, self.transport.get_shard(node, stripe, index)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                node: node.node_id.short(),
                ms,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::city::pipeline::PipelineConfig;
    use crate::city::pipeline::test_utils::{fixture_for_test, hold_all_for_test, txs_for_test};

    #[tokio::test]
    async fn corrupt_shard_is_never_used() {
        let f = fixture_for_test(6, PipelineConfig::default());
        let txs = txs_for_test(3);
        let held = hold_all_for_test(&f.pipeline, &txs).await;
        let h = held[0].as_ref().unwrap();
        // Corrupt one shard on disk and kill another holder: 4 good remain, restore works
        // and never returns the corrupt one.
        f.corrupt_shard_for_test(&h.receipts[0]);
        f.transport
            .node(&h.receipts[1].receipt.holder)
            .unwrap()
            .set_alive(false);
        let r = f.pipeline.restore(txs[1].id()).await.unwrap();
        assert_eq!(r.tx, *txs[1].signed());
    }
}

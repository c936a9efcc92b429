//! The stripe index in redb: one durable record per stripe (manifest and holders' receipts)
//! and each tx's location in its stripe. A tx is Held once its stripe's record is written.
//! Each stripe's manifest is also kept alone (`stripe_manifests`, a few hundred bytes,
//! written in the same transaction as the record), so the periodic placement gauges read
//! manifests without the ~44 KB of receipts per stripe; a file from before that table is
//! filled in once at open.

use super::{HeldTx, Pipeline, PipelineError, perr};
use crate::Result;
use dag_core::{NodeId, SignedReceipt, StripeId, TxId};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeSet;
use std::path::Path;
use storage::{StripeLayout, StripeManifest, TxLocation};

const STRIPES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("stripes");
const TXLOC: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("tx_locations");
/// stripe id → the manifest alone (the record's first field).
const MANIFESTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("stripe_manifests");

/// A stripe's durable record: manifest and receipts.
#[derive(Debug, Clone)]
pub(super) struct StripeRecord {
    pub(super) manifest: StripeManifest,
    pub(super) receipts: Vec<SignedReceipt>,
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
    /// The manifest's bytes in an encoded record (its first field), receipts not decoded.
    fn manifest_bytes(b: &[u8]) -> std::result::Result<&[u8], String> {
        dag_core::Reader::new(b)
            .bytes_u32("manifest", 1 << 20)
            .map_err(|e| e.to_string())
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

/// Opens (or creates) the stripe index at `path` with its tables present, filling the
/// manifest table from the records when it lags them (a file from before that table).
pub(super) fn open(path: &Path) -> Result<Database> {
    let db = crate::runtime::open_db(path, |w| {
        w.open_table(STRIPES)?;
        w.open_table(TXLOC)?;
        w.open_table(MANIFESTS)?;
        Ok(())
    })?;
    backfill_manifests(&db).map_err(|e| crate::Error::Store {
        path: path.to_path_buf(),
        source: Box::new(redb::Error::Corrupted(e.to_string())),
    })?;
    Ok(db)
}

fn backfill_manifests(db: &Database) -> std::result::Result<(), PipelineError> {
    use redb::ReadableTableMetadata;
    {
        let r = db.begin_read().map_err(perr)?;
        let st = r.open_table(STRIPES).map_err(perr)?;
        let mt = r.open_table(MANIFESTS).map_err(perr)?;
        if mt.len().map_err(perr)? >= st.len().map_err(perr)? {
            return Ok(());
        }
    }
    let w = db.begin_write().map_err(perr)?;
    {
        let st = w.open_table(STRIPES).map_err(perr)?;
        let mut mt = w.open_table(MANIFESTS).map_err(perr)?;
        for item in st.iter().map_err(perr)? {
            let (k, v) = item.map_err(perr)?;
            let m = StripeRecord::manifest_bytes(v.value()).map_err(PipelineError::Storage)?;
            mt.insert(k.value(), m).map_err(perr)?;
        }
    }
    w.commit().map_err(perr)
}

impl Pipeline {
    pub(super) fn record(
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

    /// Where tx `id` sits and its stripe's record (`UnknownTx` if the tx is not indexed).
    pub(super) fn located_record(
        &self,
        id: &TxId,
    ) -> std::result::Result<(TxLocation, StripeRecord), PipelineError> {
        let loc = self
            .location(id)?
            .ok_or_else(|| PipelineError::UnknownTx(id.to_hex()))?;
        let rec = self.record(&loc.stripe_id)?.ok_or_else(|| {
            PipelineError::Storage(format!("stripe {} missing", loc.stripe_id.short()))
        })?;
        Ok((loc, rec))
    }

    /// Which of `ids` are held (a durable stripe record names them), in one read and
    /// without decoding the records.
    pub(crate) fn held_ids(&self, ids: &[TxId]) -> std::result::Result<Vec<bool>, PipelineError> {
        let r = self.db.begin_read().map_err(perr)?;
        let t = r.open_table(TXLOC).map_err(perr)?;
        ids.iter()
            .map(|id| Ok(t.get(id.as_bytes()).map_err(perr)?.is_some()))
            .collect()
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
            receipts: std::sync::Arc::new(rec.receipts),
        }))
    }

    /// The verified holders' receipts of a stripe this node placed (`None`: not placed here).
    pub fn stripe_receipts(
        &self,
        stripe: &StripeId,
    ) -> std::result::Result<Option<Vec<SignedReceipt>>, PipelineError> {
        Ok(self.record(stripe)?.map(|r| r.receipts))
    }

    /// Every stripe manifest, without receipts (for the placement gauges).
    pub(crate) fn manifests_only(&self) -> std::result::Result<Vec<StripeManifest>, PipelineError> {
        let r = self.db.begin_read().map_err(perr)?;
        let t = r.open_table(MANIFESTS).map_err(perr)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(perr)? {
            let (_, v) = item.map_err(perr)?;
            out.push(StripeManifest::decode(v.value()).map_err(perr)?);
        }
        Ok(out)
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

    /// Replaces a stripe's durable record (manifest and receipts) in one transaction.
    pub(super) fn write_record(
        &self,
        stripe: &StripeId,
        rec: &StripeRecord,
    ) -> std::result::Result<(), PipelineError> {
        let w = self.db.begin_write().map_err(perr)?;
        {
            let mut st = w.open_table(STRIPES).map_err(perr)?;
            st.insert(stripe.as_bytes(), rec.encode().as_slice())
                .map_err(perr)?;
            let mut mt = w.open_table(MANIFESTS).map_err(perr)?;
            mt.insert(stripe.as_bytes(), rec.manifest.encode().as_slice())
                .map_err(perr)?;
        }
        w.commit().map_err(perr)
    }

    /// Writes the stripe's record and its txs' locations in one transaction; the answer is
    /// the Held tx.
    pub(super) fn persist(
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
            let mut mt = w.open_table(MANIFESTS).map_err(perr)?;
            mt.insert(
                layout.stripe_id.as_bytes(),
                rec.manifest.encode().as_slice(),
            )
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
            receipts: std::sync::Arc::new(rs),
            colocated: distinct.len() < receipts.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::city::pipeline::PipelineConfig;
    use crate::city::pipeline::test_utils::{fixture_for_test, hold_all_for_test, txs_for_test};

    #[tokio::test]
    async fn manifests_are_kept_alone_and_filled_in_for_an_older_file() {
        let f = fixture_for_test(6, PipelineConfig::default());
        let txs = txs_for_test(3);
        hold_all_for_test(&f.pipeline, &txs).await;
        let full: Vec<StripeManifest> = f
            .pipeline
            .manifests()
            .unwrap()
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert!(!full.is_empty());
        assert_eq!(f.pipeline.manifests_only().unwrap(), full);
        // A file from before the manifest table: the table is empty until the next open.
        {
            let w = f.pipeline.db.begin_write().unwrap();
            w.delete_table(MANIFESTS).unwrap();
            w.open_table(MANIFESTS).unwrap();
            w.commit().unwrap();
        }
        assert!(f.pipeline.manifests_only().unwrap().is_empty());
        backfill_manifests(&f.pipeline.db).unwrap();
        assert_eq!(f.pipeline.manifests_only().unwrap(), full);
        // Filled in already: a second pass changes nothing.
        backfill_manifests(&f.pipeline.db).unwrap();
        assert_eq!(f.pipeline.manifests_only().unwrap(), full);
    }
}

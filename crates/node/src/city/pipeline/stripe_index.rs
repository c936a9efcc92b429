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
/// holder node id → its ML-DSA-87 public key (BLAKE3 of which is the id).
const HOLDER_KEYS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("holder_keys");

/// A stripe's durable record: manifest and receipts.
#[derive(Debug, Clone)]
pub(super) struct StripeRecord {
    pub(super) manifest: StripeManifest,
    pub(super) receipts: Vec<SignedReceipt>,
}

/// First four bytes of a record in the keyless layout (an impossible manifest length).
const KEYLESS_MARK: u32 = u32::MAX;
/// Version byte after [`KEYLESS_MARK`].
const KEYLESS_VERSION: u8 = 2;

impl StripeRecord {
    /// The keyless layout: `u32::MAX`, version 2, manifest (u32 length), then per receipt its
    /// statement (u16 length) and signature (u16 length). Holders' public keys (2.6 KB each,
    /// the same for every stripe a holder takes) live once in `holder_keys`.
    fn encode(&self) -> Vec<u8> {
        let mut w = dag_core::Writer::default();
        w.u32(KEYLESS_MARK).u8(KEYLESS_VERSION);
        w.bytes_u32(&self.manifest.encode());
        w.u16(self.receipts.len() as u16);
        for r in &self.receipts {
            w.bytes_u16(&r.receipt.encode()).bytes_u16(&r.signature);
        }
        w.finish()
    }

    /// The manifest's bytes in an encoded record, receipts not decoded.
    fn manifest_bytes(b: &[u8]) -> std::result::Result<&[u8], String> {
        let mut r = dag_core::Reader::new(b);
        if b.get(..4) == Some(&KEYLESS_MARK.to_le_bytes()[..]) {
            r.u32("mark").map_err(|e| e.to_string())?;
            r.u8("version").map_err(|e| e.to_string())?;
        }
        r.bytes_u32("manifest", 1 << 20).map_err(|e| e.to_string())
    }

    /// Decodes either layout; a keyless record gets each holder's public key from `key_of`.
    fn decode(
        b: &[u8],
        key_of: impl Fn(&NodeId) -> std::result::Result<Vec<u8>, String>,
    ) -> std::result::Result<Self, String> {
        let e = |e: dag_core::DecodeError| e.to_string();
        let mut r = dag_core::Reader::new(b);
        let keyless = b.get(..4) == Some(&KEYLESS_MARK.to_le_bytes()[..]);
        if keyless {
            r.u32("mark").map_err(e)?;
            let v = r.u8("version").map_err(e)?;
            if v != KEYLESS_VERSION {
                return Err(format!("unknown stripe record version {v}"));
            }
        }
        let m = r.bytes_u32("manifest", 1 << 20).map_err(e)?;
        let manifest = StripeManifest::decode(m).map_err(|e| e.to_string())?;
        let n = r.u16("receipts").map_err(e)?;
        let mut receipts = Vec::with_capacity(n as usize);
        for _ in 0..n {
            if keyless {
                let statement = r.bytes_u16("receipt", 1 << 12).map_err(e)?;
                let signature = r
                    .bytes_u16("signature", dag_core::MAX_SIGNATURE_LEN)
                    .map_err(e)?;
                // The statement with an empty key, to read the holder; then its key.
                let mut w = dag_core::Writer::default();
                w.raw(statement).bytes_u16(&[]).bytes_u16(signature);
                let mut sr = SignedReceipt::decode(&w.finish()).map_err(|e| e.to_string())?;
                sr.holder_public_key = key_of(&sr.receipt.holder)?;
                receipts.push(sr);
            } else {
                let rb = r.bytes_u32("receipt", 1 << 16).map_err(e)?;
                receipts.push(SignedReceipt::decode(rb).map_err(|e| e.to_string())?);
            }
        }
        r.finish().map_err(e)?;
        Ok(StripeRecord { manifest, receipts })
    }
}

/// A holder's public key from the key table.
fn holder_key(
    t: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    id: &NodeId,
) -> std::result::Result<Vec<u8>, String> {
    match t.get(id.as_bytes()).map_err(|e| e.to_string())? {
        Some(g) => Ok(g.value().to_vec()),
        None => Err(format!("public key of holder {} missing", id.short())),
    }
}

/// Stores the holders' public keys of `receipts` not stored yet.
fn put_holder_keys(
    t: &mut redb::Table<&'static [u8; 32], &'static [u8]>,
    receipts: &[SignedReceipt],
) -> std::result::Result<(), PipelineError> {
    for r in receipts {
        if t.get(r.receipt.holder.as_bytes()).map_err(perr)?.is_none() {
            t.insert(r.receipt.holder.as_bytes(), r.holder_public_key.as_slice())
                .map_err(perr)?;
        }
    }
    Ok(())
}

/// Opens (or creates) the stripe index at `path` with its tables present, filling the
/// manifest table from the records when it lags them (a file from before that table).
pub(super) fn open(path: &Path) -> Result<Database> {
    let db = crate::runtime::open_db(path, |w| {
        w.open_table(STRIPES)?;
        w.open_table(TXLOC)?;
        w.open_table(MANIFESTS)?;
        w.open_table(HOLDER_KEYS)?;
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
        let keys = r.open_table(HOLDER_KEYS).map_err(perr)?;
        match t.get(stripe.as_bytes()).map_err(perr)? {
            Some(v) => Ok(Some(
                StripeRecord::decode(v.value(), |id| holder_key(&keys, id))
                    .map_err(PipelineError::Storage)?,
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

    /// Calls `f` with every stripe manifest, without receipts, one at a time: what the
    /// placement gauges and the storage audit read, in memory independent of how many
    /// stripes there are.
    pub(crate) fn for_each_manifest(
        &self,
        mut f: impl FnMut(StripeManifest),
    ) -> std::result::Result<(), PipelineError> {
        let r = self.db.begin_read().map_err(perr)?;
        let t = r.open_table(MANIFESTS).map_err(perr)?;
        for item in t.iter().map_err(perr)? {
            let (_, v) = item.map_err(perr)?;
            f(StripeManifest::decode(v.value()).map_err(perr)?);
        }
        Ok(())
    }

    /// Every stripe manifest, without receipts.
    #[cfg(test)]
    pub(crate) fn manifests_only(&self) -> std::result::Result<Vec<StripeManifest>, PipelineError> {
        let mut out = Vec::new();
        self.for_each_manifest(|m| out.push(m))?;
        Ok(out)
    }

    /// Every stripe manifest (for audits and re-replication).
    pub fn manifests(
        &self,
    ) -> std::result::Result<Vec<(StripeManifest, Vec<SignedReceipt>)>, PipelineError> {
        let r = self.db.begin_read().map_err(perr)?;
        let t = r.open_table(STRIPES).map_err(perr)?;
        let keys = r.open_table(HOLDER_KEYS).map_err(perr)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(perr)? {
            let (_, v) = item.map_err(perr)?;
            let rec = StripeRecord::decode(v.value(), |id| holder_key(&keys, id))
                .map_err(PipelineError::Storage)?;
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
            put_holder_keys(&mut w.open_table(HOLDER_KEYS).map_err(perr)?, &rec.receipts)?;
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
            put_holder_keys(&mut w.open_table(HOLDER_KEYS).map_err(perr)?, &rec.receipts)?;
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

    fn raw_record(p: &Pipeline, stripe: &StripeId) -> Vec<u8> {
        let r = p.db.begin_read().unwrap();
        let t = r.open_table(STRIPES).unwrap();
        t.get(stripe.as_bytes()).unwrap().unwrap().value().to_vec()
    }

    fn put_raw(p: &Pipeline, stripe: &StripeId, bytes: &[u8]) {
        let w = p.db.begin_write().unwrap();
        w.open_table(STRIPES)
            .unwrap()
            .insert(stripe.as_bytes(), bytes)
            .unwrap();
        w.commit().unwrap();
    }

    #[tokio::test]
    async fn receipts_are_stored_without_keys_and_older_records_still_read() {
        let f = fixture_for_test(6, PipelineConfig::default());
        let txs = txs_for_test(2);
        hold_all_for_test(&f.pipeline, &txs).await;
        let (loc, rec) = f.pipeline.located_record(&txs[0].id()).unwrap();
        let sid = loc.stripe_id;
        let raw = raw_record(&f.pipeline, &sid);
        assert_eq!(&raw[..4], &[0xff; 4], "keyless layout");
        // Six keys of 2,592 bytes are not in the record, only once in the key table.
        let keys: usize = rec.receipts.iter().map(|r| r.holder_public_key.len()).sum();
        assert!(keys >= 6 * 2_000);
        let with_keys = {
            let mut w = dag_core::Writer::default();
            w.bytes_u32(&rec.manifest.encode());
            w.u16(rec.receipts.len() as u16);
            for r in &rec.receipts {
                w.bytes_u32(&r.encode());
            }
            w.finish()
        };
        assert!(raw.len() + keys <= with_keys.len());
        {
            let r = f.pipeline.db.begin_read().unwrap();
            let t = r.open_table(HOLDER_KEYS).unwrap();
            for sr in &rec.receipts {
                assert_eq!(
                    holder_key(&t, &sr.receipt.holder).unwrap(),
                    sr.holder_public_key
                );
            }
        }
        // Every receipt read back still verifies (key and signature).
        for sr in f
            .pipeline
            .held(&txs[0].id())
            .unwrap()
            .unwrap()
            .receipts
            .iter()
        {
            storage::verify_receipt(&rec.manifest.layout, sr.clone(), &pqc::MlDsa87).unwrap();
        }
        // A record in the older layout (keys inline) reads the same.
        put_raw(&f.pipeline, &sid, &with_keys);
        let back = f.pipeline.held(&txs[0].id()).unwrap().unwrap();
        assert_eq!(back.receipts.as_slice(), rec.receipts.as_slice());
        // A keyless record whose holder key is gone is a storage error, not a panic.
        put_raw(&f.pipeline, &sid, &raw);
        {
            let w = f.pipeline.db.begin_write().unwrap();
            w.open_table(HOLDER_KEYS)
                .unwrap()
                .remove(rec.receipts[0].receipt.holder.as_bytes())
                .unwrap();
            w.commit().unwrap();
        }
        assert!(matches!(
            f.pipeline.held(&txs[0].id()),
            Err(PipelineError::Storage(m)) if m.contains("missing")
        ));
    }
}

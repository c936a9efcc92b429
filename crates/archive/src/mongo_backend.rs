//! The MongoDB backend (feature `mongodb`).
//!
//! One collection, `dag_nodes` by default (the seeds' `transactions_raw` documents become
//! `dag_nodes` documents), one document per tx:
//!
//! ```text
//! { tx_id: Binary(32), parent_ids: [Binary(32)], payload: Binary(encrypted record),
//!   ts: Date, sender_tag: Binary(32), fp: Binary(32) }
//! ```
//!
//! `payload` is the encrypted record of the `record` module (the same bytes redb stores):
//! amount, parties, payload and signature appear only as ciphertexts beside their wrapped
//! data key. Indexes: unique on `tx_id`, TTL on `ts` (expire after the retention, updated
//! with `collMod` when the retention changes; a backstop, [`Archive::purge_expired`] applies
//! retention at the time passed in), and
//! `{sender_tag, ts}` for queries by sender. The client is created lazily, with the indexes,
//! on first use. A put is an upsert by `tx_id` with `$setOnInsert`, so an existing document
//! is never modified: a repeat is told apart from a conflict by the keyed fingerprint.
//!
//! Writes of a batch are separate upserts (MongoDB without a replica set has no
//! multi-document transactions); each document is written whole or not at all.

use crate::error::mongo_err;
use crate::record::StoredRecord;
use crate::{
    Archive, ArchiveConfig, ArchiveEntry, ArchiveKeys, ArchivedTx, DagNode, Error, PutOutcome,
    Result,
};
use dag_core::{AccountId, TxId};
use futures::TryStreamExt;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc, spec::BinarySubtype};
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, IndexModel};
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Where the MongoDB archive lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoConfig {
    /// Connection string, e.g. `mongodb://127.0.0.1:27017`.
    pub uri: String,
    /// Database name. Default `citychain`.
    pub database: String,
    /// Collection name. Default `dag_nodes`.
    pub collection: String,
}

impl MongoConfig {
    /// A configuration for `uri` with the default database and collection names.
    pub fn new(uri: impl Into<String>) -> Self {
        MongoConfig {
            uri: uri.into(),
            database: "citychain".into(),
            collection: "dag_nodes".into(),
        }
    }
}

struct Inner {
    mongo: MongoConfig,
    config: ArchiveConfig,
    keys: Arc<ArchiveKeys>,
    coll: OnceCell<Collection<Document>>,
}

/// The MongoDB archive. Cheap to clone; connects on first use.
#[derive(Clone)]
pub struct MongoArchive {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MongoArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoArchive")
            .field("database", &self.inner.mongo.database)
            .field("collection", &self.inner.mongo.collection)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn bin(bytes: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    })
}

/// The last millisecond of year 9999: the latest date every driver and server converts
/// (BSON allows more, but e.g. Python-based Mongo-wire servers reject a filter beyond it).
const MAX_DATE_MS: u64 = 253_402_300_799_999;

/// A BSON date for `ts`, clamped to [`MAX_DATE_MS`].
fn ms(ts: u64) -> DateTime {
    DateTime::from_millis(i64::try_from(ts.min(MAX_DATE_MS)).unwrap_or(i64::MAX))
}

/// The filter on `ts` for `range`: an end past [`MAX_DATE_MS`] is left open (every stored
/// date is at most that), so `0..u64::MAX` means "all".
fn ts_range(range: &std::ops::Range<u64>) -> Document {
    let mut d = doc! { "$gte": ms(range.start) };
    if range.end <= MAX_DATE_MS {
        d.insert("$lt", ms(range.end));
    }
    d
}

fn binary_field<'a>(d: &'a Document, field: &'static str, id: TxId) -> Result<&'a [u8]> {
    match d.get(field) {
        Some(Bson::Binary(b)) => Ok(&b.bytes),
        _ => Err(Error::CorruptRecord {
            tx_id: id,
            reason: format!("document field {field} missing or not binary"),
        }),
    }
}

impl MongoArchive {
    /// An archive on `mongo`, encrypting under `keys`. Does not connect yet.
    pub fn new(mongo: MongoConfig, keys: Arc<ArchiveKeys>, config: ArchiveConfig) -> Self {
        MongoArchive {
            inner: Arc::new(Inner {
                mongo,
                config,
                keys,
                coll: OnceCell::new(),
            }),
        }
    }

    /// The keys.
    pub fn keys(&self) -> &Arc<ArchiveKeys> {
        &self.inner.keys
    }

    /// The collection, connecting and creating the indexes on first use.
    async fn coll(&self) -> Result<&Collection<Document>> {
        self.inner
            .coll
            .get_or_try_init(|| async {
                let m = &self.inner.mongo;
                let client = Client::with_uri_str(&m.uri)
                    .await
                    .map_err(mongo_err("connect"))?;
                let coll = client
                    .database(&m.database)
                    .collection::<Document>(&m.collection);
                let indexes = vec![
                    IndexModel::builder()
                        .keys(doc! { "tx_id": 1 })
                        .options(IndexOptions::builder().unique(true).build())
                        .build(),
                    IndexModel::builder()
                        .keys(doc! { "sender_tag": 1, "ts": 1 })
                        .build(),
                ];
                coll.create_indexes(indexes)
                    .await
                    .map_err(mongo_err("create indexes"))?;
                let retention = self.inner.config.retention;
                let ttl = IndexModel::builder()
                    .keys(doc! { "ts": 1 })
                    .options(IndexOptions::builder().expire_after(retention).build())
                    .build();
                if let Err(e) = coll.create_index(ttl).await {
                    if !is_index_options_conflict(&e) {
                        return Err(mongo_err("create TTL index")(e));
                    }
                    // The retention changed since the index was made: update it in place.
                    let secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
                    client
                        .database(&m.database)
                        .run_command(doc! {
                            "collMod": &m.collection,
                            "index": { "keyPattern": { "ts": 1 }, "expireAfterSeconds": secs },
                        })
                        .await
                        .map_err(mongo_err("update TTL index"))?;
                }
                Ok::<_, Error>(coll)
            })
            .await
    }

    /// Drops the collection (tests).
    pub async fn drop_collection(&self) -> Result<()> {
        self.coll()
            .await?
            .drop()
            .await
            .map_err(mongo_err("drop collection"))
    }

    fn document(rec: &StoredRecord) -> Document {
        doc! {
            "tx_id": bin(rec.tx_id.as_bytes()),
            "parent_ids": rec.parent_ids.iter().map(|p| bin(p.as_bytes())).collect::<Vec<_>>(),
            "payload": bin(&rec.encode()),
            "ts": ms(rec.ts_ms),
            "sender_tag": bin(&rec.sender_tag),
            "fp": bin(&rec.fingerprint),
        }
    }

    async fn put_one(&self, coll: &Collection<Document>, rec: &StoredRecord) -> Result<PutOutcome> {
        let id = rec.tx_id;
        let filter = doc! { "tx_id": bin(id.as_bytes()) };
        let res = coll
            .update_one(filter.clone(), doc! { "$setOnInsert": Self::document(rec) })
            .upsert(true)
            .await;
        match res {
            Ok(r) if r.upserted_id.is_some() => return Ok(PutOutcome::Inserted),
            Ok(_) => {}
            // A concurrent upsert of the same id won the unique index: compare below.
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(mongo_err("upsert")(e)),
        }
        let existing = coll
            .find_one(filter)
            .await
            .map_err(mongo_err("find"))?
            .ok_or_else(|| Error::CorruptRecord {
                tx_id: id,
                reason: "upsert matched a document that is now gone".into(),
            })?;
        if binary_field(&existing, "fp", id)? == rec.fingerprint.as_slice() {
            Ok(PutOutcome::Unchanged)
        } else {
            Err(Error::Conflict { tx_id: id })
        }
    }

    async fn stored(&self, id: TxId) -> Result<Option<StoredRecord>> {
        let d = self
            .coll()
            .await?
            .find_one(doc! { "tx_id": bin(id.as_bytes()) })
            .await
            .map_err(mongo_err("find"))?;
        d.map(|d| StoredRecord::decode(id, binary_field(&d, "payload", id)?))
            .transpose()
    }

    async fn crypto<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ArchiveKeys) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let keys = self.inner.keys.clone();
        tokio::task::spawn_blocking(move || f(&keys))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }
}

fn error_code(e: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    error_code(e) == Some(11000)
}

/// IndexOptionsConflict (85) or IndexKeySpecsConflict (86).
fn is_index_options_conflict(e: &mongodb::error::Error) -> bool {
    matches!(error_code(e), Some(85 | 86))
}

impl Archive for MongoArchive {
    async fn put_batch(&self, entries: Vec<ArchiveEntry>) -> Result<Vec<Result<PutOutcome>>> {
        let sealed = self
            .crypto(move |keys| StoredRecord::seal_all(keys, &entries))
            .await?;
        let coll = self.coll().await?;
        let mut out = Vec::with_capacity(sealed.len());
        for rec in &sealed {
            match self.put_one(coll, rec).await {
                Err(e @ Error::Mongo { .. }) => return Err(e),
                other => out.push(other),
            }
        }
        Ok(out)
    }

    async fn get(&self, id: TxId) -> Result<Option<ArchivedTx>> {
        let Some(rec) = self.stored(id).await? else {
            return Ok(None);
        };
        self.crypto(move |keys| rec.open(keys)).await.map(Some)
    }

    async fn dag_node(&self, id: TxId) -> Result<Option<DagNode>> {
        Ok(self.stored(id).await?.map(|r| r.dag_node()))
    }

    async fn query_by_sender(
        &self,
        sender: AccountId,
        range: Range<u64>,
        limit: usize,
    ) -> Result<Vec<ArchivedTx>> {
        if range.start >= range.end || limit == 0 {
            return Ok(Vec::new());
        }
        let tag = self.inner.keys.sender_tag(&sender);
        let mut cursor = self
            .coll()
            .await?
            .find(doc! {
                "sender_tag": bin(&tag),
                "ts": ts_range(&range),
            })
            .sort(doc! { "ts": 1, "tx_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(mongo_err("find"))?;
        let mut recs = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(mongo_err("cursor"))? {
            let raw_id = binary_field(&d, "tx_id", TxId::default())?;
            let id = TxId::from_slice(raw_id).map_err(|e| Error::CorruptRecord {
                tx_id: TxId::default(),
                reason: format!("document tx_id: {e}"),
            })?;
            recs.push(StoredRecord::decode(id, binary_field(&d, "payload", id)?)?);
        }
        self.crypto(move |keys| {
            recs.iter()
                .map(|rec| {
                    let tx = rec.open(keys)?;
                    if tx.signed.tx.sender != sender {
                        return Err(Error::CorruptRecord {
                            tx_id: rec.tx_id,
                            reason: "sender index points at another sender's tx".into(),
                        });
                    }
                    Ok(tx)
                })
                .collect()
        })
        .await
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<u64> {
        let cutoff = self.inner.config.cutoff_ms(now_ms);
        let r = self
            .coll()
            .await?
            .delete_many(doc! { "ts": { "$lt": ms(cutoff) } })
            .await
            .map_err(mongo_err("delete"))?;
        Ok(r.deleted_count)
    }

    async fn count(&self) -> Result<u64> {
        self.coll()
            .await?
            .count_documents(doc! {})
            .await
            .map_err(mongo_err("count"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::record::tests::{keys, verified};
    use dag_core::Signer;

    #[test]
    fn documents_hold_no_plaintext_of_encrypted_fields() {
        let keys = keys();
        let payload = b"MONGO-PLAINTEXT-MARKER-0123456789".repeat(3);
        let v = verified(4242, &payload);
        let signed = v.signed().clone();
        let parent = TxId::from_bytes([9; 32]);
        let rec = StoredRecord::seal(
            &keys,
            &ArchiveEntry::new(v, 1_750_000_000_000).with_parents(vec![parent]),
        )
        .unwrap();
        let d = MongoArchive::document(&rec);
        let mut bytes = Vec::new();
        d.to_writer(&mut bytes).unwrap();
        let has = |n: &[u8]| bytes.windows(n.len()).any(|w| w == n);
        assert!(
            has(rec.tx_id.as_bytes()) && has(parent.as_bytes()),
            "scan sanity check"
        );
        assert!(!has(&payload[..16]), "payload");
        assert!(!has(&signed.tx.amount.to_le_bytes()), "amount");
        assert!(!has(signed.tx.sender.as_bytes()), "sender");
        assert!(!has(signed.tx.receiver.as_bytes()), "receiver");
        assert!(
            !has(&crate::record::tests::signer().public_key()[..32]),
            "public key"
        );
        assert!(!has(&signed.signature[..32]), "signature");
        // The payload field decodes back to the record.
        let back = StoredRecord::decode(rec.tx_id, binary_field(&d, "payload", rec.tx_id).unwrap())
            .unwrap();
        assert_eq!(back.open(&keys).unwrap().signed, signed);
        assert_eq!(
            d.get_datetime("ts").unwrap().timestamp_millis(),
            1_750_000_000_000
        );
    }
}

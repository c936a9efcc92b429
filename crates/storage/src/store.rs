//! [`ShardStore`]: a light node's local shard store on redb, content-addressed by
//! (stripe id, index), with a per-node quota.
//!
//! Every shard is checked before it is stored and again when it is read; a shard that fails
//! on read is reported as [`Error::CorruptOnDisk`] and never returned. The quota counts the
//! encoded bytes (header + data) of every stored shard; a put that would exceed it fails
//! with [`Error::OverQuota`] and writes nothing. Each put/delete is one durable redb
//! transaction (an fsync); calls block, so async callers use `spawn_blocking`.

use crate::shard::Shard;
use crate::{Error, Result};
use dag_core::StripeId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

/// Key: stripe id (32) ‖ index (u16 big endian, so a stripe's shards sort together).
const SHARDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("shards");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const USED: &str = "used_bytes";

fn key(stripe: &StripeId, index: u16) -> [u8; 34] {
    let mut k = [0u8; 34];
    k[..32].copy_from_slice(stripe.as_bytes());
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Configuration of a [`ShardStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most bytes (encoded shards) this node stores. Default 1 GiB.
    pub quota_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            quota_bytes: 1 << 30,
        }
    }
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The shard was stored.
    Stored,
    /// The same shard was already stored (puts are idempotent).
    AlreadyStored,
    /// A corrupt copy was on disk and was replaced by this good one.
    Repaired,
}

/// A node's shard store. Cheap to share behind an `Arc`; methods take `&self`.
pub struct ShardStore {
    db: Database,
    config: StoreConfig,
}

impl std::fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ShardStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Self> {
        let db = Database::create(path).map_err(|e| Error::db("open", e))?;
        Self::init(db, config)
    }

    /// A store in memory (tests, demos).
    pub fn in_memory(config: StoreConfig) -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| Error::db("open", e))?;
        Self::init(db, config)
    }

    fn init(db: Database, config: StoreConfig) -> Result<Self> {
        let tx = db.begin_write().map_err(|e| Error::db("init", e))?;
        {
            tx.open_table(SHARDS).map_err(|e| Error::db("init", e))?;
            tx.open_table(META).map_err(|e| Error::db("init", e))?;
        }
        tx.commit().map_err(|e| Error::db("init", e))?;
        Ok(ShardStore { db, config })
    }

    /// The configuration.
    pub fn config(&self) -> StoreConfig {
        self.config
    }

    /// Bytes in use (encoded shards).
    pub fn used_bytes(&self) -> Result<u64> {
        let tx = self.db.begin_read().map_err(|e| Error::db("read", e))?;
        let meta = tx.open_table(META).map_err(|e| Error::db("read", e))?;
        let used = meta.get(USED).map_err(|e| Error::db("read", e))?;
        Ok(used.map_or(0, |g| g.value()))
    }

    /// Bytes still free under the quota.
    pub fn free_bytes(&self) -> Result<u64> {
        Ok(self.config.quota_bytes.saturating_sub(self.used_bytes()?))
    }

    /// Stores a shard after checking it ([`Shard::check`]). Idempotent for the same shard;
    /// a different valid shard under the same (stripe, index) is [`Error::ShardConflict`];
    /// over quota is [`Error::OverQuota`]. On any error nothing is written.
    pub fn put(&self, shard: &Shard) -> Result<PutOutcome> {
        shard.check().map_err(|problem| Error::BadShard {
            stripe_id: Some(shard.stripe_id()),
            index: Some(shard.index()),
            problem,
        })?;
        let (sid, idx) = (shard.stripe_id(), shard.index());
        let k = key(&sid, idx);
        let bytes = shard.to_bytes();
        let op = |e| Error::db("put", e);
        let tx = self.db.begin_write().map_err(|e| Error::db("put", e))?;
        let outcome = {
            let mut table = tx.open_table(SHARDS).map_err(|e| Error::db("put", e))?;
            let mut meta = tx.open_table(META).map_err(|e| Error::db("put", e))?;
            let used = meta.get(USED).map_err(op)?.map_or(0, |g| g.value());
            let existing = table
                .get(k.as_slice())
                .map_err(op)?
                .map(|g| g.value().to_vec());
            let (outcome, freed) = match existing {
                Some(old) if old == bytes => return Ok(PutOutcome::AlreadyStored),
                Some(old) => match Shard::from_bytes(&old) {
                    Ok(s) if s.stripe_id() == sid && s.index() == idx => {
                        return Err(Error::ShardConflict {
                            stripe_id: sid,
                            index: idx,
                        });
                    }
                    _ => (PutOutcome::Repaired, old.len() as u64),
                },
                None => (PutOutcome::Stored, 0),
            };
            let needed = bytes.len() as u64;
            let after = used.saturating_sub(freed).saturating_add(needed);
            if after > self.config.quota_bytes {
                return Err(Error::OverQuota {
                    needed,
                    used,
                    quota: self.config.quota_bytes,
                });
            }
            table.insert(k.as_slice(), bytes.as_slice()).map_err(op)?;
            meta.insert(USED, after).map_err(op)?;
            outcome
        };
        tx.commit().map_err(|e| Error::db("put", e))?;
        Ok(outcome)
    }

    /// The shard (stripe, index), checked: `Ok(None)` if not held, `Err(CorruptOnDisk)` if
    /// the stored bytes fail any check (they are never returned).
    pub fn get(&self, stripe: &StripeId, index: u16) -> Result<Option<Shard>> {
        let op = |e| Error::db("get", e);
        let tx = self.db.begin_read().map_err(|e| Error::db("get", e))?;
        let table = tx.open_table(SHARDS).map_err(|e| Error::db("get", e))?;
        let Some(guard) = table.get(key(stripe, index).as_slice()).map_err(op)? else {
            return Ok(None);
        };
        let corrupt = |problem| Error::CorruptOnDisk {
            stripe_id: *stripe,
            index,
            problem,
        };
        let shard = Shard::from_bytes(guard.value()).map_err(|e| match e {
            Error::BadShard { problem, .. } => corrupt(problem),
            other => other,
        })?;
        if shard.stripe_id() != *stripe {
            return Err(corrupt(crate::ShardProblem::WrongStripe {
                got: shard.stripe_id(),
            }));
        }
        if shard.index() != index {
            return Err(corrupt(crate::ShardProblem::Inconsistent {
                field: "index",
            }));
        }
        Ok(Some(shard))
    }

    /// True if (stripe, index) is stored (not checked; use [`ShardStore::get`] to read).
    pub fn contains(&self, stripe: &StripeId, index: u16) -> Result<bool> {
        let op = |e| Error::db("contains", e);
        let tx = self.db.begin_read().map_err(|e| Error::db("contains", e))?;
        let table = tx
            .open_table(SHARDS)
            .map_err(|e| Error::db("contains", e))?;
        Ok(table
            .get(key(stripe, index).as_slice())
            .map_err(op)?
            .is_some())
    }

    /// Deletes one shard; true if it was stored.
    pub fn delete(&self, stripe: &StripeId, index: u16) -> Result<bool> {
        let op = |e| Error::db("delete", e);
        let tx = self.db.begin_write().map_err(|e| Error::db("delete", e))?;
        let removed = {
            let mut table = tx.open_table(SHARDS).map_err(|e| Error::db("delete", e))?;
            let mut meta = tx.open_table(META).map_err(|e| Error::db("delete", e))?;
            let len = table
                .remove(key(stripe, index).as_slice())
                .map_err(op)?
                .map(|g| g.value().len() as u64);
            if let Some(len) = len {
                let used = meta.get(USED).map_err(op)?.map_or(0, |g| g.value());
                meta.insert(USED, used.saturating_sub(len)).map_err(op)?;
            }
            len.is_some()
        };
        tx.commit().map_err(|e| Error::db("delete", e))?;
        Ok(removed)
    }

    /// The stripes with at least one stored shard, in id order.
    pub fn list_stripes(&self) -> Result<Vec<StripeId>> {
        let op = |e| Error::db("list", e);
        let tx = self.db.begin_read().map_err(|e| Error::db("list", e))?;
        let table = tx.open_table(SHARDS).map_err(|e| Error::db("list", e))?;
        let mut out: Vec<StripeId> = Vec::new();
        for item in table.iter().map_err(op)? {
            let (k, _) = item.map_err(op)?;
            let id = StripeId::from_slice(&k.value()[..32]).map_err(|source| Error::Decode {
                what: "store key",
                source,
            })?;
            if out.last() != Some(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The indexes of `stripe` stored here.
    pub fn list_shards(&self, stripe: &StripeId) -> Result<Vec<u16>> {
        let op = |e| Error::db("list", e);
        let tx = self.db.begin_read().map_err(|e| Error::db("list", e))?;
        let table = tx.open_table(SHARDS).map_err(|e| Error::db("list", e))?;
        let (lo, hi) = (key(stripe, 0), key(stripe, u16::MAX));
        let mut out = Vec::new();
        for item in table.range(lo.as_slice()..=hi.as_slice()).map_err(op)? {
            let (k, _) = item.map_err(op)?;
            let k = k.value();
            out.push(u16::from_be_bytes([k[32], k[33]]));
        }
        Ok(out)
    }

    /// Test hook: rewrites the stored bytes of (stripe, index) with `f`, bypassing every
    /// check, to simulate corruption on disk.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn corrupt_for_test(
        &self,
        stripe: &StripeId,
        index: u16,
        f: impl FnOnce(&mut Vec<u8>),
    ) -> Result<()> {
        let op = |e| Error::db("corrupt", e);
        let tx = self.db.begin_write().map_err(|e| Error::db("corrupt", e))?;
        {
            let mut table = tx.open_table(SHARDS).map_err(|e| Error::db("corrupt", e))?;
            let k = key(stripe, index);
            let mut bytes = table
                .get(k.as_slice())
                .map_err(op)?
                .map(|g| g.value().to_vec())
                .unwrap_or_default();
            f(&mut bytes);
            table.insert(k.as_slice(), bytes.as_slice()).map_err(op)?;
        }
        tx.commit().map_err(|e| Error::db("corrupt", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{ErasureConfig, ShardProblem};

    fn shards(n: usize) -> Vec<Shard> {
        ErasureConfig::default().encode(&vec![5u8; n]).unwrap()
    }

    #[test]
    fn put_get_delete_list() {
        let store = ShardStore::in_memory(StoreConfig::default()).unwrap();
        let s = shards(1000);
        assert_eq!(store.put(&s[0]).unwrap(), PutOutcome::Stored);
        assert_eq!(store.put(&s[0]).unwrap(), PutOutcome::AlreadyStored);
        store.put(&s[3]).unwrap();
        let used = store.used_bytes().unwrap();
        assert_eq!(used, (s[0].encoded_len() + s[3].encoded_len()) as u64);
        assert_eq!(store.get(&s[0].stripe_id(), 0).unwrap().unwrap(), s[0]);
        assert_eq!(store.get(&s[0].stripe_id(), 1).unwrap(), None);
        assert_eq!(store.list_stripes().unwrap(), vec![s[0].stripe_id()]);
        assert_eq!(store.list_shards(&s[0].stripe_id()).unwrap(), vec![0, 3]);
        assert!(store.delete(&s[0].stripe_id(), 0).unwrap());
        assert!(!store.delete(&s[0].stripe_id(), 0).unwrap());
        assert_eq!(store.used_bytes().unwrap(), s[3].encoded_len() as u64);
    }

    #[test]
    fn bad_shard_is_not_stored() {
        let store = ShardStore::in_memory(StoreConfig::default()).unwrap();
        let mut s = shards(100).remove(2);
        s.data[0] ^= 1;
        assert!(matches!(
            store.put(&s),
            Err(Error::BadShard {
                problem: ShardProblem::HashMismatch,
                ..
            })
        ));
        assert!(store.list_stripes().unwrap().is_empty());
        assert_eq!(store.used_bytes().unwrap(), 0);
    }

    #[test]
    fn over_quota_writes_nothing() {
        let s = shards(1000);
        let quota = (s[0].encoded_len() * 2) as u64;
        let store = ShardStore::in_memory(StoreConfig { quota_bytes: quota }).unwrap();
        store.put(&s[0]).unwrap();
        store.put(&s[1]).unwrap();
        let err = store.put(&s[2]).unwrap_err();
        assert!(matches!(err, Error::OverQuota { .. }), "{err}");
        assert!(!store.contains(&s[2].stripe_id(), 2).unwrap());
        assert_eq!(store.used_bytes().unwrap(), quota);
        assert_eq!(store.free_bytes().unwrap(), 0);
    }

    #[test]
    fn corrupt_on_disk_is_never_returned_and_can_be_replaced() {
        let store = ShardStore::in_memory(StoreConfig::default()).unwrap();
        let s = shards(300);
        let sid = s[1].stripe_id();
        store.put(&s[1]).unwrap();
        store
            .corrupt_for_test(&sid, 1, |b| *b.last_mut().unwrap() ^= 1)
            .unwrap();
        assert!(matches!(
            store.get(&sid, 1),
            Err(Error::CorruptOnDisk {
                index: 1,
                problem: ShardProblem::HashMismatch,
                ..
            })
        ));
        // a valid shard stored under the wrong key is also corrupt
        let other = s[2].to_bytes();
        store.corrupt_for_test(&sid, 1, |b| *b = other).unwrap();
        assert!(matches!(
            store.get(&sid, 1),
            Err(Error::CorruptOnDisk { .. })
        ));
        assert_eq!(store.put(&s[1]).unwrap(), PutOutcome::Repaired);
        assert_eq!(store.get(&sid, 1).unwrap().unwrap(), s[1]);
    }

    #[test]
    fn conflicting_shard_is_refused() {
        let store = ShardStore::in_memory(StoreConfig::default()).unwrap();
        let s = shards(300);
        store.put(&s[0]).unwrap();
        let mut forged = s[0].clone();
        forged.data[0] ^= 1;
        forged.header.shard_hash = dag_core::ShardHash(dag_core::Hash32::digest(&forged.data));
        assert!(matches!(
            store.put(&forged),
            Err(Error::ShardConflict { index: 0, .. })
        ));
        assert_eq!(store.get(&s[0].stripe_id(), 0).unwrap().unwrap(), s[0]);
    }
}

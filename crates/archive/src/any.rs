//! [`AnyArchive`]: the backends behind one type, for choosing one at run time.

use crate::{Archive, ArchiveEntry, ArchivedTx, DagNode, PutOutcome, RedbArchive, Result};
use dag_core::{AccountId, TxId};
use std::ops::Range;

/// One of the archive backends. Implements [`Archive`] by dispatch, so a node can pick the
/// backend from its configuration and still use the trait generically.
#[derive(Debug, Clone)]
pub enum AnyArchive {
    /// The embedded redb store.
    Redb(RedbArchive),
    /// The MongoDB store.
    #[cfg(feature = "mongodb")]
    Mongo(crate::MongoArchive),
}

impl From<RedbArchive> for AnyArchive {
    fn from(a: RedbArchive) -> Self {
        AnyArchive::Redb(a)
    }
}

#[cfg(feature = "mongodb")]
impl From<crate::MongoArchive> for AnyArchive {
    fn from(a: crate::MongoArchive) -> Self {
        AnyArchive::Mongo(a)
    }
}

macro_rules! dispatch {
    ($self:ident, $a:ident => $e:expr) => {
        match $self {
            AnyArchive::Redb($a) => $e,
            #[cfg(feature = "mongodb")]
            AnyArchive::Mongo($a) => $e,
        }
    };
}

impl Archive for AnyArchive {
    async fn put_batch(&self, entries: Vec<ArchiveEntry>) -> Result<Vec<Result<PutOutcome>>> {
        dispatch!(self, a => a.put_batch(entries).await)
    }
    async fn get(&self, id: TxId) -> Result<Option<ArchivedTx>> {
        dispatch!(self, a => a.get(id).await)
    }
    async fn dag_node(&self, id: TxId) -> Result<Option<DagNode>> {
        dispatch!(self, a => a.dag_node(id).await)
    }
    async fn query_by_sender(
        &self,
        sender: AccountId,
        range: Range<u64>,
        limit: usize,
    ) -> Result<Vec<ArchivedTx>> {
        dispatch!(self, a => a.query_by_sender(sender, range, limit).await)
    }
    async fn purge_expired(&self, now_ms: u64) -> Result<u64> {
        dispatch!(self, a => a.purge_expired(now_ms).await)
    }
    async fn count(&self) -> Result<u64> {
        dispatch!(self, a => a.count().await)
    }
}

//! Test double for scheduling tests of a running city node: in-memory light nodes behind a
//! gate (puts wait while it is closed, as on a stalled network) that record the order in
//! which stripes reached the light nodes.

use super::pipeline::{ShardTransport, TransportError};
use super::test_utils::MemoryTransport;
use async_trait::async_trait;
use dag_core::{NodeInfo, SignedReceipt, StripeId};
use parking_lot::Mutex;
use storage::Shard;
use tokio::sync::watch;

/// Light nodes whose puts wait while the gate is closed.
pub(crate) struct GatedTransport {
    pub(crate) inner: MemoryTransport,
    open: watch::Receiver<bool>,
    stripes: Mutex<Vec<StripeId>>,
}

impl GatedTransport {
    /// A transport behind `open` (puts pass while it reads true; fail once it is dropped).
    pub(crate) fn new(open: watch::Receiver<bool>) -> Self {
        GatedTransport {
            inner: MemoryTransport::default(),
            open,
            stripes: Mutex::new(Vec::new()),
        }
    }

    /// Stripes in the order their first shard passed the gate.
    pub(crate) fn stripe_order(&self) -> Vec<StripeId> {
        self.stripes.lock().clone()
    }
}

#[async_trait]
impl ShardTransport for GatedTransport {
    async fn put_shard(
        &self,
        node: &NodeInfo,
        shard: &Shard,
    ) -> std::result::Result<SignedReceipt, TransportError> {
        let mut open = self.open.clone();
        if open.wait_for(|o| *o).await.is_err() {
            return Err(TransportError::Unreachable {
                node: node.node_id.short(),
                reason: "network gone".into(),
            });
        }
        {
            let mut s = self.stripes.lock();
            if !s.contains(&shard.header.stripe_id) {
                s.push(shard.header.stripe_id);
            }
        }
        self.inner.put_shard(node, shard).await
    }

    async fn get_shard(
        &self,
        node: &NodeInfo,
        stripe: StripeId,
        index: u16,
    ) -> std::result::Result<Shard, TransportError> {
        self.inner.get_shard(node, stripe, index).await
    }

    async fn connect(&self, node: &NodeInfo) -> std::result::Result<(), TransportError> {
        self.inner.connect(node).await
    }
}

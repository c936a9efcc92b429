//! Faults the demo can inject, one per kind of check, so a test can show that each check
//! fails when the system misbehaves (a verdict that cannot fail proves nothing). They are
//! injected from outside the node code: a wrapping shard transport, a ghost heartbeat in
//! the presence store, a representative left down, a tampered proof.

use async_trait::async_trait;
use dag_core::{NodeId, NodeInfo, SignedReceipt, StripeId};
use node::{GrpcTransport, ShardTransport, TransportError};
use parking_lot::RwLock;
use std::collections::BTreeSet;
use std::sync::Arc;
use storage::Shard;

/// A fault injected into a demo run. `None` (the default) is the honest run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DemoFault {
    /// No fault.
    #[default]
    None,
    /// Once the load is in, a light node that stays up answers every GetShard with a
    /// corrupted shard (one flipped data byte): with m holders down, no stripe has k good
    /// shards left. Fails the check `restore with m holders offline`.
    CorruptShards,
    /// The crashed light node's id keeps heartbeating presence (a ghost), so the
    /// representatives never see every departure. Fails the check `departures`.
    GhostDeparture,
    /// The representative killed before the second phase is never restarted: it misses
    /// every round after the kill and never catches up. Fails the check `catch-up`.
    RepStaysDown,
    /// One checkpoint's recorded federation proof has a byte flipped before it is
    /// verified. Fails the check `inclusion proofs`.
    TamperedProof,
}

/// The gRPC shard transport, corrupting what the nodes in a settable set return.
#[derive(Default)]
pub(crate) struct CorruptingTransport {
    inner: GrpcTransport,
    bad: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl std::fmt::Debug for CorruptingTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorruptingTransport")
            .field("bad", &self.bad.read().len())
            .finish()
    }
}

impl CorruptingTransport {
    /// The set of nodes whose shards get corrupted (empty at first).
    pub(crate) fn bad(&self) -> Arc<RwLock<BTreeSet<NodeId>>> {
        self.bad.clone()
    }
}

#[async_trait]
impl ShardTransport for CorruptingTransport {
    async fn put_shard(
        &self,
        node: &NodeInfo,
        shard: &Shard,
    ) -> std::result::Result<SignedReceipt, TransportError> {
        self.inner.put_shard(node, shard).await
    }

    async fn get_shard(
        &self,
        node: &NodeInfo,
        stripe: StripeId,
        index: u16,
    ) -> std::result::Result<Shard, TransportError> {
        let mut shard = self.inner.get_shard(node, stripe, index).await?;
        if self.bad.read().contains(&node.node_id)
            && let Some(b) = shard.data.first_mut()
        {
            *b ^= 0x01;
        }
        Ok(shard)
    }

    async fn connect(&self, node: &NodeInfo) -> std::result::Result<(), TransportError> {
        self.inner.connect(node).await
    }
}

//! Test doubles beside the city's ports (behind `cfg(test)` or the `test-utils`
//! feature): a fixed [`StaticDirectory`] of light nodes and an in-memory
//! [`MemoryTransport`] whose nodes have real stores and keys.

use super::pipeline::{HolderDirectory, ShardTransport, TransportError};
use crate::{Error, Result};
use async_trait::async_trait;
use dag_core::{NodeId, NodeInfo, SignedReceipt, StripeId};
use std::collections::BTreeMap;
use std::sync::Arc;
use storage::Shard;

/// A fixed list of light nodes (for tests and for operators without presence).
#[derive(Debug, Default)]
pub struct StaticDirectory {
    nodes: parking_lot::RwLock<Vec<NodeInfo>>,
}

impl StaticDirectory {
    /// A directory of `nodes`.
    pub fn new(nodes: Vec<NodeInfo>) -> Self {
        StaticDirectory {
            nodes: parking_lot::RwLock::new(nodes),
        }
    }
    /// Removes a node (it left).
    pub fn remove(&self, id: &NodeId) {
        self.nodes.write().retain(|n| n.node_id != *id);
    }
    /// Adds a node.
    pub fn add(&self, n: NodeInfo) {
        self.nodes.write().push(n);
    }
}

impl HolderDirectory for StaticDirectory {
    fn live_lights(&self) -> Vec<NodeInfo> {
        self.nodes.read().clone()
    }
}

/// An in-memory [`ShardTransport`] of light nodes: the test double beside the trait. Each
/// node has a real [`storage::ShardStore`] (in memory) and a real ML-DSA-87 key, and can be
/// killed, revived, or made to forge receipts.
#[derive(Default)]
pub struct MemoryTransport {
    nodes: parking_lot::RwLock<BTreeMap<NodeId, Arc<MemoryLight>>>,
}

/// One in-memory light node.
pub struct MemoryLight {
    /// Its shard store.
    pub store: storage::ShardStore,
    /// Its key.
    pub key: pqc::Keypair,
    alive: std::sync::atomic::AtomicBool,
    forge: std::sync::atomic::AtomicBool,
}

impl MemoryLight {
    /// Kills (false) or revives (true) the node.
    pub fn set_alive(&self, alive: bool) {
        self.alive.store(alive, std::sync::atomic::Ordering::SeqCst);
    }
    /// Makes the node sign receipts for the wrong shard hash.
    pub fn set_forging(&self, forge: bool) {
        self.forge.store(forge, std::sync::atomic::Ordering::SeqCst);
    }
    fn check_alive(&self) -> std::result::Result<(), TransportError> {
        if self.alive.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err(TransportError::Unreachable {
                node: self.key.node_id().short(),
                reason: "connection refused".into(),
            })
        }
    }
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryTransport({} nodes)", self.nodes.read().len())
    }
}

impl MemoryTransport {
    /// Adds a light node with a fresh key; returns its info (zone = `zone`).
    pub fn add_node(&self, zone: &str) -> Result<NodeInfo> {
        let key = pqc::Keypair::generate();
        let info = NodeInfo {
            node_id: key.node_id(),
            role: dag_core::Role::Light,
            grpc_addr: format!("memory://{}", key.node_id().short()),
            city_id: "JP-13".into(),
            zone: zone.into(),
            lat: 35.68,
            lon: 139.69,
            free_capacity: 1 << 30,
            load: 0.0,
            version: env!("CARGO_PKG_VERSION").into(),
            session_start_ms: 0,
        };
        let store =
            storage::ShardStore::in_memory(storage::StoreConfig::default()).map_err(Error::from)?;
        self.nodes.write().insert(
            info.node_id,
            Arc::new(MemoryLight {
                store,
                key,
                alive: true.into(),
                forge: false.into(),
            }),
        );
        Ok(info)
    }

    /// The node with this id.
    pub fn node(&self, id: &NodeId) -> Option<Arc<MemoryLight>> {
        self.nodes.read().get(id).cloned()
    }

    fn get(&self, id: &NodeId) -> std::result::Result<Arc<MemoryLight>, TransportError> {
        self.node(id).ok_or_else(|| TransportError::Unreachable {
            node: id.short(),
            reason: "unknown node".into(),
        })
    }
}

#[async_trait]
impl ShardTransport for MemoryTransport {
    async fn put_shard(
        &self,
        node: &NodeInfo,
        shard: &Shard,
    ) -> std::result::Result<SignedReceipt, TransportError> {
        let n = self.get(&node.node_id)?;
        n.check_alive()?;
        n.store.put(shard).map_err(|e| TransportError::Refused {
            node: node.node_id.short(),
            reason: e.to_string(),
        })?;
        let mut header = shard.header;
        if n.forge.load(std::sync::atomic::Ordering::SeqCst) {
            header.shard_hash = dag_core::ShardHash::from_bytes([0xEE; 32]);
        }
        Ok(storage::issue_receipt(&header, &n.key, 1_767_225_600_000))
    }

    async fn get_shard(
        &self,
        node: &NodeInfo,
        stripe: StripeId,
        index: u16,
    ) -> std::result::Result<Shard, TransportError> {
        let n = self.get(&node.node_id)?;
        n.check_alive()?;
        match n.store.get(&stripe, index) {
            Ok(Some(s)) => Ok(s),
            Ok(None) | Err(_) => Err(TransportError::NotHeld {
                node: node.node_id.short(),
                stripe: stripe.short(),
                index,
            }),
        }
    }
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` after 30 s (a generous
/// deadline for a loaded machine, not a timing assertion).
#[cfg(test)]
pub(crate) async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..3_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

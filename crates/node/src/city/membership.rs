//! Membership: every role logs in to presence and heartbeats through node-list; the city
//! learns its light nodes from the live view and re-replicates when one leaves.

use super::pipeline::{HolderDirectory, Pipeline};
use dag_core::{NodeInfo, Role};
use node_list::{NodeChange, NodeRegistry};
use std::sync::Weak;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The light nodes of a node-list view, as a [`HolderDirectory`].
#[derive(Debug, Clone)]
pub struct NodeListDirectory {
    registry: NodeRegistry,
    city: Option<String>,
}

impl NodeListDirectory {
    /// Light nodes of `registry`; with `city`, only those of that city.
    pub fn new(registry: NodeRegistry, city: Option<String>) -> Self {
        NodeListDirectory { registry, city }
    }
}

impl HolderDirectory for NodeListDirectory {
    fn live_lights(&self) -> Vec<NodeInfo> {
        let mut v = self.registry.by_role(Role::Light);
        if let Some(c) = &self.city {
            v.retain(|n| &n.city_id == c);
        }
        v
    }
}

/// Watches the view for departures and re-replicates the departed node's shards. Stops
/// when the pipeline is dropped or the view's change stream ends.
pub fn spawn_rereplicator(
    registry: &NodeRegistry,
    pipeline: Weak<Pipeline>,
    settle: Duration,
) -> JoinHandle<()> {
    let mut changes = registry.subscribe();
    tokio::spawn(async move {
        loop {
            let change = match changes.recv().await {
                Ok(c) => c,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "membership changes lagged; a later sweep repairs"
                    );
                    continue;
                }
                Err(_) => return,
            };
            let NodeChange::Left { node_id, reason } = change else {
                continue;
            };
            // Let the view settle (several nodes often leave together).
            tokio::time::sleep(settle).await;
            let Some(p) = pipeline.upgrade() else { return };
            tracing::info!(node = %node_id.short(), ?reason, "light node left; re-replicating its shards");
            match p.rereplicate(node_id).await {
                Ok(r) => tracing::info!(
                    node = %node_id.short(),
                    stripes = r.stripes_affected,
                    placed = r.shards_placed,
                    failures = r.failures.len(),
                    "re-replication done"
                ),
                Err(e) => {
                    tracing::error!(node = %node_id.short(), error = %e, "re-replication failed")
                }
            }
        }
    })
}

/// The [`NodeInfo`] a node publishes.
#[allow(clippy::too_many_arguments)]
pub fn node_info(
    node_id: dag_core::NodeId,
    role: Role,
    grpc_addr: String,
    city_id: &str,
    zone: &str,
    (lat, lon): (f64, f64),
    free_capacity: u64,
    now_ms: u64,
) -> NodeInfo {
    NodeInfo {
        node_id,
        role,
        grpc_addr,
        city_id: city_id.to_string(),
        zone: zone.to_string(),
        lat,
        lon,
        free_capacity,
        load: 0.0,
        version: env!("CARGO_PKG_VERSION").to_string(),
        session_start_ms: now_ms,
    }
}

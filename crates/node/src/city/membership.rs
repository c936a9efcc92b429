//! Membership: every role logs in to presence and heartbeats through node-list; the city
//! learns its light nodes from the live view (kept by presence and gossip) and
//! re-replicates when one is confirmed gone.

use super::pipeline::{HolderDirectory, Pipeline};
use dag_core::{NodeId, NodeInfo, Role};
use node_list::{NodeChange, NodeRegistry};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
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
///
/// Only confirmed departures count ([`node_list::LeftReason::is_confirmed`]: presence said
/// so, or gossip confirmed it down) — never a node this view merely lost sight of while
/// presence was silent. Hysteresis: a departure is acted on only if the node is still gone
/// after a grace period, which doubles (up to 64 × `settle`) each time that node came back
/// within it, so a flapping node does not cause repeated repairs.
pub fn spawn_rereplicator(
    registry: &NodeRegistry,
    pipeline: Weak<Pipeline>,
    settle: Duration,
) -> JoinHandle<()> {
    let mut changes = registry.subscribe();
    let view = registry.clone();
    tokio::spawn(async move {
        let flaps: Arc<Mutex<HashMap<NodeId, u32>>> = Arc::default();
        let mut waiting = tokio::task::JoinSet::new();
        // Repairs run one at a time (as before), only the grace periods overlap.
        let one_at_a_time = Arc::new(tokio::sync::Mutex::new(()));
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                Some(done) = waiting.join_next(), if !waiting.is_empty() => {
                    if let Err(e) = done && e.is_panic() {
                        tracing::error!(error = %e, "re-replication task panicked");
                    }
                    continue;
                }
            };
            let change = match change {
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
            if !reason.is_confirmed() {
                metrics::counter!("city_rereplications_skipped_total", "why" => "unconfirmed")
                    .increment(1);
                tracing::info!(node = %node_id.short(), ?reason,
                    "node out of sight but not confirmed gone; not re-replicating");
                continue;
            }
            let flapped = flaps.lock().get(&node_id).copied().unwrap_or(0);
            let grace = settle * 2u32.pow(flapped.min(6));
            let (pipeline, view, flaps) = (pipeline.clone(), view.clone(), flaps.clone());
            let one_at_a_time = one_at_a_time.clone();
            waiting.spawn(async move {
                // Let the view settle (several nodes often leave together, and a node that
                // comes straight back is not worth a repair).
                tokio::time::sleep(grace).await;
                if view.get(node_id).is_some() {
                    *flaps.lock().entry(node_id).or_insert(0) += 1;
                    metrics::counter!("city_rereplications_skipped_total", "why" => "returned")
                        .increment(1);
                    tracing::info!(node = %node_id.short(), ?grace,
                        "node came back within its grace period; not re-replicating");
                    return;
                }
                let _turn = one_at_a_time.lock().await;
                let Some(p) = pipeline.upgrade() else { return };
                metrics::counter!("city_rereplications_started_total").increment(1);
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
            });
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

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
        let hysteresis = Arc::new(Mutex::new(Hysteresis::new(settle)));
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
            let Some(grace) = hysteresis.lock().grace(node_id, reason) else {
                metrics::counter!("city_rereplications_skipped_total", "why" => "unconfirmed")
                    .increment(1);
                tracing::info!(node = %node_id.short(), ?reason,
                    "node out of sight but not confirmed gone; not re-replicating");
                continue;
            };
            let (pipeline, view, hysteresis) = (pipeline.clone(), view.clone(), hysteresis.clone());
            let one_at_a_time = one_at_a_time.clone();
            waiting.spawn(async move {
                // Let the view settle (several nodes often leave together, and a node that
                // comes straight back is not worth a repair).
                tokio::time::sleep(grace).await;
                if !hysteresis.lock().still_gone(node_id, view.get(node_id).is_some()) {
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

/// When to act on a departure: only confirmed ones, after a grace period that doubles
/// (up to 64 × `settle`) each time the node came back within it.
#[derive(Debug)]
struct Hysteresis {
    settle: Duration,
    flaps: HashMap<NodeId, u32>,
}

impl Hysteresis {
    fn new(settle: Duration) -> Self {
        Hysteresis {
            settle,
            flaps: HashMap::new(),
        }
    }

    /// The grace period before repairing `node`, or None when the departure is not
    /// confirmed (nothing to repair).
    fn grace(&self, node: NodeId, reason: node_list::LeftReason) -> Option<Duration> {
        if !reason.is_confirmed() {
            return None;
        }
        let flaps = self.flaps.get(&node).copied().unwrap_or(0);
        Some(self.settle * 2u32.pow(flaps.min(6)))
    }

    /// After the grace period: true when the node is still gone (repair); false when it is
    /// back (a flap: its next grace doubles).
    fn still_gone(&mut self, node: NodeId, back: bool) -> bool {
        if back {
            *self.flaps.entry(node).or_insert(0) += 1;
        }
        !back
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use node_list::LeftReason;

    #[test]
    fn only_confirmed_departures_repair_and_flappers_wait_longer() {
        let s = Duration::from_millis(500);
        let mut h = Hysteresis::new(s);
        let n = NodeId::from_bytes([1; 32]);
        assert_eq!(h.grace(n, LeftReason::Stale), None);
        for r in [
            LeftReason::GossipDown,
            LeftReason::Expired,
            LeftReason::Missing,
            LeftReason::Logout,
        ] {
            assert_eq!(h.grace(n, r), Some(s));
        }
        // The node comes back within its grace three times: each time it waits twice as long.
        for k in 1..=3u32 {
            assert!(!h.still_gone(n, true));
            assert_eq!(h.grace(n, LeftReason::GossipDown), Some(s * 2u32.pow(k)));
        }
        for _ in 0..10 {
            h.still_gone(n, true);
        }
        assert_eq!(h.grace(n, LeftReason::GossipDown), Some(s * 64), "capped");
        // Another node is unaffected; a node that stays gone is repaired.
        let m = NodeId::from_bytes([2; 32]);
        assert_eq!(h.grace(m, LeftReason::GossipDown), Some(s));
        assert!(h.still_gone(m, false));
    }
}

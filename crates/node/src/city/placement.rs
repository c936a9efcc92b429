//! Holder choice by priority score: wraps any [`HolderDirectory`] so that its live light
//! nodes are ranked by the priority crate's weighted rendezvous hashing (distance,
//! capacity, load, uptime, latency, login rate; spread over failure domains), with the
//! urgent profile for micro-batches that carry urgent txs.

use super::pipeline::HolderDirectory;
use dag_core::{NodeInfo, StripeId};
use priority::{
    Candidate, GeoPoint, HolderSelector, NodeStats, Profile, SelectRequest, WeightedRendezvous,
};

/// A directory whose ranking comes from [`priority::WeightedRendezvous`].
pub struct PriorityDirectory<D> {
    inner: D,
    selector: WeightedRendezvous,
    origin: GeoPoint,
    now_ms: fn() -> u64,
}

impl<D> std::fmt::Debug for PriorityDirectory<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityDirectory")
            .field("origin", &self.origin)
            .finish()
    }
}

fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<D: HolderDirectory> PriorityDirectory<D> {
    /// Ranks `inner`'s nodes as seen from `origin` (the city node's position).
    pub fn new(inner: D, origin: (f64, f64)) -> Self {
        PriorityDirectory {
            inner,
            selector: WeightedRendezvous::default(),
            origin: GeoPoint {
                lat: origin.0,
                lon: origin.1,
            },
            now_ms: system_now_ms,
        }
    }
}

impl<D: HolderDirectory> HolderDirectory for PriorityDirectory<D> {
    fn live_lights(&self) -> Vec<NodeInfo> {
        self.inner.live_lights()
    }

    fn rank(&self, stripe: &StripeId, nodes: Vec<NodeInfo>, urgent: bool) -> Vec<NodeInfo> {
        let candidates: Vec<Candidate<'_>> = nodes
            .iter()
            .map(|n| Candidate::new(n, NodeStats::default()))
            .collect();
        let req = SelectRequest {
            key: *stripe.as_bytes(),
            origin: self.origin,
            now_ms: (self.now_ms)(),
            profile: if urgent {
                Profile::Urgent
            } else {
                Profile::Normal
            },
            count: nodes.len(),
        };
        let sel = self.selector.select(&req, &candidates);
        sel.holders.iter().map(|h| nodes[h.index].clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::city::test_utils::StaticDirectory;
    use dag_core::{NodeId, Role};

    #[test]
    fn ranks_every_node_once_and_spreads_zones_first() {
        let nodes: Vec<NodeInfo> = (0..9u8)
            .map(|i| NodeInfo {
                node_id: NodeId::from_bytes([i; 32]),
                role: Role::Light,
                grpc_addr: String::new(),
                city_id: "JP-13".into(),
                zone: format!("z{}", i % 3),
                lat: 35.68,
                lon: 139.69,
                free_capacity: 1 << 30,
                load: 0.1,
                version: String::new(),
                session_start_ms: 0,
            })
            .collect();
        let d = PriorityDirectory::new(StaticDirectory::new(nodes.clone()), (35.68, 139.69));
        let ranked = d.rank(&StripeId::from_bytes([1; 32]), nodes.clone(), false);
        assert_eq!(ranked.len(), 9);
        let zones: std::collections::BTreeSet<_> =
            ranked[..3].iter().map(|n| n.zone.clone()).collect();
        assert_eq!(zones.len(), 3, "first holders span distinct zones");
        assert_eq!(
            ranked,
            d.rank(&StripeId::from_bytes([1; 32]), nodes, false),
            "deterministic"
        );
    }
}

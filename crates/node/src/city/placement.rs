//! Holder choice by priority score: wraps any [`HolderDirectory`] so that its live light
//! nodes are ranked by the priority crate's weighted rendezvous hashing (distance,
//! capacity, load, uptime, latency, login rate; spread over failure domains), with the
//! urgent profile for micro-batches that carry urgent txs, and each node's weight scaled by
//! the event multipliers (festivals, disasters) active where it is
//! ([`pop_geo::EventCalendar`]).

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
    events: Option<std::sync::Arc<pop_geo::EventCalendar>>,
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
            events: None,
        }
    }

    /// Scales each node's placement weight by the city and location events active at its
    /// city and position (e.g. ×5 at a festival venue, ×0.1 in a disaster area).
    pub fn with_events(mut self, events: std::sync::Arc<pop_geo::EventCalendar>) -> Self {
        self.events = Some(events);
        self
    }

    /// The event multiplier of `n` at `now_ms` (1.0 without events or a usable position).
    fn multiplier(&self, n: &NodeInfo, now_ms: u64) -> f64 {
        let Some(ev) = &self.events else { return 1.0 };
        let (Ok(city), Ok(pos)) = (
            dag_core::CityId::new(n.city_id.clone()),
            dag_core::Position::from_degrees(n.lat, n.lon),
        ) else {
            return 1.0;
        };
        ev.multiplier(&city, pos, now_ms)
    }
}

impl<D: HolderDirectory> HolderDirectory for PriorityDirectory<D> {
    fn live_lights(&self) -> Vec<NodeInfo> {
        self.inner.live_lights()
    }

    fn rank(&self, stripe: &StripeId, nodes: Vec<NodeInfo>, urgent: bool) -> Vec<NodeInfo> {
        let now_ms = (self.now_ms)();
        let mut weighted = 0u64;
        let candidates: Vec<Candidate<'_>> = nodes
            .iter()
            .map(|n| {
                let m = self.multiplier(n, now_ms);
                if m != 1.0 {
                    weighted += 1;
                }
                Candidate::new(n, NodeStats::default()).with_multiplier(m)
            })
            .collect();
        if weighted > 0 {
            metrics::counter!("citychain_placement_event_weighted_total").increment(weighted);
        }
        let req = SelectRequest {
            key: *stripe.as_bytes(),
            origin: self.origin,
            now_ms,
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
    fn an_active_event_draws_placement_to_the_nodes_it_covers() {
        let node = |i: u8, lat: f64, lon: f64| NodeInfo {
            node_id: NodeId::from_bytes([i; 32]),
            role: Role::Light,
            grpc_addr: String::new(),
            city_id: "JP-13".into(),
            zone: format!("z{i}"),
            lat,
            lon,
            free_capacity: 1 << 30,
            load: 0.1,
            version: String::new(),
            session_start_ms: 0,
        };
        // Node 0 sits at the Tokyo Dome; the others across Tokyo.
        let mut nodes = vec![node(0, 35.7056, 139.7519)];
        nodes.extend((1..8u8).map(|i| node(i, 35.60 + f64::from(i) * 0.02, 139.60)));
        let text = "epoch_ms = 1000\n[[location]]\nname = \"Tokyo Dome\"\nlat = 35.7056\n\
                    lon = 139.7519\nradius_m = 500\nmultiplier = 20.0\nstart_epoch = 10\nend_epoch = 20\n";
        let events = std::sync::Arc::new(
            pop_geo::EventCalendar::parse(std::path::Path::new("events.toml"), text).unwrap(),
        );
        let first_at_dome = |now: fn() -> u64| {
            let mut d =
                PriorityDirectory::new(StaticDirectory::new(nodes.clone()), (35.68, 139.69))
                    .with_events(events.clone());
            d.now_ms = now;
            (0..400u16)
                .filter(|i| {
                    let mut b = [0u8; 32];
                    b[..2].copy_from_slice(&i.to_le_bytes());
                    d.rank(&StripeId::from_bytes(b), nodes.clone(), false)[0].node_id
                        == nodes[0].node_id
                })
                .count()
        };
        let during = first_at_dome(|| 15_000);
        let before = first_at_dome(|| 9_999);
        // ×20 against seven at ×1: about 20/27 of first places, against about 1 in 8.
        assert!(during > 240, "{during}");
        assert!(before < 110, "{before}");
    }

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

//! The local view of online nodes, with a TTL per entry and a stream of changes.

use crate::haversine_km;
use dag_core::{NodeId, NodeInfo, Role};
use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use presence::{LeaveReason, PresenceEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_stream::wrappers::BroadcastStream;

/// Why a node left the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftReason {
    /// Presence said it logged out.
    Logout,
    /// Presence said its TTL ran out.
    Expired,
    /// A full refresh no longer listed it (a leave event was missed).
    Missing,
    /// Not confirmed within the local cache TTL (presence unreachable).
    Stale,
}

impl From<LeaveReason> for LeftReason {
    fn from(r: LeaveReason) -> Self {
        match r {
            LeaveReason::Logout => LeftReason::Logout,
            LeaveReason::Expired => LeftReason::Expired,
        }
    }
}

/// A change of the view.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeChange {
    /// A node appeared.
    Joined(NodeInfo),
    /// A known node's info changed.
    Updated(NodeInfo),
    /// A node left.
    Left {
        /// Which node.
        node_id: NodeId,
        /// Why.
        reason: LeftReason,
    },
}

impl NodeChange {
    /// The node concerned.
    pub fn node_id(&self) -> NodeId {
        match self {
            NodeChange::Joined(i) | NodeChange::Updated(i) => i.node_id,
            NodeChange::Left { node_id, .. } => *node_id,
        }
    }
}

#[derive(Debug)]
struct Entry {
    info: NodeInfo,
    confirmed: Instant,
}

/// The local node view. Clones share it. Time is tokio's clock, so tests can pause it.
#[derive(Debug, Clone)]
pub struct NodeRegistry {
    ttl: Duration,
    nodes: Arc<Mutex<HashMap<NodeId, Entry>>>,
    changes: broadcast::Sender<NodeChange>,
}

impl NodeRegistry {
    /// An empty view whose entries expire `ttl` after their last confirmation.
    pub fn new(ttl: Duration) -> Self {
        let (changes, _) = broadcast::channel(4096);
        NodeRegistry {
            ttl,
            nodes: Arc::new(Mutex::new(HashMap::new())),
            changes,
        }
    }

    /// The entry TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn emit(&self, c: NodeChange) {
        let _ = self.changes.send(c);
    }

    /// Inserts or refreshes `info` (confirmed now); emits Joined / Updated when it is new or
    /// changed.
    pub fn upsert(&self, info: NodeInfo) {
        let now = Instant::now();
        let mut nodes = self.nodes.lock();
        let change = match nodes.get(&info.node_id) {
            None => Some(NodeChange::Joined(info.clone())),
            Some(e) if e.confirmed + self.ttl < now => Some(NodeChange::Joined(info.clone())),
            Some(e) if e.info != info => Some(NodeChange::Updated(info.clone())),
            Some(_) => None,
        };
        nodes.insert(
            info.node_id,
            Entry {
                info,
                confirmed: now,
            },
        );
        if let Some(c) = change {
            self.emit(c);
        }
    }

    /// Removes a node; emits Left if it was present.
    pub fn remove(&self, node_id: NodeId, reason: LeftReason) -> bool {
        let mut nodes = self.nodes.lock();
        let was = nodes.remove(&node_id).is_some();
        if was {
            self.emit(NodeChange::Left { node_id, reason });
        }
        was
    }

    /// Applies a presence event.
    pub fn apply(&self, event: &PresenceEvent) {
        match event {
            PresenceEvent::Join { node } | PresenceEvent::Update { node } => {
                self.upsert(node.clone())
            }
            PresenceEvent::Leave { node_id, reason } => {
                self.remove(*node_id, (*reason).into());
            }
        }
    }

    /// Replaces the view with a full listing: listed nodes are confirmed, the others leave
    /// (reason Missing).
    pub fn replace_all(&self, listed: Vec<NodeInfo>) {
        let keep: std::collections::HashSet<NodeId> = listed.iter().map(|i| i.node_id).collect();
        let gone: Vec<NodeId> = self
            .nodes
            .lock()
            .keys()
            .filter(|id| !keep.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.remove(id, LeftReason::Missing);
        }
        for info in listed {
            self.upsert(info);
        }
    }

    /// Drops entries not confirmed within the TTL; returns their ids.
    pub fn expire(&self) -> Vec<NodeId> {
        let now = Instant::now();
        let mut nodes = self.nodes.lock();
        let gone: Vec<NodeId> = nodes
            .iter()
            .filter(|(_, e)| e.confirmed + self.ttl < now)
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            nodes.remove(id);
            self.emit(NodeChange::Left {
                node_id: *id,
                reason: LeftReason::Stale,
            });
        }
        gone
    }

    fn select(&self, keep: impl Fn(&NodeInfo) -> bool) -> Vec<NodeInfo> {
        let now = Instant::now();
        let mut out: Vec<NodeInfo> = self
            .nodes
            .lock()
            .values()
            .filter(|e| e.confirmed + self.ttl >= now && keep(&e.info))
            .map(|e| e.info.clone())
            .collect();
        out.sort_by_key(|i| i.node_id);
        out
    }

    /// Every node in the view (never an entry past its TTL), ordered by id.
    pub fn all_online(&self) -> Vec<NodeInfo> {
        self.select(|_| true)
    }

    /// Online nodes of `role`.
    pub fn by_role(&self, role: Role) -> Vec<NodeInfo> {
        self.select(|i| i.role == role)
    }

    /// Online nodes of city `city_id`.
    pub fn by_city(&self, city_id: &str) -> Vec<NodeInfo> {
        self.select(|i| i.city_id == city_id)
    }

    /// One node, if online.
    pub fn get(&self, node_id: NodeId) -> Option<NodeInfo> {
        let now = Instant::now();
        self.nodes
            .lock()
            .get(&node_id)
            .filter(|e| e.confirmed + self.ttl >= now)
            .map(|e| e.info.clone())
    }

    /// Number of online nodes.
    pub fn len(&self) -> usize {
        self.all_online().len()
    }

    /// True when no node is online.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `n` online nodes nearest to (`lat`, `lon`), optionally only of `role`, nearest
    /// first, with their distance in km (ties broken by node id).
    pub fn nearest(
        &self,
        lat: f64,
        lon: f64,
        n: usize,
        role: Option<Role>,
    ) -> Vec<(NodeInfo, f64)> {
        if n == 0 {
            return Vec::new();
        }
        let now = Instant::now();
        let nodes = self.nodes.lock();
        // Distances over references; only the n winners are cloned.
        let mut cands: Vec<(f64, &NodeInfo)> = nodes
            .values()
            .filter(|e| e.confirmed + self.ttl >= now && role.is_none_or(|r| r == e.info.role))
            .map(|e| (haversine_km(lat, lon, e.info.lat, e.info.lon), &e.info))
            .collect();
        let cmp = |a: &(f64, &NodeInfo), b: &(f64, &NodeInfo)| {
            a.0.total_cmp(&b.0).then(a.1.node_id.cmp(&b.1.node_id))
        };
        if cands.len() > n {
            cands.select_nth_unstable_by(n - 1, cmp);
            cands.truncate(n);
        }
        cands.sort_by(cmp);
        cands.into_iter().map(|(d, i)| (i.clone(), d)).collect()
    }

    /// A receiver of changes from now on (lagging receivers lose the oldest changes).
    pub fn subscribe(&self) -> broadcast::Receiver<NodeChange> {
        self.changes.subscribe()
    }

    /// Changes from now on as a stream (changes lost to lag are skipped: re-query then).
    pub fn changes(&self) -> BoxStream<'static, NodeChange> {
        BroadcastStream::new(self.changes.subscribe())
            .filter_map(|r| async move { r.ok() })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8, role: Role, city: &str, lat: f64, lon: f64) -> NodeInfo {
        NodeInfo {
            node_id: NodeId::from_bytes([n; 32]),
            role,
            grpc_addr: format!("127.0.0.1:{n}"),
            city_id: city.into(),
            zone: String::new(),
            lat,
            lon,
            free_capacity: 0,
            load: 0.0,
            version: "t".into(),
            session_start_ms: 0,
        }
    }

    fn sample() -> (NodeRegistry, [NodeInfo; 4]) {
        let r = NodeRegistry::new(Duration::from_secs(10));
        let nodes = [
            node(1, Role::City, "JP-13", 35.6895, 139.6917), // Tokyo
            node(2, Role::Light, "JP-13", 35.6580, 139.7016), // Shibuya
            node(3, Role::Light, "JP-27", 34.6937, 135.5023), // Osaka
            node(4, Role::Light, "JP-01", 43.0618, 141.3545), // Sapporo
        ];
        for n in &nodes {
            r.upsert(n.clone());
        }
        (r, nodes)
    }

    #[tokio::test(start_paused = true)]
    async fn queries_by_role_city_and_distance() {
        let (r, [tokyo, shibuya, osaka, sapporo]) = sample();
        assert_eq!(r.len(), 4);
        assert_eq!(
            r.by_role(Role::Light),
            vec![shibuya.clone(), osaka.clone(), sapporo.clone()]
        );
        assert_eq!(r.by_city("JP-13"), vec![tokyo.clone(), shibuya.clone()]);
        let near: Vec<NodeId> = r
            .nearest(35.0, 136.9, 2, Some(Role::Light)) // Nagoya
            .into_iter()
            .map(|(i, _)| i.node_id)
            .collect();
        assert_eq!(near, vec![osaka.node_id, shibuya.node_id]);
        let all = r.nearest(35.6895, 139.6917, 10, None);
        assert_eq!(all[0].0, tokyo);
        assert!(all[0].1 < 1e-6);
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].0, sapporo);
        assert!(r.nearest(0.0, 0.0, 0, None).is_empty());
        let one = r.nearest(43.0, 141.0, 1, None);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0, sapporo);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_ttl_unless_confirmed() {
        let (r, [tokyo, shibuya, ..]) = sample();
        let mut changes = r.subscribe();
        tokio::time::advance(Duration::from_secs(6)).await;
        r.upsert(tokyo.clone()); // confirmed again, unchanged: no change event
        tokio::time::advance(Duration::from_secs(5)).await;
        // The others are past their TTL: hidden even before expire() runs.
        assert_eq!(r.all_online(), vec![tokyo.clone()]);
        assert_eq!(r.get(shibuya.node_id), None);
        let mut gone = r.expire();
        gone.sort();
        assert_eq!(gone.len(), 3);
        let c = changes.try_recv().unwrap();
        assert!(matches!(
            c,
            NodeChange::Left {
                reason: LeftReason::Stale,
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn events_and_full_refresh_drive_changes() {
        let (r, [tokyo, shibuya, osaka, sapporo]) = sample();
        let mut changes = r.subscribe();
        r.apply(&PresenceEvent::Leave {
            node_id: osaka.node_id,
            reason: LeaveReason::Expired,
        });
        assert_eq!(
            changes.try_recv().unwrap(),
            NodeChange::Left {
                node_id: osaka.node_id,
                reason: LeftReason::Expired
            }
        );
        let mut busy = shibuya.clone();
        busy.load = 0.9;
        r.apply(&PresenceEvent::Update { node: busy.clone() });
        assert_eq!(
            changes.try_recv().unwrap(),
            NodeChange::Updated(busy.clone())
        );
        // A refresh that no longer lists Sapporo but lists Osaka again.
        r.replace_all(vec![tokyo.clone(), busy.clone(), osaka.clone()]);
        assert_eq!(
            changes.try_recv().unwrap(),
            NodeChange::Left {
                node_id: sapporo.node_id,
                reason: LeftReason::Missing
            }
        );
        assert_eq!(
            changes.try_recv().unwrap(),
            NodeChange::Joined(osaka.clone())
        );
        assert!(changes.try_recv().is_err(), "unchanged nodes emit nothing");
        assert_eq!(r.all_online(), vec![tokyo, busy, osaka]);
    }
}

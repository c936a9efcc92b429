//! The local view of online nodes, with a TTL per entry and a stream of changes.

use crate::haversine_km;
use dag_core::{NodeId, NodeInfo, Role};
use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use presence::{LeaveReason, PresenceEvent};
use std::collections::{HashMap, HashSet};
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
    /// Not confirmed within the local cache TTL (presence unreachable, and gossip did not
    /// vouch for it). Not a confirmed departure: nothing is re-replicated for it.
    Stale,
    /// Gossip (SWIM) confirmed it down: probes, indirect probes and the suspicion all
    /// failed, or it left the gossip cluster.
    GossipDown,
}

impl LeftReason {
    /// Whether the departure is confirmed (by presence or gossip), as opposed to this
    /// node merely losing sight of it. Only confirmed departures start re-replication.
    pub fn is_confirmed(self) -> bool {
        !matches!(self, LeftReason::Stale)
    }
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

/// Where the view's liveness comes from, and how presence is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewStatus {
    /// Whether the last presence call (listing or heartbeat) succeeded.
    pub presence_reachable: bool,
    /// Time since presence last answered (None: never).
    pub since_presence: Option<Duration>,
    /// Whether gossip feeds this view (then it, not presence, decides who is alive).
    pub gossip: bool,
    /// Members gossip currently holds alive.
    pub gossip_live: usize,
    /// Nodes in the view.
    pub nodes: usize,
    /// Presence leave/expiry verdicts overruled because gossip still saw the node alive.
    pub presence_leaves_overruled: u64,
}

impl ViewStatus {
    /// True when presence is unreachable and the view is held up by gossip alone.
    pub fn gossip_only(&self) -> bool {
        self.gossip && !self.presence_reachable
    }
}

#[derive(Debug, Default)]
struct Liveness {
    gossip: bool,
    live: HashSet<NodeId>,
    presence_ok: Option<Instant>,
    presence_reachable: bool,
    overruled: u64,
    doubts: HashSet<NodeId>,
}

/// The local node view. Clones share it. Time is tokio's clock, so tests can pause it.
///
/// With gossip attached ([`NodeRegistry::attach_gossip`]) a node that gossip holds alive
/// stays in the view whatever presence says, except for an explicit logout; it leaves when
/// gossip confirms it down ([`LeftReason::GossipDown`]). Presence stays the source of the
/// nodes' [`NodeInfo`] and of nodes gossip does not know.
#[derive(Debug, Clone)]
pub struct NodeRegistry {
    ttl: Duration,
    nodes: Arc<Mutex<HashMap<NodeId, Entry>>>,
    live: Arc<Mutex<Liveness>>,
    changes: broadcast::Sender<NodeChange>,
}

impl NodeRegistry {
    /// An empty view whose entries expire `ttl` after their last confirmation.
    pub fn new(ttl: Duration) -> Self {
        let (changes, _) = broadcast::channel(4096);
        NodeRegistry {
            ttl,
            nodes: Arc::new(Mutex::new(HashMap::new())),
            live: Arc::new(Mutex::new(Liveness::default())),
            changes,
        }
    }

    /// From now on gossip decides who is alive among the nodes it knows.
    pub fn attach_gossip(&self) {
        self.live.lock().gossip = true;
    }

    /// Gossip sees `node_id` alive: it stays in the view (refreshed) while presence is
    /// silent or says otherwise.
    pub fn gossip_alive(&self, node_id: NodeId) {
        self.live.lock().live.insert(node_id);
        if let Some(e) = self.nodes.lock().get_mut(&node_id) {
            e.confirmed = Instant::now();
        }
    }

    /// Gossip confirmed `node_id` down: it leaves the view ([`LeftReason::GossipDown`]).
    pub fn gossip_down(&self, node_id: NodeId) -> bool {
        self.live.lock().live.remove(&node_id);
        self.remove(node_id, LeftReason::GossipDown)
    }

    /// Whether gossip holds `node_id` alive.
    pub fn gossip_holds(&self, node_id: &NodeId) -> bool {
        let l = self.live.lock();
        l.gossip && l.live.contains(node_id)
    }

    /// Nodes presence called gone (expired / missing) while gossip held them alive, since
    /// the last call: gossip should check them (raise a suspicion).
    pub fn take_presence_doubts(&self) -> Vec<NodeId> {
        self.live.lock().doubts.drain().collect()
    }

    /// Records whether presence answered (the manager calls this after each call).
    pub fn presence_answered(&self, ok: bool) {
        let mut l = self.live.lock();
        l.presence_reachable = ok;
        if ok {
            l.presence_ok = Some(Instant::now());
        }
    }

    /// Where liveness comes from and how presence is doing.
    pub fn status(&self) -> ViewStatus {
        let nodes = self.len();
        let l = self.live.lock();
        ViewStatus {
            presence_reachable: l.presence_reachable,
            since_presence: l.presence_ok.map(|t| t.elapsed()),
            gossip: l.gossip,
            gossip_live: l.live.len(),
            nodes,
            presence_leaves_overruled: l.overruled,
        }
    }

    fn fresh(&self, id: &NodeId, e: &Entry, now: Instant, live: &Liveness) -> bool {
        e.confirmed + self.ttl >= now || (live.gossip && live.live.contains(id))
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
        // Lock order everywhere: liveness, then nodes.
        let live = self.live.lock();
        let mut nodes = self.nodes.lock();
        let change = match nodes.get(&info.node_id) {
            None => Some(NodeChange::Joined(info.clone())),
            Some(e) if !self.fresh(&info.node_id, e, now, &live) => {
                Some(NodeChange::Joined(info.clone()))
            }
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

    /// Removes a node; emits Left if it was present. A presence verdict (expired,
    /// missing, stale) about a node gossip holds alive is overruled: the node stays.
    pub fn remove(&self, node_id: NodeId, reason: LeftReason) -> bool {
        if matches!(
            reason,
            LeftReason::Expired | LeftReason::Missing | LeftReason::Stale
        ) {
            let mut l = self.live.lock();
            if l.gossip && l.live.contains(&node_id) {
                l.overruled += 1;
                if reason != LeftReason::Stale {
                    l.doubts.insert(node_id);
                }
                metrics::counter!("nodelist_presence_leaves_overruled_total").increment(1);
                return false;
            }
        }
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
        let live = self.live.lock();
        let mut nodes = self.nodes.lock();
        let gone: Vec<NodeId> = nodes
            .iter()
            .filter(|(id, e)| !self.fresh(id, e, now, &live))
            .map(|(id, _)| *id)
            .collect();
        drop(live);
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
        let live = self.live.lock();
        let mut out: Vec<NodeInfo> = self
            .nodes
            .lock()
            .iter()
            .filter(|(id, e)| self.fresh(id, e, now, &live) && keep(&e.info))
            .map(|(_, e)| e.info.clone())
            .collect();
        drop(live);
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
        let live = self.live.lock();
        self.nodes
            .lock()
            .get(&node_id)
            .filter(|e| self.fresh(&node_id, e, now, &live))
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
        let live = self.live.lock();
        let nodes = self.nodes.lock();
        // Distances over references; only the n winners are cloned.
        let mut cands: Vec<(f64, &NodeInfo)> = nodes
            .iter()
            .filter(|(id, e)| {
                self.fresh(id, e, now, &live) && role.is_none_or(|r| r == e.info.role)
            })
            .map(|(_, e)| e)
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

    #[tokio::test(start_paused = true)]
    async fn gossip_keeps_nodes_through_a_presence_outage_and_confirms_departures() {
        let (r, [tokyo, shibuya, osaka, sapporo]) = sample();
        r.attach_gossip();
        for n in [&tokyo, &shibuya, &osaka] {
            r.gossip_alive(n.node_id);
        }
        let mut changes = r.subscribe();
        r.presence_answered(false);
        // Presence silent for a minute: gossip keeps refreshing three of the four.
        for _ in 0..12 {
            tokio::time::advance(Duration::from_secs(5)).await;
            for n in [&tokyo, &shibuya, &osaka] {
                r.gossip_alive(n.node_id);
            }
            r.expire();
        }
        assert_eq!(
            r.all_online(),
            vec![tokyo.clone(), shibuya.clone(), osaka.clone()]
        );
        assert_eq!(
            changes.try_recv().unwrap(),
            NodeChange::Left {
                node_id: sapporo.node_id,
                reason: LeftReason::Stale
            }
        );
        assert!(
            changes.try_recv().is_err(),
            "only the node gossip did not vouch for"
        );
        let s = r.status();
        assert!(s.gossip_only() && s.gossip && !s.presence_reachable);
        assert_eq!((s.nodes, s.gossip_live), (3, 3));
        // Presence comes back empty (restarted) and then expires Osaka: overruled.
        r.replace_all(vec![tokyo.clone()]);
        r.apply(&PresenceEvent::Leave {
            node_id: osaka.node_id,
            reason: LeaveReason::Expired,
        });
        assert_eq!(r.len(), 3);
        assert!(r.status().presence_leaves_overruled >= 2);
        // Gossip is asked to check the nodes presence doubts.
        let mut doubts = r.take_presence_doubts();
        doubts.sort();
        let mut want = vec![shibuya.node_id, osaka.node_id];
        want.sort();
        assert_eq!(doubts, want);
        assert!(r.take_presence_doubts().is_empty());
        // Gossip confirms Osaka down: a confirmed departure.
        assert!(r.gossip_down(osaka.node_id));
        assert_eq!(
            changes.try_recv().unwrap(),
            NodeChange::Left {
                node_id: osaka.node_id,
                reason: LeftReason::GossipDown
            }
        );
        assert!(LeftReason::GossipDown.is_confirmed() && !LeftReason::Stale.is_confirmed());
        // An explicit logout is never overruled.
        r.apply(&PresenceEvent::Leave {
            node_id: shibuya.node_id,
            reason: LeaveReason::Logout,
        });
        assert_eq!(r.all_online(), vec![tokyo]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_gossip_presence_verdicts_stand() {
        let (r, [_, shibuya, ..]) = sample();
        r.gossip_alive(shibuya.node_id); // not attached: no effect on verdicts
        r.apply(&PresenceEvent::Leave {
            node_id: shibuya.node_id,
            reason: LeaveReason::Expired,
        });
        assert_eq!(r.get(shibuya.node_id), None);
        assert_eq!(r.status().presence_leaves_overruled, 0);
    }
}

//! Managers sharing one in-memory presence store, on tokio's paused clock: the documented
//! timings (heartbeat 3 s, TTL 6 s, sweep 1 s, cache 10 s) are checked without sleeping.

use crate::{node, wait_change};
use dag_core::{NodeId, NodeInfo, Role};
use node_list::{LeftReason, NodeChange, NodeListConfig, NodeListManager};
use presence::{
    EventStream, ListFilter, MemoryPresenceStore, PresenceStore, TokioClock, spawn_sweeper,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const SWEEP: Duration = Duration::from_secs(1);

fn store() -> MemoryPresenceStore {
    MemoryPresenceStore::new(Duration::from_secs(6), Arc::new(TokioClock::new()))
}

async fn until(limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "condition not reached in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn silent_node_leaves_every_view_within_heartbeat_ttl_and_sweep() {
    let store = store();
    let shared: Arc<dyn PresenceStore> = Arc::new(store.clone());
    let sweeper = spawn_sweeper(shared.clone(), SWEEP);
    let config = NodeListConfig::default();
    let city = NodeListManager::start(
        shared.clone(),
        Some(node(1, Role::City, 35.68, 139.69)),
        config.clone(),
    );
    let light_a = node(2, Role::Light, 35.66, 139.70);
    let light_b = node(3, Role::Light, 34.69, 135.50);
    let a = NodeListManager::start(shared.clone(), Some(light_a.clone()), config.clone());
    let b = NodeListManager::start(shared.clone(), Some(light_b.clone()), config.clone());
    let views = [city.registry().clone(), b.registry().clone()];
    until(Duration::from_secs(10), || {
        views.iter().all(|v| v.len() == 3)
    })
    .await;

    // Keep everyone alive for a while: heartbeats hold the TTL off.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(views.iter().all(|v| v.len() == 3));
    assert_eq!(
        city.registry().by_role(Role::Light),
        vec![light_a.clone(), light_b.clone()]
    );
    let nearest = city.registry().nearest(35.0, 136.9, 1, Some(Role::Light));
    assert_eq!(
        nearest[0].0, light_b,
        "Osaka is nearer to Nagoya than Tokyo"
    );

    // Node a crashes: no logout, no more heartbeats.
    let mut city_changes = city.registry().changes();
    let mut b_changes = b.registry().changes();
    a.abort();
    let crashed = Instant::now();
    let bound = config.heartbeat + config.presence_ttl + SWEEP;
    let left = |c: &NodeChange| matches!(c, NodeChange::Left { node_id, .. } if *node_id == light_a.node_id);
    let c1 = wait_change(&mut city_changes, bound + Duration::from_millis(100), left).await;
    let c2 = wait_change(&mut b_changes, bound + Duration::from_millis(100), left).await;
    let took = crashed.elapsed();
    assert!(took <= bound, "left after {took:?}, bound {bound:?}");
    assert!(
        took >= config.presence_ttl - config.heartbeat,
        "left too early: {took:?}"
    );
    for c in [c1, c2] {
        assert_eq!(
            c,
            NodeChange::Left {
                node_id: light_a.node_id,
                reason: LeftReason::Expired
            }
        );
    }
    assert!(
        views
            .iter()
            .all(|v| v.get(light_a.node_id).is_none() && v.len() == 2)
    );
    assert_eq!(shared.list(&ListFilter::default()).await.unwrap().len(), 2);

    // A clean shutdown is a logout: the others see it at once.
    b.shutdown().await;
    let c = wait_change(&mut city_changes, Duration::from_millis(100), |c| {
        matches!(c, NodeChange::Left { .. })
    })
    .await;
    assert_eq!(
        c,
        NodeChange::Left {
            node_id: light_b.node_id,
            reason: LeftReason::Logout
        }
    );
    city.shutdown().await;
    assert!(
        shared
            .list(&ListFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    sweeper.shutdown().await;
}

/// A store whose events never work: the manager must fall back to polling.
struct NoEvents(MemoryPresenceStore);

#[async_trait::async_trait]
impl PresenceStore for NoEvents {
    fn backend(&self) -> &'static str {
        "no-events"
    }
    async fn login(&self, info: NodeInfo) -> presence::Result<()> {
        self.0.login(info).await
    }
    async fn heartbeat(&self, node: NodeId) -> presence::Result<()> {
        self.0.heartbeat(node).await
    }
    async fn logout(&self, node: NodeId) -> presence::Result<()> {
        self.0.logout(node).await
    }
    async fn list(&self, filter: &ListFilter) -> presence::Result<Vec<NodeInfo>> {
        self.0.list(filter).await
    }
    async fn subscribe(&self) -> presence::Result<EventStream> {
        Err(presence::Error::Unavailable {
            backend: "no-events",
            op: "subscribe",
            detail: "test double".into(),
        })
    }
    async fn sweep(&self) -> presence::Result<Vec<NodeId>> {
        self.0.sweep().await
    }
    async fn ping(&self) -> presence::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn polling_keeps_the_view_when_events_fail() {
    let inner = store();
    let shared: Arc<dyn PresenceStore> = Arc::new(NoEvents(inner.clone()));
    let sweeper = spawn_sweeper(shared.clone(), SWEEP);
    let config = NodeListConfig::default();
    let watcher = NodeListManager::start(shared.clone(), None, config.clone());
    let x = node(7, Role::Light, 0.0, 0.0);
    inner.login(x.clone()).await.unwrap();
    let mut changes = watcher.registry().changes();
    // Joined at the next poll (≤ 3 s), without events.
    wait_change(
        &mut changes,
        config.poll_interval + Duration::from_millis(100),
        |c| matches!(c, NodeChange::Joined(i) if i.node_id == x.node_id),
    )
    .await;
    // x never heartbeats: gone from presence after TTL + sweep, from the view at the next poll.
    let c = wait_change(
        &mut changes,
        config.presence_ttl + SWEEP + config.poll_interval,
        |c| matches!(c, NodeChange::Left { .. }),
    )
    .await;
    assert_eq!(
        c,
        NodeChange::Left {
            node_id: x.node_id,
            reason: LeftReason::Missing
        }
    );
    watcher.shutdown().await;
    sweeper.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn view_goes_stale_rather_than_serving_ghosts_when_presence_is_gone() {
    // The manager refreshes from a store that then stops answering (simulated by a store
    // whose lists fail): after the cache TTL the view is empty.
    struct Failing(MemoryPresenceStore, Arc<std::sync::atomic::AtomicBool>);
    #[async_trait::async_trait]
    impl PresenceStore for Failing {
        fn backend(&self) -> &'static str {
            "failing"
        }
        async fn login(&self, info: NodeInfo) -> presence::Result<()> {
            self.0.login(info).await
        }
        async fn heartbeat(&self, node: NodeId) -> presence::Result<()> {
            self.0.heartbeat(node).await
        }
        async fn logout(&self, node: NodeId) -> presence::Result<()> {
            self.0.logout(node).await
        }
        async fn list(&self, filter: &ListFilter) -> presence::Result<Vec<NodeInfo>> {
            if self.1.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(presence::Error::Unavailable {
                    backend: "failing",
                    op: "list",
                    detail: "down".into(),
                });
            }
            self.0.list(filter).await
        }
        async fn subscribe(&self) -> presence::Result<EventStream> {
            self.0.subscribe().await
        }
        async fn ping(&self) -> presence::Result<()> {
            Ok(())
        }
    }
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let inner = store();
    inner.login(node(5, Role::Light, 1.0, 1.0)).await.unwrap();
    let config = NodeListConfig::default();
    let watcher =
        NodeListManager::start(Arc::new(Failing(inner, down.clone())), None, config.clone());
    until(Duration::from_secs(1), || watcher.registry().len() == 1).await;
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut changes = watcher.registry().changes();
    let c = wait_change(
        &mut changes,
        config.cache_ttl + Duration::from_secs(2),
        |c| matches!(c, NodeChange::Left { .. }),
    )
    .await;
    assert!(matches!(
        c,
        NodeChange::Left {
            reason: LeftReason::Stale,
            ..
        }
    ));
    assert!(watcher.registry().is_empty());
    watcher.shutdown().await;
}

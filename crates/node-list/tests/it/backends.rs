//! node-list over the real backends: a presence server over HTTP, and Redis directly.
//! Real time with short TTLs; each wait is bounded.

use crate::{keyed, wait_change};
use dag_core::Role;
use node_list::{LeftReason, NodeChange, NodeListConfig, NodeListManager, PresenceBackend};
use presence::{
    BackendKind, ListFilter, PresenceClient, PresenceClientConfig, PresenceServer, PresenceStore,
    RedisProcess, ServerConfig,
};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

#[tokio::test]
async fn http_backend_views_drop_a_silent_node_within_ttl_and_sweep() {
    let ttl = Duration::from_millis(1000);
    let sweep = Duration::from_millis(50);
    let server = PresenceServer::start(ServerConfig {
        backend: BackendKind::Memory,
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        http_port: 0,
        ttl_ms: ttl.as_millis() as u64,
        sweep_interval_ms: sweep.as_millis() as u64,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let config = NodeListConfig {
        backend: PresenceBackend::Http,
        http_endpoint: server.base_url(),
        heartbeat: Duration::from_millis(300),
        poll_interval: Duration::from_millis(300),
        cache_ttl: Duration::from_secs(3),
        ..NodeListConfig::default()
    };
    let one = NodeListManager::connect(config.clone(), Some(keyed(1, Role::City, 35.0, 139.0)))
        .await
        .unwrap();
    let two = NodeListManager::connect(config.clone(), Some(keyed(2, Role::Light, 35.1, 139.1)))
        .await
        .unwrap();
    let mut c1 = one.registry().changes();
    let mut c2 = two.registry().changes();

    let (silent, silent_key) = keyed(3, Role::Light, 34.0, 135.0);
    let client = PresenceClient::new(&server.base_url(), PresenceClientConfig::default())
        .unwrap()
        .with_signer(silent_key);
    client.login(silent.clone()).await.unwrap();
    let joined = |c: &NodeChange| matches!(c, NodeChange::Joined(i) if i.node_id == silent.node_id);
    wait_change(&mut c1, Duration::from_secs(3), joined).await;
    wait_change(&mut c2, Duration::from_secs(3), joined).await;
    client.heartbeat(silent.node_id).await.unwrap();
    let last_beat = Instant::now();
    assert_eq!(one.registry().len(), 3);
    assert_eq!(two.registry().by_role(Role::Light).len(), 2);

    let left = |c: &NodeChange| matches!(c, NodeChange::Left { node_id, .. } if *node_id == silent.node_id);
    let l1 = wait_change(&mut c1, Duration::from_secs(5), left).await;
    let l2 = wait_change(&mut c2, Duration::from_secs(5), left).await;
    let took = last_beat.elapsed();
    for l in [l1, l2] {
        assert_eq!(
            l,
            NodeChange::Left {
                node_id: silent.node_id,
                reason: LeftReason::Expired
            }
        );
    }
    // No upper wall-clock bound: the 5 s wait above is the polling deadline (a busy
    // machine must not fail the test); the bound itself is tested on paused time in
    // `memory.rs`.
    assert!(took >= ttl, "left after {took:?}, before the TTL");
    let listed = client.list(&ListFilter::default()).await.unwrap();
    assert_eq!(
        listed.len(),
        2,
        "the managed nodes stay online by heartbeating"
    );
    assert!(one.registry().get(silent.node_id).is_none());

    two.shutdown().await;
    let c = wait_change(&mut c1, Duration::from_secs(2), |c| {
        matches!(c, NodeChange::Left { .. })
    })
    .await;
    assert!(matches!(
        c,
        NodeChange::Left {
            reason: LeftReason::Logout,
            ..
        }
    ));
    one.shutdown().await;
    assert!(
        client
            .list(&ListFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn redis_backend_sees_joins_and_logouts() {
    let redis = RedisProcess::start().unwrap();
    let config = NodeListConfig {
        backend: PresenceBackend::Redis,
        redis_uri: redis.uri(),
        heartbeat: Duration::from_millis(200),
        poll_interval: Duration::from_millis(200),
        ..NodeListConfig::default()
    };
    let one = NodeListManager::connect(config.clone(), Some(keyed(1, Role::City, 35.0, 139.0)))
        .await
        .unwrap();
    let mut changes = one.registry().changes();
    let two = NodeListManager::connect(config.clone(), Some(keyed(2, Role::Light, 35.1, 139.1)))
        .await
        .unwrap();
    let id2 = two.node_id().unwrap();
    wait_change(
        &mut changes,
        Duration::from_secs(3),
        |c| matches!(c, NodeChange::Joined(i) if i.node_id == id2),
    )
    .await;
    assert_eq!(one.registry().by_role(Role::Light).len(), 1);
    two.shutdown().await;
    let c = wait_change(&mut changes, Duration::from_secs(3), |c| {
        matches!(c, NodeChange::Left { .. })
    })
    .await;
    assert_eq!(
        c,
        NodeChange::Left {
            node_id: id2,
            reason: LeftReason::Logout
        }
    );
    let store = one.store();
    one.shutdown().await;
    assert!(store.list(&ListFilter::default()).await.unwrap().is_empty());
}

/// Over the signed HTTP API a node's session can be replaced by a newer login of its own
/// (another process with its key, a restart): the manager's next heartbeat is refused as
/// `bad_session`, it logs in again with a fresh signed login, and the node never leaves.
#[tokio::test]
async fn a_replaced_session_is_renewed_by_a_fresh_signed_login() {
    let server = PresenceServer::start(ServerConfig {
        backend: BackendKind::Memory,
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        http_port: 0,
        ttl_ms: 1000,
        sweep_interval_ms: 50,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let config = NodeListConfig {
        backend: PresenceBackend::Http,
        http_endpoint: server.base_url(),
        heartbeat: Duration::from_millis(200),
        poll_interval: Duration::from_millis(200),
        ..NodeListConfig::default()
    };
    let (a, key) = keyed(4, Role::Light, 35.0, 139.0);
    let watcher = NodeListManager::connect(config.clone(), None)
        .await
        .unwrap();
    let mut changes = watcher.registry().changes();
    let managed = NodeListManager::connect(config.clone(), Some((a.clone(), key.clone())))
        .await
        .unwrap();
    wait_change(
        &mut changes,
        Duration::from_secs(3),
        |c| matches!(c, NodeChange::Joined(i) if i.node_id == a.node_id),
    )
    .await;
    // A second holder of the key logs the node in again: the manager's session is dead.
    let other = PresenceClient::new(&server.base_url(), PresenceClientConfig::default())
        .unwrap()
        .with_signer(key);
    let mut updated = a.clone();
    updated.free_capacity = 7;
    other.login(updated).await.unwrap();
    // Several heartbeat periods and more than a TTL: the node is never seen leaving, and
    // the manager's re-login (its own info again) is what presence holds at the end.
    let left = tokio::time::timeout(
        Duration::from_millis(1500),
        wait_change(
            &mut changes,
            Duration::from_secs(2),
            |c| matches!(c, NodeChange::Left { node_id, .. } if *node_id == a.node_id),
        ),
    )
    .await;
    assert!(left.is_err(), "the node left: {left:?}");
    let listed = other.list(&ListFilter::default()).await.unwrap();
    assert_eq!(listed, vec![a.clone()], "the manager logged in again");
    managed.shutdown().await;
    let c = wait_change(
        &mut changes,
        Duration::from_secs(3),
        |c| matches!(c, NodeChange::Left { node_id, .. } if *node_id == a.node_id),
    )
    .await;
    assert!(matches!(
        c,
        NodeChange::Left {
            reason: LeftReason::Logout,
            ..
        }
    ));
    watcher.shutdown().await;
    server.shutdown().await.unwrap();
}

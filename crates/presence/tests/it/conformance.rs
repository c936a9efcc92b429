//! One conformance suite, run against the in-memory store, against Redis (a real
//! `redis-server` spawned on a free port) and against a real 6-node Redis Cluster (3
//! primaries, 3 replicas, created by the test). Time comes from a ManualClock, so TTLs are
//! crossed exactly, without sleeping.

use crate::support::{next_event, node};
use dag_core::{Clock, ManualClock, Role};
use presence::{
    AuthFailure, Error, LeaveReason, ListFilter, MAX_LOGIN_SKEW, MemoryPresenceStore,
    PresenceEvent, RedisCluster, RedisPresenceStore, RedisProcess, RedisStoreConfig, Session,
    SessionStore, SessionToken,
};
use std::sync::Arc;
use std::time::Duration;

const TTL_MS: u64 = 6000;

pub struct Harness {
    pub store: Arc<dyn SessionStore>,
    pub clock: Arc<ManualClock>,
    _redis: Option<RedisProcess>,
}

fn memory() -> Harness {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    Harness {
        store: Arc::new(MemoryPresenceStore::new(
            Duration::from_millis(TTL_MS),
            clock.clone(),
        )),
        clock,
        _redis: None,
    }
}

/// A store on `uri` under `prefix`, trusting `ca` for TLS, with its own clock; `server`
/// kept alive with it.
async fn on_redis(
    uri: String,
    prefix: String,
    ca: Option<&std::path::Path>,
    server: Option<RedisProcess>,
) -> Harness {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = RedisPresenceStore::connect(
        RedisStoreConfig {
            uri,
            ttl: Duration::from_millis(TTL_MS),
            key_prefix: prefix,
            tls_ca_file: ca.map(std::path::Path::to_path_buf),
            ..RedisStoreConfig::default()
        },
        clock.clone(),
    )
    .await
    .unwrap();
    Harness {
        store: Arc::new(store),
        clock,
        _redis: server,
    }
}

async fn redis() -> Harness {
    let server = RedisProcess::start().expect("redis-server (apt-get install -y redis-server)");
    on_redis(server.uri(), "conformance".into(), None, Some(server)).await
}

/// A store on `cluster` under its own key prefix (`{conformance-k}`), with its own clock.
async fn on_cluster(cluster: &RedisCluster, k: usize) -> Harness {
    on_redis(cluster.uri(), format!("conformance-{k}"), None, None).await
}

/// A store over TLS (`rediss://`) on `server`, trusting `ca`, under its own prefix.
async fn over_tls(server: &RedisProcess, ca: &std::path::Path, k: usize) -> Harness {
    on_redis(server.uri(), format!("conformance-tls-{k}"), Some(ca), None).await
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $( #[tokio::test] async fn $case() { super::cases::$case(&super::memory()).await; } )*
        }
        mod redis {
            $( #[tokio::test] async fn $case() { super::cases::$case(&super::redis().await).await; } )*
        }
        /// Every case in turn on one cluster (starting one takes seconds), each under its
        /// own hash-tagged prefix.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn every_case_on_a_six_node_redis_cluster() {
            let cluster = RedisCluster::start(3, 1)
                .expect("a redis cluster (apt-get install -y redis-server)");
            let mut k = 0;
            $(
                k += 1;
                cases::$case(&on_cluster(&cluster, k).await).await;
            )*
            assert!(k > 0);
        }
        /// Every case in turn over TLS to a `redis-server` that answers only TLS, its
        /// certificate signed by a test CA the store is given.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn every_case_over_tls() {
            let dir = tempfile::tempdir().unwrap();
            let (ca, cert, key) = crate::support::tls_files(dir.path());
            let server = RedisProcess::start_tls(&cert, &key, &ca).expect("redis-server with TLS");
            assert!(server.uri().starts_with("rediss://"));
            let mut k = 0;
            $(
                k += 1;
                cases::$case(&over_tls(&server, &ca, k).await).await;
            )*
            assert!(k > 0);
        }
    };
}

conformance!(
    login_lists_and_filters,
    heartbeat_of_unknown_node_is_rejected,
    heartbeats_keep_a_node_online,
    silent_node_expires_without_ghost_and_sweep_emits_leave,
    logout_removes_and_emits_leave,
    second_login_is_an_update,
    login_after_unswept_expiry_is_leave_then_join,
    sessions_guard_heartbeat_and_logout_and_logins_never_replay,
);

mod cases {
    use super::*;

    pub async fn login_lists_and_filters(h: &Harness) {
        let mut events = h.store.subscribe().await.unwrap();
        let a = node(3, Role::Light, "JP-13");
        let b = node(1, Role::City, "JP-13");
        let c = node(2, Role::Light, "NP-3");
        for n in [&a, &b, &c] {
            h.store.login(n.clone()).await.unwrap();
            assert_eq!(
                next_event(&mut events).await,
                PresenceEvent::Join { node: n.clone() }
            );
        }
        let all = h.store.list(&ListFilter::default()).await.unwrap();
        assert_eq!(
            all,
            vec![b.clone(), c.clone(), a.clone()],
            "ordered by node id"
        );
        let light = h.store.list(&ListFilter::role(Role::Light)).await.unwrap();
        assert_eq!(light, vec![c.clone(), a.clone()]);
        let tokyo_light = ListFilter {
            role: Some(Role::Light),
            city: Some("JP-13".into()),
        };
        assert_eq!(h.store.list(&tokyo_light).await.unwrap(), vec![a]);
        assert!(
            h.store
                .list(&ListFilter::role(Role::Continent))
                .await
                .unwrap()
                .is_empty()
        );
        h.store.ping().await.unwrap();
    }

    pub async fn heartbeat_of_unknown_node_is_rejected(h: &Harness) {
        let id = node(9, Role::Light, "X").node_id;
        assert!(matches!(h.store.heartbeat(id).await, Err(Error::UnknownNode(n)) if n == id));
        assert!(
            h.store
                .list(&ListFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn heartbeats_keep_a_node_online(h: &Harness) {
        let a = node(1, Role::Light, "JP-13");
        h.store.login(a.clone()).await.unwrap();
        for _ in 0..5 {
            h.clock.advance(4000);
            h.store.heartbeat(a.node_id).await.unwrap();
        }
        // 20 s after login, still online; exactly at the TTL boundary still online.
        h.clock.advance(TTL_MS);
        assert_eq!(
            h.store.list(&ListFilter::default()).await.unwrap(),
            vec![a.clone()]
        );
        assert!(h.store.sweep().await.unwrap().is_empty());
        h.clock.advance(1);
        assert!(
            h.store
                .list(&ListFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn silent_node_expires_without_ghost_and_sweep_emits_leave(h: &Harness) {
        let a = node(1, Role::Light, "JP-13");
        let b = node(2, Role::Light, "JP-13");
        h.store.login(a.clone()).await.unwrap();
        h.store.login(b.clone()).await.unwrap();
        let mut events = h.store.subscribe().await.unwrap();
        h.clock.advance(3000);
        h.store.heartbeat(b.node_id).await.unwrap();
        h.clock.advance(3001);
        // a is past its TTL: not listed even though no sweep ran yet.
        assert_eq!(
            h.store.list(&ListFilter::default()).await.unwrap(),
            vec![b.clone()]
        );
        assert_eq!(h.store.sweep().await.unwrap(), vec![a.node_id]);
        assert_eq!(
            next_event(&mut events).await,
            PresenceEvent::Leave {
                node_id: a.node_id,
                reason: LeaveReason::Expired
            }
        );
        assert!(
            h.store.sweep().await.unwrap().is_empty(),
            "one leave per node"
        );
        assert!(matches!(
            h.store.heartbeat(a.node_id).await,
            Err(Error::UnknownNode(_))
        ));
        assert_eq!(h.store.list(&ListFilter::default()).await.unwrap(), vec![b]);
    }

    pub async fn logout_removes_and_emits_leave(h: &Harness) {
        let a = node(1, Role::City, "JP-13");
        h.store.login(a.clone()).await.unwrap();
        let mut events = h.store.subscribe().await.unwrap();
        h.store.logout(a.node_id).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            PresenceEvent::Leave {
                node_id: a.node_id,
                reason: LeaveReason::Logout
            }
        );
        assert!(
            h.store
                .list(&ListFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            h.store.logout(a.node_id).await,
            Err(Error::UnknownNode(_))
        ));
        assert!(matches!(
            h.store.heartbeat(a.node_id).await,
            Err(Error::UnknownNode(_))
        ));
    }

    pub async fn second_login_is_an_update(h: &Harness) {
        let mut events = h.store.subscribe().await.unwrap();
        let a = node(1, Role::Light, "JP-13");
        h.store.login(a.clone()).await.unwrap();
        assert!(matches!(
            next_event(&mut events).await,
            PresenceEvent::Join { .. }
        ));
        let mut a2 = a.clone();
        a2.load = 0.9;
        h.clock.advance(1000);
        h.store.login(a2.clone()).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            PresenceEvent::Update { node: a2.clone() }
        );
        assert_eq!(
            h.store.list(&ListFilter::default()).await.unwrap(),
            vec![a2]
        );
    }

    pub async fn login_after_unswept_expiry_is_leave_then_join(h: &Harness) {
        let a = node(1, Role::Light, "JP-13");
        h.store.login(a.clone()).await.unwrap();
        let mut events = h.store.subscribe().await.unwrap();
        h.clock.advance(TTL_MS + 1);
        h.store.login(a.clone()).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            PresenceEvent::Leave {
                node_id: a.node_id,
                reason: LeaveReason::Expired
            }
        );
        assert_eq!(
            next_event(&mut events).await,
            PresenceEvent::Join { node: a.clone() }
        );
        assert!(h.store.sweep().await.unwrap().is_empty());
        assert_eq!(h.store.list(&ListFilter::default()).await.unwrap(), vec![a]);
    }

    pub async fn sessions_guard_heartbeat_and_logout_and_logins_never_replay(h: &Harness) {
        let a = node(1, Role::Light, "JP-13");
        let id = a.node_id;
        let t0 = h.clock.now_ms();
        let first = SessionToken::generate();
        let session = |t: &SessionToken, at| Session {
            hash: t.hash(),
            issued_at_ms: at,
        };
        h.store
            .login_session(a.clone(), session(&first, t0))
            .await
            .unwrap();
        let mut events = h.store.subscribe().await.unwrap();
        let refused = |r: presence::Result<()>| match r {
            Err(Error::Unauthorized { node, reason }) if node == id => reason,
            other => panic!("expected a refusal for {id}, got {other:?}"),
        };
        // Another token neither keeps a alive nor logs it out.
        let forged = SessionToken::generate().hash();
        assert_eq!(
            refused(h.store.heartbeat_session(id, forged).await),
            AuthFailure::BadSession
        );
        assert_eq!(
            refused(h.store.logout_session(id, forged).await),
            AuthFailure::BadSession
        );
        h.store.heartbeat_session(id, first.hash()).await.unwrap();
        // The same login (or an older one) again is a replay, even with another token.
        let other = SessionToken::generate();
        assert_eq!(
            refused(h.store.login_session(a.clone(), session(&other, t0)).await),
            AuthFailure::Replayed
        );
        assert_eq!(
            refused(
                h.store
                    .login_session(a.clone(), session(&other, t0 - 1))
                    .await
            ),
            AuthFailure::Replayed
        );
        assert_eq!(
            h.store.list(&ListFilter::default()).await.unwrap(),
            vec![a.clone()]
        );
        // A newer login replaces the session: the old token is dead.
        h.clock.advance(10);
        let second = SessionToken::generate();
        h.store
            .login_session(a.clone(), session(&second, t0 + 10))
            .await
            .unwrap();
        assert_eq!(
            next_event(&mut events).await,
            PresenceEvent::Update { node: a.clone() }
        );
        assert_eq!(
            refused(h.store.heartbeat_session(id, first.hash()).await),
            AuthFailure::BadSession
        );
        h.store.logout_session(id, second.hash()).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            PresenceEvent::Leave {
                node_id: id,
                reason: LeaveReason::Logout
            }
        );
        // Logged out, the last login is still remembered: replaying it brings nothing back.
        assert_eq!(
            refused(
                h.store
                    .login_session(a.clone(), session(&other, t0 + 10))
                    .await
            ),
            AuthFailure::Replayed
        );
        assert!(
            h.store
                .list(&ListFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
        // Sweeps past the skew window forget it (a login that old is refused as stale
        // before it reaches the store).
        h.clock.advance(3 * MAX_LOGIN_SKEW.as_millis() as u64);
        h.store.sweep().await.unwrap();
        let later = h.clock.now_ms();
        h.store
            .login_session(a.clone(), session(&other, later))
            .await
            .unwrap();
        // A trusted in-process login has no session: no token opens it.
        h.store.login(a.clone()).await.unwrap();
        assert_eq!(
            refused(h.store.heartbeat_session(id, other.hash()).await),
            AuthFailure::BadSession
        );
        h.store.heartbeat(id).await.unwrap();
    }
}

//! # presence
//!
//! Who is online. A node logs in with its [`NodeInfo`](dag_core::NodeInfo), heartbeats every
//! 3 s and logs out; a node not heard from for the online TTL (6 s) is removed by the next
//! sweep, and subscribers get a `leave` event.
//!
//! - [`PresenceStore`]: the port, with [`MemoryPresenceStore`] and [`RedisPresenceStore`]
//!   (a sorted set of node ids scored by last-seen time plus a hash per node; every update
//!   is one Lua script, so it is atomic; expiry removes both, so no ghost is ever listed).
//! - [`router`] / [`PresenceServer`]: the HTTP API (axum) served by `presence-server`.
//! - [`PresenceClient`]: the HTTP client SDK, itself a [`PresenceStore`], wrapped in the
//!   `resilience` primitives (rate limit, circuit breakers, retries); given the node's key
//!   ([`PresenceClient::with_signer`]) it signs logins and carries the session.
//! - [`RedisProcess`]: a throwaway `redis-server` on a free loopback port (tests, load run).
//! - [`RedisCluster`], [`RedisSentinel`]: a throwaway Redis Cluster, or a primary + replica
//!   watched by three sentinels, of such servers (the failover tests).
//! - [`load`]: the bounded loopback load run (`presence-server bench`).
//!
//! ## HTTP API
//! | route | body / query | answers |
//! |---|---|---|
//! | `POST /presence/login` | a [`SignedLogin`] as JSON (node info, public key, timestamp, ML-DSA-87 signature) | 200 `{ok, ttl_ms, heartbeat_ms, session}`, 403 (key not the node id's, bad signature, stale, replayed), 400 |
//! | `POST /presence/heartbeat` | `{"node_id": "…", "session": "…"}` | 200, 403 `bad_session`, 404 unknown node, 400 |
//! | `POST /presence/logout` | `{"node_id": "…", "session": "…"}` | 200, 403 `bad_session`, 404, 400 |
//! | `GET /presence` | `?role=light&city=JP-13` (both optional) | 200 `{count, nodes}`, 400 bad role |
//! | `GET /presence/events` | | SSE: `join` / `update` / `leave` (data = [`PresenceEvent`] JSON), `resync` |
//! | `GET /healthz` | | 200, 503 while the backend (or its event feed) is down |
//! | `GET /metrics` | | Prometheus text |
//!
//! Only the node itself can change its presence ([`auth`](SignedLogin)): a login is signed
//! by the node's ML-DSA-87 key over its info and a timestamp within 30 s of the server's
//! clock and newer than its last accepted login; the answer carries a random session token
//! that heartbeats and logouts must show (stores keep only its BLAKE3, checked atomically
//! with the change: [`SessionStore`]). Info strings are at most [`MAX_INFO_FIELD`] bytes,
//! bodies at most [`MAX_BODY_BYTES`]. The token travels in the clear over plain HTTP: put
//! the API behind TLS where the path to it is not trusted.
//!
//! Errors are JSON `{"error": code, "message": text}`; a backend outage is 503, and the
//! `/presence` routes answer 429 with `Retry-After` beyond 30 req/s (burst 60) per client IP.
//!
//! ```
//! use presence::{MemoryPresenceStore, PresenceStore, ListFilter, SystemClock};
//! use std::{sync::Arc, time::Duration};
//! # use dag_core::{NodeId, NodeInfo, Role};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> presence::Result<()> {
//! let store = MemoryPresenceStore::new(Duration::from_secs(6), Arc::new(SystemClock));
//! # let info = NodeInfo { node_id: NodeId::from_bytes([1; 32]), role: Role::Light,
//! #   grpc_addr: "127.0.0.1:1".into(), city_id: "JP-13".into(), zone: String::new(),
//! #   lat: 35.0, lon: 139.0, free_capacity: 0, load: 0.0, version: "0".into(),
//! #   session_start_ms: 0 };
//! store.login(info.clone()).await?;
//! store.heartbeat(info.node_id).await?;
//! assert_eq!(store.list(&ListFilter::default()).await?.len(), 1);
//! # Ok(()) }
//! ```

mod auth;
mod client;
mod clock;
mod error;
pub mod load;
mod memory;
mod metrics_setup;
mod redact;
mod redis;
mod redis_process;
mod server;
mod sse;
mod store;
mod sweeper;
mod types;

pub use auth::{
    AuthFailure, LOGIN_DOMAIN, MAX_LOGIN_SKEW, Session, SessionHash, SessionToken, SignedLogin,
};
pub use client::{PresenceClient, PresenceClientConfig};
pub use clock::{SystemClock, TokioClock};
pub use error::{Error, Result};
pub use memory::MemoryPresenceStore;
pub use metrics_setup::prometheus_handle;
pub use redact::redact_uri;
pub use redis::{RedisPresenceStore, RedisStoreConfig, RedisTarget};
pub use redis_process::{RedisCluster, RedisProcess, RedisSentinel};
pub use server::{
    BackendKind, MAX_BODY_BYTES, MAX_INFO_FIELD, PresenceServer, PresenceServerHandle,
    RateLimitConfig, ServerConfig, router,
};
pub use store::{EventStream, PresenceStore, SessionStore};
pub use sweeper::{SweeperHandle, spawn_sweeper};
pub use types::{LeaveReason, ListFilter, PresenceEvent};

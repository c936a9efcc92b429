//! Redis presence store. Layout under a key prefix `P` (default `presence`):
//! `P:online` is a sorted set of node ids (hex) scored by last-seen ms; `P:node:<id>` is a
//! hash (`info` JSON, `role`, `city`, `last_seen`, `session`: the hex BLAKE3 of the session
//! token, empty after a trusted login); `P:login:<id>` holds the last accepted session
//! login's timestamp for twice the login skew (the replay check); events are published on
//! `P:events`.
//! Every change is one Lua script, so the set, the hash and the event never disagree, and
//! expiry removes both the set member and the hash. Commands go through a
//! `ConnectionManager`, which reconnects after a Redis restart; while Redis is down every
//! call fails with [`Error::Unavailable`] (nothing is cached, so nothing stale is served).
//!
//! **Redis Cluster**: a URI `redis+cluster://host:port,host:port,…` (any reachable nodes of
//! the cluster) selects a cluster connection (`cluster-async`: it follows the topology and
//! MOVED/ASK redirections after a failover). The prefix is then hash-tagged (`{P}:online`,
//! `{P}:node:<id>`), so every key of the store lives in one slot and each Lua script stays
//! on one primary (cluster-safe). Events use classic PUBLISH, which a cluster forwards to
//! every node: the relay subscribes on any node and moves to another when that one fails.
//! A login or logout is acknowledged only after `WAIT` reports the configured number of
//! replicas holding it (default 1 in a cluster), so a primary killed right after the answer
//! loses neither (a replica that takes over has it).
//!
//! **Redis Sentinel**: `redis+sentinel://host:port,host:port,…/<primary name>` lists
//! sentinels; the store asks them for the current primary, talks to it, and asks again after
//! any failed call (a failover moved the primary). Events come from a subscription on the
//! primary (PUBLISH is replicated, so a demoted primary still relays them until it is
//! dropped). As on a cluster, changes wait for one replica by default.
//!
//! **TLS**: `rediss://…` (one server) and `rediss+cluster://…` (a cluster) connect over TLS
//! (rustls); the server certificate is checked against
//! [`RedisStoreConfig::tls_ca_file`] when set, else against the system's roots.

use crate::{
    AuthFailure, Error, EventStream, ListFilter, MAX_LOGIN_SKEW, PresenceEvent, PresenceStore,
    Result, Session, SessionHash, SessionStore,
};
use ::redis::aio::MultiplexedConnection;
use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use ::redis::sentinel::{SentinelClient, SentinelServerType};
use ::redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, Script, Value};
use dag_core::{Clock, NodeId, NodeInfo};
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

const LOGIN: &str = r#"
if ARGV[10] ~= '' then
  local last = redis.call('GET', KEYS[3])
  if last and tonumber(last) >= tonumber(ARGV[10]) then return 'replayed' end
  redis.call('SET', KEYS[3], ARGV[10], 'PX', ARGV[11])
end
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
local kind = 'join'
if old then
  if tonumber(old) >= tonumber(ARGV[3]) then
    kind = 'update'
  else
    redis.call('PUBLISH', ARGV[7], '{"type":"leave","node_id":"' .. ARGV[1] .. '","reason":"expired"}')
  end
end
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'info', ARGV[4], 'role', ARGV[5], 'city', ARGV[6], 'last_seen', ARGV[2], 'session', ARGV[9])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
redis.call('PUBLISH', ARGV[7], '{"type":"' .. kind .. '","node":' .. ARGV[4] .. '}')
return kind
"#;

const HEARTBEAT: &str = r#"
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not old then return 0 end
if tonumber(old) < tonumber(ARGV[3]) or redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[4], '{"type":"leave","node_id":"' .. ARGV[1] .. '","reason":"expired"}')
  return 0
end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[2], 'session') ~= ARGV[6] then return -1 end
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], 'last_seen', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"#;

const LOGOUT: &str = r#"
if ARGV[3] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 and redis.call('HGET', KEYS[2], 'session') ~= ARGV[3] then
  return -1
end
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
if removed == 1 then
  redis.call('PUBLISH', ARGV[2], '{"type":"leave","node_id":"' .. ARGV[1] .. '","reason":"logout"}')
end
return removed
"#;

const SWEEP: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', ARGV[2] .. id)
  redis.call('PUBLISH', ARGV[3], '{"type":"leave","node_id":"' .. id .. '","reason":"expired"}')
end
return ids
"#;

const LIST: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
local out = {}
for _, id in ipairs(ids) do
  local info = redis.call('HGET', ARGV[2] .. id, 'info')
  if info then table.insert(out, info) end
end
return out
"#;

/// Settings of a [`RedisPresenceStore`].
#[derive(Debug, Clone, PartialEq)]
pub struct RedisStoreConfig {
    /// `redis://host:port/db` (one server), or `redis+cluster://host:port,host:port,…`
    /// (a Redis Cluster, reached through any of the listed nodes).
    pub uri: String,
    /// Online TTL (6 s).
    pub ttl: Duration,
    /// Key prefix, so several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// Timeout of one command; past it the call fails with `Unavailable`.
    pub response_timeout: Duration,
    /// Timeout of one connection attempt.
    pub connection_timeout: Duration,
    /// Most expired nodes removed by one sweep call (bounds the script's run time).
    pub sweep_batch: u32,
    /// Replicas that must hold a login or logout before it is acknowledged (`WAIT`).
    /// `None`: 1 on a cluster, 0 on a single server. Past `response_timeout` without
    /// them the call fails `Unavailable` (the change may stand; repeating it is safe).
    pub min_replica_acks: Option<u32>,
    /// PEM file of the CA that signed the Redis servers' certificates, for `rediss://` and
    /// `rediss+cluster://` URIs (`None`: the system's roots).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

/// Where a [`RedisStoreConfig::uri`] points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`redis://…`, `rediss://…`, `unix://…`).
    Single(String),
    /// Seed nodes of a cluster, each as `redis://host:port`.
    Cluster(Vec<String>),
    /// Sentinels (each `redis://host:port`) and the name of the primary they watch.
    Sentinel {
        /// The sentinels.
        sentinels: Vec<String>,
        /// The monitored primary's name (`sentinel monitor <name> …`).
        primary: String,
    },
}

impl RedisStoreConfig {
    /// The CA certificate of [`tls_ca_file`](Self::tls_ca_file), read, for redis-rs.
    fn tls_certificates(&self) -> Result<Option<::redis::TlsCertificates>> {
        let Some(path) = &self.tls_ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|source| Error::Io {
            what: format!("reading the Redis CA file {}", path.display()),
            source,
        })?;
        Ok(Some(::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }

    /// Parses [`uri`](Self::uri): `redis+cluster://h:p,h:p` (or `rediss+cluster://` over
    /// TLS) is a cluster,
    /// `redis+sentinel://h:p,h:p/name` sentinels watching primary `name`, anything else one
    /// server. A cluster or sentinel URI without hosts (or a sentinel URI without a name) is
    /// a [`Error::Config`].
    pub fn target(&self) -> Result<RedisTarget> {
        let hosts = |list: &str, what: &str| -> Result<Vec<String>> {
            let nodes: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| format!("redis://{n}"))
                .collect();
            if nodes.is_empty() {
                return Err(Error::Config(format!(
                    "redis uri {:?}: a {what} uri lists at least one host:port",
                    self.uri
                )));
            }
            Ok(nodes)
        };
        if let Some(rest) = self.uri.strip_prefix("redis+cluster://") {
            return Ok(RedisTarget::Cluster(hosts(
                rest.trim_end_matches('/'),
                "cluster",
            )?));
        }
        if let Some(rest) = self.uri.strip_prefix("rediss+cluster://") {
            let nodes = hosts(rest.trim_end_matches('/'), "cluster")?;
            return Ok(RedisTarget::Cluster(
                nodes
                    .into_iter()
                    .map(|n| n.replacen("redis://", "rediss://", 1))
                    .collect(),
            ));
        }
        if let Some(rest) = self.uri.strip_prefix("redis+sentinel://") {
            let (list, name) = rest.split_once('/').unwrap_or((rest, ""));
            if name.is_empty() || name.contains('/') {
                return Err(Error::Config(format!(
                    "redis uri {:?}: a sentinel uri ends with /<primary name>",
                    self.uri
                )));
            }
            return Ok(RedisTarget::Sentinel {
                sentinels: hosts(list, "sentinel")?,
                primary: name.to_string(),
            });
        }
        Ok(RedisTarget::Single(self.uri.clone()))
    }
}

/// The command connection: one server through a reconnecting manager, a cluster, or the
/// primary named by sentinels.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

/// A connection to whatever server the sentinels name as primary: resolved on first use and
/// again after any failed call.
#[derive(Clone)]
struct SentinelConn {
    sentinel: Arc<tokio::sync::Mutex<SentinelClient>>,
    current: Arc<std::sync::Mutex<Option<MultiplexedConnection>>>,
    config: AsyncConnectionConfig,
}

impl SentinelConn {
    async fn connection(&self) -> ::redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(c);
        }
        let client = self.sentinel.lock().await.async_get_client().await?;
        let c = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// After a failed call: the primary may have moved, ask the sentinels next time.
    fn forget(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = async { self.connection().await?.req_packed_command(cmd).await }.await;
            if r.is_err() {
                self.forget();
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = async {
                self.connection()
                    .await?
                    .req_packed_commands(cmd, offset, count)
                    .await
            }
            .await;
            if r.is_err() {
                self.forget();
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Where the event relay subscribes: any of fixed servers, or the sentinels' primary.
enum Subscribers {
    Fixed(Vec<Client>),
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

impl Default for RedisStoreConfig {
    fn default() -> Self {
        RedisStoreConfig {
            uri: "redis://127.0.0.1:6379".into(),
            ttl: Duration::from_secs(6),
            key_prefix: "presence".into(),
            response_timeout: Duration::from_secs(1),
            connection_timeout: Duration::from_millis(500),
            sweep_batch: 1000,
            min_replica_acks: None,
            tls_ca_file: None,
        }
    }
}

/// What the relay passes to subscribers.
#[derive(Debug, Clone)]
enum Relayed {
    Event(PresenceEvent),
    /// Events may have been lost (the subscription was re-made).
    Missed,
    /// A subscription marker came back (see `subscribe`).
    Marker(String),
}

/// The `type` of a subscription marker on the event channel (not a presence event).
const MARKER: &str = "subscribe-marker";

/// Numbers this process's markers.
static MARKERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(serde::Deserialize)]
struct Marker {
    #[serde(rename = "type")]
    kind: String,
    id: String,
}

#[derive(Debug)]
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The Redis [`PresenceStore`]. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct RedisPresenceStore {
    conn: Conn,
    replica_acks: u32,
    response_timeout: Duration,
    clock: Arc<dyn Clock>,
    ttl_ms: u64,
    zset: String,
    node_prefix: String,
    login_prefix: String,
    channel: String,
    sweep_batch: u32,
    events: broadcast::Sender<Relayed>,
    subscribed: Arc<AtomicBool>,
    _relay: Arc<AbortOnDrop>,
    scripts: Arc<Scripts>,
}

struct Scripts {
    login: Script,
    heartbeat: Script,
    logout: Script,
    sweep: Script,
    list: Script,
}

impl std::fmt::Debug for RedisPresenceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresenceStore")
            .field("zset", &self.zset)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl RedisPresenceStore {
    /// Connects (Redis must be reachable now) and starts the event relay, which follows
    /// `P:events` and resubscribes after reconnects.
    pub async fn connect(config: RedisStoreConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        let certs = config.tls_certificates()?;
        if config.uri.starts_with("rediss") {
            // redis-rs builds its rustls config from the process default provider; with
            // more than one provider compiled in, none is picked by itself. Ours is
            // aws-lc-rs (as for every other TLS link); an already installed one is kept.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let open = |uri: &str| {
            match &certs {
                Some(c) if uri.starts_with("rediss://") => Client::build_with_tls(uri, c.clone()),
                _ => Client::open(uri),
            }
            .map_err(|e| Error::Config(format!("redis uri {uri:?}: {e}")))
        };
        let (conn, subscribers, prefix, default_acks) = match config.target()? {
            RedisTarget::Single(uri) => {
                let client = open(&uri)?;
                let mgr_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connection_timeout))
                    .set_response_timeout(Some(config.response_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let conn = ConnectionManager::new_with_config(client.clone(), mgr_config)
                    .await
                    .map_err(|e| Error::redis("connect", e))?;
                (
                    Conn::Single(conn),
                    Subscribers::Fixed(vec![client]),
                    config.key_prefix.clone(),
                    0,
                )
            }
            RedisTarget::Cluster(nodes) => {
                let subscribers = nodes.iter().map(|n| open(n)).collect::<Result<Vec<_>>>()?;
                let mut builder = ClusterClient::builder(nodes.clone());
                if let Some(c) = &certs {
                    builder = builder.certs(c.clone());
                }
                let conn = builder
                    .connection_timeout(config.connection_timeout)
                    .response_timeout(config.response_timeout)
                    .retries(3)
                    .build()
                    .map_err(|e| Error::Config(format!("redis cluster {nodes:?}: {e}")))?
                    .get_async_connection()
                    .await
                    .map_err(|e| Error::redis("connect", e))?;
                // One hash slot for every key of the store: scripts stay on one primary.
                (
                    Conn::Cluster(conn),
                    Subscribers::Fixed(subscribers),
                    format!("{{{}}}", config.key_prefix),
                    1,
                )
            }
            RedisTarget::Sentinel { sentinels, primary } => {
                let client = SentinelClient::build(
                    sentinels.clone(),
                    primary.clone(),
                    None,
                    SentinelServerType::Master,
                )
                .map_err(|e| Error::Config(format!("redis sentinels {sentinels:?}: {e}")))?;
                let sentinel = Arc::new(tokio::sync::Mutex::new(client));
                let conn = SentinelConn {
                    sentinel: sentinel.clone(),
                    current: Arc::default(),
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(config.connection_timeout))
                        .set_response_timeout(Some(config.response_timeout)),
                };
                conn.connection()
                    .await
                    .map_err(|e| Error::redis("connect", e))?;
                (
                    Conn::Sentinel(conn),
                    Subscribers::Sentinel(sentinel),
                    config.key_prefix.clone(),
                    1,
                )
            }
        };
        let p = &prefix;
        let channel = format!("{p}:events");
        let (events, _) = broadcast::channel(4096);
        let (first, at) = subscribe_any(&subscribers, 0, &channel)
            .await
            .map_err(|e| Error::redis("subscribe", e))?;
        let subscribed = Arc::new(AtomicBool::new(true));
        let relay = tokio::spawn(relay(
            subscribers,
            at,
            channel.clone(),
            events.clone(),
            first,
            subscribed.clone(),
        ));
        Ok(RedisPresenceStore {
            conn,
            replica_acks: config.min_replica_acks.unwrap_or(default_acks),
            response_timeout: config.response_timeout,
            clock,
            ttl_ms: config.ttl.as_millis() as u64,
            zset: format!("{p}:online"),
            node_prefix: format!("{p}:node:"),
            login_prefix: format!("{p}:login:"),
            channel,
            sweep_batch: config.sweep_batch.max(1),
            events,
            subscribed,
            _relay: Arc::new(AbortOnDrop(relay.abort_handle())),
            scripts: Arc::new(Scripts {
                login: Script::new(LOGIN),
                heartbeat: Script::new(HEARTBEAT),
                logout: Script::new(LOGOUT),
                sweep: Script::new(SWEEP),
                list: Script::new(LIST),
            }),
        })
    }

    /// Runs `cmd` on the server that holds the store's keys (on a cluster: the primary of
    /// their slot, whatever the command's own routing would be).
    async fn on_primary(&self, conn: &mut Conn, cmd: Cmd) -> ::redis::RedisResult<Value> {
        match conn {
            Conn::Single(c) => cmd.query_async::<Value>(c).await,
            Conn::Sentinel(c) => cmd.query_async::<Value>(c).await,
            Conn::Cluster(c) => {
                let route = Route::with_key(self.zset.as_bytes(), SlotAddr::Master);
                c.route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                )
                .await
            }
        }
    }

    /// Waits until [`RedisStoreConfig::min_replica_acks`] replicas hold every write made so
    /// far on this connection (`WAIT`, on the primary of the store's slot); fewer within
    /// the response timeout is `Unavailable`.
    async fn replicated(&self, conn: &mut Conn, op: &'static str) -> Result<()> {
        if self.replica_acks == 0 {
            return Ok(());
        }
        let wait_ms = (self.response_timeout.as_millis() as u64 / 2).max(1);
        let mut cmd = ::redis::cmd("WAIT");
        cmd.arg(self.replica_acks).arg(wait_ms);
        let value = self
            .on_primary(conn, cmd)
            .await
            .map_err(|e| Error::redis(op, e))?;
        let acked = ::redis::from_redis_value::<u32>(value).map_err(|e| Error::Corrupt {
            what: format!("WAIT answer to {op}"),
            detail: e.to_string(),
        })?;
        if acked < self.replica_acks {
            return Err(Error::Unavailable {
                backend: "redis",
                op,
                detail: format!(
                    "held by {acked} of the {} replicas required within {wait_ms} ms",
                    self.replica_acks
                ),
            });
        }
        Ok(())
    }

    fn hash_key(&self, id: &str) -> String {
        format!("{}{}", self.node_prefix, id)
    }

    /// Safety net only: a hash that nobody sweeps disappears after 10 TTLs (at least a
    /// minute). The sorted-set score, not this expiry, decides who is online.
    fn hash_expiry_ms(&self) -> u64 {
        (self.ttl_ms * 10).max(60_000)
    }

    fn now_and_cutoff(&self) -> (u64, u64) {
        let now = self.clock.now_ms();
        (now, now.saturating_sub(self.ttl_ms))
    }

    async fn login_inner(&self, info: NodeInfo, session: Option<Session>) -> Result<()> {
        let (now, cutoff) = self.now_and_cutoff();
        let id = info.node_id.to_hex();
        let json = serde_json::to_string(&info).map_err(|e| Error::Corrupt {
            what: format!("node info of {id}"),
            detail: e.to_string(),
        })?;
        let mut conn = self.conn.clone();
        let kind: String = self
            .scripts
            .login
            .key(&self.zset)
            .key(self.hash_key(&id))
            .key(format!("{}{}", self.login_prefix, id))
            .arg(&id)
            .arg(now)
            .arg(cutoff)
            .arg(json)
            .arg(info.role.as_str())
            .arg(&info.city_id)
            .arg(&self.channel)
            .arg(self.hash_expiry_ms())
            .arg(session.map_or_else(String::new, |s| s.hash.to_hex()))
            .arg(session.map_or_else(String::new, |s| s.issued_at_ms.to_string()))
            .arg(2 * MAX_LOGIN_SKEW.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis("login", e))?;
        self.replicated(&mut conn, "login").await?;
        if kind == "replayed" {
            return Err(Error::Unauthorized {
                node: info.node_id,
                reason: AuthFailure::Replayed,
            });
        }
        Ok(())
    }

    async fn heartbeat_inner(&self, node: NodeId, session: Option<SessionHash>) -> Result<()> {
        let (now, cutoff) = self.now_and_cutoff();
        let id = node.to_hex();
        let mut conn = self.conn.clone();
        let ok: i64 = self
            .scripts
            .heartbeat
            .key(&self.zset)
            .key(self.hash_key(&id))
            .arg(&id)
            .arg(now)
            .arg(cutoff)
            .arg(&self.channel)
            .arg(self.hash_expiry_ms())
            .arg(session.map_or_else(String::new, |s| s.to_hex()))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis("heartbeat", e))?;
        session_answer(node, ok)
    }

    async fn logout_inner(&self, node: NodeId, session: Option<SessionHash>) -> Result<()> {
        let id = node.to_hex();
        let mut conn = self.conn.clone();
        let removed: i64 = self
            .scripts
            .logout
            .key(&self.zset)
            .key(self.hash_key(&id))
            .arg(&id)
            .arg(&self.channel)
            .arg(session.map_or_else(String::new, |s| s.to_hex()))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis("logout", e))?;
        self.replicated(&mut conn, "logout").await?;
        session_answer(node, removed)
    }
}

/// What the heartbeat and logout scripts answer: 1 done, -1 the session does not match,
/// anything else the node is not online.
fn session_answer(node: NodeId, answer: i64) -> Result<()> {
    match answer {
        1 => Ok(()),
        -1 => Err(Error::Unauthorized {
            node,
            reason: AuthFailure::BadSession,
        }),
        _ => Err(Error::UnknownNode(node)),
    }
}

#[async_trait::async_trait]
impl SessionStore for RedisPresenceStore {
    async fn login_session(&self, info: NodeInfo, session: Session) -> Result<()> {
        self.login_inner(info, Some(session)).await
    }

    async fn heartbeat_session(&self, node: NodeId, session: SessionHash) -> Result<()> {
        self.heartbeat_inner(node, Some(session)).await
    }

    async fn logout_session(&self, node: NodeId, session: SessionHash) -> Result<()> {
        self.logout_inner(node, Some(session)).await
    }
}

/// Subscribes to `channel`: on the first of the fixed servers that answers, trying them in
/// turn from index `start`, or on the primary the sentinels name; returns the subscription
/// and the index used.
async fn subscribe_any(
    subscribers: &Subscribers,
    start: usize,
    channel: &str,
) -> std::result::Result<(PubSub, usize), ::redis::RedisError> {
    let clients = match subscribers {
        Subscribers::Fixed(clients) => clients.clone(),
        Subscribers::Sentinel(s) => vec![s.lock().await.async_get_client().await?],
    };
    let mut last = None;
    for k in 0..clients.len() {
        let at = (start + k) % clients.len();
        match clients[at].get_async_pubsub().await {
            Ok(mut p) => match p.subscribe(channel).await {
                Ok(()) => return Ok((p, at)),
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        ::redis::RedisError::from((
            ::redis::ErrorKind::Client,
            "no redis server to subscribe on",
        ))
    }))
}

/// Follows the event channel; `None` on the broadcast means "events may have been lost".
/// `first` is the subscription made by `connect` (on `clients[at]`), so no event published
/// after `connect` returns is missed. When a subscription ends, the next one is tried on
/// the next server (a cluster forwards PUBLISH to every node).
async fn relay(
    clients: Subscribers,
    mut at: usize,
    channel: String,
    tx: broadcast::Sender<Relayed>,
    first: PubSub,
    subscribed: Arc<AtomicBool>,
) {
    let mut current = Some(first);
    let mut backoff = Duration::from_millis(50);
    loop {
        let pubsub = match current.take() {
            Some(p) => Some(p),
            None => match subscribe_any(&clients, at + 1, &channel).await {
                Ok((p, used)) => {
                    at = used;
                    // Reconnected: whatever was published meanwhile is lost.
                    let _ = tx.send(Relayed::Missed);
                    Some(p)
                }
                Err(_) => None,
            },
        };
        if let Some(mut pubsub) = pubsub {
            backoff = Duration::from_millis(50);
            subscribed.store(true, Ordering::SeqCst);
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let bytes = msg.get_payload_bytes();
                match serde_json::from_slice::<PresenceEvent>(bytes) {
                    Ok(ev) => {
                        let _ = tx.send(Relayed::Event(ev));
                    }
                    Err(e) => match serde_json::from_slice::<Marker>(bytes) {
                        Ok(m) if m.kind == MARKER => {
                            let _ = tx.send(Relayed::Marker(m.id));
                        }
                        _ => tracing::warn!(error = %e, "undecodable presence event ignored"),
                    },
                }
            }
            subscribed.store(false, Ordering::SeqCst);
            tracing::warn!("presence event subscription lost; reconnecting");
            let _ = tx.send(Relayed::Missed);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

fn decode_info(json: &str) -> Result<NodeInfo> {
    serde_json::from_str(json).map_err(|e| Error::Corrupt {
        what: "node info in redis".into(),
        detail: e.to_string(),
    })
}

#[async_trait::async_trait]
impl PresenceStore for RedisPresenceStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn login(&self, info: NodeInfo) -> Result<()> {
        self.login_inner(info, None).await
    }

    async fn heartbeat(&self, node: NodeId) -> Result<()> {
        self.heartbeat_inner(node, None).await
    }

    async fn logout(&self, node: NodeId) -> Result<()> {
        self.logout_inner(node, None).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<NodeInfo>> {
        let (_, cutoff) = self.now_and_cutoff();
        let mut conn = self.conn.clone();
        let raw: Vec<String> = self
            .scripts
            .list
            .key(&self.zset)
            .arg(cutoff)
            .arg(&self.node_prefix)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis("list", e))?;
        let mut out = Vec::with_capacity(raw.len());
        for json in raw {
            let info = decode_info(&json)?;
            if filter.matches(&info) {
                out.push(info);
            }
        }
        out.sort_by_key(|i| i.node_id);
        Ok(out)
    }

    async fn subscribe(&self) -> Result<EventStream> {
        // Fail now rather than hand out a stream that stays silent while Redis is down.
        self.ping().await?;
        let mut rx = self.events.subscribe();
        // "Events from now on": events published before this call may still be on their
        // way to the relay (in a cluster they travel over the cluster bus). A marker
        // published now on the store's primary travels behind them; what the relay passed
        // on before the marker is dropped.
        let id = format!(
            "{}-{}-{}",
            std::process::id(),
            self.clock.now_ms(),
            MARKERS.fetch_add(1, Ordering::Relaxed)
        );
        let marker = serde_json::json!({ "type": MARKER, "id": id }).to_string();
        let mut publish = ::redis::cmd("PUBLISH");
        publish.arg(&self.channel).arg(marker);
        let mut conn = self.conn.clone();
        self.on_primary(&mut conn, publish)
            .await
            .map_err(|e| Error::redis("subscribe", e))?;
        let seen = tokio::time::timeout(self.response_timeout, async {
            loop {
                match rx.recv().await {
                    Ok(Relayed::Marker(m)) if m == id => return true,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        })
        .await;
        if seen != Ok(true) {
            return Err(Error::Unavailable {
                backend: "redis",
                op: "subscribe",
                detail: "the subscription marker did not come back".into(),
            });
        }
        Ok(BroadcastStream::new(rx)
            .filter_map(|item| {
                futures::future::ready(match item {
                    Ok(Relayed::Event(ev)) => Some(Ok(ev)),
                    Ok(Relayed::Marker(_)) => None,
                    Ok(Relayed::Missed) => Some(Err(Error::EventsMissed { missed: 0 })),
                    Err(BroadcastStreamRecvError::Lagged(missed)) => {
                        Some(Err(Error::EventsMissed { missed }))
                    }
                })
            })
            .boxed())
    }

    async fn sweep(&self) -> Result<Vec<NodeId>> {
        let (_, cutoff) = self.now_and_cutoff();
        let mut conn = self.conn.clone();
        let ids: Vec<String> = self
            .scripts
            .sweep
            .key(&self.zset)
            .arg(cutoff)
            .arg(&self.node_prefix)
            .arg(&self.channel)
            .arg(self.sweep_batch)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis("sweep", e))?;
        ids.iter()
            .map(|h| {
                NodeId::from_hex(h).map_err(|e| Error::Corrupt {
                    what: format!("node id {h:?} in redis"),
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    /// Healthy means commands work *and* the event relay is subscribed, so a subscriber
    /// never gets a stream that silently misses events.
    async fn ping(&self) -> Result<()> {
        if !self.subscribed.load(Ordering::SeqCst) {
            return Err(Error::Unavailable {
                backend: "redis",
                op: "follow events",
                detail: "event subscription is reconnecting".into(),
            });
        }
        let mut conn = self.conn.clone();
        let _: String = ::redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("ping", e))?;
        Ok(())
    }
}

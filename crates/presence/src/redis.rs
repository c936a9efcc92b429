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

use crate::{
    AuthFailure, Error, EventStream, ListFilter, MAX_LOGIN_SKEW, PresenceEvent, PresenceStore,
    Result, Session, SessionHash, SessionStore,
};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use ::redis::{Client, Script};
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
    /// `redis://host:port/db`.
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
        }
    }
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
    conn: ConnectionManager,
    clock: Arc<dyn Clock>,
    ttl_ms: u64,
    zset: String,
    node_prefix: String,
    login_prefix: String,
    channel: String,
    sweep_batch: u32,
    events: broadcast::Sender<Option<PresenceEvent>>,
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
        let client = Client::open(config.uri.as_str())
            .map_err(|e| Error::Config(format!("redis uri {:?}: {e}", config.uri)))?;
        let mgr_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connection_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client.clone(), mgr_config)
            .await
            .map_err(|e| Error::redis("connect", e))?;
        let p = &config.key_prefix;
        let channel = format!("{p}:events");
        let (events, _) = broadcast::channel(4096);
        let mut first = client
            .get_async_pubsub()
            .await
            .map_err(|e| Error::redis("subscribe", e))?;
        first
            .subscribe(&channel)
            .await
            .map_err(|e| Error::redis("subscribe", e))?;
        let subscribed = Arc::new(AtomicBool::new(true));
        let relay = tokio::spawn(relay(
            client,
            channel.clone(),
            events.clone(),
            first,
            subscribed.clone(),
        ));
        Ok(RedisPresenceStore {
            conn,
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
        match ok {
            1 => Ok(()),
            -1 => Err(Error::Unauthorized {
                node,
                reason: AuthFailure::BadSession,
            }),
            _ => Err(Error::UnknownNode(node)),
        }
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
        match removed {
            1 => Ok(()),
            -1 => Err(Error::Unauthorized {
                node,
                reason: AuthFailure::BadSession,
            }),
            _ => Err(Error::UnknownNode(node)),
        }
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

/// Follows the event channel; `None` on the broadcast means "events may have been lost".
/// `first` is the subscription made by `connect`, so no event published after `connect`
/// returns is missed.
async fn relay(
    client: Client,
    channel: String,
    tx: broadcast::Sender<Option<PresenceEvent>>,
    first: PubSub,
    subscribed: Arc<AtomicBool>,
) {
    let mut current = Some(first);
    let mut backoff = Duration::from_millis(50);
    loop {
        let pubsub = match current.take() {
            Some(p) => Some(p),
            None => match client.get_async_pubsub().await {
                Ok(mut p) => {
                    if p.subscribe(&channel).await.is_ok() {
                        // Reconnected: whatever was published meanwhile is lost.
                        let _ = tx.send(None);
                        Some(p)
                    } else {
                        None
                    }
                }
                Err(_) => None,
            },
        };
        if let Some(mut pubsub) = pubsub {
            backoff = Duration::from_millis(50);
            subscribed.store(true, Ordering::SeqCst);
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                match serde_json::from_slice::<PresenceEvent>(msg.get_payload_bytes()) {
                    Ok(ev) => {
                        let _ = tx.send(Some(ev));
                    }
                    Err(e) => tracing::warn!(error = %e, "undecodable presence event ignored"),
                }
            }
            subscribed.store(false, Ordering::SeqCst);
            tracing::warn!("presence event subscription lost; reconnecting");
            let _ = tx.send(None);
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
        let rx = self.events.subscribe();
        Ok(BroadcastStream::new(rx)
            .map(|item| match item {
                Ok(Some(ev)) => Ok(ev),
                Ok(None) => Err(Error::EventsMissed { missed: 0 }),
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    Err(Error::EventsMissed { missed })
                }
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

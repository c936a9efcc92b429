//! Node-list configuration: documented defaults in `Default`, overrides from the
//! environment (NODE_ID, PRESENCE_BACKEND, PRESENCE_REDIS_URI, PRESENCE_HTTP_ENDPOINT,
//! NODELIST_CACHE_TTL_SEC, NODELIST_HEARTBEAT_SEC).

use crate::{Error, Result};
use dag_core::NodeId;
use presence::{
    MemoryPresenceStore, PresenceClient, PresenceClientConfig, PresenceStore, RedisPresenceStore,
    RedisStoreConfig, SystemClock,
};
use std::sync::Arc;
use std::time::Duration;

/// Where presence lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PresenceBackend {
    /// Talk to Redis directly.
    Redis,
    /// Talk to a presence server over HTTP.
    Http,
    /// A store private to this process (share one store in-process with
    /// [`NodeListManager::start`](crate::NodeListManager::start) instead).
    #[default]
    Memory,
}

impl std::str::FromStr for PresenceBackend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "redis" => Ok(PresenceBackend::Redis),
            "http" => Ok(PresenceBackend::Http),
            "memory" => Ok(PresenceBackend::Memory),
            _ => Err("expected redis, http or memory".into()),
        }
    }
}

/// Settings of the node list and its manager.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeListConfig {
    /// This node's id (`NODE_ID`, 64 hex), if set from the environment.
    pub node_id: Option<NodeId>,
    /// Backend (`PRESENCE_BACKEND`, default memory).
    pub backend: PresenceBackend,
    /// Redis URI (`PRESENCE_REDIS_URI`).
    pub redis_uri: String,
    /// CA (PEM file) of the Redis servers' certificates for `rediss://` URIs
    /// (`PRESENCE_REDIS_TLS_CA`; unset: the system's roots).
    pub redis_tls_ca: Option<std::path::PathBuf>,
    /// Presence server (`PRESENCE_HTTP_ENDPOINT`).
    pub http_endpoint: String,
    /// Local view TTL (`NODELIST_CACHE_TTL_SEC`, 10 s).
    pub cache_ttl: Duration,
    /// Heartbeat interval (`NODELIST_HEARTBEAT_SEC`, 3 s).
    pub heartbeat: Duration,
    /// Full refresh interval (the fallback when events are lost), 3 s.
    pub poll_interval: Duration,
    /// Online TTL of a store this config creates (memory / redis), 6 s.
    pub presence_ttl: Duration,
}

impl Default for NodeListConfig {
    fn default() -> Self {
        NodeListConfig {
            node_id: None,
            backend: PresenceBackend::Memory,
            redis_uri: "redis://127.0.0.1:6379".into(),
            redis_tls_ca: None,
            http_endpoint: "http://127.0.0.1:8080".into(),
            cache_ttl: Duration::from_secs(10),
            heartbeat: Duration::from_secs(3),
            poll_interval: Duration::from_secs(3),
            presence_ttl: Duration::from_secs(6),
        }
    }
}

fn secs(key: &'static str, v: &str) -> Result<Duration> {
    let n: f64 = v.trim().parse().map_err(|_| Error::Config {
        key,
        value: v.into(),
        reason: "expected a number of seconds".into(),
    })?;
    if !(n.is_finite() && n > 0.0 && n < 86_400.0) {
        return Err(Error::Config {
            key,
            value: v.into(),
            reason: "must be > 0 and < 86400".into(),
        });
    }
    Ok(Duration::from_secs_f64(n))
}

impl NodeListConfig {
    /// Defaults overridden by the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Defaults overridden by `lookup(name)` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut c = NodeListConfig::default();
        if let Some(v) = lookup("NODE_ID") {
            c.node_id = Some(NodeId::from_hex(&v).map_err(|e| Error::Config {
                key: "NODE_ID",
                value: v.clone(),
                reason: e.to_string(),
            })?);
        }
        if let Some(v) = lookup("PRESENCE_BACKEND") {
            c.backend = v.parse().map_err(|reason| Error::Config {
                key: "PRESENCE_BACKEND",
                value: v.clone(),
                reason,
            })?;
        }
        if let Some(v) = lookup("PRESENCE_REDIS_URI") {
            c.redis_uri = v;
        }
        if let Some(v) = lookup("PRESENCE_REDIS_TLS_CA") {
            c.redis_tls_ca = Some(v.into());
        }
        if let Some(v) = lookup("PRESENCE_HTTP_ENDPOINT") {
            c.http_endpoint = v;
        }
        if let Some(v) = lookup("NODELIST_CACHE_TTL_SEC") {
            c.cache_ttl = secs("NODELIST_CACHE_TTL_SEC", &v)?;
        }
        if let Some(v) = lookup("NODELIST_HEARTBEAT_SEC") {
            c.heartbeat = secs("NODELIST_HEARTBEAT_SEC", &v)?;
            c.poll_interval = c.heartbeat;
        }
        Ok(c)
    }

    /// Builds the configured presence store (connects to Redis for `Redis`), for watching
    /// only: over `Http` it cannot log a node in (see [`connect_store_as`](Self::connect_store_as)).
    pub async fn connect_store(&self) -> Result<Arc<dyn PresenceStore>> {
        self.connect_store_as(None).await
    }

    /// Builds the configured presence store; over `Http` the client signs this node's
    /// logins with `signer` (the node's ML-DSA-87 key) and carries the session token they
    /// obtain, as the presence server requires. The in-process backends (memory, Redis
    /// directly) are trusted and need no signature.
    pub async fn connect_store_as(
        &self,
        signer: Option<Arc<dyn dag_core::Signer>>,
    ) -> Result<Arc<dyn PresenceStore>> {
        Ok(match self.backend {
            PresenceBackend::Memory => Arc::new(MemoryPresenceStore::new(
                self.presence_ttl,
                Arc::new(SystemClock),
            )),
            PresenceBackend::Redis => Arc::new(
                RedisPresenceStore::connect(
                    RedisStoreConfig {
                        uri: self.redis_uri.clone(),
                        tls_ca_file: self.redis_tls_ca.clone(),
                        ttl: self.presence_ttl,
                        ..RedisStoreConfig::default()
                    },
                    Arc::new(SystemClock),
                )
                .await?,
            ),
            PresenceBackend::Http => {
                let client =
                    PresenceClient::new(&self.http_endpoint, PresenceClientConfig::default())?;
                Arc::new(match signer {
                    Some(s) => client.with_signer(s),
                    None => client,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<NodeListConfig> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NodeListConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = from(&[]).unwrap();
        assert_eq!(c, NodeListConfig::default());
        assert_eq!(c.cache_ttl, Duration::from_secs(10));
        assert_eq!(c.heartbeat, Duration::from_secs(3));
        assert_eq!(c.presence_ttl, Duration::from_secs(6));
        assert_eq!(c.backend, PresenceBackend::Memory);
    }

    #[test]
    fn environment_overrides() {
        let id = "ab".repeat(32);
        let c = from(&[
            ("NODE_ID", &id),
            ("PRESENCE_BACKEND", "HTTP"),
            ("PRESENCE_HTTP_ENDPOINT", "http://presence:8080"),
            ("PRESENCE_REDIS_URI", "redis://r:6379"),
            ("NODELIST_CACHE_TTL_SEC", "20"),
            ("NODELIST_HEARTBEAT_SEC", "1.5"),
        ])
        .unwrap();
        assert_eq!(c.node_id, Some(NodeId::from_bytes([0xab; 32])));
        assert_eq!(c.backend, PresenceBackend::Http);
        assert_eq!(c.http_endpoint, "http://presence:8080");
        assert_eq!(c.redis_uri, "redis://r:6379");
        assert_eq!(c.cache_ttl, Duration::from_secs(20));
        assert_eq!(c.heartbeat, Duration::from_millis(1500));
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (k, v) in [
            ("NODE_ID", "xyz"),
            ("PRESENCE_BACKEND", "mongo"),
            ("NODELIST_CACHE_TTL_SEC", "ten"),
            ("NODELIST_HEARTBEAT_SEC", "0"),
            ("NODELIST_HEARTBEAT_SEC", "-3"),
        ] {
            let e = from(&[(k, v)]).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
    }
}

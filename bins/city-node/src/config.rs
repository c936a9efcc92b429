//! The operator's configuration model of `city-node run`: one TOML file in sections
//! (`[node] [city] [light] [presence] [pipeline] [consensus] [dpos] [gateway] [archive]
//! [audit] [gossip] [metrics] [tls] [log]`), every key also an environment variable
//! (`CITY_<SECTION>__<KEY>`) and a flag (`--set section.key=value`, plus the named flags),
//! layered defaults ← file ← environment ← `--set` ← named flags. A bad value is reported
//! with its source and key; `city-node config print` shows the effective result.

use dag_core::Role;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Where a layer of settings came from (named in every error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// The TOML file.
    File(PathBuf),
    /// Environment variables.
    Env,
    /// `--set key=value` flags.
    Set,
    /// The named flags (or their `CITY_*` variables, read by clap).
    Flags,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Env => f.write_str("environment"),
            Source::Set => f.write_str("--set flags"),
            Source::Flags => f.write_str("command-line flags"),
        }
    }
}

/// What went wrong while building the configuration.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("parsing {path}: {detail}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message.
        detail: String,
    },
    /// A key has a bad value or is unknown.
    #[error("{layer}: key `{key}` ({origin}): {detail}")]
    Invalid {
        /// The layer holding the value.
        layer: Source,
        /// The dotted key (e.g. `light.quota_bytes`).
        key: String,
        /// The variable or flag that set it, when one did.
        origin: String,
        /// The deserializer's message.
        detail: String,
    },
    /// `--set` without `=` or a key that is not `section.key`.
    #[error("--set {0:?}: expected section.key=value (e.g. light.quota_bytes=1073741824)")]
    BadSet(String),
    /// Settings that are valid one by one but not together.
    #[error("{0}")]
    Inconsistent(String),
}

/// Where the node runs and what it is: the keys every role shares.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct NodeSection {
    /// city, light, continent or global.
    pub(crate) role: Role,
    /// gRPC listen address (default per role: city 7700, light 7710, continent 7600,
    /// global 7650, on 0.0.0.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) listen: Option<SocketAddr>,
    /// Data directory: key file, stores (default `./<role>-data`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Genesis file (committee, continent, global).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) genesis: Option<PathBuf>,
    /// Address published to presence (`host:port`); default: the listen address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) advertise: Option<String>,
    /// Page cache of each of the node's redb databases, MiB (a city opens about eight;
    /// a light node's shard store keeps its own 4 MiB). Default 16.
    pub(crate) db_cache_mib: u64,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            role: Role::City,
            listen: None,
            data_dir: None,
            genesis: None,
            advertise: None,
            db_cache_mib: (node::runtime::DEFAULT_DB_CACHE_BYTES >> 20) as u64,
        }
    }
}

/// Proof of place (mirrors [`node::PopMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PopModeSetting {
    /// Reject txs outside their claimed city.
    Reject,
    /// Admit them, counted as flagged.
    Flag,
}

/// The city this node serves or lives in, and where it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CitySection {
    /// City id (e.g. JP-13).
    pub(crate) city_id: String,
    /// Failure-domain zone published to presence.
    pub(crate) zone: String,
    /// Latitude, degrees.
    pub(crate) lat: f64,
    /// Longitude, degrees.
    pub(crate) lon: f64,
    /// Proof of place: reject or flag txs outside the city.
    pub(crate) pop_mode: PopModeSetting,
    /// Events file (placement multipliers in epoch windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) events: Option<PathBuf>,
}

impl Default for CitySection {
    fn default() -> Self {
        let m = node::MembershipConfig::default();
        CitySection {
            city_id: m.city_id,
            zone: m.zone,
            lat: m.lat,
            lon: m.lon,
            pop_mode: match m.pop_mode {
                node::PopMode::Reject => PopModeSetting::Reject,
                node::PopMode::Flag => PopModeSetting::Flag,
            },
            events: None,
        }
    }
}

/// The light role's storage limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LightSection {
    /// Most bytes of shards stored.
    pub(crate) quota_bytes: u64,
    /// Bytes kept free on the data directory's disk (0: no check).
    pub(crate) min_free_bytes: u64,
    /// Hard limit on the size of `shards.redb`; unset: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_store_file_bytes: Option<u64>,
}

impl Default for LightSection {
    fn default() -> Self {
        let d = node::LightConfig::default();
        LightSection {
            quota_bytes: d.quota_bytes,
            min_free_bytes: d.min_free_bytes,
            max_store_file_bytes: (d.max_store_file_bytes != u64::MAX)
                .then_some(d.max_store_file_bytes),
        }
    }
}

/// Presence backend (mirrors [`node_list::PresenceBackend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PresenceKind {
    /// A store private to this process: the node sees only itself (demo, tests).
    Memory,
    /// Redis directly.
    Redis,
    /// A presence server over HTTP.
    Http,
}

/// How the node reaches presence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PresenceSection {
    /// memory, redis or http (also `PRESENCE_BACKEND`).
    pub(crate) backend: PresenceKind,
    /// Redis URI (also `PRESENCE_REDIS_URI`); its password is redacted in `config print`.
    pub(crate) redis_uri: String,
    /// Presence server (also `PRESENCE_HTTP_ENDPOINT`).
    pub(crate) http_endpoint: String,
    /// Heartbeat interval, seconds (also `NODELIST_HEARTBEAT_SEC`).
    pub(crate) heartbeat_secs: f64,
    /// Local view TTL, seconds (also `NODELIST_CACHE_TTL_SEC`).
    pub(crate) cache_ttl_secs: f64,
}

impl Default for PresenceSection {
    fn default() -> Self {
        let d = node_list::NodeListConfig::default();
        PresenceSection {
            backend: PresenceKind::Memory,
            redis_uri: d.redis_uri,
            http_endpoint: d.http_endpoint,
            heartbeat_secs: d.heartbeat.as_secs_f64(),
            cache_ttl_secs: d.cache_ttl.as_secs_f64(),
        }
    }
}

/// The city role's admission pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PipelineSection {
    /// Signature verification threads (0 = one per core).
    pub(crate) verify_threads: usize,
    /// Most txs admitted concurrently before answering OVERLOADED.
    pub(crate) max_inflight: usize,
    /// Micro-batches stored at once (placement slots): fewer slots make batches grow with
    /// the load, so each stripe's fixed costs are shared by more txs.
    pub(crate) batches_in_flight: usize,
    /// Least milliseconds between two micro-batches cut: at moderate load, stripes gather
    /// more txs instead of being cut every few milliseconds (0: whenever a slot is free).
    pub(crate) stripe_spacing_ms: u64,
}

impl Default for PipelineSection {
    fn default() -> Self {
        let d = node::CityConfig::default();
        PipelineSection {
            verify_threads: d.verify_threads,
            max_inflight: d.max_inflight,
            batches_in_flight: d.batches_in_flight,
            stripe_spacing_ms: d.stripe_spacing.as_millis() as u64,
        }
    }
}

/// Ordering among a city's representatives.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ConsensusSection {
    /// A fixed proposal interval in ms; unset: the dynamic 0.5–5 s interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) batch_interval_ms: Option<u64>,
    /// When a representative that misses every leader slot of a window of rounds is
    /// reported (`[consensus.missed_rounds]`: `window_rounds`, `min_slots`, `lag_rounds`);
    /// the same on every representative of a city.
    pub(crate) missed_rounds: node::MissedRule,
    /// Start as a standby when the node key is not in the genesis committee: follow the
    /// committee's checkpoints and join the epoch dpos elects this node into.
    pub(crate) standby: bool,
}

/// The DApp HTTP gateway of a city node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct GatewaySection {
    /// Serve it (off by default; `--gateway-addr` turns it on).
    pub(crate) enabled: bool,
    /// Listen address.
    pub(crate) listen: SocketAddr,
    /// CORS origins (`*` for any).
    pub(crate) cors_origins: Vec<String>,
    /// Requests per second per client IP on `/v1` (0: no limit).
    pub(crate) rate_limit_per_second: u32,
    /// Burst per client IP.
    pub(crate) rate_limit_burst: u32,
    /// Key the limit on X-Forwarded-For (behind a trusted proxy only).
    pub(crate) trust_forwarded_for: bool,
    /// Largest request body, bytes.
    pub(crate) max_body_bytes: usize,
    /// Most concurrent `/v1/events` subscribers.
    pub(crate) max_event_subscribers: usize,
}

impl Default for GatewaySection {
    fn default() -> Self {
        let d = gateway::GatewayConfig::default();
        GatewaySection {
            enabled: false,
            listen: d.listen,
            cors_origins: d.cors_origins,
            rate_limit_per_second: d.rate_limit_per_second,
            rate_limit_burst: d.rate_limit_burst,
            trust_forwarded_for: d.trust_forwarded_for,
            max_body_bytes: d.max_body_bytes,
            max_event_subscribers: d.max_event_subscribers,
        }
    }
}

/// The encrypted long-term archive of a city node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ArchiveSection {
    /// Keep it (embedded redb in `<data_dir>/archive`).
    pub(crate) enabled: bool,
}

impl Default for ArchiveSection {
    fn default() -> Self {
        ArchiveSection {
            enabled: node::CityConfig::default().archive,
        }
    }
}

/// The periodic storage audit of a city's light nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AuditSection {
    /// Run it.
    pub(crate) enabled: bool,
    /// Epoch length, ms.
    pub(crate) interval_ms: u64,
    /// Deadline of one call, ms.
    pub(crate) call_timeout_ms: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        let d = node::CityConfig::default().audit;
        AuditSection {
            enabled: d.enabled,
            interval_ms: d.interval_ms,
            call_timeout_ms: d.call_timeout_ms,
        }
    }
}

/// SWIM gossip among a city's nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct GossipSection {
    /// Run gossip (city and light roles).
    pub(crate) enabled: bool,
    /// UDP address (default: the gRPC listen address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) listen: Option<SocketAddr>,
    /// Extra bootstrap members, `<node id hex>@<host:port>`.
    pub(crate) seeds: Vec<String>,
}

impl Default for GossipSection {
    fn default() -> Self {
        GossipSection {
            enabled: true,
            listen: None,
            seeds: Vec::new(),
        }
    }
}

/// The Prometheus `/metrics` listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MetricsSection {
    /// Serve `/metrics`.
    pub(crate) enabled: bool,
    /// Listen address; unset: the gRPC listen host with the port + 2000 (7700 → 9700,
    /// 7711 → 9711), so every process on a host gets its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) listen: Option<SocketAddr>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            listen: None,
        }
    }
}

/// Node-link security.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TlsSection {
    /// Plaintext node links without mutual TLS (debugging only).
    pub(crate) insecure: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogSection {
    /// text or json.
    pub(crate) format: LogFormat,
}

/// The whole file. `Default` is the documented defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct NodeFileConfig {
    pub(crate) node: NodeSection,
    pub(crate) city: CitySection,
    pub(crate) light: LightSection,
    pub(crate) presence: PresenceSection,
    pub(crate) pipeline: PipelineSection,
    pub(crate) consensus: ConsensusSection,
    pub(crate) dpos: dpos::DposConfig,
    pub(crate) gateway: GatewaySection,
    pub(crate) archive: ArchiveSection,
    pub(crate) audit: AuditSection,
    pub(crate) gossip: GossipSection,
    pub(crate) metrics: MetricsSection,
    pub(crate) tls: TlsSection,
    pub(crate) log: LogSection,
}

/// Environment variables kept from before the sectioned model, and the key each sets.
const LEGACY_ENV: &[(&str, &str)] = &[
    ("PRESENCE_BACKEND", "presence.backend"),
    ("PRESENCE_REDIS_URI", "presence.redis_uri"),
    ("PRESENCE_HTTP_ENDPOINT", "presence.http_endpoint"),
    ("NODELIST_HEARTBEAT_SEC", "presence.heartbeat_secs"),
    ("NODELIST_CACHE_TTL_SEC", "presence.cache_ttl_secs"),
];

/// The environment variable of a dotted key: `light.quota_bytes` → `CITY_LIGHT__QUOTA_BYTES`.
pub(crate) fn env_name(key: &str) -> String {
    match key.split_once('.') {
        Some((section, rest)) => format!(
            "CITY_{}__{}",
            section.to_ascii_uppercase(),
            rest.replace('.', "__").to_ascii_uppercase()
        ),
        None => format!("CITY_{}", key.to_ascii_uppercase()),
    }
}

/// One layer: a TOML tree and, for each key, the variable or flag that set it.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    source: Source,
    tree: Table,
    origins: Vec<(String, String)>,
}

impl Layer {
    fn new(source: Source) -> Self {
        Layer {
            source,
            tree: Table::new(),
            origins: Vec::new(),
        }
    }

    /// Sets the dotted `key` to `value`, remembering `origin`.
    pub(crate) fn set(&mut self, key: &str, value: Value, origin: impl Into<String>) {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap_or(key);
        let mut t = &mut self.tree;
        for p in parts {
            let entry = t
                .entry(p.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            t = match entry {
                Value::Table(t) => t,
                _ => unreachable!("made a table above"),
            };
        }
        t.insert(last.to_string(), value);
        self.origins.push((key.to_string(), origin.into()));
    }

    fn origin_of(&self, key: &str) -> String {
        self.origins
            .iter()
            .rev()
            .find(|(k, _)| k == key || key.starts_with(&format!("{k}.")))
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| match &self.source {
                Source::File(_) => "in the file".into(),
                _ => "unknown origin".into(),
            })
    }
}

/// The leaf of the defaults tree at `key`, to type a string from the environment.
fn default_leaf<'a>(defaults: &'a Table, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.').peekable();
    let mut t = defaults;
    while let Some(p) = parts.next() {
        let v = t.get(p)?;
        if parts.peek().is_none() {
            return Some(v);
        }
        t = v.as_table()?;
    }
    None
}

/// A string from the environment or `--set` read as the type the key has: a string key
/// stays a string; otherwise a TOML literal (number, bool, array), else a string.
fn typed(defaults: &Table, key: &str, raw: &str) -> Value {
    if OPTIONAL_KEYS
        .iter()
        .any(|(k, is_string)| *k == key && *is_string)
    {
        return Value::String(raw.to_string());
    }
    if let Some(Value::String(_)) = default_leaf(defaults, key) {
        return Value::String(raw.to_string());
    }
    if let Some(Value::Array(_)) = default_leaf(defaults, key)
        && !raw.trim_start().starts_with('[')
    {
        return Value::Array(
            raw.split(',')
                .map(|s| Value::String(s.trim().to_string()))
                .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                .collect(),
        );
    }
    match toml::from_str::<Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(raw.into())),
        Err(_) => Value::String(raw.to_string()),
    }
}

/// Keys without a default (absent from the defaults tree), and whether each is a string.
const OPTIONAL_KEYS: &[(&str, bool)] = &[
    ("node.listen", true),
    ("node.data_dir", true),
    ("node.genesis", true),
    ("node.advertise", true),
    ("city.events", true),
    ("consensus.batch_interval_ms", false),
    ("light.max_store_file_bytes", false),
    ("gossip.listen", true),
    ("metrics.listen", true),
];

/// Every leaf key of a tree, dotted.
fn leaf_keys(t: &Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(inner) => leaf_keys(inner, &key, out),
            _ => out.push(key),
        }
    }
}

/// The keys a file, variable or `--set` may name: the defaults' leaves and the optional
/// keys that have no default.
fn known_keys(defaults: &Table) -> Vec<String> {
    let mut keys = Vec::new();
    leaf_keys(defaults, "", &mut keys);
    for (k, _) in OPTIONAL_KEYS {
        if !keys.iter().any(|x| x == *k) {
            keys.push(k.to_string());
        }
    }
    keys
}

fn defaults_tree() -> Table {
    match Value::try_from(NodeFileConfig::default()) {
        Ok(Value::Table(t)) => t,
        // The defaults are plain data: they always serialize to a table.
        _ => Table::new(),
    }
}

/// The environment layer, read through `lookup` (the process environment in production).
pub(crate) fn env_layer(lookup: impl Fn(&str) -> Option<String>) -> Layer {
    let defaults = defaults_tree();
    let mut layer = Layer::new(Source::Env);
    for (var, key) in LEGACY_ENV {
        if let Some(v) = lookup(var) {
            layer.set(key, typed(&defaults, key, &v), *var);
        }
    }
    for key in known_keys(&defaults) {
        let var = env_name(&key);
        if let Some(v) = lookup(&var) {
            layer.set(&key, typed(&defaults, &key, &v), var);
        }
    }
    layer
}

/// Every key with its environment variable and default, one per line (`config keys`).
pub(crate) fn keys_table() -> String {
    let defaults = defaults_tree();
    let mut keys = known_keys(&defaults);
    keys.sort();
    let mut out = format!("{:<36} {:<40} default\n", "key", "environment variable");
    for k in keys {
        let d = default_leaf(&defaults, &k).map_or_else(|| "(unset)".to_string(), Value::to_string);
        let legacy = LEGACY_ENV
            .iter()
            .find(|(_, key)| *key == k)
            .map_or_else(String::new, |(v, _)| format!(" (or {v})"));
        out.push_str(&format!(
            "{k:<36} {:<40} {d}\n",
            format!("{}{legacy}", env_name(&k))
        ));
    }
    out
}

/// The `--set key=value` layer.
pub(crate) fn set_layer(sets: &[String]) -> Result<Layer, ConfigError> {
    let defaults = defaults_tree();
    let mut layer = Layer::new(Source::Set);
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| ConfigError::BadSet(s.clone()))?;
        let k = k.trim();
        if !k.contains('.') {
            return Err(ConfigError::BadSet(s.clone()));
        }
        layer.set(k, typed(&defaults, k, v.trim()), format!("--set {k}"));
    }
    Ok(layer)
}

/// The file layer. Top-level `role` and `metrics_listen` (the layout before sections)
/// are read as `node.role` and `metrics.listen`.
pub(crate) fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tree: Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mut layer = Layer::new(Source::File(path.to_path_buf()));
    for (old, new) in [("role", "node.role"), ("metrics_listen", "metrics.listen")] {
        if let Some(v) = tree.remove(old) {
            // Configuration is read before logging starts: say it on stderr.
            eprintln!(
                "warning: {}: top-level `{old}` is read as `{new}`; move it into its section",
                path.display()
            );
            layer.set(new, v, format!("`{old}` in the file"));
        }
    }
    merge(&mut layer.tree, tree);
    Ok(layer)
}

fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn parse(tree: Table) -> Result<NodeFileConfig, (String, String)> {
    serde_path_to_error::deserialize::<_, NodeFileConfig>(Value::Table(tree)).map_err(|e| {
        let path = e.path().to_string();
        // toml appends "in `key`" on a line of its own; the key is named already.
        let inner: String = e
            .into_inner()
            .to_string()
            .lines()
            .filter(|l| !l.starts_with("in `"))
            .collect::<Vec<_>>()
            .join(" ");
        // An unknown field's path may stop at its parent; name the field itself.
        let key = match inner
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            Some(field) if path == "." => field.to_string(),
            Some(field) if path == field || path.ends_with(&format!(".{field}")) => path,
            Some(field) => format!("{path}.{field}"),
            None => path,
        };
        (key, inner)
    })
}

/// Merges the layers over the defaults. Each layer is checked alone first, so a bad value
/// is reported with the layer that holds it.
pub(crate) fn build(layers: &[Layer]) -> Result<NodeFileConfig, ConfigError> {
    let mut merged = Table::new();
    for layer in layers {
        parse(layer.tree.clone()).map_err(|(key, detail)| ConfigError::Invalid {
            layer: layer.source.clone(),
            origin: layer.origin_of(&key),
            key,
            detail,
        })?;
        merge(&mut merged, layer.tree.clone());
    }
    parse(merged).map_err(|(key, detail)| ConfigError::Invalid {
        layer: Source::Flags,
        origin: "merged".into(),
        key,
        detail,
    })
}

/// A flag layer from the named flags (already typed by clap).
pub(crate) fn flag_layer() -> Layer {
    Layer::new(Source::Flags)
}

pub(crate) use presence::redact_uri;

/// The host part of a URI or `host:port`.
fn host_of(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .to_string()
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// The settings `city-node run` acts on, every default resolved.
#[derive(Debug, Clone)]
pub(crate) struct Effective {
    /// The merged file model (printed by `config print`).
    pub(crate) file: NodeFileConfig,
    /// The gRPC listen address.
    pub(crate) listen: SocketAddr,
    /// The data directory.
    pub(crate) data_dir: PathBuf,
    /// The `/metrics` address, or none.
    pub(crate) metrics: Option<SocketAddr>,
    /// The address published to presence (city and light roles).
    pub(crate) advertise: String,
}

/// Per-role defaults of the listen port and data directory.
fn role_defaults(role: Role) -> (u16, &'static str) {
    match role {
        Role::City => (7700, "./city-data"),
        Role::Light => (7710, "./light-data"),
        Role::Continent => (7600, "./continent-data"),
        Role::Global => (7650, "./global-data"),
    }
}

impl Effective {
    /// Resolves the per-role defaults and checks what only holds across keys.
    pub(crate) fn resolve(mut file: NodeFileConfig) -> Result<Self, ConfigError> {
        let (port, dir) = role_defaults(file.node.role);
        let listen = file
            .node
            .listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], port)));
        let data_dir = file.node.data_dir.clone().unwrap_or_else(|| dir.into());
        file.node.listen = Some(listen);
        file.node.data_dir = Some(data_dir.clone());
        let metrics = if !file.metrics.enabled {
            None
        } else if let Some(m) = file.metrics.listen {
            Some(m)
        } else if listen.port() == 0 {
            // An ephemeral gRPC port has no fixed neighbour: no /metrics unless set.
            None
        } else {
            let p = listen.port().checked_add(2000).ok_or_else(|| {
                ConfigError::Inconsistent(format!(
                    "the metrics port is derived as the listen port + 2000, and {} + 2000 > 65535: \
                     set metrics.listen (--metrics-listen) or metrics.enabled = false",
                    listen.port()
                ))
            })?;
            Some(SocketAddr::new(listen.ip(), p))
        };
        file.metrics.listen = metrics;
        if let Some(m) = metrics
            && m == listen
        {
            return Err(ConfigError::Inconsistent(format!(
                "metrics.listen {m} is the gRPC listen address"
            )));
        }
        let advertise = match &file.node.advertise {
            Some(a) => a.clone(),
            None if listen.ip().is_unspecified() => format!("127.0.0.1:{}", listen.port()),
            None => listen.to_string(),
        };
        if matches!(file.node.role, Role::City | Role::Light) {
            let presence_host = match file.presence.backend {
                PresenceKind::Memory => None,
                PresenceKind::Http => Some(host_of(&file.presence.http_endpoint)),
                PresenceKind::Redis => Some(host_of(&file.presence.redis_uri)),
            };
            if let Some(h) = presence_host
                && !is_loopback_host(&h)
                && is_loopback_host(&host_of(&advertise))
            {
                return Err(ConfigError::Inconsistent(format!(
                    "this node would advertise {advertise} (loopback) to presence on {h}, which \
                     other hosts use: nobody there could reach it. Set node.advertise \
                     (--advertise / CITY_ADVERTISE) to an address other hosts can dial"
                )));
            }
        }
        Ok(Effective {
            file,
            listen,
            data_dir,
            metrics,
            advertise,
        })
    }

    /// True when presence is the in-process store (the node sees only itself).
    pub(crate) fn presence_in_memory(&self) -> bool {
        self.file.presence.backend == PresenceKind::Memory
    }

    /// The effective configuration as TOML, secrets redacted.
    pub(crate) fn print(&self) -> String {
        let mut shown = self.file.clone();
        shown.presence.redis_uri = redact_uri(&shown.presence.redis_uri);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// The node-list settings.
    pub(crate) fn nodelist(&self) -> Result<node_list::NodeListConfig, ConfigError> {
        let p = &self.file.presence;
        let secs = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v < 86_400.0 {
                Ok(std::time::Duration::from_secs_f64(v))
            } else {
                Err(ConfigError::Inconsistent(format!(
                    "{key} = {v}: must be > 0 and < 86400 seconds"
                )))
            }
        };
        let heartbeat = secs("presence.heartbeat_secs", p.heartbeat_secs)?;
        let cache_ttl = secs("presence.cache_ttl_secs", p.cache_ttl_secs)?;
        Ok(node_list::NodeListConfig {
            backend: match p.backend {
                PresenceKind::Memory => node_list::PresenceBackend::Memory,
                PresenceKind::Redis => node_list::PresenceBackend::Redis,
                PresenceKind::Http => node_list::PresenceBackend::Http,
            },
            redis_uri: p.redis_uri.clone(),
            http_endpoint: p.http_endpoint.clone(),
            heartbeat,
            poll_interval: heartbeat,
            cache_ttl,
            ..node_list::NodeListConfig::default()
        })
    }

    /// Where the node is and how it reaches presence.
    pub(crate) fn membership(&self) -> Result<node::MembershipConfig, ConfigError> {
        let f = &self.file;
        let mut seeds = Vec::new();
        for s in &f.gossip.seeds {
            seeds.push(
                node::gossip::GossipSettings::parse_seed(s).map_err(|detail| {
                    ConfigError::Invalid {
                        layer: Source::Flags,
                        key: "gossip.seeds".into(),
                        origin: "merged".into(),
                        detail,
                    }
                })?,
            );
        }
        let mut m = node::MembershipConfig {
            city_id: f.city.city_id.clone(),
            zone: f.city.zone.clone(),
            lat: f.city.lat,
            lon: f.city.lon,
            advertise: Some(self.advertise.clone()),
            pop_mode: match f.city.pop_mode {
                PopModeSetting::Reject => node::PopMode::Reject,
                PopModeSetting::Flag => node::PopMode::Flag,
            },
            ..node::MembershipConfig::default()
        };
        m.nodelist = self.nodelist()?;
        m.gossip.enabled = f.gossip.enabled;
        m.gossip.listen = f.gossip.listen;
        m.gossip.seeds = seeds;
        Ok(m)
    }

    /// The city role's settings (links are set by the caller, from the key).
    pub(crate) fn city(&self) -> node::CityConfig {
        let f = &self.file;
        let gateway = f.gateway.enabled.then(|| gateway::GatewayConfig {
            listen: f.gateway.listen,
            cors_origins: f.gateway.cors_origins.clone(),
            rate_limit_per_second: f.gateway.rate_limit_per_second,
            rate_limit_burst: f.gateway.rate_limit_burst,
            trust_forwarded_for: f.gateway.trust_forwarded_for,
            max_body_bytes: f.gateway.max_body_bytes,
            max_event_subscribers: f.gateway.max_event_subscribers,
        });
        let mut c = node::CityConfig {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            verify_threads: f.pipeline.verify_threads,
            max_inflight: f.pipeline.max_inflight,
            batches_in_flight: f.pipeline.batches_in_flight,
            stripe_spacing: std::time::Duration::from_millis(f.pipeline.stripe_spacing_ms),
            archive: f.archive.enabled,
            genesis: f.node.genesis.clone(),
            gateway,
            batch_interval_ms: f.consensus.batch_interval_ms,
            events: f.city.events.clone(),
            dpos: f.dpos.clone(),
            missed_rounds: f.consensus.missed_rounds,
            standby: f.consensus.standby,
            ..node::CityConfig::default()
        };
        c.audit.enabled = f.audit.enabled;
        c.audit.interval_ms = f.audit.interval_ms;
        c.audit.call_timeout_ms = f.audit.call_timeout_ms;
        c
    }

    /// The light role's settings (links and writers are set by the caller).
    pub(crate) fn light(&self) -> node::LightConfig {
        let f = &self.file;
        node::LightConfig {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            quota_bytes: f.light.quota_bytes,
            min_free_bytes: f.light.min_free_bytes,
            max_store_file_bytes: f.light.max_store_file_bytes.unwrap_or(u64::MAX),
            genesis: f.node.genesis.clone(),
            ..node::LightConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Layer {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env_layer(|k| map.get(k).cloned())
    }

    fn file(text: &str) -> (tempfile::TempDir, Layer) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.toml");
        std::fs::write(&p, text).unwrap();
        let l = file_layer(&p).unwrap();
        (dir, l)
    }

    #[test]
    fn defaults_round_trip_and_are_the_libraries_defaults() {
        let d = NodeFileConfig::default();
        let text = toml::to_string(&d).unwrap();
        assert_eq!(toml::from_str::<NodeFileConfig>(&text).unwrap(), d);
        let e = Effective::resolve(d).unwrap();
        assert_eq!(
            e.city().max_inflight,
            node::CityConfig::default().max_inflight
        );
        assert_eq!(
            e.light().quota_bytes,
            node::LightConfig::default().quota_bytes
        );
        assert_eq!(e.listen, "0.0.0.0:7700".parse().unwrap());
        assert_eq!(e.metrics, Some("0.0.0.0:9700".parse().unwrap()));
    }

    #[test]
    fn layers_override_in_order_file_env_set_flags() {
        let (_d, f) =
            file("[light]\nquota_bytes = 10\nmin_free_bytes = 5\n[node]\nrole = \"light\"\n");
        let e = env(&[("CITY_LIGHT__QUOTA_BYTES", "20"), ("CITY_CITY__ZONE", "7")]);
        let s = set_layer(&["light.min_free_bytes=6".into()]).unwrap();
        let mut flags = flag_layer();
        flags.set("light.quota_bytes", Value::Integer(30), "--quota-bytes");
        let c = build(&[f, e, s, flags]).unwrap();
        assert_eq!(c.node.role, Role::Light);
        assert_eq!(c.light.quota_bytes, 30);
        assert_eq!(c.light.min_free_bytes, 6);
        // A string key stays a string even when it looks like a number.
        assert_eq!(c.city.zone, "7");
    }

    #[test]
    fn legacy_presence_variables_still_work() {
        let e = env(&[
            ("PRESENCE_BACKEND", "http"),
            ("PRESENCE_HTTP_ENDPOINT", "http://127.0.0.1:7780"),
            ("NODELIST_HEARTBEAT_SEC", "1"),
        ]);
        let c = build(&[e]).unwrap();
        assert_eq!(c.presence.backend, PresenceKind::Http);
        assert_eq!(c.presence.heartbeat_secs, 1.0);
        let n = Effective::resolve(c).unwrap().nodelist().unwrap();
        assert_eq!(n.heartbeat, std::time::Duration::from_secs(1));
        assert_eq!(n.backend, node_list::PresenceBackend::Http);
    }

    #[test]
    fn errors_name_source_and_key() {
        let check = |layers: Vec<Layer>, want: &[&str]| {
            let msg = build(&layers).unwrap_err().to_string();
            for w in want {
                assert!(msg.contains(w), "{msg:?} lacks {w:?}");
            }
        };
        let (_d, f) = file("[light]\nquota_bytes = \"lots\"\n");
        check(vec![f], &["config file", "node.toml", "light.quota_bytes"]);
        let (_d, f) = file("[light]\nquota = 1\n");
        check(vec![f], &["key `light.quota`", "unknown field"]);
        let (_d, f) = file("listen = 5\n");
        check(vec![f], &["key `listen`", "unknown field"]);
        check(
            vec![env(&[("CITY_PIPELINE__MAX_INFLIGHT", "many")])],
            &[
                "environment",
                "pipeline.max_inflight",
                "CITY_PIPELINE__MAX_INFLIGHT",
            ],
        );
        check(
            vec![env(&[("PRESENCE_BACKEND", "zookeeper")])],
            &["environment", "presence.backend", "PRESENCE_BACKEND"],
        );
        check(
            vec![set_layer(&["metrics.listen=nowhere".into()]).unwrap()],
            &["--set", "metrics.listen"],
        );
        assert!(matches!(
            set_layer(&["quota".into()]),
            Err(ConfigError::BadSet(_))
        ));
    }

    #[test]
    fn metrics_port_follows_the_listen_port_so_two_lights_fit_on_one_host() {
        let at = |listen: &str| {
            let mut c = NodeFileConfig::default();
            c.node.role = Role::Light;
            c.node.listen = Some(listen.parse().unwrap());
            Effective::resolve(c).unwrap().metrics
        };
        let a = at("127.0.0.1:7711").unwrap();
        let b = at("127.0.0.1:7712").unwrap();
        assert_ne!(a, b);
        assert_eq!(a, "127.0.0.1:9711".parse().unwrap());
        assert_eq!(at("127.0.0.1:0"), None);
        let mut c = NodeFileConfig::default();
        c.node.listen = Some("127.0.0.1:65000".parse().unwrap());
        assert!(matches!(
            Effective::resolve(c),
            Err(ConfigError::Inconsistent(_))
        ));
        let mut c = NodeFileConfig::default();
        c.metrics.enabled = false;
        assert_eq!(Effective::resolve(c).unwrap().metrics, None);
    }

    #[test]
    fn advertising_loopback_to_a_remote_presence_is_an_error() {
        let with = |backend: PresenceKind, endpoint: &str, listen: &str, adv: Option<&str>| {
            let mut c = NodeFileConfig::default();
            c.presence.backend = backend;
            c.presence.http_endpoint = endpoint.into();
            c.presence.redis_uri = endpoint.into();
            c.node.listen = Some(listen.parse().unwrap());
            c.node.advertise = adv.map(str::to_string);
            Effective::resolve(c)
        };
        let e = with(
            PresenceKind::Http,
            "http://10.0.0.5:8080",
            "0.0.0.0:7700",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("127.0.0.1:7700") && e.contains("--advertise"),
            "{e}"
        );
        assert!(
            with(
                PresenceKind::Redis,
                "redis://:pw@10.0.0.5:6379",
                "127.0.0.1:7700",
                None
            )
            .is_err()
        );
        assert!(
            with(
                PresenceKind::Http,
                "http://10.0.0.5:8080",
                "0.0.0.0:7700",
                Some("10.0.0.9:7700")
            )
            .is_ok()
        );
        assert!(
            with(
                PresenceKind::Http,
                "http://127.0.0.1:8080",
                "0.0.0.0:7700",
                None
            )
            .is_ok()
        );
        assert!(
            with(
                PresenceKind::Http,
                "http://localhost:8080",
                "127.0.0.1:7700",
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn print_redacts_the_redis_password() {
        let mut c = NodeFileConfig::default();
        c.presence.backend = PresenceKind::Redis;
        c.presence.redis_uri = "redis://app:s3cret@127.0.0.1:6379/0".into();
        let text = Effective::resolve(c).unwrap().print();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("redis://app:***@127.0.0.1:6379/0"), "{text}");
        assert!(text.contains("[node]") && text.contains("listen = \"0.0.0.0:7700\""));
        assert_eq!(redact_uri("redis://pw@h:1"), "redis://***@h:1");
        assert_eq!(redact_uri("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn every_key_has_an_environment_variable() {
        let keys = known_keys(&defaults_tree());
        assert!(keys.len() > 40, "{}", keys.len());
        for k in &keys {
            assert!(env_name(k).starts_with("CITY_"), "{k}");
        }
        assert_eq!(env_name("light.quota_bytes"), "CITY_LIGHT__QUOTA_BYTES");
        assert_eq!(env_name("dpos.term_ms"), "CITY_DPOS__TERM_MS");
    }

    #[test]
    fn legacy_top_level_keys_are_read_into_their_sections() {
        let (_d, f) = file("role = \"light\"\nmetrics_listen = \"127.0.0.1:9999\"\n");
        let c = build(&[f]).unwrap();
        assert_eq!(c.node.role, Role::Light);
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9999".parse().unwrap()));
    }
}

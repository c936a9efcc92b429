//! `city-node run` and `city-node config print`: the named flags become the top layer of
//! the configuration model ([`crate::config`]), then the role starts.

use crate::config::{self, ConfigError, Effective, Layer};
use crate::{FederationArgs, RunArgs};
use anyhow::Context;
use dag_core::Role;
use toml::Value;

impl RunArgs {
    /// The named flags (and their `CITY_*` variables, read by clap) as a layer.
    fn flag_layer(&self) -> Layer {
        let mut l = config::flag_layer();
        let s = |v: &dyn std::fmt::Display| Value::String(v.to_string());
        let int = |v: u64| Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
        if let Some(r) = self.role {
            l.set("node.role", s(&r.name()), "--role / CITY_ROLE");
        }
        if let Some(v) = self.listen {
            l.set("node.listen", s(&v), "--listen / CITY_LISTEN");
        }
        if let Some(v) = &self.data_dir {
            l.set(
                "node.data_dir",
                s(&v.display()),
                "--data-dir / CITY_DATA_DIR",
            );
        }
        if let Some(v) = &self.genesis {
            l.set("node.genesis", s(&v.display()), "--genesis / CITY_GENESIS");
        }
        if let Some(v) = &self.advertise {
            l.set("node.advertise", s(v), "--advertise / CITY_ADVERTISE");
        }
        if let Some(v) = self.metrics_listen {
            l.set(
                "metrics.listen",
                s(&v),
                "--metrics-listen / CITY_METRICS_LISTEN",
            );
        }
        if self.no_metrics {
            l.set("metrics.enabled", Value::Boolean(false), "--no-metrics");
        }
        if let Some(v) = self.gateway_addr {
            l.set("gateway.enabled", Value::Boolean(true), "--gateway-addr");
            l.set(
                "gateway.listen",
                s(&v),
                "--gateway-addr / CITY_GATEWAY_ADDR",
            );
        }
        if let Some(v) = self.verify_threads {
            l.set(
                "pipeline.verify_threads",
                int(v as u64),
                "--verify-threads / CITY_VERIFY_THREADS",
            );
        }
        if let Some(v) = self.quota_bytes {
            l.set(
                "light.quota_bytes",
                int(v.0),
                "--quota-bytes / CITY_QUOTA_BYTES",
            );
        }
        if let Some(v) = self.min_free_bytes {
            l.set(
                "light.min_free_bytes",
                int(v.0),
                "--min-free-bytes / CITY_MIN_FREE_BYTES",
            );
        }
        if let Some(v) = &self.city_id {
            l.set("city.city_id", s(v), "--city-id / CITY_ID");
        }
        if let Some(v) = &self.zone {
            l.set("city.zone", s(v), "--zone / CITY_ZONE");
        }
        if let Some(v) = self.lat {
            l.set("city.lat", Value::Float(v), "--lat / CITY_LAT");
        }
        if let Some(v) = self.lon {
            l.set("city.lon", Value::Float(v), "--lon / CITY_LON");
        }
        if let Some(v) = self.gossip {
            l.set(
                "gossip.enabled",
                Value::Boolean(v),
                "--gossip / CITY_GOSSIP",
            );
        }
        if let Some(v) = self.gossip_listen {
            l.set(
                "gossip.listen",
                s(&v),
                "--gossip-listen / CITY_GOSSIP_LISTEN",
            );
        }
        if !self.gossip_seed.is_empty() {
            l.set(
                "gossip.seeds",
                Value::Array(self.gossip_seed.iter().map(|v| s(v)).collect()),
                "--gossip-seed / CITY_GOSSIP_SEEDS",
            );
        }
        if self.insecure {
            l.set(
                "tls.insecure",
                Value::Boolean(true),
                "--insecure / CITY_INSECURE",
            );
        }
        if let Some(f) = self.log_format {
            l.set("log.format", s(&f.name()), "--log-format / CITY_LOG_FORMAT");
        }
        l
    }

    /// Every layer, in order: file, environment, `--set`, named flags.
    pub(crate) fn effective(&self) -> Result<Effective, ConfigError> {
        let mut layers = Vec::new();
        if let Some(p) = &self.config {
            layers.push(config::file_layer(p)?);
        }
        layers.push(config::env_layer(|k| std::env::var(k).ok()));
        layers.push(config::set_layer(&self.set)?);
        layers.push(self.flag_layer());
        Effective::resolve(config::build(&layers)?)
    }
}

/// Runs the configured role until Ctrl-C / SIGTERM.
pub(crate) async fn run(eff: Effective) -> anyhow::Result<()> {
    let role = eff.file.node.role;
    if eff.presence_in_memory() && matches!(role, Role::City | Role::Light) {
        tracing::warn!(
            "presence is IN MEMORY: this node sees only itself and no other node can find it; \
             set presence.backend = \"http\" or \"redis\" (PRESENCE_BACKEND) for any network \
             beyond this process (`city-node demo` is the in-process network)"
        );
    }
    match eff.metrics {
        Some(addr) => {
            crate::metrics_setup::install(addr, role)
                .with_context(|| format!("starting /metrics on {addr} (metrics.listen)"))?;
            tracing::info!(%addr, "Prometheus metrics at /metrics");
        }
        None => tracing::info!("no /metrics listener (metrics.enabled = false or no port)"),
    }
    let cache_mib = usize::try_from(eff.file.node.db_cache_mib).unwrap_or(usize::MAX);
    node::runtime::set_db_cache_bytes(cache_mib.saturating_mul(1 << 20));
    let insecure = eff.file.tls.insecure;
    match role {
        Role::City => {
            let mut city = eff.city();
            let membership = eff.membership()?;
            let key = node::load_or_create_key(&city.data_dir)?;
            city.links = node::runtime::node_links(&city.data_dir, &key, insecure)?;
            let handle = node::run_city(&city, &key, &membership).await?;
            let addr = handle.addr();
            until_signal(addr, &membership, || handle.shutdown()).await
        }
        Role::Light => {
            let mut light = eff.light();
            let membership = eff.membership()?;
            let key = node::load_or_create_key(&light.data_dir)?;
            light.links = node::runtime::node_links(&light.data_dir, &key, insecure)?;
            // With a genesis file, shards are taken only from the city's representatives.
            match &eff.file.node.genesis {
                Some(g) => {
                    // REPAIR_REQUESTs are then answered only for the city's representatives.
                    light.writers = Some(node::LightWriters {
                        committees: std::sync::Arc::new(node::genesis::Genesis::load(g)?),
                        city_id: membership.city_id.clone(),
                    })
                }
                None if !insecure => tracing::warn!(
                    "light role without --genesis: any node with a valid NodeId-bound certificate may PutShard here"
                ),
                None => {}
            }
            let handle = node::run_light(&light, key, &membership).await?;
            let addr = handle.addr();
            until_signal(addr, &membership, || handle.shutdown()).await
        }
        Role::Continent | Role::Global => {
            let federation = FederationArgs {
                listen: Some(eff.listen),
                data_dir: Some(eff.data_dir.clone()),
                genesis: eff.file.node.genesis.clone(),
            };
            if role == Role::Continent {
                crate::run_continent(federation, insecure).await
            } else {
                crate::run_global(federation, insecure).await
            }
        }
    }
}

/// Serves until SIGINT/SIGTERM, then runs `shutdown` (drain and stop) and says how it went.
async fn until_signal<F>(
    addr: Option<std::net::SocketAddr>,
    membership: &node::MembershipConfig,
    shutdown: impl FnOnce() -> F,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = node::Result<()>>,
{
    tracing::info!(?addr, presence = ?membership.nodelist.backend, "running; Ctrl-C to stop");
    crate::shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

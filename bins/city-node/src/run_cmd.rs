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
            city.equivocate_for_test = test_equivocation(
                std::env::var(devnet::localnet::TEST_EQUIVOCATE_ENV).ok(),
                city.genesis.as_deref(),
            )?;
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

/// Why the equivocation test hook was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TestHookError {
    /// The variable has a value other than `1` or `0`.
    #[error("{var}={value:?}: only 1 (on) or 0 (off)")]
    BadValue {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The hook was asked for outside a localnet/devnet.
    #[error(
        "{var}=1 makes this representative equivocate (a TEST hook); refused: the genesis \
         {genesis} is not a localnet's or devnet's (chain {chain:?})"
    )]
    NotATestNetwork {
        /// The variable.
        var: &'static str,
        /// The genesis file (or "none").
        genesis: String,
        /// Its chain name.
        chain: String,
    },
    /// The genesis file could not be read.
    #[error("{var}=1: reading the genesis file: {source}")]
    Genesis {
        /// The variable.
        var: &'static str,
        /// Why.
        source: node::genesis::Error,
    },
}

/// TEST ONLY: whether this representative runs the consensus equivocation hook
/// (`CITYCHAIN_TEST_EQUIVOCATE=1`: each of its proposals is followed by a second, conflicting
/// batch for the same round, signed with its real key, so its peers catch it and report a
/// DoubleSign). Allowed only on a network whose genesis `chain` is a localnet's
/// (`citychain-localnet`) or names a devnet, so no production node can be made to get
/// itself slashed by a stray variable.
pub(crate) fn test_equivocation(
    value: Option<String>,
    genesis: Option<&std::path::Path>,
) -> Result<bool, TestHookError> {
    let var = devnet::localnet::TEST_EQUIVOCATE_ENV;
    match value.as_deref() {
        None | Some("0") => return Ok(false),
        Some("1") => {}
        Some(other) => {
            return Err(TestHookError::BadValue {
                var,
                value: other.to_string(),
            });
        }
    }
    let chain = match genesis {
        Some(p) => {
            node::genesis::Genesis::load(p)
                .map_err(|source| TestHookError::Genesis { var, source })?
                .chain
        }
        None => String::new(),
    };
    if chain == devnet::localnet::LOCALNET_CHAIN || chain.contains("devnet") {
        tracing::warn!(
            "{var}=1: TEST HOOK ON — this representative equivocates on every proposal and \
             will be slashed (chain {chain})"
        );
        Ok(true)
    } else {
        Err(TestHookError::NotATestNetwork {
            var,
            genesis: genesis.map_or_else(|| "none".into(), |p| p.display().to_string()),
            chain,
        })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn genesis(dir: &std::path::Path, chain: &str) -> std::path::PathBuf {
        let key = pqc::Keypair::generate();
        let file = node::genesis::GenesisFile {
            chain: chain.into(),
            cities: vec![node::genesis::GenesisCity {
                id: "JP-13".into(),
                members: vec![node::genesis::GenesisFile::member(
                    dag_core::Signer::public_key(&key),
                    1,
                    "127.0.0.1:1",
                )],
            }],
            continent: None,
            global: None,
            accounts: Vec::new(),
        };
        let p = dir.join(format!("{chain}.toml"));
        file.write(&p).unwrap();
        p
    }

    #[test]
    fn the_equivocation_hook_runs_only_on_a_localnet_or_devnet_genesis() {
        let dir = tempfile::tempdir().unwrap();
        let local = genesis(dir.path(), devnet::localnet::LOCALNET_CHAIN);
        let main = genesis(dir.path(), "citychain-mainnet");
        // Unset or 0: off, whatever the network.
        assert!(!test_equivocation(None, Some(&main)).unwrap());
        assert!(!test_equivocation(Some("0".into()), Some(&main)).unwrap());
        assert!(test_equivocation(Some("1".into()), Some(&local)).unwrap());
        assert!(matches!(
            test_equivocation(Some("1".into()), Some(&main)),
            Err(TestHookError::NotATestNetwork { chain, .. }) if chain == "citychain-mainnet"
        ));
        assert!(matches!(
            test_equivocation(Some("1".into()), None),
            Err(TestHookError::NotATestNetwork { .. })
        ));
        assert!(matches!(
            test_equivocation(Some("yes".into()), Some(&local)),
            Err(TestHookError::BadValue { .. })
        ));
        assert!(matches!(
            test_equivocation(Some("1".into()), Some(&dir.path().join("missing.toml"))),
            Err(TestHookError::Genesis { .. })
        ));
    }
}

//! An in-process devnet on loopback: an in-memory presence service, n light nodes (each its
//! own gRPC `ShardStore` server, logged in and heartbeating through node-list), and a city
//! node (gRPC `CityNode`) that learns its light nodes from node-list, checks proof of place
//! on the shipped polygons, flags txs, ranks holders by priority, erasure-codes micro-batches
//! onto the light nodes and re-replicates when one leaves.

use crate::Result;
use dag_core::{NodeId, Role};
use node::{
    CityConfig, CityEnv, CityHandle, LightConfig, LightHandle, MembershipConfig, PipelineConfig,
    PopMode, RunningRole, run_city_with, run_light_with,
};
use node_list::NodeListConfig;
use pqc::Keypair;
use presence::{MemoryPresenceStore, PresenceStore, SweeperHandle, SystemClock, spawn_sweeper};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The city the devnet serves (Tokyo) and the position of its city node (Tokyo
/// Metropolitan Government Building).
pub const CITY: &str = "JP-13";
/// Position of the devnet's city node.
pub const CITY_POS: (f64, f64) = (35.689_5, 139.691_7);

/// Devnet settings.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// Light nodes to start.
    pub lights: usize,
    /// Presence timing (short, so a departure is seen within about two seconds).
    pub heartbeat: Duration,
    /// Online TTL of the presence store.
    pub presence_ttl: Duration,
    /// Pipeline settings.
    pub pipeline: PipelineConfig,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        DevnetConfig {
            lights: 6,
            heartbeat: Duration::from_millis(500),
            presence_ttl: Duration::from_millis(1500),
            pipeline: PipelineConfig::default(),
        }
    }
}

/// A light node of the devnet.
#[derive(Debug)]
pub struct DevLight {
    /// Its id.
    pub id: NodeId,
    role: Option<RunningRole>,
}

impl DevLight {
    /// Its running server (`None` once crashed or stopped), e.g. to reach its shard store.
    pub fn server(&self) -> Option<&LightHandle> {
        self.role.as_ref().and_then(RunningRole::light_handle)
    }
}

/// A running devnet.
pub struct Devnet {
    cfg: DevnetConfig,
    dir: PathBuf,
    presence: Arc<dyn PresenceStore>,
    _sweeper: SweeperHandle,
    city_key: Keypair,
    city: Option<RunningRole>,
    /// The light nodes, in start order.
    pub lights: Vec<DevLight>,
    pop: Arc<pop_geo::CachedIndex>,
}

impl std::fmt::Debug for Devnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devnet")
            .field("dir", &self.dir)
            .field("lights", &self.lights.len())
            .finish()
    }
}

/// Loopback with a free port.
const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

impl Devnet {
    fn nodelist_config(&self) -> NodeListConfig {
        node_list_config(&self.cfg)
    }

    /// Starts presence, the light nodes and the city node under `dir`.
    pub async fn start(cfg: DevnetConfig, dir: &Path) -> Result<Devnet> {
        let presence: Arc<dyn PresenceStore> = Arc::new(MemoryPresenceStore::new(
            cfg.presence_ttl,
            Arc::new(SystemClock),
        ));
        let sweeper = spawn_sweeper(presence.clone(), cfg.heartbeat / 2);
        let japan = pop_geo::shipped::japan()?;
        let spots = japan.sample_points(CITY, cfg.lights.max(1), 7);
        let pop = Arc::new(pop_geo::CachedIndex::new(
            Arc::new(japan),
            Default::default(),
        ));
        let mut net = Devnet {
            cfg: cfg.clone(),
            dir: dir.to_path_buf(),
            presence,
            _sweeper: sweeper,
            city_key: Keypair::generate(),
            city: None,
            lights: Vec::new(),
            pop,
        };
        for i in 0..cfg.lights {
            let key = Keypair::generate();
            let id = key.node_id();
            let lcfg = LightConfig {
                listen: LOOPBACK,
                data_dir: dir.join(format!("light-{i}")),
                ..LightConfig::default()
            };
            let pos = spots.get(i).copied().unwrap_or(CITY_POS);
            let m = net.membership(&format!("zone-{}", i % 3), pos);
            let role = run_light_with(&lcfg, key, &m, net.presence.clone()).await?;
            net.lights.push(DevLight {
                id,
                role: Some(role),
            });
        }
        net.start_city().await?;
        Ok(net)
    }

    fn membership(&self, zone: &str, pos: (f64, f64)) -> MembershipConfig {
        MembershipConfig {
            city_id: CITY.into(),
            zone: zone.into(),
            lat: pos.0,
            lon: pos.1,
            advertise: None,
            pop_mode: PopMode::Reject,
            nodelist: self.nodelist_config(),
        }
    }

    /// (Re)starts the city node on the devnet's data dir, through the city role's
    /// composition root.
    pub async fn start_city(&mut self) -> Result<()> {
        let cfg = CityConfig {
            listen: LOOPBACK,
            data_dir: self.dir.join("city"),
            ..CityConfig::default()
        };
        let env = CityEnv {
            presence: self.presence.clone(),
            pop: Some(self.pop.clone()),
            transport: None,
            pipeline: self.cfg.pipeline.clone(),
            rereplicate_settle: Duration::from_millis(200),
        };
        let m = self.membership("city", CITY_POS);
        self.city = Some(run_city_with(&cfg, &self.city_key, &m, env).await?);
        Ok(())
    }

    /// Stops the city node (graceful), keeping its data dir.
    pub async fn stop_city(&mut self) -> Result<()> {
        if let Some(c) = self.city.take() {
            c.shutdown().await?;
        }
        Ok(())
    }

    /// The city node.
    pub fn city(&self) -> &CityHandle {
        self.city
            .as_ref()
            .and_then(RunningRole::city_handle)
            .expect("city is running between start_city and stop_city")
    }

    /// Live light nodes in the city's view.
    pub fn city_view_lights(&self) -> usize {
        self.city
            .as_ref()
            .and_then(RunningRole::view)
            .map_or(0, |r| r.by_role(Role::Light).len())
    }

    /// Waits until the city sees `n` light nodes (or the timeout passes).
    pub async fn wait_for_lights(&self, n: usize, timeout: Duration) -> bool {
        let t0 = tokio::time::Instant::now();
        while t0.elapsed() < timeout {
            if self.city_view_lights() == n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Kills light node `i` abruptly: its server stops mid-call and it never logs out (as a
    /// crash); presence notices when its heartbeats stop.
    pub async fn crash_light(&mut self, i: usize) {
        if let Some(r) = self.lights.get_mut(i).and_then(|l| l.role.take()) {
            r.kill().await;
        }
    }

    /// Stops light node `i` gracefully: it logs out, then its server drains.
    pub async fn stop_light(&mut self, i: usize) -> Result<()> {
        if let Some(r) = self.lights.get_mut(i).and_then(|l| l.role.take()) {
            r.shutdown().await?;
        }
        Ok(())
    }

    /// Stops everything.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop_city().await?;
        for i in 0..self.lights.len() {
            self.stop_light(i).await?;
        }
        Ok(())
    }
}

fn node_list_config(cfg: &DevnetConfig) -> NodeListConfig {
    NodeListConfig {
        heartbeat: cfg.heartbeat,
        poll_interval: cfg.heartbeat,
        cache_ttl: cfg.presence_ttl * 2,
        presence_ttl: cfg.presence_ttl,
        ..NodeListConfig::default()
    }
}

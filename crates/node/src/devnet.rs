//! An in-process devnet on loopback: an in-memory presence service, n light nodes (each its
//! own gRPC `ShardStore` server, logged in and heartbeating through node-list), and a city
//! node (gRPC `CityNode`) that learns its light nodes from node-list, checks proof of place
//! on the shipped polygons, flags txs, ranks holders by priority, erasure-codes micro-batches
//! onto the light nodes and re-replicates when one leaves.

use crate::grpc_transport::GrpcTransport;
use crate::light::{LightConfig, LightHandle, start_light};
use crate::membership::{NodeListDirectory, node_info, spawn_rereplicator};
use crate::{
    CityConfig, CityHandle, CityParts, Error, PipelineConfig, PopCheck, PopMode, PriorityDirectory,
    Result, StorageParts, start_city_with,
};
use dag_core::{NodeId, Role};
use node_list::{NodeListConfig, NodeListHandle, NodeListManager};
use pqc::Keypair;
use presence::{MemoryPresenceStore, PresenceStore, SweeperHandle, SystemClock, spawn_sweeper};
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
    server: Option<LightHandle>,
    members: Option<NodeListHandle>,
}

impl DevLight {
    /// Its running server (`None` once crashed or stopped), e.g. to reach its shard store.
    pub fn server(&self) -> Option<&LightHandle> {
        self.server.as_ref()
    }
}

/// A running devnet.
pub struct Devnet {
    cfg: DevnetConfig,
    dir: PathBuf,
    presence: Arc<dyn PresenceStore>,
    _sweeper: SweeperHandle,
    city_key: Keypair,
    city: Option<CityHandle>,
    city_members: Option<NodeListHandle>,
    city_login: Option<NodeListHandle>,
    rereplicator: Option<tokio::task::JoinHandle<()>>,
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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
        let japan = pop_geo::shipped::japan().map_err(|e| Error::Config(e.to_string()))?;
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
            city_members: None,
            city_login: None,
            rereplicator: None,
            lights: Vec::new(),
            pop,
        };
        for i in 0..cfg.lights {
            let key = Keypair::generate();
            let id = key.node_id();
            let lcfg = LightConfig {
                listen: "127.0.0.1:0"
                    .parse()
                    .map_err(|_| Error::Config("listen".into()))?,
                data_dir: dir.join(format!("light-{i}")),
                ..LightConfig::default()
            };
            let server = start_light(&lcfg, key).await?;
            let pos = spots.get(i).copied().unwrap_or(CITY_POS);
            let info = node_info(
                id,
                Role::Light,
                server.addr().to_string(),
                CITY,
                &format!("zone-{}", i % 3),
                pos,
                lcfg.quota_bytes,
                now_ms(),
            );
            let members =
                NodeListManager::start(net.presence.clone(), Some(info), net.nodelist_config());
            net.lights.push(DevLight {
                id,
                server: Some(server),
                members: Some(members),
            });
        }
        net.start_city().await?;
        Ok(net)
    }

    /// (Re)starts the city node on the devnet's data dir.
    pub async fn start_city(&mut self) -> Result<()> {
        let cfg = CityConfig {
            listen: "127.0.0.1:0"
                .parse()
                .map_err(|_| Error::Config("listen".into()))?,
            data_dir: self.dir.join("city"),
            ..CityConfig::default()
        };
        let members = NodeListManager::start(self.presence.clone(), None, self.nodelist_config());
        let directory = Arc::new(PriorityDirectory::new(
            NodeListDirectory::new(members.registry().clone(), Some(CITY.into())),
            CITY_POS,
        ));
        let flagger = flagging::FlaggerRegistry::with_defaults()
            .build(&flagging::FlaggingConfig::default())
            .map_err(|e| Error::Config(e.to_string()))?;
        let parts = CityParts {
            storage: Some(StorageParts {
                transport: Arc::new(GrpcTransport::default()),
                directory,
                config: self.cfg.pipeline.clone(),
            }),
            pop: Some(PopCheck {
                index: self.pop.clone(),
                mode: PopMode::Reject,
            }),
            flagger: Some(flagger),
        };
        let handle = start_city_with(&cfg, &self.city_key, parts).await?;
        // The city logs in and heartbeats too, with its real address.
        let info = node_info(
            self.city_key.node_id(),
            Role::City,
            handle.addr().to_string(),
            CITY,
            "city",
            CITY_POS,
            0,
            now_ms(),
        );
        self.city_login = Some(NodeListManager::start(
            self.presence.clone(),
            Some(info),
            self.nodelist_config(),
        ));
        if let Some(p) = handle.node().pipeline() {
            self.rereplicator = Some(spawn_rereplicator(
                members.registry(),
                Arc::downgrade(p),
                Duration::from_millis(200),
            ));
        }
        self.city = Some(handle);
        self.city_members = Some(members);
        Ok(())
    }

    /// Stops the city node (graceful), keeping its data dir.
    pub async fn stop_city(&mut self) -> Result<()> {
        if let Some(r) = self.rereplicator.take() {
            r.abort();
        }
        if let Some(m) = self.city_members.take() {
            m.shutdown().await;
        }
        if let Some(m) = self.city_login.take() {
            m.shutdown().await;
        }
        if let Some(h) = self.city.take() {
            h.shutdown().await?;
        }
        Ok(())
    }

    /// The city node.
    pub fn city(&self) -> &CityHandle {
        self.city
            .as_ref()
            .expect("city is running between start_city and stop_city")
    }

    /// Live light nodes in the city's view.
    pub fn city_view_lights(&self) -> usize {
        self.city_members
            .as_ref()
            .map_or(0, |m| m.registry().by_role(Role::Light).len())
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
        if let Some(l) = self.lights.get_mut(i) {
            if let Some(m) = l.members.take() {
                m.abort();
            }
            if let Some(s) = l.server.take() {
                s.kill().await;
            }
        }
    }

    /// Stops light node `i` gracefully: it logs out, then its server drains.
    pub async fn stop_light(&mut self, i: usize) -> Result<()> {
        if let Some(l) = self.lights.get_mut(i) {
            if let Some(m) = l.members.take() {
                m.shutdown().await;
            }
            if let Some(s) = l.server.take() {
                s.shutdown().await?;
            }
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

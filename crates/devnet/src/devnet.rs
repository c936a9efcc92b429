//! An in-process devnet on loopback: an in-memory presence service, n light nodes (each its
//! own gRPC `ShardStore` server, logged in and heartbeating through node-list), a continent,
//! and a city committee of representatives named in a generated genesis file — each a city
//! node (gRPC `CityNode` + `Consensus` on one address) that learns its light nodes from
//! node-list, checks proof of place, flags txs, erasure-codes micro-batches onto the light
//! nodes, orders held txs with the others and federates checkpoints to the continent. Every
//! role starts through the same composition root the binary uses.

use crate::Result;
use dag_core::{NodeId, Role};
use node::continent::{CityCommittee, ContinentConfig, ContinentHandle, start_continent};
use node::genesis::{GenesisCity, GenesisFile, city_hash};
use node::{
    CityConfig, CityEnv, CityHandle, LightConfig, LightHandle, MembershipConfig, PipelineConfig,
    PopMode, RunningRole, ShardTransport, run_city_with, run_light_with,
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
#[derive(Clone)]
pub struct DevnetConfig {
    /// Light nodes to start.
    pub lights: usize,
    /// Presence timing (short, so a departure is seen within about two seconds).
    pub heartbeat: Duration,
    /// Online TTL of the presence store.
    pub presence_ttl: Duration,
    /// Pipeline settings.
    pub pipeline: PipelineConfig,
    /// Representatives in the city's committee (each a city node).
    pub reps: usize,
    /// Serve the DApp HTTP gateway on every representative (a free loopback port).
    pub gateway: bool,
    /// The representatives' transport to light nodes (`None`: gRPC); the demo's fault
    /// injection wraps it.
    pub transport: Option<Arc<dyn ShardTransport>>,
    /// A fixed proposal interval (ms) for the representatives; `None` (the default): the
    /// domain's dynamic batch interval (1.0 s start, 0.5–5 s).
    pub batch_interval_ms: Option<u64>,
    /// Genesis accounts and their opening balances (the ledger starts from them).
    pub accounts: Vec<(dag_core::AccountId, u64)>,
    /// The representatives' periodic storage audit (the city default: every 10 minutes;
    /// tests shorten it).
    pub audit: node::AuditConfig,
    /// The DPoS rules every representative runs (e.g. a term of seconds in tests).
    pub dpos: dpos::DposConfig,
    /// Test hook: this representative equivocates on every proposal (see
    /// `node::city::consensus::RepresentativeConfig::equivocate_for_test`).
    pub equivocating_rep: Option<usize>,
    /// Node links over mutual TLS (X25519MLKEM768, NodeId-bound certificates in each data
    /// dir), as the binary runs them; `false` runs them plaintext as `--insecure` would.
    /// With TLS, light nodes take shards only from the committee in the genesis file.
    pub tls: bool,
    /// Only the first N light nodes are on the city's admission allow-list
    /// (`CityConfig::admission`); `None`: every light node is admitted.
    pub admitted_lights: Option<usize>,
}

impl std::fmt::Debug for DevnetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevnetConfig")
            .field("lights", &self.lights)
            .field("heartbeat", &self.heartbeat)
            .field("presence_ttl", &self.presence_ttl)
            .field("pipeline", &self.pipeline)
            .field("reps", &self.reps)
            .field("transport", &self.transport.is_some())
            .field("gateway", &self.gateway)
            .field("batch_interval_ms", &self.batch_interval_ms)
            .field("audit", &self.audit)
            .field("tls", &self.tls)
            .field("admitted_lights", &self.admitted_lights)
            .finish()
    }
}

impl DevnetConfig {
    /// A devnet for repair tests: `lights` light nodes on short heartbeats, a presence TTL
    /// of two minutes so a crashed holder stays listed (live, but silent) and background
    /// re-replication does not race the repair under test, and `call_timeout` per call.
    pub fn crashed_stay_listed(lights: usize, call_timeout: Duration) -> Self {
        DevnetConfig {
            lights,
            heartbeat: Duration::from_millis(200),
            presence_ttl: Duration::from_secs(120),
            pipeline: PipelineConfig {
                call_timeout,
                ..PipelineConfig::default()
            },
            ..DevnetConfig::default()
        }
    }
}

impl Default for DevnetConfig {
    fn default() -> Self {
        DevnetConfig {
            lights: 6,
            heartbeat: Duration::from_millis(500),
            presence_ttl: Duration::from_millis(1500),
            pipeline: PipelineConfig::default(),
            reps: 1,
            gateway: true,
            transport: None,
            batch_interval_ms: None,
            accounts: Vec::new(),
            audit: node::AuditConfig::default(),
            dpos: dpos::DposConfig::default(),
            equivocating_rep: None,
            tls: true,
            admitted_lights: None,
        }
    }
}

/// A representative of the devnet's city.
#[derive(Debug)]
pub struct DevRep {
    /// Its key.
    pub key: Keypair,
    /// Its gRPC address (CityNode and Consensus), fixed in the genesis file.
    pub addr: SocketAddr,
    role: Option<RunningRole>,
}

/// A light node of the devnet.
#[derive(Debug)]
pub struct DevLight {
    /// Its id.
    pub id: NodeId,
    /// Its node key (e.g. to register it in dpos and claim its rewards).
    pub key: Keypair,
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
    reps: Vec<DevRep>,
    genesis: PathBuf,
    continent_key: Keypair,
    continent_cfg: ContinentConfig,
    continent: Option<ContinentHandle>,
    /// The light nodes, in start order.
    pub lights: Vec<DevLight>,
    pop: Arc<pop_geo::CachedIndex>,
    /// The city this devnet's committee and light nodes serve.
    city: String,
    /// Where its representatives are.
    city_pos: (f64, f64),
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
        let accounts: Vec<_> = cfg.accounts.iter().map(|(a, b)| (*a, *b, None)).collect();
        let (mut reps, genesis, continent_key, continent_cfg, continent) =
            Self::genesis(&[(CITY, cfg.reps.max(1))], dir, &accounts, cfg.tls).await?;
        let reps = reps.remove(0);
        Self::start_city_net(
            cfg,
            dir,
            (CITY, CITY_POS),
            reps,
            genesis,
            (continent_key, continent_cfg, Some(continent)),
        )
        .await
    }

    /// Two cities, each with its own committee (`cfg_a.reps`, `cfg_b.reps`), light nodes and
    /// presence, one continent both federate to (run by the first devnet) and one genesis
    /// file naming both committees and the `accounts` with their home city (`CITY` or
    /// `city_b`): the network cross-city transfers run on. `cfg_*.accounts` are not used.
    pub async fn start_two_cities(
        cfg_a: DevnetConfig,
        cfg_b: DevnetConfig,
        city_b: &str,
        accounts: &[(dag_core::AccountId, u64, String)],
        dir: &Path,
    ) -> Result<(Devnet, Devnet)> {
        let accounts: Vec<_> = accounts
            .iter()
            .map(|(a, b, c)| (*a, *b, Some(c.clone())))
            .collect();
        let tls = cfg_a.tls && cfg_b.tls;
        let (mut reps, genesis, continent_key, continent_cfg, continent) = Self::genesis(
            &[(CITY, cfg_a.reps.max(1)), (city_b, cfg_b.reps.max(1))],
            dir,
            &accounts,
            tls,
        )
        .await?;
        let reps_b = reps.remove(1);
        let reps_a = reps.remove(0);
        let pos_b = pop_geo::shipped::japan()?
            .sample_points(city_b, 1, 11)
            .first()
            .copied()
            .ok_or_else(|| crate::Error::Measurement(format!("no point inside {city_b}")))?;
        let a = Self::start_city_net(
            cfg_a,
            &dir.join(CITY),
            (CITY, CITY_POS),
            reps_a,
            genesis.clone(),
            (
                continent_key.clone(),
                continent_cfg.clone(),
                Some(continent),
            ),
        )
        .await?;
        let b = Self::start_city_net(
            cfg_b,
            &dir.join(city_b),
            (city_b, pos_b),
            reps_b,
            genesis,
            (continent_key, continent_cfg, None),
        )
        .await?;
        Ok((a, b))
    }

    /// Presence, light nodes and the representatives of one city of `genesis`.
    async fn start_city_net(
        cfg: DevnetConfig,
        dir: &Path,
        (city, city_pos): (&str, (f64, f64)),
        reps: Vec<DevRep>,
        genesis: PathBuf,
        (continent_key, continent_cfg, continent): (
            Keypair,
            ContinentConfig,
            Option<ContinentHandle>,
        ),
    ) -> Result<Devnet> {
        let presence: Arc<dyn PresenceStore> = Arc::new(MemoryPresenceStore::new(
            cfg.presence_ttl,
            Arc::new(SystemClock),
        ));
        let sweeper = spawn_sweeper(presence.clone(), cfg.heartbeat / 2);
        let japan = pop_geo::shipped::japan()?;
        let spots = japan.sample_points(city, cfg.lights.max(1), 7);
        let pop = Arc::new(pop_geo::CachedIndex::new(
            Arc::new(japan),
            Default::default(),
        ));
        let mut net = Devnet {
            cfg: cfg.clone(),
            dir: dir.to_path_buf(),
            presence,
            _sweeper: sweeper,
            reps,
            genesis,
            continent_key,
            continent_cfg,
            continent,
            lights: Vec::new(),
            pop,
            city: city.to_string(),
            city_pos,
        };
        for i in 0..cfg.lights {
            let key = Keypair::generate();
            let id = key.node_id();
            let data_dir = dir.join(format!("light-{i}"));
            let writers = cfg.tls.then(|| -> Result<node::LightWriters> {
                Ok(node::LightWriters {
                    committees: Arc::new(node::genesis::Genesis::load(&net.genesis)?),
                    city_id: net.city.clone(),
                })
            });
            let lcfg = LightConfig {
                listen: LOOPBACK,
                links: node::runtime::node_links(&data_dir, &key, !cfg.tls)?,
                writers: writers.transpose()?,
                data_dir,
                // The committee: REPAIR_REQUESTs only from the city's representatives.
                genesis: Some(net.genesis.clone()),
                ..LightConfig::default()
            };
            let pos = spots.get(i).copied().unwrap_or(net.city_pos);
            let m = net.membership(&format!("zone-{}", i % 3), pos);
            let role = run_light_with(&lcfg, key.clone(), &m, net.presence.clone()).await?;
            net.lights.push(DevLight {
                id,
                key,
                role: Some(role),
            });
        }
        for i in 0..net.reps.len() {
            net.start_rep(i).await?;
        }
        Ok(net)
    }

    /// Keys and fixed loopback addresses for `n` representatives, a continent started on a
    /// free port, and the genesis file naming them all.
    async fn genesis(
        cities: &[(&str, usize)],
        dir: &Path,
        accounts: &[(dag_core::AccountId, u64, Option<String>)],
        tls: bool,
    ) -> Result<(
        Vec<Vec<DevRep>>,
        PathBuf,
        Keypair,
        ContinentConfig,
        ContinentHandle,
    )> {
        std::fs::create_dir_all(dir).map_err(|source| crate::Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut all = Vec::new();
        // Held until every address is chosen, so no two representatives get one port.
        let mut held = Vec::new();
        for (_, n) in cities {
            all.push(Self::rep_keys(*n, dir, &mut held)?);
        }
        drop(held);
        let continent_key = Keypair::generate();
        let mut committees = Vec::new();
        for ((city, _), reps) in cities.iter().zip(&all) {
            let committee = dag_core::consensus::Committee::equal(
                reps.iter()
                    .map(|r| dag_core::Signer::public_key(&r.key).to_vec())
                    .collect(),
            )
            .ok_or_else(|| crate::Error::Measurement("an empty committee".into()))?;
            committees.push(CityCommittee {
                city: city_hash(city),
                committee,
            });
        }
        let mut continent_cfg = ContinentConfig::new(LOOPBACK, dir.join("continent"), committees);
        continent_cfg.links =
            node::runtime::node_links(&dir.join("continent"), &continent_key, !tls)?;
        let continent = start_continent(&continent_cfg, continent_key.clone()).await?;
        let file = GenesisFile {
            chain: "citychain-devnet".into(),
            cities: cities
                .iter()
                .zip(&all)
                .map(|((city, _), reps)| GenesisCity {
                    id: (*city).into(),
                    members: reps
                        .iter()
                        .map(|r| {
                            GenesisFile::member(
                                dag_core::Signer::public_key(&r.key),
                                1,
                                r.addr.to_string(),
                            )
                        })
                        .collect(),
                })
                .collect(),
            continent: Some(GenesisFile::log(
                dag_core::Signer::public_key(&continent_key),
                continent.addr().to_string(),
            )),
            global: None,
            accounts: accounts
                .iter()
                .map(|(a, balance, city)| node::genesis::GenesisAccount {
                    account: a.to_hex(),
                    balance: *balance,
                    city: city.clone(),
                })
                .collect(),
        };
        let genesis = dir.join("genesis.toml");
        file.write(&genesis)?;
        // The continent keeps its port across restarts.
        continent_cfg.listen = continent.addr();
        Ok((all, genesis, continent_key, continent_cfg, continent))
    }

    /// Keys and fixed free loopback addresses for `n` representatives.
    fn rep_keys(
        n: usize,
        dir: &Path,
        held: &mut Vec<std::net::TcpListener>,
    ) -> Result<Vec<DevRep>> {
        let mut reps = Vec::new();
        for _ in 0..n {
            // A free port, released for the representative to bind (the genesis file must
            // name its address before it starts).
            let l = std::net::TcpListener::bind(LOOPBACK).map_err(|source| crate::Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let addr = l.local_addr().map_err(|source| crate::Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            held.push(l);
            reps.push(DevRep {
                key: Keypair::generate(),
                addr,
                role: None,
            });
        }
        Ok(reps)
    }

    fn membership(&self, zone: &str, pos: (f64, f64)) -> MembershipConfig {
        MembershipConfig {
            city_id: self.city.clone(),
            zone: zone.into(),
            lat: pos.0,
            lon: pos.1,
            advertise: None,
            pop_mode: PopMode::Reject,
            nodelist: self.nodelist_config(),
            gossip: Default::default(),
        }
    }

    /// (Re)starts representative `i` on its data dir and address, through the city role's
    /// composition root.
    pub async fn start_rep(&mut self, i: usize) -> Result<()> {
        let Some(rep) = self.reps.get(i) else {
            return Ok(());
        };
        let data_dir = self.dir.join(format!("rep-{i}"));
        let cfg = CityConfig {
            listen: rep.addr,
            links: node::runtime::node_links(&data_dir, &rep.key, !self.cfg.tls)?,
            data_dir,
            genesis: Some(self.genesis.clone()),
            batch_interval_ms: self.cfg.batch_interval_ms,
            dpos: self.cfg.dpos.clone(),
            equivocate_for_test: self.cfg.equivocating_rep == Some(i),
            gateway: self.cfg.gateway.then(|| node::gateway::GatewayConfig {
                listen: LOOPBACK,
                // Tests and the demo drive it hard from one address.
                rate_limit_per_second: 0,
                ..node::gateway::GatewayConfig::default()
            }),
            audit: self.cfg.audit.clone(),
            admission: node::AdmissionConfig {
                allow: self
                    .cfg
                    .admitted_lights
                    .map(|n| self.lights.iter().take(n).map(|l| l.id).collect()),
                min_stake: None,
            },
            ..CityConfig::default()
        };
        let env = CityEnv {
            presence: self.presence.clone(),
            pop: Some(self.pop.clone()),
            transport: self.cfg.transport.clone(),
            pipeline: self.cfg.pipeline.clone(),
            rereplicate_settle: Duration::from_millis(200),
        };
        let m = self.membership(&format!("city-{i}"), self.city_pos);
        let key = rep.key.clone();
        let role = restart_on(|| run_city_with(&cfg, &key, &m, env.clone())).await?;
        self.reps[i].role = Some(role);
        Ok(())
    }

    /// Stops representative `i` gracefully, keeping its data dir.
    pub async fn stop_rep(&mut self, i: usize) -> Result<()> {
        if let Some(r) = self.reps.get_mut(i).and_then(|r| r.role.take()) {
            r.shutdown().await?;
        }
        Ok(())
    }

    /// Kills representative `i` as a crash (no flush, no logout).
    pub async fn kill_rep(&mut self, i: usize) {
        if let Some(r) = self.reps.get_mut(i).and_then(|r| r.role.take()) {
            r.kill().await;
        }
    }

    /// Replaces the transport to light nodes used by representatives started from now on
    /// (`None`: gRPC), e.g. so a killed process's stuck calls stay stuck.
    pub fn set_transport(&mut self, transport: Option<Arc<dyn ShardTransport>>) {
        self.cfg.transport = transport;
    }

    /// Representative `i`'s HTTP gateway address, while it runs with one.
    pub fn gateway_addr(&self, i: usize) -> Option<SocketAddr> {
        self.rep(i).and_then(CityHandle::gateway_addr)
    }

    /// Representative `i`'s key (it signs its consensus messages and its system txs).
    pub fn rep_key(&self, i: usize) -> Option<&Keypair> {
        self.reps.get(i).map(|r| &r.key)
    }

    /// Representative `i`'s city node, while it runs.
    pub fn rep(&self, i: usize) -> Option<&CityHandle> {
        self.reps
            .get(i)
            .and_then(|r| r.role.as_ref())
            .and_then(RunningRole::city_handle)
    }

    /// The representatives (keys, addresses).
    pub fn reps(&self) -> &[DevRep] {
        &self.reps
    }

    /// The presence store every node of the devnet uses.
    pub fn presence(&self) -> &Arc<dyn PresenceStore> {
        &self.presence
    }

    /// The city this devnet serves.
    pub fn city_id(&self) -> &str {
        &self.city
    }

    /// The genesis file.
    pub fn genesis_path(&self) -> &Path {
        &self.genesis
    }

    /// The continent, while it runs.
    pub fn continent(&self) -> Option<&ContinentHandle> {
        self.continent.as_ref()
    }

    /// The continent's public key.
    pub fn continent_public_key(&self) -> Vec<u8> {
        dag_core::Signer::public_key(&self.continent_key).to_vec()
    }

    /// Kills the continent (its log stays on disk).
    pub async fn kill_continent(&mut self) {
        if let Some(c) = self.continent.take() {
            c.kill().await;
        }
    }

    /// (Re)starts the continent on its address and data dir.
    pub async fn start_continent(&mut self) -> Result<()> {
        let (cfg, key) = (&self.continent_cfg, &self.continent_key);
        self.continent = Some(restart_on(|| start_continent(cfg, key.clone())).await?);
        Ok(())
    }

    /// (Re)starts the first representative (the devnet's "city").
    pub async fn start_city(&mut self) -> Result<()> {
        self.start_rep(0).await
    }

    /// Stops the first representative (graceful), keeping its data dir.
    pub async fn stop_city(&mut self) -> Result<()> {
        self.stop_rep(0).await
    }

    /// The first representative's city node.
    pub fn city(&self) -> &CityHandle {
        self.rep(0)
            .expect("city is running between start_city and stop_city")
    }

    /// Live light nodes in the city's view.
    pub fn city_view_lights(&self) -> usize {
        self.reps
            .first()
            .and_then(|r| r.role.as_ref())
            .and_then(RunningRole::view)
            .map_or(0, |r| r.by_role(Role::Light).len())
    }

    /// Live light nodes in representative `i`'s view (`None` while it is down).
    pub fn rep_view_lights(&self, i: usize) -> Option<usize> {
        self.reps
            .get(i)
            .and_then(|r| r.role.as_ref())
            .and_then(RunningRole::view)
            .map(|r| r.by_role(Role::Light).len())
    }

    /// Waits until every running representative sees `n` light nodes (or the timeout
    /// passes).
    pub async fn wait_for_lights(&self, n: usize, timeout: Duration) -> bool {
        let t0 = tokio::time::Instant::now();
        while t0.elapsed() < timeout {
            let views: Vec<usize> = (0..self.reps.len())
                .filter_map(|i| self.rep_view_lights(i))
                .collect();
            if !views.is_empty() && views.iter().all(|v| *v == n) {
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
        for i in 0..self.reps.len() {
            self.stop_rep(i).await?;
        }
        if let Some(c) = self.continent.take() {
            c.shutdown().await?;
        }
        for i in 0..self.lights.len() {
            self.stop_light(i).await?;
        }
        Ok(())
    }
}

/// Starts a role on a fixed address and data dir again: right after a kill the port may
/// still be held (TIME_WAIT) or the database file not yet released, so those two errors are
/// retried for up to 5 s.
async fn restart_on<T, F, Fut>(mut start: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = node::Result<T>>,
{
    let mut tries = 0;
    loop {
        match start().await {
            Ok(v) => return Ok(v),
            Err(e @ (node::Error::Bind { .. } | node::Error::Store { .. })) if tries < 50 => {
                tracing::debug!(error = %e, "restart: retrying");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
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

//! `city-node localnet`: the whole deployed network on one host as separate OS processes —
//! a presence server, light nodes, a city committee of representatives, a continent and a
//! global log node — from keys, a genesis file and a manifest it writes into one directory.
//! What `sui start` or `anvil` give their users; the multi-process tests drive it too.
//!
//! Layout of the directory: `genesis.toml`, `presence.toml`, `localnet.toml` (the
//! manifest: every process's role and addresses), and one sub-directory per node holding
//! its `node.key`, its data and its log (`<name>/node.log`). Starting again on an existing
//! directory reuses its keys, genesis and ports, so a stopped localnet resumes.
//!
//! With [`LocalnetConfig::second_city`] it starts **two cities**: the second gets its own
//! presence server, light nodes and committee (names prefixed with the city id in lower
//! case, e.g. `jp-27-rep-0`), both in one genesis file and federating to the one
//! continent: the network cross-city transfers run on. Genesis accounts (with their home
//! city) come from [`LocalnetConfig::accounts`].

use crate::{Error, Result};
use node::genesis::{GenesisCity, GenesisFile};
use pqc::Keypair;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The city the localnet serves.
pub const LOCALNET_CITY: &str = crate::CITY;

/// The `chain` name of a localnet's genesis file.
pub const LOCALNET_CHAIN: &str = "citychain-localnet";

/// The environment variable that turns on the consensus equivocation test hook in a
/// representative process (`1`: on). TEST ONLY: `city-node run` refuses it unless the
/// genesis file is a localnet's or a devnet's.
pub const TEST_EQUIVOCATE_ENV: &str = "CITYCHAIN_TEST_EQUIVOCATE";

/// What to start.
#[derive(Debug, Clone)]
pub struct LocalnetConfig {
    /// The directory for keys, genesis, data and logs.
    pub dir: PathBuf,
    /// City representatives (the committee).
    pub reps: usize,
    /// Light nodes.
    pub lights: usize,
    /// The `city-node` binary (default: this process's executable).
    pub city_node_bin: PathBuf,
    /// The `presence-server` binary (default: beside `city-node`).
    pub presence_bin: PathBuf,
    /// Heartbeat interval of every node, seconds (short, so departures show quickly).
    pub heartbeat_secs: f64,
    /// `RUST_LOG` of the children.
    pub log_filter: String,
    /// A fixed proposal interval (ms) for the representatives (written to their
    /// `city.toml`); `None` (the default): the domain's dynamic batch interval.
    pub batch_interval_ms: Option<u64>,
    /// A second city (e.g. `JP-27`) with its own presence, `lights` light nodes and `reps`
    /// representatives; `None` (the default): one city.
    pub second_city: Option<String>,
    /// Accounts opened in the genesis file (balance and home city).
    pub accounts: Vec<node::genesis::GenesisAccount>,
    /// The staking rules every representative applies (written to each representative's
    /// `city.toml` as `[dpos]`, identical everywhere); `None` (the default): the domain's
    /// rules (a 90-day term). The localnet's short terms (`city-node localnet --term-secs`)
    /// set `term_ms`.
    pub dpos: Option<dpos::DposConfig>,
    /// Liquid balance (base units) opened in the genesis file for each representative's
    /// account (its node key's account), so its operator can bond more with the node key
    /// (`city-node stake bond --key <rep>/node.key`); 0 (the default): none.
    pub rep_balance: u64,
    /// TEST ONLY: the index of the representative (first city) started with
    /// `CITYCHAIN_TEST_EQUIVOCATE=1`, which signs a second, conflicting batch for each of its
    /// rounds (the consensus equivocation test hook, refused by `city-node run` unless the
    /// genesis is a localnet's or devnet's); `None` (the default): every representative
    /// is honest.
    pub equivocating_rep: Option<usize>,
    /// The missed-round incident rule every representative applies (written to each
    /// representative's `city.toml` as `[consensus.missed_rounds]`); `None` (the
    /// default): the node's default rule.
    pub missed_rounds: Option<node::MissedRule>,
    /// Standby city nodes of the first city (`standby-0`, …): not in the genesis
    /// committee, started with `[consensus] standby = true` (they follow the committee
    /// and join the epoch dpos elects them into); each gets `rep_balance` like a
    /// representative. 0 (the default): none.
    pub standbys: usize,
}

impl LocalnetConfig {
    /// Defaults for `dir`: 4 representatives, 6 light nodes, the binaries beside the
    /// current executable.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("city-node"));
        let presence =
            exe.with_file_name(format!("presence-server{}", std::env::consts::EXE_SUFFIX));
        LocalnetConfig {
            dir: dir.into(),
            reps: 4,
            lights: 6,
            city_node_bin: exe,
            presence_bin: presence,
            heartbeat_secs: 1.0,
            log_filter: "info".into(),
            batch_interval_ms: None,
            second_city: None,
            accounts: Vec::new(),
            dpos: None,
            rep_balance: 0,
            equivocating_rep: None,
            missed_rounds: None,
            standbys: 0,
        }
    }
}

/// One process of the localnet, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Unique name (`rep-0`, `light-3`, `continent`, …); also its directory.
    pub name: String,
    /// Role: presence, city, light, continent or global.
    pub role: String,
    /// Its service address (gRPC, or HTTP for presence).
    pub addr: SocketAddr,
    /// Its Prometheus `/metrics` address (none for presence, which serves it on `addr`).
    pub metrics: Option<SocketAddr>,
    /// Its DApp HTTP gateway and explorer (representatives only).
    #[serde(default)]
    pub gateway: Option<SocketAddr>,
    /// The city it serves (presence, light and city roles); absent: [`LOCALNET_CITY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
}

/// Name prefix of the localnet's standby city nodes ([`LocalnetConfig::standbys`]).
pub const STANDBY_PREFIX: &str = "standby-";

impl NodeEntry {
    /// A standby city node (not in the genesis committee).
    pub fn is_standby(&self) -> bool {
        self.role == "city" && self.name.starts_with(STANDBY_PREFIX)
    }

    /// The city this process serves (continent and global: [`LOCALNET_CITY`], unused).
    pub fn city(&self) -> &str {
        self.city.as_deref().unwrap_or(LOCALNET_CITY)
    }
}

/// The manifest (`localnet.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Every process.
    pub nodes: Vec<NodeEntry>,
}

impl Manifest {
    /// The entries with role `role`, in start order.
    pub fn by_role(&self, role: &str) -> Vec<&NodeEntry> {
        self.nodes.iter().filter(|n| n.role == role).collect()
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The entries with role `role` serving `city`, in start order.
    pub fn by_role_in(&self, role: &str, city: &str) -> Vec<&NodeEntry> {
        self.nodes
            .iter()
            .filter(|n| n.role == role && n.city() == city)
            .collect()
    }
}

/// A running localnet. [`Localnet::stop`] ends every process (SIGTERM, then SIGKILL after
/// 10 s); dropping it kills them.
#[derive(Debug)]
pub struct Localnet {
    cfg: LocalnetConfig,
    manifest: Manifest,
    children: Vec<(String, Option<Child>)>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Distinct free loopback ports: each listener is held until the allocator is dropped, so
/// the OS cannot hand the same port out twice while a layout is written.
struct Ports<'a> {
    dir: &'a Path,
    held: std::cell::RefCell<Vec<TcpListener>>,
}

impl Ports<'_> {
    fn next(&self) -> Result<SocketAddr> {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err(self.dir))?;
        let addr = l.local_addr().map_err(io_err(self.dir))?;
        self.held.borrow_mut().push(l);
        Ok(addr)
    }
}

/// The key in `<dir>/node.key`, created on first use.
fn key_in(dir: &Path) -> Result<Keypair> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    Ok(node::load_or_create_key(dir)?)
}

impl Localnet {
    /// Writes (or reuses) the directory, then starts every process and waits until each
    /// accepts connections.
    pub async fn start(cfg: LocalnetConfig) -> Result<Localnet> {
        for bin in [&cfg.city_node_bin, &cfg.presence_bin] {
            if !bin.exists() {
                return Err(Error::Measurement(format!(
                    "{} not found; build it first (cargo build -p {})",
                    bin.display(),
                    bin.file_stem().and_then(|s| s.to_str()).unwrap_or("?")
                )));
            }
        }
        let manifest_path = cfg.dir.join("localnet.toml");
        let manifest = if manifest_path.exists() {
            let text = std::fs::read_to_string(&manifest_path).map_err(io_err(&manifest_path))?;
            toml::from_str(&text)
                .map_err(|e| Error::Measurement(format!("{}: {e}", manifest_path.display())))?
        } else {
            Self::generate(&cfg)?
        };
        let mut net = Localnet {
            cfg,
            manifest,
            children: Vec::new(),
        };
        let names: Vec<String> = net.manifest.nodes.iter().map(|n| n.name.clone()).collect();
        for name in names {
            net.spawn(&name)?;
            // Presence first, the logs before the cities push to them.
            let role = net.manifest.get(&name).map(|n| n.role.clone());
            if matches!(role.as_deref(), Some("presence" | "global" | "continent")) {
                net.wait_ready(&name, Duration::from_secs(30)).await?;
            }
        }
        for n in net.manifest.nodes.clone() {
            net.wait_ready(&n.name, Duration::from_secs(30)).await?;
        }
        // Something else listening on a node's port would pass the readiness check while the
        // node itself exits (address in use): every process must still be alive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (name, child) in net.children.iter_mut() {
            if let Some(c) = child
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(Error::Measurement(format!(
                    "{name} exited with {status}; see {}",
                    net.cfg.dir.join(name.as_str()).join("node.log").display()
                )));
            }
        }
        Ok(net)
    }

    /// Writes a localnet's layout without starting it: a key per node, free loopback ports,
    /// the genesis file (the committee, continent and global), the presence settings and
    /// the manifest. What `city-node genesis` prints.
    pub fn generate(cfg: &LocalnetConfig) -> Result<Manifest> {
        let dir = &cfg.dir;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ports = Ports {
            dir,
            held: std::cell::RefCell::new(Vec::new()),
        };
        let mut cities = vec![(LOCALNET_CITY.to_string(), String::new())];
        if let Some(b) = &cfg.second_city {
            if b == LOCALNET_CITY {
                return Err(Error::Measurement(format!(
                    "the second city must differ from {LOCALNET_CITY}"
                )));
            }
            cities.push((b.clone(), format!("{}-", b.to_lowercase())));
        }
        let entry = |name: String, role: &str, city: Option<&str>| -> Result<NodeEntry> {
            Ok(NodeEntry {
                name,
                role: role.into(),
                addr: ports.next()?,
                metrics: if role == "presence" {
                    None
                } else {
                    Some(ports.next()?)
                },
                gateway: if role == "city" {
                    Some(ports.next()?)
                } else {
                    None
                },
                city: city.filter(|c| *c != LOCALNET_CITY).map(str::to_string),
            })
        };
        // Start order: every city's presence, the logs, then light nodes and committees.
        let mut nodes = Vec::new();
        for (city, prefix) in &cities {
            nodes.push(entry(format!("{prefix}presence"), "presence", Some(city))?);
        }
        nodes.push(entry("global".into(), "global", None)?);
        nodes.push(entry("continent".into(), "continent", None)?);
        for (city, prefix) in &cities {
            for i in 0..cfg.lights {
                nodes.push(entry(format!("{prefix}light-{i}"), "light", Some(city))?);
            }
            for i in 0..cfg.reps {
                nodes.push(entry(format!("{prefix}rep-{i}"), "city", Some(city))?);
            }
        }
        for i in 0..cfg.standbys {
            nodes.push(entry(
                format!("{STANDBY_PREFIX}{i}"),
                "city",
                Some(LOCALNET_CITY),
            )?);
        }
        let pk = |name: &str| -> Result<Vec<u8>> {
            Ok(dag_core::Signer::public_key(&key_in(&dir.join(name))?).to_vec())
        };
        let mut genesis_cities = Vec::new();
        for (city, _) in &cities {
            let mut members = Vec::new();
            for n in nodes
                .iter()
                .filter(|n| n.role == "city" && n.city() == city && !n.is_standby())
            {
                members.push(GenesisFile::member(&pk(&n.name)?, 1, n.addr.to_string()));
            }
            genesis_cities.push(GenesisCity {
                id: city.clone(),
                members,
            });
        }
        let log = |name: &str| -> Result<_> {
            let n = nodes
                .iter()
                .find(|n| n.name == name)
                .ok_or_else(|| Error::Measurement(format!("no {name} entry")))?;
            Ok(GenesisFile::log(&pk(name)?, n.addr.to_string()))
        };
        let mut accounts = cfg.accounts.clone();
        if cfg.rep_balance > 0 {
            for (city, _) in &cities {
                for n in nodes
                    .iter()
                    .filter(|n| n.role == "city" && n.city() == city)
                {
                    let account = dag_core::AccountId::from_public_key(&pk(&n.name)?);
                    accounts.push(node::genesis::GenesisAccount {
                        account: account.to_hex(),
                        balance: cfg.rep_balance,
                        // Two cities: homed in its own city's ledger.
                        city: cfg.second_city.as_ref().map(|_| city.clone()),
                    });
                }
            }
        }
        let genesis = GenesisFile {
            chain: LOCALNET_CHAIN.into(),
            cities: genesis_cities,
            continent: Some(log("continent")?),
            global: Some(log("global")?),
            accounts,
        };
        genesis.write(&dir.join("genesis.toml"))?;
        // Every node of the localnet heartbeats from 127.0.0.1: one address, so the
        // per-IP limit is raised rather than shared by a dozen nodes.
        let presence_toml = "backend = \"memory\"\nttl_ms = 3000\nsweep_interval_ms = 500\n\
                             [rate_limit]\nenabled = true\nper_second = 2000\nburst = 4000\n";
        let p = dir.join("presence.toml");
        std::fs::write(&p, presence_toml).map_err(io_err(&p))?;
        let manifest = Manifest { nodes };
        let text = toml::to_string_pretty(&manifest)
            .map_err(|e| Error::Measurement(format!("manifest: {e}")))?;
        let m = dir.join("localnet.toml");
        std::fs::write(&m, text).map_err(io_err(&m))?;
        Ok(manifest)
    }

    /// The manifest (every process and its addresses).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The localnet's directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// The OS process id of `name`, while it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, c)| c.as_ref())
            .and_then(Child::id)
    }

    /// The genesis file.
    pub fn genesis_path(&self) -> PathBuf {
        self.cfg.dir.join("genesis.toml")
    }

    fn command(&self, n: &NodeEntry) -> Result<Command> {
        let dir = self.cfg.dir.join(&n.name);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        // The presence server of the node's own city.
        let presence = self
            .manifest
            .by_role_in("presence", n.city())
            .first()
            .map(|p| format!("http://{}", p.addr))
            .unwrap_or_default();
        let mut c = if n.role == "presence" {
            let mut c = Command::new(&self.cfg.presence_bin);
            c.arg("--config")
                .arg(self.cfg.dir.join("presence.toml"))
                .arg("--bind")
                .arg(n.addr.ip().to_string())
                .arg("--port")
                .arg(n.addr.port().to_string());
            c
        } else {
            let mut c = Command::new(&self.cfg.city_node_bin);
            c.arg("run")
                .arg("--role")
                .arg(&n.role)
                .arg("--listen")
                .arg(n.addr.to_string())
                .arg("--data-dir")
                .arg(&dir)
                .arg("--genesis")
                .arg(self.genesis_path())
                .arg("--city-id")
                .arg(n.city());
            if let Some(m) = n.metrics {
                c.arg("--metrics-listen").arg(m.to_string());
            }
            if let Some(g) = n.gateway {
                c.arg("--gateway-addr").arg(g.to_string());
            }
            if let Some(text) = self.rep_config(n)? {
                let p = dir.join("city.toml");
                std::fs::write(&p, text).map_err(io_err(&p))?;
                c.arg("--config").arg(&p);
            }
            if n.role == "city"
                && n.city() == LOCALNET_CITY
                && self
                    .cfg
                    .equivocating_rep
                    .is_some_and(|i| n.name == format!("rep-{i}"))
            {
                c.env(TEST_EQUIVOCATE_ENV, "1");
            }
            if n.role == "light" {
                let i = n
                    .name
                    .rsplit('-')
                    .next()
                    .and_then(|i| i.parse::<usize>().ok());
                c.arg("--zone").arg(format!("zone-{}", i.unwrap_or(0) % 3));
            }
            c.env("PRESENCE_BACKEND", "http")
                .env("PRESENCE_HTTP_ENDPOINT", presence)
                .env(
                    "NODELIST_HEARTBEAT_SEC",
                    self.cfg.heartbeat_secs.to_string(),
                );
            c
        };
        let log = dir.join("node.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(&log))?;
        let err = out.try_clone().map_err(io_err(&log))?;
        c.env("RUST_LOG", &self.cfg.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        Ok(c)
    }

    /// A representative's `city.toml`: the fixed batch interval, the missed-round rule and
    /// the staking rules, when set; `None` for other roles or when none is set.
    fn rep_config(&self, n: &NodeEntry) -> Result<Option<String>> {
        #[derive(Serialize)]
        struct Consensus {
            #[serde(skip_serializing_if = "Option::is_none")]
            batch_interval_ms: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            missed_rounds: Option<node::MissedRule>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            standby: bool,
        }
        #[derive(Serialize)]
        struct File<'a> {
            consensus: Consensus,
            #[serde(skip_serializing_if = "Option::is_none")]
            dpos: Option<&'a dpos::DposConfig>,
        }
        let c = &self.cfg;
        if n.role != "city"
            || (c.batch_interval_ms.is_none()
                && c.dpos.is_none()
                && c.missed_rounds.is_none()
                && !n.is_standby())
        {
            return Ok(None);
        }
        let file = File {
            consensus: Consensus {
                batch_interval_ms: c.batch_interval_ms,
                missed_rounds: c.missed_rounds,
                standby: n.is_standby(),
            },
            dpos: c.dpos.as_ref(),
        };
        toml::to_string(&file)
            .map(Some)
            .map_err(|e| Error::Measurement(format!("{}'s city.toml: {e}", n.name)))
    }

    fn spawn(&mut self, name: &str) -> Result<()> {
        let n = self
            .manifest
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Measurement(format!("no node named {name}")))?;
        let child = self
            .command(&n)?
            .spawn()
            .map_err(io_err(&self.cfg.city_node_bin))?;
        match self.children.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = Some(child),
            None => self.children.push((name.to_string(), Some(child))),
        }
        Ok(())
    }

    /// Waits until `name` accepts TCP connections on its service address (and is alive).
    pub async fn wait_ready(&mut self, name: &str, timeout: Duration) -> Result<()> {
        let addr = self
            .manifest
            .get(name)
            .map(|n| n.addr)
            .ok_or_else(|| Error::Measurement(format!("no node named {name}")))?;
        let t0 = Instant::now();
        loop {
            if let Some((_, Some(child))) = self.children.iter_mut().find(|(k, _)| k == name)
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::Measurement(format!(
                    "{name} exited with {status}; see {}",
                    self.cfg.dir.join(name).join("node.log").display()
                )));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("{name} to listen on {addr}"),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills `name` with SIGKILL (a crash: nothing flushed, no logout).
    pub async fn kill(&mut self, name: &str) {
        if let Some((_, slot)) = self.children.iter_mut().find(|(k, _)| k == name)
            && let Some(mut child) = slot.take()
        {
            let _ = child.kill().await;
        }
    }

    /// Starts `name` again (after [`Localnet::kill`] or [`Localnet::terminate`]) on the same
    /// data directory and address, and waits until it listens.
    pub async fn restart(&mut self, name: &str) -> Result<()> {
        self.spawn(name)?;
        self.wait_ready(name, Duration::from_secs(30)).await
    }

    /// Stops `name` gracefully (SIGTERM; SIGKILL after `grace`). Returns whether it exited
    /// on its own with status 0.
    pub async fn terminate(&mut self, name: &str, grace: Duration) -> bool {
        let Some((_, slot)) = self.children.iter_mut().find(|(k, _)| k == name) else {
            return false;
        };
        let Some(mut child) = slot.take() else {
            return false;
        };
        if let Some(pid) = child.id() {
            // No unsafe in this workspace: ask kill(1) to deliver the signal.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => {
                let _ = child.kill().await;
                false
            }
        }
    }

    /// Stops every process gracefully (cities first, presence last). Returns the names of
    /// those that did not exit cleanly.
    pub async fn stop(mut self) -> Vec<String> {
        let mut order: Vec<String> = self.children.iter().map(|(k, _)| k.clone()).collect();
        order.reverse();
        let mut unclean = Vec::new();
        for name in order {
            let running = self.children.iter().any(|(k, c)| *k == name && c.is_some());
            if running && !self.terminate(&name, Duration::from_secs(10)).await {
                unclean.push(name);
            }
        }
        unclean
    }
}

//! `city-node`: one binary per role. Argument parsing, configuration (flags > env > TOML
//! file > defaults), logging and metrics set-up, then one call into the `node` library.

mod regions;
mod stake;
mod wallet_cmd;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use dag_core::Role;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "city-node",
    version,
    about = "City Chain node: city, light, continent or global role"
)]
struct Cli {
    /// Log format: text or json.
    #[arg(long, env = "CITY_LOG_FORMAT", default_value = "text", global = true)]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create an ML-DSA-87 key file (mode 0600) and, beside it, the node's TLS key and
    /// certificate bound to that key (`tls.key` 0600, `tls.crt`); print the node id.
    Keygen {
        /// Where to write the key (the public key goes to `<path>.pub`).
        #[arg(long, env = "CITY_KEY_FILE", default_value = "./city-data/node.key")]
        out: PathBuf,
        /// Overwrite an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Run a node role until Ctrl-C / SIGTERM.
    Run(Box<RunArgs>),
    /// Start an in-process devnet on loopback, drive signed load over gRPC, print a table.
    Demo {
        /// Number of pre-signed txs to submit.
        #[arg(long, short = 'n', env = "CITY_DEMO_TXS", default_value_t = 20_000)]
        txs: usize,
        /// Number of accounts signing them.
        #[arg(long, default_value_t = 100)]
        accounts: usize,
        /// Parallel gRPC submission streams.
        #[arg(long, default_value_t = 4)]
        streams: usize,
        // ---- issue 17: batch interval ----
        /// A fixed proposal interval in ms (default: the domain's dynamic 0.5–5 s interval).
        #[arg(long)]
        batch_interval_ms: Option<u64>,
        // ---- end issue 17 ----
    },
    // ---- issue 18: bench ----
    /// Measure the Held path with the roles as separate processes (presence, light nodes,
    /// one city node): open-loop load at 50/80/100 % of the peak, latency quantiles, CPU per
    /// Held tx of each role beside raw ML-DSA-87 verify measured in the same run.
    Bench(BenchArgs),
    // ---- end issue 18 ----
    /// Write a local network's layout (keys, genesis file, ports, manifest) without
    /// starting it.
    Genesis(LocalnetArgs),
    /// Start the whole network on this host as separate processes (presence, light nodes,
    /// the city committee, a continent, a global log) and stop them all on Ctrl-C.
    Localnet(LocalnetArgs),
    /// Staking: sign a bond / delegate / unbond / withdraw / claim request with a key file
    /// and submit it to a representative.
    Stake(stake::StakeArgs),
    /// Wallet: a key, an account's balance and nonce, a transfer sent and followed to its
    /// execution outcome.
    Wallet {
        #[command(subcommand)]
        cmd: wallet_cmd::WalletCmd,
    },
    /// Region data: validate a city's own boundaries (`regions import FILE`).
    Regions {
        #[command(subcommand)]
        cmd: regions::RegionsCmd,
    },
}

#[derive(clap::Args, Debug)]
struct LocalnetArgs {
    /// Directory for keys, genesis, data and logs (reused when it exists).
    #[arg(long, default_value = "./localnet")]
    dir: PathBuf,
    /// City representatives (the committee).
    #[arg(long, default_value_t = 4)]
    reps: usize,
    /// Light nodes.
    #[arg(long, default_value_t = 6)]
    lights: usize,
    /// The presence-server binary (default: beside this one).
    #[arg(long)]
    presence_bin: Option<PathBuf>,
}

impl LocalnetArgs {
    fn config(&self) -> devnet::localnet::LocalnetConfig {
        let mut c = devnet::localnet::LocalnetConfig::new(&self.dir);
        c.reps = self.reps;
        c.lights = self.lights;
        if let Some(p) = &self.presence_bin {
            c.presence_bin = p.clone();
        }
        c
    }
}

fn print_manifest(m: &devnet::localnet::Manifest, dir: &std::path::Path) {
    println!("{:<12} {:<10} {:<22} metrics", "node", "role", "address");
    for n in &m.nodes {
        println!(
            "{:<12} {:<10} {:<22} {}",
            n.name,
            n.role,
            n.addr,
            n.metrics.map_or_else(|| "-".to_string(), |a| a.to_string())
        );
    }
    for n in &m.nodes {
        if let Some(g) = n.gateway {
            println!("{:<12} gateway + explorer: http://{g}/", n.name);
        }
    }
    println!(
        "genesis: {}\nlogs: {}/<node>/node.log",
        dir.join("genesis.toml").display(),
        dir.display()
    );
}

// ---- issue 18: bench ----
#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Directory for the processes' data and logs (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Light nodes.
    #[arg(long, default_value_t = 6)]
    lights: usize,
    /// Submission streams (one connection each).
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Seconds of load per rated run.
    #[arg(long, default_value_t = 8.0)]
    run_secs: f64,
    /// Txs offered in the peak run.
    #[arg(long, default_value_t = 12_000)]
    peak_txs: usize,
    /// A known peak in Held tx/s (skips the peak run).
    #[arg(long)]
    peak: Option<f64>,
    /// Fractions of the peak to offer, one run each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.5, 0.8, 1.0])]
    fractions: Vec<f64>,
    /// Node links in plaintext instead of mutual TLS.
    #[arg(long)]
    insecure: bool,
    /// The `city-node` binary the node processes run (default: this one).
    #[arg(long)]
    city_node_bin: Option<PathBuf>,
}

impl BenchArgs {
    fn config(&self) -> devnet::load_bench::BenchConfig {
        let mut c = devnet::load_bench::BenchConfig::new();
        c.dir = self.dir.clone();
        c.lights = self.lights;
        c.streams = self.streams;
        c.run_secs = self.run_secs;
        c.peak_txs = self.peak_txs;
        c.peak = self.peak;
        c.fractions = self.fractions.clone();
        c.insecure = self.insecure;
        if let Some(b) = &self.city_node_bin {
            c.city_node_bin = b.clone();
        }
        c
    }
}
// ---- end issue 18 ----

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// TOML config file; flags and env override its values.
    #[arg(long, env = "CITY_CONFIG")]
    config: Option<PathBuf>,
    /// Role to run.
    #[arg(long, env = "CITY_ROLE")]
    role: Option<Role>,
    /// gRPC listen address.
    #[arg(long, env = "CITY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory (key file, embedded store).
    #[arg(long, env = "CITY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Prometheus /metrics listen address.
    #[arg(long, env = "CITY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// City role: serve the DApp HTTP gateway (`/v1`, events, explorer) here; off by default.
    #[arg(long, env = "CITY_GATEWAY_ADDR")]
    gateway_addr: Option<SocketAddr>,
    /// Signature verification threads (0 = one per core).
    #[arg(long, env = "CITY_VERIFY_THREADS")]
    verify_threads: Option<usize>,
    /// Light role: most bytes of shards this node stores.
    #[arg(long, env = "CITY_QUOTA_BYTES")]
    quota_bytes: Option<u64>,
    /// Light role: bytes that must stay free on the data directory's disk (statvfs); puts
    /// that would cross it are refused with RESOURCE_EXHAUSTED. 0 turns the check off.
    #[arg(long, env = "CITY_MIN_FREE_BYTES")]
    min_free_bytes: Option<u64>,
    /// City this node serves or lives in (e.g. JP-13).
    #[arg(long, env = "CITY_ID")]
    city_id: Option<String>,
    /// Failure-domain zone published to presence.
    #[arg(long, env = "CITY_ZONE")]
    zone: Option<String>,
    /// Latitude of this node, degrees.
    #[arg(long, env = "CITY_LAT", allow_hyphen_values = true)]
    lat: Option<f64>,
    /// Longitude of this node, degrees.
    #[arg(long, env = "CITY_LON", allow_hyphen_values = true)]
    lon: Option<f64>,
    /// Address published to presence (host:port).
    #[arg(long, env = "CITY_ADVERTISE")]
    advertise: Option<String>,
    /// Genesis file: a city role runs as a representative of the committee it names; the
    /// continent role reads the cities' committees and the global from it, the global role
    /// the continent's key.
    #[arg(long, env = "CITY_GENESIS")]
    genesis: Option<PathBuf>,
    /// SWIM gossip among the city's nodes (city and light roles), on the UDP port of the
    /// same number as --listen unless --gossip-listen says otherwise.
    #[arg(long, env = "CITY_GOSSIP", default_value_t = true, action = clap::ArgAction::Set)]
    gossip: bool,
    /// UDP address for gossip (default: the --listen address).
    #[arg(long, env = "CITY_GOSSIP_LISTEN")]
    gossip_listen: Option<SocketAddr>,
    /// Extra gossip bootstrap members, `<node id hex>@<host:port>` (presence supplies the
    /// others); repeat or separate with commas.
    #[arg(long, env = "CITY_GOSSIP_SEEDS", value_delimiter = ',',
          value_parser = node::gossip::GossipSettings::parse_seed)]
    gossip_seed: Vec<(dag_core::NodeId, SocketAddr)>,
    /// Run node links in PLAINTEXT, without mutual TLS: peers are not authenticated, so
    /// PutShard, Consensus and Federation cannot check who calls. For debugging only; the
    /// default is mutual TLS with X25519MLKEM768 and the NodeId-bound certificate in the
    /// data directory (made on first start when `keygen` did not).
    #[arg(long, env = "CITY_INSECURE")]
    insecure: bool,
}

/// The TOML config file.
#[derive(serde::Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    role: Option<Role>,
    metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    city: Option<node::CityConfig>,
    #[serde(default)]
    light: Option<node::LightConfig>,
    #[serde(default)]
    membership: Option<node::MembershipConfig>,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let file: FileConfig = match &args.config {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))?,
        None => FileConfig::default(),
    };
    let role = args.role.or(file.role).unwrap_or(Role::City);
    let mut light = file.light.unwrap_or_default();
    if let Some(l) = args.listen {
        light.listen = l;
    }
    if let Some(d) = &args.data_dir {
        light.data_dir = d.clone();
    }
    if let Some(q) = args.quota_bytes {
        light.quota_bytes = q;
    }
    if let Some(f) = args.min_free_bytes {
        light.min_free_bytes = f;
    }
    let federation = FederationArgs {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        genesis: args.genesis.clone(),
    };
    let mut city = file.city.unwrap_or_default();
    if let Some(l) = args.listen {
        city.listen = l;
    }
    if let Some(d) = args.data_dir {
        city.data_dir = d;
    }
    if let Some(t) = args.verify_threads {
        city.verify_threads = t;
    }
    if let Some(g) = &args.genesis {
        city.genesis = Some(g.clone());
    }
    if let Some(addr) = args.gateway_addr {
        let mut g = city.gateway.take().unwrap_or_default();
        g.listen = addr;
        city.gateway = Some(g);
    }
    let mut membership = file.membership.unwrap_or_default();
    // Presence backend and timing come from the environment (PRESENCE_BACKEND, …).
    membership.nodelist = node_list::NodeListConfig::from_env()?;
    if let Some(c) = args.city_id {
        membership.city_id = c;
    }
    if let Some(z) = args.zone {
        membership.zone = z;
    }
    if let Some(v) = args.lat {
        membership.lat = v;
    }
    if let Some(v) = args.lon {
        membership.lon = v;
    }
    if args.advertise.is_some() {
        membership.advertise = args.advertise;
    }
    membership.gossip.enabled = args.gossip;
    membership.gossip.listen = args.gossip_listen;
    membership.gossip.seeds = args.gossip_seed;
    let metrics_listen = args
        .metrics_listen
        .or(file.metrics_listen)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9700)));
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(metrics_listen)
        .install()
        .with_context(|| format!("starting /metrics on {metrics_listen}"))?;
    tracing::info!(%metrics_listen, "Prometheus metrics at /metrics");

    let insecure = args.insecure;
    match role {
        Role::City => {
            let key = node::load_or_create_key(&city.data_dir)?;
            city.links = node::runtime::node_links(&city.data_dir, &key, insecure)?;
            let handle = node::run_city(&city, &key, &membership).await?;
            tracing::info!(addr = ?handle.addr(), presence = ?membership.nodelist.backend, "running; Ctrl-C to stop");
            shutdown_signal().await;
            tracing::info!("shutting down");
            handle.shutdown().await?;
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Role::Light => {
            let key = node::load_or_create_key(&light.data_dir)?;
            light.links = node::runtime::node_links(&light.data_dir, &key, insecure)?;
            // With a genesis file, shards are taken only from the city's representatives.
            match &args.genesis {
                Some(g) => {
                    // REPAIR_REQUESTs are then answered only for the city's representatives.
                    light.genesis = Some(g.clone());
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
            tracing::info!(addr = ?handle.addr(), presence = ?membership.nodelist.backend, "running; Ctrl-C to stop");
            shutdown_signal().await;
            tracing::info!("shutting down");
            handle.shutdown().await?;
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Role::Continent => run_continent(federation, insecure).await,
        Role::Global => run_global(federation, insecure).await,
    }
}

/// What the continent and global roles take from the command line.
struct FederationArgs {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    genesis: Option<PathBuf>,
}

impl FederationArgs {
    fn genesis(&self) -> anyhow::Result<node::genesis::Genesis> {
        let path = self
            .genesis
            .as_ref()
            .context("this role needs --genesis FILE (cities, continent, global)")?;
        Ok(node::genesis::Genesis::load(path)?)
    }
}

async fn run_continent(args: FederationArgs, insecure: bool) -> anyhow::Result<()> {
    let genesis = args.genesis()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./continent-data"));
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7600)));
    let key = node::load_or_create_key(&data_dir)?;
    let mut cfg = node::continent::ContinentConfig::new(
        listen,
        &data_dir,
        node::continent::CityCommittee::from_genesis(&genesis),
    );
    cfg.global = node::continent::GlobalTarget::from_genesis(&genesis);
    cfg.links = node::runtime::node_links(&data_dir, &key, insecure)?;
    let handle = node::continent::start_continent(&cfg, key).await?;
    tracing::info!(addr = %handle.addr(), node_id = %handle.log().node_id(), cities = cfg.cities.len(), global = ?cfg.global.as_ref().map(|g| &g.addr), "continent running; Ctrl-C to stop");
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn run_global(args: FederationArgs, insecure: bool) -> anyhow::Result<()> {
    let genesis = args.genesis()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./global-data"));
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7650)));
    let key = node::load_or_create_key(&data_dir)?;
    let links = node::runtime::node_links(&data_dir, &key, insecure)?;
    let cfg = node::global::GlobalConfig {
        listen,
        data_dir,
        links,
        continents: genesis
            .continent
            .iter()
            .map(|c| c.public_key.clone())
            .collect(),
    };
    let handle = node::global::start_global(&cfg, key).await?;
    tracing::info!(addr = %handle.addr(), "global running; Ctrl-C to stop");
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.cmd {
        Cmd::Keygen { out, force } => {
            if out.exists() && !force {
                bail!("{} exists; pass --force to overwrite it", out.display());
            }
            let kp = pqc::Keypair::generate();
            kp.save(&out)?;
            let dir = out
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tls = rpc::tls::TlsIdentity::generate(&kp)?;
            tls.save(dir)?;
            println!("node id: {}", kp.node_id());
            println!(
                "TLS: {} and {} (mode 0600), bound to the node id by an ML-DSA-87 signature",
                dir.join("tls.crt").display(),
                dir.join("tls.key").display()
            );
            println!(
                "key file: {} (mode 0600), public key: {}.pub",
                out.display(),
                out.display()
            );
            Ok(())
        }
        Cmd::Run(args) => run(*args).await,
        Cmd::Regions { cmd } => regions::run(cmd),
        Cmd::Stake(args) => stake::run(args).await,
        Cmd::Wallet { cmd } => wallet_cmd::run(cmd).await,
        Cmd::Bench(args) => {
            let report = devnet::load_bench::run(&args.config()).await?;
            println!("{}", report.render());
            Ok(())
        }
        Cmd::Genesis(args) => {
            let m = devnet::localnet::Localnet::generate(&args.config())?;
            print_manifest(&m, &args.dir);
            Ok(())
        }
        Cmd::Localnet(args) => {
            let net = devnet::localnet::Localnet::start(args.config()).await?;
            print_manifest(net.manifest(), &args.dir);
            println!("localnet running; Ctrl-C to stop");
            shutdown_signal().await;
            let unclean = net.stop().await;
            if unclean.is_empty() {
                println!("stopped cleanly");
                Ok(())
            } else {
                bail!("did not stop cleanly: {}", unclean.join(", "))
            }
        }
        Cmd::Demo {
            txs,
            accounts,
            streams,
            batch_interval_ms,
        } => {
            let cfg = devnet::demo::DemoConfig {
                txs,
                accounts,
                streams,
                batch_interval_ms,
                ..Default::default()
            };
            println!(
                "devnet: pre-signing {txs} txs from {accounts} accounts, then submitting over gRPC…"
            );
            let report = devnet::demo::run(&cfg).await?;
            println!("{}", report.render());
            if !report.ok() {
                bail!("demo failed: see the table above");
            }
            Ok(())
        }
    }
}

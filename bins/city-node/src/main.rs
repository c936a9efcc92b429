//! `city-node`: one binary per role. Argument parsing, configuration (flags > env > TOML
//! file > defaults), logging and metrics set-up, then one call into the `node` library.

mod config;
mod metrics_setup;
mod ops_cmd;
mod regions;
mod run_cmd;
mod stake;
mod units;
mod wallet_cmd;

/// jemalloc instead of glibc's malloc: under load glibc grew a city node's RSS from ~190 MiB
/// to ~400 MiB in a minute (one arena per busy thread, up to 8 × cores, each holding freed
/// memory), where the Held path's memory should not depend on how many threads touched it.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "city-node",
    version,
    about = "City Chain node: city, light, continent or global role"
)]
struct Cli {
    /// Log format (`run` also reads `log.format` from its config).
    #[arg(long, env = "CITY_LOG_FORMAT", value_enum, global = true)]
    log_format: Option<config::LogFormat>,
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
    /// The configuration model: `config print` shows the effective settings of `run`
    /// with the same flags (secrets redacted); `config keys` lists every key with its
    /// environment variable.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// The nodes presence holds online (id, role, city, zone, address, free space, load).
    Nodes(ops_cmd::NodesArgs),
    /// One node's status: id, role, version, uptime, stored txs, counters.
    Status(ops_cmd::StatusArgs),
    /// Print a shell completion script (e.g. `city-node completions bash > /etc/bash_completion.d/city-node`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Print the effective configuration as TOML (defaults ← file ← env ← --set ← flags).
    Print(Box<RunArgs>),
    /// List every configuration key with its environment variable.
    Keys,
}

/// The role a node runs (help lists the choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RoleArg {
    /// Admission, sharding, ordering (a city representative with --genesis).
    City,
    /// Stores shards and signs receipts.
    Light,
    /// Logs the cities' checkpoints.
    Continent,
    /// Logs the continents' heads.
    Global,
}

impl RoleArg {
    /// The role.
    fn role(self) -> dag_core::Role {
        match self {
            RoleArg::City => dag_core::Role::City,
            RoleArg::Light => dag_core::Role::Light,
            RoleArg::Continent => dag_core::Role::Continent,
            RoleArg::Global => dag_core::Role::Global,
        }
    }

    /// The name used in TOML and on the command line.
    fn name(self) -> String {
        self.to_possible_value()
            .map(|p| p.get_name().to_string())
            .unwrap_or_default()
    }
}

impl config::LogFormat {
    /// The name used in TOML and on the command line.
    fn name(self) -> String {
        self.to_possible_value()
            .map(|p| p.get_name().to_string())
            .unwrap_or_default()
    }
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
    /// A second city (e.g. JP-27) with its own presence, light nodes and committee, for
    /// cross-city transfers.
    #[arg(long)]
    second_city: Option<String>,
    /// The DPoS term in seconds (the election's winners take over at its end; the
    /// domain's default is 90 days): short terms show a committee change on a localnet.
    #[arg(long)]
    term_secs: Option<u64>,
}

impl LocalnetArgs {
    fn config(&self) -> devnet::localnet::LocalnetConfig {
        let mut c = devnet::localnet::LocalnetConfig::new(&self.dir);
        c.reps = self.reps;
        c.lights = self.lights;
        if let Some(p) = &self.presence_bin {
            c.presence_bin = p.clone();
        }
        c.second_city.clone_from(&self.second_city);
        c.dpos = self.term_secs.map(|s| dpos::DposConfig {
            term_ms: s.saturating_mul(1_000),
            ..dpos::DposConfig::default()
        });
        c
    }
}

fn print_manifest(m: &devnet::localnet::Manifest, dir: &std::path::Path) {
    println!(
        "{:<16} {:<10} {:<6} {:<22} metrics",
        "node", "role", "city", "address"
    );
    for n in &m.nodes {
        println!(
            "{:<16} {:<10} {:<6} {:<22} {}",
            n.name,
            n.role,
            if matches!(n.role.as_str(), "global" | "continent") {
                "-"
            } else {
                n.city()
            },
            n.addr,
            n.metrics.map_or_else(|| "-".to_string(), |a| a.to_string())
        );
    }
    for n in &m.nodes {
        if let Some(g) = n.gateway {
            println!("{:<16} gateway + explorer: http://{g}/", n.name);
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
    /// Run the network as deployed: a committee of this many representatives (with a
    /// continent and a global log) and measure representative rep-0, which also orders,
    /// executes, archives and prunes; 0: one city without a committee (the Held path alone).
    #[arg(long, default_value_t = 0)]
    committee: usize,
    /// Instead of the load runs: store this many GiB of shards in one light node through
    /// PutShard over mutual TLS (140 KiB stripes, one shard each) and report its resident
    /// set as it fills.
    #[arg(long)]
    fill_light_gib: Option<f64>,
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
        c.committee = self.committee;
        if let Some(b) = &self.city_node_bin {
            c.city_node_bin = b.clone();
        }
        c
    }
}
// ---- end issue 18 ----

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// TOML config file (sections `[node]` `[city]` `[light]` `[presence]` …, see `config print`);
    /// environment, --set and flags override its values.
    #[arg(long, env = "CITY_CONFIG")]
    config: Option<PathBuf>,
    /// Set any configuration key, `section.key=value` (e.g. `--set light.quota_bytes=10`);
    /// repeatable. Every key also has a variable `CITY_<SECTION>__<KEY>`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Role to run (node.role; default city).
    #[arg(long, env = "CITY_ROLE", value_enum)]
    role: Option<RoleArg>,
    /// gRPC listen address.
    #[arg(long, env = "CITY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory (key file, embedded store).
    #[arg(long, env = "CITY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Prometheus /metrics listen address (default: the --listen host, port + 2000).
    #[arg(long, env = "CITY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve no /metrics at all.
    #[arg(long, conflicts_with = "metrics_listen")]
    no_metrics: bool,
    /// City role: serve the DApp HTTP gateway (`/v1`, events, explorer) here; off by default.
    #[arg(long, env = "CITY_GATEWAY_ADDR")]
    gateway_addr: Option<SocketAddr>,
    /// Signature verification threads (0 = one per core).
    #[arg(long, env = "CITY_VERIFY_THREADS")]
    verify_threads: Option<usize>,
    /// Light role: most bytes of shards this node stores (e.g. 1GiB, 512MB, 1073741824).
    #[arg(long, env = "CITY_QUOTA_BYTES")]
    quota_bytes: Option<units::Bytes>,
    /// Light role: bytes that must stay free on the data directory's disk (statvfs); puts
    /// that would cross it are refused with RESOURCE_EXHAUSTED. 0 turns the check off.
    #[arg(long, env = "CITY_MIN_FREE_BYTES")]
    min_free_bytes: Option<units::Bytes>,
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
    #[arg(long, env = "CITY_GOSSIP", action = clap::ArgAction::Set)]
    gossip: Option<bool>,
    /// UDP address for gossip (default: the --listen address).
    #[arg(long, env = "CITY_GOSSIP_LISTEN")]
    gossip_listen: Option<SocketAddr>,
    /// Extra gossip bootstrap members, `<node id hex>@<host:port>` (presence supplies the
    /// others); repeat or separate with commas.
    #[arg(long, env = "CITY_GOSSIP_SEEDS", value_delimiter = ',',
          value_parser = parse_seed_text)]
    gossip_seed: Vec<String>,
    /// Run node links in PLAINTEXT, without mutual TLS: peers are not authenticated, so
    /// PutShard, Consensus and Federation cannot check who calls. For debugging only; the
    /// default is mutual TLS with X25519MLKEM768 and the NodeId-bound certificate in the
    /// data directory (made on first start when `keygen` did not).
    #[arg(long, env = "CITY_INSECURE")]
    insecure: bool,
    /// Log format (log.format).
    #[arg(skip)]
    log_format: Option<config::LogFormat>,
}

/// Checks a gossip seed on the command line and keeps its text for the config layer.
fn parse_seed_text(s: &str) -> Result<String, String> {
    node::gossip::GossipSettings::parse_seed(s).map(|_| s.to_string())
}

fn init_logging(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == config::LogFormat::Json {
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
    // `run` logs in the format of its effective config; a bad config is reported after
    // logging is up so the error reaches the log in that format too.
    let run_cfg = match &cli.cmd {
        Cmd::Run(args) => {
            let mut args = args.clone();
            args.log_format = cli.log_format;
            Some(args.effective())
        }
        _ => None,
    };
    let format = match &run_cfg {
        Some(Ok(e)) => e.file.log.format,
        _ => cli.log_format.unwrap_or_default(),
    };
    init_logging(format);
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
        Cmd::Run(_) => match run_cfg {
            Some(Ok(eff)) => run_cmd::run(eff).await,
            Some(Err(e)) => Err(e.into()),
            None => unreachable!("run_cfg is built for Cmd::Run"),
        },
        Cmd::Config {
            cmd: ConfigCmd::Print(mut args),
        } => {
            args.log_format = cli.log_format;
            print!("{}", args.effective()?.print());
            Ok(())
        }
        Cmd::Config {
            cmd: ConfigCmd::Keys,
        } => {
            print!("{}", config::keys_table());
            Ok(())
        }
        Cmd::Nodes(args) => ops_cmd::nodes(args).await,
        Cmd::Status(args) => ops_cmd::status(args).await,
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "city-node",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Cmd::Regions { cmd } => regions::run(cmd),
        Cmd::Stake(args) => stake::run(args).await,
        Cmd::Wallet { cmd } => wallet_cmd::run(cmd).await,
        Cmd::Bench(args) => {
            if let Some(gib) = args.fill_light_gib {
                let fill = devnet::light_fill::FillConfig {
                    gib,
                    ..Default::default()
                };
                let report = devnet::light_fill::fill_light(&args.config(), &fill).await?;
                println!("{}", report.render());
                return Ok(());
            }
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

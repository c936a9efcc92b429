//! `city-node bench`: the Held path measured honestly, with the roles as separate OS
//! processes — a presence server, `lights` light nodes and one city node (without a
//! genesis file: admission → micro-batch → shards on n distinct light nodes → Held; no
//! committee, so the figures are the Held path's alone). With
//! [`BenchConfig::committee`] it runs the network as deployed instead (a
//! [`crate::localnet`]: that many representatives, a continent and a global log) and
//! measures representative `rep-0`, which then also orders, executes, archives and prunes
//! what it holds; the bench accounts are opened in the genesis file, so the transfers move
//! amounts, and after the runs the bench waits for the pruner before it measures the disk.
//! The bench process is the open-loop
//! client ([`crate::load`]). It finds the peak (an offer at the raw all-core verify rate,
//! the ceiling), then offers 50 %, 80 % and 100 % of that peak, each for a fixed time, and
//! reports per run: Held tx/s, due → Held p50/p99/p999, and CPU seconds per Held tx of the
//! city process, of the light nodes together and of the load generator — beside raw
//! ML-DSA-87 verify measured in the same run over the offered signatures. The **fair
//! ratio** is raw verify µs per tx (one core) ÷ city CPU µs per Held tx; the **all-in-one
//! ratio** is peak Held tx/s ÷ raw verify/s on every core.

use crate::load::{CpuClock, OpenLoopOutcome, open_loop, presign, raw_verify_rate, rss_bytes};
use crate::localnet::{Localnet, LocalnetConfig};
use crate::{Error, Result};
use dag_core::SignedTx;
use node::genesis::GenesisAccount;
use pqc::Keypair;
use rayon::prelude::*;
use rpc::{CityClient, TxState};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// What the bench runs. `BenchConfig::new` holds the defaults of `city-node bench`.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Where the processes keep their data and logs (`None`: a temporary directory).
    pub dir: Option<PathBuf>,
    /// The `city-node` binary the node processes run.
    pub city_node_bin: PathBuf,
    /// The `presence-server` binary.
    pub presence_bin: PathBuf,
    /// Light nodes (at least n = 6).
    pub lights: usize,
    /// Accounts signing the load.
    pub accounts: usize,
    /// `SubmitTxStream` streams the load is spread over (one connection each).
    pub streams: usize,
    /// How long each rated run offers load.
    pub run_secs: f64,
    /// Txs offered in the peak run.
    pub peak_txs: usize,
    /// A known peak (Held tx/s): skips the peak run.
    pub peak: Option<f64>,
    /// Fractions of the peak offered, one run each.
    pub fractions: Vec<f64>,
    /// Signatures verified for the raw baseline (before and after the runs).
    pub baseline_txs: usize,
    /// Node links in plaintext (`--insecure`) instead of mutual TLS.
    pub insecure: bool,
    /// Representatives of a committee run as a localnet (0: one city without a committee,
    /// the Held path alone).
    pub committee: usize,
    /// `RUST_LOG` of the node processes.
    pub log_filter: String,
}

impl BenchConfig {
    /// Defaults: 6 light nodes, 100 accounts, 4 streams, 8 s per run, 50/80/100 % of a peak
    /// found with 12,000 txs, TLS links, the binaries beside this executable.
    pub fn new() -> Self {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("city-node"));
        let presence =
            exe.with_file_name(format!("presence-server{}", std::env::consts::EXE_SUFFIX));
        BenchConfig {
            dir: None,
            city_node_bin: exe,
            presence_bin: presence,
            lights: 6,
            accounts: 100,
            streams: 4,
            run_secs: 8.0,
            peak_txs: 12_000,
            peak: None,
            fractions: vec![0.5, 0.8, 1.0],
            baseline_txs: 3_000,
            insecure: false,
            committee: 0,
            log_filter: "warn".into(),
        }
    }
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// One run: the offer, what came back, and what it cost each role.
#[derive(Debug, Clone)]
pub struct BenchRun {
    /// "peak" or "50 %" …
    pub label: String,
    /// What the client saw.
    pub outcome: OpenLoopOutcome,
    /// CPU seconds of the city process during the run.
    pub city_cpu: f64,
    /// CPU seconds of all light nodes together.
    pub lights_cpu: f64,
    /// CPU seconds of the presence server.
    pub presence_cpu: f64,
    /// CPU seconds of this process (the load generator).
    pub client_cpu: f64,
    /// CPU seconds of the other representatives and the continent and global logs (with a
    /// committee; 0 without).
    pub others_cpu: f64,
    /// Micro-batches (stripes) cut during the run and the txs they carried.
    pub stripes: Option<(f64, f64)>,
}

impl BenchRun {
    fn per_held_us(&self, cpu: f64) -> f64 {
        cpu * 1e6 / (self.outcome.held.max(1) as f64)
    }
    /// City CPU µs per Held tx.
    pub fn city_us(&self) -> f64 {
        self.per_held_us(self.city_cpu)
    }
    /// Light nodes' CPU µs per Held tx (all of them).
    pub fn lights_us(&self) -> f64 {
        self.per_held_us(self.lights_cpu)
    }
    /// Load generator CPU µs per Held tx.
    pub fn client_us(&self) -> f64 {
        self.per_held_us(self.client_cpu)
    }
    /// Other representatives' and the logs' CPU µs per Held tx.
    pub fn others_us(&self) -> f64 {
        self.per_held_us(self.others_cpu)
    }
}

/// What the bench measured.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// Raw ML-DSA-87 verify/s on one thread (before, after the runs).
    pub raw_one: (f64, f64),
    /// Raw ML-DSA-87 verify/s on every core (before, after).
    pub raw_all: (f64, f64),
    /// Cores.
    pub threads: usize,
    /// The runs, the peak run first.
    pub runs: Vec<BenchRun>,
    /// The peak Held tx/s the rated runs are fractions of.
    pub peak: f64,
    /// Resident set of the city process after the runs, bytes.
    pub city_rss: u64,
    /// Largest resident set among the light nodes after the runs, bytes.
    pub light_rss_max: u64,
    /// Bytes in the city's data directory after the runs.
    pub city_disk: u64,
    /// Bytes in all light nodes' data directories after the runs.
    pub lights_disk: u64,
    /// The city's data directory entry by entry (name, bytes), largest first.
    pub city_disk_entries: Vec<(String, u64)>,
    /// Representatives (0: a city without a committee).
    pub committee: usize,
    /// With a committee: bodies in the city's working store when the disk was measured
    /// (`citychain_working_store_txs`), after waiting for the pruner.
    pub working_store_txs: Option<f64>,
    /// Txs answered Held over the whole bench (warm-up included).
    pub held_total: usize,
    /// Encoded size of one offered tx, bytes.
    pub tx_bytes: usize,
    /// Node links: "TLS" or "plaintext".
    pub links: &'static str,
    /// Machine load (`/proc/loadavg`) at the start and end.
    pub loadavg: (String, String),
}

impl BenchReport {
    /// Raw verify µs per tx on one core (mean of before and after).
    pub fn raw_us(&self) -> f64 {
        2e6 / (self.raw_one.0 + self.raw_one.1).max(1e-9)
    }
    /// Raw verify/s on every core (mean of before and after).
    pub fn raw_all_rate(&self) -> f64 {
        (self.raw_all.0 + self.raw_all.1) / 2.0
    }
    /// Raw verify µs per tx ÷ city CPU µs per Held tx, for run `r`.
    pub fn fair_ratio(&self, r: &BenchRun) -> f64 {
        self.raw_us() / r.city_us().max(1e-9)
    }
    /// Peak Held tx/s ÷ raw verify/s on every core.
    pub fn all_in_one_ratio(&self) -> f64 {
        self.peak / self.raw_all_rate().max(1e-9)
    }

    /// The printed table.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
        if self.committee == 0 {
            let _ = writeln!(
                s,
                "Held path, separate processes: 1 city (no committee), light nodes, presence; links {}; {} cores",
                self.links, self.threads
            );
        } else {
            let _ = writeln!(
                s,
                "network as deployed, separate processes: representative rep-0 of a committee of {} (ordering, execution, archive, pruning), light nodes, presence, continent, global; links {}; {} cores",
                self.committee, self.links, self.threads
            );
        }
        let _ = writeln!(
            s,
            "load average at start: {}   at end: {}",
            self.loadavg.0, self.loadavg.1
        );
        let _ = writeln!(
            s,
            "raw ML-DSA-87 verify over the offered signatures: {:.0}/s on one core ({:.1} µs/tx; before {:.0}, after {:.0}), {:.0}/s on {} cores (before {:.0}, after {:.0})",
            2.0 / (1.0 / self.raw_one.0.max(1e-9) + 1.0 / self.raw_one.1.max(1e-9)),
            self.raw_us(),
            self.raw_one.0,
            self.raw_one.1,
            self.raw_all_rate(),
            self.threads,
            self.raw_all.0,
            self.raw_all.1
        );
        let _ = writeln!(
            s,
            "{:<7} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}",
            "run",
            "offer/s",
            "held",
            "Held/s",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "city µs",
            "lights µs",
            "others µs",
            "client µs",
            "fair",
            "tx/stripe"
        );
        for r in &self.runs {
            let o = &r.outcome;
            let _ = writeln!(
                s,
                "{:<7} {:>9.0} {:>7} {:>9.0} {:>8} {:>8} {:>8} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>7.3} {:>9}",
                r.label,
                o.offered_rate,
                o.held,
                o.held_rate(),
                ms(o.latency(0.5)),
                ms(o.latency(0.99)),
                ms(o.latency(0.999)),
                r.city_us(),
                r.lights_us(),
                r.others_us(),
                r.client_us(),
                self.fair_ratio(r),
                r.stripes.map_or("-".to_string(), |(n, txs)| format!(
                    "{:.1}",
                    txs / n.max(1.0)
                ))
            );
            if o.held < o.offered {
                let _ = writeln!(
                    s,
                    "        not Held: {} admitted only, refused {:?}",
                    o.admitted_only, o.rejected
                );
            }
        }
        let _ = writeln!(
            s,
            "(µs = CPU µs per Held tx of that role; others = the other representatives, continent and global; fair = raw verify µs per tx ÷ city µs; presence CPU not counted)"
        );
        let _ = writeln!(
            s,
            "peak {:.0} Held tx/s; all-in-one ratio (peak ÷ raw verify/s on all cores) {:.3}",
            self.peak,
            self.all_in_one_ratio()
        );
        let held = self.held_total.max(1) as f64;
        let _ = writeln!(
            s,
            "footprint after {} Held txs of {} B: city RSS {:.0} MiB, largest light RSS {:.0} MiB, city disk {:.1} KB per Held tx ({:.2} × the tx), light disk {:.1} KB per Held tx",
            self.held_total,
            self.tx_bytes,
            self.city_rss as f64 / 1048576.0,
            self.light_rss_max as f64 / 1048576.0,
            self.city_disk as f64 / held / 1e3,
            self.city_disk as f64 / held / self.tx_bytes.max(1) as f64,
            self.lights_disk as f64 / held / 1e3,
        );
        if let Some(n) = self.working_store_txs {
            let _ = writeln!(
                s,
                "bodies left in the city's working store when its disk was measured (after the pruner): {n:.0}"
            );
        }
        let entries: Vec<String> = self
            .city_disk_entries
            .iter()
            .map(|(name, b)| format!("{name} {:.1} KB/tx", *b as f64 / held / 1e3))
            .collect();
        let _ = writeln!(s, "city disk by entry: {}", entries.join(", "));
        s
    }
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn free_port(dir: &Path) -> Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io(dir))?;
    l.local_addr().map_err(io(dir))
}

/// Bytes a file takes on disk: its allocated blocks (redb files are sparse while they
/// grow, so their length overstates what they use).
fn allocated(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.blocks() * 512
}

/// Each entry of `p` with the bytes it takes on disk (a directory: everything under it),
/// largest first.
fn dir_entries(p: &Path) -> Vec<(String, u64)> {
    let Ok(rd) = std::fs::read_dir(p) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = rd
        .flatten()
        .map(|e| {
            let bytes = match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => allocated(&m),
                Err(_) => 0,
            };
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.1));
    out
}

/// Bytes everything under `p` takes on disk.
pub(crate) fn dir_bytes(p: &Path) -> u64 {
    dir_entries(p).iter().map(|(_, b)| b).sum()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One node process.
pub(crate) struct Proc {
    name: String,
    role: &'static str,
    pub(crate) addr: SocketAddr,
    metrics: Option<SocketAddr>,
    pub(crate) dir: PathBuf,
    /// The process, when the bench spawned it; `None` for a localnet's (it owns them).
    child: Option<Child>,
    /// Its OS process id.
    pid: u32,
}

impl Proc {
    pub(crate) fn pid(&self) -> Result<u32> {
        match &self.child {
            Some(c) => c
                .id()
                .ok_or_else(|| Error::Measurement(format!("{} has exited", self.name))),
            None => Ok(self.pid),
        }
    }
}

pub(crate) struct Procs {
    pub(crate) procs: Vec<Proc>,
}

impl Procs {
    fn of(&self, role: &str) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(move |p| p.role == role)
    }
    fn city(&self) -> Result<&Proc> {
        self.of("city")
            .next()
            .ok_or_else(|| Error::Measurement("no city process".into()))
    }
    fn cpu(&self, clock: &CpuClock, role: &str) -> Result<f64> {
        let mut sum = 0.0;
        for p in self.of(role) {
            sum += clock.cpu_secs(Some(p.pid()?))?;
        }
        Ok(sum)
    }
    pub(crate) async fn stop(mut self) {
        for c in self.procs.iter_mut().filter_map(|p| p.child.as_mut()) {
            let _ = c.start_kill();
        }
        for c in self.procs.iter_mut().filter_map(|p| p.child.as_mut()) {
            let _ = c.wait().await;
        }
    }
}

pub(crate) async fn wait_listening(p: &mut Proc, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        if let Some(c) = p.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            return Err(Error::Measurement(format!(
                "{} exited with {status}; see {}",
                p.name,
                p.dir.join("node.log").display()
            )));
        }
        if TcpStream::connect_timeout(&p.addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if t0.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!("{} to listen on {}", p.name, p.addr),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn(
    cfg: &BenchConfig,
    root: &Path,
    name: &str,
    role: &'static str,
    presence: Option<SocketAddr>,
) -> Result<Proc> {
    spawn_with_env(cfg, root, name, role, presence, &[])
}

/// [`spawn`] with extra environment variables (e.g. `CITY_LIGHT__QUOTA_BYTES`).
pub(crate) fn spawn_with_env(
    cfg: &BenchConfig,
    root: &Path,
    name: &str,
    role: &'static str,
    presence: Option<SocketAddr>,
    env: &[(&str, String)],
) -> Result<Proc> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let addr = free_port(&dir)?;
    let mut metrics = None;
    let mut c = if role == "presence" {
        let toml = dir.join("presence.toml");
        // Every node heartbeats from 127.0.0.1: the per-IP limit is raised, as in localnet.
        std::fs::write(
            &toml,
            "backend = \"memory\"\nttl_ms = 3000\nsweep_interval_ms = 500\n\
             [rate_limit]\nenabled = true\nper_second = 2000\nburst = 4000\n",
        )
        .map_err(io(&toml))?;
        let mut c = Command::new(&cfg.presence_bin);
        c.arg("--config")
            .arg(&toml)
            .arg("--bind")
            .arg(addr.ip().to_string())
            .arg("--port")
            .arg(addr.port().to_string());
        c
    } else {
        let mut c = Command::new(&cfg.city_node_bin);
        c.arg("run")
            .arg("--role")
            .arg(role)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(&dir)
            .arg("--city-id")
            .arg(crate::CITY);
        // Every node its own /metrics port (the default, :9700, would collide).
        let m = free_port(&dir)?;
        metrics = Some(m);
        c.arg("--metrics-listen").arg(m.to_string());
        if role == "city" {
            c.arg("--lat")
                .arg(crate::CITY_POS.0.to_string())
                .arg("--lon")
                .arg(crate::CITY_POS.1.to_string());
        }
        if let Some(i) = name.strip_prefix("light-") {
            c.arg("--zone")
                .arg(format!("zone-{}", i.parse::<usize>().unwrap_or(0) % 3));
        }
        if cfg.insecure {
            c.arg("--insecure");
        }
        c.env("PRESENCE_BACKEND", "http")
            .env(
                "PRESENCE_HTTP_ENDPOINT",
                presence.map(|p| format!("http://{p}")).unwrap_or_default(),
            )
            .env("NODELIST_HEARTBEAT_SEC", "1");
        c
    };
    let log = dir.join("node.log");
    let out = std::fs::File::create(&log).map_err(io(&log))?;
    let err = out.try_clone().map_err(io(&log))?;
    c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    c.env("RUST_LOG", &cfg.log_filter)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    let child = c.spawn().map_err(io(&cfg.city_node_bin))?;
    let pid = child.id().unwrap_or(0);
    Ok(Proc {
        name: name.to_string(),
        role,
        addr,
        metrics,
        dir,
        child: Some(child),
        pid,
    })
}

/// The city's `/metrics` text.
async fn scrape(metrics: SocketAddr) -> Option<String> {
    reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of an unlabelled gauge `name` from `/metrics`.
async fn gauge(metrics: SocketAddr, name: &str) -> Option<f64> {
    gauge_in(&scrape(metrics).await?, name)
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition.
fn gauge_in(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        if n == name { v.parse().ok() } else { None }
    })
}

/// Sum and count of the city's `citychain_micro_batch_txs` (all paths), from `/metrics`.
async fn micro_batches(metrics: SocketAddr) -> Option<(f64, f64)> {
    let text = scrape(metrics).await?;
    let mut sum = 0.0;
    let mut count = 0.0;
    for l in text.lines() {
        let Some((name, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let v: f64 = value.parse().unwrap_or(0.0);
        if name.starts_with("citychain_micro_batch_txs_sum") {
            sum += v;
        } else if name.starts_with("citychain_micro_batch_txs_count") {
            count += v;
        }
    }
    Some((count, sum))
}

/// Submits `txs` one stream until every one is answered; returns how many were Held.
async fn warm_up(client: &CityClient, txs: &[rpc::pb::SubmitTxRequest]) -> Result<usize> {
    use futures::StreamExt;
    let mut out = client
        .submit_stream_raw(futures::stream::iter(txs.to_vec()))
        .await?;
    let mut held = 0;
    while let Some((_, r)) = out.next().await {
        if matches!(r, Ok(s) if s.state == TxState::Held) {
            held += 1;
        }
    }
    Ok(held)
}

/// The bench's directory: `cfg.dir` (created if missing), or a temporary one that lives
/// as long as the returned guard.
pub(crate) fn bench_root(cfg: &BenchConfig) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match &cfg.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(io(d))?;
            Ok((d.clone(), None))
        }
        None => {
            let t = tempfile::tempdir().map_err(io(&std::env::temp_dir()))?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

/// Runs the bench and returns what it measured.
pub async fn run(cfg: &BenchConfig) -> Result<BenchReport> {
    let (root, _tmp) = bench_root(cfg)?;
    let clock = CpuClock::new()?;
    let mut report = BenchReport {
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        links: if cfg.insecure { "plaintext" } else { "TLS" },
        ..BenchReport::default()
    };

    // Accounts and the first txs signed before anything starts.
    let accounts: Vec<Keypair> = (0..cfg.accounts.max(2))
        .into_par_iter()
        .map(|_| Keypair::generate())
        .collect();
    let warm_n = 300;
    let first_n = warm_n + cfg.peak_txs.max(cfg.baseline_txs);
    let mut all = presign(first_n, &accounts)?;
    report.tx_bytes = all.first().map_or(0, |t| t.encoded_len());

    report.committee = cfg.committee;
    let (procs, net) = if cfg.committee == 0 {
        (start_city(cfg, &root).await?, None)
    } else {
        let (procs, net) = start_localnet(cfg, &root, &accounts).await?;
        (procs, Some(net))
    };
    let city_addr = procs.city()?.addr.to_string();
    let mut result = measure(
        cfg,
        &mut report,
        &clock,
        &procs,
        &city_addr,
        &accounts,
        &mut all,
        warm_n,
    )
    .await;
    if result.is_ok() && net.is_some() {
        report.working_store_txs = wait_pruned(procs.city()?.metrics, report.held_total).await;
    }
    if result.is_ok() {
        result = footprint(&procs, &mut report);
    }
    procs.stop().await;
    if let Some(net) = net {
        net.stop().await;
    }
    result.map(|()| report)
}

/// The city's and light nodes' resident sets and disk use, into `report`.
fn footprint(procs: &Procs, report: &mut BenchReport) -> Result<()> {
    let city = procs.city()?;
    report.city_rss = rss_bytes(city.pid()?)?;
    report.city_disk = dir_bytes(&city.dir);
    report.city_disk_entries = dir_entries(&city.dir);
    for l in procs.of("light") {
        report.light_rss_max = report.light_rss_max.max(rss_bytes(l.pid()?)?);
        report.lights_disk += dir_bytes(&l.dir);
    }
    Ok(())
}

/// Starts the presence server (in memory) into `procs` and waits until it listens; returns
/// its address.
pub(crate) async fn start_presence(
    cfg: &BenchConfig,
    root: &Path,
    procs: &mut Procs,
) -> Result<SocketAddr> {
    let mut p = spawn(cfg, root, "presence", "presence", None)?;
    wait_listening(&mut p, Duration::from_secs(20)).await?;
    let addr = p.addr;
    procs.procs.push(p);
    Ok(addr)
}

/// Presence, light nodes and one city without a genesis file, each spawned by the bench.
async fn start_city(cfg: &BenchConfig, root: &Path) -> Result<Procs> {
    let mut procs = Procs { procs: Vec::new() };
    let presence = start_presence(cfg, root, &mut procs).await?;
    for i in 0..cfg.lights {
        let mut p = spawn(cfg, root, &format!("light-{i}"), "light", Some(presence))?;
        wait_listening(&mut p, Duration::from_secs(30)).await?;
        procs.procs.push(p);
    }
    let mut p = spawn(cfg, root, "city", "city", Some(presence))?;
    wait_listening(&mut p, Duration::from_secs(30)).await?;
    procs.procs.push(p);
    Ok(procs)
}

/// Opening balance of each bench account in a committee run: enough for every transfer
/// the bench signs (amounts are at most 1,000 plus the fee).
const BENCH_BALANCE: u64 = 1 << 50;

/// The network as deployed (a localnet with `cfg.committee` representatives in `root`, the
/// bench accounts opened in its genesis file); `rep-0` is the measured city.
async fn start_localnet(
    cfg: &BenchConfig,
    root: &Path,
    accounts: &[Keypair],
) -> Result<(Procs, Localnet)> {
    if cfg.insecure {
        return Err(Error::Measurement(
            "a committee run uses the localnet's mutual TLS; --insecure applies without one".into(),
        ));
    }
    if root.join("localnet.toml").exists() {
        return Err(Error::Measurement(format!(
            "{} already holds a localnet; a committee run needs a fresh directory",
            root.display()
        )));
    }
    let mut lc = LocalnetConfig::new(root);
    lc.reps = cfg.committee;
    lc.lights = cfg.lights;
    lc.city_node_bin = cfg.city_node_bin.clone();
    lc.presence_bin = cfg.presence_bin.clone();
    lc.log_filter = cfg.log_filter.clone();
    lc.accounts = accounts
        .iter()
        .map(|k| GenesisAccount {
            account: k.account_id().to_hex(),
            balance: BENCH_BALANCE,
            city: None,
        })
        .collect();
    let net = Localnet::start(lc).await?;
    let mut procs = Procs { procs: Vec::new() };
    for n in &net.manifest().nodes {
        let role: &'static str = match n.role.as_str() {
            "presence" => "presence",
            "light" => "light",
            "city" if n.name == "rep-0" => "city",
            _ => "other",
        };
        let pid = net
            .pid(&n.name)
            .ok_or_else(|| Error::Measurement(format!("{} is not running", n.name)))?;
        procs.procs.push(Proc {
            name: n.name.clone(),
            role,
            addr: n.addr,
            metrics: n.metrics,
            dir: root.join(&n.name),
            child: None,
            pid,
        });
    }
    Ok((procs, net))
}

/// Waits (at most two minutes) until the city's pruner has removed the bodies of what was
/// ordered, executed and archived: `citychain_working_store_txs` at most 1 % of `held`,
/// or no lower for 20 s. Returns the last value read.
async fn wait_pruned(metrics: Option<SocketAddr>, held: usize) -> Option<f64> {
    let metrics = metrics?;
    let t0 = Instant::now();
    let mut best = f64::MAX;
    let mut best_at = Instant::now();
    let mut last = None;
    while t0.elapsed() < Duration::from_secs(120) {
        if let Some(v) = gauge(metrics, "citychain_working_store_txs").await {
            last = Some(v);
            if v <= held as f64 / 100.0 {
                break;
            }
            if v < best {
                best = v;
                best_at = Instant::now();
            } else if best_at.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    last
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    cfg: &BenchConfig,
    report: &mut BenchReport,
    clock: &CpuClock,
    procs: &Procs,
    city_addr: &str,
    accounts: &[Keypair],
    all: &mut Vec<SignedTx>,
    warm_n: usize,
) -> Result<()> {
    report.loadavg.0 = loadavg();
    // Warm-up: until the city sees enough light nodes to answer Held.
    let warm_client = CityClient::connect(city_addr).await?;
    let t0 = Instant::now();
    let mut next = 0;
    loop {
        let batch: Vec<rpc::pb::SubmitTxRequest> = all[next..next + 10]
            .iter()
            .map(|t| rpc::pb::SubmitTxRequest { tx: Some(t.into()) })
            .collect();
        next += 10;
        let held = warm_up(&warm_client, &batch).await?;
        report.held_total += held;
        if held == batch.len() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) || next + 10 > warm_n {
            return Err(Error::Measurement(format!(
                "the city answered no full batch Held within the warm-up ({} txs, {:?})",
                next,
                t0.elapsed()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rest: Vec<rpc::pb::SubmitTxRequest> = all[next..warm_n]
        .iter()
        .map(|t| rpc::pb::SubmitTxRequest { tx: Some(t.into()) })
        .collect();
    report.held_total += warm_up(&warm_client, &rest).await?;
    drop(warm_client);

    let (one, every) = verify_baseline(&all[warm_n..], cfg.baseline_txs).await?;
    report.raw_one.0 = one;
    report.raw_all.0 = every;

    let mut clients = Vec::new();
    for _ in 0..cfg.streams.max(1) {
        clients.push(CityClient::connect(city_addr).await?);
    }
    let city_metrics = procs.city()?.metrics;
    let mut cursor = warm_n;
    let env = RunEnv {
        clients: &clients,
        procs,
        clock,
        metrics: city_metrics,
    };
    let peak = match cfg.peak {
        Some(p) => p,
        None => {
            let txs = &all[cursor..cursor + cfg.peak_txs];
            let r = env.run("peak".into(), every, txs).await?;
            cursor += cfg.peak_txs;
            let p = r.outcome.held_rate();
            report.held_total += r.outcome.held;
            report.runs.push(r);
            p
        }
    };
    report.peak = peak;
    // The rated runs' txs, signed now (the nodes idle meanwhile).
    let need: usize = cfg
        .fractions
        .iter()
        .map(|f| (f * peak * cfg.run_secs).ceil() as usize)
        .sum();
    if cursor + need > all.len() {
        let more = presign(cursor + need, accounts)?;
        all.extend_from_slice(&more[all.len()..]);
    }
    for f in &cfg.fractions {
        let rate = f * peak;
        let n = (rate * cfg.run_secs).ceil() as usize;
        let r = env
            .run(
                format!("{:.0} %", f * 100.0),
                rate,
                &all[cursor..cursor + n],
            )
            .await?;
        cursor += n;
        report.held_total += r.outcome.held;
        report.runs.push(r);
    }
    let (one, every) = verify_baseline(&all[warm_n..], cfg.baseline_txs).await?;
    report.raw_one.1 = one;
    report.raw_all.1 = every;
    report.loadavg.1 = loadavg();
    Ok(())
}

/// What every run reads: the streams, the processes and their clocks.
struct RunEnv<'a> {
    clients: &'a [CityClient],
    procs: &'a Procs,
    clock: &'a CpuClock,
    metrics: Option<SocketAddr>,
}

impl RunEnv<'_> {
    fn cpu(&self) -> Result<[f64; 5]> {
        Ok([
            self.procs.cpu(self.clock, "city")?,
            self.procs.cpu(self.clock, "light")?,
            self.procs.cpu(self.clock, "presence")?,
            self.clock.cpu_secs(None)?,
            self.procs.cpu(self.clock, "other")?,
        ])
    }

    async fn batches(&self) -> Option<(f64, f64)> {
        micro_batches(self.metrics?).await
    }

    /// One open-loop run of `txs` at `rate`, with each role's CPU time over it.
    async fn run(&self, label: String, rate: f64, txs: &[SignedTx]) -> Result<BenchRun> {
        let before = self.cpu()?;
        let mb0 = self.batches().await;
        let outcome = open_loop(self.clients, txs, rate).await?;
        let after = self.cpu()?;
        let mb1 = self.batches().await;
        let stripes = match (mb0, mb1) {
            (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
            _ => None,
        };
        Ok(BenchRun {
            label,
            outcome,
            city_cpu: after[0] - before[0],
            lights_cpu: after[1] - before[1],
            presence_cpu: after[2] - before[2],
            client_cpu: after[3] - before[3],
            others_cpu: after[4] - before[4],
            stripes,
        })
    }
}

/// The raw ML-DSA-87 verify rate over the first `n` of `txs` (off the runtime): on one
/// thread, and on every core.
async fn verify_baseline(txs: &[SignedTx], n: usize) -> Result<(f64, f64)> {
    let txs = txs[..n.min(txs.len())].to_vec();
    tokio::task::spawn_blocking(move || -> Result<(f64, f64)> {
        Ok((raw_verify_rate(&txs, 1)?, raw_verify_rate(&txs, 0)?))
    })
    .await
    .map_err(|e| Error::Measurement(format!("baseline: {e}")))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_gauge_is_read_by_its_exact_name_only() {
        let text = "# TYPE citychain_working_store_txs gauge\n\
                    citychain_working_store_txs_total 9\n\
                    citychain_working_store_txs 1234\n\
                    citychain_micro_batch_txs_sum{path=\"held\"} 5\n";
        assert_eq!(gauge_in(text, "citychain_working_store_txs"), Some(1234.0));
        assert_eq!(gauge_in(text, "citychain_micro_batch_txs_sum"), None);
        assert_eq!(gauge_in(text, "absent"), None);
    }

    #[test]
    fn the_city_directory_is_listed_largest_first_with_directories_summed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("small"), vec![1u8; 1_000]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub").join("a"), vec![1u8; 30_000]).unwrap();
        std::fs::write(dir.path().join("sub").join("b"), vec![1u8; 30_000]).unwrap();
        std::fs::write(dir.path().join("big"), vec![1u8; 45_000]).unwrap();
        let entries = dir_entries(dir.path());
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["sub", "big", "small"]);
        // What is allocated: at least the bytes written, at most a block more per file.
        let written = [(60_000, 2), (45_000, 1), (1_000, 1)];
        for ((_, bytes), (w, files)) in entries.iter().zip(written) {
            assert!(*bytes >= w && *bytes <= w + files * 8_192, "{entries:?}");
        }
        assert_eq!(
            dir_bytes(dir.path()),
            entries.iter().map(|(_, b)| b).sum::<u64>()
        );
    }
}

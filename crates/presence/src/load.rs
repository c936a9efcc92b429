//! The load run behind `presence-server bench`: on loopback and bounded in time, it starts
//! a throwaway `redis-server` and a presence server on it, measures `redis-benchmark -t set`
//! as the baseline, drives heartbeats with concurrent keep-alive HTTP clients, and measures
//! how long a silent node takes to leave the list and to produce a `leave` event.

use crate::{
    BackendKind, Error, ListFilter, PresenceClient, PresenceClientConfig, PresenceEvent,
    PresenceServer, PresenceStore, RateLimitConfig, RedisProcess, Result, ServerConfig, Session,
    SessionToken,
};
use dag_core::{NodeId, NodeInfo, Role};
use futures::StreamExt;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

/// Which HTTP load generator drives the heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadClient {
    /// `wrk` (C, keep-alive, Lua script rotating node ids): least CPU taken from the server.
    Wrk,
    /// An in-process tokio/reqwest client (shares the CPU and runtime with the server).
    Tokio,
}

impl LoadClient {
    /// `Wrk` when `wrk` is on the PATH, else `Tokio`.
    pub fn detect() -> Self {
        let found = Command::new("wrk").arg("--version").output().is_ok();
        if found {
            LoadClient::Wrk
        } else {
            LoadClient::Tokio
        }
    }
}

/// Parameters of a load run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// How long heartbeats are driven.
    pub duration: Duration,
    /// Concurrent HTTP clients.
    pub concurrency: usize,
    /// Distinct logged-in nodes the heartbeats are spread over.
    pub nodes: usize,
    /// Requests of the `redis-benchmark -t set` baseline.
    pub redis_bench_requests: u64,
    /// Clients of the baseline.
    pub redis_bench_clients: u32,
    /// Online TTL of the server (the detection time depends on it).
    pub ttl: Duration,
    /// Sweep interval of the server.
    pub sweep_interval: Duration,
    /// Load generator.
    pub client: LoadClient,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            duration: Duration::from_secs(5),
            concurrency: 32,
            nodes: 1000,
            redis_bench_requests: 100_000,
            redis_bench_clients: 50,
            ttl: Duration::from_secs(6),
            sweep_interval: Duration::from_secs(1),
            client: LoadClient::detect(),
        }
    }
}

/// What a load run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// The configuration used.
    pub config: LoadConfig,
    /// Successful heartbeats.
    pub heartbeats: u64,
    /// Failed heartbeats (any non-200 or transport error).
    pub errors: u64,
    /// Wall time of the heartbeat phase.
    pub elapsed: Duration,
    /// Latency percentiles (p50, p99, p999) of heartbeats (wrk reports no p999).
    pub latency: (Duration, Duration, Option<Duration>),
    /// `redis-benchmark -t set` requests per second in the same run.
    pub redis_set_per_sec: f64,
    /// The two baseline runs (before and after the heartbeat phase) it is the mean of.
    pub redis_set_runs: (f64, f64),
    /// From the silent node's last heartbeat until `GET /presence` no longer lists it.
    pub gone_from_list_after: Duration,
    /// From the silent node's last heartbeat until its `leave` event arrived.
    pub leave_event_after: Duration,
}

impl LoadReport {
    /// Heartbeats per second.
    pub fn heartbeats_per_sec(&self) -> f64 {
        self.heartbeats as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hb = self.heartbeats_per_sec();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(f, "presence load run (loopback, redis backend)")?;
        writeln!(
            f,
            "  offered: {} concurrent connections ({:?}), {} nodes, {:.1} s",
            self.config.concurrency,
            self.config.client,
            self.config.nodes,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "  {:<42} {:>12}", "metric", "value")?;
        writeln!(f, "  {:<42} {:>12.0}", "presence heartbeats/s", hb)?;
        writeln!(
            f,
            "  {:<42} {:>12}",
            "heartbeats ok / errors",
            format!("{}/{}", self.heartbeats, self.errors)
        )?;
        writeln!(
            f,
            "  {:<42} {:>12.2}",
            "heartbeat p50 ms",
            ms(self.latency.0)
        )?;
        writeln!(
            f,
            "  {:<42} {:>12.2}",
            "heartbeat p99 ms",
            ms(self.latency.1)
        )?;
        match self.latency.2 {
            Some(p) => writeln!(f, "  {:<42} {:>12.2}", "heartbeat p999 ms", ms(p))?,
            None => writeln!(f, "  {:<42} {:>12}", "heartbeat p999 ms", "n/a (wrk)")?,
        }
        writeln!(
            f,
            "  {:<42} {:>12.0}",
            "redis-benchmark SET/s (baseline, mean)", self.redis_set_per_sec
        )?;
        writeln!(
            f,
            "  {:<42} {:>12}",
            "  SET/s before / after the heartbeats",
            format!("{:.0}/{:.0}", self.redis_set_runs.0, self.redis_set_runs.1)
        )?;
        writeln!(
            f,
            "  {:<42} {:>12.3}",
            "ratio heartbeats/s : SET/s",
            hb / self.redis_set_per_sec.max(1e-9)
        )?;
        writeln!(
            f,
            "  {:<42} {:>12.0}",
            format!(
                "gone from GET /presence ms (ttl {} ms)",
                self.config.ttl.as_millis()
            ),
            ms(self.gone_from_list_after)
        )?;
        write!(
            f,
            "  {:<42} {:>12.0}",
            format!(
                "leave event ms (sweep {} ms)",
                self.config.sweep_interval.as_millis()
            ),
            ms(self.leave_event_after)
        )
    }
}

fn node(i: usize) -> NodeInfo {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    id[31] = 0xb7;
    NodeInfo {
        node_id: NodeId::from_bytes(id),
        role: Role::Light,
        grpc_addr: format!("127.0.0.1:{}", 20000 + i % 40000),
        city_id: "JP-13".into(),
        zone: String::new(),
        lat: 35.68,
        lon: 139.69,
        free_capacity: 1 << 30,
        load: 0.1,
        version: "bench".into(),
        session_start_ms: 0,
    }
}

/// Runs `redis-benchmark -t set -q` against `port` and returns SET/s.
fn redis_benchmark(port: u16, requests: u64, clients: u32) -> Result<f64> {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "set",
            "-n",
            &requests.to_string(),
            "-c",
            &clients.to_string(),
            "-q",
        ])
        .output()
        .map_err(|source| Error::Io {
            what: "running redis-benchmark (apt-get install -y redis-tools)".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "SET: 98039.22 requests per second, p50=0.263 msec" (possibly after \r progress).
    text.rsplit("SET:")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| Error::Corrupt {
            what: "redis-benchmark output".into(),
            detail: text.chars().take(300).collect(),
        })
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_micros(sorted[idx.min(sorted.len() - 1)])
}

/// Runs the whole load run (about `duration` + TTL + a few seconds of set-up).
pub async fn run(config: LoadConfig) -> Result<LoadReport> {
    let redis = RedisProcess::start()?;
    let set_before = tokio::task::spawn_blocking({
        let port = redis.port();
        let (n, c) = (config.redis_bench_requests, config.redis_bench_clients);
        move || redis_benchmark(port, n, c)
    })
    .await
    .map_err(|e| Error::Io {
        what: "redis-benchmark task".into(),
        source: std::io::Error::other(e.to_string()),
    })??;

    let server_config = ServerConfig {
        backend: BackendKind::Redis,
        redis_uri: redis.uri(),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        http_port: 0,
        ttl_ms: config.ttl.as_millis() as u64,
        sweep_interval_ms: config.sweep_interval.as_millis() as u64,
        // One loopback address sends everything: the per-IP limit would measure itself.
        rate_limit: RateLimitConfig {
            enabled: false,
            ..RateLimitConfig::default()
        },
        ..ServerConfig::default()
    };
    let server = PresenceServer::start(server_config).await?;
    let base = server.base_url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(config.concurrency.max(1))
        .build()
        .map_err(|e| Error::Config(format!("http client: {e}")))?;

    // The load's nodes get their sessions straight from the store (signing 1,000 logins
    // is not what this run measures); each heartbeat then carries its node's token.
    let store = server.store();
    let mut bodies = Vec::with_capacity(config.nodes.max(1));
    let issued_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for i in 0..config.nodes.max(1) {
        let token = SessionToken::generate();
        let info = node(i);
        bodies.push(serde_json::json!({ "node_id": info.node_id, "session": token }).to_string());
        store
            .login_session(
                info,
                Session {
                    hash: token.hash(),
                    issued_at_ms,
                },
            )
            .await?;
    }

    // Failure detection: a victim (a real signed login) heartbeats once, then falls silent.
    let victim_key = pqc::Keypair::generate();
    let observer = PresenceClient::new(&base, PresenceClientConfig::default())?
        .with_signer(std::sync::Arc::new(victim_key.clone()));
    let mut events = observer.subscribe().await?;
    let victim = NodeInfo {
        node_id: victim_key.node_id(),
        ..node(usize::MAX >> 8)
    };
    observer.login(victim.clone()).await?;
    observer.heartbeat(victim.node_id).await?;
    let silent_since = Instant::now();
    let detect = tokio::spawn({
        let observer = observer.clone();
        let victim_id = victim.node_id;
        async move {
            let leave_wait = async {
                while let Some(ev) = events.next().await {
                    if let Ok(PresenceEvent::Leave { node_id, .. }) = ev
                        && node_id == victim_id
                    {
                        return Some(silent_since.elapsed());
                    }
                }
                None
            };
            let list_wait = async {
                loop {
                    if let Ok(nodes) = observer.list(&ListFilter::default()).await
                        && !nodes.iter().any(|n| n.node_id == victim_id)
                    {
                        return silent_since.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            let deadline = silent_since + Duration::from_secs(60);
            let (leave, gone) = tokio::join!(
                tokio::time::timeout_at(deadline.into(), leave_wait),
                tokio::time::timeout_at(deadline.into(), list_wait)
            );
            (leave.ok().flatten(), gone.ok())
        }
    });

    // Heartbeat load.
    let url = format!("{base}/presence/heartbeat");
    let phase = match config.client {
        LoadClient::Tokio => {
            tokio_load(&http, &url, bodies, config.concurrency, config.duration).await
        }
        LoadClient::Wrk => {
            let url = url.clone();
            let (c, d) = (config.concurrency, config.duration);
            tokio::task::spawn_blocking(move || wrk_load(&url, &bodies, c, d))
                .await
                .map_err(|e| Error::Io {
                    what: "wrk task".into(),
                    source: std::io::Error::other(e.to_string()),
                })??
        }
    };

    let set_after = tokio::task::spawn_blocking({
        let port = redis.port();
        let (n, c) = (config.redis_bench_requests, config.redis_bench_clients);
        move || redis_benchmark(port, n, c)
    })
    .await
    .map_err(|e| Error::Io {
        what: "redis-benchmark task".into(),
        source: std::io::Error::other(e.to_string()),
    })??;

    let (leave, gone) = detect.await.map_err(|e| Error::Io {
        what: "failure detection task".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    server.shutdown().await?;
    drop(redis);
    let timeout = || Error::Io {
        what: "failure detection".into(),
        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
    };
    Ok(LoadReport {
        latency: phase.latency,
        config,
        heartbeats: phase.ok,
        errors: phase.errors,
        elapsed: phase.elapsed,
        redis_set_per_sec: (set_before + set_after) / 2.0,
        redis_set_runs: (set_before, set_after),
        gone_from_list_after: gone.ok_or_else(timeout)?,
        leave_event_after: leave.ok_or_else(timeout)?,
    })
}

struct Phase {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latency: (Duration, Duration, Option<Duration>),
}

async fn tokio_load(
    http: &reqwest::Client,
    url: &str,
    bodies: Vec<String>,
    concurrency: usize,
    duration: Duration,
) -> Phase {
    let ids = std::sync::Arc::new(bodies);
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = Vec::new();
    for w in 0..concurrency.max(1) {
        let (http, url, ids) = (http.clone(), url.to_owned(), ids.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut err, mut lat) = (0u64, 0u64, Vec::with_capacity(1 << 16));
            let mut i = w;
            while Instant::now() < deadline {
                let body = ids[i % ids.len()].clone();
                i += 7;
                let t = Instant::now();
                match http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok += 1;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => err += 1,
                }
            }
            (ok, err, lat)
        }));
    }
    let (mut ok, mut errors, mut lat) = (0, 0, Vec::new());
    for w in workers {
        if let Ok((o, e, l)) = w.await {
            ok += o;
            errors += e;
            lat.extend(l);
        }
    }
    let elapsed = start.elapsed();
    lat.sort_unstable();
    Phase {
        ok,
        errors,
        elapsed,
        latency: (
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            Some(percentile(&lat, 0.999)),
        ),
    }
}

/// Runs wrk with a Lua script that rotates over the heartbeat bodies (one per node).
fn wrk_load(url: &str, bodies: &[String], concurrency: usize, duration: Duration) -> Result<Phase> {
    let mut script = String::from("local bodies = {\n");
    for body in bodies {
        // JSON of hex strings: no quote or backslash to escape inside a Lua '…' string.
        script.push_str(&format!("  '{body}',\n"));
    }
    script.push_str(
        "}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  local body = bodies[(i % #bodies) + 1]\n  \
         return wrk.format(\"POST\", nil, {[\"Content-Type\"] = \"application/json\"}, body)\nend\n",
    );
    let path = std::env::temp_dir().join(format!("presence-wrk-{}.lua", std::process::id()));
    std::fs::write(&path, script).map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })?;
    let connections = concurrency.max(2);
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs().max(1)),
            "--latency",
            "-s",
        ])
        .arg(&path)
        .arg(url)
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out.map_err(|source| Error::Io {
        what: "running wrk (apt-get install -y wrk)".into(),
        source,
    })?;
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn parse_wrk_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-6)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else {
        return None;
    };
    num.parse::<f64>()
        .ok()
        .map(|n| Duration::from_secs_f64(n * scale))
}

fn parse_wrk(text: &str) -> Result<Phase> {
    let corrupt = || Error::Corrupt {
        what: "wrk output".into(),
        detail: text.chars().take(400).collect(),
    };
    let (mut total, mut elapsed, mut non2xx, mut errors) = (None, None, 0u64, 0u64);
    let (mut p50, mut p99) = (None, None);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", t, ..] => {
                total = n.parse::<u64>().ok();
                elapsed = parse_wrk_duration(t.trim_end_matches(','));
            }
            ["50%", d] => p50 = parse_wrk_duration(d),
            ["99%", d] => p99 = parse_wrk_duration(d),
            ["Non-2xx", "or", "3xx", "responses:", n] => non2xx = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    let total = total.ok_or_else(corrupt)?;
    let failed = non2xx + errors;
    Ok(Phase {
        ok: total.saturating_sub(non2xx),
        errors: failed,
        elapsed: elapsed.ok_or_else(corrupt)?,
        latency: (p50.ok_or_else(corrupt)?, p99.ok_or_else(corrupt)?, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 4s test @ http://127.0.0.1:1/presence/heartbeat
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.22ms    2.84ms  16.97ms   66.48%
  Latency Distribution
     50%  750.00us
     75%    5.10ms
     90%    8.00ms
     99%   12.34ms
  31460 requests in 4.00s, 5.01MB read
  Non-2xx or 3xx responses: 12
Requests/sec:   7860.16
";
        let p = parse_wrk(text).unwrap();
        assert_eq!(p.ok, 31448);
        assert_eq!(p.errors, 12);
        assert_eq!(p.elapsed, Duration::from_secs(4));
        assert_eq!(p.latency.0, Duration::from_micros(750));
        assert_eq!(p.latency.1, Duration::from_micros(12340));
        assert!(parse_wrk("garbage").is_err());
    }
}

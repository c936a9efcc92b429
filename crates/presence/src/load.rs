//! The load run behind `presence-server bench`: on loopback and bounded in time, it starts
//! a throwaway `redis-server` and a presence server on it, measures `redis-benchmark -t set`
//! as the baseline, drives heartbeats with concurrent keep-alive HTTP clients, and measures
//! how long a silent node takes to leave the list and to produce a `leave` event.

use crate::{
    BackendKind, Error, ListFilter, PresenceClient, PresenceClientConfig, PresenceEvent,
    PresenceServer, PresenceStore, RateLimitConfig, RedisProcess, Result, ServerConfig,
};
use dag_core::{NodeId, NodeInfo, Role};
use futures::StreamExt;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

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
    /// Latency percentiles (p50, p99, p999) of successful heartbeats.
    pub latency: (Duration, Duration, Duration),
    /// `redis-benchmark -t set` requests per second in the same run.
    pub redis_set_per_sec: f64,
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
            "  offered: {} concurrent clients, {} nodes, {:.1} s",
            self.config.concurrency,
            self.config.nodes,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "  {:<34} {:>12}", "metric", "value")?;
        writeln!(f, "  {:<34} {:>12.0}", "presence heartbeats/s", hb)?;
        writeln!(
            f,
            "  {:<34} {:>12}",
            "heartbeats ok / errors",
            format!("{}/{}", self.heartbeats, self.errors)
        )?;
        writeln!(
            f,
            "  {:<34} {:>12.2}",
            "heartbeat p50 ms",
            ms(self.latency.0)
        )?;
        writeln!(
            f,
            "  {:<34} {:>12.2}",
            "heartbeat p99 ms",
            ms(self.latency.1)
        )?;
        writeln!(
            f,
            "  {:<34} {:>12.2}",
            "heartbeat p999 ms",
            ms(self.latency.2)
        )?;
        writeln!(
            f,
            "  {:<34} {:>12.0}",
            "redis-benchmark SET/s (baseline)", self.redis_set_per_sec
        )?;
        writeln!(
            f,
            "  {:<34} {:>12.3}",
            "ratio heartbeats/s : SET/s",
            hb / self.redis_set_per_sec.max(1e-9)
        )?;
        writeln!(
            f,
            "  {:<34} {:>12.0}",
            format!(
                "gone from GET /presence ms (ttl {} ms)",
                self.config.ttl.as_millis()
            ),
            ms(self.gone_from_list_after)
        )?;
        write!(
            f,
            "  {:<34} {:>12.0}",
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
    let redis_set_per_sec = tokio::task::spawn_blocking({
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

    let store = server.store();
    for i in 0..config.nodes.max(1) {
        store.login(node(i)).await?;
    }

    // Failure detection: a victim heartbeats once, then falls silent.
    let observer = PresenceClient::new(&base, PresenceClientConfig::default())?;
    let mut events = observer.subscribe().await?;
    let victim = node(usize::MAX >> 8);
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
    let ids: std::sync::Arc<Vec<NodeId>> =
        std::sync::Arc::new((0..config.nodes.max(1)).map(|i| node(i).node_id).collect());
    let start = Instant::now();
    let deadline = start + config.duration;
    let url = format!("{base}/presence/heartbeat");
    let mut workers = Vec::new();
    for w in 0..config.concurrency.max(1) {
        let (http, url, ids) = (http.clone(), url.clone(), ids.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut err, mut lat) = (0u64, 0u64, Vec::with_capacity(1 << 16));
            let mut i = w;
            while Instant::now() < deadline {
                let id = ids[i % ids.len()];
                i += 7;
                let t = Instant::now();
                let body = format!("{{\"node_id\":\"{}\"}}", id.to_hex());
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
    let (mut heartbeats, mut errors, mut lat) = (0, 0, Vec::new());
    for w in workers {
        if let Ok((ok, err, l)) = w.await {
            heartbeats += ok;
            errors += err;
            lat.extend(l);
        }
    }
    let elapsed = start.elapsed();
    lat.sort_unstable();

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
        latency: (
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 0.999),
        ),
        config,
        heartbeats,
        errors,
        elapsed,
        redis_set_per_sec,
        gone_from_list_after: gone.ok_or_else(timeout)?,
        leave_event_after: leave.ok_or_else(timeout)?,
    })
}

//! A throwaway `redis-server` on a free loopback port, for tests and the load run. It runs
//! without persistence (`--save '' --appendonly no`) and is killed when dropped.
//! [`RedisCluster`] starts several of them in cluster mode and joins them with
//! `redis-cli --cluster create` (both come with Debian's `redis-server` package).

use crate::{Error, Result};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` child process.
#[derive(Debug)]
pub struct RedisProcess {
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
    tls: bool,
}

impl RedisProcess {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits until it answers PING.
    pub fn start() -> Result<Self> {
        Self::start_with(free_port()?, Vec::new())
    }

    /// Starts `redis-server` on `port` of 127.0.0.1 with `extra` arguments after the
    /// defaults (kept for [`restart`](Self::restart)).
    pub fn start_with(port: u16, extra: Vec<String>) -> Result<Self> {
        let mut p = RedisProcess {
            child: None,
            port,
            extra,
            tls: false,
        };
        p.spawn()?;
        Ok(p)
    }

    /// Starts `redis-server` answering only TLS on a free port (`--port 0 --tls-port …`),
    /// with the certificate and key files given, clients not asked for certificates; waits
    /// until the port accepts connections. [`uri`](Self::uri) is then `rediss://…`.
    pub fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> Result<Self> {
        let port = free_port()?;
        let path = |p: &std::path::Path| p.display().to_string();
        let mut p = RedisProcess {
            child: None,
            port,
            extra: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                path(cert),
                "--tls-key-file".into(),
                path(key),
                "--tls-ca-cert-file".into(),
                path(ca),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            tls: true,
        };
        p.spawn()?;
        Ok(p)
    }

    /// The working directory of a process not given a `--dir`: its own under the system
    /// temp dir (removed on drop), so a replica's full sync or a `SAVE` never writes
    /// `dump.rdb` into the current directory.
    fn own_dir(&self) -> Option<std::path::PathBuf> {
        (!self.extra.iter().any(|a| a == "--dir")).then(|| {
            std::env::temp_dir().join(format!(
                "citychain-redis-{}-{}",
                std::process::id(),
                self.port
            ))
        })
    }

    fn spawn(&mut self) -> Result<()> {
        let mut dir_args = Vec::new();
        if let Some(d) = self.own_dir() {
            std::fs::create_dir_all(&d).map_err(|source| Error::Io {
                what: format!("creating {}", d.display()),
                source,
            })?;
            dir_args = vec!["--dir".to_string(), d.display().to_string()];
        }
        let child = Command::new("redis-server")
            .args(&dir_args)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Io {
                what: "spawning redis-server (apt-get install -y redis-server)".into(),
                source,
            })?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(5))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let up = if self.tls {
                TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
            } else {
                ping(addr)
            };
            if up {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::Io {
                    what: format!("redis-server on port {} exited with {status}", self.port),
                    source: std::io::Error::other("redis-server exited"),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Io {
                    what: format!("redis-server on port {} did not answer PING", self.port),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` when started with TLS).
    pub fn uri(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Starts a fresh, empty server on the same port (after [`kill`](Self::kill)); a
    /// cluster node keeps its cluster config file, so it rejoins (as a replica after a
    /// failover).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
        if let Some(d) = self.own_dir() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A throwaway Redis Cluster on loopback: `primaries` primaries with `replicas` replicas
/// each, every node a [`RedisProcess`] in cluster mode (node timeout 1 s, so a killed
/// primary is failed over in a few seconds). Its files live in a fresh directory under the
/// system temp dir, removed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes, in the order given to `redis-cli --cluster create` (primaries first).
    pub nodes: Vec<RedisProcess>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node reports
    /// `cluster_state:ok`.
    pub fn start(primaries: usize, replicas: usize) -> Result<Self> {
        let io = |what: String| move |source| Error::Io { what, source };
        let dir = std::env::temp_dir().join(format!(
            "citychain-redis-cluster-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..primaries * (1 + replicas) {
            let port = free_cluster_port()?;
            let conf = cluster.dir.join(format!("nodes-{port}.conf"));
            cluster.nodes.push(RedisProcess::start_with(
                port,
                vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    conf.display().to_string(),
                    "--cluster-node-timeout".into(),
                    "1000".into(),
                    "--dir".into(),
                    cluster.dir.display().to_string(),
                ],
            )?);
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .map_err(io("running redis-cli --cluster create".into()))?;
        if !out.status.success() {
            return Err(Error::Io {
                what: format!(
                    "redis-cli --cluster create: {}",
                    String::from_utf8_lossy(&out.stdout)
                ),
                source: std::io::Error::other("cluster create failed"),
            });
        }
        cluster.wait_ok(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…` for [`RedisStoreConfig::uri`](crate::RedisStoreConfig::uri).
    pub fn uri(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Index in [`nodes`](Self::nodes) of the primary that serves `key` now (asked of a
    /// running node with `CLUSTER KEYSLOT` and `CLUSTER NODES`).
    pub fn primary_of(&mut self, key: &str) -> Result<usize> {
        let port = self
            .nodes
            .iter_mut()
            .find_map(|n| n.is_running().then(|| n.port()))
            .ok_or_else(|| Error::Io {
                what: "no running cluster node".into(),
                source: std::io::Error::other("all nodes down"),
            })?;
        let slot: u16 = cli(port, &["CLUSTER", "KEYSLOT", key])?
            .trim()
            .parse()
            .map_err(|_| Error::Io {
                what: format!("CLUSTER KEYSLOT {key}"),
                source: std::io::Error::other("not a number"),
            })?;
        for line in cli(port, &["CLUSTER", "NODES"])?.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let serves = f[8..].iter().any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot)
                        && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => r.parse::<u16>() == Ok(slot),
            });
            let node_port = f[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            if serves && let Some(p) = node_port {
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port() == p)
                    .ok_or_else(|| Error::Io {
                        what: format!("primary on port {p} is not one of ours"),
                        source: std::io::Error::other("unknown node"),
                    });
            }
        }
        Err(Error::Io {
            what: format!("no live primary serves slot {slot}"),
            source: std::io::Error::other("slot not served"),
        })
    }

    /// Waits until every running node reports `cluster_state:ok` and every replica's link
    /// to its primary is up (synced), so a `WAIT` for one replica can succeed.
    pub fn wait_ok(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for n in self.nodes.iter_mut().filter(|n| n.child.is_some()) {
                let ok = cli(n.port(), &["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"));
                let synced = cli(n.port(), &["INFO", "replication"]).is_ok_and(|info| {
                    info.contains("role:master") || info.contains("master_link_status:up")
                });
                all &= ok && synced;
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Io {
                    what: "redis cluster did not reach cluster_state:ok".into(),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throwaway Sentinel deployment on loopback: a primary, one replica and three
/// sentinels (quorum 2, down after 1 s) watching it under the name `presence`. Files live
/// in a fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct RedisSentinel {
    /// The two data nodes; `nodes[0]` starts as the primary.
    pub nodes: Vec<RedisProcess>,
    sentinels: Vec<(u16, Child)>,
    dir: std::path::PathBuf,
}

impl RedisSentinel {
    /// The monitored primary's name.
    pub const NAME: &'static str = "presence";

    /// Starts the primary, its replica (synced) and three sentinels that see each other.
    pub fn start() -> Result<Self> {
        let io = |what: String| move |source| Error::Io { what, source };
        let dir = std::env::temp_dir().join(format!(
            "citychain-redis-sentinel-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let primary = RedisProcess::start()?;
        let replica = RedisProcess::start_with(
            free_port()?,
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.port().to_string(),
            ],
        )?;
        let mut d = RedisSentinel {
            nodes: vec![primary, replica],
            sentinels: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            let port = free_port()?;
            let conf = d.dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {name} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 3000\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir = d.dir.display(),
                    name = Self::NAME,
                    primary = d.nodes[0].port()
                ),
            )
            .map_err(io(format!("writing {}", conf.display())))?;
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(io("spawning redis-server --sentinel".into()))?;
            d.sentinels.push((port, child));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let replica_up = cli(d.nodes[1].port(), &["INFO", "replication"])
                .is_ok_and(|i| i.contains("master_link_status:up"));
            let sentinels_ready = d.sentinels.iter().all(|(p, _)| {
                cli(*p, &["SENTINEL", "MASTER", Self::NAME]).is_ok_and(|out| {
                    let l: Vec<&str> = out.lines().collect();
                    let field = |k: &str| {
                        l.iter()
                            .position(|x| *x == k)
                            .and_then(|i| l.get(i + 1).copied())
                    };
                    field("num-other-sentinels") == Some("2") && field("num-slaves") == Some("1")
                })
            });
            if replica_up && sentinels_ready {
                return Ok(d);
            }
            if Instant::now() >= deadline {
                return Err(Error::Io {
                    what: "sentinels did not see each other and the replica within 30 s".into(),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+sentinel://127.0.0.1:s1,…/presence` for
    /// [`RedisStoreConfig::uri`](crate::RedisStoreConfig::uri).
    pub fn uri(&self) -> String {
        let s: Vec<String> = self
            .sentinels
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{}", s.join(","), Self::NAME)
    }

    /// Index in [`nodes`](Self::nodes) of the server the sentinels name as primary now.
    pub fn primary(&self) -> Result<usize> {
        for (p, _) in &self.sentinels {
            let Ok(out) = cli(*p, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::NAME]) else {
                continue;
            };
            if let Some(port) = out
                .lines()
                .nth(1)
                .and_then(|l| l.trim().parse::<u16>().ok())
                && let Some(i) = self.nodes.iter().position(|n| n.port() == port)
            {
                return Ok(i);
            }
        }
        Err(Error::Io {
            what: "no sentinel names a primary".into(),
            source: std::io::Error::other("no primary"),
        })
    }

    /// Whether the server at `nodes[i]` runs as a replica with its link to the primary up.
    pub fn is_synced_replica(&self, i: usize) -> bool {
        cli(self.nodes[i].port(), &["INFO", "replication"])
            .is_ok_and(|s| s.contains("role:slave") && s.contains("master_link_status:up"))
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for (_, c) in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &mut self.nodes {
            n.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p port args…`, its stdout.
fn cli(port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map_err(|source| Error::Io {
            what: "running redis-cli".into(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn free_cluster_port() -> Result<u16> {
    for _ in 0..100 {
        let p = free_port()?;
        if p <= 55_535 && TcpListener::bind((Ipv4Addr::LOCALHOST, p + 10_000)).is_ok() {
            return Ok(p);
        }
    }
    Err(Error::Io {
        what: "finding a free port pair for a cluster node".into(),
        source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    })
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| Error::Io {
        what: "finding a free port".into(),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| Error::Io {
            what: "finding a free port".into(),
            source,
        })
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

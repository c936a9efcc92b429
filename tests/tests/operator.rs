//! The deploy kit's per-role configs (`deploy/config/*.toml`) start every role, as separate
//! processes on loopback: presence on a real `redis-server`, the global and continent logs,
//! a light node and a representative of a one-member committee, each from its shipped
//! file with only addresses and directories overridden (`--set`), as an operator moving
//! the multi-host guide onto one machine would. Each serves `/metrics` with its role in
//! `citychain_build_info`; every process stops cleanly on SIGTERM. The shipped files also
//! resolve as they are (`config print`), and a node that would advertise loopback to a
//! remote presence refuses to start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy(file: &str) -> PathBuf {
    root().join("deploy/config").join(file)
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Kills every child still running when the test ends (also on failure).
struct Procs(Vec<(String, Child)>);
impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Polls `addr` until its `/metrics` contains `want` (generous deadline; the processes
/// check that they are alive meanwhile).
fn wait_metrics(procs: &mut Procs, addr: SocketAddr, want: &str, logs: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(body) = http_get(addr, "/metrics")
            && body.contains(want)
        {
            return;
        }
        for (name, c) in &mut procs.0 {
            if let Some(st) = c.try_wait().unwrap() {
                let log =
                    std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
                panic!("{name} exited with {st} before serving {want}:\n{log}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr}/metrics never showed {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn spawn(procs: &mut Procs, logs: &Path, name: &str, mut cmd: Command) {
    let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
    let child = cmd
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .env_remove("PRESENCE_BACKEND")
        .env_remove("PRESENCE_HTTP_ENDPOINT")
        .env_remove("PRESENCE_REDIS_URI")
        .spawn()
        .unwrap();
    procs.0.push((name.to_string(), child));
}

#[test]
fn every_role_starts_from_its_deploy_config() {
    let city_node = e2e::workspace_bin("city-node");
    let presence_bin = e2e::workspace_bin("presence-server");
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // Keys, a one-member committee, the continent and the global, free ports.
    let mut cfg = devnet::localnet::LocalnetConfig::new(dir.path().join("net"));
    cfg.reps = 1;
    cfg.lights = 1;
    let manifest = devnet::localnet::Localnet::generate(&cfg).unwrap();
    let genesis = dir.path().join("net/genesis.toml");
    let mut procs = Procs(Vec::new());

    let redis = free_addr();
    let mut c = Command::new("redis-server");
    c.args(["--port", &redis.port().to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"]);
    spawn(&mut procs, &logs, "redis", c);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(redis).is_err() {
        assert!(Instant::now() < deadline, "redis-server never listened");
        std::thread::sleep(Duration::from_millis(50));
    }

    let presence = manifest.get("presence").unwrap().addr;
    let mut c = Command::new(&presence_bin);
    c.arg("serve")
        .arg("--config")
        .arg(deploy("presence.toml"))
        .args(["--redis-uri", &format!("redis://{redis}")])
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &presence.port().to_string(),
        ]);
    spawn(&mut procs, &logs, "presence", c);

    let mut metrics = Vec::new();
    for n in &manifest.nodes {
        if n.role == "presence" {
            continue;
        }
        let file = match n.role.as_str() {
            "city" => "city.toml",
            other => &format!("{other}.toml"),
        };
        let m = n.metrics.unwrap();
        let mut c = Command::new(&city_node);
        c.arg("run")
            .arg("--config")
            .arg(deploy(file))
            .args(["--set", &format!("node.listen={}", n.addr)])
            .args(["--set", &format!("node.advertise={}", n.addr)])
            .arg("--set")
            .arg(format!(
                "node.data_dir={}",
                dir.path().join("net").join(&n.name).display()
            ))
            .arg("--set")
            .arg(format!("node.genesis={}", genesis.display()))
            .args(["--set", &format!("metrics.listen={m}")])
            .args([
                "--set",
                &format!("presence.http_endpoint=http://{presence}"),
            ])
            .args([
                "--set",
                &format!("city.city_id={}", devnet::localnet::LOCALNET_CITY),
            ]);
        if let Some(g) = n.gateway {
            c.args(["--set", &format!("gateway.listen={g}")]);
        }
        spawn(&mut procs, &logs, &n.name, c);
        metrics.push((n.role.clone(), m));
    }
    // presence serves its metrics on its HTTP port once Redis answers.
    wait_metrics(&mut procs, presence, "presence_", &logs);
    for (role, m) in &metrics {
        wait_metrics(&mut procs, *m, &format!("role=\"{role}\""), &logs);
    }
    // `nodes` lists the light node and the representative from presence; `status` asks
    // the representative itself.
    let rep = manifest.get("rep-0").unwrap().addr;
    let light = manifest.get("light-0").unwrap().addr;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(&city_node)
            .args([
                "nodes",
                "--presence",
                &format!("http://{presence}"),
                "--format",
                "json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains(&rep.to_string()) && text.contains(&light.to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "nodes never listed both: {text}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = Command::new(&city_node)
        .args([
            "nodes",
            "--presence",
            &format!("http://{presence}"),
            "--role",
            "light",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&light.to_string()) && !table.contains(&rep.to_string()),
        "{table}"
    );
    assert!(table.contains("1 node(s) online"), "{table}");
    let out = Command::new(&city_node)
        .args(["status", "--node", &rep.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("role      city"), "{text}");
    // That Status call shows up on the city's /metrics with its method and code (the gRPC
    // metrics layer every node server runs under), and health is SERVING there.
    let city_metrics = metrics
        .iter()
        .find(|(role, _)| role == "city")
        .map(|(_, a)| *a)
        .expect("the city's metrics address");
    let body = http_get(city_metrics, "/metrics").unwrap_or_default();
    assert!(
        body.lines()
            .any(|l| l.starts_with("citychain_grpc_server_requests_total{")
                && l.contains("service=\"citychain.v1.CityNodeService\"")
                && l.contains("method=\"Status\"")
                && l.contains("code=\"OK\"")),
        "the Status call is not counted:\n{body}"
    );
    assert!(
        body.contains("citychain_grpc_server_handling_seconds_bucket{"),
        "{body}"
    );

    // The figure table: metric families each role exports once `nodes` and
    // `status` have run, and how many carry HELP text.
    println!("{:<10} {:>9} {:>10}", "role", "families", "with HELP");
    for (role, addr) in std::iter::once(("presence".to_string(), presence)).chain(metrics.clone()) {
        let body = http_get(addr, "/metrics").unwrap_or_default();
        let families = body.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let help = body.lines().filter(|l| l.starts_with("# HELP ")).count();
        println!("{role:<10} {families:>9} {help:>10}");
        assert!(families > 0, "{role} exports nothing");
        assert_eq!(
            families, help,
            "{role}: every metric family has HELP text:\n{body}"
        );
        if role != "presence" {
            assert!(!body.contains("quantile="), "{role}: no summaries");
        }
    }

    // Every role up; stop them all (redis last) and require clean exits.
    let mut all = std::mem::take(&mut procs.0);
    let redis_proc = all.remove(0);
    procs.0.push(redis_proc);
    for (name, mut c) in all.into_iter().rev() {
        let st = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{name} did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
        assert!(status.success(), "{name} exited with {status}:\n{log}");
    }
}

#[test]
fn shipped_configs_resolve_and_loopback_advertising_is_refused() {
    let city_node = e2e::workspace_bin("city-node");
    for file in ["city.toml", "light.toml", "continent.toml", "global.toml"] {
        let out = Command::new(&city_node)
            .args(["config", "print", "--config"])
            .arg(deploy(file))
            .env_remove("PRESENCE_BACKEND")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let role = file.trim_end_matches(".toml");
        assert!(
            text.contains(&format!("role = \"{role}\"")),
            "{file}: {text}"
        );
    }
    // The light file with a loopback advertise toward its remote presence: refused, loudly.
    let out = Command::new(&city_node)
        .args(["run", "--config"])
        .arg(deploy("light.toml"))
        .args(["--advertise", "127.0.0.1:7710"])
        .env_remove("PRESENCE_BACKEND")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loopback") && err.contains("10.0.0.10") && err.contains("--advertise"),
        "{err}"
    );
}

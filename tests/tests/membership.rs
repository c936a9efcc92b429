//! Membership that survives the presence service, as separate processes of the real
//! binaries (`city-node localnet`'s layout: a presence server, 6 light nodes, 4
//! representatives, a continent and a global log), every city and light node gossiping
//! (SWIM over UDP, on by default in `city-node`):
//!
//! 1. presence is killed for 60 s while txs are submitted: no light node leaves any view
//!    (representatives' and light nodes'), every tx still reaches Held, no re-replication
//!    starts, and the views say they rest on gossip alone;
//! 2. a light node stopped for 2 s at a time (SIGSTOP/SIGCONT) is suspected but never
//!    confirmed down;
//! 3. a light node SIGKILLed is confirmed down by every other node's gossip; the time from
//!    the kill to each node's confirmation is printed (the figure of the note).
//!
//! Views and gossip are read from each process's Prometheus `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use devnet::localnet::{Localnet, LocalnetConfig};
use pqc::Keypair;
use rpc::{CityClient, TxState};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::tokyo_tx as signed;

/// `/metrics` of a process (plain HTTP/1.0 over loopback).
fn scrape(addr: SocketAddr) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of `name` on the line that carries every label in `labels` (0 when absent:
/// counters appear on first increment).
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The pid of the localnet process whose data directory is `dir` (read from /proc).
fn pid_of(dir: &Path) -> u32 {
    let want = dir.to_string_lossy().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args
            .windows(2)
            .any(|w| w[0] == "--data-dir" && w[1] == want)
        {
            return pid;
        }
    }
    panic!("no process runs on {want}");
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

struct Nodes {
    /// (name, metrics address, is a representative)
    all: Vec<(String, SocketAddr, bool)>,
}

impl Nodes {
    fn scrape_all(&self) -> Vec<(String, String, bool)> {
        self.all
            .iter()
            .map(|(n, a, rep)| (n.clone(), scrape(*a), *rep))
            .collect()
    }
    fn without(&self, name: &str) -> Nodes {
        Nodes {
            all: self.all.iter().filter(|n| n.0 != name).cloned().collect(),
        }
    }
}

/// Light nodes in each process's view: the representatives' watch view and every node's
/// own login view.
fn lights_in_views(text: &str, rep: bool) -> Vec<f64> {
    let mut v = vec![metric(
        text,
        "nodelist_view_role_nodes",
        &["view=\"login\"", "role=\"light\""],
    )];
    if rep {
        v.push(metric(
            text,
            "nodelist_view_role_nodes",
            &["view=\"watch\"", "role=\"light\""],
        ));
    }
    v
}

async fn eventually(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_survives_a_presence_outage_detects_a_kill_and_tolerates_a_slow_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalnetConfig::new(dir.path());
    cfg.city_node_bin = e2e::workspace_bin("city-node");
    cfg.presence_bin = e2e::workspace_bin("presence-server");
    let mut net = Localnet::start(cfg).await.expect("the localnet starts");
    let nodes = Nodes {
        all: net
            .manifest()
            .nodes
            .iter()
            .filter(|n| n.role == "city" || n.role == "light")
            .map(|n| (n.name.clone(), n.metrics.unwrap(), n.role == "city"))
            .collect(),
    };
    assert_eq!(nodes.all.len(), 10);
    let rep0 = net.manifest().get("rep-0").unwrap().addr.to_string();

    // Every node's gossip sees the nine others and every view holds the six lights.
    eventually("gossip among all ten nodes", 60, || {
        nodes.scrape_all().iter().all(|(_, t, rep)| {
            metric(t, "gossip_members_alive", &[]) == 9.0
                && lights_in_views(t, *rep).iter().all(|n| *n == 6.0)
        })
    })
    .await;

    // Load: txs submitted one after another to rep-0 until told to stop.
    let japan = pop_geo::shipped::japan().unwrap();
    let spots = japan.sample_points("JP-13", 64, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let (held, other) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, held, other, rep0) = (stop.clone(), held.clone(), other.clone(), rep0.clone());
        tokio::spawn(async move {
            let client = CityClient::connect(&rep0).await.unwrap();
            let user = Keypair::generate();
            let mut nonce = 0u64;
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let tx = signed(&user, nonce, spots[nonce as usize % spots.len()]);
                nonce += 1;
                match client.submit(&tx).await {
                    Ok(s) if s.state == TxState::Held => {
                        held.fetch_add(1, Ordering::Relaxed);
                    }
                    r => {
                        other.fetch_add(1, Ordering::Relaxed);
                        failures.push(format!("{r:?}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            failures
        })
    };
    eventually("txs reach Held", 60, || held.load(Ordering::Relaxed) >= 20).await;
    assert_eq!(
        other.load(Ordering::Relaxed),
        0,
        "a tx before the outage was not Held"
    );

    // 1. Presence down for 60 s.
    let held_before = held.load(Ordering::Relaxed);
    net.kill("presence").await;
    let outage = Instant::now();
    let mut min_lights = f64::MAX;
    let mut gossip_only_seen = 0usize;
    while outage.elapsed() < Duration::from_secs(60) {
        for (name, t, rep) in nodes.scrape_all() {
            if t.is_empty() {
                continue; // a scrape that timed out on the loaded machine: next round
            }
            for n in lights_in_views(&t, rep) {
                assert_eq!(
                    n, 6.0,
                    "{name} lost a light node from its view during the outage"
                );
                min_lights = min_lights.min(n);
            }
            if rep && metric(&t, "nodelist_gossip_only", &["view=\"watch\""]) == 1.0 {
                gossip_only_seen += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let held_during = held.load(Ordering::Relaxed) - held_before;
    assert!(held_during > 0, "no tx reached Held during the outage");
    assert_eq!(
        other.load(Ordering::Relaxed),
        0,
        "a tx during the outage was not Held"
    );
    assert!(
        gossip_only_seen > 0,
        "no representative said its view rests on gossip alone"
    );
    for (name, t, rep) in nodes.scrape_all() {
        if rep {
            assert_eq!(
                metric(&t, "city_rereplications_started_total", &[]),
                0.0,
                "{name} started a re-replication during the outage"
            );
        }
    }
    println!(
        "presence outage 60 s: {held_during} txs Held during it, 0 not Held, lights in every view min {min_lights}, 0 re-replications"
    );

    // Presence returns (empty: it kept its state in memory); nodes log in again.
    net.restart("presence").await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    let failures = load.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    for (name, t, rep) in nodes.scrape_all() {
        for n in lights_in_views(&t, rep) {
            assert_eq!(n, 6.0, "{name}: presence's return removed a light");
        }
        if rep {
            assert_eq!(
                metric(&t, "city_rereplications_started_total", &[]),
                0.0,
                "{name}"
            );
        }
    }

    // 2. light-4 stops for 2 s at a time, four times.
    let downs0: Vec<f64> = nodes
        .scrape_all()
        .iter()
        .map(|(_, t, _)| metric(t, "gossip_downs_total", &[]))
        .collect();
    let suspicions0: f64 = nodes
        .scrape_all()
        .iter()
        .map(|(_, t, _)| metric(t, "gossip_suspicions_total", &[]))
        .sum();
    let slow = pid_of(&net.dir().join("light-4"));
    for _ in 0..4 {
        signal(slow, "STOP");
        tokio::time::sleep(Duration::from_secs(2)).await;
        signal(slow, "CONT");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = nodes.scrape_all();
    let suspicions: f64 = after
        .iter()
        .map(|(_, t, _)| metric(t, "gossip_suspicions_total", &[]))
        .sum::<f64>()
        - suspicions0;
    assert!(suspicions > 0.0, "the paused node was never suspected");
    for (i, (name, t, _)) in after.iter().enumerate() {
        assert_eq!(
            metric(t, "gossip_downs_total", &[]),
            downs0[i],
            "{name} confirmed a node down although only light-4 paused"
        );
        assert_eq!(
            metric(t, "gossip_members_alive", &[]) + metric(t, "gossip_members_suspect", &[]),
            9.0,
            "{name}"
        );
    }
    println!("slow node (4 × 2 s SIGSTOP): {suspicions} suspicions raised, 0 confirmed down");

    // 3. light-5 SIGKILLed: time to "confirmed down" on each of the nine others.
    let others = nodes.without("light-5");
    let base: Vec<f64> = others
        .scrape_all()
        .iter()
        .map(|(_, t, _)| metric(t, "gossip_downs_total", &[]))
        .collect();
    net.kill("light-5").await;
    let killed = Instant::now();
    let mut confirmed: Vec<Option<Duration>> = vec![None; others.all.len()];
    while confirmed.iter().any(Option::is_none) {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "not every node confirmed the kill: {confirmed:?}"
        );
        for (i, (_, addr, _)) in others.all.iter().enumerate() {
            if confirmed[i].is_none() && metric(&scrape(*addr), "gossip_downs_total", &[]) > base[i]
            {
                confirmed[i] = Some(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ms: Vec<u128> = confirmed.iter().map(|d| d.unwrap().as_millis()).collect();
    ms.sort_unstable();
    println!(
        "SIGKILL → confirmed down by gossip on all 9 other nodes: min {} ms, median {} ms, max {} ms (2 × heartbeat = 6000 ms)",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
    // The confirmed departure reaches the representatives' re-replication.
    eventually("a representative re-replicates light-5", 60, || {
        others
            .scrape_all()
            .iter()
            .any(|(_, t, rep)| *rep && metric(t, "city_rereplications_started_total", &[]) >= 1.0)
    })
    .await;
    let unclean = net.stop().await;
    assert!(unclean.is_empty(), "did not stop cleanly: {unclean:?}");
}

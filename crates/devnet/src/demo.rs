//! The in-process devnet behind `city-node demo`: presence, 6 light nodes and a city node,
//! each its own gRPC server on loopback; 100 accounts; pre-signed load at real Tokyo
//! coordinates (and a few claiming Tokyo from Osaka) submitted over real gRPC; every tx
//! answered Held with receipts from distinct light nodes; read-back; deliberate bad input;
//! then 2 light nodes killed (one crashes, one leaves), re-replication back to n holders,
//! every tx restored from shards and verified; a restart; and a table of what was measured.

use crate::devnet::{CITY, Devnet, DevnetConfig};
use crate::{Error, Result};
use dag_core::{CityId, Position, PositionMethod, SignedTx, Signer, Tx, TxKind};
use futures::StreamExt;
use pqc::{Keypair, MlDsa87, sign_tx};
use rayon::prelude::*;
use rpc::{CityClient, RejectCode, TxState};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the demo does. `Default` matches `city-node demo` without flags.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Signed txs to submit.
    pub txs: usize,
    /// Accounts that sign them.
    pub accounts: usize,
    /// Parallel gRPC submission streams.
    pub streams: usize,
    /// Txs read back with GetTx after the load.
    pub sample: usize,
    /// Signatures verified for the raw ML-DSA-87 baseline.
    pub baseline_verifies: usize,
    /// Light nodes.
    pub lights: usize,
    /// Light nodes killed after the load (the first crashes, the others leave).
    pub kill: usize,
    /// One in this many txs claims Tokyo from a position in Osaka (0 = none).
    pub outside_every: usize,
    /// Txs restored one by one through the repair path to time it.
    pub restore_sample: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            txs: 20_000,
            accounts: 100,
            streams: 4,
            sample: 500,
            baseline_verifies: 4_000,
            lights: 6,
            kill: 2,
            outside_every: 100,
            restore_sample: 200,
        }
    }
}

/// One deliberately bad submission and how the node answered.
#[derive(Debug, Clone)]
pub struct BadCase {
    /// What was sent.
    pub name: &'static str,
    /// The code we expect.
    pub expected: RejectCode,
    /// What came back: the rejection, or a description if it was wrongly admitted.
    pub got: std::result::Result<rpc::Rejection, String>,
}

impl BadCase {
    /// True if the node rejected it with the expected code.
    pub fn passed(&self) -> bool {
        matches!(&self.got, Ok(r) if r.code == self.expected)
    }
}

/// What the demo measured.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// Txs offered (inside the city and outside).
    pub offered: usize,
    /// Offered txs positioned outside the claimed city.
    pub offered_outside: usize,
    /// Answered Held (receipts from distinct light nodes).
    pub held: usize,
    /// Held, but some light node holds two shards of the stripe (a holder did not answer
    /// in time and no spare node existed).
    pub held_colocated: usize,
    /// Answered Admitted but not Held (holding failed).
    pub admitted_only: usize,
    /// Rejected by proof of place.
    pub rejected_pop: usize,
    /// Rejected for another reason during the load.
    pub rejected_other: usize,
    /// Wall time of the load phase.
    pub load_time: Duration,
    /// Submit → Held latencies, sorted.
    pub latencies: Vec<Duration>,
    /// Time spent pre-signing (not part of the load).
    pub presign_time: Duration,
    /// Raw ML-DSA-87 verifications per second on all cores, measured in this run.
    pub raw_verify_per_sec: f64,
    /// Threads used for the baseline (and by the node's verification pool).
    pub threads: usize,
    /// Receipts checked on read-back (all verified, from distinct holders).
    pub receipts_checked: usize,
    /// Sampled txs read back Held and intact / asked.
    pub read_back: (usize, usize),
    /// Light nodes started.
    pub lights: usize,
    /// Light nodes killed.
    pub killed: usize,
    /// From the kill until the city's view dropped the killed nodes.
    pub detect_time: Duration,
    /// From the kill until every stripe was back at n live distinct holders.
    pub rereplication_time: Option<Duration>,
    /// Stripes at n live distinct holders / all stripes.
    pub stripes_at_n: (usize, usize),
    /// Stripes where a live node holds two shards (fewer than n light nodes remain).
    pub colocated_stripes: usize,
    /// Shards re-created during re-replication.
    pub shards_rereplicated: usize,
    /// Txs restored from shards after the kill, signature verified / expected.
    pub restored: (usize, usize),
    /// Per-tx restore latencies (repair path), sorted.
    pub restore_latencies: Vec<Duration>,
    /// Ordering of the held stripes by 4 representatives (one killed half-way) with
    /// federation to a continent log.
    pub consensus: Option<node::consensus_net::ConsensusFigures>,
    /// Sampled txs read back after a city restart / asked.
    pub after_restart: (usize, usize),
    /// Bad-input cases.
    pub bad_cases: Vec<BadCase>,
}

fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

impl DemoReport {
    /// Held txs per second during the load.
    pub fn throughput(&self) -> f64 {
        self.held as f64 / self.load_time.as_secs_f64().max(1e-9)
    }
    /// Submit → Held latency at quantile `q`.
    pub fn latency(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }
    /// Restore latency at quantile `q`.
    pub fn restore_latency(&self, q: f64) -> Duration {
        quantile(&self.restore_latencies, q)
    }
    /// True if the run showed the system working: every tx inside the city Held, every one
    /// outside rejected by proof of place, everything read back and restored, every stripe
    /// back at n holders, and every bad input rejected with the right code.
    pub fn ok(&self) -> bool {
        self.held == self.offered - self.offered_outside
            && self.rejected_pop == self.offered_outside
            && self.read_back.0 == self.read_back.1
            && self.restored.0 == self.restored.1
            && self.stripes_at_n.0 == self.stripes_at_n.1
            && self.after_restart.0 == self.after_restart.1
            && self.consensus.as_ref().is_some_and(|c| {
                c.sequences_identical
                    && c.items_committed == c.items
                    && c.inclusion_proofs_verified > 0
                    && c.log_survived_restart
            })
            && !self.bad_cases.is_empty()
            && self.bad_cases.iter().all(BadCase::passed)
    }

    /// The printed table.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let frac = |(a, b): (usize, usize)| format!("{a}/{b}");
        let line = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<44} {v:>20}");
        };
        let _ = writeln!(
            s,
            "\nCity Chain devnet — presence + 1 city + {} light nodes, real gRPC on loopback, ML-DSA-87",
            self.lights
        );
        let _ = writeln!(s, "{:-<70}", "");
        let _ = writeln!(s, "load");
        line(&mut s, "offered", self.offered.to_string());
        line(
            &mut s,
            "  of which claim Tokyo from Osaka",
            self.offered_outside.to_string(),
        );
        line(
            &mut s,
            "held (signed receipts from light nodes)",
            self.held.to_string(),
        );
        line(
            &mut s,
            "  of which colocated (a holder was too slow)",
            self.held_colocated.to_string(),
        );
        line(
            &mut s,
            "admitted but not held",
            self.admitted_only.to_string(),
        );
        line(
            &mut s,
            "rejected by proof of place",
            self.rejected_pop.to_string(),
        );
        line(
            &mut s,
            "rejected otherwise",
            self.rejected_other.to_string(),
        );
        line(&mut s, "load time", ms(self.load_time));
        line(
            &mut s,
            "throughput (submit → held)",
            format!("{:.0} tx/s", self.throughput()),
        );
        line(&mut s, "submit → held p50", ms(self.latency(0.50)));
        line(&mut s, "submit → held p99", ms(self.latency(0.99)));
        line(
            &mut s,
            "baseline: raw ML-DSA-87 verify, same run",
            format!("{:.0} /s ({} thr)", self.raw_verify_per_sec, self.threads),
        );
        line(
            &mut s,
            "ratio throughput / raw verify",
            format!(
                "{:.3}",
                self.throughput() / self.raw_verify_per_sec.max(1e-9)
            ),
        );
        line(&mut s, "pre-signing (untimed)", ms(self.presign_time));
        line(&mut s, "read back Held with GetTx", frac(self.read_back));
        line(
            &mut s,
            "receipts verified on read-back",
            self.receipts_checked.to_string(),
        );
        let _ = writeln!(s, "durability");
        line(
            &mut s,
            "light nodes killed (1 crash, rest leave)",
            self.killed.to_string(),
        );
        line(
            &mut s,
            "departure seen by the city after",
            ms(self.detect_time),
        );
        line(
            &mut s,
            "every stripe back at n holders after",
            self.rereplication_time
                .map_or("NOT REACHED".to_string(), ms),
        );
        line(
            &mut s,
            "shards re-replicated",
            self.shards_rereplicated.to_string(),
        );
        line(
            &mut s,
            "stripes with all n shards on live holders",
            frac(self.stripes_at_n),
        );
        line(
            &mut s,
            "  of which colocated (fewer than n nodes live)",
            self.colocated_stripes.to_string(),
        );
        line(
            &mut s,
            "txs restored from shards, verified",
            frac(self.restored),
        );
        line(
            &mut s,
            "restore (repair path) p50",
            ms(self.restore_latency(0.50)),
        );
        line(
            &mut s,
            "restore (repair path) p99",
            ms(self.restore_latency(0.99)),
        );
        line(
            &mut s,
            "read back after city restart",
            frac(self.after_restart),
        );
        if let Some(c) = &self.consensus {
            let _ = writeln!(
                s,
                "ordering ({} representatives over gRPC, one killed half-way; continent log)",
                c.reps
            );
            line(
                &mut s,
                "held stripes proposed / committed by all",
                format!("{}/{}", c.items, c.items_committed),
            );
            line(
                &mut s,
                "leaders committed (checkpoints)",
                c.commits.to_string(),
            );
            line(
                &mut s,
                "commit latency p50 (held → ordered)",
                format!("{:.1} ms", c.commit_latency_p50_ms),
            );
            line(
                &mut s,
                "commit latency p99",
                format!("{:.1} ms", c.commit_latency_p99_ms),
            );
            line(
                &mut s,
                "after the kill p50 / p99",
                format!(
                    "{:.1} / {:.1} ms",
                    c.after_kill_latency_p50_ms, c.after_kill_latency_p99_ms
                ),
            );
            line(
                &mut s,
                "identical commit sequences",
                c.sequences_identical.to_string(),
            );
            line(
                &mut s,
                "continent log size",
                c.continent_log_size.to_string(),
            );
            line(
                &mut s,
                "inclusion proofs verified",
                c.inclusion_proofs_verified.to_string(),
            );
            line(
                &mut s,
                "continent log survives restart",
                c.log_survived_restart.to_string(),
            );
        } else {
            let _ = writeln!(s, "ordering: FAILED (see the log)");
        }
        let _ = writeln!(s, "{:-<70}", "");
        let _ = writeln!(
            s,
            "bad input (each must be rejected with the expected code):"
        );
        for c in &self.bad_cases {
            let verdict = if c.passed() { "ok  " } else { "FAIL" };
            let got = match &c.got {
                Ok(r) => format!("{}: {}", r.code, truncate(&r.message, 64)),
                Err(e) => e.clone(),
            };
            let _ = writeln!(s, "  [{verdict}] {:<26} → {got}", c.name);
        }
        let _ = writeln!(s, "{:-<70}", "");
        let _ = writeln!(s, "result: {}", if self.ok() { "OK" } else { "FAILED" });
        s
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Measures raw ML-DSA-87 verification throughput on `threads` threads (0 = all cores).
pub fn raw_verify_throughput(threads: usize, n: usize) -> Result<f64> {
    let kp = Keypair::generate();
    let msg = b"citychain/baseline";
    let sig = kp.sign(msg);
    let pool = pqc::BatchVerifier::new(threads)?;
    let n = n.max(1);
    let t0 = Instant::now();
    let ok = pool.install(|| {
        (0..n)
            .into_par_iter()
            .filter(|_| {
                dag_core::SignatureVerifier::verify(&MlDsa87, kp.public_key(), msg, &sig).is_ok()
            })
            .count()
    });
    let secs = t0.elapsed().as_secs_f64();
    if ok != n {
        return Err(Error::Measurement(
            "baseline signature failed to verify".into(),
        ));
    }
    Ok(n as f64 / secs)
}

fn cfg_err(e: impl std::fmt::Display) -> Error {
    Error::Measurement(e.to_string())
}

/// Pre-signs the load: tx i is from account i % accounts at a real point in Tokyo, except
/// every `outside_every`-th, which claims Tokyo from a point in Osaka.
fn presign(cfg: &DemoConfig, accounts: &[Keypair]) -> Result<(Vec<SignedTx>, Vec<bool>)> {
    let japan = pop_geo::shipped::japan().map_err(cfg_err)?;
    let tokyo = japan.sample_points(CITY, 512, 42);
    let osaka = japan.sample_points("JP-27", 64, 43);
    if tokyo.is_empty() || osaka.is_empty() {
        return Err(Error::Measurement(
            "no sample points in the shipped polygons".into(),
        ));
    }
    let city = CityId::new(CITY).map_err(cfg_err)?;
    let out: Vec<(SignedTx, bool)> = (0..cfg.txs)
        .into_par_iter()
        .map(|i| {
            let from = &accounts[i % accounts.len()];
            let to = accounts[(i + 1) % accounts.len()].account_id();
            let outside = cfg.outside_every > 0 && i % cfg.outside_every == cfg.outside_every - 1;
            let (lat, lon) = if outside {
                osaka[i % osaka.len()]
            } else {
                tokyo[i % tokyo.len()]
            };
            let tx = Tx::fresh(
                from.account_id(),
                to,
                1 + (i as u64 % 1000),
                (i / accounts.len()) as u64,
                1_767_225_600_000 + i as u64,
                city.clone(),
                Position::from_degrees(lat, lon).map_err(cfg_err)?,
                PositionMethod::Gps,
            );
            Ok((sign_tx(tx, from), outside))
        })
        .collect::<Result<_>>()?;
    Ok(out.into_iter().unzip())
}

/// Runs the demo end to end and returns what it measured.
pub async fn run(cfg: &DemoConfig) -> Result<DemoReport> {
    let dir = tempfile::tempdir().map_err(|e| Error::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let mut report = DemoReport {
        lights: cfg.lights,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..DemoReport::default()
    };

    // Accounts and pre-signed load, before any timing.
    let t_sign = Instant::now();
    let accounts: Vec<Keypair> = (0..cfg.accounts.max(2))
        .into_par_iter()
        .map(|_| Keypair::generate())
        .collect();
    let (txs, outside) = presign(cfg, &accounts)?;
    report.presign_time = t_sign.elapsed();
    report.offered = txs.len();
    report.offered_outside = outside.iter().filter(|o| **o).count();

    // The same-run baseline.
    let n = cfg.baseline_verifies;
    report.raw_verify_per_sec = tokio::task::spawn_blocking(move || raw_verify_throughput(0, n))
        .await
        .map_err(|e| Error::Measurement(format!("baseline task: {e}")))??;

    let mut net = Devnet::start(
        DevnetConfig {
            lights: cfg.lights,
            ..DevnetConfig::default()
        },
        dir.path(),
    )
    .await?;
    if !net
        .wait_for_lights(cfg.lights, Duration::from_secs(10))
        .await
    {
        return Err(Error::Measurement(format!(
            "the city sees {} of {} light nodes after 10 s",
            net.city_view_lights(),
            cfg.lights
        )));
    }
    let addr = net.city().addr().to_string();

    // Load.
    let held_ids = load(cfg, &addr, &txs, &mut report).await?;

    // Read back a sample: Held, receipts from distinct holders, all signatures valid.
    let client = CityClient::connect(&addr).await?;
    let step = (held_ids.len() / cfg.sample.max(1)).max(1);
    let sample: Vec<(usize, dag_core::TxId)> = held_ids.iter().step_by(step).copied().collect();
    let mut ok = 0;
    for (i, id) in &sample {
        if let Ok(Some(rec)) = client.get(*id).await {
            let holders: BTreeSet<_> = rec.receipts.iter().map(|r| r.receipt.holder).collect();
            let receipts_ok = rec
                .receipts
                .iter()
                .all(|r| r.clone().verify(&MlDsa87).is_ok());
            report.receipts_checked += rec.receipts.len();
            if rec.tx.as_ref() == Some(&txs[*i])
                && rec.state == TxState::Held
                && receipts_ok
                && holders.len() == rec.receipts.len()
                && !rec.receipts.is_empty()
            {
                ok += 1;
            }
        }
    }
    report.read_back = (ok, sample.len());
    report.bad_cases = bad_inputs(&client, &txs, &accounts).await?;

    // Durability: kill `kill` light nodes, the first abruptly.
    let pipeline = net
        .city()
        .node()
        .pipeline()
        .cloned()
        .ok_or_else(|| Error::Measurement("city without a pipeline".into()))?;
    let before = holder_map(&pipeline)?;
    let kill = cfg.kill.min(cfg.lights.saturating_sub(4));
    report.killed = kill;
    let t_kill = Instant::now();
    for i in 0..kill {
        if i == 0 {
            net.crash_light(i).await;
        } else {
            net.stop_light(i).await?;
        }
    }
    let gone: BTreeSet<_> = net.lights[..kill].iter().map(|l| l.id).collect();
    if !net
        .wait_for_lights(cfg.lights - kill, Duration::from_secs(20))
        .await
    {
        tracing::error!("the city did not see the departures within 20 s");
    }
    report.detect_time = t_kill.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let manifests = pipeline.manifests().map_err(cfg_err)?;
        // Every shard index has a live holder again; with fewer than n live light nodes
        // some hold two shards of a stripe, which is counted and shown.
        let at_n = manifests
            .iter()
            .filter(|(m, rs)| {
                m.holders
                    .iter()
                    .all(|h| h.is_some_and(|h| !gone.contains(&h)))
                    && rs.len() == m.holders.len()
            })
            .count();
        report.colocated_stripes = manifests
            .iter()
            .filter(|(m, _)| {
                let hs: BTreeSet<_> = m.holders.iter().flatten().collect();
                hs.len() < m.holders.len()
            })
            .count();
        report.stripes_at_n = (at_n, manifests.len());
        if at_n == manifests.len() {
            report.rereplication_time = Some(t_kill.elapsed());
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = holder_map(&pipeline)?;
    report.shards_rereplicated = before
        .iter()
        .filter(|(k, h)| after.get(*k).is_some_and(|a| a != *h))
        .count();

    // Every held tx restored from shards (a stripe at a time), signatures verified.
    let wanted: BTreeSet<_> = held_ids.iter().map(|(_, id)| *id).collect();
    let mut restored = BTreeSet::new();
    for (m, _) in pipeline.manifests().map_err(cfg_err)? {
        match pipeline.restore_stripe(m.stripe_id()).await {
            Ok(list) => restored.extend(
                list.iter()
                    .map(SignedTx::id)
                    .filter(|id| wanted.contains(id)),
            ),
            Err(e) => {
                tracing::error!(stripe = %m.stripe_id().short(), error = %e, "stripe did not restore")
            }
        }
    }
    report.restored = (restored.len(), wanted.len());
    // The repair path, one tx at a time, timed.
    let step = (held_ids.len() / cfg.restore_sample.max(1)).max(1);
    for (i, id) in held_ids.iter().step_by(step) {
        let t = Instant::now();
        match net.city().node().restore(*id).await {
            Ok(rec) if rec.tx.as_ref() == Some(&txs[*i]) => {
                report.restore_latencies.push(t.elapsed())
            }
            Ok(_) => tracing::error!(tx = %id, "restored a different tx"),
            Err(e) => tracing::error!(tx = %id, error = %e, "restore failed"),
        }
    }
    report.restore_latencies.sort();
    drop(client);

    // Ordering: the held stripes go through 4 representatives and on to a continent log.
    let stripes: Vec<dag_core::consensus::BatchItem> = pipeline
        .manifests()
        .map_err(cfg_err)?
        .iter()
        .map(|(m, _)| dag_core::consensus::BatchItem::Stripe(m.stripe_id()))
        .collect();
    drop(pipeline);
    match node::consensus_net::run_devnet_round(4, stripes, true, &dir.path().join("consensus"))
        .await
    {
        Ok(f) => report.consensus = Some(f),
        Err(e) => tracing::error!(error = %e, "the ordering round failed"),
    }

    // Restart the city on the same data dir: admitted txs are still there, still Held.
    net.stop_city().await?;
    net.start_city().await?;
    let client = CityClient::connect(&net.city().addr().to_string()).await?;
    let mut ok = 0;
    for (i, id) in &sample {
        if let Ok(Some(rec)) = client.get(*id).await
            && rec.tx.as_ref() == Some(&txs[*i])
            && rec.state == TxState::Held
        {
            ok += 1;
        }
    }
    report.after_restart = (ok, sample.len());
    drop(client);
    net.shutdown().await?;
    Ok(report)
}

/// Holder of each (stripe, index), to count what re-replication moved.
fn holder_map(
    p: &node::Pipeline,
) -> Result<std::collections::BTreeMap<(dag_core::StripeId, usize), dag_core::NodeId>> {
    let mut out = std::collections::BTreeMap::new();
    for (m, _) in p.manifests().map_err(cfg_err)? {
        for (i, h) in m.holders.iter().enumerate() {
            if let Some(h) = h {
                out.insert((m.stripe_id(), i), *h);
            }
        }
    }
    Ok(out)
}

async fn load(
    cfg: &DemoConfig,
    addr: &str,
    txs: &[SignedTx],
    report: &mut DemoReport,
) -> Result<Vec<(usize, dag_core::TxId)>> {
    let requests: Vec<rpc::pb::SubmitTxRequest> = txs
        .iter()
        .map(|t| rpc::pb::SubmitTxRequest { tx: Some(t.into()) })
        .collect();
    let n = requests.len();
    let streams = cfg.streams.max(1);
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let mut chunks: Vec<Vec<(usize, rpc::pb::SubmitTxRequest)>> =
        (0..streams).map(|_| Vec::new()).collect();
    for (i, r) in requests.into_iter().enumerate() {
        chunks[i % streams].push((i, r));
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let client = CityClient::connect(addr).await?;
        let sent_at = sent_at.clone();
        let globals: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
        tasks.push(tokio::spawn(async move {
            let sent = sent_at.clone();
            let reqs = futures::stream::iter(chunk).map(move |(i, r)| {
                sent[i].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                r
            });
            let mut out = client.submit_stream_raw(reqs).await?;
            let mut res = Vec::with_capacity(globals.len());
            while let Some((local, r)) = out.next().await {
                let now = t0.elapsed().as_nanos() as u64;
                let g = globals.get(local as usize).copied();
                res.push((g, now, r));
            }
            Ok::<_, Error>(res)
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        for (g, now, r) in t
            .await
            .map_err(|e| Error::Measurement(format!("load task: {e}")))??
        {
            match (g, r) {
                (Some(g), Ok(s)) if s.state == TxState::Held => {
                    report.held += 1;
                    let holders: BTreeSet<_> =
                        s.receipts.iter().map(|r| r.receipt.holder).collect();
                    if holders.len() < s.receipts.len() {
                        report.held_colocated += 1;
                    }
                    report.latencies.push(Duration::from_nanos(
                        now.saturating_sub(sent_at[g].load(Ordering::Relaxed)),
                    ));
                    held.push((g, s.tx_id));
                }
                (_, Ok(_)) => report.admitted_only += 1,
                (_, Err(rpc::ClientError::Rejected(r))) if r.code == RejectCode::OutsideCity => {
                    report.rejected_pop += 1
                }
                (_, Err(e)) => {
                    report.rejected_other += 1;
                    tracing::warn!(error = %e, "tx rejected during load");
                }
            }
        }
    }
    report.load_time = t0.elapsed();
    report.latencies.sort();
    held.sort_by_key(|(i, _)| *i);
    Ok(held)
}

async fn bad_inputs(
    client: &CityClient,
    txs: &[SignedTx],
    accounts: &[Keypair],
) -> Result<Vec<BadCase>> {
    let mut cases = Vec::new();
    let mut run = |name: &'static str,
                   expected: RejectCode,
                   got: std::result::Result<rpc::Submitted, rpc::ClientError>| {
        let got = match got {
            Ok(s) => Err(format!("ACCEPTED as {}", s.tx_id)),
            Err(rpc::ClientError::Rejected(r)) => Ok(r),
            Err(e) => Err(format!("unexpected error: {e}")),
        };
        cases.push(BadCase {
            name,
            expected,
            got,
        });
    };
    let alice = &accounts[0];
    let bob = &accounts[1];
    let city = CityId::new(CITY).map_err(cfg_err)?;
    let tokyo = Position::from_degrees(35.6895, 139.6917).map_err(cfg_err)?;
    let fresh = |nonce: u64| {
        Tx::fresh(
            alice.account_id(),
            bob.account_id(),
            7,
            nonce,
            1_767_225_600_000,
            city.clone(),
            tokyo,
            PositionMethod::Gps,
        )
    };

    let mut t = sign_tx(fresh(1_000_001), alice);
    t.signature[100] ^= 0x55;
    run(
        "bad signature",
        RejectCode::BadSignature,
        client.submit(&t).await,
    );
    let mut t = sign_tx(fresh(1_000_002), bob);
    t.public_key = alice.public_key().to_vec();
    run(
        "signature by another key",
        RejectCode::BadSignature,
        client.submit(&t).await,
    );
    let t = sign_tx(fresh(1_000_003), bob);
    run(
        "key not the sender's",
        RejectCode::KeyMismatch,
        client.submit(&t).await,
    );
    let mut t = sign_tx(fresh(1_000_004), alice);
    t.signature.truncate(100);
    run(
        "truncated signature",
        RejectCode::BadSignature,
        client.submit(&t).await,
    );
    run(
        "replayed tx",
        RejectCode::DuplicateTx,
        client.submit(&txs[0]).await,
    );
    let mut body = txs[0].tx.clone();
    body.amount += 1;
    let owner = accounts
        .iter()
        .find(|a| a.account_id() == body.sender)
        .ok_or_else(|| Error::Measurement("sender of tx 0 not found".into()))?;
    run(
        "reused nonce",
        RejectCode::NonceReused,
        client.submit(&sign_tx(body, owner)).await,
    );
    let mut far = fresh(1_000_008);
    far.position = Position::from_degrees(27.7172, 85.3240).map_err(cfg_err)?; // Kathmandu
    run(
        "claims Tokyo from Kathmandu",
        RejectCode::OutsideCity,
        client.submit(&sign_tx(far, alice)).await,
    );
    let t = sign_tx(
        fresh(1_000_005).with_payload(vec![0xAB; dag_core::MAX_PAYLOAD + 1]),
        alice,
    );
    run(
        "payload over 64 KiB",
        RejectCode::TooLarge,
        client.submit(&t).await,
    );
    run(
        "malformed: empty request",
        RejectCode::Malformed,
        client
            .submit_raw(rpc::pb::SubmitTxRequest { tx: None })
            .await,
    );
    let mut p: rpc::pb::SignedTx = (&sign_tx(fresh(1_000_006), alice)).into();
    if let Some(tx) = p.tx.as_mut() {
        tx.sender.pop();
    }
    run(
        "malformed: 31-byte sender",
        RejectCode::Malformed,
        client
            .submit_raw(rpc::pb::SubmitTxRequest { tx: Some(p) })
            .await,
    );
    let mut p: rpc::pb::SignedTx =
        (&sign_tx(fresh(1_000_007).with_kind(TxKind::FreshTx), alice)).into();
    if let Some(tx) = p.tx.as_mut() {
        tx.kind = 42;
    }
    run(
        "unknown kind 42",
        RejectCode::Malformed,
        client
            .submit_raw(rpc::pb::SubmitTxRequest { tx: Some(p) })
            .await,
    );
    Ok(cases)
}

//! The in-process devnet behind `city-node demo`: presence, 8 light nodes, a continent and
//! a city committee of 4 representatives, each its own gRPC server on loopback; 100
//! accounts; pre-signed load at real Tokyo coordinates (and a few claiming Tokyo from
//! Osaka) spread round robin over the representatives; every tx answered Held with receipts
//! from distinct light nodes, then followed to Ordered and Federated on every
//! representative. Then one representative is killed -9 and a smaller load goes to the
//! others while the continent restarts; the killed one comes back and catches up. Read-back,
//! deliberate bad input, 2 light nodes killed (one crashes, one leaves), re-replication back
//! to n holders, every tx restored from shards, repair requests over HTTP timed per serving
//! tier ([`RepairFigures`]), a restart; and a table of what was measured, with a verdict that names
//! every check that failed.

mod faults;
mod load;
mod ordering;
mod repair;
mod report;

pub use faults::DemoFault;
pub use repair::{RepairFigures, TierFigures};
pub use report::{Agreement, BadCase, DemoReport, OrderingFigures, Thresholds, TlsCost};

use crate::devnet::{Devnet, DevnetConfig};
use crate::{Error, Result};
use dag_core::{SignedTx, Signer, TxId};
use load::{Gate, HeldAnswer, LoadOutcome, cfg_err};
use node::OrderStore;
use pqc::{Keypair, MlDsa87};
use rayon::prelude::*;
use rpc::{CityClient, TxState};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What the demo does. `Default` matches `city-node demo` without flags.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Signed txs to submit (both phases).
    pub txs: usize,
    /// Accounts that sign them.
    pub accounts: usize,
    /// Parallel gRPC submission streams (at least one per live representative).
    pub streams: usize,
    /// Representatives in the city committee.
    pub reps: usize,
    /// Share of the txs, in percent, offered after one representative is killed.
    pub after_kill_percent: usize,
    /// How long the continent stays down in the middle of the second load.
    pub continent_outage: Duration,
    /// How long to wait for every held tx to be Ordered and Federated (per phase), and for
    /// a restarted representative to catch up.
    pub order_wait: Duration,
    /// Verdict bound on held → ordered p99.
    pub max_ordered_p99: Duration,
    /// Verdict bound on held → federated p99.
    pub max_federated_p99: Duration,
    /// Txs read back with GetTx after the load.
    pub sample: usize,
    /// Signatures verified for the raw ML-DSA-87 baseline.
    pub baseline_verifies: usize,
    /// Light nodes.
    pub lights: usize,
    /// Light nodes killed after the load (the first crashes, the others leave).
    pub kill: usize,
    /// Verdict bound on how long the representatives take to see the departures.
    pub detect_bound: Duration,
    /// One in this many txs claims Tokyo from a position in Osaka (0 = none).
    pub outside_every: usize,
    /// Txs restored one by one through the repair path to time it.
    pub restore_sample: usize,
    /// How long to wait for re-replication to bring every stripe back to n holders.
    pub rereplicate_wait: Duration,
    /// A fault to inject (tests of the verdict; `None` for the real demo).
    pub fault: DemoFault,
    /// A fixed proposal interval (ms); `None` (the default): the domain's dynamic one.
    pub batch_interval_ms: Option<u64>,
    /// Txs offered to each of two extra short devnets, one with node links over mutual TLS
    /// and one plaintext (`--insecure`), to report what TLS costs in Held tx/s and p99;
    /// 0 skips it. The main run always uses TLS.
    pub tls_cost_txs: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            txs: 20_000,
            accounts: 100,
            streams: 4,
            reps: 4,
            after_kill_percent: 20,
            continent_outage: Duration::from_secs(1),
            order_wait: Duration::from_secs(60),
            // Representatives propose on the domain's dynamic interval (0.5 s under load, up
            // to 5 s when idle): a tx held just after a proposal waits up to one interval to
            // be proposed, then ≥ 2 rounds to commit, more when a crashed representative's
            // leader rounds are skipped. 20 s is four of the longest intervals.
            max_ordered_p99: Duration::from_secs(20),
            max_federated_p99: Duration::from_secs(30),
            sample: 500,
            baseline_verifies: 4_000,
            // n = 6 distinct holders per stripe, plus the two that are killed: re-replication
            // back to six distinct live holders needs six left.
            lights: 8,
            kill: 2,
            detect_bound: Duration::from_secs(20),
            outside_every: 100,
            restore_sample: 200,
            rereplicate_wait: Duration::from_secs(60),
            fault: DemoFault::None,
            batch_interval_ms: None,
            tls_cost_txs: 2_000,
        }
    }
}

/// Distinct signing keys behind the raw-verify baseline (key generation is untimed).
const BASELINE_KEYS: usize = 32;

/// Measures raw ML-DSA-87 verification throughput on `threads` threads (0 = all cores):
/// `n` distinct messages of the size a sender really signs (`Tx::signing_message`, the
/// domain tag and a tx id: a tx's signature covers its id), each signed by one of
/// 32 distinct keys. Keys and signatures are made before the clock starts;
/// every signature must verify.
pub fn raw_verify_throughput(threads: usize, n: usize) -> Result<f64> {
    let n = n.max(1);
    let keys: Vec<Keypair> = (0..BASELINE_KEYS.min(n))
        .into_par_iter()
        .map(|_| Keypair::generate())
        .collect();
    let signed: Vec<(usize, Vec<u8>, Vec<u8>)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let k = i % keys.len();
            let id = TxId(dag_core::Hash32::digest(&(i as u64).to_le_bytes()));
            let msg = dag_core::Tx::signing_message(&id);
            let sig = keys[k].sign(&msg);
            (k, msg, sig)
        })
        .collect();
    let pool = pqc::BatchVerifier::new(threads)?;
    let t0 = Instant::now();
    let ok = pool.install(|| {
        signed
            .par_iter()
            .filter(|(k, msg, sig)| {
                dag_core::SignatureVerifier::verify(&MlDsa87, keys[*k].public_key(), msg, sig)
                    .is_ok()
            })
            .count()
    });
    let secs = t0.elapsed().as_secs_f64();
    if ok != n {
        return Err(Error::Measurement(format!(
            "baseline: {} of {n} signatures failed to verify",
            n - ok
        )));
    }
    Ok(n as f64 / secs)
}

/// `(rep, address)` of each of `reps`.
fn targets(net: &Devnet, reps: &[usize]) -> Vec<(usize, String)> {
    reps.iter()
        .filter_map(|&i| net.reps().get(i).map(|r| (i, r.addr.to_string())))
        .collect()
}

/// The order stores of `reps` (each must be running).
fn stores(net: &Devnet, reps: &[usize]) -> Result<Vec<(usize, Arc<OrderStore>)>> {
    reps.iter()
        .map(|&i| {
            net.rep(i)
                .and_then(|h| h.node().order_store().cloned())
                .map(|s| (i, s))
                .ok_or_else(|| {
                    Error::Measurement(format!("representative {i} has no running order store"))
                })
        })
        .collect()
}

fn add_counts(report: &mut DemoReport, o: &LoadOutcome) {
    report.held += o.held.len();
    report.held_colocated += o.colocated;
    report.admitted_only += o.admitted_only;
    report.rejected_pop += o.rejected_pop;
    report.rejected_other += o.rejected_other;
}

fn last_answer(held: &[HeldAnswer]) -> Instant {
    held.iter()
        .map(|a| a.held_at)
        .max()
        .unwrap_or_else(Instant::now)
}

async fn join_load(h: tokio::task::JoinHandle<Result<LoadOutcome>>) -> Result<LoadOutcome> {
    h.await
        .map_err(|e| Error::Measurement(format!("load task: {e}")))?
}

/// Held tx/s and submit → Held p99 of `txs` on a fresh devnet with `tls` links.
async fn held_rate(
    cfg: &DemoConfig,
    reps: usize,
    txs: &[SignedTx],
    tls: bool,
) -> Result<(f64, Duration)> {
    let dir = tempfile::tempdir().map_err(|e| Error::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let net = start_devnet(
        DevnetConfig {
            lights: cfg.lights,
            reps,
            gateway: false,
            tls,
            ..DevnetConfig::default()
        },
        dir.path(),
        &format!("TLS cost run (tls = {tls})"),
    )
    .await?;
    let all: Vec<usize> = (0..reps).collect();
    let (h, _) = load::spawn_load(cfg.streams, &targets(&net, &all), txs, 0, None).await?;
    let o = join_load(h).await?;
    net.shutdown().await?;
    let rate = o.held.len() as f64 / o.load_time.as_secs_f64().max(1e-9);
    Ok((rate, report::quantile(&o.latencies, 0.99)))
}

async fn tls_cost(cfg: &DemoConfig, reps: usize, txs: &[SignedTx]) -> Result<report::TlsCost> {
    let (insecure_tps, insecure_p99) = held_rate(cfg, reps, txs, false).await?;
    let (tls_tps, tls_p99) = held_rate(cfg, reps, txs, true).await?;
    Ok(report::TlsCost {
        txs: txs.len(),
        tls_tps,
        tls_p99,
        insecure_tps,
        insecure_p99,
    })
}

/// Runs the demo end to end and returns what it measured.
pub async fn run(cfg: &DemoConfig) -> Result<DemoReport> {
    let dir = tempfile::tempdir().map_err(|e| Error::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let reps = cfg.reps.max(2);
    let mut report = DemoReport {
        thresholds: Thresholds::of(cfg),
        lights: cfg.lights,
        reps,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..DemoReport::default()
    };

    // Accounts and pre-signed load, before any timing.
    let t_sign = Instant::now();
    let accounts: Vec<Keypair> = (0..cfg.accounts.max(2))
        .into_par_iter()
        .map(|_| Keypair::generate())
        .collect();
    let (txs, outside) = load::presign(cfg, &accounts)?;
    report.presign_time = t_sign.elapsed();
    report.offered = txs.len();
    report.offered_outside = outside.iter().filter(|o| **o).count();

    // The same-run baseline.
    let n = cfg.baseline_verifies;
    report.raw_verify_per_sec = tokio::task::spawn_blocking(move || raw_verify_throughput(0, n))
        .await
        .map_err(|e| Error::Measurement(format!("baseline task: {e}")))??;

    // What TLS costs: the same txs into two fresh devnets, plaintext then TLS.
    if cfg.tls_cost_txs > 0 {
        let k = cfg.tls_cost_txs.min(txs.len());
        report.tls_cost = Some(tls_cost(cfg, reps, &txs[..k]).await?);
    }

    // The corrupting transport is in place from the start; it corrupts nothing until the
    // durability phase names a node.
    let corrupting = (cfg.fault == DemoFault::CorruptShards)
        .then(|| Arc::new(faults::CorruptingTransport::default()));
    let mut net = start_devnet(
        DevnetConfig {
            lights: cfg.lights,
            reps,
            batch_interval_ms: cfg.batch_interval_ms,
            transport: corrupting
                .clone()
                .map(|t| t as Arc<dyn node::ShardTransport>),
            ..DevnetConfig::default()
        },
        dir.path(),
        "the demo's devnet",
    )
    .await?;
    let all: Vec<usize> = (0..reps).collect();
    let n_after = (cfg.txs * cfg.after_kill_percent.min(100) / 100).max(1);
    let (first_txs, second_txs) = txs.split_at(cfg.txs.saturating_sub(n_after));

    // Phase 1: every representative live, the load round robin over them.
    let (h, _) = load::spawn_load(cfg.streams, &targets(&net, &all), first_txs, 0, None).await?;
    let first = join_load(h).await?;
    add_counts(&mut report, &first);
    report.load_time = first.load_time;
    report.latencies = first.latencies.clone();
    let first_held = Arc::new(first.held.clone());
    let live_stores = stores(&net, &all)?;
    let settled = ordering::settle(
        live_stores.clone(),
        first_held.clone(),
        true,
        cfg.order_wait,
    )
    .await?;
    report.ordering = Some(
        ordering::figures(
            &all,
            &live_stores,
            &first_held,
            &settled,
            first.started_ms,
            first.load_time,
            last_answer(&first_held),
        )
        .await?,
    );
    // The stores must go before a representative restarts (redb allows one opener).
    drop(live_stores);

    // Read back a sample from the representative that held each: intact, receipts from
    // distinct holders, all signatures valid.
    let step = (first.held.len() / cfg.sample.max(1)).max(1);
    let sample: Vec<HeldAnswer> = first.held.iter().step_by(step).copied().collect();
    let mut clients = BTreeMap::new();
    for (i, addr) in targets(&net, &all) {
        clients.insert(i, CityClient::connect(&addr).await?);
    }
    let mut ok = 0;
    for a in &sample {
        let Some(client) = clients.get(&a.rep) else {
            continue;
        };
        if let Ok(Some(rec)) = client.get(a.id).await {
            let holders: BTreeSet<_> = rec.receipts.iter().map(|r| r.receipt.holder).collect();
            let receipts_ok = rec
                .receipts
                .iter()
                .all(|r| r.clone().verify(&MlDsa87).is_ok());
            report.receipts_checked += rec.receipts.len();
            if rec.tx.as_ref() == Some(&txs[a.index])
                && matches!(
                    rec.state,
                    TxState::Held | TxState::Ordered | TxState::Federated
                )
                && receipts_ok
                && holders.len() == rec.receipts.len()
                && !rec.receipts.is_empty()
            {
                ok += 1;
            }
        }
    }
    report.read_back = (ok, sample.len());
    if let Some(c) = clients.get(&0) {
        report.bad_cases = load::bad_inputs(c, &txs, &accounts).await?;
    }
    drop(clients);

    // Phase 2: one representative killed -9; a smaller load to the others, the continent
    // killed once the first half is answered and restarted while the rest goes in.
    let victim = reps - 1;
    net.kill_rep(victim).await;
    report.killed_rep = Some(victim);
    let live: Vec<usize> = (0..reps).filter(|&i| i != victim).collect();
    let (open, open_rx) = tokio::sync::watch::channel(false);
    let gate = Gate {
        open: open_rx,
        answered: Arc::new(AtomicUsize::new(0)),
    };
    let (h, first_halves) = load::spawn_load(
        cfg.streams,
        &targets(&net, &live),
        second_txs,
        first_txs.len(),
        Some(gate.clone()),
    )
    .await?;
    let deadline = Instant::now() + cfg.order_wait;
    while gate.answered.load(Ordering::Relaxed) < first_halves
        && Instant::now() < deadline
        && !h.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = gate.answered.load(Ordering::Relaxed);
    net.kill_continent().await;
    let _ = open.send(true);
    tokio::time::sleep(cfg.continent_outage).await;
    net.start_continent().await?;
    let second = join_load(h).await?;
    report.continent_killed_at = Some((killed_at, second_txs.len()));
    add_counts(&mut report, &second);
    let second_held = Arc::new(second.held.clone());
    let live_stores = stores(&net, &live)?;
    let settled = ordering::settle(
        live_stores.clone(),
        second_held.clone(),
        true,
        cfg.order_wait,
    )
    .await?;
    report.after_kill = Some(
        ordering::figures(
            &live,
            &live_stores,
            &second_held,
            &settled,
            second.started_ms,
            second.load_time,
            last_answer(&second_held),
        )
        .await?,
    );
    report.agreements.push(
        ordering::agreement(
            &format!("{} live reps", live.len()),
            live_stores,
            cfg.order_wait,
        )
        .await?,
    );

    // The killed representative comes back and catches up: every tx of both phases
    // Ordered on it, one history across all. (Under the RepStaysDown fault it stays down:
    // it orders nothing after the kill, and the verdict must say so.)
    let all_held: Arc<Vec<HeldAnswer>> =
        Arc::new(first.held.iter().chain(&second.held).copied().collect());
    let running: Vec<usize> = if cfg.fault == DemoFault::RepStaysDown {
        report.caught_up = (0, all_held.len());
        live.clone()
    } else {
        net.start_rep(victim).await?;
        let t_restart = Instant::now();
        let settled = ordering::settle(
            stores(&net, &[victim])?,
            all_held.clone(),
            false,
            cfg.order_wait,
        )
        .await?;
        report.caught_up = (settled.ordered(), all_held.len());
        report.catch_up_time = settled
            .complete
            .then(|| settled.done_at.saturating_duration_since(t_restart));
        report.agreements.push(
            ordering::agreement(
                &format!("all {reps} reps"),
                stores(&net, &all)?,
                cfg.order_wait,
            )
            .await?,
        );
        all.clone()
    };

    // Every checkpoint carrying the load is in the continent's log (which went through a
    // restart): its recorded federation proof verifies offline against the genesis file
    // (quorum certificate, continent signature, Merkle path) and matches the live log.
    let genesis = Arc::new(node::genesis::Genesis::load(net.genesis_path())?);
    let log = net
        .continent()
        .map(|c| c.log().clone())
        .ok_or_else(|| Error::Measurement("continent not running".into()))?;
    let (_, store0) = stores(&net, &[0])?
        .pop()
        .ok_or_else(|| Error::Measurement("representative 0 not running".into()))?;
    report.inclusion_verified = ordering::verify_inclusion(
        store0,
        log.clone(),
        all_held.clone(),
        genesis,
        cfg.fault == DemoFault::TamperedProof,
    )
    .await?;
    report.continent_log_size = log.size();
    drop(log);

    let bad = corrupting.as_ref().map(|t| t.bad());
    durability(cfg, &mut net, &running, &all_held, &txs, bad, &mut report).await?;

    // Repair requests through the gateways, per serving tier.
    // (issue 18w) Bodies leave a representative's working store once ordered, executed and
    // archived, so the local-store tier is measured on txs admitted just before it.
    let fresh = repair::fresh_txs(cfg.txs, &accounts)?;
    report.repair = Some(repair::run(&net, &all_held, &txs, &fresh).await?);

    // Restart the first representative on the same data dir: its txs are still there,
    // still Federated.
    let mine: Vec<&HeldAnswer> = sample.iter().filter(|a| a.rep == 0).collect();
    net.stop_city().await?;
    net.start_city().await?;
    let client = CityClient::connect(&net.city().addr().to_string()).await?;
    let mut ok = 0;
    for a in &mine {
        if let Ok(Some(rec)) = client.get(a.id).await
            && rec.tx.as_ref() == Some(&txs[a.index])
            && rec.state == TxState::Federated
        {
            ok += 1;
        }
    }
    report.after_restart = (ok, mine.len());
    drop(client);
    net.shutdown().await?;
    Ok(report)
}

/// Starts a devnet and waits (≤ 20 s) until its city sees every light node; `what` names
/// the run in the error.
async fn start_devnet(config: DevnetConfig, dir: &std::path::Path, what: &str) -> Result<Devnet> {
    let lights = config.lights;
    let net = Devnet::start(config, dir).await?;
    if !net.wait_for_lights(lights, Duration::from_secs(20)).await {
        return Err(Error::Measurement(format!(
            "{what}: the city sees {} of {lights} light nodes after 20 s",
            net.city_view_lights(),
        )));
    }
    Ok(net)
}

/// Kills `cfg.kill` light nodes (the first abruptly), waits for every representative to
/// see it and for re-replication back to n holders, then restores every held tx from its
/// stripe and a sample one at a time through the repair path.
async fn durability(
    cfg: &DemoConfig,
    net: &mut Devnet,
    reps: &[usize],
    held: &[HeldAnswer],
    txs: &[SignedTx],
    corrupt: Option<Arc<parking_lot::RwLock<BTreeSet<dag_core::NodeId>>>>,
    report: &mut DemoReport,
) -> Result<()> {
    let mut pipelines = Vec::new();
    for &i in reps {
        let p = net
            .rep(i)
            .and_then(|h| h.node().pipeline().cloned())
            .ok_or_else(|| Error::Measurement(format!("representative {i} has no pipeline")))?;
        pipelines.push(p);
    }
    let before = holder_map(&pipelines)?;
    // Never more than leaves n (k + m) live holders: Held and re-replication need n
    // distinct nodes (a stripe never puts two shards on one node).
    let n = pipelines
        .first()
        .map_or(0, |p| usize::from(p.config().erasure.n()));
    let kill = cfg.kill.min(cfg.lights.saturating_sub(n));
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
    // Faults: a surviving light node corrupts every shard it returns; or the crashed one
    // keeps heartbeating presence as a ghost.
    if let (Some(bad), Some(l)) = (&corrupt, net.lights.get(kill)) {
        bad.write().insert(l.id);
    }
    let ghost = match (cfg.fault, net.lights.first()) {
        (DemoFault::GhostDeparture, Some(l)) if kill > 0 => {
            let (presence, id, every) = (net.presence().clone(), l.id, cfg.detect_bound / 50);
            Some(tokio::spawn(async move {
                loop {
                    let _ = presence.heartbeat(id).await;
                    tokio::time::sleep(every.max(Duration::from_millis(50))).await;
                }
            }))
        }
        _ => None,
    };

    // Any k of n with m holders down, before re-replication replaces them: every stripe
    // that lost holders is restored right away from the shards still reachable. A stripe
    // counts only if its manifest still names the departed holders after the restore (so
    // re-replication had not yet run for it).
    // The departures are watched while the restores run: how long the representatives take
    // to see them does not depend on what this driver does meanwhile.
    let restore_degraded = async {
        let mut degraded = (0, 0);
        let mut holders_down = 0;
        for p in &pipelines {
            for (m, _) in p.manifests().map_err(cfg_err)? {
                let down = |m: &storage::StripeManifest| {
                    m.holders
                        .iter()
                        .filter(|h| h.is_some_and(|h| gone.contains(&h)))
                        .count()
                };
                if down(&m) == 0 {
                    continue;
                }
                let result = p.restore_stripe(m.stripe_id()).await;
                let still_down = p
                    .manifests()
                    .map_err(cfg_err)?
                    .iter()
                    .find(|(n, _)| n.stripe_id() == m.stripe_id())
                    .is_some_and(|(n, _)| down(n) == down(&m));
                if !still_down {
                    continue;
                }
                degraded.1 += 1;
                holders_down = holders_down.max(down(&m));
                match result {
                    Ok(list) if !list.is_empty() => degraded.0 += 1,
                    Ok(_) => {
                        tracing::error!(stripe = %m.stripe_id().short(), "stripe restored empty")
                    }
                    Err(e) => {
                        tracing::error!(stripe = %m.stripe_id().short(), error = %e, "stripe did not restore with holders down")
                    }
                }
            }
        }
        Ok::<_, Error>((degraded, holders_down))
    };
    let watch = async {
        net.wait_for_lights(cfg.lights - kill, cfg.detect_bound)
            .await
            .then(|| t_kill.elapsed())
    };
    let (degraded, detect_time) = tokio::join!(restore_degraded, watch);
    let (degraded, holders_down) = degraded?;
    report.degraded_restored = degraded;
    report.degraded_holders_down = holders_down;
    report.detect_time = detect_time;
    let deadline = Instant::now() + cfg.rereplicate_wait;
    loop {
        let mut at_n = 0;
        let mut total = 0;
        report.colocated_stripes = 0;
        for p in &pipelines {
            let manifests = p.manifests().map_err(cfg_err)?;
            total += manifests.len();
            // Every shard index has a live holder again; with fewer than n live light
            // nodes some hold two shards of a stripe, which is counted and shown.
            at_n += manifests
                .iter()
                .filter(|(m, rs)| {
                    m.holders
                        .iter()
                        .all(|h| h.is_some_and(|h| !gone.contains(&h)))
                        && rs.len() == m.holders.len()
                })
                .count();
            report.colocated_stripes += manifests
                .iter()
                .filter(|(m, _)| {
                    let hs: BTreeSet<_> = m.holders.iter().flatten().collect();
                    hs.len() < m.holders.len()
                })
                .count();
        }
        report.stripes_at_n = (at_n, total);
        if at_n == total {
            report.rereplication_time = Some(t_kill.elapsed());
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = holder_map(&pipelines)?;
    report.shards_rereplicated = before
        .iter()
        .filter(|(k, h)| after.get(*k).is_some_and(|a| a != *h))
        .count();

    // Every held tx restored from shards (a stripe at a time), signatures verified.
    let wanted: BTreeSet<TxId> = held.iter().map(|a| a.id).collect();
    let mut restored = BTreeSet::new();
    for p in &pipelines {
        for (m, _) in p.manifests().map_err(cfg_err)? {
            match p.restore_stripe(m.stripe_id()).await {
                Ok(list) => restored.extend(
                    list.iter()
                        .map(SignedTx::id)
                        .filter(|id| wanted.contains(id)),
                ),
                Err(e) => {
                    report.stripe_restore_failures += 1;
                    tracing::error!(stripe = %m.stripe_id().short(), error = %e, "stripe did not restore")
                }
            }
        }
    }
    report.restored = (restored.len(), wanted.len());

    // The repair path, one tx at a time on the representative that held it, timed.
    let step = (held.len() / cfg.restore_sample.max(1)).max(1);
    let mut tried = 0;
    for a in held.iter().step_by(step) {
        tried += 1;
        let Some(rep) = net.rep(a.rep) else { continue };
        let t = Instant::now();
        match rep.node().restore(a.id).await {
            Ok(rec) if rec.tx.as_ref() == Some(&txs[a.index]) => {
                report.restore_latencies.push(t.elapsed())
            }
            Ok(_) => tracing::error!(tx = %a.id, "restored a different tx"),
            Err(e) => tracing::error!(tx = %a.id, error = %e, "restore failed"),
        }
    }
    report.restore_latencies.sort();
    report.repair_restored = (report.restore_latencies.len(), tried);
    if let Some(g) = ghost {
        g.abort();
        if let Err(e) = g.await
            && e.is_panic()
        {
            return Err(Error::Measurement(format!("ghost heartbeat task: {e}")));
        }
    }
    Ok(())
}

/// Holder of each (pipeline, stripe, index), to count what re-replication moved.
fn holder_map(
    pipelines: &[Arc<node::Pipeline>],
) -> Result<BTreeMap<(usize, dag_core::StripeId, usize), dag_core::NodeId>> {
    let mut out = BTreeMap::new();
    for (k, p) in pipelines.iter().enumerate() {
        for (m, _) in p.manifests().map_err(cfg_err)? {
            for (i, h) in m.holders.iter().enumerate() {
                if let Some(h) = h {
                    out.insert((k, m.stripe_id(), i), *h);
                }
            }
        }
    }
    Ok(out)
}

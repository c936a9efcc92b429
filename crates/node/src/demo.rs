//! The in-process devnet behind `city-node demo`: a city node on loopback with a temporary
//! data directory, 100 accounts, pre-signed load submitted over real gRPC, read-back,
//! deliberate bad input, a restart, and a table of what was measured.

use crate::{CityConfig, Error, Result, start_city};
use dag_core::{AccountId, CityId, Position, PositionMethod, SignedTx, Signer, Tx, TxKind};
use futures::StreamExt;
use pqc::{Keypair, MlDsa87, sign_tx};
use rayon::prelude::*;
use rpc::{CityClient, RejectCode};
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
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            txs: 20_000,
            accounts: 100,
            streams: 4,
            sample: 500,
            baseline_verifies: 4_000,
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
    /// What came back: the rejection, or "ACCEPTED" if it was wrongly admitted.
    pub got: std::result::Result<rpc::Rejection, String>,
}

impl BadCase {
    /// True if the node rejected it with the expected code.
    pub fn passed(&self) -> bool {
        matches!(&self.got, Ok(r) if r.code == self.expected)
    }
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Txs offered.
    pub offered: usize,
    /// Admitted.
    pub admitted: usize,
    /// Rejected during the load (should be 0).
    pub rejected: usize,
    /// Wall time of the load phase.
    pub load_time: Duration,
    /// Submit → answer latencies of admitted txs, sorted.
    pub latencies: Vec<Duration>,
    /// Time spent pre-signing (not part of the load).
    pub presign_time: Duration,
    /// Raw ML-DSA-87 verifications per second on all cores, measured in this run.
    pub raw_verify_per_sec: f64,
    /// Verification threads used for the baseline (and by the node).
    pub threads: usize,
    /// Sampled txs read back intact / asked.
    pub read_back: (usize, usize),
    /// Sampled txs read back after a restart on the same data dir / asked.
    pub after_restart: (usize, usize),
    /// Bad-input cases.
    pub bad_cases: Vec<BadCase>,
}

impl DemoReport {
    /// Admitted txs per second during the load.
    pub fn throughput(&self) -> f64 {
        self.admitted as f64 / self.load_time.as_secs_f64().max(1e-9)
    }
    /// Latency at quantile `q` in [0, 1].
    pub fn latency(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
    /// True if everything admitted could be read back and every bad input was rejected
    /// with the right code.
    pub fn ok(&self) -> bool {
        self.read_back.0 == self.read_back.1
            && self.after_restart.0 == self.after_restart.1
            && self.admitted == self.offered
            && !self.bad_cases.is_empty()
            && self.bad_cases.iter().all(BadCase::passed)
    }

    /// The printed table.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let _ = writeln!(
            s,
            "\nCity Chain devnet — 1 city node on loopback, real gRPC, ML-DSA-87"
        );
        let _ = writeln!(s, "{:-<72}", "");
        let _ = writeln!(s, "{:<34} {:>16}", "offered", self.offered);
        let _ = writeln!(s, "{:<34} {:>16}", "admitted", self.admitted);
        let _ = writeln!(s, "{:<34} {:>16}", "rejected during load", self.rejected);
        let _ = writeln!(s, "{:<34} {:>16}", "load time", ms(self.load_time));
        let _ = writeln!(
            s,
            "{:<34} {:>12.0} tx/s",
            "throughput (submit → admitted)",
            self.throughput()
        );
        let _ = writeln!(s, "{:<34} {:>16}", "latency p50", ms(self.latency(0.50)));
        let _ = writeln!(s, "{:<34} {:>16}", "latency p99", ms(self.latency(0.99)));
        let _ = writeln!(s, "{:<34} {:>16}", "latency p99.9", ms(self.latency(0.999)));
        let _ = writeln!(
            s,
            "{:<34} {:>12.0} /s ({} threads, same run)",
            "baseline: raw ML-DSA-87 verify", self.raw_verify_per_sec, self.threads
        );
        let _ = writeln!(
            s,
            "{:<34} {:>16.3}",
            "ratio throughput / raw verify",
            self.throughput() / self.raw_verify_per_sec.max(1e-9)
        );
        let _ = writeln!(
            s,
            "{:<34} {:>16}",
            "pre-signing (untimed)",
            ms(self.presign_time)
        );
        let _ = writeln!(
            s,
            "{:<34} {:>10}/{:<5}",
            "read back with GetTx", self.read_back.0, self.read_back.1
        );
        let _ = writeln!(
            s,
            "{:<34} {:>10}/{:<5}",
            "read back after restart", self.after_restart.0, self.after_restart.1
        );
        let _ = writeln!(s, "{:-<72}", "");
        let _ = writeln!(
            s,
            "bad input (each must be rejected with the expected code):"
        );
        for c in &self.bad_cases {
            let verdict = if c.passed() { "ok  " } else { "FAIL" };
            let got = match &c.got {
                Ok(r) => format!("{}: {}", r.code, truncate(&r.message, 70)),
                Err(e) => e.clone(),
            };
            let _ = writeln!(s, "  [{verdict}] {:<26} → {got}", c.name);
        }
        let _ = writeln!(s, "{:-<72}", "");
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

const CITY: &str = "JP-13";
/// Tokyo Metropolitan Government Building (a real point inside JP-13).
const TOKYO: (f64, f64) = (35.689_5, 139.691_7);

fn make_tx(from: &Keypair, to: AccountId, nonce: u64, amount: u64) -> Result<Tx> {
    let city = CityId::new(CITY).map_err(|e| Error::Config(e.to_string()))?;
    let pos = Position::from_degrees(TOKYO.0, TOKYO.1).map_err(|e| Error::Config(e.to_string()))?;
    Ok(Tx::fresh(
        from.account_id(),
        to,
        amount,
        nonce,
        1_767_225_600_000 + nonce,
        city,
        pos,
        PositionMethod::Gps,
    ))
}

/// Measures raw ML-DSA-87 verification throughput on `threads` threads.
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
        return Err(Error::Config("baseline signature failed to verify".into()));
    }
    Ok(n as f64 / secs)
}

/// Runs the demo end to end and returns what it measured.
pub async fn run(cfg: &DemoConfig) -> Result<DemoReport> {
    let dir = tempfile::tempdir().map_err(|e| Error::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let city_cfg = CityConfig {
        listen: "127.0.0.1:0"
            .parse()
            .map_err(|_| Error::Config("listen".into()))?,
        data_dir: dir.path().to_path_buf(),
        ..CityConfig::default()
    };
    let node_key = Keypair::generate();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Accounts and pre-signed load, before any timing.
    let t_sign = Instant::now();
    let accounts: Vec<Keypair> = (0..cfg.accounts.max(2))
        .into_par_iter()
        .map(|_| Keypair::generate())
        .collect();
    let txs: Vec<SignedTx> = (0..cfg.txs)
        .into_par_iter()
        .map(|i| {
            let from = &accounts[i % accounts.len()];
            let to = accounts[(i + 1) % accounts.len()].account_id();
            let nonce = (i / accounts.len()) as u64;
            make_tx(from, to, nonce, 1 + (i as u64 % 1000)).map(|tx| sign_tx(tx, from))
        })
        .collect::<Result<_>>()?;
    let presign_time = t_sign.elapsed();

    // The same-run baseline.
    let raw_verify_per_sec = tokio::task::spawn_blocking({
        let n = cfg.baseline_verifies;
        move || raw_verify_throughput(0, n)
    })
    .await
    .map_err(|e| Error::Config(format!("baseline task: {e}")))??;

    let handle = start_city(&city_cfg, &node_key).await?;
    let addr = handle.addr().to_string();
    let client = CityClient::connect(&addr).await?;

    // Load: `streams` parallel client streams, each submitting its share of the txs.
    let requests: Vec<rpc::pb::SubmitTxRequest> = txs
        .iter()
        .map(|t| rpc::pb::SubmitTxRequest { tx: Some(t.into()) })
        .collect();
    let n = requests.len();
    let streams = cfg.streams.max(1);
    let t0 = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let mut chunks: Vec<Vec<(usize, rpc::pb::SubmitTxRequest)>> =
        (0..streams).map(|_| Vec::new()).collect();
    for (i, r) in requests.into_iter().enumerate() {
        chunks[i % streams].push((i, r));
    }
    let mut tasks = Vec::new();
    for chunk in chunks {
        let client = CityClient::connect(&addr).await?;
        let sent_at = sent_at.clone();
        let globals: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
        tasks.push(tokio::spawn(async move {
            let sent = sent_at.clone();
            let reqs = futures::stream::iter(chunk).map(move |(i, r)| {
                sent[i].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                r
            });
            let mut out = client.submit_stream_raw(reqs).await?;
            let mut lat = Vec::with_capacity(globals.len());
            let mut admitted_ids = Vec::with_capacity(globals.len());
            let mut rejected = 0usize;
            while let Some((local, res)) = out.next().await {
                let now = t0.elapsed().as_nanos() as u64;
                match res {
                    Ok(s) => {
                        let g = globals[local as usize];
                        lat.push(Duration::from_nanos(
                            now.saturating_sub(sent_at[g].load(Ordering::Relaxed)),
                        ));
                        admitted_ids.push((g, s.tx_id));
                    }
                    Err(e) => {
                        rejected += 1;
                        tracing::warn!(error = %e, "tx rejected during load");
                    }
                }
            }
            Ok::<_, Error>((lat, admitted_ids, rejected))
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    let mut admitted_ids = Vec::with_capacity(n);
    let mut rejected = 0;
    for t in tasks {
        let (l, a, r) = t
            .await
            .map_err(|e| Error::Config(format!("load task: {e}")))??;
        latencies.extend(l);
        admitted_ids.extend(a);
        rejected += r;
    }
    let load_time = t0.elapsed();
    latencies.sort();
    admitted_ids.sort_by_key(|(i, _)| *i);

    // Read back a sample and compare with what was signed.
    let step = (admitted_ids.len() / cfg.sample.max(1)).max(1);
    let sample: Vec<(usize, dag_core::TxId)> = admitted_ids.iter().step_by(step).copied().collect();
    let read_back = read_sample(&client, &sample, &txs).await;

    let bad_cases = bad_inputs(&client, &txs, &accounts).await?;

    // Restart on the same data dir: everything admitted must still be there.
    drop(client);
    handle.shutdown().await?;
    let handle = start_city(&city_cfg, &node_key).await?;
    let client = CityClient::connect(&handle.addr().to_string()).await?;
    let after_restart = read_sample(&client, &sample, &txs).await;
    drop(client);
    handle.shutdown().await?;

    Ok(DemoReport {
        offered: n,
        admitted: admitted_ids.len(),
        rejected,
        load_time,
        latencies,
        presign_time,
        raw_verify_per_sec,
        threads,
        read_back,
        after_restart,
        bad_cases,
    })
}

async fn read_sample(
    client: &CityClient,
    sample: &[(usize, dag_core::TxId)],
    txs: &[SignedTx],
) -> (usize, usize) {
    let mut ok = 0;
    for (i, id) in sample {
        match client.get(*id).await {
            Ok(Some(rec)) if rec.tx == txs[*i] && rec.tx.id() == *id => ok += 1,
            Ok(other) => tracing::error!(tx = %id, ?other, "read back mismatch"),
            Err(e) => tracing::error!(tx = %id, error = %e, "read back failed"),
        }
    }
    (ok, sample.len())
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
    let fresh = |nonce: u64| make_tx(alice, bob.account_id(), nonce, 7);

    // Tampered signature.
    let mut t = sign_tx(fresh(1_000_001)?, alice);
    t.signature[100] ^= 0x55;
    run(
        "bad signature",
        RejectCode::BadSignature,
        client.submit(&t).await,
    );
    // Signed by someone else, claiming alice's key.
    let mut t = sign_tx(fresh(1_000_002)?, bob);
    t.public_key = alice.public_key().to_vec();
    run(
        "signature by another key",
        RejectCode::BadSignature,
        client.submit(&t).await,
    );
    // Key that is not the sender's.
    let t = sign_tx(fresh(1_000_003)?, bob);
    run(
        "key not the sender's",
        RejectCode::KeyMismatch,
        client.submit(&t).await,
    );
    // Truncated signature.
    let mut t = sign_tx(fresh(1_000_004)?, alice);
    t.signature.truncate(100);
    run(
        "truncated signature",
        RejectCode::BadSignature,
        client.submit(&t).await,
    );
    // Replay of an admitted tx.
    run(
        "replayed tx",
        RejectCode::DuplicateTx,
        client.submit(&txs[0]).await,
    );
    // Reused (sender, nonce) with a different body.
    let mut body = txs[0].tx.clone();
    body.amount += 1;
    let owner = accounts
        .iter()
        .find(|a| a.account_id() == body.sender)
        .ok_or_else(|| Error::Config("sender of tx 0 not found".into()))?;
    run(
        "reused nonce",
        RejectCode::NonceReused,
        client.submit(&sign_tx(body, owner)).await,
    );
    // Oversized payload.
    let t = sign_tx(
        fresh(1_000_005)?.with_payload(vec![0xAB; dag_core::MAX_PAYLOAD + 1]),
        alice,
    );
    run(
        "payload over 64 KiB",
        RejectCode::TooLarge,
        client.submit(&t).await,
    );
    // Malformed: no tx at all, a 31-byte sender, an unknown kind.
    run(
        "malformed: empty request",
        RejectCode::Malformed,
        client
            .submit_raw(rpc::pb::SubmitTxRequest { tx: None })
            .await,
    );
    let mut p: rpc::pb::SignedTx = (&sign_tx(fresh(1_000_006)?, alice)).into();
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
        (&sign_tx(fresh(1_000_007)?.with_kind(TxKind::FreshTx), alice)).into();
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

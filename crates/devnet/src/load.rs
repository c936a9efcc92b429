//! An open-loop load generator for the Held path: pre-signed txs are offered at a fixed
//! target rate (tx `i` is due at `t0 + i / rate`, whether or not earlier ones were
//! answered), spread over several `SubmitTxStream` streams; each answer is timed from the
//! moment its tx was *due*, so a stalled server shows as latency instead of a slower
//! offer (no coordinated omission). Also: CPU time of whole processes from `/proc`, and
//! the raw ML-DSA-87 verify baseline over the very signatures offered.

use crate::{Error, Result};
use dag_core::{CityId, Position, PositionMethod, SignedTx, Tx, TxId};
use futures::StreamExt;
use pqc::{Keypair, MlDsa87, sign_tx};
use rayon::prelude::*;
use rpc::{CityClient, TxState};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn measurement(e: impl std::fmt::Display) -> Error {
    Error::Measurement(e.to_string())
}

/// Load tx `i`: a transfer from account `i % accounts` (nonce `i / accounts`) to the next
/// account, claiming `city` from the point `at` (degrees), signed.
pub(crate) fn load_transfer(
    accounts: &[Keypair],
    i: usize,
    city: &CityId,
    at: (f64, f64),
) -> Result<SignedTx> {
    let from = &accounts[i % accounts.len()];
    let to = accounts[(i + 1) % accounts.len()].account_id();
    let tx = Tx::fresh(
        from.account_id(),
        to,
        1 + (i as u64 % 1000),
        (i / accounts.len()) as u64,
        1_767_225_600_000 + i as u64,
        city.clone(),
        Position::from_degrees(at.0, at.1).map_err(measurement)?,
        PositionMethod::Gps,
    );
    Ok(sign_tx(tx, from))
}

/// Pre-signs `n` distinct transfers among `accounts` (tx `i` from account `i % accounts`
/// with nonce `i / accounts`), each at a real point inside Tokyo's polygon.
pub fn presign(n: usize, accounts: &[Keypair]) -> Result<Vec<SignedTx>> {
    if accounts.len() < 2 {
        return Err(measurement("the load needs at least two accounts"));
    }
    let japan = pop_geo::shipped::japan()?;
    let tokyo = japan.sample_points(crate::CITY, 512, 42);
    if tokyo.is_empty() {
        return Err(measurement("no sample points inside Tokyo's polygon"));
    }
    let city = CityId::new(crate::CITY).map_err(measurement)?;
    (0..n)
        .into_par_iter()
        .map(|i| load_transfer(accounts, i, &city, tokyo[i % tokyo.len()]))
        .collect()
}

/// Raw ML-DSA-87 verifications per second of the signatures of `txs` (their ids and
/// signing messages computed before the clock starts) on `threads` threads (0 = every
/// core). Every signature must verify.
pub fn raw_verify_rate(txs: &[SignedTx], threads: usize) -> Result<f64> {
    if txs.is_empty() {
        return Err(measurement("no txs for the verify baseline"));
    }
    let msgs: Vec<(&[u8], Vec<u8>, &[u8])> = txs
        .iter()
        .map(|t| {
            (
                t.public_key.as_slice(),
                Tx::signing_message(&t.id()),
                t.signature.as_slice(),
            )
        })
        .collect();
    let pool = pqc::BatchVerifier::new(threads)?;
    let t0 = Instant::now();
    let ok = pool.install(|| {
        msgs.par_iter()
            .filter(|(pk, msg, sig)| {
                dag_core::SignatureVerifier::verify(&MlDsa87, pk, msg, sig).is_ok()
            })
            .count()
    });
    let secs = t0.elapsed().as_secs_f64();
    if ok != msgs.len() {
        return Err(measurement(format!(
            "verify baseline: {} of {} signatures failed",
            msgs.len() - ok,
            msgs.len()
        )));
    }
    Ok(msgs.len() as f64 / secs.max(1e-9))
}

/// Process CPU time (user + system, every thread that ever ran) from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    ticks_per_sec: f64,
}

impl CpuClock {
    /// Reads the kernel's clock-tick rate (`getconf CLK_TCK`).
    pub fn new() -> Result<Self> {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .map_err(|source| Error::Io {
                path: "getconf".into(),
                source,
            })?;
        let ticks: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| measurement(format!("getconf CLK_TCK: {e}")))?;
        if ticks <= 0.0 {
            return Err(measurement("getconf CLK_TCK is not positive"));
        }
        Ok(CpuClock {
            ticks_per_sec: ticks,
        })
    }

    /// CPU seconds used so far by process `pid` (`None`: this process).
    pub fn cpu_secs(&self, pid: Option<u32>) -> Result<f64> {
        let path = match pid {
            Some(p) => format!("/proc/{p}/stat"),
            None => "/proc/self/stat".to_string(),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone().into(),
            source,
        })?;
        // The command name (field 2) is in parentheses and may hold spaces: count fields
        // after its closing parenthesis; utime and stime are fields 14 and 15.
        let rest = text
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| measurement(format!("{path}: no ')'")))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| -> Result<f64> {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .ok_or_else(|| measurement(format!("{path}: field {} unreadable", i + 3)))
        };
        Ok((field(11)? + field(12)?) / self.ticks_per_sec)
    }
}

/// Resident set size of process `pid` in bytes (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmRSS:")
}

/// The anonymous part of the resident set of process `pid` (its heap and stacks; not the
/// executable's pages, which processes running one binary share), bytes.
pub fn rss_anon_bytes(pid: u32) -> Result<u64> {
    status_bytes(pid, "RssAnon:")
}

/// A `kB` field of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone().into(),
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| measurement(format!("{path}: no {field}")))
}

/// What one open-loop run got back.
#[derive(Debug, Clone, Default)]
pub struct OpenLoopOutcome {
    /// Target rate offered, tx/s.
    pub offered_rate: f64,
    /// Txs offered.
    pub offered: usize,
    /// Answered Held.
    pub held: usize,
    /// Answered Admitted (durable, not Held).
    pub admitted_only: usize,
    /// Refused, by reason.
    pub rejected: BTreeMap<String, usize>,
    /// Due → Held answer, sorted.
    pub latencies: Vec<Duration>,
    /// From the first tx's due time to the last answer.
    pub span: Duration,
}

impl OpenLoopOutcome {
    /// Held txs per second over the run.
    pub fn held_rate(&self) -> f64 {
        self.held as f64 / self.span.as_secs_f64().max(1e-9)
    }

    /// Due → Held latency at quantile `q` (0 when nothing was held).
    pub fn latency(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }
}

/// The element at quantile `q` of sorted `v` (nearest rank; zero when empty).
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Offers `txs` at `rate` tx/s over one `SubmitTxStream` per client (tx `i` on stream
/// `i % clients.len()`), open loop: tx `i` is handed to its stream at `t0 + i / rate`
/// (the streams' send queues are unbounded, so a slow server never slows the offer), and
/// its latency runs from that due time to its answer.
pub async fn open_loop(
    clients: &[CityClient],
    txs: &[SignedTx],
    rate: f64,
) -> Result<OpenLoopOutcome> {
    if clients.is_empty() || !rate.is_finite() || rate <= 0.0 {
        return Err(measurement("open loop needs a client and a positive rate"));
    }
    let n = txs.len();
    let k = clients.len();
    // Requests converted before the clock starts.
    let reqs: Vec<rpc::pb::SubmitTxRequest> = txs
        .iter()
        .map(|t| rpc::pb::SubmitTxRequest { tx: Some(t.into()) })
        .collect();
    let ids: Vec<TxId> = txs.iter().map(SignedTx::id).collect();
    let mut senders = Vec::with_capacity(k);
    let mut readers = Vec::with_capacity(k);
    for c in clients {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<rpc::pb::SubmitTxRequest>();
        let reqs = tokio_stream_of(rx);
        let c = c.clone();
        senders.push(tx);
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut answers = c.submit_stream_raw(reqs).await?;
            while let Some((local, r)) = answers.next().await {
                got.push((local, Instant::now(), r));
            }
            Ok::<_, Error>(got)
        }));
    }
    let t0 = Instant::now() + Duration::from_millis(20);
    let due = |i: usize| t0 + Duration::from_secs_f64(i as f64 / rate);
    for (i, r) in reqs.into_iter().enumerate() {
        // Sleep only when ahead of schedule (the timer's granularity is 1 ms): txs that
        // are due go out at once, in order.
        let at = due(i);
        if at > Instant::now() {
            tokio::time::sleep_until(at.into()).await;
        } else if i % 256 == 0 {
            tokio::task::yield_now().await;
        }
        if senders[i % k].send(r).is_err() {
            return Err(measurement(format!("stream {} closed early", i % k)));
        }
    }
    drop(senders);
    let mut o = OpenLoopOutcome {
        offered_rate: rate,
        offered: n,
        ..OpenLoopOutcome::default()
    };
    let mut last = t0;
    for (s, h) in readers.into_iter().enumerate() {
        let got = h
            .await
            .map_err(|e| measurement(format!("stream reader: {e}")))??;
        for (local, at, r) in got {
            last = last.max(at);
            // Stream s carries txs s, s + k, s + 2k, … in order; the server numbers them
            // 0, 1, 2, … (u64::MAX: a stream-level error without an index).
            let i = usize::try_from(local)
                .ok()
                .and_then(|l| l.checked_mul(k))
                .and_then(|x| x.checked_add(s))
                .filter(|i| *i < n);
            match (i, r) {
                (Some(i), Ok(sub)) if sub.state == TxState::Held => {
                    if sub.tx_id != ids[i] {
                        return Err(measurement(format!(
                            "answer {local} of stream {s} names tx {} where {} was sent",
                            sub.tx_id, ids[i]
                        )));
                    }
                    o.held += 1;
                    o.latencies.push(at.saturating_duration_since(due(i)));
                }
                (_, Ok(_)) => o.admitted_only += 1,
                (_, Err(rpc::ClientError::Rejected(r))) => {
                    *o.rejected.entry(r.code.name().to_string()).or_default() += 1
                }
                (_, Err(e)) => {
                    tracing::warn!(error = %e, "load stream error");
                    *o.rejected.entry("STREAM".into()).or_default() += 1
                }
            }
        }
    }
    o.span = last.saturating_duration_since(t0);
    o.latencies.sort();
    Ok(o)
}

/// A stream over an unbounded receiver.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn this_process_uses_cpu_and_has_a_resident_set() {
        let clock = CpuClock::new().unwrap();
        let before = clock.cpu_secs(None).unwrap();
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = clock.cpu_secs(None).unwrap();
        assert!(after > before, "{before} → {after}");
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn presigned_txs_are_distinct_and_verify_in_the_baseline() {
        let accounts: Vec<Keypair> = (0..3).map(|_| Keypair::generate()).collect();
        let txs = presign(12, &accounts).unwrap();
        let ids: std::collections::BTreeSet<_> = txs.iter().map(SignedTx::id).collect();
        assert_eq!(ids.len(), 12);
        assert!(raw_verify_rate(&txs, 1).unwrap() > 0.0);
        let mut bad = txs.clone();
        bad[3].signature[10] ^= 1;
        assert!(
            raw_verify_rate(&bad, 1).is_err(),
            "a bad signature must fail the baseline"
        );
    }
}

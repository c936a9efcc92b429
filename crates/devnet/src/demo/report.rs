//! What the demo measured, the verdict over it (one named check per printed figure) and
//! the printed table.

use super::DemoConfig;
use rpc::RejectCode;
use std::fmt::Write as _;
use std::time::Duration;

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

/// How the committee ordered and federated one phase of the load: every Held tx followed
/// from its Held answer to Ordered and Federated.
#[derive(Debug, Clone, Default)]
pub struct OrderingFigures {
    /// Representatives running during the phase (indices into the devnet's committee).
    pub live: Vec<usize>,
    /// Txs answered Held in this phase.
    pub held: usize,
    /// Wall time of the phase's load (first submission to last answer).
    pub load_time: Duration,
    /// Of the held txs, Ordered on every live representative.
    pub ordered: usize,
    /// Of the held txs, Federated on every live representative.
    pub federated: usize,
    /// Held answer → `committed_at_ms` on the representative it was submitted to, sorted.
    pub held_to_ordered: Vec<Duration>,
    /// Held answer → `federated_at_ms` of its checkpoint on that representative, sorted.
    pub held_to_federated: Vec<Duration>,
    /// Checkpoints the reference representative committed from the first commit after
    /// the phase's load started to the commit of the phase's last tx.
    pub commits: u64,
    /// Time from the first to the last of those commits.
    pub commit_span: Duration,
    /// From the last Held answer until everything was Federated everywhere (`None`: not
    /// within the wait).
    pub settled_after: Option<Duration>,
    /// What was still missing at the end of the wait (a few examples).
    pub missing: Vec<String>,
}

impl OrderingFigures {
    /// Held → ordered latency at quantile `q`.
    pub fn ordered_latency(&self, q: f64) -> Duration {
        quantile(&self.held_to_ordered, q)
    }
    /// Held → federated latency at quantile `q`.
    pub fn federated_latency(&self, q: f64) -> Duration {
        quantile(&self.held_to_federated, q)
    }
    /// Checkpoints committed per second during the phase: [`OrderingFigures::commits`] ÷
    /// [`OrderingFigures::commit_span`] (0 with fewer than two commits: no span to divide
    /// by).
    pub fn commits_per_sec(&self) -> f64 {
        if self.commits < 2 || self.commit_span.is_zero() {
            return 0.0;
        }
        self.commits as f64 / self.commit_span.as_secs_f64()
    }
    /// Held txs per second during the phase's load.
    pub fn throughput(&self) -> f64 {
        self.held as f64 / self.load_time.as_secs_f64().max(1e-9)
    }
}

/// Whether the live representatives hold one history: the committed checkpoint sequences
/// compared in full, hash by hash.
#[derive(Debug, Clone, Default)]
pub struct Agreement {
    /// When it was checked.
    pub label: String,
    /// (representative, checkpoints committed) when compared.
    pub committed: Vec<(usize, u64)>,
    /// The count every representative had to reach (the highest at the start of the check).
    pub target: u64,
    /// Checkpoints compared (every sequence below the lowest count).
    pub compared: u64,
    /// The first sequence whose checkpoint hash differs, with the two representatives.
    pub mismatch: Option<(u64, usize, usize)>,
    /// Tx items committed a second time, summed over the representatives.
    pub duplicates: u64,
}

impl Agreement {
    /// Every representative reached the target and every checkpoint below it is equal.
    pub fn holds(&self) -> bool {
        !self.committed.is_empty()
            && self.mismatch.is_none()
            && self.committed.iter().all(|(_, n)| *n >= self.target)
            && self.compared >= self.target
            && self.target > 0
    }
}

/// What the demo measured.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// Thresholds the verdict applies (from the [`DemoConfig`]).
    pub thresholds: Thresholds,
    /// TLS vs plaintext node links, same txs, same process (when measured).
    pub tls_cost: Option<TlsCost>,
    /// Txs offered in both phases (inside the city and outside).
    pub offered: usize,
    /// Offered txs positioned outside the claimed city.
    pub offered_outside: usize,
    /// Answered Held (receipts from distinct light nodes), both phases.
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
    /// Representatives in the committee.
    pub reps: usize,
    /// Wall time of the first phase's load (all representatives live).
    pub load_time: Duration,
    /// Submit → Held latencies of the first phase, sorted.
    pub latencies: Vec<Duration>,
    /// Time spent pre-signing (not part of the load).
    pub presign_time: Duration,
    /// Raw ML-DSA-87 verifications per second on all cores, measured in this run.
    pub raw_verify_per_sec: f64,
    /// Threads used for the baseline (and by the node's verification pool).
    pub threads: usize,
    /// Receipts checked on read-back (all verified, from distinct holders).
    pub receipts_checked: usize,
    /// Sampled txs read back intact with receipts from the representative that held them /
    /// asked.
    pub read_back: (usize, usize),
    /// Ordering of the first phase, every representative live.
    pub ordering: Option<OrderingFigures>,
    /// Ordering of the second phase: one representative killed -9, the continent
    /// restarted half-way through the load.
    pub after_kill: Option<OrderingFigures>,
    /// The representative killed before the second phase.
    pub killed_rep: Option<usize>,
    /// Second-phase answers received before the continent was killed / all of them.
    pub continent_killed_at: Option<(usize, usize)>,
    /// Txs of both phases Ordered on the killed representative after its restart / all
    /// held txs.
    pub caught_up: (usize, usize),
    /// From its restart until it had ordered them all (`None`: not within the wait).
    pub catch_up_time: Option<Duration>,
    /// Checkpoint sequences compared across representatives (after the second phase among
    /// the live ones, then all after the catch-up).
    pub agreements: Vec<Agreement>,
    /// Checkpoints carrying the load whose continent receipt was checked against the
    /// continent's log with a Merkle inclusion proof / such checkpoints.
    pub inclusion_verified: (usize, usize),
    /// Continent log size at the end.
    pub continent_log_size: u64,
    /// Light nodes started.
    pub lights: usize,
    /// Light nodes killed.
    pub killed: usize,
    /// From the kill until every representative's view dropped the killed nodes (`None`:
    /// not within the bound).
    pub detect_time: Option<Duration>,
    /// From the kill until every stripe was back at n live distinct holders.
    pub rereplication_time: Option<Duration>,
    /// Stripes at n live distinct holders / all stripes (over every representative).
    pub stripes_at_n: (usize, usize),
    /// Stripes where a live node holds two shards (fewer than n light nodes remain).
    pub colocated_stripes: usize,
    /// Shards re-created during re-replication.
    pub shards_rereplicated: usize,
    /// Held txs restored from their stripes after the kill, signatures verified / held.
    pub restored: (usize, usize),
    /// Stripes that failed to restore.
    pub stripe_restore_failures: usize,
    /// Right after the kill, before re-replication: stripes restored from the shards of
    /// their live holders (any k of n) / stripes restored while their departed holders
    /// were still their holders.
    pub degraded_restored: (usize, usize),
    /// Most holders of one stripe offline during those restores (m when all killed nodes
    /// held a shard of it).
    pub degraded_holders_down: usize,
    /// Txs restored one at a time through the repair path, intact / tried.
    pub repair_restored: (usize, usize),
    /// Per-tx restore latencies (repair path), sorted.
    pub restore_latencies: Vec<Duration>,
    /// Repair requests over the gateways, per serving tier (`None` before that phase).
    pub repair: Option<super::RepairFigures>,
    /// Sampled txs of the first representative read back Federated after its restart /
    /// asked.
    pub after_restart: (usize, usize),
    /// Bad-input cases.
    pub bad_cases: Vec<BadCase>,
}

/// The bounds the verdict applies, copied from the [`DemoConfig`].
#[derive(Debug, Clone, Default)]
pub struct Thresholds {
    /// Most a departure may take to be seen.
    pub detect: Duration,
    /// Most held → ordered p99 may be.
    pub ordered_p99: Duration,
    /// Most held → federated p99 may be.
    pub federated_p99: Duration,
}

impl Thresholds {
    pub(crate) fn of(cfg: &DemoConfig) -> Self {
        Thresholds {
            detect: cfg.detect_bound,
            ordered_p99: cfg.max_ordered_p99,
            federated_p99: cfg.max_federated_p99,
        }
    }
}

/// What mutual TLS on node links costs: the same txs into two fresh devnets of the same
/// shape, one plaintext and one over TLS, in the same process.
#[derive(Debug, Clone, Default)]
pub struct TlsCost {
    /// Txs offered to each.
    pub txs: usize,
    /// Held tx/s with TLS.
    pub tls_tps: f64,
    /// Submit → Held p99 with TLS.
    pub tls_p99: Duration,
    /// Held tx/s plaintext (`--insecure`).
    pub insecure_tps: f64,
    /// Submit → Held p99 plaintext.
    pub insecure_p99: Duration,
}

pub(crate) fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

impl DemoReport {
    /// Held txs per second during the first phase's load.
    pub fn throughput(&self) -> f64 {
        self.ordering
            .as_ref()
            .map_or(0.0, OrderingFigures::throughput)
    }
    /// Submit → Held latency at quantile `q`.
    pub fn latency(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }
    /// Restore latency at quantile `q`.
    pub fn restore_latency(&self, q: f64) -> Duration {
        quantile(&self.restore_latencies, q)
    }

    /// Every check that failed, each naming what it checked; empty when the run showed
    /// the system working.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if let Some(r) = &self.repair {
            if !r.failures.is_empty() {
                f.push(format!(
                    "repair requests: {} did not complete by the expected tier ({})",
                    r.failures.len(),
                    r.failures.first().map_or("", String::as_str)
                ));
            }
            if r.resubmitted.0 != r.resubmitted.1 {
                f.push(format!(
                    "resubmission: {} of {} held txs answered their current state",
                    r.resubmitted.0, r.resubmitted.1
                ));
            }
        }
        let inside = self.offered - self.offered_outside;
        if self.held != inside {
            f.push(format!(
                "held: {} of {inside} txs inside the city answered Held",
                self.held
            ));
        }
        if self.rejected_pop != self.offered_outside {
            f.push(format!(
                "proof of place: {} of {} txs from outside the city rejected",
                self.rejected_pop, self.offered_outside
            ));
        }
        if self.read_back.0 != self.read_back.1 || self.read_back.1 == 0 {
            f.push(format!(
                "read-back: {}/{} sampled txs intact with verified receipts",
                self.read_back.0, self.read_back.1
            ));
        }
        for (name, phase) in [
            ("ordering", &self.ordering),
            ("after killing one representative", &self.after_kill),
        ] {
            let Some(o) = phase else {
                f.push(format!("{name}: did not run"));
                continue;
            };
            if o.held == 0 {
                f.push(format!("{name}: no tx held"));
            }
            if o.ordered != o.held {
                f.push(format!(
                    "{name}: {} of {} held txs Ordered on every live representative {:?}{}",
                    o.ordered,
                    o.held,
                    o.live,
                    examples(&o.missing)
                ));
            }
            if o.federated != o.held {
                f.push(format!(
                    "{name}: {} of {} held txs Federated on every live representative {:?}{}",
                    o.federated,
                    o.held,
                    o.live,
                    examples(&o.missing)
                ));
            }
            if o.held_to_ordered.len() != o.held {
                f.push(format!(
                    "{name}: held → ordered measured for {} of {} txs",
                    o.held_to_ordered.len(),
                    o.held
                ));
            }
            if o.held_to_federated.len() != o.held {
                f.push(format!(
                    "{name}: held → federated measured for {} of {} txs",
                    o.held_to_federated.len(),
                    o.held
                ));
            }
            if o.ordered_latency(0.99) > self.thresholds.ordered_p99 {
                f.push(format!(
                    "{name}: held → ordered p99 {} over the {} bound",
                    ms(o.ordered_latency(0.99)),
                    ms(self.thresholds.ordered_p99)
                ));
            }
            if o.federated_latency(0.99) > self.thresholds.federated_p99 {
                f.push(format!(
                    "{name}: held → federated p99 {} over the {} bound",
                    ms(o.federated_latency(0.99)),
                    ms(self.thresholds.federated_p99)
                ));
            }
            if o.commits == 0 {
                f.push(format!("{name}: no checkpoint committed during the load"));
            }
        }
        match self.continent_killed_at {
            Some((at, of)) if at < of => {}
            Some((at, of)) => f.push(format!(
                "continent restart: happened after {at} of {of} answers, not during the load"
            )),
            None => f.push("continent restart: did not happen".into()),
        }
        if self.caught_up.0 != self.caught_up.1 || self.caught_up.1 == 0 {
            f.push(format!(
                "catch-up: the restarted representative {} ordered {} of {} txs",
                self.killed_rep.map_or("?".into(), |r| r.to_string()),
                self.caught_up.0,
                self.caught_up.1
            ));
        }
        if self.agreements.is_empty() {
            f.push("identical sequences: never compared".into());
        }
        for a in &self.agreements {
            if let Some((seq, x, y)) = a.mismatch {
                f.push(format!(
                    "identical sequences ({}): checkpoint {seq} differs between representatives {x} and {y}",
                    a.label
                ));
            }
            for (r, n) in &a.committed {
                if *n < a.target {
                    f.push(format!(
                        "identical sequences ({}): representative {r} committed {n} checkpoints, not the {} the others reached",
                        a.label, a.target
                    ));
                }
            }
            if a.target == 0 || a.compared < a.target {
                f.push(format!(
                    "identical sequences ({}): {} of {} checkpoints compared",
                    a.label, a.compared, a.target
                ));
            }
            if a.duplicates > 0 {
                f.push(format!(
                    "nothing twice ({}): {} tx items committed a second time",
                    a.label, a.duplicates
                ));
            }
        }
        if self.inclusion_verified.0 != self.inclusion_verified.1 || self.inclusion_verified.1 == 0
        {
            f.push(format!(
                "inclusion proofs: {} of {} checkpoints carrying the load verified in the continent log",
                self.inclusion_verified.0, self.inclusion_verified.1
            ));
        }
        match self.detect_time {
            Some(d) if d <= self.thresholds.detect => {}
            _ => f.push(format!(
                "departures: not seen by every representative within {}",
                ms(self.thresholds.detect)
            )),
        }
        if self.rereplication_time.is_none() || self.stripes_at_n.0 != self.stripes_at_n.1 {
            f.push(format!(
                "re-replication: {} of {} stripes back at n live holders",
                self.stripes_at_n.0, self.stripes_at_n.1
            ));
        }
        if self.degraded_restored.0 != self.degraded_restored.1
            || self.degraded_restored.1 == 0
            || self.degraded_holders_down < self.killed
        {
            f.push(format!(
                "restore with m holders offline: {} of {} stripes restored before re-replication ({} holders of a stripe down, {} killed)",
                self.degraded_restored.0,
                self.degraded_restored.1,
                self.degraded_holders_down,
                self.killed
            ));
        }
        if self.restored.0 != self.restored.1 || self.stripe_restore_failures > 0 {
            f.push(format!(
                "restore: {} of {} held txs restored from shards ({} stripes failed)",
                self.restored.0, self.restored.1, self.stripe_restore_failures
            ));
        }
        if self.repair_restored.0 != self.repair_restored.1 || self.repair_restored.1 == 0 {
            f.push(format!(
                "repair path: {} of {} txs restored intact",
                self.repair_restored.0, self.repair_restored.1
            ));
        }
        if self.after_restart.0 != self.after_restart.1 || self.after_restart.1 == 0 {
            f.push(format!(
                "restart: {} of {} sampled txs read back Federated after the representative restarted",
                self.after_restart.0, self.after_restart.1
            ));
        }
        if self.bad_cases.is_empty() {
            f.push("bad input: no case ran".into());
        }
        for c in self.bad_cases.iter().filter(|c| !c.passed()) {
            f.push(format!(
                "bad input: {} not rejected as {}",
                c.name, c.expected
            ));
        }
        f
    }

    /// True if no check failed (see [`DemoReport::failures`]).
    pub fn ok(&self) -> bool {
        self.failures().is_empty()
    }

    /// The printed table, ending with the failed checks (if any) and the result.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let frac = |(a, b): (usize, usize)| format!("{a}/{b}");
        let line = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<48} {v:>20}");
        };
        let _ = writeln!(
            s,
            "\nCity Chain devnet — presence + {} light nodes + a city committee of {} representatives + a continent, real gRPC on loopback, ML-DSA-87",
            self.lights, self.reps
        );
        let _ = writeln!(s, "{:-<74}", "");
        let _ = writeln!(s, "load (both phases)");
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
        line(&mut s, "pre-signing (untimed)", ms(self.presign_time));
        line(&mut s, "read back with GetTx", frac(self.read_back));
        line(
            &mut s,
            "receipts verified on read-back",
            self.receipts_checked.to_string(),
        );
        if let Some(o) = &self.ordering {
            let _ = writeln!(
                s,
                "all {} representatives live (load round robin over them)",
                o.live.len()
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
                "baseline: raw verify (32 keys, distinct tx ids)",
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
            render_ordering(&mut s, o);
        }
        if let Some(t) = &self.tls_cost {
            let _ = writeln!(
                s,
                "node links: mutual TLS (X25519MLKEM768) vs plaintext, {} txs each, fresh devnets",
                t.txs
            );
            line(
                &mut s,
                "held tx/s TLS / plaintext",
                format!(
                    "{:.0} / {:.0} (ratio {:.3})",
                    t.tls_tps,
                    t.insecure_tps,
                    t.tls_tps / t.insecure_tps.max(1e-9)
                ),
            );
            line(
                &mut s,
                "submit → held p99 TLS / plaintext",
                format!("{} / {}", ms(t.tls_p99), ms(t.insecure_p99)),
            );
        }
        if let Some(o) = &self.after_kill {
            let _ = writeln!(
                s,
                "after killing one representative (kill -9 rep {}; continent restarted mid-load)",
                self.killed_rep.map_or("?".into(), |r| r.to_string())
            );
            line(&mut s, "held", o.held.to_string());
            line(&mut s, "load time", ms(o.load_time));
            line(
                &mut s,
                "throughput (submit → held)",
                format!("{:.0} tx/s", o.throughput()),
            );
            if let Some((at, of)) = self.continent_killed_at {
                line(
                    &mut s,
                    "continent killed after answers",
                    format!("{at}/{of}"),
                );
            }
            render_ordering(&mut s, o);
            line(
                &mut s,
                "restarted rep: txs Ordered on it",
                frac(self.caught_up),
            );
            line(
                &mut s,
                "restarted rep: caught up after",
                self.catch_up_time.map_or("NOT REACHED".into(), ms),
            );
        }
        let _ = writeln!(s, "one history");
        for a in &self.agreements {
            line(
                &mut s,
                &format!("identical checkpoints ({})", a.label),
                format!(
                    "{} {}",
                    a.compared,
                    if a.holds() { "equal" } else { "DIFFER" }
                ),
            );
            line(
                &mut s,
                &format!("tx items committed twice ({})", a.label),
                a.duplicates.to_string(),
            );
        }
        line(
            &mut s,
            "inclusion proofs verified (checkpoints)",
            frac(self.inclusion_verified),
        );
        line(
            &mut s,
            "continent log size",
            self.continent_log_size.to_string(),
        );
        let _ = writeln!(s, "durability");
        line(
            &mut s,
            "light nodes killed (1 crash, rest leave)",
            self.killed.to_string(),
        );
        line(
            &mut s,
            "departure seen by every representative after",
            self.detect_time.map_or("NOT SEEN".into(), ms),
        );
        line(
            &mut s,
            "every stripe back at n holders after",
            self.rereplication_time.map_or("NOT REACHED".into(), ms),
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
            &format!(
                "restored with {} holders down (pre re-repl.)",
                self.degraded_holders_down
            ),
            frac(self.degraded_restored),
        );
        line(
            &mut s,
            "held txs restored from shards, verified",
            frac(self.restored),
        );
        line(
            &mut s,
            "repair path: txs restored intact",
            frac(self.repair_restored),
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
            "read back Federated after rep 0 restart",
            frac(self.after_restart),
        );
        if let Some(r) = &self.repair {
            let _ = writeln!(s, "{:-<74}", "");
            r.render(&mut s);
        }
        let _ = writeln!(s, "{:-<74}", "");
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
        let _ = writeln!(s, "{:-<74}", "");
        let failures = self.failures();
        for f in &failures {
            let _ = writeln!(s, "  FAILED: {f}");
        }
        let _ = writeln!(
            s,
            "result: {}",
            if failures.is_empty() {
                "OK".to_string()
            } else {
                format!("FAILED ({} checks)", failures.len())
            }
        );
        s
    }
}

fn render_ordering(s: &mut String, o: &OrderingFigures) {
    let line = |s: &mut String, k: &str, v: String| {
        let _ = writeln!(s, "  {k:<48} {v:>20}");
    };
    line(
        s,
        "held txs Ordered on every live rep",
        format!("{}/{}", o.ordered, o.held),
    );
    line(
        s,
        "held txs Federated on every live rep",
        format!("{}/{}", o.federated, o.held),
    );
    line(s, "held → ordered p50", ms(o.ordered_latency(0.50)));
    line(s, "held → ordered p99", ms(o.ordered_latency(0.99)));
    line(s, "held → federated p50", ms(o.federated_latency(0.50)));
    line(s, "held → federated p99", ms(o.federated_latency(0.99)));
    line(
        s,
        "checkpoints committed during the load",
        o.commits.to_string(),
    );
    line(
        s,
        "commits/s (first to last commit)",
        if o.commits < 2 {
            "n/a (one commit)".into()
        } else {
            format!("{:.1}", o.commits_per_sec())
        },
    );
    line(
        s,
        "all Federated after the last Held answer",
        o.settled_after.map_or("NOT REACHED".into(), ms),
    );
}

fn examples(missing: &[String]) -> String {
    if missing.is_empty() {
        String::new()
    } else {
        format!(" (e.g. {})", missing.join("; "))
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn phase(live: Vec<usize>, held: usize) -> OrderingFigures {
        OrderingFigures {
            live,
            held,
            load_time: Duration::from_secs(1),
            ordered: held,
            federated: held,
            held_to_ordered: vec![Duration::from_millis(300); held],
            held_to_federated: vec![Duration::from_millis(500); held],
            commits: 10,
            commit_span: Duration::from_secs(1),
            settled_after: Some(Duration::from_millis(600)),
            missing: Vec::new(),
        }
    }

    fn agreement(label: &str, reps: usize) -> Agreement {
        Agreement {
            label: label.into(),
            committed: (0..reps).map(|r| (r, 12)).collect(),
            target: 12,
            compared: 12,
            mismatch: None,
            duplicates: 0,
        }
    }

    /// A report of a run where everything worked.
    fn passing() -> DemoReport {
        DemoReport {
            thresholds: Thresholds {
                detect: Duration::from_secs(20),
                ordered_p99: Duration::from_secs(10),
                federated_p99: Duration::from_secs(20),
            },
            offered: 100,
            offered_outside: 2,
            held: 98,
            rejected_pop: 2,
            reps: 4,
            read_back: (10, 10),
            ordering: Some(phase(vec![0, 1, 2, 3], 78)),
            after_kill: Some(phase(vec![0, 1, 2], 20)),
            killed_rep: Some(3),
            continent_killed_at: Some((10, 20)),
            caught_up: (98, 98),
            catch_up_time: Some(Duration::from_millis(200)),
            agreements: vec![agreement("3 live reps", 3), agreement("all 4 reps", 4)],
            inclusion_verified: (12, 12),
            detect_time: Some(Duration::from_secs(2)),
            rereplication_time: Some(Duration::from_secs(3)),
            stripes_at_n: (8, 8),
            restored: (98, 98),
            degraded_restored: (8, 8),
            degraded_holders_down: 2,
            killed: 2,
            repair_restored: (5, 5),
            after_restart: (3, 3),
            bad_cases: vec![BadCase {
                name: "replayed tx",
                expected: RejectCode::DuplicateTx,
                got: Ok(rpc::Rejection::new(RejectCode::DuplicateTx, "seen", None)),
            }],
            ..DemoReport::default()
        }
    }

    /// Breaking the report with `fault` fails the verdict with a check starting `named`.
    fn check(fault: impl FnOnce(&mut DemoReport), named: &str) {
        let mut r = passing();
        fault(&mut r);
        let f = r.failures();
        assert!(!r.ok());
        assert!(
            f.iter().any(|m| m.starts_with(named)),
            "want a failure named {named:?}, got {f:#?}"
        );
        assert!(r.render().contains(&format!("FAILED: {named}")));
    }

    fn after_kill(r: &mut DemoReport) -> &mut OrderingFigures {
        r.after_kill.as_mut().unwrap()
    }

    #[test]
    fn a_working_run_passes() {
        let r = passing();
        assert_eq!(r.failures(), Vec::<String>::new());
        assert!(r.render().ends_with("result: OK\n"));
    }

    #[test]
    fn every_check_names_itself() {
        check(|r| r.held -= 1, "held:");
        check(|r| r.rejected_pop -= 1, "proof of place:");
        check(|r| r.read_back.0 -= 1, "read-back:");
        check(|r| r.ordering = None, "ordering: did not run");
        check(
            |r| r.ordering.as_mut().unwrap().ordered -= 1,
            "ordering: 77 of 78 held txs Ordered",
        );
        check(
            |r| after_kill(r).federated -= 1,
            "after killing one representative: 19 of 20 held txs Federated",
        );
        check(
            |r| {
                after_kill(r).held_to_federated.pop();
            },
            "after killing one representative: held → federated measured",
        );
        check(
            |r| after_kill(r).held_to_ordered = vec![Duration::from_secs(11); 20],
            "after killing one representative: held → ordered p99",
        );
        check(
            |r| after_kill(r).held_to_federated = vec![Duration::from_secs(21); 20],
            "after killing one representative: held → federated p99",
        );
        check(
            |r| after_kill(r).commits = 0,
            "after killing one representative: no checkpoint",
        );
        check(
            |r| r.continent_killed_at = Some((20, 20)),
            "continent restart:",
        );
        check(|r| r.caught_up.0 -= 1, "catch-up:");
        check(
            |r| r.agreements.clear(),
            "identical sequences: never compared",
        );
        check(
            |r| r.agreements[1].mismatch = Some((4, 0, 3)),
            "identical sequences (all 4 reps): checkpoint 4 differs",
        );
        check(
            |r| r.agreements[1].committed[3].1 = 11,
            "identical sequences (all 4 reps): representative 3 committed 11",
        );
        check(
            |r| r.agreements[0].duplicates = 1,
            "nothing twice (3 live reps)",
        );
        check(|r| r.inclusion_verified.0 -= 1, "inclusion proofs:");
        check(|r| r.detect_time = None, "departures:");
        check(
            |r| r.detect_time = Some(Duration::from_secs(21)),
            "departures:",
        );
        check(|r| r.rereplication_time = None, "re-replication:");
        check(|r| r.stripe_restore_failures = 1, "restore:");
        check(
            |r| r.degraded_restored.0 -= 1,
            "restore with m holders offline: 7 of 8",
        );
        check(
            |r| r.degraded_holders_down = 1,
            "restore with m holders offline:",
        );
        check(|r| r.repair_restored.0 -= 1, "repair path:");
        check(|r| r.after_restart.0 -= 1, "restart:");
        check(
            |r| r.bad_cases[0].got = Err("ACCEPTED".into()),
            "bad input: replayed tx",
        );
    }
}

//! Following held txs through the committee: wait until each is Ordered (and Federated) on
//! every live representative, read its commit and federation times from the order store of
//! the representative it was submitted to, compare committed sequences in full, and check
//! each federated checkpoint's continent receipt against the continent's Merkle log.

use super::load::HeldAnswer;
use super::report::{Agreement, OrderingFigures};
use crate::{Error, Result};
use node::OrderStore;
use node::continent::ContinentLog;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the order stores are polled while waiting.
const POLL: Duration = Duration::from_millis(100);
/// Missing txs named in a failure.
const EXAMPLES: usize = 3;

/// Runs blocking order-store reads off the reactor.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> Result<R> + Send + 'static) -> Result<R> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Measurement(format!("order-store task: {e}")))?
}

/// What a live representative's order store says about one tx.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// Its commit time there, once ordered.
    ordered_ms: Option<u64>,
    /// Its checkpoint sequence, once ordered.
    sequence: Option<u64>,
    /// When its checkpoint's continent receipt arrived there.
    federated_ms: Option<u64>,
}

/// The result of waiting on a set of txs.
pub(crate) struct Settled {
    /// Per representative (same order as the stores), per answer.
    seen: Vec<Vec<Seen>>,
    /// When the wait ended.
    pub(crate) done_at: Instant,
    /// True if everything reached the wanted state.
    pub(crate) complete: bool,
}

/// Waits (bounded by `wait`) until every answer is Ordered — and Federated if
/// `federated` — on every store.
pub(crate) async fn settle(
    stores: Vec<(usize, Arc<OrderStore>)>,
    answers: Arc<Vec<HeldAnswer>>,
    federated: bool,
    wait: Duration,
) -> Result<Settled> {
    blocking(move || {
        let deadline = Instant::now() + wait;
        let mut seen = vec![vec![Seen::default(); answers.len()]; stores.len()];
        loop {
            let mut complete = true;
            for ((_, store), seen) in stores.iter().zip(seen.iter_mut()) {
                // Federation is per checkpoint: ask once per sequence per pass.
                let mut fed: HashMap<u64, Option<u64>> = HashMap::new();
                for (a, s) in answers.iter().zip(seen.iter_mut()) {
                    if s.sequence.is_none()
                        && let Some(o) = store.ordering(&a.id)?
                    {
                        s.sequence = Some(o.sequence);
                        s.ordered_ms = Some(o.committed_at_ms);
                    }
                    if let Some(seq) = s.sequence
                        && s.federated_ms.is_none()
                        && federated
                    {
                        s.federated_ms = match fed.get(&seq) {
                            Some(v) => *v,
                            None => {
                                let v = store.federated(seq)?.map(|(_, at)| at);
                                fed.insert(seq, v);
                                v
                            }
                        };
                    }
                    complete &= s.sequence.is_some() && (!federated || s.federated_ms.is_some());
                }
            }
            if complete || Instant::now() >= deadline {
                return Ok(Settled {
                    seen,
                    done_at: Instant::now(),
                    complete,
                });
            }
            std::thread::sleep(POLL);
        }
    })
    .await
}

impl Settled {
    /// Answers Ordered on every store.
    pub(crate) fn ordered(&self) -> usize {
        self.count(|s| s.sequence.is_some())
    }

    /// Answers Federated on every store.
    pub(crate) fn federated(&self) -> usize {
        self.count(|s| s.federated_ms.is_some())
    }

    fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
        let n = self.seen.first().map_or(0, Vec::len);
        (0..n)
            .filter(|&i| self.seen.iter().all(|rep| f(&rep[i])))
            .count()
    }

    /// A few txs still missing somewhere, named with the representative.
    fn missing(&self, live: &[usize], answers: &[HeldAnswer], federated: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (rep, seen) in live.iter().zip(&self.seen) {
            for (a, s) in answers.iter().zip(seen) {
                let what = if s.sequence.is_none() {
                    "not ordered"
                } else if federated && s.federated_ms.is_none() {
                    "not federated"
                } else {
                    continue;
                };
                out.push(format!(
                    "tx {} (held by rep {}) {what} on rep {rep}",
                    a.id, a.rep
                ));
                if out.len() >= EXAMPLES {
                    return out;
                }
            }
        }
        out
    }
}

/// The ordering figures of one phase: latencies measured on the representative each tx was
/// submitted to, commits/s on `live[0]`.
pub(crate) async fn figures(
    live: &[usize],
    stores: &[(usize, Arc<OrderStore>)],
    answers: &[HeldAnswer],
    settled: &Settled,
    load_started_ms: u64,
    load_time: Duration,
    last_answer: Instant,
) -> Result<OrderingFigures> {
    let mut o = OrderingFigures {
        live: live.to_vec(),
        held: answers.len(),
        load_time,
        ordered: settled.ordered(),
        federated: settled.federated(),
        settled_after: settled
            .complete
            .then(|| settled.done_at.saturating_duration_since(last_answer)),
        missing: settled.missing(live, answers, true),
        ..OrderingFigures::default()
    };
    let col = |rep: usize| live.iter().position(|r| *r == rep).unwrap_or(0);
    let mut last_seq = None::<u64>;
    for (i, a) in answers.iter().enumerate() {
        let s = settled.seen[col(a.rep)][i];
        if let Some(at) = s.ordered_ms {
            o.held_to_ordered
                .push(Duration::from_millis(at.saturating_sub(a.held_ms)));
        }
        if let Some(at) = s.federated_ms {
            o.held_to_federated
                .push(Duration::from_millis(at.saturating_sub(a.held_ms)));
        }
        if let Some(seq) = settled.seen[0][i].sequence {
            last_seq = Some(last_seq.map_or(seq, |l| l.max(seq)));
        }
    }
    o.held_to_ordered.sort();
    o.held_to_federated.sort();
    if let (Some(last), Some((_, store))) = (last_seq, stores.first()) {
        let store = store.clone();
        let (commits, span) = blocking(move || {
            let Some(end) = store.checkpoint(last)? else {
                return Ok((0, Duration::ZERO));
            };
            // Walk back to the first checkpoint committed after the load started.
            let mut first = (last, end.committed_at_ms);
            for seq in (0..last).rev() {
                match store.checkpoint(seq)? {
                    Some(c) if c.committed_at_ms >= load_started_ms => {
                        first = (seq, c.committed_at_ms)
                    }
                    _ => break,
                }
            }
            Ok((
                last - first.0 + 1,
                Duration::from_millis(end.committed_at_ms.saturating_sub(first.1)),
            ))
        })
        .await?;
        o.commits = commits;
        o.commit_span = span;
    }
    Ok(o)
}

/// Compares the committed checkpoint sequences of `stores` in full: every store must reach
/// the highest count seen at the start (within `wait`), and every checkpoint hash below the
/// lowest count must be equal.
pub(crate) async fn agreement(
    label: &str,
    stores: Vec<(usize, Arc<OrderStore>)>,
    wait: Duration,
) -> Result<Agreement> {
    let label = label.to_string();
    blocking(move || {
        let target = stores.iter().map(|(_, s)| s.committed()).max().unwrap_or(0);
        let deadline = Instant::now() + wait;
        while stores.iter().any(|(_, s)| s.committed() < target) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        let committed: Vec<(usize, u64)> =
            stores.iter().map(|(r, s)| (*r, s.committed())).collect();
        let compared = committed.iter().map(|(_, n)| *n).min().unwrap_or(0);
        let mut mismatch = None;
        'seq: for seq in 0..compared {
            let mut first: Option<(usize, dag_core::Hash32)> = None;
            for (r, s) in &stores {
                let h = s.checkpoint(seq)?.map(|c| c.checkpoint.hash());
                let Some(h) = h else {
                    mismatch = Some((seq, *r, *r));
                    break 'seq;
                };
                match first {
                    None => first = Some((*r, h)),
                    Some((r0, h0)) if h0 != h => {
                        mismatch = Some((seq, r0, *r));
                        break 'seq;
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(Agreement {
            label,
            committed,
            target,
            compared,
            mismatch,
            duplicates: stores.iter().map(|(_, s)| s.duplicates()).sum(),
        })
    })
    .await
}

/// For every checkpoint that carries one of `answers` (as `store` ordered them), checks the
/// federation proof it recorded: offline against `genesis` (the committee's quorum
/// certificate, the continent's signature, the Merkle path to the receipt's root), and
/// against `log` (the log holds that leaf under that root). Returns (verified, needed).
pub(crate) async fn verify_inclusion(
    store: Arc<OrderStore>,
    log: Arc<ContinentLog>,
    answers: Arc<Vec<HeldAnswer>>,
    genesis: Arc<node::genesis::Genesis>,
    tamper: bool,
) -> Result<(usize, usize)> {
    blocking(move || {
        let mut seqs = BTreeSet::new();
        for a in answers.iter() {
            if let Some(o) = store.ordering(&a.id)? {
                seqs.insert(o.sequence);
            } else {
                // Not ordered: counted as needed and not verified.
                seqs.insert(u64::MAX);
            }
        }
        let mut ok = 0;
        let mut tampered = false;
        for &seq in &seqs {
            if seq == u64::MAX {
                continue;
            }
            let Some((mut bytes, _)) = store.federated(seq)? else {
                continue;
            };
            // The TamperedProof fault: the first proof checked has one byte flipped.
            if tamper && !tampered {
                tampered = true;
                let i = bytes.len() / 2;
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 0x01;
                }
            }
            if receipt_in_log(&bytes, &log, &genesis) {
                ok += 1;
            } else {
                tracing::error!(seq, "continent receipt does not match the continent log");
            }
        }
        Ok((ok, seqs.len()))
    })
    .await
}

/// The recorded [`rpc::FederationProof`] verifies offline against the genesis committee and
/// continent key, and names a leaf the log holds under a root the log had at that size.
fn receipt_in_log(bytes: &[u8], log: &ContinentLog, genesis: &node::genesis::Genesis) -> bool {
    let Ok(fed) = rpc::FederationProof::decode(bytes) else {
        return false;
    };
    let (Some(city), Some(continent)) = (
        genesis
            .cities
            .values()
            .find(|c| c.city == fed.certified.header.city),
        genesis.continent.as_ref(),
    ) else {
        return false;
    };
    if fed.verify(&city.committee, &continent.public_key).is_err() {
        return false;
    }
    let r = &fed.receipt;
    match log.proof(r.log_index, r.tree_size) {
        Ok(p) => p.root == r.root && p.leaf == r.leaf && p.proof.verify(&r.leaf, &r.root).is_ok(),
        Err(_) => false,
    }
}

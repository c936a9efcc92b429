//! A representative's push of its committed checkpoints to the continent, read from a
//! durable [`CheckpointSource`] (never from a bounded in-memory queue), so outages of any
//! length and restarts lose nothing.
//!
//! The pusher ([`spawn_checkpoint_pusher`]) asks the continent where the city stands
//! (`GetCityHead`) and starts at the smaller of that and [`CheckpointSource::federated_upto`]
//! (so a checkpoint the continent logged from other members' shares still gets its proof
//! recorded here). Then, in sequence order, it signs its share of each checkpoint's header
//! and pushes it:
//! - a proof back → checked (header, leaf, path, the continent's receipt signature) and
//!   recorded with [`CheckpointSource::record_federated`]; next sequence;
//! - `AwaitingQuorum` → the same push again after a short backoff (25 ms doubling to
//!   500 ms by default): the other members' shares are on their way;
//! - `Gap { expected }` → rewind to `expected` (gaps are filled, never skipped);
//! - a transient failure (continent down, deadline, store) → retried forever with the
//!   [`PusherConfig::retry`] backoff;
//! - a refusal (fork, wrong prev, not a member, bad signature, a receipt that does not
//!   check) → logged and counted ([`PusherStats::refusals`]), then the *same* sequence is
//!   retried after [`PusherConfig::refusal_backoff`]: skipping it could never help, since
//!   the continent only appends in order, and an operator may fix the cause (config, keys).

use crate::{Error, Result};
use dag_core::Hash32;
use dag_core::consensus::Checkpoint;
use pqc::Keypair;
use resilience::RetryPolicy;
use rpc::{
    CertifiedCheckpoint, CheckpointHeader, FederationClient, FederationError, FederationProof,
    LogKind, sign_share,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where a representative's committed checkpoints come from and where their federation
/// proofs go: implemented over the representative's durable consensus records.
pub trait CheckpointSource: Send + Sync {
    /// Checkpoint `seq`, if committed (and not pruned).
    fn checkpoint(&self, seq: u64) -> Result<Option<Checkpoint>>;
    /// The number of checkpoints committed so far (sequences `0..n`); wakes on commits.
    fn committed(&self) -> watch::Receiver<u64>;
    /// Stores the federation proof of checkpoint `seq` durably (may be called again for a
    /// sequence already recorded, with an equal proof).
    fn record_federated(&self, seq: u64, proof: FederationProof) -> Result<()>;
    /// The first sequence without a recorded proof (every lower one has one).
    fn federated_upto(&self) -> u64;
    /// The state root after checkpoint `seq` that its header certifies. A source whose
    /// [`CheckpointSource::committed`] counts only executed checkpoints answers for every
    /// sequence below it. The default is for sources that execute nothing: zero.
    fn state_root(&self, seq: u64) -> Result<Hash32> {
        let _ = seq;
        Ok(Hash32([0; 32]))
    }
}

/// Configuration of [`spawn_checkpoint_pusher`]; [`PusherConfig::new`] holds the defaults.
#[derive(Debug, Clone)]
pub struct PusherConfig {
    /// The continent's gRPC address.
    pub addr: String,
    /// The city id the continent knows this city by.
    pub city: Hash32,
    /// The continent's ML-DSA-87 public key (receipts are checked against it).
    pub continent_key: Vec<u8>,
    /// Backoff on transient failures (`max_attempts` is ignored: retries never stop).
    pub retry: RetryPolicy,
    /// First wait after `AwaitingQuorum`.
    pub quorum_backoff_min: Duration,
    /// Longest wait after repeated `AwaitingQuorum`.
    pub quorum_backoff_max: Duration,
    /// Wait before pushing a refused sequence again.
    pub refusal_backoff: Duration,
    /// Deadline of one call.
    pub timeout: Duration,
    /// Mutual TLS to the continent, which must prove the NodeId of `continent_key`. The
    /// pusher has no data directory of its own: the default (`OwnIdentity`) must be replaced
    /// by the city's resolved links (the committee does) or an explicit `Insecure`, else
    /// spawning fails with `TlsError::Unresolved`.
    pub links: rpc::tls::LinkSecurity,
}

impl PusherConfig {
    /// Defaults: transient backoff 100 ms doubling to 5 s (equal jitter), quorum backoff
    /// 25 ms doubling to 500 ms, 5 s after a refusal, 2 s deadlines.
    pub fn new(addr: impl Into<String>, city: Hash32, continent_key: Vec<u8>) -> Self {
        PusherConfig {
            addr: addr.into(),
            city,
            continent_key,
            retry: RetryPolicy {
                max_attempts: u32::MAX,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(5),
                ..RetryPolicy::default()
            },
            quorum_backoff_min: Duration::from_millis(25),
            quorum_backoff_max: Duration::from_millis(500),
            refusal_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            links: rpc::tls::LinkSecurity::default(),
        }
    }
}

/// Counters of a pusher.
#[derive(Debug, Default)]
pub struct PusherStats {
    /// Checkpoints whose proof was recorded.
    pub federated: AtomicU64,
    /// `AwaitingQuorum` answers.
    pub awaiting_quorum: AtomicU64,
    /// `Gap` answers (rewinds).
    pub gaps: AtomicU64,
    /// Transient failures (each retried).
    pub transient_failures: AtomicU64,
    /// Refusals and answers that did not check (each logged, then retried later).
    pub refusals: AtomicU64,
}

/// A running pusher. Drop does not stop it: call [`PusherHandle::shutdown`].
#[derive(Debug)]
pub struct PusherHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    stats: Arc<PusherStats>,
    next: watch::Receiver<u64>,
}

impl PusherHandle {
    /// Counters.
    pub fn stats(&self) -> &Arc<PusherStats> {
        &self.stats
    }
    /// The next sequence to push (every lower one is federated and recorded).
    pub fn next(&self) -> watch::Receiver<u64> {
        self.next.clone()
    }
    /// Stops after the call in flight (if any) and waits for the task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
    /// Stops at once.
    pub async fn kill(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Starts pushing `source`'s checkpoints to the continent at `cfg.addr`, signing shares
/// with `key` (see the module docs). Fails only on an unusable address.
pub fn spawn_checkpoint_pusher(
    cfg: PusherConfig,
    key: Keypair,
    source: Arc<dyn CheckpointSource>,
) -> Result<PusherHandle> {
    let client = FederationClient::lazy_over(
        &cfg.addr,
        cfg.timeout,
        &cfg.links,
        Some(dag_core::NodeId::from_public_key(&cfg.continent_key)),
    )
    .map_err(|source| Error::PeerAddress {
        addr: cfg.addr.clone(),
        source,
    })?;
    let (stop, stopped) = watch::channel(false);
    let stats = Arc::new(PusherStats::default());
    let (next_tx, next) = watch::channel(source.federated_upto());
    let task = tokio::spawn(
        Pusher {
            cfg,
            key,
            source,
            client,
            stats: stats.clone(),
            stop: stopped,
            next: next_tx,
        }
        .run(),
    );
    Ok(PusherHandle {
        stop,
        task: Some(task),
        stats,
        next,
    })
}

struct Pusher {
    cfg: PusherConfig,
    key: Keypair,
    source: Arc<dyn CheckpointSource>,
    client: FederationClient,
    stats: Arc<PusherStats>,
    stop: watch::Receiver<bool>,
    next: watch::Sender<u64>,
}

impl Pusher {
    /// Sleeps `d`; false when asked to stop meanwhile.
    async fn pause(&mut self, d: Duration) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = self.stop.changed() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    async fn run(mut self) {
        let mut committed = self.source.committed();
        let mut transient = 0u32;
        let head = loop {
            match self.client.city_head(self.cfg.city).await {
                Ok(h) => break h,
                Err(e) => {
                    transient = transient.saturating_add(1);
                    self.stats
                        .transient_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "GetCityHead failed; retrying");
                    let d = self.cfg.retry.delay(transient);
                    if !self.pause(d).await {
                        return;
                    }
                }
            }
        };
        let mut next = self.source.federated_upto().min(head.next_sequence);
        tracing::info!(city = %self.cfg.city.short(), from = next, "federation pusher started");
        transient = 0;
        let mut quorum_wait = self.cfg.quorum_backoff_min;
        loop {
            if *self.stop.borrow() {
                return;
            }
            self.next.send_replace(next);
            let upto = *committed.borrow_and_update();
            if next >= upto {
                tokio::select! {
                    _ = self.stop.changed() => return,
                    r = committed.changed() => if r.is_err() { return },
                }
                continue;
            }
            let checkpoint = match self.source.checkpoint(next) {
                Ok(Some(c)) => c,
                Ok(None) | Err(_) => {
                    tracing::warn!(
                        sequence = next,
                        "committed checkpoint not readable; retrying"
                    );
                    if !self.pause(self.cfg.refusal_backoff).await {
                        return;
                    }
                    continue;
                }
            };
            let state_hash = match self.source.state_root(next) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(sequence = next, error = %e, "state root not readable; retrying");
                    if !self.pause(self.cfg.refusal_backoff).await {
                        return;
                    }
                    continue;
                }
            };
            let header = CheckpointHeader {
                state_hash,
                ..CheckpointHeader::of(self.cfg.city, &checkpoint)
            };
            let share = CertifiedCheckpoint::new(header, vec![sign_share(&header, &self.key)]);
            let wait = match self.client.push_checkpoint(&share).await {
                Ok(proof) => match check_proof(&proof, &header, &self.cfg.continent_key) {
                    Ok(()) => match self.source.record_federated(next, proof) {
                        Ok(()) => {
                            self.stats.federated.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("federation_checkpoints_federated").increment(1);
                            next += 1;
                            transient = 0;
                            quorum_wait = self.cfg.quorum_backoff_min;
                            None
                        }
                        Err(e) => {
                            tracing::warn!(sequence = next, error = %e, "recording the proof failed; retrying");
                            transient = transient.saturating_add(1);
                            Some(self.cfg.retry.delay(transient))
                        }
                    },
                    Err(e) => {
                        self.refused(next, &e);
                        Some(self.cfg.refusal_backoff)
                    }
                },
                Err(FederationError::AwaitingQuorum { .. }) => {
                    self.stats.awaiting_quorum.fetch_add(1, Ordering::Relaxed);
                    let w = quorum_wait;
                    quorum_wait = (quorum_wait * 2).min(self.cfg.quorum_backoff_max);
                    Some(w)
                }
                Err(FederationError::Gap { expected, .. }) if expected < next => {
                    self.stats.gaps.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        from = next,
                        to = expected,
                        "continent expects an earlier sequence; rewinding"
                    );
                    next = expected;
                    None
                }
                Err(e) if e.is_retryable() => {
                    transient = transient.saturating_add(1);
                    self.stats
                        .transient_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(sequence = next, error = %e, "push failed; retrying");
                    Some(self.cfg.retry.delay(transient))
                }
                Err(e) => {
                    self.refused(next, &e);
                    Some(self.cfg.refusal_backoff)
                }
            };
            if let Some(d) = wait
                && !self.pause(d).await
            {
                return;
            }
        }
    }

    fn refused(&self, sequence: u64, e: &FederationError) {
        self.stats.refusals.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("federation_push_refusals").increment(1);
        tracing::error!(sequence, error = %e, "continent refused the checkpoint; will retry it");
    }
}

/// Checks what the continent answered for our `header`: the logged certificate is for it,
/// the receipt's leaf is the certificate's, the path leads to the receipt's root, and the
/// receipt is signed by the continent's key. (The quorum was checked by the continent; a
/// client checks it again with the committee.)
fn check_proof(
    p: &FederationProof,
    header: &CheckpointHeader,
    continent_key: &[u8],
) -> std::result::Result<(), FederationError> {
    let bad = |what: &str| FederationError::BadAnswer(what.to_string());
    if p.certified.header != *header {
        return Err(bad("the logged header is not ours"));
    }
    let r = &p.receipt;
    if r.leaf != p.certified.leaf_hash() {
        return Err(bad("receipt leaf is not the certificate's"));
    }
    if p.proof.index != r.log_index || p.proof.size != r.tree_size || p.root != r.root {
        return Err(bad("inclusion proof is not for the receipt"));
    }
    p.proof
        .verify(&r.leaf, &r.root)
        .map_err(|e| FederationError::BadAnswer(e.to_string()))?;
    r.verify(LogKind::Continent, continent_key)
}

/// An in-memory [`CheckpointSource`]: for tests and in-process devnets (nothing survives
/// the process).
#[derive(Debug)]
pub struct MemoryCheckpointSource {
    inner: parking_lot::Mutex<MemoryInner>,
    committed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    checkpoints: Vec<Checkpoint>,
    proofs: BTreeMap<u64, FederationProof>,
}

impl Default for MemoryCheckpointSource {
    fn default() -> Self {
        MemoryCheckpointSource {
            inner: parking_lot::Mutex::default(),
            committed: watch::channel(0).0,
        }
    }
}

impl MemoryCheckpointSource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commits the next checkpoint (its sequence should be the count so far).
    pub fn commit(&self, checkpoint: Checkpoint) {
        let n = {
            let mut g = self.inner.lock();
            g.checkpoints.push(checkpoint);
            g.checkpoints.len() as u64
        };
        self.committed.send_replace(n);
    }

    /// The recorded proof of `seq`.
    pub fn proof(&self, seq: u64) -> Option<FederationProof> {
        self.inner.lock().proofs.get(&seq).cloned()
    }

    /// Number of recorded proofs.
    pub fn proofs(&self) -> usize {
        self.inner.lock().proofs.len()
    }
}

impl CheckpointSource for MemoryCheckpointSource {
    fn checkpoint(&self, seq: u64) -> Result<Option<Checkpoint>> {
        let g = self.inner.lock();
        Ok(usize::try_from(seq)
            .ok()
            .and_then(|i| g.checkpoints.get(i).cloned()))
    }

    fn committed(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    fn record_federated(&self, seq: u64, proof: FederationProof) -> Result<()> {
        self.inner.lock().proofs.insert(seq, proof);
        Ok(())
    }

    fn federated_upto(&self) -> u64 {
        let g = self.inner.lock();
        let mut n = 0;
        while g.proofs.contains_key(&n) {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::consensus::BatchDigest;

    #[test]
    fn memory_source_counts_contiguous_proofs() {
        let s = MemoryCheckpointSource::new();
        let rx = s.committed();
        s.commit(Checkpoint {
            sequence: 0,
            leader_round: 0,
            leader: BatchDigest(Hash32([1; 32])),
            batches: vec![],
            prev_hash: Hash32([0; 32]),
        });
        assert_eq!(*rx.borrow(), 1);
        assert!(s.checkpoint(0).unwrap().is_some());
        assert!(s.checkpoint(1).unwrap().is_none());
        assert_eq!(s.federated_upto(), 0);
    }
}

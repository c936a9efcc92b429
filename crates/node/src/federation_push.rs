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
//!
//! Committee changes ([`CheckpointSource::epochs`]; a source without epochs runs its
//! genesis committee forever and none of this applies):
//! - once per epoch after genesis — when caught up at its first sequence (also on a member
//!   left out of the new committee, which never gets that checkpoint; the epochs are looked
//!   at every [`PusherConfig::quorum_backoff_max`] while caught up), or on first reaching
//!   one of its sequences — a node that was in the OLD committee (or cannot tell: previous
//!   epoch not recorded) pushes its share of the epoch's [`CommitteeHandover`]
//!   ([`CheckpointSource::handover_at`]) until the continent accepts it —
//!   `HandoverAwaitingQuorum` with the quorum backoff, transient failures with
//!   [`PusherConfig::retry`] — or refuses it (logged, counted; the checkpoint pushes go
//!   on). `HandoverTooEarly` (the continent is behind this node's proofs) leaves it for
//!   the next pass. An accepted certificate is checked against the old committee.
//! - `NotMember` for a sequence of an epoch after genesis means the continent does not know
//!   that committee yet: counted ([`PusherStats::awaiting_handover`]), the handover share
//!   pushed again, and the same sequence retried with the quorum backoff.
//! - sequences of an epoch whose committee does not include this node are not pushed: the
//!   pusher waits (polling `GetCityHead`) until the continent logged them from the
//!   members' shares and moves on — at most to the next recorded epoch — without recording
//!   a proof for them ([`PusherStats::skipped`]). It never retries a refusal there.

use crate::{Error, Result};
use dag_core::consensus::Checkpoint;
use dag_core::{Hash32, Signer};
use pqc::Keypair;
use resilience::RetryPolicy;
use rpc::{
    CertifiedCheckpoint, CertifiedHandover, CheckpointHeader, CommitteeHandover, FederationClient,
    FederationError, FederationProof, LogKind, sign_handover_share, sign_share,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A city's committee from one consensus epoch on, as a representative recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitteeEpoch {
    /// The consensus epoch (0 = genesis).
    pub epoch: u64,
    /// Its first checkpoint.
    pub first_seq: u64,
    /// Its committee: `(ML-DSA-87 public key, stake)` in index order.
    pub members: Vec<(Vec<u8>, u64)>,
}

impl CommitteeEpoch {
    /// Whether `public_key` is a member.
    pub fn has_member(&self, public_key: &[u8]) -> bool {
        self.members.iter().any(|(k, _)| k.as_slice() == public_key)
    }
}

/// The epoch in force at `seq` in `epochs` (sorted by first sequence), with the one right
/// before it (epoch number one less) and the next one recorded, if any.
fn epoch_at(
    epochs: &[CommitteeEpoch],
    seq: u64,
) -> (
    Option<&CommitteeEpoch>,
    Option<&CommitteeEpoch>,
    Option<&CommitteeEpoch>,
) {
    let i = epochs.partition_point(|e| e.first_seq <= seq);
    if i == 0 {
        return (None, None, epochs.first());
    }
    let cur = epochs.get(i - 1);
    let prev = i
        .checked_sub(2)
        .and_then(|j| epochs.get(j))
        .filter(|p| cur.is_some_and(|c| p.epoch + 1 == c.epoch));
    (cur, prev, epochs.get(i))
}

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
    /// The committee epochs recorded so far, sorted by epoch (and first sequence). The
    /// default — no epochs known — is a city that runs its genesis committee forever: no
    /// handover is pushed and every sequence is pushed as a member.
    fn epochs(&self) -> Result<Vec<CommitteeEpoch>> {
        Ok(Vec::new())
    }
    /// The handover that starts at `first_seq` for `city`: the epoch recorded as starting
    /// there, after checkpoint `first_seq - 1` (its running hash from
    /// [`CheckpointSource::checkpoint`]). `None` for sequence 0, a sequence no recorded
    /// epoch starts at, or a previous checkpoint not readable.
    fn handover_at(&self, city: Hash32, first_seq: u64) -> Result<Option<CommitteeHandover>> {
        let Some(last) = first_seq.checked_sub(1) else {
            return Ok(None);
        };
        let epochs = self.epochs()?;
        let Some(e) = epochs.iter().find(|e| e.first_seq == first_seq) else {
            return Ok(None);
        };
        let Some(prev) = self.checkpoint(last)? else {
            return Ok(None);
        };
        Ok(Some(CommitteeHandover {
            city,
            epoch: e.epoch,
            last_sequence: last,
            last_running_hash: prev.hash(),
            members: e.members.clone(),
        }))
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
    /// Handovers this node pushed its share of and saw accepted.
    pub handovers: AtomicU64,
    /// Waits on a handover: its shares pooled or the old epoch not logged yet, or this
    /// node's checkpoint share refused (`NotMember`) while the continent does not know the
    /// new committee yet.
    pub awaiting_handover: AtomicU64,
    /// Sequences not pushed because this node was not in their epoch's committee (skipped
    /// once the continent logged them from the members' shares; no proof recorded).
    pub skipped: AtomicU64,
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
    /// The next sequence to push (every lower one is federated and recorded, or — in an
    /// epoch whose committee did not include this node — logged by the continent and
    /// skipped).
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
            handover_done: None,
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

/// What [`Pusher::epoch_step`] decided for a sequence.
enum EpochStep {
    /// Push this node's share.
    Push,
    /// Not a member of its epoch and the continent logged it: continue here.
    SkipTo(u64),
    /// Look again after this long.
    Wait(Duration),
    /// Asked to stop.
    Stop,
}

/// How a handover share push ended.
enum HandoverPush {
    /// The continent accepted it.
    Accepted,
    /// Refused, or not pushable (logged): the checkpoint pushes go on.
    Refused,
    /// Ahead of the continent's log: to be tried again.
    Later,
    /// Asked to stop.
    Stop,
}

struct Pusher {
    /// The epoch whose handover this pusher already pushed its share of (or decided not to).
    handover_done: Option<u64>,
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
                // Caught up. A committee change recorded here starts at `next` before its
                // first checkpoint exists (always so on a member left out of the new
                // committee): hand over now, and look at the epochs again periodically.
                let epochs = self.source.epochs().unwrap_or_default();
                if !epochs.is_empty() && !self.hand_over(&epochs, next).await {
                    return;
                }
                let poll = self.cfg.quorum_backoff_max;
                tokio::select! {
                    _ = self.stop.changed() => return,
                    r = committed.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(poll), if !epochs.is_empty() => {}
                }
                continue;
            }
            match self.epoch_step(next).await {
                EpochStep::Push => {}
                EpochStep::SkipTo(to) => {
                    next = to;
                    continue;
                }
                EpochStep::Wait(d) => {
                    if !self.pause(d).await {
                        return;
                    }
                    continue;
                }
                EpochStep::Stop => return,
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
                Err(FederationError::NotMember { .. }) if self.in_later_epoch(next) => {
                    // The continent does not know this epoch's committee yet: (re)push our
                    // handover share if we were in the old committee, else wait for the
                    // old members to do it.
                    self.stats.awaiting_handover.fetch_add(1, Ordering::Relaxed);
                    self.handover_done = None;
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

    /// Whether `seq` is in an epoch after genesis (by the recorded epochs).
    fn in_later_epoch(&self, seq: u64) -> bool {
        let epochs = self.source.epochs().unwrap_or_default();
        epoch_at(&epochs, seq).0.is_some_and(|e| e.first_seq > 0)
    }

    /// What to do about sequence `next` given the committee epochs: push a share, skip
    /// (not a member of its epoch, and the continent logged it), or wait. Before the first
    /// checkpoint of an epoch it pushes this node's share of the epoch's handover (once per
    /// epoch) when it was in the old committee.
    async fn epoch_step(&mut self, next: u64) -> EpochStep {
        let epochs = match self.source.epochs() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(sequence = next, error = %e, "committee epochs not readable; retrying");
                return EpochStep::Wait(self.cfg.refusal_backoff);
            }
        };
        if epochs.is_empty() {
            // A source without epochs: the genesis committee forever.
            return EpochStep::Push;
        }
        if !self.hand_over(&epochs, next).await {
            return EpochStep::Stop;
        }
        let me = self.key.public_key().to_vec();
        let (cur, _, after) = epoch_at(&epochs, next);
        match cur {
            Some(cur) if cur.has_member(&me) => EpochStep::Push,
            // Not a member (or before the first epoch recorded here: not known as one).
            _ => self.skip_logged(next, after).await,
        }
    }

    /// Once per epoch after genesis, on first reaching one of its sequences (or its first
    /// sequence once caught up): pushes this node's share of the epoch's handover if it was
    /// in the old committee (or cannot tell: the previous epoch is not recorded here).
    /// False when asked to stop.
    async fn hand_over(&mut self, epochs: &[CommitteeEpoch], next: u64) -> bool {
        let (Some(cur), prev, _) = epoch_at(epochs, next) else {
            return true;
        };
        if cur.first_seq == 0 || self.handover_done == Some(cur.epoch) {
            return true;
        }
        let me = self.key.public_key().to_vec();
        if prev.is_none_or(|p| p.has_member(&me)) {
            match self.push_handover_share(cur.first_seq, prev).await {
                HandoverPush::Accepted | HandoverPush::Refused => {}
                // Looked at again on the next pass.
                HandoverPush::Later => return true,
                HandoverPush::Stop => return false,
            }
        }
        self.handover_done = Some(cur.epoch);
        true
    }

    /// Not in the committee of `next`'s epoch: its members federate these sequences. Once
    /// the continent logged `next`, moves on — to the start of `after` (the next recorded
    /// epoch) at most; until then waits.
    async fn skip_logged(&mut self, next: u64, after: Option<&CommitteeEpoch>) -> EpochStep {
        match self.client.city_head(self.cfg.city).await {
            Ok(head) if head.next_sequence > next => {
                let to = after.map_or(head.next_sequence, |a| head.next_sequence.min(a.first_seq));
                self.stats.skipped.fetch_add(to - next, Ordering::Relaxed);
                tracing::debug!(
                    from = next,
                    to,
                    "not a member of this epoch's committee; skipping"
                );
                EpochStep::SkipTo(to)
            }
            Ok(_) => EpochStep::Wait(self.cfg.quorum_backoff_max),
            Err(e) => {
                tracing::debug!(error = %e, "GetCityHead failed; retrying");
                self.stats
                    .transient_failures
                    .fetch_add(1, Ordering::Relaxed);
                EpochStep::Wait(self.cfg.retry.delay(1))
            }
        }
    }

    /// Pushes this node's share of the handover starting at `first_seq` until the
    /// continent accepted it (retrying the retryable answers) or refused it.
    async fn push_handover_share(
        &mut self,
        first_seq: u64,
        prev: Option<&CommitteeEpoch>,
    ) -> HandoverPush {
        let old = prev.and_then(|p| dag_core::consensus::Committee::new(p.members.clone()));
        let mut transient = 0u32;
        let mut wait = self.cfg.quorum_backoff_min;
        loop {
            let handover = match self.source.handover_at(self.cfg.city, first_seq) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    tracing::warn!(
                        first_seq,
                        "no handover readable for this epoch; not pushing one"
                    );
                    return HandoverPush::Refused;
                }
                Err(e) => {
                    tracing::warn!(first_seq, error = %e, "handover not readable; retrying");
                    if !self.pause(self.cfg.refusal_backoff).await {
                        return HandoverPush::Stop;
                    }
                    continue;
                }
            };
            let share = CertifiedHandover::new(
                handover.clone(),
                vec![sign_handover_share(&handover, &self.key)],
            );
            let delay = match self.client.push_handover(&share).await {
                Ok(cert) => {
                    let checked = if cert.handover != handover {
                        Err(FederationError::BadAnswer(
                            "the accepted handover is not ours".into(),
                        ))
                    } else {
                        old.as_ref()
                            .map_or(Ok(0), |old| cert.verify(old))
                            .map(|_| ())
                    };
                    return match checked {
                        Ok(()) => {
                            self.stats.handovers.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("federation_handovers_pushed").increment(1);
                            tracing::info!(
                                epoch = handover.epoch,
                                first_seq,
                                "committee handover accepted by the continent"
                            );
                            HandoverPush::Accepted
                        }
                        Err(e) => {
                            self.refused(first_seq, &e);
                            HandoverPush::Refused
                        }
                    };
                }
                Err(FederationError::HandoverTooEarly { .. }) => {
                    // The continent is behind this node's proofs (it lost its tail?): the
                    // checkpoint pushes rewind it; the handover is tried again after.
                    self.stats.awaiting_handover.fetch_add(1, Ordering::Relaxed);
                    return if self.pause(self.cfg.quorum_backoff_max).await {
                        HandoverPush::Later
                    } else {
                        HandoverPush::Stop
                    };
                }
                Err(FederationError::HandoverAwaitingQuorum { .. }) => {
                    self.stats.awaiting_handover.fetch_add(1, Ordering::Relaxed);
                    let w = wait;
                    wait = (wait * 2).min(self.cfg.quorum_backoff_max);
                    w
                }
                Err(e) if e.is_retryable() => {
                    transient = transient.saturating_add(1);
                    self.stats
                        .transient_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(first_seq, error = %e, "handover push failed; retrying");
                    self.cfg.retry.delay(transient)
                }
                Err(e) => {
                    // Not ours to fix here (a conflict, not a member of the old committee
                    // after all): the checkpoint pushes that follow decide.
                    self.refused(first_seq, &e);
                    return HandoverPush::Refused;
                }
            };
            if !self.pause(delay).await {
                return HandoverPush::Stop;
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
    epochs: BTreeMap<u64, CommitteeEpoch>,
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

    /// Records a committee epoch (as a representative does when the epoch starts).
    pub fn record_epoch(&self, epoch: CommitteeEpoch) {
        self.inner.lock().epochs.insert(epoch.epoch, epoch);
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

    fn epochs(&self) -> Result<Vec<CommitteeEpoch>> {
        Ok(self.inner.lock().epochs.values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::consensus::BatchDigest;

    #[test]
    fn the_epoch_of_a_sequence_and_its_neighbours() {
        let e = |epoch: u64, first_seq: u64| CommitteeEpoch {
            epoch,
            first_seq,
            members: vec![],
        };
        let epochs = vec![e(0, 0), e(1, 10), e(3, 30)];
        let check = |seq: u64, want: (Option<u64>, Option<u64>, Option<u64>)| {
            let (cur, prev, after) = epoch_at(&epochs, seq);
            let n = |x: Option<&CommitteeEpoch>| x.map(|x| x.epoch);
            assert_eq!((n(cur), n(prev), n(after)), want, "sequence {seq}");
        };
        check(0, (Some(0), None, Some(1)));
        check(9, (Some(0), None, Some(1)));
        check(10, (Some(1), Some(0), Some(3)));
        check(29, (Some(1), Some(0), Some(3)));
        // Epoch 2 was not recorded here: epoch 3's predecessor is unknown.
        check(30, (Some(3), None, None));
        check(99, (Some(3), None, None));
        // Before the first recorded epoch.
        let later = vec![e(2, 20)];
        let (cur, prev, after) = epoch_at(&later, 5);
        assert!(cur.is_none() && prev.is_none());
        assert_eq!(after.map(|a| a.epoch), Some(2));
        assert_eq!(epoch_at(&[], 5), (None, None, None));
    }

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

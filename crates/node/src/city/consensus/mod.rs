//! One representative of a city's DAG consensus, on the network: dag-core's pure
//! [`Consensus`] driver inside a tokio task, the `Consensus` gRPC service in front of it,
//! gRPC clients to the other representatives, durable records in redb, and the push of
//! committed checkpoints to the continent.
//!
//! - **Single owner**: one task owns the driver. Inbound messages (already decoded by
//!   [`rpc::ConsensusService`]; malformed bytes are `InvalidArgument` there) arrive through
//!   a bounded queue (full → `ResourceExhausted`); each caller is answered with the driver's
//!   verdict, so a bad signature comes back as `InvalidArgument` (`REJECTED:`) and a sender
//!   outside the committee as `PermissionDenied`. A ticker calls `tick(now)`.
//! - **Persist first**: the task drains what is queued, runs it through the driver, writes
//!   every [`Output::Persist`] record of the group in one redb transaction
//!   (`<data_dir>/consensus.redb`, fsync), and only then sends, answers and emits. A
//!   restarted representative recovers with [`Consensus::recover`] (so it never proposes
//!   or votes twice in a round) and replays its commits from sequence 0: consumers skip
//!   the sequences they already applied. Records are not pruned yet.
//! - **Payload**: items given to [`RepresentativeHandle::submit`] (or a [`Submitter`]) go
//!   into its next proposals. A certificate that arrives too late to be named a parent is
//!   committed through a weak link (dag-core), so every proposed item commits exactly once;
//!   items only queued in memory when the process died are re-submitted by the role after
//!   a restart, minus what the recovered DAG already carries
//!   ([`RepresentativeHandle::in_flight`]).
//! - **Outbound**: per peer a bounded queue and a worker sending with a deadline, up to
//!   [`RepresentativeConfig::send_concurrency`] calls in flight; a full queue drops (the
//!   driver re-sends what matters every `resend_ms`). Fire-and-forget.
//! - **Outputs**: committed sub-DAGs with their commit time ([`CommittedEvent`]) and
//!   equivocation evidence converted for dpos ([`DoubleSignEvidence`]). Federation is not
//!   here: the city role pushes checkpoints from its order store on disk
//!   ([`crate::federation_push`]).
//! - **Epochs** (with an [`EpochPlan`]): the committed sequence decides when a term ends
//!   ([`TermClock`], the rule dpos's `advance_term` applies). The representative emits that
//!   checkpoint, retires the epoch's driver ([`Consensus::retire`]: no more proposals or
//!   votes; commits it still makes are dropped, own items they carry are kept for the next
//!   epoch), asks the plan for the next committee (dpos's elected set, once the execution
//!   feed applied the last checkpoint) and, if it is a member, starts a fresh driver
//!   ([`Consensus::for_epoch`]: rounds from 0, batches tagged with the epoch, checkpoints
//!   continuing the chain without a gap), after persisting an [`EpochState`]. A member left
//!   out stops proposing for good. The previous epoch's driver keeps serving fetches and
//!   re-sending its last certificate to members still finishing that epoch; inbound
//!   batches and certificates go to the driver of their epoch, others are refused.

mod epoch;
mod records;

pub use epoch::{EpochEnd, EpochPlan, EpochState, NextCommittee, NextEpoch, TermClock};

use crate::runtime::{now_ms, off_reactor};
use crate::{Error, Result};
use dag_core::NodeId;
use dag_core::consensus::{
    BatchItem, ChainStart, CommittedSubDag, Committee, Consensus, ConsensusConfig, Message, Output,
};
use dpos::DoubleSignEvidence;
use futures::StreamExt;
use pqc::{Keypair, MlDsa87};
use records::{RecordStore, encode_record};
use rpc::{ConsensusClient, ConsensusHandler, DeliverError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most inbound commands handled in one group (one redb transaction).
const MAX_GROUP: usize = 256;

/// Configuration of one representative. [`RepresentativeConfig::new`] holds the defaults.
#[derive(Debug, Clone)]
pub struct RepresentativeConfig {
    /// Directory of `consensus.redb`.
    pub data_dir: PathBuf,
    /// The driver's tunables.
    pub consensus: ConsensusConfig,
    /// Period of `tick(now)`.
    pub tick: Duration,
    /// Deadline of one outbound call (connection set-up included).
    pub send_timeout: Duration,
    /// Messages queued per peer before dropping.
    pub outbound_queue: usize,
    /// Outbound calls in flight per peer.
    pub send_concurrency: usize,
    /// Inbound messages queued before answering `ResourceExhausted`.
    pub inbound_queue: usize,
    /// The dynamic batch interval (start 1.0 s; > 50 pending → 0.5 s; none → +0.5 s up to
    /// 5 s; else −0.1 s down to 0.5 s): after each proposal the driver's proposal interval is
    /// set from what is still pending, exported as `citychain_batch_interval_seconds`. On by
    /// default; `None` keeps `consensus.proposal_interval_ms` fixed
    /// ([`RepresentativeConfig::with_fixed_interval`]).
    pub batch_interval: Option<dag_core::BatchInterval>,
    /// Mutual TLS to the other members (each must prove its NodeId). Default: TLS with the
    /// identity in `data_dir`; plaintext only when set to `Insecure` explicitly.
    pub links: rpc::tls::LinkSecurity,
    /// How the committee changes at term boundaries (None: one committee forever).
    pub epochs: Option<EpochPlan>,
    /// **Test hook, never for production**: this representative equivocates — each of its
    /// proposals goes to one peer as a second, different batch for the same round, signed
    /// with its key — so tests can run evidence → `DoubleSign` → slashing end to end. Off.
    pub equivocate_for_test: bool,
}

impl RepresentativeConfig {
    /// Defaults for `data_dir`: the domain's dynamic batch interval (1.0 s start, 0.5–5 s),
    /// 25 ms ticks, 250 ms re-sends, 500 ms leader timeout, 1 s send deadline, 1024 queued
    /// per peer, 8 in flight, 4096 inbound.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        RepresentativeConfig {
            data_dir: data_dir.into(),
            consensus: ConsensusConfig {
                leader_timeout_ms: 500,
                resend_ms: 250,
                proposal_interval_ms: 50,
                ..ConsensusConfig::default()
            },
            tick: Duration::from_millis(25),
            send_timeout: Duration::from_secs(1),
            outbound_queue: 1024,
            send_concurrency: 8,
            inbound_queue: 4096,
            batch_interval: Some(dag_core::BatchInterval::default()),
            links: rpc::tls::LinkSecurity::default(),
            epochs: None,
            equivocate_for_test: false,
        }
    }

    /// The same settings with a fixed proposal interval of `ms` instead of the dynamic
    /// one (tests, tiny local networks); the gauge then reports the fixed value.
    pub fn with_fixed_interval(mut self, ms: u64) -> Self {
        self.consensus.proposal_interval_ms = ms;
        self.batch_interval = None;
        self
    }
}

/// A leader committed at this representative. Sequences start at 0 and rise by one; after
/// a restart they start at 0 again (replay of the recovered DAG).
#[derive(Debug, Clone)]
pub struct CommittedEvent {
    /// The ordered sub-DAG and its checkpoint.
    pub sub_dag: CommittedSubDag,
    /// When it committed here (ms since the Unix epoch).
    pub committed_at_ms: u64,
    /// When it committed here (monotonic).
    pub committed_at: Instant,
}

/// Counters of one representative.
#[derive(Debug, Default)]
pub struct RepresentativeStats {
    /// Inbound messages the driver accepted.
    pub accepted: AtomicU64,
    /// Inbound messages the driver rejected.
    pub rejected: AtomicU64,
    /// Outbound messages dropped on a full peer queue.
    pub outbound_dropped: AtomicU64,
    /// Outbound calls that failed (unreachable, deadline, refused).
    pub send_failures: AtomicU64,
    /// Leaders committed.
    pub commits: AtomicU64,
}

/// An inbound caller waiting for the driver's verdict.
type Reply = (
    oneshot::Sender<std::result::Result<(), DeliverError>>,
    std::result::Result<(), DeliverError>,
);

/// Where a representative's driver stands (updated after every group of inputs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepresentativeStatus {
    /// The last round it proposed in.
    pub proposed_round: Option<u64>,
    /// The highest round in its DAG.
    pub dag_round: Option<u64>,
    /// Checkpoints committed (next sequence number).
    pub committed: u64,
    /// Payload items queued for its next proposals.
    pub pending_payload: usize,
    /// The interval before its next proposal (ms): the dynamic one, or the fixed one.
    pub batch_interval_ms: u64,
    /// The consensus epoch of its driver (0 = the genesis committee).
    pub epoch: u64,
    /// Sequence of the first checkpoint of that epoch.
    pub epoch_first_seq: u64,
    /// True between an epoch's last checkpoint and the start of the next one.
    pub switching: bool,
    /// True once it was left out of a committee: it no longer proposes nor votes.
    pub removed: bool,
    /// True while the node is a standby: it follows the committee's checkpoints and has no
    /// driver until dpos elects it (see `city::standby`).
    pub standby: bool,
}

enum Command {
    Inbound {
        from: NodeId,
        message: Message,
        reply: oneshot::Sender<std::result::Result<(), DeliverError>>,
    },
    Payload(Vec<BatchItem>),
    /// The next epoch's committee is known (see [`EpochPlan::next_committee`]).
    StartEpoch {
        end: EpochEnd,
        committee: Result<NextEpoch>,
    },
    Stop,
}

/// The [`ConsensusHandler`] in front of the driver task.
#[derive(Debug, Clone)]
pub struct Inbox {
    tx: mpsc::Sender<Command>,
}

/// A representative's inbound queue, made before its driver: the role serves the
/// Consensus service (and queues payload) from the start, and the driver drains what
/// waited once it runs ([`spawn_representative_on`]). A standby node starts its driver
/// only when elected; messages sent to it before wait (bounded: a full queue answers
/// `ResourceExhausted`, and senders re-send).
#[derive(Debug)]
pub struct ConsensusInbox {
    tx: mpsc::Sender<Command>,
    rx: mpsc::Receiver<Command>,
}

impl ConsensusInbox {
    /// A queue of `capacity` commands ([`RepresentativeConfig::inbound_queue`]).
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        ConsensusInbox { tx, rx }
    }

    /// The Consensus gRPC service in front of the queue.
    pub fn service(&self) -> ConsensusGrpc {
        rpc::ConsensusService::new(Arc::new(Inbox {
            tx: self.tx.clone(),
        }))
        .into_server()
    }

    /// Queues payload into the driver's next proposals (waits for it once it runs).
    pub fn submitter(&self) -> Submitter {
        Submitter {
            cmd: self.tx.clone(),
        }
    }
}

impl ConsensusHandler for Inbox {
    async fn deliver(
        &self,
        from: NodeId,
        message: Message,
    ) -> std::result::Result<(), DeliverError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Command::Inbound {
                from,
                message,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => DeliverError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => DeliverError::Stopping,
            })?;
        answer.await.map_err(|_| DeliverError::Stopping)?
    }
}

// ------------------------------------------------------------------ the task

struct Peer {
    queue: mpsc::Sender<Arc<Vec<u8>>>,
}

/// What opening a channel to a peer needs.
#[derive(Clone)]
struct Dial {
    me: NodeId,
    send_timeout: Duration,
    links: rpc::tls::LinkSecurity,
    outbound_queue: usize,
    send_concurrency: usize,
    stats: Arc<RepresentativeStats>,
}

impl Dial {
    /// A lazy channel to `id` at `addr` with its sender task.
    fn open(&self, id: NodeId, addr: &str) -> Result<(Peer, JoinHandle<()>)> {
        let client = ConsensusClient::lazy_over(addr, self.send_timeout, &self.links, id)?;
        let (tx, rx) = mpsc::channel(self.outbound_queue.max(1));
        let task = tokio::spawn(peer_sender(
            self.me,
            client,
            rx,
            self.send_concurrency,
            self.stats.clone(),
        ));
        Ok((Peer { queue: tx }, task))
    }
}

struct Driver {
    consensus: Consensus<Keypair, MlDsa87>,
    /// The previous epoch's driver, retired: serves fetches for members finishing it.
    previous: Option<Consensus<Keypair, MlDsa87>>,
    /// Epochs: the plan, the boundary rule, the persisted state.
    plan: Option<EpochPlan>,
    clock: TermClock,
    state: EpochState,
    /// Commits of the current driver above this sequence are dropped (its epoch ended).
    emit_upto: Option<u64>,
    /// Own items carried from a retired driver into the next one (once each).
    carried: std::collections::HashSet<BatchItem>,
    key: Keypair,
    cfg: ConsensusConfig,
    data_dir: PathBuf,
    cmd: mpsc::Sender<Command>,
    switch_task: Option<JoinHandle<()>>,
    removed: bool,
    committee_tx: tokio::sync::watch::Sender<Committee>,
    equivocate: bool,
    store: Option<RecordStore>,
    peers: HashMap<NodeId, Peer>,
    /// Sender tasks of peers dialled after the start (stopped with the driver).
    peer_tasks: Vec<JoinHandle<()>>,
    /// How to dial a member this node has no channel to yet (at an epoch start).
    dial: Dial,
    commits: mpsc::UnboundedSender<CommittedEvent>,
    evidence: mpsc::UnboundedSender<DoubleSignEvidence>,
    stats: Arc<RepresentativeStats>,
    status: tokio::sync::watch::Sender<RepresentativeStatus>,
    committed: u64,
}

impl Driver {
    fn send(&self, to: &NodeId, bytes: &Arc<Vec<u8>>) {
        if let Some(p) = self.peers.get(to)
            && p.queue.try_send(bytes.clone()).is_err()
        {
            self.stats.outbound_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes the group's records, then acts on the other outputs in order.
    async fn flush(&mut self, outputs: Vec<Output>) -> Result<()> {
        let records: Vec<Vec<u8>> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Persist(r) => Some(encode_record(r)),
                _ => None,
            })
            .collect();
        if !records.is_empty()
            && let Some(mut store) = self.store.take()
        {
            let (store, r) = crate::runtime::run_blocking("consensus record writer", move || {
                let r = store.append(&records);
                (store, r)
            })
            .await?;
            self.store = Some(store);
            r?;
        }
        for o in outputs {
            match o {
                Output::Persist(_) => {}
                Output::Broadcast(m) => {
                    let bytes = Arc::new(m.encode());
                    let committee = self.consensus.committee();
                    let mut ids: Vec<NodeId> = self
                        .peers
                        .keys()
                        .filter(|id| committee.authority(id).is_some())
                        .copied()
                        .collect();
                    ids.sort();
                    let twin = match &m {
                        Message::Propose(b) if self.equivocate => {
                            // The test hook: the last peer sees another batch for the round.
                            let mut h = b.header.clone();
                            h.timestamp_ms = h.timestamp_ms.wrapping_add(1);
                            let t = dag_core::consensus::SignedBatch::sign(h, &self.key);
                            Some(Arc::new(Message::Propose(t).encode()))
                        }
                        _ => None,
                    };
                    let last = ids.last().copied();
                    for to in ids {
                        match &twin {
                            Some(t) if Some(to) == last => self.send(&to, t),
                            _ => self.send(&to, &bytes),
                        }
                    }
                }
                Output::Send { to, message } => self.send(&to, &Arc::new(message.encode())),
                Output::Committed(sub_dag) => {
                    if self
                        .emit_upto
                        .is_some_and(|last| sub_dag.checkpoint.sequence > last)
                    {
                        // The epoch ended: the retired driver's later commits never count.
                        self.carry(&sub_dag);
                        continue;
                    }
                    let leader_ms = sub_dag
                        .batches
                        .last()
                        .map_or(0, |c| c.batch().header.timestamp_ms);
                    let ends = match &self.plan {
                        Some(plan) if self.emit_upto.is_none() => {
                            self.clock.observe(leader_ms, plan.term_ms)
                        }
                        _ => false,
                    };
                    let boundary = ends.then(|| sub_dag.checkpoint.clone());
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.committed = self.committed.max(sub_dag.checkpoint.sequence + 1);
                    let _ = self.commits.send(CommittedEvent {
                        sub_dag,
                        committed_at_ms: now_ms(),
                        committed_at: Instant::now(),
                    });
                    if let Some(last) = boundary {
                        self.end_epoch(last);
                    }
                }
                Output::Evidence(eq) => {
                    let author = eq.author();
                    match self
                        .consensus
                        .committee()
                        .authority(&author)
                        .map(|a| DoubleSignEvidence::from_equivocation(&eq, &a.public_key))
                    {
                        Some(Ok(ev)) => {
                            tracing::warn!(%author, round = eq.round(), "equivocation caught");
                            let _ = self.evidence.send(ev);
                        }
                        Some(Err(e)) => {
                            tracing::error!(%author, error = %e, "evidence does not convert")
                        }
                        None => tracing::error!(%author, "evidence against a non-member"),
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs `first` and whatever else is queued (up to [`MAX_GROUP`]) through the driver.
    /// True when told to stop.
    fn handle_group(
        &mut self,
        first: Command,
        rx: &mut mpsc::Receiver<Command>,
        outputs: &mut Vec<Output>,
        replies: &mut Vec<Reply>,
    ) -> bool {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Inbound {
                    from,
                    message,
                    reply,
                } => match self.route(from, message) {
                    Ok(out) => {
                        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                        outputs.extend(out);
                        replies.push((reply, Ok(())));
                    }
                    Err(e) => {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%from, error = %e, "message rejected");
                        replies.push((reply, Err(DeliverError::Rejected(e))));
                    }
                },
                Command::Payload(items) => self.consensus.add_payload(items),
                Command::StartEpoch { end, committee } => {
                    self.start_epoch(end, committee, outputs);
                }
                Command::Stop => return true,
            }
            n += 1;
            if n < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        false
    }

    /// After a proposal (the driver's round moved), the next interval from what was pending
    /// when it was sealed: the items the new batch carries (in `outputs`) plus those still
    /// queued. Returns the interval in force (ms).
    fn drive_interval(
        &mut self,
        clock: &mut Option<super::scheduling::BatchClock>,
        last: &mut Option<dag_core::consensus::Round>,
        fixed_ms: u64,
        outputs: &[Output],
    ) -> u64 {
        let Some(clock) = clock else { return fixed_ms };
        let round = self.consensus.round();
        if round != *last {
            *last = round;
            let sealed: usize = outputs
                .iter()
                .filter_map(|o| match o {
                    Output::Broadcast(Message::Propose(sb)) if Some(sb.header.round) == round => {
                        Some(sb.header.items.len())
                    }
                    _ => None,
                })
                .sum();
            let next = clock.proposed(sealed + self.consensus.pending_payload());
            self.consensus
                .set_proposal_interval(next.as_millis().min(u128::from(u64::MAX)) as u64);
        }
        clock.current().as_millis().min(u128::from(u64::MAX)) as u64
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        tick: Duration,
        first: Vec<Output>,
        mut clock: Option<super::scheduling::BatchClock>,
        fixed_ms: u64,
    ) {
        if let Some(c) = &clock {
            self.consensus
                .set_proposal_interval(c.current().as_millis().min(u128::from(u64::MAX)) as u64);
        }
        let mut last_round = self.consensus.round();
        if let Err(e) = self.flush(first).await {
            tracing::error!(error = %e, "representative cannot persist; stopping");
            return;
        }
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut outputs = Vec::new();
            let mut replies = Vec::new();
            let mut stop = false;
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    // Signature checks and signing (ML-DSA-87) happen in here: keep them off
                    // the reactor threads.
                    stop = off_reactor(|| {
                        self.handle_group(cmd, &mut rx, &mut outputs, &mut replies)
                    });
                }
                _ = ticker.tick() => {
                    outputs = off_reactor(|| self.consensus.tick(now_ms()));
                    if let Some(p) = self.previous.as_mut() {
                        let outs = p.tick(now_ms());
                        self.previous_outputs(outs);
                    }
                }
            }
            let interval_ms = self.drive_interval(&mut clock, &mut last_round, fixed_ms, &outputs);
            if let Err(e) = self.flush(outputs).await {
                tracing::error!(error = %e, "representative cannot persist; stopping");
                for (reply, _) in replies {
                    let _ = reply.send(Err(DeliverError::Stopping));
                }
                return;
            }
            for (reply, r) in replies {
                let _ = reply.send(r);
            }
            let now = RepresentativeStatus {
                proposed_round: self.consensus.round(),
                dag_round: self.consensus.store().highest_round(),
                committed: self.committed,
                pending_payload: self.consensus.pending_payload(),
                batch_interval_ms: interval_ms,
                epoch: self.state.epoch,
                epoch_first_seq: self.state.start.next_sequence,
                switching: self.emit_upto.is_some() && !self.removed,
                removed: self.removed,
                standby: false,
            };
            self.status.send_if_modified(|s| {
                let changed = *s != now;
                *s = now;
                changed
            });
            if stop {
                break;
            }
        }
        if let Some(t) = self.switch_task.take() {
            t.abort();
        }
        for t in self.peer_tasks.drain(..) {
            t.abort();
        }
    }

    /// Sends `message` to the driver of its epoch: batches and certificates carry theirs;
    /// a fetch is answered by both drivers (a member still finishing the previous epoch
    /// asks for its certificates); votes go to the current driver.
    fn route(
        &mut self,
        from: NodeId,
        message: Message,
    ) -> std::result::Result<Vec<Output>, dag_core::consensus::ConsensusError> {
        let now = now_ms();
        let epoch = match &message {
            Message::Propose(b) => Some(b.header.epoch),
            Message::Certificate(c) => Some(c.batch.header.epoch),
            Message::FetchResponse(cs) => cs.first().map(|c| c.batch.header.epoch),
            Message::Vote(_) | Message::Fetch(_) => None,
        };
        let current = self.consensus.committee().epoch();
        let to_previous = epoch.is_some_and(|e| e != current)
            && self
                .previous
                .as_ref()
                .is_some_and(|p| Some(p.committee().epoch()) == epoch);
        if to_previous {
            let outs = self
                .previous
                .as_mut()
                .map(|p| p.handle(now, from, message))
                .transpose()?
                .unwrap_or_default();
            self.previous_outputs(outs);
            return Ok(Vec::new());
        }
        if let (Message::Fetch(_), Some(p)) = (&message, self.previous.as_mut())
            && let Ok(outs) = p.handle(now, from, message.clone())
        {
            self.previous_outputs(outs);
        }
        self.consensus.handle(now, from, message)
    }

    /// Acts on the retired previous driver's outputs: messages go out (to its committee),
    /// nothing is persisted or emitted; own items of its late commits are carried over.
    fn previous_outputs(&mut self, outs: Vec<Output>) {
        let Some(committee) = self.previous.as_ref().map(|p| p.committee().clone()) else {
            return;
        };
        for o in outs {
            match o {
                Output::Broadcast(m) => {
                    let bytes = Arc::new(m.encode());
                    let ids: Vec<NodeId> = self
                        .peers
                        .keys()
                        .filter(|id| committee.authority(id).is_some())
                        .copied()
                        .collect();
                    for to in ids {
                        self.send(&to, &bytes);
                    }
                }
                Output::Send { to, message } => self.send(&to, &Arc::new(message.encode())),
                Output::Committed(sub) => self.carry(&sub),
                Output::Evidence(eq) => {
                    if let Some(a) = committee.authority(&eq.author())
                        && let Ok(ev) = DoubleSignEvidence::from_equivocation(&eq, &a.public_key)
                    {
                        let _ = self.evidence.send(ev);
                    }
                }
                Output::Persist(_) => {}
            }
        }
    }

    /// Own items in a commit that does not count (after its epoch's end) go to the next
    /// epoch's driver, once.
    fn carry(&mut self, sub: &CommittedSubDag) {
        let me = self.key.node_id();
        let items: Vec<BatchItem> = sub
            .batches
            .iter()
            .filter(|c| c.author() == me)
            .flat_map(|c| c.batch().header.items.iter().copied())
            .filter(|i| self.carried.insert(*i))
            .collect();
        if !items.is_empty() && self.emit_upto.is_none() {
            self.consensus.add_payload(items);
        }
    }

    /// The committed sequence ended the epoch at `last`: retire the driver, keep its own
    /// uncommitted items, ask for the next committee.
    fn end_epoch(&mut self, last: dag_core::consensus::Checkpoint) {
        self.consensus.retire();
        self.emit_upto = Some(last.sequence);
        let carried: Vec<BatchItem> = self.consensus.in_flight_items().into_iter().collect();
        self.carried.extend(carried);
        let Some(plan) = self.plan.clone() else {
            return;
        };
        let end = EpochEnd {
            epoch: self.state.epoch,
            last,
            at_ms: self.clock.at_ms,
            committee: self.consensus.committee().clone(),
        };
        tracing::info!(
            epoch = end.epoch,
            last_seq = end.last.sequence,
            "consensus epoch ended; waiting for the next committee"
        );
        metrics::counter!("citychain_consensus_epoch_changes_total").increment(1);
        let cmd = self.cmd.clone();
        self.switch_task = Some(tokio::spawn(async move {
            let committee = (plan.next_committee)(end.clone()).await;
            let _ = cmd.send(Command::StartEpoch { end, committee }).await;
        }));
    }

    /// Opens channels to the next committee's members this node cannot reach yet.
    fn dial_new_members(&mut self, next: &NextEpoch) {
        let me = self.key.node_id();
        for a in next.committee.authorities() {
            if a.id == me || self.peers.contains_key(&a.id) {
                continue;
            }
            let Some(addr) = next.addresses.get(&a.id) else {
                tracing::warn!(member = %a.id, "next committee member has no address");
                continue;
            };
            match self.dial.open(a.id, addr) {
                Ok((peer, task)) => {
                    tracing::info!(member = %a.id, %addr, "dialling a new committee member");
                    self.peers.insert(a.id, peer);
                    self.peer_tasks.push(task);
                }
                Err(e) => tracing::error!(member = %a.id, %addr, error = %e, "cannot dial"),
            }
        }
    }

    /// Starts the next epoch's driver (if this node is a member), after persisting it.
    fn start_epoch(&mut self, end: EpochEnd, next: Result<NextEpoch>, out: &mut Vec<Output>) {
        let committee = match next {
            Ok(n) => {
                self.dial_new_members(&n);
                n.committee.with_epoch(end.epoch + 1)
            }
            Err(e) => {
                tracing::error!(epoch = end.epoch + 1, error = %e, "no committee for the next epoch; consensus stays stopped");
                return;
            }
        };
        let me = self.key.node_id();
        if committee.authority(&me).is_none() {
            let left = EpochState {
                left_after: Some(end.last.sequence),
                ..self.state.clone()
            };
            if let Err(e) = left.store(&self.data_dir) {
                tracing::error!(error = %e, "cannot persist the epoch state");
            }
            self.state = left;
            self.removed = true;
            tracing::warn!(
                epoch = end.epoch + 1,
                "left out of the next committee: no longer proposing"
            );
            return;
        }
        let state = EpochState::after(&end, &committee);
        let started = (|| -> Result<(Consensus<Keypair, MlDsa87>, Vec<Output>, RecordStore)> {
            state.store(&self.data_dir)?;
            let (store, records) =
                RecordStore::open(&EpochState::records_path(&self.data_dir, state.epoch))?;
            let (mut c, mut outs) = Consensus::recover_epoch(
                committee.clone(),
                self.key.clone(),
                MlDsa87,
                self.cfg.clone(),
                state.start,
                records,
            )?;
            outs.extend(c.start(now_ms()));
            Ok((c, outs, store))
        })();
        let (mut next, outs, store) = match started {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(epoch = state.epoch, error = %e, "cannot start the next epoch");
                return;
            }
        };
        next.set_proposal_interval(self.cfg.proposal_interval_ms);
        let carried: Vec<BatchItem> = self.carried.iter().copied().collect();
        next.add_payload(carried);
        let old = std::mem::replace(&mut self.consensus, next);
        self.previous = Some(old);
        self.store = Some(store);
        self.clock = TermClock::started_at(end.at_ms);
        self.emit_upto = None;
        self.state = state;
        self.committee_tx.send_replace(committee.clone());
        tracing::info!(
            epoch = self.state.epoch,
            members = committee.size(),
            first_seq = self.state.start.next_sequence,
            "consensus epoch started"
        );
        out.extend(outs);
    }
}

async fn peer_sender(
    me: NodeId,
    client: ConsensusClient,
    rx: mpsc::Receiver<Arc<Vec<u8>>>,
    concurrency: usize,
    stats: Arc<RepresentativeStats>,
) {
    tokio_stream::wrappers::ReceiverStream::new(rx)
        .for_each_concurrent(concurrency.max(1), |bytes| {
            let (client, stats) = (client.clone(), stats.clone());
            async move {
                if let Err(e) = client.deliver_bytes(me, bytes.as_ref().clone()).await {
                    stats.send_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::trace!(error = %e, "consensus send failed");
                }
            }
        })
        .await;
}

// ------------------------------------------------------------------ handle

/// Queues payload items into a representative's next proposals; cloned freely.
#[derive(Debug, Clone)]
pub struct Submitter {
    cmd: mpsc::Sender<Command>,
}

impl Submitter {
    /// Queues `items` (waits while the driver's queue is full).
    pub async fn submit(&self, items: Vec<BatchItem>) -> Result<()> {
        self.cmd
            .send(Command::Payload(items))
            .await
            .map_err(|_| Error::Stopping("representative"))
    }
}

/// A running representative. Drop does not stop it: call
/// [`RepresentativeHandle::shutdown`] (graceful) or [`RepresentativeHandle::kill`] (abrupt).
#[derive(Debug)]
pub struct RepresentativeHandle {
    node_id: NodeId,
    in_flight: std::collections::HashSet<BatchItem>,
    addr: Option<SocketAddr>,
    cmd: mpsc::Sender<Command>,
    commits: Option<mpsc::UnboundedReceiver<CommittedEvent>>,
    evidence: Option<mpsc::UnboundedReceiver<DoubleSignEvidence>>,
    stats: Arc<RepresentativeStats>,
    status: tokio::sync::watch::Receiver<RepresentativeStatus>,
    committee: tokio::sync::watch::Receiver<Committee>,
    server: Option<crate::runtime::ServerHandle>,
    driver: Option<JoinHandle<()>>,
    helpers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Inbound { from, .. } => write!(f, "Inbound(from {from})"),
            Command::Payload(items) => write!(f, "Payload({} items)", items.len()),
            Command::StartEpoch { end, .. } => write!(f, "StartEpoch(after {})", end.epoch),
            Command::Stop => f.write_str("Stop"),
        }
    }
}

impl RepresentativeHandle {
    /// This representative's node id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }
    /// The address its own Consensus server listens on (`None` when the role's server
    /// serves it, see [`spawn_representative`]).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Items the recovered DAG already carries (proposed or certified before a restart):
    /// they will commit without being submitted again. Empty on a first start.
    pub fn in_flight(&self) -> &std::collections::HashSet<BatchItem> {
        &self.in_flight
    }

    /// A cheap handle that queues payload items (for the admission path).
    pub fn submitter(&self) -> Submitter {
        Submitter {
            cmd: self.cmd.clone(),
        }
    }
    /// Counters.
    pub fn stats(&self) -> &Arc<RepresentativeStats> {
        &self.stats
    }
    /// The driver's position (round, DAG height, commits); `changed()` wakes on updates.
    pub fn status(&self) -> tokio::sync::watch::Receiver<RepresentativeStatus> {
        self.status.clone()
    }

    /// The committee its current consensus driver runs (changes at epoch boundaries).
    pub fn committee(&self) -> Committee {
        self.committee.borrow().clone()
    }

    /// The committee its current driver runs, as a watch (for readers that outlive a borrow
    /// of this handle: the stake reads).
    pub fn committee_watch(&self) -> tokio::sync::watch::Receiver<Committee> {
        self.committee.clone()
    }

    /// Queues payload items (held tx ids, micro-batch stripe ids) for its next proposals.
    pub async fn submit(&self, items: Vec<BatchItem>) -> Result<()> {
        self.cmd
            .send(Command::Payload(items))
            .await
            .map_err(|_| Error::Stopping("representative"))
    }

    /// The committed sub-DAGs, in commit order (once; later calls get None).
    pub fn take_commits(&mut self) -> Option<mpsc::UnboundedReceiver<CommittedEvent>> {
        self.commits.take()
    }
    /// Equivocation evidence ready for dpos (once).
    pub fn take_evidence(&mut self) -> Option<mpsc::UnboundedReceiver<DoubleSignEvidence>> {
        self.evidence.take()
    }

    /// Stops: the driver finishes its current group, the server lets in-flight calls end,
    /// queued outbound messages are dropped, queued pushes get a second to finish.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.cmd.send(Command::Stop).await;
        if let Some(d) = self.driver.take() {
            let _ = d.await;
        }
        let mut result = Ok(());
        if let Some(s) = self.server.take() {
            result = s.shutdown(Duration::from_secs(2)).await;
        }
        for h in self.helpers.drain(..) {
            h.abort();
            let _ = h.await;
        }
        result
    }

    /// Stops at once, as a crash: every task is aborted; peers see it unreachable.
    pub async fn kill(mut self) {
        let tasks = self
            .driver
            .take()
            .into_iter()
            .chain(self.helpers.drain(..))
            .collect::<Vec<_>>();
        for t in &tasks {
            t.abort();
        }
        if let Some(s) = self.server.take() {
            s.kill().await;
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Starts a representative with `key` (a member of `committee`) serving on `listener`;
/// `peers` maps the other members' node ids to their gRPC addresses. Reads
/// `<data_dir>/consensus.redb`: with records there, the driver recovers from them.
pub async fn start_representative(
    cfg: RepresentativeConfig,
    key: Keypair,
    committee: Committee,
    listener: TcpListener,
    peers: HashMap<NodeId, String>,
) -> Result<RepresentativeHandle> {
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let links = crate::runtime::resolve_links(&cfg.links, &cfg.data_dir, &key)?;
    let cfg = RepresentativeConfig {
        links: links.clone(),
        ..cfg
    };
    let (mut handle, svc) = spawn_representative(cfg, key, committee, peers).await?;
    let (health, reflection, reflection_alpha) = crate::runtime::health_and_reflection(
        "citychain.v1.ConsensusService",
        &["citychain.v1.ConsensusService"],
    )
    .await?;
    let router = crate::runtime::server_builder(true)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(svc);
    handle.server = Some(crate::runtime::serve(listener, router, "consensus", &links));
    handle.addr = Some(addr);
    tracing::info!(%addr, node_id = %handle.node_id, "representative serving");
    Ok(handle)
}

/// The Consensus gRPC service of a representative, to be served by the role's server.
pub type ConsensusGrpc =
    rpc::pb::consensus_service_server::ConsensusServiceServer<rpc::ConsensusService<Inbox>>;

/// Starts a representative's driver and peers without a server of its own:
/// the returned [`ConsensusGrpc`] goes into the role's gRPC server (the city role serves
/// CityNode and Consensus on one address). Reads `<data_dir>/consensus.redb`: with records
/// there, the driver recovers from them.
pub async fn spawn_representative(
    cfg: RepresentativeConfig,
    key: Keypair,
    committee: Committee,
    peers: HashMap<NodeId, String>,
) -> Result<(RepresentativeHandle, ConsensusGrpc)> {
    let inbox = ConsensusInbox::new(cfg.inbound_queue);
    let svc = inbox.service();
    let handle = spawn_representative_on(cfg, key, committee, peers, inbox).await?;
    Ok((handle, svc))
}

/// Like [`spawn_representative`], on an inbound queue made earlier (whose service the role
/// already serves): the driver starts with what waited there.
pub async fn spawn_representative_on(
    cfg: RepresentativeConfig,
    key: Keypair,
    committee: Committee,
    peers: HashMap<NodeId, String>,
    inbox: ConsensusInbox,
) -> Result<RepresentativeHandle> {
    let cfg = RepresentativeConfig {
        links: crate::runtime::resolve_links(&cfg.links, &cfg.data_dir, &key)?,
        ..cfg
    };
    let node_id = key.node_id();
    // The epoch it runs: the persisted one after a committee change, else genesis.
    let dir = cfg.data_dir.clone();
    let persisted =
        crate::runtime::run_blocking("consensus epoch state", move || EpochState::load(&dir))
            .await??;
    let (state, committee, clock) = match persisted {
        Some(st) => {
            let c = st.committee()?;
            let clock = TermClock::started_at(st.term_started_ms);
            (st, c, clock)
        }
        None => (
            EpochState {
                epoch: 0,
                start: ChainStart::default(),
                term_started_ms: 0,
                members: committee
                    .authorities()
                    .iter()
                    .map(|a| (a.public_key.clone(), a.stake))
                    .collect(),
                left_after: None,
            },
            committee,
            TermClock::default(),
        ),
    };
    let path = EpochState::records_path(&cfg.data_dir, state.epoch);
    let (store, records) =
        crate::runtime::run_blocking("consensus record store", move || RecordStore::open(&path))
            .await??;
    let (mut consensus, mut first) = Consensus::recover_epoch(
        committee,
        key.clone(),
        MlDsa87,
        cfg.consensus.clone(),
        state.start,
        records,
    )?;
    let removed = state.left_after.is_some();
    if removed {
        // Left out of the next committee before the restart: replay, never propose.
        consensus.retire();
    } else {
        first.extend(consensus.start(now_ms()));
    }
    let in_flight = consensus.in_flight_items();

    let stats = Arc::new(RepresentativeStats::default());
    let dial = Dial {
        me: node_id,
        send_timeout: cfg.send_timeout,
        links: cfg.links.clone(),
        outbound_queue: cfg.outbound_queue,
        send_concurrency: cfg.send_concurrency,
        stats: stats.clone(),
    };
    let mut helpers = Vec::new();
    let mut peer_map = HashMap::new();
    for (id, peer_addr) in peers {
        if id == node_id {
            continue;
        }
        let (peer, task) = dial.open(id, &peer_addr)?;
        helpers.push(task);
        peer_map.insert(id, peer);
    }
    let (commits_tx, commits_rx) = mpsc::unbounded_channel();
    let (evidence_tx, evidence_rx) = mpsc::unbounded_channel();
    let ConsensusInbox {
        tx: cmd,
        rx: cmd_rx,
    } = inbox;
    let (status_tx, status_rx) = tokio::sync::watch::channel(RepresentativeStatus {
        batch_interval_ms: cfg
            .batch_interval
            .map_or(cfg.consensus.proposal_interval_ms, |r| r.start_ms),
        epoch: state.epoch,
        epoch_first_seq: state.start.next_sequence,
        removed,
        ..RepresentativeStatus::default()
    });
    let (committee_tx, committee_rx) = tokio::sync::watch::channel(consensus.committee().clone());
    let driver = Driver {
        committee_tx,
        equivocate: cfg.equivocate_for_test,
        status: status_tx,
        committed: 0,
        previous: None,
        plan: cfg.epochs.clone(),
        clock,
        emit_upto: state.left_after,
        state,
        carried: Default::default(),
        key: key.clone(),
        cfg: cfg.consensus.clone(),
        data_dir: cfg.data_dir.clone(),
        cmd: cmd.clone(),
        switch_task: None,
        removed,
        consensus,
        store: Some(store),
        peers: peer_map,
        peer_tasks: Vec::new(),
        dial,
        commits: commits_tx,
        evidence: evidence_tx,
        stats: stats.clone(),
    };
    if cfg.batch_interval.is_none() {
        super::scheduling::describe_batch_interval();
        metrics::gauge!("citychain_batch_interval_seconds")
            .set(cfg.consensus.proposal_interval_ms as f64 / 1000.0);
    }
    let driver = tokio::spawn(driver.run(
        cmd_rx,
        cfg.tick,
        first,
        cfg.batch_interval.map(super::scheduling::BatchClock::new),
        cfg.consensus.proposal_interval_ms,
    ));

    let handle = RepresentativeHandle {
        node_id,
        in_flight,
        addr: None,
        cmd,
        commits: Some(commits_rx),
        evidence: Some(evidence_rx),
        stats,
        status: status_rx,
        committee: committee_rx,
        server: None,
        driver: Some(driver),
        helpers,
    };
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag_core::{BatchInterval, TxId};

    /// Waits (generous deadline, no timing asserted) until the status satisfies `cond`;
    /// returns every interval seen on the way.
    async fn until(
        status: &mut tokio::sync::watch::Receiver<RepresentativeStatus>,
        seen: &mut Vec<u64>,
        what: &str,
        cond: impl Fn(&RepresentativeStatus) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let now = *status.borrow_and_update();
            seen.push(now.batch_interval_ms);
            if cond(&now) {
                return;
            }
            if tokio::time::timeout_at(deadline, status.changed())
                .await
                .is_err()
            {
                panic!("timed out waiting for: {what} (last {now:?})");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_dynamic_interval_follows_what_is_pending_in_a_running_representative() {
        let tmp = tempfile::tempdir().unwrap();
        let key = Keypair::generate();
        let committee =
            Committee::equal(vec![dag_core::Signer::public_key(&key).to_vec()]).unwrap();
        // The domain's rule scaled down ten times so the test runs in a second or two.
        let rule = BatchInterval {
            start_ms: 100,
            min_ms: 50,
            max_ms: 500,
            busy_threshold: 50,
            idle_step_ms: 50,
            busy_step_ms: 10,
        };
        let mut cfg = RepresentativeConfig::new(tmp.path());
        cfg.links = rpc::tls::LinkSecurity::Insecure;
        cfg.batch_interval = Some(rule);
        cfg.consensus.max_batch_items = 10;
        let (rep, _svc) = spawn_representative(cfg, key, committee, HashMap::new())
            .await
            .unwrap();
        let mut status = rep.status();
        let mut seen = Vec::new();
        // Idle: the interval grows to its maximum.
        until(&mut status, &mut seen, "idle maximum", |s| {
            s.batch_interval_ms == 500
        })
        .await;
        // 200 items, 10 per proposal: more than 50 left after a proposal → the minimum.
        let items: Vec<BatchItem> = (0..200u32)
            .map(|i| {
                let mut b = [0u8; 32];
                b[..4].copy_from_slice(&i.to_le_bytes());
                BatchItem::Tx(TxId::from_bytes(b))
            })
            .collect();
        rep.submit(items).await.unwrap();
        until(&mut status, &mut seen, "busy minimum", |s| {
            s.batch_interval_ms == 50 && s.pending_payload > 50
        })
        .await;
        // Drained: idle again, back up to the maximum.
        until(&mut status, &mut seen, "drained and idle", |s| {
            s.pending_payload == 0 && s.batch_interval_ms == 500
        })
        .await;
        assert!(seen.iter().all(|ms| (50..=500).contains(ms)), "{seen:?}");
        assert!(seen.contains(&100), "starts at start_ms: {seen:?}");
        rep.shutdown().await.unwrap();
    }

    #[test]
    fn the_default_is_the_domains_dynamic_interval() {
        let cfg = RepresentativeConfig::new("x");
        assert_eq!(cfg.batch_interval, Some(dag_core::BatchInterval::default()));
        let fixed = cfg.with_fixed_interval(50);
        assert_eq!(fixed.batch_interval, None);
        assert_eq!(fixed.consensus.proposal_interval_ms, 50);
    }
}

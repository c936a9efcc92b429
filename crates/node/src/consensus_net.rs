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
//! - **Outputs**: committed sub-DAGs with their commit time ([`CommittedEvent`]),
//!   equivocation evidence converted for dpos ([`DoubleSignEvidence`]), and continent
//!   receipts ([`FederatedEvent`]) when a [`FederationTarget`] is set.
//!
//! [`run_devnet_round`] runs n representatives and a continent on loopback and measures
//! what the demo reports.

use crate::continent::{CityCommittee, ContinentConfig, FederationTarget, start_continent};
use crate::runtime::{now_ms, off_reactor};
use crate::{Error, Result};
use dag_core::consensus::{
    BatchDigest, BatchItem, Certificate, CommittedSubDag, Committee, Consensus, ConsensusConfig,
    Message, Output, Record, SignedBatch,
};
use dag_core::{DecodeError, Hash32, NodeId, Reader, Signer, Writer};
use dpos::DoubleSignEvidence;
use futures::StreamExt;
use pqc::{Keypair, MlDsa87};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rpc::{
    CertifiedCheckpoint, CheckpointHeader, ConsensusClient, ConsensusHandler, DeliverError,
    FederationClient, FederationError, FederationProof, LogKind, sign_share,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Record sequence number → encoded [`Record`].
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");

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
    /// Where to push committed checkpoints (None: no federation).
    pub federation: Option<FederationTarget>,
}

impl RepresentativeConfig {
    /// Defaults for `data_dir`: 50 ms proposal interval, 25 ms ticks, 250 ms re-sends,
    /// 500 ms leader timeout, 1 s send deadline, 1024 queued per peer, 8 in flight, 4096 inbound.
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
            federation: None,
        }
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

/// A checkpoint logged by the continent.
#[derive(Debug, Clone)]
pub struct FederatedEvent {
    /// The logged certificate, the continent's receipt (signature checked when its key is
    /// configured) and the inclusion path.
    pub proof: FederationProof,
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
    /// Checkpoints pushed to the continent.
    pub pushed: AtomicU64,
    /// Pushes that failed after their retries.
    pub push_failures: AtomicU64,
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
}

enum Command {
    Inbound {
        from: NodeId,
        message: Message,
        reply: oneshot::Sender<std::result::Result<(), DeliverError>>,
    },
    Payload(Vec<BatchItem>),
    Stop,
}

/// The [`ConsensusHandler`] in front of the driver task.
#[derive(Debug, Clone)]
pub struct Inbox {
    tx: mpsc::Sender<Command>,
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

// ------------------------------------------------------------------ records

fn encode_record(r: &Record) -> Vec<u8> {
    let mut w = Writer::default();
    match r {
        Record::Proposed(b) => {
            w.u8(0).raw(&b.encode());
        }
        Record::Voted {
            author,
            round,
            digest,
        } => {
            w.u8(1)
                .raw(author.as_bytes())
                .u64(*round)
                .raw(digest.as_bytes());
        }
        Record::Stored(c) => {
            w.u8(2).raw(&c.encode());
        }
    }
    w.finish()
}

fn decode_record(bytes: &[u8]) -> std::result::Result<Record, DecodeError> {
    let (&tag, rest) = bytes.split_first().ok_or(DecodeError::Truncated {
        field: "record tag",
        needed: 1,
        had: 0,
    })?;
    Ok(match tag {
        0 => Record::Proposed(SignedBatch::decode(rest)?),
        1 => {
            let mut r = Reader::new(rest);
            let author = NodeId::from_bytes(r.bytes32("author")?);
            let round = r.u64("round")?;
            let digest = BatchDigest(Hash32(r.bytes32("digest")?));
            r.finish()?;
            Record::Voted {
                author,
                round,
                digest,
            }
        }
        2 => Record::Stored(Certificate::decode(rest)?),
        _ => {
            return Err(DecodeError::Invalid {
                field: "record tag",
                reason: "expected 0..=2",
            });
        }
    })
}

struct RecordStore {
    db: Database,
    path: PathBuf,
    next: u64,
}

fn store_err(path: &Path) -> impl Fn(redb::Error) -> Error + '_ {
    move |e| Error::Store {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

impl RecordStore {
    /// Opens the store and reads every record back.
    fn open(path: &Path) -> Result<(Self, Vec<Record>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let err = store_err(path);
        let db = Database::create(path).map_err(|e| err(e.into()))?;
        let w = db.begin_write().map_err(|e| err(e.into()))?;
        w.open_table(RECORDS).map_err(|e| err(e.into()))?;
        w.commit().map_err(|e| err(e.into()))?;
        let mut records = Vec::new();
        let mut next = 0;
        {
            let r = db.begin_read().map_err(|e| err(e.into()))?;
            let t = r.open_table(RECORDS).map_err(|e| err(e.into()))?;
            for row in t.iter().map_err(|e| err(e.into()))? {
                let (k, v) = row.map_err(|e| err(e.into()))?;
                next = k.value() + 1;
                records.push(decode_record(v.value()).map_err(|e| {
                    Error::Config(format!(
                        "{}: record {} corrupt: {e}",
                        path.display(),
                        k.value()
                    ))
                })?);
            }
        }
        Ok((
            RecordStore {
                db,
                path: path.to_path_buf(),
                next,
            },
            records,
        ))
    }

    /// Appends `records` in one durable transaction.
    fn append(&mut self, records: &[Vec<u8>]) -> Result<()> {
        let err = store_err(&self.path);
        let w = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut t = w.open_table(RECORDS).map_err(|e| err(e.into()))?;
            for (i, r) in records.iter().enumerate() {
                t.insert(self.next + i as u64, r.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
        }
        w.commit().map_err(|e| err(e.into()))?;
        self.next += records.len() as u64;
        Ok(())
    }
}

// ------------------------------------------------------------------ the task

struct Peer {
    queue: mpsc::Sender<Arc<Vec<u8>>>,
}

struct Driver {
    consensus: Consensus<Keypair, MlDsa87>,
    store: Option<RecordStore>,
    peers: HashMap<NodeId, Peer>,
    commits: mpsc::UnboundedSender<CommittedEvent>,
    evidence: mpsc::UnboundedSender<DoubleSignEvidence>,
    to_push: Option<mpsc::Sender<CommittedSubDag>>,
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
            let (store, r) = tokio::task::spawn_blocking(move || {
                let r = store.append(&records);
                (store, r)
            })
            .await
            .map_err(|e| Error::Config(format!("record writer task: {e}")))?;
            self.store = Some(store);
            r?;
        }
        for o in outputs {
            match o {
                Output::Persist(_) => {}
                Output::Broadcast(m) => {
                    let bytes = Arc::new(m.encode());
                    let ids: Vec<NodeId> = self.peers.keys().copied().collect();
                    for to in ids {
                        self.send(&to, &bytes);
                    }
                }
                Output::Send { to, message } => self.send(&to, &Arc::new(message.encode())),
                Output::Committed(sub_dag) => {
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.committed = self.committed.max(sub_dag.checkpoint.sequence + 1);
                    if let Some(p) = &self.to_push
                        && p.try_send(sub_dag.clone()).is_err()
                    {
                        tracing::warn!(
                            sequence = sub_dag.checkpoint.sequence,
                            "federation queue full; checkpoint not pushed"
                        );
                    }
                    let _ = self.commits.send(CommittedEvent {
                        sub_dag,
                        committed_at_ms: now_ms(),
                        committed_at: Instant::now(),
                    });
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
                } => match self.consensus.handle(now_ms(), from, message) {
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
                Command::Stop => return true,
            }
            n += 1;
            if n < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        false
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>, tick: Duration, first: Vec<Output>) {
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
                }
            }
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

async fn pusher(
    target: FederationTarget,
    key: Keypair,
    mut rx: mpsc::Receiver<CommittedSubDag>,
    out: mpsc::UnboundedSender<FederatedEvent>,
    stats: Arc<RepresentativeStats>,
) {
    let client = match FederationClient::lazy(&target.addr, target.timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "federation disabled");
            return;
        }
    };
    // In-memory and best effort (the lead rewires representatives onto
    // `federation_push::spawn_checkpoint_pusher`, which reads a durable backlog). Each
    // representative pushes its own signature share; the continent pools shares until a
    // quorum. Checkpoints go up in order: AwaitingQuorum, a gap (other members fill it)
    // and transient failures are retried; a refusal is logged and skipped.
    while let Some(sub) = rx.recv().await {
        let header = CheckpointHeader::of(target.city, &sub.checkpoint);
        let share = CertifiedCheckpoint::new(header, vec![sign_share(&header, &key)]);
        let sequence = header.sequence;
        let mut quorum_wait = Duration::from_millis(25);
        loop {
            match client.push_checkpoint(&share).await {
                Ok(proof) => {
                    if let Some(pk) = &target.continent_key
                        && let Err(e) = proof.receipt.verify(LogKind::Continent, pk)
                    {
                        stats.push_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(sequence, error = %e, "continent receipt does not verify");
                        break;
                    }
                    stats.pushed.fetch_add(1, Ordering::Relaxed);
                    let _ = out.send(FederatedEvent { proof });
                    break;
                }
                Err(FederationError::AwaitingQuorum { .. } | FederationError::Gap { .. }) => {
                    tokio::time::sleep(quorum_wait).await;
                    quorum_wait = (quorum_wait * 2).min(Duration::from_millis(500));
                }
                Err(e) if e.is_retryable() => {
                    stats.push_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(sequence, error = %e, "push failed; retrying");
                    tokio::time::sleep(target.retry.max_delay).await;
                }
                Err(e) => {
                    stats.push_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(sequence, error = %e, "continent refused the checkpoint");
                    break;
                }
            }
        }
    }
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
    federated: Option<mpsc::UnboundedReceiver<FederatedEvent>>,
    stats: Arc<RepresentativeStats>,
    status: tokio::sync::watch::Receiver<RepresentativeStatus>,
    server: Option<crate::runtime::ServerHandle>,
    driver: Option<JoinHandle<()>>,
    helpers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Inbound { from, .. } => write!(f, "Inbound(from {from})"),
            Command::Payload(items) => write!(f, "Payload({} items)", items.len()),
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

    /// Queues payload items (held tx ids, micro-batch stripe ids) for its next proposals.
    pub async fn submit(&self, items: Vec<BatchItem>) -> Result<()> {
        self.cmd
            .send(Command::Payload(items))
            .await
            .map_err(|_| Error::Config("representative stopped".into()))
    }

    /// The committed sub-DAGs, in commit order (once; later calls get None).
    pub fn take_commits(&mut self) -> Option<mpsc::UnboundedReceiver<CommittedEvent>> {
        self.commits.take()
    }
    /// Equivocation evidence ready for dpos (once).
    pub fn take_evidence(&mut self) -> Option<mpsc::UnboundedReceiver<DoubleSignEvidence>> {
        self.evidence.take()
    }
    /// Continent receipts of pushed checkpoints (once).
    pub fn take_federated(&mut self) -> Option<mpsc::UnboundedReceiver<FederatedEvent>> {
        self.federated.take()
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
    let (mut handle, svc) = spawn_representative(cfg, key, committee, peers).await?;
    let (health, reflection) =
        crate::runtime::health_and_reflection("citychain.v1.Consensus").await?;
    let router = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(svc);
    handle.server = Some(crate::runtime::serve(listener, router, "consensus"));
    handle.addr = Some(addr);
    tracing::info!(%addr, node_id = %handle.node_id, "representative serving");
    Ok(handle)
}

/// The Consensus gRPC service of a representative, to be served by the role's server.
pub type ConsensusGrpc = rpc::pb::consensus_server::ConsensusServer<rpc::ConsensusService<Inbox>>;

/// Starts a representative's driver, peers and federation without a server of its own:
/// the returned [`ConsensusGrpc`] goes into the role's gRPC server (the city role serves
/// CityNode and Consensus on one address). Reads `<data_dir>/consensus.redb`: with records
/// there, the driver recovers from them.
pub async fn spawn_representative(
    cfg: RepresentativeConfig,
    key: Keypair,
    committee: Committee,
    peers: HashMap<NodeId, String>,
) -> Result<(RepresentativeHandle, ConsensusGrpc)> {
    let node_id = key.node_id();
    let path = cfg.data_dir.join("consensus.redb");
    let (store, records) = tokio::task::spawn_blocking(move || RecordStore::open(&path))
        .await
        .map_err(|e| Error::Config(format!("record store task: {e}")))??;
    let (mut consensus, mut first) = if records.is_empty() {
        let c = Consensus::new(committee, key.clone(), MlDsa87, cfg.consensus.clone())
            .map_err(|e| Error::Config(format!("consensus: {e}")))?;
        (c, Vec::new())
    } else {
        Consensus::recover(
            committee,
            key.clone(),
            MlDsa87,
            cfg.consensus.clone(),
            records,
        )
        .map_err(|e| Error::Config(format!("consensus recovery: {e}")))?
    };
    first.extend(consensus.start(now_ms()));
    let in_flight = consensus.in_flight_items();

    let stats = Arc::new(RepresentativeStats::default());
    let mut helpers = Vec::new();
    let mut peer_map = HashMap::new();
    for (id, peer_addr) in peers {
        if id == node_id {
            continue;
        }
        let client = ConsensusClient::lazy(&peer_addr, cfg.send_timeout)?;
        let (tx, rx) = mpsc::channel(cfg.outbound_queue.max(1));
        helpers.push(tokio::spawn(peer_sender(
            node_id,
            client,
            rx,
            cfg.send_concurrency,
            stats.clone(),
        )));
        peer_map.insert(id, Peer { queue: tx });
    }
    let (fed_tx, fed_rx) = mpsc::unbounded_channel();
    let to_push = match cfg.federation.clone() {
        Some(target) => {
            let (tx, rx) = mpsc::channel(1024);
            helpers.push(tokio::spawn(pusher(
                target,
                key.clone(),
                rx,
                fed_tx,
                stats.clone(),
            )));
            Some(tx)
        }
        None => None,
    };
    let (commits_tx, commits_rx) = mpsc::unbounded_channel();
    let (evidence_tx, evidence_rx) = mpsc::unbounded_channel();
    let (cmd, cmd_rx) = mpsc::channel(cfg.inbound_queue.max(1));
    let (status_tx, status_rx) = tokio::sync::watch::channel(RepresentativeStatus::default());
    let driver = Driver {
        status: status_tx,
        committed: 0,
        consensus,
        store: Some(store),
        peers: peer_map,
        commits: commits_tx,
        evidence: evidence_tx,
        to_push,
        stats: stats.clone(),
    };
    let driver = tokio::spawn(driver.run(cmd_rx, cfg.tick, first));

    let svc = rpc::ConsensusService::new(Arc::new(Inbox { tx: cmd.clone() })).into_server();
    let handle = RepresentativeHandle {
        node_id,
        in_flight,
        addr: None,
        cmd,
        commits: Some(commits_rx),
        evidence: Some(evidence_rx),
        federated: Some(fed_rx),
        stats,
        status: status_rx,
        server: None,
        driver: Some(driver),
        helpers,
    };
    Ok((handle, svc))
}

// ------------------------------------------------------------------ devnet round

/// What [`run_devnet_round`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusFigures {
    /// Representatives started.
    pub reps: usize,
    /// Whether one was killed half-way.
    pub killed_one: bool,
    /// Payload items submitted.
    pub items: usize,
    /// Items committed (by every live representative).
    pub items_committed: usize,
    /// Leaders committed (checkpoints), fewest over live representatives.
    pub commits: u64,
    /// Payload submitted → committed at the representative it was submitted to, p50 (ms),
    /// for items submitted while every representative was up.
    pub commit_latency_p50_ms: f64,
    /// The same, p99 (ms).
    pub commit_latency_p99_ms: f64,
    /// p50 (ms) of items submitted after the kill (rounds led by the dead representative
    /// wait the leader timeout); 0 without a kill.
    pub after_kill_latency_p50_ms: f64,
    /// The same, p99 (ms).
    pub after_kill_latency_p99_ms: f64,
    /// Leaves in the continent's log.
    pub continent_log_size: u64,
    /// Receipts whose inclusion proof verified against the receipt's root.
    pub inclusion_proofs_verified: usize,
    /// Every pair of representatives committed identical checkpoint sequences (compared on
    /// their common prefix, the killed one included).
    pub sequences_identical: bool,
    /// The continent reopened with the same log size and root.
    pub log_survived_restart: bool,
    /// Wall time of the round.
    pub elapsed: Duration,
}

#[derive(Debug, Default)]
struct Seen {
    /// Checkpoint running hashes by sequence.
    hashes: Vec<Hash32>,
    /// First commit time of each item.
    items: HashMap<BatchItem, Instant>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `n_reps` representatives (each its own gRPC server on loopback, real ML-DSA-87
/// keys, redb records under `dir`) and a continent; once each has committed its first
/// checkpoint, submits `items` round-robin as a stream over ~0.5 s (half before and half
/// after killing the last representative when `kill_one`), waits until
/// every live representative committed all of them, pushes checkpoints to the continent,
/// verifies the inclusion proofs, restarts the continent and checks its log.
pub async fn run_devnet_round(
    n_reps: usize,
    items: Vec<BatchItem>,
    kill_one: bool,
    dir: &Path,
) -> Result<ConsensusFigures> {
    let started = Instant::now();
    if n_reps < 1 || (kill_one && n_reps < 4) {
        return Err(Error::Config(format!(
            "{n_reps} representatives cannot {}commit",
            if kill_one { "lose one and still " } else { "" }
        )));
    }
    let keys: Vec<Keypair> = (0..n_reps).map(|_| Keypair::generate()).collect();
    let committee = Committee::equal(keys.iter().map(|k| k.public_key().to_vec()).collect())
        .ok_or_else(|| Error::Config("bad committee".into()))?;
    let city = Hash32::digest(b"citychain/devnet-city");
    let continent_key = Keypair::generate();
    let continent_pk = continent_key.public_key().to_vec();
    let ccfg = ContinentConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        dir.join("continent"),
        vec![CityCommittee {
            city,
            committee: committee.clone(),
        }],
    );
    let continent = start_continent(&ccfg, continent_key.clone()).await?;

    let mut listeners = Vec::new();
    let mut peers = HashMap::new();
    for k in &keys {
        let (l, a) = crate::runtime::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        peers.insert(k.node_id(), a.to_string());
        listeners.push(l);
    }
    let mut reps = Vec::new();
    for (i, (k, l)) in keys.iter().zip(listeners).enumerate() {
        let mut cfg = RepresentativeConfig::new(dir.join(format!("rep-{i}")));
        cfg.federation = Some(FederationTarget::new(
            continent.addr().to_string(),
            city,
            Some(continent_pk.clone()),
        ));
        reps.push(start_representative(cfg, k.clone(), committee.clone(), l, peers.clone()).await?);
    }
    let seen: Vec<Arc<parking_lot::Mutex<Seen>>> = (0..n_reps).map(|_| Arc::default()).collect();
    let receipts = Arc::new(parking_lot::Mutex::new(Vec::<FederatedEvent>::new()));
    let mut collectors = Vec::new();
    for (rep, seen) in reps.iter_mut().zip(&seen) {
        if let Some(mut rx) = rep.take_commits() {
            let seen = seen.clone();
            collectors.push(tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    let mut s = seen.lock();
                    if ev.sub_dag.checkpoint.sequence == s.hashes.len() as u64 {
                        s.hashes.push(ev.sub_dag.checkpoint.hash());
                    }
                    for (_, item) in ev.sub_dag.items() {
                        s.items.entry(*item).or_insert(ev.committed_at);
                    }
                }
            }));
        }
        if let Some(mut rx) = rep.take_federated() {
            let receipts = receipts.clone();
            collectors.push(tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    receipts.lock().push(ev);
                }
            }));
        }
    }

    // Warm-up: every representative has committed once (connections up, genesis done),
    // so the latencies below are the steady state's.
    let deadline = Duration::from_secs(30);
    let warm = Instant::now();
    while !seen.iter().all(|s| !s.lock().hashes.is_empty()) {
        if warm.elapsed() > deadline {
            return Err(Error::Config("no first commit within 30 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut submitted: Vec<(BatchItem, usize, Instant, usize)> = Vec::new();
    let (first, second) = if kill_one {
        let half = items.len() / 2;
        (items[..half].to_vec(), items[half..].to_vec())
    } else {
        (items.clone(), Vec::new())
    };
    let mut live = n_reps;
    for (phase, batch) in [first, second].into_iter().enumerate() {
        if phase == 1 {
            if batch.is_empty() && !kill_one {
                break;
            }
            if let Some(victim) = reps.pop() {
                tracing::info!(node = %victim.node_id(), "killing a representative");
                victim.kill().await;
                live -= 1;
            }
        }
        // A steady stream rather than one burst: ten slices, one per proposal interval.
        let slice = batch.len().div_ceil(10).max(1);
        for (k, chunk) in batch.chunks(slice).enumerate() {
            if k > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for (j, item) in chunk.iter().enumerate() {
                let to = (k * slice + j) % live;
                reps[to].submit(vec![*item]).await?;
                submitted.push((*item, to, Instant::now(), phase));
            }
        }
        let wait_start = Instant::now();
        loop {
            let done = seen[..live].iter().all(|s| {
                let s = s.lock();
                submitted.iter().all(|(i, ..)| s.items.contains_key(i))
            });
            if done {
                break;
            }
            if wait_start.elapsed() > deadline {
                let state: Vec<String> = reps
                    .iter()
                    .zip(&seen)
                    .map(|(r, s)| {
                        let missing = submitted
                            .iter()
                            .filter(|(i, ..)| !s.lock().items.contains_key(i))
                            .count();
                        format!(
                            "{} {:?} missing {missing} {:?}",
                            r.node_id(),
                            *r.status().borrow(),
                            r.stats()
                        )
                    })
                    .collect();
                return Err(Error::Config(format!(
                    "items not committed by every live representative within {} s:\n{}",
                    deadline.as_secs(),
                    state.join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // Federation: wait until the continent holds every checkpoint the slowest live
    // representative committed.
    let commits = seen[..live]
        .iter()
        .map(|s| s.lock().hashes.len() as u64)
        .min()
        .unwrap_or(0);
    let wait_start = Instant::now();
    while continent.log().size() < commits && wait_start.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for r in reps {
        r.shutdown().await?;
    }
    for c in collectors {
        let _ = c.await;
    }

    let latencies = |want: usize| {
        let mut l: Vec<f64> = submitted
            .iter()
            .filter(|(.., phase)| *phase == want)
            .filter_map(|(item, to, at, _)| {
                seen[*to]
                    .lock()
                    .items
                    .get(item)
                    .map(|c| c.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect();
        l.sort_by(f64::total_cmp);
        l
    };
    let (healthy, after_kill) = (latencies(0), latencies(1));
    let hashes: Vec<Vec<Hash32>> = seen.iter().map(|s| s.lock().hashes.clone()).collect();
    let sequences_identical = hashes.iter().all(|a| {
        hashes.iter().all(|b| {
            let n = a.len().min(b.len());
            a[..n] == b[..n]
        })
    });
    let items_committed = submitted
        .iter()
        .filter(|(i, ..)| seen[..live].iter().all(|s| s.lock().items.contains_key(i)))
        .count();

    // Every federation proof, checked offline: quorum certificate, leaf, path, signature.
    let receipts = std::mem::take(&mut *receipts.lock());
    let verified = receipts
        .iter()
        .filter(|ev| ev.proof.verify(&committee, &continent_pk).is_ok())
        .count();
    let size = continent.log().size();
    let root = continent.log().root();
    continent.shutdown().await?;
    // Restart on the same directory: the log must come back whole.
    let mut survived = false;
    for _ in 0..50 {
        match start_continent(&ccfg, continent_key.clone()).await {
            Ok(c) => {
                survived = c.log().size() == size && c.log().root() == root;
                c.shutdown().await?;
                break;
            }
            Err(Error::Store { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(e),
        }
    }
    Ok(ConsensusFigures {
        reps: n_reps,
        killed_one: kill_one,
        items: items.len(),
        items_committed,
        commits,
        commit_latency_p50_ms: percentile(&healthy, 0.50),
        commit_latency_p99_ms: percentile(&healthy, 0.99),
        after_kill_latency_p50_ms: percentile(&after_kill, 0.50),
        after_kill_latency_p99_ms: percentile(&after_kill, 0.99),
        continent_log_size: size,
        inclusion_proofs_verified: verified,
        sequences_identical,
        log_survived_restart: survived,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = Record::Voted {
            author: NodeId::from_bytes([1; 32]),
            round: 9,
            digest: BatchDigest(Hash32([2; 32])),
        };
        assert_eq!(decode_record(&encode_record(&r)).unwrap(), r);
        assert!(decode_record(&[7]).is_err());
        assert!(decode_record(&[]).is_err());
    }
}

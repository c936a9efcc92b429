//! The execution feed of a representative: it follows the order store's commits in
//! sequence order, obtains the verified body of every tx each checkpoint newly orders, and
//! hands `(sequence, agreed time, [VerifiedTx in commit order])` to the registered state
//! machines ([`CommitApplier`]: the ledger, later DPoS). The combined state root of every
//! executed checkpoint is recorded (`<data_dir>/execution.redb`) and goes into the
//! checkpoint header the committee certifies to the continent; a checkpoint is federated
//! only once it is executed ([`ExecutedCheckpoints`]).
//!
//! Deterministic and gap-free:
//! - the txs of checkpoint `s` are the `BatchItem::Tx` items of its batches in commit order,
//!   each tx once, only where `s` is its first ordering (the order store's rule);
//! - the checkpoint's time is the committed leader's timestamp, never below the previous
//!   checkpoint's (inside the certified leader batch: equal on every representative);
//! - a body is used only after its signature and id verified; a body that cannot be had
//!   yet **blocks the feed at that checkpoint** (metric `citychain_execution_blocked_seq`,
//!   [`Execution::blocked`]) and is asked for again with backoff — never skipped.
//!
//! Where bodies come from, in order: this node's tx store, read for the whole checkpoint
//! in one blocking task and **not verified again** (the store only ever took txs this
//! node's admission verified; id and key are re-checked, see
//! [`VerifiedTx::reload_verified`]); then, for what is still missing, bounded parallel
//! fetches (`FeedConfig::concurrency`, default 32) from this node's stripe's light nodes or archive,
//! the batch's author and the other representatives through `GetTx`, and the light nodes
//! of stripes others placed — each fetched body verified before use (it must hash to the
//! ordered id, its key to its sender, its signature verify: [`verify_fetched`]), as soon as
//! it arrives, on the node's verification pool (the one admission uses), at most half the
//! pool's threads at once so the Held path keeps the rest.
//!
//! Crash safety: each applier is durable and idempotent per sequence; the feed resumes at
//! the lowest sequence any applier or the record still lacks.

use super::admission::CityNode;
use super::order::OrderStore;
use crate::federation_push::CheckpointSource;
use crate::runtime::{db_err, open_db, run_blocking};
use crate::{Error, Result};
use dag_core::consensus::{BatchItem, Checkpoint};
use dag_core::execution::{CommitApplier, combined_root};
use dag_core::{DecodeError, Hash32, NodeId, Reader, SignedTx, StripeId, TxId, VerifiedTx, Writer};
use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Sequence → at_ms u64 ‖ combined root 32 ‖ count u16 ‖ (name length u8 ‖ name ‖ root 32)
/// per applier in name order.
const EXECUTED: TableDefinition<u64, &[u8]> = TableDefinition::new("executed");

/// One executed checkpoint as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutedCheckpoint {
    /// The checkpoint's agreed time (ms since the Unix epoch).
    pub at_ms: u64,
    /// The combined state root ([`combined_root`]) the header certifies.
    pub state_root: Hash32,
    /// Each state machine's root, by name.
    pub roots: Vec<(String, Hash32)>,
}

impl ExecutedCheckpoint {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.at_ms).raw(&self.state_root.0);
        w.u16(u16::try_from(self.roots.len()).unwrap_or(u16::MAX));
        for (name, root) in &self.roots {
            w.bytes_u8(&name.as_bytes()[..name.len().min(255)])
                .raw(&root.0);
        }
        w.finish()
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let at_ms = r.u64("at_ms")?;
        let state_root = Hash32(r.bytes32("state_root")?);
        let n = r.u16("appliers")?;
        let mut roots = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let name = r.bytes_u8("name", 255)?;
            let name = std::str::from_utf8(name)
                .map_err(|_| DecodeError::Invalid {
                    field: "name",
                    reason: "not UTF-8",
                })?
                .to_string();
            roots.push((name, Hash32(r.bytes32("root")?)));
        }
        r.finish()?;
        Ok(ExecutedCheckpoint {
            at_ms,
            state_root,
            roots,
        })
    }
}

/// Where the feed is stuck, when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// The checkpoint waiting.
    pub sequence: u64,
    /// Bodies still missing (0: an applier failed).
    pub missing: usize,
}

/// The state machines of a representative and the record of executed checkpoints.
pub struct Execution {
    db: Database,
    path: PathBuf,
    appliers: Vec<Arc<dyn CommitApplier>>,
    ledger: Option<Arc<ledger::Ledger>>,
    executed: watch::Sender<u64>,
    blocked: Mutex<Option<Blocked>>,
}

impl std::fmt::Debug for Execution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Execution")
            .field("path", &self.path)
            .field(
                "appliers",
                &self.appliers.iter().map(|a| a.name()).collect::<Vec<_>>(),
            )
            .field("executed", &*self.executed.borrow())
            .finish()
    }
}

/// The state machines of a representative, and the ledger among them.
pub(crate) type StateMachines = (Vec<Arc<dyn CommitApplier>>, Arc<ledger::Ledger>);

/// The state machines every representative runs, opened in `data_dir`: the ledger
/// (`ledger.redb`, from the genesis `accounts`). To add one (e.g. DPoS), open it here and
/// push it; names must be unique and never change.
pub(crate) fn state_machines(
    data_dir: &Path,
    accounts: &BTreeMap<dag_core::AccountId, u64>,
) -> Result<StateMachines> {
    let ledger = Arc::new(
        ledger::Ledger::open(
            &data_dir.join("ledger.redb"),
            accounts,
            ledger::LedgerConfig {
                cache_bytes: crate::runtime::db_cache_bytes(),
                ..ledger::LedgerConfig::default()
            },
        )
        .map_err(|source| Error::Ledger { source })?,
    );
    let appliers: Vec<Arc<dyn CommitApplier>> = vec![ledger.clone()];
    Ok((appliers, ledger))
}

impl Execution {
    /// Opens the record at `path` for `appliers` (names must be unique); `ledger` is the
    /// ledger among them, for account and outcome reads.
    pub fn open(
        path: &Path,
        mut appliers: Vec<Arc<dyn CommitApplier>>,
        ledger: Option<Arc<ledger::Ledger>>,
    ) -> Result<Self> {
        appliers.sort_by(|a, b| a.name().cmp(b.name()));
        if let Some(w) = appliers.windows(2).find(|w| w[0].name() == w[1].name()) {
            return Err(Error::Membership(format!(
                "two state machines are named {:?}",
                w[0].name()
            )));
        }
        let db = open_db(path, |w| {
            w.open_table(EXECUTED)?;
            Ok(())
        })?;
        let err = db_err(path);
        let executed = {
            let r = db.begin_read().map_err(|e| err(e.into()))?;
            let t = r.open_table(EXECUTED).map_err(|e| err(e.into()))?;
            t.last()
                .map_err(|e| err(e.into()))?
                .map_or(0, |(k, _)| k.value() + 1)
        };
        Ok(Execution {
            db,
            path: path.to_path_buf(),
            appliers,
            ledger,
            executed: watch::channel(executed).0,
            blocked: Mutex::new(None),
        })
    }

    /// Checkpoints executed by every state machine (sequences `0..n`).
    pub fn executed(&self) -> u64 {
        *self.executed.borrow()
    }

    /// Wakes on every executed checkpoint; the value is [`Execution::executed`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.executed.subscribe()
    }

    /// Where the feed waits, if it does.
    pub fn blocked(&self) -> Option<Blocked> {
        *self.blocked.lock()
    }

    /// The ledger.
    pub fn ledger(&self) -> Option<&Arc<ledger::Ledger>> {
        self.ledger.as_ref()
    }

    /// The names of the state machines, in root order.
    pub fn applier_names(&self) -> Vec<&'static str> {
        self.appliers.iter().map(|a| a.name()).collect()
    }

    /// The record of executed checkpoint `seq`.
    pub fn checkpoint(&self, seq: u64) -> Result<Option<ExecutedCheckpoint>> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(EXECUTED).map_err(|e| err(e.into()))?;
        let Some(v) = t.get(seq).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        ExecutedCheckpoint::decode(v.value())
            .map(Some)
            .map_err(|source| Error::CorruptRecord {
                path: self.path.clone(),
                index: seq,
                source,
            })
    }

    /// The first sequence some state machine or the record still lacks.
    fn resume_point(&self) -> u64 {
        self.appliers
            .iter()
            .map(|a| a.next_seq())
            .chain(std::iter::once(self.executed()))
            .min()
            .unwrap_or(0)
    }

    fn record(&self, seq: u64, rec: &ExecutedCheckpoint) -> Result<()> {
        let err = db_err(&self.path);
        let w = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut t = w.open_table(EXECUTED).map_err(|e| err(e.into()))?;
            if let Some(old) = t.get(seq).map_err(|e| err(e.into()))? {
                let old = old.value().to_vec();
                if old != rec.encode() {
                    // Only when a state machine was added to a running chain (a fork of
                    // the state history): say so loudly, keep the new record.
                    tracing::error!(seq, "executed checkpoint re-recorded with another root");
                }
            }
            t.insert(seq, rec.encode().as_slice())
                .map_err(|e| err(e.into()))?;
        }
        w.commit().map_err(|e| err(e.into()))?;
        if seq + 1 > self.executed() {
            self.executed.send_replace(seq + 1);
        }
        metrics::gauge!("citychain_executed_checkpoints").set((seq + 1) as f64);
        Ok(())
    }
}

/// Where bodies of ordered txs come from.
pub(crate) trait BodySource: Send + Sync + 'static {
    /// The tx `id` (proposed by `author`, likely inside one of `stripes`), as found:
    /// unverified, verified by the feed.
    fn fetch(
        &self,
        id: TxId,
        author: NodeId,
        stripes: Arc<Vec<StripeId>>,
    ) -> impl Future<Output = Option<SignedTx>> + Send;

    /// The bodies among `ids` that this node verified itself at admission (its own tx
    /// store), already verified: the feed does not check their signatures again. Default:
    /// none (every body goes through [`BodySource::fetch`] and is verified).
    fn local_verified(&self, ids: Vec<TxId>) -> impl Future<Output = Vec<VerifiedTx>> + Send {
        let _ = ids;
        std::future::ready(Vec::new())
    }

    /// Verifies a fetched body for `id` ([`verify_fetched`]: it must hash to `id`, its key
    /// to its sender, and its signature verify). Default: on tokio's blocking pool, one task
    /// per body (so bodies verify in parallel); a node passes its verification pool.
    fn verify(
        &self,
        id: TxId,
        tx: SignedTx,
    ) -> impl Future<Output = std::result::Result<VerifiedTx, String>> + Send {
        async move {
            run_blocking("execution verify", move || verify_fetched(id, tx))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        }
    }
}

/// Checks a body another node sent for `id`: it must hash to `id` (a signature alone does
/// not bind the body: it signs the id, so a peer could keep the signature and change the
/// amount), its public key must hash to its sender, and its ML-DSA-87 signature verify.
pub(crate) fn verify_fetched(id: TxId, tx: SignedTx) -> dag_core::Result<VerifiedTx> {
    let actual = tx.id();
    if actual != id {
        return Err(dag_core::Error::Decode(DecodeError::Invalid {
            field: "tx id",
            reason: "the fetched body does not hash to the ordered id",
        }));
    }
    tx.verify_with_id(id, &pqc::MlDsa87)
}

/// This node's copies first, then the representatives' `GetTx`.
pub(crate) struct CommitteeBodies {
    node: Arc<CityNode>,
    me: NodeId,
    /// The members' city addresses (genesis file and dpos endpoints), read when needed.
    peers: super::committee::AddressBook,
    clients: tokio::sync::Mutex<HashMap<NodeId, rpc::CityClient>>,
    timeout: Duration,
    /// Txs restored from stripes other representatives placed, by id, until the feed
    /// takes them (bounded by [`MAX_RESTORED`]).
    restored: Mutex<HashMap<TxId, SignedTx>>,
    /// Stripes already restored.
    stripes_done: Mutex<HashSet<StripeId>>,
    /// The feed's share of the verification pool: at most half its threads (at least one)
    /// verify fetched bodies at once, so admission (the Held path) keeps the rest.
    verify_share: tokio::sync::Semaphore,
}

/// Most restored txs kept for the feed (a tx leaves when the feed takes it); beyond, the
/// cache starts over. 8,192 txs of ~7.3 KB ≈ 60 MB at most, whatever the history (it was
/// 200,000, ≈ 1.4 GB).
const MAX_RESTORED: usize = 8_192;

/// Most stripe ids remembered as restored (32 B each); beyond, the set starts over.
const MAX_STRIPES_DONE: usize = 16_384;

impl CommitteeBodies {
    pub(crate) fn new(
        node: Arc<CityNode>,
        me: NodeId,
        peers: super::committee::AddressBook,
    ) -> Self {
        let share = node
            .pipeline()
            .map_or(1, |p| p.verify_pool().threads() / 2)
            .max(1);
        CommitteeBodies {
            node,
            me,
            peers,
            clients: tokio::sync::Mutex::new(HashMap::new()),
            timeout: Duration::from_secs(2),
            restored: Mutex::new(HashMap::new()),
            stripes_done: Mutex::new(HashSet::new()),
            verify_share: tokio::sync::Semaphore::new(share),
        }
    }

    /// The light-node tier: restores the candidate stripes (no manifest needed) until one
    /// yields `id`.
    async fn restore_from_stripes(&self, id: TxId, stripes: &[StripeId]) -> Option<SignedTx> {
        let p = self.node.pipeline()?;
        for s in stripes {
            if let Some(tx) = self.restored.lock().remove(&id) {
                return Some(tx);
            }
            if self.stripes_done.lock().contains(s) {
                continue;
            }
            match p.restore_foreign_stripe(*s).await {
                Ok(txs) => {
                    let mut r = self.restored.lock();
                    if r.len() + txs.len() > MAX_RESTORED {
                        r.clear();
                        self.stripes_done.lock().clear();
                    }
                    for t in txs {
                        r.insert(t.id(), t);
                    }
                    drop(r);
                    let mut done = self.stripes_done.lock();
                    if done.len() >= MAX_STRIPES_DONE {
                        // Forgetting only costs a second restore of a stripe asked again.
                        done.clear();
                    }
                    done.insert(*s);
                }
                Err(e) => {
                    tracing::debug!(stripe = %s.short(), error = %e, "stripe not restorable for execution");
                }
            }
        }
        self.restored.lock().remove(&id)
    }

    async fn client(&self, peer: NodeId) -> Option<rpc::CityClient> {
        if let Some(c) = self.clients.lock().await.get(&peer) {
            return Some(c.clone());
        }
        let addr = (self.peers)().remove(&peer)?;
        let c = tokio::time::timeout(self.timeout, rpc::CityClient::connect(&addr))
            .await
            .ok()?
            .ok()?;
        self.clients.lock().await.insert(peer, c.clone());
        Some(c)
    }

    async fn fetch_from_peer(&self, peer: NodeId, id: TxId) -> Option<SignedTx> {
        let c = self.client(peer).await?;
        // Body only: the peer skips receipts, ordering and proofs (verified here anyway).
        match tokio::time::timeout(self.timeout, c.get_body(id)).await {
            Ok(Ok(tx)) => tx,
            Ok(Err(e)) => {
                tracing::debug!(tx = %id, %peer, error = %e, "GetTx for execution failed");
                // Reconnect next time (the peer may have restarted).
                self.clients.lock().await.remove(&peer);
                None
            }
            Err(_) => None,
        }
    }
}

impl BodySource for CommitteeBodies {
    async fn verify(&self, id: TxId, tx: SignedTx) -> std::result::Result<VerifiedTx, String> {
        // On the node's verification pool (admission's), each body its own job.
        let Some(p) = self.node.pipeline() else {
            return run_blocking("execution verify", move || verify_fetched(id, tx))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string());
        };
        let _share = self
            .verify_share
            .acquire()
            .await
            .map_err(|_| "the feed is stopping".to_string())?;
        let (done, rx) = tokio::sync::oneshot::channel();
        p.verify_pool().spawn(move || {
            let _ = done.send(verify_fetched(id, tx));
        });
        rx.await
            .map_err(|_| "the verification pool stopped".to_string())?
            .map_err(|e| e.to_string())
    }

    async fn local_verified(&self, ids: Vec<TxId>) -> Vec<VerifiedTx> {
        let node = self.node.clone();
        // One blocking task for the whole checkpoint's lookups (redb reads, no signature
        // checks: the store only ever took txs admission verified).
        let found = run_blocking("execution local bodies", move || {
            let store = node.store();
            ids.into_iter()
                .filter_map(|id| match store.get(&id) {
                    Ok(Some(signed)) => match VerifiedTx::reload_verified(signed, id) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            tracing::warn!(tx = %id, error = %e, "stored body refused; fetching it instead");
                            None
                        }
                    },
                    Ok(None) => None,
                    Err(e) => {
                        tracing::debug!(tx = %id, error = %e, "tx store read failed; fetching instead");
                        None
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        metrics::counter!("citychain_execution_bodies_total", "source" => "own_store")
            .increment(found.len() as u64);
        found
    }

    async fn fetch(
        &self,
        id: TxId,
        author: NodeId,
        stripes: Arc<Vec<StripeId>>,
    ) -> Option<SignedTx> {
        if let Ok(Some(rec)) = self.node.get_local(id).await
            && let Some(tx) = rec.tx
        {
            metrics::counter!("citychain_execution_bodies_total", "source" => "local").increment(1);
            return Some(tx);
        }
        let peers: Vec<NodeId> = (self.peers)().into_keys().collect();
        let order = std::iter::once(author)
            .chain(peers.into_iter().filter(move |p| *p != author))
            .filter(|p| *p != self.me);
        for peer in order {
            if let Some(tx) = self.fetch_from_peer(peer, id).await {
                metrics::counter!("citychain_execution_bodies_total", "source" => "peer")
                    .increment(1);
                return Some(tx);
            }
        }
        let tx = self.restore_from_stripes(id, &stripes).await;
        if tx.is_some() {
            metrics::counter!("citychain_execution_bodies_total", "source" => "light_nodes")
                .increment(1);
        }
        tx
    }
}

/// The feed's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FeedConfig {
    /// First wait after a checkpoint could not be executed.
    pub(crate) backoff_min: Duration,
    /// Longest wait between attempts.
    pub(crate) backoff_max: Duration,
    /// Bodies fetched concurrently.
    pub(crate) concurrency: usize,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            concurrency: 32,
        }
    }
}

/// A running feed. Drop does not stop it: call [`FeedHandle::shutdown`].
#[derive(Debug)]
pub(crate) struct FeedHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl FeedHandle {
    /// Stops after the step in flight and waits.
    pub(crate) async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take()
            && let Err(e) = t.await
            && e.is_panic()
        {
            tracing::error!(error = %e, "execution feed panicked");
        }
    }
    /// Stops at once (a crash).
    pub(crate) async fn kill(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Starts the feed of `exec` over `order`, fetching bodies from `bodies`.
pub(crate) fn spawn_feed<S: BodySource>(
    exec: Arc<Execution>,
    order: Arc<OrderStore>,
    bodies: Arc<S>,
    cfg: FeedConfig,
) -> FeedHandle {
    let (stop, stopped) = watch::channel(false);
    let feed = Feed {
        exec,
        order,
        bodies,
        cfg,
        stop: stopped,
        cache: HashMap::new(),
    };
    FeedHandle {
        stop,
        task: Some(tokio::spawn(feed.run())),
    }
}

struct Feed<S> {
    exec: Arc<Execution>,
    order: Arc<OrderStore>,
    bodies: Arc<S>,
    cfg: FeedConfig,
    stop: watch::Receiver<bool>,
    /// Verified bodies of the checkpoint being executed (kept across retries).
    cache: HashMap<TxId, VerifiedTx>,
}

/// Checkpoints before the current one whose stripes are candidates for a missing body.
const STRIPE_LOOKBACK: u64 = 16;

/// One tx to execute and where its body may be.
struct Planned {
    id: TxId,
    author: NodeId,
    stripes: Arc<Vec<StripeId>>,
}

/// Why a step did not execute its checkpoint.
enum StepError {
    Missing(usize),
    Failed(String),
}

impl<S: BodySource> Feed<S> {
    async fn run(mut self) {
        let mut committed = self.order.subscribe();
        let mut backoff = self.cfg.backoff_min;
        loop {
            if *self.stop.borrow() {
                return;
            }
            let seq = self.exec.resume_point();
            if self.order.committed() <= seq {
                tokio::select! {
                    r = committed.changed() => if r.is_err() { return },
                    _ = self.stop.changed() => return,
                }
                continue;
            }
            match self.step(seq).await {
                Ok(()) => {
                    backoff = self.cfg.backoff_min;
                    self.cache.clear();
                    *self.exec.blocked.lock() = None;
                    metrics::gauge!("citychain_execution_blocked_seq").set(-1.0);
                }
                Err(e) => {
                    let missing = match e {
                        StepError::Missing(n) => {
                            tracing::warn!(seq, missing = n, "execution waits for tx bodies");
                            n
                        }
                        StepError::Failed(why) => {
                            tracing::error!(seq, error = %why, "checkpoint not executed; retrying");
                            0
                        }
                    };
                    *self.exec.blocked.lock() = Some(Blocked {
                        sequence: seq,
                        missing,
                    });
                    metrics::gauge!("citychain_execution_blocked_seq").set(seq as f64);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(self.cfg.backoff_max);
                }
            }
        }
    }

    /// The newly ordered txs of `seq` (id, author, candidate stripes) in commit order, and
    /// its agreed time. A tx's candidate stripes: those in its own batch, then its author's
    /// other stripes in this and the previous [`STRIPE_LOOKBACK`] checkpoints.
    fn plan(order: &OrderStore, exec: &Execution, seq: u64) -> Result<(Vec<Planned>, u64)> {
        let corrupt = |reason| Error::CorruptRecord {
            path: "order.redb".into(),
            index: seq,
            source: DecodeError::Invalid {
                field: "checkpoint",
                reason,
            },
        };
        let headers = |s: u64| -> Result<Vec<dag_core::consensus::BatchHeader>> {
            let cp: Checkpoint = order
                .checkpoint(s)?
                .ok_or_else(|| corrupt("committed checkpoint missing"))?
                .checkpoint;
            let mut out = Vec::new();
            for digest in &cp.batches {
                // Batches that carry no tx are not stored.
                if let Some(h) = order.batch(digest)? {
                    out.push(h);
                }
            }
            Ok(out)
        };
        let stripes_of = |h: &dag_core::consensus::BatchHeader| -> Vec<StripeId> {
            h.items
                .iter()
                .filter_map(|i| match i {
                    BatchItem::Stripe(s) => Some(*s),
                    BatchItem::Tx(_) => None,
                })
                .collect()
        };
        let current = headers(seq)?;
        let mut by_author: HashMap<NodeId, Vec<StripeId>> = HashMap::new();
        for s in (seq.saturating_sub(STRIPE_LOOKBACK)..=seq).rev() {
            let hs = if s == seq {
                current.clone()
            } else {
                headers(s)?
            };
            for h in hs.iter().rev() {
                by_author.entry(h.author).or_default().extend(stripes_of(h));
            }
        }
        let mut seen = HashSet::new();
        let mut txs = Vec::new();
        for header in &current {
            let mut candidates = stripes_of(header);
            for s in by_author.get(&header.author).into_iter().flatten() {
                if !candidates.contains(s) {
                    candidates.push(*s);
                }
            }
            let candidates = Arc::new(candidates);
            for item in &header.items {
                let BatchItem::Tx(id) = item else { continue };
                if !seen.insert(*id) {
                    continue;
                }
                // First ordering wins: a tx committed again later is not executed again.
                match order.ordering(id)? {
                    Some(o) if o.sequence == seq => txs.push(Planned {
                        id: *id,
                        author: header.author,
                        stripes: candidates.clone(),
                    }),
                    Some(_) => {}
                    None => return Err(corrupt("an ordered tx has no position")),
                }
            }
        }
        let prev = match seq.checked_sub(1) {
            None => 0,
            Some(p) => {
                exec.checkpoint(p)?
                    .ok_or_else(|| corrupt("previous checkpoint not executed"))?
                    .at_ms
            }
        };
        // Stores written before leader times were recorded fall back to the previous time
        // (the same on every representative running this code).
        let at_ms = order.leader_time(seq)?.unwrap_or(prev).max(prev);
        Ok((txs, at_ms))
    }

    async fn step(&mut self, seq: u64) -> std::result::Result<(), StepError> {
        let (order, exec) = (self.order.clone(), self.exec.clone());
        let (plan, at_ms) = run_blocking("execution plan", move || Self::plan(&order, &exec, seq))
            .await
            .map_err(|e| StepError::Failed(e.to_string()))?
            .map_err(|e| StepError::Failed(e.to_string()))?;
        // Bodies this node verified at admission: one batched store read, no signature
        // check again.
        let own: Vec<TxId> = plan
            .iter()
            .filter(|p| !self.cache.contains_key(&p.id))
            .map(|p| p.id)
            .collect();
        if !own.is_empty() {
            for v in self.bodies.local_verified(own).await {
                self.cache.insert(v.id(), v);
            }
        }
        // Fetch what is still missing (bounded, in parallel) and verify each body as it
        // arrives, in parallel on the verification pool.
        let wanted: Vec<(TxId, NodeId, Arc<Vec<StripeId>>)> = plan
            .iter()
            .filter(|p| !self.cache.contains_key(&p.id))
            .map(|p| (p.id, p.author, p.stripes.clone()))
            .collect();
        if !wanted.is_empty() {
            use futures::StreamExt;
            let bodies = self.bodies.clone();
            let verified: Vec<VerifiedTx> = futures::stream::iter(wanted)
                .map(|(id, author, stripes)| {
                    let b = bodies.clone();
                    async move {
                        let tx = b.fetch(id, author, stripes).await?;
                        match b.verify(id, tx).await {
                            Ok(v) => Some(v),
                            Err(e) => {
                                tracing::warn!(tx = %id, error = %e, "a fetched body does not verify; dropped");
                                metrics::counter!("citychain_execution_bad_bodies_total")
                                    .increment(1);
                                None
                            }
                        }
                    }
                })
                .buffer_unordered(self.cfg.concurrency.max(1))
                .filter_map(std::future::ready)
                .collect()
                .await;
            for v in verified {
                self.cache.insert(v.id(), v);
            }
        }
        let missing = plan
            .iter()
            .filter(|p| !self.cache.contains_key(&p.id))
            .count();
        if missing > 0 {
            return Err(StepError::Missing(missing));
        }
        let txs: Arc<Vec<VerifiedTx>> = Arc::new(
            plan.iter()
                .filter_map(|p| self.cache.get(&p.id).cloned())
                .collect(),
        );
        let mut roots = Vec::with_capacity(self.exec.appliers.len());
        for a in &self.exec.appliers {
            let name = a.name();
            let (a, txs) = (a.clone(), txs.clone());
            let root = run_blocking("state machine", move || a.apply(seq, at_ms, &txs))
                .await
                .map_err(|e| StepError::Failed(e.to_string()))?
                .map_err(|e| StepError::Failed(e.to_string()))?;
            roots.push((name, root));
        }
        let named: Vec<(&str, Hash32)> = roots.iter().map(|(n, r)| (*n, *r)).collect();
        let rec = ExecutedCheckpoint {
            at_ms,
            state_root: combined_root(&named),
            roots: roots.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
        };
        let exec = self.exec.clone();
        run_blocking("execution record", move || exec.record(seq, &rec))
            .await
            .map_err(|e| StepError::Failed(e.to_string()))?
            .map_err(|e| StepError::Failed(e.to_string()))?;
        metrics::counter!("citychain_executed_txs_total").increment(txs.len() as u64);
        Ok(())
    }
}

/// A ledger outcome as `GetTx` reports it.
pub(crate) fn tx_execution(sequence: u64, o: ledger::Outcome) -> rpc::TxExecution {
    use ledger::FailReason as F;
    use rpc::ExecutionOutcome as E;
    let (outcome, detail) = match o {
        ledger::Outcome::Applied => (E::Applied, String::new()),
        ledger::Outcome::Failed(r) => (
            match r {
                F::InsufficientFunds { .. } => E::InsufficientFunds,
                F::SetsDoNotCover { .. } => E::SetsDoNotCover,
                F::NonceReused { .. } => E::NonceAlreadyApplied,
                F::BalanceOverflow => E::BalanceOverflow,
                F::UnknownCity => E::UnknownCity,
            },
            r.to_string(),
        ),
    };
    rpc::TxExecution {
        sequence,
        outcome,
        detail,
        state_root: None,
    }
}

/// The checkpoints a representative federates: committed **and executed**, each header
/// carrying the combined state root.
pub(crate) struct ExecutedCheckpoints {
    pub(crate) order: Arc<OrderStore>,
    pub(crate) exec: Arc<Execution>,
}

impl CheckpointSource for ExecutedCheckpoints {
    fn checkpoint(&self, seq: u64) -> Result<Option<Checkpoint>> {
        CheckpointSource::checkpoint(&*self.order, seq)
    }
    fn committed(&self) -> watch::Receiver<u64> {
        self.exec.subscribe()
    }
    fn record_federated(&self, seq: u64, proof: rpc::FederationProof) -> Result<()> {
        CheckpointSource::record_federated(&*self.order, seq, proof)
    }
    fn federated_upto(&self) -> u64 {
        CheckpointSource::federated_upto(&*self.order)
    }
    fn epochs(&self) -> Result<Vec<crate::federation_push::CommitteeEpoch>> {
        self.order.epochs()
    }
    fn state_root(&self, seq: u64) -> Result<Hash32> {
        self.exec
            .checkpoint(seq)?
            .map(|c| c.state_root)
            .ok_or_else(|| Error::CorruptRecord {
                path: self.exec.path.clone(),
                index: seq,
                source: DecodeError::Invalid {
                    field: "executed",
                    reason: "asked for the state root of a checkpoint not executed",
                },
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::city::test_utils::until;
    use dag_core::{AccountId, CityId, Position, PositionMethod, Tx};
    use pqc::{Keypair, sign_tx};

    /// Bodies from memory; the test decides which are there.
    #[derive(Default)]
    struct MemoryBodies(Mutex<HashMap<TxId, SignedTx>>);

    impl BodySource for MemoryBodies {
        async fn fetch(
            &self,
            id: TxId,
            _author: NodeId,
            _stripes: Arc<Vec<StripeId>>,
        ) -> Option<SignedTx> {
            self.0.lock().get(&id).cloned()
        }
    }

    /// An own store of verified bodies beside fetchable ones; counts fetches.
    #[derive(Default)]
    struct OwnAndFetched {
        own: Mutex<HashMap<TxId, VerifiedTx>>,
        fetchable: Mutex<HashMap<TxId, SignedTx>>,
        fetched: Mutex<Vec<TxId>>,
    }

    impl BodySource for OwnAndFetched {
        async fn fetch(
            &self,
            id: TxId,
            _author: NodeId,
            _stripes: Arc<Vec<StripeId>>,
        ) -> Option<SignedTx> {
            self.fetched.lock().push(id);
            self.fetchable.lock().get(&id).cloned()
        }
        async fn local_verified(&self, ids: Vec<TxId>) -> Vec<VerifiedTx> {
            let own = self.own.lock();
            ids.iter().filter_map(|id| own.get(id).cloned()).collect()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn own_verified_bodies_are_used_as_they_are_and_only_the_rest_is_fetched() {
        let alice = Keypair::generate();
        let bob = AccountId::from_bytes([2; 32]);
        let alloc: BTreeMap<AccountId, u64> = [(alice.account_id(), 1_000)].into();
        let txs: Vec<SignedTx> = (0..6).map(|n| transfer(&alice, bob, 100, n)).collect();
        let subs = super::super::order::tests::commits(
            txs.iter().map(|t| BatchItem::Tx(t.id())).collect(),
        );
        let dir = tempfile::tempdir().unwrap();
        let order = Arc::new(OrderStore::open(&dir.path().join("order.redb")).unwrap());
        for s in &subs {
            order.apply(s, 1).unwrap();
        }
        let exec = open_exec(dir.path(), &alloc);
        let bodies = Arc::new(OwnAndFetched::default());
        for (i, t) in txs.iter().enumerate() {
            if i % 2 == 0 {
                let v = t.clone().verify(&pqc::MlDsa87).unwrap();
                bodies.own.lock().insert(t.id(), v);
            } else {
                bodies.fetchable.lock().insert(t.id(), t.clone());
            }
        }
        let feed = spawn_feed(
            exec.clone(),
            order.clone(),
            bodies.clone(),
            FeedConfig::default(),
        );
        until("the feed to finish", || {
            exec.executed() == order.committed()
        })
        .await;
        feed.shutdown().await;
        let ledger = exec.ledger().unwrap();
        for t in &txs {
            assert_eq!(
                ledger.outcome(&t.id()).unwrap().unwrap().1,
                ledger::Outcome::Applied
            );
        }
        let mut fetched = bodies.fetched.lock().clone();
        fetched.sort();
        let mut want: Vec<TxId> = txs.iter().skip(1).step_by(2).map(|t| t.id()).collect();
        want.sort();
        assert_eq!(
            fetched, want,
            "only bodies the node did not verify itself are fetched"
        );
    }

    #[test]
    fn a_fetched_body_must_hash_to_the_ordered_id() {
        let alice = Keypair::generate();
        let t = transfer(&alice, AccountId::from_bytes([2; 32]), 1, 0);
        let id = t.id();
        assert!(verify_fetched(id, t.clone()).is_ok());
        // Same sender, key and signature, another amount: the signature (over the id)
        // still checks, the body does not hash to the id.
        let mut forged = t.clone();
        forged.tx.amount = 1_000_000;
        assert!(forged.clone().verify_with_id(id, &pqc::MlDsa87).is_ok());
        assert!(verify_fetched(id, forged).is_err());
        let mut bad_sig = t;
        bad_sig.signature[0] ^= 1;
        assert!(verify_fetched(id, bad_sig).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetched_body_with_the_ids_signature_but_another_amount_blocks_the_feed() {
        let alice = Keypair::generate();
        let bob = AccountId::from_bytes([2; 32]);
        let alloc: BTreeMap<AccountId, u64> = [(alice.account_id(), 1_000)].into();
        let t = transfer(&alice, bob, 100, 0);
        let subs = super::super::order::tests::commits(vec![BatchItem::Tx(t.id())]);
        let dir = tempfile::tempdir().unwrap();
        let order = Arc::new(OrderStore::open(&dir.path().join("order.redb")).unwrap());
        for s in &subs {
            order.apply(s, 1).unwrap();
        }
        let exec = open_exec(dir.path(), &alloc);
        let bodies = Arc::new(MemoryBodies::default());
        let mut forged = t.clone();
        forged.tx.amount = 900;
        bodies.0.lock().insert(t.id(), forged);
        let cfg = FeedConfig {
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            concurrency: 4,
        };
        let feed = spawn_feed(exec.clone(), order.clone(), bodies.clone(), cfg);
        let stuck = order.ordering(&t.id()).unwrap().unwrap().sequence;
        until("the feed to block", || {
            exec.blocked()
                == Some(Blocked {
                    sequence: stuck,
                    missing: 1,
                })
        })
        .await;
        let ledger = exec.ledger().unwrap().clone();
        assert_eq!(ledger.outcome(&t.id()).unwrap(), None);
        bodies.0.lock().insert(t.id(), t.clone());
        until("the feed to finish", || {
            exec.executed() == order.committed()
        })
        .await;
        feed.shutdown().await;
        assert_eq!(ledger.account(&bob).unwrap().unwrap().balance, 100);
    }

    #[test]
    fn a_reloaded_body_must_match_its_id_and_key() {
        let alice = Keypair::generate();
        let t = transfer(&alice, AccountId::from_bytes([2; 32]), 1, 0);
        assert!(VerifiedTx::reload_verified(t.clone(), t.id()).is_ok());
        let other = transfer(&alice, AccountId::from_bytes([2; 32]), 1, 1);
        assert!(VerifiedTx::reload_verified(t.clone(), other.id()).is_err());
        let mut swapped = t.clone();
        swapped.public_key = dag_core::Signer::public_key(&Keypair::generate()).to_vec();
        assert!(VerifiedTx::reload_verified(swapped, t.id()).is_err());
    }

    fn transfer(from: &Keypair, to: AccountId, amount: u64, nonce: u64) -> SignedTx {
        sign_tx(
            Tx::fresh(
                from.account_id(),
                to,
                amount,
                nonce,
                1_767_225_600_000,
                CityId::new("JP-13").unwrap(),
                Position::from_degrees(35.6895, 139.6917).unwrap(),
                PositionMethod::Gps,
            ),
            from,
        )
    }

    fn open_exec(dir: &Path, alloc: &BTreeMap<AccountId, u64>) -> Arc<Execution> {
        let (appliers, ledger) = state_machines(dir, alloc).unwrap();
        Arc::new(Execution::open(&dir.join("execution.redb"), appliers, Some(ledger)).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocks_on_a_missing_or_forged_body_then_executes_in_order_and_resumes() {
        let alice = Keypair::generate();
        let bob = AccountId::from_bytes([2; 32]);
        let alloc: BTreeMap<AccountId, u64> = [(alice.account_id(), 1_000)].into();
        let txs: Vec<SignedTx> = (0..5).map(|n| transfer(&alice, bob, 100, n)).collect();
        let subs = super::super::order::tests::commits(
            txs.iter().map(|t| BatchItem::Tx(t.id())).collect(),
        );
        let dir = tempfile::tempdir().unwrap();
        let order = Arc::new(OrderStore::open(&dir.path().join("order.redb")).unwrap());
        for s in &subs {
            order.apply(s, 1).unwrap();
        }
        let exec = open_exec(dir.path(), &alloc);
        let bodies = Arc::new(MemoryBodies::default());
        // Every body but the last; the last one forged (another tx's signature).
        for t in &txs[..4] {
            bodies.0.lock().insert(t.id(), t.clone());
        }
        let mut forged = txs[4].clone();
        forged.signature = txs[3].signature.clone();
        bodies.0.lock().insert(txs[4].id(), forged);
        let cfg = FeedConfig {
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            concurrency: 4,
        };
        let feed = spawn_feed(exec.clone(), order.clone(), bodies.clone(), cfg);
        let stuck = order.ordering(&txs[4].id()).unwrap().unwrap().sequence;
        until("the feed to block", || {
            exec.blocked()
                == Some(Blocked {
                    sequence: stuck,
                    missing: 1,
                })
        })
        .await;
        // Nothing at or past the stuck checkpoint is executed or federatable.
        assert_eq!(exec.executed(), stuck);
        let ledger = exec.ledger().unwrap().clone();
        assert_eq!(ledger.outcome(&txs[4].id()).unwrap(), None);
        // The real body arrives: the feed goes on, in order, to the end.
        bodies.0.lock().insert(txs[4].id(), txs[4].clone());
        until("the feed to finish", || {
            exec.executed() == order.committed()
        })
        .await;
        assert_eq!(exec.blocked(), None);
        for t in &txs {
            assert_eq!(
                ledger.outcome(&t.id()).unwrap().unwrap().1,
                ledger::Outcome::Applied
            );
        }
        assert_eq!(ledger.account(&bob).unwrap().unwrap().balance, 500);
        // The federated source answers the recorded combined root.
        let src = ExecutedCheckpoints {
            order: order.clone(),
            exec: exec.clone(),
        };
        let last = order.committed() - 1;
        let rec = exec.checkpoint(last).unwrap().unwrap();
        assert_eq!(src.state_root(last).unwrap(), rec.state_root);
        assert_eq!(
            rec.state_root,
            combined_root(&[("ledger", ledger.root_after(last).unwrap().unwrap())])
        );
        assert!(src.state_root(last + 1).is_err());
        // Agreed time: the leader's timestamp, never decreasing.
        let times: Vec<u64> = (0..=last)
            .map(|s| exec.checkpoint(s).unwrap().unwrap().at_ms)
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(times[0], order.leader_time(0).unwrap().unwrap());
        feed.shutdown().await;
        drop((src, exec, ledger));

        // Restart: the record and the ledger resume where they stood; nothing re-executes.
        let exec = open_exec(dir.path(), &alloc);
        assert_eq!(exec.executed(), order.committed());
        assert_eq!(exec.resume_point(), order.committed());
        assert_eq!(exec.checkpoint(last).unwrap().unwrap(), rec);
    }

    #[test]
    fn record_encoding_round_trips_and_duplicate_names_are_refused() {
        let rec = ExecutedCheckpoint {
            at_ms: 7,
            state_root: Hash32([1; 32]),
            roots: vec![
                ("dpos".into(), Hash32([2; 32])),
                ("ledger".into(), Hash32([3; 32])),
            ],
        };
        assert_eq!(ExecutedCheckpoint::decode(&rec.encode()).unwrap(), rec);
        assert!(ExecutedCheckpoint::decode(&rec.encode()[1..]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let (mut appliers, ledger) = state_machines(dir.path(), &BTreeMap::new()).unwrap();
        appliers.push(ledger.clone());
        assert!(Execution::open(&dir.path().join("e.redb"), appliers, Some(ledger)).is_err());
    }
}

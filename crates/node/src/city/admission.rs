//! The city role's admission: decode → replay precheck → ML-DSA-87 verify (bounded pool) →
//! durable, replay-safe store → answer.

use super::order::OrderStore;
use super::pipeline::{Pipeline, PipelineError};
use super::store::{Conflict, TxStore};
use crate::Error;
use crate::city::consensus::Submitter;
use dag_core::consensus::BatchItem;
use dag_core::{NodeId, SignedTx, TxId, VerifiedTx};
use parking_lot::Mutex;
use pqc::BatchVerifier;
use rpc::{CityApi, NodeStatus, RejectCode, Rejection, Submitted, TxRecord, TxState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{Semaphore, oneshot};

/// Admission counters, also exported as Prometheus metrics.
#[derive(Debug, Default)]
pub struct Counters {
    stages: Mutex<BTreeMap<String, u64>>,
    admitted: AtomicU64,
    held: AtomicU64,
    hold_failed: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    fn reject(&self, code: RejectCode) {
        *self.rejected.lock().entry(code.name()).or_default() += 1;
        metrics::counter!("citychain_tx_rejected_total", "reason" => code.name()).increment(1);
    }
    fn stage(&self, name: &str) {
        *self.stages.lock().entry(name.to_string()).or_default() += 1;
    }
    /// Per-stage counts (proof of place outcomes, flags by class and urgency).
    pub fn stages(&self) -> BTreeMap<String, u64> {
        self.stages.lock().clone()
    }
    /// Txs admitted so far.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }
    /// Txs answered Held (receipts from light nodes).
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
    /// Admitted txs whose micro-batch could not be held in time (answered Admitted).
    pub fn hold_failed(&self) -> u64 {
        self.hold_failed.load(Ordering::Relaxed)
    }
    /// Rejections by reason.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        self.rejected.lock().clone()
    }
}

/// What proof of place does with a tx whose position is not inside its claimed city.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PopMode {
    /// Reject it (`OUTSIDE_CITY`).
    #[default]
    Reject,
    /// Admit it, counted as flagged.
    Flag,
}

/// Proof of place settings for a city node.
#[derive(Debug, Clone)]
pub struct PopCheck {
    /// Polygons (with a lookup cache).
    pub index: Arc<pop_geo::CachedIndex>,
    /// Reject or flag.
    pub mode: PopMode,
}

/// The city role's state: its identity, verification pool and store.
pub struct CityNode {
    node_id: NodeId,
    verifier: Arc<BatchVerifier>,
    store: TxStore,
    pipeline: Option<Arc<Pipeline>>,
    pop: Option<PopCheck>,
    flagger: Option<Arc<dyn flagging::Flagger>>,
    archive: Option<(archive::RedbArchive, archive::ArchiveWriter)>,
    inflight: Semaphore,
    counters: Counters,
    started: Instant,
    ordering: Option<OrderingParts>,
    execution: Option<Arc<super::execution::Execution>>,
    gate: super::scheduling::PriorityGate,
    home_city: Option<dag_core::CityId>,
    /// The working set by kind (TTL rule, collected by the role's GC task).
    working_set: Option<Arc<super::working_set::CityWorkingSet>>,
    /// Every step of every tx, for the gateway's `/v1/events`.
    events: Arc<super::events::EventBus>,
    /// Stake and committee reads, when this node is a representative.
    stake_reads: Option<Arc<super::stake::reads::StakeReads>>,
    /// The representative's status: while it is a standby (no driver, not in the
    /// committee), submissions are refused — nothing it held would be proposed.
    standby_gate: Option<tokio::sync::watch::Receiver<super::consensus::RepresentativeStatus>>,
}

/// The city's committee as admission sees it: where held txs go to be ordered, and what
/// was ordered.
struct OrderingParts {
    store: Arc<OrderStore>,
    submitter: Submitter,
    /// Stripes already proposed (so a micro-batch's stripe is proposed once, by its first
    /// held tx); cleared when it grows past [`MAX_STRIPES_REMEMBERED`].
    stripes: parking_lot::Mutex<std::collections::HashSet<dag_core::StripeId>>,
}

/// Roughly the most bytes of checkpoints one `GetCheckpoints` answer carries (at least one
/// checkpoint always goes).
const CHECKPOINTS_ANSWER_BYTES: usize = 1 << 20;

/// Verifications in flight at once: two per verify thread keeps the pool busy while the
/// rest wait in the priority gate.
fn verifier_slots(verifier: &BatchVerifier) -> usize {
    verifier.threads().max(1) * 2
}

/// Stripe ids remembered for de-duplicating proposals.
const MAX_STRIPES_REMEMBERED: usize = 65_536;

impl std::fmt::Debug for CityNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CityNode")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl CityNode {
    /// A city node over `store`, verifying on `verifier`, admitting at most `max_inflight`
    /// txs concurrently (beyond that: `Overloaded`).
    pub fn new(
        node_id: NodeId,
        store: TxStore,
        verifier: Arc<BatchVerifier>,
        max_inflight: usize,
    ) -> Self {
        let slots = verifier_slots(&verifier);
        CityNode {
            node_id,
            verifier,
            store,
            pipeline: None,
            pop: None,
            flagger: None,
            archive: None,
            inflight: Semaphore::new(max_inflight),
            counters: Counters::default(),
            started: Instant::now(),
            ordering: None,
            standby_gate: None,
            execution: None,
            gate: super::scheduling::PriorityGate::new(slots),
            events: Arc::new(super::events::EventBus::default()),
            home_city: None,
            working_set: None,
            stake_reads: None,
        }
    }

    /// Tracks every admitted tx in `ws` (Pending → Held → Ordered): an admission whose tx
    /// expires there before it is held is withdrawn and answered `Overloaded` (EXPIRED).
    pub(crate) fn with_working_set(mut self, ws: Arc<super::working_set::CityWorkingSet>) -> Self {
        self.working_set = Some(ws);
        self
    }

    /// The working set, when tracked.
    pub fn working_set(&self) -> Option<&Arc<super::working_set::CityWorkingSet>> {
        self.working_set.as_ref()
    }

    /// The city this node serves: the receiver side of the region class (same city, same
    /// continent, cross-continent) of every tx it admits.
    pub fn with_home_city(mut self, city: dag_core::CityId) -> Self {
        self.home_city = Some(city);
        self
    }

    /// Flags a tx (kind class, urgency, region class from this node's city, oversize) and
    /// counts each decision; without a flagger, the kind's class in the normal lane.
    fn flag_tx(&self, tx: &SignedTx) -> flagging::Flag {
        let Some(f) = &self.flagger else {
            return super::scheduling::kind_flag(tx.tx.kind);
        };
        let mut input = flagging::FlagInput::new(&tx.tx, tx.encoded_len());
        if let Some(home) = &self.home_city {
            input = input.with_receiver_city(home);
        }
        let flag = f.flag(&input);
        let lane = super::scheduling::lane(&flag);
        self.counters
            .stage(&format!("flag.region.{}", flag.region.name()));
        self.counters
            .stage(&format!("flag.kind.{}", flag.kind.name()));
        self.counters.stage(&format!("flag.lane.{lane}"));
        if flag.oversize {
            self.counters.stage("flag.oversize");
        }
        metrics::counter!("citychain_flagged_total", "region" => flag.region.name(), "urgent" => if flag.is_urgent() { "true" } else { "false" }, "lane" => lane, "kind" => flag.kind.name()).increment(1);
        flag
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The event bus (admitted, held, ordered, federated, repairs).
    pub fn events(&self) -> &Arc<super::events::EventBus> {
        &self.events
    }

    /// Adds the city's committee: every held tx (and its stripe) is proposed for ordering
    /// through `submitter`, and `GetTx` answers Ordered / Federated from `store`.
    pub(crate) fn with_ordering(mut self, store: Arc<OrderStore>, submitter: Submitter) -> Self {
        self.ordering = Some(OrderingParts {
            store,
            submitter,
            stripes: parking_lot::Mutex::new(std::collections::HashSet::new()),
        });
        self
    }

    /// Refuses submissions while `status` says the representative is a standby.
    pub(crate) fn with_standby_gate(
        mut self,
        status: tokio::sync::watch::Receiver<super::consensus::RepresentativeStatus>,
    ) -> Self {
        self.standby_gate = Some(status);
        self
    }

    /// Adds the state machines fed by the committee's commits (ledger reads, outcomes).
    /// Serves the stake reads (`GetStake`, `GetCommittee`) from `reads`.
    pub(crate) fn with_stake_reads(mut self, reads: super::stake::reads::StakeReads) -> Self {
        self.stake_reads = Some(Arc::new(reads));
        self
    }

    /// The stake reads, when this node is a representative.
    pub fn stake_reads(&self) -> Option<&Arc<super::stake::reads::StakeReads>> {
        self.stake_reads.as_ref()
    }

    pub(crate) fn with_execution(mut self, exec: Arc<super::execution::Execution>) -> Self {
        self.execution = Some(exec);
        self
    }

    /// The state machines and executed checkpoints, when this node is a representative.
    pub fn execution(&self) -> Option<&Arc<super::execution::Execution>> {
        self.execution.as_ref()
    }

    /// The order store, when this node is a representative.
    pub fn order_store(&self) -> Option<&Arc<OrderStore>> {
        self.ordering.as_ref().map(|o| &o.store)
    }

    /// Held txs of this node that its committee has not ordered (blocking: a full scan of
    /// the tx store; used once after a restart).
    pub(crate) fn unordered_held_ids(&self) -> crate::Result<Vec<TxId>> {
        let (Some(p), Some(o)) = (&self.pipeline, &self.ordering) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for id in self.store.ids()? {
            let held = p
                .held(&id)
                .map_err(|e| crate::Error::Membership(format!("stripe index: {e}")))?
                .is_some();
            if held && o.store.ordering(&id)?.is_none() {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Stored txs that no stripe holds: left Admitted by a crash between the store's commit
    /// and the hold (blocking: a full scan of the tx store; used once after a restart).
    pub(crate) fn admitted_unheld_ids(&self) -> crate::Result<Vec<TxId>> {
        let Some(p) = &self.pipeline else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for id in self.store.ids()? {
            let held = p
                .held(&id)
                .map_err(|e| crate::Error::Membership(format!("stripe index: {e}")))?;
            if held.is_none() {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Finishes the holding of a stored tx that no stripe holds (see
    /// [`CityNode::admitted_unheld_ids`]): its stored bytes are verified again (the only road
    /// to a `VerifiedTx`), put through the pipeline, and once Held it goes on as at
    /// admission: the `held` event, proposed for ordering, archived. When it cannot be held
    /// now it stays Admitted (durably stored) and the error says why.
    pub(crate) async fn finish_holding(&self, id: TxId) -> std::result::Result<TxState, Rejection> {
        let Some(p) = &self.pipeline else {
            return Ok(TxState::Admitted);
        };
        let tx = self.store.get(&id).map_err(|e| Self::internal(id, e))?;
        let Some(tx) = tx else {
            return Err(Rejection::new(
                RejectCode::Unavailable,
                format!("tx {id} is no longer in the store"),
                Some(id),
            ));
        };
        let urgent = super::scheduling::kind_flag(tx.tx.kind).is_urgent();
        let verified = self.verify(tx, id).await?;
        let for_archive = self.archive.as_ref().map(|_| verified.clone());
        let held = p
            .hold_flagged(verified, urgent)
            .await
            .map_err(|e| Rejection::new(RejectCode::Unavailable, e.to_string(), Some(id)))?;
        self.counters.held.fetch_add(1, Ordering::Relaxed);
        self.events.publish(
            gateway::EventKind::Held,
            id,
            serde_json::json!({ "stripe": held.stripe_id.to_hex(),
                "receipts": held.receipts.len() }),
        );
        self.propose(id, held.stripe_id).await;
        self.archive_held(for_archive).await;
        Ok(TxState::Held)
    }

    /// Proposes a held tx (and, the first time, its stripe) for ordering. A failure here
    /// (the representative stopping) leaves the tx Held; a restarted representative
    /// proposes held txs it has not seen ordered again.
    async fn propose(&self, id: TxId, stripe: dag_core::StripeId) {
        let Some(o) = &self.ordering else { return };
        let mut items = vec![BatchItem::Tx(id)];
        {
            let mut seen = o.stripes.lock();
            if seen.len() >= MAX_STRIPES_REMEMBERED {
                seen.clear();
            }
            if seen.insert(stripe) {
                items.push(BatchItem::Stripe(stripe));
            }
        }
        if let Err(e) = o.submitter.submit(items).await {
            tracing::warn!(tx = %id, error = %e, "held tx not proposed for ordering");
        }
    }

    /// The offline proof of a federated tx: the committed batch that carries it, its
    /// checkpoint, and the continent's proof of the certified checkpoint.
    fn tx_proof(
        store: &OrderStore,
        id: TxId,
        pos: &super::order::TxOrdering,
        federation: &[u8],
    ) -> crate::Result<rpc::TxProof> {
        let corrupt = |index: u64, source| crate::Error::CorruptRecord {
            path: "order.redb".into(),
            index,
            source,
        };
        let missing = |what: &'static str| dag_core::DecodeError::Invalid {
            field: what,
            reason: "missing from the order store",
        };
        let batch = store
            .batch(&pos.batch)?
            .ok_or_else(|| corrupt(pos.sequence, missing("batch")))?;
        let checkpoint = store
            .checkpoint(pos.sequence)?
            .ok_or_else(|| corrupt(pos.sequence, missing("checkpoint")))?
            .checkpoint;
        let federation =
            rpc::FederationProof::decode(federation).map_err(|e| corrupt(pos.sequence, e))?;
        Ok(rpc::TxProof {
            tx_id: id,
            batch,
            checkpoint,
            federation,
            global: None,
        })
    }

    /// Adds what the committee did with `id` to `base` (what this node knows of the tx
    /// itself): Ordered with its position, Federated with its proof.
    fn with_order(
        &self,
        id: TxId,
        base: Option<TxRecord>,
    ) -> std::result::Result<Option<TxRecord>, Rejection> {
        let Some(o) = &self.ordering else {
            return Ok(base);
        };
        let unavailable =
            |e: crate::Error| Rejection::new(RejectCode::Unavailable, e.to_string(), Some(id));
        let Some(pos) = o.store.ordering(&id).map_err(unavailable)? else {
            return Ok(base);
        };
        let federated = o.store.federated(pos.sequence).map_err(unavailable)?;
        let proof = match &federated {
            Some((fed, _)) => Some(
                Self::tx_proof(&o.store, id, &pos, fed)
                    .map_err(unavailable)?
                    .encode(),
            ),
            None => None,
        };
        let mut rec = base.unwrap_or_else(|| TxRecord {
            tx: None,
            state: TxState::Ordered,
            receipts: Vec::new(),
            source: "order".into(),
            ordering: None,
            proof: None,
            cross: None,
        });
        rec.state = if proof.is_some() {
            TxState::Federated
        } else {
            TxState::Ordered
        };
        rec.ordering = Some(rpc::OrderingInfo {
            sequence: pos.sequence,
            leader_round: pos.leader_round,
            leader: pos.leader.0,
            batch: pos.batch.0,
            committed_at_ms: pos.committed_at_ms,
            federated_at_ms: federated.map(|(_, at)| at),
        });
        rec.proof = proof;
        Ok(Some(rec))
    }

    /// Adds the storage pipeline: admitted txs are answered Held once their micro-batch's
    /// shards are on light nodes with verified receipts.
    pub fn with_pipeline(mut self, pipeline: Arc<Pipeline>) -> Self {
        self.pipeline = Some(pipeline);
        self
    }

    /// Adds proof of place.
    pub fn with_pop(mut self, pop: PopCheck) -> Self {
        self.pop = Some(pop);
        self
    }

    /// Adds a flagger (kind class, urgency, region class, oversize).
    pub fn with_flagger(mut self, flagger: Arc<dyn flagging::Flagger>) -> Self {
        self.flagger = Some(flagger);
        self
    }

    /// Adds the long-term archive: held txs are written to it in the background through
    /// `writer`'s bounded queue (admission waits when it is full), and `GetTx` falls back
    /// to it.
    pub fn with_archive(
        mut self,
        archive: archive::RedbArchive,
        writer: archive::ArchiveWriter,
    ) -> Self {
        self.archive = Some((archive, writer));
        self
    }

    /// Flushes and stops background work (the archive writer). Call after the server stopped.
    pub async fn close(mut self) {
        if let Some((_, writer)) = self.archive.take() {
            match writer.shutdown().await {
                Ok(stats) => tracing::info!(?stats, "archive writer flushed"),
                Err(e) => tracing::error!(error = %e, "archive writer did not flush"),
            }
        }
    }

    /// The storage pipeline, if configured.
    pub fn pipeline(&self) -> Option<&Arc<Pipeline>> {
        self.pipeline.as_ref()
    }

    /// Restores a tx from its shards on light nodes (the repair path), bypassing the local
    /// store: receipts and the tx signature are verified.
    pub async fn restore(&self, id: TxId) -> std::result::Result<TxRecord, Rejection> {
        let Some(p) = &self.pipeline else {
            return Err(Rejection::new(
                RejectCode::Unavailable,
                "this node has no storage pipeline",
                Some(id),
            ));
        };
        match p.restore(id).await {
            Ok(r) => Ok(TxRecord {
                tx: Some(r.tx),
                state: TxState::Held,
                receipts: r.receipts,
                source: format!("shards ({} used)", r.shards_used),
                ordering: None,
                proof: None,
                cross: None,
            }),
            Err(PipelineError::UnknownTx(_)) => Err(Rejection::new(
                RejectCode::Malformed,
                format!("tx {id} is not held by this city"),
                Some(id),
            )),
            Err(e) => Err(Rejection::new(
                RejectCode::Unavailable,
                e.to_string(),
                Some(id),
            )),
        }
    }

    /// Drops this node's local copy of a **held** tx (its shards on light nodes keep it;
    /// `GetTx` and repairs then restore it from them); its (sender, nonce) stays, so replay
    /// protection stands. A tx that is not held is never evicted. Returns whether a copy
    /// was removed.
    pub async fn evict_held_copy(&self, id: TxId) -> crate::Result<bool> {
        let Some(p) = &self.pipeline else {
            return Ok(false);
        };
        if p.held(&id)
            .map_err(|source| crate::Error::Pipeline { source })?
            .is_none()
        {
            return Ok(false);
        }
        self.store.evict(&id).await
    }

    /// Admission counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The store.
    pub fn store(&self) -> &TxStore {
        &self.store
    }

    async fn verify(&self, tx: SignedTx, id: TxId) -> std::result::Result<VerifiedTx, Rejection> {
        let (done, rx) = oneshot::channel();
        self.verifier.spawn(move || {
            let r = tx.verify_with_id(id, &pqc::MlDsa87).map(|v| {
                // A system tx must also be a well-formed dpos request (envelope, payload,
                // inner evidence / receipt signatures); whether the rules accept it is
                // decided when it is applied, identically on every representative.
                let system = (v.tx().kind == dag_core::TxKind::SystemTx).then(|| {
                    // A cross-city relay is not a dpos request: it must decode; its
                    // certificates are checked when it executes.
                    match ledger::CrossRelay::from_payload(&v.tx().payload) {
                        Some(r) => r.map(|_| ()).map_err(|e| e.to_string()),
                        None => dpos::VerifiedSystemTx::from_verified_tx(&v, &pqc::MlDsa87)
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                    }
                });
                (v, system)
            });
            let _ = done.send(r);
        });
        match rx.await {
            Ok(Ok((_, Some(Err(e))))) => Err(Rejection::new(
                RejectCode::Malformed,
                format!("system tx: {e}"),
                Some(id),
            )),
            Ok(Ok((v, _))) => Ok(v),
            Ok(Err(e)) => {
                let code = match e {
                    dag_core::Error::KeyMismatch { .. } => RejectCode::KeyMismatch,
                    dag_core::Error::BadSignature { .. } => RejectCode::BadSignature,
                    dag_core::Error::Decode(_) => RejectCode::Malformed,
                };
                Err(Rejection::new(code, e.to_string(), Some(id)))
            }
            Err(_) => Err(Rejection::new(
                RejectCode::Unavailable,
                "verification pool stopped",
                Some(id),
            )),
        }
    }

    fn conflict(id: TxId, c: Conflict) -> Rejection {
        match c {
            Conflict::DuplicateTx => Rejection::new(
                RejectCode::DuplicateTx,
                format!("tx {id} was already admitted"),
                Some(id),
            ),
            Conflict::NonceReused { other } => Rejection::new(
                RejectCode::NonceReused,
                format!("tx {id} reuses the (sender, nonce) of tx {other}"),
                Some(id),
            ),
        }
    }

    fn internal(id: TxId, e: Error) -> Rejection {
        tracing::error!(tx = %id, error = %e, "admission failed inside the node");
        Rejection::new(RejectCode::Unavailable, e.to_string(), Some(id))
    }

    async fn archive_held(&self, tx: Option<VerifiedTx>) {
        if let (Some((_, writer)), Some(tx)) = (&self.archive, tx) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if let Err(e) = writer.submit(archive::ArchiveEntry::new(tx, now)).await {
                tracing::error!(error = %e, "archive queue closed");
            }
        }
    }

    async fn admit(&self, tx: SignedTx) -> std::result::Result<Submitted, Rejection> {
        let _permit = self.inflight.try_acquire().map_err(|_| {
            Rejection::new(
                RejectCode::Overloaded,
                "too many txs in flight; retry later",
                None,
            )
        })?;
        let t0 = Instant::now();
        let id = tx.id();
        // The ledger's binding rule: a transfer's declared write set covers its sender's
        // and receiver's accounts (or it declares no sets at all).
        if tx.tx.kind == dag_core::TxKind::FreshTx
            && let Err(missing) = ledger::check_sets(
                &tx.tx.sender,
                &tx.tx.receiver,
                &tx.tx.read_set,
                &tx.tx.write_set,
            )
        {
            return Err(Rejection::new(
                RejectCode::Malformed,
                format!(
                    "write set does not cover the transfer: account object {missing} is touched but not declared"
                ),
                Some(id),
            ));
        }
        // Staking requests (system txs) claim no position: proof of place does not apply.
        if let Some(pop) = self
            .pop
            .as_ref()
            .filter(|_| tx.tx.kind != dag_core::TxKind::SystemTx)
        {
            let t = Instant::now();
            let outcome = pop.index.check(&tx.tx.city_id, tx.tx.position);
            metrics::histogram!("citychain_admission_stage_seconds", "stage" => "pop")
                .record(t.elapsed().as_secs_f64());
            match (outcome, pop.mode) {
                (Ok(_), _) => self.counters.stage("pop.inside"),
                (Err(e), PopMode::Reject) => {
                    self.counters.stage("pop.rejected");
                    return Err(Rejection::new(
                        RejectCode::OutsideCity,
                        e.to_string(),
                        Some(id),
                    ));
                }
                (Err(e), PopMode::Flag) => {
                    self.counters.stage("pop.flagged");
                    tracing::debug!(tx = %id, reason = %e, "admitted outside its claimed city (flag mode)");
                }
            }
        }
        if self.working_set.as_ref().is_some_and(|ws| ws.is_full()) {
            return Err(Rejection::new(
                RejectCode::Overloaded,
                "the working set is full; retry later",
                Some(id),
            ));
        }
        let flag = self.flag_tx(&tx);
        let kind = tx.tx.kind;
        // Cheap read-only replay check first, so replays never cost a verification.
        match self.store.precheck(&tx, &id) {
            Ok(Ok(())) => {}
            Ok(Err(c)) => return Err(Self::conflict(id, c)),
            Err(e) => return Err(Self::internal(id, e)),
        }
        // The verify pool is where admission work competes: slots go by kind and lane.
        let slot = self.gate.acquire(&flag).await;
        let verified = self.verify(tx, id).await;
        drop(slot);
        let verified = verified?;
        let t_verified = Instant::now();
        metrics::histogram!("citychain_admission_stage_seconds", "stage" => "verify")
            .record(t_verified.duration_since(t0).as_secs_f64());
        let for_pipeline = self.pipeline.as_ref().map(|_| verified.clone());
        let for_archive = self.archive.as_ref().map(|_| verified.clone());
        let accounts = [verified.tx().sender, verified.tx().receiver];
        match self.store.admit(verified).await {
            Ok(Ok(())) => {}
            Ok(Err(c)) => return Err(Self::conflict(id, c)),
            Err(e) => return Err(Self::internal(id, e)),
        }
        let t_stored = Instant::now();
        let mut expiry = self.working_set.as_ref().map(|ws| ws.admitted(id, kind));
        self.events.publish_with_accounts(
            gateway::EventKind::Admitted,
            id,
            accounts,
            serde_json::Value::Null,
        );
        metrics::histogram!("citychain_admission_stage_seconds", "stage" => "store")
            .record(t_stored.duration_since(t_verified).as_secs_f64());
        if let (Some(p), Some(v)) = (&self.pipeline, for_pipeline) {
            let withdraw_key = super::store::nonce_key(v.signed());
            let hold = p.hold_with(v, super::pipeline::HoldPriority::from_flag(&flag));
            let outcome = match expiry.as_mut() {
                Some(e) => tokio::select! {
                    r = hold => Some(r),
                    _ = e.expired() => None,
                },
                None => Some(hold.await),
            };
            let Some(outcome) = outcome else {
                // Its kind's TTL passed before its micro-batch was held: the working set let
                // it go, and so does admission (the batcher skips a tx nobody waits for).
                metrics::counter!("citychain_hold_expired_total", "kind" => kind.name())
                    .increment(1);
                if let Err(w) = self.store.withdraw(withdraw_key, &id).await {
                    tracing::error!(tx = %id, error = %w, "could not withdraw an expired admission");
                }
                return Err(Rejection::new(
                    RejectCode::Overloaded,
                    format!(
                        "EXPIRED: tx {id} ({kind}) was not held within its {} s in the working set; retry later",
                        kind.ttl_secs().unwrap_or(0)
                    ),
                    Some(id),
                ));
            };
            match outcome {
                Ok(held) => {
                    if let Some(ws) = &self.working_set {
                        ws.held(id, kind);
                    }
                    metrics::histogram!("citychain_admission_stage_seconds", "stage" => "hold")
                        .record(t_stored.elapsed().as_secs_f64());
                    self.counters.held.fetch_add(1, Ordering::Relaxed);
                    self.events.publish(
                        gateway::EventKind::Held,
                        id,
                        serde_json::json!({ "stripe": held.stripe_id.to_hex(),
                            "receipts": held.receipts.len() }),
                    );
                    self.propose(id, held.stripe_id).await;
                    self.archive_held(for_archive).await;
                    return Ok(Submitted {
                        tx_id: id,
                        state: TxState::Held,
                        receipts: held.receipts,
                    });
                }
                Err(e) => {
                    // Held's promise (n distinct holders, signed receipts) cannot be kept
                    // now: the admission is taken back and the sender gets a retryable
                    // error naming the reason, never a quieter answer.
                    self.counters.hold_failed.fetch_add(1, Ordering::Relaxed);
                    if let Some(ws) = &self.working_set {
                        ws.withdrawn(&id);
                    }
                    metrics::counter!("citychain_hold_failed_total").increment(1);
                    tracing::warn!(tx = %id, error = %e, "not held: admission withdrawn");
                    if let Err(w) = self.store.withdraw(withdraw_key, &id).await {
                        // It stays admitted (durably); it is answered as such.
                        tracing::error!(tx = %id, error = %w, "could not withdraw an unheld admission");
                        return Ok(Submitted {
                            tx_id: id,
                            state: TxState::Admitted,
                            receipts: Default::default(),
                        });
                    }
                    let code = match e {
                        PipelineError::NoRoom { .. } => RejectCode::Overloaded,
                        _ => RejectCode::Unavailable,
                    };
                    // Subscribers saw `admitted`: they learn it was taken back.
                    self.events.publish(
                        gateway::EventKind::Withdrawn,
                        id,
                        serde_json::json!({ "code": code.name(), "reason": e.to_string() }),
                    );
                    return Err(Rejection::new(code, e.to_string(), Some(id)));
                }
            }
        }
        Ok(Submitted {
            tx_id: id,
            state: TxState::Admitted,
            receipts: Default::default(),
        })
    }
}

impl CityNode {
    /// The answer to a resubmission of `id`, a tx this node already admitted: its current
    /// state (Admitted, Held, Ordered, Federated) with its receipts, instead of a refusal,
    /// so a sender that lost the first answer learns where its tx is. The id is the hash of
    /// the body, so the copy says exactly what the stored tx says; nothing is stored again
    /// and the state is public (`GetTx` answers it to anyone), so the copy's signature is
    /// not checked. A different tx reusing the (sender, nonce) is still `NONCE_REUSED`.
    async fn resubmitted(&self, id: TxId) -> std::result::Result<Submitted, Rejection> {
        self.counters.stage("resubmitted");
        metrics::counter!("citychain_tx_resubmitted_total").increment(1);
        match CityApi::get(self, id).await? {
            Some(rec) => Ok(Submitted {
                tx_id: id,
                state: rec.state,
                receipts: Arc::new(rec.receipts),
            }),
            // Withdrawn between the check and the read (its hold failed): retryable.
            None => Err(Rejection::new(
                RejectCode::Unavailable,
                format!("tx {id} was just withdrawn (not held); submit it again"),
                Some(id),
            )),
        }
    }

    /// What this node itself knows of `id`: its store, its shards, its archive.
    pub(crate) async fn get_local(
        &self,
        id: TxId,
    ) -> std::result::Result<Option<TxRecord>, Rejection> {
        let held = match &self.pipeline {
            Some(p) => p
                .held(&id)
                .map_err(|e| Rejection::new(RejectCode::Unavailable, e.to_string(), Some(id)))?,
            None => None,
        };
        match self.store.get(&id) {
            Ok(Some(tx)) => Ok(Some(match held {
                Some(h) => TxRecord {
                    tx: Some(tx),
                    state: TxState::Held,
                    receipts: Arc::unwrap_or_clone(h.receipts),
                    source: "store".into(),
                    ordering: None,
                    proof: None,
                    cross: None,
                },
                None => TxRecord {
                    tx: Some(tx),
                    state: TxState::Admitted,
                    receipts: Vec::new(),
                    source: "store".into(),
                    ordering: None,
                    proof: None,
                    cross: None,
                },
            })),
            // Not in the local store (pruned once archived, or lost) but held: the body from
            // this node's archive with the stripe's receipts, else restored from shards.
            Ok(None) if held.is_some() => {
                if let Ok(Some(mut rec)) = self.lookup_archive(id).await
                    && let Some(h) = held
                {
                    rec.receipts = Arc::unwrap_or_clone(h.receipts);
                    return Ok(Some(rec));
                }
                self.restore(id).await.map(Some)
            }
            Ok(None) => self.lookup_archive(id).await,
            Err(e) => {
                tracing::error!(tx = %id, error = %e, "local store failed; trying shards");
                if held.is_some() {
                    self.restore(id).await.map(Some)
                } else {
                    Err(Self::internal(id, e))
                }
            }
        }
    }

    fn status_now(&self) -> NodeStatus {
        let mut counters = vec![
            ("admitted".to_string(), self.counters.admitted()),
            ("held".to_string(), self.counters.held()),
            ("hold_failed".to_string(), self.counters.hold_failed()),
        ];
        counters.extend(
            self.counters
                .stages()
                .into_iter()
                .map(|(k, v)| (format!("stage.{k}"), v)),
        );
        counters.extend(
            self.counters
                .rejected()
                .into_iter()
                .map(|(k, v)| (format!("rejected.{k}"), v)),
        );
        if let Some(o) = &self.ordering {
            counters.push(("order.checkpoints".to_string(), o.store.committed()));
            counters.push(("order.duplicates".to_string(), o.store.duplicates()));
        }
        if let Some(e) = &self.execution {
            counters.push(("execution.checkpoints".to_string(), e.executed()));
            if let Some(b) = e.blocked() {
                counters.push(("execution.blocked_seq".to_string(), b.sequence));
            }
        }
        NodeStatus {
            node_id: self.node_id,
            role: "city".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            stored_txs: self.store.len().unwrap_or(0),
            counters,
        }
    }

    pub(crate) async fn lookup_archive(
        &self,
        id: TxId,
    ) -> std::result::Result<Option<TxRecord>, Rejection> {
        use archive::Archive as _;
        let Some((a, _)) = &self.archive else {
            return Ok(None);
        };
        match a.get(id).await {
            Ok(Some(rec)) => {
                // The archive decrypted and re-checked the id; the signature is checked again
                // before the tx leaves the node.
                let signed = rec.signed;
                if signed.clone().verify(&pqc::MlDsa87).is_err() {
                    return Err(Rejection::new(
                        RejectCode::Unavailable,
                        format!("archived copy of tx {id} fails its signature check"),
                        Some(id),
                    ));
                }
                Ok(Some(TxRecord {
                    tx: Some(signed),
                    state: TxState::Held,
                    receipts: Vec::new(),
                    source: "archive".into(),
                    ordering: None,
                    proof: None,
                    cross: None,
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Rejection::new(
                RejectCode::Unavailable,
                e.to_string(),
                Some(id),
            )),
        }
    }
}

impl CityApi for CityNode {
    async fn submit(&self, tx: SignedTx) -> std::result::Result<Submitted, Rejection> {
        use tracing::Instrument;
        let t0 = Instant::now();
        let id = tx.id();
        if self
            .standby_gate
            .as_ref()
            .is_some_and(|s| s.borrow().standby)
        {
            self.counters.reject(RejectCode::Unavailable);
            return Err(Rejection::new(
                RejectCode::Unavailable,
                "this node is a standby representative (not in the committee yet): submit to \
                 a member of the city's committee",
                Some(id),
            ));
        }
        // Everything logged while this tx is admitted and held carries its id (span `tx`);
        // its `ordered` and `federated` events follow under spans `order` / `federate`.
        let out = self
            .admit(tx)
            .instrument(tracing::debug_span!("tx", id = %id))
            .await;
        if matches!(&out, Err(r) if r.code == RejectCode::DuplicateTx) {
            return self.resubmitted(id).await;
        }
        match &out {
            Ok(_) => {
                self.counters.admitted.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("citychain_tx_admitted_total").increment(1);
                metrics::histogram!("citychain_admission_seconds")
                    .record(t0.elapsed().as_secs_f64());
            }
            Err(r) => self.counters.reject(r.code),
        }
        out
    }

    async fn get(&self, id: TxId) -> std::result::Result<Option<TxRecord>, Rejection> {
        let base = self.get_local(id).await?;
        let rec = self.with_order(id, base)?;
        super::cross::with_cross(
            self.ordering.as_ref().map(|o| &*o.store),
            self.execution.as_deref(),
            id,
            rec,
        )
        .map_err(|e| Rejection::new(RejectCode::Unavailable, e, Some(id)))
    }

    async fn get_body(&self, id: TxId) -> std::result::Result<Option<SignedTx>, Rejection> {
        // The working store first (one read, no receipts decoded); then wherever `get` looks.
        match self.store.get(&id) {
            Ok(Some(tx)) => return Ok(Some(tx)),
            Ok(None) => {}
            Err(e) => {
                return Err(Rejection::new(
                    RejectCode::Unavailable,
                    e.to_string(),
                    Some(id),
                ));
            }
        }
        Ok(self.get_local(id).await?.and_then(|r| r.tx))
    }

    async fn status(&self) -> NodeStatus {
        self.status_now()
    }

    async fn execution(
        &self,
        id: TxId,
    ) -> std::result::Result<Option<rpc::TxExecution>, Rejection> {
        let Some(exec) = self.execution.as_ref() else {
            return Ok(None);
        };
        let Some(ledger) = exec.ledger() else {
            return Ok(None);
        };
        let unavailable = |e: &dyn std::fmt::Display| {
            Rejection::new(RejectCode::Unavailable, e.to_string(), Some(id))
        };
        let Some((sequence, o)) = ledger.outcome(&id).map_err(|e| unavailable(&e))? else {
            return Ok(None);
        };
        let mut found = super::execution::tx_execution(sequence, o);
        found.state_root = exec
            .checkpoint(sequence)
            .map_err(|e| unavailable(&e))?
            .map(|c| c.state_root);
        Ok(Some(found))
    }

    async fn account(
        &self,
        account: dag_core::AccountId,
    ) -> std::result::Result<rpc::AccountInfo, Rejection> {
        let Some(exec) = &self.execution else {
            return Err(Rejection::new(
                RejectCode::Unavailable,
                format!(
                    "this node is not a representative and keeps no ledger (account {account})"
                ),
                None,
            ));
        };
        let Some(ledger) = exec.ledger() else {
            return Err(Rejection::new(
                RejectCode::Unavailable,
                "this representative runs no ledger",
                None,
            ));
        };
        // Read the executed count first: the answer reflects at least that state.
        let executed_checkpoints = exec.executed();
        let a = ledger
            .account(&account)
            .map_err(|e| Rejection::new(RejectCode::Unavailable, e.to_string(), None))?;
        Ok(rpc::AccountInfo {
            account,
            exists: a.is_some(),
            balance: a.map_or(0, |a| a.balance),
            nonce: a.map_or(0, |a| a.next_nonce),
            version: a.map_or(0, |a| a.version),
            executed_checkpoints,
        })
    }

    async fn stake(
        &self,
        account: dag_core::AccountId,
    ) -> std::result::Result<rpc::StakeInfo, rpc::StakeReadError> {
        let reads = self
            .stake_reads
            .as_ref()
            .ok_or(rpc::StakeReadError::NotRepresentative)?;
        reads.stake(account)
    }

    async fn committee(&self) -> std::result::Result<rpc::CommitteeInfo, rpc::StakeReadError> {
        let reads = self
            .stake_reads
            .as_ref()
            .ok_or(rpc::StakeReadError::NotRepresentative)?;
        Ok(reads.committee())
    }

    async fn checkpoints(
        &self,
        from: u64,
        max: u32,
    ) -> std::result::Result<rpc::CheckpointRange, rpc::StakeReadError> {
        let store = self
            .ordering
            .as_ref()
            .map(|o| o.store.clone())
            .ok_or(rpc::StakeReadError::NotRepresentative)?;
        let read = move || -> crate::Result<rpc::CheckpointRange> {
            let committed = store.committed();
            let upto = committed.min(from.saturating_add(u64::from(max)));
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for seq in from..upto {
                let Some(c) = store.ordered(seq)? else { break };
                bytes += 64
                    + 32 * c.checkpoint.batches.len()
                    + c.batches
                        .iter()
                        .map(|h| {
                            96 + 33 * h.items.len() + 32 * (h.parents.len() + h.weak_links.len())
                        })
                        .sum::<usize>();
                out.push(c);
                // A bounded answer: the caller asks again from where this one ends.
                if bytes > CHECKPOINTS_ANSWER_BYTES {
                    break;
                }
            }
            Ok(rpc::CheckpointRange {
                checkpoints: out,
                committed,
            })
        };
        match crate::runtime::run_blocking("order store", read).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(rpc::StakeReadError::Store(e.to_string())),
            Err(e) => Err(rpc::StakeReadError::Store(e.to_string())),
        }
    }

    fn note_rejected(&self, code: RejectCode) {
        self.counters.reject(code);
    }

    async fn repair(
        &self,
        id: TxId,
        rebuild: bool,
    ) -> std::result::Result<Option<rpc::Repaired>, Rejection> {
        let unavailable =
            |e: PipelineError| Rejection::new(RejectCode::Unavailable, e.to_string(), Some(id));
        let Some(p) = &self.pipeline else {
            return Err(Rejection::new(
                RejectCode::Unavailable,
                "this node has no storage pipeline",
                Some(id),
            ));
        };
        if p.held(&id).map_err(unavailable)?.is_none() {
            return Ok(None);
        }
        let rebuilt = if rebuild {
            let n = p.repair_stripe_of(id).await.map_err(unavailable)?;
            if n > 0 {
                tracing::info!(tx = %id, shards = n, "repair re-created shards");
            }
            u32::try_from(n).unwrap_or(u32::MAX)
        } else {
            0
        };
        let rec = self.restore(id).await?;
        let Some(tx) = rec.tx else {
            return Err(Rejection::new(
                RejectCode::Unavailable,
                format!("tx {id} restored without its body"),
                Some(id),
            ));
        };
        Ok(Some(rpc::Repaired {
            tx,
            receipts: rec.receipts,
            source: rec.source,
            shards_rebuilt: rebuilt,
        }))
    }

    async fn list_stripes(&self) -> std::result::Result<Vec<rpc::StripeInfo>, Rejection> {
        let Some(p) = &self.pipeline else {
            return Err(Rejection::new(
                RejectCode::Unavailable,
                "this node has no storage pipeline",
                None,
            ));
        };
        let live: BTreeMap<NodeId, String> = p
            .live_lights()
            .into_iter()
            .map(|n| (n.node_id, n.grpc_addr))
            .collect();
        let manifests = p
            .manifests()
            .map_err(|e| Rejection::new(RejectCode::Unavailable, e.to_string(), None))?;
        Ok(manifests
            .into_iter()
            .map(|(m, _)| rpc::StripeInfo {
                stripe_id: m.stripe_id(),
                k: m.layout.k,
                m: m.layout.m,
                holders: m
                    .holders
                    .iter()
                    .zip(&m.layout.shard_hashes)
                    .enumerate()
                    .filter_map(|(i, (h, hash))| {
                        let node_id = (*h)?;
                        Some(rpc::StripeHolder {
                            index: u16::try_from(i).ok()?,
                            node_id,
                            grpc_addr: live.get(&node_id).cloned(),
                            shard_hash: *hash,
                        })
                    })
                    .collect(),
            })
            .collect())
    }
}

//! The city role's admission: decode → replay precheck → ML-DSA-87 verify (bounded pool) →
//! durable, replay-safe store → answer.

use crate::Error;
use crate::store::{Conflict, TxStore};
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
    admitted: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    fn reject(&self, code: RejectCode) {
        *self.rejected.lock().entry(code.name()).or_default() += 1;
        metrics::counter!("citychain_tx_rejected_total", "reason" => code.name()).increment(1);
    }
    /// Txs admitted so far.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }
    /// Rejections by reason.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        self.rejected.lock().clone()
    }
}

/// The city role's state: its identity, verification pool and store.
pub struct CityNode {
    node_id: NodeId,
    verifier: Arc<BatchVerifier>,
    store: TxStore,
    inflight: Semaphore,
    counters: Counters,
    started: Instant,
}

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
        CityNode {
            node_id,
            verifier,
            store,
            inflight: Semaphore::new(max_inflight),
            counters: Counters::default(),
            started: Instant::now(),
        }
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
            let _ = done.send(tx.verify_with_id(id, &pqc::MlDsa87));
        });
        match rx.await {
            Ok(Ok(v)) => Ok(v),
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
        // Cheap read-only replay check first, so replays never cost a verification.
        match self.store.precheck(&tx, &id) {
            Ok(Ok(())) => {}
            Ok(Err(c)) => return Err(Self::conflict(id, c)),
            Err(e) => return Err(Self::internal(id, e)),
        }
        let verified = self.verify(tx, id).await?;
        let t_verified = Instant::now();
        metrics::histogram!("citychain_admission_stage_seconds", "stage" => "verify")
            .record(t_verified.duration_since(t0).as_secs_f64());
        match self.store.admit(verified).await {
            Ok(Ok(())) => {}
            Ok(Err(c)) => return Err(Self::conflict(id, c)),
            Err(e) => return Err(Self::internal(id, e)),
        }
        metrics::histogram!("citychain_admission_stage_seconds", "stage" => "store")
            .record(t_verified.elapsed().as_secs_f64());
        Ok(Submitted {
            tx_id: id,
            state: TxState::Admitted,
            receipts: Vec::new(),
        })
    }
}

impl CityApi for CityNode {
    async fn submit(&self, tx: SignedTx) -> std::result::Result<Submitted, Rejection> {
        let t0 = Instant::now();
        let out = self.admit(tx).await;
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
        match self.store.get(&id) {
            Ok(Some(tx)) => Ok(Some(TxRecord {
                tx,
                state: TxState::Admitted,
                receipts: Vec::new(),
                source: "store".into(),
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(Self::internal(id, e)),
        }
    }

    async fn status(&self) -> NodeStatus {
        let mut counters = vec![("admitted".to_string(), self.counters.admitted())];
        counters.extend(
            self.counters
                .rejected()
                .into_iter()
                .map(|(k, v)| (format!("rejected.{k}"), v)),
        );
        NodeStatus {
            node_id: self.node_id,
            role: "city".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            stored_txs: self.store.len().unwrap_or(0),
            counters,
        }
    }

    fn note_rejected(&self, code: RejectCode) {
        self.counters.reject(code);
    }
}

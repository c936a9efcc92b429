//! A representative's own system txs: equivocation evidence caught by its consensus
//! becomes a `DoubleSign` tx, and verified storage receipts become `RecordContribution`
//! txs, each signed with the node key and submitted through admission like any tx (so it is
//! held, ordered by the DAG and applied by every representative).
//!
//! One sender per node, one tx at a time: the nonce is the dpos state's next nonce for the
//! node's account, and the sender waits until the committed state has applied or refused
//! its tx before it signs the next. A refused tx (another representative reported the same
//! offence first) consumes no nonce, so a counter kept beside the state could not stay
//! right; reading it from the applied state can.

use super::stake::StakeStore;
use dag_core::{AccountId, CityId, SignedReceipt, SignedTx, TxId};
use dpos::{DoubleSignEvidence, DposState, MAX_RECEIPTS_PER_TX, SystemPayload};
use pqc::Keypair;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most payloads queued for the sender; a full queue drops the newest (evidence and
/// contributions are re-derived: every representative reports the same offence, and
/// receipts stay claimable for the claim window).
const QUEUE: usize = 256;

/// Where a representative's own system txs go: admission (the city node) in production.
#[async_trait::async_trait]
pub trait SystemTxSink: Send + Sync {
    /// Admits `tx`; the error says why it was refused.
    async fn submit(&self, tx: SignedTx) -> std::result::Result<(), rpc::Rejection>;
}

#[async_trait::async_trait]
impl SystemTxSink for super::admission::CityNode {
    async fn submit(&self, tx: SignedTx) -> std::result::Result<(), rpc::Rejection> {
        rpc::CityApi::submit(self, tx).await.map(|_| ())
    }
}

/// Settings of the sender.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The city the txs are for.
    pub city: CityId,
    /// How long to wait for a submitted tx to be committed and applied before giving up
    /// on it (it is then dropped; the nonce is read again for the next one).
    pub commit_timeout: Duration,
}

/// The running sender: queue payloads with [`SystemTxSender::send`].
#[derive(Debug)]
pub struct SystemTxSender {
    tx: SenderQueue,
    task: JoinHandle<()>,
}

/// One queued payload and, if the caller waits, where its outcome goes.
#[derive(Debug)]
struct Queued {
    payload: SystemPayload,
    reply: Option<oneshot::Sender<SendOutcome>>,
}

/// A handle for queueing payloads to a [`SystemTxSender`] from other tasks.
#[derive(Debug, Clone)]
pub struct SenderQueue(mpsc::Sender<Queued>);

impl SenderQueue {
    /// Queues `payload` (waiting for room); false once the sender stopped.
    pub async fn send(&self, payload: SystemPayload) -> bool {
        self.0
            .send(Queued {
                payload,
                reply: None,
            })
            .await
            .is_ok()
    }

    /// Queues `payload` and waits for its outcome; `None` if the sender stopped first.
    pub async fn send_and_wait(&self, payload: SystemPayload) -> Option<SendOutcome> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(Queued {
                payload,
                reply: Some(tx),
            })
            .await
            .ok()?;
        rx.await.ok()
    }
}

/// What happened to one payload (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Committed and applied.
    Applied(TxId),
    /// Committed and refused by the rules (a deterministic no-op).
    Refused(TxId),
    /// Admission refused it.
    NotAdmitted(String),
    /// Not committed within the timeout.
    TimedOut(TxId),
}

impl SystemTxSender {
    /// Starts the sender for `key`'s account. `outcomes` (if any) receives one
    /// [`SendOutcome`] per payload.
    pub fn spawn(
        key: Keypair,
        store: Arc<StakeStore>,
        sink: Arc<dyn SystemTxSink>,
        config: SenderConfig,
        outcomes: Option<mpsc::UnboundedSender<SendOutcome>>,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Queued>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(Queued { payload, reply }) = rx.recv().await {
                let out = send_one(&key, &store, sink.as_ref(), &config, &payload).await;
                match &out {
                    SendOutcome::Applied(id) => {
                        tracing::info!(tx = %id, kind = payload.kind_name(), "own system tx applied")
                    }
                    other => {
                        tracing::warn!(kind = payload.kind_name(), outcome = ?other, "own system tx not applied")
                    }
                }
                if let Some(o) = &outcomes {
                    let _ = o.send(out.clone());
                }
                if let Some(r) = reply {
                    let _ = r.send(out);
                }
            }
        });
        SystemTxSender {
            tx: SenderQueue(tx),
            task,
        }
    }

    /// Queues `payload`; false if the queue is full or the sender stopped.
    pub fn send(&self, payload: SystemPayload) -> bool {
        self.tx
            .0
            .try_send(Queued {
                payload,
                reply: None,
            })
            .is_ok()
    }

    /// A handle for queueing from other tasks.
    pub fn queue(&self) -> SenderQueue {
        self.tx.clone()
    }

    /// Stops now; a payload in hand or queued is dropped (evidence is reported by every
    /// representative that saw it, and receipts stay claimable for the claim window).
    pub async fn shutdown(self) {
        drop(self.tx);
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn send_one(
    key: &Keypair,
    store: &StakeStore,
    sink: &dyn SystemTxSink,
    config: &SenderConfig,
    payload: &SystemPayload,
) -> SendOutcome {
    let me = key.account_id();
    let nonce = match store.next_nonce(&me) {
        Ok(n) => n,
        Err(e) => return SendOutcome::NotAdmitted(format!("cannot read the account nonce: {e}")),
    };
    let tx = dpos::sign_system_tx(
        payload,
        nonce,
        crate::runtime::now_ms(),
        config.city.clone(),
        key,
    );
    let id = tx.id();
    let mut applied = store.subscribe();
    if let Err(r) = sink.submit(tx).await {
        return SendOutcome::NotAdmitted(r.to_string());
    }
    let wait = async {
        loop {
            if let Some(ok) = store.verdict(&id) {
                return if ok {
                    SendOutcome::Applied(id)
                } else {
                    SendOutcome::Refused(id)
                };
            }
            if applied.changed().await.is_err() {
                return SendOutcome::TimedOut(id);
            }
        }
    };
    tokio::time::timeout(config.commit_timeout, wait)
        .await
        .unwrap_or(SendOutcome::TimedOut(id))
}

/// Forwards consensus' equivocation evidence to the sender as `DoubleSign` payloads.
pub fn spawn_evidence_reporter(
    mut evidence: mpsc::UnboundedReceiver<DoubleSignEvidence>,
    queue: SenderQueue,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(ev) = evidence.recv().await {
            tracing::warn!(offender = %ev.offender(), round = ev.round(), "reporting a double sign");
            if !queue.send(SystemPayload::DoubleSign(ev)).await {
                return;
            }
        }
    })
}

/// `RecordContribution` payloads for `receipts` (verified receipts of committed stripes)
/// that the rules will accept at `now_ms`: holders registered and active, one receipt per
/// (holder, reward epoch) not rewarded yet and inside the claim window, at most
/// [`MAX_RECEIPTS_PER_TX`] per payload. Receipts the state would refuse are left out, so
/// one stale receipt does not sink a whole batch.
pub fn contribution_payloads(
    state: &DposState,
    receipts: &[SignedReceipt],
    now_ms: u64,
) -> Vec<SystemPayload> {
    let cfg = state.config();
    let current = cfg.epoch_of(now_ms);
    let oldest = current.saturating_sub(cfg.claim_window_epochs);
    let latest = now_ms.saturating_add(cfg.max_clock_skew_ms);
    let mut seen: BTreeSet<(AccountId, u64)> = BTreeSet::new();
    let eligible: Vec<SignedReceipt> = receipts
        .iter()
        .filter(|r| {
            let holder = AccountId::from_bytes(*r.receipt.holder.as_bytes());
            let epoch = cfg.epoch_of(r.receipt.time_ms);
            state.is_active(&holder)
                && r.receipt.time_ms <= latest
                && epoch >= oldest
                && !state.was_rewarded(&holder, epoch)
                && seen.insert((holder, epoch))
        })
        .cloned()
        .collect();
    eligible
        .chunks(MAX_RECEIPTS_PER_TX)
        .map(|c| SystemPayload::RecordContribution {
            receipts: c.to_vec(),
        })
        .collect()
}

mod contributions;
mod failed_challenges;
mod missed;
pub use contributions::{
    ChallengeResults, ChallengeSlot, GRACE_CHECKPOINTS, Pending, StripeReceipts,
    committed_receipts, in_charge, spawn_contribution_reporter,
};
pub use failed_challenges::{
    challenge_incident_digest, challenge_incidents, spawn_challenge_incident_reporter,
};
pub use missed::{
    COMMIT_SUMMARIES, CommitSummary, MissedIncident, MissedRounds, MissedRule, incident_digest,
    spawn_missed_round_reporter,
};

#[cfg(test)]
mod tests;

//! Rewards for holders: the verified receipts of committed stripes become
//! `RecordContribution` system txs.
//!
//! Who reports a receipt: the representative that placed the stripe is the only one that
//! holds its verified receipts (in its stripe index) and it is the author of the committed
//! batch that carries the stripe (`BatchItem::Stripe`), so every committed stripe has
//! exactly one possible reporter, fixed by the certified DAG. The rules pay a holder once
//! per reward epoch, so several representatives can have a receipt of the same holder for
//! the same epoch; of those, the one *in charge* of (holder, epoch) — a hash of the pair
//! over the dpos state's representatives, the same choice everywhere — reports at once, the
//! others only after [`GRACE_CHECKPOINTS`] more checkpoints (when the one in charge had no
//! receipt of that holder, or is down). A duplicate that still happens is refused by the
//! rules (`AlreadyRewarded`) as a deterministic no-op on every representative; the refused
//! tx's other receipts stay pending and are sent again, filtered against the new state.
//!
//! Storage challenges: when the node runs the storage audit, a holder that failed any
//! challenge in the newest audit epoch recorded (`contributions.redb`: wrong proof, shard
//! not held, silent) is not reported until it passes again — its receipts say it took the
//! shards, the audit says it does not keep them.
//!
//! Checkpoints applied before the reporter started are not scanned (after a restart,
//! receipts of stripes committed while the node was down are reported by nobody unless the
//! holder's later stripes are; one receipt per holder and epoch is enough).

use super::{SendOutcome, SenderQueue, contribution_payloads};
use crate::city::order::OrderStore;
use crate::city::stake::StakeStore;
use crate::runtime::run_blocking;
use dag_core::consensus::BatchItem;
use dag_core::{AccountId, NodeId, SignedReceipt, StripeId};
use dpos::{DposState, SystemPayload};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Checkpoints a receipt waits for the representative in charge of its (holder, reward
/// epoch) before the representative that has it reports it itself.
pub const GRACE_CHECKPOINTS: u64 = 8;

/// Most (holder, epoch) receipts kept waiting; beyond, new ones are dropped until some are
/// reported (one receipt per holder and epoch is enough, later stripes bring more).
const MAX_PENDING: usize = 65_536;

/// Where a representative finds the verified receipts of the stripes it placed.
pub trait StripeReceipts: Send + Sync {
    /// The receipts of `stripe` (`None`: not placed by this node).
    fn receipts(
        &self,
        stripe: &StripeId,
    ) -> std::result::Result<Option<Vec<SignedReceipt>>, String>;
}

impl StripeReceipts for crate::city::pipeline::Pipeline {
    fn receipts(
        &self,
        stripe: &StripeId,
    ) -> std::result::Result<Option<Vec<SignedReceipt>>, String> {
        self.stripe_receipts(stripe).map_err(|e| e.to_string())
    }
}

/// The receipts of the stripes `me` proposed that checkpoints `from..to` committed, each
/// with its checkpoint's sequence.
pub fn committed_receipts(
    order: &OrderStore,
    stripes: &dyn StripeReceipts,
    me: NodeId,
    from: u64,
    to: u64,
) -> crate::Result<Vec<(u64, SignedReceipt)>> {
    let mut out = Vec::new();
    for seq in from..to {
        let Some(cp) = order.checkpoint(seq)? else {
            continue;
        };
        for digest in &cp.checkpoint.batches {
            // Batches that carry no item are not stored.
            let Some(h) = order.batch(digest)? else {
                continue;
            };
            if h.author != me {
                continue;
            }
            for item in &h.items {
                let BatchItem::Stripe(s) = item else { continue };
                match stripes.receipts(s) {
                    Ok(Some(rs)) => out.extend(rs.into_iter().map(|r| (seq, r))),
                    Ok(None) => {
                        tracing::debug!(stripe = %s.short(), "own committed stripe not in the stripe index")
                    }
                    Err(e) => {
                        tracing::warn!(stripe = %s.short(), error = %e, "cannot read a committed stripe's receipts")
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Where a representative learns which holders failed its storage challenges.
pub trait ChallengeResults: Send + Sync + std::fmt::Debug {
    /// The holders with a failed challenge in the newest audit epoch recorded.
    fn failed_holders(&self) -> crate::Result<BTreeSet<NodeId>>;
}

impl ChallengeResults for crate::city::challenges::ContributionLog {
    fn failed_holders(&self) -> crate::Result<BTreeSet<NodeId>> {
        let Some(last) = self.last_epoch()? else {
            return Ok(BTreeSet::new());
        };
        Ok(self
            .epochs(last, last)?
            .into_iter()
            .filter(|r| !r.passed)
            .map(|r| r.holder)
            .collect())
    }
}

/// The audit results the reporter consults, set once the audit runs (it starts after the
/// representative).
pub type ChallengeSlot = Arc<std::sync::OnceLock<Arc<dyn ChallengeResults>>>;

/// True if `me` is the representative in charge of reporting `holder`'s contribution for
/// reward epoch `epoch`: BLAKE3 of the pair picks one of the state's representatives.
pub fn in_charge(state: &DposState, me: &AccountId, holder: &AccountId, epoch: u64) -> bool {
    let reps = state.representatives();
    if reps.is_empty() {
        return false;
    }
    let mut h = blake3::Hasher::new();
    h.update(b"citychain/contribution-reporter/v1");
    h.update(holder.as_bytes());
    h.update(&epoch.to_le_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_bytes()[..8]);
    let i = u64::from_le_bytes(first) % reps.len() as u64;
    reps.get(i as usize) == Some(me)
}

/// Receipts waiting to be reported: one per (holder, reward epoch), with the checkpoint
/// that first brought it.
#[derive(Debug, Default)]
pub struct Pending {
    by_key: BTreeMap<(AccountId, u64), (SignedReceipt, u64)>,
}

impl Pending {
    /// Keeps `receipt` (seen in checkpoint `seq`) unless one of its holder and epoch waits.
    pub fn add(&mut self, state: &DposState, seq: u64, receipt: SignedReceipt) {
        let holder = AccountId::from_bytes(*receipt.receipt.holder.as_bytes());
        let epoch = state.config().epoch_of(receipt.receipt.time_ms);
        if self.by_key.len() >= MAX_PENDING && !self.by_key.contains_key(&(holder, epoch)) {
            return;
        }
        self.by_key.entry((holder, epoch)).or_insert((receipt, seq));
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True if none waits.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Drops the receipts the state would refuse at `now_ms` (rewarded already, holder not
    /// registered or inactive, out of the claim window) and returns those to report now,
    /// at checkpoint `seq`: `me` in charge, or waited [`GRACE_CHECKPOINTS`]. Receipts of
    /// `failed` holders (storage challenges) stay pending, unreported.
    pub fn due(
        &mut self,
        state: &DposState,
        me: &AccountId,
        seq: u64,
        now_ms: u64,
        failed: &BTreeSet<NodeId>,
    ) -> Vec<SignedReceipt> {
        let all: Vec<SignedReceipt> = self.by_key.values().map(|(r, _)| r.clone()).collect();
        let cfg = state.config();
        let acceptable: BTreeSet<(AccountId, u64)> = contribution_payloads(state, &all, now_ms)
            .into_iter()
            .flat_map(|p| match p {
                SystemPayload::RecordContribution { receipts } => receipts,
                _ => Vec::new(),
            })
            .map(|r| {
                (
                    AccountId::from_bytes(*r.receipt.holder.as_bytes()),
                    cfg.epoch_of(r.receipt.time_ms),
                )
            })
            .collect();
        self.by_key.retain(|k, _| acceptable.contains(k));
        self.by_key
            .iter()
            .filter(|((holder, epoch), (r, first))| {
                !failed.contains(&r.receipt.holder)
                    && (in_charge(state, me, holder, *epoch)
                        || seq >= first.saturating_add(GRACE_CHECKPOINTS))
            })
            .map(|(_, (r, _))| r.clone())
            .collect()
    }
}

/// Starts the contribution reporter of representative `me`: after each checkpoint the
/// stake store applied, the receipts of `me`'s stripes it committed are kept in a
/// [`Pending`] set and those due are sent through `queue` as `RecordContribution` txs
/// (built by [`contribution_payloads`], at most eight receipts each), one at a time.
/// Holders that failed a storage challenge in `challenges` (once set) are left out.
pub fn spawn_contribution_reporter(
    stake: Arc<StakeStore>,
    order: Arc<OrderStore>,
    stripes: Arc<dyn StripeReceipts>,
    challenges: ChallengeSlot,
    me: NodeId,
    queue: SenderQueue,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let me_account = AccountId::from_bytes(*me.as_bytes());
        let mut applied = stake.subscribe();
        let mut next = stake.next_seq();
        let mut pending = Pending::default();
        loop {
            while stake.next_seq() <= next {
                if applied.changed().await.is_err() {
                    return;
                }
            }
            let upto = stake.next_seq();
            let (o, s, c) = (order.clone(), stripes.clone(), challenges.get().cloned());
            let found = match run_blocking("contribution scan", move || {
                let found = committed_receipts(&o, s.as_ref(), me, next, upto)?;
                let failed = match c {
                    Some(c) => c.failed_holders()?,
                    None => BTreeSet::new(),
                };
                Ok::<_, crate::Error>((found, failed))
            })
            .await
            {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read committed stripes; contributions stop");
                    return;
                }
                Err(_) => return,
            };
            next = upto;
            let last = upto.saturating_sub(1);
            let now_ms = match order.leader_time(last) {
                Ok(Some(t)) => t,
                _ => crate::runtime::now_ms(),
            };
            let (found, failed) = found;
            let payloads = match stake.read(|state| {
                for (seq, r) in found {
                    pending.add(state, seq, r);
                }
                let due = pending.due(state, &me_account, last, now_ms, &failed);
                contribution_payloads(state, &due, now_ms)
            }) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the stake state; contributions stop");
                    return;
                }
            };
            for p in payloads {
                let receipts = match &p {
                    SystemPayload::RecordContribution { receipts } => receipts.len(),
                    _ => 0,
                };
                match queue.send_and_wait(p).await {
                    Some(SendOutcome::Applied(id)) => {
                        tracing::info!(tx = %id, receipts, "holders' contributions recorded")
                    }
                    // Another representative's report came first: the rest stays pending
                    // and is filtered against the new state next time.
                    Some(SendOutcome::Refused(_)) => {}
                    // Not admitted or not committed in time: try again after the next
                    // checkpoint.
                    Some(_) => break,
                    None => return,
                }
            }
        }
    })
}

//! Records each consensus epoch's committee in the [`OrderStore`] as the representative
//! starts it (genesis at sequence 0, then every committee change), so the federation pusher
//! can hand the continent over to the new committee ([`CheckpointSource::handover_at`]).
//! A member left out of the next committee never starts it; it learns that committee the
//! way the driver did ([`LeftOut`]) so it still signs the handover.
//!
//! [`CheckpointSource::handover_at`]: crate::federation_push::CheckpointSource::handover_at

use super::order::OrderStore;
use crate::city::consensus::{EpochEnd, EpochPlan, EpochState, RepresentativeStatus};
use crate::runtime::run_blocking;
use crate::{Error, Result};
use dag_core::consensus::Committee;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `(public key, stake)` of `committee`'s members in index order.
fn members_of(committee: &Committee) -> Vec<(Vec<u8>, u64)> {
    committee
        .authorities()
        .iter()
        .map(|a| (a.public_key.clone(), a.stake))
        .collect()
}

/// Records `epoch` off the reactor (one fsync); false (logged) when it failed.
pub(crate) async fn record(
    order: &Arc<OrderStore>,
    epoch: u64,
    first_seq: u64,
    committee: &Committee,
) -> bool {
    let (o, members) = (order.clone(), members_of(committee));
    match run_blocking("epoch record", move || {
        o.record_epoch(epoch, first_seq, &members)
    })
    .await
    {
        Ok(Ok(())) => {
            tracing::debug!(epoch, first_seq, "committee epoch recorded");
            true
        }
        Ok(Err(e)) => {
            tracing::error!(epoch, first_seq, error = %e, "committee epoch not recorded");
            false
        }
        Err(_) => false,
    }
}

/// What a member left out of the next committee needs to learn that committee: the data
/// directory of its driver (the persisted [`EpochState`] names the ending epoch and its last
/// checkpoint, `left_after`) and the [`EpochPlan`] the driver asked. The plan must answer
/// the same on every member (its contract), so the committee learned is the one the others
/// started.
#[derive(Debug, Clone)]
pub(crate) struct LeftOut {
    /// The representative's data directory.
    pub(crate) data_dir: PathBuf,
    /// The driver's epoch plan.
    pub(crate) plan: EpochPlan,
}

/// The epoch after the one this member was left out of: `(epoch, first sequence,
/// committee)`; `None` if the persisted state says it was not left out.
async fn learn_next(
    order: &Arc<OrderStore>,
    lo: &LeftOut,
) -> Result<Option<(u64, u64, Committee)>> {
    let dir = lo.data_dir.clone();
    let Some(state) = run_blocking("epoch state", move || EpochState::load(&dir)).await?? else {
        return Ok(None);
    };
    let Some(last) = state.left_after else {
        return Ok(None);
    };
    // The applier records the epoch's last checkpoint shortly (it was committed).
    let mut sub = order.subscribe();
    while order.committed() <= last {
        if sub.changed().await.is_err() {
            return Err(Error::Stopping("order store"));
        }
    }
    let o = order.clone();
    let (cp, at) = run_blocking("epoch end", move || {
        Ok::<_, Error>((o.checkpoint(last)?, o.leader_time(last)?))
    })
    .await??;
    let Some(cp) = cp else {
        return Ok(None);
    };
    let end = EpochEnd {
        epoch: state.epoch,
        last: cp.checkpoint,
        at_ms: at.unwrap_or(cp.committed_at_ms),
        committee: state.committee()?,
    };
    let next = (lo.plan.next_committee)(end).await?;
    let epoch = state.epoch + 1;
    Ok(Some((epoch, last + 1, next.committee.with_epoch(epoch))))
}

/// Records `genesis` as epoch 0 from sequence 0, then every epoch the representative runs:
/// once its committee watch (`Committee::epoch`) and its status (`epoch`,
/// `epoch_first_seq`) agree on an epoch not recorded yet. Once the status says this member
/// was left out, it records the next epoch as learned through `left_out` (nothing without
/// it). Ends when the representative stops (its watches close).
///
/// Two epoch starts between two looks record only the later (the watches keep the newest).
pub(crate) fn spawn_epoch_recorder(
    order: Arc<OrderStore>,
    genesis: Committee,
    mut committee: watch::Receiver<Committee>,
    mut status: watch::Receiver<RepresentativeStatus>,
    left_out: Option<LeftOut>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut recorded: Option<u64> = None;
        if record(&order, 0, 0, &genesis).await {
            recorded = Some(0);
        }
        let mut learned = false;
        loop {
            if status.borrow().removed
                && !learned
                && let Some(lo) = &left_out
            {
                learned = true;
                // Until the representative stops (its status watch closes).
                let mut st = status.clone();
                let stopped = async move { while st.changed().await.is_ok() {} };
                tokio::select! {
                    _ = stopped => return,
                    r = learn_next(&order, lo) => match r {
                        Ok(Some((epoch, first_seq, c))) => {
                            tracing::info!(epoch, first_seq, "left out of the committee: recording the next one for the handover");
                            if record(&order, epoch, first_seq, &c).await {
                                recorded = Some(epoch);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "left out of the committee: the next one is unknown; no handover share from this node"),
                    },
                }
            }
            let c = committee.borrow_and_update().clone();
            let (epoch, first_seq) = {
                let s = status.borrow_and_update();
                (s.epoch, s.epoch_first_seq)
            };
            if c.epoch() == epoch
                && recorded.is_none_or(|r| r < epoch)
                && record(&order, epoch, first_seq, &c).await
            {
                recorded = Some(epoch);
            }
            tokio::select! {
                r = committee.changed() => if r.is_err() { return },
                r = status.changed() => if r.is_err() { return },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::federation_push::CommitteeEpoch;

    fn committee(keys: &[u8]) -> Committee {
        Committee::new(keys.iter().map(|k| (vec![*k; 40], u64::from(*k))).collect()).unwrap()
    }

    /// The recorded epochs once there are `n` (fails after a generous minute: a recorder
    /// that never records must not hang the suite).
    async fn wait_for(order: &OrderStore, n: usize) -> Vec<CommitteeEpoch> {
        let start = std::time::Instant::now();
        loop {
            let e = order.epochs().unwrap();
            if e.len() >= n {
                return e;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "only {} epochs recorded, {n} expected",
                e.len()
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn records_genesis_and_each_started_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let order = Arc::new(OrderStore::open(&dir.path().join("order.redb")).unwrap());
        let genesis = committee(&[1, 2, 3]);
        let (c_tx, c_rx) = watch::channel(genesis.clone());
        let (s_tx, s_rx) = watch::channel(RepresentativeStatus::default());
        let task = spawn_epoch_recorder(order.clone(), genesis.clone(), c_rx, s_rx, None);
        assert_eq!(
            wait_for(&order, 1).await,
            vec![CommitteeEpoch {
                epoch: 0,
                first_seq: 0,
                members: members_of(&genesis),
            }]
        );
        // The committee changes first, the status follows: recorded once both agree.
        let next = committee(&[2, 3, 4]).with_epoch(1);
        c_tx.send_replace(next.clone());
        s_tx.send_modify(|s| {
            s.epoch = 1;
            s.epoch_first_seq = 17;
        });
        let epochs = wait_for(&order, 2).await;
        assert_eq!(
            epochs[1],
            CommitteeEpoch {
                epoch: 1,
                first_seq: 17,
                members: members_of(&next),
            }
        );
        // The representative stops: the recorder ends.
        drop((c_tx, s_tx));
        task.await.unwrap();
        assert_eq!(order.epochs().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_member_left_out_records_the_committee_the_plan_names() {
        use dag_core::consensus::{BatchItem, ChainStart};
        let dir = tempfile::tempdir().unwrap();
        let order = Arc::new(OrderStore::open(&dir.path().join("order.redb")).unwrap());
        let subs = crate::city::order::tests::commits(vec![BatchItem::Tx(
            dag_core::TxId::from_bytes([1; 32]),
        )]);
        assert!(subs.len() >= 3, "need a few checkpoints");
        let genesis = committee(&[1, 2, 3]);
        // Left out after checkpoint 1 (the driver persisted that before saying so).
        EpochState {
            epoch: 0,
            start: ChainStart {
                next_sequence: 0,
                prev_hash: dag_core::Hash32([0; 32]),
            },
            term_started_ms: 0,
            members: members_of(&genesis),
            left_after: Some(1),
        }
        .store(dir.path())
        .unwrap();
        let next = committee(&[2, 3, 4]);
        let asked = Arc::new(parking_lot::Mutex::new(None));
        let plan = {
            let (next, asked) = (next.clone(), asked.clone());
            EpochPlan {
                term_ms: 1000,
                next_committee: Arc::new(move |end: EpochEnd| {
                    *asked.lock() = Some((end.epoch, end.last.sequence, end.committee.clone()));
                    let next = next.clone();
                    Box::pin(async move {
                        Ok(crate::city::consensus::NextEpoch {
                            committee: next,
                            addresses: Default::default(),
                        })
                    })
                }),
            }
        };
        let (_c_tx, c_rx) = watch::channel(genesis.clone());
        let (s_tx, s_rx) = watch::channel(RepresentativeStatus {
            removed: true,
            ..RepresentativeStatus::default()
        });
        let task = spawn_epoch_recorder(
            order.clone(),
            genesis.clone(),
            c_rx,
            s_rx,
            Some(LeftOut {
                data_dir: dir.path().to_path_buf(),
                plan,
            }),
        );
        // It waits for the epoch's last checkpoint in the order store.
        for s in &subs[..2] {
            order.apply(s, 1).unwrap();
        }
        let epochs = wait_for(&order, 2).await;
        assert_eq!(
            epochs[1],
            CommitteeEpoch {
                epoch: 1,
                first_seq: 2,
                members: members_of(&next),
            }
        );
        assert_eq!(*asked.lock(), Some((0, 1, genesis.clone())));
        drop(s_tx);
        task.await.unwrap();
    }
}

//! Records each consensus epoch's committee in the [`OrderStore`] as the representative
//! starts it (genesis at sequence 0, then every committee change), so the federation pusher
//! can hand the continent over to the new committee ([`CheckpointSource::handover_at`]).
//!
//! [`CheckpointSource::handover_at`]: crate::federation_push::CheckpointSource::handover_at

use super::order::OrderStore;
use crate::city::consensus::RepresentativeStatus;
use crate::runtime::run_blocking;
use dag_core::consensus::Committee;
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
async fn record(order: &Arc<OrderStore>, epoch: u64, first_seq: u64, committee: &Committee) -> bool {
    let (o, members) = (order.clone(), members_of(committee));
    match run_blocking("epoch record", move || o.record_epoch(epoch, first_seq, &members)).await {
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

/// Records `genesis` as epoch 0 from sequence 0, then every epoch the representative runs:
/// once its committee watch (`Committee::epoch`) and its status (`epoch`,
/// `epoch_first_seq`) agree on an epoch not recorded yet. Ends when the representative
/// stops (its watches close).
///
/// A member left out of the next committee never starts it, so it records nothing for it;
/// two epoch starts between two looks record only the later (the watches keep the newest).
pub(crate) fn spawn_epoch_recorder(
    order: Arc<OrderStore>,
    genesis: Committee,
    mut committee: watch::Receiver<Committee>,
    mut status: watch::Receiver<RepresentativeStatus>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut recorded: Option<u64> = None;
        if record(&order, 0, 0, &genesis).await {
            recorded = Some(0);
        }
        loop {
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

    async fn wait_for(order: &OrderStore, n: usize) -> Vec<CommitteeEpoch> {
        loop {
            let e = order.epochs().unwrap();
            if e.len() >= n {
                return e;
            }
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
        let task = spawn_epoch_recorder(order.clone(), genesis.clone(), c_rx, s_rx);
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
}

//! A standby representative: a city node that is not (yet) in its city's committee follows
//! the committee's committed checkpoints until dpos elects it, then starts its consensus
//! driver for the epoch it was elected into, with the DAG-ordered history, ledger and dpos
//! state every member has at that boundary.
//!
//! - **Following**: the standby asks every member of the epoch's committee for the
//!   checkpoints it lacks (`GetCheckpoints`, in parallel). A checkpoint is taken only when
//!   members holding more than a third of the committee's stake answered it identically
//!   ([`rpc::OrderedCheckpoint::digest`]: at least one honest member vouches for it with
//!   at most f faulty), it continues the chain (sequence, previous hash) and its batch
//!   headers are its own ([`rpc::OrderedCheckpoint::check`], epoch included). Taken
//!   checkpoints go into the order store ([`OrderStore::apply_ordered`]); the execution
//!   feed applies them to the ledger and the dpos state as on every member.
//! - **Epochs**: the standby runs the members' boundary rule ([`TermClock`]) over the
//!   checkpoints' leader times and asks the same [`EpochPlan`] for the next committee (dpos's
//!   elected set, read once the epoch's last checkpoint is executed). Not elected: it
//!   follows the new committee. Elected: it persists the epoch's [`EpochState`] and returns
//!   it; the caller starts the driver, which loads that state (so a restart of an elected
//!   standby starts as a member).
//! - A restart re-runs the rule over the checkpoints already stored, then goes on fetching.

use super::consensus::{EpochEnd, EpochPlan, EpochState, TermClock};
use super::order::OrderStore;
use crate::runtime::run_blocking;
use crate::{Error, Result};
use dag_core::consensus::Committee;
use dag_core::{Hash32, NodeId};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Settings of [`follow`].
#[derive(Debug, Clone)]
pub(crate) struct StandbyConfig {
    /// Pause when no member has anything new.
    pub poll: Duration,
    /// Checkpoints asked per request.
    pub batch: u32,
    /// Deadline of one request (connection included).
    pub timeout: Duration,
}

impl Default for StandbyConfig {
    fn default() -> Self {
        StandbyConfig {
            poll: Duration::from_millis(100),
            batch: 64,
            timeout: Duration::from_secs(3),
        }
    }
}

/// Where the standby stands, for reads (epoch and committee it follows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Following {
    /// The epoch of the checkpoints it takes now.
    pub epoch: u64,
    /// Sequence of that epoch's first checkpoint.
    pub first_seq: u64,
    /// That epoch's committee.
    pub committee: Committee,
}

/// What a standby follows with.
pub(crate) struct Standby {
    pub me: NodeId,
    pub data_dir: PathBuf,
    pub order: Arc<OrderStore>,
    pub plan: EpochPlan,
    /// The genesis committee (epoch 0).
    pub genesis: Committee,
    /// Members' city addresses (genesis file and dpos endpoints), refreshed per epoch.
    pub addresses: Arc<dyn Fn() -> BTreeMap<NodeId, String> + Send + Sync>,
    pub cfg: StandbyConfig,
    /// Published on every epoch change.
    pub following: watch::Sender<Following>,
}

/// Follows the committee until this node is elected; returns the persisted state of the
/// epoch it was elected into. Runs until elected or an unrecoverable error (the store).
pub(crate) async fn follow(s: Standby) -> Result<EpochState> {
    let mut clients: HashMap<NodeId, (String, rpc::CityClient)> = HashMap::new();
    let mut committee = s.genesis.clone().with_epoch(0);
    let mut epoch = 0u64;
    let mut clock = TermClock::default();
    let mut last_hash = Hash32([0; 32]);
    let mut seq = 0u64;
    let mut pending: std::collections::VecDeque<rpc::OrderedCheckpoint> = Default::default();
    // The epochs it follows go into the order store as a member's do, so its federation
    // pusher knows it has no share to give for them (and waits for the continent).
    super::epochs::record(&s.order, 0, 0, &committee).await;
    loop {
        // The next checkpoint: from the store (replay after a restart), else from members.
        let stored = if seq < s.order.committed() {
            let o = s.order.clone();
            run_blocking("order store", move || o.ordered(seq)).await??
        } else {
            None
        };
        let c = match stored {
            Some(c) => c,
            None => {
                if pending.is_empty() {
                    let addrs = (s.addresses)();
                    let got =
                        fetch_agreed(&s.cfg, &committee, &addrs, &mut clients, seq, last_hash)
                            .await;
                    if got.is_empty() {
                        tokio::time::sleep(s.cfg.poll).await;
                        continue;
                    }
                    pending.extend(got);
                }
                let Some(c) = pending.pop_front() else {
                    continue;
                };
                if let Err(e) = c.check(epoch) {
                    // Agreed by enough stake yet not of this epoch: this node's view of the
                    // epochs is wrong; never apply it.
                    tracing::error!(seq, error = %e, "standby: agreed checkpoint does not check; refetching");
                    pending.clear();
                    tokio::time::sleep(s.cfg.poll).await;
                    continue;
                }
                let o = s.order.clone();
                let cc = c.clone();
                run_blocking("order store", move || {
                    o.apply_ordered(&cc, crate::runtime::now_ms())
                })
                .await??;
                metrics::counter!("citychain_standby_checkpoints_total").increment(1);
                c
            }
        };
        if c.checkpoint.sequence != seq || c.checkpoint.prev_hash != last_hash {
            return Err(Error::Membership(format!(
                "standby: checkpoint {} does not continue the chain at {seq}",
                c.checkpoint.sequence
            )));
        }
        last_hash = c.checkpoint.hash();
        seq += 1;
        if !clock.observe(c.leader_time_ms, s.plan.term_ms) {
            continue;
        }
        // The epoch ended with this checkpoint: the same question every member asks.
        let end = EpochEnd {
            epoch,
            last: c.checkpoint.clone(),
            at_ms: clock.at_ms,
            committee: committee.clone(),
        };
        let next = (s.plan.next_committee)(end.clone()).await?;
        let next_committee = next.committee.with_epoch(epoch + 1);
        if next_committee.authority(&s.me).is_some() {
            let state = EpochState::after(&end, &next_committee);
            let (st, dir) = (state.clone(), s.data_dir.clone());
            run_blocking("consensus epoch state", move || st.store(&dir)).await??;
            tracing::info!(
                epoch = state.epoch,
                first_seq = state.start.next_sequence,
                "standby elected into the committee"
            );
            return Ok(state);
        }
        epoch += 1;
        committee = next_committee;
        clock = TermClock::started_at(end.at_ms);
        pending.clear();
        super::epochs::record(&s.order, epoch, seq, &committee).await;
        s.following.send_replace(Following {
            epoch,
            first_seq: seq,
            committee: committee.clone(),
        });
        tracing::info!(epoch, first_seq = seq, "standby follows the next committee");
    }
}

/// Asks every member for checkpoints from `from` and keeps the longest prefix that members
/// with more than a third of the stake answered identically and that continues the chain
/// after `prev`.
async fn fetch_agreed(
    cfg: &StandbyConfig,
    committee: &Committee,
    addresses: &BTreeMap<NodeId, String>,
    clients: &mut HashMap<NodeId, (String, rpc::CityClient)>,
    from: u64,
    prev: Hash32,
) -> Vec<rpc::OrderedCheckpoint> {
    let mut asks = Vec::new();
    for a in committee.authorities() {
        let Some(addr) = addresses.get(&a.id) else {
            continue;
        };
        let client = match clients.get(&a.id) {
            Some((at, c)) if at == addr => Some(c.clone()),
            _ => None,
        };
        let (id, addr, timeout, batch) = (a.id, addr.clone(), cfg.timeout, cfg.batch);
        asks.push(async move {
            let r = tokio::time::timeout(timeout, async {
                let c = match client {
                    Some(c) => c,
                    None => rpc::CityClient::connect(&addr).await?,
                };
                let range = c.checkpoints(from, batch).await?;
                Ok::<_, rpc::ClientError>((c, range))
            })
            .await;
            (id, addr, r)
        });
    }
    let mut answers: Vec<(NodeId, Vec<rpc::OrderedCheckpoint>)> = Vec::new();
    for (id, addr, r) in futures::future::join_all(asks).await {
        match r {
            Ok(Ok((c, range))) => {
                clients.insert(id, (addr, c));
                answers.push((id, range.checkpoints));
            }
            Ok(Err(e)) => {
                clients.remove(&id);
                tracing::debug!(member = %id, error = %e, "standby: GetCheckpoints failed");
            }
            Err(_) => {
                clients.remove(&id);
            }
        }
    }
    agreed_prefix(committee, &answers, from, prev)
}

/// The longest run of checkpoints from `from` on that members with more than a third of
/// `committee`'s stake answered identically, each continuing the chain.
pub(crate) fn agreed_prefix(
    committee: &Committee,
    answers: &[(NodeId, Vec<rpc::OrderedCheckpoint>)],
    from: u64,
    mut prev: Hash32,
) -> Vec<rpc::OrderedCheckpoint> {
    let mut out = Vec::new();
    for i in 0.. {
        let mut votes: BTreeMap<Hash32, (u64, &rpc::OrderedCheckpoint)> = BTreeMap::new();
        let mut voters = std::collections::BTreeSet::new();
        for (id, cps) in answers {
            let Some(c) = cps.get(i) else { continue };
            if !voters.insert(*id) {
                continue;
            }
            let e = votes.entry(c.digest()).or_insert((0, c));
            e.0 = e.0.saturating_add(committee.stake_of(id));
        }
        let Some((_, c)) = votes
            .into_values()
            .find(|(stake, _)| committee.is_validity(*stake))
        else {
            break;
        };
        if c.checkpoint.sequence != from + i as u64 || c.checkpoint.prev_hash != prev {
            break;
        }
        prev = c.checkpoint.hash();
        out.push(c.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::consensus::{BatchDigest, Checkpoint};

    fn committee() -> (Committee, Vec<NodeId>) {
        let keys: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 32]).collect();
        let c = Committee::equal(keys).unwrap();
        let ids = c.authorities().iter().map(|a| a.id).collect();
        (c, ids)
    }

    fn chain(n: u64, fork_at: Option<u64>) -> Vec<rpc::OrderedCheckpoint> {
        let mut prev = Hash32([0; 32]);
        (0..n)
            .map(|seq| {
                let leader = if Some(seq) == fork_at { 99 } else { seq as u8 };
                let c = rpc::OrderedCheckpoint {
                    checkpoint: Checkpoint {
                        sequence: seq,
                        leader_round: 2 * seq,
                        leader: BatchDigest(Hash32([leader; 32])),
                        batches: vec![BatchDigest(Hash32([leader; 32]))],
                        prev_hash: prev,
                    },
                    leader_time_ms: 1_000 + seq,
                    batches: Vec::new(),
                };
                prev = c.checkpoint.hash();
                c
            })
            .collect()
    }

    #[test]
    fn takes_what_more_than_a_third_of_the_stake_answered_alike() {
        let (c, ids) = committee();
        let zero = Hash32([0; 32]);
        // One member alone (a quarter of the stake) is not enough.
        assert!(agreed_prefix(&c, &[(ids[0], chain(5, None))], 0, zero).is_empty());
        // The same member answering twice counts once.
        let twice = [(ids[0], chain(5, None)), (ids[0], chain(5, None))];
        assert!(agreed_prefix(&c, &twice, 0, zero).is_empty());
        // Two of four agree on 3 (the second is behind): the common 3 are taken.
        let got = agreed_prefix(
            &c,
            &[(ids[0], chain(5, None)), (ids[1], chain(3, None))],
            0,
            zero,
        );
        assert_eq!(got, chain(3, None));
        // A lying member that forks at 2 is outvoted where two others agree, and alone
        // stops nothing before the fork.
        let answers = [
            (ids[0], chain(5, Some(2))),
            (ids[1], chain(5, None)),
            (ids[2], chain(5, None)),
        ];
        assert_eq!(agreed_prefix(&c, &answers, 0, zero), chain(5, None));
        // One honest and one forked member only: they agree up to the fork, and beyond
        // it neither side has more than a third of the stake.
        let answers = [(ids[0], chain(5, Some(2))), (ids[1], chain(5, None))];
        assert_eq!(agreed_prefix(&c, &answers, 0, zero), chain(2, None));
        // A range that does not start where asked, or does not continue `prev`, is refused.
        let honest = [(ids[0], chain(5, None)), (ids[1], chain(5, None))];
        assert!(agreed_prefix(&c, &honest, 1, zero).is_empty());
        let after_two = chain(5, None)[1].checkpoint.hash();
        let tail: Vec<_> = chain(5, None)[2..].to_vec();
        let got = agreed_prefix(&c, &[(ids[0], tail.clone()), (ids[1], tail)], 2, after_two);
        assert_eq!(got.len(), 3);
    }
}

//! The committee of representatives: stake per authority, the quorum tests and the leader
//! schedule.
//!
//! With total stake `T`, a set of authorities with stake `s` is
//! - a **quorum** (2f + 1) when `3 × s ≥ 2 × T + 1`, i.e. strictly more than two thirds;
//! - a **validity** set (f + 1) when `3 × s ≥ T + 1`, i.e. strictly more than one third.
//!
//! Exact integer tests (in `u128`, no rounding). Any quorum and any validity set share at
//! least one authority; two quorums share more than one third of the stake, so when less
//! than a third is faulty they share an honest authority. With 4 equal stakes: quorum = 3,
//! validity = 2.

use super::{Round, domain};
use crate::NodeId;

/// Voting weight of an authority.
pub type Stake = u64;

/// Position of an authority in its committee (0-based, in the order given at construction).
pub type AuthorityIndex = usize;

/// One representative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Its node id: BLAKE3 of `public_key`.
    pub id: NodeId,
    /// Its stake (> 0).
    pub stake: Stake,
    /// Its ML-DSA-87 public key (any key the verifier understands).
    pub public_key: Vec<u8>,
}

/// How the leader of each even round is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaderSchedule {
    /// Leader of round `r` is authority `(r / 2) mod n`.
    #[default]
    RoundRobin,
    /// Leader drawn with probability proportional to stake:
    /// `x = u64_le(BLAKE3(domain::LEADER ‖ seed ‖ r)[..8]) mod T`, the authority whose
    /// cumulative stake range contains `x`.
    StakeWeighted {
        /// The epoch's seed (agreed, e.g. the previous epoch's last checkpoint hash).
        seed: [u8; 32],
    },
}

/// The representatives of one epoch with their stakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committee {
    authorities: Vec<Authority>,
    total: Stake,
    schedule: LeaderSchedule,
    epoch: u64,
}

impl Committee {
    /// A committee from `(public key, stake)` pairs; ids are derived from the keys.
    /// `None` if empty, a stake is 0, a key repeats, or the total overflows.
    pub fn new(members: Vec<(Vec<u8>, Stake)>) -> Option<Self> {
        if members.is_empty() {
            return None;
        }
        let mut authorities: Vec<Authority> = Vec::with_capacity(members.len());
        let mut total: Stake = 0;
        for (public_key, stake) in members {
            let id = NodeId::from_public_key(&public_key);
            if stake == 0 || authorities.iter().any(|a| a.id == id) {
                return None;
            }
            total = total.checked_add(stake)?;
            authorities.push(Authority {
                id,
                stake,
                public_key,
            });
        }
        Some(Committee {
            authorities,
            total,
            schedule: LeaderSchedule::RoundRobin,
            epoch: 0,
        })
    }

    /// Equal stake (1 each), the default until DPoS stake is wired in.
    pub fn equal(public_keys: Vec<Vec<u8>>) -> Option<Self> {
        Self::new(public_keys.into_iter().map(|k| (k, 1)).collect())
    }

    /// The same committee with another leader schedule.
    pub fn with_leader_schedule(mut self, schedule: LeaderSchedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// The same committee for another consensus epoch (0 at genesis). Batches carry their
    /// epoch and only verify against the committee of that epoch, so each epoch's consensus
    /// instance ignores the others' messages.
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// The consensus epoch this committee runs.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The members in index order.
    pub fn authorities(&self) -> &[Authority] {
        &self.authorities
    }
    /// Number of members.
    pub fn size(&self) -> usize {
        self.authorities.len()
    }
    /// Total stake.
    pub fn total_stake(&self) -> Stake {
        self.total
    }
    /// Index of a member.
    pub fn index_of(&self, id: &NodeId) -> Option<AuthorityIndex> {
        self.authorities.iter().position(|a| a.id == *id)
    }
    /// A member by id.
    pub fn authority(&self, id: &NodeId) -> Option<&Authority> {
        self.authorities.iter().find(|a| a.id == *id)
    }
    /// Stake of a member (0 for non-members).
    pub fn stake_of(&self, id: &NodeId) -> Stake {
        self.authority(id).map_or(0, |a| a.stake)
    }
    /// `3 × stake ≥ 2 × total + 1`: more than two thirds (2f + 1).
    pub fn is_quorum(&self, stake: Stake) -> bool {
        3 * u128::from(stake) > 2 * u128::from(self.total)
    }
    /// `3 × stake ≥ total + 1`: more than one third (f + 1), so at least one honest member.
    pub fn is_validity(&self, stake: Stake) -> bool {
        3 * u128::from(stake) > u128::from(self.total)
    }
    /// The leader schedule.
    pub fn leader_schedule(&self) -> LeaderSchedule {
        self.schedule
    }
    /// Whether `round` has a leader (even rounds do).
    pub fn is_leader_round(round: Round) -> bool {
        round.is_multiple_of(2)
    }
    /// The leader of `round` (defined for every round; only even rounds use it).
    pub fn leader(&self, round: Round) -> NodeId {
        let n = self.authorities.len() as u64;
        let index = match self.schedule {
            LeaderSchedule::RoundRobin => ((round / 2) % n) as usize,
            LeaderSchedule::StakeWeighted { seed } => {
                let mut h = blake3::Hasher::new();
                h.update(domain::LEADER);
                h.update(&seed);
                h.update(&round.to_le_bytes());
                let digest = h.finalize();
                let mut first = [0u8; 8];
                first.copy_from_slice(&digest.as_bytes()[..8]);
                let mut x = u64::from_le_bytes(first) % self.total;
                let mut chosen = 0;
                for (i, a) in self.authorities.iter().enumerate() {
                    if x < a.stake {
                        chosen = i;
                        break;
                    }
                    x -= a.stake;
                }
                chosen
            }
        };
        self.authorities[index].id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committee(stakes: &[Stake]) -> Committee {
        Committee::new(
            stakes
                .iter()
                .enumerate()
                .map(|(i, s)| (vec![i as u8; 8], *s))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn thresholds_equal_stake() {
        // (n, quorum, validity)
        for (n, q, v) in [
            (1, 1, 1),
            (3, 3, 2),
            (4, 3, 2),
            (5, 4, 2),
            (7, 5, 3),
            (10, 7, 4),
        ] {
            let c = committee(&vec![1; n]);
            assert!(c.is_quorum(q) && !c.is_quorum(q - 1), "n={n}");
            assert!(c.is_validity(v) && !c.is_validity(v - 1), "n={n}");
        }
    }

    #[test]
    fn thresholds_weighted_and_huge() {
        let c = committee(&[5, 1, 1, 2]); // total 9: quorum > 6, validity > 3
        assert!(c.is_quorum(7) && !c.is_quorum(6));
        assert!(c.is_validity(4) && !c.is_validity(3));
        let c = committee(&[u64::MAX / 2, u64::MAX / 2]);
        assert!(!c.is_quorum(u64::MAX / 2));
        assert!(c.is_quorum(u64::MAX - 1));
    }

    #[test]
    fn rejects_bad_committees() {
        assert!(Committee::new(vec![]).is_none());
        assert!(Committee::new(vec![(vec![1], 0)]).is_none());
        assert!(Committee::new(vec![(vec![1], 1), (vec![1], 1)]).is_none());
        assert!(Committee::new(vec![(vec![1], u64::MAX), (vec![2], 1)]).is_none());
    }

    #[test]
    fn leaders() {
        let c = committee(&[1, 1, 1, 1]);
        let ids: Vec<_> = c.authorities().iter().map(|a| a.id).collect();
        assert_eq!(c.leader(0), ids[0]);
        assert_eq!(c.leader(2), ids[1]);
        assert_eq!(c.leader(8), ids[0]);
        // Stake-weighted: deterministic, and a member with 0.97 of the stake leads most rounds.
        let c = committee(&[97, 1, 1, 1])
            .with_leader_schedule(LeaderSchedule::StakeWeighted { seed: [7; 32] });
        let big = c.authorities()[0].id;
        let wins = (0..200).step_by(2).filter(|r| c.leader(*r) == big).count();
        assert!(wins > 85, "{wins}");
        assert_eq!(c.leader(10), c.clone().leader(10));
    }
}

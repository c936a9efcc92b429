//! Representative election: the top N candidates by score, with a total, deterministic
//! order so every node elects the same representatives from the same state.
//!
//! Order: higher [`Score`] first; equal scores → more stake first; equal stake → smaller
//! account id first. Account ids are unique, so the order is total and the result does not
//! depend on the order candidates are listed in.

use crate::Score;
use dag_core::AccountId;
use std::cmp::Ordering;

/// A node standing for election.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The candidate's account (= its node id bytes).
    pub account: AccountId,
    /// Its election score.
    pub score: Score,
    /// Total stake bonded to it (self-bond plus delegations), base units.
    pub stake: u64,
}

/// The ranking order: `Less` means `a` ranks before (better than) `b`.
pub fn rank_order(a: &Candidate, b: &Candidate) -> Ordering {
    b.score
        .cmp(&a.score)
        .then(b.stake.cmp(&a.stake))
        .then(a.account.cmp(&b.account))
}

/// The best `seats` candidates, best first. Runs in O(n + seats · log seats).
pub fn elect(candidates: &[Candidate], seats: usize) -> Vec<Candidate> {
    let mut v = candidates.to_vec();
    if seats == 0 {
        return Vec::new();
    }
    if v.len() > seats {
        v.select_nth_unstable_by(seats - 1, rank_order);
        v.truncate(seats);
    }
    v.sort_unstable_by(rank_order);
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn c(id: u8, score: u128, stake: u64) -> Candidate {
        Candidate {
            account: AccountId::from_bytes([id; 32]),
            score: Score(score),
            stake,
        }
    }

    fn ids(v: &[Candidate]) -> Vec<u8> {
        v.iter().map(|c| c.account.as_bytes()[0]).collect()
    }

    #[test]
    fn top_three_by_score() {
        let cands = [
            c(1, 10, 0),
            c(2, 40, 0),
            c(3, 30, 0),
            c(4, 20, 0),
            c(5, 50, 0),
        ];
        assert_eq!(ids(&elect(&cands, 3)), [5, 2, 3]);
    }

    #[test]
    fn ties_break_by_stake_then_id() {
        let cands = [c(9, 10, 5), c(3, 10, 7), c(2, 10, 5), c(1, 9, 100)];
        assert_eq!(ids(&elect(&cands, 3)), [3, 2, 9]);
        assert_eq!(ids(&elect(&cands, 10)), [3, 2, 9, 1]);
        assert!(elect(&cands, 0).is_empty());
        assert!(elect(&[], 3).is_empty());
    }

    #[test]
    fn input_order_does_not_matter() {
        let mut cands: Vec<Candidate> = (0..50u8)
            .map(|i| c(i, u128::from(i % 7), u64::from(i % 3)))
            .collect();
        let a = elect(&cands, 3);
        cands.reverse();
        assert_eq!(elect(&cands, 3), a);
        cands.rotate_left(17);
        assert_eq!(elect(&cands, 3), a);
    }
}

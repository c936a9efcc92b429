//! Holder choice by weighted rendezvous hashing (the logarithmic method: each node's value
//! for a key is `weight / −ln(u)`, `u` uniform from hashing key and node id; the highest
//! values win), with distinct nodes and distinct failure domains first.
//!
//! Why it is stable: a node's value for a key depends only on the key, that node's id and
//! that node's own score, so removing a node changes only the keys it held, and adding one
//! takes only the keys where it now ranks high — about 1/n of the assignments.

use crate::score::{Candidate, GeoPoint, PriorityConfig, Profile, Score};
use crate::{HolderSelector, Result, SelectRequest};
use dag_core::NodeId;
use std::collections::HashMap;

/// One chosen holder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holder {
    /// The node.
    pub node_id: NodeId,
    /// Its position in the candidate slice.
    pub index: usize,
    /// Its score under the request's profile.
    pub score: Score,
    /// True when its failure domain (city, zone) was already used by an earlier holder
    /// (only when there were not enough distinct domains).
    pub domain_reused: bool,
}

/// The holders of one key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selection {
    /// Distinct nodes, best first.
    pub holders: Vec<Holder>,
    /// Number of distinct failure domains among the holders.
    pub distinct_domains: usize,
    /// Holders asked for but not available (fewer distinct candidates than `count`).
    pub shortfall: usize,
}

impl Selection {
    /// The holders' node ids, best first.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.holders.iter().map(|h| h.node_id).collect()
    }
}

/// A 64-bit hash of (key, node id), uniform for uniform inputs (both are BLAKE3 outputs in
/// practice). Fixed and portable: every node computes the same value.
pub fn rendezvous_hash(key: &[u8; 32], node: &NodeId) -> u64 {
    let n = node.as_bytes();
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for i in 0..4 {
        let k = u64::from_le_bytes(word(key, i));
        let v = u64::from_le_bytes(word(n, i));
        h = mix(h ^ k);
        h = mix(h ^ v.rotate_left(23));
    }
    h
}

fn word(b: &[u8; 32], i: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i * 8..i * 8 + 8]);
    w
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The default [`HolderSelector`]: weighted rendezvous hashing over the scores of a
/// [`PriorityConfig`], spreading over failure domains.
#[derive(Debug, Clone, Default)]
pub struct WeightedRendezvous {
    config: PriorityConfig,
}

impl WeightedRendezvous {
    /// A selector with a validated configuration.
    pub fn new(config: PriorityConfig) -> Result<Self> {
        config.validate()?;
        Ok(WeightedRendezvous { config })
    }

    /// The configuration.
    pub fn config(&self) -> &PriorityConfig {
        &self.config
    }
}

/// Scores, weights and failure domains of a candidate list for one origin, time and profile,
/// computed once and reused for many keys (scores do not depend on the key).
#[derive(Debug, Clone)]
pub struct Prepared {
    node_ids: Vec<NodeId>,
    weights: Vec<f64>,
    scores: Vec<Score>,
    /// Interned (city, zone) per candidate.
    domains: Vec<u32>,
}

impl Prepared {
    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.node_ids.len()
    }

    /// True when there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.node_ids.is_empty()
    }

    /// The score of candidate `index`.
    pub fn score(&self, index: usize) -> Option<Score> {
        self.scores.get(index).copied()
    }

    /// Up to `count` distinct holders for `key`, best first, new failure domains first.
    pub fn select(&self, key: &[u8; 32], count: usize) -> Selection {
        let n = self.node_ids.len();
        let mut ranked: Vec<(f64, u32)> = (0..n)
            .map(|i| {
                let h = rendezvous_hash(key, &self.node_ids[i]);
                // u in (0, 1): the top 53 bits, offset by half a step.
                let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                (self.weights[i] / -u.ln(), i as u32)
            })
            .collect();
        let order = |a: &(f64, u32), b: &(f64, u32)| {
            b.0.total_cmp(&a.0)
                .then_with(|| self.node_ids[a.1 as usize].cmp(&self.node_ids[b.1 as usize]))
        };
        // Usually the best few hold enough distinct domains: rank only those, and rank the
        // rest only when they do not. The result is the same as ranking everything.
        let head = n.min(count.saturating_mul(4).max(16));
        if head < n && head > 0 {
            ranked.select_nth_unstable_by(head - 1, order);
            ranked[..head].sort_unstable_by(order);
            let sel = self.greedy(&ranked[..head], count);
            if sel.distinct_domains == count {
                return sel;
            }
            ranked[head..].sort_unstable_by(order);
        } else {
            ranked.sort_unstable_by(order);
        }
        self.greedy(&ranked, count)
    }

    fn greedy(&self, ranked: &[(f64, u32)], count: usize) -> Selection {
        let mut sel = Selection::default();
        let mut used_domains: Vec<u32> = Vec::with_capacity(count);
        // Pass 1: a new node in a new failure domain.
        for &(_, i) in ranked {
            if sel.holders.len() == count {
                break;
            }
            let i = i as usize;
            if used_domains.contains(&self.domains[i]) || self.chosen(&sel, i) {
                continue;
            }
            used_domains.push(self.domains[i]);
            sel.holders.push(self.holder(i, false));
        }
        sel.distinct_domains = sel.holders.len();
        // Pass 2: not enough domains; any node not chosen yet, in rank order.
        for &(_, i) in ranked {
            if sel.holders.len() == count {
                break;
            }
            let i = i as usize;
            if self.chosen(&sel, i) {
                continue;
            }
            sel.holders.push(self.holder(i, true));
        }
        sel.shortfall = count - sel.holders.len();
        sel
    }

    fn chosen(&self, sel: &Selection, i: usize) -> bool {
        sel.holders.iter().any(|h| h.node_id == self.node_ids[i])
    }

    fn holder(&self, i: usize, domain_reused: bool) -> Holder {
        Holder {
            node_id: self.node_ids[i],
            index: i,
            score: self.scores[i],
            domain_reused,
        }
    }
}

impl WeightedRendezvous {
    /// Scores every candidate once for `origin`, `now_ms` and `profile`; then
    /// [`Prepared::select`] per key costs only a hash and a logarithm per candidate.
    pub fn prepare(
        &self,
        origin: GeoPoint,
        now_ms: u64,
        profile: Profile,
        candidates: &[Candidate<'_>],
    ) -> Prepared {
        let mut interned: HashMap<(&str, &str), u32> = HashMap::new();
        let mut p = Prepared {
            node_ids: Vec::with_capacity(candidates.len()),
            weights: Vec::with_capacity(candidates.len()),
            scores: Vec::with_capacity(candidates.len()),
            domains: Vec::with_capacity(candidates.len()),
        };
        for c in candidates {
            let score = self.config.score(origin, c, now_ms, profile);
            let next = interned.len() as u32;
            let d = *interned
                .entry((c.info.city_id.as_str(), c.info.zone.as_str()))
                .or_insert(next);
            p.node_ids.push(c.info.node_id);
            p.weights
                .push(self.config.weight(score) * c.effective_multiplier());
            p.scores.push(score);
            p.domains.push(d);
        }
        p
    }
}

impl HolderSelector for WeightedRendezvous {
    fn select(&self, req: &SelectRequest, candidates: &[Candidate<'_>]) -> Selection {
        self.prepare(req.origin, req.now_ms, req.profile, candidates)
            .select(&req.key, req.count)
    }
}

fn same_domain(a: &Candidate<'_>, b: &Candidate<'_>) -> bool {
    a.info.city_id == b.info.city_id && a.info.zone == b.info.zone
}

/// The test double: the first `count` distinct candidates in the order given, scored with the
/// default configuration.
#[derive(Debug, Clone, Default)]
pub struct FirstN;

impl HolderSelector for FirstN {
    fn select(&self, req: &SelectRequest, candidates: &[Candidate<'_>]) -> Selection {
        let cfg = PriorityConfig::default();
        let mut sel = Selection::default();
        for (index, c) in candidates.iter().enumerate() {
            if sel.holders.len() == req.count {
                break;
            }
            if sel.holders.iter().any(|h| h.node_id == c.info.node_id) {
                continue;
            }
            let reused = sel
                .holders
                .iter()
                .any(|h| same_domain(&candidates[h.index], c));
            sel.holders.push(Holder {
                node_id: c.info.node_id,
                index,
                score: cfg.score(req.origin, c, req.now_ms, req.profile),
                domain_reused: reused,
            });
        }
        sel.distinct_domains = sel.holders.iter().filter(|h| !h.domain_reused).count();
        sel.shortfall = req.count - sel.holders.len();
        sel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_fixed() {
        // Pinned: changing the hash would move every assignment in a running network.
        let h = rendezvous_hash(&[7; 32], &NodeId::from_bytes([9; 32]));
        assert_eq!(h, 0x7ca2_a1ac_03ac_c0d1);
        assert_ne!(h, rendezvous_hash(&[7; 32], &NodeId::from_bytes([8; 32])));
        assert_ne!(h, rendezvous_hash(&[6; 32], &NodeId::from_bytes([9; 32])));
    }

    #[test]
    fn hash_bits_are_balanced() {
        let mut ones = [0u32; 64];
        for i in 0..4096u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            let h = rendezvous_hash(&k, &NodeId::from_bytes([1; 32]));
            for (b, o) in ones.iter_mut().enumerate() {
                *o += ((h >> b) & 1) as u32;
            }
        }
        assert!(ones.iter().all(|&o| (1800..2300).contains(&o)), "{ones:?}");
    }
}

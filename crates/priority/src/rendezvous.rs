//! Holder choice by weighted rendezvous hashing (the logarithmic method: each node's value
//! for a key is `weight / −ln(u)`, `u` uniform from hashing key and node id; the highest
//! values win), with distinct nodes and distinct failure domains first.
//!
//! Why it is stable: a node's value for a key depends only on the key, that node's id and
//! that node's own score, so removing a node changes only the keys it held, and adding one
//! takes only the keys where it now ranks high — about 1/n of the assignments.

use crate::score::{Candidate, PriorityConfig, Score};
use crate::{HolderSelector, Result, SelectRequest};
use dag_core::NodeId;

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

struct Ranked {
    value: f64,
    index: usize,
    score: Score,
}

fn same_domain(a: &Candidate<'_>, b: &Candidate<'_>) -> bool {
    a.info.city_id == b.info.city_id && a.info.zone == b.info.zone
}

impl HolderSelector for WeightedRendezvous {
    fn select(&self, req: &SelectRequest, candidates: &[Candidate<'_>]) -> Selection {
        let mut ranked: Vec<Ranked> = candidates
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let score = self.config.score(req.origin, c, req.now_ms, req.profile);
                let weight = self.config.weight(score);
                let h = rendezvous_hash(&req.key, &c.info.node_id);
                // u in (0, 1): the top 53 bits, offset by half a step.
                let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                Ranked {
                    value: weight / -u.ln(),
                    index,
                    score,
                }
            })
            .collect();
        ranked.sort_unstable_by(|a, b| {
            b.value.total_cmp(&a.value).then_with(|| {
                candidates[a.index]
                    .info
                    .node_id
                    .cmp(&candidates[b.index].info.node_id)
            })
        });

        let mut sel = Selection::default();
        let want = req.count;
        let chosen_has = |sel: &Selection, c: &Candidate<'_>| {
            sel.holders.iter().any(|h| h.node_id == c.info.node_id)
        };
        // Pass 1: a new node in a new failure domain.
        for r in &ranked {
            if sel.holders.len() == want {
                break;
            }
            let c = &candidates[r.index];
            if chosen_has(&sel, c)
                || sel
                    .holders
                    .iter()
                    .any(|h| same_domain(&candidates[h.index], c))
            {
                continue;
            }
            sel.holders.push(Holder {
                node_id: c.info.node_id,
                index: r.index,
                score: r.score,
                domain_reused: false,
            });
        }
        sel.distinct_domains = sel.holders.len();
        // Pass 2: not enough domains; any node not chosen yet, in rank order.
        for r in &ranked {
            if sel.holders.len() == want {
                break;
            }
            let c = &candidates[r.index];
            if chosen_has(&sel, c) {
                continue;
            }
            sel.holders.push(Holder {
                node_id: c.info.node_id,
                index: r.index,
                score: r.score,
                domain_reused: true,
            });
        }
        sel.shortfall = want - sel.holders.len();
        sel
    }
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

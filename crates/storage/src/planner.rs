//! Re-replication planning: when a holder leaves, which shards are lost, which k shards to
//! rebuild them from, and which live nodes take them. A pure function of its inputs.
//!
//! Placement rules, in order: never the departed node; never a node already holding a shard
//! of the stripe, unless every live node already holds one (fewer than n nodes exist), and
//! then the plan says so ([`Placement::colocated`]); prefer a failure domain not yet used by
//! the stripe; among equals, the lowest rendezvous hash of (stripe, index, node), so repairs
//! of many stripes spread over the nodes deterministically.

use crate::manifest::StripeManifest;
use crate::{Error, Result};
use dag_core::{NodeId, NodeInfo, StripeId};
use std::collections::{BTreeMap, BTreeSet};

/// A node that is online, with its failure domain (zone, rack, provider; empty = unknown,
/// which never counts as shared with another node).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LiveNode {
    /// The node.
    pub id: NodeId,
    /// Its failure domain.
    pub failure_domain: String,
}

impl From<&NodeInfo> for LiveNode {
    /// Uses the node's `zone` as its failure domain.
    fn from(n: &NodeInfo) -> Self {
        LiveNode {
            id: n.node_id,
            failure_domain: n.zone.clone(),
        }
    }
}

/// Where one lost shard goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The shard index to re-create.
    pub index: u16,
    /// The node that will hold it.
    pub target: NodeId,
    /// True if `target` already holds another shard of the stripe (fewer than n live nodes).
    pub colocated: bool,
}

/// What to do for one stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairPlan {
    /// The stripe.
    pub stripe_id: StripeId,
    /// Indexes without a live holder (held by the departed node, by another node that is
    /// not live, or by nobody).
    pub lost: Vec<u16>,
    /// k (index, holder) pairs to fetch and rebuild from; data shards first.
    pub sources: Vec<(u16, NodeId)>,
    /// Other live (index, holder) pairs, to try if a source fails.
    pub spare_sources: Vec<(u16, NodeId)>,
    /// One placement per lost index.
    pub placements: Vec<Placement>,
}

impl RepairPlan {
    /// True if nothing is lost.
    pub fn is_empty(&self) -> bool {
        self.lost.is_empty()
    }
    /// True if some placement puts two shards of the stripe on one node.
    pub fn colocated(&self) -> bool {
        self.placements.iter().any(|p| p.colocated)
    }
}

fn rendezvous(stripe: &StripeId, index: u16, node: &NodeId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(stripe.as_bytes());
    h.update(&index.to_le_bytes());
    h.update(node.as_bytes());
    *h.finalize().as_bytes()
}

/// Plans the re-replication of `manifest`'s stripe after `departed` left, given the live
/// nodes (`departed` among them is ignored). An empty plan if nothing is lost;
/// [`Error::Unrecoverable`] if fewer than k shards have live holders; [`Error::NoCandidate`]
/// if no live node is left to take a shard.
pub fn plan_rereplication(
    manifest: &StripeManifest,
    live: &[LiveNode],
    departed: &NodeId,
) -> Result<RepairPlan> {
    let stripe_id = manifest.stripe_id();
    let k = usize::from(manifest.layout.k);
    let domain_of: BTreeMap<NodeId, &str> = live
        .iter()
        .filter(|n| n.id != *departed)
        .map(|n| (n.id, n.failure_domain.as_str()))
        .collect();

    let mut lost = Vec::new();
    let mut surviving = Vec::new();
    for (i, holder) in manifest.holders.iter().enumerate() {
        let Ok(i) = u16::try_from(i) else { continue };
        match holder {
            Some(h) if domain_of.contains_key(h) => surviving.push((i, *h)),
            _ => lost.push(i),
        }
    }
    if surviving.len() < k {
        return Err(Error::Unrecoverable {
            stripe_id,
            available: surviving.len(),
            needed: k,
        });
    }
    let spare_sources = surviving.split_off(k);
    let sources = surviving;
    let mut plan = RepairPlan {
        stripe_id,
        lost: lost.clone(),
        sources,
        spare_sources,
        placements: Vec::new(),
    };
    if lost.is_empty() {
        return Ok(plan);
    }

    // Shards per node and domains in use, counting placements as they are made.
    let mut held: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut domains: BTreeSet<&str> = BTreeSet::new();
    for (_, h) in plan.sources.iter().chain(&plan.spare_sources) {
        *held.entry(*h).or_default() += 1;
        if let Some(d) = domain_of.get(h).filter(|d| !d.is_empty()) {
            domains.insert(d);
        }
    }
    for index in lost {
        let best = domain_of
            .iter()
            .map(|(id, d)| {
                let shards_here = held.get(id).copied().unwrap_or(0);
                let shared_domain = !d.is_empty() && domains.contains(d);
                (
                    (
                        shards_here,
                        shared_domain,
                        rendezvous(&stripe_id, index, id),
                    ),
                    *id,
                    *d,
                )
            })
            .min_by(|a, b| a.0.cmp(&b.0));
        let Some(((shards_here, _, _), target, domain)) = best else {
            return Err(Error::NoCandidate { stripe_id, index });
        };
        *held.entry(target).or_default() += 1;
        if !domain.is_empty() {
            domains.insert(domain);
        }
        plan.placements.push(Placement {
            index,
            target,
            colocated: shards_here > 0,
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{ErasureConfig, StripeLayout};

    fn node(i: u8) -> NodeId {
        NodeId::from_bytes([i; 32])
    }
    fn live(ids: &[(u8, &str)]) -> Vec<LiveNode> {
        ids.iter()
            .map(|(i, d)| LiveNode {
                id: node(*i),
                failure_domain: d.to_string(),
            })
            .collect()
    }
    fn manifest(holders: &[u8]) -> StripeManifest {
        let shards = ErasureConfig::default().encode(b"plan me").unwrap();
        let mut m = StripeManifest::unplaced(StripeLayout::from_shards(&shards).unwrap());
        for (i, h) in holders.iter().enumerate() {
            m.set_holder(i as u16, node(*h)).unwrap();
        }
        m
    }

    #[test]
    fn replaces_with_a_fresh_node_in_a_fresh_domain() {
        let m = manifest(&[1, 2, 3, 4, 5, 6]);
        let nodes = live(&[
            (1, "a"),
            (2, "b"),
            (3, "c"),
            (4, "a"),
            (5, "b"),
            (6, "c"),
            (7, "a"),
            (8, "d"),
        ]);
        let plan = plan_rereplication(&m, &nodes, &node(3)).unwrap();
        assert_eq!(plan.lost, vec![2]);
        assert_eq!(
            plan.placements,
            vec![Placement {
                index: 2,
                target: node(8),
                colocated: false
            }]
        );
        assert_eq!(plan.sources.len(), 4);
        assert!(plan.sources.iter().all(|(_, h)| *h != node(3)));
        assert_eq!(plan.sources[0].0, 0);
        assert_eq!(plan.spare_sources.len(), 1);
    }

    #[test]
    fn colocates_only_when_no_fresh_node_exists() {
        let m = manifest(&[1, 2, 3, 4, 5, 6]);
        let nodes = live(&[(1, ""), (2, ""), (3, ""), (4, ""), (5, ""), (6, "")]);
        let plan = plan_rereplication(&m, &nodes, &node(6)).unwrap();
        assert!(plan.colocated());
        assert_ne!(plan.placements[0].target, node(6));
        // one fresh node: it is chosen, no colocation
        let nodes = live(&[
            (1, ""),
            (2, ""),
            (3, ""),
            (4, ""),
            (5, ""),
            (6, ""),
            (9, ""),
        ]);
        let plan = plan_rereplication(&m, &nodes, &node(6)).unwrap();
        assert_eq!(plan.placements[0].target, node(9));
        assert!(!plan.colocated());
    }

    #[test]
    fn two_lost_go_to_two_different_nodes() {
        let m = manifest(&[1, 2, 3, 4, 5, 6]);
        // node 5 already vanished from the live list; node 6 departs now
        let nodes = live(&[
            (1, ""),
            (2, ""),
            (3, ""),
            (4, ""),
            (6, ""),
            (7, ""),
            (8, ""),
        ]);
        let plan = plan_rereplication(&m, &nodes, &node(6)).unwrap();
        assert_eq!(plan.lost, vec![4, 5]);
        let targets: BTreeSet<_> = plan.placements.iter().map(|p| p.target).collect();
        assert_eq!(targets, [node(7), node(8)].into_iter().collect());
    }

    #[test]
    fn unrecoverable_and_nothing_to_do() {
        let m = manifest(&[1, 2, 3, 4, 5, 6]);
        let nodes = live(&[(1, ""), (2, ""), (3, ""), (9, "")]);
        assert!(matches!(
            plan_rereplication(&m, &nodes, &node(4)),
            Err(Error::Unrecoverable {
                available: 3,
                needed: 4,
                ..
            })
        ));
        let nodes = live(&[(1, ""), (2, ""), (3, ""), (4, ""), (5, ""), (6, "")]);
        assert!(
            plan_rereplication(&m, &nodes, &node(42))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn deterministic() {
        let m = manifest(&[1, 2, 3, 4, 5, 6]);
        let nodes = live(&[
            (1, ""),
            (2, ""),
            (3, ""),
            (4, ""),
            (5, ""),
            (6, ""),
            (7, ""),
            (8, ""),
            (9, ""),
        ]);
        let a = plan_rereplication(&m, &nodes, &node(2)).unwrap();
        let mut rev = nodes.clone();
        rev.reverse();
        assert_eq!(a, plan_rereplication(&m, &rev, &node(2)).unwrap());
    }
}

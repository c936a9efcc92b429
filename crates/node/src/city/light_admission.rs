//! Which light nodes a city lets hold its shards. Logging in to presence is open to any key
//! (the login is signed, so a node can only speak for itself, but anyone can make a key);
//! placement only ranks light nodes the city admits: by an operator allow-list
//! (`[admission] allow = ["<node id hex>", …]`) or by the stake bonded to the node's
//! account in the city's stake state (`[admission] min_stake = N`; a node's account id is
//! its node id, both BLAKE3 of its key). Either criterion admits; with neither set every
//! light node of the city is admitted (the open default of a local network).

use super::pipeline::HolderDirectory;
use super::stake::StakeStore;
use dag_core::{AccountId, NodeId, NodeInfo, StripeId};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

/// The city's admission rule for light nodes (`[admission]` in the city TOML).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Light nodes the operator admits, whatever their stake (hex node ids).
    pub allow: Option<Vec<NodeId>>,
    /// Light nodes with at least this much stake bonded to their account are admitted
    /// (needs the city's stake state: a representative, i.e. a genesis file).
    pub min_stake: Option<u64>,
}

impl AdmissionConfig {
    /// True if no rule is set (every light node of the city is admitted).
    pub fn is_open(&self) -> bool {
        self.allow.is_none() && self.min_stake.is_none()
    }
}

/// A [`HolderDirectory`] that lists only the admitted light nodes of an inner directory.
/// The stake state is attached once the representative has opened it
/// ([`AdmittedDirectory::stake_cell`]); until then only the allow-list admits.
pub(crate) struct AdmittedDirectory<D> {
    inner: D,
    allow: Option<BTreeSet<NodeId>>,
    min_stake: Option<u64>,
    stake: Arc<OnceLock<Arc<StakeStore>>>,
}

impl<D> std::fmt::Debug for AdmittedDirectory<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmittedDirectory")
            .field("allow", &self.allow.as_ref().map(BTreeSet::len))
            .field("min_stake", &self.min_stake)
            .field("stake_attached", &self.stake.get().is_some())
            .finish_non_exhaustive()
    }
}

impl<D: HolderDirectory> AdmittedDirectory<D> {
    /// `inner` filtered by `config`.
    pub(crate) fn new(inner: D, config: &AdmissionConfig) -> Self {
        AdmittedDirectory {
            inner,
            allow: config.allow.as_ref().map(|v| v.iter().copied().collect()),
            min_stake: config.min_stake,
            stake: Arc::new(OnceLock::new()),
        }
    }

    /// Where the city's stake state is attached once it is open.
    pub(crate) fn stake_cell(&self) -> Arc<OnceLock<Arc<StakeStore>>> {
        self.stake.clone()
    }

    /// Whether `node` may hold shards.
    pub(crate) fn admits(&self, node: &NodeId) -> bool {
        if self.allow.is_none() && self.min_stake.is_none() {
            return true;
        }
        if self.allow.as_ref().is_some_and(|a| a.contains(node)) {
            return true;
        }
        match (self.min_stake, self.stake.get()) {
            (Some(min), Some(stake)) => {
                let account = AccountId::from_bytes(*node.as_bytes());
                // A stake state that cannot be read admits nobody by stake (fail closed).
                stake
                    .read(|s| s.stake_of(&account))
                    .is_ok_and(|have| have >= min)
            }
            _ => false,
        }
    }
}

impl<D: HolderDirectory> HolderDirectory for AdmittedDirectory<D> {
    fn live_lights(&self) -> Vec<NodeInfo> {
        let mut v = self.inner.live_lights();
        let before = v.len();
        v.retain(|n| self.admits(&n.node_id));
        metrics::gauge!("citychain_lights_not_admitted").set((before - v.len()) as f64);
        v
    }

    fn rank(&self, stripe: &StripeId, nodes: Vec<NodeInfo>, urgent: bool) -> Vec<NodeInfo> {
        let nodes = nodes
            .into_iter()
            .filter(|n| self.admits(&n.node_id))
            .collect();
        self.inner.rank(stripe, nodes, urgent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag_core::Role;

    struct Fixed(Vec<NodeInfo>);
    impl HolderDirectory for Fixed {
        fn live_lights(&self) -> Vec<NodeInfo> {
            self.0.clone()
        }
    }

    fn light(n: u8) -> NodeInfo {
        NodeInfo {
            node_id: NodeId::from_bytes([n; 32]),
            role: Role::Light,
            grpc_addr: format!("127.0.0.1:{}", 9000 + u16::from(n)),
            city_id: "JP-13".into(),
            zone: String::new(),
            lat: 35.0,
            lon: 139.0,
            free_capacity: 1 << 30,
            load: 0.0,
            version: "t".into(),
            session_start_ms: 0,
        }
    }

    fn ids(v: &[NodeInfo]) -> Vec<u8> {
        v.iter().map(|n| n.node_id.as_bytes()[0]).collect()
    }

    #[test]
    fn only_admitted_lights_are_listed_and_ranked() {
        let all: Vec<NodeInfo> = (1..=4).map(light).collect();
        let open = AdmittedDirectory::new(Fixed(all.clone()), &AdmissionConfig::default());
        assert_eq!(ids(&open.live_lights()), vec![1, 2, 3, 4]);

        let listed = AdmittedDirectory::new(
            Fixed(all.clone()),
            &AdmissionConfig {
                allow: Some(vec![
                    NodeId::from_bytes([2; 32]),
                    NodeId::from_bytes([4; 32]),
                ]),
                min_stake: None,
            },
        );
        assert_eq!(ids(&listed.live_lights()), vec![2, 4]);
        let stripe = StripeId::from_bytes([9; 32]);
        let mut ranked = ids(&listed.rank(&stripe, all.clone(), false));
        ranked.sort_unstable();
        assert_eq!(ranked, vec![2, 4]);

        // A stake rule without a stake state admits nobody by stake (fail closed).
        let staked = AdmittedDirectory::new(
            Fixed(all),
            &AdmissionConfig {
                allow: None,
                min_stake: Some(1),
            },
        );
        assert!(staked.live_lights().is_empty());
    }
}

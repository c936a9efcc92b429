//! A member's identity in SWIM: the node id (the cluster-wide address foca keys members
//! by), where it listens, and a generation that orders restarts of the same node.

use dag_core::NodeId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// One member as foca sees it. Two identities with the same `node_id` are the same node;
/// the higher `generation` (its start time in ms, bumped on rejoin) wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The node (BLAKE3 of its ML-DSA-87 public key).
    pub node_id: NodeId,
    /// Its gossip UDP address.
    pub addr: SocketAddr,
    /// Start time in ms (later restarts win); bumped when the node rejoins after being
    /// declared down.
    pub generation: u64,
}

impl foca::Identity for Member {
    type Addr = NodeId;

    /// A node declared down (wrongly: it is still running) comes back at once with a
    /// higher generation instead of staying out of the cluster.
    fn renew(&self) -> Option<Self> {
        Some(Member {
            generation: self.generation.wrapping_add(1),
            ..*self
        })
    }

    fn addr(&self) -> NodeId {
        self.node_id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn later_generation_wins_and_renew_bumps_it() {
        let a = Member {
            node_id: NodeId::from_bytes([1; 32]),
            addr: "127.0.0.1:1".parse().unwrap(),
            generation: 5,
        };
        let b = a.renew().unwrap();
        assert_eq!(b.generation, 6);
        assert_eq!(a.addr(), b.addr());
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
    }
}

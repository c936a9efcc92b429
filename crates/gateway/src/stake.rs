//! The JSON shapes of the stake reads: `GET /v1/accounts/{id}/stake` ([`StakeAnswer`]) and
//! `GET /v1/committee` ([`CommitteeAnswer`]), field for field gRPC's `GetStake` and
//! `GetCommittee` (proto/citychain/v1/city.proto), ids and roots as lower-case hex, amounts
//! in base units.

use rpc::{CommitteeInfo, CommitteeMemberInfo, StakeInfo, StakeNodeKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One bonded lot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JsonStakeLot {
    /// Base units.
    pub amount: u64,
    /// May be unbonded from this time on (ms since the Unix epoch).
    pub unlock_at_ms: u64,
}

/// What the account bonds to one node (to itself: its self-bond).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JsonDelegation {
    /// The node backed (account id, hex).
    pub validator: String,
    /// Sum of the lots.
    pub amount: u64,
    /// The lots, earliest unlock first.
    pub lots: Vec<JsonStakeLot>,
}

/// One unbonding amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JsonUnbonding {
    /// The node it was bonded to (hex).
    pub validator: String,
    /// Base units.
    pub amount: u64,
    /// Withdrawable from this time on (ms since the Unix epoch).
    pub release_at_ms: u64,
}

/// The account as a registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JsonStakeNode {
    /// `full` (a candidate) or `light`.
    pub kind: String,
    /// Total bonded to it (self-bond plus delegations).
    pub stake: u64,
    /// The monitor's suspicion.
    pub suspicion: u32,
    /// Suspicion below the inactive threshold.
    pub active: bool,
    /// When it registered (ms).
    pub registered_at_ms: u64,
    /// In the current dpos term's representatives.
    pub representative: bool,
}

/// An account's stake as the representative's dpos state holds it (as gRPC `GetStake`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StakeAnswer {
    /// The account id, hex.
    pub account: String,
    /// False when neither the ledger nor dpos knows it (every amount 0).
    pub exists: bool,
    /// Liquid balance (the ledger's).
    pub balance: u64,
    /// Sum of its delegations, self-bond included.
    pub bonded: u64,
    /// Per node backed.
    pub delegations: Vec<JsonDelegation>,
    /// Unbonding amounts.
    pub unbonding: Vec<JsonUnbonding>,
    /// Rewards accrued and not yet claimed (what `ClaimRewards` pays).
    pub rewards: u64,
    /// Its node record, when registered.
    pub node: Option<JsonStakeNode>,
    /// The dpos term of the state read.
    pub term: u64,
    /// Checkpoints dpos applied: the state reflects sequences below this.
    pub dpos_applied_upto: u64,
    /// The dpos state root of the state read (hex).
    pub dpos_state_root: String,
}

impl From<&StakeInfo> for StakeAnswer {
    fn from(s: &StakeInfo) -> Self {
        StakeAnswer {
            account: s.account.to_hex(),
            exists: s.exists,
            balance: s.balance,
            bonded: s.bonded,
            delegations: s
                .delegations
                .iter()
                .map(|d| JsonDelegation {
                    validator: d.validator.to_hex(),
                    amount: d.amount,
                    lots: d
                        .lots
                        .iter()
                        .map(|l| JsonStakeLot {
                            amount: l.amount,
                            unlock_at_ms: l.unlock_at_ms,
                        })
                        .collect(),
                })
                .collect(),
            unbonding: s
                .unbonding
                .iter()
                .map(|u| JsonUnbonding {
                    validator: u.validator.to_hex(),
                    amount: u.amount,
                    release_at_ms: u.release_at_ms,
                })
                .collect(),
            rewards: s.rewards,
            node: s.node.map(|n| JsonStakeNode {
                kind: match n.kind {
                    StakeNodeKind::Full => "full",
                    StakeNodeKind::Light => "light",
                }
                .into(),
                stake: n.stake,
                suspicion: n.suspicion,
                active: n.active,
                registered_at_ms: n.registered_at_ms,
                representative: n.representative,
            }),
            term: s.term,
            dpos_applied_upto: s.dpos_applied_upto,
            dpos_state_root: s.dpos_state_root.to_hex(),
        }
    }
}

/// A committee member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JsonMember {
    /// Node id (hex; equal to its account id).
    pub node_id: String,
    /// Its stake as the consensus committee weighs it.
    pub weight: u64,
    /// Stake bonded to it in the dpos state, base units.
    pub dpos_stake: u64,
    /// Its gRPC address from the genesis file, if it has one.
    pub address: Option<String>,
}

impl From<&CommitteeMemberInfo> for JsonMember {
    fn from(m: &CommitteeMemberInfo) -> Self {
        JsonMember {
            node_id: m.node_id.to_hex(),
            weight: m.weight,
            dpos_stake: m.dpos_stake,
            address: m.address.clone(),
        }
    }
}

/// The dpos term (absent before the first checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JsonTerm {
    /// Term index.
    pub term: u64,
    /// When it started (ms).
    pub started_at_ms: u64,
    /// The first checkpoint at or after this time ends it.
    pub ends_at_ms: u64,
    /// What the next epoch runs as dpos decides it now: the term's representatives when
    /// `next_elected`, else who the term's end would elect from this state; the running
    /// committee when `next_unreachable` is not empty (an elected member has no address).
    pub next: Vec<JsonMember>,
    /// The set is already elected (the dpos term is ahead of the consensus epoch).
    pub next_elected: bool,
    /// Elected node ids (hex) without a genesis address.
    pub next_unreachable: Vec<String>,
    /// The dpos state root (hex).
    pub state_root: String,
    /// Checkpoints dpos applied (next sequence).
    pub applied_upto: u64,
}

/// The committee and epoch as the representative reads them (as gRPC `GetCommittee`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommitteeAnswer {
    /// Consensus epoch of its driver.
    pub epoch: u64,
    /// Sequence of that epoch's first checkpoint.
    pub epoch_first_seq: u64,
    /// Between an epoch's last checkpoint and the next start.
    pub switching: bool,
    /// This node was left out of a committee.
    pub removed: bool,
    /// This node is a standby: it follows the committee and has no driver until elected.
    pub standby: bool,
    /// Checkpoints its driver committed.
    pub committed: u64,
    /// The committee its driver runs, in committee order.
    pub members: Vec<JsonMember>,
    /// The dpos term.
    pub dpos: Option<JsonTerm>,
}

impl From<&CommitteeInfo> for CommitteeAnswer {
    fn from(c: &CommitteeInfo) -> Self {
        CommitteeAnswer {
            epoch: c.epoch,
            epoch_first_seq: c.epoch_first_seq,
            switching: c.switching,
            removed: c.removed,
            standby: c.standby,
            committed: c.committed,
            members: c.members.iter().map(JsonMember::from).collect(),
            dpos: c.dpos.as_ref().map(|d| JsonTerm {
                term: d.term,
                started_at_ms: d.started_at_ms,
                ends_at_ms: d.ends_at_ms,
                next: d.next.iter().map(JsonMember::from).collect(),
                next_elected: d.next_elected,
                next_unreachable: d.next_unreachable.iter().map(|n| n.to_hex()).collect(),
                state_root: d.state_root.to_hex(),
                applied_upto: d.applied_upto,
            }),
        }
    }
}

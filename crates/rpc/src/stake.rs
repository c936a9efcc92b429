//! Stake reads (`GetStake`, `GetCommittee`): an account's stake as a representative's dpos
//! state holds it, and the committee its consensus runs with the next one dpos decides.
//! The types here are what [`crate::CityApi`] answers and [`crate::CityClient`] returns;
//! the conversions to and from protobuf are strict (a malformed answer is a
//! [`ConvertError`]).

use crate::convert::ConvertError;
use crate::pb;
use dag_core::{AccountId, Hash32, NodeId};

/// Why a stake read is refused. Each maps to one gRPC status with a `google.rpc.ErrorInfo`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StakeReadError {
    /// The node keeps no dpos state: it is not a representative → `FAILED_PRECONDITION`,
    /// reason `NOT_A_REPRESENTATIVE`.
    #[error("this node is not a representative and keeps no dpos state")]
    NotRepresentative,
    /// The representative has applied no checkpoint yet (term 0 starts at checkpoint 0) →
    /// `UNAVAILABLE`, reason `DPOS_NOT_STARTED`.
    #[error("no dpos state before the first checkpoint")]
    NotStarted,
    /// A store failed while reading → `UNAVAILABLE`, reason `STORE_UNAVAILABLE`.
    #[error("store unavailable: {0}")]
    Store(String),
}

impl StakeReadError {
    /// The `ErrorInfo` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            StakeReadError::NotRepresentative => "NOT_A_REPRESENTATIVE",
            StakeReadError::NotStarted => "DPOS_NOT_STARTED",
            StakeReadError::Store(_) => "STORE_UNAVAILABLE",
        }
    }

    /// The gRPC code.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            StakeReadError::NotRepresentative => tonic::Code::FailedPrecondition,
            StakeReadError::NotStarted | StakeReadError::Store(_) => tonic::Code::Unavailable,
        }
    }

    /// The status: message `"<REASON>: <detail>"`, details with the `ErrorInfo`.
    pub fn to_status(&self) -> tonic::Status {
        crate::status::typed(self.grpc_code(), self.reason(), self)
    }
}

/// Which kind of node dpos registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StakeNodeKind {
    /// A full (city) node: a candidate for the committee.
    Full,
    /// A light node.
    Light,
}

/// One bonded lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StakeLot {
    /// Base units.
    pub amount: u64,
    /// May be unbonded from this time on (ms since the Unix epoch).
    pub unlock_at_ms: u64,
}

/// What an account bonds to one node (itself: its self-bond).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StakeDelegation {
    /// The node backed.
    pub validator: AccountId,
    /// Sum of the lots, base units.
    pub amount: u64,
    /// The lots, earliest unlock first.
    pub lots: Vec<StakeLot>,
}

/// One unbonding amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StakeUnbonding {
    /// The node it was bonded to.
    pub validator: AccountId,
    /// Base units.
    pub amount: u64,
    /// Withdrawable from this time on (ms since the Unix epoch).
    pub release_at_ms: u64,
}

/// The account as a registered node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StakeNode {
    /// Full or light.
    pub kind: StakeNodeKind,
    /// Total bonded to it (self-bond plus delegations), base units.
    pub stake: u64,
    /// The monitor's suspicion.
    pub suspicion: u32,
    /// Suspicion below the inactive threshold.
    pub active: bool,
    /// When it registered.
    pub registered_at_ms: u64,
    /// In the current dpos term's representatives.
    pub representative: bool,
}

/// An account's stake as a representative read it (`GetStake`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StakeInfo {
    /// The account.
    pub account: AccountId,
    /// False when neither the ledger nor dpos knows it (every other field is then zero).
    pub exists: bool,
    /// Liquid balance (the ledger's).
    pub balance: u64,
    /// Sum of its delegations, self-bond included, base units.
    pub bonded: u64,
    /// Per node backed.
    pub delegations: Vec<StakeDelegation>,
    /// Unbonding amounts.
    pub unbonding: Vec<StakeUnbonding>,
    /// Rewards accrued and not yet claimed (what `ClaimRewards` pays).
    pub rewards: u64,
    /// Its node record, when registered.
    pub node: Option<StakeNode>,
    /// The dpos term of the state read.
    pub term: u64,
    /// Checkpoints dpos applied: the state reflects sequences below this.
    pub dpos_applied_upto: u64,
    /// The dpos state root of the state read.
    pub dpos_state_root: Hash32,
}

/// One committee member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitteeMemberInfo {
    /// Node id (its bytes are its account id).
    pub node_id: NodeId,
    /// Its stake as the consensus committee weighs it.
    pub weight: u64,
    /// Stake bonded to it in the dpos state, base units.
    pub dpos_stake: u64,
    /// Its gRPC address from the genesis file, if it has one.
    pub address: Option<String>,
}

/// The dpos side of a committee read (absent before checkpoint 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DposTermInfo {
    /// Term index.
    pub term: u64,
    /// When it started (ms).
    pub started_at_ms: u64,
    /// The first checkpoint at or after this time ends it.
    pub ends_at_ms: u64,
    /// What the next epoch runs as dpos decides it now: the term's representatives when
    /// dpos already switched and consensus has not (`next_elected`), else the election's
    /// winners as of this state — unless one of them has no genesis address
    /// (`next_unreachable`), in which case the next epoch keeps the running committee and
    /// this lists it.
    pub next: Vec<CommitteeMemberInfo>,
    /// The set is already elected (the dpos term is ahead of the consensus epoch).
    pub next_elected: bool,
    /// Members dpos elects that have no genesis address (non-empty: `next` is the running
    /// committee, kept).
    pub next_unreachable: Vec<NodeId>,
    /// The dpos state root.
    pub state_root: Hash32,
    /// Checkpoints dpos applied (next sequence).
    pub applied_upto: u64,
}

/// The committee and epoch as a representative reads them (`GetCommittee`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitteeInfo {
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
    pub members: Vec<CommitteeMemberInfo>,
    /// The dpos term, when dpos has started.
    pub dpos: Option<DposTermInfo>,
}

fn invalid(field: &'static str, reason: &'static str) -> ConvertError {
    ConvertError::Invalid(dag_core::DecodeError::Invalid { field, reason })
}

fn account(bytes: &[u8], field: &'static str) -> Result<AccountId, ConvertError> {
    AccountId::from_slice(bytes).map_err(|_| invalid(field, "expected exactly 32 bytes"))
}

fn hash(bytes: &[u8], field: &'static str) -> Result<Hash32, ConvertError> {
    <[u8; 32]>::try_from(bytes)
        .map(Hash32)
        .map_err(|_| invalid(field, "expected exactly 32 bytes"))
}

impl From<StakeNodeKind> for pb::StakeNodeKind {
    fn from(k: StakeNodeKind) -> Self {
        match k {
            StakeNodeKind::Full => pb::StakeNodeKind::Full,
            StakeNodeKind::Light => pb::StakeNodeKind::Light,
        }
    }
}

impl From<&StakeInfo> for pb::GetStakeResponse {
    fn from(s: &StakeInfo) -> Self {
        pb::GetStakeResponse {
            account: s.account.as_bytes().to_vec(),
            exists: s.exists,
            balance: s.balance,
            bonded: s.bonded,
            delegations: s
                .delegations
                .iter()
                .map(|d| pb::StakeDelegation {
                    validator: d.validator.as_bytes().to_vec(),
                    amount: d.amount,
                    lots: d
                        .lots
                        .iter()
                        .map(|l| pb::StakeLot {
                            amount: l.amount,
                            unlock_at_ms: l.unlock_at_ms,
                        })
                        .collect(),
                })
                .collect(),
            unbonding: s
                .unbonding
                .iter()
                .map(|u| pb::StakeUnbonding {
                    validator: u.validator.as_bytes().to_vec(),
                    amount: u.amount,
                    release_at_ms: u.release_at_ms,
                })
                .collect(),
            rewards: s.rewards,
            node: s.node.map(|n| pb::StakeNode {
                kind: pb::StakeNodeKind::from(n.kind) as i32,
                stake: n.stake,
                suspicion: n.suspicion,
                active: n.active,
                registered_at_ms: n.registered_at_ms,
                representative: n.representative,
            }),
            term: s.term,
            dpos_applied_upto: s.dpos_applied_upto,
            dpos_state_root: s.dpos_state_root.0.to_vec(),
        }
    }
}

impl TryFrom<pb::GetStakeResponse> for StakeInfo {
    type Error = ConvertError;
    fn try_from(p: pb::GetStakeResponse) -> Result<Self, ConvertError> {
        let delegations = p
            .delegations
            .into_iter()
            .map(|d| {
                Ok(StakeDelegation {
                    validator: account(&d.validator, "delegations.validator")?,
                    amount: d.amount,
                    lots: d
                        .lots
                        .into_iter()
                        .map(|l| StakeLot {
                            amount: l.amount,
                            unlock_at_ms: l.unlock_at_ms,
                        })
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>, ConvertError>>()?;
        let unbonding = p
            .unbonding
            .into_iter()
            .map(|u| {
                Ok(StakeUnbonding {
                    validator: account(&u.validator, "unbonding.validator")?,
                    amount: u.amount,
                    release_at_ms: u.release_at_ms,
                })
            })
            .collect::<Result<Vec<_>, ConvertError>>()?;
        let node = match p.node {
            None => None,
            Some(n) => Some(StakeNode {
                kind: match pb::StakeNodeKind::try_from(n.kind) {
                    Ok(pb::StakeNodeKind::Full) => StakeNodeKind::Full,
                    Ok(pb::StakeNodeKind::Light) => StakeNodeKind::Light,
                    _ => {
                        return Err(invalid("node.kind", "unspecified or unknown node kind"));
                    }
                },
                stake: n.stake,
                suspicion: n.suspicion,
                active: n.active,
                registered_at_ms: n.registered_at_ms,
                representative: n.representative,
            }),
        };
        Ok(StakeInfo {
            account: account(&p.account, "account")?,
            exists: p.exists,
            balance: p.balance,
            bonded: p.bonded,
            delegations,
            unbonding,
            rewards: p.rewards,
            node,
            term: p.term,
            dpos_applied_upto: p.dpos_applied_upto,
            dpos_state_root: hash(&p.dpos_state_root, "dpos_state_root")?,
        })
    }
}

fn member_to_pb(m: &CommitteeMemberInfo) -> pb::CommitteeMember {
    pb::CommitteeMember {
        node_id: m.node_id.as_bytes().to_vec(),
        weight: m.weight,
        dpos_stake: m.dpos_stake,
        address: m.address.clone().unwrap_or_default(),
    }
}

fn member_from_pb(
    m: pb::CommitteeMember,
    field: &'static str,
) -> Result<CommitteeMemberInfo, ConvertError> {
    let id = <[u8; 32]>::try_from(m.node_id.as_slice())
        .map_err(|_| invalid(field, "node id: expected exactly 32 bytes"))?;
    Ok(CommitteeMemberInfo {
        node_id: NodeId::from_bytes(id),
        weight: m.weight,
        dpos_stake: m.dpos_stake,
        address: (!m.address.is_empty()).then_some(m.address),
    })
}

impl From<&CommitteeInfo> for pb::GetCommitteeResponse {
    fn from(c: &CommitteeInfo) -> Self {
        let mut out = pb::GetCommitteeResponse {
            epoch: c.epoch,
            epoch_first_seq: c.epoch_first_seq,
            switching: c.switching,
            removed: c.removed,
            standby: c.standby,
            committed: c.committed,
            members: c.members.iter().map(member_to_pb).collect(),
            ..Default::default()
        };
        if let Some(d) = &c.dpos {
            out.dpos_started = true;
            out.term = d.term;
            out.term_started_at_ms = d.started_at_ms;
            out.term_ends_at_ms = d.ends_at_ms;
            out.next = d.next.iter().map(member_to_pb).collect();
            out.next_elected = d.next_elected;
            out.next_unreachable = d
                .next_unreachable
                .iter()
                .map(|id| id.as_bytes().to_vec())
                .collect();
            out.dpos_state_root = d.state_root.0.to_vec();
            out.dpos_applied_upto = d.applied_upto;
        }
        out
    }
}

impl TryFrom<pb::GetCommitteeResponse> for CommitteeInfo {
    type Error = ConvertError;
    fn try_from(p: pb::GetCommitteeResponse) -> Result<Self, ConvertError> {
        let members = p
            .members
            .into_iter()
            .map(|m| member_from_pb(m, "members"))
            .collect::<Result<Vec<_>, _>>()?;
        let dpos = if p.dpos_started {
            Some(DposTermInfo {
                term: p.term,
                started_at_ms: p.term_started_at_ms,
                ends_at_ms: p.term_ends_at_ms,
                next: p
                    .next
                    .into_iter()
                    .map(|m| member_from_pb(m, "next"))
                    .collect::<Result<Vec<_>, _>>()?,
                next_elected: p.next_elected,
                next_unreachable: p
                    .next_unreachable
                    .iter()
                    .map(|b| {
                        <[u8; 32]>::try_from(b.as_slice())
                            .map(NodeId::from_bytes)
                            .map_err(|_| invalid("next_unreachable", "expected exactly 32 bytes"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                state_root: hash(&p.dpos_state_root, "dpos_state_root")?,
                applied_upto: p.dpos_applied_upto,
            })
        } else {
            None
        };
        Ok(CommitteeInfo {
            epoch: p.epoch,
            epoch_first_seq: p.epoch_first_seq,
            switching: p.switching,
            removed: p.removed,
            standby: p.standby,
            committed: p.committed,
            members,
            dpos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(b: u8) -> AccountId {
        AccountId::from_bytes([b; 32])
    }

    fn sample_stake() -> StakeInfo {
        StakeInfo {
            account: acc(1),
            exists: true,
            balance: 5,
            bonded: 30,
            delegations: vec![StakeDelegation {
                validator: acc(2),
                amount: 30,
                lots: vec![
                    StakeLot {
                        amount: 10,
                        unlock_at_ms: 7,
                    },
                    StakeLot {
                        amount: 20,
                        unlock_at_ms: 9,
                    },
                ],
            }],
            unbonding: vec![StakeUnbonding {
                validator: acc(2),
                amount: 4,
                release_at_ms: 11,
            }],
            rewards: 3,
            node: Some(StakeNode {
                kind: StakeNodeKind::Light,
                stake: 0,
                suspicion: 20,
                active: true,
                registered_at_ms: 1,
                representative: false,
            }),
            term: 2,
            dpos_applied_upto: 17,
            dpos_state_root: Hash32([9; 32]),
        }
    }

    #[test]
    fn stake_round_trips_and_refuses_malformed_answers() {
        let s = sample_stake();
        let p = pb::GetStakeResponse::from(&s);
        assert_eq!(StakeInfo::try_from(p.clone()).unwrap(), s);
        let mut bad = p.clone();
        bad.dpos_state_root = vec![1; 31];
        assert!(matches!(
            StakeInfo::try_from(bad),
            Err(ConvertError::Invalid(dag_core::DecodeError::Invalid {
                field: "dpos_state_root",
                ..
            }))
        ));
        let mut bad = p.clone();
        bad.delegations[0].validator = vec![1; 33];
        assert!(StakeInfo::try_from(bad).is_err());
        let mut bad = p;
        bad.node.as_mut().unwrap().kind = 0;
        assert!(matches!(
            StakeInfo::try_from(bad),
            Err(ConvertError::Invalid(dag_core::DecodeError::Invalid {
                field: "node.kind",
                ..
            }))
        ));
    }

    #[test]
    fn committee_round_trips_with_and_without_dpos() {
        let member = |b: u8, address: Option<&str>| CommitteeMemberInfo {
            node_id: NodeId::from_bytes([b; 32]),
            weight: u64::from(b),
            dpos_stake: u64::from(b) * 1_000,
            address: address.map(str::to_string),
        };
        let mut c = CommitteeInfo {
            epoch: 1,
            epoch_first_seq: 40,
            switching: false,
            removed: false,
            standby: true,
            committed: 45,
            members: vec![member(1, Some("127.0.0.1:1")), member(2, None)],
            dpos: Some(DposTermInfo {
                term: 1,
                started_at_ms: 100,
                ends_at_ms: 200,
                next: vec![member(3, Some("127.0.0.1:3"))],
                next_elected: false,
                next_unreachable: vec![NodeId::from_bytes([5; 32])],
                state_root: Hash32([4; 32]),
                applied_upto: 45,
            }),
        };
        assert_eq!(
            CommitteeInfo::try_from(pb::GetCommitteeResponse::from(&c)).unwrap(),
            c
        );
        c.dpos = None;
        assert_eq!(
            CommitteeInfo::try_from(pb::GetCommitteeResponse::from(&c)).unwrap(),
            c
        );
    }

    #[test]
    fn read_errors_carry_their_code_and_reason() {
        for (e, code, reason) in [
            (
                StakeReadError::NotRepresentative,
                tonic::Code::FailedPrecondition,
                "NOT_A_REPRESENTATIVE",
            ),
            (
                StakeReadError::NotStarted,
                tonic::Code::Unavailable,
                "DPOS_NOT_STARTED",
            ),
            (
                StakeReadError::Store("disk".into()),
                tonic::Code::Unavailable,
                "STORE_UNAVAILABLE",
            ),
        ] {
            let s = e.to_status();
            assert_eq!(s.code(), code);
            assert!(s.message().starts_with(&format!("{reason}: ")));
            assert_eq!(crate::error_info(&s).unwrap().reason, reason);
        }
    }
}

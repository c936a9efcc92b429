//! The stake reads a representative serves (`GetStake`, `GetCommittee`, the gateway's
//! `/v1/accounts/{id}/stake` and `/v1/committee`): values taken from the [`StakeStore`]
//! (one lock: the dpos fields of an answer come from one state), the ledger (liquid
//! balances) and the consensus driver (its epoch and the committee it runs). Nothing here
//! decides anything: the next committee is dpos's own answer (`election()` or the term's
//! representatives).

use super::StakeStore;
use crate::city::consensus::RepresentativeStatus;
use dag_core::consensus::Committee;
use dag_core::{AccountId, NodeId};
use dpos::DposState;
use rpc::{
    CommitteeInfo, CommitteeMemberInfo, DposTermInfo, StakeDelegation, StakeInfo, StakeLot,
    StakeNode, StakeNodeKind, StakeReadError, StakeUnbonding,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// What a representative reads its stake answers from.
pub struct StakeReads {
    stake: Arc<StakeStore>,
    ledger: Option<Arc<ledger::Ledger>>,
    status: watch::Receiver<RepresentativeStatus>,
    committee: watch::Receiver<Committee>,
    /// Genesis gRPC addresses of the city's members.
    addresses: BTreeMap<NodeId, String>,
}

impl std::fmt::Debug for StakeReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StakeReads")
            .field("stake", &self.stake)
            .finish_non_exhaustive()
    }
}

fn account_of(node: &NodeId) -> AccountId {
    AccountId::from_bytes(*node.as_bytes())
}

fn node_of(account: &AccountId) -> NodeId {
    NodeId::from_bytes(*account.as_bytes())
}

impl StakeReads {
    /// Reads over `stake`, the ledger holding liquid balances, and the driver's `status`
    /// and `committee`; `addresses` are the genesis file's member addresses.
    pub(crate) fn new(
        stake: Arc<StakeStore>,
        ledger: Option<Arc<ledger::Ledger>>,
        status: watch::Receiver<RepresentativeStatus>,
        committee: watch::Receiver<Committee>,
        addresses: BTreeMap<NodeId, String>,
    ) -> Self {
        StakeReads {
            stake,
            ledger,
            status,
            committee,
            addresses,
        }
    }

    /// `account`'s stake (see [`rpc::StakeInfo`]); an account nobody knows has
    /// `exists = false`.
    pub fn stake(&self, account: AccountId) -> Result<StakeInfo, StakeReadError> {
        // Ledger first: a balance read before the dpos state is at most one checkpoint
        // older, never newer, than the stake fields.
        let ledger_account = match &self.ledger {
            Some(l) => l
                .account(&account)
                .map_err(|e| StakeReadError::Store(e.to_string()))?,
            None => None,
        };
        let inner = self.stake.inner.lock();
        let s = inner.state.as_ref().ok_or(StakeReadError::NotStarted)?;
        let mut info = stake_of(s, account);
        info.balance = match &ledger_account {
            Some(a) => a.balance,
            // Without a ledger the state keeps liquid balances itself.
            None if self.ledger.is_none() => s.balance(&account),
            None => 0,
        };
        info.exists |= ledger_account.is_some() || info.balance > 0;
        info.dpos_applied_upto = inner.next_seq;
        Ok(info)
    }

    /// The committee the driver runs now and the next one as dpos decides it.
    pub fn committee(&self) -> CommitteeInfo {
        let status = *self.status.borrow();
        let running = self.committee.borrow().clone();
        let inner = self.stake.inner.lock();
        let state = inner.state.as_ref();
        let member = |id: NodeId, weight: u64| CommitteeMemberInfo {
            node_id: id,
            weight,
            dpos_stake: state.map_or(0, |s| s.stake_of(&account_of(&id))),
            address: self.addresses.get(&id).cloned(),
        };
        let members = running
            .authorities()
            .iter()
            .map(|a| member(a.id, a.stake))
            .collect();
        let dpos = state.map(|s| {
            let term = s.term();
            // dpos switched terms and the driver has not (yet) switched epochs: the term's
            // representatives are the next committee; otherwise who the term's end would
            // elect from this state.
            let next_elected = term.index > status.epoch;
            let next: Vec<(AccountId, u64)> = if next_elected {
                s.representative_stakes()
            } else {
                s.election().iter().map(|c| (c.account, c.stake)).collect()
            };
            DposTermInfo {
                term: term.index,
                started_at_ms: term.started_at_ms,
                ends_at_ms: term.started_at_ms.saturating_add(s.config().term_ms),
                next: next
                    .into_iter()
                    .map(|(acc, stake)| member(node_of(&acc), stake))
                    .collect(),
                next_elected,
                state_root: s.state_root(),
                applied_upto: inner.next_seq,
            }
        });
        CommitteeInfo {
            epoch: status.epoch,
            epoch_first_seq: status.epoch_first_seq,
            switching: status.switching,
            removed: status.removed,
            committed: status.committed,
            members,
            dpos,
        }
    }
}

/// The dpos fields of `account`'s stake in `s` (`balance` and `dpos_applied_upto` are the
/// caller's; `exists` says whether dpos knows the account).
fn stake_of(s: &DposState, account: AccountId) -> StakeInfo {
    let mut delegations = Vec::new();
    let mut unbonding = Vec::new();
    for (validator, _) in s.nodes() {
        let lots = s.bond_lots(&account, validator);
        if !lots.is_empty() {
            delegations.push(StakeDelegation {
                validator: *validator,
                amount: lots.iter().map(|l| l.amount).fold(0, u64::saturating_add),
                lots: lots
                    .iter()
                    .map(|l| StakeLot {
                        amount: l.amount,
                        unlock_at_ms: l.unlock_at_ms,
                    })
                    .collect(),
            });
        }
        unbonding.extend(
            s.unbonding(&account, validator)
                .iter()
                .map(|p| StakeUnbonding {
                    validator: *validator,
                    amount: p.amount,
                    release_at_ms: p.release_at_ms,
                }),
        );
    }
    let node = s.node(&account).map(|n| StakeNode {
        kind: match n.kind {
            dpos::NodeKind::Full => StakeNodeKind::Full,
            dpos::NodeKind::Light => StakeNodeKind::Light,
        },
        stake: n.stake,
        suspicion: n.suspicion,
        active: s.is_active(&account),
        registered_at_ms: n.registered_at_ms,
        representative: s.representatives().contains(&account),
    });
    let rewards = s.accrued_rewards(&account);
    let bonded = delegations
        .iter()
        .map(|d| d.amount)
        .fold(0, u64::saturating_add);
    StakeInfo {
        account,
        exists: !delegations.is_empty() || !unbonding.is_empty() || rewards > 0 || node.is_some(),
        balance: 0,
        bonded,
        delegations,
        unbonding,
        rewards,
        node,
        term: s.term().index,
        dpos_applied_upto: 0,
        dpos_state_root: s.state_root(),
    }
}

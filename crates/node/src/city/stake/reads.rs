//! The stake reads a representative serves (`GetStake`, `GetCommittee`, the gateway's
//! `/v1/accounts/{id}/stake` and `/v1/committee`): values taken from the [`StakeStore`]
//! (one lock: the dpos fields of an answer come from one state), the ledger (liquid
//! balances) and the consensus driver (its epoch and the committee it runs). Nothing here
//! decides anything: the next committee is dpos's own answer (`election()` or the term's
//! representatives), passed through the epoch plan's reachability rule
//! ([`crate::city::committee::unreachable_members`]).

use super::StakeStore;
use crate::city::consensus::RepresentativeStatus;
use dag_core::consensus::Committee;
use dag_core::{AccountId, NodeId};
use dpos::DposState;
use rpc::{
    CommitteeInfo, CommitteeMemberInfo, DposTermInfo, StakeDelegation, StakeInfo, StakeLot,
    StakeNode, StakeNodeKind, StakeReadError, StakeUnbonding,
};
use std::sync::Arc;
use tokio::sync::watch;

/// What a representative reads its stake answers from.
pub struct StakeReads {
    stake: Arc<StakeStore>,
    ledger: Option<Arc<ledger::Ledger>>,
    status: watch::Receiver<RepresentativeStatus>,
    committee: watch::Receiver<Committee>,
    /// The members' gRPC addresses (genesis file, dpos endpoints).
    addresses: crate::city::committee::AddressBook,
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
    /// and `committee`; `addresses` are the members' addresses (genesis, dpos endpoints).
    pub(crate) fn new(
        stake: Arc<StakeStore>,
        ledger: Option<Arc<ledger::Ledger>>,
        status: watch::Receiver<RepresentativeStatus>,
        committee: watch::Receiver<Committee>,
        addresses: crate::city::committee::AddressBook,
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
        let mut info = stake_of(s, inner.root, account);
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
        // Before the lock: the address book reads the stake store itself.
        let addresses = (self.addresses)();
        let mut guard = self.stake.inner.lock();
        let inner = &mut *guard;
        let state = inner.state.as_ref();
        let (root, applied_upto, election) = (inner.root, inner.next_seq, &mut inner.election);
        let member = |id: NodeId, weight: u64| CommitteeMemberInfo {
            node_id: id,
            weight,
            dpos_stake: state.map_or(0, |s| s.stake_of(&account_of(&id))),
            address: addresses.get(&id).cloned(),
        };
        let members: Vec<CommitteeMemberInfo> = running
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
                election
                    .get_or_insert_with(|| {
                        s.election().iter().map(|c| (c.account, c.stake)).collect()
                    })
                    .clone()
            };
            // The epoch plan's rule: an elected member without an address makes the next
            // epoch keep the running committee.
            let next_unreachable = crate::city::committee::unreachable_members(
                next.iter().map(|(acc, _)| node_of(acc)),
                &addresses,
            );
            let next = if next_unreachable.is_empty() {
                next.into_iter()
                    .map(|(acc, stake)| member(node_of(&acc), stake))
                    .collect()
            } else {
                members.clone()
            };
            DposTermInfo {
                term: term.index,
                started_at_ms: term.started_at_ms,
                ends_at_ms: term.started_at_ms.saturating_add(s.config().term_ms),
                next,
                next_elected,
                next_unreachable,
                state_root: root.unwrap_or_else(|| s.state_root()),
                applied_upto,
            }
        });
        CommitteeInfo {
            epoch: status.epoch,
            epoch_first_seq: status.epoch_first_seq,
            switching: status.switching,
            removed: status.removed,
            standby: status.standby,
            committed: status.committed,
            members,
            dpos,
        }
    }
}

/// The dpos fields of `account`'s stake in `s` (`balance` and `dpos_applied_upto` are the
/// caller's; `exists` says whether dpos knows the account); `root` is `s`'s root when the
/// caller has it (else computed).
fn stake_of(s: &DposState, root: Option<dag_core::Hash32>, account: AccountId) -> StakeInfo {
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
        dpos_state_root: root.unwrap_or_else(|| s.state_root()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag_core::CityId;
    use dpos::{ApplyCtx, DposConfig, Genesis, GenesisBond, Metrics, NodeKind, SystemPayload};

    #[test]
    fn an_accounts_stake_lists_its_bonds_unbondings_and_node_record() {
        let alice = pqc::Keypair::generate();
        let a = alice.account_id();
        let (v, w) = (
            AccountId::from_bytes([1; 32]),
            AccountId::from_bytes([2; 32]),
        );
        let config = DposConfig {
            stake_lock_ms: 1_000,
            unbonding_delay_ms: 5_000,
            ..DposConfig::default()
        };
        let mut s = DposState::genesis(Genesis {
            config,
            time_ms: 10_000,
            balances: vec![(a, 1_000)],
            nodes: vec![
                (v, NodeKind::Full, Metrics::default()),
                (w, NodeKind::Full, Metrics::default()),
            ],
            bonds: vec![
                GenesisBond {
                    delegator: v,
                    validator: v,
                    amount: 50,
                },
                GenesisBond {
                    delegator: w,
                    validator: w,
                    amount: 60,
                },
                GenesisBond {
                    delegator: a,
                    validator: v,
                    amount: 300,
                },
                GenesisBond {
                    delegator: a,
                    validator: w,
                    amount: 40,
                },
            ],
        })
        .unwrap();
        // After the lock, alice unbonds 100 of the 300 behind v.
        let now = 20_000;
        let tx = dpos::sign_system_tx(
            &SystemPayload::Unbond {
                validator: v,
                amount: 100,
            },
            0,
            now,
            CityId::new("JP-13").unwrap(),
            &alice,
        );
        s.apply_signed(tx, &pqc::MlDsa87, &ApplyCtx { now_ms: now })
            .unwrap();

        let info = stake_of(&s, None, a);
        assert!(info.exists);
        assert_eq!(info.bonded, 240);
        let delegations: Vec<_> = info
            .delegations
            .iter()
            .map(|d| (d.validator, d.amount, d.lots.len()))
            .collect();
        assert_eq!(delegations, vec![(v, 200, 1), (w, 40, 1)]);
        assert_eq!(info.delegations[0].lots[0].unlock_at_ms, 11_000);
        assert_eq!(
            info.unbonding,
            vec![rpc::StakeUnbonding {
                validator: v,
                amount: 100,
                release_at_ms: now + 5_000,
            }]
        );
        assert_eq!(info.rewards, 0);
        assert!(info.node.is_none(), "alice registered no node");
        assert_eq!(info.dpos_state_root, s.state_root());

        let vn = stake_of(&s, None, v).node.unwrap();
        assert_eq!(vn.kind, StakeNodeKind::Full);
        assert_eq!(vn.stake, 50 + 200);
        assert!(vn.active && vn.representative);

        let nobody = stake_of(&s, None, AccountId::from_bytes([9; 32]));
        assert!(!nobody.exists && nobody.bonded == 0 && nobody.delegations.is_empty());
    }
}

//! The DPoS state: balances, nodes, bonds, unbondings, rewards ledger, the monitor's
//! records and the current term; its genesis, read-only queries and invariants.
//!
//! Every collection is a `BTreeMap`/`BTreeSet` and holds no empty or zero entries, so a
//! state has exactly one snapshot encoding ([`DposState::snapshot`]) and equal states have
//! equal bytes.

use crate::{
    Approval, Candidate, DposConfig, Error, Metrics, NodeKind, Result, Score, elect, is_approved,
    score,
};
use dag_core::{AccountId, Hash32};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The deterministic inputs of one `apply`: consensus-agreed time (e.g. the committing
/// checkpoint's timestamp), never a local clock read. The reward epoch is
/// `now_ms / config.epoch_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyCtx {
    /// Milliseconds since the Unix epoch.
    pub now_ms: u64,
}

/// A registered node (its node id bytes are its account id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Full (candidate) or light.
    pub kind: NodeKind,
    /// Self-reported metrics.
    pub metrics: Metrics,
    /// Monitor's suspicion (+20 per incident, +100 per double sign).
    pub suspicion: u32,
    /// Total stake bonded to this node (self-bond plus delegations), base units.
    pub stake: u64,
    /// When it registered.
    pub registered_at_ms: u64,
}

/// A bonded amount and when its lock ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    /// Base units (> 0).
    pub amount: u64,
    /// The lot may be unbonded from this time on.
    pub unlock_at_ms: u64,
}

/// An unbonding amount and when it may be withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Base units (> 0).
    pub amount: u64,
    /// Withdrawable from this time on.
    pub release_at_ms: u64,
}

/// The current representative term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    /// 0 at genesis, +1 per election.
    pub index: u64,
    /// When it started.
    pub started_at_ms: u64,
    /// Elected representatives, best first.
    pub representatives: Vec<AccountId>,
}

/// Where all tokens came from and went: `genesis + minted + deposited − burned − released`
/// is what the state holds, and equals the sum of balances, bonds, unbondings and accrued
/// rewards. `deposited` / `released` count liquid moves into and out of an external balance
/// book ([`crate::LiquidBalances`] through [`DposState::apply_with`]); with the state's own
/// balances they stay 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Supply {
    /// Allocated at genesis.
    pub genesis: u64,
    /// Accrued as rewards.
    pub minted: u64,
    /// Destroyed by slashing.
    pub burned: u64,
    /// Bonded from an external balance book.
    pub deposited: u64,
    /// Paid out to an external balance book (withdrawals, reward claims).
    pub released: u64,
}

impl Supply {
    /// `genesis + minted + deposited − burned − released`, checked.
    pub fn total(&self) -> Result<u64> {
        self.genesis
            .checked_add(self.minted)
            .and_then(|v| v.checked_add(self.deposited))
            .and_then(|v| v.checked_sub(self.burned))
            .and_then(|v| v.checked_sub(self.released))
            .ok_or(Error::Overflow {
                what: "total supply",
            })
    }
}

/// One stake position at genesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisBond {
    /// Who owns the stake.
    pub delegator: AccountId,
    /// The node it backs (a full node unless `delegator == validator`).
    pub validator: AccountId,
    /// Base units, locked until `time_ms + stake_lock_ms`.
    pub amount: u64,
}

/// The initial state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Genesis {
    /// Rules.
    pub config: DposConfig,
    /// Genesis time (start of term 0).
    pub time_ms: u64,
    /// Liquid balances.
    pub balances: Vec<(AccountId, u64)>,
    /// Registered nodes.
    pub nodes: Vec<(AccountId, NodeKind, Metrics)>,
    /// Bonded stake.
    pub bonds: Vec<GenesisBond>,
}

/// The whole DPoS state. Changed only by [`DposState::apply`] (see `apply.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DposState {
    pub(crate) config: DposConfig,
    pub(crate) supply: Supply,
    pub(crate) balances: BTreeMap<AccountId, u64>,
    pub(crate) nonces: BTreeMap<AccountId, u64>,
    pub(crate) nodes: BTreeMap<AccountId, NodeRecord>,
    /// Keyed by (validator, delegator) so a validator's stake is one range.
    pub(crate) bonds: BTreeMap<(AccountId, AccountId), Vec<Lot>>,
    /// Keyed by (validator, delegator) so slashing reaches unbonding stake too.
    pub(crate) unbonding: BTreeMap<(AccountId, AccountId), Vec<Pending>>,
    pub(crate) accrued: BTreeMap<AccountId, u64>,
    pub(crate) rewarded: BTreeSet<(AccountId, u64)>,
    pub(crate) offences: BTreeSet<Hash32>,
    pub(crate) incidents: BTreeSet<(AccountId, Hash32)>,
    /// Consensus endpoints published by full nodes (`SetEndpoint`).
    pub(crate) endpoints: BTreeMap<AccountId, String>,
    pub(crate) term: Term,
}

pub(crate) const MIN_ID: AccountId = AccountId::from_bytes([0; 32]);
pub(crate) const MAX_ID: AccountId = AccountId::from_bytes([0xff; 32]);

impl DposState {
    /// The state at genesis; term 0's representatives are elected from the genesis nodes.
    pub fn genesis(g: Genesis) -> Result<Self> {
        g.config.validate()?;
        let mut s = DposState {
            config: g.config,
            supply: Supply::default(),
            balances: BTreeMap::new(),
            nonces: BTreeMap::new(),
            nodes: BTreeMap::new(),
            bonds: BTreeMap::new(),
            unbonding: BTreeMap::new(),
            accrued: BTreeMap::new(),
            rewarded: BTreeSet::new(),
            offences: BTreeSet::new(),
            incidents: BTreeSet::new(),
            endpoints: BTreeMap::new(),
            term: Term {
                index: 0,
                started_at_ms: g.time_ms,
                representatives: Vec::new(),
            },
        };
        let overflow = Error::Overflow {
            what: "genesis supply",
        };
        let mut total: u64 = 0;
        for (acc, amount) in g.balances {
            total = total.checked_add(amount).ok_or(overflow.clone())?;
            if amount > 0 {
                let b = s.balances.entry(acc).or_insert(0);
                *b = b.checked_add(amount).ok_or(overflow.clone())?;
            }
        }
        for (acc, kind, metrics) in g.nodes {
            metrics.validate()?;
            let rec = NodeRecord {
                kind,
                metrics,
                suspicion: 0,
                stake: 0,
                registered_at_ms: g.time_ms,
            };
            if s.nodes.insert(acc, rec).is_some() {
                return Err(Error::InvalidGenesis("a node is listed twice"));
            }
        }
        let unlock_at_ms =
            g.time_ms
                .checked_add(s.config.stake_lock_ms)
                .ok_or(Error::Overflow {
                    what: "unlock time",
                })?;
        for b in g.bonds {
            if b.amount == 0 {
                return Err(Error::InvalidGenesis("a bond has amount 0"));
            }
            total = total.checked_add(b.amount).ok_or(overflow.clone())?;
            let node = s.nodes.get_mut(&b.validator).ok_or(Error::InvalidGenesis(
                "a bond names an unregistered validator",
            ))?;
            if b.delegator != b.validator && node.kind != NodeKind::Full {
                return Err(Error::InvalidGenesis("delegation to a light node"));
            }
            node.stake = node.stake.checked_add(b.amount).ok_or(overflow.clone())?;
            let lots = s.bonds.entry((b.validator, b.delegator)).or_default();
            match lots.first_mut() {
                Some(lot) => {
                    lot.amount = lot.amount.checked_add(b.amount).ok_or(overflow.clone())?
                }
                None => lots.push(Lot {
                    amount: b.amount,
                    unlock_at_ms,
                }),
            }
        }
        s.supply.genesis = total;
        s.term.representatives = s.election().iter().map(|c| c.account).collect();
        Ok(s)
    }

    /// The rules in force.
    pub fn config(&self) -> &DposConfig {
        &self.config
    }
    /// Genesis, minted and burned totals.
    pub fn supply(&self) -> Supply {
        self.supply
    }
    /// The current term.
    pub fn term(&self) -> &Term {
        &self.term
    }
    /// The current representatives, best first.
    pub fn representatives(&self) -> &[AccountId] {
        &self.term.representatives
    }
    /// Liquid balance.
    pub fn balance(&self, account: &AccountId) -> u64 {
        self.balances.get(account).copied().unwrap_or(0)
    }
    /// The nonce the account's next system tx must carry, when dpos counts nonces itself
    /// (always 0 for a state driven through a book that keeps them, see
    /// [`crate::LiquidBalances::keeps_nonces`]).
    pub fn next_nonce(&self, account: &AccountId) -> u64 {
        self.nonces.get(account).copied().unwrap_or(0)
    }
    /// A registered node.
    pub fn node(&self, account: &AccountId) -> Option<&NodeRecord> {
        self.nodes.get(account)
    }
    /// The consensus endpoint `node` published (`SetEndpoint`), if any.
    pub fn endpoint(&self, node: &AccountId) -> Option<&str> {
        self.endpoints.get(node).map(String::as_str)
    }
    /// Every published consensus endpoint, in account order.
    pub fn endpoints(&self) -> impl Iterator<Item = (&AccountId, &str)> {
        self.endpoints.iter().map(|(a, e)| (a, e.as_str()))
    }
    /// Iterates over registered nodes in account order.
    pub fn nodes(&self) -> impl Iterator<Item = (&AccountId, &NodeRecord)> {
        self.nodes.iter()
    }
    /// Total stake bonded to `validator` (0 if unknown).
    pub fn stake_of(&self, validator: &AccountId) -> u64 {
        self.nodes.get(validator).map_or(0, |n| n.stake)
    }
    /// `delegator`'s bonded lots with `validator`, earliest unlock first.
    pub fn bond_lots(&self, delegator: &AccountId, validator: &AccountId) -> &[Lot] {
        self.bonds
            .get(&(*validator, *delegator))
            .map_or(&[], |v| v.as_slice())
    }
    /// `delegator`'s unbondings from `validator`, earliest release first.
    pub fn unbonding(&self, delegator: &AccountId, validator: &AccountId) -> &[Pending] {
        self.unbonding
            .get(&(*validator, *delegator))
            .map_or(&[], |v| v.as_slice())
    }
    /// Rewards accrued and not yet claimed.
    pub fn accrued_rewards(&self, account: &AccountId) -> u64 {
        self.accrued.get(account).copied().unwrap_or(0)
    }
    /// True if `node` was already rewarded for `epoch`.
    pub fn was_rewarded(&self, node: &AccountId, epoch: u64) -> bool {
        self.rewarded.contains(&(*node, epoch))
    }
    /// True if the offence with this id (see `DoubleSignEvidence::offence_id`) was slashed.
    pub fn offence_slashed(&self, offence_id: &Hash32) -> bool {
        self.offences.contains(offence_id)
    }
    /// True if the node is registered and its suspicion is below the threshold.
    pub fn is_active(&self, node: &AccountId) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.suspicion < self.config.inactive_threshold)
    }
    /// The node's election score from its metrics and the stake bonded to it.
    pub fn score_of(&self, node: &AccountId) -> Option<Score> {
        self.nodes
            .get(node)
            .map(|n| score(&n.metrics, n.stake, self.config.units_per_token))
    }

    /// Every eligible candidate: active full nodes, in account order.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.nodes
            .iter()
            .filter(|(_, n)| {
                n.kind == NodeKind::Full && n.suspicion < self.config.inactive_threshold
            })
            .map(|(acc, n)| Candidate {
                account: *acc,
                score: score(&n.metrics, n.stake, self.config.units_per_token),
                stake: n.stake,
            })
            .collect()
    }

    /// Who would be elected from this state: the top `config.representatives` candidates.
    pub fn election(&self) -> Vec<Candidate> {
        elect(&self.candidates(), self.config.representatives as usize)
    }

    /// The representatives with their stakes, for building the consensus committee.
    pub fn representative_stakes(&self) -> Vec<(AccountId, u64)> {
        self.term
            .representatives
            .iter()
            .map(|r| (*r, self.stake_of(r)))
            .collect()
    }

    /// Approval of a batch: `online` and `approving` name representatives (others, unknown,
    /// inactive or repeated ids are ignored; approvers must also be online). Approved when
    /// approving stake ≥ 2/3 of online stake, exactly ([`is_approved`]).
    pub fn approval(&self, online: &[AccountId], approving: &[AccountId]) -> Approval {
        let eligible: BTreeSet<AccountId> = online
            .iter()
            .filter(|a| self.term.representatives.contains(a) && self.is_active(a))
            .copied()
            .collect();
        let sum = |set: &mut dyn Iterator<Item = &AccountId>| {
            set.fold(0u64, |acc, a| acc.saturating_add(self.stake_of(a)))
        };
        let online_stake = sum(&mut eligible.iter());
        let approvers: BTreeSet<&AccountId> =
            approving.iter().filter(|a| eligible.contains(a)).collect();
        let approving_stake = sum(&mut approvers.into_iter());
        Approval {
            approving_stake,
            online_stake,
            approved: is_approved(approving_stake, online_stake),
        }
    }

    /// Sum of every balance, bond, unbonding and accrued reward (what the supply must equal).
    pub fn accounted_supply(&self) -> u128 {
        let b: u128 = self.balances.values().map(|&v| u128::from(v)).sum();
        let l: u128 = self
            .bonds
            .values()
            .flatten()
            .map(|l| u128::from(l.amount))
            .sum();
        let p: u128 = self
            .unbonding
            .values()
            .flatten()
            .map(|p| u128::from(p.amount))
            .sum();
        let a: u128 = self.accrued.values().map(|&v| u128::from(v)).sum();
        b + l + p + a
    }

    /// Checks every invariant: supply accounted exactly, cached node stakes equal their
    /// bonds, bonds only to registered nodes (delegations only to full nodes), no empty or
    /// zero entries, lots and unbondings strictly ordered by time, valid config and metrics.
    pub fn check_invariants(&self) -> Result<()> {
        let bad = Error::CorruptSnapshot;
        self.config.validate()?;
        if u128::from(self.supply.total().map_err(|_| bad("supply underflows"))?)
            != self.accounted_supply()
        {
            return Err(bad(
                "balances, bonds, unbondings and rewards do not add up to the supply",
            ));
        }
        if self
            .balances
            .values()
            .chain(self.accrued.values())
            .any(|&v| v == 0)
        {
            return Err(bad("zero balance entry"));
        }
        for (node, e) in &self.endpoints {
            if self.nodes.get(node).map(|n| n.kind) != Some(NodeKind::Full) {
                return Err(bad("endpoint of a node that is not a registered full node"));
            }
            crate::validate_endpoint(e).map_err(|_| bad("invalid endpoint"))?;
        }
        let mut stakes: BTreeMap<AccountId, u128> = BTreeMap::new();
        for ((validator, delegator), lots) in &self.bonds {
            let node = self
                .nodes
                .get(validator)
                .ok_or(bad("bond to an unregistered node"))?;
            if validator != delegator && node.kind != NodeKind::Full {
                return Err(bad("delegation to a light node"));
            }
            if lots.is_empty() || lots.iter().any(|l| l.amount == 0) {
                return Err(bad("empty bond"));
            }
            if lots
                .windows(2)
                .any(|w| w[0].unlock_at_ms >= w[1].unlock_at_ms)
            {
                return Err(bad("bond lots out of order"));
            }
            *stakes.entry(*validator).or_default() +=
                lots.iter().map(|l| u128::from(l.amount)).sum::<u128>();
        }
        for (acc, n) in &self.nodes {
            n.metrics
                .validate()
                .map_err(|_| bad("metric out of range"))?;
            if u128::from(n.stake) != stakes.get(acc).copied().unwrap_or(0) {
                return Err(bad("a node's stake differs from its bonds"));
            }
        }
        for ((validator, _), ps) in &self.unbonding {
            if !self.nodes.contains_key(validator) {
                return Err(bad("unbonding from an unregistered node"));
            }
            if ps.is_empty() || ps.iter().any(|p| p.amount == 0) {
                return Err(bad("empty unbonding"));
            }
            if ps
                .windows(2)
                .any(|w| w[0].release_at_ms >= w[1].release_at_ms)
            {
                return Err(bad("unbondings out of order"));
            }
        }
        let reps: BTreeSet<_> = self.term.representatives.iter().collect();
        if reps.len() != self.term.representatives.len()
            || reps.iter().any(|r| !self.nodes.contains_key(r))
        {
            return Err(bad("representatives repeat or are unregistered"));
        }
        Ok(())
    }
}

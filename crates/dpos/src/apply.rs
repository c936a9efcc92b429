//! The one way the DPoS state changes: [`DposState::apply`] of a [`VerifiedSystemTx`].
//!
//! Every handler first checks and computes everything that can fail (with checked
//! arithmetic), and only then writes; so a rejected tx leaves the state — and its snapshot
//! bytes — exactly as they were. The sender's nonce advances only on success.

use crate::state::{Lot, MAX_ID, MIN_ID, NodeRecord, Pending};
use crate::{
    ApplyCtx, DoubleSignEvidence, DposState, Error, LiquidBalances, Metrics, NodeKind, Result,
    SlashLevel, SystemPayload, VerifiedSystemTx, reward, score,
};
use dag_core::{AccountId, Hash32, SignedReceipt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What a successful `apply` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A node registered.
    Registered {
        /// The node.
        node: AccountId,
        /// Its kind.
        kind: NodeKind,
    },
    /// A node's metrics changed.
    MetricsUpdated {
        /// The node.
        node: AccountId,
    },
    /// A full node published its consensus endpoint.
    EndpointSet {
        /// The node.
        node: AccountId,
    },
    /// Stake was bonded (self-bond or delegation).
    Bonded {
        /// Owner of the stake.
        delegator: AccountId,
        /// Node it backs.
        validator: AccountId,
        /// Base units.
        amount: u64,
        /// When it may be unbonded.
        unlock_at_ms: u64,
    },
    /// Stake started unbonding.
    Unbonded {
        /// Owner.
        delegator: AccountId,
        /// Node it backed.
        validator: AccountId,
        /// Base units.
        amount: u64,
        /// When it may be withdrawn.
        release_at_ms: u64,
    },
    /// Finished unbondings returned to the liquid balance.
    Withdrawn {
        /// Owner.
        account: AccountId,
        /// Base units.
        amount: u64,
    },
    /// A double sign was punished.
    Slashed {
        /// The offender.
        offender: AccountId,
        /// Level (fraction).
        level: SlashLevel,
        /// Round of the offence.
        round: u64,
        /// Base units burned (bonds and unbondings backing the offender).
        burned: u64,
        /// Offender's suspicion after the penalty.
        suspicion: u32,
        /// Whether the offender is now inactive.
        inactive: bool,
    },
    /// An incident was recorded.
    IncidentRecorded {
        /// The node.
        node: AccountId,
        /// Its suspicion now.
        suspicion: u32,
        /// Whether it is now inactive.
        inactive: bool,
    },
    /// Rewards accrued from verified receipts.
    Rewarded {
        /// `(node, epoch, base units)` per rewarded holder.
        credits: Vec<(AccountId, u64, u64)>,
        /// Total minted.
        minted: u64,
    },
    /// Accrued rewards moved to the liquid balance.
    RewardsClaimed {
        /// Account.
        account: AccountId,
        /// Base units.
        amount: u64,
    },
    /// A new term started.
    Elected {
        /// Its index.
        term: u64,
        /// Its representatives, best first.
        representatives: Vec<AccountId>,
    },
}

fn add(a: u64, b: u64, what: &'static str) -> Result<u64> {
    a.checked_add(b).ok_or(Error::Overflow { what })
}

fn sub(a: u64, b: u64, what: &'static str) -> Result<u64> {
    a.checked_sub(b).ok_or(Error::Overflow { what })
}

/// `amount × bps / 10 000`, floored; never more than `amount`.
fn slash_part(amount: u64, bps: u16) -> u64 {
    let part = u128::from(amount) * u128::from(bps.min(10_000)) / 10_000;
    // ≤ amount, so it fits.
    u64::try_from(part).unwrap_or(amount)
}

impl DposState {
    /// Applies one verified system tx at consensus time `ctx.now_ms`. On error nothing
    /// changes (not even the nonce).
    ///
    /// ```
    /// use dpos::{ApplyCtx, DposState, Genesis, SystemPayload, VerifiedSystemTx, sign_system_tx};
    /// use dag_core::CityId;
    /// use pqc::{Keypair, MlDsa87};
    ///
    /// let key = Keypair::generate();
    /// let mut state = DposState::genesis(Genesis {
    ///     balances: vec![(key.account_id(), 1_000)],
    ///     ..Genesis::default()
    /// })?;
    /// let signed = sign_system_tx(
    ///     &SystemPayload::RegisterNode { kind: dpos::NodeKind::Full, metrics: Default::default() },
    ///     state.next_nonce(&key.account_id()),
    ///     0,
    ///     CityId::new("JP-13")?,
    ///     &key,
    /// );
    /// let tx = VerifiedSystemTx::verify(signed, &MlDsa87)?;
    /// state.apply(&tx, &ApplyCtx { now_ms: 0 })?;
    /// assert!(state.node(&key.account_id()).is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply(&mut self, tx: &VerifiedSystemTx, ctx: &ApplyCtx) -> Result<Outcome> {
        let mut balances = std::mem::take(&mut self.balances);
        let r = self.apply_inner(tx, ctx, &mut balances, false);
        self.balances = balances;
        r
    }

    /// [`DposState::apply`] with the liquid balances kept outside the state (the node's
    /// ledger): bonds debit `balances`, withdrawals and reward claims credit it. The state's
    /// own balance map is not touched, so a node that keeps balances in its ledger leaves
    /// it empty. When the book keeps the accounts' nonces ([`LiquidBalances::keeps_nonces`])
    /// the tx's nonce is checked and consumed there (any unused nonce is accepted, once),
    /// and the state's own nonce counters stay untouched. Moves across the boundary are counted in [`crate::Supply`] (`deposited`,
    /// `released`). On error neither the state nor `balances` changes.
    pub fn apply_with(
        &mut self,
        tx: &VerifiedSystemTx,
        ctx: &ApplyCtx,
        balances: &mut (impl LiquidBalances + ?Sized),
    ) -> Result<Outcome> {
        self.apply_inner(tx, ctx, balances, true)
    }

    fn apply_inner(
        &mut self,
        tx: &VerifiedSystemTx,
        ctx: &ApplyCtx,
        balances: &mut (impl LiquidBalances + ?Sized),
        external: bool,
    ) -> Result<Outcome> {
        let sender = tx.sender();
        // One nonce per account across kinds: a book that keeps it (the node's ledger)
        // decides; otherwise dpos counts its own, strictly in sequence.
        let book_nonces = external && balances.keeps_nonces();
        let next = if book_nonces {
            if balances.nonce_used(&sender, tx.nonce()) {
                return Err(Error::NonceReused {
                    account: sender,
                    nonce: tx.nonce(),
                });
            }
            None
        } else {
            let expected = self.next_nonce(&sender);
            if tx.nonce() != expected {
                return Err(Error::BadNonce {
                    account: sender,
                    expected,
                    got: tx.nonce(),
                });
            }
            Some(add(expected, 1, "nonce")?)
        };
        let now = ctx.now_ms;
        if external {
            self.flow_check(sender, tx.payload(), now)?;
        }
        let outcome = match tx.payload() {
            SystemPayload::RegisterNode { kind, metrics } => {
                self.register(sender, *kind, *metrics, now)
            }
            SystemPayload::UpdateMetrics { metrics } => self.update_metrics(sender, *metrics),
            SystemPayload::Bond { amount } => self.bond(balances, sender, sender, *amount, now),
            SystemPayload::Delegate { validator, amount } => {
                self.bond(balances, sender, *validator, *amount, now)
            }
            SystemPayload::Unbond { validator, amount } => {
                self.unbond(sender, *validator, *amount, now)
            }
            SystemPayload::Withdraw { validator } => {
                self.withdraw(balances, sender, *validator, now)
            }
            SystemPayload::DoubleSign(e) => self.slash(e),
            SystemPayload::ReportIncident { node, incident } => {
                self.report_incident(sender, *node, *incident)
            }
            SystemPayload::RecordContribution { receipts } => {
                self.record_contribution(receipts, now)
            }
            SystemPayload::ClaimRewards => self.claim_rewards(balances, sender),
            SystemPayload::EndTerm => self.end_term(now),
            SystemPayload::SetEndpoint { address } => self.set_endpoint(sender, address),
        }?;
        match next {
            Some(next) => {
                self.nonces.insert(sender, next);
            }
            None => balances.use_nonce(&sender, tx.nonce(), &tx.id())?,
        }
        if external {
            // Checked before the handler wrote (see `flow_check`), so these cannot fail.
            match &outcome {
                Outcome::Bonded { amount, .. } => self.supply.deposited += amount,
                Outcome::Withdrawn { amount, .. } | Outcome::RewardsClaimed { amount, .. } => {
                    self.supply.released += amount
                }
                _ => {}
            }
        }
        Ok(outcome)
    }

    /// With an external balance book: the supply counters must be able to take the move the
    /// tx would make, checked before anything is written.
    fn flow_check(&self, sender: AccountId, payload: &SystemPayload, now: u64) -> Result<()> {
        let (counter, amount, what) = match payload {
            SystemPayload::Bond { amount } | SystemPayload::Delegate { amount, .. } => {
                (self.supply.deposited, *amount, "deposited supply")
            }
            SystemPayload::Withdraw { validator } => {
                let released = self
                    .unbonding(&sender, validator)
                    .iter()
                    .filter(|p| p.release_at_ms <= now)
                    .try_fold(0u64, |a, p| add(a, p.amount, "withdrawal"))?;
                (self.supply.released, released, "released supply")
            }
            SystemPayload::ClaimRewards => (
                self.supply.released,
                self.accrued_rewards(&sender),
                "released supply",
            ),
            _ => return Ok(()),
        };
        add(counter, amount, what).map(|_| ())
    }

    /// Verifies and applies a signed tx in one step (`verifier` = `pqc::MlDsa87`).
    pub fn apply_signed(
        &mut self,
        signed: dag_core::SignedTx,
        verifier: &(impl dag_core::SignatureVerifier + ?Sized),
        ctx: &ApplyCtx,
    ) -> Result<Outcome> {
        let tx = VerifiedSystemTx::verify(signed, verifier)?;
        self.apply(&tx, ctx)
    }

    fn register(
        &mut self,
        node: AccountId,
        kind: NodeKind,
        metrics: Metrics,
        now: u64,
    ) -> Result<Outcome> {
        if self.nodes.contains_key(&node) {
            return Err(Error::AlreadyRegistered(node));
        }
        metrics.validate()?;
        self.nodes.insert(
            node,
            NodeRecord {
                kind,
                metrics,
                suspicion: 0,
                stake: 0,
                registered_at_ms: now,
            },
        );
        Ok(Outcome::Registered { node, kind })
    }

    fn set_endpoint(&mut self, node: AccountId, address: &str) -> Result<Outcome> {
        crate::validate_endpoint(address)?;
        match self.nodes.get(&node) {
            Some(rec) if rec.kind == NodeKind::Full => {}
            _ => return Err(Error::NotFullNode(node)),
        }
        self.endpoints.insert(node, address.to_string());
        Ok(Outcome::EndpointSet { node })
    }

    fn update_metrics(&mut self, node: AccountId, metrics: Metrics) -> Result<Outcome> {
        metrics.validate()?;
        let rec = self.nodes.get_mut(&node).ok_or(Error::UnknownNode(node))?;
        rec.metrics = metrics;
        Ok(Outcome::MetricsUpdated { node })
    }

    fn bond(
        &mut self,
        balances: &mut (impl LiquidBalances + ?Sized),
        delegator: AccountId,
        validator: AccountId,
        amount: u64,
        now: u64,
    ) -> Result<Outcome> {
        if amount == 0 {
            return Err(Error::ZeroAmount {
                what: "bond amount",
            });
        }
        let node = if delegator == validator {
            self.nodes
                .get(&validator)
                .ok_or(Error::UnknownNode(validator))?
        } else {
            let n = self
                .nodes
                .get(&validator)
                .filter(|n| n.kind == NodeKind::Full);
            let n = n.ok_or(Error::UnknownCandidate(validator))?;
            if n.suspicion >= self.config.inactive_threshold {
                return Err(Error::NodeInactive {
                    node: validator,
                    suspicion: n.suspicion,
                });
            }
            n
        };
        let available = balances.balance(&delegator);
        if available < amount {
            return Err(Error::InsufficientBalance {
                account: delegator,
                needed: amount,
                available,
            });
        }
        let new_stake = add(node.stake, amount, "validator stake")?;
        let unlock_at_ms = add(now, self.config.stake_lock_ms, "unlock time")?;
        let key = (validator, delegator);
        let lots = self.bonds.get(&key).map_or(&[][..], |v| v.as_slice());
        let pos = lots.partition_point(|l| l.unlock_at_ms < unlock_at_ms);
        let merged = match lots.get(pos) {
            Some(l) if l.unlock_at_ms == unlock_at_ms => Some(add(l.amount, amount, "bond lot")?),
            _ => None,
        };
        // Commit (the debit first: it is checked, so on error nothing was written).
        balances.debit(&delegator, amount)?;
        if let Some(n) = self.nodes.get_mut(&validator) {
            n.stake = new_stake;
        }
        let lots = self.bonds.entry(key).or_default();
        match merged {
            Some(total) => lots[pos].amount = total,
            None => lots.insert(
                pos,
                Lot {
                    amount,
                    unlock_at_ms,
                },
            ),
        }
        Ok(Outcome::Bonded {
            delegator,
            validator,
            amount,
            unlock_at_ms,
        })
    }

    fn unbond(
        &mut self,
        delegator: AccountId,
        validator: AccountId,
        amount: u64,
        now: u64,
    ) -> Result<Outcome> {
        if amount == 0 {
            return Err(Error::ZeroAmount {
                what: "unbond amount",
            });
        }
        let key = (validator, delegator);
        let lots = self.bonds.get(&key).map_or(&[][..], |v| v.as_slice());
        let bonded = lots
            .iter()
            .try_fold(0u64, |a, l| add(a, l.amount, "bonded total"))?;
        if amount > bonded {
            return Err(Error::InsufficientStake {
                delegator,
                validator,
                requested: amount,
                bonded,
            });
        }
        // Lots are ordered by unlock time, so the unlocked ones are a prefix.
        let n_unlocked = lots.partition_point(|l| l.unlock_at_ms <= now);
        let unlocked = lots[..n_unlocked]
            .iter()
            .try_fold(0u64, |a, l| add(a, l.amount, "unlocked total"))?;
        if amount > unlocked {
            return Err(Error::StakeLocked {
                delegator,
                validator,
                requested: amount,
                unlocked,
                next_unlock_ms: lots.get(n_unlocked).map_or(u64::MAX, |l| l.unlock_at_ms),
            });
        }
        let node = self
            .nodes
            .get(&validator)
            .ok_or(Error::UnknownNode(validator))?;
        let new_stake = sub(node.stake, amount, "validator stake")?;
        let release_at_ms = add(now, self.config.unbonding_delay_ms, "release time")?;
        let pending = self.unbonding.get(&key).map_or(&[][..], |v| v.as_slice());
        let ppos = pending.partition_point(|p| p.release_at_ms < release_at_ms);
        let merged = match pending.get(ppos) {
            Some(p) if p.release_at_ms == release_at_ms => {
                Some(add(p.amount, amount, "unbonding")?)
            }
            _ => None,
        };
        // Commit.
        if let Some(lots) = self.bonds.get_mut(&key) {
            let mut left = amount;
            for lot in lots.iter_mut() {
                let take = left.min(lot.amount);
                lot.amount -= take;
                left -= take;
                if left == 0 {
                    break;
                }
            }
            lots.retain(|l| l.amount > 0);
            if lots.is_empty() {
                self.bonds.remove(&key);
            }
        }
        if let Some(n) = self.nodes.get_mut(&validator) {
            n.stake = new_stake;
        }
        let pending = self.unbonding.entry(key).or_default();
        match merged {
            Some(total) => pending[ppos].amount = total,
            None => pending.insert(
                ppos,
                Pending {
                    amount,
                    release_at_ms,
                },
            ),
        }
        Ok(Outcome::Unbonded {
            delegator,
            validator,
            amount,
            release_at_ms,
        })
    }

    fn withdraw(
        &mut self,
        balances: &mut (impl LiquidBalances + ?Sized),
        account: AccountId,
        validator: AccountId,
        now: u64,
    ) -> Result<Outcome> {
        let key = (validator, account);
        let pending = self.unbonding.get(&key).map_or(&[][..], |v| v.as_slice());
        let n_released = pending.partition_point(|p| p.release_at_ms <= now);
        let amount = pending[..n_released]
            .iter()
            .try_fold(0u64, |a, p| add(a, p.amount, "withdrawal"))?;
        if amount == 0 {
            return Err(Error::NothingToWithdraw { account, validator });
        }
        // Commit (the credit first: it is checked, so on error nothing was written).
        balances.credit(&account, amount)?;
        if let Some(p) = self.unbonding.get_mut(&key) {
            p.drain(..n_released);
            if p.is_empty() {
                self.unbonding.remove(&key);
            }
        }
        Ok(Outcome::Withdrawn { account, amount })
    }

    fn slash(&mut self, e: &DoubleSignEvidence) -> Result<Outcome> {
        let offender = e.offender();
        let node = self
            .nodes
            .get(&offender)
            .ok_or(Error::UnknownNode(offender))?;
        let offence = e.offence_id();
        if self.offences.contains(&offence) {
            return Err(Error::EvidenceReplayed {
                author: offender,
                level: e.level(),
                round: e.round(),
            });
        }
        let bps = self.config.slash_bps(e.level());
        let range = (offender, MIN_ID)..=(offender, MAX_ID);
        let bonded_burn = self
            .bonds
            .range(range.clone())
            .flat_map(|(_, lots)| lots)
            .try_fold(0u64, |a, l| {
                add(a, slash_part(l.amount, bps), "slashed stake")
            })?;
        let pending_burn = self
            .unbonding
            .range(range.clone())
            .flat_map(|(_, ps)| ps)
            .try_fold(0u64, |a, p| {
                add(a, slash_part(p.amount, bps), "slashed unbonding")
            })?;
        let burned = add(bonded_burn, pending_burn, "slashed total")?;
        let new_stake = sub(node.stake, bonded_burn, "validator stake")?;
        let new_burned = add(self.supply.burned, burned, "burned supply")?;
        let suspicion = node
            .suspicion
            .saturating_add(self.config.double_sign_suspicion);
        // Commit.
        let mut emptied = Vec::new();
        for (key, lots) in self.bonds.range_mut(range.clone()) {
            for l in lots.iter_mut() {
                l.amount -= slash_part(l.amount, bps);
            }
            lots.retain(|l| l.amount > 0);
            if lots.is_empty() {
                emptied.push(*key);
            }
        }
        for k in emptied.drain(..) {
            self.bonds.remove(&k);
        }
        for (key, ps) in self.unbonding.range_mut(range) {
            for p in ps.iter_mut() {
                p.amount -= slash_part(p.amount, bps);
            }
            ps.retain(|p| p.amount > 0);
            if ps.is_empty() {
                emptied.push(*key);
            }
        }
        for k in emptied {
            self.unbonding.remove(&k);
        }
        if let Some(n) = self.nodes.get_mut(&offender) {
            n.stake = new_stake;
            n.suspicion = suspicion;
        }
        self.supply.burned = new_burned;
        self.offences.insert(offence);
        Ok(Outcome::Slashed {
            offender,
            level: e.level(),
            round: e.round(),
            burned,
            suspicion,
            inactive: suspicion >= self.config.inactive_threshold,
        })
    }

    fn report_incident(
        &mut self,
        reporter: AccountId,
        node: AccountId,
        incident: Hash32,
    ) -> Result<Outcome> {
        if !self.term.representatives.contains(&reporter) {
            return Err(Error::NotRepresentative(reporter));
        }
        if let Some(r) = self.nodes.get(&reporter)
            && r.suspicion >= self.config.inactive_threshold
        {
            return Err(Error::NodeInactive {
                node: reporter,
                suspicion: r.suspicion,
            });
        }
        let rec = self.nodes.get(&node).ok_or(Error::UnknownNode(node))?;
        if self.incidents.contains(&(node, incident)) {
            return Err(Error::IncidentReplayed { node, incident });
        }
        let suspicion = rec.suspicion.saturating_add(self.config.incident_suspicion);
        // Commit.
        if let Some(rec) = self.nodes.get_mut(&node) {
            rec.suspicion = suspicion;
        }
        self.incidents.insert((node, incident));
        Ok(Outcome::IncidentRecorded {
            node,
            suspicion,
            inactive: suspicion >= self.config.inactive_threshold,
        })
    }

    fn record_contribution(&mut self, receipts: &[SignedReceipt], now: u64) -> Result<Outcome> {
        let current = self.config.epoch_of(now);
        let oldest = current.saturating_sub(self.config.claim_window_epochs);
        let latest_time = now.saturating_add(self.config.max_clock_skew_ms);
        let mut seen = BTreeSet::new();
        let mut credits = Vec::with_capacity(receipts.len());
        let mut minted: u64 = 0;
        let mut accrued_after = Vec::with_capacity(receipts.len());
        for r in receipts {
            let holder = AccountId(r.receipt.holder.0);
            let time_ms = r.receipt.time_ms;
            let node = self.nodes.get(&holder).ok_or(Error::UnknownNode(holder))?;
            if node.suspicion >= self.config.inactive_threshold {
                return Err(Error::NodeInactive {
                    node: holder,
                    suspicion: node.suspicion,
                });
            }
            let epoch = self.config.epoch_of(time_ms);
            if time_ms > latest_time || epoch < oldest {
                return Err(Error::ReceiptOutOfWindow {
                    holder,
                    time_ms,
                    now_ms: now,
                });
            }
            if self.rewarded.contains(&(holder, epoch)) || !seen.insert((holder, epoch)) {
                return Err(Error::AlreadyRewarded {
                    node: holder,
                    epoch,
                });
            }
            let amount = reward(
                score(&node.metrics, node.stake, self.config.units_per_token),
                node.kind,
                &self.config,
            )?;
            minted = add(minted, amount, "minted rewards")?;
            // Same holder may appear for two epochs: accumulate on the running value.
            let base = accrued_after
                .iter()
                .rev()
                .find(|(a, _)| *a == holder)
                .map_or(self.accrued_rewards(&holder), |(_, v)| *v);
            accrued_after.push((holder, add(base, amount, "accrued rewards")?));
            credits.push((holder, epoch, amount));
        }
        let new_minted = add(self.supply.minted, minted, "minted supply")?;
        // The total supply must stay representable.
        crate::Supply {
            minted: new_minted,
            ..self.supply
        }
        .total()?;
        // Commit.
        for (holder, value) in accrued_after {
            if value > 0 {
                self.accrued.insert(holder, value);
            }
        }
        self.rewarded.extend(seen);
        self.supply.minted = new_minted;
        Ok(Outcome::Rewarded { credits, minted })
    }

    fn claim_rewards(
        &mut self,
        balances: &mut (impl LiquidBalances + ?Sized),
        account: AccountId,
    ) -> Result<Outcome> {
        let amount = self.accrued_rewards(&account);
        if amount == 0 {
            return Err(Error::NothingToClaim { account });
        }
        balances.credit(&account, amount)?;
        self.accrued.remove(&account);
        Ok(Outcome::RewardsClaimed { account, amount })
    }

    /// When the current term may end (`started_at + term_ms`).
    pub fn term_ends_at_ms(&self) -> Result<u64> {
        add(self.term.started_at_ms, self.config.term_ms, "term end")
    }

    /// The epoch switch every replica applies at a checkpoint boundary, after that
    /// checkpoint's system txs, with the checkpoint's consensus time: if the term has run its
    /// length the election's winners become the next term's representatives
    /// (`Some(Outcome::Elected)`); otherwise nothing changes (`None`). Needs no signed tx,
    /// so the switch cannot be delayed by who happens to submit `EndTerm`.
    pub fn advance_term(&mut self, now_ms: u64) -> Result<Option<Outcome>> {
        if now_ms < self.term_ends_at_ms()? {
            return Ok(None);
        }
        self.end_term(now_ms).map(Some)
    }

    fn end_term(&mut self, now: u64) -> Result<Outcome> {
        let ends_at_ms = add(self.term.started_at_ms, self.config.term_ms, "term end")?;
        if now < ends_at_ms {
            return Err(Error::TermNotOver {
                term: self.term.index,
                ends_at_ms,
                now_ms: now,
            });
        }
        let index = add(self.term.index, 1, "term index")?;
        let representatives: Vec<AccountId> = self.election().iter().map(|c| c.account).collect();
        self.term = crate::Term {
            index,
            started_at_ms: now,
            representatives: representatives.clone(),
        };
        Ok(Outcome::Elected {
            term: index,
            representatives,
        })
    }
}

//! Liquid balances as a port: dpos debits a bond and credits a withdrawal or a reward claim
//! through [`LiquidBalances`], so the node can keep one balance state shared with transfers
//! (the ledger) while dpos's own `BTreeMap` stays the in-crate implementation.
//!
//! A book may also keep the **account nonce** ([`LiquidBalances::keeps_nonces`]): an
//! account has one nonce space across every kind of tx it signs (transfers and system txs
//! alike, the same (sender, nonce) key admission deduplicates on), so a book that executes
//! transfers owns it and dpos checks and consumes a system tx's nonce through the book
//! instead of counting its own.

use crate::{Error, Result};
use dag_core::{AccountId, TxId};
use std::collections::BTreeMap;

/// Where liquid (spendable) balances live. Both writes are checked and all-or-nothing: an
/// `Err` leaves every balance exactly as it was.
pub trait LiquidBalances {
    /// The account's liquid balance (0 when unknown).
    fn balance(&self, account: &AccountId) -> u64;
    /// Adds `amount`; [`Error::Overflow`] (and no change) if the balance would overflow.
    /// Returns the new balance.
    fn credit(&mut self, account: &AccountId, amount: u64) -> Result<u64>;
    /// Subtracts `amount`; [`Error::InsufficientBalance`] (and no change) if the balance is
    /// smaller. Returns the new balance.
    fn debit(&mut self, account: &AccountId, amount: u64) -> Result<u64>;

    /// True when this book keeps the accounts' nonces: dpos then refuses a system tx whose
    /// (sender, nonce) the book reports used ([`Error::NonceReused`]), consumes the nonce of
    /// an applied one with [`LiquidBalances::use_nonce`], and keeps none of its own. False
    /// (the default): dpos counts nonces itself, 0, 1, 2, … per sender.
    fn keeps_nonces(&self) -> bool {
        false
    }

    /// Whether `account` already used `nonce` (for any kind of tx). Only asked when
    /// [`LiquidBalances::keeps_nonces`] is true.
    fn nonce_used(&self, _account: &AccountId, _nonce: u64) -> bool {
        false
    }

    /// Records that the system tx `tx` of `account` with `nonce` was applied. Only called
    /// when [`LiquidBalances::keeps_nonces`] is true, after [`LiquidBalances::nonce_used`]
    /// answered false for the same pair.
    fn use_nonce(&mut self, _account: &AccountId, _nonce: u64, _tx: &TxId) -> Result<()> {
        Ok(())
    }
}

/// The in-crate implementation: zero balances are removed, so equal states encode to equal
/// snapshot bytes.
impl LiquidBalances for BTreeMap<AccountId, u64> {
    fn balance(&self, account: &AccountId) -> u64 {
        self.get(account).copied().unwrap_or(0)
    }

    fn credit(&mut self, account: &AccountId, amount: u64) -> Result<u64> {
        let now = self
            .balance(account)
            .checked_add(amount)
            .ok_or(Error::Overflow { what: "balance" })?;
        if now > 0 {
            self.insert(*account, now);
        }
        Ok(now)
    }

    fn debit(&mut self, account: &AccountId, amount: u64) -> Result<u64> {
        let available = self.balance(account);
        let left = available
            .checked_sub(amount)
            .ok_or(Error::InsufficientBalance {
                account: *account,
                needed: amount,
                available,
            })?;
        if left == 0 {
            self.remove(account);
        } else {
            self.insert(*account, left);
        }
        Ok(left)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn acc(b: u8) -> AccountId {
        AccountId::from_bytes([b; 32])
    }

    #[test]
    fn credit_and_debit_are_checked_and_leave_no_trace_on_error() {
        let mut m: BTreeMap<AccountId, u64> = BTreeMap::new();
        assert_eq!(m.credit(&acc(1), 10).unwrap(), 10);
        assert_eq!(m.debit(&acc(1), 4).unwrap(), 6);
        let before = m.clone();
        assert!(matches!(
            m.debit(&acc(1), 7),
            Err(Error::InsufficientBalance {
                needed: 7,
                available: 6,
                ..
            })
        ));
        assert!(matches!(
            m.credit(&acc(1), u64::MAX),
            Err(Error::Overflow { .. })
        ));
        assert_eq!(m, before);
        // A zero balance is not stored (one snapshot encoding per state).
        assert_eq!(m.debit(&acc(1), 6).unwrap(), 0);
        assert!(m.is_empty());
        assert_eq!(m.credit(&acc(2), 0).unwrap(), 0);
        assert!(m.is_empty());
    }
}

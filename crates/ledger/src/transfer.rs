//! Accounts as objects, transfers as the ledger reads them, the rule that binds a
//! transfer's read/write sets to its sender and receiver, and execution outcomes.

use dag_core::{AccountId, DecodeError, ObjectId, Reader, Tx, TxId, TxKind, Writer};

/// The object id of an account: the account id's 32 bytes. Every account is one object.
pub fn account_object(account: &AccountId) -> ObjectId {
    ObjectId::from_bytes(*account.as_bytes())
}

/// One account: its balance, how many times it was written, and the next nonce above
/// every nonce it has sent with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Account {
    /// Balance in the smallest unit.
    pub balance: u64,
    /// Incremented on every write (credit or debit) of the account object.
    pub version: u64,
    /// One above the highest nonce of a transfer it sent that was applied (0: none).
    pub next_nonce: u64,
}

impl Account {
    /// Encoded length.
    pub const LEN: usize = 24;

    /// balance u64 ‖ version u64 ‖ next_nonce u64 (little endian).
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut w = Writer::with_capacity(Self::LEN);
        w.u64(self.balance).u64(self.version).u64(self.next_nonce);
        let v = w.finish();
        let mut out = [0; Self::LEN];
        out.copy_from_slice(&v);
        out
    }

    /// Strict decoding of [`Account::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let a = Account {
            balance: r.u64("balance")?,
            version: r.u64("version")?,
            next_nonce: r.u64("next_nonce")?,
        };
        r.finish()?;
        Ok(a)
    }
}

/// A committed FRESH_TX as the ledger executes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The tx id.
    pub id: TxId,
    /// Debited account (the signer).
    pub sender: AccountId,
    /// Credited account.
    pub receiver: AccountId,
    /// Amount moved.
    pub amount: u64,
    /// The sender's nonce.
    pub nonce: u64,
    /// Declared read set (ascending).
    pub read_set: Vec<ObjectId>,
    /// Declared write set (ascending).
    pub write_set: Vec<ObjectId>,
}

impl Transfer {
    /// The transfer carried by `tx` (id `id`), or `None` when `tx` is not a FRESH_TX (other
    /// kinds belong to other state machines).
    pub fn from_tx(id: TxId, tx: &Tx) -> Option<Self> {
        (tx.kind == TxKind::FreshTx).then(|| Transfer {
            id,
            sender: tx.sender,
            receiver: tx.receiver,
            amount: tx.amount,
            nonce: tx.nonce,
            read_set: tx.read_set.clone(),
            write_set: tx.write_set.clone(),
        })
    }

    /// The objects this transfer may touch when executed: its sets plus its two accounts.
    /// Two transfers whose footprints are disjoint commute; the parallel executor orders
    /// only overlapping ones (in commit order).
    pub fn footprint(&self) -> Vec<ObjectId> {
        let mut f = Vec::with_capacity(self.read_set.len() + self.write_set.len() + 2);
        f.extend_from_slice(&self.read_set);
        f.extend_from_slice(&self.write_set);
        f.push(account_object(&self.sender));
        f.push(account_object(&self.receiver));
        f.sort_unstable();
        f.dedup();
        f
    }
}

/// The binding rule (see the crate docs): a FRESH_TX either declares no sets at all (the
/// implicit form: the ledger derives the write set {sender, receiver}), or its write set
/// names the sender's and the receiver's account objects. Returns the first account
/// object a declared write set omits.
pub fn check_sets(
    sender: &AccountId,
    receiver: &AccountId,
    read_set: &[ObjectId],
    write_set: &[ObjectId],
) -> Result<(), ObjectId> {
    if read_set.is_empty() && write_set.is_empty() {
        return Ok(());
    }
    for a in [sender, receiver] {
        let o = account_object(a);
        if write_set.binary_search(&o).is_err() {
            return Err(o);
        }
    }
    Ok(())
}

/// Why a committed transfer did not move money. Decided in commit order, identically on
/// every representative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// The sender's balance is below the amount.
    InsufficientFunds {
        /// The sender's balance when the transfer executed.
        balance: u64,
        /// The amount asked.
        amount: u64,
    },
    /// The declared write set omits an account the transfer touches.
    SetsDoNotCover {
        /// The omitted account object.
        missing: ObjectId,
    },
    /// The sender already had a transfer with this nonce applied.
    NonceReused {
        /// The nonce.
        nonce: u64,
    },
    /// The receiver's balance would pass `u64::MAX`.
    BalanceOverflow,
    /// A cross-city transfer to a city that is not in the directory (or to this city, or
    /// a payload naming no valid city).
    UnknownCity,
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailReason::InsufficientFunds { balance, amount } => {
                write!(f, "insufficient funds: balance {balance}, amount {amount}")
            }
            FailReason::SetsDoNotCover { missing } => {
                write!(f, "write set omits touched account object {missing}")
            }
            FailReason::NonceReused { nonce } => write!(f, "nonce {nonce} already used"),
            FailReason::BalanceOverflow => write!(f, "receiver balance would overflow"),
            FailReason::UnknownCity => write!(f, "the receiver's city is not a known other city"),
        }
    }
}

/// The execution outcome of a committed transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `amount` moved from sender to receiver.
    Applied,
    /// Nothing moved; the reason.
    Failed(FailReason),
}

impl Outcome {
    /// code u8 (0 applied, 1 insufficient ‖ balance u64 ‖ amount u64, 2 sets ‖ object 32,
    /// 3 nonce ‖ nonce u64, 4 overflow, 5 unknown city).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(17);
        match self {
            Outcome::Applied => {
                w.u8(0);
            }
            Outcome::Failed(FailReason::InsufficientFunds { balance, amount }) => {
                w.u8(1).u64(*balance).u64(*amount);
            }
            Outcome::Failed(FailReason::SetsDoNotCover { missing }) => {
                w.u8(2).raw(missing.as_bytes());
            }
            Outcome::Failed(FailReason::NonceReused { nonce }) => {
                w.u8(3).u64(*nonce);
            }
            Outcome::Failed(FailReason::BalanceOverflow) => {
                w.u8(4);
            }
            Outcome::Failed(FailReason::UnknownCity) => {
                w.u8(5);
            }
        }
        w.finish()
    }

    /// Strict decoding of [`Outcome::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let o = match r.u8("outcome")? {
            0 => Outcome::Applied,
            1 => Outcome::Failed(FailReason::InsufficientFunds {
                balance: r.u64("balance")?,
                amount: r.u64("amount")?,
            }),
            2 => Outcome::Failed(FailReason::SetsDoNotCover {
                missing: ObjectId::from_bytes(r.bytes32("missing")?),
            }),
            3 => Outcome::Failed(FailReason::NonceReused {
                nonce: r.u64("nonce")?,
            }),
            4 => Outcome::Failed(FailReason::BalanceOverflow),
            5 => Outcome::Failed(FailReason::UnknownCity),
            _ => {
                return Err(DecodeError::Invalid {
                    field: "outcome",
                    reason: "unknown outcome code",
                });
            }
        };
        r.finish()?;
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn acct(b: u8) -> AccountId {
        AccountId::from_bytes([b; 32])
    }

    #[test]
    fn binding_rule() {
        let (s, r) = (acct(1), acct(2));
        let o = |a: &AccountId| account_object(a);
        let x = ObjectId::from_bytes([9; 32]);
        let sorted = |mut v: Vec<ObjectId>| {
            v.sort();
            v
        };
        // Implicit form.
        assert_eq!(check_sets(&s, &r, &[], &[]), Ok(()));
        // Both accounts written (extra objects allowed).
        assert_eq!(
            check_sets(&s, &r, &[], &sorted(vec![o(&s), o(&r), x])),
            Ok(())
        );
        // Receiver omitted, sender omitted, only in the read set.
        assert_eq!(check_sets(&s, &r, &[], &[o(&s)]), Err(o(&r)));
        assert_eq!(check_sets(&s, &r, &[], &[o(&r)]), Err(o(&s)));
        assert_eq!(
            check_sets(&s, &r, &sorted(vec![o(&s), o(&r)]), &[]),
            Err(o(&s))
        );
    }

    #[test]
    fn encodings_round_trip_and_refuse_junk() {
        let a = Account {
            balance: 5,
            version: 6,
            next_nonce: 7,
        };
        assert_eq!(Account::decode(&a.encode()).unwrap(), a);
        assert!(Account::decode(&a.encode()[..23]).is_err());
        for o in [
            Outcome::Applied,
            Outcome::Failed(FailReason::InsufficientFunds {
                balance: 1,
                amount: 2,
            }),
            Outcome::Failed(FailReason::SetsDoNotCover {
                missing: ObjectId::from_bytes([3; 32]),
            }),
            Outcome::Failed(FailReason::NonceReused { nonce: 4 }),
            Outcome::Failed(FailReason::BalanceOverflow),
            Outcome::Failed(FailReason::UnknownCity),
        ] {
            assert_eq!(Outcome::decode(&o.encode()).unwrap(), o);
        }
        assert!(Outcome::decode(&[9]).is_err());
        assert!(Outcome::decode(&[0, 0]).is_err());
    }
}

//! The ledger's errors: storage failures and corrupt records. A tx that cannot be executed
//! is not an error but an [`Outcome`](crate::Outcome).

use dag_core::AccountId;
use std::path::PathBuf;

/// Result with the ledger's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error("ledger store {path}: {source}")]
    Store {
        /// Database file.
        path: PathBuf,
        /// The redb error.
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored record does not decode.
    #[error("ledger store {path}: corrupt {table} record: {reason}")]
    Corrupt {
        /// Database file.
        path: PathBuf,
        /// Which table.
        table: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A checkpoint arrived out of order (one would be skipped).
    #[error("ledger: checkpoint {seq} arrived before {expected}")]
    Gap {
        /// Offered sequence.
        seq: u64,
        /// Expected sequence.
        expected: u64,
    },
    /// The store was created from another genesis allocation than the one given.
    #[error("ledger store {path}: created from genesis root {stored:?}, opened with {given:?}")]
    GenesisMismatch {
        /// Database file.
        path: PathBuf,
        /// Root stored at creation.
        stored: dag_core::Hash32,
        /// Root of the allocation given now.
        given: dag_core::Hash32,
    },
    /// A genesis allocation sums past `u64::MAX`.
    #[error("genesis allocation overflows u64 at account {account}")]
    SupplyOverflow {
        /// The account whose balance made the sum overflow.
        account: AccountId,
    },
    /// A debit larger than the balance (balance hooks inside one apply).
    #[error("account {account}: debit of {amount} exceeds balance {balance}")]
    Insufficient {
        /// The account.
        account: AccountId,
        /// Its balance.
        balance: u64,
        /// The debit asked.
        amount: u64,
    },
    /// The account already used this nonce (balance hooks inside one apply).
    #[error("account {account}: nonce {nonce} was already used")]
    NonceReused {
        /// The account.
        account: AccountId,
        /// The nonce.
        nonce: u64,
    },
    /// A credit past `u64::MAX` (balance hooks inside one apply).
    #[error("account {account}: credit of {amount} overflows balance {balance}")]
    Overflow {
        /// The account.
        account: AccountId,
        /// Its balance.
        balance: u64,
        /// The credit asked.
        amount: u64,
    },
}

impl Error {
    pub(crate) fn store(path: &std::path::Path, e: impl Into<redb::Error>) -> Self {
        Error::Store {
            path: path.to_path_buf(),
            source: Box::new(e.into()),
        }
    }
}

//! The storage crate's error type: every variant names the stripe, shard or node it is about.

use dag_core::StripeId;
use std::fmt;
use thiserror::Error;

/// Why one shard was not usable. A shard with any of these problems counts as missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardProblem {
    /// The bytes do not start with the shard magic `CCSH`: not a City Chain shard.
    ForeignHeader,
    /// A format version this build does not read.
    UnsupportedVersion(u8),
    /// A codec id this build does not know.
    UnknownCodec(u8),
    /// k, m or n outside the allowed range.
    BadParams {
        /// Data shards claimed.
        k: u16,
        /// Parity shards claimed.
        m: u16,
    },
    /// Shard index not below k + m.
    IndexOutOfRange {
        /// Index claimed.
        index: u16,
        /// k + m.
        n: u16,
    },
    /// The shard's data does not hash to the hash in its header (or in the manifest).
    HashMismatch,
    /// The shard belongs to another stripe.
    WrongStripe {
        /// Stripe the shard claims.
        got: StripeId,
    },
    /// The header's data length does not match what k, codec and the stripe length imply.
    WrongLength {
        /// Length implied by the header.
        expected: usize,
        /// Length found.
        got: usize,
    },
    /// The header disagrees with the other shards or with the manifest.
    Inconsistent {
        /// Which field disagrees.
        field: &'static str,
    },
    /// A second, different shard with an index already seen.
    Duplicate,
    /// The encoding is malformed (truncated, trailing bytes, over-long field).
    Malformed(String),
}

impl fmt::Display for ShardProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardProblem::ForeignHeader => f.write_str("foreign header (no CCSH magic)"),
            ShardProblem::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            ShardProblem::UnknownCodec(c) => write!(f, "unknown codec id {c}"),
            ShardProblem::BadParams { k, m } => write!(f, "invalid k={k}, m={m}"),
            ShardProblem::IndexOutOfRange { index, n } => {
                write!(f, "index {index} out of range (n = {n})")
            }
            ShardProblem::HashMismatch => f.write_str("data fails its BLAKE3 hash check"),
            ShardProblem::WrongStripe { got } => write!(f, "belongs to stripe {}", got.short()),
            ShardProblem::WrongLength { expected, got } => {
                write!(f, "data is {got} bytes, expected {expected}")
            }
            ShardProblem::Inconsistent { field } => {
                write!(f, "{field} disagrees with the other shards / manifest")
            }
            ShardProblem::Duplicate => f.write_str("conflicting duplicate of an index"),
            ShardProblem::Malformed(why) => write!(f, "malformed: {why}"),
        }
    }
}

/// A shard that was rejected, and why (index as claimed by its header, if readable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The index the shard claimed.
    pub index: Option<u16>,
    /// What was wrong.
    pub problem: ShardProblem,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "shard {i}: {}", self.problem),
            None => write!(f, "shard ?: {}", self.problem),
        }
    }
}

fn list(rejected: &[Rejected]) -> String {
    if rejected.is_empty() {
        return "none rejected".into();
    }
    let parts: Vec<String> = rejected.iter().map(ToString::to_string).collect();
    format!("rejected: {}", parts.join("; "))
}

/// Errors of the storage crate.
#[derive(Debug, Error)]
pub enum Error {
    /// k / m outside 1 ≤ k, 1 ≤ m, k + m ≤ 32.
    #[error("invalid erasure parameters k={k}, m={m}: {reason}")]
    InvalidParams {
        /// Data shards.
        k: u16,
        /// Parity shards.
        m: u16,
        /// Why.
        reason: &'static str,
    },
    /// A stripe larger than [`crate::MAX_STRIPE_LEN`].
    #[error("stripe is {len} bytes, over the limit of {max}")]
    StripeTooLarge {
        /// Length given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A single shard failed its checks.
    #[error("bad shard {} of stripe {}: {problem}", index.map_or("?".to_string(), |i| i.to_string()), stripe_id.map_or("?".to_string(), |s| s.short()))]
    BadShard {
        /// Stripe the shard claims (if its header was readable).
        stripe_id: Option<StripeId>,
        /// Index the shard claims (if readable).
        index: Option<u16>,
        /// What was wrong.
        problem: ShardProblem,
    },
    /// Too few good shards to rebuild the stripe.
    #[error("stripe {}: found {good} good shards, need {needed}; {}", stripe_id.short(), list(rejected))]
    NotEnoughShards {
        /// The stripe being decoded.
        stripe_id: StripeId,
        /// Good shards found.
        good: usize,
        /// Shards needed (k).
        needed: usize,
        /// Shards that were rejected and why.
        rejected: Vec<Rejected>,
    },
    /// Shards passed their own checks but the rebuilt bytes do not hash to the stripe id:
    /// a forged, self-consistent shard was among them. Decode against a manifest to rule out.
    #[error("stripe {}: rebuilt bytes do not hash to the stripe id", stripe_id.short())]
    StripeHashMismatch {
        /// The stripe.
        stripe_id: StripeId,
    },
    /// The underlying Reed-Solomon library refused (should not happen after our checks).
    #[error("codec {codec} failed: {reason}")]
    Codec {
        /// Codec name.
        codec: &'static str,
        /// Library message.
        reason: String,
    },
    /// A micro-batch or index entry did not decode.
    #[error("malformed {what}: {source}")]
    Decode {
        /// What was decoded.
        what: &'static str,
        /// Why.
        source: dag_core::DecodeError,
    },
    /// A micro-batch with no transactions.
    #[error("a micro-batch needs at least one transaction")]
    EmptyBatch,
    /// A tx location that does not point at a tx in its stripe.
    #[error("tx location (offset {offset}, len {len}) is not a tx of stripe {}", stripe_id.short())]
    BadLocation {
        /// Stripe.
        stripe_id: StripeId,
        /// Offset.
        offset: u32,
        /// Length.
        len: u32,
    },
    /// Putting this shard would exceed the node's quota; nothing was written.
    #[error("quota exceeded: storing {needed} bytes with {used} of {quota} used")]
    OverQuota {
        /// Bytes the put needs.
        needed: u64,
        /// Bytes in use.
        used: u64,
        /// Quota.
        quota: u64,
    },
    /// Putting this shard would leave less than the free-space floor on the disk; nothing
    /// was written.
    #[error(
        "disk nearly full: storing {needed} bytes would leave less than the {floor}-byte floor ({free} bytes free)"
    )]
    DiskFull {
        /// Bytes the put needs.
        needed: u64,
        /// Bytes free on the file system.
        free: u64,
        /// The configured floor.
        floor: u64,
    },
    /// The store hit an I/O error (ENOSPC, EIO …) and refuses writes until it is reopened.
    #[error("shard store unavailable until reopened after an I/O error: {reason}")]
    StoreUnavailable {
        /// The I/O error that took it down.
        reason: String,
    },
    /// A different shard is already stored under the same (stripe, index).
    #[error("a different shard {index} of stripe {} is already stored", stripe_id.short())]
    ShardConflict {
        /// Stripe.
        stripe_id: StripeId,
        /// Index.
        index: u16,
    },
    /// A stored shard failed its checks on read; it is never returned.
    #[error("shard {index} of stripe {} is corrupt on disk: {problem}", stripe_id.short())]
    CorruptOnDisk {
        /// Stripe.
        stripe_id: StripeId,
        /// Index.
        index: u16,
        /// What was wrong.
        problem: ShardProblem,
    },
    /// The embedded database failed.
    #[error("shard store {op} failed: {source}")]
    Db {
        /// Operation.
        op: &'static str,
        /// redb's error.
        source: Box<redb::Error>,
    },
    /// A receipt did not verify or does not match the stripe's layout.
    #[error("receipt for shard {index} of stripe {}: {reason}", stripe_id.short())]
    BadReceipt {
        /// Stripe.
        stripe_id: StripeId,
        /// Index the receipt names.
        index: u16,
        /// Why it was rejected.
        reason: String,
    },
    /// Two receipts from the same holder, or for the same index.
    #[error("stripe {}: {what}", stripe_id.short())]
    DuplicateReceipt {
        /// Stripe.
        stripe_id: StripeId,
        /// What was duplicated.
        what: String,
    },
    /// Fewer verified receipts than required.
    #[error("stripe {}: {got} valid receipts, need {needed}", stripe_id.short())]
    TooFewReceipts {
        /// Stripe.
        stripe_id: StripeId,
        /// Valid receipts.
        got: usize,
        /// Required.
        needed: usize,
    },
    /// A storage challenge answer did not match.
    #[error("challenge failed for shard {index} of stripe {}", stripe_id.short())]
    ChallengeFailed {
        /// Stripe.
        stripe_id: StripeId,
        /// Index.
        index: u16,
    },
    /// Too few live holders remain to rebuild the stripe.
    #[error("stripe {}: {available} live shards remain, {needed} needed to rebuild", stripe_id.short())]
    Unrecoverable {
        /// Stripe.
        stripe_id: StripeId,
        /// Shards on live nodes.
        available: usize,
        /// k.
        needed: usize,
    },
    /// No live node can take a replacement shard.
    #[error("stripe {}: no live node can take shard {index}", stripe_id.short())]
    NoCandidate {
        /// Stripe.
        stripe_id: StripeId,
        /// Index that needs a home.
        index: u16,
    },
}

impl Error {
    pub(crate) fn db(op: &'static str, e: impl Into<redb::Error>) -> Self {
        Error::Db {
            op,
            source: Box::new(e.into()),
        }
    }
}

/// Result with the storage [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

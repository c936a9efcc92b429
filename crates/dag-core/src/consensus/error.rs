//! Typed errors of the consensus rules. Every rejection happens before any state changes:
//! a rejected batch, vote or certificate is neither stored nor counted.

use super::{BatchDigest, Equivocation, Round, Stake};
use crate::{DecodeError, NodeId, SignatureError};
use thiserror::Error;

/// Why a consensus message or value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConsensusError {
    /// Bytes did not decode.
    #[error("malformed consensus message: {0}")]
    Decode(#[from] DecodeError),
    /// The author or voter is not in the committee.
    #[error("{role} {node} is not a member of the committee")]
    UnknownAuthority {
        /// "author", "voter", "sender".
        role: &'static str,
        /// The unknown node.
        node: NodeId,
    },
    /// A signature is missing, malformed or does not verify.
    #[error("bad signature on {what}: {source}")]
    BadSignature {
        /// What was being verified ("batch 9f2c… round 4 by …", "vote by … for …").
        what: String,
        /// The verifier's reason.
        source: SignatureError,
    },
    /// A vote names a batch this node did not propose (or no longer aggregates).
    #[error("vote by {voter} for unknown batch {digest}")]
    UnknownBatch {
        /// The batch the vote names.
        digest: BatchDigest,
        /// Who voted.
        voter: NodeId,
    },
    /// A certificate's voters do not reach the quorum.
    #[error(
        "certificate of batch {digest} has {stake} of {total} stake, below the quorum (3 × stake ≥ 2 × total + 1)"
    )]
    InsufficientStake {
        /// The certified batch.
        digest: BatchDigest,
        /// Stake of the distinct voters.
        stake: Stake,
        /// Committee total stake.
        total: Stake,
    },
    /// A voter appears twice in a certificate.
    #[error("certificate of batch {digest} lists voter {voter} twice")]
    DuplicateSigner {
        /// The certified batch.
        digest: BatchDigest,
        /// The repeated voter.
        voter: NodeId,
    },
    /// A parent is not from the round just below the batch.
    #[error("batch {digest} of round {round} names parent {parent} of round {parent_round}")]
    WrongParentRound {
        /// The child batch.
        digest: BatchDigest,
        /// Its round.
        round: Round,
        /// The parent.
        parent: BatchDigest,
        /// The parent's round.
        parent_round: Round,
    },
    /// Two parents share one author, or one parent is listed twice.
    #[error("batch {digest} names two parents by {author}")]
    DuplicateParent {
        /// The child batch.
        digest: BatchDigest,
        /// The repeated parent author.
        author: NodeId,
    },
    /// The parents' authors do not reach the quorum.
    #[error(
        "batch {digest} of round {round} has parents with {stake} of {total} stake, below the quorum"
    )]
    InsufficientParentStake {
        /// The child batch.
        digest: BatchDigest,
        /// Its round.
        round: Round,
        /// Stake of the parents' authors.
        stake: Stake,
        /// Committee total stake.
        total: Stake,
    },
    /// A round-0 (genesis) batch names parents.
    #[error("genesis batch {digest} names {count} parents; round 0 has none")]
    GenesisWithParents {
        /// The batch.
        digest: BatchDigest,
        /// How many parents it names.
        count: usize,
    },
    /// Some parents or weak links are not in the local DAG yet (fetch them, then retry).
    #[error(
        "batch {digest} of round {round} has {} parents or weak links not in the DAG yet",
        missing.len()
    )]
    MissingParents {
        /// The child batch.
        digest: BatchDigest,
        /// Its round.
        round: Round,
        /// The absent parents and weak links.
        missing: Vec<BatchDigest>,
    },
    /// A weak link names a batch of round `round − 1` or later (weak links reach only
    /// rounds ≤ `round − 2`; the previous round is named by parents).
    #[error(
        "batch {digest} of round {round} weak-links {link} of round {link_round}; weak links reach rounds up to {}",
        round.saturating_sub(2)
    )]
    WrongWeakLinkRound {
        /// The linking batch.
        digest: BatchDigest,
        /// Its round.
        round: Round,
        /// The linked batch.
        link: BatchDigest,
        /// The linked batch's round.
        link_round: Round,
    },
    /// A weak link is listed twice.
    #[error("batch {digest} lists weak link {link} twice")]
    DuplicateWeakLink {
        /// The linking batch.
        digest: BatchDigest,
        /// The repeated link.
        link: BatchDigest,
    },
    /// A batch of round 0 or 1 has weak links (there is no round ≤ `round − 2` to link).
    #[error("batch {digest} of round {round} has {count} weak links; rounds 0 and 1 have none")]
    WeakLinksTooEarly {
        /// The batch.
        digest: BatchDigest,
        /// Its round.
        round: Round,
        /// How many weak links it names.
        count: usize,
    },
    /// A list is over its documented limit.
    #[error("{field} has {len} entries, over the limit of {max}")]
    Oversized {
        /// The list ("batch items", "parents", "weak links", "votes").
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message of another epoch's consensus instance (each epoch's committee runs its own;
    /// messages of other epochs are ignored).
    #[error("a batch of epoch {epoch} reached the consensus of epoch {expected}")]
    WrongEpoch {
        /// The batch's epoch.
        epoch: u64,
        /// The epoch of the receiving instance (its committee's).
        expected: u64,
    },
    /// An epoch ≥ 2²⁴, or a round ≥ 2⁴⁰ in an epoch ≥ 1 (the signed round would not be
    /// unique).
    #[error("epoch {epoch} / round {round} out of range")]
    EpochOutOfRange {
        /// The header's epoch.
        epoch: u64,
        /// The header's round.
        round: Round,
    },
    /// One author signed two different batches for one round.
    #[error("equivocation by {} in round {}", .0.author(), .0.round())]
    Equivocation(Box<Equivocation>),
    /// Evidence that is not evidence (same digest, different rounds or authors).
    #[error("not an equivocation: {0}")]
    NotEquivocation(&'static str),
}

/// Result with [`ConsensusError`].
pub type Result<T> = std::result::Result<T, ConsensusError>;

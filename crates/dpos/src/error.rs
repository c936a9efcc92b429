//! The error type of the dpos crate: every rejected system tx says exactly why.

use crate::SlashLevel;
use dag_core::{AccountId, DecodeError, Hash32, NodeId, SignatureError};
use thiserror::Error;

/// Why a system tx, a snapshot or a configuration was rejected. A rejected `apply` never
/// changes the state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// Bytes (payload, evidence, receipt, snapshot field) did not decode.
    #[error("malformed encoding: {0}")]
    Decode(#[from] DecodeError),
    /// The tx signature, key binding or an inner receipt signature did not verify.
    #[error("signature check failed: {0}")]
    Signature(#[from] dag_core::Error),
    /// The carrying tx is not a well-formed system tx envelope.
    #[error("not a system tx envelope: {reason}")]
    Envelope {
        /// What is wrong (kind, amount, ...).
        reason: &'static str,
    },
    /// Double-sign evidence is structurally wrong (authors, rounds, digests, keys differ).
    #[error("invalid double-sign evidence: {reason}")]
    BadEvidence {
        /// What is wrong.
        reason: &'static str,
    },
    /// One of the two signed headers of double-sign evidence does not verify.
    #[error("double-sign evidence header {which} by {author:?} at round {round}: {source}")]
    EvidenceSignature {
        /// 0 for the first header, 1 for the second.
        which: u8,
        /// The accused author.
        author: NodeId,
        /// The round.
        round: u64,
        /// The verifier's reason.
        source: SignatureError,
    },
    /// This offence (author, level, round) was already punished.
    #[error("evidence replayed: {author:?} at round {round} ({level:?}) was already slashed")]
    EvidenceReplayed {
        /// The author.
        author: AccountId,
        /// The level.
        level: SlashLevel,
        /// The round.
        round: u64,
    },
    /// The tx nonce is not the sender's next nonce (replayed or out of order).
    #[error("bad nonce for {account:?}: expected {expected}, got {got}")]
    BadNonce {
        /// Sender.
        account: AccountId,
        /// Next expected nonce.
        expected: u64,
        /// Nonce in the tx.
        got: u64,
    },
    /// The account already used this nonce (for a transfer or a system tx), in a book that
    /// keeps one nonce per account across kinds ([`crate::LiquidBalances::keeps_nonces`]).
    #[error("nonce {nonce} of {account:?} was already used")]
    NonceReused {
        /// Sender.
        account: AccountId,
        /// Nonce in the tx.
        nonce: u64,
    },
    /// An amount of zero where a positive amount is required.
    #[error("{what} must be positive")]
    ZeroAmount {
        /// Which amount.
        what: &'static str,
    },
    /// Checked arithmetic overflowed.
    #[error("arithmetic overflow in {what}")]
    Overflow {
        /// Which computation.
        what: &'static str,
    },
    /// Not enough liquid balance.
    #[error("{account:?} has {available} liquid, needs {needed}")]
    InsufficientBalance {
        /// The account.
        account: AccountId,
        /// Amount requested.
        needed: u64,
        /// Liquid balance.
        available: u64,
    },
    /// Unbonding more than is bonded.
    #[error("{delegator:?} has {bonded} bonded to {validator:?}, cannot unbond {requested}")]
    InsufficientStake {
        /// Delegator.
        delegator: AccountId,
        /// Validator.
        validator: AccountId,
        /// Amount requested.
        requested: u64,
        /// Amount bonded.
        bonded: u64,
    },
    /// Unbonding stake still inside its lock (90 days by default).
    #[error(
        "stake of {delegator:?} to {validator:?} is locked: {unlocked} of {requested} unlocked, next unlock at {next_unlock_ms} ms"
    )]
    StakeLocked {
        /// Delegator.
        delegator: AccountId,
        /// Validator.
        validator: AccountId,
        /// Amount requested.
        requested: u64,
        /// Amount whose lock has expired.
        unlocked: u64,
        /// When the next locked lot unlocks.
        next_unlock_ms: u64,
    },
    /// Nothing has finished unbonding yet.
    #[error("nothing to withdraw for {account:?} from {validator:?}")]
    NothingToWithdraw {
        /// Account.
        account: AccountId,
        /// Validator.
        validator: AccountId,
    },
    /// No accrued rewards to claim.
    #[error("no accrued rewards for {account:?}")]
    NothingToClaim {
        /// Account.
        account: AccountId,
    },
    /// A vote (delegation) for an account that is not a registered full-node candidate.
    #[error("unknown candidate {0:?}")]
    UnknownCandidate(AccountId),
    /// The account is not a registered node.
    #[error("unknown node {0:?}")]
    UnknownNode(AccountId),
    /// An endpoint that is not `host:port` / `http(s)://host:port` (see
    /// [`crate::validate_endpoint`]).
    #[error("invalid endpoint: {reason}")]
    InvalidEndpoint {
        /// What is wrong.
        reason: &'static str,
    },
    /// Only a registered full node may publish a consensus endpoint.
    #[error("{0:?} is not a registered full node")]
    NotFullNode(AccountId),
    /// The node is already registered.
    #[error("node {0:?} is already registered")]
    AlreadyRegistered(AccountId),
    /// The node is inactive (suspicion at or over the threshold).
    #[error("node {node:?} is inactive (suspicion {suspicion})")]
    NodeInactive {
        /// Node.
        node: AccountId,
        /// Its suspicion.
        suspicion: u32,
    },
    /// Only a current representative may do this.
    #[error("{0:?} is not a current representative")]
    NotRepresentative(AccountId),
    /// This incident was already reported against this node.
    #[error("incident {incident:?} against {node:?} was already recorded")]
    IncidentReplayed {
        /// Node.
        node: AccountId,
        /// Incident digest.
        incident: Hash32,
    },
    /// A metric outside its range.
    #[error("metric {field} = {value} is out of range (max {max})")]
    InvalidMetric {
        /// Field.
        field: &'static str,
        /// Value.
        value: u64,
        /// Maximum.
        max: u64,
    },
    /// The node was already rewarded for this epoch.
    #[error("{node:?} was already rewarded for epoch {epoch}")]
    AlreadyRewarded {
        /// Node.
        node: AccountId,
        /// Epoch.
        epoch: u64,
    },
    /// A receipt outside the claim window (too old or from the future).
    #[error("receipt of {holder:?} at {time_ms} ms is outside the claim window at {now_ms} ms")]
    ReceiptOutOfWindow {
        /// Holder.
        holder: AccountId,
        /// Receipt time.
        time_ms: u64,
        /// Apply time.
        now_ms: u64,
    },
    /// The current term has not ended yet.
    #[error("term {term} runs until {ends_at_ms} ms; now is {now_ms} ms")]
    TermNotOver {
        /// Current term index.
        term: u64,
        /// When it ends.
        ends_at_ms: u64,
        /// Apply time.
        now_ms: u64,
    },
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// A genesis entry is unusable.
    #[error("invalid genesis: {0}")]
    InvalidGenesis(&'static str),
    /// A snapshot decoded but violates an invariant.
    #[error("corrupt snapshot: {0}")]
    CorruptSnapshot(&'static str),
}

/// Result with the dpos [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

//! The city node's API in dag-core terms: what a node implements and what a client sees.

use dag_core::{AccountId, NodeId, ShardHash, SignedReceipt, SignedTx, StripeId, TxId};
use std::fmt;
use std::future::Future;

/// Where a tx is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxState {
    /// Verified and durably stored by the city node.
    Admitted,
    /// Shards held by distinct light nodes, receipts attached.
    Held,
    /// In a committed DAG batch.
    Ordered,
    /// Its batch header is in the continent log.
    Federated,
    /// After Federated in meaning: the transfer's life is finished and proven — a
    /// same-city transfer executed Applied in a federated checkpoint; a cross-city transfer
    /// settled Completed in the sender city, or Credited with its answer certified in the
    /// receiver city (both proofs in [`TxRecord::cross`]).
    Completed,
}

/// Why a tx was rejected. Each maps to one gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// Missing or invalid fields → `InvalidArgument`.
    Malformed,
    /// Over a size limit → `ResourceExhausted`.
    TooLarge,
    /// Signature does not verify → `Unauthenticated`.
    BadSignature,
    /// Public key does not hash to the sender → `Unauthenticated`.
    KeyMismatch,
    /// Same tx id already admitted → `AlreadyExists`.
    DuplicateTx,
    /// (sender, nonce) already used by another tx → `AlreadyExists`.
    NonceReused,
    /// Proof of place failed → `FailedPrecondition`.
    OutsideCity,
    /// The node is shedding load → `ResourceExhausted`.
    Overloaded,
    /// Not enough holders or an internal failure → `Unavailable`.
    Unavailable,
}

impl RejectCode {
    /// Every code.
    pub const ALL: [RejectCode; 9] = [
        RejectCode::Malformed,
        RejectCode::TooLarge,
        RejectCode::BadSignature,
        RejectCode::KeyMismatch,
        RejectCode::DuplicateTx,
        RejectCode::NonceReused,
        RejectCode::OutsideCity,
        RejectCode::Overloaded,
        RejectCode::Unavailable,
    ];

    /// SCREAMING_SNAKE name, as in the proto and at the start of status messages.
    pub fn name(self) -> &'static str {
        match self {
            RejectCode::Malformed => "MALFORMED",
            RejectCode::TooLarge => "TOO_LARGE",
            RejectCode::BadSignature => "BAD_SIGNATURE",
            RejectCode::KeyMismatch => "KEY_MISMATCH",
            RejectCode::DuplicateTx => "DUPLICATE_TX",
            RejectCode::NonceReused => "NONCE_REUSED",
            RejectCode::OutsideCity => "OUTSIDE_CITY",
            RejectCode::Overloaded => "OVERLOADED",
            RejectCode::Unavailable => "UNAVAILABLE",
        }
    }

    /// The gRPC status code for this rejection.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            RejectCode::Malformed => tonic::Code::InvalidArgument,
            RejectCode::TooLarge => tonic::Code::ResourceExhausted,
            RejectCode::BadSignature | RejectCode::KeyMismatch => tonic::Code::Unauthenticated,
            RejectCode::DuplicateTx | RejectCode::NonceReused => tonic::Code::AlreadyExists,
            RejectCode::OutsideCity => tonic::Code::FailedPrecondition,
            RejectCode::Overloaded => tonic::Code::ResourceExhausted,
            RejectCode::Unavailable => tonic::Code::Unavailable,
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A rejected tx: the code, a precise message, and the id when the tx had one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Category.
    pub code: RejectCode,
    /// Human-readable reason ("signature check failed for tx 9f2c…: …").
    pub message: String,
    /// The tx id, if the tx decoded far enough to have one.
    pub tx_id: Option<TxId>,
}

impl Rejection {
    /// A rejection.
    pub fn new(code: RejectCode, message: impl Into<String>, tx_id: Option<TxId>) -> Self {
        Rejection {
            code,
            message: message.into(),
            tx_id,
        }
    }

    /// The gRPC status: code per [`RejectCode::grpc_code`], message `"<CODE>: <message>"`,
    /// details with a `google.rpc.ErrorInfo` (reason = the code's name, domain
    /// [`crate::ERROR_DOMAIN`], metadata `tx_id` in hex when the tx had one).
    pub fn to_status(&self) -> tonic::Status {
        crate::status::typed_status(
            self.code.grpc_code(),
            self.code.name(),
            &self.message,
            self.tx_id.map(|id| ("tx_id", id.to_hex())),
            None,
        )
    }

    /// Parses a status produced by [`Rejection::to_status`].
    pub fn from_status(s: &tonic::Status) -> Option<Self> {
        let (name, msg) = s.message().split_once(": ")?;
        let code = RejectCode::from_name(name)?;
        (code.grpc_code() == s.code()).then(|| Rejection::new(code, msg, None))
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Rejection {}

/// The answer to an accepted submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The tx id.
    pub tx_id: TxId,
    /// State reached before answering (Admitted, or Held once storage receipts are in).
    pub state: TxState,
    /// Storage receipts (PoH_ACK), when Held. Shared: every tx of a micro-batch is answered
    /// with its stripe's one list, not a copy each.
    pub receipts: std::sync::Arc<Vec<SignedReceipt>>,
}

/// How a committed transfer was executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionOutcome {
    /// The amount moved.
    Applied,
    /// The sender's balance was below the amount.
    InsufficientFunds,
    /// The write set omits the sender's or the receiver's account object.
    SetsDoNotCover,
    /// The (sender, nonce) was already applied by another tx.
    NonceAlreadyApplied,
    /// The receiver's balance would pass `u64::MAX`.
    BalanceOverflow,
    /// A cross-city transfer to a city that is not a known other city.
    UnknownCity,
}

impl ExecutionOutcome {
    /// The wire value.
    pub fn to_proto(self) -> i32 {
        use crate::pb::ExecutionOutcome as P;
        (match self {
            ExecutionOutcome::Applied => P::Applied,
            ExecutionOutcome::InsufficientFunds => P::InsufficientFunds,
            ExecutionOutcome::SetsDoNotCover => P::SetsDoNotCover,
            ExecutionOutcome::NonceAlreadyApplied => P::NonceAlreadyApplied,
            ExecutionOutcome::BalanceOverflow => P::BalanceOverflow,
            ExecutionOutcome::UnknownCity => P::UnknownCity,
        }) as i32
    }
    /// From the wire value (`None` for unspecified or unknown values).
    pub fn from_proto(v: i32) -> Option<Self> {
        use crate::pb::ExecutionOutcome as P;
        Some(match P::try_from(v).ok()? {
            P::Applied => ExecutionOutcome::Applied,
            P::InsufficientFunds => ExecutionOutcome::InsufficientFunds,
            P::SetsDoNotCover => ExecutionOutcome::SetsDoNotCover,
            P::NonceAlreadyApplied => ExecutionOutcome::NonceAlreadyApplied,
            P::BalanceOverflow => ExecutionOutcome::BalanceOverflow,
            P::UnknownCity => ExecutionOutcome::UnknownCity,
            P::Unspecified => return None,
        })
    }
}

/// A tx's execution as a representative recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxExecution {
    /// The checkpoint that executed it.
    pub sequence: u64,
    /// The outcome.
    pub outcome: ExecutionOutcome,
    /// Why it failed, for people (empty when applied).
    pub detail: String,
    /// The state root this representative recorded after that checkpoint (the root its
    /// checkpoint header carries): equal on every representative of the committee.
    pub state_root: Option<dag_core::Hash32>,
}

/// An account as a representative executed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountInfo {
    /// The account.
    pub account: AccountId,
    /// False when never credited (then balance and nonce are 0).
    pub exists: bool,
    /// Balance.
    pub balance: u64,
    /// Next nonce: one above the highest applied nonce it sent.
    pub nonce: u64,
    /// Writes of the account object so far.
    pub version: u64,
    /// Checkpoints executed when this was read.
    pub executed_checkpoints: u64,
}

/// A tx as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRecord {
    /// The signed tx; `None` when the node only knows where its committee ordered it (a
    /// representative that did not admit it).
    pub tx: Option<SignedTx>,
    /// Its state.
    pub state: TxState,
    /// Storage receipts, if held here.
    pub receipts: Vec<SignedReceipt>,
    /// Where it was found: "store", "cache", "shards", "archive", "order", …
    pub source: String,
    /// Where the committee ordered it (Ordered and Federated).
    pub ordering: Option<OrderingInfo>,
    /// Canonical bytes of the offline proof (Federated).
    pub proof: Option<Vec<u8>>,
    /// A cross-city transfer, in either city, with its proofs. In the receiver city the
    /// record has only this (`tx` is `None`, source "cross").
    pub cross: Option<crate::CrossTx>,
}

/// Where a city's committee ordered a tx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderingInfo {
    /// Checkpoint sequence.
    pub sequence: u64,
    /// The committed leader's round.
    pub leader_round: u64,
    /// The leader batch digest.
    pub leader: dag_core::Hash32,
    /// The digest of the batch that carried the tx.
    pub batch: dag_core::Hash32,
    /// When the answering representative committed it (ms since the Unix epoch).
    pub committed_at_ms: u64,
    /// When the continent's proof arrived there, if it has.
    pub federated_at_ms: Option<u64>,
}

/// A node's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node id.
    pub node_id: dag_core::NodeId,
    /// Role name.
    pub role: String,
    /// Software version.
    pub version: String,
    /// Time since start.
    pub uptime_ms: u64,
    /// Txs in the durable store.
    pub stored_txs: u64,
    /// Named counters (admitted, rejected by reason, per-stage counts …).
    pub counters: Vec<(String, u64)>,
}

/// A tx restored by `RepairTx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The signed tx (its signature verified by the node; a client re-verifies).
    pub tx: SignedTx,
    /// The stripe's receipts after any rebuild (verified by the node; a client re-verifies).
    pub receipts: Vec<SignedReceipt>,
    /// Where it was restored from ("shards (4 used)", …).
    pub source: String,
    /// Shards re-created and placed on other light nodes (only with `rebuild`).
    pub shards_rebuilt: u32,
}

/// One placed shard of a stripe, as the city's manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeHolder {
    /// Shard index.
    pub index: u16,
    /// The holder.
    pub node_id: NodeId,
    /// Its gRPC address from the city's live view; `None` if it is not live.
    pub grpc_addr: Option<String>,
    /// BLAKE3 of the shard, from the manifest.
    pub shard_hash: ShardHash,
}

/// A stripe held by a city: its shape and holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeInfo {
    /// The stripe.
    pub stripe_id: StripeId,
    /// Data shards.
    pub k: u16,
    /// Parity shards.
    pub m: u16,
    /// Placed shards, by index.
    pub holders: Vec<StripeHolder>,
}

/// What a city node implements. The tonic adapter [`crate::CityNodeService`] calls it.
pub trait CityApi: Send + Sync + 'static {
    /// Admits one signed tx (already decoded from protobuf, not yet verified).
    fn submit(&self, tx: SignedTx) -> impl Future<Output = Result<Submitted, Rejection>> + Send;
    /// Reads a tx back; `Ok(None)` if unknown.
    fn get(&self, id: TxId) -> impl Future<Output = Result<Option<TxRecord>, Rejection>> + Send;
    /// Only the signed tx `id` (what a peer fetching bodies to execute needs); `Ok(None)` if
    /// this node has no body for it. The default reads the whole record with
    /// [`CityApi::get`]; a node overrides it to skip receipts, ordering and proofs.
    fn get_body(
        &self,
        id: TxId,
    ) -> impl Future<Output = Result<Option<SignedTx>, Rejection>> + Send {
        async move { Ok(self.get(id).await?.and_then(|r| r.tx)) }
    }
    /// Status and counters.
    fn status(&self) -> impl Future<Output = NodeStatus> + Send;
    /// Records a rejection that happened before the node saw the tx (malformed protobuf),
    /// so counters include it.
    fn note_rejected(&self, _code: RejectCode) {}
    /// Restores a held tx from its shards; with `rebuild`, first re-creates the shards of
    /// its stripe whose holders are gone or silent. `Ok(None)` if the tx is not held here.
    /// The default answers `Unavailable` (a node without storage).
    fn repair(
        &self,
        id: TxId,
        rebuild: bool,
    ) -> impl Future<Output = Result<Option<Repaired>, Rejection>> + Send {
        let _ = rebuild;
        async move {
            Err(Rejection::new(
                RejectCode::Unavailable,
                "this node does not repair txs",
                Some(id),
            ))
        }
    }
    /// How the committed tx `id` was executed here; `Ok(None)` if not (yet). The default
    /// (a node that executes nothing) answers `Ok(None)`.
    fn execution(
        &self,
        id: TxId,
    ) -> impl Future<Output = Result<Option<TxExecution>, Rejection>> + Send {
        let _ = id;
        async move { Ok(None) }
    }
    /// An account's balance and nonce. The default answers `Unavailable` (a node without a
    /// ledger).
    fn account(
        &self,
        account: AccountId,
    ) -> impl Future<Output = Result<AccountInfo, Rejection>> + Send {
        async move {
            Err(Rejection::new(
                RejectCode::Unavailable,
                format!("this node keeps no ledger (account {account})"),
                None,
            ))
        }
    }
    /// An account's stake as this node's dpos state holds it (`GetStake`). The default
    /// answers [`crate::StakeReadError::NotRepresentative`].
    fn stake(
        &self,
        account: AccountId,
    ) -> impl Future<Output = Result<crate::StakeInfo, crate::StakeReadError>> + Send {
        let _ = account;
        async move { Err(crate::StakeReadError::NotRepresentative) }
    }
    /// The committee this node's consensus runs and the next one dpos decides
    /// (`GetCommittee`). The default answers [`crate::StakeReadError::NotRepresentative`].
    fn committee(
        &self,
    ) -> impl Future<Output = Result<crate::CommitteeInfo, crate::StakeReadError>> + Send {
        async move { Err(crate::StakeReadError::NotRepresentative) }
    }
    /// Up to `max` committed checkpoints from `from` on, as this representative ordered
    /// them (`GetCheckpoints`). The default answers
    /// [`crate::StakeReadError::NotRepresentative`].
    fn checkpoints(
        &self,
        from: u64,
        max: u32,
    ) -> impl Future<Output = Result<crate::CheckpointRange, crate::StakeReadError>> + Send {
        let _ = (from, max);
        async move { Err(crate::StakeReadError::NotRepresentative) }
    }
    /// Every stripe this node holds, with its holders. The default answers `Unavailable`.
    fn list_stripes(&self) -> impl Future<Output = Result<Vec<StripeInfo>, Rejection>> + Send {
        async move {
            Err(Rejection::new(
                RejectCode::Unavailable,
                "this node holds no stripes",
                None,
            ))
        }
    }
}

/// The status a test node answers.
#[cfg(test)]
pub(crate) fn test_status() -> NodeStatus {
    NodeStatus {
        node_id: NodeId::from_bytes([0; 32]),
        role: "test".into(),
        version: "0".into(),
        uptime_ms: 0,
        stored_txs: 0,
        counters: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that implements only the required methods.
    struct Minimal;

    impl CityApi for Minimal {
        async fn submit(&self, _tx: SignedTx) -> Result<Submitted, Rejection> {
            Err(Rejection::new(RejectCode::Unavailable, "test", None))
        }
        async fn get(&self, _id: TxId) -> Result<Option<TxRecord>, Rejection> {
            Ok(None)
        }
        async fn status(&self) -> NodeStatus {
            test_status()
        }
    }

    #[test]
    fn repair_and_list_default_to_unavailable() {
        let id = TxId::from_bytes([1; 32]);
        let r = futures::executor::block_on(Minimal.repair(id, true)).unwrap_err();
        assert_eq!(r.code, RejectCode::Unavailable);
        assert_eq!(r.to_status().code(), tonic::Code::Unavailable);
        assert_eq!(r.tx_id, Some(id));
        let r = futures::executor::block_on(Minimal.list_stripes()).unwrap_err();
        assert_eq!(r.code, RejectCode::Unavailable);
    }

    #[test]
    fn status_round_trip_for_every_code() {
        for code in RejectCode::ALL {
            let r = Rejection::new(code, "why: details", None);
            let back = Rejection::from_status(&r.to_status()).unwrap();
            assert_eq!(back.code, code);
            assert_eq!(back.message, "why: details");
        }
        assert!(Rejection::from_status(&tonic::Status::internal("boom")).is_none());
    }
}

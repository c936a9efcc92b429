//! The port the gateway is served over: what a city representative must offer the HTTP API
//! ([`GatewayBackend`]), and the event and view types that cross it.

use async_trait::async_trait;
use dag_core::{AccountId, NodeId, SignedTx, StripeId, TxId};
use rpc::{AccountInfo, Rejection, StripeInfo, Submitted, TxExecution, TxRecord};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// What happened to a tx (or to a repair of it), as `/v1/events` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Verified and durably stored.
    Admitted,
    /// Shards on distinct light nodes with signed receipts.
    Held,
    /// In a committed batch of the city DAG.
    Ordered,
    /// Its checkpoint is in the continent log.
    Federated,
    /// A repair was requested.
    RepairRequested,
    /// A holder (or another tier) answered a repair with data that checked out.
    RepairAcknowledged,
    /// The repair restored the tx.
    RepairCompleted,
    /// The repair could not be served before its deadline.
    RepairFailed,
    /// An admitted tx was taken back because it could not be Held (fewer than n distinct
    /// holders in time): nothing of it stays; the sender may submit it again. `detail`
    /// carries the reject `code` and `reason`.
    Withdrawn,
}

impl EventKind {
    /// Every kind, in life-cycle order.
    pub const ALL: [EventKind; 9] = [
        EventKind::Admitted,
        EventKind::Held,
        EventKind::Ordered,
        EventKind::Federated,
        EventKind::RepairRequested,
        EventKind::RepairAcknowledged,
        EventKind::RepairCompleted,
        EventKind::RepairFailed,
        EventKind::Withdrawn,
    ];

    /// The snake_case name (the SSE `event:` field).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Admitted => "admitted",
            EventKind::Held => "held",
            EventKind::Ordered => "ordered",
            EventKind::Federated => "federated",
            EventKind::RepairRequested => "repair_requested",
            EventKind::RepairAcknowledged => "repair_acknowledged",
            EventKind::RepairCompleted => "repair_completed",
            EventKind::RepairFailed => "repair_failed",
            EventKind::Withdrawn => "withdrawn",
        }
    }
}

/// One event of the city's event bus. Ids increase by one per event published.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GatewayEvent {
    /// Position in the bus (the SSE `id:`; resume with `Last-Event-ID`).
    pub id: u64,
    /// What happened.
    pub kind: EventKind,
    /// The tx it happened to.
    #[schema(value_type = String, example = "9f2c…64 hex")]
    pub tx_id: TxId,
    /// Sender and receiver of the tx, when this node knows them.
    #[schema(value_type = Vec<String>)]
    pub accounts: Vec<AccountId>,
    /// When the node published it, ms since the Unix epoch.
    pub at_ms: u64,
    /// Kind-specific facts (checkpoint sequence, repair request id, tier, reason …).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl GatewayEvent {
    /// True when the event concerns `tx` (if given) and `account` (if given).
    pub fn matches(&self, tx: Option<&TxId>, account: Option<&AccountId>) -> bool {
        tx.is_none_or(|t| *t == self.tx_id) && account.is_none_or(|a| self.accounts.contains(a))
    }
}

/// A subscription to the event bus: what is still in its bounded history after the
/// requested id, then the live feed.
#[derive(Debug)]
pub struct Subscription {
    /// Events after the requested id still kept in the history, oldest first.
    pub backlog: Vec<Arc<GatewayEvent>>,
    /// Events published from now on.
    pub live: broadcast::Receiver<Arc<GatewayEvent>>,
    /// True when some events after the requested id have already left the history.
    pub gap: bool,
}

/// A node the explorer shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct NodeView {
    /// Node id (hex).
    #[schema(value_type = String)]
    pub node_id: NodeId,
    /// Role (`light`, `city`).
    pub role: String,
    /// Address it serves gRPC on.
    pub addr: String,
    /// Failure-domain zone.
    pub zone: String,
    /// City it lives in.
    pub city: String,
}

/// A member of the city's committee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CommitteeMember {
    /// Node id (hex).
    #[schema(value_type = String)]
    pub node_id: NodeId,
    /// Its gRPC address, from the genesis file.
    pub addr: String,
    /// True for the representative answering.
    pub this_node: bool,
}

/// The network as the answering representative sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct NodesView {
    /// The answering node.
    #[schema(value_type = String)]
    pub this_node: NodeId,
    /// The city it serves.
    pub city: String,
    /// Light nodes currently live in its view.
    pub lights: Vec<NodeView>,
    /// The city's committee (empty without one).
    pub committee: Vec<CommitteeMember>,
}

/// Where a repair request stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RepairState {
    /// Still working through the tiers.
    Running,
    /// Restored (and missing shards re-placed).
    Completed {
        /// The tier that served it (`local_store`, `light_nodes`, `archive`, `peers`).
        tier: String,
        /// Shards re-created and placed on other light nodes.
        shards_rebuilt: u32,
    },
    /// No tier could serve it before the deadline.
    Failed {
        /// Why, tier by tier.
        reason: String,
    },
}

/// A repair request and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RepairTicket {
    /// The request id (also in the repair events' `detail.request`).
    pub request_id: u64,
    /// The tx to repair.
    #[schema(value_type = String)]
    pub tx_id: TxId,
    /// Where it stands (flattened: `state`, and `tier` / `reason` once finished).
    #[serde(flatten)]
    pub state: RepairState,
}

/// Why a repair request was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepairRefused {
    /// Neither this node, its committee's order nor its archive has heard of the tx.
    #[error("tx {0} is unknown to this city")]
    UnknownTx(TxId),
    /// Too many repairs are running; retry later.
    #[error("too many repairs in progress ({0}); retry later")]
    Busy(usize),
    /// The node cannot repair (no storage pipeline).
    #[error("this node cannot repair: {0}")]
    Unavailable(String),
}

/// Latency of one repair tier so far, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TierLatency {
    /// Tier name.
    pub tier: String,
    /// Attempts measured.
    pub count: u64,
    /// Median, seconds.
    pub p50_seconds: f64,
    /// 99th percentile, seconds.
    pub p99_seconds: f64,
}

/// What a city representative offers the gateway. The node's adapter implements it over
/// admission, the tx store, the order store and the manifests; tests use a double.
#[async_trait]
pub trait GatewayBackend: Send + Sync + 'static {
    /// Admits a signed tx: the same answer as gRPC `SubmitTx`.
    async fn submit(&self, tx: SignedTx) -> Result<Submitted, Rejection>;
    /// Reads a tx back: the same answer as gRPC `GetTx`; `Ok(None)` when unknown.
    async fn get(&self, id: TxId) -> Result<Option<TxRecord>, Rejection>;
    /// Starts a repair of `id` in the background.
    async fn request_repair(&self, id: TxId) -> Result<RepairTicket, RepairRefused>;
    /// The state of repair request `request_id`, while it is remembered.
    fn repair_status(&self, request_id: u64) -> Option<RepairTicket>;
    /// Subscribes to the event bus after event `after` (`None`: live events only).
    fn subscribe(&self, after: Option<u64>) -> Subscription;
    /// Live light nodes and the committee.
    async fn nodes(&self) -> NodesView;
    /// A stripe this city holds, with its holders; `Ok(None)` when unknown.
    async fn stripe(&self, id: StripeId) -> Result<Option<StripeInfo>, Rejection>;
    /// How the committed tx `id` was executed here (as gRPC `GetTx`'s `execution`);
    /// `Ok(None)` when not (yet). The default (no ledger) answers `Ok(None)`.
    async fn execution(&self, id: TxId) -> Result<Option<TxExecution>, Rejection> {
        let _ = id;
        Ok(None)
    }
    /// An account's balance and nonce as executed here (as gRPC `GetAccount`). The default
    /// (no ledger) answers `Unavailable`.
    async fn account(&self, account: AccountId) -> Result<AccountInfo, Rejection> {
        Err(Rejection::new(
            rpc::RejectCode::Unavailable,
            format!("this node keeps no ledger (account {account})"),
            None,
        ))
    }
    /// An account's stake as the representative's dpos state holds it (as gRPC
    /// `GetStake`). The default (no dpos state) answers `NotRepresentative`.
    async fn stake(&self, account: AccountId) -> Result<rpc::StakeInfo, rpc::StakeReadError> {
        let _ = account;
        Err(rpc::StakeReadError::NotRepresentative)
    }
    /// The committee and epoch (as gRPC `GetCommittee`). The default answers
    /// `NotRepresentative`.
    async fn committee(&self) -> Result<rpc::CommitteeInfo, rpc::StakeReadError> {
        Err(rpc::StakeReadError::NotRepresentative)
    }
    /// Repair latency per tier (for `/metrics`).
    fn repair_latencies(&self) -> Vec<TierLatency> {
        Vec::new()
    }
    /// Whether the node can take submissions now; `Err(reason)` while it cannot (a store
    /// down after an I/O error, …). `/healthz` answers 503 with the reason meanwhile.
    fn serving(&self) -> Result<(), String> {
        Ok(())
    }
}

//! Errors of the node runtimes: one typed variant per kind of failure, with the context an
//! operator needs, and an explicit [`Error::is_retryable`] for callers deciding to retry.

use dag_core::TxId;
use std::path::PathBuf;
use thiserror::Error;

/// Errors of starting, running and stopping node roles.
#[derive(Debug, Error)]
pub enum Error {
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The embedded store failed.
    #[error("store {path}: {source}")]
    Store {
        /// Database file.
        path: PathBuf,
        /// redb's error.
        source: Box<redb::Error>,
    },
    /// A federation log's stored leaves do not check out on open.
    #[error("log {path}: leaf {index}: {reason}")]
    LogCorrupt {
        /// Database file.
        path: PathBuf,
        /// The leaf index.
        index: u64,
        /// What failed.
        reason: String,
    },
    /// A group commit failed; none of its txs were admitted.
    #[error("store {path}: commit failed, nothing in the group was admitted: {reason}")]
    StoreCommit {
        /// Database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store's writer has stopped (the node is shutting down).
    #[error("the tx store is closed")]
    StoreClosed,
    /// Stored bytes failed their check on read.
    #[error("stored tx {id} is corrupt: {reason}")]
    Corrupt {
        /// The tx asked for.
        id: TxId,
        /// What failed.
        reason: String,
    },
    /// A persisted record could not be decoded (a damaged or foreign file).
    #[error("{path}: record {index} is corrupt: {source}")]
    CorruptRecord {
        /// Database file.
        path: PathBuf,
        /// Record key.
        index: u64,
        /// What failed.
        source: dag_core::DecodeError,
    },
    /// Key handling failed.
    #[error(transparent)]
    Key(#[from] pqc::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// gRPC reflection could not be set up.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// The erasure-coding settings are invalid.
    #[error("invalid erasure settings: {source}")]
    Erasure {
        /// Why.
        source: storage::Error,
    },
    /// Presence could not be reached or configured.
    #[error("presence: {source}")]
    Presence {
        /// node-list's error.
        source: node_list::Error,
    },
    /// Gossip could not start.
    #[error("gossip: {source}")]
    Gossip {
        /// gossip's error.
        source: gossip::Error,
    },
    /// The proof-of-place polygons could not be loaded.
    #[error("regions: {source}")]
    Regions {
        /// pop-geo's error.
        source: pop_geo::Error,
    },
    /// The event multipliers file could not be loaded.
    #[error("event multipliers: {source}")]
    Events {
        /// pop-geo's error (names the file, and the event when one is bad).
        source: pop_geo::Error,
    },
    /// The flagger could not be built.
    #[error("flagging: {source}")]
    Flagging {
        /// flagging's error.
        source: flagging::Error,
    },
    /// The archive could not be opened.
    #[error("archive: {source}")]
    Archive {
        /// archive's error.
        source: archive::Error,
    },
    /// The HTTP gateway could not start.
    #[error("gateway: {source}")]
    Gateway {
        /// gateway's error.
        source: gateway::Error,
    },
    /// The ledger could not be opened or read.
    #[error("ledger: {source}")]
    Ledger {
        /// ledger's error.
        source: ledger::Error,
    },
    /// The node's TLS key or certificate cannot be used (missing, corrupt, or bound to
    /// another node key).
    #[error("TLS identity: {0}")]
    Tls(#[from] rpc::tls::TlsError),
    /// A genesis file is missing, malformed or inconsistent.
    #[error(transparent)]
    Genesis(#[from] genesis::Error),
    /// This node is not where the configuration says it is (e.g. a city role whose key is
    /// not in the genesis committee).
    #[error("{0}")]
    Membership(String),
    /// The DPoS applier refused to open or to apply a checkpoint.
    #[error(transparent)]
    Stake(#[from] crate::city::stake::StakeError),
    /// The consensus driver refused to start or recover.
    #[error("consensus: {0}")]
    Consensus(#[from] dag_core::consensus::ConsensusError),
    /// A task the role depends on has stopped (the node is shutting down).
    #[error("{0} stopped")]
    Stopping(&'static str),
    /// A wait for a condition ran out of time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: std::time::Duration,
    },
    /// A peer's address (continent, global) is not a usable endpoint.
    #[error("peer address {addr}: {source}")]
    PeerAddress {
        /// The address as configured.
        addr: String,
        /// Why it cannot be used.
        source: rpc::FederationError,
    },
    /// A client call failed.
    #[error(transparent)]
    Client(#[from] rpc::ClientError),
    /// The shard store (light role) failed.
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// The city's storage pipeline (stripe index) failed.
    #[error("storage pipeline: {source}")]
    Pipeline {
        /// The pipeline's error.
        source: crate::city::pipeline::PipelineError,
    },
    /// `[admission] min_stake` admits light nodes by stake, but this city node has no stake
    /// state to read it from (it runs without a genesis file).
    #[error(
        "admission by min_stake needs the city's stake state: run the city node with a genesis file"
    )]
    AdmissionNeedsStake,
}

impl Error {
    /// Whether trying the same operation again later may succeed: transient conditions
    /// (a peer or service unreachable, a full queue, a timeout, an I/O hiccup) are;
    /// refusals, bad input, corrupt data and configuration mistakes are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { .. } | Error::StoreCommit { .. } | Error::Timeout { .. } => true,
            Error::Presence { .. } => true,
            Error::Client(c) => match c {
                rpc::ClientError::Status { code, .. } => matches!(
                    code,
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::Internal
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::Aborted
                ),
                rpc::ClientError::Connect { .. } => true,
                _ => false,
            },
            _ => false,
        }
    }
}

/// Result with the node's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_is_explicit() {
        let unavailable = Error::Client(rpc::ClientError::Status {
            code: tonic::Code::Unavailable,
            message: "down".into(),
        });
        assert!(unavailable.is_retryable());
        let denied = Error::Client(rpc::ClientError::Status {
            code: tonic::Code::PermissionDenied,
            message: "no".into(),
        });
        assert!(!denied.is_retryable());
        assert!(!Error::StoreClosed.is_retryable());
        assert!(!Error::Stopping("representative").is_retryable());
        assert!(
            Error::Timeout {
                what: "commit".into(),
                after: std::time::Duration::from_secs(1)
            }
            .is_retryable()
        );
    }
}

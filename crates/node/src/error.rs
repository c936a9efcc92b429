//! Errors of the node runtimes.

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
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A client call inside the devnet failed.
    #[error(transparent)]
    Client(#[from] rpc::ClientError),
    /// The shard store (light role) failed.
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

/// Result with the node's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

//! Errors of the devnet and the demo.

use std::path::PathBuf;

/// Why the devnet or the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A role failed to start or stop.
    #[error(transparent)]
    Node(#[from] node::Error),
    /// The genesis file could not be written or read.
    #[error(transparent)]
    Genesis(#[from] node::genesis::Error),
    /// Keys or signatures failed.
    #[error(transparent)]
    Key(#[from] pqc::Error),
    /// A client call failed.
    #[error(transparent)]
    Client(#[from] rpc::ClientError),
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The shipped regions could not be loaded.
    #[error("regions: {0}")]
    Regions(#[from] pop_geo::Error),
    /// The measurement itself is broken (a baseline that does not verify, a task that
    /// died): the figures would be meaningless.
    #[error("measurement: {0}")]
    Measurement(String),
    /// A wait ran out of time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: std::time::Duration,
    },
}

/// Result with the devnet's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

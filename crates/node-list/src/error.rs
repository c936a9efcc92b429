//! The node-list error type.

use thiserror::Error;

/// Errors of node-list.
#[derive(Debug, Error)]
pub enum Error {
    /// A configuration value (usually from the environment) is invalid.
    #[error("invalid node-list setting {key}={value:?}: {reason}")]
    Config {
        /// Setting name (environment variable).
        key: &'static str,
        /// The value given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The presence backend failed.
    #[error(transparent)]
    Presence(#[from] presence::Error),
}

/// Result with the node-list [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

//! Errors of the priority crate.

use thiserror::Error;

/// Result with this crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What is wrong with a priority configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// A weight or reference value is unusable.
    #[error("priority config: {field}: {reason}")]
    InvalidConfig {
        /// Field name (e.g. `urgent.latency`).
        field: String,
        /// Why.
        reason: &'static str,
    },
}

//! Errors of the flagging crate.

use thiserror::Error;

/// Result with this crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong choosing or configuring a flagger.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The configured plugin name is not registered.
    #[error("unknown flagging plugin {name:?} (registered: {})", registered.join(", "))]
    UnknownPlugin {
        /// The name asked for.
        name: String,
        /// Names that are registered.
        registered: Vec<String>,
    },
    /// A plugin with this name is already registered.
    #[error("flagging plugin {0:?} is already registered")]
    DuplicatePlugin(String),
    /// A configuration value is unusable.
    #[error("flagging config: {field}: {reason}")]
    InvalidConfig {
        /// Field name.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

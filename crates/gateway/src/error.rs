//! The gateway's errors.

use std::net::SocketAddr;

/// What can go wrong starting or stopping the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("binding the gateway on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("gateway server: {source}")]
    Serve {
        /// Why.
        source: std::io::Error,
    },
    /// The server task panicked or was cancelled.
    #[error("gateway task: {0}")]
    Task(String),
    /// A configured CORS origin is not a valid header value.
    #[error("CORS origin {0:?} is not a valid origin")]
    BadCorsOrigin(String),
}

/// Result with the gateway's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

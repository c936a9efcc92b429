//! The presence crate's error type.

use dag_core::NodeId;
use std::time::Duration;
use thiserror::Error;

/// Errors of the presence stores, server and client.
#[derive(Debug, Error)]
pub enum Error {
    /// A heartbeat or logout for a node that is not logged in (or has expired).
    #[error("node {0} is not online (log in first)")]
    UnknownNode(NodeId),
    /// Presence refused to act for `node`: a login not signed by its key (or stale, or
    /// replayed), or a heartbeat / logout without the node's session token. Nothing changed.
    #[error("presence refused for node {node}: {reason}")]
    Unauthorized {
        /// The node the request claimed to be about.
        node: NodeId,
        /// Why.
        reason: crate::AuthFailure,
    },
    /// The backing store (Redis) could not answer; no stale data is returned instead.
    #[error("presence backend {backend} unavailable while trying to {op}: {detail}")]
    Unavailable {
        /// Backend name ("redis", "http").
        backend: &'static str,
        /// What was attempted ("heartbeat", "list").
        op: &'static str,
        /// The underlying failure.
        detail: String,
    },
    /// Stored or received data did not decode.
    #[error("corrupt presence data for {what}: {detail}")]
    Corrupt {
        /// What was being decoded.
        what: String,
        /// The decoder's message.
        detail: String,
    },
    /// The request was malformed (HTTP 400 from the server, or invalid input locally).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The server refused because of its rate limit (HTTP 429) or the client's own bucket.
    #[error("rate limited, retry after {retry_after:?}")]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// The client's circuit breaker is open; the request was not sent.
    #[error(transparent)]
    CircuitOpen(#[from] resilience::CircuitOpen),
    /// The server answered with a status the client does not expect.
    #[error("presence server answered {status} to {op}: {body}")]
    UnexpectedStatus {
        /// What was attempted.
        op: &'static str,
        /// HTTP status.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// Events may have been missed (slow subscriber or reconnect): re-read the full list.
    #[error("presence events were missed ({missed} dropped); resynchronise with list()")]
    EventsMissed {
        /// How many events were dropped, if known (0 = unknown).
        missed: u64,
    },
    /// Configuration is invalid.
    #[error("invalid presence configuration: {0}")]
    Config(String),
    /// I/O error (binding a socket, spawning redis-server).
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    /// True for failures of the backend or the transport (worth a retry, count against a
    /// circuit breaker), false for answers about the request itself.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::RateLimited { .. } | Error::EventsMissed { .. }
        ) || matches!(self, Error::UnexpectedStatus { status, .. } if *status >= 500)
    }

    /// A refusal as about `node` (the HTTP answer does not name it).
    pub(crate) fn about(self, node: NodeId) -> Self {
        match self {
            Error::Unauthorized { reason, .. } => Error::Unauthorized { node, reason },
            e => e,
        }
    }

    pub(crate) fn redis(op: &'static str, e: ::redis::RedisError) -> Self {
        Error::Unavailable {
            backend: "redis",
            op,
            detail: e.to_string(),
        }
    }
}

/// Result with the presence [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

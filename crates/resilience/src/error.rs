//! Typed errors of the resilience primitives: each says what refused the call and when it is
//! worth trying again.

use std::time::Duration;
use thiserror::Error;
use tokio::time::Instant;

/// The circuit breaker is open: the call was not attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("circuit open after repeated failures; a probe is allowed in {retry_after:?}")]
pub struct CircuitOpen {
    /// When the breaker turns half-open and lets a probe through.
    pub retry_at: Instant,
    /// How long from the moment of rejection until `retry_at`.
    pub retry_after: Duration,
}

/// The token bucket is empty: the call was not attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("rate limited: next token in {retry_after:?}")]
pub struct RateLimited {
    /// How long until a token is available.
    pub retry_after: Duration,
}

/// Outcome of a call through a [`CircuitBreaker`](crate::CircuitBreaker).
#[derive(Debug, Error)]
pub enum BreakerError<E> {
    /// The breaker refused the call.
    #[error(transparent)]
    Open(#[from] CircuitOpen),
    /// The call ran and failed (and was counted as a failure).
    #[error(transparent)]
    Inner(E),
}

impl<E> BreakerError<E> {
    /// The inner error, if the call ran.
    pub fn into_inner(self) -> Option<E> {
        match self {
            BreakerError::Inner(e) => Some(e),
            BreakerError::Open(_) => None,
        }
    }
}

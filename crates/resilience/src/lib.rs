//! # resilience
//!
//! Building blocks that keep clients alive when the things they call misbehave:
//!
//! - [`CircuitBreaker`]: closed → open after `max_failures` consecutive failures, open →
//!   half-open after `reset_timeout`, half-open → closed after `half_open_probes` successful
//!   probes (or back to open on any failure). A rejected call gets a typed [`CircuitOpen`]
//!   that says when the breaker will let a probe through.
//! - [`TokenBucket`]: `rate` tokens per second, at most `burst` stored; async
//!   [`TokenBucket::acquire`] waits, [`TokenBucket::try_acquire`] answers [`RateLimited`].
//! - [`PerIpLimiter`] and [`client_ip`]: per-client-address limits for HTTP servers.
//! - [`retry`] with a [`RetryPolicy`] (exponential backoff, jitter) and a shared
//!   [`RetryBudget`], so retries can never multiply load during an outage.
//!
//! Each also comes as a tower [`Layer`](tower::Layer): [`CircuitBreakerLayer`],
//! [`TokenBucketLayer`], [`RetryLayer`].
//!
//! All time is read from tokio's clock (`tokio::time::Instant`), so tests run with a paused
//! clock (`#[tokio::test(start_paused = true)]`) and never sleep for real.
//!
//! ```
//! use resilience::{CircuitBreaker, CircuitBreakerConfig};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let breaker = CircuitBreaker::new(CircuitBreakerConfig {
//!     max_failures: 5,
//!     reset_timeout: Duration::from_secs(30),
//!     half_open_probes: 1,
//! });
//! let answer: Result<u32, _> = breaker.call(|| async { Ok::<_, std::io::Error>(42) }).await;
//! assert_eq!(answer.unwrap(), 42);
//! # }
//! ```

mod breaker;
mod bucket;
mod error;
mod layers;
mod per_ip;
mod retry;

pub use breaker::{BreakerPermit, CircuitBreaker, CircuitBreakerConfig, CircuitState};
pub use bucket::{TokenBucket, TokenBucketConfig};
pub use error::{BreakerError, CircuitOpen, RateLimited};
pub use layers::{
    CircuitBreakerLayer, CircuitBreakerService, OnLimit, RetryLayer, RetryService,
    TokenBucketLayer, TokenBucketService,
};
pub use per_ip::{PerIpLimiter, client_ip};
pub use retry::{Jitter, RetryBudget, RetryDecision, RetryError, RetryPolicy, retry, retry_with};

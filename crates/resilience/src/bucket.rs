//! Token bucket: `rate` tokens per second, at most `burst` stored.

use crate::RateLimited;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Settings of a [`TokenBucket`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucketConfig {
    /// Tokens added per second.
    pub rate_per_sec: f64,
    /// Maximum tokens stored (the bucket starts full).
    pub burst: u32,
}

impl Default for TokenBucketConfig {
    /// 10 per second, burst 20 (the presence client).
    fn default() -> Self {
        TokenBucketConfig {
            rate_per_sec: 10.0,
            burst: 20,
        }
    }
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
}

/// A token bucket shared by clones.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    config: TokenBucketConfig,
    state: Arc<Mutex<State>>,
}

impl TokenBucket {
    /// A full bucket. A non-positive rate is treated as a tiny one (a token per ~11 days)
    /// so the arithmetic stays finite.
    pub fn new(config: TokenBucketConfig) -> Self {
        let config = TokenBucketConfig {
            rate_per_sec: if config.rate_per_sec > 0.0 {
                config.rate_per_sec
            } else {
                1e-6
            },
            burst: config.burst.max(1),
        };
        TokenBucket {
            state: Arc::new(Mutex::new(State {
                tokens: f64::from(config.burst),
                last: Instant::now(),
            })),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> TokenBucketConfig {
        self.config
    }

    fn refill(&self, s: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens =
            (s.tokens + elapsed * self.config.rate_per_sec).min(f64::from(self.config.burst));
        s.last = now;
    }

    /// Whole tokens available now.
    pub fn available(&self) -> u32 {
        let mut s = self.state.lock();
        self.refill(&mut s, Instant::now());
        // tokens is within [0, burst], so the cast cannot overflow.
        s.tokens.floor() as u32
    }

    /// Takes a token now, or says how long until one is available.
    pub fn try_acquire(&self) -> Result<(), RateLimited> {
        let mut s = self.state.lock();
        self.refill(&mut s, Instant::now());
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - s.tokens;
            Err(RateLimited {
                retry_after: Duration::from_secs_f64(missing / self.config.rate_per_sec),
            })
        }
    }

    /// Waits until a token is available and takes it. Waiters are not queued fairly; each
    /// wakes after the computed wait and tries again.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire() {
                Ok(()) => return,
                Err(RateLimited { retry_after }) => {
                    tokio::time::sleep(retry_after.max(Duration::from_micros(100))).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rate: f64, burst: u32) -> TokenBucket {
        TokenBucket::new(TokenBucketConfig {
            rate_per_sec: rate,
            burst,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_limited() {
        let b = bucket(10.0, 20);
        for _ in 0..20 {
            b.try_acquire().unwrap();
        }
        let e = b.try_acquire().unwrap_err();
        assert_eq!(e.retry_after, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn refills_at_rate_and_caps_at_burst() {
        let b = bucket(10.0, 20);
        for _ in 0..20 {
            b.try_acquire().unwrap();
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(b.available(), 5);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(b.available(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_refill() {
        let b = bucket(2.0, 1);
        let start = Instant::now();
        b.acquire().await;
        b.acquire().await;
        b.acquire().await;
        // Two refills at 2/s: about one second of (virtual) waiting.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(1000), "{waited:?}");
        assert!(waited < Duration::from_millis(1100), "{waited:?}");
    }
}

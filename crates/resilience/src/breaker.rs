//! Circuit breaker: stop calling a dependency that keeps failing, probe it again later.

use crate::{BreakerError, CircuitOpen};
use parking_lot::Mutex;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Settings of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit.
    pub max_failures: u32,
    /// How long the circuit stays open before letting probes through.
    pub reset_timeout: Duration,
    /// Probes allowed while half-open; this many successes close the circuit.
    pub half_open_probes: u32,
}

impl Default for CircuitBreakerConfig {
    /// 5 failures, 30 s, 1 probe (the presence client's write path).
    fn default() -> Self {
        CircuitBreakerConfig {
            max_failures: 5,
            reset_timeout: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

/// The externally visible state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls pass; failures are counted.
    Closed,
    /// Calls are refused until the reset timeout has passed.
    Open,
    /// A limited number of probes pass; their outcome decides.
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { admitted: u32, successes: u32 },
}

/// A circuit breaker shared by clones (clones see the same state).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    state: Arc<Mutex<Inner>>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreaker {
            config: CircuitBreakerConfig {
                max_failures: config.max_failures.max(1),
                half_open_probes: config.half_open_probes.max(1),
                ..config
            },
            state: Arc::new(Mutex::new(Inner::Closed { failures: 0 })),
        }
    }

    /// The settings.
    pub fn config(&self) -> CircuitBreakerConfig {
        self.config
    }

    /// The current state (an open breaker whose timeout passed reports half-open).
    pub fn state(&self) -> CircuitState {
        let mut s = self.state.lock();
        self.refresh(&mut s, Instant::now());
        match *s {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn refresh(&self, s: &mut Inner, now: Instant) {
        if let Inner::Open { until } = *s
            && now >= until
        {
            *s = Inner::HalfOpen {
                admitted: 0,
                successes: 0,
            };
        }
    }

    /// Asks to make one call. On success, report the outcome through the permit
    /// ([`BreakerPermit::success`] / [`BreakerPermit::failure`]); a permit dropped without a
    /// verdict (a cancelled call) counts as neither.
    pub fn try_acquire(&self) -> Result<BreakerPermit, CircuitOpen> {
        let now = Instant::now();
        let mut s = self.state.lock();
        self.refresh(&mut s, now);
        match &mut *s {
            Inner::Closed { .. } => Ok(BreakerPermit::new(self.clone(), false)),
            Inner::Open { until } => Err(CircuitOpen {
                retry_at: *until,
                retry_after: until.saturating_duration_since(now),
            }),
            Inner::HalfOpen { admitted, .. } => {
                if *admitted < self.config.half_open_probes {
                    *admitted += 1;
                    Ok(BreakerPermit::new(self.clone(), true))
                } else {
                    // Probes are in flight; the earliest useful retry is "soon": say so
                    // with a zero wait rather than inventing a time.
                    Err(CircuitOpen {
                        retry_at: now,
                        retry_after: Duration::ZERO,
                    })
                }
            }
        }
    }

    fn record(&self, probe: bool, ok: bool) {
        let now = Instant::now();
        let mut s = self.state.lock();
        match &mut *s {
            Inner::Closed { failures } => {
                if ok {
                    *failures = 0;
                } else {
                    *failures += 1;
                    if *failures >= self.config.max_failures {
                        *s = Inner::Open {
                            until: now + self.config.reset_timeout,
                        };
                    }
                }
            }
            // A late verdict from a call admitted before the circuit opened: the circuit
            // already decided, so it changes nothing.
            Inner::Open { .. } => {}
            Inner::HalfOpen { successes, .. } => {
                if !probe {
                    return;
                }
                if ok {
                    *successes += 1;
                    if *successes >= self.config.half_open_probes {
                        *s = Inner::Closed { failures: 0 };
                    }
                } else {
                    *s = Inner::Open {
                        until: now + self.config.reset_timeout,
                    };
                }
            }
        }
    }

    fn release(&self, probe: bool) {
        if !probe {
            return;
        }
        let mut s = self.state.lock();
        if let Inner::HalfOpen { admitted, .. } = &mut *s {
            *admitted = admitted.saturating_sub(1);
        }
    }

    /// Records a success outside of a permit (e.g. for calls guarded elsewhere).
    pub fn on_success(&self) {
        self.record(false, true);
    }

    /// Records a failure outside of a permit.
    pub fn on_failure(&self) {
        self.record(false, false);
    }

    /// Runs `f` if the breaker allows it; every `Err` counts as a failure.
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_classified(f, |_| true).await
    }

    /// Runs `f` if the breaker allows it; only errors for which `is_failure` answers true
    /// count against the breaker (a 404 from a healthy server is not an outage).
    pub async fn call_classified<T, E, F, Fut, C>(
        &self,
        f: F,
        is_failure: C,
    ) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: FnOnce(&E) -> bool,
    {
        let permit = self.try_acquire()?;
        match f().await {
            Ok(v) => {
                permit.success();
                Ok(v)
            }
            Err(e) => {
                if is_failure(&e) {
                    permit.failure();
                } else {
                    permit.success();
                }
                Err(BreakerError::Inner(e))
            }
        }
    }
}

/// Permission to make one call through a [`CircuitBreaker`]; report how it went.
#[derive(Debug)]
#[must_use = "report the outcome with success() or failure()"]
pub struct BreakerPermit {
    breaker: CircuitBreaker,
    probe: bool,
    done: bool,
}

impl BreakerPermit {
    fn new(breaker: CircuitBreaker, probe: bool) -> Self {
        BreakerPermit {
            breaker,
            probe,
            done: false,
        }
    }

    /// The call succeeded.
    pub fn success(mut self) {
        self.done = true;
        self.breaker.record(self.probe, true);
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.record(self.probe, false);
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.release(self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(max: u32, probes: u32) -> CircuitBreaker {
        CircuitBreaker::new(CircuitBreakerConfig {
            max_failures: max,
            reset_timeout: Duration::from_secs(30),
            half_open_probes: probes,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn closed_to_open_after_max_consecutive_failures() {
        let b = breaker(3, 1);
        for _ in 0..2 {
            b.try_acquire().unwrap().failure();
        }
        // A success resets the count.
        b.try_acquire().unwrap().success();
        for _ in 0..2 {
            b.try_acquire().unwrap().failure();
        }
        assert_eq!(b.state(), CircuitState::Closed);
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Open);
        let open = b.try_acquire().unwrap_err();
        assert_eq!(open.retry_after, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn open_to_half_open_after_timeout_then_closed_on_probe_success() {
        let b = breaker(1, 2);
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(10)).await;
        let e = b.try_acquire().unwrap_err();
        assert_eq!(e.retry_after, Duration::from_secs(20));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        // Only two probes may be in flight.
        assert!(b.try_acquire().is_err());
        p1.success();
        assert_eq!(b.state(), CircuitState::HalfOpen);
        p2.success();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_failure_reopens() {
        let b = breaker(1, 1);
        b.try_acquire().unwrap().failure();
        tokio::time::advance(Duration::from_secs(30)).await;
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after,
            Duration::from_secs(30)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_probe_frees_its_slot() {
        let b = breaker(1, 1);
        b.try_acquire().unwrap().failure();
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(b.try_acquire().unwrap());
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn classified_errors_do_not_trip() {
        let b = breaker(1, 1);
        let r: Result<(), _> = b
            .call_classified(|| async { Err::<(), _>("not found") }, |_| false)
            .await;
        assert!(matches!(r, Err(BreakerError::Inner("not found"))));
        assert_eq!(b.state(), CircuitState::Closed);
        let r: Result<(), _> = b.call(|| async { Err::<(), _>("down") }).await;
        assert!(r.is_err());
        let r: Result<(), BreakerError<&str>> = b.call(|| async { Ok(()) }).await;
        assert!(matches!(r, Err(BreakerError::Open(_))));
    }
}

//! Retry with exponential backoff, jitter and a retry budget.

use parking_lot::Mutex;
use rand::Rng;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// How the computed backoff is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the exponential delay (for tests and for callers that add their own).
    None,
    /// Uniform in `[0, delay]` ("full jitter").
    Full,
    /// `delay / 2` plus uniform in `[0, delay / 2]` ("equal jitter"): never below half.
    Equal,
}

/// When and how often to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub base_delay: Duration,
    /// Factor applied per further retry.
    pub multiplier: f64,
    /// Upper bound of one delay.
    pub max_delay: Duration,
    /// Randomisation of each delay.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    /// 3 attempts, 0.5 s doubling, capped at 5 s, equal jitter (DOMAIN.md).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            multiplier: 2.0,
            max_delay: Duration::from_secs(5),
            jitter: Jitter::Equal,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based), with `unit` ∈ [0, 1) as the random
    /// draw for the jitter. Pure, so it can be checked without randomness.
    pub fn delay_with(&self, retry: u32, unit: f64) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(retry.saturating_sub(1).min(64) as i32);
        let raw = self.base_delay.as_secs_f64() * exp;
        let capped = raw.min(self.max_delay.as_secs_f64()).max(0.0);
        let unit = unit.clamp(0.0, 1.0);
        let secs = match self.jitter {
            Jitter::None => capped,
            Jitter::Full => capped * unit,
            Jitter::Equal => capped / 2.0 + capped / 2.0 * unit,
        };
        Duration::from_secs_f64(secs)
    }

    /// The delay before retry number `retry` (1-based), jittered with the thread RNG.
    pub fn delay(&self, retry: u32) -> Duration {
        let unit: f64 = rand::rng().random();
        self.delay_with(retry, unit)
    }
}

#[derive(Debug)]
struct BudgetState {
    balance: f64,
}

/// A budget shared by all callers of one dependency: every first attempt deposits `ratio`
/// of a token, every retry withdraws one, the balance is capped at `reserve` (and starts
/// there). With ratio 0.2, retries add at most 20 % load once the reserve is spent, however
/// many callers see failures at once.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    reserve: f64,
    state: Arc<Mutex<BudgetState>>,
}

impl RetryBudget {
    /// A budget with a deposit `ratio` per request and a `reserve` of retries.
    pub fn new(ratio: f64, reserve: u32) -> Self {
        let reserve = f64::from(reserve.max(1));
        RetryBudget {
            ratio: ratio.max(0.0),
            reserve,
            state: Arc::new(Mutex::new(BudgetState { balance: reserve })),
        }
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        let mut s = self.state.lock();
        s.balance = (s.balance + self.ratio).min(self.reserve);
    }

    /// Takes the cost of one retry; false when the budget is spent.
    pub fn try_withdraw(&self) -> bool {
        let mut s = self.state.lock();
        if s.balance >= 1.0 {
            s.balance -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whole retries currently affordable.
    pub fn remaining(&self) -> u32 {
        // balance is within [0, reserve] and reserve came from a u32.
        self.state.lock().balance.floor() as u32
    }
}

impl Default for RetryBudget {
    /// 20 % of requests, reserve of 10 retries.
    fn default() -> Self {
        RetryBudget::new(0.2, 10)
    }
}

/// Why a retried operation gave up.
#[derive(Debug, Error)]
pub enum RetryError<E> {
    /// The error was not worth retrying.
    #[error("{0}")]
    Permanent(E),
    /// Every attempt failed.
    #[error("gave up after {attempts} attempts: {last}")]
    AttemptsExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: E,
    },
    /// The shared retry budget was spent, so no further retry was made.
    #[error("retry budget spent after {attempts} attempts: {last}")]
    BudgetExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: E,
    },
}

impl<E> RetryError<E> {
    /// The underlying error.
    pub fn into_inner(self) -> E {
        match self {
            RetryError::Permanent(e)
            | RetryError::AttemptsExhausted { last: e, .. }
            | RetryError::BudgetExhausted { last: e, .. } => e,
        }
    }

    /// The underlying error, by reference.
    pub fn inner(&self) -> &E {
        match self {
            RetryError::Permanent(e)
            | RetryError::AttemptsExhausted { last: e, .. }
            | RetryError::BudgetExhausted { last: e, .. } => e,
        }
    }
}

/// What to do after a failed attempt (see [`retry_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Give up: the error is permanent.
    Stop,
    /// Retry after the policy's backoff.
    Retry,
    /// Retry, waiting at least this long (e.g. a server's `Retry-After`).
    RetryAfter(Duration),
}

/// Runs `op` (given the 1-based attempt number) until it succeeds, the error is not
/// retryable (`retryable` answers false), the attempts are used up, or `budget` is spent.
/// Sleeps with tokio's clock between attempts.
pub async fn retry<T, E, F, Fut, C>(
    policy: &RetryPolicy,
    budget: Option<&RetryBudget>,
    mut retryable: C,
    op: F,
) -> Result<T, RetryError<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: FnMut(&E) -> bool,
{
    retry_with(
        policy,
        budget,
        |e| {
            if retryable(e) {
                RetryDecision::Retry
            } else {
                RetryDecision::Stop
            }
        },
        op,
    )
    .await
}

/// Like [`retry`], but `decide` may ask for a longer wait than the backoff (the delay is
/// the larger of the two).
pub async fn retry_with<T, E, F, Fut, C>(
    policy: &RetryPolicy,
    budget: Option<&RetryBudget>,
    mut decide: C,
    mut op: F,
) -> Result<T, RetryError<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: FnMut(&E) -> RetryDecision,
{
    if let Some(b) = budget {
        b.deposit();
    }
    let max = policy.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let e = match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let at_least = match decide(&e) {
            RetryDecision::Stop => return Err(RetryError::Permanent(e)),
            RetryDecision::Retry => Duration::ZERO,
            RetryDecision::RetryAfter(d) => d,
        };
        if attempt >= max {
            return Err(RetryError::AttemptsExhausted {
                attempts: attempt,
                last: e,
            });
        }
        if let Some(b) = budget
            && !b.try_withdraw()
        {
            return Err(RetryError::BudgetExhausted {
                attempts: attempt,
                last: e,
            });
        }
        tokio::time::sleep(policy.delay(attempt).max(at_least)).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::time::Instant;

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            base_delay: Duration::from_millis(500),
            multiplier: 2.0,
            max_delay: Duration::from_secs(3),
            jitter: Jitter::None,
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = policy(10);
        let d: Vec<u64> = (1..=5)
            .map(|r| p.delay_with(r, 0.3).as_millis() as u64)
            .collect();
        assert_eq!(d, vec![500, 1000, 2000, 3000, 3000]);
    }

    #[test]
    fn jitter_stays_in_its_range() {
        let full = RetryPolicy {
            jitter: Jitter::Full,
            ..policy(3)
        };
        let equal = RetryPolicy {
            jitter: Jitter::Equal,
            ..policy(3)
        };
        assert_eq!(full.delay_with(2, 0.0), Duration::ZERO);
        assert_eq!(full.delay_with(2, 0.5), Duration::from_millis(500));
        assert_eq!(equal.delay_with(2, 0.0), Duration::from_millis(500));
        assert_eq!(equal.delay_with(2, 1.0), Duration::from_millis(1000));
        for _ in 0..100 {
            let d = equal.delay(2);
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_with_backoff() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let r: Result<u32, RetryError<&str>> = retry(
            &policy(3),
            None,
            |_| true,
            |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { if n < 3 { Err("flaky") } else { Ok(n) } }
            },
        )
        .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // 0.5 s + 1 s of virtual time.
        assert_eq!(start.elapsed().as_millis(), 1500);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_hint_lengthens_the_wait() {
        let start = Instant::now();
        let r: Result<u32, RetryError<&str>> = retry_with(
            &policy(2),
            None,
            |_| RetryDecision::RetryAfter(Duration::from_secs(2)),
            |n| async move { if n < 2 { Err("429") } else { Ok(n) } },
        )
        .await;
        assert_eq!(r.unwrap(), 2);
        assert_eq!(start.elapsed().as_millis(), 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(
            &policy(5),
            None,
            |e: &&str| *e != "404",
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err("404") }
            },
        )
        .await;
        assert!(matches!(r, Err(RetryError::Permanent("404"))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded() {
        let r: Result<(), _> = retry(&policy(4), None, |_| true, |_| async { Err("down") }).await;
        assert!(matches!(
            r,
            Err(RetryError::AttemptsExhausted { attempts: 4, .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_caps_retries_across_calls() {
        // Reserve of 2 retries, 10 % deposit per request.
        let budget = RetryBudget::new(0.1, 2);
        let total = AtomicU32::new(0);
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            let r: Result<(), _> = retry(
                &policy(5),
                Some(&budget),
                |_| true,
                |_| {
                    total.fetch_add(1, Ordering::SeqCst);
                    async { Err("down") }
                },
            )
            .await;
            outcomes.push(r.unwrap_err());
        }
        // Call 1: deposit keeps the balance at the cap (2), retries twice, then the budget
        // (0.0) refuses. Calls 2 and 3: deposits of 0.1 are not enough for a retry.
        assert!(matches!(
            outcomes[0],
            RetryError::BudgetExhausted { attempts: 3, .. }
        ));
        assert!(matches!(
            outcomes[1],
            RetryError::BudgetExhausted { attempts: 1, .. }
        ));
        assert_eq!(total.load(Ordering::SeqCst), 5);
        // Ten more first attempts earn one retry back.
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(budget.remaining(), 1);
    }
}

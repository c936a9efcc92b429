//! The dynamic batch interval: how long the city waits before sealing the next DAG batch,
//! adapted to how much work is pending.

use std::time::Duration;

/// Bounds and steps of the dynamic interval, in milliseconds. `Default` is the documented
/// rule: start 1.0 s; more than 50 pending → 0.5 s; none pending → min(cur + 0.5 s, 5.0 s);
/// otherwise max(cur − 0.1 s, 0.5 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInterval {
    /// First interval.
    pub start_ms: u64,
    /// Shortest interval.
    pub min_ms: u64,
    /// Longest interval.
    pub max_ms: u64,
    /// Pending count above which the interval drops straight to `min_ms`.
    pub busy_threshold: usize,
    /// Growth when idle.
    pub idle_step_ms: u64,
    /// Shrink when some work is pending.
    pub busy_step_ms: u64,
}

impl Default for BatchInterval {
    fn default() -> Self {
        BatchInterval {
            start_ms: 1000,
            min_ms: 500,
            max_ms: 5000,
            busy_threshold: 50,
            idle_step_ms: 500,
            busy_step_ms: 100,
        }
    }
}

impl BatchInterval {
    /// The interval to use next, given the current one and how many items are pending.
    pub fn next(&self, current: Duration, pending: usize) -> Duration {
        let cur = current.as_millis().min(u64::MAX as u128) as u64;
        let next = if pending > self.busy_threshold {
            self.min_ms
        } else if pending == 0 {
            cur.saturating_add(self.idle_step_ms).min(self.max_ms)
        } else {
            cur.saturating_sub(self.busy_step_ms).max(self.min_ms)
        };
        Duration::from_millis(next)
    }
    /// The first interval.
    pub fn start(&self) -> Duration {
        Duration::from_millis(self.start_ms)
    }
}

/// The documented rule ([`BatchInterval::default`]) as a plain function.
pub fn next_batch_interval(current: Duration, pending: usize) -> Duration {
    BatchInterval::default().next(current, pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cur_ms: u64, pending: usize, expected_ms: u64) {
        assert_eq!(
            next_batch_interval(Duration::from_millis(cur_ms), pending),
            Duration::from_millis(expected_ms),
            "cur={cur_ms}ms pending={pending}"
        );
    }

    #[test]
    fn rule_table() {
        assert_eq!(BatchInterval::default().start(), Duration::from_secs(1));
        check(1000, 51, 500);
        check(5000, 1000, 500);
        check(1000, 50, 900); // exactly 50 is not "> 50"
        check(1000, 0, 1500);
        check(4800, 0, 5000);
        check(5000, 0, 5000);
        check(1000, 1, 900);
        check(550, 10, 500);
        check(500, 10, 500);
        check(500, 0, 1000);
    }

    #[test]
    fn stays_within_bounds() {
        let mut cur = BatchInterval::default().start();
        for pending in [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 100, 0, 7] {
            cur = next_batch_interval(cur, pending);
            assert!(cur >= Duration::from_millis(500) && cur <= Duration::from_secs(5));
        }
    }
}

//! Wall clocks for the presence stores (implementations of [`dag_core::Clock`]).

use dag_core::Clock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The system's wall clock. Use it when several servers share one Redis: scores are
/// compared across processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Wall time that advances with tokio's clock: the system time when created plus the
/// tokio time elapsed since. Under `tokio::time::pause()` it stands still and jumps with
/// `advance`, so TTL logic can be tested without sleeping.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at the current system time.
    pub fn new() -> Self {
        TokioClock {
            base_ms: SystemClock.now_ms(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }
}

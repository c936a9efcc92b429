//! The test double: a flagger that returns one fixed flag and counts its calls.

use crate::{Flag, FlagInput, Flagger};
use std::sync::atomic::{AtomicU64, Ordering};

/// Returns the same [`Flag`] (with the tx's own kind and class) for every tx; counts calls.
#[derive(Debug)]
pub struct FixedFlagger {
    flag: Flag,
    calls: AtomicU64,
}

impl FixedFlagger {
    /// A double answering `flag` (its `kind` and `class` are replaced by the tx's).
    pub fn new(flag: Flag) -> Self {
        FixedFlagger {
            flag,
            calls: AtomicU64::new(0),
        }
    }
    /// How many txs were flagged.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Flagger for FixedFlagger {
    fn name(&self) -> &str {
        "fixed"
    }
    fn flag(&self, input: &FlagInput<'_>) -> Flag {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Flag {
            kind: input.tx.kind,
            class: input.tx.kind.processing_rank(),
            ..self.flag.clone()
        }
    }
}

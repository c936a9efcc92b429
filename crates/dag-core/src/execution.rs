//! Execution of committed txs by **state machines** (the ledger, DPoS, …): the port every
//! state machine implements ([`CommitApplier`]) and the combined state root a checkpoint
//! header carries ([`combined_root`]).
//!
//! The city's execution feed hands each applier, for every checkpoint sequence in order
//! and without gaps, the verified bodies of the txs that checkpoint committed, in commit
//! order, with one timestamp every representative agrees on. An applier is durable and
//! idempotent per sequence, so a representative that crashes anywhere resumes by asking
//! each applier where it stands ([`CommitApplier::next_seq`]).

use crate::{Hash32, VerifiedTx};

/// Domain tag of the combined state root.
pub const STATE_ROOT_DOMAIN: &[u8] = b"citychain/state-root/v1";

/// Why an applier could not apply a checkpoint. Never a verdict on a tx: a tx that cannot
/// be executed gets a failure *outcome* inside the state machine, identical on every
/// representative; these errors stop the feed at the checkpoint (it retries).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// `seq` is beyond the applier's next sequence: a checkpoint would be skipped.
    #[error("state machine {name}: checkpoint {seq} arrived before {expected}")]
    Gap {
        /// The applier.
        name: &'static str,
        /// The sequence offered.
        seq: u64,
        /// The sequence it expects next.
        expected: u64,
    },
    /// The applier's own storage failed (I/O, corruption); the checkpoint is not applied.
    #[error("state machine {name}: storage failed at checkpoint {seq}: {reason}")]
    Storage {
        /// The applier.
        name: &'static str,
        /// The sequence being applied.
        seq: u64,
        /// What failed.
        reason: String,
    },
}

/// A deterministic state machine fed with committed txs.
///
/// Contract:
/// - `apply(seq, …)` with `seq == next_seq()` executes `txs` (in the given order) and
///   durably records the new state, its root and `next_seq = seq + 1` **atomically**;
/// - `apply(seq, …)` with `seq < next_seq()` changes nothing and returns the root recorded
///   after `seq` (so a feed that crashed after some appliers applied `seq` can ask again);
/// - `apply(seq, …)` with `seq > next_seq()` is [`ApplyError::Gap`].
///
/// The outcome must depend only on `(state, seq, at_ms, txs)`: no clock, randomness or
/// local configuration, so every representative reaches the same root.
pub trait CommitApplier: Send + Sync {
    /// A stable name; the combined root orders appliers by it. Never change it.
    fn name(&self) -> &'static str;
    /// The first sequence not applied yet.
    fn next_seq(&self) -> u64;
    /// Applies checkpoint `seq` (see the trait docs). `at_ms` is the checkpoint's agreed
    /// time (the committed leader's timestamp, never lower than the previous checkpoint's).
    fn apply(&self, seq: u64, at_ms: u64, txs: &[VerifiedTx]) -> Result<Hash32, ApplyError>;
}

/// The combined state root: BLAKE3 of [`STATE_ROOT_DOMAIN`] ‖ count u32 ‖ per applier in
/// ascending name order (name length u16 ‖ name ‖ root 32). Equal inputs in any order give
/// the same root; a repeated name is counted as given (callers pass each applier once).
pub fn combined_root(roots: &[(&str, Hash32)]) -> Hash32 {
    let mut sorted: Vec<&(&str, Hash32)> = roots.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = blake3::Hasher::new();
    h.update(STATE_ROOT_DOMAIN);
    h.update(
        &u32::try_from(sorted.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for (name, root) in sorted {
        let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
        h.update(&len.to_le_bytes());
        h.update(&name.as_bytes()[..usize::from(len)]);
        h.update(&root.0);
    }
    Hash32(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_root_is_order_free_and_binds_names_and_roots() {
        let a = Hash32([1; 32]);
        let b = Hash32([2; 32]);
        let r = combined_root(&[("ledger", a), ("dpos", b)]);
        assert_eq!(r, combined_root(&[("dpos", b), ("ledger", a)]));
        assert_ne!(r, combined_root(&[("ledger", b), ("dpos", a)]));
        assert_ne!(r, combined_root(&[("ledger", a)]));
        assert_ne!(r, combined_root(&[("ledgex", a), ("dpos", b)]));
        assert_ne!(combined_root(&[]), Hash32([0; 32]));
        // Name boundaries are length-prefixed: ("ab", x) ≠ ("a", …) shapes.
        assert_ne!(
            combined_root(&[("ab", a)]),
            combined_root(&[("a", Hash32([b'b'; 32]))])
        );
    }
}

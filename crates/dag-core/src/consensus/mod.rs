//! Ordering of the city DAG: certified batches among representatives, the Bullshark-style
//! commit rule, deterministic linearisation, checkpoints and equivocation evidence.
//!
//! Everything here is pure: no I/O, no clock reads, no randomness. Time arrives as
//! `now_ms` arguments, signatures go through the [`Signer`](crate::Signer) and
//! [`SignatureVerifier`](crate::SignatureVerifier) ports.
//!
//! The pieces, bottom up:
//! - [`Committee`]: representatives with stake, quorum (2f + 1) and validity (f + 1) tests,
//!   the leader schedule.
//! - [`BatchHeader`] / [`SignedBatch`]: a representative's proposal for one round.
//! - [`Vote`] and [`VotesAggregator`]: others' signed approval; 2f + 1 stake of votes make a
//!   [`Certificate`], checked into a [`VerifiedCertificate`].
//! - [`DagStore`]: certified batches whose parents and weak links are present, and the
//!   ones nothing links to yet ([`DagStore::unreferenced`]).
//! - Weak links ([`BatchHeader::weak_links`]): a batch also names late certificates of
//!   earlier rounds, so every certified batch is eventually ordered (see the driver docs).
//! - [`Committer`]: the commit rule, producing [`CommittedSubDag`]s with a [`Checkpoint`];
//!   it orders a leader's causal history through parents and weak links.
//! - [`Equivocation`]: evidence that one author signed two batches for one round.
//! - [`Consensus`]: the driver state machine (messages and ticks in, messages and commits
//!   out) that a node runs over any transport.
//! - `DagBuilder` (tests, `test-utils` feature): a text DSL describing DAGs; `TestSigner` /
//!   `TestVerifier`: cheap keyed-BLAKE3 signature doubles for simulations.
//!
//! # Running it in a node
//! 1. `Consensus::new(committee, signer, verifier, config)` (or [`Consensus::recover`] with
//!    the persisted records after a restart), then `start(now_ms)`.
//! 2. Feed every received [`Message`] to `handle(now_ms, sender, message)` and call
//!    `tick(now_ms)` periodically (e.g. every 50–100 ms). Queue held txs or micro-batch
//!    stripes with `add_payload`; set the dynamic batch interval with
//!    `set_proposal_interval`.
//! 3. Act on each [`Output`] in order: `Persist` (write durably first), `Broadcast` / `Send`
//!    (over the Consensus gRPC service; [`Message::encode`] gives canonical bytes),
//!    `Committed` (apply the ordered batches; `checkpoint.sequence` numbers them, positions
//!    inside are the order of `batches`), `Evidence` (hand to dpos).
//! 4. Never re-propose items: every item handed to a live member commits exactly once,
//!    late certificates included (weak links). After a restart, hand back with
//!    `add_payload` only the items that are neither committed (the replayed commits say
//!    which) nor in [`Consensus::in_flight_items`].
//!
//! ```
//! use dag_core::consensus::Committee;
//!
//! let keys = (0..4u8).map(|i| vec![i; 32]).collect();
//! let committee = Committee::equal(keys).unwrap();
//! assert!(committee.is_quorum(3) && !committee.is_quorum(2)); // 2f + 1 of 4
//! assert!(committee.is_validity(2) && !committee.is_validity(1)); // f + 1
//! assert_eq!(committee.leader(2), committee.authorities()[1].id); // round robin on even rounds
//! ```

mod batch;
#[cfg(any(test, feature = "test-utils"))]
mod builder;
mod certificate;
mod commit;
mod committee;
mod driver;
mod equivocation;
mod error;
mod store;
#[cfg(any(test, feature = "test-utils"))]
mod test_utils;
mod vote;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_epoch;
#[cfg(test)]
mod tests;

pub use batch::{
    BatchDigest, BatchHeader, BatchItem, MAX_BATCH_ITEMS, MAX_EPOCH, MAX_EPOCH_ROUND, MAX_PARENTS,
    MAX_WEAK_LINKS, Round, SignedBatch, signed_round,
};
#[cfg(any(test, feature = "test-utils"))]
pub use builder::DagBuilder;
pub use certificate::{Certificate, VerifiedCertificate};
pub use commit::{ChainStart, Checkpoint, CommittedSubDag, Committer};
pub use committee::{Authority, AuthorityIndex, Committee, LeaderSchedule, Stake};
pub use driver::{Consensus, ConsensusConfig, FetchRequest, MAX_FETCH, Message, Output, Record};
pub use equivocation::Equivocation;
pub use error::{ConsensusError, Result};
pub use store::DagStore;
#[cfg(any(test, feature = "test-utils"))]
pub use test_utils::{TestSigner, TestVerifier};
pub use vote::{Vote, VotesAggregator};

/// Domain separation tags of consensus messages. Each signed message is
/// `tag ‖ fields`, as documented on the signing functions.
pub mod domain {
    /// Batch header signature: `BATCH ‖ round (u64 LE) ‖ batch digest (32 bytes)`.
    pub const BATCH: &[u8] = b"citychain/dag-batch/v1";
    /// Vote signature: `VOTE ‖ batch digest (32 bytes)`.
    pub const VOTE: &[u8] = b"citychain/dag-vote/v1";
    /// Checkpoint running hash: `BLAKE3(CHECKPOINT ‖ checkpoint encoding)`.
    pub const CHECKPOINT: &[u8] = b"citychain/dag-checkpoint/v1";
    /// Stake-weighted leader draw: `BLAKE3(LEADER ‖ seed ‖ round (u64 LE))`.
    pub const LEADER: &[u8] = b"citychain/dag-leader/v1";
}

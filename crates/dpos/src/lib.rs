//! # dpos
//!
//! The economic layer of City Chain as a deterministic state machine: stake, bonding and
//! delegation (votes) with a 90-day lock, representative election by score, approval by
//! ≥ 2/3 of online stake, the misbehaviour monitor, slashing and the rewards ledger.
//!
//! - State changes only through [`DposState::apply`] of a [`VerifiedSystemTx`]: a
//!   `dag_core::Tx` of kind `SystemTx` carrying a [`SystemPayload`], signed by the account's
//!   ML-DSA-87 key and verified (envelope, evidence headers, receipts) before it can be
//!   applied. Time comes in through [`ApplyCtx`]; nothing here reads a clock.
//! - A rejected tx returns a typed [`Error`] and leaves the state byte-for-byte unchanged.
//! - Amounts are `u64` base units with checked arithmetic; the score is fixed point
//!   ([`Score`], 10⁻¹⁰ points); no decision uses floats.
//! - [`DposState::snapshot`] / [`DposState::restore`] give canonical bytes.
//!
//! # Wiring it into a node
//!
//! - **Apply a committed system tx**: every replica applies the committed `system_tx`s in
//!   commit order with the same consensus time (e.g. the committing leader batch's
//!   timestamp): `let stx = VerifiedSystemTx::from_verified_tx(&verified_tx, &pqc::MlDsa87)?;
//!   let outcome = state.apply(&stx, &ApplyCtx { now_ms })?;` (or
//!   [`DposState::apply_signed`] from a `SignedTx`). A rejected tx is simply skipped.
//! - **Report a double sign**: [`DoubleSignEvidence::from_equivocation`] (city level, from a
//!   `dag_core::consensus::Equivocation` and the author's committee key), wrapped as
//!   [`SystemPayload::DoubleSign`] and signed with [`sign_system_tx`] by any account.
//! - **Approve a batch**: [`DposState::approval`]`(&online, &approvers).approved`, or the
//!   bare rule [`is_approved`]`(approving_stake, online_stake)`.
//! - **Committee**: [`DposState::representative_stakes`] after each [`Outcome::Elected`].
//! - **Commit to the state**: [`DposState::state_root`] (BLAKE3 of the snapshot).
//!
//! Identity: a node's id and its account id are the same bytes (both BLAKE3 of its one
//! ML-DSA-87 key), so a node registers, bonds and is slashed as one account; cold wallets
//! back it by delegation.

mod apply;
mod approval;
mod balances;
mod config;
mod election;
mod error;
mod evidence;
mod payload;
mod score;
mod snapshot;
mod state;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use apply::Outcome;
pub use approval::{Approval, is_approved};
pub use balances::LiquidBalances;
pub use config::{DAY_MS, DposConfig, SlashLevel};
pub use election::{Candidate, elect, rank_order};
pub use error::{Error, Result};
pub use evidence::{DoubleSignEvidence, SignedHeaderDigest};
pub use payload::{
    MAX_ENDPOINT_LEN, MAX_RECEIPTS_PER_TX, NodeKind, SystemPayload, VerifiedSystemTx,
    sign_system_tx, system_tx, validate_endpoint,
};
pub use score::{Metrics, PPM, SCORE_SCALE, Score, rate_tenths, reward, score};
pub use state::{
    ApplyCtx, DposState, Genesis, GenesisBond, Lot, NodeRecord, Pending, Supply, Term,
};

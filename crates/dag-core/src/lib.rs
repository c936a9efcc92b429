//! # dag-core
//!
//! The domain of City Chain with no I/O: transaction and node types, the one canonical
//! binary encoding, identifiers (BLAKE3), the processing order of tx kinds, the dynamic batch
//! interval, and the **ports** — traits through which other crates plug in signatures,
//! clocks and stores.
//!
//! Nothing here reads a clock, draws randomness, spawns a thread or touches a file: time and
//! randomness are passed in, so every rule is testable deterministically.
//!
//! ```
//! use dag_core::{Tx, TxKind, AccountId, CityId, Position, PositionMethod};
//!
//! let tx = Tx::fresh(
//!     AccountId::from_bytes([1; 32]),
//!     AccountId::from_bytes([2; 32]),
//!     500,
//!     7,
//!     1_700_000_000_000,
//!     CityId::new("JP-13").unwrap(),
//!     Position::from_degrees(35.6895, 139.6917).unwrap(),
//!     PositionMethod::Gps,
//! );
//! let bytes = tx.encode();
//! assert_eq!(Tx::decode(&bytes).unwrap(), tx);
//! assert_eq!(tx.id(), Tx::decode(&bytes).unwrap().id());
//! ```

mod batcher;
pub mod consensus;
mod encoding;
mod error;
pub mod execution;
mod ids;
pub mod merkle;
mod node;
mod ports;
mod receipt;
mod tx;
mod working_set;

pub use batcher::{BatchInterval, next_batch_interval};
pub use encoding::{Reader, Writer};
pub use error::{DecodeError, Error, Result};
pub use ids::{AccountId, Hash32, NodeId, ObjectId, ShardHash, StripeId, TxId};
pub use node::{NodeInfo, Role};
pub use ports::{Clock, ManualClock, SignatureError, SignatureVerifier, Signer};
pub use receipt::{Receipt, SignedReceipt, VerifiedReceipt};
pub use tx::{
    CityId, MAX_CITY_ID_LEN, MAX_KEY_LEN, MAX_OBJECT_SET, MAX_PAYLOAD, MAX_SIGNATURE_LEN,
    MAX_SIGNED_TX_LEN, Position, PositionMethod, SignedTx, Tx, TxKind, VerifiedTx,
};
pub use working_set::{GC_INTERVAL, GcReport, WorkState, WorkingSet};

/// Domain separation tags: every signed message starts with one, so a signature made for
/// one purpose can never be replayed as another.
pub mod domain {
    /// Prefix of the message signed for a transaction (followed by the 32-byte tx id).
    pub const TX: &[u8] = b"citychain/tx/v1";
    /// Prefix of the message signed for a storage receipt (PoH_ACK).
    pub const RECEIPT: &[u8] = b"citychain/receipt/v1";
}

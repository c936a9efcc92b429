//! # archive
//!
//! The long-term record of held txs: an [`Archive`] trait with an embedded redb backend
//! ([`RedbArchive`], the default) and a MongoDB backend (`MongoArchive`, feature `mongodb`).
//!
//! - **Idempotent put by tx id**; a different tx under an existing id is
//!   [`Error::Conflict`] and nothing is overwritten.
//! - **Field encryption**: amount, parties (sender, receiver, public key), payload and
//!   signature are sealed with XChaCha20-Poly1305 under a random per-record data key, which
//!   is wrapped by the current key of a [`pqc::Keyring`] (NTRU-KEM by default, or
//!   ML-KEM-1024: [`ArchiveKeys::open_or_create_with`]) and stored beside the record
//!   ([`ArchiveKeys`]; rotation keeps old records readable, [`RedbArchive::rewrap`] moves
//!   them to the current key, crash-safe). Lookups by sender use a
//!   keyed blind index, so the store never sees a plaintext party. Format: see `record`.
//! - **DAG nodes**: each record names its parents ([`DagNode`]).
//! - **Retention**: default 180 days ([`ArchiveConfig`]), time passed in.
//! - **Background writes**: [`ArchiveWriter`] batches entries from a bounded queue, with
//!   back-pressure ([`ArchiveWriter::submit`] waits, [`ArchiveWriter::try_submit`] fails).
//!
//! The trait is async (native `async fn`): use it generically, or through [`AnyArchive`] to
//! pick a backend at run time. Reads return the decrypted [`dag_core::SignedTx`] after
//! checking its id against the id asked for.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> archive::Result<()> {
//! use archive::{Archive, ArchiveEntry, RedbArchive};
//! use dag_core::{AccountId, CityId, Position, PositionMethod, Tx};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let archive = RedbArchive::open_in_dir(dir.path())?; // archive.redb + archive.keyring
//!
//! let kp = pqc::Keypair::generate();
//! let tx = Tx::fresh(kp.account_id(), AccountId::from_bytes([2; 32]), 5, 1, 0,
//!     CityId::new("JP-13").unwrap(), Position::default(), PositionMethod::Gps);
//! let verified = pqc::sign_tx(tx, &kp).verify(&pqc::MlDsa87).unwrap();
//! let id = verified.id();
//!
//! archive.put(ArchiveEntry::new(verified, 1_700_000_000_000)).await?;
//! assert_eq!(archive.get(id).await?.unwrap().signed.tx.amount, 5);
//! # Ok(()) }
//! ```

mod any;
mod error;
mod keys;
#[cfg(feature = "mongodb")]
mod mongo_backend;
mod port;
mod record;
mod redb_backend;
mod writer;

pub use any::AnyArchive;
pub use error::{Error, Result};
pub use keys::ArchiveKeys;
#[cfg(feature = "mongodb")]
pub use mongo_backend::{MongoArchive, MongoConfig};
pub use port::{Archive, ArchiveConfig, DEFAULT_CACHE_BYTES, DEFAULT_RETENTION, PutOutcome};
pub use record::{ArchiveEntry, ArchivedTx, DagNode, MAX_PARENTS};
pub use redb_backend::{
    ARCHIVE_FILE, DEFAULT_REWRAP_CHUNK, KEYRING_FILE, RedbArchive, RewrapStats,
};
pub use writer::{ArchiveWriter, ArchiveWriterConfig, WriterStats};

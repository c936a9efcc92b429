//! Errors of the archive crate: every failure names the tx (and field or key) it concerns.

use dag_core::TxId;
use pqc::{KemError, KeyId};
use std::path::PathBuf;
use thiserror::Error;

/// Errors of the archive.
#[derive(Debug, Error)]
pub enum Error {
    /// A record with this tx id exists with different content; nothing was overwritten.
    #[error("tx {tx_id} is already archived with different content; not overwritten")]
    Conflict {
        /// The tx id.
        tx_id: TxId,
    },
    /// A stored record does not decode (truncated, wrong magic or version, bad lengths).
    #[error("archived record of tx {tx_id} is corrupt: {reason}")]
    CorruptRecord {
        /// The tx id asked for (the key the record was stored under).
        tx_id: TxId,
        /// What is wrong.
        reason: String,
    },
    /// The record's data key is wrapped under a key that is not in the key ring.
    #[error("archived record of tx {tx_id} needs key {key_id}, which is not in the key ring")]
    UnknownKey {
        /// The tx id.
        tx_id: TxId,
        /// The key id the record names.
        key_id: KeyId,
    },
    /// The record's wrapped data key did not unwrap: tampered, or the key ring holds a
    /// different secret under that key id.
    #[error("data key of tx {tx_id} (key {key_id}) did not unwrap: {source}")]
    KeyUnwrap {
        /// The tx id.
        tx_id: TxId,
        /// The key id the record names.
        key_id: KeyId,
        /// The reason.
        source: Box<KemError>,
    },
    /// An encrypted field failed authentication: the record was tampered with (or its
    /// ciphertexts were moved between records).
    #[error("field {field} of archived tx {tx_id} failed authentication (tampered)")]
    Tampered {
        /// The tx id.
        tx_id: TxId,
        /// The field.
        field: &'static str,
    },
    /// The decrypted tx hashes to another id than the one asked for.
    #[error("archived record asked for as tx {asked} decrypts to tx {found}")]
    IdMismatch {
        /// The id asked for.
        asked: TxId,
        /// The id of the decrypted tx.
        found: TxId,
    },
    /// Encrypting a record failed (randomness unavailable or KEM failure).
    #[error("could not encrypt tx {tx_id}: {source}")]
    Encrypt {
        /// The tx id.
        tx_id: TxId,
        /// The reason.
        source: Box<KemError>,
    },
    /// The key ring could not be loaded, created, rotated or saved.
    #[error("key ring: {0}")]
    Keyring(#[source] Box<KemError>),
    /// The embedded store failed.
    #[error("redb {op}: {source}")]
    Redb {
        /// The operation.
        op: &'static str,
        /// The store's error.
        source: Box<redb::Error>,
    },
    /// A file or directory could not be created or read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The background writer's queue is full (see `ArchiveWriter::try_submit`).
    #[error("archive queue full; tx {tx_id} not queued")]
    QueueFull {
        /// The tx that was not queued.
        tx_id: TxId,
    },
    /// The background writer has stopped.
    #[error("archive writer has stopped")]
    WriterClosed,
    /// A blocking task panicked or was cancelled.
    #[error("archive task failed: {0}")]
    Task(String),
    /// The MongoDB backend failed.
    #[cfg(feature = "mongodb")]
    #[error("mongodb {op}: {source}")]
    Mongo {
        /// The operation.
        op: &'static str,
        /// The driver's error.
        source: Box<mongodb::error::Error>,
    },
}

/// Result with the archive's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

/// Maps any redb error into [`Error::Redb`] with the operation's name.
pub(crate) fn redb_err<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Redb {
        op,
        source: Box::new(e.into()),
    }
}

/// Maps a MongoDB driver error into [`Error::Mongo`] with the operation's name.
#[cfg(feature = "mongodb")]
pub(crate) fn mongo_err(op: &'static str) -> impl FnOnce(mongodb::error::Error) -> Error {
    move |e| Error::Mongo {
        op,
        source: Box::new(e),
    }
}

/// Wraps a key ring failure.
pub(crate) fn keyring_err(e: KemError) -> Error {
    Error::Keyring(Box::new(e))
}

//! Errors of the pqc crate.

use std::path::PathBuf;
use thiserror::Error;

/// Errors of key handling and verification.
#[derive(Debug, Error)]
pub enum Error {
    /// A key had the wrong length.
    #[error("{what} has {got} bytes, expected {expected}")]
    BadKeyLength {
        /// Which key.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Length found.
        got: usize,
    },
    /// Key bytes of the right length that the ML-DSA implementation rejects.
    #[error("{what} rejected: {reason}")]
    InvalidKey {
        /// Which key.
        what: &'static str,
        /// The implementation's reason.
        reason: String,
    },
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file is not a City Chain key file or is damaged.
    #[error("key file {path} is corrupt: {reason}")]
    CorruptKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The secret and public key in a key file do not belong together.
    #[error("key file {path}: secret key does not match its public key")]
    KeyPairMismatch {
        /// The file.
        path: PathBuf,
    },
    /// The verification pool could not be built.
    #[error("could not build the verification pool: {0}")]
    Pool(String),
}

/// Result with pqc's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

//! Error types of dag-core: decoding failures and rule violations.

use thiserror::Error;

/// Why bytes could not be decoded into a domain value. Each variant names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended before the named field was complete.
    #[error("input truncated while reading {field}: needed {needed} more bytes, had {had}")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        had: usize,
    },
    /// Bytes were left over after a complete value.
    #[error("{0} trailing bytes after a complete value")]
    TrailingBytes(usize),
    /// The encoding version byte is not one we understand.
    #[error("unsupported encoding version {0}")]
    UnsupportedVersion(u8),
    /// A tx kind byte outside the seven known kinds.
    #[error("unknown tx kind {0}")]
    UnknownKind(u8),
    /// A position method byte outside GPS / Wi-Fi.
    #[error("unknown position method {0}")]
    UnknownMethod(u8),
    /// A length field exceeds the documented limit.
    #[error("{field} is {len} bytes/items, over the limit of {max}")]
    TooLong {
        /// Field whose length is over the limit.
        field: &'static str,
        /// Length found.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A field holds a value outside its domain.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Field that failed validation.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

/// Errors of dag-core's rules.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// Bytes did not decode.
    #[error("malformed encoding: {0}")]
    Decode(#[from] DecodeError),
    /// The public key in a signed value does not hash to the claimed account or node.
    #[error("public key hashes to {actual}, but the value claims {claimed}")]
    KeyMismatch {
        /// Id the value claims.
        claimed: String,
        /// Id the key hashes to.
        actual: String,
    },
    /// The signature did not verify.
    #[error("signature check failed for {what}: {source}")]
    BadSignature {
        /// What was being verified ("tx 9f2c…", "receipt …").
        what: String,
        /// The verifier's reason.
        source: crate::SignatureError,
    },
}

/// Result with dag-core's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

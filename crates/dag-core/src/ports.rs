//! Ports: the traits through which dag-core's rules reach signatures and time. Test doubles
//! live beside them so every rule can be exercised without a real key or clock.

use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// The public key has the wrong length or is malformed.
    #[error("malformed public key: expected {expected} bytes, got {got}")]
    BadKey {
        /// Expected length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// The signature has the wrong length.
    #[error("malformed signature: expected {expected} bytes, got {got}")]
    BadLength {
        /// Expected length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// Well-formed, but not a valid signature of this message by this key.
    #[error("signature does not verify")]
    Invalid,
}

/// Verifies detached signatures (ML-DSA-87 in production: `pqc::MlDsa87`).
pub trait SignatureVerifier: Send + Sync {
    /// Ok if `sig` is a valid signature of `msg` under `public_key`.
    fn verify(&self, public_key: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), SignatureError>;
}

/// Signs messages with one secret key.
pub trait Signer: Send + Sync {
    /// The matching public key.
    fn public_key(&self) -> &[u8];
    /// A detached signature of `msg`.
    fn sign(&self, msg: &[u8]) -> Vec<u8>;
}

/// A source of wall-clock time, injected so rules never read the clock themselves.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// A clock that only moves when told: the test double for [`Clock`].
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> Self {
        ManualClock(AtomicU64::new(ms))
    }
    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    /// Sets the clock.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

//! # pqc
//!
//! Post-quantum cryptography for City Chain.
//!
//! - ML-DSA-87 (FIPS 204, "Dilithium5") on aws-lc-rs: [`Keypair`] signs (it is a
//!   [`dag_core::Signer`]), [`MlDsa87`] verifies (it is a [`dag_core::SignatureVerifier`]).
//!   The feature `pqcrypto-mldsa` (off by default) adds `pqcrypto_backend`, the former
//!   PQClean backend, for side-by-side benchmarks and cross-checks only.
//! - [`BatchVerifier`]: verification of many signed txs in parallel on a bounded pool, so
//!   CPU-heavy work never runs on an async reactor.
//! - Key files: [`Keypair::save`] writes the secret key with mode 0600 and a checksum;
//!   [`Keypair::load`] rejects wrong lengths and corrupt files with a precise error. Files
//!   written by the former pqcrypto backend load unchanged (pinned in `tests/fixtures`).
//! - Key wrapping with crypto agility: a [`Kem`] (NTRU, the default, or ML-KEM-1024) wraps
//!   data keys; each [`WrappedKey`] names its KEM; a [`Keyring`] rotates to either and
//!   [`Keyring::rewrap`]s old keys to the current one.
//!
//! ```
//! use pqc::{Keypair, MlDsa87};
//! use dag_core::{Signer, SignatureVerifier};
//!
//! let kp = Keypair::generate();
//! let sig = kp.sign(b"hello");
//! assert!(MlDsa87.verify(kp.public_key(), b"hello", &sig).is_ok());
//! assert!(MlDsa87.verify(kp.public_key(), b"hellO", &sig).is_err());
//! ```

mod batch;
mod error;
mod kem;
mod keyfile;
mod mldsa;
#[cfg(feature = "pqcrypto-mldsa")]
pub mod pqcrypto_backend;

pub use batch::BatchVerifier;
pub use error::{Error, Result};
pub use kem::{
    DATA_KEY_LEN, DataKey, Kem, KemError, KemKeypair, KemPublicKey, KemResult, KeyId, Keyring,
    NtruParams, SEAL_OVERHEAD, WrappedKey,
};
pub use mldsa::{Keypair, MlDsa87, PUBLIC_KEY_LEN, SECRET_KEY_LEN, SIGNATURE_LEN, sign_tx};

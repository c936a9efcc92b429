//! Integration tests of the archive: the conformance suite on every backend (MongoDB with
//! the `mongodb` feature, against the server MONGODB_URI names), plaintext scans of the
//! store file, key rotation, tampering, and a writer process killed mid-batch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod conformance;
mod crash;
#[cfg(feature = "mongodb")]
mod mongo;
mod redb;
mod rewrap;

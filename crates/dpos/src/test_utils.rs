//! Helpers for tests and benches (`cfg(test)` or the `test-utils` feature): a pool of
//! ML-DSA-87 key pairs generated once, and small builders.

use crate::{Metrics, SystemPayload, VerifiedSystemTx, sign_system_tx};
use dag_core::CityId;
use pqc::{Keypair, MlDsa87};
use std::sync::LazyLock;

/// Number of key pairs in the pool.
pub const KEY_POOL: usize = 8;

static KEYS: LazyLock<Vec<Keypair>> =
    LazyLock::new(|| (0..KEY_POOL).map(|_| Keypair::generate()).collect());

/// The shared key pool (generated on first use; ML-DSA-87 keygen costs ~0.2–1 ms each).
pub fn keys() -> &'static [Keypair] {
    &KEYS
}

/// The city every test tx claims.
pub fn city() -> CityId {
    CityId::new("JP-13").unwrap_or_else(|_| unreachable!("a valid literal"))
}

/// Metrics of a good node: 0.9, 1000 GB, 0.8, 0.7, 0.99, 1 % errors (score 1.1925 + stake).
pub fn metrics_for_test() -> Metrics {
    Metrics {
        access_rate_ppm: 900_000,
        memory_gb: 1000,
        harmony_ppm: 800_000,
        bandwidth_ppm: 700_000,
        uptime_ppm: 990_000,
        error_rate_ppm: 10_000,
    }
}

/// Signs `payload` with `key` at `nonce` and verifies it with ML-DSA-87.
pub fn verified_for_test(key: &Keypair, nonce: u64, payload: &SystemPayload) -> VerifiedSystemTx {
    VerifiedSystemTx::verify(sign_system_tx(payload, nonce, 0, city(), key), &MlDsa87)
        .unwrap_or_else(|e| panic!("a freshly signed tx verifies: {e}"))
}

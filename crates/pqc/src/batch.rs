//! Parallel verification of many signed txs on a bounded rayon pool.

use crate::{Error, MlDsa87, Result};
use dag_core::{SignedTx, VerifiedTx};
use rayon::prelude::*;

/// Verifies signed txs in parallel on its own bounded thread pool, never on the caller's
/// async reactor. Results come back in input order.
#[derive(Debug)]
pub struct BatchVerifier {
    pool: rayon::ThreadPool,
}

impl BatchVerifier {
    /// A verifier with `threads` worker threads (0 = one per core).
    pub fn new(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("pqc-verify-{i}"))
            .build()
            .map_err(|e| Error::Pool(e.to_string()))?;
        Ok(BatchVerifier { pool })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Verifies every tx; each result says why that tx failed, if it did.
    pub fn verify(&self, txs: Vec<SignedTx>) -> Vec<dag_core::Result<VerifiedTx>> {
        self.pool
            .install(|| txs.into_par_iter().map(|t| t.verify(&MlDsa87)).collect())
    }

    /// Runs `f` on the pool without blocking the caller (fire and forget; `f` reports its
    /// result through a channel of the caller's choice).
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        self.pool.spawn(f)
    }

    /// Runs an arbitrary CPU-bound closure on the pool (for callers that verify other
    /// signed values in bulk).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Keypair, sign_tx};
    use dag_core::{AccountId, CityId, Position, PositionMethod, Tx};

    #[test]
    fn batch_keeps_order_and_flags_bad_ones() {
        let kp = Keypair::generate();
        let mut txs: Vec<SignedTx> = (0..8)
            .map(|n| {
                let tx = Tx::fresh(
                    kp.account_id(),
                    AccountId::from_bytes([1; 32]),
                    1,
                    n,
                    0,
                    CityId::new("NP-1").unwrap(),
                    Position::from_degrees(27.7, 85.3).unwrap(),
                    PositionMethod::Wifi,
                );
                sign_tx(tx, &kp)
            })
            .collect();
        txs[3].tx.amount = 999;
        let v = BatchVerifier::new(2).unwrap();
        let out = v.verify(txs.clone());
        assert_eq!(out.len(), 8);
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.is_ok(), i != 3, "tx {i}");
            if let Ok(vt) = r {
                assert_eq!(vt.id(), txs[i].id());
            }
        }
    }
}

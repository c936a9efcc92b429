//! Test helpers for the pipeline's unit tests: signed txs, a pipeline over in-memory light
//! nodes, and a way to corrupt a shard on its holder's disk.

use super::{HeldTx, Pipeline, PipelineConfig, PipelineError};
use crate::city::test_utils::{MemoryTransport, StaticDirectory};
use dag_core::{
    AccountId, CityId, NodeInfo, Position, PositionMethod, SignedReceipt, Tx, VerifiedTx,
};
use std::sync::Arc;

/// `n` txs signed by one fresh key, verified.
pub(super) fn txs_for_test(n: u64) -> Vec<VerifiedTx> {
    let kp = pqc::Keypair::generate();
    (0..n)
        .map(|i| {
            let tx = Tx::fresh(
                kp.account_id(),
                AccountId::from_bytes([3; 32]),
                i,
                i,
                0,
                CityId::new("JP-13").unwrap(),
                Position::from_degrees(35.0, 139.0).unwrap(),
                PositionMethod::Gps,
            );
            pqc::sign_tx(tx, &kp).verify(&pqc::MlDsa87).unwrap()
        })
        .collect()
}

/// A pipeline over in-memory light nodes, with handles to kill, corrupt or remove them.
pub(super) struct Fixture {
    pub(super) transport: Arc<MemoryTransport>,
    pub(super) dir: Arc<StaticDirectory>,
    pub(super) nodes: Vec<NodeInfo>,
    pub(super) pipeline: Arc<Pipeline>,
    _tmp: tempfile::TempDir,
}

/// A pipeline with `cfg` over `lights` in-memory light nodes (zones `zone-0` … `zone-2`).
pub(super) fn fixture_for_test(lights: usize, cfg: PipelineConfig) -> Fixture {
    let transport = Arc::new(MemoryTransport::default());
    let nodes: Vec<NodeInfo> = (0..lights)
        .map(|i| transport.add_node(&format!("zone-{}", i % 3)).unwrap())
        .collect();
    let dir = Arc::new(StaticDirectory::new(nodes.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::start(
        cfg,
        &tmp.path().join("stripes.redb"),
        transport.clone(),
        dir.clone(),
        Arc::new(pqc::BatchVerifier::new(2).unwrap()),
    )
    .unwrap();
    Fixture {
        transport,
        dir,
        nodes,
        pipeline,
        _tmp: tmp,
    }
}

/// Holds every tx at once and collects the answers, in order.
pub(super) async fn hold_all_for_test(
    p: &Arc<Pipeline>,
    txs: &[VerifiedTx],
) -> Vec<std::result::Result<HeldTx, PipelineError>> {
    let futs: Vec<_> = txs.iter().map(|t| p.hold(t.clone())).collect();
    futures::future::join_all(futs).await
}

impl Fixture {
    /// Flips the last byte of the shard `r` is the receipt for, on its holder's disk.
    pub(super) fn corrupt_shard_for_test(&self, r: &SignedReceipt) {
        let r = &r.receipt;
        self.transport
            .node(&r.holder)
            .unwrap()
            .store
            .corrupt_for_test(&r.stripe_id, r.shard_index, |b| {
                let last = b.len() - 1;
                b[last] ^= 0xFF;
            })
            .unwrap();
    }
}

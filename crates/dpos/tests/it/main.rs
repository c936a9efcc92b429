//! Integration tests of the dpos state machine: one table test per rule (rules.rs) and
//! the property tests (props.rs), all through signed and verified ML-DSA-87 system txs.
#![allow(clippy::unwrap_used)]

mod props;
mod rules;

use dag_core::{NodeId, Receipt, ShardHash, SignedReceipt, StripeId};
use dpos::test_utils::{keys, metrics_for_test, verified_for_test};
use dpos::{
    ApplyCtx, DAY_MS, DposConfig, DposState, Error, Genesis, GenesisBond, NodeKind, Outcome,
    Result, SystemPayload,
};
use pqc::Keypair;

/// Base units per token (the default config).
pub(crate) const TOKEN: u64 = 1_000_000;
/// Genesis time used by the tests: a day boundary, so epochs are easy to reason about.
pub(crate) const T0: u64 = 1_000 * DAY_MS;

/// A state plus helpers that sign, verify and apply txs, and check rejections change
/// nothing.
pub(crate) struct World {
    pub(crate) state: DposState,
}

impl World {
    pub(crate) fn new(genesis: Genesis) -> Self {
        World {
            state: DposState::genesis(genesis).unwrap(),
        }
    }

    pub(crate) fn apply(
        &mut self,
        key: &Keypair,
        payload: SystemPayload,
        now_ms: u64,
    ) -> Result<Outcome> {
        let tx = verified_for_test(key, self.state.next_nonce(&key.account_id()), &payload);
        self.state.apply(&tx, &ApplyCtx { now_ms })
    }

    /// Applies and expects success.
    pub(crate) fn ok(&mut self, key: &Keypair, payload: SystemPayload, now_ms: u64) -> Outcome {
        let kind = payload.kind_name();
        let out = self
            .apply(key, payload, now_ms)
            .unwrap_or_else(|e| panic!("{kind} failed: {e}"));
        self.state.check_invariants().unwrap();
        out
    }

    /// Applies and expects an error, and checks the state is byte-for-byte unchanged.
    pub(crate) fn reject(&mut self, key: &Keypair, payload: SystemPayload, now_ms: u64) -> Error {
        let before = self.state.snapshot();
        let kind = payload.kind_name();
        let err = match self.apply(key, payload, now_ms) {
            Ok(out) => panic!("{kind} should fail, got {out:?}"),
            Err(e) => e,
        };
        assert_eq!(
            self.state.snapshot(),
            before,
            "{kind} failed with {err} but changed the state"
        );
        err
    }
}

/// Four full nodes A, B, C, D (keys 0..4) with the test metrics; each holds `liquid`
/// tokens and self-bonds `bonded[i]` tokens at genesis; key 4 and 5 are plain accounts with
/// 1000 tokens; key 6 is a light node with 100 tokens bonded.
pub(crate) fn four_nodes(bonded: [u64; 4], liquid: u64, config: DposConfig) -> Genesis {
    let k = keys();
    let mut g = Genesis {
        config,
        time_ms: T0,
        ..Genesis::default()
    };
    for (i, b) in bonded.iter().enumerate() {
        let acc = k[i].account_id();
        g.nodes.push((acc, NodeKind::Full, metrics_for_test()));
        g.balances.push((acc, liquid * TOKEN));
        if *b > 0 {
            g.bonds.push(GenesisBond {
                delegator: acc,
                validator: acc,
                amount: b * TOKEN,
            });
        }
    }
    g.balances.push((k[4].account_id(), 1000 * TOKEN));
    g.balances.push((k[5].account_id(), 1000 * TOKEN));
    g.nodes
        .push((k[6].account_id(), NodeKind::Light, metrics_for_test()));
    g.bonds.push(GenesisBond {
        delegator: k[6].account_id(),
        validator: k[6].account_id(),
        amount: 100 * TOKEN,
    });
    g
}

/// A receipt signed by `holder` for a shard stored at `time_ms`.
pub(crate) fn receipt(holder: &Keypair, time_ms: u64, shard: u16) -> SignedReceipt {
    SignedReceipt::sign(
        Receipt {
            stripe_id: StripeId::from_bytes([7; 32]),
            shard_index: shard,
            shard_hash: ShardHash::from_bytes([9; 32]),
            holder: NodeId::from_public_key(dag_core::Signer::public_key(holder)),
            time_ms,
        },
        holder,
    )
}

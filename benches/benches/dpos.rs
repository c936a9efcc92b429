//! DPoS benchmarks: election over many candidates, `apply` per system tx kind (on a
//! pre-verified tx), verification of system txs, snapshot and restore, and the node's
//! durable applier per checkpoint (`dpos/apply_commit/system_txs=N`, with `N = 0` the
//! baseline: the same write and fsync with nothing to apply).

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use dag_core::{AccountId, Hash32, NodeId, Receipt, ShardHash, SignedReceipt, StripeId};
use dpos::test_utils::{city, keys, metrics_for_test, verified_for_test};
use dpos::{
    ApplyCtx, DAY_MS, DoubleSignEvidence, DposConfig, DposState, Genesis, GenesisBond, Metrics,
    NodeKind, SignedHeaderDigest, SlashLevel, SystemPayload, VerifiedSystemTx, sign_system_tx,
};
use pqc::MlDsa87;
use std::hint::black_box;
use std::time::Duration;

const TOKEN: u64 = 1_000_000;
const T0: u64 = 1_000 * DAY_MS;

/// `n` full nodes with varied metrics and self-bonds (accounts derived, no keys needed),
/// plus the pool keys: 0–3 full nodes with 100 tokens bonded and so much memory that they
/// are the representatives (3, 2, 1), all keys with 1000 tokens liquid.
fn genesis(n: usize) -> Genesis {
    let mut g = Genesis {
        config: DposConfig::default(),
        time_ms: T0,
        ..Genesis::default()
    };
    for i in 0..n as u64 {
        let acc = AccountId(Hash32::digest(&i.to_le_bytes()));
        let m = Metrics {
            access_rate_ppm: (i * 7919 % 1_000_000) as u32,
            memory_gb: (i % 4096) as u32,
            harmony_ppm: (i * 104_729 % 1_000_000) as u32,
            bandwidth_ppm: (i * 1_299_709 % 1_000_000) as u32,
            uptime_ppm: 990_000,
            error_rate_ppm: (i % 1000) as u32,
        };
        g.nodes.push((acc, NodeKind::Full, m));
        g.bonds.push(GenesisBond {
            delegator: acc,
            validator: acc,
            amount: (1 + i % 300) * TOKEN,
        });
    }
    for (i, k) in keys().iter().enumerate() {
        g.balances.push((k.account_id(), 1000 * TOKEN));
        if i < 4 {
            let m = Metrics {
                memory_gb: 100_000 + 1000 * i as u32,
                ..metrics_for_test()
            };
            g.nodes.push((k.account_id(), NodeKind::Full, m));
            g.bonds.push(GenesisBond {
                delegator: k.account_id(),
                validator: k.account_id(),
                amount: 100 * TOKEN,
            });
        }
    }
    g
}

fn receipt(i: usize, time_ms: u64) -> SignedReceipt {
    let k = &keys()[i];
    SignedReceipt::sign(
        Receipt {
            stripe_id: StripeId::from_bytes([1; 32]),
            shard_index: i as u16,
            shard_hash: ShardHash::from_bytes([2; 32]),
            holder: NodeId::from_public_key(dag_core::Signer::public_key(k)),
            time_ms,
        },
        k,
    )
}

fn evidence() -> SystemPayload {
    let k = &keys()[3];
    let h = |d| SignedHeaderDigest::sign(SlashLevel::City, 9, Hash32([d; 32]), k);
    SystemPayload::DoubleSign(
        DoubleSignEvidence::new(SlashLevel::City, h(1), h(2)).expect("conflicting headers"),
    )
}

fn elect_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("dpos");
    g.measurement_time(Duration::from_secs(2)).sample_size(20);
    for n in [100usize, 10_000] {
        let state = DposState::genesis(genesis(n)).expect("genesis");
        g.bench_function(BenchmarkId::new("elect", format!("candidates={n}")), |b| {
            b.iter(|| black_box(&state).election())
        });
    }
    let state = DposState::genesis(genesis(10_000)).expect("genesis");
    let bytes = state.snapshot();
    g.bench_function("snapshot/nodes=10000", |b| {
        b.iter(|| black_box(&state).snapshot())
    });
    g.bench_function("restore/nodes=10000", |b| {
        b.iter(|| DposState::restore(black_box(&bytes)).expect("restore"))
    });
    g.finish();
}

fn apply_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("dpos");
    g.measurement_time(Duration::from_secs(2)).sample_size(20);
    // A small state (pool keys + 100 nodes) so cloning it per iteration is cheap; the
    // clone is setup, not measured.
    let base = DposState::genesis(genesis(100)).expect("genesis");
    let k = keys();
    let lock_over = T0 + 90 * DAY_MS;
    let cases: Vec<(&str, usize, SystemPayload, u64)> = vec![
        ("bond", 0, SystemPayload::Bond { amount: 10 * TOKEN }, T0),
        (
            "delegate",
            5,
            SystemPayload::Delegate {
                validator: k[0].account_id(),
                amount: 10 * TOKEN,
            },
            T0,
        ),
        (
            "unbond",
            0,
            SystemPayload::Unbond {
                validator: k[0].account_id(),
                amount: 10 * TOKEN,
            },
            lock_over,
        ),
        ("double_sign", 5, evidence(), T0),
        (
            "report_incident",
            3,
            SystemPayload::ReportIncident {
                node: k[0].account_id(),
                incident: Hash32([1; 32]),
            },
            T0,
        ),
        (
            "record_contribution",
            5,
            SystemPayload::RecordContribution {
                receipts: (0..4).map(|i| receipt(i, T0)).collect(),
            },
            T0,
        ),
        ("end_term", 5, SystemPayload::EndTerm, lock_over),
    ];
    for (kind, who, payload, now) in &cases {
        let tx = verified_for_test(&k[*who], 0, payload);
        let ctx = ApplyCtx { now_ms: *now };
        // The tx must succeed on the base state, or the bench measures an error path.
        base.clone().apply(&tx, &ctx).expect("bench tx applies");
        g.bench_function(BenchmarkId::new("apply", format!("kind={kind}")), |b| {
            b.iter_batched(
                || base.clone(),
                |mut s| s.apply(black_box(&tx), &ctx).map(|_| s),
                BatchSize::SmallInput,
            )
        });
    }
    for (kind, who, payload, _) in &cases {
        if !matches!(*kind, "bond" | "double_sign" | "record_contribution") {
            continue;
        }
        let signed = sign_system_tx(payload, 0, 0, city(), &k[*who]);
        g.bench_function(BenchmarkId::new("verify", format!("kind={kind}")), |b| {
            b.iter_batched(
                || signed.clone(),
                |s| VerifiedSystemTx::verify(black_box(s), &MlDsa87).expect("valid"),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// The node's stake store applying one checkpoint of `n` delegations (envelope verified
/// beforehand, as the execution feed hands them over; inner checks, apply, snapshot,
/// one redb write with fsync).
fn apply_commit_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("dpos");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for n in [0usize, 1, 16] {
        g.bench_function(
            BenchmarkId::new("apply_commit", format!("system_txs={n}")),
            |b| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
                    let store = node::StakeStore::open(
                        &dir.path().join("stake.redb"),
                        genesis(0),
                        Vec::new(),
                    )
                    .unwrap_or_else(|e| panic!("open: {e}"));
                    store
                        .apply_commit(0, T0, &[])
                        .unwrap_or_else(|e| panic!("apply: {e}"));
                    let mut nonce = vec![0u64; keys().len()];
                    let commits: Vec<Vec<dag_core::VerifiedTx>> = (0..iters)
                        .map(|_| {
                            (0..n)
                                .map(|j| {
                                    let k = j % keys().len();
                                    let tx = sign_system_tx(
                                        &SystemPayload::Delegate {
                                            validator: keys()[0].account_id(),
                                            amount: 1,
                                        },
                                        nonce[k],
                                        T0,
                                        city(),
                                        &keys()[k],
                                    );
                                    nonce[k] += 1;
                                    tx.verify(&MlDsa87)
                                        .unwrap_or_else(|e| panic!("verify: {e}"))
                                })
                                .collect()
                        })
                        .collect();
                    let t = std::time::Instant::now();
                    for (i, txs) in commits.iter().enumerate() {
                        let r = store
                            .apply_commit(i as u64 + 1, T0 + 1, txs)
                            .unwrap_or_else(|e| panic!("apply: {e}"));
                        assert_eq!(r.applied.len(), n);
                        black_box(r.root);
                    }
                    t.elapsed()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, elect_benches, apply_benches, apply_commit_benches);
criterion_main!(benches);

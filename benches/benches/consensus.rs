//! The city DAG's pure logic: the commit rule over a DAG of certified batches (store
//! insertion with parent checks, support counting, causal-history ordering, checkpoints),
//! and the Merkle log (append, inclusion and consistency proofs).

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dag_core::consensus::{Committer, DagBuilder, DagStore, VerifiedCertificate};
use dag_core::merkle::{MerkleLog, leaf_hash, verify_inclusion};
use std::hint::black_box;
use std::time::Duration;

/// A full DAG of 4 representatives over `rounds` rounds, certificates in causal order.
fn dag(rounds: u64) -> (DagBuilder, Vec<VerifiedCertificate>) {
    let mut b = DagBuilder::new(4);
    let text: Vec<String> = (0..rounds).map(|r| format!("r{r}: A B C D")).collect();
    b.parse(&text.join("\n")).expect("valid DAG");
    let certs = (0..rounds)
        .flat_map(|r| b.store().round(r).cloned().collect::<Vec<_>>())
        .collect();
    (b, certs)
}

fn commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("dag_core/commit");
    g.measurement_time(Duration::from_secs(2)).sample_size(20);
    for rounds in [100u64, 1000] {
        let (b, certs) = dag(rounds);
        let committee = b.committee().clone();
        g.throughput(Throughput::Elements(rounds));
        // Insert every certificate and run the commit rule after each one, as a node does.
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("rounds={rounds}")),
            &certs,
            |bench, certs| {
                bench.iter_batched(
                    || certs.clone(),
                    |certs| {
                        let mut store = DagStore::new();
                        let mut committer = Committer::new();
                        let mut committed = 0;
                        for cert in certs {
                            store.insert(cert, &committee).expect("valid certificate");
                            committed += committer.try_commit(&store, &committee).len();
                        }
                        black_box(committed)
                    },
                    BatchSize::LargeInput,
                )
            },
        );
    }
    g.finish();
}

fn merkle(c: &mut Criterion) {
    let mut g = c.benchmark_group("dag_core/merkle");
    g.measurement_time(Duration::from_secs(2)).sample_size(20);
    g.throughput(Throughput::Elements(1));
    let mut log = MerkleLog::new();
    for i in 0..1_000_000u64 {
        log.append(&i.to_le_bytes());
    }
    let root = log.root();
    // Appends to a log growing from empty (amortised, including vector growth).
    g.bench_function("append", |b| {
        let mut l = MerkleLog::new();
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(l.append(&i.to_le_bytes()))
        })
    });
    g.bench_function("root/size=1000000", |b| b.iter(|| black_box(log.root())));
    g.bench_function("inclusion_proof/size=1000000", |b| {
        b.iter(|| black_box(log.inclusion_proof(123_457, 1_000_000).expect("in range")))
    });
    let proof = log.inclusion_proof(123_457, 1_000_000).expect("in range");
    let leaf = leaf_hash(&123_457u64.to_le_bytes());
    g.bench_function("verify_inclusion/size=1000000", |b| {
        b.iter(|| verify_inclusion(&leaf, 123_457, 1_000_000, &proof, &root).expect("valid"))
    });
    g.bench_function("consistency_proof/size=1000000", |b| {
        b.iter(|| black_box(log.consistency_proof(700_001, 1_000_000).expect("in range")))
    });
    g.finish();
}

criterion_group!(benches, commit, merkle);
criterion_main!(benches);

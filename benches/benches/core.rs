//! Hot-path benchmarks of the foundation: ML-DSA-87 verify (single and batch on the pool),
//! tx id and canonical encoding by payload size.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dag_core::{
    AccountId, CityId, Position, PositionMethod, SignatureVerifier, SignedTx, Signer, Tx,
};
use pqc::{BatchVerifier, Keypair, MlDsa87, sign_tx};
use std::hint::black_box;
use std::time::Duration;

fn tx(kp: &Keypair, nonce: u64, payload: usize) -> Tx {
    Tx::fresh(
        kp.account_id(),
        AccountId::from_bytes([2; 32]),
        10,
        nonce,
        1_767_225_600_000,
        CityId::new("JP-13").expect("valid city"),
        Position::from_degrees(35.6895, 139.6917).expect("valid position"),
        PositionMethod::Gps,
    )
    .with_payload(vec![7; payload])
}

fn pqc_benches(c: &mut Criterion) {
    let kp = Keypair::generate();
    let msg = b"citychain/bench";
    let sig = kp.sign(msg);
    let mut g = c.benchmark_group("pqc");
    g.measurement_time(Duration::from_secs(2)).sample_size(20);
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify", |b| {
        b.iter(|| MlDsa87.verify(black_box(kp.public_key()), black_box(msg), black_box(&sig)))
    });
    g.bench_function("sign", |b| b.iter(|| kp.sign(black_box(msg))));
    let pool = BatchVerifier::new(0).expect("pool");
    for n in [64usize, 1024] {
        let txs: Vec<SignedTx> = (0..n as u64).map(|i| sign_tx(tx(&kp, i, 0), &kp)).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("verify_batch", format!("n={n}")),
            &txs,
            |b, txs| {
                // The clone is setup: only the verification is timed.
                b.iter_batched(|| txs.clone(), |t| pool.verify(t), BatchSize::LargeInput)
            },
        );
    }
    g.finish();
}

fn dag_core_benches(c: &mut Criterion) {
    let kp = Keypair::generate();
    let mut g = c.benchmark_group("dag_core");
    g.measurement_time(Duration::from_secs(2)).sample_size(30);
    for (label, size) in [("0B", 0usize), ("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let t = tx(&kp, 1, size);
        let bytes = t.encode().len() as u64;
        g.throughput(Throughput::Bytes(bytes));
        g.bench_with_input(
            BenchmarkId::new("tx_id", format!("size={label}")),
            &t,
            |b, t| b.iter(|| black_box(t).id()),
        );
        g.bench_with_input(
            BenchmarkId::new("encode", format!("size={label}")),
            &t,
            |b, t| b.iter(|| black_box(t).encode()),
        );
        let enc = t.encode();
        g.bench_with_input(
            BenchmarkId::new("decode", format!("size={label}")),
            &enc,
            |b, enc| b.iter(|| Tx::decode(black_box(enc))),
        );
    }
    g.finish();
}

criterion_group!(benches, pqc_benches, dag_core_benches);
criterion_main!(benches);

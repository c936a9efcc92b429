//! Archive and NTRU key-wrapping benchmarks: `archive/put` (one durable redb transaction per
//! batch: seal every record, write, fsync), `archive/get` (read, unwrap, decrypt, id check),
//! `pqc/ntru_wrap` and `pqc/ntru_unwrap` (NTRU-HPS-4096-821 → HKDF-SHA256 → XChaCha20-Poly1305),
//! and `pqc/mlkem_wrap`, `pqc/mlkem_unwrap` (the same with ML-KEM-1024 on aws-lc-rs).

use archive::{ArchiveEntry, RedbArchive};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dag_core::{AccountId, CityId, Position, PositionMethod, Tx, TxId};
use pqc::{DataKey, Kem, KemKeypair, Keypair, MlDsa87, NtruParams, WrappedKey, sign_tx};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const PAYLOAD: usize = 256;

fn entry(kp: &Keypair, nonce: u64) -> ArchiveEntry {
    let tx = Tx::fresh(
        kp.account_id(),
        AccountId::from_bytes([2; 32]),
        10,
        nonce,
        1_767_225_600_000,
        CityId::new("JP-13").expect("valid city"),
        Position::from_degrees(35.6895, 139.6917).expect("valid position"),
        PositionMethod::Gps,
    )
    .with_payload(vec![7; PAYLOAD]);
    let v = sign_tx(tx, kp).verify(&MlDsa87).expect("valid signature");
    ArchiveEntry::new(v, 1_767_225_600_000 + nonce)
}

fn archive_benches(c: &mut Criterion) {
    let kp = Keypair::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = RedbArchive::open_in_dir(dir.path()).expect("archive");
    let nonce = AtomicU64::new(0);
    let next = || nonce.fetch_add(1, Ordering::Relaxed);

    let mut g = c.benchmark_group("archive");
    g.measurement_time(Duration::from_secs(2)).sample_size(20);
    for batch in [1usize, 64] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(
            BenchmarkId::new("put", format!("batch={batch},payload={PAYLOAD}B")),
            |b| {
                b.iter_batched(
                    || (0..batch).map(|_| entry(&kp, next())).collect::<Vec<_>>(),
                    |entries| a.put_batch_blocking(entries).expect("put"),
                    BatchSize::SmallInput,
                )
            },
        );
    }

    let ids: Vec<TxId> = (0..256)
        .map(|_| entry(&kp, next()))
        .collect::<Vec<_>>()
        .chunks(64)
        .flat_map(|chunk| {
            let ids: Vec<TxId> = chunk.iter().map(ArchiveEntry::id).collect();
            a.put_batch_blocking(chunk.to_vec()).expect("put");
            ids
        })
        .collect();
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function(
        BenchmarkId::new("get", format!("payload={PAYLOAD}B")),
        |b| {
            b.iter(|| {
                i = (i + 1) % ids.len();
                a.get_blocking(black_box(ids[i]))
                    .expect("get")
                    .expect("present")
            })
        },
    );
    g.finish();
}

fn ntru_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("pqc");
    g.measurement_time(Duration::from_secs(2)).sample_size(20);
    g.throughput(Throughput::Elements(1));
    let params = NtruParams::default();
    let kp = KemKeypair::generate(params);
    let dk = DataKey::generate().expect("randomness");
    g.bench_function(
        BenchmarkId::new("ntru_wrap", format!("params={params}")),
        |b| b.iter(|| kp.wrap(black_box(&dk)).expect("wrap")),
    );
    let wrapped: WrappedKey = kp.wrap(&dk).expect("wrap");
    g.bench_function(
        BenchmarkId::new("ntru_unwrap", format!("params={params}")),
        |b| b.iter(|| kp.unwrap(black_box(&wrapped)).expect("unwrap")),
    );
    let kem = Kem::MlKem1024;
    let kp = KemKeypair::generate(kem);
    g.bench_function(BenchmarkId::new("mlkem_wrap", format!("kem={kem}")), |b| {
        b.iter(|| kp.wrap(black_box(&dk)).expect("wrap"))
    });
    let wrapped: WrappedKey = kp.wrap(&dk).expect("wrap");
    g.bench_function(
        BenchmarkId::new("mlkem_unwrap", format!("kem={kem}")),
        |b| b.iter(|| kp.unwrap(black_box(&wrapped)).expect("unwrap")),
    );
    g.finish();
}

criterion_group!(benches, archive_benches, ntru_benches);
criterion_main!(benches);

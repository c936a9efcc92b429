//! Erasure coding benchmarks: `storage/encode/…` (split, parity, BLAKE3 of every shard and
//! of the stripe) and `storage/decode/…` (checks of every shard, reconstruction with the
//! first m data shards lost, stripe hash check) for both codecs at 4+2 and 10+4, beside the
//! baseline `storage/blake3/size=…` (one BLAKE3 pass over the stripe, measured in the same run).
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use storage::{CodecId, ErasureConfig, decode};

const SIZES: [(usize, &str); 3] = [(1024, "1KiB"), (64 * 1024, "64KiB"), (1024 * 1024, "1MiB")];
const SHAPES: [(u16, u16); 2] = [(4, 2), (10, 4)];

fn payload(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("storage/blake3");
    g.measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(20);
    for (size, label) in SIZES {
        let data = payload(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("size={label}"), |b| {
            b.iter(|| blake3::hash(black_box(&data)))
        });
    }
    g.finish();
    for op in ["encode", "decode"] {
        let mut g = c.benchmark_group(format!("storage/{op}"));
        g.measurement_time(Duration::from_secs(1))
            .warm_up_time(Duration::from_millis(300))
            .sample_size(20);
        for codec in CodecId::ALL {
            for (k, m) in SHAPES {
                let cfg = ErasureConfig::new(codec, k, m).unwrap();
                for (size, label) in SIZES {
                    let data = payload(size);
                    let id = format!("codec={},k={k},m={m},size={label}", codec.name());
                    g.throughput(Throughput::Bytes(size as u64));
                    if op == "encode" {
                        g.bench_function(&id, |b| b.iter(|| cfg.encode(black_box(&data)).unwrap()));
                    } else {
                        let shards = cfg.encode(&data).unwrap();
                        let stripe_id = shards[0].stripe_id();
                        // worst case: m data shards lost, reconstruction needed
                        let rest = &shards[usize::from(m)..];
                        g.bench_function(&id, |b| {
                            b.iter(|| decode(black_box(stripe_id), black_box(rest)).unwrap())
                        });
                    }
                }
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

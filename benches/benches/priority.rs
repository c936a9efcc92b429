//! Holder choice benchmarks: `priority/select/nodes=N` picks 6 holders (k = 4 + m = 2) for
//! one key among N candidates in 8 zones of 3 cities (score every node, weighted rendezvous
//! rank, failure-domain spread), and `priority/select_prepared/nodes=N` the same with the
//! scores computed once per candidate list (`WeightedRendezvous::prepare`), as a city node
//! does for the many stripes of one node-list snapshot.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dag_core::{Hash32, NodeId, NodeInfo, Role};
use priority::{
    Candidate, GeoPoint, HolderSelector, NodeStats, Profile, SelectRequest, WeightedRendezvous,
};
use std::hint::black_box;
use std::time::Duration;

fn nodes(n: usize) -> Vec<NodeInfo> {
    (0..n)
        .map(|i| NodeInfo {
            node_id: NodeId(Hash32::digest(&(i as u64).to_le_bytes())),
            role: Role::Light,
            grpc_addr: format!("127.0.0.1:{}", 20_000 + i),
            city_id: ["JP-13", "JP-14", "JP-11"][i % 3].to_string(),
            zone: format!("z{}", i % 8),
            lat: 35.4 + (i % 50) as f64 * 0.01,
            lon: 139.4 + (i % 37) as f64 * 0.01,
            free_capacity: ((i % 97) as u64 + 1) << 30,
            load: (i % 10) as f64 / 10.0,
            version: "0.1.0".into(),
            session_start_ms: (i as u64 % 7) * 600_000,
        })
        .collect()
}

fn select(c: &mut Criterion) {
    let sel = WeightedRendezvous::default();
    let keys: Vec<[u8; 32]> = (0..1024u32)
        .map(|i| Hash32::digest(&i.to_le_bytes()).0)
        .collect();
    let mut g = c.benchmark_group("priority");
    g.measurement_time(Duration::from_secs(2)).sample_size(20);
    for n in [10usize, 100, 1000] {
        let infos = nodes(n);
        let cands: Vec<Candidate> = infos
            .iter()
            .enumerate()
            .map(|(i, info)| {
                Candidate::new(
                    info,
                    NodeStats {
                        latency_ms: Some((i % 40) as f64 * 5.0),
                        logins_per_hour: (i % 5) as f64,
                    },
                )
            })
            .collect();
        let mut k = 0usize;
        g.bench_function(BenchmarkId::new("select", format!("nodes={n}")), |b| {
            b.iter(|| {
                k = (k + 1) % keys.len();
                let req = SelectRequest {
                    key: keys[k],
                    origin: GeoPoint {
                        lat: 35.6895,
                        lon: 139.69171,
                    },
                    now_ms: 7_200_000,
                    profile: Profile::Normal,
                    count: 6,
                };
                sel.select(black_box(&req), black_box(&cands))
            })
        });
        let origin = GeoPoint {
            lat: 35.6895,
            lon: 139.69171,
        };
        let prepared = sel.prepare(origin, 7_200_000, Profile::Normal, &cands);
        g.bench_function(
            BenchmarkId::new("select_prepared", format!("nodes={n}")),
            |b| {
                b.iter(|| {
                    k = (k + 1) % keys.len();
                    prepared.select(black_box(&keys[k]), 6)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, select);
criterion_main!(benches);

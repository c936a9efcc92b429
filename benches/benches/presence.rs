//! Presence and membership micro-benchmarks: the in-memory presence store
//! (`presence/memory/heartbeat`, `presence/memory/list`), the node-list view
//! (`node_list/nearest`), and the resilience primitives on the request path
//! (`resilience/bucket/try_acquire`, `resilience/breaker/call`). The HTTP + Redis
//! end-to-end figure comes from `presence-server bench`, not from here.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dag_core::{NodeId, NodeInfo, Role};
use node_list::NodeRegistry;
use presence::{ListFilter, MemoryPresenceStore, PresenceStore, SystemClock};
use resilience::{CircuitBreaker, CircuitBreakerConfig, TokenBucket, TokenBucketConfig};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn node(i: u32) -> NodeInfo {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&i.to_be_bytes());
    NodeInfo {
        node_id: NodeId::from_bytes(id),
        role: if i.is_multiple_of(4) {
            Role::City
        } else {
            Role::Light
        },
        grpc_addr: format!("127.0.0.1:{}", 10_000 + i % 50_000),
        city_id: format!("JP-{:02}", i % 47 + 1),
        zone: String::new(),
        lat: 24.0 + f64::from(i % 1800) / 100.0,
        lon: 123.0 + f64::from(i % 2200) / 100.0,
        free_capacity: 1 << 30,
        load: 0.2,
        version: "bench".into(),
        session_start_ms: 0,
    }
}

fn presence_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("presence");
    g.measurement_time(Duration::from_secs(2)).sample_size(20);
    for nodes in [100u32, 1000] {
        let store = MemoryPresenceStore::new(Duration::from_secs(6), Arc::new(SystemClock));
        rt.block_on(async {
            for i in 0..nodes {
                store.login(node(i)).await.expect("login");
            }
        });
        let ids: Vec<NodeId> = (0..nodes).map(|i| node(i).node_id).collect();
        let mut k = 0usize;
        g.bench_function(
            BenchmarkId::new("memory/heartbeat", format!("nodes={nodes}")),
            |b| {
                b.iter(|| {
                    k = (k + 1) % ids.len();
                    rt.block_on(store.heartbeat(ids[k])).expect("heartbeat");
                })
            },
        );
        let light = ListFilter::role(Role::Light);
        g.bench_function(
            BenchmarkId::new("memory/list", format!("nodes={nodes},role=light")),
            |b| b.iter(|| black_box(rt.block_on(store.list(&light)).expect("list").len())),
        );
    }
    g.finish();

    let mut g = c.benchmark_group("node_list");
    g.measurement_time(Duration::from_secs(2)).sample_size(20);
    let _guard = rt.enter();
    for nodes in [100u32, 1000] {
        let reg = NodeRegistry::new(Duration::from_secs(10));
        for i in 0..nodes {
            reg.upsert(node(i));
        }
        g.bench_function(
            BenchmarkId::new("nearest", format!("nodes={nodes},n=6")),
            |b| b.iter(|| black_box(reg.nearest(35.68, 139.69, 6, Some(Role::Light)).len())),
        );
    }
    g.finish();

    let mut g = c.benchmark_group("resilience");
    g.measurement_time(Duration::from_secs(2)).sample_size(20);
    let bucket = TokenBucket::new(TokenBucketConfig {
        rate_per_sec: 1e12,
        burst: u32::MAX,
    });
    g.bench_function("bucket/try_acquire", |b| {
        b.iter(|| black_box(bucket.try_acquire().is_ok()))
    });
    let breaker = CircuitBreaker::new(CircuitBreakerConfig::default());
    g.bench_function("breaker/call", |b| {
        b.iter(|| {
            let r: Result<u32, _> =
                rt.block_on(breaker.call(|| async { Ok::<_, std::io::Error>(1) }));
            black_box(r.is_ok())
        })
    });
    g.finish();
}

criterion_group!(benches, presence_benches);
criterion_main!(benches);

//! Proof-of-place lookup benchmarks on the shipped polygons (Japan, Nepal, Fiji, Chukotka):
//! `pop_geo/lookup/cache=off` (R-tree + exact point-in-polygon) and `pop_geo/lookup/cache=on`
//! (rounded-coordinate cache, warm). Each iteration looks up 4096 points: half inside sampled
//! regions, half uniform over Japan's bounding box (land and sea).
//! `pop_geo/lookup/index=world,cache=off` does the same on the world index (every country's
//! first-level subdivisions, 4 537 regions): half the points inside regions sampled across the
//! world, half uniform over the globe (mostly sea). It also prints the world index's load time.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dag_core::Position;
use pop_geo::{CacheConfig, CachedIndex, shipped};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn points(index: &pop_geo::RegionIndex) -> Vec<Position> {
    let mut pts = Vec::new();
    let ids: Vec<String> = index.regions().iter().map(|r| r.id().to_string()).collect();
    for (i, id) in ids.iter().enumerate() {
        for (lat, lon) in index.sample_points(id, 24, i as u64) {
            pts.push(Position::from_degrees(lat, lon).expect("valid sample"));
        }
    }
    pts.truncate(2048);
    let mut s = 0x1234_5678_9abc_def0u64;
    while pts.len() < 4096 {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let a = (s >> 11) as f64 / (1u64 << 53) as f64;
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let b = (s >> 11) as f64 / (1u64 << 53) as f64;
        pts.push(Position::from_degrees(24.0 + 22.0 * a, 123.0 + 23.0 * b).expect("valid"));
    }
    pts
}

fn lookup(c: &mut Criterion) {
    let index = Arc::new(shipped::all().expect("shipped data loads"));
    let pts = points(&index);
    let mut g = c.benchmark_group("pop_geo");
    g.measurement_time(Duration::from_secs(2)).sample_size(20);
    g.throughput(Throughput::Elements(pts.len() as u64));
    g.bench_function("lookup/cache=off", |b| {
        b.iter(|| {
            let mut found = 0usize;
            for p in &pts {
                found += usize::from(index.lookup_position(black_box(*p)).is_some());
            }
            found
        })
    });
    let cached = CachedIndex::new(index.clone(), CacheConfig::default());
    for p in &pts {
        cached.lookup_position(*p);
    }
    g.bench_function("lookup/cache=on", |b| {
        b.iter(|| {
            let mut found = 0usize;
            for p in &pts {
                found += usize::from(cached.lookup_position(black_box(*p)).is_some());
            }
            found
        })
    });
    g.finish();
}

fn world_points(index: &pop_geo::RegionIndex) -> Vec<Position> {
    let mut pts = Vec::new();
    let regions = index.regions();
    let step = (regions.len() / 2048).max(1);
    for (i, r) in regions.iter().enumerate().step_by(step) {
        for (lat, lon) in index.sample_points(r.id().as_str(), 1, i as u64) {
            pts.push(Position::from_degrees(lat, lon).expect("valid sample"));
        }
    }
    pts.truncate(2048);
    let mut s = 0x0bad_5eed_1234_5678u64;
    while pts.len() < 4096 {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let a = (s >> 11) as f64 / (1u64 << 53) as f64;
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let b = (s >> 11) as f64 / (1u64 << 53) as f64;
        // Uniform over the sphere's area: latitude by arcsine.
        let lat = (2.0 * a - 1.0).asin().to_degrees();
        pts.push(Position::from_degrees(lat, -180.0 + 360.0 * b).expect("valid"));
    }
    pts
}

fn world_lookup(c: &mut Criterion) {
    let t = std::time::Instant::now();
    let index = shipped::world().expect("world loads");
    println!(
        "pop_geo world index: {} regions, {} polygons, loaded in {:.0} ms",
        index.len(),
        index.polygon_count(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let pts = world_points(&index);
    let mut g = c.benchmark_group("pop_geo");
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    g.throughput(Throughput::Elements(pts.len() as u64));
    g.bench_function("lookup/index=world,cache=off", |b| {
        b.iter(|| {
            let mut found = 0usize;
            for p in &pts {
                found += usize::from(index.lookup_position(black_box(*p)).is_some());
            }
            found
        })
    });
    g.finish();
}

criterion_group!(benches, lookup, world_lookup);
criterion_main!(benches);

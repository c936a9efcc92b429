//! The deterministic simulation: 200 members converge after joins, crashes and leaves over
//! 200 seeds; crash detection time and gossip bytes per member per second.
//! `SIM_SEED=<n>` replays one seed.

use gossip::sim::{Sim, SimConfig};
use std::collections::BTreeSet;

fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => default.collect(),
    }
}

/// Starts `n` members, joining 20 ms apart, and runs until the views converge.
fn cluster(seed: u64, n: usize) -> Sim {
    let mut s = Sim::new(SimConfig::new(seed)).unwrap();
    for _ in 0..n {
        s.join();
        s.run_for(20);
    }
    let t = s.run_until(500, 120_000, Sim::converged);
    assert!(t.is_some(), "SIM_SEED={seed}: {n} members did not converge");
    s
}

fn pick(s: &mut Vec<usize>, k: usize, seed: u64) -> Vec<usize> {
    // A seeded, deterministic choice without another RNG dependency.
    let mut out = Vec::new();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..k {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(s.swap_remove((x % s.len() as u64) as usize));
    }
    out
}

// 200 seeds in eight tests of 25, so nextest runs them side by side.
#[test]
fn two_hundred_members_converge_after_churn_seeds_0_to_24() {
    churn_converges(0..25);
}
#[test]
fn two_hundred_members_converge_after_churn_seeds_25_to_49() {
    churn_converges(25..50);
}
#[test]
fn two_hundred_members_converge_after_churn_seeds_50_to_74() {
    churn_converges(50..75);
}
#[test]
fn two_hundred_members_converge_after_churn_seeds_75_to_99() {
    churn_converges(75..100);
}
#[test]
fn two_hundred_members_converge_after_churn_seeds_100_to_124() {
    churn_converges(100..125);
}
#[test]
fn two_hundred_members_converge_after_churn_seeds_125_to_149() {
    churn_converges(125..150);
}
#[test]
fn two_hundred_members_converge_after_churn_seeds_150_to_174() {
    churn_converges(150..175);
}
#[test]
fn two_hundred_members_converge_after_churn_seeds_175_to_199() {
    churn_converges(175..200);
}

/// 200 members; 10 crash, 5 leave and 15 join at once; every view converges to the
/// running set.
fn churn_converges(range: std::ops::Range<u64>) {
    let t0 = std::time::Instant::now();
    for seed in seeds(range) {
        // Formed (as after a presence bootstrap) and settled; then the churn.
        let mut s = Sim::formed(SimConfig::new(seed), 200).unwrap();
        s.run_for(3_000);
        assert!(
            s.run_until(250, 30_000, Sim::converged).is_some(),
            "SIM_SEED={seed}: the formed cluster does not settle"
        );
        let mut alive = s.running();
        let crashed = pick(&mut alive, 10, seed);
        let left = pick(&mut alive, 5, seed + 1);
        for &i in &crashed {
            s.crash(i);
        }
        for &i in &left {
            s.leave(i);
        }
        let joined: Vec<usize> = (0..15)
            .map(|_| {
                let i = s.join();
                s.run_for(20);
                i
            })
            .collect();
        let t = s.run_until(250, 60_000, Sim::converged);
        assert!(
            t.is_some(),
            "SIM_SEED={seed}: no convergence 60 s after the churn"
        );
        let gone: BTreeSet<usize> = crashed.iter().chain(&left).copied().collect();
        for i in s.running() {
            let v = s.view_of(i);
            assert!(
                v.is_disjoint(&gone),
                "SIM_SEED={seed}: {i} still sees a departed member"
            );
            for j in &joined {
                assert!(
                    *j == i || v.contains(j),
                    "SIM_SEED={seed}: {i} misses joiner {j}"
                );
            }
        }
        assert_eq!(s.running().len(), 200);
    }
    println!(
        "200-member churn simulated per seed range in {:?}",
        t0.elapsed()
    );
}

#[test]
fn members_joining_one_by_one_converge() {
    for seed in seeds(300..305) {
        let s = cluster(seed, 200);
        assert_eq!(s.running().len(), 200);
    }
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Crash → down on every other member: detection time distribution over seeds, in virtual
/// time, with the 2 × heartbeat (6 s) budget of the issue.
#[test]
fn crash_detection_time_p50_p99_within_two_heartbeats() {
    let mut times = Vec::new();
    for seed in seeds(1000..1030) {
        let mut s = Sim::formed(SimConfig::new(seed), 200).unwrap();
        s.run_for(3_000);
        let victim = (seed % 200) as usize;
        let t0 = s.now_ms();
        s.crash(victim);
        let done = s.run_until(50, 30_000, |s| {
            s.running().iter().all(|&i| !s.view_of(i).contains(&victim))
        });
        assert!(done.is_some(), "SIM_SEED={seed}: crash never detected");
        for i in s.running() {
            let t = s.downs().get(&(i, victim)).copied().expect("down seen");
            times.push(t - t0);
        }
    }
    let (p50, p99, max) = (
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.99),
        *times.iter().max().unwrap(),
    );
    println!(
        "crash detection (200 members, 30 seeds, virtual ms): p50 {p50}, p99 {p99}, max {max}"
    );
    assert!(max <= 6_000, "detection took {max} ms > 2 × heartbeat");
}

/// A member stopped for 2 s at a time (SIGSTOP-like) is suspected and never declared down.
#[test]
fn a_member_paused_for_two_seconds_is_suspected_not_evicted() {
    for seed in seeds(2000..2020) {
        let mut s = cluster(seed, 30);
        let slow = (seed % 30) as usize;
        let mut suspected = false;
        for _ in 0..5 {
            s.pause(slow, 2_000);
            for _ in 0..20 {
                s.run_for(100);
                suspected |= s
                    .running()
                    .iter()
                    .any(|&i| i != slow && s.suspects(i, slow));
            }
            s.run_for(1_000);
        }
        s.run_for(5_000);
        assert!(
            suspected,
            "SIM_SEED={seed}: the paused member was never suspected"
        );
        assert!(
            !s.downs().keys().any(|(_, j)| *j == slow),
            "SIM_SEED={seed}: the paused member was declared down"
        );
        assert!(s.converged(), "SIM_SEED={seed}");
    }
}

/// Gossip bytes per member per second in steady state (no churn) and under churn.
#[test]
fn gossip_bytes_per_member_per_second_at_100_and_1000() {
    for n in [100usize, 1000] {
        let mut s = Sim::formed(SimConfig::new(42), n).unwrap();
        s.run_for(5_000);
        let before: u64 = (0..n).map(|i| s.bytes_sent(i)).sum();
        let secs = 10;
        s.run_for(secs * 1000);
        let after: u64 = (0..n).map(|i| s.bytes_sent(i)).sum();
        let steady = (after - before) as f64 / n as f64 / secs as f64;
        // One crash and one join every 2 s.
        let before = after;
        let mut alive = s.running();
        for k in 0..5u64 {
            let v = pick(&mut alive, 1, k)[0];
            s.crash(v);
            s.join();
            s.run_for(2_000);
        }
        let total: u64 = (0..s.len()).map(|i| s.bytes_sent(i)).sum();
        let churn = (total - before) as f64 / n as f64 / 10.0;
        println!(
            "gossip bytes per member per second, {n} members: steady {steady:.0} B/s, with a crash and a join every 2 s {churn:.0} B/s"
        );
        assert!(steady > 0.0 && churn >= steady * 0.5);
    }
}

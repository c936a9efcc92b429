//! The demo's verdict can fail: its library entry runs with one fault injected per kind of
//! check (a light node returning corrupt shards, a departure hidden by a ghost heartbeat, a
//! representative that stays down and skips every later round, a tampered federation
//! proof), and the verdict must fail naming that check. A few hundred txs each.

use devnet::demo::{DemoConfig, DemoFault, run};
use std::time::Duration;

fn small(fault: DemoFault) -> DemoConfig {
    DemoConfig {
        txs: 200,
        accounts: 10,
        streams: 4,
        sample: 20,
        baseline_verifies: 64,
        restore_sample: 10,
        outside_every: 50,
        continent_outage: Duration::from_millis(300),
        order_wait: Duration::from_secs(30),
        detect_bound: Duration::from_secs(10),
        rereplicate_wait: Duration::from_secs(15),
        fault,
        // Short fixed proposal interval: these tests are about the verdict, and ordering is
        // awaited (default: the dynamic 0.5–5 s interval).
        batch_interval_ms: Some(50),
        tls_cost_txs: 0,
        ..DemoConfig::default()
    }
}

/// Runs the demo with `fault` and asserts the verdict fails with a check starting `named`.
async fn fails_naming(fault: DemoFault, named: &str) -> devnet::demo::DemoReport {
    let report = run(&small(fault))
        .await
        .expect("the demo runs to its verdict");
    let failures = report.failures();
    let table = report.render();
    println!("{table}");
    assert!(!report.ok(), "{fault:?} passed the verdict:\n{table}");
    assert!(
        failures.iter().any(|f| f.starts_with(named)),
        "{fault:?}: want a failed check named {named:?}, got {failures:#?}"
    );
    assert!(table.contains(&format!("FAILED: {named}")));
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_node_returning_corrupt_shards_fails_the_restore_check() {
    fails_naming(DemoFault::CorruptShards, "restore with m holders offline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departure_never_seen_fails_the_departures_check() {
    fails_naming(DemoFault::GhostDeparture, "departures:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_representative_that_stays_down_fails_the_catch_up_check() {
    fails_naming(DemoFault::RepStaysDown, "catch-up:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_federation_proof_fails_the_inclusion_check() {
    let report = fails_naming(DemoFault::TamperedProof, "inclusion proofs:").await;
    // Exactly the one tampered proof fails; the others still verify.
    let (ok, of) = report.inclusion_verified;
    assert_eq!(ok + 1, of, "one of {of} proofs tampered, {ok} verified");
}

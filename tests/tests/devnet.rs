//! The whole system end to end, in one process on loopback: presence, 6 light nodes, a city
//! node, 4 consensus representatives and a continent, each a real gRPC server — the same run
//! as `city-node demo`, smaller.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_end_to_end() {
    let cfg = devnet::demo::DemoConfig {
        txs: 300,
        accounts: 20,
        streams: 2,
        sample: 40,
        baseline_verifies: 200,
        restore_sample: 20,
        outside_every: 50,
        ..devnet::demo::DemoConfig::default()
    };
    let report = devnet::demo::run(&cfg).await.expect("the devnet runs");
    println!("{}", report.render());
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.rejected_pop, 6);
    assert_eq!(report.held + report.rejected_pop, 300);
    assert_eq!(report.restored.0, report.restored.1);
    let c = report.consensus.as_ref().expect("ordering ran");
    assert!(c.sequences_identical && c.items_committed == c.items);
}

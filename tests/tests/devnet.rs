//! The whole system end to end, in one process on loopback: presence, 6 light nodes, a
//! city committee of 4 representatives and a continent, each a real gRPC server — the same
//! run as `city-node demo`, smaller: every held tx Ordered and Federated, one
//! representative killed -9, the continent restarted, the killed one caught up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_end_to_end() {
    let cfg = devnet::demo::DemoConfig {
        txs: 300,
        accounts: 20,
        streams: 4,
        sample: 40,
        baseline_verifies: 200,
        restore_sample: 20,
        outside_every: 50,
        tls_cost_txs: 100,
        ..devnet::demo::DemoConfig::default()
    };
    let report = devnet::demo::run(&cfg).await.expect("the devnet runs");
    println!("{}", report.render());
    assert!(report.failures().is_empty(), "{}", report.render());
    assert!(report.ok());
    assert_eq!(report.rejected_pop, 6);
    assert_eq!(report.held + report.rejected_pop, 300);
    assert_eq!(report.restored.0, report.restored.1);
    // Both link modes held the same txs; the table reports their rates side by side.
    let t = report.tls_cost.as_ref().expect("the TLS cost was measured");
    assert_eq!(t.txs, 100);
    assert!(t.tls_tps > 0.0 && t.insecure_tps > 0.0);
    for o in [&report.ordering, &report.after_kill] {
        let o = o.as_ref().expect("the phase ran");
        assert!(o.held > 0);
        assert_eq!((o.ordered, o.federated), (o.held, o.held));
        assert_eq!(o.held_to_ordered.len(), o.held);
        assert_eq!(o.held_to_federated.len(), o.held);
        assert!(o.ordered_latency(0.5) <= o.federated_latency(0.5));
        assert!(o.commits > 0);
    }
    assert_eq!(report.ordering.as_ref().unwrap().live, vec![0, 1, 2, 3]);
    assert_eq!(report.after_kill.as_ref().unwrap().live, vec![0, 1, 2]);
    assert_eq!(report.caught_up.0, report.held);
    assert!(report.agreements.iter().all(|a| a.holds()));
    assert_eq!(report.inclusion_verified.0, report.inclusion_verified.1);
    // Repair requests over HTTP, served by the local store, the light nodes (REPAIR_REQUEST
    // / REPAIR_ACK after the local copy was evicted) and another representative.
    let repair = report.repair.as_ref().expect("the repair phase ran");
    let tiers: Vec<(&str, usize)> = repair
        .tiers
        .iter()
        .map(|t| (t.tier.as_str(), t.latencies.len()))
        .collect();
    assert_eq!(
        tiers,
        vec![("local_store", 20), ("light_nodes", 20), ("peers", 20)],
        "{repair:?}"
    );
    assert!(repair.failures.is_empty(), "{repair:?}");
    assert_eq!(repair.resubmitted, (5, 5));
}

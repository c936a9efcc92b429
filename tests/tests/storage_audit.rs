//! The city's periodic storage audit against a devnet's real light nodes over gRPC: every
//! epoch each holder answers a challenge with a fresh nonce on a random shard of its own,
//! checked against the shard rebuilt from the others; the results land in
//! `citychain_storage_challenges_total{result}` (with HELP) and as contribution records in
//! the representative's `contributions.redb`. A crashed holder fails its next challenge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dag_core::NodeId;
use devnet::{CITY_POS, Devnet, DevnetConfig};
use node::{AuditConfig, ChallengeResult, ContributionRecord};
use pqc::Keypair;
use rpc::{CityClient, TxState};
use std::collections::BTreeSet;
use std::time::Duration;

/// The records of the first epoch after `after` that has any, waiting up to 60 s.
async fn next_epoch(net: &Devnet, after: u64) -> (u64, Vec<ContributionRecord>) {
    let log = net.city().contributions().expect("audit on").clone();
    for _ in 0..600 {
        if let Some(last) = log.last_epoch().unwrap()
            && last > after
        {
            let recs = log.epochs(last, last).unwrap();
            if !recs.is_empty() {
                return (last, recs);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no audit epoch after {after} with records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_holder_is_challenged_each_epoch_and_a_crashed_one_fails() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cfg = DevnetConfig {
        lights: 6,
        heartbeat: Duration::from_millis(200),
        // A crashed holder stays listed long enough to be challenged while silent.
        presence_ttl: Duration::from_secs(120),
        audit: AuditConfig {
            enabled: true,
            interval_ms: 1_500,
            call_timeout_ms: 1_000,
        },
        ..DevnetConfig::default()
    };
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);
    let client = CityClient::connect(&net.city().addr().to_string())
        .await
        .unwrap();
    let user = Keypair::generate();
    for nonce in 0..3 {
        let tx = e2e::tokyo_payment(&user, 5, nonce, CITY_POS);
        assert_eq!(client.submit(&tx).await.unwrap().state, TxState::Held);
    }
    let lights: BTreeSet<NodeId> = net.lights.iter().map(|l| l.id).collect();

    // An epoch after the txs were held: each of the 6 holders challenged once, all pass.
    let now_epoch = net
        .city()
        .contributions()
        .unwrap()
        .last_epoch()
        .unwrap()
        .unwrap_or(0);
    let (e1, recs) = next_epoch(&net, now_epoch).await;
    let holders: BTreeSet<NodeId> = recs.iter().map(|r| r.holder).collect();
    assert_eq!(holders, lights, "{recs:?}");
    assert_eq!(
        recs.len(),
        6,
        "one challenge per holder per epoch: {recs:?}"
    );
    assert!(recs.iter().all(|r| r.passed && r.epoch == e1), "{recs:?}");

    // A holder crashes: its next challenge fails (silent), the others still pass.
    let gone = net.lights[0].id;
    net.crash_light(0).await;
    let (e2, recs) = next_epoch(&net, e1).await;
    let mine: Vec<_> = recs.iter().filter(|r| r.holder == gone).collect();
    assert_eq!(mine.len(), 1, "{recs:?}");
    assert!(!mine[0].passed);
    assert_eq!(mine[0].result, ChallengeResult::Unreachable);
    assert!(
        recs.iter().filter(|r| r.holder != gone).all(|r| r.passed),
        "{recs:?}"
    );
    let of_gone = net
        .city()
        .contributions()
        .unwrap()
        .of_holder(&gone)
        .unwrap();
    assert!(of_gone.iter().any(|r| r.epoch == e1 && r.passed));
    assert!(of_gone.iter().any(|r| r.epoch == e2 && !r.passed));

    let text = metrics.render();
    assert!(
        text.contains("# HELP citychain_storage_challenges_total"),
        "{text}"
    );
    assert!(
        text.contains("citychain_storage_challenges_total{result=\"passed\"}"),
        "{text}"
    );
    assert!(
        text.contains("citychain_storage_challenges_total{result=\"unreachable\"}"),
        "{text}"
    );
    drop(client);
    net.shutdown().await.unwrap();
}

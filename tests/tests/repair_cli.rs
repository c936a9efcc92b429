//! `repair-cli` against a running devnet on loopback (presence, eight light nodes each its own
//! gRPC server, a city node): get, repair and audit through the real binary, before and
//! after a holder crashes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dag_core::TxId;
use devnet::{CITY_POS, Devnet, DevnetConfig};
use pqc::Keypair;
use rpc::{CityClient, TxState};
use std::time::Duration;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn cli(city: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(e2e::workspace_bin("repair-cli"))
        .arg("--city")
        .arg(city)
        .args(["--timeout-ms", "5000"])
        .args(args)
        .env_remove("CITY_ADDR")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn shards_rebuilt(stdout: &str) -> u32 {
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("repair    ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_repair_and_audit_against_a_devnet() {
    let dir = tempfile::tempdir().unwrap();
    // Short heartbeats so the city sees its light nodes quickly; a long presence TTL so a
    // crashed holder stays in the city's live view (listed, but silent) and the background
    // re-replication does not race the operator's repair.
    let cfg = DevnetConfig::crashed_stay_listed(8, Duration::from_secs(3));
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(8, Duration::from_secs(20)).await);
    let city = net.city().addr().to_string();
    let client = CityClient::connect(&city).await.unwrap();

    // Three txs, submitted together: Held with receipts.
    let user = Keypair::generate();
    let mut submits = Vec::new();
    for nonce in 0..3u64 {
        let signed = e2e::tokyo_payment(&user, 10 + nonce, nonce, CITY_POS);
        let c = client.clone();
        submits.push(tokio::spawn(async move { c.submit(&signed).await }));
    }
    let mut held = Vec::new();
    for s in submits {
        let s = s.await.unwrap().unwrap();
        assert_eq!(s.state, TxState::Held);
        assert_eq!(s.receipts.len(), 6);
        held.push(s);
    }
    let ids: Vec<TxId> = held.iter().map(|s| s.tx_id).collect();

    // All healthy: audit passes, get verifies, unknown and malformed ids are clear.
    let r = cli(&city, &["audit"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("audit ok"), "{}", r.stdout);
    assert!(
        r.stdout.contains("| shards ok             |"),
        "{}",
        r.stdout
    );
    let r = cli(&city, &["get", &ids[0].to_hex()]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(&ids[0].to_hex()), "{}", r.stdout);
    assert!(
        r.stdout.contains("every signature verified locally"),
        "{}",
        r.stdout
    );
    let holder_lines = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("  shard "))
        .count();
    assert_eq!(holder_lines, 6, "{}", r.stdout);
    let r = cli(&city, &["get", &TxId::from_bytes([9; 32]).to_hex()]).await;
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("not held"), "{}", r.stderr);
    let r = cli(&city, &["get", "xyz"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("is not a tx id"), "{}", r.stderr);

    // Crash a holder of the first tx's stripe: the audit names it and fails.
    let victim = held[0].receipts[0].receipt.holder;
    let i = net.lights.iter().position(|l| l.id == victim).unwrap();
    net.crash_light(i).await;
    let r = cli(&city, &["audit"]).await;
    println!(
        "$ repair-cli audit   # after crashing a holder\n{}",
        r.stdout
    );
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("audit FAILED"), "{}", r.stdout);
    let fail_lines: Vec<_> = r.stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(!fail_lines.is_empty());
    assert!(
        fail_lines
            .iter()
            .all(|l| l.contains(&victim.short()) && l.contains("unreachable")),
        "{}",
        r.stdout
    );

    // get still restores from the other holders.
    let r = cli(&city, &["get", &ids[1].to_hex()]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // repair every tx: the lost shards are re-created elsewhere, once per stripe.
    let mut rebuilt = 0;
    for id in &ids {
        let r = cli(&city, &["repair", &id.to_hex()]).await;
        println!("$ repair-cli repair {id}\n{}", r.stdout);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("repair    "), "{}", r.stdout);
        rebuilt += shards_rebuilt(&r.stdout);
    }
    assert!(rebuilt >= 1, "nothing was rebuilt");
    // The receipts now name only live holders, and the audit is clean again.
    let r = cli(&city, &["get", &ids[0].to_hex()]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains(&victim.to_hex()), "{}", r.stdout);
    let r = cli(&city, &["audit"]).await;
    println!("$ repair-cli audit   # after repair\n{}", r.stdout);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // A second repair finds nothing to do.
    let r = cli(&city, &["repair", &ids[0].to_hex()]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("stripe was whole"), "{}", r.stdout);

    // Corrupt a shard on a live holder's disk: the holder refuses to return it, the audit
    // reports it corrupt, repair moves it to another node, the audit is clean again.
    let after = client.repair(ids[2], false).await.unwrap().unwrap();
    let target = after
        .receipts
        .iter()
        .find_map(|r| {
            let j = net.lights.iter().position(|l| l.id == r.receipt.holder)?;
            net.lights[j].server()?;
            Some((j, r.receipt.stripe_id, r.receipt.shard_index))
        })
        .unwrap();
    let (j, sid, index) = target;
    let bad_holder = net.lights[j].id;
    net.lights[j]
        .server()
        .unwrap()
        .node()
        .store()
        .corrupt_for_test(&sid, index, |b| *b.last_mut().unwrap() ^= 0xff)
        .unwrap();
    let r = cli(&city, &["audit"]).await;
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.lines().any(|l| l.starts_with("FAIL")
            && l.contains(&bad_holder.short())
            && l.contains("corrupt")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("| corrupt               |      1 |"),
        "{}",
        r.stdout
    );
    let r = cli(&city, &["repair", &ids[2].to_hex()]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(shards_rebuilt(&r.stdout), 1, "{}", r.stdout);
    let r = cli(&city, &["audit"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    net.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_city_is_a_clear_error() {
    // Bind then drop a listener: nothing answers on that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = cli(&format!("127.0.0.1:{port}"), &["audit"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot reach the city node"),
        "{}",
        r.stderr
    );
}

/// Two holders of a stripe crash but stay listed live: every shard left proves, yet only
/// k = 4 distinct holders remain. The audit says the stripe is one loss from unrecoverable
/// and exits 4; repair brings it back to six distinct holders and the audit passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_flags_a_stripe_one_loss_from_unrecoverable_and_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    // Crashed holders stay listed (silent): re-replication does not race the repair.
    let cfg = DevnetConfig::crashed_stay_listed(8, Duration::from_secs(3));
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(8, Duration::from_secs(20)).await);
    let city = net.city().addr().to_string();
    let client = CityClient::connect(&city).await.unwrap();
    let user = Keypair::generate();
    let tx = e2e::tokyo_payment(&user, 10, 0, CITY_POS);
    let s = client.submit(&tx).await.unwrap();
    assert_eq!(s.state, TxState::Held);
    for r in s.receipts.iter().take(2) {
        let i = net
            .lights
            .iter()
            .position(|l| l.id == r.receipt.holder)
            .unwrap();
        net.crash_light(i).await;
    }
    let r = cli(&city, &["audit"]).await;
    println!("$ repair-cli audit   # two holders crashed\n{}", r.stdout);
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("| one loss from lost    |      1 |"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("one node loss away from unrecoverable"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("| holder    | shards |"), "{}", r.stdout);

    let r = cli(&city, &["repair", &s.tx_id.to_hex()]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(shards_rebuilt(&r.stdout), 2, "{}", r.stdout);
    let r = cli(&city, &["audit"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("| one loss from lost    |      0 |"),
        "{}",
        r.stdout
    );
    net.shutdown().await.unwrap();
}

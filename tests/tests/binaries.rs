//! The shipped binaries as an operator starts them, as OS processes: `presence-server`, six
//! light nodes and a city committee of four representatives (`city-node run`, through the
//! localnet launcher), a continent and a global log. Txs go in over gRPC and come back
//! Held; two light nodes holding their shards are killed with SIGKILL; every tx is then
//! restored from the four remaining shards by `repair-cli get` (a separate process, which
//! verifies the tx and every receipt itself); the rest stop cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dag_core::TxId;
use devnet::localnet::{Localnet, LocalnetConfig};
use pqc::Keypair;
use rpc::{CityClient, TxState};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::tokyo_tx as signed;

/// `repair-cli --city <city> get <id>`: exit code and stdout.
async fn repair_get(city: &str, id: TxId) -> (i32, String, String) {
    let out = tokio::process::Command::new(e2e::workspace_bin("repair-cli"))
        .args(["--city", city, "--timeout-ms", "10000", "get", &id.to_hex()])
        .env_remove("CITY_ADDR")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_hold_a_tx_survive_kill_9_of_two_light_nodes_and_restore_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalnetConfig::new(dir.path());
    cfg.city_node_bin = e2e::workspace_bin("city-node");
    cfg.presence_bin = e2e::workspace_bin("presence-server");
    let mut net = Localnet::start(cfg).await.expect("the localnet starts");
    let manifest = net.manifest().clone();
    assert_eq!(manifest.by_role("light").len(), 6);
    assert_eq!(manifest.by_role("city").len(), 4);
    assert!(manifest.get("presence").is_some());
    let rep = manifest.by_role("city")[0].addr.to_string();

    // Submit over gRPC until the representative holds (its view needs the six lights).
    let japan = pop_geo::shipped::japan().unwrap();
    let spot = japan.sample_points("JP-13", 1, 3)[0];
    let user = Keypair::generate();
    let client = CityClient::connect(&rep).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut nonce = 0;
    let mut held = Vec::new();
    while held.len() < 8 {
        let s = client.submit(&signed(&user, nonce, spot)).await;
        nonce += 1;
        match s {
            Ok(s) if s.state == TxState::Held => {
                let holders: BTreeSet<_> = s.receipts.iter().map(|r| r.receipt.holder).collect();
                assert_eq!(holders.len(), 6, "six distinct holders sign receipts");
                held.push(s);
            }
            other => {
                assert!(held.is_empty(), "a later tx was not Held: {other:?}");
                assert!(Instant::now() < deadline, "never Held: {other:?}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }

    // kill -9 two light nodes that hold shards of the first tx.
    let holders: BTreeSet<_> = held[0].receipts.iter().map(|r| r.receipt.holder).collect();
    let mut killed = Vec::new();
    for light in manifest.by_role("light") {
        let key = pqc::Keypair::load(&dir.path().join(&light.name).join("node.key"));
        let id = key.map(|k| k.node_id()).ok();
        if killed.len() < 2 && id.is_some_and(|id| holders.contains(&id)) {
            net.kill(&light.name).await;
            killed.push(light.name.clone());
        }
    }
    assert_eq!(killed.len(), 2, "two holders found and killed");

    // Every held tx restores from the remaining shards through the operator's tool.
    for s in &held {
        let (code, stdout, stderr) = repair_get(&rep, s.tx_id).await;
        assert_eq!(code, 0, "repair-cli get {}: {stdout}\n{stderr}", s.tx_id);
        assert!(stdout.contains(&s.tx_id.to_hex()), "{stdout}");
        assert!(
            stdout.contains("every signature verified locally"),
            "{stdout}"
        );
    }

    // Everything still running stops cleanly on SIGTERM.
    let unclean = net.stop().await;
    assert!(unclean.is_empty(), "did not stop cleanly: {unclean:?}");
}

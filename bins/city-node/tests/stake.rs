//! `city-node stake …` against a running city node: a signed delegation is admitted and
//! readable by its id; a bad account id and a reused nonce fail with the reason; `stake show`
//! / `stake committee` on a node that is not a representative print the typed refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dag_core::TxId;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_city-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stake_commands_sign_and_submit_with_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let node_key = pqc::Keypair::generate();
    let cfg = node::CityConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("city"),
        verify_threads: 1,
        // Plaintext links, chosen explicitly (the default is TLS).
        links: rpc::tls::LinkSecurity::Insecure,
        ..node::CityConfig::default()
    };
    let handle = node::start_city(&cfg, &node_key).await.unwrap();
    let addr = handle.addr().to_string();
    let key_file = dir.path().join("wallet.key");
    let wallet = pqc::Keypair::generate();
    wallet.save(&key_file).unwrap();
    let validator = node_key.account_id().to_hex();
    let run = |args: &[&str]| {
        let key_file = key_file.clone();
        let addr = addr.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .arg("stake")
                .arg("--key")
                .arg(&key_file)
                .args(["--node", &addr, "--city", "JP-13"])
                .args(&args)
                .output()
                .unwrap()
        })
    };
    let out = run(&[
        "--nonce",
        "0",
        "delegate",
        "--validator",
        &validator,
        "--amount",
        "5",
    ])
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("account: {}", wallet.account_id())),
        "{stdout}"
    );
    assert!(stdout.contains("state: Admitted"), "{stdout}");
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tx: "))
        .map(|h| TxId::from_hex(h).unwrap())
        .unwrap();
    let client = rpc::CityClient::connect(&addr).await.unwrap();
    let rec = client.get(id).await.unwrap().expect("stored");
    let tx = rec.tx.unwrap();
    assert_eq!(tx.tx.kind, dag_core::TxKind::SystemTx);
    assert_eq!(
        dpos::SystemPayload::decode(&tx.tx.payload).unwrap(),
        dpos::SystemPayload::Delegate {
            validator: node_key.account_id(),
            amount: 5
        }
    );

    // The same nonce again: refused by admission, and the reason is printed.
    let out = run(&["--nonce", "0", "claim"]).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("claim_rewards refused") || err.contains("refused"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("nonce"), "{err}");

    // Reads: this node is no representative (no genesis): the typed refusal is printed.
    let out = run(&["show"]).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOT_A_REPRESENTATIVE"), "{err}");
    let out = run(&["committee", "--json"]).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_A_REPRESENTATIVE"));
    // Signing without a nonce is refused before anything is sent.
    let out = run(&["claim"]).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--nonce is required"), "{err}");

    // A malformed account id never reaches the node.
    let out = run(&["--nonce", "1", "withdraw", "--validator", "xyz"])
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--validator must be an account id"), "{err}");
    handle.shutdown().await.unwrap();
}

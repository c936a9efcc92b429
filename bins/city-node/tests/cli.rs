//! The city-node binary as an operator uses it: keygen, run with flags / env / TOML,
//! /metrics, and a graceful stop on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dag_core::{AccountId, CityId, Position, PositionMethod, Tx};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_city-node");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child if the test fails before stopping it.
struct Guard(Option<Child>);
impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for_port(port: u16) {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn sigterm_and_wait(child: &mut Child) -> std::process::ExitStatus {
    let st = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "node did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k/node.key");
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("node id:"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let kp = pqc::Keypair::load(&key).unwrap();
    // The TLS key and certificate beside it, bound to this node key.
    let tls_dir = key.parent().unwrap();
    let tls = rpc::tls::TlsIdentity::load(tls_dir, kp.node_id()).unwrap();
    assert_eq!(
        rpc::tls::verify_binding(tls.cert_der()).unwrap(),
        kp.node_id()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(tls_dir.join("tls.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let again = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn run_serves_grpc_and_metrics_then_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let metrics = free_port();
    // listen from the TOML file, data dir from env, metrics from a flag.
    let cfg = dir.path().join("city.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\nrole = \"city\"\nlisten = \"127.0.0.1:{grpc}\"\n[pipeline]\nverify_threads = 1\n"
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .env("CITY_DATA_DIR", dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(Some(child));
    wait_for_port(grpc);
    wait_for_port(metrics);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = rpc::CityClient::connect(&format!("127.0.0.1:{grpc}"))
            .await
            .unwrap();
        let kp = pqc::Keypair::generate();
        let tx = Tx::fresh(
            kp.account_id(),
            AccountId::from_bytes([1; 32]),
            1,
            1,
            1,
            CityId::new("JP-13").unwrap(),
            Position::from_degrees(35.6895, 139.6917).unwrap(),
            PositionMethod::Gps,
        );
        // A city alone has no light nodes: Held's promise cannot be kept, so the answer is
        // a retryable OVERLOADED naming why, and nothing stays admitted.
        let signed = pqc::sign_tx(tx, &kp);
        match client.submit(&signed).await {
            Err(rpc::ClientError::Rejected(r)) => {
                assert_eq!(r.code, rpc::RejectCode::Overloaded, "{r:?}");
                assert!(r.message.contains("distinct holders"), "{}", r.message);
            }
            other => panic!("expected OVERLOADED without light nodes, got {other:?}"),
        }
        assert!(client.get(signed.id()).await.unwrap().is_none());
    });
    let body = http_get(metrics, "/metrics");
    assert!(body.contains("citychain_hold_failed_total"), "{body}");
    assert!(
        dir.path().join("data/node.key").exists(),
        "node key created on first start"
    );

    let status = sigterm_and_wait(guard.0.as_mut().unwrap());
    assert!(status.success(), "exit status {status:?}");
    guard.0 = None;
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "listen = 5\nnonsense = true\n").unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // The file and the key are named.
    assert!(
        err.contains("bad.toml") && err.contains("key `listen`") && err.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn continent_and_global_roles_run_from_a_genesis_file() {
    use dag_core::Signer;
    use dag_core::consensus::{BatchDigest, Checkpoint};
    let dir = tempfile::tempdir().unwrap();
    let (cport, gport) = (free_port(), free_port());
    let (cdata, gdata) = (dir.path().join("continent"), dir.path().join("global"));
    let ckey = pqc::Keypair::generate();
    ckey.save(&cdata.join("node.key")).unwrap();
    let gkey = pqc::Keypair::generate();
    gkey.save(&gdata.join("node.key")).unwrap();
    let reps: Vec<pqc::Keypair> = (0..4).map(|_| pqc::Keypair::generate()).collect();
    let members: Vec<String> = reps
        .iter()
        .enumerate()
        .map(|(i, k)| {
            format!(
                "{{ public_key = \"{}\", stake = 1, address = \"127.0.0.1:{}\" }}",
                hex_of(k.public_key()),
                7801 + i
            )
        })
        .collect();
    let genesis = dir.path().join("genesis.toml");
    std::fs::write(
        &genesis,
        format!(
            "[[cities]]\nid = \"JP-13\"\nmembers = [{}]\n\n[continent]\npublic_key = \"{}\"\naddress = \"127.0.0.1:{cport}\"\n\n[global]\npublic_key = \"{}\"\naddress = \"127.0.0.1:{gport}\"\n",
            members.join(", "),
            hex_of(ckey.public_key()),
            hex_of(gkey.public_key()),
        ),
    )
    .unwrap();
    let spawn = |role: &str, port: u16, data: &std::path::Path| {
        Command::new(BIN)
            .args(["run", "--role", role, "--genesis"])
            .arg(&genesis)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut global = Guard(Some(spawn("global", gport, &gdata)));
    let mut continent = Guard(Some(spawn("continent", cport, &cdata)));
    wait_for_port(gport);
    wait_for_port(cport);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = rpc::FederationClient::lazy(&format!("127.0.0.1:{cport}"), Duration::from_secs(10))
            .unwrap();
        let g = rpc::FederationClient::lazy(&format!("127.0.0.1:{gport}"), Duration::from_secs(10))
            .unwrap();
        let city = node::genesis::city_hash("JP-13");
        let cp = Checkpoint {
            sequence: 0,
            leader_round: 0,
            leader: BatchDigest(dag_core::Hash32([1; 32])),
            batches: vec![],
            prev_hash: dag_core::Hash32([0; 32]),
        };
        let h = rpc::CheckpointHeader::of(city, &cp);
        let cert = rpc::CertifiedCheckpoint::new(
            h,
            reps[..3].iter().map(|k| rpc::sign_share(&h, k)).collect(),
        );
        let p = c.push_checkpoint(&cert).await.unwrap();
        p.receipt
            .verify(rpc::LogKind::Continent, ckey.public_key())
            .unwrap();
        // The continent pushes its head to the global within a few intervals.
        let t0 = Instant::now();
        loop {
            let head = g.tree_head().await.unwrap();
            head.verify(gkey.public_key()).unwrap();
            if head.size >= 1 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "global never logged"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    for g in [&mut continent, &mut global] {
        let status = sigterm_and_wait(g.0.as_mut().unwrap());
        assert!(status.success(), "exit status {status:?}");
        g.0 = None;
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

//! The README's role walkthrough ("Running the roles by hand"), run verbatim: the first
//! `sh` block after the sentence announcing it is extracted from README.md, its `export`
//! lines become the environment of the commands after them, servers (`presence-server`,
//! `city-node run`) are started as processes in a fresh directory with the built binaries
//! first on `PATH`, one-shot commands (`city-node keygen`) must succeed. Then a tx is
//! submitted to the city node the walkthrough started and must be answered Held with six
//! receipts from distinct light nodes; every process stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dag_core::{AccountId, CityId, Position, PositionMethod, Tx};
use pqc::Keypair;
use rpc::{CityClient, TxState};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The walkthrough's lines: (env assignments so far, command), backslash continuations
/// joined, comments and blank lines dropped.
fn walkthrough() -> Vec<(Vec<(String, String)>, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let from = readme
        .find("The walkthrough below runs verbatim")
        .expect("the README announces its walkthrough");
    let rest = &readme[from..];
    let start = rest.find("```sh\n").expect("a sh block follows") + "```sh\n".len();
    let block = &rest[start..start + rest[start..].find("```").expect("the block ends")];
    let mut lines = Vec::new();
    let mut cur = String::new();
    for raw in block.lines() {
        let l = raw.trim();
        if cur.is_empty() && (l.is_empty() || l.starts_with('#')) {
            continue;
        }
        if let Some(head) = l.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(l);
        lines.push(std::mem::take(&mut cur));
    }
    let mut env = Vec::new();
    let mut out = Vec::new();
    for l in lines {
        if let Some(assign) = l.strip_prefix("export ") {
            for kv in assign.split_whitespace() {
                let (k, v) = kv.split_once('=').expect("export K=V");
                env.push((k.to_string(), v.to_string()));
            }
        } else {
            out.push((env.clone(), l));
        }
    }
    out
}

/// The value after `flag` in `cmd`.
fn flag<'a>(cmd: &'a str, flag: &str) -> Option<&'a str> {
    let mut it = cmd.split_whitespace();
    it.find(|w| *w == flag)?;
    it.next()
}

/// The address a server command listens on (`--listen A`, or presence's `--bind`/`--port`).
fn listen_addr(cmd: &str) -> String {
    flag(cmd, "--listen")
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{}:{}",
                flag(cmd, "--bind").unwrap_or("127.0.0.1"),
                flag(cmd, "--port").expect("a server names its port")
            )
        })
}

async fn wait_listening(addr: &str, child: &mut Child, cmd: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("`{cmd}` exited with {status} before listening on {addr}");
        }
        assert!(
            Instant::now() < deadline,
            "`{cmd}` never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_verbatim_to_held() {
    let steps = walkthrough();
    assert!(
        steps.len() >= 9,
        "presence, six lights, keygen, city: {steps:#?}"
    );
    let city_node = e2e::workspace_bin("city-node");
    e2e::workspace_bin("presence-server");
    let bin_dir = city_node.parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut servers: Vec<(String, Child)> = Vec::new();
    let mut city = None;
    for (env, cmd) in &steps {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("exec {cmd}"))
            .current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("PRESENCE_BACKEND")
            .env_remove("PRESENCE_HTTP_ENDPOINT")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .kill_on_drop(true);
        let server = cmd.starts_with("presence-server") || cmd.contains(" run ");
        if server {
            let log =
                std::fs::File::create(dir.path().join(format!("{}.log", servers.len()))).unwrap();
            c.stdout(log.try_clone().unwrap()).stderr(log);
            let mut child = c.spawn().expect("the command starts");
            let addr = listen_addr(cmd);
            wait_listening(&addr, &mut child, cmd).await;
            if flag(cmd, "--role") == Some("city") {
                city = Some(addr);
            }
            servers.push((cmd.clone(), child));
        } else {
            let out = c.output().await.unwrap();
            assert!(
                out.status.success(),
                "`{cmd}` failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let city = city.expect("the walkthrough starts a city node");

    // A tx at the city node's own position: Held once it sees its six light nodes.
    let user = Keypair::generate();
    let client = CityClient::connect(&city).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut nonce = 0;
    let held = loop {
        let tx = pqc::sign_tx(
            Tx::fresh(
                user.account_id(),
                AccountId::from_bytes([7; 32]),
                1,
                nonce,
                1_767_225_600_000,
                CityId::new("JP-13").unwrap(),
                Position::from_degrees(35.6895, 139.6917).unwrap(),
                PositionMethod::Gps,
            ),
            &user,
        );
        nonce += 1;
        match client.submit(&tx).await {
            Ok(s) if s.state == TxState::Held => break s,
            other => {
                assert!(Instant::now() < deadline, "never Held: {other:?}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let holders: BTreeSet<_> = held.receipts.iter().map(|r| r.receipt.holder).collect();
    assert_eq!(holders.len(), 6, "six distinct light nodes hold it");
    drop(client);

    // SIGTERM, city first: each exits 0.
    for (cmd, mut child) in servers.into_iter().rev() {
        let pid = child.id().expect("still running");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .unwrap_or_else(|_| panic!("`{cmd}` did not stop on SIGTERM"))
            .unwrap();
        assert!(status.success(), "`{cmd}` exited with {status}");
    }
}

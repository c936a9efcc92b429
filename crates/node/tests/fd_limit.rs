//! With no file descriptor left (`ulimit -n` reached), a node does not take connections,
//! logs why, keeps running, and serves again once descriptors are free. Its own test binary:
//! lowering `RLIMIT_NOFILE` affects the whole process, so no other test may share it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use node::{LightConfig, start_light};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Collects log output for the assertion below.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Descriptors open now (the directory handle used to count them is not included).
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64 - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_refuses_with_a_logged_reason_and_recovers() {
    let logs = Logs::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();
    let dir = tempfile::tempdir().unwrap();
    let cfg = LightConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        // Plaintext links, chosen explicitly (the default is TLS).
        links: rpc::tls::LinkSecurity::Insecure,
        ..LightConfig::default()
    };
    let light = start_light(&cfg, pqc::Keypair::generate()).await.unwrap();
    let addr = light.addr();

    // A client's socket exists (its descriptor taken) before the limit drops …
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    let saved = getrlimit(Resource::Nofile);
    let fds = open_fds();
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(fds),
            maximum: saved.maximum,
        },
    )
    .unwrap();
    // … then connects: the kernel completes the handshake into the listen backlog, but the
    // node has no descriptor left to accept it with.
    let waiting = socket.connect(addr).await.unwrap();
    let mut waiting = waiting.into_std().unwrap();
    waiting.set_nonblocking(false).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    for _ in 0..200 {
        if String::from_utf8_lossy(&logs.0.lock().unwrap()).contains("not accepting connections") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    setrlimit(Resource::Nofile, saved).unwrap();
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        text.contains("not accepting connections") && text.contains("EMFILE"),
        "the refusal is logged with its reason: {text}"
    );

    // Descriptors are back: the waiting connection is served (the server's HTTP/2 SETTINGS
    // frame arrives) and new clients get answers.
    waiting
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let mut frame = [0u8; 9];
    let waiting =
        tokio::task::spawn_blocking(move || waiting.read_exact(&mut frame).map(|_| frame));
    let frame = waiting.await.unwrap().unwrap();
    assert_eq!(frame[3], 0x4, "a SETTINGS frame from the server");
    let client = rpc::ShardStoreClient::connect(&addr.to_string())
        .await
        .unwrap();
    let probe = storage::ErasureConfig::default()
        .encode(b"still here")
        .unwrap();
    client.put_shard(&probe[0]).await.unwrap();
    light.shutdown().await.unwrap();
}

//! Shared helpers: node infos, event waiting, bounded polling.

use dag_core::{NodeId, NodeInfo, Role};
use futures::StreamExt;
use presence::{EventStream, PresenceEvent};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub fn node(n: u8, role: Role, city: &str) -> NodeInfo {
    NodeInfo {
        node_id: NodeId::from_bytes([n; 32]),
        role,
        grpc_addr: format!("127.0.0.1:{}", 7000 + u16::from(n)),
        city_id: city.into(),
        zone: String::new(),
        lat: 35.0 + f64::from(n) / 100.0,
        lon: 139.0,
        free_capacity: 1 << 30,
        load: 0.25,
        version: "test".into(),
        session_start_ms: 1,
    }
}

/// A node with a real ML-DSA-87 key (from seed `n`): its info (node id = the key's) and
/// the key, for the signed HTTP API.
pub fn keyed(n: u8, role: Role, city: &str) -> (NodeInfo, Arc<pqc::Keypair>) {
    let key = pqc::Keypair::from_seed(&[n; 32]).expect("seeded key");
    let info = NodeInfo {
        node_id: key.node_id(),
        ..node(n, role, city)
    };
    (info, Arc::new(key))
}

/// The next event, failing the test after 5 s.
pub async fn next_event(events: &mut EventStream) -> PresenceEvent {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("no presence event within 5 s")
            .expect("event stream ended");
        match item {
            Ok(ev) => return ev,
            // A resync marker is allowed; the next real event is what we want.
            Err(presence::Error::EventsMissed { .. }) => continue,
            Err(e) => panic!("event stream error: {e}"),
        }
    }
}

/// Polls `check` every 20 ms until it returns Some, failing after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, as PEM files in `dir`:
/// (ca.pem, server.pem, server.key).
pub fn tls_files(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "presence test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

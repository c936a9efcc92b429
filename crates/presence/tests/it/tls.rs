//! TLS to Redis: a store that does not trust the server's CA is refused at connect (nothing
//! is sent in clear; the conformance suite over TLS is in `conformance.rs`).

use presence::{Error, RedisPresenceStore, RedisProcess, RedisStoreConfig, SystemClock};
use std::sync::Arc;

#[tokio::test]
async fn an_untrusted_server_certificate_is_refused_and_plaintext_is_not_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::support::tls_files(dir.path());
    let server = RedisProcess::start_tls(&cert, &key, &ca).unwrap();
    // Another CA: the server's certificate does not chain to it.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = crate::support::tls_files(other.path());
    let connect = |uri: String, ca: Option<std::path::PathBuf>| {
        RedisPresenceStore::connect(
            RedisStoreConfig {
                uri,
                tls_ca_file: ca,
                ..RedisStoreConfig::default()
            },
            Arc::new(SystemClock),
        )
    };
    match connect(server.uri(), Some(other_ca)).await {
        Err(Error::Unavailable { op: "connect", .. }) => {}
        other => panic!("an untrusted certificate must be refused: {other:?}"),
    }
    // The system's roots do not know the test CA either.
    assert!(connect(server.uri(), None).await.is_err());
    // The TLS port does not speak plaintext.
    let plain = server.uri().replacen("rediss://", "redis://", 1);
    assert!(connect(plain, Some(ca.clone())).await.is_err());
    // The right CA connects.
    connect(server.uri(), Some(ca)).await.unwrap();
    // A missing CA file is a typed error naming it.
    match connect(server.uri(), Some(dir.path().join("nope.pem"))).await {
        Err(Error::Io { what, .. }) => assert!(what.contains("nope.pem"), "{what}"),
        other => panic!("{other:?}"),
    }
}

//! The MongoDB backend: the same conformance suite against the server `MONGODB_URI` names.
//! Compiled only with the `mongodb` feature; `./scripts/test` starts a Mongo-wire server
//! (SecantusDB from PyPI, on a free port) and runs this module with the feature and the URI
//! set. With the feature on and no URI the test fails: it never passes without running.
//! Each run uses a fresh collection and drops it afterwards.

use crate::conformance;
use archive::{Archive, ArchiveConfig, ArchiveKeys, MongoArchive, MongoConfig};
use pqc::{Keyring, NtruParams};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn conformance_on_mongodb() {
    let uri = std::env::var("MONGODB_URI").expect(
        "MONGODB_URI names the server to test against (./scripts/test starts one; or run without --features mongodb)",
    );
    let mut cfg = MongoConfig::new(uri);
    cfg.database = "citychain_test".into();
    cfg.collection = format!("dag_nodes_{}_{}", std::process::id(), now_ms());
    let keys = Arc::new(ArchiveKeys::new(
        Keyring::generate(NtruParams::default()).unwrap(),
    ));
    let a = MongoArchive::new(cfg, keys, ArchiveConfig::default());

    // Run the suite as a task so a failure still reaches the clean-up below.
    let suite = {
        let a = a.clone();
        // Times near now, so the TTL index does not remove records the suite still reads.
        tokio::spawn(async move { conformance::run(&a, now_ms(), true).await })
    };
    let result = suite.await;
    let count = a.count().await;
    a.drop_collection().await.unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    assert!(count.unwrap() > 0);
}

//! The city writes held txs to the encrypted archive in the background, and `GetTx` falls
//! back to it when the local store has lost a tx.

use dag_core::{AccountId, CityId, Position, PositionMethod, Tx};
use node::{
    CityConfig, CityParts, MemoryTransport, PipelineConfig, StaticDirectory, StorageParts,
    start_city_with,
};
use rpc::{CityClient, TxState};
use std::sync::Arc;

fn parts(transport: &Arc<MemoryTransport>, dir: &Arc<StaticDirectory>) -> CityParts {
    CityParts {
        storage: Some(StorageParts {
            transport: transport.clone(),
            directory: dir.clone(),
            config: PipelineConfig::default(),
        }),
        ..CityParts::default()
    }
}

#[tokio::test]
async fn get_tx_falls_back_to_the_archive_when_the_local_store_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = CityConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: tmp.path().to_path_buf(),
        verify_threads: 2,
        // Plaintext links, chosen explicitly (the default is TLS).
        links: rpc::tls::LinkSecurity::Insecure,
        ..CityConfig::default()
    };
    let transport = Arc::new(MemoryTransport::default());
    let nodes: Vec<_> = (0..6)
        .map(|i| transport.add_node(&format!("z{i}")).unwrap())
        .collect();
    let dir = Arc::new(StaticDirectory::new(nodes));
    let key = pqc::Keypair::generate();
    let user = pqc::Keypair::generate();

    let handle = start_city_with(&cfg, &key, parts(&transport, &dir))
        .await
        .unwrap();
    let client = CityClient::connect(&handle.addr().to_string())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for nonce in 0..5 {
        let tx = Tx::fresh(
            user.account_id(),
            AccountId::from_bytes([9; 32]),
            10 + nonce,
            nonce,
            1_767_225_600_000,
            CityId::new("JP-13").unwrap(),
            Position::from_degrees(35.6895, 139.6917).unwrap(),
            PositionMethod::Gps,
        );
        let s = client.submit(&pqc::sign_tx(tx, &user)).await.unwrap();
        assert_eq!(s.state, TxState::Held);
        ids.push(s.tx_id);
    }
    drop(client);
    // Shutdown flushes the archive queue.
    handle.shutdown().await.unwrap();

    // The stored bytes of the archive hold no plaintext payload of the parties.
    let raw = std::fs::read(tmp.path().join("archive").join(archive::ARCHIVE_FILE)).unwrap();
    assert!(
        !raw.windows(32).any(|w| w == user.account_id().as_bytes()),
        "sender in clear"
    );

    // Lose the local store and the stripe index.
    std::fs::remove_file(tmp.path().join("txs.redb")).unwrap();
    std::fs::remove_file(tmp.path().join("stripes.redb")).unwrap();

    let handle = start_city_with(&cfg, &key, parts(&transport, &dir))
        .await
        .unwrap();
    let client = CityClient::connect(&handle.addr().to_string())
        .await
        .unwrap();
    for id in &ids {
        let rec = client
            .get(*id)
            .await
            .unwrap()
            .expect("found in the archive");
        assert_eq!(rec.source, "archive");
        assert_eq!(rec.tx.as_ref().unwrap().id(), *id);
        assert!(rec.tx.clone().unwrap().verify(&pqc::MlDsa87).is_ok());
    }
    drop(client);
    handle.shutdown().await.unwrap();
}

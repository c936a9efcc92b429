//! The light role over real gRPC on loopback: put → verified receipt, streamed get,
//! challenges, and every bad input answered with a precise status.

use dag_core::{SignedReceipt, StripeId};
use node::{LightConfig, LightHandle, start_light};
use pqc::{Keypair, MlDsa87};
use rpc::pb::shard_store_service_client::ShardStoreServiceClient as RawClient;
use rpc::{ClientError, ShardStoreClient};
use storage::{
    Challenge, ChallengeNonce, ErasureConfig, Held, HeldRules, Shard, StripeLayout,
    verify_receipt_from,
};
use tonic::Code;

async fn light(quota_bytes: u64) -> (LightHandle, tempfile::TempDir, ShardStoreClient) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LightConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        quota_bytes,
        // Plaintext links, chosen explicitly (the default is TLS).
        links: rpc::tls::LinkSecurity::Insecure,
        ..LightConfig::default()
    };
    let h = start_light(&cfg, Keypair::generate()).await.unwrap();
    let c = ShardStoreClient::connect(&h.addr().to_string())
        .await
        .unwrap()
        .with_timeout(std::time::Duration::from_secs(10));
    (h, dir, c)
}

fn code(e: &ClientError) -> Code {
    match e {
        ClientError::Status { code, .. } => *code,
        ClientError::Rejected(r) => r.code.grpc_code(),
        other => panic!("expected a status, got {other:?}"),
    }
}

fn stripe(len: usize) -> (StripeLayout, Vec<Shard>) {
    let data: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
    let shards = ErasureConfig::default().encode(&data).unwrap();
    (StripeLayout::from_shards(&shards).unwrap(), shards)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_challenge_round_trip() {
    let (h, _dir, c) = light(1 << 30).await;
    let id = h.node().node_id();
    let (layout, shards) = stripe(3 * 1024 * 1024); // 768 KiB shards: several chunks each
    let mut receipts = Vec::new();
    for s in &shards {
        let stored = c.put_shard(s).await.unwrap();
        assert!(!stored.already_stored);
        receipts.push(verify_receipt_from(&layout, stored.receipt, &id, &MlDsa87).unwrap());
    }
    // idempotent put, fresh receipt
    assert!(c.put_shard(&shards[0]).await.unwrap().already_stored);
    // one node for all six: Held only with colocation allowed, and it says so
    let rules = HeldRules {
        allow_colocated: true,
        ..HeldRules::default()
    };
    assert!(
        Held::from_verified(&layout, receipts, rules)
            .unwrap()
            .colocated()
    );

    for s in &shards {
        assert_eq!(&c.get_shard(layout.stripe_id, s.index()).await.unwrap(), s);
    }
    let nonce = ChallengeNonce([3; 32]);
    let expected = Challenge::new(
        layout.stripe_id,
        4,
        layout.shard_hashes[4],
        nonce,
        &shards[4].data,
    );
    expected
        .check(&c.challenge(layout.stripe_id, 4, nonce).await.unwrap())
        .unwrap();
    let other = c
        .challenge(layout.stripe_id, 4, ChallengeNonce([4; 32]))
        .await
        .unwrap();
    assert!(expected.check(&other).is_err());
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_precise_statuses() {
    let (h, _dir, c) = light(1 << 30).await;
    let (layout, shards) = stripe(10_000);
    let mut raw = RawClient::connect(format!("http://{}", h.addr()))
        .await
        .unwrap();

    // a shard with a wrong hash, a foreign header, garbage: InvalidArgument, nothing stored
    let mut bad = shards[0].to_bytes();
    *bad.last_mut().unwrap() ^= 1;
    let mut foreign = shards[0].to_bytes();
    // A zip archive's magic where the shard magic belongs.
    foreign[..4].copy_from_slice(b"PK\x03\x04");
    for bytes in [bad, foreign, vec![1, 2, 3]] {
        let st = raw
            .put_shard(rpc::pb::PutShardRequest { shard: bytes })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
        assert!(st.message().starts_with("BAD_SHARD:"), "{}", st.message());
    }
    assert!(h.node().store().list_stripes().unwrap().is_empty());

    // not held: NotFound, for get and challenge
    let e = c.get_shard(layout.stripe_id, 0).await.unwrap_err();
    assert_eq!(code(&e), Code::NotFound, "{e}");
    let e = c
        .challenge(layout.stripe_id, 0, ChallengeNonce([0; 32]))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::NotFound, "{e}");

    // malformed requests
    let st = raw
        .get_shard(rpc::pb::GetShardRequest {
            stripe_id: vec![0; 31],
            shard_index: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    let st = raw
        .get_shard(rpc::pb::GetShardRequest {
            stripe_id: vec![0; 32],
            shard_index: 70_000,
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    c.put_shard(&shards[1]).await.unwrap();
    let st = raw
        .challenge(rpc::pb::ChallengeRequest {
            stripe_id: layout.stripe_id.as_bytes().to_vec(),
            shard_index: 1,
            nonce: vec![0; 5],
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);

    // a different, self-consistent shard under a held key: AlreadyExists
    let mut forged = shards[1].clone();
    forged.data[0] ^= 1;
    forged.header.shard_hash = dag_core::ShardHash(dag_core::Hash32::digest(&forged.data));
    let e = c.put_shard(&forged).await.unwrap_err();
    assert_eq!(code(&e), Code::AlreadyExists, "{e}");
    assert_eq!(c.get_shard(layout.stripe_id, 1).await.unwrap(), shards[1]);
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_and_corrupt_on_disk() {
    let (_, shards) = stripe(10_000);
    let quota = (shards[0].encoded_len() * 2) as u64;
    let (h, _dir, c) = light(quota).await;
    c.put_shard(&shards[0]).await.unwrap();
    c.put_shard(&shards[1]).await.unwrap();
    let e = c.put_shard(&shards[2]).await.unwrap_err();
    assert_eq!(code(&e), Code::ResourceExhausted, "{e}");
    let sid: StripeId = shards[0].stripe_id();
    assert_eq!(h.node().store().list_shards(&sid).unwrap(), vec![0, 1]);

    // corrupt shard 1 on disk: never returned, challenge refused
    h.node()
        .store()
        .corrupt_for_test(&sid, 1, |b| *b.last_mut().unwrap() ^= 0xff)
        .unwrap();
    let e = c.get_shard(sid, 1).await.unwrap_err();
    assert_eq!(code(&e), Code::DataLoss, "{e}");
    let e = c
        .challenge(sid, 1, ChallengeNonce([1; 32]))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::DataLoss, "{e}");
    // the good shard is still served
    assert_eq!(c.get_shard(sid, 0).await.unwrap(), shards[0]);
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_from_another_node_is_rejected_and_killed_node_is_unreachable() {
    let (a, _da, ca) = light(1 << 30).await;
    let (b, _db, _cb) = light(1 << 30).await;
    let (layout, shards) = stripe(5_000);
    // shard sent to B, but A's receipt comes back (a forged or misrouted answer)
    let from_a: SignedReceipt = ca.put_shard(&shards[0]).await.unwrap().receipt;
    assert!(verify_receipt_from(&layout, from_a.clone(), &b.node().node_id(), &MlDsa87).is_err());
    // A's receipt relabelled as B's: the key no longer matches the holder
    let mut relabelled = from_a;
    relabelled.receipt.holder = b.node().node_id();
    assert!(verify_receipt_from(&layout, relabelled, &b.node().node_id(), &MlDsa87).is_err());

    let a_addr = a.addr();
    a.kill().await;
    // the connection is torn down mid-life: the call fails (h2 error or unavailable)
    assert!(ca.put_shard(&shards[1]).await.is_err());
    assert!(
        ShardStoreClient::connect(&a_addr.to_string())
            .await
            .is_err()
    );
    b.shutdown().await.unwrap();
}

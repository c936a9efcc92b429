//! Submit, read back, every bad input, streams, and restart on the same data dir.

use dag_core::{AccountId, CityId, Position, PositionMethod, SignedTx, Signer, Tx};
use futures::StreamExt;
use node::{CityConfig, CityHandle, start_city};
use pqc::{Keypair, sign_tx};
use rpc::{CityClient, ClientError, RejectCode, TxState, pb};
use std::sync::LazyLock;
use tonic::Code;

static ALICE: LazyLock<Keypair> = LazyLock::new(Keypair::generate);
static BOB: LazyLock<Keypair> = LazyLock::new(Keypair::generate);

fn tx(from: &Keypair, nonce: u64) -> Tx {
    Tx::fresh(
        from.account_id(),
        AccountId::from_bytes([7; 32]),
        100,
        nonce,
        1_767_225_600_000,
        CityId::new("JP-13").unwrap(),
        Position::from_degrees(35.6895, 139.6917).unwrap(),
        PositionMethod::Gps,
    )
}

struct Node {
    handle: CityHandle,
    client: CityClient,
    key: Keypair,
    cfg: CityConfig,
    _dir: Option<tempfile::TempDir>,
}

async fn start_in(dir: &std::path::Path, key: &Keypair) -> (CityHandle, CityClient, CityConfig) {
    let cfg = CityConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        verify_threads: 2,
        // Plaintext links, chosen explicitly (the default is TLS).
        links: rpc::tls::LinkSecurity::Insecure,
        ..CityConfig::default()
    };
    let handle = start_city(&cfg, key).await.unwrap();
    let client = CityClient::connect(&handle.addr().to_string())
        .await
        .unwrap();
    (handle, client, cfg)
}

async fn start() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::generate();
    let (handle, client, cfg) = start_in(dir.path(), &key).await;
    Node {
        handle,
        client,
        key,
        cfg,
        _dir: Some(dir),
    }
}

fn rejected(r: Result<rpc::Submitted, ClientError>) -> rpc::Rejection {
    match r {
        Err(ClientError::Rejected(rej)) => rej,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn submit_and_read_back() {
    let n = start().await;
    let signed = sign_tx(tx(&ALICE, 1), &*ALICE);
    let s = n.client.submit(&signed).await.unwrap();
    assert_eq!(s.tx_id, signed.id());
    assert_eq!(s.state, TxState::Admitted);
    let rec = n.client.get(signed.id()).await.unwrap().unwrap();
    assert_eq!(rec.tx, Some(signed));
    assert!(rec.tx.clone().unwrap().verify(&pqc::MlDsa87).is_ok());
    assert!(n.client.get(tx(&BOB, 9).id()).await.unwrap().is_none());
    let st = n.client.status().await.unwrap();
    assert_eq!(st.stored_txs, 1);
    assert_eq!(st.node_id, n.key.node_id());
    n.handle.shutdown().await.unwrap();
}

/// Every bad input: the right code, a precise message, and nothing stored.
#[tokio::test]
async fn bad_inputs_are_rejected_and_store_nothing() {
    let n = start().await;
    let good = sign_tx(tx(&ALICE, 1), &*ALICE);
    n.client.submit(&good).await.unwrap();

    let check = |r: rpc::Rejection, code: RejectCode, needle: &str| {
        assert_eq!(r.code, code, "{r}");
        assert!(
            r.message.contains(needle),
            "message {:?} lacks {needle:?}",
            r.message
        );
    };

    let mut t = sign_tx(tx(&ALICE, 2), &*ALICE);
    t.signature[10] ^= 1;
    check(
        rejected(n.client.submit(&t).await),
        RejectCode::BadSignature,
        "does not verify",
    );

    let mut t = sign_tx(tx(&ALICE, 3), &*BOB);
    t.public_key = ALICE.public_key().to_vec();
    check(
        rejected(n.client.submit(&t).await),
        RejectCode::BadSignature,
        "does not verify",
    );

    let t = sign_tx(tx(&ALICE, 4), &*BOB);
    check(
        rejected(n.client.submit(&t).await),
        RejectCode::KeyMismatch,
        "hashes to",
    );

    let mut t = sign_tx(tx(&ALICE, 5), &*ALICE);
    t.signature.truncate(4000);
    check(
        rejected(n.client.submit(&t).await),
        RejectCode::BadSignature,
        "expected 4627 bytes",
    );

    let mut t = sign_tx(tx(&ALICE, 6), &*ALICE);
    t.public_key.truncate(100);
    // A short key hashes to another account: caught before the signature is even tried.
    check(
        rejected(n.client.submit(&t).await),
        RejectCode::KeyMismatch,
        "hashes to",
    );

    // A resubmission answers the tx's current state instead of a refusal.
    let again = n.client.submit(&good).await.unwrap();
    assert_eq!((again.tx_id, again.state), (good.id(), TxState::Admitted));

    let mut body = tx(&ALICE, 1);
    body.amount = 5;
    let t = sign_tx(body, &*ALICE);
    check(
        rejected(n.client.submit(&t).await),
        RejectCode::NonceReused,
        "reuses the (sender, nonce)",
    );

    let t = sign_tx(tx(&ALICE, 7).with_payload(vec![1; 64 * 1024 + 1]), &*ALICE);
    check(
        rejected(n.client.submit(&t).await),
        RejectCode::TooLarge,
        "payload",
    );

    let mut p: pb::SignedTx = (&sign_tx(tx(&ALICE, 8), &*ALICE)).into();
    p.tx.as_mut().unwrap().kind = 99;
    check(
        rejected(
            n.client
                .submit_raw(pb::SubmitTxRequest { tx: Some(p) })
                .await,
        ),
        RejectCode::Malformed,
        "unknown tx kind 99",
    );
    check(
        rejected(n.client.submit_raw(pb::SubmitTxRequest { tx: None }).await),
        RejectCode::Malformed,
        "missing field tx",
    );

    // The mapped gRPC codes, seen by a plain tonic client.
    let mut raw = pb::city_node_service_client::CityNodeServiceClient::connect(format!(
        "http://{}",
        n.handle.addr()
    ))
    .await
    .unwrap();
    let code =
        |r: Result<tonic::Response<pb::SubmitTxResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(raw.submit_tx(pb::SubmitTxRequest { tx: None }).await),
        Code::InvalidArgument
    );
    let mut reused = good.tx.clone();
    reused.amount += 2;
    assert_eq!(
        code(
            raw.submit_tx(pb::SubmitTxRequest {
                tx: Some((&sign_tx(reused, &*ALICE)).into())
            })
            .await
        ),
        Code::AlreadyExists
    );
    // The refusal's details carry a google.rpc.ErrorInfo beside the message prefix.
    let mut reused = good.tx.clone();
    reused.amount += 3;
    let reused = sign_tx(reused, &*ALICE);
    let status = raw
        .submit_tx(pb::SubmitTxRequest {
            tx: Some((&reused).into()),
        })
        .await
        .unwrap_err();
    assert!(status.message().starts_with("NONCE_REUSED: "), "{status:?}");
    let info = rpc::error_info(&status).expect("ErrorInfo in the status details");
    assert_eq!(info.reason, "NONCE_REUSED");
    assert_eq!(info.domain, rpc::ERROR_DOMAIN);
    assert_eq!(info.metadata.get("tx_id"), Some(&reused.id().to_hex()));
    let status = raw
        .submit_tx(pb::SubmitTxRequest { tx: None })
        .await
        .unwrap_err();
    assert_eq!(rpc::error_info(&status).unwrap().reason, "MALFORMED");

    let mut t = sign_tx(tx(&ALICE, 10), &*ALICE);
    t.signature[0] ^= 1;
    assert_eq!(
        code(
            raw.submit_tx(pb::SubmitTxRequest {
                tx: Some((&t).into())
            })
            .await
        ),
        Code::Unauthenticated
    );
    let big = sign_tx(tx(&ALICE, 11).with_payload(vec![0; 70_000]), &*ALICE);
    assert_eq!(
        code(
            raw.submit_tx(pb::SubmitTxRequest {
                tx: Some((&big).into())
            })
            .await
        ),
        Code::ResourceExhausted
    );

    // Undecodable protobuf bytes.
    let status = send_raw_bytes(&n, vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("MALFORMED"), "{status:?}");

    // A message over the gRPC size limit.
    let status = send_raw_bytes(&n, vec![0u8; rpc::MAX_MESSAGE_BYTES + 1]).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    let st = n.client.status().await.unwrap();
    assert_eq!(st.stored_txs, 1, "a rejected tx was stored");
    let rejected_total: u64 = st
        .counters
        .iter()
        .filter(|(k, _)| k.starts_with("rejected."))
        .map(|(_, v)| v)
        .sum();
    assert!(rejected_total >= 13, "counters: {:?}", st.counters);
    assert!(
        st.counters.contains(&("stage.resubmitted".to_string(), 1)),
        "the resubmission is counted as such, not as a rejection: {:?}",
        st.counters
    );
    n.handle.shutdown().await.unwrap();
}

/// Sends arbitrary bytes as the body of a SubmitTx call.
async fn send_raw_bytes(n: &Node, bytes: Vec<u8>) -> tonic::Status {
    #[derive(Default, Clone)]
    struct RawCodec;
    struct RawEncoder;
    impl tonic::codec::Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: Vec<u8>,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            use bytes::BufMut;
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl tonic::codec::Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = pb::SubmitTxResponse;
        type Encoder = RawEncoder;
        type Decoder = tonic_prost::ProstDecoder<pb::SubmitTxResponse>;
        fn encoder(&mut self) -> Self::Encoder {
            RawEncoder
        }
        fn decoder(&mut self) -> Self::Decoder {
            tonic_prost::ProstDecoder::default()
        }
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", n.handle.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/citychain.v1.CityNodeService/SubmitTx",
    );
    grpc.unary(tonic::Request::new(bytes), path, RawCodec)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn stream_answers_every_item_with_its_index() {
    let n = start().await;
    let mut txs: Vec<SignedTx> = (0..40).map(|i| sign_tx(tx(&BOB, 100 + i), &*BOB)).collect();
    txs[5].signature[0] ^= 1; // bad signature
    txs[9] = txs[8].clone(); // duplicate within the stream
    let mut out = n
        .client
        .submit_stream(futures::stream::iter(txs.clone()))
        .await
        .unwrap();
    let mut seen: Vec<Option<Result<rpc::Submitted, ClientError>>> =
        (0..txs.len()).map(|_| None).collect();
    while let Some((i, r)) = out.next().await {
        seen[i as usize] = Some(r);
    }
    let mut admitted = 0;
    for (i, r) in seen.into_iter().enumerate() {
        match r.expect("every index answered") {
            Ok(s) => {
                assert_eq!(s.tx_id, txs[i].id());
                admitted += 1;
            }
            Err(ClientError::Rejected(rej)) if i == 5 => {
                assert_eq!(rej.code, RejectCode::BadSignature)
            }
            Err(e) => panic!("tx {i}: {e}"),
        }
    }
    // The duplicate within the stream is answered with the tx's state, like the original.
    assert_eq!(admitted, 39);
    assert_eq!(n.client.status().await.unwrap().stored_txs, 38);
    n.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn restart_keeps_admitted_txs_and_replay_protection() {
    let mut n = start().await;
    let txs: Vec<SignedTx> = (0..20)
        .map(|i| sign_tx(tx(&ALICE, 500 + i), &*ALICE))
        .collect();
    for t in &txs {
        n.client.submit(t).await.unwrap();
    }
    let dir = n._dir.take().unwrap();
    let Node {
        handle,
        client,
        key,
        cfg,
        ..
    } = n;
    drop(client);
    handle.shutdown().await.unwrap();

    let (handle, client, _) = start_in(&cfg.data_dir, &key).await;
    for t in &txs {
        let rec = client
            .get(t.id())
            .await
            .unwrap()
            .expect("admitted tx survives restart");
        assert_eq!(rec.tx.as_ref(), Some(t));
    }
    // Resubmitted after the restart: its state, and it is not stored twice.
    let again = client.submit(&txs[3]).await.unwrap();
    assert_eq!((again.tx_id, again.state), (txs[3].id(), TxState::Admitted));
    let mut reused = txs[3].tx.clone();
    reused.amount += 1;
    assert_eq!(
        rejected(client.submit(&sign_tx(reused, &*ALICE)).await).code,
        RejectCode::NonceReused
    );
    assert_eq!(client.status().await.unwrap().stored_txs, 20);
    handle.shutdown().await.unwrap();
    drop(dir);
}

#[tokio::test]
async fn health_service_reports_serving() {
    let n = start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", n.handle.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: "citychain.v1.CityNodeService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    n.handle.shutdown().await.unwrap();
}

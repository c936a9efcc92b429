//! Staking requests (system txs) at admission: a well-formed one is admitted even where
//! proof of place rejects positions outside the city (it claims none); a malformed payload,
//! a wrong envelope or forged evidence inside is a typed `MALFORMED` rejection that stores
//! nothing.

use dag_core::{CityId, Hash32, Signer};
use dpos::{DoubleSignEvidence, SignedHeaderDigest, SlashLevel, SystemPayload};
use node::{CityConfig, CityParts, PopCheck, PopMode, start_city_with};
use pqc::{Keypair, sign_tx};
use rpc::{CityClient, ClientError, RejectCode, TxState};
use std::sync::Arc;

fn city() -> CityId {
    CityId::new("JP-13").unwrap()
}

#[tokio::test]
async fn system_txs_are_checked_at_admission_and_skip_proof_of_place() {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::generate();
    let cfg = CityConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        verify_threads: 2,
        // Plaintext links, chosen explicitly (the default is TLS).
        links: rpc::tls::LinkSecurity::Insecure,
        ..CityConfig::default()
    };
    let index = pop_geo::shipped::japan().unwrap();
    let parts = CityParts {
        storage: None,
        pop: Some(PopCheck {
            index: Arc::new(pop_geo::CachedIndex::new(
                Arc::new(index),
                Default::default(),
            )),
            mode: PopMode::Reject,
        }),
        flagger: None,
        committee: None,
        ..CityParts::default()
    };
    let handle = start_city_with(&cfg, &key, parts).await.unwrap();
    let client = CityClient::connect(&handle.addr().to_string())
        .await
        .unwrap();
    let user = Keypair::generate();
    let rejected = |r: Result<rpc::Submitted, ClientError>| match r {
        Err(ClientError::Rejected(rej)) => rej,
        other => panic!("expected a rejection, got {other:?}"),
    };

    // A delegation at the default position (0, 0), far outside JP-13: admitted.
    let ok = dpos::sign_system_tx(
        &SystemPayload::Delegate {
            validator: key.account_id(),
            amount: 5,
        },
        0,
        1,
        city(),
        &user,
    );
    let s = client.submit(&ok).await.unwrap();
    assert_eq!(s.state, TxState::Admitted);

    // The same position on a transfer is still refused by proof of place.
    let fresh = sign_tx(
        dpos::system_tx(
            &SystemPayload::ClaimRewards,
            user.account_id(),
            1,
            1,
            city(),
        )
        .with_kind(dag_core::TxKind::FreshTx)
        .with_payload(Vec::new()),
        &user,
    );
    assert_eq!(
        rejected(client.submit(&fresh).await).code,
        RejectCode::OutsideCity
    );

    // Garbage payload.
    let bad_payload = sign_tx(
        dpos::system_tx(
            &SystemPayload::ClaimRewards,
            user.account_id(),
            2,
            1,
            city(),
        )
        .with_payload(vec![0xee; 9]),
        &user,
    );
    // A non-zero envelope amount.
    let mut body = dpos::system_tx(
        &SystemPayload::ClaimRewards,
        user.account_id(),
        3,
        1,
        city(),
    );
    body.amount = 7;
    let bad_envelope = sign_tx(body, &user);
    // Evidence against an honest node whose second signature is forged.
    let honest = SignedHeaderDigest::sign(SlashLevel::City, 4, Hash32([1; 32]), &key);
    let forged = DoubleSignEvidence::new(
        SlashLevel::City,
        honest.clone(),
        SignedHeaderDigest {
            digest: Hash32([2; 32]),
            ..honest
        },
    )
    .unwrap();
    let bad_evidence =
        dpos::sign_system_tx(&SystemPayload::DoubleSign(forged), 4, 1, city(), &user);
    for (t, needle) in [
        (&bad_payload, "system tx: malformed"),
        (&bad_envelope, "envelope amount"),
        (&bad_evidence, "double-sign evidence header"),
    ] {
        let r = rejected(client.submit(t).await);
        assert_eq!(r.code, RejectCode::Malformed, "{r}");
        assert!(
            r.message.contains(needle),
            "{:?} lacks {needle:?}",
            r.message
        );
        assert!(
            client.get(t.id()).await.unwrap().is_none(),
            "nothing stored"
        );
    }
    assert_eq!(user.public_key().len(), pqc::PUBLIC_KEY_LEN);
    handle.shutdown().await.unwrap();
}

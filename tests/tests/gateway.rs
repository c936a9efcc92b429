//! The DApp HTTP gateway of a devnet representative over real sockets: a tx submitted over
//! HTTP and one over gRPC read back on both; a server-sent-events subscriber sees its tx go
//! admitted → held → ordered → federated in order and can resume with `Last-Event-ID`;
//! a repair request completes with its events; bad input gets JSON errors with the right
//! status; the OpenAPI document names every route; the stake reads (`/v1/committee`,
//! `/v1/accounts/{id}/stake`) answer what gRPC answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dag_core::{AccountId, CityId, Position, PositionMethod, SignedTx, Tx, TxId};
use devnet::{CITY, CITY_POS, Devnet, DevnetConfig};
use futures::StreamExt;
use gateway::json::JsonSignedTx;
use pqc::{Keypair, sign_tx};
use rpc::{CityClient, TxState};
use std::time::Duration;

fn tx(user: &Keypair, nonce: u64) -> SignedTx {
    let t = Tx::fresh(
        user.account_id(),
        AccountId::from_bytes([7; 32]),
        10 + nonce,
        nonce,
        1_700_000_000_000 + nonce,
        CityId::new(CITY).unwrap(),
        Position::from_degrees(CITY_POS.0, CITY_POS.1).unwrap(),
        PositionMethod::Gps,
    );
    sign_tx(t, user)
}

/// Reads server-sent events from `url` until one of kind `until` arrives; returns every
/// (id, kind) seen, in order.
async fn sse_until(
    http: &reqwest::Client,
    url: &str,
    last_event_id: Option<u64>,
    until: &str,
) -> Vec<(u64, String)> {
    let mut req = http.get(url);
    if let Some(l) = last_event_id {
        req = req.header("Last-Event-ID", l.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events kept coming")
            .expect("stream open")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut kind = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                }
                if let Some(v) = line.strip_prefix("event:") {
                    kind = Some(v.trim().to_string());
                }
            }
            if let (Some(id), Some(kind)) = (id, kind) {
                let done = kind == until;
                seen.push((id, kind));
                if done {
                    return seen;
                }
            }
        }
    }
}

async fn wait_state(
    http: &reqwest::Client,
    base: &str,
    id: TxId,
    state: &str,
) -> serde_json::Value {
    for _ in 0..400 {
        let r = http
            .get(format!("{base}/v1/txs/{id}"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let v: serde_json::Value = r.json().await.unwrap();
            if v["state"] == state {
                return v;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("tx {id} never reached {state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_over_a_devnet() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DevnetConfig {
        lights: 6,
        // Short fixed proposal interval: ordering is awaited (default: dynamic 0.5–5 s).
        batch_interval_ms: Some(50),
        ..DevnetConfig::default()
    };
    let net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);
    let base = format!("http://{}", net.gateway_addr(0).expect("gateway on"));
    let http = reqwest::Client::new();
    let grpc = CityClient::connect(&net.city().addr().to_string())
        .await
        .unwrap();
    let user = Keypair::generate();

    // Subscribe before submitting: the subscriber sees the whole life of its tx, live.
    let by_http = tx(&user, 0);
    let id_http = by_http.id();
    let events_url = format!("{base}/v1/events?tx={id_http}");
    let sub = {
        let http = http.clone();
        let url = events_url.clone();
        tokio::spawn(async move { sse_until(&http, &url, None, "federated").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Submit over HTTP: Held with one receipt per shard.
    let r = http
        .post(format!("{base}/v1/txs"))
        .json(&JsonSignedTx::from(&by_http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tx_id"], id_http.to_hex());
    assert_eq!(v["state"], "held");
    assert_eq!(v["receipts"].as_array().unwrap().len(), 6);

    // Submit over gRPC.
    let by_grpc = tx(&user, 1);
    let id_grpc = by_grpc.id();
    let s = grpc.submit(&by_grpc).await.unwrap();
    assert_eq!(s.state, TxState::Held);

    // Read both back on both.
    for id in [id_http, id_grpc] {
        let rec = grpc.get(id).await.unwrap().expect("known over gRPC");
        assert_eq!(rec.tx.as_ref().map(SignedTx::id), Some(id));
        let v = wait_state(&http, &base, id, "federated").await;
        assert_eq!(v["tx_id"], id.to_hex());
        assert!(v["ordering"]["sequence"].is_u64());
        assert!(v["proof"].as_str().is_some_and(|p| !p.is_empty()));
        let back: JsonSignedTx = serde_json::from_value(v["tx"].clone()).unwrap();
        assert_eq!(back.to_signed().unwrap().id(), id);
    }

    // The live subscriber saw admitted → held → ordered → federated, in that order.
    let seen = sub.await.unwrap();
    let kinds: Vec<&str> = seen.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["admitted", "held", "ordered", "federated"],
        "{seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "ids increase");

    // Stake reads: the committee and a member's stake over HTTP, equal to gRPC's answers
    // (retried while a checkpoint moves `dpos_applied_upto` between the two reads).
    let rep = net.rep_key(0).unwrap().account_id();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let over_http: gateway::stake::StakeAnswer = http
            .get(format!("{base}/v1/accounts/{rep}/stake"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let over_grpc = gateway::stake::StakeAnswer::from(&grpc.stake(rep).await.unwrap());
        if over_http == over_grpc {
            let node = over_http
                .node
                .as_ref()
                .expect("the genesis member is a node");
            assert_eq!(node.kind, "full");
            assert!(node.representative && node.active);
            assert!(over_http.bonded > 0 && over_http.bonded == node.stake);
            assert_eq!(over_http.delegations.len(), 1, "its self-bond");
            assert_eq!(over_http.delegations[0].validator, rep.to_hex());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{over_http:?}");
    }
    let c: gateway::stake::CommitteeAnswer = http
        .get(format!("{base}/v1/committee"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c.epoch, 0);
    let ids: Vec<&str> = c.members.iter().map(|m| m.node_id.as_str()).collect();
    assert_eq!(ids, vec![net.rep_key(0).unwrap().node_id().to_hex()]);
    assert_eq!(
        c.members[0].dpos_stake,
        grpc.stake(rep).await.unwrap().bonded
    );
    let term = c.dpos.expect("dpos started: txs were committed");
    assert_eq!(term.next.len(), 1);
    assert!(!term.next_elected);

    // Resume after the first event: the rest comes from the bounded history.
    let resumed = sse_until(&http, &events_url, Some(seen[0].0), "federated").await;
    assert_eq!(resumed, seen[1..].to_vec());
    // Filtered by account: both txs of the user.
    let acc = sse_until(
        &http,
        &format!("{base}/v1/events?account={}", user.account_id()),
        Some(0),
        "held",
    )
    .await;
    assert_eq!(acc.first().map(|(_, k)| k.as_str()), Some("admitted"));

    // A repair request: 202 with a request id, then completed from the fastest tier.
    let r = http
        .post(format!("{base}/v1/repair_requests"))
        .json(&serde_json::json!({ "tx_id": id_grpc.to_hex() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t: serde_json::Value = r.json().await.unwrap();
    let n = t["request_id"].as_u64().unwrap();
    let mut done = serde_json::Value::Null;
    for _ in 0..100 {
        done = http
            .get(format!("{base}/v1/repair_requests/{n}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["tier"], "local_store");
    let rep = sse_until(
        &http,
        &format!("{base}/v1/events?tx={id_grpc}"),
        Some(0),
        "repair_completed",
    )
    .await;
    let rk: Vec<&str> = rep.iter().map(|(_, k)| k.as_str()).collect();
    assert!(
        rk.ends_with(&[
            "repair_requested",
            "repair_acknowledged",
            "repair_completed"
        ]),
        "{rk:?}"
    );

    // Bad input: JSON errors with the right status, nothing stored.
    let before = grpc.status().await.unwrap().stored_txs;
    let check = |status: u16, code: &'static str| {
        move |(s, v): (u16, serde_json::Value)| {
            assert_eq!(s, status, "{v}");
            assert_eq!(v["code"], code, "{v}");
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    };
    let post = |path: &str, body: String| {
        let req = http
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    check(400, "MALFORMED")(post("/v1/txs", "{not json".into()).await);
    let mut short_sender = JsonSignedTx::from(&tx(&user, 2));
    short_sender.tx.sender.truncate(62);
    check(400, "MALFORMED")(post("/v1/txs", serde_json::to_string(&short_sender).unwrap()).await);
    let mut forged = JsonSignedTx::from(&tx(&user, 3));
    forged.tx.amount += 1;
    check(422, "BAD_SIGNATURE")(post("/v1/txs", serde_json::to_string(&forged).unwrap()).await);
    // A resubmission of an admitted tx answers its current state (not DUPLICATE_TX), over
    // HTTP and gRPC; another tx reusing its (sender, nonce) is still refused as a replay.
    let (s, again) = post(
        "/v1/txs",
        serde_json::to_string(&JsonSignedTx::from(&by_http)).unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["tx_id"], id_http.to_string(), "{again}");
    assert_eq!(again["state"], "federated", "{again}");
    let again = grpc.submit(&by_grpc).await.unwrap();
    assert_eq!(again.tx_id, by_grpc.id());
    assert!(
        matches!(
            again.state,
            TxState::Held | TxState::Ordered | TxState::Federated
        ),
        "{again:?}"
    );
    assert!(!again.receipts.is_empty(), "receipts come with the state");
    let mut same_nonce = by_http.tx.clone();
    same_nonce.amount += 1;
    let same_nonce = sign_tx(same_nonce, &user);
    check(409, "NONCE_REUSED")(
        post(
            "/v1/txs",
            serde_json::to_string(&JsonSignedTx::from(&same_nonce)).unwrap(),
        )
        .await,
    );
    match grpc.submit(&same_nonce).await {
        Err(rpc::ClientError::Rejected(r)) => assert_eq!(r.code, rpc::RejectCode::NonceReused),
        other => panic!("a nonce replay over gRPC was not refused: {other:?}"),
    }
    check(413, "TOO_LARGE")(post("/v1/txs", format!("\"{}\"", "a".repeat(300 * 1024))).await);
    check(404, "NOT_FOUND")(
        post(
            "/v1/repair_requests",
            format!("{{\"tx_id\":\"{}\"}}", "ab".repeat(32)),
        )
        .await,
    );
    let r = http
        .get(format!("{base}/v1/txs/{}", "cd".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(format!("{base}/v1/txs/xyz")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        grpc.status().await.unwrap().stored_txs,
        before,
        "nothing stored"
    );

    // Nodes, stripes, health, metrics.
    let nodes: serde_json::Value = http
        .get(format!("{base}/v1/nodes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nodes["lights"].as_array().unwrap().len(), 6);
    assert_eq!(nodes["committee"].as_array().unwrap().len(), 1);
    let stripe = v["receipts"][0]["stripe_id"].as_str().unwrap();
    let st: serde_json::Value = http
        .get(format!("{base}/v1/stripes/{stripe}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["holders"].as_array().unwrap().len(), 6);
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        // The first submission and its resubmission.
        metrics.contains("citychain_gateway_requests_total{route=\"/v1/txs\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("citychain_repair_tier_seconds{tier=\"local_store\""),
        "{metrics}"
    );
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("citychain_repair_tier_seconds"))
    {
        println!("{l}");
    }

    // The OpenAPI document parses and names every route the router serves.
    let doc: serde_json::Value = http
        .get(format!("{base}/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/v1/txs", "post"),
        ("/v1/txs/{id}", "get"),
        ("/v1/repair_requests", "post"),
        ("/v1/repair_requests/{id}", "get"),
        ("/v1/events", "get"),
        ("/v1/nodes", "get"),
        ("/v1/stripes/{id}", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    net.shutdown().await.unwrap();
}

/// Waits for repair request `n` on `base` to leave `running`.
async fn repair_outcome(http: &reqwest::Client, base: &str, n: u64) -> serde_json::Value {
    for _ in 0..300 {
        let v: serde_json::Value = http
            .get(format!("{base}/v1/repair_requests/{n}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["state"] != "running" {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("repair {n} still running");
}

/// A representative that only knows a tx from its committee's order repairs it from
/// another representative (the `peers` tier); once that one is gone, no tier can serve it
/// and the request ends `failed` with every tier's reason, with a `repair_failed` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_from_a_peer_then_failed_when_nobody_can_serve() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DevnetConfig {
        lights: 6,
        reps: 4,
        // Short fixed proposal interval: ordering is awaited (default: dynamic 0.5–5 s).
        batch_interval_ms: Some(50),
        ..DevnetConfig::default()
    };
    let mut net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);
    let http = reqwest::Client::new();
    let base0 = format!("http://{}", net.gateway_addr(0).unwrap());
    let base1 = format!("http://{}", net.gateway_addr(1).unwrap());
    let user = Keypair::generate();
    let t = tx(&user, 0);
    let id = t.id();
    let r = http
        .post(format!("{base0}/v1/txs"))
        .json(&JsonSignedTx::from(&t))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Representative 1 knows it from the order only.
    let v = wait_state(&http, &base1, id, "federated").await;
    assert!(v["tx"].is_null(), "rep 1 does not hold the body: {v}");
    let start = |base: String| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("{base}/v1/repair_requests"))
                .json(&serde_json::json!({ "tx_id": id.to_hex() }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<serde_json::Value>().await.unwrap()["request_id"]
                .as_u64()
                .unwrap()
        }
    };
    let n = start(base1.clone()).await;
    let done = repair_outcome(&http, &base1, n).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["tier"], "peers");

    // The only holder of the body is gone: every tier misses, the request fails.
    net.kill_rep(0).await;
    let n = start(base1.clone()).await;
    let failed = repair_outcome(&http, &base1, n).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let reason = failed["reason"].as_str().unwrap();
    for tier in [
        "local_store",
        "light_nodes",
        "archive",
        "peers",
        "continent",
    ] {
        assert!(reason.contains(tier), "{reason}");
    }
    // The continent answers what it can: the tx provably existed, its body is lost.
    assert!(
        reason.contains("continent: the continent keeps hashes only: its proof"),
        "{reason}"
    );
    assert!(reason.contains("included at checkpoint"), "{reason}");
    let seen = sse_until(
        &http,
        &format!("{base1}/v1/events?tx={id}"),
        Some(0),
        "repair_failed",
    )
    .await;
    let kinds: Vec<&str> = seen.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"repair_failed"));
    assert!(kinds.contains(&"repair_completed"));
    net.shutdown().await.unwrap();
}

//! The gateway over real loopback sockets against a small in-memory backend: per-IP rate
//! limit (429 + Retry-After), CORS, bounded bodies, SSE resume and gaps, the subscriber
//! bound, and the OpenAPI document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use dag_core::{AccountId, NodeId, SignedTx, StripeId, TxId};
use futures::StreamExt;
use gateway::{
    EventKind, Gateway, GatewayBackend, GatewayConfig, GatewayEvent, NodesView, RepairRefused,
    RepairState, RepairTicket, Subscription,
};
use parking_lot::Mutex;
use rpc::{RejectCode, Rejection, StripeInfo, Submitted, TxRecord, TxState};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Admits txs whose signature verifies, remembers them, publishes an event per admission.
struct Memory {
    txs: Mutex<HashMap<TxId, SignedTx>>,
    history: Mutex<Vec<Arc<GatewayEvent>>>,
    live: broadcast::Sender<Arc<GatewayEvent>>,
    forget_before: u64,
    /// Balances of a ledger; `None`: a node without one.
    ledger: Option<HashMap<AccountId, u64>>,
    /// Cross-city records by tx.
    cross: Mutex<HashMap<TxId, rpc::CrossTx>>,
    /// The stake reads it answers; `None`: a node without dpos.
    staking: Option<(rpc::StakeInfo, rpc::CommitteeInfo)>,
}

impl Memory {
    fn new(forget_before: u64) -> Arc<Self> {
        Arc::new(Memory {
            txs: Mutex::default(),
            history: Mutex::default(),
            live: broadcast::channel(16).0,
            forget_before,
            ledger: None,
            cross: Mutex::default(),
            staking: None,
        })
    }

    fn with_staking(stake: rpc::StakeInfo, committee: rpc::CommitteeInfo) -> Arc<Self> {
        Arc::new(Memory {
            staking: Some((stake, committee)),
            ..Arc::into_inner(Memory::new(0)).unwrap()
        })
    }

    fn with_ledger(balances: HashMap<AccountId, u64>) -> Arc<Self> {
        Arc::new(Memory {
            ledger: Some(balances),
            ..Arc::into_inner(Memory::new(0)).unwrap()
        })
    }
}

#[async_trait]
impl GatewayBackend for Memory {
    async fn submit(&self, tx: SignedTx) -> Result<Submitted, Rejection> {
        let id = tx.id();
        tx.clone()
            .verify(&pqc::MlDsa87)
            .map_err(|e| Rejection::new(RejectCode::BadSignature, e.to_string(), Some(id)))?;
        if self.txs.lock().insert(id, tx.clone()).is_some() {
            return Err(Rejection::new(RejectCode::DuplicateTx, "again", Some(id)));
        }
        let mut h = self.history.lock();
        let e = Arc::new(GatewayEvent {
            id: h.len() as u64 + 1,
            kind: EventKind::Admitted,
            tx_id: id,
            accounts: vec![tx.tx.sender],
            at_ms: 0,
            detail: serde_json::Value::Null,
        });
        h.push(e.clone());
        let _ = self.live.send(e);
        Ok(Submitted {
            tx_id: id,
            state: TxState::Admitted,
            receipts: Default::default(),
        })
    }
    async fn get(&self, id: TxId) -> Result<Option<TxRecord>, Rejection> {
        Ok(self.txs.lock().get(&id).map(|t| TxRecord {
            tx: Some(t.clone()),
            state: TxState::Admitted,
            receipts: Vec::new(),
            source: "memory".into(),
            ordering: None,
            proof: None,
            cross: self.cross.lock().get(&id).cloned(),
        }))
    }
    /// A stored tx was executed Applied in checkpoint 4 (when there is a ledger).
    async fn execution(&self, id: TxId) -> Result<Option<rpc::TxExecution>, Rejection> {
        Ok(self
            .ledger
            .as_ref()
            .filter(|_| self.txs.lock().contains_key(&id))
            .map(|_| rpc::TxExecution {
                sequence: 4,
                outcome: rpc::ExecutionOutcome::Applied,
                detail: String::new(),
                state_root: Some(dag_core::Hash32([9; 32])),
            }))
    }
    async fn account(&self, account: AccountId) -> Result<rpc::AccountInfo, Rejection> {
        let Some(l) = &self.ledger else {
            return Err(Rejection::new(RejectCode::Unavailable, "no ledger", None));
        };
        let b = l.get(&account).copied();
        Ok(rpc::AccountInfo {
            account,
            exists: b.is_some(),
            balance: b.unwrap_or(0),
            nonce: u64::from(b.is_some()),
            version: u64::from(b.is_some()),
            executed_checkpoints: 5,
        })
    }
    async fn request_repair(&self, id: TxId) -> Result<RepairTicket, RepairRefused> {
        if self.txs.lock().contains_key(&id) {
            Ok(RepairTicket {
                request_id: 1,
                tx_id: id,
                state: RepairState::Running,
            })
        } else {
            Err(RepairRefused::UnknownTx(id))
        }
    }
    fn repair_status(&self, _n: u64) -> Option<RepairTicket> {
        None
    }
    fn subscribe(&self, after: Option<u64>) -> Subscription {
        let h = self.history.lock();
        let live = self.live.subscribe();
        let after = after.unwrap_or(u64::MAX);
        Subscription {
            backlog: h
                .iter()
                .filter(|e| e.id > after && e.id >= self.forget_before)
                .cloned()
                .collect(),
            live,
            gap: after != u64::MAX && after + 1 < self.forget_before,
        }
    }
    async fn nodes(&self) -> NodesView {
        NodesView {
            this_node: NodeId::from_bytes([1; 32]),
            city: "JP-13".into(),
            lights: Vec::new(),
            committee: Vec::new(),
        }
    }
    async fn stripe(&self, _id: StripeId) -> Result<Option<StripeInfo>, Rejection> {
        Ok(None)
    }
    async fn stake(&self, account: AccountId) -> Result<rpc::StakeInfo, rpc::StakeReadError> {
        let (s, _) = self
            .staking
            .as_ref()
            .ok_or(rpc::StakeReadError::NotRepresentative)?;
        if account == s.account {
            Ok(s.clone())
        } else {
            Ok(rpc::StakeInfo {
                account,
                exists: false,
                balance: 0,
                bonded: 0,
                delegations: Vec::new(),
                unbonding: Vec::new(),
                rewards: 0,
                node: None,
                ..s.clone()
            })
        }
    }
    async fn committee(&self) -> Result<rpc::CommitteeInfo, rpc::StakeReadError> {
        self.staking
            .as_ref()
            .map(|(_, c)| c.clone())
            .ok_or(rpc::StakeReadError::NotRepresentative)
    }
}

fn signed(nonce: u64) -> SignedTx {
    let kp = pqc::Keypair::generate();
    let tx = dag_core::Tx::fresh(
        kp.account_id(),
        AccountId::from_bytes([2; 32]),
        1,
        nonce,
        1,
        dag_core::CityId::new("JP-13").unwrap(),
        dag_core::Position::default(),
        dag_core::PositionMethod::Gps,
    );
    pqc::sign_tx(tx, &kp)
}

async fn start(cfg: GatewayConfig, backend: Arc<Memory>) -> (gateway::GatewayHandle, String) {
    let cfg = GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..cfg
    };
    let h = Gateway::start(&cfg, backend, None).await.unwrap();
    let base = format!("http://{}", h.addr());
    (h, base)
}

#[tokio::test]
async fn per_ip_limit_answers_429_with_retry_after() {
    let cfg = GatewayConfig {
        rate_limit_per_second: 1,
        rate_limit_burst: 2,
        ..GatewayConfig::default()
    };
    let (h, base) = start(cfg, Memory::new(0)).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/txs/{}", "ab".repeat(32));
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "RATE_LIMITED");
    // Health stays reachable, the server stays up.
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let m = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("citychain_gateway_rate_limited_total 1"), "{m}");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let cfg = GatewayConfig {
        cors_origins: vec!["https://dapp.example".into()],
        ..GatewayConfig::default()
    };
    let (h, base) = start(cfg, Memory::new(0)).await;
    let http = reqwest::Client::new();
    let pre = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, format!("{base}/v1/txs"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let ok = pre("https://dapp.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://dapp.example"
    );
    let other = pre("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    h.shutdown().await.unwrap();
    let bad = GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cors_origins: vec!["bad\norigin".into()],
        ..GatewayConfig::default()
    };
    assert!(matches!(
        Gateway::start(&bad, Memory::new(0), None).await,
        Err(gateway::Error::BadCorsOrigin(_))
    ));
}

#[tokio::test]
async fn submit_bad_input_and_bounded_bodies() {
    let backend = Memory::new(0);
    let cfg = GatewayConfig {
        max_body_bytes: 40 * 1024,
        ..GatewayConfig::default()
    };
    let (h, base) = start(cfg, backend.clone()).await;
    let http = reqwest::Client::new();
    let tx = signed(1);
    let body = gateway::json::JsonSignedTx::from(&tx);
    let r = http
        .post(format!("{base}/v1/txs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "admitted, not held");
    let r = http
        .post(format!("{base}/v1/txs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let mut big = body.clone();
    big.tx.payload = "00".repeat(30 * 1024);
    let r = http
        .post(format!("{base}/v1/txs"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = http
        .post(format!("{base}/v1/txs"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "no JSON content type");
    let r = http
        .post(format!("{base}/v1/txs"))
        .header("content-type", "application/json")
        .body("{\"tx\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(backend.txs.lock().len(), 1, "nothing else stored");
    h.shutdown().await.unwrap();
}

async fn first_events(base: &str, q: &str, last: Option<&str>, n: usize) -> Vec<String> {
    let mut req = reqwest::Client::new().get(format!("{base}/v1/events{q}"));
    if let Some(l) = last {
        req = req.header("last-event-id", l);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut s = r.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let c = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&c));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(k) = frame.lines().find_map(|l| l.strip_prefix("event:")) {
                out.push(k.trim().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn events_resume_filter_and_report_gaps() {
    let backend = Memory::new(2); // event 1 has left the history
    let (h, base) = start(GatewayConfig::default(), backend.clone()).await;
    let http = reqwest::Client::new();
    let txs: Vec<SignedTx> = (0..3).map(signed).collect();
    for t in &txs {
        let r = http
            .post(format!("{base}/v1/txs"))
            .json(&gateway::json::JsonSignedTx::from(t))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    // Resume after 0: event 1 is gone, so a gap first, then 2 and 3.
    let got = first_events(&base, "", Some("0"), 3).await;
    assert_eq!(got, vec!["gap", "admitted", "admitted"]);
    // Filtered by tx: only that tx's event.
    let q = format!("?tx={}&last_event_id=2", txs[2].id());
    assert_eq!(first_events(&base, &q, None, 1).await, vec!["admitted"]);
    // Bad filters are 400s.
    for q in ["?tx=zz", "?account=12", "?nope=1"] {
        let r = http
            .get(format!("{base}/v1/events{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
    }
    let r = http
        .get(format!("{base}/v1/events"))
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn subscribers_are_bounded() {
    let cfg = GatewayConfig {
        max_event_subscribers: 1,
        ..GatewayConfig::default()
    };
    let (h, base) = start(cfg, Memory::new(0)).await;
    let http = reqwest::Client::new();
    let first = http.get(format!("{base}/v1/events")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = http.get(format!("{base}/v1/events")).send().await.unwrap();
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key("retry-after"));
    // A subscriber that goes away frees its slot without waiting for an event.
    drop(first);
    let mut freed = false;
    for _ in 0..100 {
        let r = http.get(format!("{base}/v1/events")).send().await.unwrap();
        if r.status() == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the slot of a gone subscriber was never freed");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn repair_requests_and_unknown_routes() {
    let backend = Memory::new(0);
    let (h, base) = start(GatewayConfig::default(), backend.clone()).await;
    let http = reqwest::Client::new();
    let t = signed(9);
    backend.submit(t.clone()).await.unwrap();
    let r = http
        .post(format!("{base}/v1/repair_requests"))
        .json(&serde_json::json!({ "tx_id": t.id().to_hex() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["location"], "/v1/repair_requests/1");
    let r = http
        .post(format!("{base}/v1/repair_requests"))
        .json(&serde_json::json!({ "tx_id": "00".repeat(32) }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .post(format!("{base}/v1/repair_requests"))
        .json(&serde_json::json!({ "tx_id": "00", "extra": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http.get(format!("{base}/v2/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "NOT_FOUND");
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("City Chain explorer"));
    h.shutdown().await.unwrap();
}

#[test]
fn openapi_names_every_route_and_schema() {
    use utoipa::OpenApi as _;
    let doc: serde_json::Value =
        serde_json::from_str(&gateway::ApiDoc::openapi().to_json().unwrap()).unwrap();
    for p in [
        "/v1/txs",
        "/v1/txs/{id}",
        "/v1/accounts/{id}",
        "/v1/accounts/{id}/stake",
        "/v1/committee",
        "/v1/repair_requests",
        "/v1/repair_requests/{id}",
        "/v1/events",
        "/v1/nodes",
        "/v1/stripes/{id}",
        "/healthz",
        "/metrics",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing");
    }
    for s in [
        "JsonSignedTx",
        "TxAnswer",
        "AccountAnswer",
        "StakeAnswer",
        "CommitteeAnswer",
        "JsonExecution",
        "JsonCross",
        "GatewayEvent",
        "ApiError",
        "RepairTicket",
    ] {
        assert!(doc["components"]["schemas"][s].is_object(), "{s} missing");
    }
}

#[tokio::test]
async fn accounts_and_a_txs_outcome_and_cross_state_are_read() {
    let alice = AccountId::from_bytes([7; 32]);
    let backend = Memory::with_ledger([(alice, 42)].into());
    let (h, base) = start(GatewayConfig::default(), backend.clone()).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move { http.get(path).send().await.unwrap() }
    };
    // An account with a balance, one never credited, a malformed id.
    let r = get(format!("{base}/v1/accounts/{}", alice.to_hex())).await;
    assert_eq!(r.status(), 200);
    let a: gateway::json::AccountAnswer = r.json().await.unwrap();
    assert_eq!(
        (
            a.account,
            a.exists,
            a.balance,
            a.nonce,
            a.executed_checkpoints
        ),
        (alice.to_hex(), true, 42, 1, 5)
    );
    let a: gateway::json::AccountAnswer = get(format!("{base}/v1/accounts/{}", "00".repeat(32)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((a.exists, a.balance, a.nonce), (false, 0, 0));
    let r = get(format!("{base}/v1/accounts/xyz")).await;
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "MALFORMED");

    // A tx: its execution outcome, and a cross-city record with its proofs (hex).
    let tx = signed(0);
    let r = http
        .post(format!("{base}/v1/txs"))
        .json(&gateway::json::JsonSignedTx::from(&tx))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    backend.cross.lock().insert(
        tx.id(),
        rpc::CrossTx {
            state: rpc::CrossState::Completed,
            from_city: "JP-13".into(),
            to_city: "JP-27".into(),
            statement: dag_core::Hash32([9; 32]),
            transfer_out_proof: Some(vec![1, 2]),
            answer_proof: None,
        },
    );
    let t: gateway::json::TxAnswer = get(format!("{base}/v1/txs/{}", tx.id().to_hex()))
        .await
        .json()
        .await
        .unwrap();
    let e = t.execution.unwrap();
    assert_eq!((e.sequence, e.outcome.as_str()), (4, "applied"));
    assert_eq!(e.state_root, Some("09".repeat(32)));
    let c = t.cross.unwrap();
    assert_eq!(
        (
            c.state.as_str(),
            c.to_city.as_str(),
            c.transfer_out_proof,
            c.answer_proof
        ),
        ("completed", "JP-27", Some("0102".to_string()), None)
    );
    assert_eq!(c.statement, "09".repeat(32));
    h.shutdown().await.unwrap();

    // A node without a ledger: 503 UNAVAILABLE, and a tx answer without an outcome.
    let (h, base) = start(GatewayConfig::default(), Memory::new(0)).await;
    let r = get(format!("{base}/v1/accounts/{}", alice.to_hex())).await;
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "UNAVAILABLE");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn stake_and_committee_are_read_as_json() {
    use rpc::{CommitteeInfo, CommitteeMemberInfo, DposTermInfo, StakeInfo};
    let alice = AccountId::from_bytes([7; 32]);
    let rep = AccountId::from_bytes([9; 32]);
    let stake = StakeInfo {
        account: alice,
        exists: true,
        balance: 10,
        bonded: 300,
        delegations: vec![rpc::StakeDelegation {
            validator: rep,
            amount: 300,
            lots: vec![rpc::StakeLot {
                amount: 300,
                unlock_at_ms: 55,
            }],
        }],
        unbonding: vec![rpc::StakeUnbonding {
            validator: rep,
            amount: 20,
            release_at_ms: 66,
        }],
        rewards: 4,
        node: Some(rpc::StakeNode {
            kind: rpc::StakeNodeKind::Light,
            stake: 0,
            suspicion: 0,
            active: true,
            registered_at_ms: 3,
            representative: false,
        }),
        term: 2,
        dpos_applied_upto: 12,
        dpos_state_root: dag_core::Hash32([0xab; 32]),
    };
    let member = CommitteeMemberInfo {
        node_id: NodeId::from_bytes([9; 32]),
        weight: 5,
        dpos_stake: 5_000_000,
        address: Some("127.0.0.1:7000".into()),
    };
    let committee = CommitteeInfo {
        epoch: 2,
        epoch_first_seq: 40,
        switching: false,
        removed: false,
        standby: false,
        committed: 45,
        members: vec![member.clone()],
        dpos: Some(DposTermInfo {
            term: 2,
            started_at_ms: 100,
            ends_at_ms: 8_100,
            next: vec![CommitteeMemberInfo {
                address: None,
                ..member
            }],
            next_elected: false,
            next_unreachable: Vec::new(),
            state_root: dag_core::Hash32([0xcd; 32]),
            applied_upto: 46,
        }),
    };
    let (h, base) = start(
        GatewayConfig::default(),
        Memory::with_staking(stake, committee),
    )
    .await;
    let http = reqwest::Client::new();
    let v: serde_json::Value = http
        .get(format!("{base}/v1/accounts/{}/stake", alice.to_hex()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "account": alice.to_hex(), "exists": true, "balance": 10, "bonded": 300,
            "delegations": [{"validator": rep.to_hex(), "amount": 300,
                             "lots": [{"amount": 300, "unlock_at_ms": 55}]}],
            "unbonding": [{"validator": rep.to_hex(), "amount": 20, "release_at_ms": 66}],
            "rewards": 4,
            "node": {"kind": "light", "stake": 0, "suspicion": 0, "active": true,
                     "registered_at_ms": 3, "representative": false},
            "term": 2, "dpos_applied_upto": 12, "dpos_state_root": "ab".repeat(32),
        })
    );
    let v: serde_json::Value = http
        .get(format!("{base}/v1/accounts/{}/stake", "00".repeat(32)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["exists"].as_bool(), v["bonded"].as_u64()),
        (Some(false), Some(0))
    );
    let r = http
        .get(format!("{base}/v1/accounts/xyz/stake"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let v: serde_json::Value = http
        .get(format!("{base}/v1/committee"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let m = serde_json::json!({"node_id": "09".repeat(32), "weight": 5,
        "dpos_stake": 5_000_000, "address": "127.0.0.1:7000"});
    let mut next = m.clone();
    next["address"] = serde_json::Value::Null;
    assert_eq!(
        v,
        serde_json::json!({
            "epoch": 2, "epoch_first_seq": 40, "switching": false, "removed": false,
            "standby": false, "committed": 45, "members": [m],
            "dpos": {"term": 2, "started_at_ms": 100, "ends_at_ms": 8_100, "next": [next],
                     "next_elected": false, "next_unreachable": [],
                     "state_root": "cd".repeat(32), "applied_upto": 46},
        })
    );
    h.shutdown().await.unwrap();

    // A node without dpos: 503 with the typed reason.
    let (h, base) = start(GatewayConfig::default(), Memory::new(0)).await;
    for path in [
        format!("{base}/v1/committee"),
        format!("{base}/v1/accounts/{}/stake", alice.to_hex()),
    ] {
        let r = http.get(path).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["code"], "NOT_A_REPRESENTATIVE");
    }
    h.shutdown().await.unwrap();
}

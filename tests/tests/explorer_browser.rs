//! The explorer page in a real browser: headless Chromium, driven through chromedriver's
//! WebDriver HTTP API, against a devnet representative's gateway. It searches a tx by id
//! before the tx exists, then the tx is submitted, and the page's timeline must reach
//! Federated live from `/v1/events`; the live light nodes and the committee are listed, the
//! committee view (`/v1/committee`) shows the member with its weight and dpos stake, and
//! the account view shows a representative's bonded stake, rewards and delegation. A
//! screenshot of each view is written to `target/explorer-screenshot.png` and
//! `target/explorer-account-screenshot.png`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian `chromium`,
//! `chromium-driver`; `./scripts/test` installs them when missing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dag_core::{AccountId, CityId, Position, PositionMethod, Tx};
use devnet::{CITY, CITY_POS, Devnet, DevnetConfig};
use pqc::{Keypair, sign_tx};
use rpc::{CityClient, TxState};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct WebDriver {
    http: reqwest::Client,
    base: String,
    session: String,
}

impl WebDriver {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "webdriver {path}: {v}");
        v["value"].clone()
    }
    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn find(&self, css: &str) -> String {
        let v = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await;
        v[ELEMENT]
            .as_str()
            .or_else(|| v["ELEMENT"].as_str())
            .unwrap_or_else(|| panic!("no element for {css}: {v}"))
            .to_string()
    }
    async fn script(&self, js: &str) -> Value {
        self.post("/execute/sync", json!({ "script": js, "args": [] }))
            .await
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_shows_a_tx_reach_federated_live() {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: install Debian chromium and chromium-driver (./scripts/test does)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // A short fixed proposal interval keeps ordering quick (the default is the domain's
    // dynamic 0.5–5 s interval).
    let cfg = DevnetConfig {
        batch_interval_ms: Some(50),
        ..DevnetConfig::default()
    };
    let net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(6, Duration::from_secs(20)).await);
    let gateway = format!("http://{}", net.gateway_addr(0).expect("gateway on"));

    let port = free_port();
    let mut driver = tokio::process::Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{base}/status")).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["value"]["ready"] == true
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "chromedriver did not become ready");
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1200,1400",
                format!("--user-data-dir={}", profile.path().display())]
        }
    }}});
    let r: Value = http
        .post(format!("{base}/session"))
        .json(&caps)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = r["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {r}"))
        .to_string();
    let wd = WebDriver {
        http: http.clone(),
        base: base.clone(),
        session,
    };

    // The tx, signed but not yet submitted.
    let user = Keypair::generate();
    let t = Tx::fresh(
        user.account_id(),
        AccountId::from_bytes([7; 32]),
        42,
        0,
        1_700_000_000_000,
        CityId::new(CITY).unwrap(),
        Position::from_degrees(CITY_POS.0, CITY_POS.1).unwrap(),
        PositionMethod::Gps,
    );
    let signed = sign_tx(t, &user);
    let id = signed.id();

    wd.post("/url", json!({ "url": format!("{gateway}/") }))
        .await;
    // The page lists the live light nodes and the committee.
    let mut lights = 0;
    for _ in 0..100 {
        lights = wd
            .script("return document.querySelectorAll('#lights tbody tr').length")
            .await
            .as_u64()
            .unwrap_or(0);
        if lights == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lights, 6);
    let members = wd
        .script("return document.querySelectorAll('#committee li').length")
        .await;
    assert_eq!(members, json!(1));
    // The committee view (/v1/committee): epoch 0, the one member with its weight and dpos
    // stake, and the next committee dpos would elect.
    let rep = net.rep_key(0).unwrap();
    let short = |h: String| format!("{}…{}", &h[..8], &h[h.len() - 8..]);
    let mut shown = Value::Null;
    for _ in 0..100 {
        shown = wd
            .script(
                "return Array.from(document.querySelectorAll('#members tbody tr')).map(tr => \
                 Array.from(tr.cells).map(td => td.textContent))",
            )
            .await;
        if shown.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grpc = CityClient::connect(&net.city().addr().to_string())
        .await
        .unwrap();
    let committee = grpc.committee().await.unwrap();
    let m = &committee.members[0];
    assert_eq!(
        shown,
        json!([[
            short(m.node_id.to_hex()),
            m.weight.to_string(),
            m.dpos_stake.to_string(),
            m.address.clone().unwrap()
        ]]),
        "the committee view"
    );
    assert_eq!(m.node_id, rep.node_id());
    assert_eq!(
        wd.script("return document.getElementById('epoch').dataset.epoch")
            .await,
        json!("0")
    );
    let mut next = Value::Null;
    for _ in 0..100 {
        next = wd
            .script("return document.querySelectorAll('#next tbody tr').length")
            .await;
        if next == json!(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(next, json!(1), "dpos's election as of now: the one member");

    // Search the tx (unknown yet), then submit it: the timeline fills in live.
    let q = wd.find("#q").await;
    wd.post(
        &format!("/element/{q}/value"),
        json!({ "text": id.to_hex() }),
    )
    .await;
    let button = wd.find("#search button[type=submit]").await;
    wd.post(&format!("/element/{button}/click"), json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(grpc.submit(&signed).await.unwrap().state, TxState::Held);

    let mut state = Value::Null;
    for _ in 0..450 {
        state = wd
            .script("return document.getElementById('state').dataset.state")
            .await;
        if state == "federated" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "federated");
    let timeline = wd
        .script(
            "return Array.from(document.querySelectorAll('#timeline li')).map(li => li.dataset.kind)",
        )
        .await;
    assert_eq!(
        timeline,
        json!(["admitted", "held", "ordered", "federated"])
    );
    // The holders table is filled once the page reloads the tx (search again).
    wd.post("/url", json!({ "url": format!("{gateway}/#tx={id}") }))
        .await;
    wd.post("/refresh", json!({})).await;
    let mut holders = 0;
    for _ in 0..100 {
        holders = wd
            .script("return document.querySelectorAll('#holders tbody tr').length")
            .await
            .as_u64()
            .unwrap_or(0);
        if holders == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(holders, 6);
    for _ in 0..100 {
        if wd
            .script("return document.getElementById('state').dataset.state")
            .await
            == "federated"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let png = wd
        .call(reqwest::Method::GET, "/screenshot", None)
        .await
        .as_str()
        .unwrap()
        .to_string();
    let bytes = base64_decode(&png);
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("explorer-screenshot.png");
    std::fs::write(&out, &bytes).unwrap();
    println!("screenshot: {}", out.display());

    // The account view: the representative's account with its stake (its self-bond).
    let stake = grpc.stake(rep.account_id()).await.unwrap();
    assert!(stake.bonded > 0);
    wd.post(
        "/url",
        json!({ "url": format!("{gateway}/#account={}", rep.account_id()) }),
    )
    .await;
    wd.post("/refresh", json!({})).await;
    let mut facts = Value::Null;
    for _ in 0..100 {
        facts = wd
            .script(
                "const f = k => { const d = document.querySelector(`[data-fact=${k}]`); \
                 return d ? d.textContent : null; }; \
                 return [f('bonded'), f('rewards'), f('node'), \
                 document.querySelectorAll('#delegations tbody tr').length]",
            )
            .await;
        if facts[0].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        facts,
        json!([
            stake.bonded.to_string(),
            stake.rewards.to_string(),
            format!("full, stake {}, representative", stake.bonded),
            1
        ]),
        "the account view"
    );
    let png = wd
        .call(reqwest::Method::GET, "/screenshot", None)
        .await
        .as_str()
        .unwrap()
        .to_string();
    let out = out.with_file_name("explorer-account-screenshot.png");
    std::fs::write(&out, base64_decode(&png)).unwrap();
    println!("screenshot: {}", out.display());

    wd.call(reqwest::Method::DELETE, "", None).await;
    driver.kill().await.unwrap();
    net.shutdown().await.unwrap();
}

/// Standard base64 (the WebDriver screenshot encoding), strict.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= if c == b'=' { 0 } else { val(c) } << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

//! The HTTP server: routes under `/v1`, the explorer at `/`, per-IP rate limit (429 with
//! `Retry-After`), CORS, bounded bodies, server-sent events, the OpenAPI document, health
//! and metrics; [`Gateway::start`] binds it behind a [`GatewayHandle`].

use crate::backend::{GatewayBackend, GatewayEvent, NodesView, RepairRefused, RepairTicket};
use crate::json::{
    AccountAnswer, JsonSignedTx, RepairRequestBody, StripeAnswer, SubmitAnswer, TxAnswer,
    parse_account, parse_stripe_id, parse_tx_id,
};
use crate::stake::{CommitteeAnswer, StakeAnswer};
use crate::{Error, GatewayConfig, Result};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dag_core::{AccountId, TxId};
use futures::Stream;
use parking_lot::Mutex;
use rpc::{RejectCode, Rejection, TxState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::{OpenApi, ToSchema};

/// A JSON error: `{"code": "...", "message": "...", "tx_id": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// Machine-readable code (`MALFORMED`, `NOT_FOUND`, `RATE_LIMITED`, a reject code …).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// The tx concerned, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_id: Option<String>,
}

/// An error response: status, body and an optional `Retry-After`.
struct Failure {
    status: StatusCode,
    body: ApiError,
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Failure {
            status,
            body: ApiError {
                code: code.into(),
                message: message.into(),
                tx_id: None,
            },
            retry_after: None,
        }
    }

    fn with_tx(mut self, id: Option<TxId>) -> Self {
        self.body.tx_id = id.map(|i| i.to_hex());
        self
    }

    fn retry(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// The HTTP status for a rejection (one per code; see the OpenAPI document).
pub fn status_of(code: RejectCode) -> StatusCode {
    match code {
        RejectCode::Malformed => StatusCode::BAD_REQUEST,
        RejectCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        RejectCode::BadSignature | RejectCode::KeyMismatch | RejectCode::OutsideCity => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        RejectCode::DuplicateTx | RejectCode::NonceReused => StatusCode::CONFLICT,
        RejectCode::Overloaded | RejectCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Self {
        let f = Failure::new(status_of(r.code), r.code.name(), r.message).with_tx(r.tx_id);
        if r.code == RejectCode::Overloaded {
            f.retry(Duration::from_secs(1))
        } else {
            f
        }
    }
}

fn json_rejection(e: JsonRejection) -> Failure {
    let status = match &e {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        JsonRejection::BytesRejection(_) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "TOO_LARGE"
    } else {
        "MALFORMED"
    };
    Failure::new(status, code, e.body_text())
}

/// Counters the gateway keeps itself (rendered at `/metrics`).
#[derive(Debug, Default)]
struct GatewayStats {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    rate_limited: AtomicU64,
    sse_open: AtomicU64,
    sse_sent: AtomicU64,
    sse_gaps: AtomicU64,
}

#[derive(Clone)]
struct AppState {
    backend: Arc<dyn GatewayBackend>,
    limiter: Option<Arc<resilience::PerIpLimiter>>,
    trust_forwarded_for: bool,
    sse_slots: Arc<Semaphore>,
    stats: Arc<GatewayStats>,
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: watch::Receiver<bool>,
}

/// The OpenAPI document of `/v1`, generated from the handlers and types below.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "City Chain gateway",
        description = "The DApp API of a city representative."
    ),
    paths(
        submit_tx,
        get_tx,
        get_account,
        get_stake,
        get_committee,
        create_repair,
        get_repair,
        events,
        nodes,
        stripe,
        healthz,
        metrics_text
    ),
    components(schemas(
        JsonSignedTx,
        crate::json::JsonTx,
        SubmitAnswer,
        TxAnswer,
        AccountAnswer,
        StakeAnswer,
        crate::stake::JsonDelegation,
        crate::stake::JsonStakeLot,
        crate::stake::JsonUnbonding,
        crate::stake::JsonStakeNode,
        CommitteeAnswer,
        crate::stake::JsonMember,
        crate::stake::JsonTerm,
        crate::json::JsonExecution,
        crate::json::JsonCross,
        crate::json::JsonReceipt,
        crate::json::JsonOrdering,
        RepairRequestBody,
        RepairTicket,
        crate::backend::RepairState,
        NodesView,
        crate::backend::NodeView,
        crate::backend::CommitteeMember,
        StripeAnswer,
        crate::json::JsonHolder,
        GatewayEvent,
        crate::backend::EventKind,
        ApiError
    ))
)]
pub struct ApiDoc;

/// `POST /v1/txs`: submit a signed tx.
#[utoipa::path(post, path = "/v1/txs", request_body = JsonSignedTx,
    responses(
        (status = 200, description = "Held (receipts from distinct light nodes), or Ordered / Federated when the tx was submitted before: a resubmission answers the tx's current state", body = SubmitAnswer),
        (status = 202, description = "Admitted durably, not (yet) held", body = SubmitAnswer),
        (status = 400, description = "Malformed", body = ApiError),
        (status = 409, description = "Another tx already uses this (sender, nonce)", body = ApiError),
        (status = 413, description = "Body too large", body = ApiError),
        (status = 422, description = "Bad signature, key mismatch or outside the city", body = ApiError),
        (status = 429, description = "Rate limited (Retry-After)", body = ApiError),
        (status = 503, description = "Overloaded or unavailable", body = ApiError),
    ))]
async fn submit_tx(
    State(st): State<AppState>,
    body: std::result::Result<Json<JsonSignedTx>, JsonRejection>,
) -> std::result::Result<Response, Failure> {
    let Json(j) = body.map_err(json_rejection)?;
    let signed = j
        .to_signed()
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "MALFORMED", e.to_string()))?;
    let ok = st.backend.submit(signed).await?;
    let status = if ok.state != TxState::Admitted {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(SubmitAnswer::from(&ok))).into_response())
}

/// `GET /v1/txs/{id}`: a tx's state, receipts, ordering and proof, its execution outcome
/// and, for a cross-city transfer, its cross-city state and both proofs.
#[utoipa::path(get, path = "/v1/txs/{id}",
    params(("id" = String, Path, description = "tx id, 64 hex characters")),
    responses(
        (status = 200, body = TxAnswer),
        (status = 400, body = ApiError),
        (status = 404, description = "Unknown tx", body = ApiError),
    ))]
async fn get_tx(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> std::result::Result<Json<TxAnswer>, Failure> {
    let id = parse_tx_id(&id)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "MALFORMED", e.to_string()))?;
    match st.backend.get(id).await? {
        Some(rec) => {
            let execution = st.backend.execution(id).await?;
            Ok(Json(
                TxAnswer::new(id, &rec).with_execution(execution.as_ref()),
            ))
        }
        None => Err(Failure::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("tx {id} is unknown to this representative"),
        )
        .with_tx(Some(id))),
    }
}

/// `GET /v1/accounts/{id}`: an account's balance and nonce as this representative executed
/// it.
#[utoipa::path(get, path = "/v1/accounts/{id}",
    params(("id" = String, Path, description = "account id, 64 hex characters")),
    responses(
        (status = 200, description = "The account (exists false: never credited, balance and nonce 0)", body = AccountAnswer),
        (status = 400, body = ApiError),
        (status = 503, description = "This node keeps no ledger, or its store failed", body = ApiError),
    ))]
async fn get_account(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> std::result::Result<Json<AccountAnswer>, Failure> {
    let id = parse_account(&id)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "MALFORMED", e.to_string()))?;
    Ok(Json(AccountAnswer::from(&st.backend.account(id).await?)))
}

impl From<rpc::StakeReadError> for Failure {
    fn from(e: rpc::StakeReadError) -> Self {
        Failure::new(StatusCode::SERVICE_UNAVAILABLE, e.reason(), e.to_string())
    }
}

/// `GET /v1/accounts/{id}/stake`: an account's stake (bonded, delegations, unbonding,
/// rewards, node record) as this representative's dpos state holds it.
#[utoipa::path(get, path = "/v1/accounts/{id}/stake",
    params(("id" = String, Path, description = "account id, 64 hex characters")),
    responses(
        (status = 200, description = "The stake (exists false: neither the ledger nor dpos knows the account)", body = StakeAnswer),
        (status = 400, body = ApiError),
        (status = 503, description = "NOT_A_REPRESENTATIVE (no dpos state here), DPOS_NOT_STARTED (before the first checkpoint) or STORE_UNAVAILABLE", body = ApiError),
    ))]
async fn get_stake(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> std::result::Result<Json<StakeAnswer>, Failure> {
    let id = parse_account(&id)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "MALFORMED", e.to_string()))?;
    Ok(Json(StakeAnswer::from(&st.backend.stake(id).await?)))
}

/// `GET /v1/committee`: the committee and epoch this representative's consensus runs, the
/// dpos term, and the next committee as dpos decides it now.
#[utoipa::path(get, path = "/v1/committee",
    responses(
        (status = 200, description = "The committee", body = CommitteeAnswer),
        (status = 503, description = "NOT_A_REPRESENTATIVE: this node runs no consensus", body = ApiError),
    ))]
async fn get_committee(
    State(st): State<AppState>,
) -> std::result::Result<Json<CommitteeAnswer>, Failure> {
    Ok(Json(CommitteeAnswer::from(&st.backend.committee().await?)))
}

/// `POST /v1/repair_requests`: start a repair of a tx.
#[utoipa::path(post, path = "/v1/repair_requests", request_body = RepairRequestBody,
    responses(
        (status = 202, description = "Started; follow it on /v1/events", body = RepairTicket),
        (status = 400, body = ApiError),
        (status = 404, description = "The tx never existed here", body = ApiError),
        (status = 503, description = "Busy or no storage", body = ApiError),
    ))]
async fn create_repair(
    State(st): State<AppState>,
    body: std::result::Result<Json<RepairRequestBody>, JsonRejection>,
) -> std::result::Result<Response, Failure> {
    let Json(b) = body.map_err(json_rejection)?;
    let id = parse_tx_id(&b.tx_id)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "MALFORMED", e.to_string()))?;
    match st.backend.request_repair(id).await {
        Ok(t) => {
            let mut resp = (StatusCode::ACCEPTED, Json(t.clone())).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/v1/repair_requests/{}", t.request_id)) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(resp)
        }
        Err(e @ RepairRefused::UnknownTx(_)) => {
            Err(Failure::new(StatusCode::NOT_FOUND, "NOT_FOUND", e.to_string()).with_tx(Some(id)))
        }
        Err(e @ RepairRefused::Busy(_)) => {
            Err(
                Failure::new(StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED", e.to_string())
                    .retry(Duration::from_secs(1)),
            )
        }
        Err(e @ RepairRefused::Unavailable(_)) => Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            e.to_string(),
        )),
    }
}

/// `GET /v1/repair_requests/{id}`: where a repair stands.
#[utoipa::path(get, path = "/v1/repair_requests/{id}",
    params(("id" = u64, Path, description = "request id")),
    responses((status = 200, body = RepairTicket), (status = 404, body = ApiError)))]
async fn get_repair(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> std::result::Result<Json<RepairTicket>, Failure> {
    let n: u64 = id.parse().map_err(|_| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED",
            "request id must be a number",
        )
    })?;
    st.backend.repair_status(n).map(Json).ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("repair request {n} is unknown"),
        )
    })
}

/// Filter of `/v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Only events of this tx (64 hex).
    pub tx: Option<String>,
    /// Only events of txs this account sent or received (64 hex).
    pub account: Option<String>,
    /// Resume after this event id (as the `Last-Event-ID` header, for clients that cannot
    /// set headers).
    pub last_event_id: Option<u64>,
}

fn sse_event(e: &GatewayEvent) -> Event {
    Event::default()
        .id(e.id.to_string())
        .event(e.kind.name())
        .data(serde_json::to_string(e).unwrap_or_else(|_| "{}".into()))
}

/// `GET /v1/events`: server-sent events, filtered by tx or account, resumable.
#[utoipa::path(get, path = "/v1/events", params(EventFilter,
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this event id")),
    responses(
        (status = 200, description = "text/event-stream of GatewayEvent; a `gap` event says some events after Last-Event-ID left the bounded history", body = GatewayEvent, content_type = "text/event-stream"),
        (status = 400, body = ApiError),
        (status = 503, description = "Too many subscribers", body = ApiError),
    ))]
async fn events(
    State(st): State<AppState>,
    headers: HeaderMap,
    q: std::result::Result<Query<EventFilter>, axum::extract::rejection::QueryRejection>,
) -> std::result::Result<Response, Failure> {
    let Query(f) =
        q.map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "MALFORMED", e.body_text()))?;
    let tx =
        f.tx.as_deref()
            .map(parse_tx_id)
            .transpose()
            .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "MALFORMED", e.to_string()))?;
    let account = f
        .account
        .as_deref()
        .map(parse_account)
        .transpose()
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "MALFORMED", e.to_string()))?;
    let header_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Failure::new(
                        StatusCode::BAD_REQUEST,
                        "MALFORMED",
                        "Last-Event-ID must be a number",
                    )
                })?,
        ),
        None => None,
    };
    let after = header_id.or(f.last_event_id);
    let permit = st.sse_slots.clone().try_acquire_owned().map_err(|_| {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "OVERLOADED",
            "too many event subscribers",
        )
        .retry(Duration::from_secs(5))
    })?;
    let sub = st.backend.subscribe(after);
    let stream = event_stream(
        sub,
        tx,
        account,
        st.stats.clone(),
        st.shutdown.clone(),
        permit,
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

fn event_stream(
    sub: crate::backend::Subscription,
    tx: Option<TxId>,
    account: Option<AccountId>,
    stats: Arc<GatewayStats>,
    mut shutdown: watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    async_stream(move |yield_tx| async move {
        let _permit = permit;
        stats.sse_open.fetch_add(1, Ordering::Relaxed);
        let _open = OpenGuard(stats.clone());
        let mut live = sub.live;
        if sub.gap {
            stats.sse_gaps.fetch_add(1, Ordering::Relaxed);
            let _ = yield_tx
                .send(
                    Event::default()
                        .event("gap")
                        .data("{\"reason\":\"history exceeded\"}"),
                )
                .await;
        }
        let mut last = None;
        for e in sub.backlog {
            last = Some(e.id);
            if e.matches(tx.as_ref(), account.as_ref()) {
                stats.sse_sent.fetch_add(1, Ordering::Relaxed);
                if yield_tx.send(sse_event(&e)).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let next = tokio::select! {
                r = live.recv() => r,
                _ = shutdown.wait_for(|s| *s) => return,
                // The client went away: free its subscriber slot now, not at the next event.
                () = yield_tx.closed() => return,
            };
            match next {
                Ok(e) => {
                    // The live feed may repeat what the backlog already sent.
                    if last.is_some_and(|l| e.id <= l) {
                        continue;
                    }
                    last = Some(e.id);
                    if e.matches(tx.as_ref(), account.as_ref()) {
                        stats.sse_sent.fetch_add(1, Ordering::Relaxed);
                        if yield_tx.send(sse_event(&e)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    stats.sse_gaps.fetch_add(1, Ordering::Relaxed);
                    let gap = Event::default().event("gap").data(format!(
                        "{{\"reason\":\"subscriber too slow\",\"missed\":{n}}}"
                    ));
                    if yield_tx.send(gap).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

struct OpenGuard(Arc<GatewayStats>);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.sse_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream fed by a task through a small bounded channel: the task waits when the client
/// reads slowly, and stops when the client goes away.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = std::result::Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

/// `GET /v1/nodes`: live light nodes and the committee.
#[utoipa::path(get, path = "/v1/nodes", responses((status = 200, body = NodesView)))]
async fn nodes(State(st): State<AppState>) -> Json<NodesView> {
    Json(st.backend.nodes().await)
}

/// `GET /v1/stripes/{id}`: a stripe's shape and holders.
#[utoipa::path(get, path = "/v1/stripes/{id}",
    params(("id" = String, Path, description = "stripe id, 64 hex characters")),
    responses((status = 200, body = StripeAnswer), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn stripe(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> std::result::Result<Json<StripeAnswer>, Failure> {
    let id = parse_stripe_id(&id)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "MALFORMED", e.to_string()))?;
    match st.backend.stripe(id).await? {
        Some(s) => Ok(Json(StripeAnswer::from(&s))),
        None => Err(Failure::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("stripe {id} is not held by this city"),
        )),
    }
}

/// `GET /healthz`: 200 `ok` while the node takes submissions, 503 with the reason while it
/// cannot (for example its tx store is down after an I/O error and not reopened yet).
#[utoipa::path(get, path = "/healthz", responses(
    (status = 200, description = "ok"),
    (status = 503, description = "not serving, with the reason")))]
async fn healthz(State(st): State<AppState>) -> Response {
    match st.backend.serving() {
        Ok(()) => "ok".into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not serving: {reason}"),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics_text(State(st): State<AppState>) -> Response {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(p) = &st.prometheus {
        out.push_str(&p.render());
    }
    out.push_str("# TYPE citychain_gateway_requests_total counter\n");
    for ((route, status), n) in st.stats.requests.lock().iter() {
        let _ = writeln!(
            out,
            "citychain_gateway_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    let s = &st.stats;
    for (name, kind, v) in [
        (
            "citychain_gateway_rate_limited_total",
            "counter",
            s.rate_limited.load(Ordering::Relaxed),
        ),
        (
            "citychain_gateway_sse_subscribers",
            "gauge",
            s.sse_open.load(Ordering::Relaxed),
        ),
        (
            "citychain_gateway_sse_events_sent_total",
            "counter",
            s.sse_sent.load(Ordering::Relaxed),
        ),
        (
            "citychain_gateway_sse_gaps_total",
            "counter",
            s.sse_gaps.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {v}");
    }
    out.push_str("# TYPE citychain_repair_tier_seconds summary\n");
    for t in st.backend.repair_latencies() {
        let _ = writeln!(
            out,
            "citychain_repair_tier_seconds{{tier=\"{}\",quantile=\"0.5\"}} {}\n\
             citychain_repair_tier_seconds{{tier=\"{}\",quantile=\"0.99\"}} {}\n\
             citychain_repair_tier_seconds_count{{tier=\"{}\"}} {}",
            t.tier, t.p50_seconds, t.tier, t.p99_seconds, t.tier, t.count
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
        .into_response()
}

const INDEX_HTML: &str = include_str!("../static/index.html");
const EXPLORER_JS: &str = include_str!("../static/explorer.js");
const EXPLORER_CSS: &str = include_str!("../static/explorer.css");

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}
async fn explorer_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        EXPLORER_JS,
    )
        .into_response()
}
async fn explorer_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        EXPLORER_CSS,
    )
        .into_response()
}

async fn not_found() -> Failure {
    Failure::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

async fn rate_limit(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(limiter) = &st.limiter {
        let ip = resilience::client_ip(
            st.trust_forwarded_for,
            req.headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok()),
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        );
        if let Err(limited) = limiter.check(ip) {
            st.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!("more than the allowed requests from {ip}"),
            )
            .retry(limited.retry_after)
            .into_response();
        }
    }
    next.run(req).await
}

async fn record(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    let mut m = st.stats.requests.lock();
    // Bounded: routes are the fixed set above plus "unmatched".
    *m.entry((route, resp.status().as_u16())).or_default() += 1;
    resp
}

fn cors_layer(origins: &[String]) -> Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).map_err(|_| Error::BadCorsOrigin(o.clone())))
            .collect::<Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                "last-event-id"
                    .parse()
                    .map_err(|_| Error::BadCorsOrigin("last-event-id".into()))?,
            ])
            .expose_headers([header::RETRY_AFTER, header::LOCATION]),
    ))
}

/// The gateway's router over `backend`. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so the rate limit sees client
/// addresses. `shutdown` turning true ends open event streams.
pub fn router(
    backend: Arc<dyn GatewayBackend>,
    cfg: &GatewayConfig,
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: watch::Receiver<bool>,
) -> Result<Router> {
    let limiter = resilience::PerIpLimiter::new(cfg.rate_limit_per_second, cfg.rate_limit_burst)
        .map(Arc::new);
    let state = AppState {
        backend,
        limiter,
        trust_forwarded_for: cfg.trust_forwarded_for,
        sse_slots: Arc::new(Semaphore::new(cfg.max_event_subscribers)),
        stats: Arc::default(),
        prometheus,
        shutdown,
    };
    let v1 = Router::new()
        .route("/v1/txs", post(submit_tx))
        .route("/v1/txs/{id}", get(get_tx))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/accounts/{id}/stake", get(get_stake))
        .route("/v1/committee", get(get_committee))
        .route("/v1/repair_requests", post(create_repair))
        .route("/v1/repair_requests/{id}", get(get_repair))
        .route("/v1/events", get(events))
        .route("/v1/nodes", get(nodes))
        .route("/v1/stripes/{id}", get(stripe))
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    let mut app = Router::new()
        .merge(v1)
        .route("/v1/openapi.json", get(openapi_json))
        .route("/", get(index))
        .route("/explorer.js", get(explorer_js))
        .route("/explorer.css", get(explorer_css))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state);
    if let Some(cors) = cors_layer(&cfg.cors_origins)? {
        app = app.layer(cors);
    }
    Ok(app)
}

/// Starts gateways.
#[derive(Debug)]
pub struct Gateway;

impl Gateway {
    /// Binds `cfg.listen` and serves `backend`.
    pub async fn start(
        cfg: &GatewayConfig,
        backend: Arc<dyn GatewayBackend>,
        prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Result<GatewayHandle> {
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?;
        let (stop, stop_rx) = watch::channel(false);
        let app = router(backend, cfg, prometheus, stop_rx.clone())?;
        let mut wait = stop_rx;
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = wait.wait_for(|s| *s).await;
            })
            .await
        });
        tracing::info!(%addr, "gateway listening");
        Ok(GatewayHandle {
            addr,
            stop,
            task: Some(task),
        })
    }
}

/// A running gateway. Stop it with [`GatewayHandle::shutdown`].
#[derive(Debug)]
pub struct GatewayHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl GatewayHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends event streams, stops accepting and waits for the server task.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            match t.await {
                Ok(r) => r.map_err(|source| Error::Serve { source })?,
                Err(e) => return Err(Error::Task(e.to_string())),
            }
        }
        Ok(())
    }

    /// Stops at once (a crash of the node).
    pub fn abort(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            let _ = self.stop.send(true);
            t.abort();
        }
    }
}

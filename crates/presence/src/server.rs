//! The presence HTTP API (axum): routes, per-IP rate limit, SSE events, health, metrics,
//! and [`PresenceServer`] which binds it to a socket together with a sweeper.

use crate::{
    AuthFailure, Error, ListFilter, MemoryPresenceStore, RedisPresenceStore, RedisStoreConfig,
    Result, Session, SessionStore, SessionToken, SignedLogin, SweeperHandle, SystemClock,
    spawn_sweeper,
};
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{ConnectInfo, MatchedPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dag_core::{NodeId, NodeInfo, Role};
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which store the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// In-process memory (one server, nothing survives a restart).
    #[default]
    Memory,
    /// Redis (shared by several servers, survives server restarts).
    Redis,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "memory" => Ok(BackendKind::Memory),
            "redis" => Ok(BackendKind::Redis),
            other => Err(Error::Config(format!(
                "unknown presence backend {other:?} (expected redis or memory)"
            ))),
        }
    }
}

/// Per-client-IP rate limit of the `/presence` routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Off only for load runs on loopback.
    pub enabled: bool,
    /// Sustained requests per second per IP (30).
    pub per_second: u32,
    /// Burst per IP (60).
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            per_second: 30,
            burst: 60,
        }
    }
}

/// Configuration of the presence server (TOML keys are the field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Store backend (`PRESENCE_BACKEND`).
    pub backend: BackendKind,
    /// Redis URI (`PRESENCE_REDIS_URI`).
    pub redis_uri: String,
    /// Key prefix in Redis.
    pub redis_key_prefix: String,
    /// CA (PEM file) of the Redis servers' certificates for `rediss://` URIs
    /// (`PRESENCE_REDIS_TLS_CA`; unset: the system's roots).
    pub redis_tls_ca: Option<std::path::PathBuf>,
    /// Address to bind.
    pub bind: IpAddr,
    /// HTTP port (`PRESENCE_HTTP_PORT`, 8080; 0 = any free port).
    pub http_port: u16,
    /// Online TTL in ms (6000).
    pub ttl_ms: u64,
    /// Heartbeat interval advertised to clients in ms (3000).
    pub heartbeat_ms: u64,
    /// How often expired nodes are swept, ms (1000).
    pub sweep_interval_ms: u64,
    /// Per-IP rate limit.
    pub rate_limit: RateLimitConfig,
    /// Key the rate limit on the first `X-Forwarded-For` address instead of the peer
    /// address. Only behind a trusted proxy: clients can forge the header.
    pub trust_forwarded_for: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            backend: BackendKind::Memory,
            redis_uri: "redis://127.0.0.1:6379".into(),
            redis_key_prefix: "presence".into(),
            redis_tls_ca: None,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            http_port: 8080,
            ttl_ms: 6000,
            heartbeat_ms: 3000,
            sweep_interval_ms: 1000,
            rate_limit: RateLimitConfig::default(),
            trust_forwarded_for: false,
        }
    }
}

impl ServerConfig {
    /// Online TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// Builds the configured store (connecting to Redis if chosen).
    pub async fn build_store(&self) -> Result<Arc<dyn SessionStore>> {
        Ok(match self.backend {
            BackendKind::Memory => {
                Arc::new(MemoryPresenceStore::new(self.ttl(), Arc::new(SystemClock)))
            }
            BackendKind::Redis => Arc::new(
                RedisPresenceStore::connect(
                    RedisStoreConfig {
                        uri: self.redis_uri.clone(),
                        tls_ca_file: self.redis_tls_ca.clone(),
                        ttl: self.ttl(),
                        key_prefix: self.redis_key_prefix.clone(),
                        ..RedisStoreConfig::default()
                    },
                    Arc::new(SystemClock),
                )
                .await?,
            ),
        })
    }
}

#[derive(Clone)]
struct AppState {
    store: Arc<dyn SessionStore>,
    ttl_ms: u64,
    heartbeat_ms: u64,
    limiter: Option<Arc<resilience::PerIpLimiter>>,
    trust_forwarded_for: bool,
    metrics: Option<PrometheusHandle>,
    shutdown: watch::Receiver<bool>,
}

/// An error answer: status plus `{"error": code, "message": text}`.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::UnknownNode(_) => (StatusCode::NOT_FOUND, "unknown_node"),
            Error::Unauthorized { reason, .. } => (StatusCode::FORBIDDEN, reason.code()),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Error::Unavailable { .. } | Error::CircuitOpen(_) | Error::EventsMissed { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let retry_after = match &e {
            Error::RateLimited { retry_after } => Some(*retry_after),
            Error::Unavailable { .. } => Some(Duration::from_secs(1)),
            _ => None,
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some(ra) = self.retry_after {
            body["retry_after_ms"] = json!(ra.as_millis() as u64);
        }
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(ra) = self.retry_after {
            // Whole seconds, rounded up, at least 1.
            let secs = ra.as_secs() + u64::from(ra.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> std::result::Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// A heartbeat or logout: the node and the session token its signed login obtained.
#[derive(Deserialize)]
struct NodeRef {
    node_id: NodeId,
    #[serde(default)]
    session: Option<SessionToken>,
}

impl NodeRef {
    fn session(&self) -> std::result::Result<crate::SessionHash, ApiError> {
        self.session
            .as_ref()
            .map(SessionToken::hash)
            .ok_or_else(|| {
                ApiError::from(Error::Unauthorized {
                    node: self.node_id,
                    reason: AuthFailure::BadSession,
                })
            })
    }
}

/// Longest string field of a published [`NodeInfo`] (address, city, zone, version).
pub const MAX_INFO_FIELD: usize = 256;

/// Largest request body the API reads (a signed login is ~15 KB of JSON).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Deserialize)]
struct ListParams {
    role: Option<String>,
    city: Option<String>,
}

fn validate(info: &NodeInfo) -> std::result::Result<(), ApiError> {
    if !(info.lat.is_finite() && (-90.0..=90.0).contains(&info.lat)) {
        return Err(ApiError::bad_request(format!(
            "lat {} outside [-90, 90]",
            info.lat
        )));
    }
    if !(info.lon.is_finite() && (-180.0..=180.0).contains(&info.lon)) {
        return Err(ApiError::bad_request(format!(
            "lon {} outside [-180, 180]",
            info.lon
        )));
    }
    if !(info.load.is_finite() && info.load >= 0.0) {
        return Err(ApiError::bad_request(format!(
            "load {} must be >= 0",
            info.load
        )));
    }
    if info.grpc_addr.is_empty() {
        return Err(ApiError::bad_request("grpc_addr must not be empty"));
    }
    for (name, v) in [
        ("grpc_addr", &info.grpc_addr),
        ("city_id", &info.city_id),
        ("zone", &info.zone),
        ("version", &info.version),
    ] {
        if v.len() > MAX_INFO_FIELD {
            return Err(ApiError::bad_request(format!(
                "{name} is {} bytes, more than {MAX_INFO_FIELD}",
                v.len()
            )));
        }
    }
    Ok(())
}

async fn login(State(st): State<AppState>, body: Bytes) -> std::result::Result<Response, ApiError> {
    let login: SignedLogin = parse_json(&body)?;
    validate(&login.info)?;
    let id = login.info.node_id;
    // ML-DSA verification is CPU work: off the reactor.
    let login =
        tokio::task::spawn_blocking(move || login.verify(&pqc::MlDsa87, now_ms()).map(|()| login))
            .await
            .map_err(|e| ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "internal",
                message: format!("login verification task: {e}"),
                retry_after: None,
            })??;
    let token = SessionToken::generate();
    let session = Session {
        hash: token.hash(),
        issued_at_ms: login.issued_at_ms,
    };
    st.store.login_session(login.info, session).await?;
    Ok(Json(json!({
        "ok": true, "node_id": id, "ttl_ms": st.ttl_ms, "heartbeat_ms": st.heartbeat_ms,
        "session": token
    }))
    .into_response())
}

async fn heartbeat(
    State(st): State<AppState>,
    body: Bytes,
) -> std::result::Result<Response, ApiError> {
    let r: NodeRef = parse_json(&body)?;
    st.store.heartbeat_session(r.node_id, r.session()?).await?;
    Ok(Json(json!({ "ok": true, "ttl_ms": st.ttl_ms })).into_response())
}

async fn logout(
    State(st): State<AppState>,
    body: Bytes,
) -> std::result::Result<Response, ApiError> {
    let r: NodeRef = parse_json(&body)?;
    st.store.logout_session(r.node_id, r.session()?).await?;
    Ok(Json(json!({ "ok": true })).into_response())
}

async fn list(
    State(st): State<AppState>,
    params: std::result::Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> std::result::Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let role = match params.role.as_deref() {
        None | Some("") => None,
        Some(r) => Some(r.parse::<Role>().map_err(ApiError::bad_request)?),
    };
    let filter = ListFilter {
        role,
        city: params.city.filter(|c| !c.is_empty()),
    };
    let nodes = st.store.list(&filter).await?;
    if filter == ListFilter::default() {
        metrics::gauge!("presence_online_nodes").set(nodes.len() as f64);
    }
    Ok(Json(json!({ "count": nodes.len(), "nodes": nodes })).into_response())
}

async fn events(State(st): State<AppState>) -> std::result::Result<Response, ApiError> {
    let stream = st.store.subscribe().await?;
    let mut shutdown = st.shutdown.clone();
    let events = stream
        .map(|item| {
            let ev = match item {
                Ok(ev) => Event::default()
                    .event(ev.kind())
                    .json_data(&ev)
                    .unwrap_or_else(|_| Event::default().comment("undecodable event")),
                Err(Error::EventsMissed { missed }) => {
                    Event::default().event("resync").data(missed.to_string())
                }
                Err(e) => Event::default().event("error").data(e.to_string()),
            };
            Ok::<_, Infallible>(ev)
        })
        .take_until(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

async fn healthz(State(st): State<AppState>) -> std::result::Result<Response, ApiError> {
    st.store.ping().await?;
    Ok(Json(json!({ "status": "ok", "backend": st.store.backend() })).into_response())
}

async fn metrics_text(State(st): State<AppState>) -> Response {
    match &st.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics recorder not installed").into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: "no such route".into(),
        retry_after: None,
    }
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
            return ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "rate_limited",
                message: format!("more than the allowed requests from {ip}"),
                retry_after: Some(limited.retry_after),
            }
            .into_response();
        }
    }
    next.run(req).await
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    metrics::counter!(
        "presence_http_requests_total",
        "route" => route,
        "status" => resp.status().as_u16().to_string()
    )
    .increment(1);
    resp
}

/// The presence HTTP API over `store`. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so the rate limit sees client
/// addresses (without it every client shares one bucket). `metrics` is rendered at
/// `/metrics` (see [`prometheus_handle`](crate::prometheus_handle)); `shutdown` turning
/// true ends open event streams.
pub fn router(
    store: Arc<dyn SessionStore>,
    config: &ServerConfig,
    metrics: Option<PrometheusHandle>,
    shutdown: watch::Receiver<bool>,
) -> Router {
    let limiter = if config.rate_limit.enabled {
        // A per-second figure of 0 counts as 1: the limit is on when enabled.
        resilience::PerIpLimiter::new(config.rate_limit.per_second.max(1), config.rate_limit.burst)
            .map(Arc::new)
    } else {
        None
    };
    let state = AppState {
        store,
        ttl_ms: config.ttl_ms,
        heartbeat_ms: config.heartbeat_ms,
        limiter,
        trust_forwarded_for: config.trust_forwarded_for,
        metrics,
        shutdown,
    };
    let limited = Router::new()
        .route("/presence", get(list))
        .route("/presence/login", post(login))
        .route("/presence/heartbeat", post(heartbeat))
        .route("/presence/logout", post(logout))
        .route("/presence/events", get(events))
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    Router::new()
        .merge(limited)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(record_metrics))
        .with_state(state)
}

/// Starts presence servers.
#[derive(Debug)]
pub struct PresenceServer;

impl PresenceServer {
    /// Builds the configured store, binds `bind:http_port` and serves.
    pub async fn start(config: ServerConfig) -> Result<PresenceServerHandle> {
        let store = config.build_store().await?;
        let addr = SocketAddr::new(config.bind, config.http_port);
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
            what: format!("binding presence HTTP on {addr}"),
            source,
        })?;
        Self::start_with(config, store, listener).await
    }

    /// Serves `store` on an already bound `listener` (tests bind 127.0.0.1:0), with a
    /// sweeper every `sweep_interval_ms`.
    pub async fn start_with(
        config: ServerConfig,
        store: Arc<dyn SessionStore>,
        listener: TcpListener,
    ) -> Result<PresenceServerHandle> {
        let addr = listener.local_addr().map_err(|source| Error::Io {
            what: "reading the bound address".into(),
            source,
        })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let app = router(
            store.clone(),
            &config,
            crate::prometheus_handle(),
            stop_rx.clone(),
        );
        let sweeper = spawn_sweeper(
            store.clone(),
            Duration::from_millis(config.sweep_interval_ms),
        );
        let mut stop = stop_rx;
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        });
        tracing::info!(%addr, backend = store.backend(), "presence server listening");
        Ok(PresenceServerHandle {
            addr,
            store,
            stop: stop_tx,
            task: Some(task),
            sweeper: Some(sweeper),
        })
    }
}

/// A running presence server.
#[derive(Debug)]
pub struct PresenceServerHandle {
    addr: SocketAddr,
    store: Arc<dyn SessionStore>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    sweeper: Option<SweeperHandle>,
}

impl PresenceServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The store being served.
    pub fn store(&self) -> Arc<dyn SessionStore> {
        self.store.clone()
    }

    /// Stops accepting, ends event streams, finishes in-flight requests, stops the sweeper.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        if let Some(sweeper) = self.sweeper.take() {
            sweeper.shutdown().await;
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    return Err(Error::Io {
                        what: "serving presence HTTP".into(),
                        source,
                    });
                }
                Err(e) => {
                    return Err(Error::Io {
                        what: "presence server task".into(),
                        source: std::io::Error::other(e.to_string()),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Drop for PresenceServerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

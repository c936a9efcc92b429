//! The HTTP client SDK of the presence server, wrapped in the resilience primitives: a
//! client-side token bucket (10/s, burst 20), a circuit breaker for writes (5 failures /
//! 30 s) and one for listing (3 / 10 s), and retries with backoff, jitter and a budget.
//! It implements [`PresenceStore`], so node-list can use a remote server like a local store.

use crate::{
    AuthFailure, Error, EventStream, ListFilter, PresenceEvent, PresenceStore, Result,
    SessionToken, SignedLogin,
};
use dag_core::{NodeId, NodeInfo, Signer};
use futures::StreamExt;
use parking_lot::Mutex;
use resilience::{
    BreakerError, CircuitBreaker, CircuitBreakerConfig, RetryBudget, RetryDecision, RetryError,
    RetryPolicy, TokenBucket, TokenBucketConfig, retry_with,
};
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Settings of a [`PresenceClient`]. `Default` is the documented policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceClientConfig {
    /// Client-side rate limit (10/s, burst 20).
    pub rate: TokenBucketConfig,
    /// Breaker for login / heartbeat / logout (5 failures, 30 s).
    pub breaker: CircuitBreakerConfig,
    /// Breaker for listing and events (3 failures, 10 s).
    pub list_breaker: CircuitBreakerConfig,
    /// Retry policy (3 attempts, 0.5 s doubling, jitter).
    pub retry: RetryPolicy,
    /// Retry budget: deposit ratio per request and reserve.
    pub retry_budget_ratio: f64,
    /// Retry budget reserve.
    pub retry_budget_reserve: u32,
    /// Timeout of one request (not of the event stream).
    pub request_timeout: Duration,
    /// Local address to send from (tests use 127.0.0.2 to look like another client).
    pub local_address: Option<IpAddr>,
}

impl Default for PresenceClientConfig {
    fn default() -> Self {
        PresenceClientConfig {
            rate: TokenBucketConfig {
                rate_per_sec: 10.0,
                burst: 20,
            },
            breaker: CircuitBreakerConfig {
                max_failures: 5,
                reset_timeout: Duration::from_secs(30),
                half_open_probes: 1,
            },
            list_breaker: CircuitBreakerConfig {
                max_failures: 3,
                reset_timeout: Duration::from_secs(10),
                half_open_probes: 1,
            },
            retry: RetryPolicy::default(),
            retry_budget_ratio: 0.2,
            retry_budget_reserve: 10,
            request_timeout: Duration::from_secs(2),
            local_address: None,
        }
    }
}

/// The node key a client signs logins with, and the session the last login obtained.
struct Identity {
    signer: Arc<dyn Signer>,
    node: NodeId,
    session: Mutex<SessionState>,
}

#[derive(Default)]
struct SessionState {
    /// The token of the newest successful login, and that login's timestamp.
    token: Option<(SessionToken, u64)>,
    /// The newest timestamp signed so far (logins are strictly increasing).
    last_issued: u64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.node.short())
    }
}

/// HTTP client of the presence server. Cheap to clone (clones share limits, breakers and
/// the session). Writes (login, heartbeat, logout) need the node's key:
/// [`with_signer`](Self::with_signer); a client without one can only read.
#[derive(Debug, Clone)]
pub struct PresenceClient {
    identity: Option<Arc<Identity>>,
    base: String,
    http: reqwest::Client,
    config: PresenceClientConfig,
    bucket: TokenBucket,
    breaker: CircuitBreaker,
    list_breaker: CircuitBreaker,
    budget: RetryBudget,
}

fn http_err(op: &'static str, e: reqwest::Error) -> Error {
    Error::Unavailable {
        backend: "http",
        op,
        detail: e.to_string(),
    }
}

/// Whether an error means the server (or the path to it) is failing.
fn is_outage(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. })
        || matches!(e, Error::UnexpectedStatus { status, .. } if *status >= 500)
}

impl PresenceClient {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str, config: PresenceClientConfig) -> Result<Self> {
        let mut builder = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(30));
        if let Some(ip) = config.local_address {
            builder = builder.local_address(ip);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        Ok(PresenceClient {
            identity: None,
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            bucket: TokenBucket::new(config.rate),
            breaker: CircuitBreaker::new(config.breaker),
            list_breaker: CircuitBreaker::new(config.list_breaker),
            budget: RetryBudget::new(config.retry_budget_ratio, config.retry_budget_reserve),
            config,
        })
    }

    /// Signs logins with `signer` (the node's ML-DSA-87 key): this client then logs in,
    /// heartbeats and logs out as that node only, carrying the session token each signed
    /// login obtains.
    pub fn with_signer(mut self, signer: Arc<dyn Signer>) -> Self {
        let node = NodeId::from_public_key(signer.public_key());
        self.identity = Some(Arc::new(Identity {
            signer,
            node,
            session: Mutex::new(SessionState::default()),
        }));
        self
    }

    /// The identity for a write about `node`, or the typed refusal.
    fn identity_for(&self, node: NodeId) -> Result<&Identity> {
        match &self.identity {
            Some(i) if i.node == node => Ok(i),
            _ => Err(Error::Unauthorized {
                node,
                reason: AuthFailure::NoIdentity,
            }),
        }
    }

    /// A heartbeat or logout: POSTs `node` and its session token to `path`; 404 means
    /// presence does not know the node.
    async fn session_call(&self, what: &'static str, path: &str, node: NodeId) -> Result<()> {
        let session = self.session_for(node)?;
        self.call(what, &self.breaker, || {
            self.http
                .post(self.url(path))
                .json(&json!({ "node_id": node, "session": session }))
        })
        .await
        .map(|_| ())
        .map_err(|e| match e {
            Error::UnexpectedStatus { status: 404, .. } => Error::UnknownNode(node),
            e => e.about(node),
        })
    }

    /// The current session token for `node` (`UnknownNode` if it has not logged in, so
    /// callers log in as they would after presence forgot them).
    fn session_for(&self, node: NodeId) -> Result<SessionToken> {
        self.identity_for(node)?
            .session
            .lock()
            .token
            .as_ref()
            .map(|(t, _)| t.clone())
            .ok_or(Error::UnknownNode(node))
    }

    /// The write-path breaker (to observe its state).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The listing breaker.
    pub fn list_breaker(&self) -> &CircuitBreaker {
        &self.list_breaker
    }

    /// Sends one request through rate limit → breaker, mapping statuses to errors.
    async fn once(
        &self,
        op: &'static str,
        breaker: &CircuitBreaker,
        req: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<serde_json::Value> {
        self.bucket.acquire().await;
        let timeout = self.config.request_timeout;
        let r = breaker
            .call_classified(
                || async {
                    let resp = req()
                        .timeout(timeout)
                        .send()
                        .await
                        .map_err(|e| http_err(op, e))?;
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = resp.text().await.map_err(|e| http_err(op, e))?;
                    let body: serde_json::Value =
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
                    let message = body
                        .get("message")
                        .and_then(|m| m.as_str())
                        .map_or_else(|| text.chars().take(200).collect(), str::to_owned);
                    let code = body.get("error").and_then(|c| c.as_str());
                    match status.as_u16() {
                        200..=299 => Ok(body),
                        400 => Err(Error::BadRequest(message)),
                        403 => match code.and_then(AuthFailure::from_code) {
                            // The node is filled in by the caller (`Error::about`).
                            Some(reason) => Err(Error::Unauthorized {
                                node: NodeId::from_bytes([0; 32]),
                                reason,
                            }),
                            None => Err(Error::UnexpectedStatus {
                                op,
                                status: 403,
                                body: message,
                            }),
                        },
                        429 => Err(Error::RateLimited {
                            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
                        }),
                        503 => Err(Error::Unavailable {
                            backend: "http",
                            op,
                            detail: message,
                        }),
                        s => Err(Error::UnexpectedStatus {
                            op,
                            status: s,
                            body: message,
                        }),
                    }
                },
                is_outage,
            )
            .await;
        r.map_err(|e| match e {
            BreakerError::Open(open) => Error::CircuitOpen(open),
            BreakerError::Inner(e) => e,
        })
    }

    async fn call(
        &self,
        op: &'static str,
        breaker: &CircuitBreaker,
        req: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<serde_json::Value> {
        retry_with(
            &self.config.retry,
            Some(&self.budget),
            |e: &Error| match e {
                // Honour the server's Retry-After.
                Error::RateLimited { retry_after } => RetryDecision::RetryAfter(*retry_after),
                e if is_outage(e) => RetryDecision::Retry,
                _ => RetryDecision::Stop,
            },
            |_| self.once(op, breaker, &req),
        )
        .await
        .map_err(RetryError::into_inner)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `GET /healthz`.
    pub async fn healthz(&self) -> Result<()> {
        self.call("healthz", &self.list_breaker, || {
            self.http.get(self.url("/healthz"))
        })
        .await
        .map(|_| ())
    }
}

/// Parses one SSE frame (lines up to a blank line) into an event, if it carries one.
fn parse_frame(frame: &str) -> Option<Result<PresenceEvent>> {
    let mut event = "message";
    let mut data = String::new();
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    match event {
        "join" | "update" | "leave" => {
            Some(serde_json::from_str(&data).map_err(|e| Error::Corrupt {
                what: format!("{event} event from presence server"),
                detail: e.to_string(),
            }))
        }
        "resync" => Some(Err(Error::EventsMissed {
            missed: data.trim().parse().unwrap_or(0),
        })),
        _ => None,
    }
}

#[async_trait::async_trait]
impl PresenceStore for PresenceClient {
    fn backend(&self) -> &'static str {
        "http"
    }

    /// Signs a login with this client's key (a fresh, strictly increasing timestamp, so
    /// no two logins of this client look like a replay) and keeps the session it obtains.
    async fn login(&self, info: NodeInfo) -> Result<()> {
        let node = info.node_id;
        let identity = self.identity_for(node)?;
        let issued_at_ms = {
            let mut s = identity.session.lock();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            s.last_issued = now.max(s.last_issued + 1);
            s.last_issued
        };
        // One signature per login; a retry re-sends the same (still fresh) login.
        let signed = SignedLogin::sign(info, issued_at_ms, identity.signer.as_ref());
        let body = self
            .call("login", &self.breaker, || {
                self.http.post(self.url("/presence/login")).json(&signed)
            })
            .await
            .map_err(|e| e.about(node))?;
        let token: SessionToken = body
            .get("session")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| Error::Corrupt {
                what: "login answer from presence server".into(),
                detail: "no session token".into(),
            })?;
        let mut s = identity.session.lock();
        if s.token.as_ref().is_none_or(|(_, t)| *t < issued_at_ms) {
            s.token = Some((token, issued_at_ms));
        }
        Ok(())
    }

    async fn heartbeat(&self, node: NodeId) -> Result<()> {
        self.session_call("heartbeat", "/presence/heartbeat", node)
            .await
    }

    async fn logout(&self, node: NodeId) -> Result<()> {
        self.session_call("logout", "/presence/logout", node).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<NodeInfo>> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(r) = filter.role {
            query.push(("role", r.as_str().to_owned()));
        }
        if let Some(c) = &filter.city {
            query.push(("city", c.clone()));
        }
        let body = self
            .call("list", &self.list_breaker, || {
                self.http.get(self.url("/presence")).query(&query)
            })
            .await?;
        let nodes = body
            .get("nodes")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        serde_json::from_value(nodes).map_err(|e| Error::Corrupt {
            what: "node list from presence server".into(),
            detail: e.to_string(),
        })
    }

    async fn subscribe(&self) -> Result<EventStream> {
        self.bucket.acquire().await;
        let permit = self.list_breaker.try_acquire()?;
        let resp = match self
            .http
            .get(self.url("/presence/events"))
            .timeout(Duration::from_secs(60 * 60 * 24 * 365))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                permit.success();
                r
            }
            Ok(r) => {
                let status = r.status().as_u16();
                if status >= 500 {
                    permit.failure();
                } else {
                    permit.success();
                }
                return Err(match status {
                    429 => Error::RateLimited {
                        retry_after: Duration::from_secs(1),
                    },
                    503 => Error::Unavailable {
                        backend: "http",
                        op: "subscribe",
                        detail: "server answered 503".into(),
                    },
                    s => Error::UnexpectedStatus {
                        op: "subscribe",
                        status: s,
                        body: String::new(),
                    },
                });
            }
            Err(e) => {
                permit.failure();
                return Err(http_err("subscribe", e));
            }
        };
        let bytes = resp.bytes_stream();
        // Frames decoded but not yet handed out, and the byte-level decoder.
        let state = (
            bytes,
            crate::sse::SseDecoder::default(),
            std::collections::VecDeque::<String>::new(),
            false,
        );
        let stream = futures::stream::unfold(
            state,
            |(mut bytes, mut decoder, mut ready, done)| async move {
                if done {
                    return None;
                }
                loop {
                    if let Some(frame) = ready.pop_front() {
                        if let Some(item) = parse_frame(&frame) {
                            return Some((item, (bytes, decoder, ready, false)));
                        }
                        continue;
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => ready.extend(decoder.push(&chunk)),
                        Some(Err(e)) => {
                            let err = Err(http_err("event stream", e));
                            return Some((err, (bytes, decoder, ready, true)));
                        }
                        None => return None,
                    }
                }
            },
        );
        Ok(stream.boxed())
    }

    async fn ping(&self) -> Result<()> {
        self.healthz().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag_core::Role;

    #[test]
    fn parses_sse_frames() {
        let id = NodeId::from_bytes([7; 32]);
        let leave = PresenceEvent::Leave {
            node_id: id,
            reason: crate::LeaveReason::Expired,
        };
        let frame = format!(
            "event: leave\ndata: {}\n\n",
            serde_json::to_string(&leave).unwrap()
        );
        assert_eq!(parse_frame(&frame).unwrap().unwrap(), leave);
        assert!(parse_frame(": keep-alive\n\n").is_none());
        assert!(matches!(
            parse_frame("event: resync\ndata: 3\n\n"),
            Some(Err(Error::EventsMissed { missed: 3 }))
        ));
        assert!(matches!(
            parse_frame("event: join\ndata: {\n\n"),
            Some(Err(Error::Corrupt { .. }))
        ));
        let _ = Role::Light;
    }
}

//! # gateway
//!
//! The DApp HTTP gateway of a city representative (axum): a versioned JSON API under `/v1`
//! — submit a tx, read it back with its receipts, ordering, proof, execution outcome and
//! cross-city state, read an account's balance and nonce and its stake, the committee and
//! epoch, request a repair,
//! follow what happens as server-sent events resumable with `Last-Event-ID`, list the live
//! nodes and a stripe's holders — with its OpenAPI document generated from the code at
//! `/v1/openapi.json`, the explorer page at `/`, `/healthz` and `/metrics`. Per-IP rate
//! limits answer 429 with `Retry-After`; bodies are bounded; CORS is configurable.
//!
//! The gateway knows the city only through [`GatewayBackend`]; the node crate implements it
//! over admission, the stores and the manifests, and starts [`Gateway`] when configured.

mod backend;
mod error;
pub mod json;
mod server;
pub mod stake;

pub use backend::{
    CommitteeMember, EventKind, GatewayBackend, GatewayEvent, NodeView, NodesView, RepairRefused,
    RepairState, RepairTicket, Subscription, TierLatency,
};
pub use error::{Error, Result};
pub use server::{ApiDoc, ApiError, EventFilter, Gateway, GatewayHandle, router, status_of};

use serde::Deserialize;
use std::net::SocketAddr;

/// Gateway settings (TOML `[city.gateway]`). `Default` holds the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Sustained requests per second per client IP on `/v1` (0: no limit).
    pub rate_limit_per_second: u32,
    /// Burst per client IP.
    pub rate_limit_burst: u32,
    /// Key the rate limit on the first `X-Forwarded-For` address (behind a proxy only).
    pub trust_forwarded_for: bool,
    /// Largest request body, bytes (a signed tx with a full 64 KiB payload in hex fits).
    pub max_body_bytes: usize,
    /// Most concurrent `/v1/events` subscribers (beyond: 503).
    pub max_event_subscribers: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8780)),
            cors_origins: Vec::new(),
            rate_limit_per_second: 30,
            rate_limit_burst: 60,
            trust_forwarded_for: false,
            max_body_bytes: 256 * 1024,
            max_event_subscribers: 1024,
        }
    }
}

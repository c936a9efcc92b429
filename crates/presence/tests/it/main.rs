//! Integration tests of the presence crate: the store conformance suite (memory and a real
//! redis-server), the HTTP API, the client SDK and Redis outages.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod conformance;
mod failover;
mod http;
mod support;
mod tls;

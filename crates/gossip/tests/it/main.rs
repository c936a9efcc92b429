//! Integration tests of gossip: the seeded simulation at scale, and real agents over UDP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;
mod udp;

//! The gossip error type.

use dag_core::NodeId;
use std::net::SocketAddr;
use thiserror::Error;

/// Errors of gossip.
#[derive(Debug, Error)]
pub enum Error {
    /// The UDP socket could not be bound.
    #[error("cannot bind the gossip socket on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A datagram was too short or malformed.
    #[error("malformed gossip datagram from {from}: {what}")]
    Malformed {
        /// Sender address.
        from: SocketAddr,
        /// What was wrong.
        what: &'static str,
    },
    /// A handshake's signature, key hash or time did not check out.
    #[error("gossip handshake from {from} rejected: {reason}")]
    Handshake {
        /// Sender address.
        from: SocketAddr,
        /// Why.
        reason: &'static str,
    },
    /// A node that is not allowed in this city's gossip tried to join.
    #[error("node {node} is not allowed to gossip here")]
    NotAllowed {
        /// The node.
        node: NodeId,
    },
    /// A data datagram failed its MAC, came on an unknown session or was a replay.
    #[error("gossip datagram from {from} rejected: {reason}")]
    Unauthentic {
        /// Sender address.
        from: SocketAddr,
        /// Why.
        reason: &'static str,
    },
    /// The post-quantum KEM failed (an aws-lc internal error or a bad key).
    #[error("ML-KEM-768 {op} failed")]
    Kem {
        /// Which operation.
        op: &'static str,
    },
    /// A configuration value is invalid.
    #[error("invalid gossip setting {key}: {reason}")]
    Config {
        /// The setting.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// foca refused an input.
    #[error("SWIM: {0}")]
    Swim(String),
    /// The agent has stopped.
    #[error("the gossip agent has stopped")]
    Stopped,
}

/// Result with the gossip [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

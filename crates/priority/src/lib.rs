//! # priority
//!
//! Which light nodes hold a tx (or a stripe). Each candidate gets a score from normalised,
//! configurable factors — distance `max(0, 1 − km / 20000)`, free capacity, load,
//! session/uptime `min(1, secs / 3600)`, latency, login rate — shown as 0–9. Holders are
//! chosen by **weighted rendezvous hashing** on the key (a tx id or stripe id) with a weight
//! rising with the score (score³ by default): stable (when one of n nodes joins or leaves, about 1/n of assignments move) and
//! deterministic (no randomness inside). Holders are distinct nodes, spread over distinct
//! failure domains (city, zone) when enough exist. The urgent profile (repair and ack paths)
//! weighs latency first.
//!
//! ```
//! use dag_core::{NodeId, NodeInfo, Role};
//! use priority::{Candidate, GeoPoint, HolderSelector, NodeStats, Profile, SelectRequest, WeightedRendezvous};
//!
//! let nodes: Vec<NodeInfo> = (0..8u8).map(|i| NodeInfo {
//!     node_id: NodeId::from_bytes([i; 32]), role: Role::Light,
//!     grpc_addr: format!("127.0.0.1:{}", 7000 + u16::from(i)), city_id: "JP-13".into(),
//!     zone: format!("z{}", i % 4), lat: 35.68, lon: 139.69, free_capacity: 50 << 30,
//!     load: 0.2, version: "0.1.0".into(), session_start_ms: 0,
//! }).collect();
//! let candidates: Vec<Candidate> = nodes.iter()
//!     .map(|n| Candidate::new(n, NodeStats { latency_ms: Some(8.0), logins_per_hour: 1.0 }))
//!     .collect();
//! let selector = WeightedRendezvous::default();
//! let req = SelectRequest {
//!     key: [7; 32], origin: GeoPoint { lat: 35.69, lon: 139.69 }, now_ms: 7_200_000,
//!     profile: Profile::Normal, count: 4,
//! };
//! let sel = selector.select(&req, &candidates);
//! assert_eq!(sel.holders.len(), 4);
//! assert_eq!(sel.distinct_domains, 4); // one per zone
//! assert_eq!(sel, selector.select(&req, &candidates)); // deterministic
//! ```

mod error;
mod rendezvous;
mod score;

pub use error::{Error, Result};
pub use rendezvous::{FirstN, Holder, Prepared, Selection, WeightedRendezvous, rendezvous_hash};
pub use score::{
    Candidate, Factors, GeoPoint, NodeStats, PriorityConfig, Profile, Score, Weights, haversine_km,
};

/// Chooses the holders of one key among candidates. Implementations are deterministic.
pub trait HolderSelector: Send + Sync {
    /// Up to `req.count` distinct holders, best first.
    fn select(&self, req: &SelectRequest, candidates: &[Candidate<'_>]) -> Selection;
}

/// One holder-choice question.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectRequest {
    /// What is placed: a tx id, stripe id or other 32-byte key.
    pub key: [u8; 32],
    /// Where the data comes from (the tx position or the city node), for the distance factor.
    pub origin: GeoPoint,
    /// Now, ms since the Unix epoch (for session length).
    pub now_ms: u64,
    /// Weight profile (from the tx's flag: urgent → [`Profile::Urgent`]).
    pub profile: Profile,
    /// Holders wanted (n = k + m for an erasure-coded stripe).
    pub count: usize,
}

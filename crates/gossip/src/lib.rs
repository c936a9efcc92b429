//! # gossip
//!
//! SWIM membership among the nodes of a city (light nodes and representatives), so that the
//! live view stays correct while presence is slow, partitioned or down.
//!
//! - [`Member`]: a member's identity on the wire (node id, UDP address, generation).
//! - [`GossipConfig`]: SWIM timing (probe period, suspicion, fan-out 8) with documented
//!   defaults.
//! - [`Sessions`]: the sans-IO datagram authentication. A signed ML-DSA-87 handshake carries
//!   an ML-KEM-768 exchange; its shared secret keys a BLAKE3 MAC on every later datagram
//!   (89 bytes of overhead instead of a 4.6 KB signature per datagram).
//! - [`GossipAgent`]: the async UDP driver of one node (foca + [`Sessions`]), with a stream
//!   of [`GossipEvent`]s and a view of live members.
//! - [`sim`]: a deterministic, seeded simulation of many foca instances without sockets
//!   (convergence, detection time, bytes per node per second).

mod agent;
mod config;
mod error;
mod identity;
mod session;
pub mod sim;
mod suspicion;

pub use agent::{GossipAgent, GossipEvent, GossipHandle, GossipStats, GossipView, MemberState};
pub use config::GossipConfig;
pub use error::{Error, Result};
pub use identity::Member;
pub use session::{AllowFn, Opened, SealOutcome, Sessions, WIRE_OVERHEAD};

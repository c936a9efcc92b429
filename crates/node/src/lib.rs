//! # node
//!
//! The role runtimes that wire City Chain's crates into running processes, and the
//! in-process devnet behind `city-node demo`.
//!
//! - City role ([`start_city`]): gRPC `CityNode` over the admission pipeline — strict
//!   decode, replay precheck, ML-DSA-87 verification on a bounded pool, durable replay-safe
//!   storage in redb with group commit — plus gRPC health and reflection.
//! - [`consensus_net`]: a city representative running the DAG consensus over gRPC;
//!   [`continent`]: the continent's log of quorum-certified checkpoints; [`global`]: the log
//!   of continents' tree heads; [`federation_push`]: a representative's disk-backed push of
//!   its checkpoints; [`genesis_fed`]: the federation section of a genesis file.
//! - [`audit`]: what `repair-cli` runs: local checks of a repaired tx, stripe audits.
//! - [`demo`]: starts a devnet on loopback, drives signed load over real gRPC, and prints
//!   what it measured.

pub mod audit;
mod city;
pub mod consensus_net;
pub mod continent;
pub mod demo;
pub mod devnet;
mod error;
mod fed_log;
pub mod federation_push;
pub mod genesis_fed;
pub mod global;
mod grpc_transport;
mod light;
pub mod membership;
mod net;
pub mod pipeline;
mod placement;
mod roles;
mod server;
mod store;

pub use city::{CityNode, Counters, PopCheck, PopMode};
pub use error::{Error, Result};
pub use grpc_transport::GrpcTransport;
pub use light::{LightConfig, LightHandle, LightNode, serve_light, start_light};
pub use pipeline::{
    HeldTx, HolderDirectory, MemoryTransport, Pipeline, PipelineConfig, PipelineError,
    RepairReport, Restored, ShardTransport, StaticDirectory, TransportError,
};
pub use placement::PriorityDirectory;
pub use roles::{MembershipConfig, RunningRole, run_city, run_light};
pub use server::{
    CityConfig, CityHandle, CityParts, StorageParts, load_or_create_key, start_city,
    start_city_with,
};
pub use store::{Conflict, TxStore};

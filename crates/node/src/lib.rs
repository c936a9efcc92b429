//! # node
//!
//! The role runtimes that wire City Chain's crates into running processes. One module per
//! role, each with one composition root that the binary, the devnet, the demo and the
//! tests all call; the runtime plumbing they share is written once in [`runtime`].
//!
//! - **city** ([`run_city`], [`run_city_with`]): admission (strict decode, replay
//!   precheck, ML-DSA-87 verification on a bounded pool, proof of place, flagging),
//!   durable replay-safe storage in redb with group commit, the light-node pipeline
//!   (micro-batches erasure-coded onto distinct light nodes, signed receipts), re-replication
//!   when a light node leaves; [`consensus`]: the city's DAG consensus among its
//!   representatives over gRPC.
//! - **light** ([`run_light`], [`start_light`]): the `ShardStore` service, receipts signed
//!   with the node key.
//! - **continent** ([`continent`]): the log of quorum-certified city checkpoints;
//!   **global** ([`global`]): the log of continents' tree heads; [`federation_push`]: a
//!   representative's disk-backed push of its checkpoints.
//!
//! The demo, the devnet and the load generator live in the `devnet` crate; the operator's
//! audit client in `audit`: servers link neither.

mod city;
/// The DAG consensus among a city's representatives over gRPC.
pub use city::consensus;
pub mod continent;
mod error;
mod fed_log;
pub mod federation_push;
pub mod global;
pub mod gossip;
mod light;
pub mod metrics_catalog;
mod role;
pub mod runtime;

pub use city::admission::{CityNode, Counters, PopCheck, PopMode};
pub use city::challenges::{
    AuditConfig, AuditHandle, CONTRIBUTIONS_FILE, ChallengeProbe, ChallengeResult, ContributionLog,
    ContributionRecord, EpochReport, GrpcProbe, ProbeFailure, audit_epoch, spawn_audit,
};
pub use city::committee::CommitteeParts;
pub use city::cross::{
    CROSS_TIMEOUT_MS, CheckpointCert, GenesisCertificates, genesis_certificates,
};
pub use city::events::{EventBus, EventBusConfig};
pub use city::execution::{Blocked, ExecutedCheckpoint, Execution};
pub use city::gateway::CityGateway;
pub use city::light_admission::AdmissionConfig;
pub use city::membership::{NodeListDirectory, node_info, spawn_rereplicator};
pub use city::order::{Applied, OrderStore, StoredCheckpoint, TxOrdering};
pub use city::pipeline::{
    HeldTx, HoldPriority, HolderDirectory, Pipeline, PipelineConfig, PipelineError,
    PlacementHealth, RepairReport, Restored, ShardTransport, TransportError,
};
pub use city::placement::PriorityDirectory;
pub use city::recovery::RecoveryReport;
pub use city::repair_protocol::{
    LightRepairTier, RepairConfig, RepairService, RepairTier, TierAnswer,
};
pub use city::stake::reads::StakeReads;
pub use city::stake::{
    CommitReport, DposApplier, STAKE_APPLIER, StakeError, StakeStore, committee_of, double_sign_tx,
    dpos_genesis_of,
};
pub use city::stake_reporter::{
    COMMIT_SUMMARIES, CommitSummary, MissedIncident, MissedRounds, MissedRule,
    challenge_incident_digest, challenge_incidents, incident_digest,
    spawn_challenge_incident_reporter, spawn_missed_round_reporter,
};
pub use city::stake_reporter::{
    ChallengeResults, ChallengeSlot, GRACE_CHECKPOINTS, Pending, SendOutcome, SenderConfig,
    SenderQueue, StripeReceipts, SystemTxSender, SystemTxSink, committed_receipts,
    contribution_payloads, in_charge, spawn_contribution_reporter, spawn_evidence_reporter,
};
pub use city::store::{Conflict, TxStore};
#[cfg(any(test, feature = "test-utils"))]
pub use city::test_utils::{MemoryTransport, StaticDirectory};
pub use city::transport::GrpcTransport;
pub use city::working_set::{CityWorkingSet, PassReport, WorkingSetConfig};
pub use city::{
    CityConfig, CityEnv, CityHandle, CityParts, StorageParts, load_or_create_key, run_city,
    run_city_with, start_city, start_city_with,
};
pub use error::{Error, Result};
/// The DApp HTTP gateway (re-exported: its config is part of [`CityConfig`]).
pub use gateway;
/// The genesis file (re-exported: every role reads it).
pub use genesis;
pub use light::{
    LightConfig, LightHandle, LightNode, LightWriters, run_light, run_light_with, serve_light,
    serve_light_over, start_light,
};
pub use role::{MembershipConfig, RunningRole};

//! # rpc
//!
//! City Chain's gRPC layer. The protobuf types generated from `proto/` live in [`pb`] and
//! never leave this crate's API boundary: the rest of the workspace speaks dag-core types.
//!
//! - [`convert`]: protobuf ⇄ dag-core conversions, strict (a malformed message becomes a
//!   typed [`ConvertError`], never a panic or a half-filled value).
//! - [`CityApi`]: what a city node implements; [`CityNodeService`] adapts it to tonic,
//!   mapping each [`Rejection`] to a precise gRPC status.
//! - [`CityClient`]: a typed client.
//! - [`StakeInfo`], [`CommitteeInfo`]: the stake reads (`GetStake`, `GetCommittee`), with
//!   their typed refusal [`StakeReadError`].
//! - [`ShardHolder`], [`ShardStoreService`], [`ShardStoreClient`]: the light nodes'
//!   `ShardStore` service (PutShard, streaming GetShard, Challenge).
//! - [`ConsensusService`], [`ConsensusClient`] (between representatives) and, in
//!   `federation`, [`FederationService`], [`FederationClient`] (continent and global logs):
//!   proto/citychain/v1/consensus.proto; [`CertifiedCheckpoint`] is what a city's committee certifies,
//!   [`CertifiedHandover`] how an old committee hands the continent over to the next.
//! - [`TxProof`]: a tx's offline proof of ordering and federation.
//! - [`health_and_reflection`]: gRPC health and reflection services for every server.

mod api;
mod checkpoints;
mod city_client;
mod city_server;
pub mod codec;
mod consensus;
pub mod convert;
mod cross_proof;
mod crosscity;
mod error;
mod federation;
pub mod methods;
mod proof;
mod repair;
mod shard_store;
mod slim;
mod stake;
pub mod status;
pub mod tls;

/// Code generated from `proto/citychain/v1/city.proto` and `proto/citychain/v1/shardstore.proto`. Only this crate uses
/// it directly.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("citychain.v1");

    /// Encoded file descriptor set of every proto file, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("citychain_descriptor");
}

pub use api::{
    AccountInfo, CityApi, ExecutionOutcome, NodeStatus, OrderingInfo, RejectCode, Rejection,
    Repaired, StripeHolder, StripeInfo, Submitted, TxExecution, TxRecord, TxState,
};
pub use checkpoints::{
    CheckpointRange, MAX_CHECKPOINTS_PER_READ, MAX_SYNCED_BATCHES, OrderedCheckpoint,
};
pub use city_client::CityClient;
pub use city_server::{CityNodeService, MAX_MESSAGE_BYTES, MAX_RESPONSE_BYTES, STREAM_CONCURRENCY};
pub use consensus::{
    ConsensusClient, ConsensusHandler, ConsensusService, DeliverError, MAX_CONSENSUS_MESSAGE_BYTES,
};
pub use convert::ConvertError;
pub use cross_proof::{
    CheckpointCert, CrossTx, CrossTxProofError, GenesisCertificates, ProvenCrossTx, verify_cross_tx,
};
pub use crosscity::{
    CrossCityApi, CrossCityClient, CrossCityGrpc, CrossState, CrossTransferBody, CrossTransferView,
};
pub use error::{ClientError, Result};
pub use federation::{
    CITY_CHECKPOINT_DOMAIN, CITY_HANDOVER_DOMAIN, CONTINENT_RECEIPT_DOMAIN, CertifiedCheckpoint,
    CertifiedHandover, CheckpointHeader, CityHead, CommitteeHandover, FEDERATION_VERSION,
    FederationClient, FederationError, FederationHandler, FederationProof, FederationService,
    GLOBAL_RECEIPT_DOMAIN, InclusionReceipt, LogKind, MAX_CERTIFICATE_SIGNERS,
    MAX_FEDERATION_MESSAGE_BYTES, MAX_HANDOVER_MEMBERS, ProofAnswer, SignedTreeHead,
    TREE_HEAD_DOMAIN, TreeHeadPush, quorum_stake, sign_handover_share, sign_share,
};
pub use proof::{
    GlobalAnchor, MAX_PROOF_CHECKPOINT_BATCHES, MAX_TX_PROOF_BYTES, ProofError, TxProof,
    VerifiedOrdering,
};
pub use repair::{
    REPAIR_ACK_PAYLOAD_LEN, REPAIR_REQUEST_PAYLOAD_LEN, RepairAckPayload, RepairAnswer,
    RepairClient, RepairGrpc, RepairRequestPayload, RepairResponder,
};
pub use shard_store::{
    MAX_SHARD_BYTES, MAX_SHARD_MESSAGE_BYTES, PutAuthority, SHARD_CHUNK_BYTES, ShardChunkStream,
    ShardHolder, ShardStoreClient, ShardStoreService, Stored, status_of,
};
pub use slim::STREAM_STRIPE_WINDOW;
pub use stake::{
    CommitteeInfo, CommitteeMemberInfo, DposTermInfo, StakeDelegation, StakeInfo, StakeLot,
    StakeNode, StakeNodeKind, StakeReadError, StakeUnbonding,
};
pub use status::{ERROR_DOMAIN, error_info};

/// Fully qualified names of the services every server carries beside its own: health and
/// both versions of reflection.
pub const STANDARD_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A reflection builder over every City Chain proto plus health and reflection, listing
/// exactly `served` and [`STANDARD_SERVICES`].
fn reflection_builder(served: &[&str]) -> tonic_reflection::server::Builder<'static> {
    let mut b = tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    for name in served.iter().chain(STANDARD_SERVICES.iter()) {
        b = b.with_service_name(*name);
    }
    b
}

/// The gRPC health service (reporting `SERVING` for `service_name`) and the reflection
/// services, v1 and v1alpha, ready to add to a tonic router. Reflection lists exactly the
/// services in `served` (fully qualified, e.g. `citychain.v1.ShardStoreService`) and
/// [`STANDARD_SERVICES`], so a client sees what this server answers, not every proto.
#[allow(clippy::type_complexity)]
pub async fn health_and_reflection(
    service_name: &str,
    served: &[&str],
) -> std::result::Result<
    (
        tonic_health::server::HealthReporter,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(service_name, tonic_health::ServingStatus::Serving)
        .await;
    let v1 = reflection_builder(served).build_v1()?;
    let v1alpha = reflection_builder(served).build_v1alpha()?;
    Ok((reporter, health, v1, v1alpha))
}

//! The `Consensus` service between a city's representatives and the `Federation` service a
//! continent serves (proto/consensus.proto), in dag-core terms.
//!
//! - [`ConsensusHandler`] / [`ConsensusService`] / [`ConsensusClient`]: one unary `Deliver`
//!   carrying dag-core's canonical [`Message`] bytes (ProposeBatch, Vote, Certificate,
//!   FetchBatches request and response all map to it by the message's tag byte).
//! - [`CheckpointHeader`] / [`SignedCheckpointHeader`]: what a city pushes for each committed
//!   checkpoint; [`InclusionReceipt`]: the continent's signed answer;
//!   [`FederationHandler`] / [`FederationService`] / [`FederationClient`].
//!
//! Errors are gRPC statuses whose message starts with a short code:
//!
//! | error | gRPC status | prefix |
//! |---|---|---|
//! | undecodable bytes or fields | `InvalidArgument` | `MALFORMED:` |
//! | consensus message rejected by the driver (bad signature, …) | `InvalidArgument` | `REJECTED:` |
//! | sender not in the committee | `PermissionDenied` | `UNKNOWN_SENDER:` |
//! | inbound queue full | `ResourceExhausted` | `OVERLOADED:` |
//! | representative stopping | `Unavailable` | `STOPPING:` |
//! | unknown city or signer (federation) | `PermissionDenied` | `UNKNOWN_CITY:` |
//! | bad header signature (federation) | `Unauthenticated` | `BAD_SIGNATURE:` |
//! | another header at the same (city, sequence) | `AlreadyExists` | `FORK:` |
//! | proof index / size beyond the log | `OutOfRange` | `OUT_OF_RANGE:` |
//! | store failure | `Internal` | `STORE:` |

use crate::{ClientError, Result, pb};
use dag_core::consensus::{Checkpoint, ConsensusError, Message};
use dag_core::merkle::{InclusionProof, leaf_hash};
use dag_core::{
    DecodeError, Hash32, MAX_SIGNATURE_LEN, NodeId, Reader, SignatureError, SignatureVerifier,
    Signer, Writer,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

/// Largest consensus message on the wire (a full fetch response of certificates).
pub const MAX_CONSENSUS_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// Domain tag of a city's checkpoint header signature.
pub const CITY_CHECKPOINT_DOMAIN: &[u8] = b"citychain/city-checkpoint/v1";
/// Domain tag of a continent's inclusion receipt signature.
pub const CONTINENT_RECEIPT_DOMAIN: &[u8] = b"citychain/continent-receipt/v1";

fn status_to_client(s: Status) -> ClientError {
    ClientError::Status {
        code: s.code(),
        message: s.message().to_string(),
    }
}

fn endpoint(addr: &str, connect_timeout: Duration) -> Result<Endpoint> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(url)
        .map_err(|e| ClientError::Status {
            code: Code::InvalidArgument,
            message: format!("bad address {addr}: {e}"),
        })?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true))
}

async fn with_deadline<R>(d: Duration, f: impl Future<Output = Result<R>>) -> Result<R> {
    tokio::time::timeout(d, f).await.unwrap_or_else(|_| {
        Err(ClientError::Status {
            code: Code::DeadlineExceeded,
            message: format!("no answer within {} ms", d.as_millis()),
        })
    })
}

// ---------------------------------------------------------------- Consensus

/// Why a delivered consensus message was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The driver rejected the message (it left no trace).
    #[error(transparent)]
    Rejected(#[from] ConsensusError),
    /// The inbound queue is full; the sender may retry later.
    #[error("inbound queue full")]
    Overloaded,
    /// The representative is stopping.
    #[error("representative is stopping")]
    Stopping,
}

impl DeliverError {
    /// The gRPC status (see the module table).
    pub fn to_status(&self) -> Status {
        match self {
            DeliverError::Rejected(e @ ConsensusError::UnknownAuthority { .. }) => {
                Status::permission_denied(format!("UNKNOWN_SENDER: {e}"))
            }
            DeliverError::Rejected(e @ ConsensusError::Decode(_)) => {
                Status::invalid_argument(format!("MALFORMED: {e}"))
            }
            DeliverError::Rejected(e) => Status::invalid_argument(format!("REJECTED: {e}")),
            DeliverError::Overloaded => Status::resource_exhausted(format!("OVERLOADED: {self}")),
            DeliverError::Stopping => Status::unavailable(format!("STOPPING: {self}")),
        }
    }
}

/// What a representative implements: take one decoded message from committee member
/// `from`, verify and apply it (the driver verifies every message before use).
pub trait ConsensusHandler: Send + Sync + 'static {
    /// Handles `message` from `from`; `Ok` once the driver accepted it.
    fn deliver(
        &self,
        from: NodeId,
        message: Message,
    ) -> impl Future<Output = std::result::Result<(), DeliverError>> + Send;
}

/// Serves the `Consensus` gRPC service by calling a [`ConsensusHandler`].
#[derive(Debug)]
pub struct ConsensusService<T> {
    handler: Arc<T>,
}

impl<T> Clone for ConsensusService<T> {
    fn clone(&self) -> Self {
        ConsensusService {
            handler: self.handler.clone(),
        }
    }
}

impl<T: ConsensusHandler> ConsensusService<T> {
    /// An adapter over `handler`.
    pub fn new(handler: Arc<T>) -> Self {
        ConsensusService { handler }
    }

    /// The tonic server, accepting messages up to [`MAX_CONSENSUS_MESSAGE_BYTES`].
    pub fn into_server(self) -> pb::consensus_server::ConsensusServer<Self> {
        pb::consensus_server::ConsensusServer::new(self)
            .max_decoding_message_size(MAX_CONSENSUS_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_CONSENSUS_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl<T: ConsensusHandler> pb::consensus_server::Consensus for ConsensusService<T> {
    async fn deliver(
        &self,
        request: Request<pb::Envelope>,
    ) -> std::result::Result<Response<pb::DeliverResponse>, Status> {
        let env = request.into_inner();
        let from = NodeId::from_slice(&env.from_node_id)
            .map_err(|e| Status::invalid_argument(format!("MALFORMED: from_node_id: {e}")))?;
        let message = Message::decode(&env.message)
            .map_err(|e| Status::invalid_argument(format!("MALFORMED: message: {e}")))?;
        self.handler
            .deliver(from, message)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::DeliverResponse {}))
    }
}

/// Sends consensus messages to one representative. Cheap to clone; connects lazily and
/// reconnects when the peer comes back.
#[derive(Debug, Clone)]
pub struct ConsensusClient {
    inner: pb::consensus_client::ConsensusClient<Channel>,
    timeout: Duration,
}

impl ConsensusClient {
    /// A lazily connecting client for `addr` (`host:port` or a URL); every call gives up
    /// after `timeout` (connection set-up included).
    pub fn lazy(addr: &str, timeout: Duration) -> Result<Self> {
        let channel = endpoint(addr, timeout)?.connect_lazy();
        Ok(ConsensusClient {
            inner: pb::consensus_client::ConsensusClient::new(channel)
                .max_decoding_message_size(MAX_CONSENSUS_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_CONSENSUS_MESSAGE_BYTES),
            timeout,
        })
    }

    /// Delivers `message` as sent by `from`.
    pub async fn deliver(&self, from: NodeId, message: &Message) -> Result<()> {
        self.deliver_bytes(from, message.encode()).await
    }

    /// Delivers already encoded bytes (for broadcasts that encode once, and for tools that
    /// send deliberately malformed messages).
    pub async fn deliver_bytes(&self, from: NodeId, message: Vec<u8>) -> Result<()> {
        let req = pb::Envelope {
            from_node_id: from.as_bytes().to_vec(),
            message,
        };
        with_deadline(self.timeout, async {
            self.inner
                .clone()
                .deliver(req)
                .await
                .map_err(status_to_client)?;
            Ok(())
        })
        .await
    }
}

// ---------------------------------------------------------------- Federation

/// A city's committed checkpoint as pushed to the continent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckpointHeader {
    /// The city (its id in the continent's configuration).
    pub city: Hash32,
    /// The representative that signs this header (one of the city's keys).
    pub signer: NodeId,
    /// Checkpoint sequence.
    pub sequence: u64,
    /// The committed leader's round.
    pub round: u64,
    /// The leader batch digest.
    pub leader: Hash32,
    /// The checkpoint's running hash ([`Checkpoint::hash`]).
    pub running_hash: Hash32,
    /// Batches the checkpoint orders.
    pub batches: u32,
}

impl CheckpointHeader {
    /// The header of `checkpoint` for `city`, to be signed by `signer`.
    pub fn of(city: Hash32, signer: NodeId, checkpoint: &Checkpoint) -> Self {
        CheckpointHeader {
            city,
            signer,
            sequence: checkpoint.sequence,
            round: checkpoint.leader_round,
            leader: checkpoint.leader.0,
            running_hash: checkpoint.hash(),
            batches: u32::try_from(checkpoint.batches.len()).unwrap_or(u32::MAX),
        }
    }

    /// Canonical encoding: city 32 ‖ signer 32 ‖ sequence u64 ‖ round u64 ‖ leader 32 ‖
    /// running hash 32 ‖ batches u32.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(32 * 4 + 8 * 2 + 4);
        w.raw(&self.city.0)
            .raw(self.signer.as_bytes())
            .u64(self.sequence)
            .u64(self.round)
            .raw(&self.leader.0)
            .raw(&self.running_hash.0)
            .u32(self.batches);
        w.finish()
    }

    /// What the signer signs: [`CITY_CHECKPOINT_DOMAIN`] ‖ [`CheckpointHeader::encode`].
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = CITY_CHECKPOINT_DOMAIN.to_vec();
        m.extend_from_slice(&self.encode());
        m
    }
}

/// A checkpoint header with the signer's ML-DSA-87 signature (not yet checked).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedCheckpointHeader {
    /// The header.
    pub header: CheckpointHeader,
    /// Signature over [`CheckpointHeader::signing_message`].
    pub signature: Vec<u8>,
}

impl SignedCheckpointHeader {
    /// Signs `header` (its `signer` should be the key's node id).
    pub fn sign(header: CheckpointHeader, signer: &(impl Signer + ?Sized)) -> Self {
        let signature = signer.sign(&header.signing_message());
        SignedCheckpointHeader { header, signature }
    }

    /// Checks the signature against the signer's `public_key` (which must hash to
    /// `header.signer`).
    pub fn verify(
        &self,
        public_key: &[u8],
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> std::result::Result<(), SignatureError> {
        if NodeId::from_public_key(public_key) != self.header.signer {
            return Err(SignatureError::Invalid);
        }
        verifier.verify(public_key, &self.header.signing_message(), &self.signature)
    }

    /// Canonical encoding: header ‖ u16 length ‖ signature. The log's leaves are
    /// [`leaf_hash`] of these bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(180 + self.signature.len());
        w.raw(&self.header.encode()).bytes_u16(&self.signature);
        w.finish()
    }

    /// Strict decoding of [`SignedCheckpointHeader::encode`].
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let header = CheckpointHeader {
            city: Hash32(r.bytes32("city")?),
            signer: NodeId::from_bytes(r.bytes32("signer")?),
            sequence: r.u64("sequence")?,
            round: r.u64("round")?,
            leader: Hash32(r.bytes32("leader")?),
            running_hash: Hash32(r.bytes32("running_hash")?),
            batches: r.u32("batches")?,
        };
        let signature = r.bytes_u16("signature", MAX_SIGNATURE_LEN)?.to_vec();
        r.finish()?;
        Ok(SignedCheckpointHeader { header, signature })
    }

    /// The RFC 6962 leaf hash of this header in a continent log.
    pub fn leaf_hash(&self) -> Hash32 {
        leaf_hash(&self.encode())
    }
}

/// The continent's signed answer to a push: the header is leaf `log_index` of its log,
/// whose root at `tree_size` leaves is `root`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InclusionReceipt {
    /// Leaf index of the header.
    pub log_index: u64,
    /// Log size the root is for.
    pub tree_size: u64,
    /// Root at `tree_size`.
    pub root: Hash32,
    /// The header's leaf hash.
    pub leaf: Hash32,
    /// The continent's node id.
    pub continent: NodeId,
    /// Signature over [`InclusionReceipt::signing_message`].
    pub signature: Vec<u8>,
}

impl InclusionReceipt {
    /// [`CONTINENT_RECEIPT_DOMAIN`] ‖ index u64 ‖ size u64 ‖ root 32 ‖ leaf 32.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(CONTINENT_RECEIPT_DOMAIN.len() + 80);
        w.raw(CONTINENT_RECEIPT_DOMAIN)
            .u64(self.log_index)
            .u64(self.tree_size)
            .raw(&self.root.0)
            .raw(&self.leaf.0);
        w.finish()
    }

    /// A receipt signed by the continent's key.
    pub fn sign(
        log_index: u64,
        tree_size: u64,
        root: Hash32,
        leaf: Hash32,
        signer: &(impl Signer + ?Sized),
    ) -> Self {
        let mut r = InclusionReceipt {
            log_index,
            tree_size,
            root,
            leaf,
            continent: NodeId::from_public_key(signer.public_key()),
            signature: Vec::new(),
        };
        r.signature = signer.sign(&r.signing_message());
        r
    }

    /// Checks the continent's signature (`public_key` must hash to `continent`).
    pub fn verify(
        &self,
        public_key: &[u8],
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> std::result::Result<(), SignatureError> {
        if NodeId::from_public_key(public_key) != self.continent {
            return Err(SignatureError::Invalid);
        }
        verifier.verify(public_key, &self.signing_message(), &self.signature)
    }
}

/// An inclusion proof with the root and leaf it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofAnswer {
    /// The proof (index, size, path).
    pub proof: InclusionProof,
    /// Root of the log at `proof.size`.
    pub root: Hash32,
    /// The leaf at `proof.index`.
    pub leaf: Hash32,
}

/// Why the continent refused a federation request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    /// A field is malformed.
    #[error("{0}")]
    Malformed(String),
    /// The city is not configured, or the signer is not one of its keys.
    #[error("city {city} with signer {signer} is not configured here")]
    UnknownCity {
        /// City id (hex, short).
        city: String,
        /// Signer (short).
        signer: String,
    },
    /// The header's signature does not verify.
    #[error("header of city {city} sequence {sequence}: bad signature")]
    BadSignature {
        /// City id (short).
        city: String,
        /// Sequence.
        sequence: u64,
    },
    /// Another header is already logged for this (city, sequence).
    #[error("city {city} already logged a different header for sequence {sequence}")]
    Fork {
        /// City id (short).
        city: String,
        /// Sequence.
        sequence: u64,
    },
    /// Index or tree size beyond the log.
    #[error("{0}")]
    OutOfRange(String),
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

impl FederationError {
    /// The gRPC status (see the module table).
    pub fn to_status(&self) -> Status {
        match self {
            FederationError::Malformed(_) => Status::invalid_argument(format!("MALFORMED: {self}")),
            FederationError::UnknownCity { .. } => {
                Status::permission_denied(format!("UNKNOWN_CITY: {self}"))
            }
            FederationError::BadSignature { .. } => {
                Status::unauthenticated(format!("BAD_SIGNATURE: {self}"))
            }
            FederationError::Fork { .. } => Status::already_exists(format!("FORK: {self}")),
            FederationError::OutOfRange(_) => Status::out_of_range(format!("OUT_OF_RANGE: {self}")),
            FederationError::Store(_) => Status::internal(format!("STORE: {self}")),
        }
    }
}

/// What a continent implements; [`FederationService`] serves it over gRPC.
pub trait FederationHandler: Send + Sync + 'static {
    /// Verifies and logs a pushed header (idempotent per (city, sequence)).
    fn push(
        &self,
        header: SignedCheckpointHeader,
    ) -> impl Future<Output = std::result::Result<InclusionReceipt, FederationError>> + Send;
    /// The inclusion proof of leaf `index` in the log of `tree_size` leaves (0 = current).
    fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> impl Future<Output = std::result::Result<ProofAnswer, FederationError>> + Send;
}

fn h32(field: &'static str, b: &[u8]) -> std::result::Result<Hash32, DecodeError> {
    let a: [u8; 32] = b.try_into().map_err(|_| DecodeError::Invalid {
        field,
        reason: "expected exactly 32 bytes",
    })?;
    Ok(Hash32(a))
}

impl TryFrom<pb::CheckpointHeader> for SignedCheckpointHeader {
    type Error = DecodeError;
    fn try_from(p: pb::CheckpointHeader) -> std::result::Result<Self, DecodeError> {
        if p.signature.len() > MAX_SIGNATURE_LEN {
            return Err(DecodeError::TooLong {
                field: "signature",
                len: p.signature.len(),
                max: MAX_SIGNATURE_LEN,
            });
        }
        Ok(SignedCheckpointHeader {
            header: CheckpointHeader {
                city: h32("city_id", &p.city_id)?,
                signer: NodeId::from_slice(&p.signer)?,
                sequence: p.sequence,
                round: p.round,
                leader: h32("leader", &p.leader)?,
                running_hash: h32("running_hash", &p.running_hash)?,
                batches: p.batches,
            },
            signature: p.signature,
        })
    }
}

impl From<&SignedCheckpointHeader> for pb::CheckpointHeader {
    fn from(s: &SignedCheckpointHeader) -> Self {
        let h = &s.header;
        pb::CheckpointHeader {
            city_id: h.city.0.to_vec(),
            signer: h.signer.as_bytes().to_vec(),
            sequence: h.sequence,
            round: h.round,
            leader: h.leader.0.to_vec(),
            running_hash: h.running_hash.0.to_vec(),
            batches: h.batches,
            signature: s.signature.clone(),
        }
    }
}

impl From<&InclusionReceipt> for pb::InclusionReceipt {
    fn from(r: &InclusionReceipt) -> Self {
        pb::InclusionReceipt {
            log_index: r.log_index,
            tree_size: r.tree_size,
            root: r.root.0.to_vec(),
            leaf_hash: r.leaf.0.to_vec(),
            continent: r.continent.as_bytes().to_vec(),
            signature: r.signature.clone(),
        }
    }
}

impl TryFrom<pb::InclusionReceipt> for InclusionReceipt {
    type Error = DecodeError;
    fn try_from(p: pb::InclusionReceipt) -> std::result::Result<Self, DecodeError> {
        if p.signature.len() > MAX_SIGNATURE_LEN {
            return Err(DecodeError::TooLong {
                field: "signature",
                len: p.signature.len(),
                max: MAX_SIGNATURE_LEN,
            });
        }
        Ok(InclusionReceipt {
            log_index: p.log_index,
            tree_size: p.tree_size,
            root: h32("root", &p.root)?,
            leaf: h32("leaf_hash", &p.leaf_hash)?,
            continent: NodeId::from_slice(&p.continent)?,
            signature: p.signature,
        })
    }
}

/// Serves the `Federation` gRPC service by calling a [`FederationHandler`].
#[derive(Debug)]
pub struct FederationService<T> {
    handler: Arc<T>,
}

impl<T> Clone for FederationService<T> {
    fn clone(&self) -> Self {
        FederationService {
            handler: self.handler.clone(),
        }
    }
}

impl<T: FederationHandler> FederationService<T> {
    /// An adapter over `handler`.
    pub fn new(handler: Arc<T>) -> Self {
        FederationService { handler }
    }

    /// The tonic server.
    pub fn into_server(self) -> pb::federation_server::FederationServer<Self> {
        pb::federation_server::FederationServer::new(self)
    }
}

#[tonic::async_trait]
impl<T: FederationHandler> pb::federation_server::Federation for FederationService<T> {
    async fn push_batch_header(
        &self,
        request: Request<pb::CheckpointHeader>,
    ) -> std::result::Result<Response<pb::InclusionReceipt>, Status> {
        let header = SignedCheckpointHeader::try_from(request.into_inner())
            .map_err(|e| Status::invalid_argument(format!("MALFORMED: {e}")))?;
        let receipt = self.handler.push(header).await.map_err(|e| e.to_status())?;
        Ok(Response::new((&receipt).into()))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> std::result::Result<Response<pb::InclusionProofResponse>, Status> {
        let req = request.into_inner();
        let a = self
            .handler
            .inclusion_proof(req.index, req.tree_size)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::InclusionProofResponse {
            index: a.proof.index,
            tree_size: a.proof.size,
            path: a.proof.path.iter().map(|h| h.0.to_vec()).collect(),
            root: a.root.0.to_vec(),
            leaf_hash: a.leaf.0.to_vec(),
        }))
    }
}

/// Talks to a continent's `Federation` service. Cheap to clone; connects lazily.
#[derive(Debug, Clone)]
pub struct FederationClient {
    inner: pb::federation_client::FederationClient<Channel>,
    timeout: Duration,
}

impl FederationClient {
    /// A lazily connecting client for `addr`; every call gives up after `timeout`.
    pub fn lazy(addr: &str, timeout: Duration) -> Result<Self> {
        let channel = endpoint(addr, timeout)?.connect_lazy();
        Ok(FederationClient {
            inner: pb::federation_client::FederationClient::new(channel),
            timeout,
        })
    }

    /// Pushes a signed header; returns the continent's receipt (converted, not verified).
    pub async fn push(&self, header: &SignedCheckpointHeader) -> Result<InclusionReceipt> {
        let req: pb::CheckpointHeader = header.into();
        with_deadline(self.timeout, async {
            let resp = self
                .inner
                .clone()
                .push_batch_header(req)
                .await
                .map_err(status_to_client)?
                .into_inner();
            InclusionReceipt::try_from(resp)
                .map_err(|e| ClientError::Malformed(crate::ConvertError::Invalid(e)))
        })
        .await
    }

    /// The inclusion proof of leaf `index` at `tree_size` (0 = current size), with the
    /// root and leaf the continent claims; verify it with [`ProofAnswer::proof`].
    pub async fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<ProofAnswer> {
        let req = pb::GetInclusionProofRequest { index, tree_size };
        with_deadline(self.timeout, async {
            let resp = self
                .inner
                .clone()
                .get_inclusion_proof(req)
                .await
                .map_err(status_to_client)?
                .into_inner();
            let bad = |e: DecodeError| ClientError::Malformed(crate::ConvertError::Invalid(e));
            if resp.path.len() > InclusionProof::MAX_PATH {
                return Err(bad(DecodeError::TooLong {
                    field: "path",
                    len: resp.path.len(),
                    max: InclusionProof::MAX_PATH,
                }));
            }
            let path = resp
                .path
                .iter()
                .map(|p| h32("path", p))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(bad)?;
            Ok(ProofAnswer {
                proof: InclusionProof {
                    index: resp.index,
                    size: resp.tree_size,
                    path,
                },
                root: h32("root", &resp.root).map_err(bad)?,
                leaf: h32("leaf_hash", &resp.leaf_hash).map_err(bad)?,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signed_header_round_trips_and_status_codes_are_typed() {
        let s = SignedCheckpointHeader {
            header: CheckpointHeader {
                city: Hash32([1; 32]),
                signer: NodeId::from_bytes([2; 32]),
                sequence: 7,
                round: 14,
                leader: Hash32([3; 32]),
                running_hash: Hash32([4; 32]),
                batches: 5,
            },
            signature: vec![9; 10],
        };
        assert_eq!(SignedCheckpointHeader::decode(&s.encode()).unwrap(), s);
        let p: pb::CheckpointHeader = (&s).into();
        assert_eq!(SignedCheckpointHeader::try_from(p).unwrap(), s);
        assert!(SignedCheckpointHeader::decode(&s.encode()[1..]).is_err());
        assert_eq!(
            FederationError::Fork {
                city: "c".into(),
                sequence: 1
            }
            .to_status()
            .code(),
            Code::AlreadyExists
        );
        assert_eq!(
            DeliverError::Overloaded.to_status().code(),
            Code::ResourceExhausted
        );
    }
}

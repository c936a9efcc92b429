//! The `Federation` gRPC service: the handler a continent or global implements
//! ([`FederationHandler`]), its tonic adapter ([`FederationService`]) and the typed client
//! ([`FederationClient`]).

use super::{
    CertifiedCheckpoint, CertifiedHandover, CityHead, FederationError, FederationProof,
    InclusionReceipt, MAX_FEDERATION_MESSAGE_BYTES, ProofAnswer, SignedTreeHead, TreeHeadPush, h32,
};
use crate::pb;
use crate::proof::GlobalAnchor;
use dag_core::merkle::{ConsistencyProof, InclusionProof};
use dag_core::{DecodeError, Hash32, MAX_SIGNATURE_LEN, NodeId};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

type FedResult<T> = Result<T, FederationError>;

/// What a continent or global implements; [`FederationService`] serves it over gRPC.
/// Methods a role does not serve keep the default ([`FederationError::NotServed`]).
pub trait FederationHandler: Send + Sync + 'static {
    /// Continent: pools / verifies and logs a certificate; answers the logged leaf's proof.
    fn push_checkpoint(
        &self,
        certified: CertifiedCheckpoint,
    ) -> impl Future<Output = FedResult<FederationProof>> + Send {
        let _ = certified;
        async { Err(FederationError::NotServed("PushCheckpoint".into())) }
    }
    /// Continent: pools (a share) or verifies (a certificate) a city's committee handover
    /// against the OLD committee and, at a quorum, accepts it; answers the accepted
    /// certificate (the signatures that made the quorum).
    fn push_handover(
        &self,
        certified: CertifiedHandover,
    ) -> impl Future<Output = FedResult<CertifiedHandover>> + Send {
        let _ = certified;
        async { Err(FederationError::NotServed("PushHandover".into())) }
    }
    /// Continent: where the log stands for `city`.
    fn city_head(&self, city: Hash32) -> impl Future<Output = FedResult<CityHead>> + Send {
        let _ = city;
        async { Err(FederationError::NotServed("GetCityHead".into())) }
    }
    /// Global: verifies and logs a continent's tree head.
    fn push_tree_head(
        &self,
        push: TreeHeadPush,
    ) -> impl Future<Output = FedResult<InclusionReceipt>> + Send {
        let _ = push;
        async { Err(FederationError::NotServed("PushTreeHead".into())) }
    }
    /// The log's current signed tree head.
    fn tree_head(&self) -> impl Future<Output = FedResult<SignedTreeHead>> + Send;
    /// The inclusion proof of leaf `index` in the log of `tree_size` leaves (0 = current).
    fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> impl Future<Output = FedResult<ProofAnswer>> + Send;
    /// The consistency proof from `old_size` to `new_size` (0 = current).
    fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> impl Future<Output = FedResult<ConsistencyProof>> + Send;
    /// Continent: a head of this log that the global logged, covering `tree_size`.
    fn global_anchor(
        &self,
        tree_size: u64,
    ) -> impl Future<Output = FedResult<GlobalAnchor>> + Send {
        let _ = tree_size;
        async { Err(FederationError::NotServed("GetGlobalAnchor".into())) }
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

    /// The tonic server, accepting messages up to [`MAX_FEDERATION_MESSAGE_BYTES`].
    pub fn into_server(self) -> pb::federation_service_server::FederationServiceServer<Self> {
        pb::federation_service_server::FederationServiceServer::new(self)
            .max_decoding_message_size(MAX_FEDERATION_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_FEDERATION_MESSAGE_BYTES)
    }
}

fn malformed(e: DecodeError) -> Status {
    FederationError::Malformed(e.to_string()).to_status()
}

fn path_bytes(path: &[Hash32]) -> Vec<Vec<u8>> {
    path.iter().map(|h| h.0.to_vec()).collect()
}

#[tonic::async_trait]
impl<T: FederationHandler> pb::federation_service_server::FederationService
    for FederationService<T>
{
    async fn push_checkpoint(
        &self,
        request: Request<pb::PushCheckpointRequest>,
    ) -> Result<Response<pb::PushCheckpointResponse>, Status> {
        let c = CertifiedCheckpoint::decode(&request.into_inner().encoded).map_err(malformed)?;
        let p = self
            .handler
            .push_checkpoint(c)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::PushCheckpointResponse {
            encoded: p.encode(),
        }))
    }

    async fn push_handover(
        &self,
        request: Request<pb::PushHandoverRequest>,
    ) -> Result<Response<pb::PushHandoverResponse>, Status> {
        let c = CertifiedHandover::decode(&request.into_inner().encoded).map_err(malformed)?;
        let accepted = self
            .handler
            .push_handover(c)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::PushHandoverResponse {
            encoded: accepted.encode(),
        }))
    }

    async fn get_city_head(
        &self,
        request: Request<pb::GetCityHeadRequest>,
    ) -> Result<Response<pb::GetCityHeadResponse>, Status> {
        let city = h32("city_id", &request.into_inner().city_id).map_err(malformed)?;
        let h = self
            .handler
            .city_head(city)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::GetCityHeadResponse {
            next_sequence: h.next_sequence,
            last_running_hash: h.last_running_hash.0.to_vec(),
        }))
    }

    async fn push_tree_head(
        &self,
        request: Request<pb::PushTreeHeadRequest>,
    ) -> Result<Response<pb::PushTreeHeadResponse>, Status> {
        let p = TreeHeadPush::decode(&request.into_inner().encoded).map_err(malformed)?;
        let r = self
            .handler
            .push_tree_head(p)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new((&r).into()))
    }

    async fn get_tree_head(
        &self,
        _request: Request<pb::GetTreeHeadRequest>,
    ) -> Result<Response<pb::GetTreeHeadResponse>, Status> {
        let h = self.handler.tree_head().await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::GetTreeHeadResponse {
            encoded: h.encode(),
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        let req = request.into_inner();
        let a = self
            .handler
            .inclusion_proof(req.index, req.tree_size)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::GetInclusionProofResponse {
            index: a.proof.index,
            tree_size: a.proof.size,
            path: path_bytes(&a.proof.path),
            root: a.root.0.to_vec(),
            leaf_hash: a.leaf.0.to_vec(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        let req = request.into_inner();
        let p = self
            .handler
            .consistency_proof(req.old_size, req.new_size)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::GetConsistencyProofResponse {
            old_size: p.old_size,
            new_size: p.new_size,
            path: path_bytes(&p.path),
        }))
    }

    async fn get_global_anchor(
        &self,
        request: Request<pb::GetGlobalAnchorRequest>,
    ) -> Result<Response<pb::GetGlobalAnchorResponse>, Status> {
        self.anchor(request.into_inner().tree_size).await
    }
}

impl<T: FederationHandler> FederationService<T> {
    async fn anchor(
        &self,
        tree_size: u64,
    ) -> Result<Response<pb::GetGlobalAnchorResponse>, Status> {
        let a = self
            .handler
            .global_anchor(tree_size)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::GetGlobalAnchorResponse {
            encoded: a.encode(),
        }))
    }
}

impl From<&InclusionReceipt> for pb::PushTreeHeadResponse {
    fn from(r: &InclusionReceipt) -> Self {
        pb::PushTreeHeadResponse {
            log_index: r.log_index,
            tree_size: r.tree_size,
            root: r.root.0.to_vec(),
            leaf_hash: r.leaf.0.to_vec(),
            continent: r.continent.as_bytes().to_vec(),
            signature: r.signature.clone(),
        }
    }
}

impl TryFrom<pb::PushTreeHeadResponse> for InclusionReceipt {
    type Error = DecodeError;
    fn try_from(p: pb::PushTreeHeadResponse) -> Result<Self, DecodeError> {
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

fn path_from(field: &'static str, path: &[Vec<u8>], max: usize) -> FedResult<Vec<Hash32>> {
    if path.len() > max {
        return Err(FederationError::BadAnswer(format!(
            "{field}: {} hashes, at most {max}",
            path.len()
        )));
    }
    path.iter()
        .map(|p| h32(field, p).map_err(|e| FederationError::BadAnswer(e.to_string())))
        .collect()
}

/// Talks to a continent's or the global's `Federation` service. Cheap to clone; connects
/// lazily and reconnects. Every error is a [`FederationError`]: the server's typed refusal,
/// or [`FederationError::Transport`] (see [`FederationError::is_retryable`]).
#[derive(Debug, Clone)]
pub struct FederationClient {
    inner: pb::federation_service_client::FederationServiceClient<Channel>,
    timeout: Duration,
}

fn bad_answer(e: DecodeError) -> FederationError {
    FederationError::BadAnswer(e.to_string())
}

impl FederationClient {
    /// A lazily connecting client for `addr` (`host:port` or a URL); every call gives up
    /// after `timeout` (connection set-up included).
    pub fn lazy(addr: &str, timeout: Duration) -> FedResult<Self> {
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let channel = Endpoint::from_shared(url)
            .map_err(|e| FederationError::Malformed(format!("bad address {addr}: {e}")))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(FederationClient {
            inner: pb::federation_service_client::FederationServiceClient::new(channel)
                .max_decoding_message_size(MAX_FEDERATION_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_FEDERATION_MESSAGE_BYTES),
            timeout,
        })
    }

    /// Like [`FederationClient::lazy`] over `links`: with TLS, the log node must prove it is
    /// `expect` when given.
    pub fn lazy_over(
        addr: &str,
        timeout: Duration,
        links: &crate::tls::LinkSecurity,
        expect: Option<dag_core::NodeId>,
    ) -> FedResult<Self> {
        let channel = links
            .lazy_channel(addr, expect, timeout)
            .map_err(|e| FederationError::Malformed(e.to_string()))?;
        Ok(FederationClient {
            inner: pb::federation_service_client::FederationServiceClient::new(channel)
                .max_decoding_message_size(MAX_FEDERATION_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_FEDERATION_MESSAGE_BYTES),
            timeout,
        })
    }

    async fn call<R, F>(
        &self,
        f: impl FnOnce(pb::federation_service_client::FederationServiceClient<Channel>) -> F,
    ) -> FedResult<R>
    where
        F: Future<Output = Result<Response<R>, Status>>,
    {
        match tokio::time::timeout(self.timeout, f(self.inner.clone())).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(FederationError::from_status(&s)),
            Err(_) => Err(FederationError::Transport {
                code: Code::DeadlineExceeded,
                message: format!("no answer within {} ms", self.timeout.as_millis()),
            }),
        }
    }

    /// Pushes a certificate (or one share); returns the logged leaf's proof (decoded, not
    /// verified).
    pub async fn push_checkpoint(&self, c: &CertifiedCheckpoint) -> FedResult<FederationProof> {
        let req = pb::PushCheckpointRequest {
            encoded: c.encode(),
        };
        let resp = self
            .call(|mut c| async move { c.push_checkpoint(req).await })
            .await?;
        FederationProof::decode(&resp.encoded).map_err(bad_answer)
    }

    /// Pushes a committee handover certificate (or one old member's share); returns the
    /// certificate the continent accepted (decoded, not verified). Pooled shares answer the
    /// retryable [`FederationError::HandoverAwaitingQuorum`], a handover ahead of the log
    /// the retryable [`FederationError::HandoverTooEarly`].
    pub async fn push_handover(&self, c: &CertifiedHandover) -> FedResult<CertifiedHandover> {
        let req = pb::PushHandoverRequest {
            encoded: c.encode(),
        };
        let resp = self
            .call(|mut c| async move { c.push_handover(req).await })
            .await?;
        CertifiedHandover::decode(&resp.encoded).map_err(bad_answer)
    }

    /// Where the continent's log stands for `city`.
    pub async fn city_head(&self, city: Hash32) -> FedResult<CityHead> {
        let req = pb::GetCityHeadRequest {
            city_id: city.0.to_vec(),
        };
        let resp = self
            .call(|mut c| async move { c.get_city_head(req).await })
            .await?;
        Ok(CityHead {
            next_sequence: resp.next_sequence,
            last_running_hash: h32("last_running_hash", &resp.last_running_hash)
                .map_err(bad_answer)?,
        })
    }

    /// Pushes a continent's tree head to the global; returns the global's receipt
    /// (converted, not verified).
    pub async fn push_tree_head(&self, push: &TreeHeadPush) -> FedResult<InclusionReceipt> {
        let req = pb::PushTreeHeadRequest {
            encoded: push.encode(),
        };
        let resp = self
            .call(|mut c| async move { c.push_tree_head(req).await })
            .await?;
        InclusionReceipt::try_from(resp).map_err(bad_answer)
    }

    /// The log's current signed tree head (decoded, not verified).
    pub async fn tree_head(&self) -> FedResult<SignedTreeHead> {
        let resp = self
            .call(|mut c| async move { c.get_tree_head(pb::GetTreeHeadRequest {}).await })
            .await?;
        SignedTreeHead::decode(&resp.encoded).map_err(bad_answer)
    }

    /// The inclusion proof of leaf `index` at `tree_size` (0 = current size), with the
    /// root and leaf the log claims.
    pub async fn inclusion_proof(&self, index: u64, tree_size: u64) -> FedResult<ProofAnswer> {
        let req = pb::GetInclusionProofRequest { index, tree_size };
        let resp = self
            .call(|mut c| async move { c.get_inclusion_proof(req).await })
            .await?;
        Ok(ProofAnswer {
            proof: InclusionProof {
                index: resp.index,
                size: resp.tree_size,
                path: path_from("path", &resp.path, InclusionProof::MAX_PATH)?,
            },
            root: h32("root", &resp.root).map_err(bad_answer)?,
            leaf: h32("leaf_hash", &resp.leaf_hash).map_err(bad_answer)?,
        })
    }

    /// A continent head the global logged, covering the continent tree of `tree_size`
    /// (decoded, not verified: check it with [`GlobalAnchor::verify`]).
    pub async fn global_anchor(&self, tree_size: u64) -> FedResult<GlobalAnchor> {
        let req = pb::GetGlobalAnchorRequest { tree_size };
        let resp = self
            .call(|mut c| async move { c.get_global_anchor(req).await })
            .await?;
        GlobalAnchor::decode(&resp.encoded).map_err(bad_answer)
    }

    /// The consistency proof from `old_size` to `new_size` (0 = current).
    pub async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> FedResult<ConsistencyProof> {
        let req = pb::GetConsistencyProofRequest { old_size, new_size };
        let resp = self
            .call(|mut c| async move { c.get_consistency_proof(req).await })
            .await?;
        Ok(ConsistencyProof {
            old_size: resp.old_size,
            new_size: resp.new_size,
            path: path_from("path", &resp.path, ConsistencyProof::MAX_PATH)?,
        })
    }
}

//! The `ShardStore` gRPC service that light nodes serve (proto/citychain/v1/shardstore.proto): a
//! [`ShardHolder`] trait in storage/dag-core terms, the tonic adapter
//! [`ShardStoreService`], and a typed [`ShardStoreClient`].
//!
//! Shards travel in the storage crate's binary format and are checked strictly at both
//! ends ([`storage::Shard::from_bytes`]). Errors are precise gRPC statuses whose message
//! starts with a short code:
//!
//! | storage error | gRPC status | message prefix |
//! |---|---|---|
//! | bad request field | `InvalidArgument` | `MALFORMED:` |
//! | shard fails its checks | `InvalidArgument` | `BAD_SHARD:` |
//! | over quota (nothing stored) | `ResourceExhausted` | `OVER_QUOTA:` |
//! | another shard under the same key | `AlreadyExists` | `SHARD_CONFLICT:` |
//! | not held | `NotFound` | `NOT_HELD:` |
//! | corrupt on disk (never returned) | `DataLoss` | `CORRUPT:` |
//! | store failure | `Internal` | `STORE:` |
//! | PutShard over plaintext on a TLS server | `Unauthenticated` | `UNAUTHENTICATED:` |
//! | PutShard from a node that is no representative of the city | `PermissionDenied` | `NOT_A_REPRESENTATIVE:` |

use crate::convert::ConvertError;
use crate::{ClientError, Result, pb};
use dag_core::{DecodeError, SignedReceipt, StripeId};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use storage::{ChallengeNonce, ChallengeProof, Shard};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Largest `PutShard` message: a 16 MiB shard plus header and protobuf overhead.
pub const MAX_SHARD_MESSAGE_BYTES: usize = 16 * 1024 * 1024 + 64 * 1024;
/// Size of the pieces `GetShard` streams.
pub const SHARD_CHUNK_BYTES: usize = 256 * 1024;
/// Largest encoded shard a client accepts from `GetShard`.
pub const MAX_SHARD_BYTES: usize = storage::HEADER_LEN + storage::MAX_STRIPE_LEN + 2;

/// The answer to a put: the holder's signed receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Receipt (PoH_ACK) signed by the holder; the caller verifies it
    /// (`storage::verify_receipt_from`).
    pub receipt: SignedReceipt,
    /// True if the same shard was already held.
    pub already_stored: bool,
}

/// What a light node implements; [`ShardStoreService`] serves it over gRPC. Shards given
/// to [`ShardHolder::put`] have passed [`Shard::from_bytes`] (format and hash).
pub trait ShardHolder: Send + Sync + 'static {
    /// Stores a shard and signs a receipt for it.
    fn put(&self, shard: Shard) -> impl Future<Output = storage::Result<Stored>> + Send;
    /// The shard, checked; `Ok(None)` if not held.
    fn get(
        &self,
        stripe: StripeId,
        index: u16,
    ) -> impl Future<Output = storage::Result<Option<Shard>>> + Send;
    /// `BLAKE3(nonce ‖ shard data)` of a held, checked shard; `Ok(None)` if not held.
    fn challenge(
        &self,
        stripe: StripeId,
        index: u16,
        nonce: ChallengeNonce,
    ) -> impl Future<Output = storage::Result<Option<ChallengeProof>>> + Send;
}

/// The gRPC status for a storage error (see the table in the module docs).
pub fn status_of(e: &storage::Error) -> Status {
    use storage::Error as E;
    match e {
        E::BadShard { .. } | E::InvalidParams { .. } | E::StripeTooLarge { .. } => {
            crate::status::with_error_info(Status::invalid_argument(format!("BAD_SHARD: {e}")))
        }
        E::OverQuota { .. } => {
            crate::status::with_error_info(Status::resource_exhausted(format!("OVER_QUOTA: {e}")))
        }
        E::DiskFull { .. } => {
            crate::status::with_error_info(Status::resource_exhausted(format!("DISK_FULL: {e}")))
        }
        E::StoreUnavailable { .. } => {
            crate::status::with_error_info(Status::unavailable(format!("STORE_UNAVAILABLE: {e}")))
        }
        E::ShardConflict { .. } => {
            crate::status::with_error_info(Status::already_exists(format!("SHARD_CONFLICT: {e}")))
        }
        E::CorruptOnDisk { .. } => {
            crate::status::with_error_info(Status::data_loss(format!("CORRUPT: {e}")))
        }
        E::Decode { .. } => {
            crate::status::with_error_info(Status::invalid_argument(format!("MALFORMED: {e}")))
        }
        _ => crate::status::with_error_info(Status::internal(format!("STORE: {e}"))),
    }
}

fn not_held(stripe: &StripeId, index: u16) -> Status {
    crate::status::with_error_info(Status::not_found(format!(
        "NOT_HELD: shard {index} of stripe {stripe} is not held here"
    )))
}

fn stripe_and_index(
    stripe_id: &[u8],
    shard_index: u32,
) -> std::result::Result<(StripeId, u16), Status> {
    let stripe = StripeId::from_slice(stripe_id).map_err(|e| {
        crate::status::with_error_info(Status::invalid_argument(format!(
            "MALFORMED: stripe_id: {e}"
        )))
    })?;
    let index = u16::try_from(shard_index)
        .ok()
        .filter(|i| *i < storage::MAX_SHARDS)
        .ok_or_else(|| {
            crate::status::with_error_info(Status::invalid_argument(format!(
                "MALFORMED: shard_index {shard_index} is not below {}",
                storage::MAX_SHARDS
            )))
        })?;
    Ok((stripe, index))
}

/// Who may store shards on a light node: true for the representatives of its city.
pub type PutAuthority = Arc<dyn Fn(&dag_core::NodeId) -> bool + Send + Sync>;

/// Serves the `ShardStore` gRPC service by calling a [`ShardHolder`].
pub struct ShardStoreService<T> {
    holder: Arc<T>,
    writers: Option<PutAuthority>,
}

impl<T> std::fmt::Debug for ShardStoreService<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStoreService")
            .field("writers_checked", &self.writers.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> Clone for ShardStoreService<T> {
    fn clone(&self) -> Self {
        ShardStoreService {
            holder: self.holder.clone(),
            writers: self.writers.clone(),
        }
    }
}

impl<T: ShardHolder> ShardStoreService<T> {
    /// An adapter over `holder`. Without [`ShardStoreService::with_writers`], any
    /// authenticated node (or, on an `--insecure` server, anyone) may put.
    pub fn new(holder: Arc<T>) -> Self {
        ShardStoreService {
            holder,
            writers: None,
        }
    }

    /// PutShard only from mutual-TLS peers `writers` admits (the city's representatives);
    /// others get `PermissionDenied` and nothing is stored.
    pub fn with_writers(mut self, writers: PutAuthority) -> Self {
        self.writers = Some(writers);
        self
    }

    /// The tonic server, accepting messages up to [`MAX_SHARD_MESSAGE_BYTES`].
    pub fn into_server(self) -> pb::shard_store_service_server::ShardStoreServiceServer<Self> {
        pb::shard_store_service_server::ShardStoreServiceServer::new(self)
            .max_decoding_message_size(MAX_SHARD_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_SHARD_MESSAGE_BYTES)
    }
}

/// The stream `GetShard` answers with.
pub type ShardChunkStream =
    futures::stream::Iter<std::vec::IntoIter<std::result::Result<pb::GetShardResponse, Status>>>;

#[tonic::async_trait]
impl<T: ShardHolder> pb::shard_store_service_server::ShardStoreService for ShardStoreService<T> {
    async fn put_shard(
        &self,
        request: Request<pb::PutShardRequest>,
    ) -> std::result::Result<Response<pb::PutShardResponse>, Status> {
        if let (Some(writer), Some(writers)) = (crate::tls::authenticated(&request)?, &self.writers)
            && !writers(&writer)
        {
            return Err(crate::status::with_error_info(Status::permission_denied(
                format!(
                    "NOT_A_REPRESENTATIVE: node {writer} is not a representative of this light node's city"
                ),
            )));
        }
        let shard = Shard::from_bytes(&request.into_inner().shard).map_err(|e| status_of(&e))?;
        let stored = self.holder.put(shard).await.map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::PutShardResponse {
            receipt: Some((&stored.receipt).into()),
            already_stored: stored.already_stored,
        }))
    }

    type GetShardStream = ShardChunkStream;

    async fn get_shard(
        &self,
        request: Request<pb::GetShardRequest>,
    ) -> std::result::Result<Response<Self::GetShardStream>, Status> {
        let req = request.into_inner();
        let (stripe, index) = stripe_and_index(&req.stripe_id, req.shard_index)?;
        let shard = self
            .holder
            .get(stripe, index)
            .await
            .map_err(|e| status_of(&e))?
            .ok_or_else(|| not_held(&stripe, index))?;
        let bytes = shard.to_bytes();
        let total_len = bytes.len() as u64;
        let chunks: Vec<_> = bytes
            .chunks(SHARD_CHUNK_BYTES)
            .enumerate()
            .map(|(i, c)| {
                Ok(pb::GetShardResponse {
                    total_len: if i == 0 { total_len } else { 0 },
                    data: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(futures::stream::iter(chunks)))
    }

    async fn challenge(
        &self,
        request: Request<pb::ChallengeRequest>,
    ) -> std::result::Result<Response<pb::ChallengeResponse>, Status> {
        let req = request.into_inner();
        let (stripe, index) = stripe_and_index(&req.stripe_id, req.shard_index)?;
        let nonce: [u8; 32] = req.nonce.as_slice().try_into().map_err(|_| {
            crate::status::with_error_info(Status::invalid_argument(format!(
                "MALFORMED: nonce must be 32 bytes, got {}",
                req.nonce.len()
            )))
        })?;
        let proof = self
            .holder
            .challenge(stripe, index, ChallengeNonce(nonce))
            .await
            .map_err(|e| status_of(&e))?
            .ok_or_else(|| not_held(&stripe, index))?;
        Ok(Response::new(pb::ChallengeResponse {
            proof: proof.0.to_vec(),
        }))
    }
}

/// Talks to a light node's `ShardStore` over gRPC with storage types. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShardStoreClient {
    inner: pb::shard_store_service_client::ShardStoreServiceClient<Channel>,
    timeout: Option<Duration>,
}

fn malformed(field: &'static str, reason: &'static str) -> ClientError {
    ClientError::Malformed(ConvertError::Invalid(DecodeError::Invalid {
        field,
        reason,
    }))
}

impl ShardStoreClient {
    /// Connects to `addr` (`http://host:port` or `host:port`).
    pub async fn connect(addr: &str) -> Result<Self> {
        Ok(Self::from_channel(crate::error::connect(addr).await?))
    }

    /// A client over an existing channel (e.g. a lazily connecting one).
    pub fn from_channel(channel: Channel) -> Self {
        ShardStoreClient {
            inner: pb::shard_store_service_client::ShardStoreServiceClient::new(channel)
                .max_decoding_message_size(MAX_SHARD_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_SHARD_MESSAGE_BYTES),
            timeout: None,
        }
    }

    /// Every call fails with `DeadlineExceeded` if not answered within `d`.
    pub fn with_timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    async fn deadline<F: Future<Output = Result<R>>, R>(&self, f: F) -> Result<R> {
        match self.timeout {
            None => f.await,
            Some(d) => tokio::time::timeout(d, f).await.unwrap_or_else(|_| {
                Err(ClientError::Status {
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("no answer within {} ms", d.as_millis()),
                })
            }),
        }
    }

    /// Stores `shard`; returns the holder's receipt (converted, not yet verified).
    pub async fn put_shard(&self, shard: &Shard) -> Result<Stored> {
        let req = pb::PutShardRequest {
            shard: shard.to_bytes(),
        };
        self.deadline(async {
            let resp = self.inner.clone().put_shard(req).await?.into_inner();
            let receipt = resp
                .receipt
                .ok_or(ClientError::Malformed(ConvertError::Missing("receipt")))?;
            Ok(Stored {
                receipt: SignedReceipt::try_from(receipt)?,
                already_stored: resp.already_stored,
            })
        })
        .await
    }

    /// Fetches shard (stripe, index), reassembling the streamed chunks; the result has
    /// passed [`Shard::from_bytes`] and is the shard asked for. A shard that is not held is
    /// `ClientError::Status { code: NotFound, .. }`.
    pub async fn get_shard(&self, stripe: StripeId, index: u16) -> Result<Shard> {
        let req = pb::GetShardRequest {
            stripe_id: stripe.as_bytes().to_vec(),
            shard_index: u32::from(index),
        };
        self.deadline(async {
            let mut stream = self.inner.clone().get_shard(req).await?.into_inner();
            let mut buf: Vec<u8> = Vec::new();
            let mut total: Option<usize> = None;
            while let Some(chunk) = stream.message().await? {
                let expected = match total {
                    Some(t) => t,
                    None => {
                        let t = usize::try_from(chunk.total_len).unwrap_or(usize::MAX);
                        if t > MAX_SHARD_BYTES {
                            return Err(malformed("total_len", "over the largest shard"));
                        }
                        buf.reserve_exact(t);
                        total = Some(t);
                        t
                    }
                };
                if buf.len() + chunk.data.len() > expected {
                    return Err(malformed("shard chunks", "longer than total_len"));
                }
                buf.extend_from_slice(&chunk.data);
            }
            if Some(buf.len()) != total {
                return Err(malformed("shard chunks", "shorter than total_len"));
            }
            let shard = Shard::from_bytes(&buf)
                .map_err(|_| malformed("shard", "fails its format or hash checks"))?;
            if shard.stripe_id() != stripe || shard.index() != index {
                return Err(malformed("shard", "is not the shard asked for"));
            }
            Ok(shard)
        })
        .await
    }

    /// Challenges the holder of (stripe, index) with `nonce`; returns its proof, to check
    /// with `storage::Challenge::check` or `storage::verify_proof`.
    pub async fn challenge(
        &self,
        stripe: StripeId,
        index: u16,
        nonce: ChallengeNonce,
    ) -> Result<ChallengeProof> {
        let req = pb::ChallengeRequest {
            stripe_id: stripe.as_bytes().to_vec(),
            shard_index: u32::from(index),
            nonce: nonce.0.to_vec(),
        };
        self.deadline(async {
            let resp = self.inner.clone().challenge(req).await?.into_inner();
            let proof: [u8; 32] = resp
                .proof
                .as_slice()
                .try_into()
                .map_err(|_| malformed("proof", "expected 32 bytes"))?;
            Ok(ChallengeProof(proof))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::{Error as E, ShardProblem};

    #[test]
    fn storage_errors_map_to_precise_statuses() {
        let sid = StripeId::from_bytes([1; 32]);
        let check = |e: E, code: tonic::Code, prefix: &str| {
            let s = status_of(&e);
            assert_eq!(s.code(), code, "{e}");
            assert!(s.message().starts_with(prefix), "{}", s.message());
        };
        check(
            E::BadShard {
                stripe_id: Some(sid),
                index: Some(1),
                problem: ShardProblem::HashMismatch,
            },
            tonic::Code::InvalidArgument,
            "BAD_SHARD:",
        );
        check(
            E::OverQuota {
                needed: 10,
                used: 5,
                quota: 12,
            },
            tonic::Code::ResourceExhausted,
            "OVER_QUOTA:",
        );
        check(
            E::ShardConflict {
                stripe_id: sid,
                index: 2,
            },
            tonic::Code::AlreadyExists,
            "SHARD_CONFLICT:",
        );
        check(
            E::CorruptOnDisk {
                stripe_id: sid,
                index: 3,
                problem: ShardProblem::HashMismatch,
            },
            tonic::Code::DataLoss,
            "CORRUPT:",
        );
        assert_eq!(not_held(&sid, 4).code(), tonic::Code::NotFound);
        assert!(stripe_and_index(&[0; 31], 0).is_err());
        assert!(stripe_and_index(&[0; 32], 32).is_err());
        assert_eq!(stripe_and_index(&[1; 32], 31).unwrap(), (sid, 31));
    }
}

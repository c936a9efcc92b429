//! The `Consensus` service between a city's representatives (proto/citychain/v1/consensus.proto), in
//! dag-core terms. The `Federation` service of the same file lives in [`crate::federation`].
//!
//! - [`ConsensusHandler`] / [`ConsensusService`] / [`ConsensusClient`]: one unary `Deliver`
//!   carrying dag-core's canonical [`Message`] bytes (ProposeBatch, Vote, Certificate,
//!   FetchBatches request and response all map to it by the message's tag byte).
//!
//! Errors are gRPC statuses whose message starts with a short code:
//!
//! | error | gRPC status | prefix |
//! |---|---|---|
//! | undecodable bytes or fields | `InvalidArgument` | `MALFORMED:` |
//! | consensus message rejected by the driver (bad signature, …) | `InvalidArgument` | `REJECTED:` |
//! | sender not in the committee | `PermissionDenied` | `UNKNOWN_SENDER:` |
//! | envelope sender is not the mutual-TLS peer | `PermissionDenied` | `SPOOFED_SENDER:` |
//! | plaintext connection to a TLS server | `Unauthenticated` | `UNAUTHENTICATED:` |
//! | inbound queue full | `ResourceExhausted` | `OVERLOADED:` |
//! | representative stopping | `Unavailable` | `STOPPING:` |

use crate::{ClientError, Result, pb};
use dag_core::NodeId;
use dag_core::consensus::{ConsensusError, Message};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

/// Largest consensus message on the wire (a full fetch response of certificates).
pub const MAX_CONSENSUS_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

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
                crate::status::with_error_info(Status::permission_denied(format!(
                    "UNKNOWN_SENDER: {e}"
                )))
            }
            DeliverError::Rejected(e @ ConsensusError::Decode(_)) => {
                crate::status::with_error_info(Status::invalid_argument(format!("MALFORMED: {e}")))
            }
            DeliverError::Rejected(e) => {
                crate::status::with_error_info(Status::invalid_argument(format!("REJECTED: {e}")))
            }
            DeliverError::Overloaded => crate::status::with_error_info(Status::resource_exhausted(
                format!("OVERLOADED: {self}"),
            )),
            DeliverError::Stopping => {
                crate::status::with_error_info(Status::unavailable(format!("STOPPING: {self}")))
            }
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
    pub fn into_server(self) -> pb::consensus_service_server::ConsensusServiceServer<Self> {
        pb::consensus_service_server::ConsensusServiceServer::new(self)
            .max_decoding_message_size(MAX_CONSENSUS_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_CONSENSUS_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl<T: ConsensusHandler> pb::consensus_service_server::ConsensusService for ConsensusService<T> {
    async fn deliver(
        &self,
        request: Request<pb::DeliverRequest>,
    ) -> std::result::Result<Response<pb::DeliverResponse>, Status> {
        // Over TLS the sender is who the handshake proved; the envelope must agree.
        let peer = crate::tls::authenticated(&request)?;
        let env = request.into_inner();
        let from = NodeId::from_slice(&env.from_node_id).map_err(|e| {
            crate::status::with_error_info(Status::invalid_argument(format!(
                "MALFORMED: from_node_id: {e}"
            )))
        })?;
        if let Some(peer) = peer
            && peer != from
        {
            return Err(crate::status::with_error_info(Status::permission_denied(
                format!("SPOOFED_SENDER: envelope names {from} but the TLS peer is {peer}"),
            )));
        }
        let message = Message::decode(&env.message).map_err(|e| {
            crate::status::with_error_info(Status::invalid_argument(format!(
                "MALFORMED: message: {e}"
            )))
        })?;
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
    inner: pb::consensus_service_client::ConsensusServiceClient<Channel>,
    timeout: Duration,
}

impl ConsensusClient {
    /// A lazily connecting client for `addr` (`host:port` or a URL); every call gives up
    /// after `timeout` (connection set-up included).
    pub fn lazy(addr: &str, timeout: Duration) -> Result<Self> {
        let channel = endpoint(addr, timeout)?.connect_lazy();
        Ok(ConsensusClient {
            inner: pb::consensus_service_client::ConsensusServiceClient::new(channel)
                .max_decoding_message_size(MAX_CONSENSUS_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_CONSENSUS_MESSAGE_BYTES),
            timeout,
        })
    }

    /// Like [`ConsensusClient::lazy`] over `links`: with TLS, the peer must prove it is
    /// `peer` (the committee member dialled).
    pub fn lazy_over(
        addr: &str,
        timeout: Duration,
        links: &crate::tls::LinkSecurity,
        peer: NodeId,
    ) -> Result<Self> {
        let channel =
            links
                .lazy_channel(addr, Some(peer), timeout)
                .map_err(|e| ClientError::Status {
                    code: Code::InvalidArgument,
                    message: e.to_string(),
                })?;
        Ok(ConsensusClient {
            inner: pb::consensus_service_client::ConsensusServiceClient::new(channel)
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
        let req = pb::DeliverRequest {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn status_codes_are_typed() {
        assert_eq!(
            DeliverError::Overloaded.to_status().code(),
            Code::ResourceExhausted
        );
        assert_eq!(DeliverError::Stopping.to_status().code(), Code::Unavailable);
    }
}

//! [`GrpcTransport`]: the pipeline's [`ShardTransport`] over the light nodes' gRPC
//! `ShardStore` service. One channel per light node (address and NodeId), connected once —
//! over mutual TLS the node proves that NodeId in the handshake — and reused by every call
//! (tonic reconnects it when a node comes back). Connecting has its own timeout
//! (`CONNECT_TIMEOUT` in the city), apart from the calls' deadlines: the pipeline calls
//! [`ShardTransport::connect`] before timing a put or get.

use super::pipeline::{ShardTransport, TransportError};
use async_trait::async_trait;
use dag_core::{NodeInfo, SignedReceipt, StripeId};
use rpc::{ClientError, ShardStoreClient};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use storage::Shard;
use tokio::sync::OnceCell;
use tonic::Code;

/// How long the city gives a light node to accept a connection and finish the TLS handshake
/// (ML-KEM key exchange, certificate and NodeId binding check). Separate from the 500 ms put
/// deadline, which a cold handshake on a loaded machine can exceed by itself.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

type Cell = Arc<OnceCell<ShardStoreClient>>;

/// Calls light nodes over gRPC. Deadlines are the pipeline's (`call_timeout`); this only
/// bounds connection set-up.
#[derive(Debug)]
pub struct GrpcTransport {
    clients: parking_lot::Mutex<HashMap<(String, dag_core::NodeId), Cell>>,
    connect_timeout: Duration,
    links: rpc::tls::LinkSecurity,
}

impl Default for GrpcTransport {
    fn default() -> Self {
        Self::new(CONNECT_TIMEOUT)
    }
}

impl GrpcTransport {
    /// A plaintext transport whose connection attempts give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self::over(connect_timeout, rpc::tls::LinkSecurity::Insecure)
    }

    /// A transport over `links`: with TLS, each light node must prove the NodeId it is
    /// listed under (presence / genesis), or the call fails as unreachable.
    pub fn over(connect_timeout: Duration, links: rpc::tls::LinkSecurity) -> Self {
        GrpcTransport {
            clients: parking_lot::Mutex::new(HashMap::new()),
            connect_timeout,
            links,
        }
    }

    /// The node's client, connecting first if no connection was made yet (concurrent
    /// callers wait for the same attempt; a failed attempt is tried again next call).
    async fn client(&self, node: &NodeInfo) -> Result<ShardStoreClient, TransportError> {
        let cell = self
            .clients
            .lock()
            .entry((node.grpc_addr.clone(), node.node_id))
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            self.links
                .channel(&node.grpc_addr, Some(node.node_id), self.connect_timeout)
                .await
                .map(ShardStoreClient::from_channel)
                .map_err(|e| TransportError::Unreachable {
                    node: node.node_id.short(),
                    reason: e.to_string(),
                })
        })
        .await
        .cloned()
    }
}

/// Maps a client error to the pipeline's view: not held (or corrupt there, which counts as
/// missing), unreachable, timed out, or refused.
fn transport_error(
    node: &NodeInfo,
    what: Option<(StripeId, u16)>,
    e: ClientError,
) -> TransportError {
    let name = node.node_id.short();
    let code = match &e {
        ClientError::Status { code, .. } => Some(*code),
        ClientError::Rejected(r) => Some(r.code.grpc_code()),
        ClientError::Connect { .. } => Some(Code::Unavailable),
        ClientError::Malformed(_) => None,
    };
    match (code, what) {
        (Some(Code::NotFound | Code::DataLoss), Some((stripe, index))) => TransportError::NotHeld {
            node: name,
            stripe: stripe.short(),
            index,
        },
        (Some(Code::DeadlineExceeded), _) => TransportError::Timeout { node: name, ms: 0 },
        (Some(Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal), _) => {
            TransportError::Unreachable {
                node: name,
                reason: e.to_string(),
            }
        }
        _ => TransportError::Refused {
            node: name,
            reason: e.to_string(),
        },
    }
}

#[async_trait]
impl ShardTransport for GrpcTransport {
    async fn put_shard(
        &self,
        node: &NodeInfo,
        shard: &Shard,
    ) -> std::result::Result<SignedReceipt, TransportError> {
        let c = self.client(node).await?;
        c.put_shard(shard)
            .await
            .map(|s| s.receipt)
            .map_err(|e| transport_error(node, None, e))
    }

    async fn get_shard(
        &self,
        node: &NodeInfo,
        stripe: StripeId,
        index: u16,
    ) -> std::result::Result<Shard, TransportError> {
        let c = self.client(node).await?;
        c.get_shard(stripe, index)
            .await
            .map_err(|e| transport_error(node, Some((stripe, index)), e))
    }

    async fn connect(&self, node: &NodeInfo) -> std::result::Result<(), TransportError> {
        self.client(node).await.map(|_| ())
    }
}

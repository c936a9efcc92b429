//! Per-peer budgets of every node server, as one tower layer ([`BudgetLayer`]) under the
//! gRPC routes:
//!
//! - **Per-method size limits**: each method's request body may be at most
//!   [`method_limit`] bytes (a PutShard one shard, a Deliver one consensus message, every
//!   query 1 MiB); beyond, the call fails with `RESOURCE_EXHAUSTED` as the bytes arrive,
//!   not after buffering them.
//! - **Byte budgets**: the bytes of request bodies still being received are counted against
//!   the sending peer (its TLS NodeId, else its IP address) and against the server; a peer
//!   over [`BudgetConfig::per_peer_bytes`] or a server over [`BudgetConfig::total_bytes`]
//!   gets `RESOURCE_EXHAUSTED` on the call whose bytes do not fit, at once. So half-sent
//!   requests (the slowloris of gRPC: a 16 MiB PutShard that never finishes) hold at most
//!   the budget, whatever the number of streams or connections, and never all of the
//!   server's memory. Bytes are released when the body is dropped: a unary call's once its
//!   message is decoded, a refused or abandoned call's at once.
//! - **Request rate**: at most [`BudgetConfig::per_peer_rate`] calls per second per peer
//!   (GCRA, governor), `RESOURCE_EXHAUSTED` beyond.
//!
//! The client-streaming `SubmitTxStream` is not byte-counted (it lives as long as the wallet
//! session): each of its messages is bounded by the service's decode limit and h2 flow
//! control bounds what waits unread.

use bytes::Bytes;
use dag_core::NodeId;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body::{Frame, SizeHint};
use parking_lot::Mutex;
use rpc::tls::PeerConnectInfo;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;

/// Largest request of a method not listed in [`method_limit`] (queries, repair requests).
pub const SMALL_REQUEST_BYTES: usize = 1024 * 1024;

/// gRPC's length-prefixed message header.
const GRPC_FRAME_HEADER: usize = 5;

/// Budgets of one server. `Default` is what every node server runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Request bytes one peer may have in flight (unfinished bodies) on this server.
    /// Above the largest single message (a 32 MiB consensus message), so one honest
    /// message always fits.
    pub per_peer_bytes: usize,
    /// Request bytes all peers together may have in flight on this server.
    pub total_bytes: usize,
    /// Calls per second per peer (sustained, burst twice that).
    pub per_peer_rate: u32,
}

impl BudgetConfig {
    /// 64 MiB per peer, 512 MiB per server, 10,000 calls/s per peer.
    pub const DEFAULT: BudgetConfig = BudgetConfig {
        per_peer_bytes: 64 * 1024 * 1024,
        total_bytes: 512 * 1024 * 1024,
        per_peer_rate: 10_000,
    };
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The most bytes a request body of `path` may have, or `None` for the client-streaming
/// `SubmitTxStream` (not byte-counted; see the module docs).
pub fn method_limit(path: &str) -> Option<usize> {
    let big = match path {
        "/citychain.v1.CityNodeService/SubmitTxStream" => return None,
        "/citychain.v1.ShardStoreService/PutShard" => rpc::MAX_SHARD_MESSAGE_BYTES,
        "/citychain.v1.ConsensusService/Deliver" => rpc::MAX_CONSENSUS_MESSAGE_BYTES,
        "/citychain.v1.FederationService/PushCheckpoint"
        | "/citychain.v1.FederationService/PushTreeHead" => rpc::MAX_FEDERATION_MESSAGE_BYTES,
        "/citychain.v1.CityNodeService/SubmitTx" => rpc::MAX_MESSAGE_BYTES,
        _ => SMALL_REQUEST_BYTES,
    };
    Some(big + GRPC_FRAME_HEADER)
}

/// Who a request's bytes count against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PeerKey {
    /// An authenticated node (mutual TLS).
    Node(NodeId),
    /// An anonymous (plaintext) client, by address.
    Ip(IpAddr),
    /// No address known (in-process transports).
    Unknown,
}

impl PeerKey {
    fn of<B>(req: &http::Request<B>) -> Self {
        match req.extensions().get::<PeerConnectInfo>() {
            Some(PeerConnectInfo { tls: Some(p), .. }) => PeerKey::Node(p.node_id),
            Some(PeerConnectInfo {
                remote_addr: Some(a),
                ..
            }) => PeerKey::Ip(a.ip()),
            _ => PeerKey::Unknown,
        }
    }
}

/// The shared state of one server's budgets.
struct Budgets {
    config: BudgetConfig,
    total: Arc<Semaphore>,
    peers: Mutex<HashMap<PeerKey, Arc<Semaphore>>>,
    rate: DefaultKeyedRateLimiter<PeerKey>,
}

/// Peers remembered before idle ones (no bytes in flight) are forgotten.
const PEER_TABLE_SOFT_CAP: usize = 4096;

impl Budgets {
    fn peer(&self, key: PeerKey) -> Arc<Semaphore> {
        let mut peers = self.peers.lock();
        if peers.len() >= PEER_TABLE_SOFT_CAP {
            let full = self.config.per_peer_bytes;
            peers.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < full);
            self.rate.retain_recent();
        }
        peers
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_peer_bytes)))
            .clone()
    }
}

/// The tower layer applying [`BudgetConfig`] to a server (one budget per server).
#[derive(Clone)]
pub struct BudgetLayer {
    budgets: Arc<Budgets>,
}

impl std::fmt::Debug for BudgetLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetLayer")
            .field("config", &self.budgets.config)
            .finish_non_exhaustive()
    }
}

impl BudgetLayer {
    /// A fresh set of budgets.
    pub fn new(config: BudgetConfig) -> Self {
        let rate = NonZeroU32::new(config.per_peer_rate.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        BudgetLayer {
            budgets: Arc::new(Budgets {
                config,
                total: Arc::new(Semaphore::new(config.total_bytes)),
                peers: Mutex::new(HashMap::new()),
                rate: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            }),
        }
    }
}

impl<S> tower::Layer<S> for BudgetLayer {
    type Service = BudgetService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BudgetService {
            inner,
            budgets: self.budgets.clone(),
        }
    }
}

/// The service [`BudgetLayer`] wraps around a server's routes.
#[derive(Clone)]
pub struct BudgetService<S> {
    inner: S,
    budgets: Arc<Budgets>,
}

impl<S> std::fmt::Debug for BudgetService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BudgetService")
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

fn refuse(status: Status, what: &'static str) -> http::Response<Body> {
    metrics::counter!("citychain_budget_refusals_total", "budget" => what).increment(1);
    status.into_http()
}

impl<S> tower::Service<http::Request<Body>> for BudgetService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let peer = PeerKey::of(&req);
        if self.budgets.rate.check_key(&peer).is_err() {
            let resp = refuse(
                Status::resource_exhausted(format!(
                    "more than {} calls per second from this peer",
                    self.budgets.config.per_peer_rate
                )),
                "rate",
            );
            return Box::pin(async move { Ok(resp) });
        }
        let req = match method_limit(req.uri().path()) {
            None => req,
            Some(limit) => {
                let (parts, body) = req.into_parts();
                let body = Body::new(BudgetBody {
                    inner: body,
                    limit,
                    seen: 0,
                    peer: self.budgets.peer(peer),
                    total: self.budgets.total.clone(),
                    held: None,
                    failed: false,
                });
                http::Request::from_parts(parts, body)
            }
        };
        // The clone answers the next call; this one goes with the ready service.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}

/// A request body whose bytes are counted against the peer's and the server's budgets
/// while it is being received, and against its method's size limit.
struct BudgetBody {
    inner: Body,
    limit: usize,
    seen: usize,
    peer: Arc<Semaphore>,
    total: Arc<Semaphore>,
    /// The permits of the bytes received so far (peer, total).
    held: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    failed: bool,
}

impl BudgetBody {
    fn charge(&mut self, n: usize) -> Result<(), Status> {
        self.seen += n;
        if self.seen > self.limit {
            metrics::counter!("citychain_budget_refusals_total", "budget" => "method_size")
                .increment(1);
            return Err(Status::resource_exhausted(format!(
                "request body over this method's limit of {} bytes",
                self.limit
            )));
        }
        let n32 = u32::try_from(n).map_err(|_| Status::resource_exhausted("frame too large"))?;
        let peer = self.peer.clone().try_acquire_many_owned(n32).map_err(|_| {
            metrics::counter!("citychain_budget_refusals_total", "budget" => "peer_bytes")
                .increment(1);
            Status::resource_exhausted("this peer's in-flight request bytes are over its budget")
        })?;
        let total = self
            .total
            .clone()
            .try_acquire_many_owned(n32)
            .map_err(|_| {
                metrics::counter!("citychain_budget_refusals_total", "budget" => "server_bytes")
                    .increment(1);
                Status::resource_exhausted("the server's in-flight request bytes are over budget")
            })?;
        match &mut self.held {
            Some((p, t)) => {
                p.merge(peer);
                t.merge(total);
            }
            None => self.held = Some((peer, total)),
        }
        Ok(())
    }
}

impl http_body::Body for BudgetBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(f))) => f,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len();
            if let Err(status) = self.charge(n) {
                // Give back what this call held and stop reading it.
                self.failed = true;
                self.held = None;
                return Poll::Ready(Some(Err(status)));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body_of(chunks: Vec<usize>) -> Body {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|n| Ok::<_, Status>(Frame::data(Bytes::from(vec![0u8; n])))),
        );
        Body::new(http_body_util::StreamBody::new(stream))
    }

    fn budgeted(layer: &BudgetLayer, key: PeerKey, limit: usize, chunks: Vec<usize>) -> BudgetBody {
        BudgetBody {
            inner: body_of(chunks),
            limit,
            seen: 0,
            peer: layer.budgets.peer(key),
            total: layer.budgets.total.clone(),
            held: None,
            failed: false,
        }
    }

    #[tokio::test]
    async fn bytes_count_against_peer_and_server_until_the_body_is_dropped() {
        let layer = BudgetLayer::new(BudgetConfig {
            per_peer_bytes: 100,
            total_bytes: 150,
            per_peer_rate: 1000,
        });
        let a = PeerKey::Ip(IpAddr::from([10, 0, 0, 1]));
        let b = PeerKey::Ip(IpAddr::from([10, 0, 0, 2]));
        let c = PeerKey::Ip(IpAddr::from([10, 0, 0, 3]));
        // a holds 80 of its 100 in an unfinished body.
        let mut held = budgeted(&layer, a, 1000, vec![80]);
        assert!(held.frame().await.unwrap().is_ok());
        // a's next 30 do not fit; the refused body gives back what it took.
        let mut over = budgeted(&layer, a, 1000, vec![10, 30]);
        assert!(over.frame().await.unwrap().is_ok());
        let e = over.frame().await.unwrap().unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(over.frame().await.is_none());
        // b fits 60 (80 + 60 = 140 of the server's 150), c's 20 then do not.
        let mut b_body = budgeted(&layer, b, 1000, vec![60]);
        assert!(b_body.frame().await.unwrap().is_ok());
        let mut c_body = budgeted(&layer, c, 1000, vec![20]);
        assert_eq!(
            c_body.frame().await.unwrap().unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        // Dropping a's held body frees a and the server.
        drop(held);
        let mut again = budgeted(&layer, a, 1000, vec![90]);
        assert!(again.frame().await.unwrap().is_ok());
        drop((again, b_body));
        assert_eq!(layer.budgets.total.available_permits(), 150);
    }

    #[tokio::test]
    async fn a_method_limit_refuses_the_frame_that_crosses_it() {
        let layer = BudgetLayer::new(BudgetConfig::default());
        let k = PeerKey::Unknown;
        let mut body = budgeted(&layer, k, 100, vec![60, 40, 1]);
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_ok());
        assert_eq!(
            body.frame().await.unwrap().unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            method_limit("/citychain.v1.ShardStoreService/PutShard"),
            Some(rpc::MAX_SHARD_MESSAGE_BYTES + 5)
        );
        assert_eq!(
            method_limit("/citychain.v1.CityNodeService/SubmitTxStream"),
            None
        );
        assert_eq!(
            method_limit("/citychain.v1.ShardStoreService/GetShard"),
            Some(SMALL_REQUEST_BYTES + 5)
        );
    }
}

//! The light role: serves the `ShardStore` gRPC service (PutShard, streaming GetShard,
//! Challenge) over a local [`ShardStore`] with a quota, and signs a receipt (PoH_ACK) with
//! the node's ML-DSA-87 key for every shard it stores.
//!
//! Store operations (an fsync per put) and signing (≈ 0.2 ms) run on the blocking pool,
//! never on the reactor. A shard is checked when it arrives and again when it is read: a
//! shard corrupted on disk is answered with `DataLoss` and never sent.

use crate::{Error, Result};
use dag_core::{Clock, NodeId, StripeId};
use futures::StreamExt;
use pqc::Keypair;
use rpc::{ShardHolder, Stored};
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use storage::{ChallengeNonce, ChallengeProof, PutOutcome, Shard, ShardStore, StoreConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Configuration of the light role. `Default` holds the documented defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LightConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Directory for the key file and the shard store (`shards.redb`).
    pub data_dir: PathBuf,
    /// Most bytes of shards (encoded) this node stores. Default 1 GiB.
    pub quota_bytes: u64,
}

impl Default for LightConfig {
    fn default() -> Self {
        LightConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7710)),
            data_dir: PathBuf::from("./light-data"),
            quota_bytes: StoreConfig::default().quota_bytes,
        }
    }
}

/// Wall-clock time for receipts.
#[derive(Debug, Clone, Copy, Default)]
struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A light node: its shard store, its key and its clock. Implements [`ShardHolder`].
pub struct LightNode {
    store: Arc<ShardStore>,
    key: Arc<Keypair>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for LightNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LightNode")
            .field("node_id", &self.node_id())
            .finish_non_exhaustive()
    }
}

impl LightNode {
    /// A light node over `store`, signing receipts with `key`, timestamped by `clock`.
    pub fn new(store: ShardStore, key: Keypair, clock: Arc<dyn Clock>) -> Self {
        LightNode {
            store: Arc::new(store),
            key: Arc::new(key),
            clock,
        }
    }

    /// The node id (BLAKE3 of its public key): the holder named in its receipts.
    pub fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// The shard store (for status and tests).
    pub fn store(&self) -> &Arc<ShardStore> {
        &self.store
    }
}

/// Runs `f` on the blocking pool; a panic there is re-raised here.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> storage::Result<R> + Send + 'static,
) -> storage::Result<R> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(storage::Error::Db {
            op: "light node task",
            source: Box::new(redb::Error::Io(std::io::Error::other(e.to_string()))),
        }),
    }
}

impl ShardHolder for LightNode {
    async fn put(&self, shard: Shard) -> storage::Result<Stored> {
        let (store, key, clock) = (self.store.clone(), self.key.clone(), self.clock.clone());
        blocking(move || {
            let outcome = store.put(&shard)?;
            let receipt = storage::issue_receipt(&shard.header, &*key, clock.now_ms());
            Ok(Stored {
                receipt,
                already_stored: outcome == PutOutcome::AlreadyStored,
            })
        })
        .await
    }

    async fn get(&self, stripe: StripeId, index: u16) -> storage::Result<Option<Shard>> {
        let store = self.store.clone();
        blocking(move || store.get(&stripe, index)).await
    }

    async fn challenge(
        &self,
        stripe: StripeId,
        index: u16,
        nonce: ChallengeNonce,
    ) -> storage::Result<Option<ChallengeProof>> {
        let store = self.store.clone();
        blocking(move || {
            Ok(store
                .get(&stripe, index)?
                .map(|s| storage::prove(&nonce, &s.data)))
        })
        .await
    }
}

/// A running light node. Drop does not stop it: call [`LightHandle::shutdown`] (graceful)
/// or [`LightHandle::kill`] (abrupt, as a crash).
#[derive(Debug)]
pub struct LightHandle {
    addr: SocketAddr,
    node: Arc<LightNode>,
    stop: Option<oneshot::Sender<()>>,
    kill: tokio::sync::watch::Sender<bool>,
    task: Option<JoinHandle<Result<()>>>,
}

impl LightHandle {
    /// The address the gRPC server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node (id, store).
    pub fn node(&self) -> &Arc<LightNode> {
        &self.node
    }

    /// Stops accepting and lets in-flight calls finish.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(r) => r?,
                Err(e) => tracing::error!(error = %e, "light gRPC server task panicked"),
            }
        }
        Ok(())
    }

    /// Stops the server at once, dropping connections mid-call (a crash, for tests and
    /// the demo).
    pub async fn kill(mut self) {
        // Break every open connection first: the server task does not own them.
        let _ = self.kill.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Starts the light role with `keypair`: opens `<data_dir>/shards.redb` with the quota,
/// binds `cfg.listen` and serves ShardStore, gRPC health and reflection.
pub async fn start_light(cfg: &LightConfig, keypair: Keypair) -> Result<LightHandle> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| Error::Io {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let store = ShardStore::open(
        cfg.data_dir.join("shards.redb"),
        StoreConfig {
            quota_bytes: cfg.quota_bytes,
        },
    )?;
    serve_light(
        cfg.listen,
        LightNode::new(store, keypair, Arc::new(SystemClock)),
    )
    .await
}

/// Serves an already built [`LightNode`] (any store, any clock) on `listen`.
pub async fn serve_light(listen: SocketAddr, node: LightNode) -> Result<LightHandle> {
    let (listener, addr) = crate::net::bind(listen).await?;
    let (health, reflection) = crate::net::health_and_reflection("citychain.v1.ShardStore").await?;
    let node = Arc::new(node);
    let svc = rpc::ShardStoreService::new(node.clone()).into_server();
    let (stop, stopped) = oneshot::channel::<()>();
    let (kill, killed) = tokio::sync::watch::channel(false);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |conn| {
        conn.map(|io| {
            let _ = io.set_nodelay(true);
            Killable::new(io, killed.clone())
        })
    });
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
            .map_err(Error::from)
    });
    tracing::info!(%addr, node_id = %node.node_id(), "light node serving");
    Ok(LightHandle {
        addr,
        node,
        stop: Some(stop),
        kill,
        task: Some(task),
    })
}

/// A server-side connection that fails every read and write once the node is killed, so a
/// kill drops connections mid-call as a crash would (tonic runs connections on their own
/// tasks, which outlive the accept loop).
struct Killable {
    io: tokio::net::TcpStream,
    killed: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Killable {
    fn new(io: tokio::net::TcpStream, mut rx: tokio::sync::watch::Receiver<bool>) -> Self {
        Killable {
            io,
            killed: Box::pin(async move {
                // A closed channel (handle dropped without kill) never kills.
                if rx.wait_for(|k| *k).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }),
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "light node killed",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl tokio::io::AsyncRead for Killable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Killable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Killable {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

//! The one server handle: every role's gRPC server is spawned by [`serve`] and stopped
//! through [`ServerHandle`], gracefully ([`ServerHandle::shutdown`]) or as a crash
//! ([`ServerHandle::kill`], which also breaks the open connections mid-call).
//!
//! With [`LinkSecurity::Tls`] every accepted connection first completes a mutual TLS
//! handshake (X25519MLKEM768, peer NodeId binding checked; see `rpc::tls`) on its own task,
//! at most [`MAX_PENDING_HANDSHAKES`] at once and each within `rpc::tls::HANDSHAKE_TIMEOUT`,
//! so a slow or silent client never stalls the accept loop; a failed handshake closes that
//! connection only. Every request then carries an `rpc::tls::PeerConnectInfo` naming the
//! authenticated peer. Limits every server applies: [`LIMITS`].

use crate::{Error, Result};
use futures::StreamExt;
use rpc::tls::{LinkSecurity, PeerConnectInfo, TlsPeer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::Router;

/// Most TLS handshakes in progress on one server; further connections wait in the
/// listen backlog.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Most open connections on one server; further connections wait in the listen backlog
/// until one closes (each connection's h2 receive window bounds what it buffers).
pub const MAX_CONNECTIONS: usize = 1024;

/// Transport limits of every node server (one place, applied by `server_builder`).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Concurrent streams (calls) per connection; the peer is told in SETTINGS and may
    /// not open more (a representative multiplexes all its puts to a light node on one
    /// connection, so this must stay above its in-flight puts: hyper's default is 200).
    pub max_concurrent_streams: u32,
    /// Longest a call may run on the server (the client's deadline may be shorter).
    pub request_timeout: Duration,
    /// HTTP/2 keepalive ping interval and how long a ping may go unanswered.
    pub keepalive: (Duration, Duration),
    /// TCP keepalive.
    pub tcp_keepalive: Duration,
    /// Per-peer byte and rate budgets and per-method size limits (`BudgetLayer`).
    pub budget: super::BudgetConfig,
}

/// The limits every node server applies.
pub const LIMITS: ServerLimits = ServerLimits {
    max_concurrent_streams: 256,
    request_timeout: Duration::from_secs(60),
    keepalive: (Duration::from_secs(30), Duration::from_secs(10)),
    tcp_keepalive: Duration::from_secs(60),
    budget: super::BudgetConfig::DEFAULT,
};

/// The layers every node server runs its routes under: per-method metrics outermost
/// (`GrpcMetricsLayer`, so budget refusals are counted), then the budgets.
pub(crate) type NodeLayers = tower::layer::util::Stack<
    super::BudgetLayer,
    tower::layer::util::Stack<super::GrpcMetricsLayer, tower::layer::util::Identity>,
>;

/// A tonic server builder with [`LIMITS`] applied (budgets fresh for this server); every
/// role builds its router on it. `call_timeout` is off for the city's client API, whose
/// `SubmitTxStream` is long-lived.
pub(crate) fn server_builder(call_timeout: bool) -> Server<NodeLayers> {
    let b = Server::builder();
    let b = if call_timeout {
        b.timeout(LIMITS.request_timeout)
    } else {
        b
    };
    b.max_concurrent_streams(LIMITS.max_concurrent_streams)
        .http2_keepalive_interval(Some(LIMITS.keepalive.0))
        .http2_keepalive_timeout(Some(LIMITS.keepalive.1))
        .tcp_keepalive(Some(LIMITS.tcp_keepalive))
        .layer(super::GrpcMetricsLayer)
        .layer(super::BudgetLayer::new(LIMITS.budget))
}

/// A running gRPC server. Drop does not stop it: call [`ServerHandle::shutdown`] or
/// [`ServerHandle::kill`].
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    what: &'static str,
    stop: Option<oneshot::Sender<()>>,
    kill: watch::Sender<bool>,
    task: Option<JoinHandle<Result<()>>>,
    acceptor: Option<JoinHandle<()>>,
}

/// Serves `router` on `listener` (TCP_NODELAY on every connection; mutual TLS first when
/// `links` says so) until the handle stops it. `what` names the server in logs and errors.
pub(crate) fn serve(
    listener: TcpListener,
    router: Router<NodeLayers>,
    what: &'static str,
    links: &LinkSecurity,
) -> ServerHandle {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stop, stopped) = oneshot::channel::<()>();
    let (kill, killed) = watch::channel(false);
    let (tx, rx) = mpsc::channel::<std::io::Result<Killable>>(64);
    let acceptor = tokio::spawn(accept_loop(
        super::accept::Incoming::new(listener, what),
        links.clone(),
        tx,
        killed,
        what,
    ));
    let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
            .map_err(Error::from)
    });
    ServerHandle {
        addr,
        what,
        stop: Some(stop),
        kill,
        task: Some(task),
        acceptor: Some(acceptor),
    }
}

/// Accepts connections and hands them to the server; over TLS, each handshake runs on its
/// own task (bounded by a semaphore) so one slow client never holds up the others.
async fn accept_loop(
    mut incoming: super::accept::Incoming,
    links: LinkSecurity,
    tx: mpsc::Sender<std::io::Result<Killable>>,
    killed: watch::Receiver<bool>,
    what: &'static str,
) {
    let handshakes = std::sync::Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let open = std::sync::Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = tx.closed() => return,
            p = open.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let permit = match &links {
            LinkSecurity::Tls(_) => tokio::select! {
                _ = tx.closed() => return,
                p = handshakes.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => return,
                },
            },
            LinkSecurity::Insecure | LinkSecurity::OwnIdentity => None,
        };
        let conn = tokio::select! {
            _ = tx.closed() => return,
            c = incoming.next() => match c {
                Some(Ok(c)) => c,
                Some(Err(_)) => continue,
                None => return,
            },
        };
        let _ = conn.set_nodelay(true);
        let remote = conn.peer_addr().ok();
        match &links {
            LinkSecurity::OwnIdentity => {
                // Roles resolve their links before serving; never fall back to plaintext.
                tracing::error!(
                    server = what,
                    ?remote,
                    "node links unresolved (no TLS identity loaded): connection refused"
                );
                drop(conn);
            }
            LinkSecurity::Insecure => {
                let k = Killable::new(Conn::Plain(conn), remote, None, killed.clone(), slot);
                if tx.send(Ok(k)).await.is_err() {
                    return;
                }
            }
            LinkSecurity::Tls(ctx) => {
                let (ctx, tx, killed) = (ctx.clone(), tx.clone(), killed.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match sniff_and_accept(&ctx, conn).await {
                        Ok((conn, peer)) => {
                            let k = Killable::new(conn, remote, peer, killed, slot).on_tls_server();
                            let _ = tx.send(Ok(k)).await;
                        }
                        Err(e) => {
                            metrics::counter!("citychain_tls_handshake_failures_total", "server" => what)
                                .increment(1);
                            tracing::debug!(server = what, ?remote, error = %e, "TLS handshake refused");
                        }
                    }
                });
            }
        }
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and lets in-flight calls finish (at most `grace`; then the server
    /// task is dropped).
    pub async fn shutdown(mut self, grace: Duration) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.stop_accepting().await;
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            match tokio::time::timeout(grace, task).await {
                Ok(Ok(r)) => r?,
                Ok(Err(e)) if e.is_panic() => {
                    tracing::error!(server = self.what, error = %e, "server task panicked")
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    tracing::warn!(server = self.what, ?grace, "server did not drain in time");
                    abort.abort();
                }
            }
        }
        Ok(())
    }

    /// Stops at once, as a crash: open connections fail mid-call, the accept loop ends.
    pub async fn kill(mut self) {
        let _ = self.kill.send(true);
        self.stop_accepting().await;
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Closes the listener (so the port is free when shutdown returns).
    async fn stop_accepting(&mut self) {
        if let Some(a) = self.acceptor.take() {
            a.abort();
            let _ = a.await;
        }
    }

    /// Waits until the server stops by itself (an error); binaries that run until a signal
    /// use [`ServerHandle::shutdown`] on the signal instead.
    pub async fn wait(&mut self) -> Result<()> {
        match self.task.as_mut() {
            Some(task) => {
                let r = task.await;
                self.task = None;
                match r {
                    Ok(r) => r,
                    Err(_) => Err(Error::Stopping(self.what)),
                }
            }
            None => Ok(()),
        }
    }
}

/// On a TLS server, a connection whose first byte is a TLS record (0x16, handshake) gets the
/// mutual TLS handshake; anything else (a wallet's plaintext h2) is served plaintext and
/// carries no peer identity, so the node-only methods refuse it (`rpc::tls::authenticated`).
async fn sniff_and_accept(
    ctx: &rpc::tls::TlsContext,
    conn: TcpStream,
) -> std::io::Result<(Conn, Option<TlsPeer>)> {
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(rpc::tls::HANDSHAKE_TIMEOUT, conn.peek(&mut first))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client sent nothing"))??;
    if n == 1 && first[0] == 0x16 {
        let (tls, peer) = ctx.accept(conn).await?;
        Ok((Conn::Tls(Box::new(tls)), Some(peer)))
    } else {
        Ok((Conn::Plain(conn), None))
    }
}

/// A plaintext or TLS server connection.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A server-side connection that fails every read and write once the server is killed, so
/// a kill drops connections mid-call as a crash would (tonic runs connections on their own
/// tasks, which outlive the accept loop).
struct Killable {
    io: Conn,
    info: PeerConnectInfo,
    /// Held while the connection is open ([`MAX_CONNECTIONS`]).
    _slot: tokio::sync::OwnedSemaphorePermit,
    killed: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Killable {
    fn new(
        io: Conn,
        remote_addr: Option<SocketAddr>,
        tls: Option<TlsPeer>,
        mut rx: watch::Receiver<bool>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        Killable {
            io,
            _slot: slot,
            info: PeerConnectInfo {
                remote_addr,
                tls,
                tls_server: false,
            },
            killed: Box::pin(async move {
                // A closed channel (handle dropped without kill) never kills.
                if rx.wait_for(|k| *k).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }),
        }
    }

    fn on_tls_server(mut self) -> Self {
        self.info.tls_server = true;
        self
    }

    fn check(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "server killed",
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
    type ConnectInfo = PeerConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.info
    }
}

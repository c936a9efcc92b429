//! The one server handle: every role's gRPC server is spawned by [`serve`] and stopped
//! through [`ServerHandle`], gracefully ([`ServerHandle::shutdown`]) or as a crash
//! ([`ServerHandle::kill`], which also breaks the open connections mid-call).

use crate::{Error, Result};
use futures::StreamExt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::Router;

/// A running gRPC server. Drop does not stop it: call [`ServerHandle::shutdown`] or
/// [`ServerHandle::kill`].
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    what: &'static str,
    stop: Option<oneshot::Sender<()>>,
    kill: watch::Sender<bool>,
    task: Option<JoinHandle<Result<()>>>,
}

/// Serves `router` on `listener` (TCP_NODELAY on every connection) until the handle stops
/// it. `what` names the server in logs and errors.
pub(crate) fn serve(listener: TcpListener, router: Router, what: &'static str) -> ServerHandle {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stop, stopped) = oneshot::channel::<()>();
    let (kill, killed) = watch::channel(false);
    let incoming = super::accept::Incoming::new(listener, what).map(move |conn| {
        conn.map(|io| {
            let _ = io.set_nodelay(true);
            Killable::new(io, killed.clone())
        })
    });
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
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
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

/// A server-side connection that fails every read and write once the server is killed, so
/// a kill drops connections mid-call as a crash would (tonic runs connections on their own
/// tasks, which outlive the accept loop).
struct Killable {
    io: tokio::net::TcpStream,
    killed: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Killable {
    fn new(io: tokio::net::TcpStream, mut rx: watch::Receiver<bool>) -> Self {
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
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

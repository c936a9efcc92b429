//! The accept loop every gRPC server uses: when `accept` fails (EMFILE/ENFILE with a low
//! `ulimit -n`, ENOBUFS, ENOMEM) the node keeps running, logs why it is not taking
//! connections (once per burst, with a count), counts it, and backs off briefly instead of
//! spinning: the kernel keeps the waiting connection in the backlog (or refuses it when the
//! backlog is full) until descriptors are free again.
//!
//! tonic's own loop `continue`s on such errors with only a trace-level log, and the listener
//! is ready again at once, so without this a node with no free descriptors burns a core and
//! says nothing.

use futures::Stream;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Pause after a failed accept before trying again.
const BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per this long while accepts keep failing.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Accepted connections of a listener, riding out accept errors (see the module docs).
pub(crate) struct Incoming {
    listener: TcpListener,
    what: &'static str,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    unlogged: u64,
    last_log: Option<tokio::time::Instant>,
}

impl Incoming {
    /// Wraps `listener`; `what` names the server in logs.
    pub(crate) fn new(listener: TcpListener, what: &'static str) -> Self {
        Incoming {
            listener,
            what,
            backoff: None,
            unlogged: 0,
            last_log: None,
        }
    }

    fn note(&mut self, e: &io::Error) {
        self.unlogged += 1;
        let reason = match e.raw_os_error() {
            Some(24) => "too many open files in this process (EMFILE: raise ulimit -n)",
            Some(23) => "too many open files in the system (ENFILE)",
            Some(105) => "no buffer space (ENOBUFS)",
            Some(12) => "out of memory (ENOMEM)",
            _ => "accept failed",
        };
        metrics::counter!("citychain_accept_errors_total", "server" => self.what).increment(1);
        let now = tokio::time::Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            tracing::warn!(server = self.what, error = %e, reason, failed_since_last_log = self.unlogged,
                "not accepting connections for now; the node keeps running and retries");
            self.last_log = Some(now);
            self.unlogged = 0;
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<TcpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(sleep) = self.backoff.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.backoff = None;
            }
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => return Poll::Ready(Some(Ok(stream))),
                Poll::Ready(Err(e)) => {
                    self.note(&e);
                    self.backoff = Some(Box::pin(tokio::time::sleep(BACKOFF)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

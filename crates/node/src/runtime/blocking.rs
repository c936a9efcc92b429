//! The one way to run blocking or CPU-heavy work (fsync, ML-DSA-87 signing, redb) from
//! async code without stalling the reactor.

use crate::{Error, Result};

/// Runs CPU-heavy synchronous work in place without stalling other tasks on a
/// multi-threaded runtime (`block_in_place`); on a current-thread runtime it simply runs.
/// For work that must not hold the caller's task, use [`run_blocking`].
pub(crate) fn off_reactor<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs `f` on the blocking pool. A panic in `f` is resumed here (it is a bug, not an
/// error to report); a cancelled task (runtime shutting down) is [`Error::Stopping`].
pub(crate) async fn run_blocking<R: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::Stopping(what)),
    }
}

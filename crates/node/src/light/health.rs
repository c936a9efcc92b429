//! The light node's store watchdog: reflects the shard store's state in gRPC health
//! (NOT_SERVING while the store is down after an I/O error), reopens the store once it can,
//! and publishes the node's usage and free capacity as metrics. Every transition is logged
//! and counted.

use super::LightNode;
use crate::runtime::{self, StoreHealth};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often the watchdog looks at the store when nothing woke it (and retries a reopen
/// while the store is down).
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The running watchdog; stopped with [`Watchdog::stop`] (dropping it aborts the task).
pub(super) struct Watchdog {
    health: StoreHealth,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("serving", &self.is_serving())
            .finish()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Watchdog {
    /// Starts watching `node`'s store, reporting through `readiness` (its service and "").
    pub(super) fn start(node: Arc<LightNode>, readiness: runtime::Readiness) -> Self {
        let health = StoreHealth::new(readiness, "shards");
        let (stop, mut stopped) = oneshot::channel();
        let state = health.clone();
        let task = tokio::spawn(async move {
            let node_id = node.node_id();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = node.wake.notified() => {}
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                }
                let store = node.store.clone();
                if store.is_failed() {
                    if state.down().await {
                        tracing::error!(node_id = %node_id, failure = ?store.failure(),
                            "shard store I/O error: NOT_SERVING, puts refused until the store reopens");
                    }
                    let healed =
                        runtime::run_blocking("shard store reopen", move || store.heal()).await;
                    match healed {
                        Ok(Ok(report)) => {
                            state.up(true).await;
                            tracing::info!(node_id = %node_id, checked = ?report,
                                "shard store reopened and checked intact: SERVING again");
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(node_id = %node_id, error = %e, "shard store still down");
                        }
                        Err(_) => break,
                    }
                }
                if !node.store.is_failed() {
                    // Healed by a direct `heal()` call, or still fine: no-op when up.
                    state.up(false).await;
                }
                let store = node.store.clone();
                if let Ok((Ok(used), Ok(free))) =
                    runtime::run_blocking("shard store usage", move || {
                        (store.used_bytes(), store.free_bytes())
                    })
                    .await
                {
                    metrics::gauge!("citychain_light_used_bytes").set(used as f64);
                    metrics::gauge!("citychain_light_free_bytes").set(free as f64);
                    metrics::gauge!("citychain_light_quota_bytes")
                        .set(node.store.config().quota_bytes as f64);
                }
            }
        });
        Watchdog {
            health,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// True while health says SERVING.
    pub(super) fn is_serving(&self) -> bool {
        self.health.is_serving()
    }

    /// Stops the task and waits for it.
    pub(super) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

//! The sweeper: a background task that removes expired nodes (and so emits their `leave`).

use crate::PresenceStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running sweeper; [`SweeperHandle::shutdown`] stops it.
#[derive(Debug)]
pub struct SweeperHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl SweeperHandle {
    /// Stops the sweeper and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for SweeperHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Calls `store.sweep()` every `interval` until shut down. Failures (Redis down) are
/// logged and retried on the next tick.
pub fn spawn_sweeper(store: Arc<dyn PresenceStore>, interval: Duration) -> SweeperHandle {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => match store.sweep().await {
                    Ok(gone) => {
                        if !gone.is_empty() {
                            metrics::counter!("presence_expired_total").increment(gone.len() as u64);
                            tracing::info!(count = gone.len(), "expired nodes removed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
                },
            }
        }
    });
    SweeperHandle {
        stop: Some(stop),
        task,
    }
}

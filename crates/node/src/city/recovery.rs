//! Start-up recovery: finishing the holding of txs a crash left Admitted (stored durably,
//! answered or not, but in no stripe).

use super::admission::CityNode;
use crate::runtime::run_blocking;
use futures::StreamExt;
use std::sync::Arc;

/// Holds finished at once; the pipeline micro-batches them.
const CONCURRENT_HOLDS: usize = 64;

/// What the start-up scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Stored txs found in no stripe.
    pub found: usize,
    /// Of those, now Held.
    pub held: usize,
    /// Of those, still Admitted (the pipeline could not hold them now; the next start
    /// tries again).
    pub still_admitted: usize,
}

/// Scans the tx store once and puts every stored-but-unheld tx through the pipeline again
/// (see [`CityNode::finish_holding`]). Nothing to do without a pipeline.
pub(crate) async fn finish_admitted(node: Arc<CityNode>) -> crate::Result<RecoveryReport> {
    let scan = node.clone();
    let ids = run_blocking("admitted scan", move || scan.admitted_unheld_ids()).await??;
    let mut report = RecoveryReport {
        found: ids.len(),
        ..RecoveryReport::default()
    };
    if ids.is_empty() {
        return Ok(report);
    }
    tracing::info!(
        count = ids.len(),
        "finishing the holding of txs left Admitted when the node stopped"
    );
    let mut holds = futures::stream::iter(ids)
        .map(|id| {
            let node = node.clone();
            async move { (id, node.finish_holding(id).await) }
        })
        .buffer_unordered(CONCURRENT_HOLDS);
    while let Some((id, r)) = holds.next().await {
        match r {
            Ok(rpc::TxState::Admitted) | Err(_) => {
                if let Err(e) = r {
                    tracing::warn!(tx = %id, error = %e.message, "left Admitted: not held yet");
                }
                report.still_admitted += 1;
                metrics::counter!("citychain_recovered_holds_total", "result" => "still_admitted")
                    .increment(1);
            }
            Ok(_) => {
                report.held += 1;
                metrics::counter!("citychain_recovered_holds_total", "result" => "held")
                    .increment(1);
            }
        }
    }
    tracing::info!(?report, "start-up holding finished");
    Ok(report)
}

/// Runs [`finish_admitted`] in the background; the task ends when the scan is done.
pub(crate) fn spawn_finish_admitted(
    node: Arc<CityNode>,
) -> tokio::task::JoinHandle<Option<RecoveryReport>> {
    metrics::describe_counter!(
        "citychain_recovered_holds_total",
        "Txs found Admitted but unheld at start-up, by result (held, still_admitted)"
    );
    tokio::spawn(async move {
        match finish_admitted(node).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "start-up scan of admitted txs failed");
                None
            }
        }
    })
}

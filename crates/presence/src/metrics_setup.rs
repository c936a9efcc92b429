//! The process-wide Prometheus recorder behind `/metrics`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Installs the Prometheus recorder once per process and returns its handle (None if
/// another recorder was installed first).
pub fn prometheus_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// HELP text of the presence server's metrics (the same words as the node's catalogue).
fn describe() {
    metrics::describe_counter!(
        "presence_expired_total",
        "Presence entries expired by the sweeper."
    );
    metrics::describe_counter!(
        "presence_http_requests_total",
        "Presence HTTP requests (by route and status)."
    );
    metrics::describe_gauge!("presence_online_nodes", "Nodes online in presence.");
}

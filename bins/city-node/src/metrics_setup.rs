//! The Prometheus recorder of `city-node run`: explicit histogram buckets (no summaries),
//! HELP text for every metric (`node::metrics_catalog`), and `citychain_build_info`.

use dag_core::Role;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};
use node::metrics_catalog::{BYTES_BUCKETS, COUNT_BUCKETS, LATENCY_BUCKETS, describe_all};
use std::net::SocketAddr;

/// The builder with buckets set (shared by [`install`] and the test).
fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_txs".into()), COUNT_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("citychain_micro_batch_bytes".into()),
            BYTES_BUCKETS,
        )
}

/// Serves `/metrics` on `addr` and registers every metric's HELP text.
pub(crate) fn install(addr: SocketAddr, role: Role) -> Result<(), BuildError> {
    builder()?.with_http_listener(addr).install()?;
    after_install(role);
    Ok(())
}

fn after_install(role: Role) {
    describe_all();
    metrics::gauge!("citychain_build_info", "version" => env!("CARGO_PKG_VERSION"), "role" => role.as_str())
        .set(1.0);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn histograms_have_buckets_help_and_build_info() {
        let recorder = builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            after_install(Role::Light);
            metrics::histogram!("citychain_hold_seconds").record(0.003);
            metrics::histogram!("citychain_micro_batch_txs").record(3.0);
        });
        let text = handle.render();
        assert!(text.contains("# HELP citychain_hold_seconds"), "{text}");
        assert!(
            text.contains("# TYPE citychain_hold_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("citychain_hold_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(!text.contains("quantile="), "no summaries: {text}");
        assert!(
            text.contains("citychain_micro_batch_txs_bucket{le=\"4\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("citychain_build_info{version=\"0.1.0\",role=\"light\"} 1")
                || text.contains("citychain_build_info{role=\"light\",version=\"0.1.0\"} 1"),
            "{text}"
        );
    }
}

//! The serving state of a store, mirrored in one place into gRPC health (the role's service
//! and the overall ""), the `citychain_store_serving` gauge and the
//! `citychain_store_io_failures_total` / `citychain_store_reopens_total` counters. The tx
//! store's and the shard store's watchdogs both drive it, so both report an outage the same
//! way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// What health says about one store; transitions are published, repeats are not.
#[derive(Clone)]
pub(crate) struct StoreHealth {
    reporter: HealthReporter,
    service: &'static str,
    store: &'static str,
    serving: Arc<AtomicBool>,
}

impl std::fmt::Debug for StoreHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHealth")
            .field("service", &self.service)
            .field("store", &self.store)
            .field("serving", &self.is_serving())
            .finish()
    }
}

impl StoreHealth {
    /// Health of `store` (the metrics label: "txs", "shards"), reported on `service`;
    /// starts SERVING.
    pub(crate) fn new(
        reporter: HealthReporter,
        service: &'static str,
        store: &'static str,
    ) -> Self {
        StoreHealth {
            reporter,
            service,
            store,
            serving: Arc::new(AtomicBool::new(true)),
        }
    }

    /// True while health says SERVING.
    pub(crate) fn is_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    async fn publish(&self, status: ServingStatus) {
        self.reporter.set_service_status(self.service, status).await;
        self.reporter.set_service_status("", status).await;
    }

    /// The store failed: NOT_SERVING and one failure counted. Returns true on the
    /// transition (the caller logs it once), false if it was already down.
    pub(crate) async fn down(&self) -> bool {
        if !self.serving.swap(false, Ordering::SeqCst) {
            return false;
        }
        self.publish(ServingStatus::NotServing).await;
        metrics::counter!("citychain_store_io_failures_total", "store" => self.store).increment(1);
        metrics::gauge!("citychain_store_serving", "store" => self.store).set(0.0);
        true
    }

    /// The store works again; `reopened` when this watchdog reopened it (counted as a
    /// reopen). Returns true on the transition, false if it was already up.
    pub(crate) async fn up(&self, reopened: bool) -> bool {
        if self.serving.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.publish(ServingStatus::Serving).await;
        if reopened {
            metrics::counter!("citychain_store_reopens_total", "store" => self.store).increment(1);
        }
        metrics::gauge!("citychain_store_serving", "store" => self.store).set(1.0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_server::Health;

    async fn status(
        svc: &impl Health,
        name: &str,
    ) -> tonic_health::pb::health_check_response::ServingStatus {
        let r = svc
            .check(tonic::Request::new(HealthCheckRequest {
                service: name.into(),
            }))
            .await
            .expect("known service")
            .into_inner();
        r.status()
    }

    #[tokio::test]
    async fn transitions_are_published_once_and_repeats_are_not() {
        use tonic_health::pb::health_check_response::ServingStatus as S;
        let reporter = HealthReporter::new();
        let svc = tonic_health::server::HealthService::from_health_reporter(reporter.clone());
        reporter
            .set_service_status("svc", ServingStatus::Serving)
            .await;
        let h = StoreHealth::new(reporter, "svc", "test");
        assert!(h.is_serving());
        assert!(!h.up(false).await, "already up: no transition");
        assert!(h.down().await);
        assert!(
            !h.down().await,
            "second failure while down is not a transition"
        );
        assert!(!h.is_serving());
        assert_eq!(status(&svc, "svc").await, S::NotServing);
        assert_eq!(status(&svc, "").await, S::NotServing);
        assert!(h.clone().up(true).await, "a clone shares the state");
        assert!(h.is_serving());
        assert_eq!(status(&svc, "svc").await, S::Serving);
        assert_eq!(status(&svc, "").await, S::Serving);
    }
}

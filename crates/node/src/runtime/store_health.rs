//! The serving state of a store, mirrored in one place into gRPC health (the `store`
//! condition of the role's [`Readiness`]), the `citychain_store_serving` gauge and the
//! `citychain_store_io_failures_total` / `citychain_store_reopens_total` counters. The tx
//! store's and the shard store's watchdogs both drive it, so both report an outage the same
//! way.

use super::Readiness;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What health says about one store; transitions are published, repeats are not.
#[derive(Clone)]
pub(crate) struct StoreHealth {
    readiness: Readiness,
    store: &'static str,
    serving: Arc<AtomicBool>,
}

impl std::fmt::Debug for StoreHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHealth")
            .field("service", &self.readiness.service())
            .field("store", &self.store)
            .field("serving", &self.is_serving())
            .finish()
    }
}

impl StoreHealth {
    /// Health of `store` (the metrics label: "txs", "shards"), a condition of
    /// `readiness`; starts up.
    pub(crate) fn new(readiness: Readiness, store: &'static str) -> Self {
        StoreHealth {
            readiness,
            store,
            serving: Arc::new(AtomicBool::new(true)),
        }
    }

    /// True while health says SERVING.
    pub(crate) fn is_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    async fn publish(&self, up: bool) {
        self.readiness.set("store", up).await;
    }

    /// The store failed: NOT_SERVING and one failure counted. Returns true on the
    /// transition (the caller logs it once), false if it was already down.
    pub(crate) async fn down(&self) -> bool {
        if !self.serving.swap(false, Ordering::SeqCst) {
            return false;
        }
        self.publish(false).await;
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
        self.publish(true).await;
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
        let reporter = tonic_health::server::HealthReporter::new();
        let svc = tonic_health::server::HealthService::from_health_reporter(reporter.clone());
        let readiness = Readiness::new(reporter, "svc").await;
        readiness.set(super::super::readiness::STARTING, true).await;
        let h = StoreHealth::new(readiness, "test");
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

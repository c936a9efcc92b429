//! What gRPC health says about a role's service, from every condition that must hold for
//! it to serve ([`Readiness`]): the role has finished starting ([`STARTING`]), it is not
//! stopping ([`STOPPING`]), its store works (the store watchdog, condition
//! `store`) and, on a city, at least k live holders are known ([`HOLDERS`]). Health says
//! SERVING for the role's service and the overall `""` only while none fails; every change
//! of the overall answer is published once (so `Watch` streams see each transition) and
//! mirrored in the `citychain_health_serving` gauge.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Failing until the role says it is ready (a city: its first live-holder count is in).
pub const STARTING: &str = "starting";
/// Failing from the shutdown signal on, before in-flight calls drain.
pub const STOPPING: &str = "stopping";
/// A city knows fewer than k live light nodes: a submission could not become Held.
pub const HOLDERS: &str = "holders";

/// The conditions behind one service's health; clones share them.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    reporter: HealthReporter,
    service: &'static str,
    /// Conditions failing now; the lock is held while publishing so transitions reach
    /// the health service in order.
    failing: tokio::sync::Mutex<BTreeSet<&'static str>>,
    serving: AtomicBool,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("service", &self.inner.service)
            .field("serving", &self.is_serving())
            .finish()
    }
}

impl Readiness {
    /// The conditions of `service`, reported through `reporter`; starts NOT_SERVING with
    /// [`STARTING`] failing.
    pub async fn new(reporter: HealthReporter, service: &'static str) -> Self {
        let r = Readiness {
            inner: Arc::new(Inner {
                reporter,
                service,
                failing: tokio::sync::Mutex::new(BTreeSet::from([STARTING])),
                serving: AtomicBool::new(false),
            }),
        };
        r.publish(false).await;
        r
    }

    /// The service health reports on.
    pub fn service(&self) -> &'static str {
        self.inner.service
    }

    /// True while health says SERVING.
    pub fn is_serving(&self) -> bool {
        self.inner.serving.load(Ordering::SeqCst)
    }

    /// The conditions failing now, sorted.
    pub async fn failing(&self) -> Vec<&'static str> {
        self.inner.failing.lock().await.iter().copied().collect()
    }

    /// Records whether `condition` holds; publishes when the overall answer changes.
    pub async fn set(&self, condition: &'static str, holds: bool) {
        let mut failing = self.inner.failing.lock().await;
        let changed = if holds {
            failing.remove(condition)
        } else {
            failing.insert(condition)
        };
        if !changed {
            return;
        }
        let serving = failing.is_empty();
        if serving != self.is_serving() {
            tracing::info!(service = self.inner.service, serving, failing = ?*failing,
                "gRPC health changes");
            self.publish(serving).await;
        }
    }

    async fn publish(&self, serving: bool) {
        self.inner.serving.store(serving, Ordering::SeqCst);
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.inner
            .reporter
            .set_service_status(self.inner.service, status)
            .await;
        self.inner.reporter.set_service_status("", status).await;
        metrics::gauge!("citychain_health_serving", "service" => self.inner.service)
            .set(if serving { 1.0 } else { 0.0 });
    }
}

/// How often a city counts its live holders for [`HOLDERS`].
pub const HOLDERS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Counts `live()` now (so the role's first answer is already right) and then every
/// [`HOLDERS_EVERY`]: [`HOLDERS`] fails while fewer than `k` are live. The task runs until
/// aborted.
pub async fn watch_holders(
    readiness: Readiness,
    k: usize,
    live: impl Fn() -> usize + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    check_holders(&readiness, k, live()).await;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HOLDERS_EVERY).await;
            check_holders(&readiness, k, live()).await;
        }
    })
}

async fn check_holders(r: &Readiness, k: usize, live: usize) {
    if live < k && r.is_serving() {
        tracing::warn!(live, k, "fewer live light nodes than k: health NOT_SERVING");
    }
    r.set(HOLDERS, live >= k).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as S;
    use tonic_health::pb::health_client::HealthClient;

    async fn check(client: &mut HealthClient<tonic::transport::Channel>, name: &str) -> S {
        client
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status()
    }

    /// Over a real loopback server: starting, ready, a failing condition, stopping.
    #[tokio::test]
    async fn health_follows_every_condition_over_grpc() {
        let (listener, addr) = crate::runtime::bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let (reporter, health, v1, v1alpha) =
            crate::runtime::health_reporter_and_reflection("test.Service", &[])
                .await
                .unwrap();
        let ready = Readiness::new(reporter, "test.Service").await;
        let router = crate::runtime::server_builder(true)
            .add_service(health)
            .add_service(v1)
            .add_service(v1alpha);
        let server = crate::runtime::serve(
            listener,
            router,
            "readiness-test",
            &rpc::tls::LinkSecurity::Insecure,
        );
        let mut client = HealthClient::new(
            tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
        assert_eq!(
            check(&mut client, "test.Service").await,
            S::NotServing,
            "starting"
        );
        assert_eq!(check(&mut client, "").await, S::NotServing, "starting");
        assert_eq!(ready.failing().await, vec![STARTING]);
        ready.set(STARTING, true).await;
        assert_eq!(check(&mut client, "test.Service").await, S::Serving);
        assert_eq!(check(&mut client, "").await, S::Serving);
        ready.set(HOLDERS, false).await;
        assert_eq!(
            check(&mut client, "test.Service").await,
            S::NotServing,
            "too few holders"
        );
        ready.set("store", false).await;
        ready.set(HOLDERS, true).await;
        assert_eq!(
            check(&mut client, "").await,
            S::NotServing,
            "store still down"
        );
        ready.set("store", true).await;
        assert_eq!(check(&mut client, "").await, S::Serving);
        assert!(ready.is_serving());
        ready.set(STOPPING, false).await;
        assert_eq!(
            check(&mut client, "test.Service").await,
            S::NotServing,
            "stopping"
        );
        assert!(!ready.is_serving());
        server
            .shutdown(std::time::Duration::from_secs(5))
            .await
            .unwrap();
    }
}

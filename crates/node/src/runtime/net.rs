//! Shared plumbing for every role's gRPC server: binding the listen address with a typed
//! error, and the health + reflection services each server carries.

use crate::{Error, Result};
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Binds `addr` (port 0 picks a free port) and returns the listener with its real address.
pub(crate) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    Ok((listener, bound))
}

/// Health (reporting `service` as serving) and reflection (v1 and v1alpha, listing the
/// `served` services and health/reflection) for a role's server.
#[allow(clippy::type_complexity)]
pub(crate) async fn health_and_reflection(
    service: &str,
    served: &[&str],
) -> Result<(
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let (_reporter, health, v1, v1alpha) = rpc::health_and_reflection(service, served)
        .await
        .map_err(|e| Error::Reflection(e.to_string()))?;
    Ok((health, v1, v1alpha))
}

/// Like [`health_and_reflection`], also returning the reporter, for roles whose readiness
/// changes while they run (a store down after an I/O error answers NOT_SERVING).
#[allow(clippy::type_complexity)]
pub(crate) async fn health_reporter_and_reflection(
    service: &str,
    served: &[&str],
) -> Result<(
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    rpc::health_and_reflection(service, served)
        .await
        .map_err(|e| Error::Reflection(e.to_string()))
}

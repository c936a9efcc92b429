//! Runtime plumbing every role shares, written once: binding and serving a gRPC server
//! behind one handle ([`ServerHandle`]: graceful shutdown or crash-like kill), the wall
//! clock, per-peer byte and rate budgets with per-method size limits ([`BudgetLayer`]),
//! running CPU-heavy or blocking work off the reactor, opening a redb database with
//! typed errors, and normalising the address a node advertises.

mod accept;
mod addr;
mod blocking;
mod budget;
mod clock;
mod db;
mod grpc_metrics;
mod net;
pub mod readiness;
mod server;
mod store_health;
mod tls;

pub use addr::advertised_addr;
pub(crate) use blocking::{off_reactor, run_blocking};
pub use budget::{BudgetConfig, BudgetLayer, BudgetService, SMALL_REQUEST_BYTES, method_limit};
pub use clock::{SystemClock, now_ms};
pub use db::{DEFAULT_DB_CACHE_BYTES, db_cache_bytes, set_db_cache_bytes};
pub(crate) use db::{db_err, open_db, open_db_capped};
pub use grpc_metrics::{GrpcMetricsLayer, GrpcMetricsService, code_label};
pub(crate) use net::{bind, health_and_reflection, health_reporter_and_reflection};
pub use readiness::Readiness;
pub use server::{LIMITS, MAX_CONNECTIONS, MAX_PENDING_HANDSHAKES, ServerHandle, ServerLimits};
pub(crate) use server::{serve, server_builder};
pub(crate) use store_health::StoreHealth;
pub use tls::{node_links, resolve_links};

//! # node-list
//!
//! A node's live view of who else is online.
//!
//! - [`NodeRegistry`]: the local view. Entries expire [`NodeListConfig::cache_ttl`] (10 s)
//!   after they were last confirmed, so a view cut off from presence empties itself rather
//!   than serving ghosts. Queries: all online, by role, by city, nearest N to a point
//!   (haversine), and a stream of [`NodeChange`]s.
//! - [`NodeListManager`]: the background task that keeps the view fresh: login → heartbeat
//!   every 3 s → events (join / update / leave) with polling as fallback → logout on
//!   [`NodeListHandle::shutdown`].
//!
//! In-process (devnet): share one [`presence::MemoryPresenceStore`] among all nodes.
//!
//! ```
//! use node_list::{NodeListConfig, NodeListManager};
//! use presence::{MemoryPresenceStore, SystemClock};
//! use std::sync::Arc;
//! # use dag_core::{NodeId, NodeInfo, Role};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! # let me = NodeInfo { node_id: NodeId::from_bytes([1; 32]), role: Role::City,
//! #   grpc_addr: "127.0.0.1:1".into(), city_id: "JP-13".into(), zone: String::new(),
//! #   lat: 35.0, lon: 139.0, free_capacity: 0, load: 0.0, version: "0".into(),
//! #   session_start_ms: 0 };
//! let config = NodeListConfig::default();
//! let store = Arc::new(MemoryPresenceStore::new(config.presence_ttl, Arc::new(SystemClock)));
//! let handle = NodeListManager::start(store, Some(me), config);
//! let lights = handle.registry().by_role(Role::Light);
//! # assert!(lights.is_empty());
//! handle.shutdown().await;
//! # }
//! ```

mod config;
mod error;
mod geo;
mod manager;
mod registry;

pub use config::{NodeListConfig, PresenceBackend};
pub use error::{Error, Result};
pub use geo::haversine_km;
pub use manager::{NodeListHandle, NodeListManager};
pub use registry::{LeftReason, NodeChange, NodeRegistry};

//! # node-list
//!
//! A node's live view of who else is online.
//!
//! - [`NodeRegistry`]: the local view. Entries expire [`NodeListConfig::cache_ttl`] (10 s)
//!   after they were last confirmed, so a view cut off from presence empties itself rather
//!   than serving ghosts — unless gossip is attached ([`NodeRegistry::attach_gossip`]):
//!   then a node gossip holds alive stays whatever presence says (except an explicit
//!   logout) and leaves when gossip confirms it down. [`NodeRegistry::status`] and the
//!   `nodelist_*` gauges say whether presence answers and whether the view rests on gossip
//!   alone. Queries: all online, by role, by city, nearest N to a point
//!   (haversine), and a stream of [`NodeChange`]s.
//! - [`NodeListManager`]: the background task that keeps the view fresh: login → heartbeat
//!   every 3 s → events (join / update / leave) with polling as fallback → logout on
//!   [`NodeListHandle::shutdown`].
//!
//! In-process (devnet): share one [`presence::MemoryPresenceStore`] among all nodes, with
//! one sweeper so that crashed nodes expire and produce `leave`:
//!
//! ```
//! use futures::StreamExt;
//! use node_list::{LeftReason, NodeChange, NodeListConfig, NodeListManager};
//! use presence::{MemoryPresenceStore, PresenceStore, SystemClock, spawn_sweeper};
//! use std::{sync::Arc, time::Duration};
//! # use dag_core::{NodeId, NodeInfo, Role};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! # let info = |n: u8, role| NodeInfo { node_id: NodeId::from_bytes([n; 32]), role,
//! #   grpc_addr: "127.0.0.1:1".into(), city_id: "JP-13".into(), zone: String::new(),
//! #   lat: 35.0, lon: 139.0, free_capacity: 0, load: 0.0, version: "0".into(),
//! #   session_start_ms: 0 };
//! let config = NodeListConfig::default(); // or NodeListConfig::from_env()?
//! let store: Arc<dyn PresenceStore> =
//!     Arc::new(MemoryPresenceStore::new(config.presence_ttl, Arc::new(SystemClock)));
//! let sweeper = spawn_sweeper(store.clone(), Duration::from_secs(1));
//!
//! let city = NodeListManager::start(store.clone(), Some(info(1, Role::City)), config.clone());
//! let light = NodeListManager::start(store.clone(), Some(info(2, Role::Light)), config.clone());
//! let mut changes = city.registry().changes();
//! # while city.registry().by_role(Role::Light).is_empty() { tokio::task::yield_now().await; }
//! let lights = city.registry().by_role(Role::Light);
//! let nearest = city.registry().nearest(35.0, 139.0, 6, Some(Role::Light));
//! assert_eq!(lights.len(), 1);
//! assert_eq!(nearest.len(), 1);
//!
//! light.shutdown().await; // logout: everyone sees Left { reason: Logout }
//! while let Some(change) = changes.next().await {
//!     if let NodeChange::Left { node_id, reason } = change {
//!         assert_eq!(reason, LeftReason::Logout);
//!         assert_eq!(node_id, NodeId::from_bytes([2; 32]));
//!         break;
//!     }
//! }
//! city.shutdown().await;
//! sweeper.shutdown().await;
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
pub use registry::{LeftReason, NodeChange, NodeRegistry, ViewStatus};

//! node-list end to end: managers over a shared in-memory store (paused clock), the polling
//! fallback, and real HTTP and Redis backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod backends;
mod memory;

use dag_core::{NodeId, NodeInfo, Role};
use futures::StreamExt;
use futures::stream::BoxStream;
use node_list::NodeChange;
use std::time::Duration;

pub fn node(n: u8, role: Role, lat: f64, lon: f64) -> NodeInfo {
    NodeInfo {
        node_id: NodeId::from_bytes([n; 32]),
        role,
        grpc_addr: format!("127.0.0.1:{}", 9000 + u16::from(n)),
        city_id: "JP-13".into(),
        zone: String::new(),
        lat,
        lon,
        free_capacity: 1 << 30,
        load: 0.1,
        version: "test".into(),
        session_start_ms: 0,
    }
}

/// A node with a real key (from seed `n`), as the signed presence API needs: its info
/// and the key as a signer.
pub fn keyed(
    n: u8,
    role: Role,
    lat: f64,
    lon: f64,
) -> (NodeInfo, std::sync::Arc<dyn dag_core::Signer>) {
    let key = pqc::Keypair::from_seed(&[n; 32]).expect("seeded key");
    let info = NodeInfo {
        node_id: key.node_id(),
        ..node(n, role, lat, lon)
    };
    (info, std::sync::Arc::new(key))
}

/// Waits (tokio time) for the first change about `id` matching `pred`.
pub async fn wait_change(
    changes: &mut BoxStream<'static, NodeChange>,
    limit: Duration,
    pred: impl Fn(&NodeChange) -> bool,
) -> NodeChange {
    tokio::time::timeout(limit, async {
        loop {
            let c = changes.next().await.expect("change stream ended");
            if pred(&c) {
                return c;
            }
        }
    })
    .await
    .expect("expected node change did not arrive in time")
}

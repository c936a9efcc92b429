//! Integration tests of the city role over real gRPC on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod archive;
mod city;
mod consensus;
mod durability;
mod federation;
mod health;
mod light;
mod light_pipeline;
mod stake;

use dag_core::{NodeInfo, Role};
use node::LightHandle;

/// The presence entry of light node `h` in JP-13, in zone `zone-{zone}`, with 1 GiB free.
fn info(h: &LightHandle, zone: usize) -> NodeInfo {
    NodeInfo {
        node_id: h.node().node_id(),
        role: Role::Light,
        grpc_addr: h.addr().to_string(),
        city_id: "JP-13".into(),
        zone: format!("zone-{zone}"),
        lat: 35.68,
        lon: 139.69,
        free_capacity: 1 << 30,
        load: 0.0,
        version: "test".into(),
        session_start_ms: 0,
    }
}

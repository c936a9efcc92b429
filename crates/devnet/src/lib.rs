//! # devnet
//!
//! City Chain's in-process devnet and the demo behind `city-node demo`: presence, light
//! nodes, a continent and the city's committee of representatives started through the same
//! composition roots the binary uses (`node::run_city_with`, `node::run_light_with`),
//! signed load driven over real gRPC on loopback and followed Held → Ordered → Federated,
//! and a table of what was measured with a verdict naming every failed check. Servers never
//! link this crate. [`localnet`] runs the same network as separate OS processes.

pub mod demo;
mod devnet;
mod error;
pub mod light_fill;
pub mod load;
pub mod load_bench;
pub mod localnet;

pub use devnet::{CITY, CITY_POS, DevLight, Devnet, DevnetConfig};
pub use error::{Error, Result};

//! # devnet
//!
//! City Chain's in-process devnet and the demo behind `city-node demo`: presence, light
//! nodes and the city started through the same composition roots the binary uses
//! (`node::run_city_with`, `node::run_light_with`), signed load driven over real gRPC on
//! loopback, and a table of what was measured; and [`localnet`], the same network as
//! separate OS processes. Servers never link this crate.

pub mod demo;
mod devnet;
mod error;
pub mod localnet;

pub use devnet::{CITY, CITY_POS, DevLight, Devnet, DevnetConfig};
pub use error::{Error, Result};

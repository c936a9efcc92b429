//! Integration tests of the city role over real gRPC on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod archive;
mod city;
mod consensus;
mod durability;
mod federation;
mod light;
mod light_pipeline;
mod stake;

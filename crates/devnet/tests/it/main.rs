//! Integration tests of the devnet: the city committee through the role composition roots,
//! and the demo verdict failing under each injected fault.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod committee;
mod faults;

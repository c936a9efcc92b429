//! Integration tests of the devnet: the city committee through the role composition roots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod committee;

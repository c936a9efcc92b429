//! Integration tests of pqc: key files and wrapped keys written by earlier builds still load.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cross_check;
mod fixtures;
mod vectors;

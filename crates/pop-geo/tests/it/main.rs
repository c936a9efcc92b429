//! Integration tests of pop-geo: shipped real polygons, synthetic fixtures for holes, borders
//! and the antimeridian, malformed input, and geo as an oracle for exact containment.
#![allow(clippy::unwrap_used)]

mod fixtures;
mod malformed;
mod oracle;
mod shipped;
mod world;

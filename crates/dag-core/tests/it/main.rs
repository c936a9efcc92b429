//! Integration tests of dag-core: the pinned vectors in `tests/vectors/` (byte for byte).
//! The structure-aware decoder properties are `tests/decoders.rs`, a binary of their own
//! (its counting allocator must see no other test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod reader;
mod vectors;

//! Structure-aware decoder properties of the shard format and the tx location (see
//! dag-core's `tests/it/mutate.rs`), starting from the pinned stripe's shards. One test in
//! its own binary: the counting allocator sees only the decoder it measures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../dag-core/tests/it/mutate.rs"]
mod mutate;

use storage::{Shard, TxLocation};

fn bytes(v: &serde_json::Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn shard_and_location_decoders_hold_under_mutation() {
    let path = format!(
        "{}/../../tests/vectors/stripe.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // The smallest pinned shard is a few kilobytes; the property runs over all of it.
    let shard = bytes(&v["shards"][0]["bytes"]);
    let o = mutate::check("shard", &shard, Shard::from_bytes, Shard::to_bytes);
    println!("shard: {} mutated inputs, {} decoded", o.tried, o.decoded);
    let loc = bytes(&v["locations"][1]);
    let o = mutate::check("tx location", &loc, TxLocation::decode, |l: &TxLocation| {
        l.encode().to_vec()
    });
    println!(
        "tx location: {} mutated inputs, {} decoded",
        o.tried, o.decoded
    );
}

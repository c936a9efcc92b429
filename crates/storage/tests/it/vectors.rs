//! The pinned 4 + 2 stripe (`tests/vectors/stripe.json`, written by `scripts/gen-vectors`):
//! the micro-batch layout of the two signed txs, the stripe id, every shard's bytes (the
//! versioned shard format) and hash are rebuilt and compared byte for byte, and any k of the
//! pinned shards decode the stripe.

use serde_json::Value;
use storage::{ErasureConfig, MicroBatch, Shard, StripeLayout, TxLocation, tx_at};

fn load() -> Value {
    let path = format!(
        "{}/../../tests/vectors/stripe.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn pinned_shards(v: &Value) -> Vec<Shard> {
    v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Shard::from_bytes(&bytes(&s["bytes"])).unwrap())
        .collect()
}

#[test]
fn the_stripe_and_its_shards_match_the_pinned_bytes() {
    let v = load();
    let txs: Vec<Vec<u8>> = v["txs"].as_array().unwrap().iter().map(bytes).collect();
    let batch = MicroBatch::from_tx_bytes(&txs).unwrap();
    assert_eq!(batch.stripe, bytes(&v["stripe"]), "stripe layout");
    assert_eq!(batch.stripe_id.to_hex(), v["stripe_id"].as_str().unwrap());
    for (l, want) in batch
        .locations
        .iter()
        .zip(v["locations"].as_array().unwrap())
    {
        assert_eq!(l.encode().to_vec(), bytes(want));
    }
    let cfg = ErasureConfig::default();
    assert_eq!(cfg.codec.name(), v["codec"].as_str().unwrap());
    assert_eq!(u64::from(cfg.k), v["k"].as_u64().unwrap());
    assert_eq!(u64::from(cfg.m), v["m"].as_u64().unwrap());
    let shards = cfg.encode(&batch.stripe).unwrap();
    let pinned = v["shards"].as_array().unwrap();
    assert_eq!(shards.len(), pinned.len());
    for (s, p) in shards.iter().zip(pinned) {
        assert_eq!(u64::from(s.index()), p["index"].as_u64().unwrap());
        assert_eq!(s.to_bytes(), bytes(&p["bytes"]), "shard {}", s.index());
        assert_eq!(s.hash().to_hex(), p["hash"].as_str().unwrap());
    }
}

#[test]
fn any_k_of_the_pinned_shards_decode_the_stripe() {
    let v = load();
    let stripe = bytes(&v["stripe"]);
    let shards = pinned_shards(&v);
    let layout = StripeLayout::from_shards(&shards).unwrap();
    let n = shards.len();
    // Every subset of exactly k = 4 of the 6.
    let mut subsets = 0;
    for mask in 0u32..(1 << n) {
        if mask.count_ones() != 4 {
            continue;
        }
        let some: Vec<Shard> = (0..n)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| shards[i].clone())
            .collect();
        assert_eq!(layout.decode(&some).unwrap(), stripe, "subset {mask:06b}");
        subsets += 1;
    }
    assert_eq!(subsets, 15);
    // The txs sit where the locations say.
    let txs = v["txs"].as_array().unwrap();
    for (l, t) in v["locations"].as_array().unwrap().iter().zip(txs) {
        let loc = TxLocation::decode(&bytes(l)).unwrap();
        assert_eq!(tx_at(&stripe, &loc).unwrap().encode(), bytes(t));
    }
}

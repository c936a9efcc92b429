//! Property: for random payloads, codecs, k and m, any ≤ m lost or corrupted shards still
//! decode to the original; more than m lost gives a clear NotEnoughShards error.

use dag_core::{Hash32, ShardHash, StripeId};
use proptest::prelude::*;
use storage::{CodecId, ErasureConfig, Error, Shard, StripeLayout, decode};

fn config() -> impl Strategy<Value = ErasureConfig> {
    (prop::sample::select(CodecId::ALL.to_vec()), 1u16..=20)
        .prop_flat_map(|(codec, k)| (Just(codec), Just(k), 1u16..=(32 - k).min(12)))
        .prop_map(|(codec, k, m)| ErasureConfig::new(codec, k, m).unwrap())
}

/// Damages a shard in one of several ways; every way must make it count as missing.
fn damage(s: &mut Shard, how: u8, other_stripe: StripeId) {
    match how % 6 {
        0 => s.data[0] ^= 0x5a,
        1 => s.header.shard_hash = ShardHash::from_bytes([0xee; 32]),
        2 => s.data.pop().map_or((), |_| ()),
        3 => {
            s.header.stripe_id = other_stripe;
            s.header.stripe_hash = other_stripe.0;
        }
        4 => s.header.k += 1, // inconsistent with the others (or invalid)
        _ => {
            // a self-consistent forgery: valid own hash, wrong content
            s.data[0] ^= 1;
            s.header.shard_hash = ShardHash(Hash32::digest(&s.data));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn up_to_m_lost_or_corrupt_decodes(
        cfg in config(),
        payload in prop::collection::vec(any::<u8>(), 0..6000),
        picks in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>(), any::<u8>()), 0..12),
        order_seed in any::<prop::sample::Index>(),
    ) {
        let shards = cfg.encode(&payload).unwrap();
        prop_assert_eq!(shards.len(), usize::from(cfg.n()));
        let id = StripeId(Hash32::digest(&payload));
        let layout = StripeLayout::from_shards(&shards).unwrap();
        let other = StripeId::from_bytes([9; 32]);
        let mut set: Vec<Option<Shard>> = shards.into_iter().map(Some).collect();
        let mut hit = std::collections::BTreeSet::new();
        for (idx, lose, how) in picks {
            if hit.len() == usize::from(cfg.m) { break; }
            let i = idx.index(set.len());
            if !hit.insert(i) { continue; }
            if lose { set[i] = None } else if let Some(s) = set[i].as_mut() { damage(s, how, other) }
        }
        let mut given: Vec<Shard> = set.into_iter().flatten().collect();
        // order does not matter
        let r = order_seed.index(given.len().max(1));
        let len = given.len();
        given.rotate_left(r.min(len));
        // With a manifest every damage is caught before decoding.
        prop_assert_eq!(&layout.decode(&given).unwrap(), &payload);
        // Without one, the forgery (damage kind 5) may only be caught by the stripe hash.
        match decode(id, &given) {
            Ok(out) => prop_assert_eq!(out, payload),
            Err(Error::StripeHashMismatch { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn more_than_m_lost_is_a_clear_error(
        cfg in config(),
        payload in prop::collection::vec(any::<u8>(), 0..3000),
        extra in 1u16..4,
        seed in any::<prop::sample::Index>(),
    ) {
        let shards = cfg.encode(&payload).unwrap();
        let id = shards[0].stripe_id();
        let lose = usize::from((cfg.m + extra).min(cfg.n()));
        let keep = shards.len() - lose;
        let start = seed.index(shards.len());
        let kept: Vec<Shard> = (0..keep).map(|j| shards[(start + j) % shards.len()].clone()).collect();
        let err = decode(id, &kept).unwrap_err();
        match &err {
            Error::NotEnoughShards { good, needed, .. } => {
                prop_assert_eq!(*good, keep);
                // with no shard at all, k is unknown; otherwise it is read from the headers
                if keep > 0 {
                    prop_assert_eq!(*needed, usize::from(cfg.k));
                }
            }
            other => prop_assert!(false, "unexpected {other}"),
        }
        let msg = err.to_string();
        prop_assert!(msg.contains(&format!("found {keep} good shards, need")), "{}", msg);
    }

    #[test]
    fn shard_bytes_round_trip(cfg in config(), payload in prop::collection::vec(any::<u8>(), 0..2000)) {
        for s in cfg.encode(&payload).unwrap() {
            prop_assert_eq!(Shard::from_bytes(&s.to_bytes()).unwrap(), s);
        }
    }

    #[test]
    fn shard_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = Shard::from_bytes(&bytes);
        let _ = storage::split_micro_batch(&bytes);
        let _ = storage::StripeManifest::decode(&bytes);
    }
}

#[test]
fn both_codecs_agree_on_data_shards() {
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 256) as u8).collect();
    let a = ErasureConfig::new(CodecId::ReedSolomonErasure, 10, 4)
        .unwrap()
        .encode(&payload)
        .unwrap();
    let b = ErasureConfig::new(CodecId::ReedSolomonSimd, 10, 4)
        .unwrap()
        .encode(&payload)
        .unwrap();
    // systematic: data shards are the (same-size here, 1000 is even) slices of the payload
    for i in 0..10 {
        assert_eq!(a[i].data, b[i].data);
        assert_ne!(a[i].header.codec, b[i].header.codec);
    }
}

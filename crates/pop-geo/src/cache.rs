//! A bounded lookup cache keyed by rounded coordinates, in front of a [`RegionIndex`].
//!
//! A cached lookup always answers for the *rounded* point, hit or miss, so its result never
//! depends on what was looked up before (every node gets the same verdict for the same
//! position). The cache is split into shards, each holding two generations: new entries go
//! into the young one; when it fills, the old generation is dropped and the young one becomes
//! old (entries found there are moved back). Memory stays within `capacity` entries.

use crate::error::PopError;
use crate::index::{Region, RegionIndex, check_found};
use dag_core::{CityId, Position};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most entries kept (at least 2 per shard are kept regardless). Default 65 536.
    pub capacity: usize,
    /// Decimal places of a degree kept in the key, 0..=7. Default 5 (≈ 1.1 m); 7 is the full
    /// precision of a tx position (exact).
    pub decimals: u8,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: 65_536,
            decimals: 5,
        }
    }
}

/// Hit and miss counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to the index.
    pub misses: u64,
}

const SHARDS: usize = 16;
const NONE: u32 = u32::MAX;

#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        let z = (v ^ (v >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        self.0 = z ^ (z >> 32);
    }
}

type Map = HashMap<u64, u32, BuildHasherDefault<KeyHasher>>;

#[derive(Default)]
struct Shard {
    young: Map,
    old: Map,
}

/// A [`RegionIndex`] with a bounded cache of lookups by rounded coordinates.
///
/// ```
/// use pop_geo::{CachedIndex, CacheConfig};
/// use std::sync::Arc;
/// let index = Arc::new(pop_geo::shipped::japan().unwrap());
/// let cached = CachedIndex::new(index, CacheConfig::default());
/// assert_eq!(cached.lookup(35.6895, 139.69171).unwrap().id().as_str(), "JP-13");
/// assert_eq!(cached.lookup(35.6895, 139.69171).unwrap().id().as_str(), "JP-13");
/// assert_eq!(cached.stats().hits, 1);
/// ```
pub struct CachedIndex {
    index: Arc<RegionIndex>,
    shards: Box<[Mutex<Shard>]>,
    per_generation: usize,
    step_e7: i64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for CachedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedIndex")
            .field("index", &self.index)
            .field("step_e7", &self.step_e7)
            .field("stats", &self.stats())
            .finish()
    }
}

impl CachedIndex {
    /// Wraps an index.
    pub fn new(index: Arc<RegionIndex>, config: CacheConfig) -> Self {
        let decimals = config.decimals.min(7);
        let per_generation = (config.capacity / SHARDS / 2).max(1);
        CachedIndex {
            index,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_generation,
            step_e7: 10i64.pow(u32::from(7 - decimals)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The index behind the cache.
    pub fn index(&self) -> &Arc<RegionIndex> {
        &self.index
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock();
                s.young.len() + s.old.len()
            })
            .sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The region containing the rounded (lat, lon), from the cache when possible.
    /// Coordinates outside the valid ranges or NaN give `None`.
    pub fn lookup(&self, lat: f64, lon: f64) -> Option<&Region> {
        let pos = Position::from_degrees(lat, lon).ok()?;
        self.lookup_position(pos)
    }

    /// The region containing the rounded position, from the cache when possible.
    pub fn lookup_position(&self, pos: Position) -> Option<&Region> {
        let (klat, klon) = (
            round_div(i64::from(pos.lat_e7), self.step_e7),
            round_div(i64::from(pos.lon_e7), self.step_e7),
        );
        let key = ((klat as u32 as u64) << 32) | (klon as u32 as u64);
        let shard = &self.shards[(KeyHasher::default().mix(key) >> 60) as usize % SHARDS];
        {
            let mut s = shard.lock();
            if let Some(&slot) = s.young.get(&key) {
                drop(s);
                self.hits.fetch_add(1, Ordering::Relaxed);
                return self.slot_region(slot);
            }
            if let Some(slot) = s.old.remove(&key) {
                self.insert(&mut s, key, slot);
                drop(s);
                self.hits.fetch_add(1, Ordering::Relaxed);
                return self.slot_region(slot);
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let (lat, lon) = (
            (klat * self.step_e7) as f64 / 1e7,
            (klon * self.step_e7) as f64 / 1e7,
        );
        let slot = self.index.lookup_slot(lat, lon).unwrap_or(NONE);
        self.insert(&mut shard.lock(), key, slot);
        self.slot_region(slot)
    }

    /// Proof of place through the cache; see [`RegionIndex::check`].
    pub fn check(&self, claimed: &CityId, pos: Position) -> std::result::Result<&Region, PopError> {
        let found = self.lookup_position(pos);
        check_found(&self.index, claimed, pos, found)
    }

    fn slot_region(&self, slot: u32) -> Option<&Region> {
        (slot != NONE).then(|| self.index.region_at(slot))
    }

    fn insert(&self, s: &mut Shard, key: u64, slot: u32) {
        if s.young.len() >= self.per_generation {
            s.old = std::mem::take(&mut s.young);
        }
        s.young.insert(key, slot);
    }
}

impl KeyHasher {
    fn mix(mut self, v: u64) -> u64 {
        self.write_u64(v);
        self.finish()
    }
}

fn round_div(v: i64, step: i64) -> i64 {
    if step == 1 {
        v
    } else {
        (v + step / 2).div_euclid(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARES: &str = r#"{"type":"FeatureCollection","features":[
      {"type":"Feature","id":"A","properties":{"name":"a"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]]]}},
      {"type":"Feature","id":"B","properties":{"name":"b"},"geometry":{"type":"Polygon","coordinates":[[[1,0],[2,0],[2,1],[1,1],[1,0]]]}}]}"#;

    fn cached(capacity: usize, decimals: u8) -> CachedIndex {
        let index = RegionIndex::from_slice(SQUARES.as_bytes(), "squares").unwrap();
        CachedIndex::new(Arc::new(index), CacheConfig { capacity, decimals })
    }

    #[test]
    fn hits_after_first_lookup_and_same_answer() {
        let c = cached(1024, 5);
        assert_eq!(c.lookup(0.5, 0.5).unwrap().id().as_str(), "A");
        assert_eq!(c.lookup(0.5, 0.5).unwrap().id().as_str(), "A");
        assert_eq!(c.lookup(0.5, 1.5).unwrap().id().as_str(), "B");
        assert!(c.lookup(5.0, 5.0).is_none());
        assert!(c.lookup(5.0, 5.0).is_none());
        assert_eq!(c.stats(), CacheStats { hits: 2, misses: 3 });
    }

    #[test]
    fn answers_for_the_rounded_point_hit_or_miss() {
        // 0.999996 rounds to 1.00000 at 5 decimals: the border, where A (lowest id) wins.
        let c = cached(1024, 5);
        assert_eq!(c.lookup(0.5, 1.000004).unwrap().id().as_str(), "A");
        let exact = cached(1024, 7);
        assert_eq!(exact.lookup(0.5, 1.000004).unwrap().id().as_str(), "B");
    }

    #[test]
    fn stays_bounded() {
        let c = cached(64, 7);
        for i in 0..10_000 {
            let _ = c.lookup(0.5, f64::from(i) * 1e-6);
        }
        assert!(c.len() <= 64, "{} entries", c.len());
        assert!(c.len() >= 16);
    }

    #[test]
    fn rounds_to_nearest() {
        assert_eq!(round_div(15, 10), 2);
        assert_eq!(round_div(14, 10), 1);
        assert_eq!(round_div(-14, 10), -1);
        assert_eq!(round_div(-16, 10), -2);
        assert_eq!(round_div(7, 1), 7);
    }
}

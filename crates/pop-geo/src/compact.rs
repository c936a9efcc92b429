//! The compact binary form of a region set (`.pgeo`): what the shipped world index is stored
//! as, because it loads an order of magnitude faster than GeoJSON and is a fraction of its
//! size. Coordinates are fixed-point at 1e-5° (≈ 1 m), delta-encoded per ring as zig-zag
//! varints; the closing vertex of a ring is implied.
//!
//! Layout (all integers LEB128 varints unless noted):
//! `b"PGEO"` `version = 1` · region count · per region: id, name (strings: length + UTF-8),
//! level (one byte), property count, (key, value) string pairs, polygon count, per polygon:
//! ring count, per ring: vertex count (without the closing one), then (Δlon, Δlat) pairs.

use crate::index::{Region, Rings};
use crate::{Error, Result};
use dag_core::CityId;
use serde_json::{Map, Value};

const MAGIC: &[u8; 4] = b"PGEO";
const VERSION: u64 = 1;
/// Fixed-point scale: 1e-5°.
const SCALE: f64 = 1e5;

/// Encodes regions and their polygons (rings closed, as loaded from GeoJSON). Only string
/// properties are kept; coordinates are rounded to 1e-5°.
pub(crate) fn encode(regions: &[(Region, Vec<Rings>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 << 20);
    out.extend_from_slice(MAGIC);
    put(&mut out, VERSION);
    put(&mut out, regions.len() as u64);
    for (region, polygons) in regions {
        put_str(&mut out, region.id().as_str());
        put_str(&mut out, region.name());
        out.push(region.level());
        let props: Vec<(&String, &str)> = region
            .properties()
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s)))
            .collect();
        put(&mut out, props.len() as u64);
        for (k, v) in props {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
        put(&mut out, polygons.len() as u64);
        for rings in polygons {
            put(&mut out, rings.len() as u64);
            for ring in rings {
                let open = &ring[..ring.len().saturating_sub(1)];
                put(&mut out, open.len() as u64);
                let (mut px, mut py) = (0i64, 0i64);
                for p in open {
                    let (x, y) = (fixed(p[0]), fixed(p[1]));
                    put(&mut out, zigzag(x - px));
                    put(&mut out, zigzag(y - py));
                    (px, py) = (x, y);
                }
            }
        }
    }
    out
}

fn fixed(v: f64) -> i64 {
    (v * SCALE).round() as i64
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    origin: &'a str,
}

impl Reader<'_> {
    fn fail(&self, reason: &'static str) -> Error {
        Error::Compact {
            origin: self.origin.to_string(),
            offset: self.pos,
            reason,
        }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| self.fail("truncated"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.fail("varint longer than 10 bytes"))
    }

    /// A count that cannot exceed the bytes left (every counted item takes ≥ 1 byte).
    fn count(&mut self) -> Result<usize> {
        let n = self.varint()?;
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(self.fail("count larger than the rest of the data"));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.count()?;
        let s = std::str::from_utf8(&self.bytes[self.pos..self.pos + n])
            .map_err(|_| self.fail("string is not UTF-8"))?;
        self.pos += n;
        Ok(s.to_string())
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| self.fail("truncated"))?;
        self.pos += 1;
        Ok(b)
    }
}

/// Decodes what [`encode`] wrote; every failure names the byte offset.
pub(crate) fn decode(bytes: &[u8], origin: &str) -> Result<Vec<(Region, Vec<Rings>)>> {
    let mut r = Reader {
        bytes,
        pos: 0,
        origin,
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(r.fail("not a compact region file (no PGEO magic)"));
    }
    r.pos = MAGIC.len();
    if r.varint()? != VERSION {
        return Err(r.fail("unsupported version"));
    }
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id_text = r.string()?;
        let id = CityId::new(id_text).map_err(|_| r.fail("region id is not a valid city id"))?;
        let name = r.string()?;
        let level = r.byte()?;
        let nprops = r.count()?;
        let mut properties = Map::new();
        for _ in 0..nprops {
            let k = r.string()?;
            let v = r.string()?;
            properties.insert(k, Value::String(v));
        }
        let npoly = r.count()?;
        let mut polygons = Vec::with_capacity(npoly);
        for _ in 0..npoly {
            let nrings = r.count()?;
            if nrings == 0 {
                return Err(r.fail("polygon without rings"));
            }
            let mut rings = Vec::with_capacity(nrings);
            for _ in 0..nrings {
                let nv = r.count()?;
                if nv < 3 {
                    return Err(r.fail("ring with fewer than 3 distinct vertices"));
                }
                let mut ring = Vec::with_capacity(nv + 1);
                let (mut x, mut y) = (0i64, 0i64);
                for _ in 0..nv {
                    x += unzigzag(r.varint()?);
                    y += unzigzag(r.varint()?);
                    let (lon, lat) = (x as f64 / SCALE, y as f64 / SCALE);
                    if !(-90.0..=90.0).contains(&lat) || !(-540.0..=540.0).contains(&lon) {
                        return Err(r.fail("coordinate out of range"));
                    }
                    ring.push([lon, lat]);
                }
                ring.push(ring[0]);
                rings.push(ring);
            }
            polygons.push(rings);
        }
        out.push((Region::new(id, name, level, properties), polygons));
    }
    if r.pos != bytes.len() {
        return Err(r.fail("trailing bytes after the last region"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            1 << 40,
            -(1 << 40),
            54_000_000,
            -54_000_000,
        ] {
            let mut b = Vec::new();
            put(&mut b, zigzag(v));
            let mut r = Reader {
                bytes: &b,
                pos: 0,
                origin: "t",
            };
            assert_eq!(unzigzag(r.varint().unwrap()), v);
        }
    }

    #[test]
    fn truncated_and_corrupt_input_is_refused() {
        let id = CityId::new("T-1").unwrap();
        let region = Region::new(id, "T".into(), 1, Map::new());
        let ring = vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]];
        let bytes = encode(&[(region.clone(), vec![vec![ring.clone()]])]);
        let back = decode(&bytes, "t").unwrap();
        assert_eq!(back[0].0, region);
        assert_eq!(back[0].1, vec![vec![ring]]);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], "t").is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        let e = decode(&extra, "t").unwrap_err().to_string();
        assert!(e.contains("trailing bytes") && e.contains("offset"), "{e}");
    }
}

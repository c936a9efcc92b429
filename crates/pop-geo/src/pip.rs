//! Exact point-in-polygon for one polygon part (exterior ring plus holes), accelerated by
//! horizontal bands, and the preparation that makes antimeridian-crossing rings usable.
//!
//! Inside-ness is the even-odd rule over all rings at once (a hole's edges flip the parity
//! back), with the classic half-open crossing test, so the answer equals a full ray cast;
//! the bands only skip edges that cannot cross the ray. Points exactly on an edge are reported
//! as [`Containment::Boundary`], decided with geo's robust orientation predicate.

use geo::{Coord, Kernel, Orientation, kernels::RobustKernel};

/// Where a point lies relative to a polygon part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Containment {
    /// Strictly outside (or strictly inside a hole).
    Outside,
    /// Strictly inside.
    Inside,
    /// Exactly on an edge or a vertex (of the exterior or of a hole).
    Boundary,
}

#[derive(Debug, Clone, Copy)]
struct Edge {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

/// Axis-aligned bounding box in (lon, lat) degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Aabb {
    pub(crate) min: [f64; 2],
    pub(crate) max: [f64; 2],
}

/// One polygon (exterior + holes) prepared for fast exact point queries.
#[derive(Debug, Clone)]
pub(crate) struct PreparedPolygon {
    bbox: Aabb,
    inv_h: f64,
    /// `offsets[b]..offsets[b + 1]` indexes `edges` for band `b`.
    offsets: Vec<u32>,
    edges: Vec<Edge>,
}

/// Target number of edges per band: small enough that a query touches a handful of edges.
const EDGES_PER_BAND: usize = 2;
const MAX_BANDS: usize = 1 << 16;

impl PreparedPolygon {
    /// Builds the band index over closed rings given as (lon, lat) vertex lists, the first
    /// ring being the exterior. Rings must be closed (first == last) and have ≥ 4 vertices.
    pub(crate) fn new(rings: &[Vec<[f64; 2]>]) -> Self {
        let mut all = Vec::new();
        let mut min = [f64::INFINITY; 2];
        let mut max = [f64::NEG_INFINITY; 2];
        for ring in rings {
            for w in ring.windows(2) {
                let (a, b) = (w[0], w[1]);
                for (i, v) in [a, b].into_iter().flat_map(|p| p.into_iter().enumerate()) {
                    min[i] = min[i].min(v);
                    max[i] = max[i].max(v);
                }
                if a != b {
                    all.push(Edge {
                        x0: a[0],
                        y0: a[1],
                        x1: b[0],
                        y1: b[1],
                    });
                }
            }
        }
        let bbox = Aabb { min, max };
        let height = (max[1] - min[1]).max(0.0);
        let nbands = (all.len() / EDGES_PER_BAND).clamp(1, MAX_BANDS);
        let inv_h = if height > 0.0 {
            nbands as f64 / height
        } else {
            0.0
        };
        let band = |y: f64| -> usize { (((y - min[1]) * inv_h) as usize).min(nbands - 1) };
        // Two passes: count, then fill (counting sort by band).
        let mut counts = vec![0u32; nbands + 1];
        for e in &all {
            let (lo, hi) = (band(e.y0.min(e.y1)), band(e.y0.max(e.y1)));
            for c in &mut counts[lo..=hi] {
                *c += 1;
            }
        }
        let mut offsets = Vec::with_capacity(nbands + 1);
        let mut acc = 0u32;
        for c in &counts[..nbands] {
            offsets.push(acc);
            acc += c;
        }
        offsets.push(acc);
        let mut fill = offsets.clone();
        let mut edges = vec![
            Edge {
                x0: 0.0,
                y0: 0.0,
                x1: 0.0,
                y1: 0.0
            };
            acc as usize
        ];
        for e in &all {
            let (lo, hi) = (band(e.y0.min(e.y1)), band(e.y0.max(e.y1)));
            for f in &mut fill[lo..=hi] {
                edges[*f as usize] = *e;
                *f += 1;
            }
        }
        PreparedPolygon {
            bbox,
            inv_h,
            offsets,
            edges,
        }
    }

    /// Calls `f(x0, y0, x1, y1)` for every edge (an edge spanning several bands once).
    pub(crate) fn for_each_edge(&self, mut f: impl FnMut(f64, f64, f64, f64)) {
        let nbands = self.offsets.len() - 1;
        for b in 0..nbands {
            for e in &self.edges[self.offsets[b] as usize..self.offsets[b + 1] as usize] {
                // An edge is stored in every band it spans: report it from its lowest one.
                let lo =
                    (((e.y0.min(e.y1) - self.bbox.min[1]) * self.inv_h) as usize).min(nbands - 1);
                if lo == b {
                    f(e.x0, e.y0, e.x1, e.y1);
                }
            }
        }
    }

    /// The bounding box.
    pub(crate) fn bbox(&self) -> Aabb {
        self.bbox
    }

    /// Where (x, y) = (lon, lat) lies.
    #[inline]
    pub(crate) fn locate(&self, x: f64, y: f64) -> Containment {
        let b = &self.bbox;
        if !(x >= b.min[0] && x <= b.max[0] && y >= b.min[1] && y <= b.max[1]) {
            return Containment::Outside;
        }
        let nbands = self.offsets.len() - 1;
        let band = (((y - b.min[1]) * self.inv_h) as usize).min(nbands - 1);
        let edges = &self.edges[self.offsets[band] as usize..self.offsets[band + 1] as usize];
        let mut inside = false;
        for e in edges {
            let (ylo, yhi) = if e.y0 <= e.y1 {
                (e.y0, e.y1)
            } else {
                (e.y1, e.y0)
            };
            if y < ylo || y > yhi {
                continue;
            }
            if x >= e.x0.min(e.x1) && x <= e.x0.max(e.x1) && on_segment(e, x, y) {
                return Containment::Boundary;
            }
            if (e.y0 > y) != (e.y1 > y) {
                let xi = e.x0 + (y - e.y0) * (e.x1 - e.x0) / (e.y1 - e.y0);
                if x < xi {
                    inside = !inside;
                }
            }
        }
        if inside {
            Containment::Inside
        } else {
            Containment::Outside
        }
    }
}

#[inline]
fn on_segment(e: &Edge, x: f64, y: f64) -> bool {
    let p = Coord { x: e.x0, y: e.y0 };
    let q = Coord { x: e.x1, y: e.y1 };
    RobustKernel::orient2d(p, q, Coord { x, y }) == Orientation::Collinear
}

/// Makes a ring's longitudes continuous: a step of more than 180° between neighbours is taken
/// as crossing the antimeridian, so the next vertex is shifted by ±360°. A step between +180°
/// and −180° exactly, at a pole (|lat| ≥ 89°), is a polar edge (as in Antarctica's outline)
/// and is left alone.
pub(crate) fn unwrap_ring(ring: &mut [[f64; 2]]) {
    let mut shift = 0.0;
    for i in 1..ring.len() {
        let (prev_raw, cur_raw) = (ring[i - 1][0] - shift, ring[i][0]);
        let polar = prev_raw.abs() == 180.0
            && cur_raw.abs() == 180.0
            && ring[i - 1][1].abs() >= 89.0
            && ring[i][1].abs() >= 89.0;
        let d = cur_raw - prev_raw;
        if !polar {
            if d > 180.0 {
                shift -= 360.0;
            } else if d < -180.0 {
                shift += 360.0;
            }
        }
        ring[i][0] = cur_raw + shift;
    }
}

/// Copies of a polygon (rings already unwrapped) that together cover every query longitude in
/// [−180°, 180°]: the polygon itself, plus a copy shifted by −360° if it reaches past +180°,
/// and one shifted by +360° if it reaches past −180°.
pub(crate) fn antimeridian_copies(rings: Vec<Vec<[f64; 2]>>) -> Vec<Vec<Vec<[f64; 2]>>> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in rings.iter().flatten() {
        lo = lo.min(p[0]);
        hi = hi.max(p[0]);
    }
    let shifted = |rings: &Vec<Vec<[f64; 2]>>, dx: f64| -> Vec<Vec<[f64; 2]>> {
        rings
            .iter()
            .map(|r| r.iter().map(|p| [p[0] + dx, p[1]]).collect())
            .collect()
    };
    let mut out = Vec::with_capacity(2);
    if hi > 180.0 {
        out.push(shifted(&rings, -360.0));
    }
    if lo < -180.0 {
        out.push(shifted(&rings, 360.0));
    }
    out.push(rings);
    out
}

/// Prepares the rings of one polygon for the antimeridian: unwraps each ring, moves each hole
/// by whole turns next to the exterior, and returns the copies to index.
pub(crate) fn prepare_rings(mut rings: Vec<Vec<[f64; 2]>>) -> Vec<Vec<Vec<[f64; 2]>>> {
    for r in &mut rings {
        unwrap_ring(r);
    }
    if let Some(anchor) = rings.first().and_then(|r| r.first()).map(|p| p[0]) {
        for hole in rings.iter_mut().skip(1) {
            if let Some(first) = hole.first().map(|p| p[0]) {
                let turns = ((anchor - first) / 360.0).round();
                if turns != 0.0 {
                    for p in hole.iter_mut() {
                        p[0] += turns * 360.0;
                    }
                }
            }
        }
    }
    antimeridian_copies(rings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x0: f64, y0: f64, x1: f64, y1: f64) -> Vec<[f64; 2]> {
        vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    }

    #[test]
    fn square_with_hole() {
        let p = PreparedPolygon::new(&[square(0.0, 0.0, 10.0, 10.0), square(4.0, 4.0, 6.0, 6.0)]);
        assert_eq!(p.locate(1.0, 1.0), Containment::Inside);
        assert_eq!(p.locate(5.0, 5.0), Containment::Outside);
        assert_eq!(p.locate(4.0, 5.0), Containment::Boundary);
        assert_eq!(p.locate(0.0, 0.0), Containment::Boundary);
        assert_eq!(p.locate(10.0, 3.3), Containment::Boundary);
        assert_eq!(p.locate(11.0, 5.0), Containment::Outside);
        assert_eq!(p.locate(-0.1, 5.0), Containment::Outside);
    }

    #[test]
    fn unwrap_crossing_ring() {
        let mut r = vec![
            [179.0, 0.0],
            [-179.0, 0.0],
            [-179.0, 1.0],
            [179.0, 1.0],
            [179.0, 0.0],
        ];
        unwrap_ring(&mut r);
        assert_eq!(r[1][0], 181.0);
        assert_eq!(r[2][0], 181.0);
        assert_eq!(r[4][0], 179.0);
        let copies = prepare_rings(vec![r]);
        assert_eq!(copies.len(), 2);
        let ps: Vec<_> = copies.iter().map(|c| PreparedPolygon::new(c)).collect();
        let hit = |x: f64| ps.iter().any(|p| p.locate(x, 0.5) != Containment::Outside);
        assert!(hit(179.5));
        assert!(hit(-179.5));
        assert!(hit(180.0));
        assert!(hit(-180.0));
        assert!(!hit(178.5));
        assert!(!hit(-178.5));
        assert!(!hit(0.0));
    }

    #[test]
    fn polar_edge_is_not_unwrapped() {
        // Antarctica-like: the outline runs along −90° from −180° to 180°, then back along
        // the coast through 0°.
        let ring = vec![
            [-180.0, -80.0],
            [-180.0, -90.0],
            [180.0, -90.0],
            [180.0, -80.0],
            [90.0, -70.0],
            [0.0, -70.0],
            [-90.0, -70.0],
            [-180.0, -80.0],
        ];
        let mut r = ring.clone();
        unwrap_ring(&mut r);
        assert_eq!(r, ring);
        let copies = prepare_rings(vec![r]);
        assert_eq!(copies.len(), 1);
        let p = PreparedPolygon::new(&copies[0]);
        assert_eq!(p.locate(0.0, -85.0), Containment::Inside);
        assert_eq!(p.locate(179.0, -85.0), Containment::Inside);
        assert_eq!(p.locate(0.0, -60.0), Containment::Outside);
    }
}

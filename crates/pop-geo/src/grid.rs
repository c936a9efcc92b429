//! A uniform grid over the globe in front of the R-tree: a cell no polygon edge touches has
//! one answer for every point in it (computed once at build time), so most lookups — open
//! sea, the interior of large regions — cost one array read; a cell an edge touches keeps the
//! list of polygon parts whose box overlaps it, sorted so the first hit is the winner.

use crate::pip::{Containment, PreparedPolygon};

/// Cell edge in degrees.
const CELL_DEG: f64 = 0.5;
const COLS: usize = (360.0 / CELL_DEG) as usize;
const ROWS: usize = (180.0 / CELL_DEG) as usize;
/// Cell value tags (the low bits carry a region slot or a candidate-list index).
const EMPTY: u32 = u32::MAX;
const MIXED: u32 = 1 << 31;

pub(crate) struct Grid {
    /// Per cell: `EMPTY`, a region slot (< `MIXED`), or `MIXED | i` with candidates in
    /// `lists[offsets[i]..offsets[i + 1]]`.
    cells: Vec<u32>,
    offsets: Vec<u32>,
    /// Part indexes, each list sorted by (region slot, part).
    lists: Vec<u32>,
}

/// Cell column range of a longitude interval, widened by a hair so an edge lying on a cell
/// border marks the cells on both sides.
fn span(lo: f64, hi: f64, origin: f64, n: usize) -> Option<(usize, usize)> {
    let a = ((lo - origin) / CELL_DEG - 1e-9).floor();
    let b = ((hi - origin) / CELL_DEG + 1e-9).floor();
    if b < 0.0 || a > (n - 1) as f64 {
        return None;
    }
    Some((a.max(0.0) as usize, (b as usize).min(n - 1)))
}

fn cell_of(lat: f64, lon: f64) -> usize {
    let c = (((lon + 180.0) / CELL_DEG) as usize).min(COLS - 1);
    let r = (((lat + 90.0) / CELL_DEG) as usize).min(ROWS - 1);
    r * COLS + c
}

impl Grid {
    /// Builds the grid over `parts` (polygon, region slot).
    pub(crate) fn build(parts: &[(&PreparedPolygon, u32)]) -> Grid {
        let n = COLS * ROWS;
        let mut touched = vec![false; n];
        let mut cand: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (pi, (poly, _)) in parts.iter().enumerate() {
            let b = poly.bbox();
            let (Some((c0, c1)), Some((r0, r1))) = (
                span(b.min[0], b.max[0], -180.0, COLS),
                span(b.min[1], b.max[1], -90.0, ROWS),
            ) else {
                continue;
            };
            for r in r0..=r1 {
                for c in c0..=c1 {
                    cand[r * COLS + c].push(pi as u32);
                }
            }
            poly.for_each_edge(|x0, y0, x1, y1| {
                let (Some((c0, c1)), Some((r0, r1))) = (
                    span(x0.min(x1), x0.max(x1), -180.0, COLS),
                    span(y0.min(y1), y0.max(y1), -90.0, ROWS),
                ) else {
                    return;
                };
                for r in r0..=r1 {
                    for c in c0..=c1 {
                        touched[r * COLS + c] = true;
                    }
                }
            });
        }
        let mut cells = vec![EMPTY; n];
        let mut offsets = vec![0u32];
        let mut lists = Vec::new();
        for (i, mut list) in cand.into_iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            list.sort_by_key(|&p| (parts[p as usize].1, p));
            if touched[i] {
                cells[i] = MIXED | (offsets.len() as u32 - 1);
                lists.extend_from_slice(&list);
                offsets.push(lists.len() as u32);
            } else {
                // No edge touches the cell: its centre's answer holds for all of it.
                let (r, c) = (i / COLS, i % COLS);
                let y = -90.0 + (r as f64 + 0.5) * CELL_DEG;
                let x = -180.0 + (c as f64 + 0.5) * CELL_DEG;
                cells[i] = list
                    .iter()
                    .find(|&&p| parts[p as usize].0.locate(x, y) != Containment::Outside)
                    .map_or(EMPTY, |&p| parts[p as usize].1);
            }
        }
        Grid {
            cells,
            offsets,
            lists,
        }
    }

    /// The winning region slot at (lon, lat) (normalised, finite), given `locate` for parts.
    #[inline]
    pub(crate) fn lookup(
        &self,
        lat: f64,
        lon: f64,
        part: impl Fn(u32) -> (u32, Containment),
    ) -> Option<u32> {
        let v = self.cells[cell_of(lat, lon)];
        if v == EMPTY {
            return None;
        }
        if v & MIXED == 0 {
            return Some(v);
        }
        let i = (v & !MIXED) as usize;
        let list = &self.lists[self.offsets[i] as usize..self.offsets[i + 1] as usize];
        list.iter().find_map(|&p| {
            let (slot, c) = part(p);
            (c != Containment::Outside).then_some(slot)
        })
    }
}

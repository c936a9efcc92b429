//! The region index: GeoJSON FeatureCollections loaded into an R-tree of polygon envelopes,
//! with exact containment per polygon; point → region, and the proof-of-place check.

use crate::error::{FeatureProblem, FoundRegion, PopError};
use crate::pip::{Containment, PreparedPolygon, prepare_rings};
use crate::{Error, Result};
use dag_core::{CityId, Position};
use geojson::GeometryValue;
use rstar::RTree;
use rstar::primitives::{GeomWithData, Rectangle};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// One region (a city, municipality or prefecture) loaded from a feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    id: CityId,
    name: String,
    level: u8,
    properties: Map<String, Value>,
}

impl Region {
    pub(crate) fn new(id: CityId, name: String, level: u8, properties: Map<String, Value>) -> Self {
        Region {
            id,
            name,
            level,
            properties,
        }
    }
    /// How fine the region is: 1 for a first-level subdivision (state, province,
    /// prefecture), 2 and up for finer units (municipalities) loaded on top. A lookup answers
    /// with the finest region containing the point.
    pub fn level(&self) -> u8 {
        self.level
    }
    /// The region id (the feature's `id`, or its id property), usable as a tx's city id.
    pub fn id(&self) -> &CityId {
        &self.id
    }
    /// Human-readable name (the `name` property; the id if there is none).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// All properties of the feature.
    pub fn properties(&self) -> &Map<String, Value> {
        &self.properties
    }
    fn found(&self) -> FoundRegion {
        FoundRegion {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }
}

/// Which feature members name a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Property holding the region id when the feature has no `id` member. Default `"id"`.
    pub id_property: String,
    /// Property holding the name. Default `"name"`.
    pub name_property: String,
    /// Level of the regions loaded (see [`Region::level`]). Default 1 (first-level
    /// subdivisions); municipal boundaries loaded on top of them use 2.
    pub level: u8,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            id_property: "id".to_string(),
            name_property: "name".to_string(),
            level: 1,
        }
    }
}

type Envelope = GeomWithData<Rectangle<[f64; 2]>, u32>;

struct Part {
    region: u32,
    polygon: PreparedPolygon,
}

/// Regions in an R-tree of polygon envelopes, with exact containment per polygon.
///
/// Lookup rules, all deterministic:
/// - a point inside a polygon's hole is not in that polygon;
/// - a point on a border (edge or vertex) counts as inside; when it lies in several regions
///   the **finest level** wins (a municipality over the province around it), and among regions
///   of one level (a shared border, or overlapping data) the **lowest id** (byte order) wins;
/// - polygons crossing the antimeridian (longitudes past ±180°, or a jump of more than 180°
///   between neighbouring vertices) are indexed on both sides, so a query at 179.9° and one at
///   −179.9° both find them; polygons already split at ±180° (RFC 7946) work as they are;
/// - a point in no region gives `None`.
///
/// ```
/// let index = pop_geo::shipped::japan().unwrap();
/// let tokyo = index.lookup(35.6895, 139.69171).unwrap();
/// assert_eq!(tokyo.id().as_str(), "JP-13");
/// assert!(index.lookup(35.0, 150.0).is_none()); // Pacific Ocean
/// ```
pub struct RegionIndex {
    /// Sorted by (level descending, id), so a lower index is the preferred region.
    regions: Vec<Region>,
    by_id: HashMap<CityId, u32>,
    parts: Vec<Part>,
    tree: RTree<Envelope>,
    grid: crate::grid::Grid,
}

impl std::fmt::Debug for RegionIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionIndex")
            .field("regions", &self.regions.len())
            .field("polygons", &self.parts.len())
            .finish()
    }
}

impl RegionIndex {
    /// An empty builder, to combine several sources into one index.
    pub fn builder() -> IndexBuilder {
        IndexBuilder::default()
    }

    /// Loads one FeatureCollection from a file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        IndexBuilder::default().add_path(path)?.build()
    }

    /// Loads one FeatureCollection from bytes; `origin` names the source in errors.
    pub fn from_slice(bytes: &[u8], origin: &str) -> Result<Self> {
        IndexBuilder::default().add_slice(bytes, origin)?.build()
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// True when no region is loaded.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Number of indexed polygons (after splitting multipolygons and antimeridian copies).
    pub fn polygon_count(&self) -> usize {
        self.parts.len()
    }

    /// Number of indexed polygons of one region.
    pub fn polygon_count_of(&self, id: &str) -> usize {
        let Some(slot) = CityId::new(id)
            .ok()
            .and_then(|id| self.by_id.get(&id).copied())
        else {
            return 0;
        };
        self.parts.iter().filter(|p| p.region == slot).count()
    }

    /// All regions, finest level first, then by id.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The region with this id.
    pub fn region(&self, id: &str) -> Option<&Region> {
        let id = CityId::new(id).ok()?;
        self.by_id.get(&id).map(|&i| &self.regions[i as usize])
    }

    /// The region containing (lat, lon) in degrees, if any. Longitudes are normalised into
    /// [−180°, 180°]; NaN gives `None`.
    pub fn lookup(&self, lat: f64, lon: f64) -> Option<&Region> {
        self.lookup_slot(lat, lon)
            .map(|i| &self.regions[i as usize])
    }

    /// The region containing a tx position, if any.
    pub fn lookup_position(&self, pos: Position) -> Option<&Region> {
        self.lookup(pos.lat(), pos.lon())
    }

    /// Index into [`RegionIndex::regions`] of the region containing the point.
    pub(crate) fn lookup_slot(&self, lat: f64, lon: f64) -> Option<u32> {
        if !lat.is_finite() || !lon.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return None;
        }
        let lon = normalise_lon(lon);
        self.grid.lookup(lat, lon, |p| {
            let part = &self.parts[p as usize];
            (part.region, part.polygon.locate(lon, lat))
        })
    }

    /// The preferred region containing the point among those `keep` accepts.
    fn lookup_slot_where(&self, lat: f64, lon: f64, keep: impl Fn(u32) -> bool) -> Option<u32> {
        if !lat.is_finite() || !lon.is_finite() {
            return None;
        }
        let lon = normalise_lon(lon);
        let mut best: Option<u32> = None;
        for env in self.tree.locate_all_at_point(&[lon, lat]) {
            let part = &self.parts[env.data as usize];
            if best.is_some_and(|b| b <= part.region) || !keep(part.region) {
                continue;
            }
            if part.polygon.locate(lon, lat) != Containment::Outside {
                best = Some(part.region);
            }
        }
        best
    }

    pub(crate) fn region_at(&self, slot: u32) -> &Region {
        &self.regions[slot as usize]
    }

    /// Proof of place: Ok with the region when `pos` lies in the claimed city, otherwise a
    /// [`PopError`] naming the claimed city and the region actually found (or none).
    pub fn check(&self, claimed: &CityId, pos: Position) -> std::result::Result<&Region, PopError> {
        let found = self.lookup_position(pos);
        check_found(self, claimed, pos, found)
    }

    /// `n` points inside `region` (borders excluded), chosen deterministically from `seed`:
    /// real coordinates for demos and tests. Returns fewer when the region is tiny relative to
    /// its bounding box (gives up after `n × 10 000` tries) or unknown.
    pub fn sample_points(&self, region: &str, n: usize, seed: u64) -> Vec<(f64, f64)> {
        let Some(id) = CityId::new(region).ok() else {
            return Vec::new();
        };
        let Some(&slot) = self.by_id.get(&id) else {
            return Vec::new();
        };
        let mine: Vec<&Part> = self.parts.iter().filter(|p| p.region == slot).collect();
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for p in &mine {
            let b = p.polygon.bbox();
            for i in 0..2 {
                lo[i] = lo[i].min(b.min[i]);
                hi[i] = hi[i].max(b.max[i]);
            }
        }
        lo[0] = lo[0].max(-180.0);
        hi[0] = hi[0].min(180.0);
        let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut out = Vec::with_capacity(n);
        let mut tries = 0usize;
        while out.len() < n && tries < n.saturating_mul(10_000) {
            tries += 1;
            let x = lo[0] + (hi[0] - lo[0]) * unit(&mut state);
            let y = lo[1] + (hi[1] - lo[1]) * unit(&mut state);
            if mine
                .iter()
                .any(|p| p.polygon.locate(x, y) == Containment::Inside)
                && self.lookup_slot(y, x) == Some(slot)
            {
                out.push((y, x));
            }
        }
        out
    }
}

/// splitmix64 → uniform in [0, 1).
fn unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

pub(crate) fn check_found<'a>(
    index: &'a RegionIndex,
    claimed: &CityId,
    pos: Position,
    found: Option<&'a Region>,
) -> std::result::Result<&'a Region, PopError> {
    // A claim of a coarser region (a province) holds when that region wins among the
    // regions of its level at the point, even though a finer one (a municipality) is found.
    let coarser = match (found, index.by_id.get(claimed)) {
        (Some(r), Some(&slot)) if r.id() != claimed => {
            let level = index.regions[slot as usize].level;
            (level < r.level)
                .then(|| {
                    index.lookup_slot_where(pos.lat(), pos.lon(), |s| {
                        index.regions[s as usize].level == level
                    })
                })
                .flatten()
                .filter(|&s| s == slot)
                .map(|s| &index.regions[s as usize])
        }
        _ => None,
    };
    if let Some(r) = coarser {
        return Ok(r);
    }
    match found {
        Some(r) if r.id() == claimed => Ok(r),
        other => {
            let (lat, lon) = PopError::position_parts(pos);
            let found = other.map(Region::found);
            if index.by_id.contains_key(claimed) {
                Err(PopError::OutsideClaimedCity {
                    claimed: claimed.clone(),
                    found,
                    lat,
                    lon,
                })
            } else {
                Err(PopError::UnknownCity {
                    claimed: claimed.clone(),
                    found,
                    lat,
                    lon,
                })
            }
        }
    }
}

fn normalise_lon(lon: f64) -> f64 {
    if (-180.0..=180.0).contains(&lon) {
        lon
    } else {
        let l = (lon + 180.0).rem_euclid(360.0) - 180.0;
        if l == -180.0 && lon > 0.0 { 180.0 } else { l }
    }
}

/// Collects regions from several sources, then builds one [`RegionIndex`].
#[derive(Default)]
pub struct IndexBuilder {
    options: LoadOptions,
    regions: Vec<(Region, Vec<Rings>)>,
    seen: HashMap<CityId, ()>,
}

impl std::fmt::Debug for IndexBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexBuilder")
            .field("regions", &self.regions.len())
            .finish()
    }
}

impl IndexBuilder {
    /// Uses other property names for id and name (applies to sources added afterwards).
    pub fn options(mut self, options: LoadOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds the FeatureCollection in a file.
    pub fn add_path(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.add_slice(&bytes, &path.display().to_string())
    }

    /// Adds the FeatureCollection in `bytes`; `origin` names the source in errors. On error
    /// nothing from this source is kept.
    pub fn add_slice(mut self, bytes: &[u8], origin: &str) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes).map_err(|source| Error::Json {
            origin: origin.to_string(),
            source,
        })?;
        let not_fc = |found: String| Error::NotFeatureCollection {
            origin: origin.to_string(),
            found,
        };
        let Value::Object(mut obj) = value else {
            return Err(not_fc(json_kind(&value).to_string()));
        };
        match obj.get("type") {
            Some(Value::String(t)) if t == "FeatureCollection" => {}
            Some(Value::String(t)) => return Err(not_fc(format!("type {t:?}"))),
            _ => return Err(not_fc("an object without \"type\"".to_string())),
        }
        let Some(Value::Array(features)) = obj.remove("features") else {
            return Err(not_fc("no \"features\" array".to_string()));
        };
        let mut new = Vec::with_capacity(features.len());
        let mut new_ids: HashMap<CityId, ()> = HashMap::new();
        for (index, raw) in features.into_iter().enumerate() {
            let raw_id = raw_feature_id(&raw, &self.options.id_property);
            let fail = |problem| Error::Feature {
                origin: origin.to_string(),
                index,
                id: raw_id.clone(),
                problem,
            };
            let feature: geojson::Feature = serde_json::from_value(raw)
                .map_err(|e| fail(FeatureProblem::Parse(e.to_string())))?;
            let id_text = raw_id
                .clone()
                .ok_or_else(|| fail(FeatureProblem::MissingId(self.options.id_property.clone())))?;
            let id = CityId::new(id_text.clone()).map_err(|e| {
                fail(FeatureProblem::BadId {
                    id: id_text.clone(),
                    reason: e.to_string(),
                })
            })?;
            if self.seen.contains_key(&id) || new_ids.contains_key(&id) {
                return Err(Error::DuplicateRegion {
                    origin: origin.to_string(),
                    index,
                    id: id_text,
                });
            }
            let polygons = feature_polygons(&feature).map_err(fail)?;
            let properties = feature.properties.unwrap_or_default();
            let name = properties
                .get(&self.options.name_property)
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| id_text.clone());
            new_ids.insert(id.clone(), ());
            new.push((
                Region {
                    id,
                    name,
                    level: self.options.level,
                    properties,
                },
                polygons,
            ));
        }
        self.seen.extend(new_ids);
        self.regions.extend(new);
        Ok(self)
    }

    /// Adds the regions of a compact `.pgeo` file (see [`IndexBuilder::to_compact`]); their
    /// levels are the ones recorded in it. On error nothing from this source is kept.
    pub fn add_compact(mut self, bytes: &[u8], origin: &str) -> Result<Self> {
        let new = crate::compact::decode(bytes, origin)?;
        let mut new_ids: HashMap<CityId, ()> = HashMap::with_capacity(new.len());
        for (index, (region, _)) in new.iter().enumerate() {
            if self.seen.contains_key(&region.id) || new_ids.insert(region.id.clone(), ()).is_some()
            {
                return Err(Error::DuplicateRegion {
                    origin: origin.to_string(),
                    index,
                    id: region.id.to_string(),
                });
            }
        }
        self.seen.extend(new_ids);
        self.regions.extend(new);
        Ok(self)
    }

    /// The regions added so far in the compact `.pgeo` form (string properties only,
    /// coordinates rounded to 1e-5°), in the order they were added.
    pub fn to_compact(&self) -> Vec<u8> {
        crate::compact::encode(&self.regions)
    }

    /// Ids of the regions added so far, in the order they were added.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.regions.iter().map(|(r, _)| r.id.to_string()).collect()
    }

    /// Number of regions added so far.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// True when no region was added.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Builds the index.
    pub fn build(self) -> Result<RegionIndex> {
        let mut regions = self.regions;
        regions.sort_by(|a, b| b.0.level.cmp(&a.0.level).then_with(|| a.0.id.cmp(&b.0.id)));
        let mut parts = Vec::new();
        let mut out_regions = Vec::with_capacity(regions.len());
        let mut by_id = HashMap::with_capacity(regions.len());
        for (slot, (region, polygons)) in regions.into_iter().enumerate() {
            let slot = slot as u32;
            for rings in polygons {
                for copy in prepare_rings(rings) {
                    parts.push(Part {
                        region: slot,
                        polygon: PreparedPolygon::new(&copy),
                    });
                }
            }
            by_id.insert(region.id.clone(), slot);
            out_regions.push(region);
        }
        let envelopes = parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let b = p.polygon.bbox();
                GeomWithData::new(Rectangle::from_corners(b.min, b.max), i as u32)
            })
            .collect();
        let grid = crate::grid::Grid::build(
            &parts
                .iter()
                .map(|p| (&p.polygon, p.region))
                .collect::<Vec<_>>(),
        );
        Ok(RegionIndex {
            regions: out_regions,
            by_id,
            parts,
            tree: RTree::bulk_load(envelopes),
            grid,
        })
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The feature's id as text: its `id` member, else the id property.
fn raw_feature_id(raw: &Value, id_property: &str) -> Option<String> {
    let as_text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    raw.get("id").and_then(as_text).or_else(|| {
        raw.get("properties")
            .and_then(|p| p.get(id_property))
            .and_then(as_text)
    })
}

pub(crate) type Rings = Vec<Vec<[f64; 2]>>;

fn feature_polygons(feature: &geojson::Feature) -> std::result::Result<Vec<Rings>, FeatureProblem> {
    let geometry = feature
        .geometry
        .as_ref()
        .ok_or(FeatureProblem::NoGeometry)?;
    let polys: Vec<&geojson::PolygonType> = match &geometry.value {
        GeometryValue::Polygon { coordinates } => vec![coordinates],
        GeometryValue::MultiPolygon { coordinates } => coordinates.iter().collect(),
        other => return Err(FeatureProblem::WrongGeometry(other.type_name())),
    };
    polys
        .into_iter()
        .enumerate()
        .map(|(pi, rings)| convert_polygon(pi, rings))
        .collect()
}

fn convert_polygon(
    polygon: usize,
    rings: &geojson::PolygonType,
) -> std::result::Result<Rings, FeatureProblem> {
    if rings.is_empty() {
        return Err(FeatureProblem::NoRings { polygon });
    }
    rings
        .iter()
        .enumerate()
        .map(|(ring, positions)| {
            if positions.len() < 4 {
                return Err(FeatureProblem::ShortRing {
                    polygon,
                    ring,
                    len: positions.len(),
                });
            }
            let mut out = Vec::with_capacity(positions.len());
            for (position, p) in positions.iter().enumerate() {
                let bad = |reason| FeatureProblem::BadPosition {
                    polygon,
                    ring,
                    position,
                    reason,
                };
                let s = p.as_slice();
                if s.len() < 2 {
                    return Err(bad("fewer than 2 coordinates"));
                }
                let (lon, lat) = (s[0], s[1]);
                if !lon.is_finite() || !lat.is_finite() {
                    return Err(bad("coordinate is not a finite number"));
                }
                if !(-90.0..=90.0).contains(&lat) {
                    return Err(bad("latitude outside [-90, 90]"));
                }
                if !(-540.0..=540.0).contains(&lon) {
                    return Err(bad("longitude outside [-540, 540]"));
                }
                out.push([lon, lat]);
            }
            if out.first() != out.last() {
                return Err(FeatureProblem::OpenRing { polygon, ring });
            }
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grid answers exactly as the R-tree path does, on random points over the globe
    /// and on points within metres of region borders (vertices of the Japan set).
    #[test]
    fn grid_agrees_with_the_rtree() {
        let world = crate::shipped::world().unwrap();
        let mut state = 42u64;
        let check = |lat: f64, lon: f64| {
            assert_eq!(
                world.lookup_slot(lat, lon),
                world.lookup_slot_where(lat, lon, |_| true),
                "({lat}, {lon})"
            );
        };
        for _ in 0..200_000 {
            let lat = -90.0 + 180.0 * unit(&mut state);
            let lon = -180.0 + 360.0 * unit(&mut state);
            check(lat, lon);
        }
        for r in world.regions().iter().step_by(5) {
            for (lat, lon) in world.sample_points(r.id().as_str(), 2, 9) {
                for d in [0.0, 1e-5, -1e-5, 0.25, -0.25, 0.5] {
                    check(lat + d, lon);
                    check(lat, lon + d);
                }
            }
        }
        for (lat, lon) in [(90.0, 0.0), (-90.0, 180.0), (0.0, 180.0), (0.0, -180.0)] {
            check(lat, lon);
        }
    }

    #[test]
    fn normalises_longitudes() {
        assert_eq!(normalise_lon(190.0), -170.0);
        assert_eq!(normalise_lon(-190.0), 170.0);
        assert_eq!(normalise_lon(540.0), 180.0);
        assert_eq!(normalise_lon(180.0), 180.0);
        assert_eq!(normalise_lon(-180.0), -180.0);
    }
}

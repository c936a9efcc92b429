//! Validating a city's own boundaries (`city-node regions import FILE`): the GeoJSON must load
//! (every problem names the feature and the reason), each region must have a point inside it,
//! and the report says which first-level subdivision of the world index each region lies in.

use crate::{Error, IndexBuilder, LoadOptions, RegionIndex, Result};
use std::path::Path;

/// One imported region and where it lies in the world.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedRegion {
    /// Region id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Polygons (after multipolygon and antimeridian splitting).
    pub polygons: usize,
    /// A point inside the region (lat, lon).
    pub inside: (f64, f64),
    /// The world subdivision (level 1) at that point, if any.
    pub subdivision: Option<String>,
}

/// What an import found; [`ImportReport::compact`] is the file in `.pgeo` form.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The regions, by id.
    pub regions: Vec<ImportedRegion>,
    /// The same regions in the compact form (to load with [`IndexBuilder::add_compact`]).
    pub compact: Vec<u8>,
}

/// Validates a GeoJSON FeatureCollection of a city's regions at `level` (2 for municipal
/// boundaries on top of the world's subdivisions) against `world`.
pub fn validate_import(path: &Path, level: u8, world: &RegionIndex) -> Result<ImportReport> {
    let builder = IndexBuilder::default()
        .options(LoadOptions {
            level,
            ..LoadOptions::default()
        })
        .add_path(path)?;
    let origin = path.display().to_string();
    if builder.is_empty() {
        return Err(Error::NotFeatureCollection {
            origin,
            found: "a FeatureCollection without features".to_string(),
        });
    }
    let compact = builder.to_compact();
    let order = builder.ids();
    let index = builder.build()?;
    let mut regions = Vec::with_capacity(index.len());
    for r in index.regions() {
        let Some(&(lat, lon)) = index.sample_points(r.id().as_str(), 1, 1).first() else {
            return Err(Error::Feature {
                origin,
                index: order
                    .iter()
                    .position(|id| id == r.id().as_str())
                    .unwrap_or(0),
                id: Some(r.id().to_string()),
                problem: crate::FeatureProblem::Empty,
            });
        };
        regions.push(ImportedRegion {
            id: r.id().to_string(),
            name: r.name().to_string(),
            polygons: index.polygon_count_of(r.id().as_str()),
            inside: (lat, lon),
            subdivision: world.lookup(lat, lon).map(|w| w.id().to_string()),
        });
    }
    Ok(ImportReport { regions, compact })
}

//! Errors of pop-geo: loading polygons and configuring events ([`Error`]), and the verdict
//! of a failed proof-of-place check ([`PopError`]).

use dag_core::{CityId, Position};
use std::path::PathBuf;
use thiserror::Error;

/// Result with this crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong while loading regions or configuring events.
#[derive(Debug, Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File that was read.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The text is not JSON.
    #[error("{origin}: not valid JSON: {source}")]
    Json {
        /// Where the text came from (a path or the name of an embedded set).
        origin: String,
        /// Cause (with line and column).
        source: serde_json::Error,
    },
    /// Valid JSON, but not a GeoJSON FeatureCollection.
    #[error("{origin}: expected a GeoJSON FeatureCollection, found {found}")]
    NotFeatureCollection {
        /// Where the text came from.
        origin: String,
        /// What was found instead.
        found: String,
    },
    /// One feature is malformed or unusable.
    #[error("{origin}: feature {index}{}: {problem}", id.as_ref().map(|i| format!(" (id {i:?})")).unwrap_or_default())]
    Feature {
        /// Where the text came from.
        origin: String,
        /// 0-based index in the `features` array.
        index: usize,
        /// The feature's id, when it has one.
        id: Option<String>,
        /// What is wrong with it.
        problem: FeatureProblem,
    },
    /// Two features (possibly from different sources) have the same region id.
    #[error("{origin}: feature {index} has region id {id:?}, already used by another feature")]
    DuplicateRegion {
        /// Where the second one came from.
        origin: String,
        /// Its index.
        index: usize,
        /// The id.
        id: String,
    },
    /// A compact `.pgeo` region file is malformed.
    #[error("{origin}: bad compact region data at byte offset {offset}: {reason}")]
    Compact {
        /// Where the bytes came from.
        origin: String,
        /// Byte offset where decoding stopped.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An event has an unusable multiplier, window or radius.
    #[error("event {name:?}: {reason}")]
    InvalidEvent {
        /// The event's name (or city id).
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An events file could not be read or parsed (the parser's message names the line or
    /// field).
    #[error("events file {path}: {reason}")]
    EventsFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An event in an events file is unusable.
    #[error("events file {path}: {kind} event #{index}: {source}")]
    EventInFile {
        /// The file.
        path: std::path::PathBuf,
        /// `city` or `location`.
        kind: &'static str,
        /// Its position in the file's list of that kind (from 0).
        index: usize,
        /// What is wrong with it.
        source: Box<Error>,
    },
}

/// What is wrong with one feature.
#[derive(Debug, Error)]
pub enum FeatureProblem {
    /// The GeoJSON of the feature does not parse.
    #[error("not a valid GeoJSON feature: {0}")]
    Parse(String),
    /// No `id` member and no `id` property.
    #[error("no region id (set the feature's \"id\" or an \"{0}\" property)")]
    MissingId(String),
    /// The id is not usable as a city id.
    #[error("region id {id:?} is not a valid city id: {reason}")]
    BadId {
        /// The id.
        id: String,
        /// Why it is refused.
        reason: String,
    },
    /// No geometry.
    #[error("feature has no geometry")]
    NoGeometry,
    /// A geometry other than Polygon / MultiPolygon.
    #[error("geometry type {0} is not Polygon or MultiPolygon")]
    WrongGeometry(&'static str),
    /// A polygon without rings.
    #[error("polygon {polygon} has no rings")]
    NoRings {
        /// Index of the polygon within the feature.
        polygon: usize,
    },
    /// A ring with fewer than 4 positions.
    #[error("polygon {polygon} ring {ring} has {len} positions; a ring needs at least 4")]
    ShortRing {
        /// Polygon index.
        polygon: usize,
        /// Ring index (0 = exterior).
        ring: usize,
        /// Positions found.
        len: usize,
    },
    /// A ring whose first and last positions differ.
    #[error("polygon {polygon} ring {ring} is not closed (first and last positions differ)")]
    OpenRing {
        /// Polygon index.
        polygon: usize,
        /// Ring index.
        ring: usize,
    },
    /// The region's polygons enclose no point that is in it alone (zero area, or wholly
    /// covered by a region that wins the lookup).
    #[error("region encloses no point of its own (zero area, or covered by another region)")]
    Empty,
    /// A position out of range or with fewer than 2 coordinates.
    #[error("polygon {polygon} ring {ring} position {position}: {reason}")]
    BadPosition {
        /// Polygon index.
        polygon: usize,
        /// Ring index.
        ring: usize,
        /// Position index.
        position: usize,
        /// Why.
        reason: &'static str,
    },
}

/// Why a position does not prove presence in the claimed city.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PopError {
    /// The position is in another region, or in none.
    #[error(
        "position ({lat:.5}, {lon:.5}) is {}, not in claimed city {claimed}",
        found_text(found)
    )]
    OutsideClaimedCity {
        /// The city the tx claims.
        claimed: CityId,
        /// The region actually found at the position, `None` if in no known region.
        found: Option<FoundRegion>,
        /// Latitude of the position, degrees.
        lat: f64,
        /// Longitude of the position, degrees.
        lon: f64,
    },
    /// The claimed city is not among the loaded regions.
    #[error(
        "claimed city {claimed} is not a known region (position ({lat:.5}, {lon:.5}) is {})",
        found_text(found)
    )]
    UnknownCity {
        /// The city the tx claims.
        claimed: CityId,
        /// The region actually found at the position.
        found: Option<FoundRegion>,
        /// Latitude, degrees.
        lat: f64,
        /// Longitude, degrees.
        lon: f64,
    },
}

impl PopError {
    /// The claimed city.
    pub fn claimed(&self) -> &CityId {
        match self {
            PopError::OutsideClaimedCity { claimed, .. }
            | PopError::UnknownCity { claimed, .. } => claimed,
        }
    }
    /// The region found at the position, if any.
    pub fn found(&self) -> Option<&FoundRegion> {
        match self {
            PopError::OutsideClaimedCity { found, .. } | PopError::UnknownCity { found, .. } => {
                found.as_ref()
            }
        }
    }
    pub(crate) fn position_parts(pos: Position) -> (f64, f64) {
        (pos.lat(), pos.lon())
    }
}

/// Id and name of the region a position was found in (part of a [`PopError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRegion {
    /// Region id.
    pub id: CityId,
    /// Region name.
    pub name: String,
}

fn found_text(found: &Option<FoundRegion>) -> String {
    match found {
        Some(f) => format!("in {} ({})", f.id, f.name),
        None => "in no known region".to_string(),
    }
}

//! # pop-geo
//!
//! Proof of place: which region (city, municipality, prefecture) a position lies in.
//! GeoJSON FeatureCollections of Polygons and MultiPolygons are loaded into an R-tree of
//! polygon envelopes ([`RegionIndex`]) with exact containment per polygon (holes,
//! multipolygons, the antimeridian, deterministic borders: lowest id wins). A bounded cache
//! keyed by rounded coordinates ([`CachedIndex`]), event multipliers ([`EventSchedule`]), and
//! real boundary data with a gazetteer of known points ([`shipped`]): every country's
//! first-level subdivisions ([`shipped::world`], stored in a compact binary form), Japan's
//! prefectures and Nepal municipalities.
//!
//! ```
//! use dag_core::{CityId, Position};
//! let index = pop_geo::shipped::all().unwrap();
//! let claimed = CityId::new("JP-13").unwrap();
//! let in_tokyo = Position::from_degrees(35.6895, 139.69171).unwrap();
//! assert_eq!(index.check(&claimed, in_tokyo).unwrap().name(), "Tokyo");
//! let in_osaka = Position::from_degrees(34.69379, 135.50107).unwrap();
//! let err = index.check(&claimed, in_osaka).unwrap_err();
//! assert!(err.to_string().contains("JP-27") && err.to_string().contains("JP-13"));
//! ```

mod cache;
mod compact;
mod distance;
mod error;
mod events;
mod grid;
mod import;
mod index;
mod pip;
pub mod shipped;

pub use cache::{CacheConfig, CacheStats, CachedIndex};
pub use distance::{haversine_km, haversine_m};
pub use error::{Error, FeatureProblem, FoundRegion, PopError, Result};
pub use events::{
    CityEvent, DEFAULT_EPOCH_MS, EpochWindow, EventCalendar, EventSchedule, LocationEvent,
};
pub use import::{ImportReport, ImportedRegion, validate_import};
pub use index::{IndexBuilder, LoadOptions, Region, RegionIndex};

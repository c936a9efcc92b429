//! Great-circle distance for "nearest N nodes to a point": pop-geo's (geo's haversine),
//! the one implementation in the workspace.

pub use pop_geo::haversine_km;

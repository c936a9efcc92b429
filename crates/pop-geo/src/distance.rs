//! Great-circle distance, the one implementation in the workspace: geo's [`Haversine`]
//! (mean Earth radius 6 371 008.8 m, IUGG / GRS80). Event radii (this crate), "nearest
//! nodes" (node-list) and the distance factor of placement scores (priority) all use it.

use geo::{Distance, Haversine, Point};

/// Great-circle distance in metres between two points given in degrees.
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    Haversine.distance(Point::new(lon1, lat1), Point::new(lon2, lat2))
}

/// Great-circle distance in kilometres between two points given in degrees.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    haversine_m(lat1, lon1, lat2, lon2) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: (f64, f64), b: (f64, f64), km: f64, tol: f64) {
        let d = haversine_km(a.0, a.1, b.0, b.1);
        assert!((d - km).abs() <= tol, "{a:?}→{b:?}: {d} km, expected {km}");
    }

    #[test]
    fn known_distances() {
        check((35.6895, 139.6917), (35.6895, 139.6917), 0.0, 1e-9); // same point
        check((35.6895, 139.69171), (34.69379, 135.50107), 397.0, 5.0); // Tokyo–Osaka
        check((51.5074, -0.1278), (48.8566, 2.3522), 343.5, 3.0); // London–Paris
        check((0.0, 0.0), (0.0, 180.0), 20015.1, 1.0); // half the equator
        check((0.0, 179.5), (0.0, -179.5), 111.2, 0.5); // across the date line
        check((90.0, 0.0), (-90.0, 0.0), 20015.1, 1.0); // pole to pole
        let m = haversine_m(35.6895, 139.69171, 34.69379, 135.50107);
        assert!((m / 1000.0 - haversine_km(35.6895, 139.69171, 34.69379, 135.50107)).abs() < 1e-9);
    }
}

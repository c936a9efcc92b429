//! Great-circle distance for "nearest N nodes to a point".

/// Mean Earth radius, km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Haversine distance in km between two points given in degrees.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
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
        check((35.6895, 139.6917), (34.6937, 135.5023), 397.0, 5.0); // Tokyo–Osaka
        check((51.5074, -0.1278), (48.8566, 2.3522), 343.5, 3.0); // London–Paris
        check((0.0, 0.0), (0.0, 180.0), 20015.1, 1.0); // half the equator
        check((0.0, 179.5), (0.0, -179.5), 111.2, 0.5); // across the date line
    }
}

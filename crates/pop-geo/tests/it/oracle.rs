//! geo as the oracle: the banded point-in-polygon agrees with geo's exact `Intersects`
//! (boundary counts as inside) on random points over the shipped polygons.

use geo::{Coord, Intersects, MultiPolygon, Point, Polygon};
use pop_geo::shipped;
use proptest::prelude::*;
use serde_json::Value;
use std::sync::LazyLock;

/// Region id → geo MultiPolygon, parsed independently of pop-geo.
type GeoRegions = Vec<(String, MultiPolygon<f64>)>;

fn geo_regions(bytes: &[u8]) -> GeoRegions {
    let v: Value = serde_json::from_slice(bytes).unwrap();
    let ring = |r: &Value| -> geo::LineString<f64> {
        r.as_array()
            .unwrap()
            .iter()
            .map(|p| Coord {
                x: p[0].as_f64().unwrap(),
                y: p[1].as_f64().unwrap(),
            })
            .collect()
    };
    let poly = |p: &Value| {
        let rings = p.as_array().unwrap();
        Polygon::new(ring(&rings[0]), rings[1..].iter().map(ring).collect())
    };
    v["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let g = &f["geometry"];
            let mp = match g["type"].as_str().unwrap() {
                "Polygon" => MultiPolygon(vec![poly(&g["coordinates"])]),
                _ => MultiPolygon(
                    g["coordinates"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(poly)
                        .collect(),
                ),
            };
            (f["id"].as_str().unwrap().to_string(), mp)
        })
        .collect()
}

static JAPAN: LazyLock<(pop_geo::RegionIndex, GeoRegions)> = LazyLock::new(|| {
    let mut regions = geo_regions(shipped::JAPAN_GEOJSON);
    regions.sort_by(|a, b| a.0.cmp(&b.0));
    (shipped::japan().unwrap(), regions)
});

fn oracle(regions: &[(String, MultiPolygon<f64>)], lat: f64, lon: f64) -> Option<&str> {
    let p = Point::new(lon, lat);
    regions
        .iter()
        .find(|(_, mp)| mp.intersects(&p))
        .map(|(id, _)| id.as_str())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn japan_matches_geo(lat in 30.0f64..46.0, lon in 129.0f64..146.0) {
        let (index, regions) = &*JAPAN;
        let ours = index.lookup(lat, lon).map(|r| r.id().as_str());
        prop_assert_eq!(ours, oracle(regions, lat, lon));
    }

    #[test]
    fn japan_vertices_are_on_the_border(i in 0usize..10_000) {
        // Every vertex of the data lies on a border: inside for pop-geo as for geo.
        let (index, regions) = &*JAPAN;
        let verts: Vec<(f64, f64)> = regions.iter()
            .flat_map(|(_, mp)| mp.0.iter().flat_map(|p| p.exterior().0.iter().map(|c| (c.y, c.x))))
            .collect();
        let (lat, lon) = verts[i % verts.len()];
        let ours = index.lookup(lat, lon).map(|r| r.id().as_str());
        prop_assert_eq!(ours, oracle(regions, lat, lon));
    }
}

//! Synthetic fixtures: a hole with an island in it, a multipolygon, a shared border, an
//! unsplit polygon across the antimeridian, and a file on disk.

use pop_geo::RegionIndex;
use std::io::Write;

const FIXTURE: &str = r#"{"type":"FeatureCollection","features":[
 {"type":"Feature","id":"RING","properties":{"name":"Ring with a hole"},
  "geometry":{"type":"Polygon","coordinates":[
    [[0,0],[10,0],[10,10],[0,10],[0,0]],
    [[3,3],[3,7],[7,7],[7,3],[3,3]]]}},
 {"type":"Feature","id":"ISLAND","properties":{"name":"Island in the hole"},
  "geometry":{"type":"Polygon","coordinates":[[[4,4],[6,4],[6,6],[4,6],[4,4]]]}},
 {"type":"Feature","id":"B-EAST","properties":{"name":"East neighbour"},
  "geometry":{"type":"Polygon","coordinates":[[[10,0],[20,0],[20,10],[10,10],[10,0]]]}},
 {"type":"Feature","id":"MULTI","properties":{"name":"Two squares"},
  "geometry":{"type":"MultiPolygon","coordinates":[
    [[[30,0],[31,0],[31,1],[30,1],[30,0]]],
    [[[40,0],[41,0],[41,1],[40,1],[40,0]]]]}},
 {"type":"Feature","id":"DATELINE","properties":{"name":"Unsplit across 180"},
  "geometry":{"type":"Polygon","coordinates":[
    [[179,-20],[-179,-20],[-179,-18],[179,-18],[179,-20]],
    [[179.8,-19.2],[-179.8,-19.2],[-179.8,-18.8],[179.8,-18.8],[179.8,-19.2]]]}},
 {"type":"Feature","id":"EAST-OF-360","properties":{"name":"Written past 180"},
  "geometry":{"type":"Polygon","coordinates":[[[170,50],[190,50],[190,52],[170,52],[170,50]]]}}
]}"#;

fn index() -> RegionIndex {
    RegionIndex::from_slice(FIXTURE.as_bytes(), "fixture").unwrap()
}

fn id(index: &RegionIndex, lat: f64, lon: f64) -> Option<String> {
    index.lookup(lat, lon).map(|r| r.id().as_str().to_string())
}

#[track_caller]
fn check(index: &RegionIndex, lat: f64, lon: f64, expected: Option<&str>) {
    assert_eq!(id(index, lat, lon).as_deref(), expected, "({lat}, {lon})");
}

#[test]
fn holes_and_islands() {
    let ix = index();
    check(&ix, 1.0, 1.0, Some("RING"));
    check(&ix, 3.5, 3.5, None); // in the hole, outside the island
    check(&ix, 5.0, 5.0, Some("ISLAND")); // island inside the hole
    check(&ix, 6.5, 5.0, None);
    check(&ix, 8.0, 5.0, Some("RING"));
}

#[test]
fn borders_lowest_id_wins() {
    let ix = index();
    // x = 10 is shared by RING and B-EAST: "B-EAST" < "RING".
    check(&ix, 5.0, 10.0, Some("B-EAST"));
    check(&ix, 5.0, 10.000001, Some("B-EAST"));
    check(&ix, 5.0, 9.999999, Some("RING"));
    // The hole's edge belongs to RING (borders count as inside); the island's edge at 4
    // is ISLAND's ("ISLAND" < "RING").
    check(&ix, 5.0, 3.0, Some("RING"));
    check(&ix, 5.0, 4.0, Some("ISLAND"));
    // Corners.
    check(&ix, 0.0, 0.0, Some("RING"));
    check(&ix, 10.0, 10.0, Some("B-EAST"));
}

#[test]
fn multipolygon_parts() {
    let ix = index();
    check(&ix, 0.5, 30.5, Some("MULTI"));
    check(&ix, 0.5, 40.5, Some("MULTI"));
    check(&ix, 0.5, 35.0, None);
}

#[test]
fn unsplit_polygon_across_antimeridian() {
    let ix = index();
    check(&ix, -19.5, 179.5, Some("DATELINE"));
    check(&ix, -19.5, -179.5, Some("DATELINE"));
    check(&ix, -19.5, 180.0, Some("DATELINE"));
    check(&ix, -19.5, -180.0, Some("DATELINE"));
    check(&ix, -19.0, 179.9, None); // in its hole, which also crosses 180°
    check(&ix, -19.0, -179.9, None);
    check(&ix, -19.5, 178.5, None);
    check(&ix, -19.5, -178.5, None);
    // Longitudes past 180 in the file: 185° E is −175°.
    check(&ix, 51.0, -175.0, Some("EAST-OF-360"));
    check(&ix, 51.0, 175.0, Some("EAST-OF-360"));
    check(&ix, 51.0, -169.0, None);
    // Queries past ±180 are normalised.
    check(&ix, 51.0, 185.0, Some("EAST-OF-360"));
}

#[test]
fn loads_from_a_path() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(FIXTURE.as_bytes()).unwrap();
    let ix = RegionIndex::from_path(f.path()).unwrap();
    assert_eq!(ix.len(), 6);
    assert_eq!(ix.regions()[0].id().as_str(), "B-EAST", "sorted by id");
    assert_eq!(ix.region("RING").unwrap().name(), "Ring with a hole");
    let err = RegionIndex::from_path("/nonexistent/regions.geojson").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/regions.geojson"),
        "{err}"
    );
}

#[test]
fn builder_combines_and_rejects_duplicates() {
    let err = RegionIndex::builder()
        .add_slice(FIXTURE.as_bytes(), "first")
        .unwrap()
        .add_slice(FIXTURE.as_bytes(), "second")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "second: feature 0 has region id \"RING\", already used by another feature"
    );
}

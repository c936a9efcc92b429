//! Malformed GeoJSON fails with an error that names the feature.

use pop_geo::RegionIndex;

fn err(text: &str) -> String {
    RegionIndex::from_slice(text.as_bytes(), "test.geojson")
        .unwrap_err()
        .to_string()
}

fn fc(features: &str) -> String {
    format!(r#"{{"type":"FeatureCollection","features":[{features}]}}"#)
}

const GOOD: &str = r#"{"type":"Feature","id":"OK-1","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}}"#;

#[track_caller]
fn check(feature: &str, expected: &str) {
    let e = err(&fc(&format!("{GOOD},{feature}")));
    assert_eq!(e, expected);
}

#[test]
fn feature_errors_name_index_and_id() {
    check(
        r#"{"type":"Feature","id":"JP-99","properties":{},"geometry":{"type":"Point","coordinates":[1,2]}}"#,
        r#"test.geojson: feature 1 (id "JP-99"): geometry type Point is not Polygon or MultiPolygon"#,
    );
    check(
        r#"{"type":"Feature","properties":{"id":"P-1"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[0,0]]]}}"#,
        r#"test.geojson: feature 1 (id "P-1"): polygon 0 ring 0 has 3 positions; a ring needs at least 4"#,
    );
    check(
        r#"{"type":"Feature","id":"OPEN","properties":{},"geometry":{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]],[[[5,5],[6,5],[6,6],[5,6]]]]}}"#,
        r#"test.geojson: feature 1 (id "OPEN"): polygon 1 ring 0 is not closed (first and last positions differ)"#,
    );
    check(
        r#"{"type":"Feature","id":"LAT","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,95],[1,1],[0,0]]]}}"#,
        r#"test.geojson: feature 1 (id "LAT"): polygon 0 ring 0 position 1: latitude outside [-90, 90]"#,
    );
    check(
        r#"{"type":"Feature","properties":{"name":"nameless"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}}"#,
        r#"test.geojson: feature 1: no region id (set the feature's "id" or an "id" property)"#,
    );
    check(
        r#"{"type":"Feature","id":"has space","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}}"#,
        r#"test.geojson: feature 1 (id "has space"): region id "has space" is not a valid city id: invalid city_id: must be printable ASCII without spaces"#,
    );
    check(
        r#"{"type":"Feature","id":"NOGEOM","properties":{},"geometry":null}"#,
        r#"test.geojson: feature 1 (id "NOGEOM"): feature has no geometry"#,
    );
}

#[test]
fn unparsable_feature_is_named() {
    let e = err(&fc(&format!(
        r#"{GOOD},{{"type":"Feature","id":"BAD-COORDS","properties":{{}},"geometry":{{"type":"Polygon","coordinates":"nope"}}}}"#
    )));
    assert!(
        e.starts_with(r#"test.geojson: feature 1 (id "BAD-COORDS"): not a valid GeoJSON feature"#),
        "{e}"
    );
}

#[test]
fn not_json_or_not_a_collection() {
    let e = err("{\"type\": \"FeatureCollection\", \"features\": [");
    assert!(e.starts_with("test.geojson: not valid JSON: "), "{e}");
    assert!(e.contains("line 1"), "{e}");
    assert_eq!(
        err(r#"{"type":"Feature","geometry":null,"properties":{}}"#),
        r#"test.geojson: expected a GeoJSON FeatureCollection, found type "Feature""#
    );
    assert_eq!(
        err("[1,2]"),
        "test.geojson: expected a GeoJSON FeatureCollection, found an array"
    );
    assert_eq!(
        err(r#"{"type":"FeatureCollection"}"#),
        r#"test.geojson: expected a GeoJSON FeatureCollection, found no "features" array"#
    );
}

#[test]
fn import_validates_and_places_regions_in_the_world() {
    use std::io::Write;
    let world = pop_geo::shipped::world().unwrap();
    // Two squares inside Paris (FR-75), one of them written as a MultiPolygon.
    let good = fc(
        r#"{"type":"Feature","id":"FR-75-A","properties":{"name":"West"},"geometry":{"type":"Polygon","coordinates":[[[2.30,48.85],[2.34,48.85],[2.34,48.87],[2.30,48.87],[2.30,48.85]]]}},
      {"type":"Feature","id":"FR-75-B","properties":{"name":"East"},"geometry":{"type":"MultiPolygon","coordinates":[[[[2.35,48.85],[2.39,48.85],[2.39,48.87],[2.35,48.87],[2.35,48.85]]]]}}"#,
    );
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(good.as_bytes()).unwrap();
    let report = pop_geo::validate_import(f.path(), 2, &world).unwrap();
    assert_eq!(report.regions.len(), 2);
    for r in &report.regions {
        assert_eq!(r.subdivision.as_deref(), Some("FR-75"), "{r:?}");
        assert_eq!(r.polygons, 1);
    }
    let back = RegionIndex::builder()
        .add_compact(&report.compact, "import")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(back.lookup(48.86, 2.32).unwrap().id().as_str(), "FR-75-A");
    assert_eq!(back.regions()[0].level(), 2);

    let mut bad = tempfile::NamedTempFile::new().unwrap();
    bad.write_all(fc(&format!(r#"{GOOD},{{"type":"Feature","id":"FLAT","properties":{{}},"geometry":{{"type":"Polygon","coordinates":[[[0,0],[1,1],[2,2],[0,0]]]}}}}"#)).as_bytes()).unwrap();
    let e = pop_geo::validate_import(bad.path(), 2, &world)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(r#"feature 1 (id "FLAT")"#) && e.contains("encloses no point"),
        "{e}"
    );

    let mut empty = tempfile::NamedTempFile::new().unwrap();
    empty.write_all(fc("").as_bytes()).unwrap();
    let e = pop_geo::validate_import(empty.path(), 2, &world)
        .unwrap_err()
        .to_string();
    assert!(e.contains("without features"), "{e}");
}

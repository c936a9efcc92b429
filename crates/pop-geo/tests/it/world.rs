//! The world index: every country's first-level subdivisions. A known point per subdivision
//! (the world gazetteer) is placed in its region, except the places listed — with what the data
//! says instead — in `data/world-gazetteer-exceptions.csv`; sea, poles and the antimeridian.

use dag_core::{CityId, Position};
use pop_geo::RegionIndex;
use pop_geo::shipped::{self, WorldPlace};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

static WORLD: LazyLock<RegionIndex> = LazyLock::new(|| shipped::world().unwrap());

fn id(lat: f64, lon: f64) -> Option<String> {
    WORLD.lookup(lat, lon).map(|r| r.id().to_string())
}

/// (region id, geonameid) → what the data says there (`none` or a region id).
fn exceptions() -> BTreeMap<(String, u32), String> {
    include_str!("../../data/world-gazetteer-exceptions.csv")
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 3, "{l}");
            ((f[0].to_string(), f[1].parse().unwrap()), f[2].to_string())
        })
        .collect()
}

#[test]
fn world_covers_every_country() {
    let countries: BTreeSet<&str> = WORLD
        .regions()
        .iter()
        .filter_map(|r| r.properties().get("country").and_then(|v| v.as_str()))
        .collect();
    // Natural Earth's admin-1 covers 240 countries and territories (Japan comes from
    // japan.geojson, which has no country property).
    assert_eq!(countries.len(), 239, "{countries:?}");
    assert_eq!(WORLD.len(), 4454 + 47 + 36);
    for r in WORLD.regions() {
        assert!(
            r.level() == 1 || r.id().as_str().starts_with("NP-"),
            "{}",
            r.id()
        );
    }
}

#[test]
fn gazetteer_places_map_to_their_region() {
    let places: Vec<WorldPlace> = shipped::world_gazetteer().unwrap();
    let exceptions = exceptions();
    let mut confirmed = 0usize;
    let mut countries_confirmed = BTreeSet::new();
    let mut countries = BTreeSet::new();
    let mut surprises = Vec::new();
    let mut excepted_seen = BTreeSet::new();
    for p in &places {
        countries.insert(p.country.clone());
        let claimed = CityId::new(p.region_id.as_str()).unwrap();
        let pos = Position::from_degrees(p.lat, p.lon).unwrap();
        let key = (p.region_id.clone(), p.geonameid);
        match (WORLD.check(&claimed, pos), exceptions.get(&key)) {
            (Ok(_), None) => {
                confirmed += 1;
                countries_confirmed.insert(p.country.clone());
            }
            (Ok(_), Some(_)) => surprises.push(format!("{} {key:?} now confirmed", p.name)),
            (Err(_), Some(said)) => {
                let found = id(p.lat, p.lon).unwrap_or_else(|| "none".into());
                if &found != said {
                    surprises.push(format!(
                        "{} {key:?}: listed as {said}, found {found}",
                        p.name
                    ));
                }
                excepted_seen.insert(key);
            }
            (Err(e), None) => surprises.push(format!("{} {key:?}: {e}", p.name)),
        }
    }
    assert!(surprises.is_empty(), "{}", surprises.join("\n"));
    assert_eq!(
        excepted_seen.len(),
        exceptions.len(),
        "stale exception rows"
    );
    // The counts the README states.
    assert_eq!(places.len(), 3864);
    assert_eq!(exceptions.len(), 454);
    assert_eq!(confirmed, 3864 - 454);
    assert_eq!(countries.len(), 230);
    assert!(
        countries_confirmed.len() >= 215,
        "{}",
        countries_confirmed.len()
    );
}

#[test]
fn sea_points_are_in_no_region() {
    for (lat, lon, what) in [
        (30.0, -40.0, "mid-Atlantic"),
        (0.0, -140.0, "equatorial Pacific"),
        (-30.0, 80.0, "Indian Ocean"),
        (-55.0, -100.0, "Southern Ocean"),
        (85.0, 0.0, "Arctic Ocean"),
        (35.0, 18.0, "Ionian Sea"),
        (56.0, 3.0, "North Sea"),
        (-17.0, 180.0, "Koro Sea on the antimeridian"),
        (0.0, 0.0, "Gulf of Guinea"),
    ] {
        assert_eq!(id(lat, lon), None, "{what} ({lat}, {lon})");
    }
}

#[test]
fn capitals_and_finer_sets() {
    for (lat, lon, expected) in [
        (48.8566, 2.3522, "FR-75"),
        (40.7128, -74.006, "US-NY"),
        (-33.9249, 18.4241, "ZA-WC"),
        (-33.8688, 151.2093, "AU-NSW"),
        (35.6895, 139.69171, "JP-13"),
        (-15.7939, -47.8828, "BR-DF"),
        // Nepal: the municipality (level 2) wins over its province.
        (27.70169, 85.3206, "NP-Kathmandu-Kathmandu"),
    ] {
        assert_eq!(id(lat, lon).as_deref(), Some(expected), "({lat}, {lon})");
    }
    // A claim of the province holds inside its municipality; the other province's does not.
    let kathmandu = Position::from_degrees(27.70169, 85.3206).unwrap();
    let provinces: Vec<&CityId> = WORLD
        .regions()
        .iter()
        .filter(|r| {
            r.level() == 1 && r.properties().get("country").and_then(|v| v.as_str()) == Some("NP")
        })
        .filter(|r| WORLD.check(r.id(), kathmandu).is_ok())
        .map(|r| r.id())
        .collect();
    assert_eq!(
        provinces.len(),
        1,
        "exactly one province of Nepal: {provinces:?}"
    );
    let tokyo = CityId::new("JP-13").unwrap();
    assert!(WORLD.check(&tokyo, kathmandu).is_err());
    let err = WORLD
        .check(&CityId::new("NP-Lalitpur-Lalitpur").unwrap(), kathmandu)
        .unwrap_err();
    assert_eq!(err.found().unwrap().id.as_str(), "NP-Kathmandu-Kathmandu");
}

#[test]
fn poles_and_antimeridian() {
    for (lat, lon, expected) in [
        (-90.0, 0.0, "NE-ATA_00_"),
        (-89.5, 120.0, "NE-ATA_00_"),
        (-85.0, -179.99, "NE-ATA_00_"),
        (-85.0, 180.0, "NE-ATA_00_"),
        (78.22, 15.65, "NO-21"),
        (82.5, -62.3, "CA-NU"),
        // Chukotka and Fiji on both sides of 180°.
        (69.36012, 178.40103, "RU-CHU"),
        (64.42289, -173.22641, "RU-CHU"),
        (64.42289, 186.77359, "RU-CHU"),
        (-18.06667, 179.31667, "FJ-E"),
        (-18.23652, -178.81232, "FJ-E"),
    ] {
        assert_eq!(id(lat, lon).as_deref(), Some(expected), "({lat}, {lon})");
    }
    // The Greenland ice sheet.
    let gl = WORLD.lookup(75.0, -40.0).unwrap();
    assert_eq!(gl.properties()["country"], "GL");
}

#[test]
fn lookups_are_deterministic_across_loads() {
    let again = shipped::world().unwrap();
    let mut n = 0;
    for lat in (-90..=90).step_by(3) {
        for lon in (-180..=180).step_by(3) {
            let (lat, lon) = (lat as f64 + 0.123, lon as f64 + 0.456);
            assert_eq!(
                WORLD.lookup(lat, lon).map(|r| r.id()),
                again.lookup(lat, lon).map(|r| r.id())
            );
            n += usize::from(WORLD.lookup(lat, lon).is_some());
        }
    }
    assert!(n > 1000, "{n} grid points on land");
}

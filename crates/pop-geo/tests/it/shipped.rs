//! Known places (GeoNames gazetteer) on the shipped polygons.

use dag_core::{CityId, Position};
use pop_geo::shipped::{self, GAZETTEER};
use pop_geo::{CacheConfig, CachedIndex, PopError};
use std::sync::Arc;

#[test]
fn every_gazetteer_place_maps_to_its_region() {
    let index = shipped::all().unwrap();
    let mut wrong = Vec::new();
    for p in GAZETTEER {
        let got = index
            .lookup(p.lat, p.lon)
            .map(|r| r.id().as_str().to_string());
        if got.as_deref() != Some(p.region_id) {
            wrong.push(format!(
                "{} ({}, {}): expected {}, got {:?}",
                p.name, p.lat, p.lon, p.region_id, got
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn shipped_sets_have_expected_regions() {
    let japan = shipped::japan().unwrap();
    assert_eq!(japan.len(), 47);
    for i in 1..=47 {
        let id = format!("JP-{i:02}");
        assert!(japan.region(&id).is_some(), "{id}");
        CityId::new(id).unwrap();
    }
    assert_eq!(japan.region("JP-13").unwrap().name(), "Tokyo");
    assert_eq!(
        japan.region("JP-13").unwrap().properties()["name_ja"],
        "東京都"
    );
    let nepal = shipped::nepal().unwrap();
    assert_eq!(nepal.len(), 36);
    assert!(nepal.region("NP-Kathmandu-Kathmandu").is_some());
    let am = shipped::antimeridian().unwrap();
    assert_eq!(am.len(), 6);
    assert_eq!(shipped::all().unwrap().len(), 47 + 36 + 6);
    assert!(shipped::data_dir().join("README.md").exists());
}

#[test]
fn sea_points_are_in_no_region() {
    let index = shipped::all().unwrap();
    for (lat, lon, what) in [
        (35.0, 150.0, "Pacific east of Honshu"),
        (37.5, 134.0, "Sea of Japan"),
        (33.0, 135.0, "Kii channel, off Wakayama"),
        (34.0, 137.5, "Pacific south of Shizuoka"),
        (0.0, 0.0, "Gulf of Guinea"),
        (-17.0, 180.0, "Koro Sea on the antimeridian"),
        (-18.0, -179.0, "Pacific east of Fiji's Lau group"),
        (27.70, 86.5, "Nepal outside the shipped municipalities"),
    ] {
        assert!(
            index.lookup(lat, lon).is_none(),
            "{what} ({lat}, {lon}) -> {:?}",
            index.lookup(lat, lon).map(|r| r.id())
        );
    }
}

#[test]
fn far_side_of_the_antimeridian() {
    let index = shipped::antimeridian().unwrap();
    // Chukotka: Leningradskiy at 178.4° E, Provideniya and Lorino past 180° (negative
    // longitudes); Fiji's Eastern division: Levuka at 179.3° E, Tubou at 178.8° W.
    for (lat, lon, id) in [
        (69.36012, 178.40103, "RU-CHU"),
        (64.42289, -173.22641, "RU-CHU"),
        (65.50306, -171.70387, "RU-CHU"),
        (-18.06667, 179.31667, "FJ-E"),
        (-18.23652, -178.81232, "FJ-E"),
    ] {
        assert_eq!(
            index.lookup(lat, lon).unwrap().id().as_str(),
            id,
            "({lat}, {lon})"
        );
    }
    // Longitudes past 180 are normalised: 186.77° E is Provideniya's −173.23°.
    assert_eq!(
        index.lookup(64.42289, 186.77359).unwrap().id().as_str(),
        "RU-CHU"
    );
    // Both halves of the data really are split at ±180°.
    let sides = |id: &str| {
        let pts = index.sample_points(id, 400, 3);
        (pts.iter().any(|p| p.1 > 0.0), pts.iter().any(|p| p.1 < 0.0))
    };
    assert_eq!(sides("RU-CHU"), (true, true));
}

#[test]
fn pop_check_names_claimed_and_found() {
    let index = shipped::all().unwrap();
    let tokyo = CityId::new("JP-13").unwrap();
    let kanagawa = CityId::new("JP-14").unwrap();
    let shinjuku = Position::from_degrees(35.6895, 139.69171).unwrap();
    assert_eq!(index.check(&tokyo, shinjuku).unwrap().id(), &tokyo);

    let err = index.check(&kanagawa, shinjuku).unwrap_err();
    assert_eq!(err.claimed(), &kanagawa);
    assert_eq!(err.found().unwrap().id, tokyo);
    assert_eq!(
        err.to_string(),
        "position (35.68950, 139.69171) is in JP-13 (Tokyo), not in claimed city JP-14"
    );

    let sea = Position::from_degrees(35.0, 150.0).unwrap();
    let err = index.check(&tokyo, sea).unwrap_err();
    assert!(matches!(
        err,
        PopError::OutsideClaimedCity { found: None, .. }
    ));
    assert_eq!(
        err.to_string(),
        "position (35.00000, 150.00000) is in no known region, not in claimed city JP-13"
    );

    let nowhere = CityId::new("XX-99").unwrap();
    let err = index.check(&nowhere, shinjuku).unwrap_err();
    assert!(matches!(err, PopError::UnknownCity { .. }));
    assert!(
        err.to_string().contains("XX-99") && err.to_string().contains("JP-13"),
        "{err}"
    );
}

#[test]
fn cached_and_uncached_agree_on_gazetteer() {
    let index = Arc::new(shipped::all().unwrap());
    let cached = CachedIndex::new(index.clone(), CacheConfig::default());
    for round in 0..2 {
        for p in GAZETTEER {
            let pos = Position::from_degrees(p.lat, p.lon).unwrap();
            assert_eq!(
                cached.lookup_position(pos).map(|r| r.id()),
                index.lookup_position(pos).map(|r| r.id()),
                "{} round {round}",
                p.name
            );
            let claimed = CityId::new(p.region_id).unwrap();
            assert!(cached.check(&claimed, pos).is_ok());
        }
    }
    assert_eq!(cached.stats().hits, GAZETTEER.len() as u64 * 3);
}

#[test]
fn sample_points_lie_in_their_region() {
    let index = shipped::all().unwrap();
    for id in ["JP-13", "NP-Kathmandu-Kathmandu", "FJ-N", "RU-CHU"] {
        let pts = index.sample_points(id, 20, 7);
        assert_eq!(pts.len(), 20, "{id}");
        for (lat, lon) in &pts {
            assert_eq!(index.lookup(*lat, *lon).unwrap().id().as_str(), id);
        }
        assert_eq!(pts, index.sample_points(id, 20, 7), "deterministic");
    }
    assert!(index.sample_points("XX-1", 3, 1).is_empty());
}

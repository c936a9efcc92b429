//! Integration tests of flagging: default rules table, registry and config, test double.
#![allow(clippy::unwrap_used)]

use dag_core::{AccountId, CityId, Position, PositionMethod, Tx, TxKind};
use flagging::{
    Continent, CountryPrefixDirectory, DefaultFlagger, FixedFlagger, Flag, FlagInput, Flagger,
    FlaggerRegistry, FlaggingConfig, RegionClass, Urgency,
};
use proptest::prelude::*;
use std::sync::Arc;

fn city(s: &str) -> CityId {
    CityId::new(s).unwrap()
}

fn tx(kind: TxKind, from_city: &str) -> Tx {
    Tx::fresh(
        AccountId::from_bytes([1; 32]),
        AccountId::from_bytes([2; 32]),
        10,
        1,
        0,
        city(from_city),
        Position::from_degrees(35.0, 139.0).unwrap(),
        PositionMethod::Gps,
    )
    .with_kind(kind)
}

fn default_flagger() -> Arc<dyn Flagger> {
    FlaggerRegistry::with_defaults()
        .build(&FlaggingConfig::default())
        .unwrap()
}

#[test]
fn classes_follow_the_documented_order() {
    let f = default_flagger();
    let classes: Vec<u8> = TxKind::BY_PRIORITY
        .iter()
        .map(|&k| f.flag(&FlagInput::new(&tx(k, "JP-13"), 100)).class)
        .collect();
    assert_eq!(classes, vec![0, 1, 2, 3, 4, 5, 6]);
    // checkpoint > repair_ack > repair_request > poh_ack > poh_request > fresh_tx > system_tx
    let f = |k| f.flag(&FlagInput::new(&tx(k, "JP-13"), 100)).queue_key();
    assert!(f(TxKind::RepairAck) < f(TxKind::PohRequest));
    assert!(f(TxKind::PohAck) < f(TxKind::FreshTx));
    assert!(f(TxKind::FreshTx) < f(TxKind::SystemTx));
}

#[test]
fn urgency_is_repair_and_ack_paths() {
    let f = default_flagger();
    for (kind, urgency) in [
        (TxKind::RepairAck, Urgency::Urgent),
        (TxKind::RepairRequest, Urgency::Urgent),
        (TxKind::PohAck, Urgency::Urgent),
        (TxKind::Checkpoint, Urgency::Normal),
        (TxKind::PohRequest, Urgency::Normal),
        (TxKind::FreshTx, Urgency::Normal),
        (TxKind::SystemTx, Urgency::Normal),
    ] {
        assert_eq!(
            f.flag(&FlagInput::new(&tx(kind, "JP-13"), 10)).urgency,
            urgency,
            "{kind}"
        );
    }
    // Urgent work is served before a checkpoint.
    let key = |k| f.flag(&FlagInput::new(&tx(k, "JP-13"), 10)).queue_key();
    assert!(key(TxKind::PohAck) < key(TxKind::Checkpoint));
}

#[test]
fn region_classes() {
    let f = default_flagger();
    let t = tx(TxKind::FreshTx, "JP-13");
    let check = |receiver: Option<&str>, expected: RegionClass| {
        let c = receiver.map(city);
        let mut input = FlagInput::new(&t, 500);
        if let Some(c) = &c {
            input = input.with_receiver_city(c);
        }
        assert_eq!(f.flag(&input).region, expected, "{receiver:?}");
    };
    check(Some("JP-13"), RegionClass::Local);
    check(Some("JP-27"), RegionClass::InterCity);
    check(Some("NP-Kathmandu-Kathmandu"), RegionClass::InterCity);
    check(Some("FJ-C"), RegionClass::InterContinent);
    check(Some("US-NY"), RegionClass::InterContinent);
    check(Some("mars-base"), RegionClass::Unknown);
    check(None, RegionClass::Unknown);
}

#[test]
fn receiver_city_from_directory() {
    let mut dir = CountryPrefixDirectory::default();
    dir.set_account_city(AccountId::from_bytes([2; 32]), city("FJ-N"));
    dir.set_continent(city("lab-1"), Continent::Asia);
    let f = FlaggerRegistry::with_directory(Arc::new(dir))
        .build(&FlaggingConfig::default())
        .unwrap();
    assert_eq!(
        f.flag(&FlagInput::new(&tx(TxKind::FreshTx, "JP-13"), 1))
            .region,
        RegionClass::InterContinent
    );
    // The caller's receiver city wins over the directory.
    let osaka = city("JP-27");
    let t = tx(TxKind::FreshTx, "lab-1");
    assert_eq!(
        f.flag(&FlagInput::new(&t, 1).with_receiver_city(&osaka))
            .region,
        RegionClass::InterCity
    );
}

#[test]
fn oversize_by_configured_limit() {
    let f = default_flagger();
    let t = tx(TxKind::FreshTx, "JP-13");
    assert!(!f.flag(&FlagInput::new(&t, 16 * 1024)).oversize);
    assert!(f.flag(&FlagInput::new(&t, 16 * 1024 + 1)).oversize);
    let cfg = FlaggingConfig {
        oversize_bytes: 8000,
        ..FlaggingConfig::default()
    };
    let small = FlaggerRegistry::with_defaults().build(&cfg).unwrap();
    assert!(small.flag(&FlagInput::new(&t, 8001)).oversize);
}

#[test]
fn plugins_chosen_by_config() {
    let cfg: FlaggingConfig = toml::from_str(
        r#"
        plugin = "kind-only"
        urgent_kinds = ["checkpoint"]
        "#,
    )
    .unwrap();
    let f = FlaggerRegistry::with_defaults().build(&cfg).unwrap();
    assert_eq!(f.name(), "kind-only");
    let flag = f.flag(&FlagInput::new(&tx(TxKind::Checkpoint, "JP-13"), 1 << 20));
    assert_eq!(flag.urgency, Urgency::Urgent);
    assert_eq!(flag.region, RegionClass::Unknown);
    assert!(!flag.oversize);

    let err = FlaggerRegistry::with_defaults()
        .build(&FlaggingConfig {
            plugin: "nope".into(),
            ..FlaggingConfig::default()
        })
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "unknown flagging plugin \"nope\" (registered: default, kind-only)"
    );
    let bad: FlaggingConfig = toml::from_str(r#"urgent_kinds = ["urgentest"]"#).unwrap();
    assert!(FlaggerRegistry::with_defaults().build(&bad).is_err());
    assert!(toml::from_str::<FlaggingConfig>("typo = 1").is_err());
}

#[test]
fn custom_plugin_and_test_double() {
    let mut reg = FlaggerRegistry::with_defaults();
    let double = Arc::new(FixedFlagger::new(Flag {
        kind: TxKind::FreshTx,
        class: 5,
        urgency: Urgency::Urgent,
        region: RegionClass::Local,
        oversize: true,
    }));
    let d = double.clone();
    reg.register(
        "fixed",
        Box::new(move |_| Ok(d.clone() as Arc<dyn Flagger>)),
    )
    .unwrap();
    assert!(reg.register("fixed", Box::new(|_| unreachable!())).is_err());
    let f = reg
        .build(&FlaggingConfig {
            plugin: "fixed".into(),
            ..FlaggingConfig::default()
        })
        .unwrap();
    let flag = f.flag(&FlagInput::new(&tx(TxKind::RepairAck, "JP-13"), 1));
    assert_eq!(flag.kind, TxKind::RepairAck);
    assert_eq!(flag.class, 1);
    assert!(flag.oversize && flag.is_urgent());
    assert_eq!(double.calls(), 1);
}

#[test]
fn direct_construction() {
    let f = DefaultFlagger::new(
        &FlaggingConfig::default(),
        Arc::new(CountryPrefixDirectory::default()),
    )
    .unwrap();
    assert_eq!(
        f.region_class(&city("JP-01"), Some(&city("JP-47"))),
        RegionClass::InterCity
    );
    assert!(
        DefaultFlagger::new(
            &FlaggingConfig {
                oversize_bytes: 0,
                ..FlaggingConfig::default()
            },
            Arc::new(CountryPrefixDirectory::default()),
        )
        .is_err()
    );
}

proptest! {
    #[test]
    fn flag_is_consistent(kind in 0u8..7, size in 0usize..100_000, same in any::<bool>()) {
        let kind = TxKind::from_u8(kind).unwrap();
        let f = default_flagger();
        let t = tx(kind, "NP-Kathmandu-Kathmandu");
        let recv = if same { city("NP-Kathmandu-Kathmandu") } else { city("NP-Kaski-Pokhara_Lekhnath") };
        let flag = f.flag(&FlagInput::new(&t, size).with_receiver_city(&recv));
        prop_assert_eq!(flag.class, kind.processing_rank());
        prop_assert_eq!(flag.oversize, size > 16 * 1024);
        prop_assert_eq!(flag.region, if same { RegionClass::Local } else { RegionClass::InterCity });
        prop_assert_eq!(flag.clone(), f.flag(&FlagInput::new(&t, size).with_receiver_city(&recv)));
    }
}

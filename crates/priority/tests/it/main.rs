//! Integration tests of priority: stability under churn, distinct holders over failure
//! domains, score bounds, the urgent profile (proptest where it fits).
#![allow(clippy::unwrap_used)]

use dag_core::{NodeId, NodeInfo, Role};
use priority::{
    Candidate, FirstN, GeoPoint, HolderSelector, NodeStats, PriorityConfig, Profile, SelectRequest,
    Selection, WeightedRendezvous,
};
use proptest::prelude::*;
use std::collections::HashSet;

fn node(i: u32, city: &str, zone: &str, lat: f64, lon: f64, free_gib: u64, load: f64) -> NodeInfo {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&i.to_le_bytes());
    let id = *blake3_like(&id);
    NodeInfo {
        node_id: NodeId::from_bytes(id),
        role: Role::Light,
        grpc_addr: format!("127.0.0.1:{}", 10_000 + i),
        city_id: city.to_string(),
        zone: zone.to_string(),
        lat,
        lon,
        free_capacity: free_gib << 30,
        load,
        version: "0.1.0".into(),
        session_start_ms: 0,
    }
}

/// Spreads small integers over 32 bytes (ids in the network are BLAKE3 outputs).
fn blake3_like(b: &[u8; 32]) -> &'static [u8; 32] {
    let h = dag_core::Hash32::digest(b);
    Box::leak(Box::new(h.0))
}

fn key(i: u32) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    dag_core::Hash32::digest(&k).0
}

fn stats(latency_ms: f64) -> NodeStats {
    NodeStats {
        latency_ms: Some(latency_ms),
        logins_per_hour: 1.0,
    }
}

const TOKYO: GeoPoint = GeoPoint {
    lat: 35.6895,
    lon: 139.69171,
};
const NOW: u64 = 7_200_000;

fn req(k: u32, count: usize) -> SelectRequest {
    SelectRequest {
        key: key(k),
        origin: TOKYO,
        now_ms: NOW,
        profile: Profile::Normal,
        count,
    }
}

fn ids(sel: &Selection) -> HashSet<NodeId> {
    sel.holders.iter().map(|h| h.node_id).collect()
}

/// Removes `removed` and counts (moved assignments, assignments the removed node held).
fn churn(
    nodes: &[NodeInfo],
    st: &[NodeStats],
    removed: usize,
    keys: u32,
    count: usize,
) -> (usize, usize) {
    let sel = WeightedRendezvous::default();
    let all: Vec<Candidate> = nodes
        .iter()
        .zip(st)
        .map(|(n, s)| Candidate::new(n, *s))
        .collect();
    let fewer: Vec<Candidate> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != removed)
        .map(|(_, c)| *c)
        .collect();
    let gone = nodes[removed].node_id;
    let (mut moved, mut held) = (0, 0);
    for k in 0..keys {
        let before = ids(&sel.select(&req(k, count), &all));
        let after = ids(&sel.select(&req(k, count), &fewer));
        moved += before.difference(&after).count();
        held += usize::from(before.contains(&gone));
    }
    (moved, held)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Equal nodes, each its own failure domain: removing one of n moves ≤ 1/n + 0.04 of the
    /// assignments, and exactly the ones it held.
    #[test]
    fn removing_one_of_n_moves_about_one_nth(n in 4usize..40, count in 1usize..5, removed in 0usize..40) {
        let count = count.min(n - 1);
        let removed = removed % n;
        let nodes: Vec<NodeInfo> = (0..n as u32)
            .map(|i| node(i, "JP-13", &format!("z{i}"), 35.68, 139.69, 64, 0.2))
            .collect();
        let st = vec![stats(10.0); n];
        let keys = 1000;
        let (moved, held) = churn(&nodes, &st, removed, keys, count);
        prop_assert_eq!(moved, held, "only the removed node's assignments move");
        let frac = moved as f64 / (f64::from(keys) * count as f64);
        prop_assert!(frac <= 1.0 / n as f64 + 0.04, "moved {frac:.3} of assignments, n = {n}");
    }

    /// Mixed scores and shared failure domains: removal still moves exactly the removed
    /// node's assignments (one replacement per affected key), never more.
    #[test]
    fn churn_is_minimal_with_domains_and_weights(
        n in 4usize..24,
        count in 1usize..7,
        removed in 0usize..24,
        seed in any::<u64>(),
    ) {
        let removed = removed % n;
        let mut s = seed;
        let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (s >> 33) as u32 };
        let nodes: Vec<NodeInfo> = (0..n as u32)
            .map(|i| {
                let city = ["JP-13", "JP-14", "JP-11"][(next() % 3) as usize];
                let zone = format!("z{}", next() % 3);
                node(i, city, &zone, 35.0 + f64::from(next() % 100) / 50.0, 139.0, u64::from(next() % 128), f64::from(next() % 100) / 100.0)
            })
            .collect();
        let st: Vec<NodeStats> = (0..n).map(|_| stats(f64::from(next() % 600))).collect();
        let (moved, held) = churn(&nodes, &st, removed, 300, count);
        prop_assert_eq!(moved, held);
    }

    /// Holders are distinct nodes; they cover min(count, domains) distinct failure domains.
    #[test]
    fn holders_distinct_and_spread(
        n in 1usize..30,
        count in 1usize..10,
        cities in 1u32..4,
        zones in 1u32..4,
        k in any::<u32>(),
        dup in any::<bool>(),
    ) {
        let mut nodes: Vec<NodeInfo> = (0..n as u32)
            .map(|i| node(i, &format!("JP-{}", 10 + i % cities), &format!("z{}", (i / cities) % zones), 35.7, 139.7, 64, 0.5))
            .collect();
        if dup {
            nodes.push(nodes[0].clone()); // the same node listed twice
        }
        let st = vec![stats(20.0); nodes.len()];
        let cands: Vec<Candidate> = nodes.iter().zip(&st).map(|(n, s)| Candidate::new(n, *s)).collect();
        let sel = WeightedRendezvous::default().select(&req(k, count), &cands);
        let distinct_nodes = n;
        let domains: HashSet<(String, String)> = nodes.iter().map(|n| (n.city_id.clone(), n.zone.clone())).collect();
        prop_assert_eq!(ids(&sel).len(), sel.holders.len(), "distinct holders");
        prop_assert_eq!(sel.holders.len(), count.min(distinct_nodes));
        prop_assert_eq!(sel.shortfall, count.saturating_sub(distinct_nodes));
        prop_assert_eq!(sel.distinct_domains, count.min(domains.len()));
        let used: HashSet<(String, String)> = sel.holders.iter()
            .map(|h| (nodes[h.index].city_id.clone(), nodes[h.index].zone.clone()))
            .collect();
        prop_assert_eq!(used.len(), count.min(domains.len()), "domains actually covered");
        prop_assert!(sel.holders.iter().all(|h| nodes[h.index].node_id == h.node_id));
    }

    /// Every score lies in 0..=9 (value in [0, 1]) whatever a node publishes.
    #[test]
    fn every_score_in_0_to_9(
        lat in -90.0f64..90.0, lon in -180.0f64..180.0,
        olat in -90.0f64..90.0, olon in -180.0f64..180.0,
        free in any::<u64>(), load in prop_oneof![any::<f64>(), -2.0f64..3.0],
        start in any::<u64>(), now in any::<u64>(),
        latency in prop_oneof![Just(None), any::<f64>().prop_map(Some), (0.0f64..2000.0).prop_map(Some)],
        logins in prop_oneof![any::<f64>(), 0.0f64..200.0],
        urgent in any::<bool>(),
    ) {
        let mut n = node(1, "JP-13", "", lat, lon, 0, 0.0);
        n.free_capacity = free;
        n.load = load;
        n.session_start_ms = start;
        let c = Candidate::new(&n, NodeStats { latency_ms: latency, logins_per_hour: logins });
        let s = PriorityConfig::default().score(GeoPoint { lat: olat, lon: olon }, &c, now, Profile::from_urgent(urgent));
        prop_assert!(s.level <= 9);
        prop_assert!((0.0..=1.0).contains(&s.value), "{}", s.value);
    }
}

/// Reference: rank every node, then the two greedy passes, written plainly.
fn reference(req: &SelectRequest, cands: &[Candidate]) -> Vec<NodeId> {
    let cfg = PriorityConfig::default();
    let mut ranked: Vec<(f64, NodeId, usize)> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let w = cfg.weight(cfg.score(req.origin, c, req.now_ms, req.profile));
            let h = priority::rendezvous_hash(&req.key, &c.info.node_id);
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            (w / -u.ln(), c.info.node_id, i)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut out: Vec<NodeId> = Vec::new();
    let mut domains: Vec<(String, String)> = Vec::new();
    for (_, id, i) in &ranked {
        let d = (cands[*i].info.city_id.clone(), cands[*i].info.zone.clone());
        if out.len() < req.count && !out.contains(id) && !domains.contains(&d) {
            out.push(*id);
            domains.push(d);
        }
    }
    for (_, id, _) in &ranked {
        if out.len() < req.count && !out.contains(id) {
            out.push(*id);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The partial ranking shortcut gives exactly the full ranking's answer.
    #[test]
    fn matches_reference(n in 0usize..120, count in 0usize..12, zones in 1u32..12, k in any::<u32>(), urgent in any::<bool>()) {
        let nodes: Vec<NodeInfo> = (0..n as u32)
            .map(|i| node(i, "JP-13", &format!("z{}", i % zones), 35.0 + f64::from(i % 7) * 0.1, 139.0, u64::from(i % 50), f64::from(i % 10) / 10.0))
            .collect();
        let st: Vec<NodeStats> = (0..n).map(|i| stats((i % 13) as f64 * 30.0)).collect();
        let cands: Vec<Candidate> = nodes.iter().zip(&st).map(|(n, s)| Candidate::new(n, *s)).collect();
        let r = SelectRequest { profile: Profile::from_urgent(urgent), ..req(k, count) };
        let got = WeightedRendezvous::default().select(&r, &cands).node_ids();
        prop_assert_eq!(got, reference(&r, &cands));
    }
}

#[test]
fn ideal_node_scores_9_and_worst_0() {
    let cfg = PriorityConfig::default();
    let best = node(1, "JP-13", "", TOKYO.lat, TOKYO.lon, 1 << 20, 0.0);
    let c = Candidate::new(
        &best,
        NodeStats {
            latency_ms: Some(0.0),
            logins_per_hour: 0.0,
        },
    );
    assert_eq!(cfg.score(TOKYO, &c, 3_600_000, Profile::Normal).level, 9);
    let mut worst = node(2, "JP-13", "", -TOKYO.lat, TOKYO.lon - 180.0, 0, 1.0);
    worst.session_start_ms = 3_600_000;
    let c = Candidate::new(
        &worst,
        NodeStats {
            latency_ms: Some(900.0),
            logins_per_hour: 100.0,
        },
    );
    assert_eq!(cfg.score(TOKYO, &c, 3_600_000, Profile::Urgent).level, 0);
}

#[test]
fn urgent_profile_shifts_choice_to_low_latency() {
    // Half the nodes are fast but modest, half slow but big and long-lived.
    let nodes: Vec<NodeInfo> = (0..20u32)
        .map(|i| {
            let mut n = node(
                i,
                "JP-13",
                &format!("z{i}"),
                35.68,
                139.69,
                if i < 10 { 4 } else { 64 },
                0.3,
            );
            n.session_start_ms = if i < 10 { NOW - 600_000 } else { 0 };
            n
        })
        .collect();
    let st: Vec<NodeStats> = (0..20)
        .map(|i| stats(if i < 10 { 5.0 } else { 450.0 }))
        .collect();
    let cands: Vec<Candidate> = nodes
        .iter()
        .zip(&st)
        .map(|(n, s)| Candidate::new(n, *s))
        .collect();
    let sel = WeightedRendezvous::default();
    let fast_share = |profile| {
        let mut fast = 0;
        for k in 0..500 {
            let r = SelectRequest {
                profile,
                ..req(k, 3)
            };
            fast += sel
                .select(&r, &cands)
                .holders
                .iter()
                .filter(|h| h.index < 10)
                .count();
        }
        fast as f64 / 1500.0
    };
    let (normal, urgent) = (fast_share(Profile::Normal), fast_share(Profile::Urgent));
    assert!(
        urgent > normal + 0.15,
        "fast nodes: normal {normal:.2}, urgent {urgent:.2}"
    );
    assert!(urgent > 0.6, "{urgent}");
}

#[test]
fn higher_score_holds_more() {
    let mut nodes: Vec<NodeInfo> = (0..10u32)
        .map(|i| node(i, "JP-13", &format!("z{i}"), 35.68, 139.69, 64, 0.1))
        .collect();
    nodes[0].load = 1.0;
    nodes[0].free_capacity = 0;
    let st = vec![stats(10.0); 10];
    let cands: Vec<Candidate> = nodes
        .iter()
        .zip(&st)
        .map(|(n, s)| Candidate::new(n, *s))
        .collect();
    let sel = WeightedRendezvous::default();
    let mut counts = [0u32; 10];
    for k in 0..2000 {
        for h in sel.select(&req(k, 1), &cands).holders {
            counts[h.index] += 1;
        }
    }
    let others = counts[1..].iter().sum::<u32>() as f64 / 9.0;
    assert!(f64::from(counts[0]) < others * 0.8, "{counts:?}");
}

#[test]
fn no_candidates_and_test_double() {
    let sel = WeightedRendezvous::default().select(&req(1, 3), &[]);
    assert!(sel.holders.is_empty());
    assert_eq!(sel.shortfall, 3);

    let nodes: Vec<NodeInfo> = (0..5u32)
        .map(|i| node(i, "JP-13", "a", 35.6, 139.6, 8, 0.1))
        .collect();
    let cands: Vec<Candidate> = nodes
        .iter()
        .map(|n| Candidate::new(n, NodeStats::default()))
        .collect();
    let s = FirstN.select(&req(1, 3), &cands);
    assert_eq!(
        s.holders.iter().map(|h| h.index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(s.distinct_domains, 1);
}

#[test]
fn config_from_toml() {
    let cfg: PriorityConfig = toml::from_str(
        r#"
        latency_ref_ms = 250.0
        [urgent]
        distance = 0.1
        capacity = 0.0
        load = 0.1
        uptime = 0.0
        latency = 0.8
        login_rate = 0.0
        "#,
    )
    .unwrap();
    assert_eq!(cfg.latency_ref_ms, 250.0);
    assert_eq!(cfg.normal, PriorityConfig::default().normal);
    assert!(WeightedRendezvous::new(cfg).is_ok());
    let bad = PriorityConfig {
        latency_ref_ms: 0.0,
        ..PriorityConfig::default()
    };
    assert!(WeightedRendezvous::new(bad).is_err());
}

#[test]
fn an_event_multiplier_scales_a_nodes_placement_weight() {
    let nodes: Vec<NodeInfo> = (0..10)
        .map(|i| node(i, "JP-13", &format!("z{i}"), 35.68, 139.69, 64, 0.1))
        .collect();
    let sel = WeightedRendezvous::default();
    let first_share = |boost: f64| {
        let cands: Vec<Candidate> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let c = Candidate::new(n, stats(20.0));
                if i == 3 { c.with_multiplier(boost) } else { c }
            })
            .collect();
        (0..2_000)
            .filter(|&k| sel.select(&req(k, 6), &cands).holders[0].node_id == nodes[3].node_id)
            .count()
    };
    let plain = first_share(1.0);
    let festival = first_share(20.0);
    let disaster = first_share(0.05);
    // Equal weights: about 1 in 10 first places; ×20: about 20 / 29; ×0.05: about 1 in 180.
    assert!((120..300).contains(&plain), "{plain}");
    assert!(festival > 1_200, "{festival}");
    assert!(disaster < 60, "{disaster}");
    // An unusable multiplier counts as none.
    assert_eq!(first_share(f64::NAN), plain);
    assert_eq!(first_share(-2.0), plain);
}

//! The deploy kit's Grafana dashboards: each file is JSON of the Grafana dashboard shape
//! (uid, title, schemaVersion, panels with ids, gridPos and PromQL targets), and every
//! metric a panel queries is one the code exports (the node's metric catalogue, with HELP
//! text, or a name the gateway's `/metrics` renders). The provisioning and Prometheus files
//! name the dashboards' folder and the datasource uid the panels use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("deploy/grafana/dashboards");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Metric names in a PromQL expression: identifiers of our prefixes, with a histogram's
/// `_bucket` / `_sum` / `_count` suffix taken off.
fn metrics_in(expr: &str) -> Vec<String> {
    const PREFIXES: &[&str] = &[
        "citychain_",
        "presence_",
        "nodelist_",
        "gossip_",
        "continent_",
        "global_",
        "federation_",
        "city_",
    ];
    let mut out = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if PREFIXES.iter().any(|p| word.starts_with(p)) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(&word);
            out.push(base.to_string());
        }
        word.clear();
    }
    out
}

/// What the code exports: the catalogue, and the names the gateway renders by hand.
fn exported() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = node::metrics_catalog::METRICS
        .iter()
        .map(|m| m.name.to_string())
        .collect();
    let gateway = std::fs::read_to_string(root().join("crates/gateway/src/server.rs")).unwrap();
    for (i, _) in gateway.match_indices("citychain_gateway_") {
        let name: String = gateway[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

#[test]
fn dashboards_have_the_grafana_shape() {
    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "admission.json",
        "storage.json",
        "consensus.json",
        "presence.json",
        "gateway.json",
    ] {
        assert!(names.contains(&want), "missing {want}: {names:?}");
    }
    let mut uids = BTreeSet::new();
    for (file, d) in &all {
        let uid = d["uid"].as_str().unwrap_or_else(|| panic!("{file}: uid"));
        assert!(
            !uid.is_empty() && uid.len() <= 40,
            "{file}: uid of 1..40 chars"
        );
        assert!(uids.insert(uid.to_string()), "{file}: uid {uid} used twice");
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{file}");
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 30),
            "{file}"
        );
        let panels = d["panels"].as_array().unwrap_or_else(|| panic!("{file}"));
        assert!(!panels.is_empty(), "{file}: no panels");
        let mut ids = BTreeSet::new();
        for p in panels {
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: panel id"));
            assert!(ids.insert(id), "{file}: panel id {id} twice");
            assert!(
                ["timeseries", "stat", "gauge", "bargauge", "table"]
                    .contains(&p["type"].as_str().unwrap_or("")),
                "{file}: panel {id} type"
            );
            assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
            for k in ["h", "w", "x", "y"] {
                assert!(
                    p["gridPos"][k].as_u64().is_some(),
                    "{file}: panel {id} gridPos.{k}"
                );
            }
            assert!(
                p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24
            );
            assert_eq!(p["datasource"]["uid"], "prometheus", "{file}: panel {id}");
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{file}"));
            assert!(!targets.is_empty(), "{file}: panel {id} has no query");
            for t in targets {
                assert!(t["refId"].as_str().is_some(), "{file}: panel {id} refId");
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{file}: expr"));
                assert!(
                    !metrics_in(expr).is_empty(),
                    "{file}: {expr} names no metric"
                );
                assert_eq!(
                    expr.matches('(').count(),
                    expr.matches(')').count(),
                    "{file}: unbalanced {expr}"
                );
            }
        }
    }
}

#[test]
fn dashboards_query_only_exported_metrics() {
    let exported = exported();
    let histograms: BTreeSet<&str> = node::metrics_catalog::METRICS
        .iter()
        .filter(|m| m.kind == node::metrics_catalog::MetricKind::Histogram)
        .map(|m| m.name)
        .collect();
    let mut queried = 0;
    for (file, d) in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                for m in metrics_in(expr) {
                    queried += 1;
                    assert!(
                        exported.contains(&m),
                        "{file}: panel {:?} queries {m}, which no code exports",
                        p["title"]
                    );
                    // A histogram is queried through its buckets or sum/count, never bare.
                    if histograms.contains(m.as_str()) {
                        assert!(
                            expr.contains(&format!("{m}_bucket"))
                                || expr.contains(&format!("{m}_sum"))
                                || expr.contains(&format!("{m}_count")),
                            "{file}: {expr}"
                        );
                    }
                }
            }
        }
    }
    assert!(queried > 40, "only {queried} metric references");
}

#[test]
fn the_check_catches_a_metric_no_code_exports() {
    assert_eq!(
        metrics_in(
            "histogram_quantile(0.99, sum by (le) (rate(citychain_hold_seconds_bucket[5m])))"
        ),
        vec!["citychain_hold_seconds"]
    );
    let exported = exported();
    assert!(exported.contains("citychain_gateway_requests_total"));
    assert!(!exported.contains("citychain_made_up_total"));
    for m in metrics_in("rate(citychain_made_up_total[1m])") {
        assert!(!exported.contains(&m));
    }
}

#[test]
fn provisioning_points_at_the_dashboards_and_the_datasource() {
    let ds = std::fs::read_to_string(
        root().join("deploy/grafana/provisioning/datasources/prometheus.yaml"),
    )
    .unwrap();
    assert!(ds.contains("uid: prometheus") && ds.contains("type: prometheus"));
    let prov = std::fs::read_to_string(
        root().join("deploy/grafana/provisioning/dashboards/citychain.yaml"),
    )
    .unwrap();
    assert!(prov.contains("path: /var/lib/grafana/dashboards/citychain"));
    let compose = std::fs::read_to_string(root().join("deploy/compose.yaml")).unwrap();
    assert!(compose.contains("./grafana/dashboards:/var/lib/grafana/dashboards/citychain"));
    // Every scrape port in the Prometheus configs is a role's documented metrics port.
    let prom = std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml")).unwrap();
    for port in [":9700", ":9710", ":9600", ":9650", ":7780", ":8780"] {
        assert!(prom.contains(port), "prometheus.yml lacks {port}");
    }
}

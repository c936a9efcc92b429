//! Scoring one candidate: six factors, each normalised to [0, 1] on its own (never relative to
//! the other candidates, so adding or removing a node never changes another node's score), a
//! weighted mean, and its 0–9 level.

use crate::{Error, Result};
use dag_core::NodeInfo;
use serde::{Deserialize, Serialize};

/// A point on Earth, degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

/// What the city node observed about a node (not published by the node itself).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeStats {
    /// Round-trip latency in ms, if measured.
    pub latency_ms: Option<f64>,
    /// Logins per hour (re-logins after drops; a flapping node logs in often).
    pub logins_per_hour: f64,
}

/// A node that could hold data: what it publishes and what was observed about it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<'a> {
    /// Published node information (node-list / presence).
    pub info: &'a NodeInfo,
    /// Observed statistics.
    pub stats: NodeStats,
    /// Factor on its placement weight (event multipliers: a festival or a disaster where
    /// the node is); 1.0 for none. Not finite or not above 0 counts as 1.0.
    pub multiplier: f64,
}

impl<'a> Candidate<'a> {
    /// A candidate (multiplier 1.0).
    pub fn new(info: &'a NodeInfo, stats: NodeStats) -> Self {
        Candidate {
            info,
            stats,
            multiplier: 1.0,
        }
    }

    /// The same candidate with its placement weight scaled by `multiplier`.
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The multiplier in force (1.0 when the configured one is unusable).
    pub fn effective_multiplier(&self) -> f64 {
        if self.multiplier.is_finite() && self.multiplier > 0.0 {
            self.multiplier
        } else {
            1.0
        }
    }
}

/// Which weights apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Ordinary txs.
    #[default]
    Normal,
    /// Repair and ack paths: latency first.
    Urgent,
}

impl Profile {
    /// `Urgent` when `urgent` is true (e.g. `Profile::from_urgent(flag.is_urgent())`).
    pub fn from_urgent(urgent: bool) -> Self {
        if urgent {
            Profile::Urgent
        } else {
            Profile::Normal
        }
    }
}

/// Relative weights of the six factors (non-negative; they need not sum to 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Distance from the origin.
    pub distance: f64,
    /// Free capacity.
    pub capacity: f64,
    /// Load (less is better).
    pub load: f64,
    /// Session length / uptime.
    pub uptime: f64,
    /// Latency (less is better).
    pub latency: f64,
    /// Login rate (less is better).
    pub login_rate: f64,
}

impl Weights {
    /// Default weights for ordinary txs: distance 0.25, capacity 0.20, load 0.15,
    /// uptime 0.15, latency 0.15, login rate 0.10.
    pub const NORMAL: Weights = Weights {
        distance: 0.25,
        capacity: 0.20,
        load: 0.15,
        uptime: 0.15,
        latency: 0.15,
        login_rate: 0.10,
    };
    /// Default weights for urgent txs, latency first: latency 0.45, distance 0.20,
    /// load 0.15, uptime 0.10, capacity 0.05, login rate 0.05.
    pub const URGENT: Weights = Weights {
        distance: 0.20,
        capacity: 0.05,
        load: 0.15,
        uptime: 0.10,
        latency: 0.45,
        login_rate: 0.05,
    };

    fn as_array(&self) -> [f64; 6] {
        [
            self.distance,
            self.capacity,
            self.load,
            self.uptime,
            self.latency,
            self.login_rate,
        ]
    }
}

/// Scoring configuration. `Default` holds the documented values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriorityConfig {
    /// Weights for [`Profile::Normal`].
    pub normal: Weights,
    /// Weights for [`Profile::Urgent`].
    pub urgent: Weights,
    /// Distance at which the distance factor reaches 0. Default 20 000 km.
    pub distance_ref_km: f64,
    /// Free capacity at which the capacity factor reaches 1. Default 64 GiB.
    pub capacity_ref_bytes: u64,
    /// Session length at which the uptime factor reaches 1. Default 3600 s.
    pub uptime_ref_secs: f64,
    /// Latency at which the latency factor reaches 0. Default 500 ms.
    pub latency_ref_ms: f64,
    /// Latency factor for a node never measured. Default 0.5.
    pub unknown_latency: f64,
    /// Login rate at which the login factor reaches 0. Default 60 per hour.
    pub login_rate_ref_per_hour: f64,
    /// The rendezvous weight is `max(min_weight, score ^ weight_exponent)`: with 3, a node
    /// scoring 0.8 gets about twice the share of one scoring 0.63, so the score decides
    /// more than a plain proportion would. Default 3.
    pub weight_exponent: f64,
    /// Least rendezvous weight, so every node keeps a small chance. Default 0.001.
    pub min_weight: f64,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        PriorityConfig {
            normal: Weights::NORMAL,
            urgent: Weights::URGENT,
            distance_ref_km: 20_000.0,
            capacity_ref_bytes: 64 << 30,
            uptime_ref_secs: 3600.0,
            latency_ref_ms: 500.0,
            unknown_latency: 0.5,
            login_rate_ref_per_hour: 60.0,
            weight_exponent: 3.0,
            min_weight: 0.001,
        }
    }
}

impl PriorityConfig {
    /// Checks every value; [`crate::WeightedRendezvous::new`] calls it.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: String, reason| Err(Error::InvalidConfig { field, reason });
        const NAMES: [&str; 6] = [
            "distance",
            "capacity",
            "load",
            "uptime",
            "latency",
            "login_rate",
        ];
        for (profile, w) in [("normal", &self.normal), ("urgent", &self.urgent)] {
            let arr = w.as_array();
            for (name, v) in NAMES.iter().zip(arr) {
                if !v.is_finite() || v < 0.0 {
                    return bad(
                        format!("{profile}.{name}"),
                        "weight must be a finite number ≥ 0",
                    );
                }
            }
            if arr.iter().sum::<f64>() <= 0.0 {
                return bad(profile.to_string(), "at least one weight must be > 0");
            }
        }
        for (name, v) in [
            ("distance_ref_km", self.distance_ref_km),
            ("uptime_ref_secs", self.uptime_ref_secs),
            ("latency_ref_ms", self.latency_ref_ms),
            ("login_rate_ref_per_hour", self.login_rate_ref_per_hour),
            ("weight_exponent", self.weight_exponent),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return bad(name.to_string(), "must be a finite number > 0");
            }
        }
        if self.capacity_ref_bytes == 0 {
            return bad("capacity_ref_bytes".into(), "must be > 0");
        }
        if !(0.0..=1.0).contains(&self.unknown_latency) {
            return bad("unknown_latency".into(), "must be within [0, 1]");
        }
        if !(self.min_weight > 0.0 && self.min_weight <= 1.0) {
            return bad("min_weight".into(), "must be within (0, 1]");
        }
        Ok(())
    }

    /// The weights of a profile.
    pub fn weights(&self, profile: Profile) -> &Weights {
        match profile {
            Profile::Normal => &self.normal,
            Profile::Urgent => &self.urgent,
        }
    }

    /// The rendezvous weight of a score: `max(min_weight, value ^ weight_exponent)`.
    pub fn weight(&self, score: Score) -> f64 {
        score.value.powf(self.weight_exponent).max(self.min_weight)
    }

    /// The six normalised factors of a candidate, each in [0, 1].
    pub fn factors(&self, origin: GeoPoint, c: &Candidate<'_>, now_ms: u64) -> Factors {
        let info = c.info;
        let km = haversine_km(origin.lat, origin.lon, info.lat, info.lon);
        let session_secs = now_ms.saturating_sub(info.session_start_ms) as f64 / 1000.0;
        let latency = match c.stats.latency_ms {
            Some(ms) if ms.is_finite() => clamp01(1.0 - ms.max(0.0) / self.latency_ref_ms),
            _ => self.unknown_latency,
        };
        Factors {
            distance: clamp01(1.0 - km / self.distance_ref_km),
            capacity: clamp01(info.free_capacity as f64 / self.capacity_ref_bytes as f64),
            load: clamp01(1.0 - info.load),
            uptime: clamp01(session_secs / self.uptime_ref_secs),
            latency,
            login_rate: clamp01(1.0 - c.stats.logins_per_hour / self.login_rate_ref_per_hour),
        }
    }

    /// The score of a candidate under a profile.
    pub fn score(
        &self,
        origin: GeoPoint,
        c: &Candidate<'_>,
        now_ms: u64,
        profile: Profile,
    ) -> Score {
        let f = self.factors(origin, c, now_ms).as_array();
        let w = self.weights(profile).as_array();
        let total: f64 = w.iter().sum();
        let value = if total > 0.0 {
            clamp01(f.iter().zip(w).map(|(f, w)| f * w).sum::<f64>() / total)
        } else {
            0.0
        };
        Score {
            value,
            level: (value * 9.0).round().clamp(0.0, 9.0) as u8,
        }
    }
}

/// NaN → 0, then clamp into [0, 1].
fn clamp01(v: f64) -> f64 {
    if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) }
}

/// The six normalised factors, each in [0, 1] (1 is best).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factors {
    /// `max(0, 1 − km / distance_ref_km)`.
    pub distance: f64,
    /// `min(1, free / capacity_ref_bytes)`.
    pub capacity: f64,
    /// `1 − load`.
    pub load: f64,
    /// `min(1, session secs / uptime_ref_secs)`.
    pub uptime: f64,
    /// `max(0, 1 − ms / latency_ref_ms)`, or `unknown_latency`.
    pub latency: f64,
    /// `max(0, 1 − logins per hour / login_rate_ref_per_hour)`.
    pub login_rate: f64,
}

impl Factors {
    fn as_array(&self) -> [f64; 6] {
        [
            self.distance,
            self.capacity,
            self.load,
            self.uptime,
            self.latency,
            self.login_rate,
        ]
    }
}

/// A candidate's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Weighted mean of the factors, in [0, 1].
    pub value: f64,
    /// `round(value × 9)`, in 0..=9.
    pub level: u8,
}

/// Great-circle distance in km: pop-geo's (geo's haversine), the one implementation in the
/// workspace.
pub use pop_geo::haversine_km;

#[cfg(test)]
mod tests {
    use super::*;
    use dag_core::{NodeId, Role};

    fn node(lat: f64, lon: f64, free: u64, load: f64, session_start_ms: u64) -> NodeInfo {
        NodeInfo {
            node_id: NodeId::from_bytes([1; 32]),
            role: Role::Light,
            grpc_addr: "127.0.0.1:1".into(),
            city_id: "JP-13".into(),
            zone: String::new(),
            lat,
            lon,
            free_capacity: free,
            load,
            version: "0".into(),
            session_start_ms,
        }
    }

    #[test]
    fn factors_follow_the_formulas() {
        let cfg = PriorityConfig::default();
        let n = node(34.69379, 135.50107, 32 << 30, 0.25, 0);
        let c = Candidate::new(
            &n,
            NodeStats {
                latency_ms: Some(100.0),
                logins_per_hour: 6.0,
            },
        );
        let tokyo = GeoPoint {
            lat: 35.6895,
            lon: 139.69171,
        };
        let f = cfg.factors(tokyo, &c, 1_800_000);
        let km = haversine_km(35.6895, 139.69171, 34.69379, 135.50107);
        assert!((km - 397.0).abs() < 5.0);
        assert!((f.distance - (1.0 - km / 20_000.0)).abs() < 1e-12);
        assert_eq!(f.capacity, 0.5);
        assert_eq!(f.load, 0.75);
        assert_eq!(f.uptime, 0.5);
        assert!((f.latency - 0.8).abs() < 1e-12);
        assert!((f.login_rate - 0.9).abs() < 1e-12);
        // Antipodes: distance factor 0.
        let far = cfg.factors(
            GeoPoint {
                lat: -34.69,
                lon: -44.5,
            },
            &c,
            0,
        );
        assert_eq!(far.distance, 0.0);
    }

    #[test]
    fn urgent_prefers_low_latency() {
        let cfg = PriorityConfig::default();
        let o = GeoPoint {
            lat: 35.0,
            lon: 139.0,
        };
        // Fast but small and young vs slow but big and old.
        let fast = node(35.0, 139.0, 1 << 30, 0.2, 3_500_000);
        let slow = node(35.0, 139.0, 64 << 30, 0.2, 0);
        let fc = Candidate::new(
            &fast,
            NodeStats {
                latency_ms: Some(5.0),
                logins_per_hour: 0.0,
            },
        );
        let sc = Candidate::new(
            &slow,
            NodeStats {
                latency_ms: Some(400.0),
                logins_per_hour: 0.0,
            },
        );
        let now = 3_600_000;
        assert!(
            cfg.score(o, &fc, now, Profile::Normal).value
                < cfg.score(o, &sc, now, Profile::Normal).value
        );
        assert!(
            cfg.score(o, &fc, now, Profile::Urgent).value
                > cfg.score(o, &sc, now, Profile::Urgent).value
        );
    }

    #[test]
    fn rejects_bad_config() {
        let mut cfg = PriorityConfig::default();
        cfg.urgent.latency = -1.0;
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "priority config: urgent.latency: weight must be a finite number ≥ 0"
        );
        let cfg = PriorityConfig {
            normal: Weights {
                distance: 0.0,
                capacity: 0.0,
                load: 0.0,
                uptime: 0.0,
                latency: 0.0,
                login_rate: 0.0,
            },
            ..PriorityConfig::default()
        };
        assert!(cfg.validate().is_err());
        assert!(PriorityConfig::default().validate().is_ok());
    }
}

//! The election score and the per-epoch reward, in fixed-point integers.
//!
//! ```text
//! score = access_rate × 0.2 + memory_GB × 0.0005 + harmony × 0.2 + bandwidth × 0.15
//!       + uptime × 0.15 + (1 − error_rate) × 0.1 + min(stake / 100, 2)
//! reward = score × rate × 10        (rate: full node 1.5, light node 1.0; whole tokens)
//! ```
//!
//! Fractions (access rate, harmony, bandwidth, uptime, error rate) are parts per million
//! (`0..=1_000_000`), memory is whole GB, stake is in base units. A [`Score`] counts
//! 10⁻¹⁰ points: every weight × every ppm input is then an exact integer, and only the stake
//! term (stake / 100 tokens) is floored. Rewards are floored to whole base units.

use crate::{DposConfig, Error, NodeKind, Result};
use dag_core::{DecodeError, Reader, Writer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One point of score in [`Score`] units (10¹⁰).
pub const SCORE_SCALE: u128 = 10_000_000_000;
/// A fraction of 1 in parts per million.
pub const PPM: u32 = 1_000_000;

/// A score in units of 10⁻¹⁰ points (so `Score(SCORE_SCALE)` is 1.0).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Score(pub u128);

impl fmt::Debug for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / SCORE_SCALE;
        let frac = self.0 % SCORE_SCALE;
        write!(f, "Score({whole}.{frac:010})")
    }
}

/// What a node reports about itself; the non-stake inputs of the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// Access (availability) rate, ppm.
    pub access_rate_ppm: u32,
    /// Memory lent, whole GB.
    pub memory_gb: u32,
    /// Harmony (contribution) rating, ppm.
    pub harmony_ppm: u32,
    /// Bandwidth rating, ppm.
    pub bandwidth_ppm: u32,
    /// Uptime, ppm.
    pub uptime_ppm: u32,
    /// Error rate, ppm.
    pub error_rate_ppm: u32,
}

impl Metrics {
    /// Checks every ppm field is at most 1 000 000.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("access_rate_ppm", self.access_rate_ppm),
            ("harmony_ppm", self.harmony_ppm),
            ("bandwidth_ppm", self.bandwidth_ppm),
            ("uptime_ppm", self.uptime_ppm),
            ("error_rate_ppm", self.error_rate_ppm),
        ] {
            if v > PPM {
                return Err(Error::InvalidMetric {
                    field,
                    value: u64::from(v),
                    max: u64::from(PPM),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u32(self.access_rate_ppm)
            .u32(self.memory_gb)
            .u32(self.harmony_ppm)
            .u32(self.bandwidth_ppm)
            .u32(self.uptime_ppm)
            .u32(self.error_rate_ppm);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> std::result::Result<Self, DecodeError> {
        Ok(Metrics {
            access_rate_ppm: r.u32("access_rate_ppm")?,
            memory_gb: r.u32("memory_gb")?,
            harmony_ppm: r.u32("harmony_ppm")?,
            bandwidth_ppm: r.u32("bandwidth_ppm")?,
            uptime_ppm: r.u32("uptime_ppm")?,
            error_rate_ppm: r.u32("error_rate_ppm")?,
        })
    }
}

/// The election score of a node with `metrics` and `stake` base units behind it.
/// Fractions above 1 (invalid metrics) are clamped to 1 so the function is total.
pub fn score(metrics: &Metrics, stake: u64, units_per_token: u64) -> Score {
    let ppm = |v: u32| u128::from(v.min(PPM));
    // weight × 10¹⁰ / 10⁶ per ppm: 0.2 → 2000, 0.15 → 1500, 0.1 → 1000; 0.0005 per GB → 5·10⁶.
    let linear = ppm(metrics.access_rate_ppm) * 2_000
        + u128::from(metrics.memory_gb) * 5_000_000
        + ppm(metrics.harmony_ppm) * 2_000
        + ppm(metrics.bandwidth_ppm) * 1_500
        + ppm(metrics.uptime_ppm) * 1_500
        + (u128::from(PPM) - ppm(metrics.error_rate_ppm)) * 1_000;
    // min(stake_tokens / 100, 2), stake_tokens = stake / units_per_token.
    let stake_term = (u128::from(stake) * SCORE_SCALE / (100 * u128::from(units_per_token.max(1))))
        .min(2 * SCORE_SCALE);
    Score(linear + stake_term)
}

/// The reward rate of a node kind, in tenths (full 15 = 1.5, light 10 = 1.0).
pub fn rate_tenths(kind: NodeKind, config: &DposConfig) -> u16 {
    match kind {
        NodeKind::Full => config.full_rate_tenths,
        NodeKind::Light => config.light_rate_tenths,
    }
}

/// The per-epoch reward in base units: `score × rate × multiplier` whole tokens, floored.
pub fn reward(score: Score, kind: NodeKind, config: &DposConfig) -> Result<u64> {
    let overflow = Error::Overflow { what: "reward" };
    let units = score
        .0
        .checked_mul(u128::from(rate_tenths(kind, config)))
        .and_then(|v| v.checked_mul(u128::from(config.reward_multiplier)))
        .and_then(|v| v.checked_mul(u128::from(config.units_per_token)))
        .ok_or(overflow.clone())?
        / (10 * SCORE_SCALE);
    u64::try_from(units).map_err(|_| overflow)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const T: u64 = 1_000_000; // units per token

    fn m(access: u32, mem: u32, harmony: u32, bw: u32, up: u32, err: u32) -> Metrics {
        Metrics {
            access_rate_ppm: access,
            memory_gb: mem,
            harmony_ppm: harmony,
            bandwidth_ppm: bw,
            uptime_ppm: up,
            error_rate_ppm: err,
        }
    }

    /// Score in 10⁻¹⁰ points written as a decimal string "a.bbbbbbbbbb".
    fn check(metrics: Metrics, stake_tokens: u64, expected: &str) {
        let s = score(&metrics, stake_tokens * T, T);
        assert_eq!(
            format!("{s:?}"),
            format!("Score({expected})"),
            "{metrics:?} stake {stake_tokens}"
        );
    }

    #[test]
    fn score_table() {
        // Each term alone, at the seeds' weights.
        check(m(0, 0, 0, 0, 0, PPM), 0, "0.0000000000");
        check(m(PPM, 0, 0, 0, 0, PPM), 0, "0.2000000000"); // access 1.0 × 0.2
        check(m(0, 1, 0, 0, 0, PPM), 0, "0.0005000000"); // 1 GB × 0.0005
        check(m(0, 1000, 0, 0, 0, PPM), 0, "0.5000000000"); // 1000 GB × 0.0005
        check(m(0, 0, PPM, 0, 0, PPM), 0, "0.2000000000"); // harmony × 0.2
        check(m(0, 0, 0, PPM, 0, PPM), 0, "0.1500000000"); // bandwidth × 0.15
        check(m(0, 0, 0, 0, PPM, PPM), 0, "0.1500000000"); // uptime × 0.15
        check(m(0, 0, 0, 0, 0, 0), 0, "0.1000000000"); // (1 − 0) × 0.1
        check(m(0, 0, 0, 0, 0, PPM), 50, "0.5000000000"); // 50 / 100
        check(m(0, 0, 0, 0, 0, PPM), 200, "2.0000000000"); // cap at 2
        check(m(0, 0, 0, 0, 0, PPM), 1_000_000, "2.0000000000"); // still 2
        // A mixed example: 0.9, 1000 GB, 0.8, 0.7, 0.99, 1 % errors, 150 tokens:
        // 0.18 + 0.5 + 0.16 + 0.105 + 0.1485 + 0.099 + 1.5 = 2.6925
        check(
            m(900_000, 1000, 800_000, 700_000, 990_000, 10_000),
            150,
            "2.6925000000",
        );
        // Perfect node with max stake: 0.8 + 2 = 2.8 (+ memory).
        check(m(PPM, 0, PPM, PPM, PPM, 0), 500, "2.8000000000");
        // ppm resolution: 1 ppm of access = 2·10⁻⁷.
        check(m(1, 0, 0, 0, 0, PPM), 0, "0.0000002000");
        // Stake below one token is floored in the 10⁻¹⁰ unit: 1 unit = 10⁻⁸ points.
        assert_eq!(score(&m(0, 0, 0, 0, 0, PPM), 1, T), Score(100));
    }

    #[test]
    fn reward_table() {
        let c = DposConfig::default();
        let s = score(
            &m(900_000, 1000, 800_000, 700_000, 990_000, 10_000),
            150 * T,
            T,
        );
        // 2.6925 × 1.5 × 10 = 40.3875 tokens; × 1.0 × 10 = 26.925 tokens.
        assert_eq!(reward(s, NodeKind::Full, &c).unwrap(), 40_387_500);
        assert_eq!(reward(s, NodeKind::Light, &c).unwrap(), 26_925_000);
        assert_eq!(
            reward(Score(SCORE_SCALE), NodeKind::Full, &c).unwrap(),
            15 * T
        );
        assert_eq!(
            reward(Score(SCORE_SCALE), NodeKind::Light, &c).unwrap(),
            10 * T
        );
        assert_eq!(reward(Score(0), NodeKind::Full, &c).unwrap(), 0);
        assert!(matches!(
            reward(Score(u128::MAX / 2), NodeKind::Full, &c),
            Err(Error::Overflow { .. })
        ));
    }

    #[test]
    fn metrics_validation() {
        assert!(m(PPM, u32::MAX, PPM, PPM, PPM, PPM).validate().is_ok());
        assert!(matches!(
            m(PPM + 1, 0, 0, 0, 0, 0).validate(),
            Err(Error::InvalidMetric {
                field: "access_rate_ppm",
                ..
            })
        ));
        assert!(matches!(
            m(0, 0, 0, 0, 0, PPM + 1).validate(),
            Err(Error::InvalidMetric {
                field: "error_rate_ppm",
                ..
            })
        ));
    }
}

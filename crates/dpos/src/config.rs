//! Configuration of the DPoS rules, with `Default` matching the documented numbers
//! (DOMAIN.md § DPoS and § Rewards), and the slashing levels.

use crate::{Error, Result};
use dag_core::{Reader, Writer};
use serde::{Deserialize, Serialize};

/// One day in milliseconds.
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Where a double sign happened; decides the slashed fraction and the signing domain of the
/// headers (see [`crate::SignedHeaderDigest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum SlashLevel {
    /// A city DAG batch header (the default level): 50 %.
    City = 0,
    /// A continent log header: 30 %.
    Continent = 1,
    /// A global log header: 50 %.
    Global = 2,
}

impl SlashLevel {
    /// All levels.
    pub const ALL: [SlashLevel; 3] = [SlashLevel::City, SlashLevel::Continent, SlashLevel::Global];

    /// Domain separation tag of the header signatures at this level. The city tag is
    /// `dag_core::consensus::domain::BATCH` (`b"citychain/dag-batch/v1"`), so a city batch
    /// header signature made by consensus is directly usable as evidence.
    pub const fn domain_tag(self) -> &'static [u8] {
        match self {
            SlashLevel::City => dag_core::consensus::domain::BATCH,
            SlashLevel::Continent => b"citychain/continent-header/v1",
            SlashLevel::Global => b"citychain/global-header/v1",
        }
    }

    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses the wire byte.
    pub fn from_u8(b: u8) -> std::result::Result<Self, dag_core::DecodeError> {
        match b {
            0 => Ok(SlashLevel::City),
            1 => Ok(SlashLevel::Continent),
            2 => Ok(SlashLevel::Global),
            _ => Err(dag_core::DecodeError::Invalid {
                field: "slash level",
                reason: "expected 0 (city), 1 (continent) or 2 (global)",
            }),
        }
    }
}

/// The rules' numbers. Amounts are integers in base units; fractions are basis points
/// (1/10 000) or tenths, so no decision ever touches a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DposConfig {
    /// Base units per whole token (the score's stake term `min(stake / 100, 2)` and the
    /// reward `score × rate × 10` are in whole tokens). Default 1 000 000.
    pub units_per_token: u64,
    /// How long newly bonded stake stays locked before it may be unbonded. Default 90 days.
    pub stake_lock_ms: u64,
    /// Delay between unbonding and withdrawal. Default 0 (the 90-day lock is the wait).
    pub unbonding_delay_ms: u64,
    /// Length of a representative term. Default 3 months (90 days).
    pub term_ms: u64,
    /// Representatives elected per term. Default 4: the committee's DAG consensus needs
    /// 3f + 1 members to tolerate f faulty ones (2f + 1 certify), and the seeds' 3
    /// representatives give f = 0 — one crash or one equivocator would stall or fork the
    /// city. 4 is the smallest committee that survives one fault; set 3f + 1 for more.
    pub representatives: u32,
    /// Length of a reward epoch (`epoch = now_ms / epoch_ms`). Default 1 day.
    pub epoch_ms: u64,
    /// Past epochs still claimable besides the current one. Default 1.
    pub claim_window_epochs: u64,
    /// How far in the future a receipt's time may be. Default 5 s.
    pub max_clock_skew_ms: u64,
    /// Suspicion added per reported incident. Default 20.
    pub incident_suspicion: u32,
    /// Suspicion added per proven double sign. Default 100.
    pub double_sign_suspicion: u32,
    /// A node whose suspicion is at or above this is inactive. Default 50.
    pub inactive_threshold: u32,
    /// Slashed fraction (basis points) at city level. Default 5 000 (50 %).
    pub slash_city_bps: u16,
    /// Slashed fraction (basis points) at continent level. Default 3 000 (30 %).
    pub slash_continent_bps: u16,
    /// Slashed fraction (basis points) at global level. Default 5 000 (50 %).
    pub slash_global_bps: u16,
    /// Reward rate of a full node, tenths. Default 15 (1.5).
    pub full_rate_tenths: u16,
    /// Reward rate of a light node, tenths. Default 10 (1.0).
    pub light_rate_tenths: u16,
    /// The reward multiplier (`score × rate × multiplier` tokens per epoch). Default 10.
    pub reward_multiplier: u16,
}

impl Default for DposConfig {
    fn default() -> Self {
        DposConfig {
            units_per_token: 1_000_000,
            stake_lock_ms: 90 * DAY_MS,
            unbonding_delay_ms: 0,
            term_ms: 90 * DAY_MS,
            representatives: 4,
            epoch_ms: DAY_MS,
            claim_window_epochs: 1,
            max_clock_skew_ms: 5_000,
            incident_suspicion: 20,
            double_sign_suspicion: 100,
            inactive_threshold: 50,
            slash_city_bps: 5_000,
            slash_continent_bps: 3_000,
            slash_global_bps: 5_000,
            full_rate_tenths: 15,
            light_rate_tenths: 10,
            reward_multiplier: 10,
        }
    }
}

impl DposConfig {
    /// Checks the values are usable (non-zero divisors, fractions ≤ 100 %).
    pub fn validate(&self) -> Result<()> {
        if self.units_per_token == 0 {
            return Err(Error::InvalidConfig("units_per_token must be positive"));
        }
        if self.epoch_ms == 0 {
            return Err(Error::InvalidConfig("epoch_ms must be positive"));
        }
        if self.representatives == 0 {
            return Err(Error::InvalidConfig("representatives must be positive"));
        }
        if self.inactive_threshold == 0 {
            return Err(Error::InvalidConfig("inactive_threshold must be positive"));
        }
        if [
            self.slash_city_bps,
            self.slash_continent_bps,
            self.slash_global_bps,
        ]
        .iter()
        .any(|&b| b > 10_000)
        {
            return Err(Error::InvalidConfig(
                "slash fractions must be at most 10 000 bps",
            ));
        }
        Ok(())
    }

    /// The slashed fraction at `level`, in basis points.
    pub fn slash_bps(&self, level: SlashLevel) -> u16 {
        match level {
            SlashLevel::City => self.slash_city_bps,
            SlashLevel::Continent => self.slash_continent_bps,
            SlashLevel::Global => self.slash_global_bps,
        }
    }

    /// The reward epoch containing `ms`.
    pub fn epoch_of(&self, ms: u64) -> u64 {
        ms / self.epoch_ms.max(1)
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u64(self.units_per_token)
            .u64(self.stake_lock_ms)
            .u64(self.unbonding_delay_ms)
            .u64(self.term_ms)
            .u32(self.representatives)
            .u64(self.epoch_ms)
            .u64(self.claim_window_epochs)
            .u64(self.max_clock_skew_ms)
            .u32(self.incident_suspicion)
            .u32(self.double_sign_suspicion)
            .u32(self.inactive_threshold)
            .u16(self.slash_city_bps)
            .u16(self.slash_continent_bps)
            .u16(self.slash_global_bps)
            .u16(self.full_rate_tenths)
            .u16(self.light_rate_tenths)
            .u16(self.reward_multiplier);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> std::result::Result<Self, dag_core::DecodeError> {
        Ok(DposConfig {
            units_per_token: r.u64("units_per_token")?,
            stake_lock_ms: r.u64("stake_lock_ms")?,
            unbonding_delay_ms: r.u64("unbonding_delay_ms")?,
            term_ms: r.u64("term_ms")?,
            representatives: r.u32("representatives")?,
            epoch_ms: r.u64("epoch_ms")?,
            claim_window_epochs: r.u64("claim_window_epochs")?,
            max_clock_skew_ms: r.u64("max_clock_skew_ms")?,
            incident_suspicion: r.u32("incident_suspicion")?,
            double_sign_suspicion: r.u32("double_sign_suspicion")?,
            inactive_threshold: r.u32("inactive_threshold")?,
            slash_city_bps: r.u16("slash_city_bps")?,
            slash_continent_bps: r.u16("slash_continent_bps")?,
            slash_global_bps: r.u16("slash_global_bps")?,
            full_rate_tenths: r.u16("full_rate_tenths")?,
            light_rate_tenths: r.u16("light_rate_tenths")?,
            reward_multiplier: r.u16("reward_multiplier")?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_match_domain() {
        let c = DposConfig::default();
        assert_eq!(c.stake_lock_ms, 7_776_000_000);
        assert_eq!(c.term_ms, 7_776_000_000);
        assert_eq!(c.representatives, 4);
        assert_eq!(
            (
                c.incident_suspicion,
                c.double_sign_suspicion,
                c.inactive_threshold
            ),
            (20, 100, 50)
        );
        assert_eq!(c.slash_bps(SlashLevel::City), 5_000);
        assert_eq!(c.slash_bps(SlashLevel::Continent), 3_000);
        assert_eq!(c.slash_bps(SlashLevel::Global), 5_000);
        assert_eq!(
            (c.full_rate_tenths, c.light_rate_tenths, c.reward_multiplier),
            (15, 10, 10)
        );
        c.validate().unwrap();
    }

    #[test]
    fn validate_rejects_bad_values() {
        for bad in [
            DposConfig {
                units_per_token: 0,
                ..Default::default()
            },
            DposConfig {
                epoch_ms: 0,
                ..Default::default()
            },
            DposConfig {
                representatives: 0,
                ..Default::default()
            },
            DposConfig {
                slash_global_bps: 10_001,
                ..Default::default()
            },
        ] {
            assert!(matches!(bad.validate(), Err(Error::InvalidConfig(_))));
        }
    }

    #[test]
    fn encoding_round_trips() {
        let c = DposConfig {
            term_ms: 5,
            full_rate_tenths: 7,
            ..Default::default()
        };
        let mut w = Writer::default();
        c.write(&mut w);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(DposConfig::read(&mut r).unwrap(), c);
        r.finish().unwrap();
    }
}

//! SWIM timing, with the defaults derived from the presence heartbeat (3 s): a crashed
//! node is confirmed down well inside 2 × heartbeat, a node that pauses for 2 s is
//! suspected but refutes in time.

use crate::{Error, Result};
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

/// Settings of one gossip agent.
#[derive(Debug, Clone, PartialEq)]
pub struct GossipConfig {
    /// How often a member probes one other member (500 ms).
    pub probe_period: Duration,
    /// How long a direct probe waits before indirect probes go out (200 ms).
    pub probe_rtt: Duration,
    /// Members asked to probe indirectly (3).
    pub indirect_probes: usize,
    /// Suspicion before a member is declared down (2.5 s: longer than a 2 s pause plus the
    /// time to refute).
    pub suspect_to_down: Duration,
    /// Members each update is gossiped to per round (8, the seeds' fan-out).
    pub fan_out: usize,
    /// How often pending updates are gossiped (200 ms).
    pub gossip_interval: Duration,
    /// Times each update is piggybacked (12: reaches every member of a 1,000-member
    /// cluster with margin under 0.5 % loss).
    pub max_transmissions: u8,
    /// Largest SWIM payload before the authentication envelope (1,300 bytes: with the
    /// envelope a datagram stays under a 1,500-byte MTU).
    pub max_packet: usize,
    /// How often a member asks a random peer for its members (2 s), so a large cluster
    /// learns its full roster quickly.
    pub announce_interval: Duration,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            probe_period: Duration::from_millis(500),
            probe_rtt: Duration::from_millis(200),
            indirect_probes: 3,
            suspect_to_down: Duration::from_millis(2_500),
            fan_out: 8,
            gossip_interval: Duration::from_millis(200),
            max_transmissions: 12,
            max_packet: 1300,
            announce_interval: Duration::from_secs(2),
        }
    }
}

impl GossipConfig {
    /// Checks the values and builds foca's configuration.
    pub fn to_foca(&self) -> Result<foca::Config> {
        let bad = |key, reason: &str| Error::Config {
            key,
            reason: reason.to_string(),
        };
        if self.probe_rtt.is_zero() || self.probe_rtt >= self.probe_period {
            return Err(bad("probe_rtt", "must be > 0 and < probe_period"));
        }
        if self.suspect_to_down.is_zero() {
            return Err(bad("suspect_to_down", "must be > 0"));
        }
        if self.gossip_interval.is_zero() || self.announce_interval.is_zero() {
            return Err(bad("gossip_interval", "intervals must be > 0"));
        }
        let nz = |key, v: usize| NonZeroUsize::new(v).ok_or_else(|| bad(key, "must be > 0"));
        if self.max_packet < 512 {
            return Err(bad("max_packet", "must be ≥ 512 bytes"));
        }
        let mut c = foca::Config::simple();
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.num_indirect_probes = nz("indirect_probes", self.indirect_probes)?;
        c.max_transmissions = NonZeroU8::new(self.max_transmissions)
            .ok_or_else(|| bad("max_transmissions", "must be > 0"))?;
        c.suspect_to_down_after = self.suspect_to_down;
        c.max_packet_size = nz("max_packet", self.max_packet)?;
        // Tell a member declared down, so it renews its identity and rejoins at once.
        c.notify_down_members = true;
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_interval,
            num_members: nz("fan_out", self.fan_out)?,
        });
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: self.announce_interval,
            num_members: NonZeroUsize::MIN,
        });
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.announce_interval * 3,
            num_members: NonZeroUsize::MIN,
        });
        Ok(c)
    }

    /// The longest time from a crash to "down" on the member that first suspects it:
    /// at most one probe period until someone probes it, one period for the probe cycle
    /// to fail, then the suspicion.
    pub fn worst_local_detection(&self) -> Duration {
        self.probe_period * 2 + self.suspect_to_down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_detect_inside_two_heartbeats_and_outlast_a_two_second_pause() {
        let c = GossipConfig::default();
        let foca = c.to_foca().unwrap();
        assert_eq!(foca.periodic_gossip.unwrap().num_members.get(), 8);
        assert!(c.worst_local_detection() < Duration::from_secs(6));
        assert!(c.suspect_to_down > Duration::from_secs(2));
    }

    #[test]
    fn bad_values_are_named() {
        for (c, key) in [
            (
                GossipConfig {
                    probe_rtt: Duration::from_secs(2),
                    ..Default::default()
                },
                "probe_rtt",
            ),
            (
                GossipConfig {
                    fan_out: 0,
                    ..Default::default()
                },
                "fan_out",
            ),
            (
                GossipConfig {
                    max_packet: 100,
                    ..Default::default()
                },
                "max_packet",
            ),
        ] {
            let e = c.to_foca().unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
    }
}

//! Per-client-IP rate limiting for HTTP servers (the presence API and the DApp gateway):
//! which address a request counts against, and a keyed GCRA limiter (governor) whose table
//! of addresses stays bounded.

use crate::RateLimited;
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;

/// Addresses remembered before those whose bucket is full again are forgotten.
const MAX_TRACKED: usize = 10_000;

/// The address a request counts against: the first `X-Forwarded-For` entry when the server
/// trusts a proxy in front of it (`trust_forwarded_for`) and the header parses, else the
/// peer's address; `0.0.0.0` when neither is known (every such client shares one bucket).
pub fn client_ip(
    trust_forwarded_for: bool,
    forwarded_for: Option<&str>,
    peer: Option<SocketAddr>,
) -> IpAddr {
    if trust_forwarded_for
        && let Some(ip) = forwarded_for
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return ip;
    }
    peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip())
}

/// `per_second` requests per second per client address, bursts up to `burst`.
pub struct PerIpLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for PerIpLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerIpLimiter")
            .field("tracked", &self.limiter.len())
            .finish()
    }
}

impl PerIpLimiter {
    /// A limiter of `per_second` requests per second per address with bursts of `burst`;
    /// `None` when `per_second` is 0 (no limit). A `burst` of 0 counts as 1.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Some(PerIpLimiter {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
        })
    }

    /// Takes one request from `ip`'s allowance, or says how long until the next is allowed.
    pub fn check(&self, ip: IpAddr) -> Result<(), RateLimited> {
        // Keep the table bounded: forget addresses whose bucket is full again.
        if self.limiter.len() > MAX_TRACKED {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| RateLimited {
                retry_after: not_until.wait_time_from(self.limiter.clock().now()),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let check = |trust, header, peer, want: &str| {
            assert_eq!(
                client_ip(trust, header, peer),
                want.parse::<IpAddr>().unwrap()
            );
        };
        check(
            true,
            Some("203.0.113.7, 10.0.0.1"),
            Some(peer),
            "203.0.113.7",
        );
        check(false, Some("203.0.113.7"), Some(peer), "10.0.0.9");
        check(true, Some("not an address"), Some(peer), "10.0.0.9");
        check(true, None, Some(peer), "10.0.0.9");
        check(true, Some(" 2001:db8::1 "), None, "2001:db8::1");
        check(false, None, None, "0.0.0.0");
    }

    #[test]
    fn each_address_has_its_own_allowance_and_a_refusal_says_when() {
        assert!(
            PerIpLimiter::new(0, 5).is_none(),
            "0 per second is no limit"
        );
        let l = PerIpLimiter::new(1, 2).unwrap();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_ok());
        let refused = l.check(a).unwrap_err();
        assert!(refused.retry_after > std::time::Duration::ZERO);
        assert!(refused.retry_after <= std::time::Duration::from_secs(1));
        assert!(
            l.check(b).is_ok(),
            "another address is not limited by a's use"
        );
    }
}

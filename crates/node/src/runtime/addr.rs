//! The one address normaliser: what a node publishes (to presence, to a genesis file) for
//! the address it bound.

use std::net::SocketAddr;

/// The address to publish for a server bound to `bound`: `advertise` when given, else the
/// bound address with an unspecified host (`0.0.0.0`, `::`) replaced by loopback (which
/// only works on one host — multi-host deployments set `advertise`).
pub fn advertised_addr(bound: SocketAddr, advertise: Option<&str>) -> String {
    match advertise {
        Some(a) => a.to_string(),
        None if bound.ip().is_unspecified() => {
            if bound.is_ipv6() {
                format!("[::1]:{}", bound.port())
            } else {
                format!("127.0.0.1:{}", bound.port())
            }
        }
        None => bound.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bound: &str, advertise: Option<&str>, want: &str) {
        let bound: SocketAddr = bound.parse().expect("test address");
        assert_eq!(advertised_addr(bound, advertise), want);
    }

    #[test]
    fn normalises() {
        check("0.0.0.0:7700", None, "127.0.0.1:7700");
        check("[::]:7700", None, "[::1]:7700");
        check("10.1.2.3:7700", None, "10.1.2.3:7700");
        check(
            "0.0.0.0:7700",
            Some("city.example:7700"),
            "city.example:7700",
        );
    }
}

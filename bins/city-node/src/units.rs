//! Readable sizes on the command line: `1GiB`, `512 MB`, `64MiB` or plain bytes.

use std::str::FromStr;

/// A number of bytes parsed from a readable size (binary and decimal units, as `bytesize`
/// reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bytes(pub(crate) u64);

impl FromStr for Bytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| Bytes(b.as_u64()))
            .map_err(|e| format!("{s:?} is not a size (e.g. 1GiB, 512MB, 1073741824): {e}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(input: &str, want: Option<u64>) {
        assert_eq!(input.parse::<Bytes>().ok().map(|b| b.0), want, "{input}");
    }

    #[test]
    fn sizes() {
        check("1073741824", Some(1 << 30));
        check("1GiB", Some(1 << 30));
        check("1 GiB", Some(1 << 30));
        check("64MiB", Some(64 << 20));
        check("512MB", Some(512_000_000));
        check("0", Some(0));
        check("lots", None);
        check("-1", None);
    }
}

//! The versioned shard format: a fixed header (magic, version, codec, k, m, index, stripe id,
//! stripe length, BLAKE3 of the shard data, BLAKE3 of the stripe) followed by the data.
//!
//! ```text
//! "CCSH" | version u8 = 1 | codec u8 | k u16 | m u16 | index u16 | stripe_id [32]
//!        | original_len u64 | shard_hash [32] | stripe_hash [32] | data_len u32 | data
//! ```
//! Integers are little endian (dag-core's canonical encoding). Decoding is strict: unknown
//! magic, version or codec, bad ranges, a length that k and the stripe length do not imply,
//! trailing bytes or a data hash mismatch are all errors.

use crate::codec::{CodecId, ErasureConfig};
use crate::error::ShardProblem;
use crate::{Error, Result};
use dag_core::{Hash32, Reader, ShardHash, StripeId, Writer};

/// The shard format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Magic bytes at the start of every encoded shard.
pub const SHARD_MAGIC: [u8; 4] = *b"CCSH";
/// Encoded header length in bytes (everything before the data).
pub const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 2 + 2 + 32 + 8 + 32 + 32 + 4;
/// Largest stripe (micro-batch) that may be encoded: 64 MiB.
pub const MAX_STRIPE_LEN: usize = 64 * 1024 * 1024;

/// What a shard says about itself. Unchecked until [`Shard::check`] (or decoding) passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardHeader {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u8,
    /// Codec that made the stripe.
    pub codec: CodecId,
    /// Data shards of the stripe.
    pub k: u16,
    /// Parity shards of the stripe.
    pub m: u16,
    /// This shard's index, `0..k + m` (data first, then parity).
    pub index: u16,
    /// The stripe: BLAKE3 of its original bytes.
    pub stripe_id: StripeId,
    /// Length of the original stripe in bytes (before padding).
    pub original_len: u64,
    /// BLAKE3 of this shard's data.
    pub shard_hash: ShardHash,
    /// BLAKE3 of the whole original stripe. Format 1 requires it to equal the stripe id; it
    /// is a field of its own so a later format may address stripes by another id.
    pub stripe_hash: Hash32,
}

impl ShardHeader {
    /// The erasure configuration the header claims (unchecked).
    pub fn config(&self) -> ErasureConfig {
        ErasureConfig {
            codec: self.codec,
            k: self.k,
            m: self.m,
        }
    }
}

/// One shard: header and data. Fields are public so tests and transports can build and
/// inspect shards; nothing trusts a `Shard` without [`Shard::check`], and every entry point
/// of this crate (decode, store put, store get) runs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Shard {
    /// The header.
    pub header: ShardHeader,
    /// The shard's bytes (a slice of the padded stripe, or parity).
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("header", &self.header)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl Shard {
    /// Stripe id.
    pub fn stripe_id(&self) -> StripeId {
        self.header.stripe_id
    }
    /// Index in the stripe.
    pub fn index(&self) -> u16 {
        self.header.index
    }
    /// The hash in the header (what receipts name).
    pub fn hash(&self) -> ShardHash {
        self.header.shard_hash
    }

    /// Checks everything a shard can check about itself: version, codec, k/m ranges, index,
    /// data length implied by (codec, k, original length), stripe hash = stripe id, and the
    /// BLAKE3 of the data.
    pub fn check(&self) -> std::result::Result<(), ShardProblem> {
        self.check_header()?;
        if ShardHash(Hash32::digest(&self.data)) != self.header.shard_hash {
            return Err(ShardProblem::HashMismatch);
        }
        Ok(())
    }

    /// [`Shard::check`] without hashing the data: for shards this process has just made
    /// (their `shard_hash` was computed from the data by [`crate::ErasureConfig::encode`]).
    pub fn check_header(&self) -> std::result::Result<(), ShardProblem> {
        let h = &self.header;
        if h.version != FORMAT_VERSION {
            return Err(ShardProblem::UnsupportedVersion(h.version));
        }
        let cfg = h.config();
        if cfg.validate().is_err() {
            return Err(ShardProblem::BadParams { k: h.k, m: h.m });
        }
        if h.index >= cfg.n() {
            return Err(ShardProblem::IndexOutOfRange {
                index: h.index,
                n: cfg.n(),
            });
        }
        let len = usize::try_from(h.original_len).unwrap_or(usize::MAX);
        if len > MAX_STRIPE_LEN {
            return Err(ShardProblem::Malformed(format!(
                "stripe length {len} over the limit of {MAX_STRIPE_LEN}"
            )));
        }
        if h.stripe_hash != h.stripe_id.0 {
            return Err(ShardProblem::Inconsistent {
                field: "stripe_hash",
            });
        }
        let expected = cfg.shard_len(len);
        if self.data.len() != expected {
            return Err(ShardProblem::WrongLength {
                expected,
                got: self.data.len(),
            });
        }
        Ok(())
    }

    /// Encoded length: header plus data.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }

    /// The canonical bytes (header then data).
    pub fn to_bytes(&self) -> Vec<u8> {
        let h = &self.header;
        let mut w = Writer::with_capacity(self.encoded_len());
        let data_len = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        w.raw(&SHARD_MAGIC)
            .u8(h.version)
            .u8(h.codec.as_u8())
            .u16(h.k)
            .u16(h.m)
            .u16(h.index)
            .raw(h.stripe_id.as_bytes())
            .u64(h.original_len)
            .raw(h.shard_hash.as_bytes())
            .raw(&h.stripe_hash.0)
            .u32(data_len)
            .raw(&self.data);
        w.finish()
    }

    /// Strictly decodes and [checks](Shard::check) a shard.
    pub fn from_bytes(bytes: &[u8]) -> Result<Shard> {
        let bad = |index: Option<u16>, stripe_id: Option<StripeId>, problem| Error::BadShard {
            stripe_id,
            index,
            problem,
        };
        let malformed = |e: dag_core::DecodeError| ShardProblem::Malformed(e.to_string());
        let mut r = Reader::new(bytes);
        let magic = r
            .take(4, "magic")
            .map_err(|e| bad(None, None, malformed(e)))?;
        if magic != SHARD_MAGIC {
            return Err(bad(None, None, ShardProblem::ForeignHeader));
        }
        let header = (|| -> std::result::Result<_, dag_core::DecodeError> {
            Ok((
                r.u8("version")?,
                r.u8("codec")?,
                r.u16("k")?,
                r.u16("m")?,
                r.u16("index")?,
                StripeId::from_bytes(r.bytes32("stripe_id")?),
                r.u64("original_len")?,
                ShardHash::from_bytes(r.bytes32("shard_hash")?),
                Hash32(r.bytes32("stripe_hash")?),
            ))
        })()
        .map_err(|e| bad(None, None, malformed(e)))?;
        let (version, codec, k, m, index, stripe_id, original_len, shard_hash, stripe_hash) =
            header;
        let (idx, sid) = (Some(index), Some(stripe_id));
        if version != FORMAT_VERSION {
            return Err(bad(idx, sid, ShardProblem::UnsupportedVersion(version)));
        }
        let codec = CodecId::from_u8(codec)
            .ok_or_else(|| bad(idx, sid, ShardProblem::UnknownCodec(codec)))?;
        // The largest shard is the whole (k = 1) stripe plus alignment padding.
        let max_data = MAX_STRIPE_LEN + 2;
        let data = r
            .bytes_u32("data", max_data)
            .map_err(|e| bad(idx, sid, malformed(e)))?
            .to_vec();
        r.finish().map_err(|e| bad(idx, sid, malformed(e)))?;
        let shard = Shard {
            header: ShardHeader {
                version,
                codec,
                k,
                m,
                index,
                stripe_id,
                original_len,
                shard_hash,
                stripe_hash,
            },
            data,
        };
        shard.check().map_err(|p| bad(idx, sid, p))?;
        Ok(shard)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Shard {
        ErasureConfig::default()
            .encode(b"hello shards")
            .unwrap()
            .remove(1)
    }

    fn problem(bytes: &[u8]) -> ShardProblem {
        match Shard::from_bytes(bytes) {
            Err(Error::BadShard { problem, .. }) => problem,
            other => panic!("expected BadShard, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_and_header_len() {
        let s = sample();
        let b = s.to_bytes();
        assert_eq!(b.len(), HEADER_LEN + s.data.len());
        assert_eq!(Shard::from_bytes(&b).unwrap(), s);
    }

    #[test]
    fn strict_decoding() {
        let b = sample().to_bytes();
        let mut foreign = b.clone();
        foreign[0] = b'X';
        assert_eq!(problem(&foreign), ShardProblem::ForeignHeader);
        let mut v = b.clone();
        v[4] = 2;
        assert_eq!(problem(&v), ShardProblem::UnsupportedVersion(2));
        let mut c = b.clone();
        c[5] = 9;
        assert_eq!(problem(&c), ShardProblem::UnknownCodec(9));
        let mut idx = b.clone();
        idx[10] = 6; // index = 6 with n = 6
        assert!(matches!(
            problem(&idx),
            ShardProblem::IndexOutOfRange { index: 6, n: 6 }
        ));
        let mut data = b.clone();
        *data.last_mut().unwrap() ^= 1;
        assert_eq!(problem(&data), ShardProblem::HashMismatch);
        let mut trailing = b.clone();
        trailing.push(0);
        assert!(matches!(problem(&trailing), ShardProblem::Malformed(_)));
        assert!(matches!(
            problem(&b[..b.len() - 1]),
            ShardProblem::Malformed(_)
        ));
        assert!(matches!(problem(&b[..3]), ShardProblem::Malformed(_)));
        let mut sid = b.clone();
        sid[12] ^= 1; // stripe id no longer equals stripe hash
        assert!(matches!(problem(&sid), ShardProblem::Inconsistent { .. }));
    }
}

//! Micro-batches: a list of signed tx bytes laid out as one stripe, canonically, and the
//! tx id → (stripe id, offset) index entries that find a tx in it again.
//!
//! ```text
//! "CCMB" | version u8 = 1 | count u32 | count × (len u32 | signed tx bytes)
//! ```
//! The same txs in the same order always give the same bytes, hence the same stripe id.

use crate::{Error, Result};
use dag_core::{DecodeError, MAX_SIGNED_TX_LEN, Reader, SignedTx, StripeId, TxId, Writer};

const BATCH_MAGIC: [u8; 4] = *b"CCMB";
const BATCH_VERSION: u8 = 1;
const BATCH_HEADER_LEN: usize = 4 + 1 + 4;

/// Where a tx sits: its stripe, and the byte offset and length of its signed bytes in the
/// stripe (after the 4-byte length prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxLocation {
    /// The stripe (micro-batch) holding the tx.
    pub stripe_id: StripeId,
    /// Offset of the signed tx bytes in the stripe.
    pub offset: u32,
    /// Length of the signed tx bytes.
    pub len: u32,
}

/// Encoded length of a [`TxLocation`] (and of a [`TxIndexEntry`] minus the tx id).
pub const TX_LOCATION_LEN: usize = 32 + 4 + 4;

impl TxLocation {
    /// Canonical bytes: stripe id, offset u32, len u32 (40 bytes). The value stored under
    /// the tx id in an index.
    pub fn encode(&self) -> [u8; TX_LOCATION_LEN] {
        let mut w = Writer::with_capacity(TX_LOCATION_LEN);
        w.raw(self.stripe_id.as_bytes())
            .u32(self.offset)
            .u32(self.len);
        let mut out = [0u8; TX_LOCATION_LEN];
        out.copy_from_slice(w.as_slice());
        out
    }
    /// Strict decoding of [`TxLocation::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let de = |source| Error::Decode {
            what: "tx location",
            source,
        };
        let mut r = Reader::new(bytes);
        let loc = TxLocation {
            stripe_id: StripeId::from_bytes(r.bytes32("stripe_id").map_err(de)?),
            offset: r.u32("offset").map_err(de)?,
            len: r.u32("len").map_err(de)?,
        };
        r.finish().map_err(de)?;
        Ok(loc)
    }
}

/// One index entry: tx id → location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxIndexEntry {
    /// The tx.
    pub tx_id: TxId,
    /// Where it is.
    pub location: TxLocation,
}

/// A micro-batch encoded as one stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MicroBatch {
    /// The stripe bytes (what [`crate::ErasureConfig::encode`] takes).
    pub stripe: Vec<u8>,
    /// BLAKE3 of `stripe`: the id its shards will carry.
    pub stripe_id: StripeId,
    /// Location of each input tx, in input order.
    pub locations: Vec<TxLocation>,
}

impl MicroBatch {
    /// Lays out signed tx bytes (each at most `dag_core::MAX_SIGNED_TX_LEN`) as one stripe.
    /// The bytes are not parsed; use [`MicroBatch::from_signed`] to get index entries too.
    pub fn from_tx_bytes<T: AsRef<[u8]>>(txs: &[T]) -> Result<Self> {
        if txs.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let count = u32::try_from(txs.len()).map_err(|_| Error::Decode {
            what: "micro-batch",
            source: DecodeError::TooLong {
                field: "tx count",
                len: txs.len(),
                max: u32::MAX as usize,
            },
        })?;
        let total: usize = txs.iter().map(|t| 4 + t.as_ref().len()).sum();
        let mut w = Writer::with_capacity(BATCH_HEADER_LEN + total);
        w.raw(&BATCH_MAGIC).u8(BATCH_VERSION).u32(count);
        let mut offsets = Vec::with_capacity(txs.len());
        for t in txs {
            let t = t.as_ref();
            if t.len() > MAX_SIGNED_TX_LEN {
                return Err(Error::Decode {
                    what: "micro-batch",
                    source: DecodeError::TooLong {
                        field: "signed tx",
                        len: t.len(),
                        max: MAX_SIGNED_TX_LEN,
                    },
                });
            }
            w.bytes_u32(t);
            // Bounded by MAX_STRIPE_LEN checks at encode time; offsets beyond u32 are refused.
            let end = w.as_slice().len();
            let start = end - t.len();
            offsets.push((start, t.len()));
        }
        let stripe = w.finish();
        if stripe.len() > crate::MAX_STRIPE_LEN {
            return Err(Error::StripeTooLarge {
                len: stripe.len(),
                max: crate::MAX_STRIPE_LEN,
            });
        }
        let stripe_id = StripeId(dag_core::Hash32::digest(&stripe));
        let locations = offsets
            .into_iter()
            .map(|(offset, len)| TxLocation {
                stripe_id,
                // Both fit: the stripe is at most MAX_STRIPE_LEN (64 MiB) long.
                offset: u32::try_from(offset).unwrap_or(u32::MAX),
                len: u32::try_from(len).unwrap_or(u32::MAX),
            })
            .collect();
        Ok(MicroBatch {
            stripe,
            stripe_id,
            locations,
        })
    }

    /// Like [`MicroBatch::from_signed`] for verified txs, whose ids are already known
    /// (not hashed again).
    pub fn from_verified(txs: &[dag_core::VerifiedTx]) -> Result<(Self, Vec<TxIndexEntry>)> {
        Self::from_encoded(txs.iter().map(|t| (t.id(), t.signed().encode())))
    }

    /// Lays out signed txs as one stripe and returns the index entries (tx id → location).
    pub fn from_signed(txs: &[SignedTx]) -> Result<(Self, Vec<TxIndexEntry>)> {
        Self::from_encoded(txs.iter().map(|t| (t.id(), t.encode())))
    }

    /// One stripe of `(id, canonical bytes)` txs, with the index entry of each.
    fn from_encoded(
        txs: impl Iterator<Item = (TxId, Vec<u8>)>,
    ) -> Result<(Self, Vec<TxIndexEntry>)> {
        let (ids, bytes): (Vec<TxId>, Vec<Vec<u8>>) = txs.unzip();
        let batch = MicroBatch::from_tx_bytes(&bytes)?;
        let entries = ids
            .into_iter()
            .zip(&batch.locations)
            .map(|(tx_id, loc)| TxIndexEntry {
                tx_id,
                location: *loc,
            })
            .collect();
        Ok((batch, entries))
    }
}

/// Splits a micro-batch stripe back into its signed tx bytes (strict: magic, version,
/// count, lengths, no trailing bytes).
pub fn split_micro_batch(stripe: &[u8]) -> Result<Vec<&[u8]>> {
    let de = |source| Error::Decode {
        what: "micro-batch",
        source,
    };
    let mut r = Reader::new(stripe);
    if r.take(4, "magic").map_err(de)? != BATCH_MAGIC {
        return Err(de(DecodeError::Invalid {
            field: "magic",
            reason: "not a micro-batch",
        }));
    }
    let v = r.u8("version").map_err(de)?;
    if v != BATCH_VERSION {
        return Err(de(DecodeError::UnsupportedVersion(v)));
    }
    let count = r.u32("count").map_err(de)? as usize;
    if count == 0 {
        return Err(Error::EmptyBatch);
    }
    // Each tx takes at least 4 bytes: refuse counts the input cannot hold before allocating.
    if count > r.remaining() / 4 {
        return Err(de(DecodeError::Invalid {
            field: "count",
            reason: "more txs than the stripe can hold",
        }));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(r.bytes_u32("signed tx", MAX_SIGNED_TX_LEN).map_err(de)?);
    }
    r.finish().map_err(de)?;
    Ok(out)
}

/// The signed tx bytes at `loc` in a restored stripe, checking that the location points at
/// a tx boundary (its length prefix matches) and that the stripe is the one named.
pub fn tx_bytes_at<'a>(stripe: &'a [u8], loc: &TxLocation) -> Result<&'a [u8]> {
    let bad = Error::BadLocation {
        stripe_id: loc.stripe_id,
        offset: loc.offset,
        len: loc.len,
    };
    if StripeId(dag_core::Hash32::digest(stripe)) != loc.stripe_id {
        return Err(bad);
    }
    let (off, len) = (loc.offset as usize, loc.len as usize);
    if off < BATCH_HEADER_LEN + 4 || off.checked_add(len).is_none_or(|e| e > stripe.len()) {
        return Err(bad);
    }
    let prefix = &stripe[off - 4..off];
    if u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) != loc.len {
        return Err(bad);
    }
    Ok(&stripe[off..off + len])
}

/// Decodes the signed tx at `loc` in a restored stripe (its signature is not checked here:
/// call `SignedTx::verify`).
pub fn tx_at(stripe: &[u8], loc: &TxLocation) -> Result<SignedTx> {
    SignedTx::decode(tx_bytes_at(stripe, loc)?).map_err(|source| Error::Decode {
        what: "signed tx",
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_locations() {
        let txs: Vec<Vec<u8>> = vec![b"one".to_vec(), vec![], b"three!".to_vec()];
        let b = MicroBatch::from_tx_bytes(&txs).unwrap();
        assert_eq!(split_micro_batch(&b.stripe).unwrap(), txs);
        for (t, loc) in txs.iter().zip(&b.locations) {
            assert_eq!(tx_bytes_at(&b.stripe, loc).unwrap(), t.as_slice());
            assert_eq!(TxLocation::decode(&loc.encode()).unwrap(), *loc);
        }
        // canonical: same input, same id
        assert_eq!(
            MicroBatch::from_tx_bytes(&txs).unwrap().stripe_id,
            b.stripe_id
        );
    }

    /// Accepts every signature: the batch layout does not depend on it.
    struct AcceptAll;
    impl dag_core::SignatureVerifier for AcceptAll {
        fn verify(
            &self,
            _: &[u8],
            _: &[u8],
            _: &[u8],
        ) -> std::result::Result<(), dag_core::SignatureError> {
            Ok(())
        }
    }

    #[test]
    fn from_verified_lays_out_what_from_signed_does() {
        let key = vec![7u8; 32];
        let sender = dag_core::AccountId::from_public_key(&key);
        let txs: Vec<SignedTx> = (0..5u64)
            .map(|nonce| SignedTx {
                tx: dag_core::Tx::fresh(
                    sender,
                    sender,
                    1 + nonce,
                    nonce,
                    1_767_225_600_000,
                    dag_core::CityId::new("tokyo").unwrap(),
                    dag_core::Position::from_degrees(35.6895, 139.6917).unwrap(),
                    dag_core::PositionMethod::Gps,
                ),
                public_key: key.clone(),
                signature: vec![nonce as u8; 64],
            })
            .collect();
        let verified: Vec<dag_core::VerifiedTx> = txs
            .iter()
            .map(|t| t.clone().verify(&AcceptAll).unwrap())
            .collect();
        let (a, ea) = MicroBatch::from_signed(&txs).unwrap();
        let (b, eb) = MicroBatch::from_verified(&verified).unwrap();
        assert_eq!(a, b);
        assert_eq!(ea, eb);
        for (t, e) in txs.iter().zip(&eb) {
            assert_eq!(e.tx_id, t.id());
            assert_eq!(tx_at(&b.stripe, &e.location).unwrap(), *t);
        }
    }

    #[test]
    fn strictness() {
        assert!(matches!(
            MicroBatch::from_tx_bytes::<Vec<u8>>(&[]),
            Err(Error::EmptyBatch)
        ));
        let b = MicroBatch::from_tx_bytes(&[b"ab".to_vec()]).unwrap();
        let mut t = b.stripe.clone();
        t.push(0);
        assert!(split_micro_batch(&t).is_err());
        assert!(split_micro_batch(&b.stripe[..b.stripe.len() - 1]).is_err());
        let mut huge = b.stripe.clone();
        huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(split_micro_batch(&huge).is_err());
        let mut loc = b.locations[0];
        loc.offset += 1;
        assert!(matches!(
            tx_bytes_at(&b.stripe, &loc),
            Err(Error::BadLocation { .. })
        ));
        let mut loc = b.locations[0];
        loc.len += 1;
        assert!(tx_bytes_at(&b.stripe, &loc).is_err());
        assert!(TxLocation::decode(&[0; 39]).is_err());
    }
}

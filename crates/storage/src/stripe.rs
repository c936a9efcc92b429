//! Encoding a stripe into k + m shards and rebuilding it from any k good ones.
//!
//! Every shard given to a decoder is checked ([`Shard::check`], stripe id, agreement with the
//! other shards or with the manifest, index range, duplicates); a shard that fails counts as
//! missing. The rebuilt bytes must hash to the stripe id, so a decoder never returns bytes
//! that are not the original stripe.

use crate::codec::ErasureConfig;
use crate::error::{Rejected, ShardProblem};
use crate::manifest::StripeLayout;
use crate::shard::{FORMAT_VERSION, MAX_STRIPE_LEN, Shard, ShardHeader};
use crate::{Error, Result};
use dag_core::{Hash32, ShardHash, StripeId};

impl ErasureConfig {
    /// Splits `stripe` into k data shards (zero-padded to equal, aligned length) and computes
    /// m parity shards. The stripe id is the BLAKE3 of `stripe`. Deterministic.
    ///
    /// ```
    /// use storage::{ErasureConfig, decode};
    /// let shards = ErasureConfig::default().encode(b"some micro-batch bytes").unwrap();
    /// assert_eq!(shards.len(), 6);
    /// let id = shards[0].stripe_id();
    /// // any 4 of the 6 rebuild the stripe
    /// assert_eq!(decode(id, &shards[2..]).unwrap(), b"some micro-batch bytes");
    /// ```
    pub fn encode(&self, stripe: &[u8]) -> Result<Vec<Shard>> {
        self.encode_with_hash(stripe, Hash32::digest(stripe))
    }

    /// [`ErasureConfig::encode`] of a micro-batch, whose stripe id (BLAKE3 of its stripe) was
    /// computed when it was laid out: the stripe is not hashed again.
    pub fn encode_batch(&self, batch: &crate::MicroBatch) -> Result<Vec<Shard>> {
        self.encode_with_hash(&batch.stripe, batch.stripe_id.0)
    }

    fn encode_with_hash(&self, stripe: &[u8], stripe_hash: Hash32) -> Result<Vec<Shard>> {
        self.validate()?;
        if stripe.len() > MAX_STRIPE_LEN {
            return Err(Error::StripeTooLarge {
                len: stripe.len(),
                max: MAX_STRIPE_LEN,
            });
        }
        let (k, m) = (usize::from(self.k), usize::from(self.m));
        let shard_len = self.shard_len(stripe.len());
        let mut data: Vec<Vec<u8>> = (0..k)
            .map(|i| {
                let start = (i * shard_len).min(stripe.len());
                let end = ((i + 1) * shard_len).min(stripe.len());
                let mut v = Vec::with_capacity(shard_len);
                v.extend_from_slice(&stripe[start..end]);
                v.resize(shard_len, 0);
                v
            })
            .collect();
        let parity = {
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            self.codec.codec().encode_parity(k, m, &refs)?
        };
        data.extend(parity);
        let stripe_id = StripeId(stripe_hash);
        let original_len = stripe.len() as u64;
        Ok(data
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| Shard {
                header: ShardHeader {
                    version: FORMAT_VERSION,
                    codec: self.codec,
                    k: self.k,
                    m: self.m,
                    index: u16::try_from(i).unwrap_or(u16::MAX),
                    stripe_id,
                    original_len,
                    shard_hash: ShardHash(Hash32::digest(&bytes)),
                    stripe_hash,
                },
                data: bytes,
            })
            .collect())
    }
}

/// Rebuilds the stripe `expected` from any k good shards among `shards` (in any order).
///
/// Without a manifest, the header parameters (codec, k, m, length) are taken from the largest
/// group of shards that agree; the others are rejected as inconsistent. Prefer
/// [`StripeLayout::decode`] when a manifest is at hand: it also pins every shard's hash.
pub fn decode(expected: StripeId, shards: &[Shard]) -> Result<Vec<u8>> {
    decode_inner(expected, None, shards)
}

impl StripeLayout {
    /// Rebuilds the stripe from any k shards whose hash matches this layout.
    pub fn decode(&self, shards: &[Shard]) -> Result<Vec<u8>> {
        decode_inner(self.stripe_id, Some(self), shards)
    }

    /// Re-creates the shards at `indexes` from any k good shards (for re-replication). Each
    /// rebuilt shard is checked against the layout's hash for its index.
    pub fn rebuild(&self, shards: &[Shard], indexes: &[u16]) -> Result<Vec<Shard>> {
        let stripe = self.decode(shards)?;
        let all = self.config().encode(&stripe)?;
        indexes
            .iter()
            .map(|&i| {
                let s = all.get(usize::from(i)).ok_or(Error::BadShard {
                    stripe_id: Some(self.stripe_id),
                    index: Some(i),
                    problem: ShardProblem::IndexOutOfRange {
                        index: i,
                        n: self.config().n(),
                    },
                })?;
                if Some(&s.header.shard_hash) != self.shard_hashes.get(usize::from(i)) {
                    return Err(Error::BadShard {
                        stripe_id: Some(self.stripe_id),
                        index: Some(i),
                        problem: ShardProblem::HashMismatch,
                    });
                }
                Ok(s.clone())
            })
            .collect()
    }
}

/// The parameters shards must agree on.
#[derive(PartialEq, Eq, Clone, Copy)]
struct Params {
    codec: crate::CodecId,
    k: u16,
    m: u16,
    len: u64,
}

fn params(h: &ShardHeader) -> Params {
    Params {
        codec: h.codec,
        k: h.k,
        m: h.m,
        len: h.original_len,
    }
}

fn decode_inner(
    expected: StripeId,
    layout: Option<&StripeLayout>,
    shards: &[Shard],
) -> Result<Vec<u8>> {
    let mut rejected = Vec::new();
    let mut ok: Vec<&Shard> = Vec::new();
    for s in shards {
        let reject = |problem| Rejected {
            index: Some(s.header.index),
            problem,
        };
        if let Err(p) = s.check() {
            rejected.push(reject(p));
            continue;
        }
        if s.header.stripe_id != expected {
            rejected.push(reject(ShardProblem::WrongStripe {
                got: s.header.stripe_id,
            }));
            continue;
        }
        if let Some(Err(p)) = layout.map(|l| l.admits(&s.header)) {
            rejected.push(reject(p));
            continue;
        }
        ok.push(s);
    }

    // Agree on parameters: the manifest's, or the largest group's (first seen wins ties).
    let chosen = match layout {
        Some(l) => Some(Params {
            codec: l.codec,
            k: l.k,
            m: l.m,
            len: l.len,
        }),
        None => {
            let mut best: Option<(Params, usize)> = None;
            for s in &ok {
                let p = params(&s.header);
                let count = ok.iter().filter(|o| params(&o.header) == p).count();
                if best.is_none_or(|(_, c)| count > c) {
                    best = Some((p, count));
                }
            }
            best.map(|(p, _)| p)
        }
    };
    let Some(p) = chosen else {
        return Err(Error::NotEnoughShards {
            stripe_id: expected,
            good: 0,
            // k from the manifest, else from any readable header, else "at least one".
            needed: layout
                .map(|l| l.k)
                .or_else(|| shards.first().map(|s| s.header.k))
                .map_or(1, |k| usize::from(k.max(1))),
            rejected,
        });
    };
    let (k, m) = (usize::from(p.k), usize::from(p.m));
    let mut slots: Vec<Option<Vec<u8>>> = vec![None; k + m];
    let mut hashes: Vec<Option<ShardHash>> = vec![None; k + m];
    let mut good = 0usize;
    for s in ok {
        let h = &s.header;
        let reject = |problem| Rejected {
            index: Some(h.index),
            problem,
        };
        if params(h) != p {
            let field = if h.codec != p.codec {
                "codec"
            } else if h.k != p.k || h.m != p.m {
                "k/m"
            } else {
                "original_len"
            };
            rejected.push(reject(ShardProblem::Inconsistent { field }));
            continue;
        }
        let i = usize::from(h.index);
        match hashes[i] {
            Some(prev) if prev == h.shard_hash => {} // identical copy: harmless
            Some(_) => rejected.push(reject(ShardProblem::Duplicate)),
            None => {
                hashes[i] = Some(h.shard_hash);
                slots[i] = Some(s.data.clone());
                good += 1;
            }
        }
    }
    if good < k {
        return Err(Error::NotEnoughShards {
            stripe_id: expected,
            good,
            needed: k,
            rejected,
        });
    }
    p.codec.codec().reconstruct_data(k, m, &mut slots)?;
    let len = usize::try_from(p.len).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(len);
    for slot in slots.into_iter().take(k) {
        let Some(d) = slot else {
            return Err(Error::Codec {
                codec: p.codec.name(),
                reason: "a data shard was not reconstructed".into(),
            });
        };
        let take = (len - out.len()).min(d.len());
        out.extend_from_slice(&d[..take]);
    }
    if Hash32::digest(&out) != expected.0 {
        return Err(Error::StripeHashMismatch {
            stripe_id: expected,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::CodecId;

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn cfg(codec: CodecId, k: u16, m: u16) -> ErasureConfig {
        ErasureConfig::new(codec, k, m).unwrap()
    }

    /// The rejections of a decode that did not find k good shards.
    fn rejected(r: Result<Vec<u8>>) -> Vec<(Option<u16>, ShardProblem)> {
        match r {
            Err(Error::NotEnoughShards { rejected, .. }) => {
                rejected.into_iter().map(|r| (r.index, r.problem)).collect()
            }
            other => panic!("expected NotEnoughShards, got {other:?}"),
        }
    }

    #[test]
    fn a_micro_batch_encodes_as_its_stripe_does_and_its_layout_needs_no_rehash() {
        let txs: Vec<Vec<u8>> = (0..5).map(|i| payload(700 + i)).collect();
        let mb = crate::MicroBatch::from_tx_bytes(&txs).unwrap();
        let c = cfg(CodecId::ReedSolomonSimd, 4, 2);
        let shards = c.encode_batch(&mb).unwrap();
        assert_eq!(shards, c.encode(&mb.stripe).unwrap());
        assert!(shards.iter().all(|s| s.check().is_ok()));
        assert_eq!(
            StripeLayout::from_encoded(&shards).unwrap(),
            StripeLayout::from_shards(&shards).unwrap()
        );
        // The header checks still run: a shard of another stripe is refused by both.
        let other = c.encode(&payload(3000)).unwrap();
        let mut mixed = shards.clone();
        mixed[2] = other[2].clone();
        assert!(StripeLayout::from_encoded(&mixed).is_err());
        assert!(StripeLayout::from_shards(&mixed).is_err());
        // Only from_shards re-hashes the data: a flipped byte is caught there.
        let mut flipped = shards.clone();
        flipped[1].data[0] ^= 1;
        assert!(matches!(
            StripeLayout::from_shards(&flipped),
            Err(Error::BadShard {
                problem: ShardProblem::HashMismatch,
                ..
            })
        ));
        assert!(flipped[1].check_header().is_ok());
    }

    #[test]
    fn without_a_manifest_the_largest_group_of_parameters_wins_even_when_it_comes_last() {
        let data = payload(1000);
        let (x, _) = (CodecId::ALL[0], CodecId::ALL[1]);
        let a = cfg(x, 4, 2).encode(&data).unwrap();
        let b = cfg(x, 2, 2).encode(&data).unwrap();
        assert_eq!(
            a[0].stripe_id(),
            b[0].stripe_id(),
            "same bytes, same stripe id"
        );
        // One 2+2 shard first, then four 4+2 shards: the four decide.
        let mut shards = vec![b[0].clone()];
        shards.extend(a[..4].iter().cloned());
        assert_eq!(decode(a[0].stripe_id(), &shards).unwrap(), data);
    }

    #[test]
    fn without_a_manifest_a_tie_goes_to_the_group_seen_first() {
        let data = payload(1000);
        let x = CodecId::ALL[0];
        let a = cfg(x, 4, 2).encode(&data).unwrap();
        let b = cfg(x, 2, 2).encode(&data).unwrap();
        // Two 2+2 shards (enough: k = 2) before two 4+2 shards (not enough): 2+2 is chosen.
        let shards = vec![b[0].clone(), b[1].clone(), a[0].clone(), a[1].clone()];
        assert_eq!(decode(a[0].stripe_id(), &shards).unwrap(), data);
        // The other order: 4+2 is chosen, and two of its shards are not enough.
        let shards = vec![a[0].clone(), a[1].clone(), b[0].clone(), b[1].clone()];
        let r = rejected(decode(a[0].stripe_id(), &shards));
        assert_eq!(
            r,
            vec![
                (Some(0), ShardProblem::Inconsistent { field: "k/m" }),
                (Some(1), ShardProblem::Inconsistent { field: "k/m" }),
            ]
        );
    }

    #[test]
    fn inconsistent_shards_name_the_field_and_identical_copies_are_harmless() {
        let data = payload(1000);
        let (x, y) = (CodecId::ALL[0], CodecId::ALL[1]);
        let a = cfg(x, 4, 2).encode(&data).unwrap();
        let other_k = cfg(x, 2, 2).encode(&data).unwrap();
        let other_m = cfg(x, 4, 3).encode(&data).unwrap();
        let other_codec = cfg(y, 4, 2).encode(&data).unwrap();
        // Three good 4+2 shards (one sent twice, identical), one of each odd kind.
        let shards = vec![
            a[0].clone(),
            a[0].clone(),
            a[1].clone(),
            a[2].clone(),
            other_k[3].clone(),
            other_m[5].clone(),
            other_codec[4].clone(),
        ];
        let r = rejected(decode(a[0].stripe_id(), &shards));
        assert_eq!(
            r,
            vec![
                (Some(3), ShardProblem::Inconsistent { field: "k/m" }),
                (Some(5), ShardProblem::Inconsistent { field: "k/m" }),
                (Some(4), ShardProblem::Inconsistent { field: "codec" }),
            ],
            "an identical copy is not a duplicate"
        );
        // A different shard under an index already taken is a duplicate.
        let mut forged = a[1].clone();
        forged.header.index = 0;
        let r = rejected(decode(a[0].stripe_id(), &[a[0].clone(), forged]));
        assert_eq!(r, vec![(Some(0), ShardProblem::Duplicate)]);
    }

    #[test]
    fn a_stripe_of_exactly_the_maximum_encodes_and_one_byte_more_is_refused() {
        let cfg = ErasureConfig::default();
        let mut stripe = vec![0u8; MAX_STRIPE_LEN];
        let shards = cfg.encode(&stripe).unwrap();
        assert_eq!(shards.len(), 6);
        stripe.push(0);
        assert!(matches!(
            cfg.encode(&stripe),
            Err(Error::StripeTooLarge { len, max }) if len == MAX_STRIPE_LEN + 1 && max == MAX_STRIPE_LEN
        ));
    }

    #[test]
    fn every_k_subset_decodes_both_codecs() {
        for codec in CodecId::ALL {
            let cfg = ErasureConfig::new(codec, 4, 2).unwrap();
            let data = payload(1001);
            let shards = cfg.encode(&data).unwrap();
            let id = shards[0].stripe_id();
            for a in 0..6 {
                for b in a + 1..6 {
                    let rest: Vec<Shard> = shards
                        .iter()
                        .filter(|s| s.index() != a && s.index() != b)
                        .cloned()
                        .collect();
                    assert_eq!(decode(id, &rest).unwrap(), data, "{codec} lost {a},{b}");
                }
            }
        }
    }

    #[test]
    fn too_few_names_counts() {
        let shards = ErasureConfig::default().encode(&payload(100)).unwrap();
        let id = shards[0].stripe_id();
        let mut three = shards[..3].to_vec();
        three[0].data[0] ^= 1;
        let err = decode(id, &three).unwrap_err();
        match &err {
            Error::NotEnoughShards {
                good,
                needed,
                rejected,
                ..
            } => {
                assert_eq!((*good, *needed), (2, 4));
                assert_eq!(rejected[0].problem, ShardProblem::HashMismatch);
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("found 2 good shards, need 4"), "{msg}");
        assert!(msg.contains("shard 0: data fails"), "{msg}");
    }

    #[test]
    fn foreign_stripe_and_inconsistent_params_are_rejected() {
        let a = ErasureConfig::default().encode(&payload(100)).unwrap();
        let b = ErasureConfig::default().encode(&payload(101)).unwrap();
        let id = a[0].stripe_id();
        let mixed = vec![a[0].clone(), a[1].clone(), a[2].clone(), b[3].clone()];
        let err = decode(id, &mixed).unwrap_err();
        assert!(
            matches!(err, Error::NotEnoughShards { good: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("belongs to stripe"));
    }

    #[test]
    fn identical_duplicates_are_harmless_conflicting_ones_rejected() {
        let shards = ErasureConfig::default().encode(&payload(64)).unwrap();
        let id = shards[0].stripe_id();
        let dup = vec![
            shards[0].clone(),
            shards[0].clone(),
            shards[1].clone(),
            shards[2].clone(),
            shards[3].clone(),
        ];
        assert_eq!(decode(id, &dup).unwrap(), payload(64));
        // A self-consistent forgery of index 0 (hash recomputed) is a conflicting duplicate.
        let mut forged = shards[0].clone();
        forged.data[0] ^= 0xff;
        forged.header.shard_hash = ShardHash(Hash32::digest(&forged.data));
        let set = vec![shards[0].clone(), forged.clone(), shards[1].clone()];
        let err = decode(id, &set).unwrap_err();
        assert!(err.to_string().contains("conflicting duplicate"), "{err}");
        // Without the honest copy, the forgery is caught by the stripe hash...
        let set = vec![
            forged.clone(),
            shards[1].clone(),
            shards[2].clone(),
            shards[3].clone(),
        ];
        assert!(matches!(
            decode(id, &set),
            Err(Error::StripeHashMismatch { .. })
        ));
        // ...and by the manifest before decoding.
        let layout = StripeLayout::from_shards(&shards).unwrap();
        let mut set = set;
        set.push(shards[4].clone());
        assert_eq!(layout.decode(&set).unwrap(), payload(64));
    }

    #[test]
    fn rebuild_recreates_lost_shards_exactly() {
        for codec in CodecId::ALL {
            let cfg = ErasureConfig::new(codec, 3, 3).unwrap();
            let shards = cfg.encode(&payload(777)).unwrap();
            let layout = StripeLayout::from_shards(&shards).unwrap();
            let rebuilt = layout.rebuild(&shards[3..], &[0, 1]).unwrap();
            assert_eq!(rebuilt, shards[..2].to_vec());
        }
    }

    #[test]
    fn empty_and_tiny_stripes() {
        for codec in CodecId::ALL {
            let cfg = ErasureConfig::new(codec, 4, 2).unwrap();
            for n in [0usize, 1, 3, 4, 5] {
                let s = cfg.encode(&payload(n)).unwrap();
                let id = s[0].stripe_id();
                assert_eq!(decode(id, &s[2..]).unwrap(), payload(n));
            }
        }
    }
}

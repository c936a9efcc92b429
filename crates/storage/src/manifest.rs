//! What a city node keeps about a stripe: its [`StripeLayout`] (codec, k, m, length, the
//! hash of every shard), its holders ([`StripeManifest`]), and the proof that it is held
//! ([`Held`]: verified receipts from distinct holders).
//!
//! Receipts (PoH_ACK) are dag-core's [`SignedReceipt`]: a holder signs (stripe id, shard
//! index, shard hash, holder id, time) with its ML-DSA-87 key ([`issue_receipt`]); the city
//! checks each against the layout ([`verify_receipt`]) and gathers them into a [`Held`].

use crate::codec::{CodecId, ErasureConfig};
use crate::error::ShardProblem;
use crate::shard::{Shard, ShardHeader};
use crate::{Error, Result};
use dag_core::{
    DecodeError, NodeId, Reader, Receipt, ShardHash, SignatureVerifier, SignedReceipt, Signer,
    StripeId, VerifiedReceipt, Writer,
};
use std::collections::BTreeSet;

/// The shape of an encoded stripe: everything needed to check any of its shards and to
/// rebuild it, without the data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StripeLayout {
    /// BLAKE3 of the stripe bytes.
    pub stripe_id: StripeId,
    /// Codec.
    pub codec: CodecId,
    /// Data shards.
    pub k: u16,
    /// Parity shards.
    pub m: u16,
    /// Stripe length in bytes.
    pub len: u64,
    /// BLAKE3 of each shard's data, by index (k + m entries).
    pub shard_hashes: Vec<ShardHash>,
}

impl StripeLayout {
    /// The layout of a complete set of shards (all k + m, any order), as made by
    /// [`ErasureConfig::encode`]. Every shard is checked and must agree with the others.
    pub fn from_shards(shards: &[Shard]) -> Result<Self> {
        Self::layout(shards, true)
    }

    /// [`StripeLayout::from_shards`] for shards this process has just encoded: the same
    /// checks, but their data is not hashed again (each `shard_hash` was computed from it).
    pub fn from_encoded(shards: &[Shard]) -> Result<Self> {
        Self::layout(shards, false)
    }

    fn layout(shards: &[Shard], hash_data: bool) -> Result<Self> {
        let first = shards.first().ok_or(Error::InvalidParams {
            k: 0,
            m: 0,
            reason: "no shards given",
        })?;
        let h0 = first.header;
        let n = usize::from(h0.k) + usize::from(h0.m);
        let mut hashes: Vec<Option<ShardHash>> = vec![None; n];
        for s in shards {
            let bad = |problem| Error::BadShard {
                stripe_id: Some(s.header.stripe_id),
                index: Some(s.header.index),
                problem,
            };
            if hash_data {
                s.check().map_err(bad)?;
            } else {
                s.check_header().map_err(bad)?;
            }
            let h = &s.header;
            if h.stripe_id != h0.stripe_id {
                return Err(bad(ShardProblem::WrongStripe { got: h.stripe_id }));
            }
            if (h.codec, h.k, h.m, h.original_len) != (h0.codec, h0.k, h0.m, h0.original_len) {
                return Err(bad(ShardProblem::Inconsistent {
                    field: "codec/k/m/length",
                }));
            }
            let slot = &mut hashes[usize::from(h.index)];
            if slot.is_some() {
                return Err(bad(ShardProblem::Duplicate));
            }
            *slot = Some(h.shard_hash);
        }
        let shard_hashes = hashes
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.ok_or(Error::NotEnoughShards {
                    stripe_id: h0.stripe_id,
                    good: shards.len(),
                    needed: n,
                    rejected: vec![crate::Rejected {
                        index: u16::try_from(i).ok(),
                        problem: ShardProblem::Malformed("missing from the set".into()),
                    }],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StripeLayout {
            stripe_id: h0.stripe_id,
            codec: h0.codec,
            k: h0.k,
            m: h0.m,
            len: h0.original_len,
            shard_hashes,
        })
    }

    /// Codec, k and m.
    pub fn config(&self) -> ErasureConfig {
        ErasureConfig {
            codec: self.codec,
            k: self.k,
            m: self.m,
        }
    }

    /// Total shards, k + m.
    pub fn n(&self) -> u16 {
        self.k + self.m
    }

    /// Whether a shard header belongs to this layout (stripe, parameters, index, hash).
    pub(crate) fn admits(&self, h: &ShardHeader) -> std::result::Result<(), ShardProblem> {
        if h.stripe_id != self.stripe_id {
            return Err(ShardProblem::WrongStripe { got: h.stripe_id });
        }
        if h.codec != self.codec {
            return Err(ShardProblem::Inconsistent { field: "codec" });
        }
        if (h.k, h.m) != (self.k, self.m) {
            return Err(ShardProblem::Inconsistent { field: "k/m" });
        }
        if h.original_len != self.len {
            return Err(ShardProblem::Inconsistent {
                field: "original_len",
            });
        }
        match self.shard_hashes.get(usize::from(h.index)) {
            None => Err(ShardProblem::IndexOutOfRange {
                index: h.index,
                n: self.n(),
            }),
            Some(x) if *x != h.shard_hash => Err(ShardProblem::HashMismatch),
            Some(_) => Ok(()),
        }
    }

    /// Checks a shard fully: its own checks, then agreement with this layout (stripe,
    /// parameters, index and the hash recorded for that index).
    pub fn check_shard(&self, shard: &Shard) -> Result<()> {
        shard
            .check()
            .and_then(|()| self.admits(&shard.header))
            .map_err(|problem| Error::BadShard {
                stripe_id: Some(shard.header.stripe_id),
                index: Some(shard.header.index),
                problem,
            })
    }
}

/// A stripe's layout and who holds each shard (`None`: nobody, e.g. after a holder left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeManifest {
    /// The layout.
    pub layout: StripeLayout,
    /// Holder of each shard index (k + m entries).
    pub holders: Vec<Option<NodeId>>,
}

const MANIFEST_MAGIC: [u8; 4] = *b"CCMF";
const MANIFEST_VERSION: u8 = 1;

impl StripeManifest {
    /// A manifest with no holders yet.
    pub fn unplaced(layout: StripeLayout) -> Self {
        let n = layout.shard_hashes.len();
        StripeManifest {
            layout,
            holders: vec![None; n],
        }
    }

    /// The stripe.
    pub fn stripe_id(&self) -> StripeId {
        self.layout.stripe_id
    }

    /// Records `node` as the holder of shard `index` (after a put or a repair).
    pub fn set_holder(&mut self, index: u16, node: NodeId) -> Result<()> {
        let n = self.layout.n();
        let slot = self
            .holders
            .get_mut(usize::from(index))
            .ok_or(Error::BadShard {
                stripe_id: Some(self.layout.stripe_id),
                index: Some(index),
                problem: ShardProblem::IndexOutOfRange { index, n },
            })?;
        *slot = Some(node);
        Ok(())
    }

    /// Indexes held by `node`.
    pub fn indexes_held_by(&self, node: &NodeId) -> Vec<u16> {
        self.holders
            .iter()
            .enumerate()
            .filter(|(_, h)| h.as_ref() == Some(node))
            .filter_map(|(i, _)| u16::try_from(i).ok())
            .collect()
    }

    /// Distinct holders.
    pub fn distinct_holders(&self) -> BTreeSet<NodeId> {
        self.holders.iter().flatten().copied().collect()
    }

    /// Canonical bytes, for persisting:
    /// `"CCMF" | 1 | stripe_id | codec u8 | k u16 | m u16 | len u64 | n × shard_hash |
    /// n × (0 | 1 ‖ node_id)`.
    pub fn encode(&self) -> Vec<u8> {
        let l = &self.layout;
        let mut w = Writer::with_capacity(64 + 65 * l.shard_hashes.len());
        w.raw(&MANIFEST_MAGIC)
            .u8(MANIFEST_VERSION)
            .raw(l.stripe_id.as_bytes())
            .u8(l.codec.as_u8())
            .u16(l.k)
            .u16(l.m)
            .u64(l.len);
        for h in &l.shard_hashes {
            w.raw(h.as_bytes());
        }
        for h in &self.holders {
            match h {
                None => w.u8(0),
                Some(id) => w.u8(1).raw(id.as_bytes()),
            };
        }
        w.finish()
    }

    /// Strict decoding of [`StripeManifest::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let de = |source| Error::Decode {
            what: "stripe manifest",
            source,
        };
        let invalid = |field, reason| de(DecodeError::Invalid { field, reason });
        let mut r = Reader::new(bytes);
        if r.take(4, "magic").map_err(de)? != MANIFEST_MAGIC {
            return Err(invalid("magic", "not a stripe manifest"));
        }
        let v = r.u8("version").map_err(de)?;
        if v != MANIFEST_VERSION {
            return Err(de(DecodeError::UnsupportedVersion(v)));
        }
        let stripe_id = StripeId::from_bytes(r.bytes32("stripe_id").map_err(de)?);
        let codec = CodecId::from_u8(r.u8("codec").map_err(de)?)
            .ok_or_else(|| invalid("codec", "unknown codec id"))?;
        let k = r.u16("k").map_err(de)?;
        let m = r.u16("m").map_err(de)?;
        ErasureConfig { codec, k, m }
            .validate()
            .map_err(|_| invalid("k/m", "out of range"))?;
        let len = r.u64("len").map_err(de)?;
        let n = usize::from(k + m);
        let mut shard_hashes = Vec::with_capacity(n);
        for _ in 0..n {
            shard_hashes.push(ShardHash::from_bytes(r.bytes32("shard_hash").map_err(de)?));
        }
        let mut holders = Vec::with_capacity(n);
        for _ in 0..n {
            holders.push(match r.u8("holder tag").map_err(de)? {
                0 => None,
                1 => Some(NodeId::from_bytes(r.bytes32("holder").map_err(de)?)),
                _ => return Err(invalid("holder tag", "expected 0 or 1")),
            });
        }
        r.finish().map_err(de)?;
        Ok(StripeManifest {
            layout: StripeLayout {
                stripe_id,
                codec,
                k,
                m,
                len,
                shard_hashes,
            },
            holders,
        })
    }
}

/// Signs a receipt (PoH_ACK) for a stored shard: (stripe id, index, shard hash, holder id =
/// BLAKE3 of the signer's public key, `time_ms`). Used by light nodes after a put.
pub fn issue_receipt(
    shard: &ShardHeader,
    signer: &(impl Signer + ?Sized),
    time_ms: u64,
) -> SignedReceipt {
    let receipt = Receipt {
        stripe_id: shard.stripe_id,
        shard_index: shard.index,
        shard_hash: shard.shard_hash,
        holder: NodeId::from_public_key(signer.public_key()),
        time_ms,
    };
    SignedReceipt::sign(receipt, signer)
}

/// Verifies one receipt against a layout: the signature (with `verifier`, `pqc::MlDsa87` in
/// production) by the key of the named holder, the stripe, the index range and the shard
/// hash recorded for that index.
pub fn verify_receipt(
    layout: &StripeLayout,
    signed: SignedReceipt,
    verifier: &(impl SignatureVerifier + ?Sized),
) -> Result<VerifiedReceipt> {
    let r = signed.receipt;
    let bad = |reason: String| Error::BadReceipt {
        stripe_id: layout.stripe_id,
        index: r.shard_index,
        reason,
    };
    if r.stripe_id != layout.stripe_id {
        return Err(bad(format!("names stripe {}", r.stripe_id.short())));
    }
    match layout.shard_hashes.get(usize::from(r.shard_index)) {
        None => return Err(bad(format!("index out of range (n = {})", layout.n()))),
        Some(h) if *h != r.shard_hash => {
            return Err(bad(format!(
                "names shard hash {}, manifest has {}",
                r.shard_hash.short(),
                h.short()
            )));
        }
        Some(_) => {}
    }
    signed.verify(verifier).map_err(|e| bad(e.to_string()))
}

/// Like [`verify_receipt`], and the holder must be `holder` (the node the shard was sent to).
pub fn verify_receipt_from(
    layout: &StripeLayout,
    signed: SignedReceipt,
    holder: &NodeId,
    verifier: &(impl SignatureVerifier + ?Sized),
) -> Result<VerifiedReceipt> {
    if signed.receipt.holder != *holder {
        return Err(Error::BadReceipt {
            stripe_id: layout.stripe_id,
            index: signed.receipt.shard_index,
            reason: format!(
                "signed by {}, expected holder {}",
                signed.receipt.holder.short(),
                holder.short()
            ),
        });
    }
    verify_receipt(layout, signed, verifier)
}

/// When a set of receipts makes a stripe Held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldRules {
    /// Receipts required; `None` means all n.
    pub min_receipts: Option<usize>,
    /// Accept one holder for several shards (only when fewer than n nodes exist; the
    /// resulting [`Held::colocated`] says so).
    pub allow_colocated: bool,
}

impl Default for HeldRules {
    /// All n receipts, from n distinct holders.
    fn default() -> Self {
        HeldRules {
            min_receipts: None,
            allow_colocated: false,
        }
    }
}

/// Proof that a stripe is held: verified receipts, one per index, from distinct holders
/// (unless [`Held::colocated`]), at least as many as the rules asked. Only
/// [`Held::verify`] and [`Held::from_verified`] make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    manifest: StripeManifest,
    receipts: Vec<VerifiedReceipt>,
    colocated: bool,
}

impl Held {
    /// Verifies every receipt ([`verify_receipt`]) and gathers them; any bad receipt is an
    /// error (a forged receipt never counts).
    pub fn verify(
        layout: &StripeLayout,
        receipts: impl IntoIterator<Item = SignedReceipt>,
        verifier: &(impl SignatureVerifier + ?Sized),
        rules: HeldRules,
    ) -> Result<Held> {
        let verified = receipts
            .into_iter()
            .map(|r| verify_receipt(layout, r, verifier))
            .collect::<Result<Vec<_>>>()?;
        Held::from_verified(layout, verified, rules)
    }

    /// Gathers receipts already verified with [`verify_receipt`] against `layout`.
    pub fn from_verified(
        layout: &StripeLayout,
        receipts: Vec<VerifiedReceipt>,
        rules: HeldRules,
    ) -> Result<Held> {
        let mut manifest = StripeManifest::unplaced(layout.clone());
        let mut holders = BTreeSet::new();
        let mut colocated = false;
        for v in &receipts {
            let r = v.receipt();
            let dup = |what: String| Error::DuplicateReceipt {
                stripe_id: layout.stripe_id,
                what,
            };
            if r.stripe_id != layout.stripe_id
                || layout.shard_hashes.get(usize::from(r.shard_index)) != Some(&r.shard_hash)
            {
                return Err(Error::BadReceipt {
                    stripe_id: layout.stripe_id,
                    index: r.shard_index,
                    reason: "does not match the layout".into(),
                });
            }
            if manifest.holders[usize::from(r.shard_index)].is_some() {
                return Err(dup(format!("two receipts for shard {}", r.shard_index)));
            }
            if !holders.insert(r.holder) {
                if !rules.allow_colocated {
                    return Err(dup(format!(
                        "node {} holds more than one shard",
                        r.holder.short()
                    )));
                }
                colocated = true;
            }
            manifest.set_holder(r.shard_index, r.holder)?;
        }
        let needed = rules
            .min_receipts
            .unwrap_or(usize::from(layout.n()))
            .min(usize::from(layout.n()));
        if receipts.len() < needed {
            return Err(Error::TooFewReceipts {
                stripe_id: layout.stripe_id,
                got: receipts.len(),
                needed,
            });
        }
        let mut receipts = receipts;
        receipts.sort_by_key(|v| v.receipt().shard_index);
        Ok(Held {
            manifest,
            receipts,
            colocated,
        })
    }

    /// The manifest, holders filled from the receipts.
    pub fn manifest(&self) -> &StripeManifest {
        &self.manifest
    }
    /// The verified receipts, by shard index.
    pub fn receipts(&self) -> &[VerifiedReceipt] {
        &self.receipts
    }
    /// True if some holder holds more than one shard (fewer than n nodes were available).
    pub fn colocated(&self) -> bool {
        self.colocated
    }
    /// True if every one of the n shards has a receipt.
    pub fn is_complete(&self) -> bool {
        self.receipts.len() == self.manifest.holders.len()
    }
    /// Shard indexes without a receipt (to place in the background).
    pub fn missing_indexes(&self) -> Vec<u16> {
        self.manifest
            .holders
            .iter()
            .enumerate()
            .filter(|(_, h)| h.is_none())
            .filter_map(|(i, _)| u16::try_from(i).ok())
            .collect()
    }
    /// Takes the parts.
    pub fn into_parts(self) -> (StripeManifest, Vec<VerifiedReceipt>) {
        (self.manifest, self.receipts)
    }
}

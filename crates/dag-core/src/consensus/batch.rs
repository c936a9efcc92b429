//! Batches: a representative's proposal for one round, its canonical encoding, digest and
//! signature.
//!
//! Encoding of a [`BatchHeader`] (all integers little endian), one of three versions:
//! - version 1, a header of epoch 0 without weak links: `version u8 (1) ‖ round u64 ‖
//!   author 32 ‖ timestamp_ms u64 ‖ parents: u16 count, 32 each ‖ items: u32 count, each
//!   kind u8 (0 tx, 1 stripe) ‖ id 32`;
//! - version 2, a header of epoch 0 with weak links: the same with `weak links: u16 count
//!   (≥ 1), 32 each` between the parents and the items;
//! - version 3, a header of a later epoch (≥ 1): `version u8 (3) ‖ epoch u64 ‖` then the
//!   version 2 fields, the weak links' count possibly 0.
//!
//! The encoder writes the version that can express the header, and the decoder refuses a
//! version 2 header with no weak links and a version 3 header of epoch 0, so every header
//! has exactly one encoding (and the headers of before weak links and epochs keep their
//! bytes and digests).
//! The digest is BLAKE3 of that encoding. The author signs
//! `domain::BATCH ‖ signed round u64 ‖ digest` ([`BatchHeader::signing_message`]) where the
//! signed round is [`signed_round`]`(epoch, round)` = `epoch × 2⁴⁰ + round` (just the round
//! in epoch 0): round plus digest, so a double-sign proof needs no header decoding (dpos
//! evidence), and, since each epoch's consensus numbers its rounds from 0 again, two honest
//! batches of one author in different epochs never look like a double sign.

use super::{Committee, ConsensusError, Result, domain};
use crate::{
    DecodeError, Hash32, NodeId, Reader, SignatureVerifier, Signer, StripeId, TxId, Writer,
};
use std::fmt;

/// A DAG round. Round 0 is genesis (no parents); even rounds have leaders.
pub type Round = u64;

/// Most items (tx ids or stripe ids) in one batch.
pub const MAX_BATCH_ITEMS: usize = 10_000;
/// Most parents of one batch (also bounded by the committee size).
pub const MAX_PARENTS: usize = 256;
/// Most weak links of one batch (certificates of earlier rounds that arrived too late to be
/// parents; see the driver's module docs).
pub const MAX_WEAK_LINKS: usize = 256;
/// Longest batch signature accepted.
const MAX_SIGNATURE_LEN: usize = crate::MAX_SIGNATURE_LEN;
/// Encoding version of a header without weak links.
const VERSION_PLAIN: u8 = 1;
/// Encoding version of a header with weak links.
const VERSION_WEAK_LINKS: u8 = 2;
/// Encoding version of a header of an epoch ≥ 1.
const VERSION_EPOCH: u8 = 3;
/// Rounds of an epoch ≥ 1 stay below this (2⁴⁰: 3,000 years at ten rounds a second), so
/// [`signed_round`] is unique per (epoch, round).
pub const MAX_EPOCH_ROUND: Round = 1 << 40;
/// Epochs stay below this (2²⁴), so [`signed_round`] fits a u64.
pub const MAX_EPOCH: u64 = 1 << 24;

/// The round number an author signs for a batch of `round` in `epoch`: `epoch × 2⁴⁰ +
/// round` ([`MAX_EPOCH_ROUND`]); in epoch 0 the round itself. Unique per (epoch, round)
/// for headers that pass [`BatchHeader::check_limits`], so a double-sign proof (two
/// digests signed for one signed round) is always two batches of one epoch and round.
pub fn signed_round(epoch: u64, round: Round) -> u64 {
    epoch.wrapping_mul(MAX_EPOCH_ROUND).wrapping_add(round)
}

/// Digest of a batch header: BLAKE3 of its canonical encoding. A certificate is named by the
/// digest of the batch it certifies.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BatchDigest(pub Hash32);

impl BatchDigest {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0.0
    }
    /// Short form for logs.
    pub fn short(&self) -> String {
        self.0.short()
    }
}

impl fmt::Debug for BatchDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchDigest({})", self.0.short())
    }
}

impl fmt::Display for BatchDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.short())
    }
}

/// What a batch orders: a held tx or a whole micro-batch (erasure-coded stripe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BatchItem {
    /// One tx by id.
    Tx(TxId),
    /// One micro-batch stripe by id.
    Stripe(StripeId),
}

/// A representative's proposal for one round.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchHeader {
    /// The consensus epoch (0 for the genesis committee; +1 at each reconfiguration). Each
    /// epoch is a fresh consensus instance: rounds start again at 0.
    pub epoch: u64,
    /// The round.
    pub round: Round,
    /// The proposer.
    pub author: NodeId,
    /// Proposer's clock when sealing, ms since the Unix epoch (from the dynamic batcher).
    pub timestamp_ms: u64,
    /// Digests of certified batches of `round − 1` (empty in round 0): the strong links the
    /// commit rule counts.
    pub parents: Vec<BatchDigest>,
    /// Weak links: digests of certified batches of rounds ≤ `round − 2` that the proposer
    /// holds and that are not yet in the causal history of its parents (late certificates).
    /// They bring those batches into this batch's causal history, so a later leader orders
    /// them, but never count as support for a leader. Empty in rounds 0 and 1.
    pub weak_links: Vec<BatchDigest>,
    /// Held txs or micro-batches to order.
    pub items: Vec<BatchItem>,
}

impl BatchHeader {
    /// Canonical encoding (see the module docs). Panics only if the limits are exceeded,
    /// which [`BatchHeader::check_limits`] rules out.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(
            1 + 8
                + 8
                + 32
                + 8
                + 2
                + 32 * self.parents.len()
                + 2
                + 32 * self.weak_links.len()
                + 4
                + 33 * self.items.len(),
        );
        self.write(&mut w);
        w.finish()
    }

    fn write(&self, w: &mut Writer) {
        let parents = u16::try_from(self.parents.len()).unwrap_or(u16::MAX);
        let items = u32::try_from(self.items.len()).unwrap_or(u32::MAX);
        let version = if self.epoch > 0 {
            VERSION_EPOCH
        } else if self.weak_links.is_empty() {
            VERSION_PLAIN
        } else {
            VERSION_WEAK_LINKS
        };
        w.u8(version);
        if version == VERSION_EPOCH {
            w.u64(self.epoch);
        }
        w.u64(self.round)
            .raw(self.author.as_bytes())
            .u64(self.timestamp_ms)
            .u16(parents);
        for p in &self.parents {
            w.raw(p.as_bytes());
        }
        if version != VERSION_PLAIN {
            w.u16(u16::try_from(self.weak_links.len()).unwrap_or(u16::MAX));
            for l in &self.weak_links {
                w.raw(l.as_bytes());
            }
        }
        w.u32(items);
        for item in &self.items {
            match item {
                BatchItem::Tx(id) => w.u8(0).raw(id.as_bytes()),
                BatchItem::Stripe(id) => w.u8(1).raw(id.as_bytes()),
            };
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> std::result::Result<Self, DecodeError> {
        let version = r.u8("batch version")?;
        if !matches!(version, VERSION_PLAIN | VERSION_WEAK_LINKS | VERSION_EPOCH) {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let epoch = if version == VERSION_EPOCH {
            let e = r.u64("epoch")?;
            if e == 0 {
                return Err(DecodeError::Invalid {
                    field: "epoch",
                    reason: "a version 3 header is of an epoch ≥ 1 (epoch 0 is version 1 or 2)",
                });
            }
            e
        } else {
            0
        };
        let round = r.u64("round")?;
        let author = NodeId::from_bytes(r.bytes32("author")?);
        let timestamp_ms = r.u64("timestamp_ms")?;
        let n_parents = r.count_u16("parents", MAX_PARENTS)?;
        let mut parents = Vec::with_capacity(n_parents.min(r.remaining() / 32));
        for _ in 0..n_parents {
            parents.push(BatchDigest(Hash32(r.bytes32("parent")?)));
        }
        let mut weak_links = Vec::new();
        if version != VERSION_PLAIN {
            let n = r.u16("weak links")? as usize;
            if n == 0 && version == VERSION_WEAK_LINKS {
                return Err(DecodeError::Invalid {
                    field: "weak links",
                    reason: "a version 2 header carries at least one weak link (without, it is version 1)",
                });
            }
            Reader::check_len("weak links", n, MAX_WEAK_LINKS)?;
            weak_links.reserve(n.min(r.remaining() / 32));
            for _ in 0..n {
                weak_links.push(BatchDigest(Hash32(r.bytes32("weak link")?)));
            }
        }
        let n_items = r.u32("items")? as usize;
        Reader::check_len("batch items", n_items, MAX_BATCH_ITEMS)?;
        let mut items = Vec::with_capacity(n_items.min(r.remaining() / 33));
        for _ in 0..n_items {
            let kind = r.u8("item kind")?;
            let id = r.bytes32("item id")?;
            items.push(match kind {
                0 => BatchItem::Tx(TxId::from_bytes(id)),
                1 => BatchItem::Stripe(StripeId::from_bytes(id)),
                _ => {
                    return Err(DecodeError::Invalid {
                        field: "item kind",
                        reason: "expected 0 (tx) or 1 (stripe)",
                    });
                }
            });
        }
        Ok(BatchHeader {
            epoch,
            round,
            author,
            timestamp_ms,
            parents,
            weak_links,
            items,
        })
    }

    /// Strict decoding of [`BatchHeader::encode`].
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let h = Self::read(&mut r)?;
        r.finish()?;
        Ok(h)
    }

    /// BLAKE3 of the canonical encoding.
    pub fn digest(&self) -> BatchDigest {
        let mut w = Writer::default();
        self.write(&mut w);
        BatchDigest(Hash32::digest(w.as_slice()))
    }

    /// The message an author signs for a batch with this signed round
    /// ([`signed_round`]`(epoch, round)`) and digest:
    /// `domain::BATCH ‖ signed round (u64 LE) ‖ digest (32 bytes)`.
    pub fn signing_message_for(round: u64, digest: &BatchDigest) -> Vec<u8> {
        let mut m = Vec::with_capacity(domain::BATCH.len() + 40);
        m.extend_from_slice(domain::BATCH);
        m.extend_from_slice(&round.to_le_bytes());
        m.extend_from_slice(digest.as_bytes());
        m
    }

    /// The message the author signs for this header.
    pub fn signing_message(&self) -> Vec<u8> {
        Self::signing_message_for(self.signed_round(), &self.digest())
    }

    /// [`signed_round`] of this header's epoch and round.
    pub fn signed_round(&self) -> u64 {
        signed_round(self.epoch, self.round)
    }

    /// Stateless rules: size limits of items, parents (also at most the committee size) and
    /// weak links; genesis has no parents; rounds 0 and 1 have no weak links; no weak link
    /// is listed twice.
    pub fn check_limits(&self, committee: &Committee) -> Result<()> {
        if self.epoch >= MAX_EPOCH || (self.epoch > 0 && self.round >= MAX_EPOCH_ROUND) {
            return Err(ConsensusError::EpochOutOfRange {
                epoch: self.epoch,
                round: self.round,
            });
        }
        if self.items.len() > MAX_BATCH_ITEMS {
            return Err(ConsensusError::Oversized {
                field: "batch items",
                len: self.items.len(),
                max: MAX_BATCH_ITEMS,
            });
        }
        let max_parents = committee.size().min(MAX_PARENTS);
        if self.parents.len() > max_parents {
            return Err(ConsensusError::Oversized {
                field: "parents",
                len: self.parents.len(),
                max: max_parents,
            });
        }
        if self.round == 0 && !self.parents.is_empty() {
            return Err(ConsensusError::GenesisWithParents {
                digest: self.digest(),
                count: self.parents.len(),
            });
        }
        if self.weak_links.len() > MAX_WEAK_LINKS {
            return Err(ConsensusError::Oversized {
                field: "weak links",
                len: self.weak_links.len(),
                max: MAX_WEAK_LINKS,
            });
        }
        if self.round < 2 && !self.weak_links.is_empty() {
            return Err(ConsensusError::WeakLinksTooEarly {
                digest: self.digest(),
                round: self.round,
                count: self.weak_links.len(),
            });
        }
        for (i, l) in self.weak_links.iter().enumerate() {
            if self.weak_links[..i].contains(l) {
                return Err(ConsensusError::DuplicateWeakLink {
                    digest: self.digest(),
                    link: *l,
                });
            }
        }
        Ok(())
    }
}

/// A batch header with its author's signature, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedBatch {
    /// The proposal.
    pub header: BatchHeader,
    /// Author's signature over [`BatchHeader::signing_message`].
    pub signature: Vec<u8>,
}

impl SignedBatch {
    /// Signs a header. The signer must be the header's author.
    pub fn sign(header: BatchHeader, signer: &(impl Signer + ?Sized)) -> Self {
        let signature = signer.sign(&header.signing_message());
        SignedBatch { header, signature }
    }

    /// The header's digest.
    pub fn digest(&self) -> BatchDigest {
        self.header.digest()
    }

    /// Checks the batch is of the committee's epoch, the author is a member, the limits
    /// hold and the signature verifies.
    pub fn verify(
        &self,
        committee: &Committee,
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> Result<()> {
        let h = &self.header;
        if h.epoch != committee.epoch() {
            return Err(ConsensusError::WrongEpoch {
                epoch: h.epoch,
                expected: committee.epoch(),
            });
        }
        let author = committee
            .authority(&h.author)
            .ok_or(ConsensusError::UnknownAuthority {
                role: "author",
                node: h.author,
            })?;
        h.check_limits(committee)?;
        let digest = h.digest();
        verifier
            .verify(
                &author.public_key,
                &BatchHeader::signing_message_for(h.signed_round(), &digest),
                &self.signature,
            )
            .map_err(|source| ConsensusError::BadSignature {
                what: format!(
                    "batch {} of round {} by {}",
                    digest.short(),
                    h.round,
                    h.author.short()
                ),
                source,
            })
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        self.header.write(w);
        w.bytes_u16(&self.signature);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> std::result::Result<Self, DecodeError> {
        let header = BatchHeader::read(r)?;
        let signature = r.bytes_u16("batch signature", MAX_SIGNATURE_LEN)?.to_vec();
        Ok(SignedBatch { header, signature })
    }

    /// Canonical encoding: header, then the signature with a u16 length.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(&mut w);
        w.finish()
    }

    /// Strict decoding.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let b = Self::read(&mut r)?;
        r.finish()?;
        Ok(b)
    }
}

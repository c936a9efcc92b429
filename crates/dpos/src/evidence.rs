//! Double-sign evidence: two different header digests for the same round, both signed by
//! the same author key.
//!
//! # For the producers of evidence (DAG / consensus, continent and global logs)
//!
//! The unit of evidence is a [`SignedHeaderDigest`]: `(author, round, digest, public key,
//! signature)`, where the signature is over
//!
//! ```text
//! level.domain_tag() ‖ round (u64 little endian) ‖ digest (32 bytes)
//! ```
//!
//! and `author = BLAKE3(public key)` (a [`NodeId`]; the offender's account id has the same
//! bytes). At [`SlashLevel::City`] the tag is `b"citychain/dag-batch/v1"`, which is exactly
//! what dag-core's consensus signs for a batch header (`BatchHeader::signing_message_for`),
//! so a `dag_core::consensus::Equivocation` plus the author's committee key converts with
//! [`DoubleSignEvidence::from_equivocation`] (or, from raw parts `(round, [(digest,
//! signature); 2])`, with [`DoubleSignEvidence::from_double_sign`]). Continent and global
//! logs sign their headers with `b"citychain/continent-header/v1"` /
//! `b"citychain/global-header/v1"` the same way. Nothing here decodes a header: only the
//! round and the digest are signed-over facts that matter.
//!
//! One offence is one `(level, author, round)`: whichever pair of conflicting headers proves
//! it, it slashes once ([`DoubleSignEvidence::offence_id`]).

use crate::{Error, Result, SlashLevel};
use dag_core::{
    AccountId, DecodeError, Hash32, MAX_KEY_LEN, MAX_SIGNATURE_LEN, NodeId, Reader,
    SignatureVerifier, Signer, Writer,
};
use serde::{Deserialize, Serialize};

/// Domain tag of an offence id.
const OFFENCE_DOMAIN: &[u8] = b"citychain/dpos-offence/v1";

/// A header digest for one round, signed by its author. Signature not yet checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedHeaderDigest {
    /// The author: BLAKE3 of `public_key`.
    pub author: NodeId,
    /// The round (DAG round or log height).
    pub round: u64,
    /// Digest of the header (BLAKE3 of its canonical encoding).
    pub digest: Hash32,
    /// The author's ML-DSA-87 public key.
    pub public_key: Vec<u8>,
    /// Signature over [`SignedHeaderDigest::signing_message`].
    pub signature: Vec<u8>,
}

impl SignedHeaderDigest {
    /// `level.domain_tag() ‖ round (u64 LE) ‖ digest`.
    pub fn signing_message(level: SlashLevel, round: u64, digest: &Hash32) -> Vec<u8> {
        let tag = level.domain_tag();
        let mut m = Vec::with_capacity(tag.len() + 40);
        m.extend_from_slice(tag);
        m.extend_from_slice(&round.to_le_bytes());
        m.extend_from_slice(&digest.0);
        m
    }

    /// Signs `(round, digest)` at `level` with `signer` (the author).
    pub fn sign(
        level: SlashLevel,
        round: u64,
        digest: Hash32,
        signer: &(impl Signer + ?Sized),
    ) -> Self {
        let public_key = signer.public_key().to_vec();
        SignedHeaderDigest {
            author: NodeId::from_public_key(&public_key),
            round,
            digest,
            signature: signer.sign(&Self::signing_message(level, round, &digest)),
            public_key,
        }
    }

    /// Checks the key belongs to the author and the signature verifies at `level`.
    pub fn verify(
        &self,
        level: SlashLevel,
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> Result<()> {
        if NodeId::from_public_key(&self.public_key) != self.author {
            return Err(Error::BadEvidence {
                reason: "public key does not hash to the author",
            });
        }
        verifier
            .verify(
                &self.public_key,
                &Self::signing_message(level, self.round, &self.digest),
                &self.signature,
            )
            .map_err(|source| Error::EvidenceSignature {
                which: 0,
                author: self.author,
                round: self.round,
                source,
            })
    }
}

/// Proof that one author signed two different headers for the same round at one level.
/// Built only through [`DoubleSignEvidence::new`] (or decoding), which checks the structure;
/// [`DoubleSignEvidence::verify`] checks both signatures.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DoubleSignEvidence {
    level: SlashLevel,
    // Canonical order: first.digest < second.digest.
    first: SignedHeaderDigest,
    second: SignedHeaderDigest,
}

impl DoubleSignEvidence {
    /// Pairs two signed digests; fails unless same author, same key, same round and
    /// different digests, and the key hashes to the author. The pair is stored in digest
    /// order, so `(a, b)` and `(b, a)` are the same evidence.
    pub fn new(level: SlashLevel, a: SignedHeaderDigest, b: SignedHeaderDigest) -> Result<Self> {
        if a.author != b.author {
            return Err(Error::BadEvidence {
                reason: "headers have different authors",
            });
        }
        if a.public_key != b.public_key {
            return Err(Error::BadEvidence {
                reason: "headers carry different public keys",
            });
        }
        if a.round != b.round {
            return Err(Error::BadEvidence {
                reason: "headers are for different rounds",
            });
        }
        if a.digest == b.digest {
            return Err(Error::BadEvidence {
                reason: "the same header twice is not a double sign",
            });
        }
        if NodeId::from_public_key(&a.public_key) != a.author {
            return Err(Error::BadEvidence {
                reason: "public key does not hash to the author",
            });
        }
        // The encoding's limits (so `write` never panics and decoding accepts what we wrote).
        if a.public_key.len() > MAX_KEY_LEN
            || a.signature.len() > MAX_SIGNATURE_LEN
            || b.signature.len() > MAX_SIGNATURE_LEN
        {
            return Err(Error::BadEvidence {
                reason: "key or signature longer than the encoding allows",
            });
        }
        let (first, second) = if a.digest < b.digest { (a, b) } else { (b, a) };
        Ok(DoubleSignEvidence {
            level,
            first,
            second,
        })
    }

    /// From the compact form consensus produces (`Equivocation::double_sign()`): the
    /// author's key, the round and two `(digest, signature)` pairs.
    pub fn from_double_sign(
        level: SlashLevel,
        author_public_key: &[u8],
        round: u64,
        pairs: [(Hash32, Vec<u8>); 2],
    ) -> Result<Self> {
        let author = NodeId::from_public_key(author_public_key);
        let [(d1, s1), (d2, s2)] = pairs;
        let mk = |digest, signature| SignedHeaderDigest {
            author,
            round,
            digest,
            public_key: author_public_key.to_vec(),
            signature,
        };
        Self::new(level, mk(d1, s1), mk(d2, s2))
    }

    /// From consensus' equivocation proof (city level): `author_public_key` is the author's
    /// committee key. The signatures are checked later, by [`DoubleSignEvidence::verify`].
    pub fn from_equivocation(
        eq: &dag_core::consensus::Equivocation,
        author_public_key: &[u8],
    ) -> Result<Self> {
        let (round, [(d1, s1), (d2, s2)]) = eq.double_sign();
        let e = Self::from_double_sign(
            SlashLevel::City,
            author_public_key,
            round,
            [(d1.0, s1.to_vec()), (d2.0, s2.to_vec())],
        )?;
        if e.author() != eq.author() {
            return Err(Error::BadEvidence {
                reason: "public key does not hash to the author",
            });
        }
        Ok(e)
    }

    /// The level (decides the slashed fraction).
    pub fn level(&self) -> SlashLevel {
        self.level
    }
    /// The accused author.
    pub fn author(&self) -> NodeId {
        self.first.author
    }
    /// The accused author's account (same bytes as its node id).
    pub fn offender(&self) -> AccountId {
        AccountId(self.first.author.0)
    }
    /// The round.
    pub fn round(&self) -> u64 {
        self.first.round
    }
    /// Both signed digests, in digest order.
    pub fn headers(&self) -> (&SignedHeaderDigest, &SignedHeaderDigest) {
        (&self.first, &self.second)
    }

    /// Id of the offence this proves: `BLAKE3(tag ‖ level ‖ author ‖ round)`. Every pair of
    /// conflicting headers for the same offence has the same id.
    pub fn offence_id(&self) -> Hash32 {
        let mut w = Writer::with_capacity(OFFENCE_DOMAIN.len() + 41);
        w.raw(OFFENCE_DOMAIN)
            .u8(self.level.as_u8())
            .raw(self.first.author.as_bytes())
            .u64(self.first.round);
        Hash32::digest(w.as_slice())
    }

    /// Checks both signatures (the structure was checked on construction).
    pub fn verify(&self, verifier: &(impl SignatureVerifier + ?Sized)) -> Result<()> {
        for (which, h) in [(0u8, &self.first), (1, &self.second)] {
            h.verify(self.level, verifier).map_err(|e| match e {
                Error::EvidenceSignature {
                    author,
                    round,
                    source,
                    ..
                } => Error::EvidenceSignature {
                    which,
                    author,
                    round,
                    source,
                },
                other => other,
            })?;
        }
        Ok(())
    }

    /// Canonical encoding: `level u8 ‖ author 32 ‖ round u64 ‖ public key (u16 len) ‖
    /// digest₁ 32 ‖ sig₁ (u16 len) ‖ digest₂ 32 ‖ sig₂ (u16 len)`, digest₁ < digest₂.
    pub fn write(&self, w: &mut Writer) {
        w.u8(self.level.as_u8())
            .raw(self.first.author.as_bytes())
            .u64(self.first.round)
            .bytes_u16(&self.first.public_key)
            .raw(&self.first.digest.0)
            .bytes_u16(&self.first.signature)
            .raw(&self.second.digest.0)
            .bytes_u16(&self.second.signature);
    }

    /// Strict decoding of [`DoubleSignEvidence::write`], re-checking the structure and the
    /// canonical digest order.
    pub fn read(r: &mut Reader<'_>) -> std::result::Result<Self, DecodeError> {
        let level = SlashLevel::from_u8(r.u8("evidence level")?)?;
        let author = NodeId::from_bytes(r.bytes32("evidence author")?);
        let round = r.u64("evidence round")?;
        let public_key = r.bytes_u16("evidence public key", MAX_KEY_LEN)?.to_vec();
        let d1 = Hash32(r.bytes32("evidence digest")?);
        let s1 = r
            .bytes_u16("evidence signature", MAX_SIGNATURE_LEN)?
            .to_vec();
        let d2 = Hash32(r.bytes32("evidence digest")?);
        let s2 = r
            .bytes_u16("evidence signature", MAX_SIGNATURE_LEN)?
            .to_vec();
        if d1 >= d2 {
            return Err(DecodeError::Invalid {
                field: "evidence digests",
                reason: "must be different and in ascending order",
            });
        }
        let mk = |digest, signature| SignedHeaderDigest {
            author,
            round,
            digest,
            public_key: public_key.clone(),
            signature,
        };
        Self::new(level, mk(d1, s1), mk(d2, s2)).map_err(|_| DecodeError::Invalid {
            field: "evidence",
            reason: "key must hash to the author",
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::test_utils::keys;
    use pqc::MlDsa87;

    fn ev(level: SlashLevel, d1: u8, d2: u8) -> DoubleSignEvidence {
        let k = &keys()[0];
        DoubleSignEvidence::new(
            level,
            SignedHeaderDigest::sign(level, 7, Hash32([d1; 32]), k),
            SignedHeaderDigest::sign(level, 7, Hash32([d2; 32]), k),
        )
        .unwrap()
    }

    #[test]
    fn valid_evidence_verifies_and_round_trips() {
        let e = ev(SlashLevel::City, 2, 1);
        assert!(e.headers().0.digest < e.headers().1.digest);
        e.verify(&MlDsa87).unwrap();
        let mut w = Writer::default();
        e.write(&mut w);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(DoubleSignEvidence::read(&mut r).unwrap(), e);
        r.finish().unwrap();
        assert_eq!(e.offender(), keys()[0].account_id());
    }

    #[test]
    fn city_level_signs_what_consensus_signs() {
        // dag_core::consensus::BatchHeader::signing_message_for(round, digest).
        let m = SignedHeaderDigest::signing_message(SlashLevel::City, 3, &Hash32([9; 32]));
        let mut want = b"citychain/dag-batch/v1".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&[9; 32]);
        assert_eq!(m, want);
    }

    #[test]
    fn converts_consensus_equivocation() {
        use dag_core::consensus::{BatchHeader, Equivocation, SignedBatch};
        let k = &keys()[3];
        let header = |ts| BatchHeader {
            epoch: 0,
            round: 4,
            author: k.node_id(),
            timestamp_ms: ts,
            parents: vec![],
            weak_links: vec![],
            items: vec![],
        };
        let eq = Equivocation::new(
            SignedBatch::sign(header(1), k),
            SignedBatch::sign(header(2), k),
        )
        .unwrap();
        let e =
            DoubleSignEvidence::from_equivocation(&eq, dag_core::Signer::public_key(k)).unwrap();
        e.verify(&MlDsa87).unwrap();
        assert_eq!(
            (e.round(), e.author(), e.level()),
            (4, k.node_id(), SlashLevel::City)
        );
        let other = &keys()[4];
        assert!(
            DoubleSignEvidence::from_equivocation(&eq, dag_core::Signer::public_key(other))
                .is_err()
        );
    }

    #[test]
    fn offence_id_ignores_which_pair() {
        assert_eq!(
            ev(SlashLevel::City, 1, 2).offence_id(),
            ev(SlashLevel::City, 3, 4).offence_id()
        );
        assert_ne!(
            ev(SlashLevel::City, 1, 2).offence_id(),
            ev(SlashLevel::Global, 1, 2).offence_id()
        );
    }

    #[test]
    fn structural_errors() {
        let [a, b] = [&keys()[0], &keys()[1]];
        let l = SlashLevel::City;
        let h = |k, r, d| SignedHeaderDigest::sign(l, r, Hash32([d; 32]), k);
        let bad = |x, y| match DoubleSignEvidence::new(l, x, y) {
            Err(Error::BadEvidence { reason }) => reason,
            other => panic!("expected BadEvidence, got {other:?}"),
        };
        assert_eq!(
            bad(h(a, 1, 1), h(b, 1, 2)),
            "headers have different authors"
        );
        assert_eq!(
            bad(h(a, 1, 1), h(a, 2, 2)),
            "headers are for different rounds"
        );
        assert_eq!(
            bad(h(a, 1, 1), h(a, 1, 1)),
            "the same header twice is not a double sign"
        );
        let mut forged = h(a, 1, 2);
        forged.public_key = dag_core::Signer::public_key(b).to_vec();
        assert_eq!(
            bad(h(a, 1, 1), forged),
            "headers carry different public keys"
        );
        let mut long = h(a, 1, 2);
        long.signature = vec![0; MAX_SIGNATURE_LEN + 1];
        assert_eq!(
            bad(h(a, 1, 1), long),
            "key or signature longer than the encoding allows"
        );
    }

    #[test]
    fn signature_errors() {
        let k = &keys()[0];
        // Signed at continent level but presented as city-level evidence.
        let cont = |d| SignedHeaderDigest::sign(SlashLevel::Continent, 5, Hash32([d; 32]), k);
        let e = DoubleSignEvidence::new(SlashLevel::City, cont(1), cont(2)).unwrap();
        assert!(matches!(
            e.verify(&MlDsa87),
            Err(Error::EvidenceSignature {
                which: 0,
                round: 5,
                ..
            })
        ));
        // Second signature belongs to another digest.
        let mut h2 = SignedHeaderDigest::sign(SlashLevel::City, 5, Hash32([2; 32]), k);
        h2.digest = Hash32([3; 32]);
        let e = DoubleSignEvidence::new(
            SlashLevel::City,
            SignedHeaderDigest::sign(SlashLevel::City, 5, Hash32([1; 32]), k),
            h2,
        )
        .unwrap();
        assert!(matches!(
            e.verify(&MlDsa87),
            Err(Error::EvidenceSignature { which: 1, .. })
        ));
    }

    #[test]
    fn decode_rejects_non_canonical_order() {
        let e = ev(SlashLevel::City, 1, 2);
        let mut w = Writer::default();
        w.u8(0)
            .raw(e.author().as_bytes())
            .u64(7)
            .bytes_u16(&e.headers().0.public_key)
            .raw(&e.headers().1.digest.0)
            .bytes_u16(&e.headers().1.signature)
            .raw(&e.headers().0.digest.0)
            .bytes_u16(&e.headers().0.signature);
        let bytes = w.finish();
        assert!(DoubleSignEvidence::read(&mut Reader::new(&bytes)).is_err());
    }
}

//! Storage challenges: a keyed-hash proof of possession.
//!
//! The challenger sends a fresh random nonce; the holder answers
//! `BLAKE3(nonce ‖ shard data)`. Only someone with the shard's bytes at answer time can
//! compute it, and a fresh nonce defeats replaying an old answer or caching hashes.
//!
//! The challenger must know the answer too, so it must know the shard: either it rebuilds
//! the shard from k others ([`crate::StripeLayout::rebuild`]) and calls [`prove`] itself, or
//! it precomputed (nonce, answer) pairs while it still had the stripe ([`Challenge::new`],
//! one pair per future audit, each nonce used once). Knowing only the shard hash is not
//! enough; that is the price of a cheap, keyed-hash challenge.

use crate::{Error, Result, Shard};
use dag_core::{ShardHash, StripeId};

/// A challenge nonce: 32 fresh random bytes (the caller draws them; this crate has no RNG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChallengeNonce(pub [u8; 32]);

/// A holder's answer: `BLAKE3(nonce ‖ shard data)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChallengeProof(pub [u8; 32]);

/// Computes the proof of possession of `shard_data` for `nonce`.
pub fn prove(nonce: &ChallengeNonce, shard_data: &[u8]) -> ChallengeProof {
    let mut h = blake3::Hasher::new();
    h.update(&nonce.0);
    h.update(shard_data);
    ChallengeProof(*h.finalize().as_bytes())
}

/// Checks `proof` against the shard the challenger holds or rebuilt. The comparison is
/// constant-time. The shard is checked first, so a corrupt reference cannot pass.
pub fn verify_proof(nonce: &ChallengeNonce, shard: &Shard, proof: &ChallengeProof) -> Result<()> {
    let fail = || Error::ChallengeFailed {
        stripe_id: shard.stripe_id(),
        index: shard.index(),
    };
    shard.check().map_err(|_| fail())?;
    Challenge::new(
        shard.stripe_id(),
        shard.index(),
        shard.hash(),
        *nonce,
        &shard.data,
    )
    .check(proof)
    .map_err(|_| fail())
}

/// A precomputed challenge: which shard, the nonce, and the expected answer. Lets an
/// auditor keep (nonce, answer) pairs instead of the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// Stripe of the challenged shard.
    pub stripe_id: StripeId,
    /// Index of the challenged shard.
    pub index: u16,
    /// Hash of the challenged shard (so the holder can find it and the audit can name it).
    pub shard_hash: ShardHash,
    /// The nonce to send.
    pub nonce: ChallengeNonce,
    /// The answer expected back.
    pub expected: ChallengeProof,
}

impl Challenge {
    /// Precomputes the answer for `nonce` from the shard's data.
    pub fn new(
        stripe_id: StripeId,
        index: u16,
        shard_hash: ShardHash,
        nonce: ChallengeNonce,
        shard_data: &[u8],
    ) -> Self {
        Challenge {
            stripe_id,
            index,
            shard_hash,
            nonce,
            expected: prove(&nonce, shard_data),
        }
    }

    /// Checks an answer (constant-time comparison).
    pub fn check(&self, proof: &ChallengeProof) -> Result<()> {
        if blake3::Hash::from(self.expected.0) == blake3::Hash::from(proof.0) {
            Ok(())
        } else {
            Err(Error::ChallengeFailed {
                stripe_id: self.stripe_id,
                index: self.index,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ErasureConfig;

    #[test]
    fn honest_holder_passes_others_fail() {
        let shards = ErasureConfig::default().encode(b"challenge me").unwrap();
        let s = &shards[2];
        let nonce = ChallengeNonce([7; 32]);
        let proof = prove(&nonce, &s.data);
        assert_eq!(
            proof.0,
            *blake3::hash(&[&[7u8; 32][..], &s.data].concat()).as_bytes()
        );
        verify_proof(&nonce, s, &proof).unwrap();
        // another nonce, another shard, or a corrupt reference: all fail
        assert!(verify_proof(&ChallengeNonce([8; 32]), s, &proof).is_err());
        assert!(verify_proof(&nonce, &shards[3], &proof).is_err());
        let mut corrupt = s.clone();
        corrupt.data[0] ^= 1;
        assert!(verify_proof(&nonce, &corrupt, &prove(&nonce, &corrupt.data)).is_err());
        let pre = Challenge::new(s.stripe_id(), s.index(), s.hash(), nonce, &s.data);
        pre.check(&proof).unwrap();
        assert!(pre.check(&ChallengeProof([0; 32])).is_err());
    }
}

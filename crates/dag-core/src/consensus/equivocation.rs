//! Equivocation evidence: one author signed two different batches for the same round.
//!
//! For dpos (double-sign slashing) the evidence reduces to: the author's public key, the
//! signed round ([`signed_round`](super::signed_round)`(epoch, round)`, the round itself in
//! epoch 0), and two `(digest, signature)` pairs, each signature over
//! [`BatchHeader::signing_message_for`](super::BatchHeader::signing_message_for)`(signed
//! round, digest)` = `domain::BATCH ‖ signed round (u64 LE) ‖ digest`. See
//! [`Equivocation::double_sign`].

use super::{BatchDigest, Committee, ConsensusError, Result, Round, SignedBatch};
use crate::{DecodeError, NodeId, Reader, SignatureVerifier, Writer};

/// Two signed headers by one author for one round with different digests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Equivocation {
    first: SignedBatch,
    second: SignedBatch,
}

impl Equivocation {
    /// Pairs two headers; fails unless same author, same epoch, same round and different
    /// digests.
    /// Signatures are not checked here (see [`Equivocation::verify`]).
    pub fn new(first: SignedBatch, second: SignedBatch) -> Result<Self> {
        if first.header.author != second.header.author {
            return Err(ConsensusError::NotEquivocation("different authors"));
        }
        if first.header.epoch != second.header.epoch {
            return Err(ConsensusError::NotEquivocation("different epochs"));
        }
        if first.header.round != second.header.round {
            return Err(ConsensusError::NotEquivocation("different rounds"));
        }
        if first.digest() == second.digest() {
            return Err(ConsensusError::NotEquivocation("the same batch twice"));
        }
        Ok(Equivocation { first, second })
    }

    /// The equivocating author.
    pub fn author(&self) -> NodeId {
        self.first.header.author
    }
    /// The round.
    pub fn round(&self) -> Round {
        self.first.header.round
    }
    /// Both signed headers.
    pub fn headers(&self) -> (&SignedBatch, &SignedBatch) {
        (&self.first, &self.second)
    }

    /// The epoch of both batches.
    pub fn epoch(&self) -> u64 {
        self.first.header.epoch
    }

    /// The compact double-sign form for dpos: `(signed round, [(digest, signature); 2])`;
    /// each signature is over `BatchHeader::signing_message_for(signed round, digest)`. The
    /// signed round is [`signed_round`](super::signed_round)`(epoch, round)`: the round in
    /// epoch 0.
    pub fn double_sign(&self) -> (u64, [(BatchDigest, &[u8]); 2]) {
        (
            self.first.header.signed_round(),
            [
                (self.first.digest(), &self.first.signature),
                (self.second.digest(), &self.second.signature),
            ],
        )
    }

    /// Checks both signatures under the author's committee key (structure was checked by
    /// [`Equivocation::new`] / decoding).
    pub fn verify(
        &self,
        committee: &Committee,
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> Result<()> {
        self.first.verify(committee, verifier)?;
        self.second.verify(committee, verifier)
    }

    /// Canonical encoding: the two signed batches back to back.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.first.write(&mut w);
        self.second.write(&mut w);
        w.finish()
    }

    /// Strict decoding; also re-checks the structure.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let first = SignedBatch::read(&mut r)?;
        let second = SignedBatch::read(&mut r)?;
        r.finish()?;
        Self::new(first, second).map_err(|_| DecodeError::Invalid {
            field: "equivocation",
            reason: "headers must share author and round and differ in digest",
        })
    }
}

//! Votes: a representative's signed approval of another's batch, and the aggregator that
//! turns 2f + 1 stake of them into a certificate.
//!
//! A vote signs `domain::VOTE ‖ batch digest`; the digest already binds round and author.

use super::{
    BatchDigest, Certificate, Committee, ConsensusError, Result, SignedBatch, Stake, domain,
};
use crate::{DecodeError, Hash32, NodeId, Reader, SignatureVerifier, Signer, Writer};

/// One voter's signed approval of one batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Vote {
    /// The batch approved.
    pub digest: BatchDigest,
    /// Who approves.
    pub voter: NodeId,
    /// Signature over [`Vote::signing_message`].
    pub signature: Vec<u8>,
}

impl Vote {
    /// `domain::VOTE ‖ digest`.
    pub fn signing_message(digest: &BatchDigest) -> Vec<u8> {
        let mut m = Vec::with_capacity(domain::VOTE.len() + 32);
        m.extend_from_slice(domain::VOTE);
        m.extend_from_slice(digest.as_bytes());
        m
    }

    /// Signs a vote for `digest` as `voter` (the signer's node id).
    pub fn sign(digest: BatchDigest, voter: NodeId, signer: &(impl Signer + ?Sized)) -> Self {
        Vote {
            digest,
            voter,
            signature: signer.sign(&Self::signing_message(&digest)),
        }
    }

    /// Checks the voter is a member and the signature verifies; returns the voter's stake.
    pub fn verify(
        &self,
        committee: &Committee,
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> Result<Stake> {
        let a = committee
            .authority(&self.voter)
            .ok_or(ConsensusError::UnknownAuthority {
                role: "voter",
                node: self.voter,
            })?;
        verifier
            .verify(
                &a.public_key,
                &Self::signing_message(&self.digest),
                &self.signature,
            )
            .map_err(|source| ConsensusError::BadSignature {
                what: format!(
                    "vote by {} for batch {}",
                    self.voter.short(),
                    self.digest.short()
                ),
                source,
            })?;
        Ok(a.stake)
    }

    /// Canonical encoding: digest 32 ‖ voter 32 ‖ signature (u16 length).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(self.digest.as_bytes())
            .raw(self.voter.as_bytes())
            .bytes_u16(&self.signature);
        w.finish()
    }

    /// Strict decoding.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let digest = BatchDigest(Hash32(r.bytes32("vote digest")?));
        let voter = NodeId::from_bytes(r.bytes32("voter")?);
        let signature = r
            .bytes_u16("vote signature", crate::MAX_SIGNATURE_LEN)?
            .to_vec();
        r.finish()?;
        Ok(Vote {
            digest,
            voter,
            signature,
        })
    }
}

/// Collects votes for the author's own batch until they reach the quorum.
#[derive(Debug, Clone)]
pub struct VotesAggregator {
    batch: SignedBatch,
    digest: BatchDigest,
    votes: Vec<(NodeId, Vec<u8>)>,
    stake: Stake,
    done: bool,
}

impl VotesAggregator {
    /// Starts aggregating for `batch` (the author's own, already signed).
    pub fn new(batch: SignedBatch) -> Self {
        let digest = batch.digest();
        VotesAggregator {
            batch,
            digest,
            votes: Vec::new(),
            stake: 0,
            done: false,
        }
    }

    /// The batch being certified.
    pub fn batch(&self) -> &SignedBatch {
        &self.batch
    }

    /// Stake of the distinct valid votes so far.
    pub fn stake(&self) -> Stake {
        self.stake
    }

    /// Adds a vote. Errors (nothing counted): a vote for another batch
    /// ([`ConsensusError::UnknownBatch`]), an unknown voter, a bad signature. A repeated
    /// voter is ignored. Returns the certificate once, when the quorum is first reached.
    pub fn add(
        &mut self,
        vote: Vote,
        committee: &Committee,
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> Result<Option<Certificate>> {
        if vote.digest != self.digest {
            return Err(ConsensusError::UnknownBatch {
                digest: vote.digest,
                voter: vote.voter,
            });
        }
        if self.votes.iter().any(|(v, _)| *v == vote.voter) {
            return Ok(None);
        }
        let stake = vote.verify(committee, verifier)?;
        self.votes.push((vote.voter, vote.signature));
        self.stake += stake;
        if !self.done && committee.is_quorum(self.stake) {
            self.done = true;
            return Ok(Some(Certificate {
                batch: self.batch.clone(),
                votes: self.votes.clone(),
            }));
        }
        Ok(None)
    }
}

//! Certificates: a signed batch plus votes from 2f + 1 stake, proof that a quorum holds
//! the batch and its parents, so it may enter the DAG.

use super::{
    BatchDigest, Committee, ConsensusError, MAX_PARENTS, Result, Round, SignedBatch, Vote,
};
use crate::{DecodeError, NodeId, Reader, SignatureVerifier, Writer};

/// A signed batch with the voters' signatures, not yet checked. Named by the batch digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Certificate {
    /// The certified batch with its author's signature.
    pub batch: SignedBatch,
    /// `(voter, signature over Vote::signing_message(digest))`, distinct voters.
    pub votes: Vec<(NodeId, Vec<u8>)>,
}

impl Certificate {
    /// The certified batch's digest.
    pub fn digest(&self) -> BatchDigest {
        self.batch.digest()
    }

    /// Checks, before anything is counted: the batch (author, limits, signature), every
    /// voter a member and listed once, every vote signature, and the voters' stake a quorum.
    pub fn verify(
        self,
        committee: &Committee,
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> Result<VerifiedCertificate> {
        self.batch.verify(committee, verifier)?;
        let digest = self.digest();
        let mut stake = 0;
        for (i, (voter, signature)) in self.votes.iter().enumerate() {
            if self.votes[..i].iter().any(|(w, _)| w == voter) {
                return Err(ConsensusError::DuplicateSigner {
                    digest,
                    voter: *voter,
                });
            }
            let vote = Vote {
                digest,
                voter: *voter,
                signature: signature.clone(),
            };
            stake += vote.verify(committee, verifier)?;
        }
        if !committee.is_quorum(stake) {
            return Err(ConsensusError::InsufficientStake {
                digest,
                stake,
                total: committee.total_stake(),
            });
        }
        Ok(VerifiedCertificate { cert: self, digest })
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        self.batch.write(w);
        let n = u16::try_from(self.votes.len()).unwrap_or(u16::MAX);
        w.u16(n);
        for (voter, sig) in self.votes.iter().take(usize::from(n)) {
            w.raw(voter.as_bytes()).bytes_u16(sig);
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> std::result::Result<Self, DecodeError> {
        let batch = SignedBatch::read(r)?;
        let n = r.count_u16("votes", MAX_PARENTS)?;
        // Each vote takes at least 34 input bytes (voter, signature length).
        let mut votes = Vec::with_capacity(n.min(r.remaining() / 34));
        for _ in 0..n {
            let voter = NodeId::from_bytes(r.bytes32("voter")?);
            let sig = r
                .bytes_u16("vote signature", crate::MAX_SIGNATURE_LEN)?
                .to_vec();
            votes.push((voter, sig));
        }
        Ok(Certificate { batch, votes })
    }

    /// Canonical encoding: signed batch ‖ vote count u16 ‖ (voter 32 ‖ signature u16-len)*.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(&mut w);
        w.finish()
    }

    /// Strict decoding.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let c = Self::read(&mut r)?;
        r.finish()?;
        Ok(c)
    }
}

/// A certificate whose signatures and stake were checked against a committee; only
/// [`Certificate::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCertificate {
    cert: Certificate,
    digest: BatchDigest,
}

impl VerifiedCertificate {
    /// The batch digest (the certificate's name).
    pub fn digest(&self) -> BatchDigest {
        self.digest
    }
    /// The round.
    pub fn round(&self) -> Round {
        self.cert.batch.header.round
    }
    /// The author.
    pub fn author(&self) -> NodeId {
        self.cert.batch.header.author
    }
    /// The parents' digests.
    pub fn parents(&self) -> &[BatchDigest] {
        &self.cert.batch.header.parents
    }
    /// The weak links' digests (late certificates of earlier rounds).
    pub fn weak_links(&self) -> &[BatchDigest] {
        &self.cert.batch.header.weak_links
    }
    /// The certificate as received (to forward; receivers verify again).
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }
    /// The signed batch.
    pub fn batch(&self) -> &SignedBatch {
        &self.cert.batch
    }
    /// Unwraps.
    pub fn into_certificate(self) -> Certificate {
        self.cert
    }
}

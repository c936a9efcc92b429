//! Federation of a city's checkpoints to a continent log, and of continents' tree heads to
//! the global log (the `Federation` service of proto/citychain/v1/consensus.proto), in dag-core terms.
//!
//! - [`CheckpointHeader`]: what a city's committee certifies for each committed checkpoint;
//!   [`CertifiedCheckpoint`]: the header with member signatures ([`sign_share`]), verified
//!   against the committee by stake ([`CertifiedCheckpoint::verify`]).
//! - [`InclusionReceipt`]: a log's signed promise that a leaf is in it; [`SignedTreeHead`]:
//!   a log's signed size and root; [`FederationProof`]: a logged certificate with its receipt
//!   and inclusion path (what a representative keeps, what a client verifies offline).
//! - [`CommitteeHandover`]: a city's committee change (epoch, members, the old epoch's
//!   last checkpoint); [`CertifiedHandover`]: it with OLD-committee signatures
//!   ([`sign_handover_share`]), verified against the old committee by stake.
//! - [`FederationError`]: every refusal, typed; it travels in the gRPC status details so a
//!   client gets the same value back ([`FederationError::from_status`]).
//! - [`FederationHandler`] / [`FederationService`] / [`FederationClient`] (in `service`).
//!
//! Every value has a strict, versioned canonical encoding (a version byte first, lengths
//! bounded, no trailing bytes); proto messages carry these bytes.

mod error;
mod handover;
mod service;

pub use error::FederationError;
pub use handover::{
    CITY_HANDOVER_DOMAIN, CertifiedHandover, CommitteeHandover, MAX_HANDOVER_MEMBERS,
    sign_handover_share,
};
pub use service::{FederationClient, FederationHandler, FederationService};

use dag_core::consensus::{Checkpoint, Committee, Stake};
use dag_core::merkle::{ConsistencyProof, InclusionProof, leaf_hash};
use dag_core::{
    DecodeError, Hash32, MAX_SIGNATURE_LEN, NodeId, Reader, SignatureVerifier, Signer, Writer,
};
use pqc::MlDsa87;

/// Domain tag of a representative's signature on a checkpoint header.
pub const CITY_CHECKPOINT_DOMAIN: &[u8] = b"citychain/city-checkpoint/v2";
/// Domain tag of a continent's inclusion receipt signature.
pub const CONTINENT_RECEIPT_DOMAIN: &[u8] = b"citychain/continent-receipt/v1";
/// Domain tag of the global log's inclusion receipt signature.
pub const GLOBAL_RECEIPT_DOMAIN: &[u8] = b"citychain/global-receipt/v1";
/// Domain tag of a signed tree head (continent or global).
pub const TREE_HEAD_DOMAIN: &[u8] = b"citychain/tree-head/v1";

/// Version byte of every federation encoding.
pub const FEDERATION_VERSION: u8 = 1;
/// Most signatures in a [`CertifiedCheckpoint`].
pub const MAX_CERTIFICATE_SIGNERS: usize = 256;
/// Largest federation message on the wire (a certificate of 256 ML-DSA-87 signatures is
/// about 1.2 MB).
pub const MAX_FEDERATION_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

pub(super) fn version(r: &mut Reader<'_>, field: &'static str) -> Result<(), DecodeError> {
    let v = r.u8(field)?;
    if v != FEDERATION_VERSION {
        return Err(DecodeError::UnsupportedVersion(v));
    }
    Ok(())
}

pub(super) fn hash(r: &mut Reader<'_>, field: &'static str) -> Result<Hash32, DecodeError> {
    Ok(Hash32(r.bytes32(field)?))
}

pub(crate) fn h32(field: &'static str, b: &[u8]) -> Result<Hash32, DecodeError> {
    let a: [u8; 32] = b.try_into().map_err(|_| DecodeError::Invalid {
        field,
        reason: "expected exactly 32 bytes",
    })?;
    Ok(Hash32(a))
}

/// The smallest stake that is a quorum (2f + 1) of `committee`.
pub fn quorum_stake(committee: &Committee) -> Stake {
    committee.total_stake().saturating_mul(2) / 3 + 1
}

// ---------------------------------------------------------------- headers

/// A city's committed checkpoint as its committee certifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckpointHeader {
    /// The city (its id in the continent's configuration).
    pub city: Hash32,
    /// Checkpoint sequence (0, 1, 2, …).
    pub sequence: u64,
    /// The committed leader's round.
    pub leader_round: u64,
    /// The leader batch digest.
    pub leader: Hash32,
    /// The previous checkpoint's running hash (zero for the first).
    pub prev_hash: Hash32,
    /// This checkpoint's running hash ([`Checkpoint::hash`]).
    pub running_hash: Hash32,
    /// Batches the checkpoint orders.
    pub batches: u32,
    /// State root after the checkpoint (zero until DPoS / ledger state is wired in).
    pub state_hash: Hash32,
}

impl CheckpointHeader {
    /// Encoded length.
    pub const LEN: usize = 1 + 32 + 8 + 8 + 32 + 32 + 32 + 4 + 32;

    /// The header of `checkpoint` for `city` (state hash zero for now).
    pub fn of(city: Hash32, checkpoint: &Checkpoint) -> Self {
        CheckpointHeader {
            city,
            sequence: checkpoint.sequence,
            leader_round: checkpoint.leader_round,
            leader: checkpoint.leader.0,
            prev_hash: checkpoint.prev_hash,
            running_hash: checkpoint.hash(),
            batches: u32::try_from(checkpoint.batches.len()).unwrap_or(u32::MAX),
            state_hash: Hash32([0; 32]),
        }
    }

    /// Canonical encoding: version u8 ‖ city 32 ‖ sequence u64 ‖ leader_round u64 ‖
    /// leader 32 ‖ prev_hash 32 ‖ running_hash 32 ‖ batches u32 ‖ state_hash 32.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        self.write(&mut w);
        w.finish()
    }

    fn write(&self, w: &mut Writer) {
        w.u8(FEDERATION_VERSION)
            .raw(&self.city.0)
            .u64(self.sequence)
            .u64(self.leader_round)
            .raw(&self.leader.0)
            .raw(&self.prev_hash.0)
            .raw(&self.running_hash.0)
            .u32(self.batches)
            .raw(&self.state_hash.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        version(r, "header version")?;
        Ok(CheckpointHeader {
            city: hash(r, "city")?,
            sequence: r.u64("sequence")?,
            leader_round: r.u64("leader_round")?,
            leader: hash(r, "leader")?,
            prev_hash: hash(r, "prev_hash")?,
            running_hash: hash(r, "running_hash")?,
            batches: r.u32("batches")?,
            state_hash: hash(r, "state_hash")?,
        })
    }

    /// Strict decoding of [`CheckpointHeader::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let h = Self::read(&mut r)?;
        r.finish()?;
        Ok(h)
    }

    /// What a member signs: [`CITY_CHECKPOINT_DOMAIN`] ‖ [`CheckpointHeader::encode`].
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(CITY_CHECKPOINT_DOMAIN.len() + Self::LEN);
        m.extend_from_slice(CITY_CHECKPOINT_DOMAIN);
        m.extend_from_slice(&self.encode());
        m
    }
}

/// One member's signature share on `header`: `(its node id, signature)`.
pub fn sign_share(header: &CheckpointHeader, signer: &(impl Signer + ?Sized)) -> (NodeId, Vec<u8>) {
    (
        NodeId::from_public_key(signer.public_key()),
        signer.sign(&header.signing_message()),
    )
}

/// A checkpoint header with member signatures. Canonical form: signatures sorted by node
/// id, each signer once ([`CertifiedCheckpoint::new`] makes it; decoding insists on it).
/// One signature is a *share* the continent pools; a certificate of more than one must be
/// a quorum by itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertifiedCheckpoint {
    /// The certified header.
    pub header: CheckpointHeader,
    /// `(member node id, signature over [`CheckpointHeader::signing_message`])`.
    pub signatures: Vec<(NodeId, Vec<u8>)>,
}

impl CertifiedCheckpoint {
    /// The canonical certificate: signatures sorted by node id, a repeated signer's later
    /// signatures dropped.
    pub fn new(header: CheckpointHeader, mut signatures: Vec<(NodeId, Vec<u8>)>) -> Self {
        signatures.sort_by_key(|a| a.0);
        signatures.dedup_by(|later, first| later.0 == first.0);
        CertifiedCheckpoint { header, signatures }
    }

    /// Whether the signatures are sorted by node id with no signer twice.
    pub fn is_canonical(&self) -> bool {
        self.signatures.windows(2).all(|w| w[0].0 < w[1].0)
    }

    /// Canonical encoding: version u8 ‖ header ‖ count u16 ‖ (node id 32 ‖ u16 length ‖
    /// signature) per signer, by node id.
    pub fn encode(&self) -> Vec<u8> {
        let sigs: usize = self.signatures.iter().map(|(_, s)| 34 + s.len()).sum();
        let mut w = Writer::with_capacity(1 + CheckpointHeader::LEN + 2 + sigs);
        w.u8(FEDERATION_VERSION);
        self.header.write(&mut w);
        w.u16(u16::try_from(self.signatures.len()).unwrap_or(u16::MAX));
        for (id, sig) in &self.signatures {
            w.raw(id.as_bytes()).bytes_u16(sig);
        }
        w.finish()
    }

    /// Strict decoding: at most [`MAX_CERTIFICATE_SIGNERS`], node ids strictly ascending,
    /// signatures at most [`MAX_SIGNATURE_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        version(&mut r, "certificate version")?;
        let header = CheckpointHeader::read(&mut r)?;
        let n = r.u16("signatures")? as usize;
        if n > MAX_CERTIFICATE_SIGNERS {
            return Err(DecodeError::TooLong {
                field: "signatures",
                len: n,
                max: MAX_CERTIFICATE_SIGNERS,
            });
        }
        let mut signatures: Vec<(NodeId, Vec<u8>)> = Vec::with_capacity(n);
        for _ in 0..n {
            let id = NodeId::from_bytes(r.bytes32("signer")?);
            if signatures.last().is_some_and(|(last, _)| *last >= id) {
                return Err(DecodeError::Invalid {
                    field: "signer",
                    reason: "signers must be sorted by node id, each once",
                });
            }
            let sig = r.bytes_u16("signature", MAX_SIGNATURE_LEN)?.to_vec();
            signatures.push((id, sig));
        }
        r.finish()?;
        Ok(CertifiedCheckpoint { header, signatures })
    }

    /// The RFC 6962 leaf hash of this certificate in a continent log.
    pub fn leaf_hash(&self) -> Hash32 {
        leaf_hash(&self.encode())
    }

    /// Checks every signature against `committee` with ML-DSA-87 and returns the stake that
    /// signed; see [`CertifiedCheckpoint::verify_with`].
    pub fn verify(&self, committee: &Committee) -> Result<Stake, FederationError> {
        self.verify_with(committee, &MlDsa87)
    }

    /// Checks the certificate strictly: canonical order, every signer a member
    /// ([`FederationError::NotMember`]), every signature valid
    /// ([`FederationError::BadSignature`]) — one bad signature refuses the whole
    /// certificate rather than being ignored, so a logged certificate holds only valid
    /// signatures — and the signers' stake a quorum ([`FederationError::NoQuorum`]).
    /// Returns the signed stake.
    pub fn verify_with(
        &self,
        committee: &Committee,
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> Result<Stake, FederationError> {
        let stake = self.verify_signatures(committee, verifier)?;
        if !committee.is_quorum(stake) {
            return Err(FederationError::NoQuorum {
                city: self.header.city,
                sequence: self.header.sequence,
                have: stake,
                need: quorum_stake(committee),
            });
        }
        Ok(stake)
    }

    /// Checks order, membership and every signature (not the quorum); returns the stake.
    pub fn verify_signatures(
        &self,
        committee: &Committee,
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> Result<Stake, FederationError> {
        if !self.is_canonical() {
            return Err(FederationError::Malformed(
                "certificate signers must be sorted by node id, each once".into(),
            ));
        }
        let msg = self.header.signing_message();
        let mut stake: Stake = 0;
        for (id, sig) in &self.signatures {
            let member = committee.authority(id).ok_or(FederationError::NotMember {
                city: self.header.city,
                signer: *id,
            })?;
            verifier
                .verify(&member.public_key, &msg, sig)
                .map_err(|_| FederationError::BadSignature {
                    city: self.header.city,
                    sequence: self.header.sequence,
                    signer: *id,
                })?;
            stake = stake.saturating_add(member.stake);
        }
        Ok(stake)
    }
}

// ---------------------------------------------------------------- receipts and heads

/// Which log signed a receipt (chooses the domain tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A continent's log of city checkpoints ([`CONTINENT_RECEIPT_DOMAIN`]).
    Continent,
    /// The global log of continents' tree heads ([`GLOBAL_RECEIPT_DOMAIN`]).
    Global,
}

impl LogKind {
    fn domain(self) -> &'static [u8] {
        match self {
            LogKind::Continent => CONTINENT_RECEIPT_DOMAIN,
            LogKind::Global => GLOBAL_RECEIPT_DOMAIN,
        }
    }
}

/// A log's signed answer to a push: the leaf is `log_index` of the log, whose root at
/// `tree_size` leaves is `root`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InclusionReceipt {
    /// Leaf index.
    pub log_index: u64,
    /// Log size the root is for.
    pub tree_size: u64,
    /// Root at `tree_size`.
    pub root: Hash32,
    /// The leaf hash.
    pub leaf: Hash32,
    /// The signing log's node id (named `continent` for wire compatibility).
    pub continent: NodeId,
    /// Signature over [`InclusionReceipt::signing_message`].
    pub signature: Vec<u8>,
}

impl InclusionReceipt {
    /// `domain(kind)` ‖ index u64 ‖ size u64 ‖ root 32 ‖ leaf 32.
    pub fn signing_message(&self, kind: LogKind) -> Vec<u8> {
        let domain = kind.domain();
        let mut w = Writer::with_capacity(domain.len() + 80);
        w.raw(domain)
            .u64(self.log_index)
            .u64(self.tree_size)
            .raw(&self.root.0)
            .raw(&self.leaf.0);
        w.finish()
    }

    /// A receipt signed by a log's key.
    pub fn sign(
        kind: LogKind,
        log_index: u64,
        tree_size: u64,
        root: Hash32,
        leaf: Hash32,
        signer: &(impl Signer + ?Sized),
    ) -> Self {
        let mut r = InclusionReceipt {
            log_index,
            tree_size,
            root,
            leaf,
            continent: NodeId::from_public_key(signer.public_key()),
            signature: Vec::new(),
        };
        r.signature = signer.sign(&r.signing_message(kind));
        r
    }

    /// Checks the log's ML-DSA-87 signature (`public_key` must hash to `continent`).
    pub fn verify(&self, kind: LogKind, public_key: &[u8]) -> Result<(), FederationError> {
        if NodeId::from_public_key(public_key) != self.continent {
            return Err(FederationError::UnknownLog {
                log_id: self.continent,
            });
        }
        MlDsa87
            .verify(public_key, &self.signing_message(kind), &self.signature)
            .map_err(|_| FederationError::BadTreeHead {
                log_id: self.continent,
            })
    }

    /// Canonical encoding: index u64 ‖ size u64 ‖ root 32 ‖ leaf 32 ‖ log id 32 ‖ u16
    /// length ‖ signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(8 + 8 + 96 + 2 + self.signature.len());
        self.write(&mut w);
        w.finish()
    }

    fn write(&self, w: &mut Writer) {
        w.u64(self.log_index)
            .u64(self.tree_size)
            .raw(&self.root.0)
            .raw(&self.leaf.0)
            .raw(self.continent.as_bytes())
            .bytes_u16(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(InclusionReceipt {
            log_index: r.u64("log_index")?,
            tree_size: r.u64("tree_size")?,
            root: hash(r, "root")?,
            leaf: hash(r, "leaf")?,
            continent: NodeId::from_bytes(r.bytes32("log id")?),
            signature: r
                .bytes_u16("receipt signature", MAX_SIGNATURE_LEN)?
                .to_vec(),
        })
    }

    /// Strict decoding of [`InclusionReceipt::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::read(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

/// A log's signed statement of its size and root at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedTreeHead {
    /// The log's node id (BLAKE3 of its public key).
    pub log_id: NodeId,
    /// Leaves in the log.
    pub size: u64,
    /// Root at `size`.
    pub root: Hash32,
    /// When it was signed, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// ML-DSA-87 signature over [`SignedTreeHead::signing_message`].
    pub signature: Vec<u8>,
}

impl SignedTreeHead {
    /// [`TREE_HEAD_DOMAIN`] ‖ log id 32 ‖ size u64 ‖ root 32 ‖ timestamp u64.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(TREE_HEAD_DOMAIN.len() + 80);
        w.raw(TREE_HEAD_DOMAIN)
            .raw(self.log_id.as_bytes())
            .u64(self.size)
            .raw(&self.root.0)
            .u64(self.timestamp_ms);
        w.finish()
    }

    /// A tree head signed by the log's key.
    pub fn sign(
        size: u64,
        root: Hash32,
        timestamp_ms: u64,
        signer: &(impl Signer + ?Sized),
    ) -> Self {
        let mut h = SignedTreeHead {
            log_id: NodeId::from_public_key(signer.public_key()),
            size,
            root,
            timestamp_ms,
            signature: Vec::new(),
        };
        h.signature = signer.sign(&h.signing_message());
        h
    }

    /// Checks the signature against `public_key` (which must hash to `log_id`).
    pub fn verify(&self, public_key: &[u8]) -> Result<(), FederationError> {
        if NodeId::from_public_key(public_key) != self.log_id {
            return Err(FederationError::UnknownLog {
                log_id: self.log_id,
            });
        }
        MlDsa87
            .verify(public_key, &self.signing_message(), &self.signature)
            .map_err(|_| FederationError::BadTreeHead {
                log_id: self.log_id,
            })
    }

    /// Canonical encoding: version u8 ‖ log id 32 ‖ size u64 ‖ root 32 ‖ timestamp u64 ‖
    /// u16 length ‖ signature. The global log's leaves are [`leaf_hash`] of these bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(1 + 32 + 8 + 32 + 8 + 2 + self.signature.len());
        w.u8(FEDERATION_VERSION)
            .raw(self.log_id.as_bytes())
            .u64(self.size)
            .raw(&self.root.0)
            .u64(self.timestamp_ms)
            .bytes_u16(&self.signature);
        w.finish()
    }

    /// Strict decoding of [`SignedTreeHead::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        version(&mut r, "tree head version")?;
        let h = SignedTreeHead {
            log_id: NodeId::from_bytes(r.bytes32("log id")?),
            size: r.u64("size")?,
            root: hash(&mut r, "root")?,
            timestamp_ms: r.u64("timestamp_ms")?,
            signature: r.bytes_u16("signature", MAX_SIGNATURE_LEN)?.to_vec(),
        };
        r.finish()?;
        Ok(h)
    }

    /// The RFC 6962 leaf hash of this head in the global log.
    pub fn leaf_hash(&self) -> Hash32 {
        leaf_hash(&self.encode())
    }
}

/// What a continent pushes to the global: its newest head and, when the global already
/// logged an older head of it, the consistency proof from that head's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHeadPush {
    /// The newest signed head.
    pub head: SignedTreeHead,
    /// Consistency from the global's last logged size of this continent to `head.size`.
    pub consistency: Option<ConsistencyProof>,
}

impl TreeHeadPush {
    /// Canonical encoding: version u8 ‖ u16 length ‖ head ‖ flag u8 ‖ [u16 length ‖ proof].
    pub fn encode(&self) -> Vec<u8> {
        let head = self.head.encode();
        let mut w = Writer::with_capacity(head.len() + 8 + 17 + 32 * 64);
        w.u8(FEDERATION_VERSION).bytes_u16(&head);
        match &self.consistency {
            Some(p) => w.u8(1).bytes_u16(&p.encode()),
            None => w.u8(0),
        };
        w.finish()
    }

    /// Strict decoding of [`TreeHeadPush::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        version(&mut r, "tree head push version")?;
        let head = SignedTreeHead::decode(r.bytes_u16("head", u16::MAX as usize)?)?;
        let consistency = match r.u8("consistency flag")? {
            0 => None,
            1 => Some(ConsistencyProof::decode(
                r.bytes_u16("consistency", u16::MAX as usize)?,
            )?),
            _ => {
                return Err(DecodeError::Invalid {
                    field: "consistency flag",
                    reason: "expected 0 or 1",
                });
            }
        };
        r.finish()?;
        Ok(TreeHeadPush { head, consistency })
    }
}

/// Where a continent's log stands for one city: what it appends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CityHead {
    /// The sequence the continent appends next (0 when nothing is logged).
    pub next_sequence: u64,
    /// Running hash of the last logged checkpoint (zero when none).
    pub last_running_hash: Hash32,
}

/// An inclusion proof with the root and leaf it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofAnswer {
    /// The proof (index, size, path).
    pub proof: InclusionProof,
    /// Root of the log at `proof.size`.
    pub root: Hash32,
    /// The leaf at `proof.index`.
    pub leaf: Hash32,
}

/// A checkpoint in a continent log, with everything needed to check that offline: the
/// logged certificate, the continent's signed receipt, the inclusion path to the receipt's
/// root. Verify it with `FederationProof::verify` (crate::proof).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationProof {
    /// The logged leaf: the header with the pooled member signatures.
    pub certified: CertifiedCheckpoint,
    /// The continent's signed receipt for that leaf.
    pub receipt: InclusionReceipt,
    /// Inclusion of the leaf at `receipt.tree_size`.
    pub proof: InclusionProof,
    /// The root the path leads to (equal to `receipt.root`).
    pub root: Hash32,
}

impl FederationProof {
    /// Canonical encoding: version u8 ‖ u32 length ‖ certificate ‖ u16 length ‖ receipt ‖
    /// u16 length ‖ inclusion proof ‖ root 32.
    pub fn encode(&self) -> Vec<u8> {
        let cert = self.certified.encode();
        let mut w = Writer::with_capacity(cert.len() + 8000);
        w.u8(FEDERATION_VERSION)
            .bytes_u32(&cert)
            .bytes_u16(&self.receipt.encode())
            .bytes_u16(&self.proof.encode())
            .raw(&self.root.0);
        w.finish()
    }

    /// Strict decoding of [`FederationProof::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::read(&mut r)?;
        r.finish()?;
        Ok(v)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        version(r, "federation proof version")?;
        let certified =
            CertifiedCheckpoint::decode(r.bytes_u32("certificate", MAX_FEDERATION_MESSAGE_BYTES)?)?;
        let receipt = InclusionReceipt::decode(r.bytes_u16("receipt", u16::MAX as usize)?)?;
        let proof = InclusionProof::decode(r.bytes_u16("inclusion proof", u16::MAX as usize)?)?;
        let root = hash(r, "root")?;
        Ok(FederationProof {
            certified,
            receipt,
            proof,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pb;
    use dag_core::consensus::BatchDigest;
    use pqc::Keypair;
    use tonic::{Code, Status};

    fn header() -> CheckpointHeader {
        CheckpointHeader {
            city: Hash32([1; 32]),
            sequence: 7,
            leader_round: 14,
            leader: Hash32([3; 32]),
            prev_hash: Hash32([5; 32]),
            running_hash: Hash32([4; 32]),
            batches: 5,
            state_hash: Hash32([0; 32]),
        }
    }

    #[test]
    fn header_of_a_checkpoint_carries_its_chain() {
        let cp = Checkpoint {
            sequence: 3,
            leader_round: 6,
            leader: BatchDigest(Hash32([9; 32])),
            batches: vec![BatchDigest(Hash32([8; 32])), BatchDigest(Hash32([9; 32]))],
            prev_hash: Hash32([7; 32]),
        };
        let h = CheckpointHeader::of(Hash32([1; 32]), &cp);
        assert_eq!(h.running_hash, cp.hash());
        assert_eq!(h.prev_hash, cp.prev_hash);
        assert_eq!(h.batches, 2);
        assert_eq!(CheckpointHeader::decode(&h.encode()).unwrap(), h);
        assert_eq!(h.encode().len(), CheckpointHeader::LEN);
    }

    #[test]
    fn certificates_are_canonical_and_strict() {
        let a = (NodeId::from_bytes([2; 32]), vec![1; 10]);
        let b = (NodeId::from_bytes([1; 32]), vec![2; 10]);
        let c = CertifiedCheckpoint::new(header(), vec![a.clone(), b.clone(), a.clone()]);
        assert_eq!(c.signatures, vec![b.clone(), a.clone()]);
        assert_eq!(CertifiedCheckpoint::decode(&c.encode()).unwrap(), c);
        // Unsorted or repeated signers do not decode.
        let bad = CertifiedCheckpoint {
            header: header(),
            signatures: vec![a.clone(), b],
        };
        assert!(CertifiedCheckpoint::decode(&bad.encode()).is_err());
        let twice = CertifiedCheckpoint {
            header: header(),
            signatures: vec![a.clone(), a],
        };
        assert!(CertifiedCheckpoint::decode(&twice.encode()).is_err());
        let bytes = c.encode();
        assert!(CertifiedCheckpoint::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(CertifiedCheckpoint::decode(&longer).is_err());
        let mut v2 = bytes;
        v2[0] = 2;
        assert!(matches!(
            CertifiedCheckpoint::decode(&v2),
            Err(DecodeError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn quorum_by_stake_of_valid_member_signatures() {
        let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let committee =
            Committee::equal(keys.iter().map(|k| k.public_key().to_vec()).collect()).unwrap();
        assert_eq!(quorum_stake(&committee), 3);
        let h = header();
        let shares: Vec<_> = keys.iter().map(|k| sign_share(&h, k)).collect();
        let two = CertifiedCheckpoint::new(h, shares[..2].to_vec());
        assert!(matches!(
            two.verify(&committee),
            Err(FederationError::NoQuorum {
                have: 2,
                need: 3,
                ..
            })
        ));
        let three = CertifiedCheckpoint::new(h, shares[..3].to_vec());
        assert_eq!(three.verify(&committee).unwrap(), 3);
        let stranger = Keypair::generate();
        let mut with_stranger = shares[..3].to_vec();
        with_stranger.push(sign_share(&h, &stranger));
        assert!(matches!(
            CertifiedCheckpoint::new(h, with_stranger).verify(&committee),
            Err(FederationError::NotMember { .. })
        ));
        let mut forged = shares[..3].to_vec();
        forged[0].1[10] ^= 1;
        assert!(matches!(
            CertifiedCheckpoint::new(h, forged).verify(&committee),
            Err(FederationError::BadSignature { .. })
        ));
        // Signatures over another header do not count.
        let mut other = h;
        other.sequence += 1;
        assert!(matches!(
            CertifiedCheckpoint::new(other, shares[..3].to_vec()).verify(&committee),
            Err(FederationError::BadSignature { .. })
        ));
    }

    #[test]
    fn tree_heads_receipts_and_errors_round_trip() {
        let k = Keypair::generate();
        let sth = SignedTreeHead::sign(5, Hash32([6; 32]), 1234, &k);
        sth.verify(k.public_key()).unwrap();
        assert_eq!(SignedTreeHead::decode(&sth.encode()).unwrap(), sth);
        let mut forged = sth.clone();
        forged.root = Hash32([7; 32]);
        assert!(matches!(
            forged.verify(k.public_key()),
            Err(FederationError::BadTreeHead { .. })
        ));
        let push = TreeHeadPush {
            head: sth.clone(),
            consistency: Some(ConsistencyProof {
                old_size: 2,
                new_size: 5,
                path: vec![Hash32([1; 32]); 3],
            }),
        };
        assert_eq!(TreeHeadPush::decode(&push.encode()).unwrap(), push);

        let r = InclusionReceipt::sign(
            LogKind::Continent,
            1,
            2,
            Hash32([1; 32]),
            Hash32([2; 32]),
            &k,
        );
        r.verify(LogKind::Continent, k.public_key()).unwrap();
        assert!(r.verify(LogKind::Global, k.public_key()).is_err());
        assert_eq!(InclusionReceipt::decode(&r.encode()).unwrap(), r);
        let p: pb::PushTreeHeadResponse = (&r).into();
        assert_eq!(InclusionReceipt::try_from(p).unwrap(), r);

        for e in [
            FederationError::AwaitingQuorum {
                city: Hash32([1; 32]),
                sequence: 4,
                have: 2,
                need: 3,
            },
            FederationError::Gap {
                city: Hash32([1; 32]),
                expected: 0,
                got: 2,
            },
            FederationError::NeedConsistency {
                log_id: NodeId::from_bytes([3; 32]),
                from_size: 9,
            },
            FederationError::Store("disk".into()),
            FederationError::HandoverAwaitingQuorum {
                city: Hash32([1; 32]),
                epoch: 3,
                have: 2,
                need: 5,
            },
            FederationError::HandoverTooEarly {
                city: Hash32([2; 32]),
                epoch: 4,
                last_sequence: 99,
            },
            FederationError::HandoverConflict {
                city: Hash32([3; 32]),
                epoch: 5,
            },
        ] {
            let s = e.to_status();
            assert_eq!(FederationError::from_status(&s), e);
        }
        assert!(FederationError::Store("x".into()).is_retryable());
        assert!(
            FederationError::HandoverTooEarly {
                city: Hash32([0; 32]),
                epoch: 1,
                last_sequence: 0
            }
            .is_retryable()
        );
        assert!(
            !FederationError::HandoverConflict {
                city: Hash32([0; 32]),
                epoch: 1
            }
            .is_retryable()
        );
        assert!(
            !FederationError::Fork {
                city: Hash32([0; 32]),
                sequence: 1
            }
            .is_retryable()
        );
        assert_eq!(
            FederationError::from_status(&Status::unavailable("down")),
            FederationError::Transport {
                code: Code::Unavailable,
                message: "down".into()
            }
        );
    }
}

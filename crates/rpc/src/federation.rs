//! Federation of a city's checkpoints to a continent log, and of continents' tree heads to
//! the global log (the `Federation` service of proto/consensus.proto), in dag-core terms.
//!
//! - [`CheckpointHeader`]: what a city's committee certifies for each committed checkpoint;
//!   [`CertifiedCheckpoint`]: the header with member signatures ([`sign_share`]), verified
//!   against the committee by stake ([`CertifiedCheckpoint::verify`]).
//! - [`InclusionReceipt`]: a log's signed promise that a leaf is in it; [`SignedTreeHead`]:
//!   a log's signed size and root; [`FederationProof`]: a logged certificate with its receipt
//!   and inclusion path (what a representative keeps, what a client verifies offline).
//! - [`FederationError`]: every refusal, typed; it travels in the gRPC status details so a
//!   client gets the same value back ([`FederationError::from_status`]).
//! - [`FederationHandler`] / [`FederationService`] / [`FederationClient`].
//!
//! Every value has a strict, versioned canonical encoding (a version byte first, lengths
//! bounded, no trailing bytes); proto messages carry these bytes.

use crate::pb;
use crate::proof::GlobalAnchor;
use dag_core::consensus::{Checkpoint, Committee, Stake};
use dag_core::merkle::{ConsistencyProof, InclusionProof, leaf_hash};
use dag_core::{
    DecodeError, Hash32, MAX_SIGNATURE_LEN, NodeId, Reader, SignatureVerifier, Signer, Writer,
};
use pqc::MlDsa87;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

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

fn version(r: &mut Reader<'_>, field: &'static str) -> Result<(), DecodeError> {
    let v = r.u8(field)?;
    if v != FEDERATION_VERSION {
        return Err(DecodeError::UnsupportedVersion(v));
    }
    Ok(())
}

fn hash(r: &mut Reader<'_>, field: &'static str) -> Result<Hash32, DecodeError> {
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

// ---------------------------------------------------------------- errors

/// Why a log refused a federation request (or, client side, why the call failed). The
/// server sends it in the gRPC status details; [`FederationError::from_status`] restores it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    /// A field or value is malformed.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The city is not configured at this continent.
    #[error("city {} is not configured here", city.short())]
    UnknownCity {
        /// City id.
        city: Hash32,
    },
    /// A signer is not a member of the city's committee.
    #[error("signer {} is not a member of city {}", signer.short(), city.short())]
    NotMember {
        /// City id.
        city: Hash32,
        /// The signer.
        signer: NodeId,
    },
    /// A member's signature does not verify.
    #[error("checkpoint {sequence} of city {}: bad signature of {}", city.short(), signer.short())]
    BadSignature {
        /// City id.
        city: Hash32,
        /// Sequence.
        sequence: u64,
        /// The signer named.
        signer: NodeId,
    },
    /// A certificate (more than one signature) whose valid signatures are not a quorum.
    #[error("checkpoint {sequence} of city {}: stake {have} signed, {need} needed", city.short())]
    NoQuorum {
        /// City id.
        city: Hash32,
        /// Sequence.
        sequence: u64,
        /// Stake of valid signatures.
        have: Stake,
        /// Quorum stake.
        need: Stake,
    },
    /// The share was pooled; the checkpoint is appended once shares reach a quorum.
    /// Retryable: push again shortly (nothing was appended yet).
    #[error("checkpoint {sequence} of city {}: awaiting quorum ({have} of {need} stake)", city.short())]
    AwaitingQuorum {
        /// City id.
        city: Hash32,
        /// Sequence.
        sequence: u64,
        /// Stake pooled so far.
        have: Stake,
        /// Quorum stake.
        need: Stake,
    },
    /// The checkpoint is ahead of the log: push from `expected` (gaps are filled, never
    /// skipped).
    #[error("city {}: got sequence {got}, expected {expected}", city.short())]
    Gap {
        /// City id.
        city: Hash32,
        /// The sequence the log appends next.
        expected: u64,
        /// The sequence pushed.
        got: u64,
    },
    /// The header's prev hash is not the running hash of the last logged checkpoint.
    #[error("checkpoint {sequence} of city {}: prev hash does not continue the log", city.short())]
    WrongPrev {
        /// City id.
        city: Hash32,
        /// Sequence.
        sequence: u64,
    },
    /// Another header is already logged for this (city, sequence).
    #[error("city {} already logged a different header for sequence {sequence}", city.short())]
    Fork {
        /// City id.
        city: Hash32,
        /// Sequence.
        sequence: u64,
    },
    /// The log (continent) is not configured at this global, or a key does not match the
    /// log id it claims.
    #[error("log {} is not configured here", log_id.short())]
    UnknownLog {
        /// The log's node id.
        log_id: NodeId,
    },
    /// A tree head's or receipt's signature does not verify.
    #[error("log {}: bad tree head or receipt signature", log_id.short())]
    BadTreeHead {
        /// The log's node id.
        log_id: NodeId,
    },
    /// The global logged an older head of this log: send a consistency proof from
    /// `from_size`.
    #[error("log {}: send a consistency proof from size {from_size}", log_id.short())]
    NeedConsistency {
        /// The log's node id.
        log_id: NodeId,
        /// Size of the last logged head.
        from_size: u64,
    },
    /// The head is not an extension of the last logged head (forged or forked log).
    #[error("log {}: head of size {new_size} is not consistent with logged size {old_size}", log_id.short())]
    Inconsistent {
        /// The log's node id.
        log_id: NodeId,
        /// Size of the last logged head.
        old_size: u64,
        /// Size of the pushed head.
        new_size: u64,
    },
    /// The head is older than the last logged one.
    #[error("log {}: head of size {got} is older than logged size {logged}", log_id.short())]
    Stale {
        /// The log's node id.
        log_id: NodeId,
        /// Size of the last logged head.
        logged: u64,
        /// Size pushed.
        got: u64,
    },
    /// No head of this continent covering `tree_size` is logged by the global yet.
    #[error("no global-logged head covers tree size {tree_size} yet (newest anchored: {anchored})")]
    NotYetAnchored {
        /// The tree size asked about.
        tree_size: u64,
        /// Size of the newest anchored head (0: none).
        anchored: u64,
    },
    /// Index or tree size beyond the log.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// This role does not serve the request (a continent asked to log tree heads, …).
    #[error("not served by this role: {0}")]
    NotServed(String),
    /// The store failed (retryable).
    #[error("store: {0}")]
    Store(String),
    /// Client side: the call failed in transport (unreachable, deadline, …) or with a
    /// status that carried no federation error.
    #[error("gRPC status {code:?}: {message}")]
    Transport {
        /// gRPC code.
        code: Code,
        /// Message.
        message: String,
    },
    /// Client side: the server answered with something that does not decode.
    #[error("malformed answer: {0}")]
    BadAnswer(String),
}

impl FederationError {
    /// Worth retrying the same request unchanged later: [`AwaitingQuorum`](Self::AwaitingQuorum),
    /// a store failure, and transport failures other than permanent statuses.
    /// [`Gap`](Self::Gap) and [`NeedConsistency`](Self::NeedConsistency) call for a
    /// different request; everything else is a refusal.
    pub fn is_retryable(&self) -> bool {
        match self {
            FederationError::AwaitingQuorum { .. } | FederationError::Store(_) => true,
            FederationError::Transport { code, .. } => matches!(
                code,
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Internal
                    | Code::Unknown
                    | Code::Cancelled
                    | Code::Aborted
            ),
            _ => false,
        }
    }

    fn code_and_prefix(&self) -> (Code, &'static str) {
        match self {
            FederationError::Malformed(_) => (Code::InvalidArgument, "MALFORMED"),
            FederationError::UnknownCity { .. } => (Code::NotFound, "UNKNOWN_CITY"),
            FederationError::NotMember { .. } => (Code::PermissionDenied, "NOT_MEMBER"),
            FederationError::BadSignature { .. } => (Code::Unauthenticated, "BAD_SIGNATURE"),
            FederationError::NoQuorum { .. } => (Code::FailedPrecondition, "NO_QUORUM"),
            FederationError::AwaitingQuorum { .. } => (Code::Unavailable, "AWAITING_QUORUM"),
            FederationError::Gap { .. } => (Code::FailedPrecondition, "GAP"),
            FederationError::WrongPrev { .. } => (Code::FailedPrecondition, "WRONG_PREV"),
            FederationError::Fork { .. } => (Code::AlreadyExists, "FORK"),
            FederationError::UnknownLog { .. } => (Code::NotFound, "UNKNOWN_LOG"),
            FederationError::BadTreeHead { .. } => (Code::Unauthenticated, "BAD_SIGNATURE"),
            FederationError::NeedConsistency { .. } => {
                (Code::FailedPrecondition, "NEED_CONSISTENCY")
            }
            FederationError::Inconsistent { .. } => (Code::AlreadyExists, "INCONSISTENT"),
            FederationError::Stale { .. } => (Code::FailedPrecondition, "STALE"),
            FederationError::NotYetAnchored { .. } => {
                (Code::FailedPrecondition, "NOT_YET_ANCHORED")
            }
            FederationError::OutOfRange(_) => (Code::OutOfRange, "OUT_OF_RANGE"),
            FederationError::NotServed(_) => (Code::Unimplemented, "NOT_SERVED"),
            FederationError::Store(_) => (Code::Internal, "STORE"),
            FederationError::Transport { code, .. } => (*code, "TRANSPORT"),
            FederationError::BadAnswer(_) => (Code::Internal, "BAD_ANSWER"),
        }
    }

    /// The gRPC status: the code and prefix of the proto's table, the canonical error in
    /// the details.
    pub fn to_status(&self) -> Status {
        let (code, prefix) = self.code_and_prefix();
        Status::with_details(
            code,
            format!("{prefix}: {self}"),
            tonic::codegen::Bytes::from(self.encode()),
        )
    }

    /// The error a server sent (from the details), or [`FederationError::Transport`].
    pub fn from_status(s: &Status) -> Self {
        match FederationError::decode(s.details()) {
            Ok(e) => e,
            Err(_) => FederationError::Transport {
                code: s.code(),
                message: s.message().to_string(),
            },
        }
    }

    /// Canonical encoding: version u8 ‖ kind u8 ‖ id 32 ‖ node 32 ‖ a u64 ‖ b u64 ‖ u16
    /// length ‖ text (at most 1 KiB).
    pub fn encode(&self) -> Vec<u8> {
        let zero = Hash32([0; 32]);
        let none = NodeId::from_bytes([0; 32]);
        use FederationError as E;
        let (kind, id, node, a, b, text): (u8, Hash32, NodeId, u64, u64, &str) = match self {
            E::Malformed(m) => (0, zero, none, 0, 0, m),
            E::UnknownCity { city } => (1, *city, none, 0, 0, ""),
            E::NotMember { city, signer } => (2, *city, *signer, 0, 0, ""),
            E::BadSignature {
                city,
                sequence,
                signer,
            } => (3, *city, *signer, *sequence, 0, ""),
            E::NoQuorum {
                city,
                sequence,
                have,
                need,
            } => (4, *city, none, *sequence, pack(*have, *need), ""),
            E::AwaitingQuorum {
                city,
                sequence,
                have,
                need,
            } => (5, *city, none, *sequence, pack(*have, *need), ""),
            E::Gap {
                city,
                expected,
                got,
            } => (6, *city, none, *expected, *got, ""),
            E::WrongPrev { city, sequence } => (7, *city, none, *sequence, 0, ""),
            E::Fork { city, sequence } => (8, *city, none, *sequence, 0, ""),
            E::UnknownLog { log_id } => (9, zero, *log_id, 0, 0, ""),
            E::BadTreeHead { log_id } => (10, zero, *log_id, 0, 0, ""),
            E::NeedConsistency { log_id, from_size } => (11, zero, *log_id, *from_size, 0, ""),
            E::Inconsistent {
                log_id,
                old_size,
                new_size,
            } => (12, zero, *log_id, *old_size, *new_size, ""),
            E::Stale {
                log_id,
                logged,
                got,
            } => (13, zero, *log_id, *logged, *got, ""),
            E::NotYetAnchored {
                tree_size,
                anchored,
            } => (19, zero, none, *tree_size, *anchored, ""),
            E::OutOfRange(m) => (14, zero, none, 0, 0, m),
            E::NotServed(m) => (15, zero, none, 0, 0, m),
            E::Store(m) => (16, zero, none, 0, 0, m),
            E::Transport { message, .. } => (17, zero, none, 0, 0, message),
            E::BadAnswer(m) => (18, zero, none, 0, 0, m),
        };
        let text = truncate(text, 1024);
        let mut w = Writer::with_capacity(1 + 1 + 64 + 16 + 2 + text.len());
        w.u8(FEDERATION_VERSION)
            .u8(kind)
            .raw(&id.0)
            .raw(node.as_bytes())
            .u64(a)
            .u64(b)
            .bytes_u16(text.as_bytes());
        w.finish()
    }

    /// Strict decoding of [`FederationError::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        use FederationError as E;
        let mut r = Reader::new(bytes);
        version(&mut r, "error version")?;
        let kind = r.u8("error kind")?;
        let city = hash(&mut r, "error city")?;
        let node = NodeId::from_bytes(r.bytes32("error node")?);
        let a = r.u64("error a")?;
        let b = r.u64("error b")?;
        let text = String::from_utf8(r.bytes_u16("error text", 1024)?.to_vec()).map_err(|_| {
            DecodeError::Invalid {
                field: "error text",
                reason: "not UTF-8",
            }
        })?;
        r.finish()?;
        let (have, need) = unpack(b);
        Ok(match kind {
            0 => E::Malformed(text),
            1 => E::UnknownCity { city },
            2 => E::NotMember { city, signer: node },
            3 => E::BadSignature {
                city,
                sequence: a,
                signer: node,
            },
            4 => E::NoQuorum {
                city,
                sequence: a,
                have,
                need,
            },
            5 => E::AwaitingQuorum {
                city,
                sequence: a,
                have,
                need,
            },
            6 => E::Gap {
                city,
                expected: a,
                got: b,
            },
            7 => E::WrongPrev { city, sequence: a },
            8 => E::Fork { city, sequence: a },
            9 => E::UnknownLog { log_id: node },
            10 => E::BadTreeHead { log_id: node },
            11 => E::NeedConsistency {
                log_id: node,
                from_size: a,
            },
            12 => E::Inconsistent {
                log_id: node,
                old_size: a,
                new_size: b,
            },
            13 => E::Stale {
                log_id: node,
                logged: a,
                got: b,
            },
            14 => E::OutOfRange(text),
            15 => E::NotServed(text),
            16 => E::Store(text),
            18 => E::BadAnswer(text),
            19 => E::NotYetAnchored {
                tree_size: a,
                anchored: b,
            },
            _ => {
                return Err(DecodeError::Invalid {
                    field: "error kind",
                    reason: "not a federation error a server sends",
                });
            }
        })
    }
}

/// Two stakes in one u64 (32 bits each, saturating): quorum stakes fit easily.
fn pack(have: Stake, need: Stake) -> u64 {
    (have.min(u32::MAX as u64) << 32) | need.min(u32::MAX as u64)
}

fn unpack(v: u64) -> (Stake, Stake) {
    (v >> 32, v & u64::from(u32::MAX))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---------------------------------------------------------------- service

type FedResult<T> = Result<T, FederationError>;

/// What a continent or global implements; [`FederationService`] serves it over gRPC.
/// Methods a role does not serve keep the default ([`FederationError::NotServed`]).
pub trait FederationHandler: Send + Sync + 'static {
    /// Continent: pools / verifies and logs a certificate; answers the logged leaf's proof.
    fn push_checkpoint(
        &self,
        certified: CertifiedCheckpoint,
    ) -> impl Future<Output = FedResult<FederationProof>> + Send {
        let _ = certified;
        async { Err(FederationError::NotServed("PushCheckpoint".into())) }
    }
    /// Continent: where the log stands for `city`.
    fn city_head(&self, city: Hash32) -> impl Future<Output = FedResult<CityHead>> + Send {
        let _ = city;
        async { Err(FederationError::NotServed("GetCityHead".into())) }
    }
    /// Global: verifies and logs a continent's tree head.
    fn push_tree_head(
        &self,
        push: TreeHeadPush,
    ) -> impl Future<Output = FedResult<InclusionReceipt>> + Send {
        let _ = push;
        async { Err(FederationError::NotServed("PushTreeHead".into())) }
    }
    /// The log's current signed tree head.
    fn tree_head(&self) -> impl Future<Output = FedResult<SignedTreeHead>> + Send;
    /// The inclusion proof of leaf `index` in the log of `tree_size` leaves (0 = current).
    fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> impl Future<Output = FedResult<ProofAnswer>> + Send;
    /// The consistency proof from `old_size` to `new_size` (0 = current).
    fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> impl Future<Output = FedResult<ConsistencyProof>> + Send;
    /// Continent: a head of this log that the global logged, covering `tree_size`.
    fn global_anchor(
        &self,
        tree_size: u64,
    ) -> impl Future<Output = FedResult<GlobalAnchor>> + Send {
        let _ = tree_size;
        async { Err(FederationError::NotServed("GetGlobalAnchor".into())) }
    }
}

/// Serves the `Federation` gRPC service by calling a [`FederationHandler`].
#[derive(Debug)]
pub struct FederationService<T> {
    handler: Arc<T>,
}

impl<T> Clone for FederationService<T> {
    fn clone(&self) -> Self {
        FederationService {
            handler: self.handler.clone(),
        }
    }
}

impl<T: FederationHandler> FederationService<T> {
    /// An adapter over `handler`.
    pub fn new(handler: Arc<T>) -> Self {
        FederationService { handler }
    }

    /// The tonic server, accepting messages up to [`MAX_FEDERATION_MESSAGE_BYTES`].
    pub fn into_server(self) -> pb::federation_server::FederationServer<Self> {
        pb::federation_server::FederationServer::new(self)
            .max_decoding_message_size(MAX_FEDERATION_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_FEDERATION_MESSAGE_BYTES)
    }
}

fn malformed(e: DecodeError) -> Status {
    FederationError::Malformed(e.to_string()).to_status()
}

fn path_bytes(path: &[Hash32]) -> Vec<Vec<u8>> {
    path.iter().map(|h| h.0.to_vec()).collect()
}

#[tonic::async_trait]
impl<T: FederationHandler> pb::federation_server::Federation for FederationService<T> {
    async fn push_checkpoint(
        &self,
        request: Request<pb::CertifiedCheckpoint>,
    ) -> Result<Response<pb::FederationProof>, Status> {
        let c = CertifiedCheckpoint::decode(&request.into_inner().encoded).map_err(malformed)?;
        let p = self
            .handler
            .push_checkpoint(c)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::FederationProof {
            encoded: p.encode(),
        }))
    }

    async fn get_city_head(
        &self,
        request: Request<pb::GetCityHeadRequest>,
    ) -> Result<Response<pb::CityHeadResponse>, Status> {
        let city = h32("city_id", &request.into_inner().city_id).map_err(malformed)?;
        let h = self
            .handler
            .city_head(city)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::CityHeadResponse {
            next_sequence: h.next_sequence,
            last_running_hash: h.last_running_hash.0.to_vec(),
        }))
    }

    async fn push_tree_head(
        &self,
        request: Request<pb::TreeHeadPush>,
    ) -> Result<Response<pb::InclusionReceipt>, Status> {
        let p = TreeHeadPush::decode(&request.into_inner().encoded).map_err(malformed)?;
        let r = self
            .handler
            .push_tree_head(p)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new((&r).into()))
    }

    async fn get_tree_head(
        &self,
        _request: Request<pb::GetTreeHeadRequest>,
    ) -> Result<Response<pb::SignedTreeHead>, Status> {
        let h = self.handler.tree_head().await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::SignedTreeHead {
            encoded: h.encode(),
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProofResponse>, Status> {
        let req = request.into_inner();
        let a = self
            .handler
            .inclusion_proof(req.index, req.tree_size)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::InclusionProofResponse {
            index: a.proof.index,
            tree_size: a.proof.size,
            path: path_bytes(&a.proof.path),
            root: a.root.0.to_vec(),
            leaf_hash: a.leaf.0.to_vec(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProofResponse>, Status> {
        let req = request.into_inner();
        let p = self
            .handler
            .consistency_proof(req.old_size, req.new_size)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ConsistencyProofResponse {
            old_size: p.old_size,
            new_size: p.new_size,
            path: path_bytes(&p.path),
        }))
    }

    async fn get_global_anchor(
        &self,
        request: Request<pb::GetGlobalAnchorRequest>,
    ) -> Result<Response<pb::GlobalAnchor>, Status> {
        self.anchor(request.into_inner().tree_size).await
    }
}

impl<T: FederationHandler> FederationService<T> {
    async fn anchor(&self, tree_size: u64) -> Result<Response<pb::GlobalAnchor>, Status> {
        let a = self
            .handler
            .global_anchor(tree_size)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::GlobalAnchor {
            encoded: a.encode(),
        }))
    }
}

impl From<&InclusionReceipt> for pb::InclusionReceipt {
    fn from(r: &InclusionReceipt) -> Self {
        pb::InclusionReceipt {
            log_index: r.log_index,
            tree_size: r.tree_size,
            root: r.root.0.to_vec(),
            leaf_hash: r.leaf.0.to_vec(),
            continent: r.continent.as_bytes().to_vec(),
            signature: r.signature.clone(),
        }
    }
}

impl TryFrom<pb::InclusionReceipt> for InclusionReceipt {
    type Error = DecodeError;
    fn try_from(p: pb::InclusionReceipt) -> Result<Self, DecodeError> {
        if p.signature.len() > MAX_SIGNATURE_LEN {
            return Err(DecodeError::TooLong {
                field: "signature",
                len: p.signature.len(),
                max: MAX_SIGNATURE_LEN,
            });
        }
        Ok(InclusionReceipt {
            log_index: p.log_index,
            tree_size: p.tree_size,
            root: h32("root", &p.root)?,
            leaf: h32("leaf_hash", &p.leaf_hash)?,
            continent: NodeId::from_slice(&p.continent)?,
            signature: p.signature,
        })
    }
}

fn path_from(field: &'static str, path: &[Vec<u8>], max: usize) -> FedResult<Vec<Hash32>> {
    if path.len() > max {
        return Err(FederationError::BadAnswer(format!(
            "{field}: {} hashes, at most {max}",
            path.len()
        )));
    }
    path.iter()
        .map(|p| h32(field, p).map_err(|e| FederationError::BadAnswer(e.to_string())))
        .collect()
}

/// Talks to a continent's or the global's `Federation` service. Cheap to clone; connects
/// lazily and reconnects. Every error is a [`FederationError`]: the server's typed refusal,
/// or [`FederationError::Transport`] (see [`FederationError::is_retryable`]).
#[derive(Debug, Clone)]
pub struct FederationClient {
    inner: pb::federation_client::FederationClient<Channel>,
    timeout: Duration,
}

fn bad_answer(e: DecodeError) -> FederationError {
    FederationError::BadAnswer(e.to_string())
}

impl FederationClient {
    /// A lazily connecting client for `addr` (`host:port` or a URL); every call gives up
    /// after `timeout` (connection set-up included).
    pub fn lazy(addr: &str, timeout: Duration) -> FedResult<Self> {
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let channel = Endpoint::from_shared(url)
            .map_err(|e| FederationError::Malformed(format!("bad address {addr}: {e}")))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(FederationClient {
            inner: pb::federation_client::FederationClient::new(channel)
                .max_decoding_message_size(MAX_FEDERATION_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_FEDERATION_MESSAGE_BYTES),
            timeout,
        })
    }

    async fn call<R, F>(
        &self,
        f: impl FnOnce(pb::federation_client::FederationClient<Channel>) -> F,
    ) -> FedResult<R>
    where
        F: Future<Output = Result<Response<R>, Status>>,
    {
        match tokio::time::timeout(self.timeout, f(self.inner.clone())).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(FederationError::from_status(&s)),
            Err(_) => Err(FederationError::Transport {
                code: Code::DeadlineExceeded,
                message: format!("no answer within {} ms", self.timeout.as_millis()),
            }),
        }
    }

    /// Pushes a certificate (or one share); returns the logged leaf's proof (decoded, not
    /// verified).
    pub async fn push_checkpoint(&self, c: &CertifiedCheckpoint) -> FedResult<FederationProof> {
        let req = pb::CertifiedCheckpoint {
            encoded: c.encode(),
        };
        let resp = self
            .call(|mut c| async move { c.push_checkpoint(req).await })
            .await?;
        FederationProof::decode(&resp.encoded).map_err(bad_answer)
    }

    /// Where the continent's log stands for `city`.
    pub async fn city_head(&self, city: Hash32) -> FedResult<CityHead> {
        let req = pb::GetCityHeadRequest {
            city_id: city.0.to_vec(),
        };
        let resp = self
            .call(|mut c| async move { c.get_city_head(req).await })
            .await?;
        Ok(CityHead {
            next_sequence: resp.next_sequence,
            last_running_hash: h32("last_running_hash", &resp.last_running_hash)
                .map_err(bad_answer)?,
        })
    }

    /// Pushes a continent's tree head to the global; returns the global's receipt
    /// (converted, not verified).
    pub async fn push_tree_head(&self, push: &TreeHeadPush) -> FedResult<InclusionReceipt> {
        let req = pb::TreeHeadPush {
            encoded: push.encode(),
        };
        let resp = self
            .call(|mut c| async move { c.push_tree_head(req).await })
            .await?;
        InclusionReceipt::try_from(resp).map_err(bad_answer)
    }

    /// The log's current signed tree head (decoded, not verified).
    pub async fn tree_head(&self) -> FedResult<SignedTreeHead> {
        let resp = self
            .call(|mut c| async move { c.get_tree_head(pb::GetTreeHeadRequest {}).await })
            .await?;
        SignedTreeHead::decode(&resp.encoded).map_err(bad_answer)
    }

    /// The inclusion proof of leaf `index` at `tree_size` (0 = current size), with the
    /// root and leaf the log claims.
    pub async fn inclusion_proof(&self, index: u64, tree_size: u64) -> FedResult<ProofAnswer> {
        let req = pb::GetInclusionProofRequest { index, tree_size };
        let resp = self
            .call(|mut c| async move { c.get_inclusion_proof(req).await })
            .await?;
        Ok(ProofAnswer {
            proof: InclusionProof {
                index: resp.index,
                size: resp.tree_size,
                path: path_from("path", &resp.path, InclusionProof::MAX_PATH)?,
            },
            root: h32("root", &resp.root).map_err(bad_answer)?,
            leaf: h32("leaf_hash", &resp.leaf_hash).map_err(bad_answer)?,
        })
    }

    /// A continent head the global logged, covering the continent tree of `tree_size`
    /// (decoded, not verified: check it with [`GlobalAnchor::verify`]).
    pub async fn global_anchor(&self, tree_size: u64) -> FedResult<GlobalAnchor> {
        let req = pb::GetGlobalAnchorRequest { tree_size };
        let resp = self
            .call(|mut c| async move { c.get_global_anchor(req).await })
            .await?;
        GlobalAnchor::decode(&resp.encoded).map_err(bad_answer)
    }

    /// The consistency proof from `old_size` to `new_size` (0 = current).
    pub async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> FedResult<ConsistencyProof> {
        let req = pb::GetConsistencyProofRequest { old_size, new_size };
        let resp = self
            .call(|mut c| async move { c.get_consistency_proof(req).await })
            .await?;
        Ok(ConsistencyProof {
            old_size: resp.old_size,
            new_size: resp.new_size,
            path: path_from("path", &resp.path, ConsistencyProof::MAX_PATH)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::consensus::BatchDigest;
    use pqc::Keypair;

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
        let p: pb::InclusionReceipt = (&r).into();
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
        ] {
            let s = e.to_status();
            assert_eq!(FederationError::from_status(&s), e);
        }
        assert!(FederationError::Store("x".into()).is_retryable());
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

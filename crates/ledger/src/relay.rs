//! Cross-city transfers inside committed txs, and the proof that ties one statement to a
//! checkpoint the other city's committee certified.
//!
//! - A **cross-city transfer** is a FRESH_TX whose payload is [`to_city_payload`]: the
//!   receiver's city. The sender's city escrows it in commit order ([`crate::CrossBook`]).
//! - A **relay** is a SYSTEM_TX whose payload is [`CrossRelay::to_payload`]: certified
//!   statements of one checkpoint of another city (transfer-outs for the receiver's city,
//!   answers for the sender's city), each with its [`StatementProof`]. Anyone may submit
//!   one (a representative of either city does); what counts is the certificate, checked
//!   when the relay executes, so a forged or replayed relay moves nothing.
//! - **Proof**: each checkpoint's ledger root is `H(tag ‖ chain ‖ book root ‖ statements
//!   root)` ([`ledger_root`]), where `chain` is [`crate::checkpoint_root`] (every balance
//!   change), the book root is [`crate::CrossBook::root`] after the checkpoint and the
//!   statements root is the RFC 6962 Merkle root over the statements the checkpoint emitted
//!   (escrowed transfer-outs and answers, in commit order). A [`StatementProof`] gives the
//!   ledger root a statement implies; the city's certificate over a checkpoint whose state
//!   root carries that ledger root ([`CheckpointCertificates`]) completes it.

use crate::cross::{Answer, CertError, CityCertificates, CrossTransfer, Verdict};
use dag_core::merkle::{MerkleLog, leaf_hash};
use dag_core::{AccountId, CityId, DecodeError, Hash32, Reader, TxId, Writer};

/// Payload prefix of a cross-city FRESH_TX (followed by the receiver city's id, UTF-8).
pub const TO_CITY_TAG: &[u8] = b"citychain/to-city/v1:";
/// Payload prefix of a relay SYSTEM_TX (followed by [`CrossRelay::encode`]).
pub const RELAY_TAG: &[u8] = b"citychain/cross-relay/v1:";
/// Domain tag of a ledger root.
const LEDGER_DOMAIN: &[u8] = b"citychain/ledger-cross-root/v1";
/// Longest Merkle path accepted (2^64 leaves).
const MAX_PATH: usize = 64;

/// The payload that makes a FRESH_TX a transfer to an account of `city`.
pub fn to_city_payload(city: &CityId) -> Vec<u8> {
    let mut p = TO_CITY_TAG.to_vec();
    p.extend_from_slice(city.as_str().as_bytes());
    p
}

/// The receiver city a FRESH_TX's payload names: `None` for a same-city transfer,
/// `Some(None)` for a tagged payload whose city id is not valid (fails at execution).
pub fn destination(payload: &[u8]) -> Option<Option<CityId>> {
    let rest = payload.strip_prefix(TO_CITY_TAG)?;
    Some(
        std::str::from_utf8(rest)
            .ok()
            .and_then(|s| CityId::new(s).ok()),
    )
}

/// Whether a SYSTEM_TX's payload is a relay (and so not a DPoS request).
pub fn is_relay(payload: &[u8]) -> bool {
    payload.starts_with(RELAY_TAG)
}

/// The Merkle root over a checkpoint's statements (leaf = [`leaf_hash`] of the 32 bytes).
pub fn statements_root(statements: &[Hash32]) -> Hash32 {
    MerkleLog::from_leaf_hashes(statements.iter().map(|s| leaf_hash(&s.0))).root()
}

/// A checkpoint's ledger root from its parts (see the module docs).
pub fn ledger_root(chain: &Hash32, book_root: &Hash32, statements_root: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(LEDGER_DOMAIN);
    h.update(&chain.0);
    h.update(&book_root.0);
    h.update(&statements_root.0);
    Hash32(*h.finalize().as_bytes())
}

/// That a statement is the `index`-th of the `size` statements a checkpoint emitted, and
/// the other parts of that checkpoint's ledger root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementProof {
    /// The checkpoint's chained root ([`crate::checkpoint_root`]).
    pub chain: Hash32,
    /// The cross book's root after the checkpoint.
    pub book_root: Hash32,
    /// Statements the checkpoint emitted.
    pub size: u64,
    /// This statement's position among them.
    pub index: u64,
    /// The Merkle inclusion path.
    pub path: Vec<Hash32>,
}

impl StatementProof {
    /// The ledger root `statement` implies through this proof, or why it cannot be
    /// included.
    pub fn ledger_root(&self, statement: &Hash32) -> Result<Hash32, String> {
        let leaf = leaf_hash(&statement.0);
        let root = root_from_path(&leaf, self.index, self.size, &self.path)?;
        Ok(ledger_root(&self.chain, &self.book_root, &root))
    }

    /// chain 32 ‖ book root 32 ‖ size u64 ‖ index u64 ‖ path (u8 count, 32 each).
    pub fn write(&self, w: &mut Writer) {
        w.raw(&self.chain.0)
            .raw(&self.book_root.0)
            .u64(self.size)
            .u64(self.index)
            .u8(self.path.len().min(MAX_PATH) as u8);
        for p in self.path.iter().take(MAX_PATH) {
            w.raw(&p.0);
        }
    }

    /// Reads [`StatementProof::write`].
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let chain = Hash32(r.bytes32("chain")?);
        let book_root = Hash32(r.bytes32("book_root")?);
        let size = r.u64("size")?;
        let index = r.u64("index")?;
        let n = usize::from(r.u8("path")?);
        if n > MAX_PATH {
            return Err(DecodeError::Invalid {
                field: "path",
                reason: "longer than 64",
            });
        }
        let mut path = Vec::with_capacity(n);
        for _ in 0..n {
            path.push(Hash32(r.bytes32("path")?));
        }
        Ok(StatementProof {
            chain,
            book_root,
            size,
            index,
            path,
        })
    }
}

/// RFC 9162 §2.1.3.2 (as `dag_core::merkle::verify_inclusion`): the root a leaf and its
/// inclusion path lead to.
fn root_from_path(leaf: &Hash32, index: u64, size: u64, path: &[Hash32]) -> Result<Hash32, String> {
    if index >= size {
        return Err(format!("index {index} out of {size}"));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return Err("path longer than the tree".into());
        }
        if fnode & 1 == 1 || fnode == snode {
            r = dag_core::merkle::node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = dag_core::merkle::node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err("path shorter than the tree".into());
    }
    Ok(r)
}

/// The other city's certificates over checkpoints (in a node: the 2f + 1 certificate of
/// a checkpoint header under that city's genesis committee, and the state root's parts).
pub trait CheckpointCertificates: Send + Sync {
    /// Whether `city` is a known city (the directory, from genesis / federation).
    fn knows(&self, city: &CityId) -> bool;
    /// Checks that `checkpoint` (opaque, from the relay) is a checkpoint of `city`
    /// certified by its committee whose ledger root is `ledger_root`.
    fn verify_ledger_root(
        &self,
        city: &CityId,
        ledger_root: &Hash32,
        checkpoint: &[u8],
    ) -> Result<(), CertError>;
}

/// [`CityCertificates`] for one relayed statement: the proof gives the ledger root, the
/// checkpoint certificate vouches for it.
pub(crate) struct Proven<'a> {
    pub(crate) certs: &'a dyn CheckpointCertificates,
    pub(crate) checkpoint: &'a [u8],
    pub(crate) proof: &'a StatementProof,
}

impl CityCertificates for Proven<'_> {
    fn knows(&self, city: &CityId) -> bool {
        self.certs.knows(city)
    }
    fn verify(&self, city: &CityId, statement: &Hash32, _cert: &[u8]) -> Result<(), CertError> {
        let root = self
            .proof
            .ledger_root(statement)
            .map_err(|reason| CertError {
                city: city.clone(),
                statement: *statement,
                reason,
            })?;
        self.certs.verify_ledger_root(city, &root, self.checkpoint)
    }
}

/// The directory alone (for the sender side: is the receiver city known?).
pub(crate) struct DirOnly<'a>(pub(crate) &'a dyn CheckpointCertificates);

impl CityCertificates for DirOnly<'_> {
    fn knows(&self, city: &CityId) -> bool {
        self.0.knows(city)
    }
    fn verify(&self, city: &CityId, statement: &Hash32, _cert: &[u8]) -> Result<(), CertError> {
        Err(CertError {
            city: city.clone(),
            statement: *statement,
            reason: "no certificate".into(),
        })
    }
}

/// One relayed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayItem {
    /// A transfer-out, for its receiver city.
    Out(CrossTransfer),
    /// An answer, for the transfer's sender city `to_city`.
    Answer {
        /// The answer.
        answer: Answer,
        /// The sender's city it goes back to.
        to_city: CityId,
    },
}

impl RelayItem {
    /// The certified statement.
    pub fn statement(&self) -> Hash32 {
        match self {
            RelayItem::Out(t) => t.statement(),
            RelayItem::Answer { answer, .. } => answer.statement(),
        }
    }
    /// The city it is for.
    pub fn destination(&self) -> &CityId {
        match self {
            RelayItem::Out(t) => &t.to_city,
            RelayItem::Answer { to_city, .. } => to_city,
        }
    }
}

/// Certified statements of one checkpoint of `from_city`, for one other city.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossRelay {
    /// The city that certified them.
    pub from_city: CityId,
    /// Its certificate over the checkpoint (opaque here; see [`CheckpointCertificates`]).
    pub checkpoint: Vec<u8>,
    /// The statements with their proofs.
    pub items: Vec<(RelayItem, StatementProof)>,
}

fn read_city(r: &mut Reader<'_>, field: &'static str) -> Result<CityId, DecodeError> {
    let b = r.bytes_u8(field, 255)?;
    let s = std::str::from_utf8(b).map_err(|_| DecodeError::Invalid {
        field,
        reason: "not UTF-8",
    })?;
    CityId::new(s).map_err(|_| DecodeError::Invalid {
        field,
        reason: "not a city id",
    })
}

impl CrossRelay {
    /// Most items in one relay (keeps the tx under the payload limit).
    pub const MAX_ITEMS: usize = 96;

    /// from city ‖ u32 checkpoint ‖ u16 count ‖ per item: kind u8 (1 out, 2 answer) ‖
    /// fields ‖ proof.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.checkpoint.len() + 400 * self.items.len() + 64);
        w.bytes_u8(self.from_city.as_str().as_bytes())
            .bytes_u32(&self.checkpoint)
            .u16(self.items.len().min(usize::from(u16::MAX)) as u16);
        for (item, proof) in self.items.iter().take(usize::from(u16::MAX)) {
            match item {
                RelayItem::Out(t) => {
                    w.u8(1)
                        .raw(t.id.as_bytes())
                        .bytes_u8(t.from_city.as_str().as_bytes())
                        .bytes_u8(t.to_city.as_str().as_bytes())
                        .raw(t.sender.as_bytes())
                        .raw(t.receiver.as_bytes())
                        .u64(t.amount)
                        .u64(t.deadline_ms);
                }
                RelayItem::Answer { answer, to_city } => {
                    w.u8(2)
                        .raw(&answer.transfer.0)
                        .raw(answer.id.as_bytes())
                        .bytes_u8(answer.from_city.as_str().as_bytes())
                        .u8(match answer.verdict {
                            Verdict::Credited => 1,
                            Verdict::Expired => 2,
                        })
                        .bytes_u8(to_city.as_str().as_bytes());
                }
            }
            proof.write(&mut w);
        }
        w.finish()
    }

    /// Strict decoding of [`CrossRelay::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let from_city = read_city(&mut r, "from_city")?;
        let checkpoint = r.bytes_u32("checkpoint", dag_core::MAX_PAYLOAD)?.to_vec();
        let n = r.u16("items")?;
        let mut items = Vec::with_capacity(usize::from(n).min(Self::MAX_ITEMS));
        for _ in 0..n {
            let item = match r.u8("kind")? {
                1 => RelayItem::Out(CrossTransfer {
                    id: TxId::from_bytes(r.bytes32("id")?),
                    from_city: read_city(&mut r, "from_city")?,
                    to_city: read_city(&mut r, "to_city")?,
                    sender: AccountId::from_bytes(r.bytes32("sender")?),
                    receiver: AccountId::from_bytes(r.bytes32("receiver")?),
                    amount: r.u64("amount")?,
                    deadline_ms: r.u64("deadline_ms")?,
                }),
                2 => RelayItem::Answer {
                    answer: Answer {
                        transfer: Hash32(r.bytes32("transfer")?),
                        id: TxId::from_bytes(r.bytes32("id")?),
                        from_city: read_city(&mut r, "answer_city")?,
                        verdict: match r.u8("verdict")? {
                            1 => Verdict::Credited,
                            2 => Verdict::Expired,
                            _ => {
                                return Err(DecodeError::Invalid {
                                    field: "verdict",
                                    reason: "unknown code",
                                });
                            }
                        },
                    },
                    to_city: read_city(&mut r, "to_city")?,
                },
                _ => {
                    return Err(DecodeError::Invalid {
                        field: "kind",
                        reason: "unknown relay item",
                    });
                }
            };
            items.push((item, StatementProof::read(&mut r)?));
        }
        r.finish()?;
        Ok(CrossRelay {
            from_city,
            checkpoint,
            items,
        })
    }

    /// The SYSTEM_TX payload: [`RELAY_TAG`] ‖ [`CrossRelay::encode`].
    pub fn to_payload(&self) -> Vec<u8> {
        let mut p = RELAY_TAG.to_vec();
        p.extend_from_slice(&self.encode());
        p
    }

    /// The relay in a SYSTEM_TX payload (`None`: not a relay).
    pub fn from_payload(payload: &[u8]) -> Option<Result<Self, DecodeError>> {
        payload.strip_prefix(RELAY_TAG).map(Self::decode)
    }
}

/// Why a cross-city proof does not hold ([`verify_cross_proof`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrossProofError {
    /// The bytes are not a [`CrossRelay`] encoding.
    #[error("cross-city proof does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// A proof carries exactly one statement.
    #[error("cross-city proof carries {0} statements, not one")]
    NotOneStatement(usize),
    /// The statement is not the certifying city's own (a transfer-out of another city, an
    /// answer by another city).
    #[error(
        "cross-city proof: the statement is {statement_city}'s, the certificate {certifying_city}'s"
    )]
    WrongCity {
        /// The city the statement names as its author.
        statement_city: String,
        /// The city whose certificate the proof carries.
        certifying_city: String,
    },
    /// The Merkle path or the checkpoint certificate does not hold.
    #[error(transparent)]
    Certificate(#[from] CertError),
}

/// A cross-city proof as canonical bytes: [`CrossRelay::encode`] of a relay with exactly one
/// statement — the certifying city, its checkpoint certificate (opaque here: in a node, the
/// certified header with its 2f + 1 signatures and every state machine's root), the
/// statement (a transfer-out or an answer) and its [`StatementProof`]. It is exactly what
/// the other city verifies when it executes the relay.
pub fn cross_proof(
    from_city: CityId,
    checkpoint: Vec<u8>,
    item: RelayItem,
    proof: StatementProof,
) -> Vec<u8> {
    CrossRelay {
        from_city,
        checkpoint,
        items: vec![(item, proof)],
    }
    .encode()
}

/// Verifies a [`cross_proof`] offline against `certs` (the directory of cities and their
/// committees): the statement's path leads to a ledger root that a checkpoint of the
/// statement's own city, certified by that city's committee, carries. Returns the proven
/// statement.
pub fn verify_cross_proof(
    bytes: &[u8],
    certs: &dyn CheckpointCertificates,
) -> Result<RelayItem, CrossProofError> {
    let relay = CrossRelay::decode(bytes)?;
    let n = relay.items.len();
    let Some((item, proof)) = relay.items.into_iter().next().filter(|_| n == 1) else {
        return Err(CrossProofError::NotOneStatement(n));
    };
    let author = match &item {
        RelayItem::Out(t) => &t.from_city,
        RelayItem::Answer { answer, .. } => &answer.from_city,
    };
    if *author != relay.from_city {
        return Err(CrossProofError::WrongCity {
            statement_city: author.as_str().to_string(),
            certifying_city: relay.from_city.as_str().to_string(),
        });
    }
    let statement = item.statement();
    let root = proof.ledger_root(&statement).map_err(|reason| CertError {
        city: relay.from_city.clone(),
        statement,
        reason,
    })?;
    certs.verify_ledger_root(&relay.from_city, &root, &relay.checkpoint)?;
    Ok(item)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn proofs_lead_to_the_ledger_root_and_relays_round_trip() {
        let stmts: Vec<Hash32> = (0..7u8).map(|i| Hash32([i; 32])).collect();
        let log = MerkleLog::from_leaf_hashes(stmts.iter().map(|s| leaf_hash(&s.0)));
        let (chain, book) = (Hash32([40; 32]), Hash32([41; 32]));
        let want = ledger_root(&chain, &book, &statements_root(&stmts));
        for (i, s) in stmts.iter().enumerate() {
            let p = StatementProof {
                chain,
                book_root: book,
                size: 7,
                index: i as u64,
                path: log.inclusion_proof(i as u64, 7).unwrap(),
            };
            assert_eq!(p.ledger_root(s).unwrap(), want);
            // Another statement at this position leads elsewhere.
            assert_ne!(p.ledger_root(&Hash32([99; 32])).unwrap(), want);
            let mut w = Writer::default();
            p.write(&mut w);
            let bytes = w.finish();
            let mut r = Reader::new(&bytes);
            assert_eq!(StatementProof::read(&mut r).unwrap(), p);
        }
        let bad = StatementProof {
            chain,
            book_root: book,
            size: 7,
            index: 9,
            path: vec![],
        };
        assert!(bad.ledger_root(&stmts[0]).is_err());

        let a = CityId::new("JP-13").unwrap();
        let b = CityId::new("JP-27").unwrap();
        assert_eq!(destination(&to_city_payload(&b)), Some(Some(b.clone())));
        assert_eq!(destination(b"other"), None);
        assert_eq!(destination(b"citychain/to-city/v1:\xff"), Some(None));
        let t = CrossTransfer {
            id: TxId::from_bytes([1; 32]),
            from_city: a.clone(),
            to_city: b.clone(),
            sender: AccountId::from_bytes([2; 32]),
            receiver: AccountId::from_bytes([3; 32]),
            amount: 5,
            deadline_ms: 9,
        };
        let ans = Answer {
            transfer: t.statement(),
            id: t.id,
            from_city: b.clone(),
            verdict: Verdict::Expired,
        };
        let proof = StatementProof {
            chain,
            book_root: book,
            size: 1,
            index: 0,
            path: vec![],
        };
        let relay = CrossRelay {
            from_city: a.clone(),
            checkpoint: vec![7; 100],
            items: vec![
                (RelayItem::Out(t), proof.clone()),
                (
                    RelayItem::Answer {
                        answer: ans,
                        to_city: a,
                    },
                    proof,
                ),
            ],
        };
        let payload = relay.to_payload();
        assert!(is_relay(&payload));
        assert_eq!(CrossRelay::from_payload(&payload).unwrap().unwrap(), relay);
        assert!(
            CrossRelay::from_payload(&payload[..payload.len() - 1])
                .unwrap()
                .is_err()
        );
        assert!(CrossRelay::from_payload(b"x").is_none());
    }
}

//! A cross-city transfer as `GetTx` reports it ([`CrossTx`]) and the offline check of its
//! two proofs against the genesis committees ([`GenesisCertificates`], [`verify_cross_tx`]).
//!
//! Each proof is [`ledger::cross_proof`] bytes: the certifying city, its checkpoint
//! certificate ([`CheckpointCert`]: the checkpoint header with 2f + 1 signatures of that
//! city's genesis committee and every state machine's root), the statement and its Merkle
//! path to the ledger root inside the header's state root. The transfer-out proof is what
//! the receiver city verifies before crediting; the answer proof what the sender city
//! verifies before settling.

use crate::{CertifiedCheckpoint, ConvertError, CrossState, pb};
use dag_core::consensus::Committee;
use dag_core::execution::combined_root;
use dag_core::{CityId, DecodeError, Hash32, Reader, Writer};
use ledger::{
    Answer, CertError, CheckpointCertificates, CrossProofError, CrossTransfer, RelayItem, Verdict,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// A cross-city transfer in one city, with the proofs available there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossTx {
    /// Its state in the answering city.
    pub state: CrossState,
    /// The sender's city.
    pub from_city: String,
    /// The receiver's city.
    pub to_city: String,
    /// The transfer-out statement.
    pub statement: Hash32,
    /// (a) The sender city's certified transfer-out ([`ledger::cross_proof`] bytes).
    pub transfer_out_proof: Option<Vec<u8>>,
    /// (b) The receiver city's certified answer ([`ledger::cross_proof`] bytes).
    pub answer_proof: Option<Vec<u8>>,
}

impl From<&CrossTx> for pb::CrossTx {
    fn from(c: &CrossTx) -> Self {
        pb::CrossTx {
            state: c.state.to_proto(),
            from_city: c.from_city.clone(),
            to_city: c.to_city.clone(),
            statement: c.statement.0.to_vec(),
            transfer_out_proof: c.transfer_out_proof.clone().unwrap_or_default(),
            answer_proof: c.answer_proof.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::CrossTx> for CrossTx {
    type Error = ConvertError;
    fn try_from(c: pb::CrossTx) -> Result<Self, ConvertError> {
        Ok(CrossTx {
            state: CrossState::from_proto(c.state).ok_or(ConvertError::Missing("cross.state"))?,
            from_city: c.from_city,
            to_city: c.to_city,
            statement: <[u8; 32]>::try_from(c.statement.as_slice())
                .map(Hash32)
                .map_err(|_| ConvertError::Missing("cross.statement"))?,
            transfer_out_proof: (!c.transfer_out_proof.is_empty()).then_some(c.transfer_out_proof),
            answer_proof: (!c.answer_proof.is_empty()).then_some(c.answer_proof),
        })
    }
}

/// A checkpoint's certificate as relayed and proven: the certified header (2f + 1
/// signatures) and every state machine's root, so a verifier recomputes the header's state
/// root and finds the `ledger` part in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointCert {
    /// The certified checkpoint header.
    pub certified: CertifiedCheckpoint,
    /// Each state machine's root, by name.
    pub roots: Vec<(String, Hash32)>,
}

impl CheckpointCert {
    /// u32 certificate ‖ u16 count ‖ (u8 name ‖ root 32) each.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes_u32(&self.certified.encode())
            .u16(self.roots.len().min(usize::from(u16::MAX)) as u16);
        for (n, r) in &self.roots {
            w.bytes_u8(&n.as_bytes()[..n.len().min(255)]).raw(&r.0);
        }
        w.finish()
    }

    /// Strict decoding of [`CheckpointCert::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let certified = CertifiedCheckpoint::decode(r.bytes_u32("certificate", 1 << 20)?)?;
        let n = r.u16("roots")?;
        let mut roots = Vec::new();
        for _ in 0..n {
            let name = std::str::from_utf8(r.bytes_u8("name", 255)?)
                .map_err(|_| DecodeError::Invalid {
                    field: "name",
                    reason: "not UTF-8",
                })?
                .to_string();
            roots.push((name, Hash32(r.bytes32("root")?)));
        }
        r.finish()?;
        Ok(CheckpointCert { certified, roots })
    }
}

/// Verified certificates remembered.
const VERIFIED_CACHE: usize = 1024;

/// The directory of cities (from the genesis file: each city's id, hash and committee)
/// and the check of their checkpoint certificates.
pub struct GenesisCertificates {
    here: Option<String>,
    cities: BTreeMap<String, (Hash32, Committee)>,
    /// BLAKE3 of a verified certificate → (city, ledger root): each certificate's
    /// signatures are checked once, not once per statement.
    verified: Mutex<HashMap<Hash32, (String, Hash32)>>,
}

impl std::fmt::Debug for GenesisCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenesisCertificates")
            .field("here", &self.here)
            .field("cities", &self.cities.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl GenesisCertificates {
    /// The directory of `cities` (id, city hash, genesis committee). `here`: the city of
    /// the representative that uses it (not "another city" to itself); `None` for an
    /// outside verifier (a wallet, a test), to which every city is known.
    pub fn new(
        here: Option<&str>,
        cities: impl IntoIterator<Item = (String, Hash32, Committee)>,
    ) -> Self {
        GenesisCertificates {
            here: here.map(str::to_string),
            cities: cities.into_iter().map(|(id, h, c)| (id, (h, c))).collect(),
            verified: Mutex::new(HashMap::new()),
        }
    }
}

impl CheckpointCertificates for GenesisCertificates {
    fn knows(&self, city: &CityId) -> bool {
        self.here.as_deref() != Some(city.as_str()) && self.cities.contains_key(city.as_str())
    }

    fn verify_ledger_root(
        &self,
        city: &CityId,
        ledger_root: &Hash32,
        checkpoint: &[u8],
    ) -> Result<(), CertError> {
        let fail = |reason: String| CertError {
            city: city.clone(),
            statement: *ledger_root,
            reason,
        };
        let key = Hash32::digest(checkpoint);
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some((c, root)) = cached {
            return if c == city.as_str() && root == *ledger_root {
                Ok(())
            } else {
                Err(fail(
                    "the certified checkpoint has another ledger root".into(),
                ))
            };
        }
        let Some((hash, committee)) = self.cities.get(city.as_str()) else {
            return Err(fail("unknown city".into()));
        };
        let cert = CheckpointCert::decode(checkpoint).map_err(|e| fail(e.to_string()))?;
        if cert.certified.header.city != *hash {
            return Err(fail("the checkpoint is another city's".into()));
        }
        let named: Vec<(&str, Hash32)> = cert.roots.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        if combined_root(&named) != cert.certified.header.state_hash {
            return Err(fail(
                "the roots do not give the certified state root".into(),
            ));
        }
        let Some((_, ledger)) = cert.roots.iter().find(|(n, _)| n == "ledger") else {
            return Err(fail("no ledger root in the checkpoint".into()));
        };
        cert.certified
            .verify(committee)
            .map_err(|e| fail(e.to_string()))?;
        {
            let mut v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if v.len() >= VERIFIED_CACHE {
                v.clear();
            }
            v.insert(key, (city.as_str().to_string(), *ledger));
        }
        if ledger != ledger_root {
            return Err(fail(
                "the certified checkpoint has another ledger root".into(),
            ));
        }
        Ok(())
    }
}

/// Why a [`CrossTx`]'s proofs do not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrossTxProofError {
    /// A proof is absent.
    #[error("cross-city transfer {statement:?}: no {which} proof")]
    Missing {
        /// "transfer-out" or "answer".
        which: &'static str,
        /// The transfer-out statement.
        statement: Hash32,
    },
    /// A proof does not verify.
    #[error("cross-city {which} proof: {source}")]
    Invalid {
        /// "transfer-out" or "answer".
        which: &'static str,
        /// Why.
        #[source]
        source: CrossProofError,
    },
    /// The proofs verify but do not fit together or the record (another transfer, another
    /// statement, other cities, a statement of the wrong kind).
    #[error("cross-city proofs do not match: {0}")]
    Mismatch(&'static str),
}

/// Both statements of a cross-city transfer, proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenCrossTx {
    /// The sender city's transfer-out.
    pub transfer: CrossTransfer,
    /// The receiver city's answer about it.
    pub answer: Answer,
}

impl ProvenCrossTx {
    /// Whether the receiver was credited (else the transfer expired and was refunded).
    pub fn credited(&self) -> bool {
        self.answer.verdict == Verdict::Credited
    }
}

/// Verifies both proofs of `cross` offline against `certs` (e.g. [`GenesisCertificates`]
/// from the genesis file with `here = None`): (a) a transfer-out certified by the sender
/// city's committee whose statement is `cross.statement`, between `from_city` and
/// `to_city`; (b) an answer certified by the receiver city's committee about exactly that
/// statement.
pub fn verify_cross_tx(
    cross: &CrossTx,
    certs: &dyn CheckpointCertificates,
) -> Result<ProvenCrossTx, CrossTxProofError> {
    let get = |which: &'static str, p: &Option<Vec<u8>>| {
        let bytes = p.as_deref().ok_or(CrossTxProofError::Missing {
            which,
            statement: cross.statement,
        })?;
        ledger::verify_cross_proof(bytes, certs)
            .map_err(|source| CrossTxProofError::Invalid { which, source })
    };
    let RelayItem::Out(transfer) = get("transfer-out", &cross.transfer_out_proof)? else {
        return Err(CrossTxProofError::Mismatch(
            "the transfer-out proof proves an answer",
        ));
    };
    let RelayItem::Answer { answer, .. } = get("answer", &cross.answer_proof)? else {
        return Err(CrossTxProofError::Mismatch(
            "the answer proof proves a transfer-out",
        ));
    };
    if transfer.statement() != cross.statement {
        return Err(CrossTxProofError::Mismatch(
            "the transfer-out is not the reported statement",
        ));
    }
    if transfer.from_city.as_str() != cross.from_city || transfer.to_city.as_str() != cross.to_city
    {
        return Err(CrossTxProofError::Mismatch(
            "the transfer-out names other cities",
        ));
    }
    if answer.transfer != cross.statement || answer.id != transfer.id {
        return Err(CrossTxProofError::Mismatch(
            "the answer is about another transfer",
        ));
    }
    if answer.from_city != transfer.to_city {
        return Err(CrossTxProofError::Mismatch(
            "the answer is not the receiver city's",
        ));
    }
    Ok(ProvenCrossTx { transfer, answer })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{CheckpointHeader, sign_share};
    use dag_core::{AccountId, TxId};
    use ledger::StatementProof;
    use pqc::Keypair;

    fn committee(keys: &[Keypair]) -> Committee {
        Committee::equal(
            keys.iter()
                .map(|k| dag_core::Signer::public_key(k).to_vec())
                .collect(),
        )
        .unwrap()
    }

    /// A one-statement proof of `item` by `city`, certified by `signers` (the checkpoint's
    /// only statement: an empty path).
    fn proof(city: &str, item: RelayItem, signers: &[Keypair]) -> Vec<u8> {
        let p = StatementProof {
            chain: Hash32([1; 32]),
            book_root: Hash32([2; 32]),
            size: 1,
            index: 0,
            path: Vec::new(),
        };
        let ledger = p.ledger_root(&item.statement()).unwrap();
        let roots = [("dpos", Hash32([3; 32])), ("ledger", ledger)];
        let header = CheckpointHeader {
            city: Hash32::digest(city.as_bytes()),
            sequence: 5,
            leader_round: 9,
            leader: Hash32([4; 32]),
            prev_hash: Hash32([5; 32]),
            running_hash: Hash32([6; 32]),
            batches: 1,
            state_hash: combined_root(&roots),
        };
        let cert = CheckpointCert {
            certified: CertifiedCheckpoint::new(
                header,
                signers.iter().map(|k| sign_share(&header, k)).collect(),
            ),
            roots: roots.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
        };
        ledger::cross_proof(CityId::new(city).unwrap(), cert.encode(), item, p)
    }

    #[test]
    fn both_proofs_verify_against_the_genesis_committees_and_tampering_fails() {
        let tokyo: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let osaka: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let certs = GenesisCertificates::new(
            None,
            [
                (
                    "JP-13".to_string(),
                    Hash32::digest(b"JP-13"),
                    committee(&tokyo),
                ),
                (
                    "JP-27".to_string(),
                    Hash32::digest(b"JP-27"),
                    committee(&osaka),
                ),
            ],
        );
        let (tk, os) = (CityId::new("JP-13").unwrap(), CityId::new("JP-27").unwrap());
        let t = CrossTransfer {
            id: TxId::from_bytes([7; 32]),
            from_city: tk.clone(),
            to_city: os.clone(),
            sender: AccountId::from_bytes([8; 32]),
            receiver: AccountId::from_bytes([9; 32]),
            amount: 25,
            deadline_ms: 1_000,
        };
        let answer = |verdict| Answer {
            transfer: t.statement(),
            id: t.id,
            from_city: os.clone(),
            verdict,
        };
        let answer_item = |a: Answer| RelayItem::Answer {
            answer: a,
            to_city: tk.clone(),
        };
        let good = CrossTx {
            state: CrossState::Completed,
            from_city: "JP-13".into(),
            to_city: "JP-27".into(),
            statement: t.statement(),
            transfer_out_proof: Some(proof("JP-13", RelayItem::Out(t.clone()), &tokyo[..3])),
            answer_proof: Some(proof(
                "JP-27",
                answer_item(answer(Verdict::Credited)),
                &osaka[1..],
            )),
        };
        let proven = verify_cross_tx(&good, &certs).unwrap();
        assert_eq!(proven.transfer, t);
        assert!(proven.credited());
        // Through the protobuf message and back.
        assert_eq!(CrossTx::try_from(pb::CrossTx::from(&good)).unwrap(), good);

        let check = |c: CrossTx, want: &str| {
            let e = verify_cross_tx(&c, &certs).unwrap_err();
            assert!(e.to_string().contains(want), "{e} (wanted {want})");
        };
        // Only two of four signatures; the other city's committee; a flipped signature byte.
        check(
            CrossTx {
                answer_proof: Some(proof(
                    "JP-27",
                    answer_item(answer(Verdict::Credited)),
                    &osaka[..2],
                )),
                ..good.clone()
            },
            "answer proof",
        );
        check(
            CrossTx {
                transfer_out_proof: Some(proof("JP-13", RelayItem::Out(t.clone()), &osaka[..3])),
                ..good.clone()
            },
            "transfer-out proof",
        );
        let mut flipped = good.clone();
        let bytes = flipped.transfer_out_proof.as_mut().unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        check(flipped, "transfer-out proof");
        // The statement edited after certification (another verdict, another amount).
        let mut r = ledger::CrossRelay::decode(good.answer_proof.as_ref().unwrap()).unwrap();
        r.items[0].0 = answer_item(answer(Verdict::Expired));
        check(
            CrossTx {
                answer_proof: Some(r.encode()),
                ..good.clone()
            },
            "answer proof",
        );
        // Well certified, but not this transfer's: another transfer's answer, a swapped
        // pair, another reported statement, a missing proof.
        let other = CrossTransfer {
            amount: 26,
            ..t.clone()
        };
        let other_answer = Answer {
            transfer: other.statement(),
            ..answer(Verdict::Credited)
        };
        check(
            CrossTx {
                answer_proof: Some(proof("JP-27", answer_item(other_answer), &osaka[..3])),
                ..good.clone()
            },
            "another transfer",
        );
        check(
            CrossTx {
                transfer_out_proof: good.answer_proof.clone(),
                ..good.clone()
            },
            "proves an answer",
        );
        check(
            CrossTx {
                statement: other.statement(),
                ..good.clone()
            },
            "not the reported statement",
        );
        check(
            CrossTx {
                answer_proof: None,
                ..good.clone()
            },
            "no answer proof",
        );
    }
}

//! Offline verification of a tx's ordering and federation proof (`repair-cli verify`):
//! nothing is trusted but the genesis file — the committee's keys certify the checkpoint,
//! the continent's key signs the receipt, the global's key the anchor.

use dag_core::TxId;
use genesis::Genesis;
use rpc::{ProofError, TxProof, VerifiedOrdering};

/// Why a proof does not check out.
#[derive(Debug, thiserror::Error)]
pub enum ProofCheckError {
    /// The bytes are not a proof.
    #[error("the proof does not decode: {0}")]
    Decode(#[from] dag_core::DecodeError),
    /// The proof is for another tx.
    #[error("asked about tx {asked}, the proof is for tx {got}")]
    WrongTx {
        /// Requested id.
        asked: TxId,
        /// Id in the proof.
        got: TxId,
    },
    /// The checkpoint's city is not in the genesis file.
    #[error("the proof names city {0}, which the genesis file does not list")]
    UnknownCity(String),
    /// The genesis file names no continent to check the receipt against.
    #[error("the genesis file names no continent")]
    NoContinent,
    /// A check failed.
    #[error(transparent)]
    Proof(#[from] ProofError),
}

/// What a verified proof establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTxProof {
    /// The city whose committee ordered the tx.
    pub city_id: String,
    /// Checkpoint, leader round, continent log index and size.
    pub ordering: VerifiedOrdering,
    /// The global log's anchor was present and verified too.
    pub global_verified: bool,
}

/// Verifies the canonical proof bytes of `tx` (as `GetTx` returns them) against `genesis`.
pub fn verify_tx_proof(
    bytes: &[u8],
    tx: TxId,
    genesis: &Genesis,
) -> Result<VerifiedTxProof, ProofCheckError> {
    let proof = TxProof::decode(bytes)?;
    if proof.tx_id != tx {
        return Err(ProofCheckError::WrongTx {
            asked: tx,
            got: proof.tx_id,
        });
    }
    let city = proof.federation.certified.header.city;
    let committee = genesis
        .cities
        .values()
        .find(|c| c.city == city)
        .ok_or_else(|| ProofCheckError::UnknownCity(city.to_hex()))?;
    let continent = genesis
        .continent
        .as_ref()
        .ok_or(ProofCheckError::NoContinent)?;
    let (ordering, global_verified) = match (&proof.global, &genesis.global) {
        (Some(_), Some(g)) => (
            proof.verify_global(&committee.committee, &continent.public_key, &g.public_key)?,
            true,
        ),
        _ => (
            proof.verify(&committee.committee, &continent.public_key)?,
            false,
        ),
    };
    Ok(VerifiedTxProof {
        city_id: committee.city_id.clone(),
        ordering,
        global_verified,
    })
}

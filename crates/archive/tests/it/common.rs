//! Test data: real ML-DSA-87 signed txs from keys generated once per test binary.

use archive::ArchiveEntry;
use dag_core::{AccountId, CityId, Position, PositionMethod, Tx, TxId, VerifiedTx};
use pqc::{Keypair, MlDsa87, sign_tx};
use std::sync::OnceLock;

/// Two senders: keygen is about a millisecond, so keys are shared by every test.
pub(crate) fn alice() -> &'static Keypair {
    static K: OnceLock<Keypair> = OnceLock::new();
    K.get_or_init(Keypair::generate)
}

pub(crate) fn bob() -> &'static Keypair {
    static K: OnceLock<Keypair> = OnceLock::new();
    K.get_or_init(Keypair::generate)
}

/// A receiver that never signs.
pub(crate) const CAROL: AccountId = AccountId::from_bytes([0xC4; 32]);

/// A signed and verified transfer.
pub(crate) fn tx(kp: &Keypair, nonce: u64, amount: u64, payload: &[u8]) -> VerifiedTx {
    let body = Tx::fresh(
        kp.account_id(),
        CAROL,
        amount,
        nonce,
        1_700_000_000_000 + nonce,
        CityId::new("JP-13").unwrap(),
        Position::from_degrees(35.6895, 139.6917).unwrap(),
        PositionMethod::Gps,
    )
    .with_payload(payload.to_vec());
    sign_tx(body, kp).verify(&MlDsa87).unwrap()
}

/// An entry with parents.
pub(crate) fn entry(tx: VerifiedTx, ts_ms: u64, parents: &[TxId]) -> ArchiveEntry {
    ArchiveEntry::new(tx, ts_ms).with_parents(parents.to_vec())
}

/// Days in ms.
pub(crate) fn days(n: u64) -> u64 {
    n * 24 * 3600 * 1000
}

//! Transactions: the seven kinds and their processing order, the body of a city tx, its
//! canonical encoding, and the typestate `SignedTx` → `VerifiedTx`.
//!
//! # Canonical encoding (version 1)
//!
//! All integers little endian. The unsigned body:
//!
//! | field | encoding |
//! |---|---|
//! | version | u8 = 1 |
//! | kind | u8 (0 fresh_tx, 1 poh_request, 2 poh_ack, 3 repair_request, 4 repair_ack, 5 checkpoint, 6 system_tx) |
//! | sender, receiver | 32 bytes each |
//! | amount, nonce, timestamp_ms | u64 each |
//! | city_id | u8 length (1..=64) + ASCII bytes |
//! | lat, lon | i32 each, degrees × 10⁷ |
//! | method | u8 (0 GPS, 1 Wi-Fi) |
//! | read_set, write_set | u16 count (≤ 256) + 32-byte ids, strictly ascending |
//! | payload | u32 length (≤ 64 KiB) + bytes |
//!
//! A signed tx is the body followed by the public key (u16 length + bytes) and the signature
//! (u16 length + bytes). Decoding is strict: unknown versions, kinds or methods, unsorted or
//! duplicated sets, over-long fields and trailing bytes are all errors. The tx id is the
//! BLAKE3 of the body; the signature covers `domain::TX ‖ tx_id`.

use crate::{
    AccountId, DecodeError, Error, Hash32, ObjectId, Reader, Result, SignatureVerifier, TxId,
    Writer,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest payload a tx may carry: 64 KiB.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Most object ids in a read set or a write set.
pub const MAX_OBJECT_SET: usize = 256;
/// Longest city id, in bytes.
pub const MAX_CITY_ID_LEN: usize = 64;
/// Longest public key accepted in a signed tx (ML-DSA-87's is 2592 bytes).
pub const MAX_KEY_LEN: usize = 4096;
/// Longest signature accepted in a signed tx (ML-DSA-87's is 4627 bytes).
pub const MAX_SIGNATURE_LEN: usize = 8192;
/// Upper bound on the encoded size of a signed tx.
pub const MAX_SIGNED_TX_LEN: usize = 1
    + 1
    + 64
    + 24
    + 1
    + MAX_CITY_ID_LEN
    + 8
    + 1
    + 2 * (2 + 32 * MAX_OBJECT_SET)
    + 4
    + MAX_PAYLOAD
    + 2
    + MAX_KEY_LEN
    + 2
    + MAX_SIGNATURE_LEN;

const VERSION: u8 = 1;

/// The seven kinds of transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum TxKind {
    /// A user's transfer.
    FreshTx = 0,
    /// Ask holders to store a tx (Proof of Hold).
    PohRequest = 1,
    /// A holder's signed receipt.
    PohAck = 2,
    /// Someone cannot find a tx.
    RepairRequest = 3,
    /// A holder returns the signed tx.
    RepairAck = 4,
    /// A committed summary.
    Checkpoint = 5,
    /// Staking, votes, evidence, rewards.
    SystemTx = 6,
}

impl TxKind {
    /// All kinds in the order work is served when it competes:
    /// CHECKPOINT > REPAIR_ACK > REPAIR_REQ > POH_ACK > POH_REQUEST > FRESH_TX > SYSTEM_TX.
    pub const BY_PRIORITY: [TxKind; 7] = [
        TxKind::Checkpoint,
        TxKind::RepairAck,
        TxKind::RepairRequest,
        TxKind::PohAck,
        TxKind::PohRequest,
        TxKind::FreshTx,
        TxKind::SystemTx,
    ];

    /// Position in the processing order: 0 is served first.
    pub fn processing_rank(self) -> u8 {
        match self {
            TxKind::Checkpoint => 0,
            TxKind::RepairAck => 1,
            TxKind::RepairRequest => 2,
            TxKind::PohAck => 3,
            TxKind::PohRequest => 4,
            TxKind::FreshTx => 5,
            TxKind::SystemTx => 6,
        }
    }

    /// Lifetime in a node's working set, in seconds; `None` for kinds kept until committed.
    pub fn ttl_secs(self) -> Option<u64> {
        match self {
            TxKind::FreshTx => Some(60),
            TxKind::PohRequest => Some(30),
            TxKind::PohAck => Some(6 * 3600),
            TxKind::RepairRequest => Some(15),
            TxKind::RepairAck => Some(60),
            TxKind::Checkpoint | TxKind::SystemTx => None,
        }
    }

    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses the wire byte.
    pub fn from_u8(b: u8) -> std::result::Result<Self, DecodeError> {
        Ok(match b {
            0 => TxKind::FreshTx,
            1 => TxKind::PohRequest,
            2 => TxKind::PohAck,
            3 => TxKind::RepairRequest,
            4 => TxKind::RepairAck,
            5 => TxKind::Checkpoint,
            6 => TxKind::SystemTx,
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }

    /// The snake_case name used in the docs and in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            TxKind::FreshTx => "fresh_tx",
            TxKind::PohRequest => "poh_request",
            TxKind::PohAck => "poh_ack",
            TxKind::RepairRequest => "repair_request",
            TxKind::RepairAck => "repair_ack",
            TxKind::Checkpoint => "checkpoint",
            TxKind::SystemTx => "system_tx",
        }
    }
}

impl PartialOrd for TxKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Kinds order by processing priority: the kind served first is the *greatest*, so
/// `TxKind::Checkpoint > TxKind::FreshTx` reads as in the design.
impl Ord for TxKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.processing_rank().cmp(&self.processing_rank())
    }
}

impl fmt::Display for TxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the sender's device fixed its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum PositionMethod {
    /// Satellite positioning.
    Gps = 0,
    /// Wi-Fi positioning.
    Wifi = 1,
}

impl PositionMethod {
    fn from_u8(b: u8) -> std::result::Result<Self, DecodeError> {
        match b {
            0 => Ok(PositionMethod::Gps),
            1 => Ok(PositionMethod::Wifi),
            other => Err(DecodeError::UnknownMethod(other)),
        }
    }
}

/// A position in fixed point (degrees × 10⁷, about 1 cm), so encoding never involves floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Position {
    /// Latitude, degrees × 10⁷, in [-90°, 90°].
    pub lat_e7: i32,
    /// Longitude, degrees × 10⁷, in [-180°, 180°].
    pub lon_e7: i32,
}

impl Position {
    /// From degrees; fails outside the valid ranges or on NaN.
    pub fn from_degrees(lat: f64, lon: f64) -> std::result::Result<Self, DecodeError> {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(DecodeError::Invalid {
                field: "lat",
                reason: "latitude must be within [-90, 90] degrees",
            });
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(DecodeError::Invalid {
                field: "lon",
                reason: "longitude must be within [-180, 180] degrees",
            });
        }
        Ok(Position {
            lat_e7: (lat * 1e7).round() as i32,
            lon_e7: (lon * 1e7).round() as i32,
        })
    }
    /// Latitude in degrees.
    pub fn lat(&self) -> f64 {
        self.lat_e7 as f64 / 1e7
    }
    /// Longitude in degrees.
    pub fn lon(&self) -> f64 {
        self.lon_e7 as f64 / 1e7
    }
    fn validate(&self) -> std::result::Result<(), DecodeError> {
        if !(-900_000_000..=900_000_000).contains(&self.lat_e7) {
            return Err(DecodeError::Invalid {
                field: "lat",
                reason: "latitude must be within [-90, 90] degrees",
            });
        }
        if !(-1_800_000_000..=1_800_000_000).contains(&self.lon_e7) {
            return Err(DecodeError::Invalid {
                field: "lon",
                reason: "longitude must be within [-180, 180] degrees",
            });
        }
        Ok(())
    }
}

/// A city (municipality or region) id such as `JP-13`: 1 to 64 printable ASCII bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CityId(String);

impl CityId {
    /// Validates and wraps a city id.
    pub fn new(s: impl Into<String>) -> std::result::Result<Self, DecodeError> {
        let s = s.into();
        if s.is_empty() || s.len() > MAX_CITY_ID_LEN {
            return Err(DecodeError::Invalid {
                field: "city_id",
                reason: "must be 1 to 64 bytes",
            });
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DecodeError::Invalid {
                field: "city_id",
                reason: "must be printable ASCII without spaces",
            });
        }
        Ok(CityId(s))
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The unsigned body of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tx {
    /// Kind of tx.
    pub kind: TxKind,
    /// Sender account (BLAKE3 of the signing key).
    pub sender: AccountId,
    /// Receiver account.
    pub receiver: AccountId,
    /// Amount transferred, in the smallest unit.
    pub amount: u64,
    /// Sender's sequence number; a (sender, nonce) pair is used at most once.
    pub nonce: u64,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// City the sender claims to be in.
    pub city_id: CityId,
    /// Sender's position.
    pub position: Position,
    /// How the position was fixed.
    pub method: PositionMethod,
    /// Objects read, strictly ascending (see [`Tx::with_read_set`]).
    pub read_set: Vec<ObjectId>,
    /// Objects written, strictly ascending (see [`Tx::with_write_set`]).
    pub write_set: Vec<ObjectId>,
    /// Optional opaque payload, at most [`MAX_PAYLOAD`] bytes.
    pub payload: Vec<u8>,
}

fn normalise(mut set: Vec<ObjectId>) -> Vec<ObjectId> {
    set.sort_unstable();
    set.dedup();
    set
}

impl Tx {
    /// A `fresh_tx` transfer with empty object sets and no payload.
    #[allow(clippy::too_many_arguments)]
    pub fn fresh(
        sender: AccountId,
        receiver: AccountId,
        amount: u64,
        nonce: u64,
        timestamp_ms: u64,
        city_id: CityId,
        position: Position,
        method: PositionMethod,
    ) -> Self {
        Tx {
            kind: TxKind::FreshTx,
            sender,
            receiver,
            amount,
            nonce,
            timestamp_ms,
            city_id,
            position,
            method,
            read_set: Vec::new(),
            write_set: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// Sets the kind.
    pub fn with_kind(mut self, kind: TxKind) -> Self {
        self.kind = kind;
        self
    }
    /// Sets the read set (sorted and de-duplicated here, so the encoding is canonical).
    pub fn with_read_set(mut self, set: Vec<ObjectId>) -> Self {
        self.read_set = normalise(set);
        self
    }
    /// Sets the write set (sorted and de-duplicated here).
    pub fn with_write_set(mut self, set: Vec<ObjectId>) -> Self {
        self.write_set = normalise(set);
        self
    }
    /// Sets the payload.
    pub fn with_payload(mut self, payload: Vec<u8>) -> Self {
        self.payload = payload;
        self
    }

    /// Checks every limit the decoder enforces, so a value that passes encodes to bytes
    /// that decode back to it.
    pub fn validate(&self) -> std::result::Result<(), DecodeError> {
        self.position.validate()?;
        if self.payload.len() > MAX_PAYLOAD {
            return Err(DecodeError::TooLong {
                field: "payload",
                len: self.payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        for (field, set) in [("read_set", &self.read_set), ("write_set", &self.write_set)] {
            if set.len() > MAX_OBJECT_SET {
                return Err(DecodeError::TooLong {
                    field,
                    len: set.len(),
                    max: MAX_OBJECT_SET,
                });
            }
            if set.windows(2).any(|w| w[0] >= w[1]) {
                return Err(DecodeError::Invalid {
                    field,
                    reason: "object ids must be strictly ascending",
                });
            }
        }
        Ok(())
    }

    /// Appends the canonical body to `w`. Sets longer than the limit are truncated to the
    /// limit so encoding never panics; [`Tx::validate`] reports such a value.
    pub fn write(&self, w: &mut Writer) {
        w.u8(VERSION)
            .u8(self.kind.as_u8())
            .raw(self.sender.as_bytes())
            .raw(self.receiver.as_bytes())
            .u64(self.amount)
            .u64(self.nonce)
            .u64(self.timestamp_ms)
            .bytes_u8(self.city_id.0.as_bytes())
            .i32(self.position.lat_e7)
            .i32(self.position.lon_e7)
            .u8(self.method as u8);
        for set in [&self.read_set, &self.write_set] {
            let n = set.len().min(u16::MAX as usize);
            w.u16(n as u16);
            for id in &set[..n] {
                w.raw(id.as_bytes());
            }
        }
        w.bytes_u32(&self.payload);
    }

    /// The canonical encoding of the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(200 + self.payload.len());
        self.write(&mut w);
        w.finish()
    }

    /// Reads one body from `r`.
    pub fn read(r: &mut Reader<'_>) -> std::result::Result<Self, DecodeError> {
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let kind = TxKind::from_u8(r.u8("kind")?)?;
        let sender = AccountId::from_bytes(r.bytes32("sender")?);
        let receiver = AccountId::from_bytes(r.bytes32("receiver")?);
        let amount = r.u64("amount")?;
        let nonce = r.u64("nonce")?;
        let timestamp_ms = r.u64("timestamp_ms")?;
        let city = r.bytes_u8("city_id", MAX_CITY_ID_LEN)?;
        let city_id = CityId::new(String::from_utf8_lossy(city).into_owned())?;
        if city_id.0.as_bytes() != city {
            return Err(DecodeError::Invalid {
                field: "city_id",
                reason: "must be printable ASCII",
            });
        }
        let position = Position {
            lat_e7: r.i32("lat")?,
            lon_e7: r.i32("lon")?,
        };
        let method = PositionMethod::from_u8(r.u8("method")?)?;
        let mut sets = [Vec::new(), Vec::new()];
        for (field, set) in ["read_set", "write_set"].into_iter().zip(sets.iter_mut()) {
            let n = r.u16(field)? as usize;
            if n > MAX_OBJECT_SET {
                return Err(DecodeError::TooLong {
                    field,
                    len: n,
                    max: MAX_OBJECT_SET,
                });
            }
            // Reserve no more than the rest of the input can fill (32 bytes each).
            set.reserve(n.min(r.remaining() / 32));
            for _ in 0..n {
                set.push(ObjectId::from_bytes(r.bytes32(field)?));
            }
        }
        let [read_set, write_set] = sets;
        let payload = r.bytes_u32("payload", MAX_PAYLOAD)?.to_vec();
        let tx = Tx {
            kind,
            sender,
            receiver,
            amount,
            nonce,
            timestamp_ms,
            city_id,
            position,
            method,
            read_set,
            write_set,
            payload,
        };
        tx.validate()?;
        Ok(tx)
    }

    /// Decodes exactly one body, with no trailing bytes.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let tx = Self::read(&mut r)?;
        r.finish()?;
        Ok(tx)
    }

    /// The tx id: BLAKE3 of the canonical body.
    pub fn id(&self) -> TxId {
        TxId(Hash32::digest(&self.encode()))
    }

    /// The message a sender signs: `domain::TX ‖ tx_id`.
    pub fn signing_message(id: &TxId) -> Vec<u8> {
        let mut m = Vec::with_capacity(crate::domain::TX.len() + 32);
        m.extend_from_slice(crate::domain::TX);
        m.extend_from_slice(id.as_bytes());
        m
    }
}

/// A tx with the sender's public key and signature, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    /// The body.
    pub tx: Tx,
    /// The sender's ML-DSA-87 public key; its BLAKE3 must equal `tx.sender`.
    pub public_key: Vec<u8>,
    /// Signature over `domain::TX ‖ tx_id`.
    pub signature: Vec<u8>,
}

impl SignedTx {
    /// Canonical encoding: body, then key and signature with u16 lengths.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(
            200 + self.tx.payload.len() + self.public_key.len() + self.signature.len(),
        );
        self.tx.write(&mut w);
        w.bytes_u16(&self.public_key[..self.public_key.len().min(u16::MAX as usize)]);
        w.bytes_u16(&self.signature[..self.signature.len().min(u16::MAX as usize)]);
        w.finish()
    }

    /// Length of [`SignedTx::encode`]'s output, computed without encoding (for batching
    /// and size checks on the hot path).
    pub fn encoded_len(&self) -> usize {
        let t = &self.tx;
        let sets =
            t.read_set.len().min(u16::MAX as usize) + t.write_set.len().min(u16::MAX as usize);
        1 + 1
            + 32
            + 32
            + 8
            + 8
            + 8
            + 1
            + t.city_id.0.len()
            + 4
            + 4
            + 1
            + 2
            + 2
            + 32 * sets
            + 4
            + t.payload.len()
            + 2
            + self.public_key.len().min(u16::MAX as usize)
            + 2
            + self.signature.len().min(u16::MAX as usize)
    }

    /// Strictly decodes a signed tx.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        if bytes.len() > MAX_SIGNED_TX_LEN {
            return Err(DecodeError::TooLong {
                field: "signed tx",
                len: bytes.len(),
                max: MAX_SIGNED_TX_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        let tx = Tx::read(&mut r)?;
        let public_key = r.bytes_u16("public_key", MAX_KEY_LEN)?.to_vec();
        let signature = r.bytes_u16("signature", MAX_SIGNATURE_LEN)?.to_vec();
        r.finish()?;
        Ok(SignedTx {
            tx,
            public_key,
            signature,
        })
    }

    /// The tx id (BLAKE3 of the body).
    pub fn id(&self) -> TxId {
        self.tx.id()
    }

    /// Checks that the key belongs to the sender and the signature verifies. This is the
    /// only way to obtain a [`VerifiedTx`].
    pub fn verify(self, verifier: &(impl SignatureVerifier + ?Sized)) -> Result<VerifiedTx> {
        let id = self.id();
        self.verify_with_id(id, verifier)
    }

    /// As [`SignedTx::verify`], for a caller that has already computed the id from this body.
    pub fn verify_with_id(
        self,
        id: TxId,
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> Result<VerifiedTx> {
        let actual = AccountId::from_public_key(&self.public_key);
        if actual != self.tx.sender {
            return Err(Error::KeyMismatch {
                claimed: self.tx.sender.to_hex(),
                actual: actual.to_hex(),
            });
        }
        verifier
            .verify(&self.public_key, &Tx::signing_message(&id), &self.signature)
            .map_err(|source| Error::BadSignature {
                what: format!("tx {}", id.short()),
                source,
            })?;
        Ok(VerifiedTx { signed: self, id })
    }
}

/// A signed tx whose key matches its sender and whose signature verified. It can only be
/// made by [`SignedTx::verify`], so unverified data cannot reach the DAG, store or archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTx {
    signed: SignedTx,
    id: TxId,
}

impl VerifiedTx {
    /// Re-creates the verified form of a tx read back from a store that only ever accepted
    /// [`VerifiedTx`] values of this process (the city's tx store, written by admission
    /// after [`SignedTx::verify`]): the signature was verified before the write and is not
    /// verified again. The cheap checks are repeated — the body hashes to `id` and the key
    /// hashes to the sender — so a record under the wrong id or with a swapped key is
    /// refused. Never call it on bytes that came from another node.
    pub fn reload_verified(signed: SignedTx, id: TxId) -> Result<Self> {
        if signed.id() != id {
            return Err(Error::Decode(DecodeError::Invalid {
                field: "tx id",
                reason: "the stored body does not hash to its id",
            }));
        }
        let actual = AccountId::from_public_key(&signed.public_key);
        if actual != signed.tx.sender {
            return Err(Error::KeyMismatch {
                claimed: signed.tx.sender.to_hex(),
                actual: actual.to_hex(),
            });
        }
        Ok(VerifiedTx { signed, id })
    }

    /// The tx id.
    pub fn id(&self) -> TxId {
        self.id
    }
    /// The body.
    pub fn tx(&self) -> &Tx {
        &self.signed.tx
    }
    /// The signed form.
    pub fn signed(&self) -> &SignedTx {
        &self.signed
    }
    /// Gives back the signed form.
    pub fn into_signed(self) -> SignedTx {
        self.signed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SignatureError;
    use proptest::prelude::*;

    /// A verifier for tests: a "signature" is BLAKE3(pk ‖ msg).
    struct HashSig;
    impl SignatureVerifier for HashSig {
        fn verify(
            &self,
            pk: &[u8],
            msg: &[u8],
            sig: &[u8],
        ) -> std::result::Result<(), SignatureError> {
            let mut h = blake3::Hasher::new();
            h.update(pk).update(msg);
            if h.finalize().as_bytes() == sig {
                Ok(())
            } else {
                Err(SignatureError::Invalid)
            }
        }
    }
    fn hash_sign(pk: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut h = blake3::Hasher::new();
        h.update(pk).update(msg);
        h.finalize().as_bytes().to_vec()
    }

    fn sample() -> Tx {
        Tx::fresh(
            AccountId::from_bytes([1; 32]),
            AccountId::from_bytes([2; 32]),
            10,
            3,
            1_700_000_000_000,
            CityId::new("JP-13").unwrap(),
            Position::from_degrees(35.6895, 139.6917).unwrap(),
            PositionMethod::Gps,
        )
    }

    #[test]
    fn processing_order_matches_design() {
        use TxKind::*;
        assert!(Checkpoint > RepairAck);
        assert!(RepairAck > RepairRequest);
        assert!(RepairRequest > PohAck);
        assert!(PohAck > PohRequest);
        assert!(PohRequest > FreshTx);
        assert!(FreshTx > SystemTx);
        let mut all = vec![
            SystemTx,
            FreshTx,
            PohAck,
            Checkpoint,
            RepairRequest,
            PohRequest,
            RepairAck,
        ];
        all.sort_by(|a, b| b.cmp(a));
        assert_eq!(all, TxKind::BY_PRIORITY.to_vec());
    }

    #[test]
    fn ttls_match_domain() {
        assert_eq!(TxKind::FreshTx.ttl_secs(), Some(60));
        assert_eq!(TxKind::PohRequest.ttl_secs(), Some(30));
        assert_eq!(TxKind::PohAck.ttl_secs(), Some(21600));
        assert_eq!(TxKind::RepairRequest.ttl_secs(), Some(15));
        assert_eq!(TxKind::RepairAck.ttl_secs(), Some(60));
        assert_eq!(TxKind::Checkpoint.ttl_secs(), None);
    }

    #[test]
    fn golden_tx_id_is_stable() {
        // Pinning the id of a fixed tx: if this changes, the encoding changed and every
        // stored id and signature with it.
        let tx = sample();
        assert_eq!(tx.encode().len(), 1 + 1 + 64 + 24 + 6 + 8 + 1 + 4 + 4);
        assert_eq!(
            tx.id().to_hex(),
            blake3::hash(&tx.encode()).to_hex().to_string()
        );
        let again = Tx::decode(&tx.encode()).unwrap();
        assert_eq!(again.id(), tx.id());
    }

    #[test]
    fn decode_rejects_bad_input() {
        let good = sample().encode();
        let check = |bytes: Vec<u8>, expect: fn(&DecodeError) -> bool| {
            let err = Tx::decode(&bytes).unwrap_err();
            assert!(expect(&err), "unexpected error {err:?}");
        };
        check(vec![], |e| {
            matches!(
                e,
                DecodeError::Truncated {
                    field: "version",
                    ..
                }
            )
        });
        let mut v = good.clone();
        v[0] = 9;
        check(v, |e| matches!(e, DecodeError::UnsupportedVersion(9)));
        let mut v = good.clone();
        v[1] = 7;
        check(v, |e| matches!(e, DecodeError::UnknownKind(7)));
        let mut v = good.clone();
        v.push(0);
        check(v, |e| matches!(e, DecodeError::TrailingBytes(1)));
        check(good[..good.len() - 1].to_vec(), |e| {
            matches!(e, DecodeError::Truncated { .. })
        });
        let big = sample().with_payload(vec![0; MAX_PAYLOAD + 1]).encode();
        check(big, |e| {
            matches!(
                e,
                DecodeError::TooLong {
                    field: "payload",
                    ..
                }
            )
        });
        let mut unsorted = sample();
        unsorted.read_set = vec![ObjectId::from_bytes([2; 32]), ObjectId::from_bytes([1; 32])];
        check(unsorted.encode(), |e| {
            matches!(
                e,
                DecodeError::Invalid {
                    field: "read_set",
                    ..
                }
            )
        });
        let mut bad_lat = sample();
        bad_lat.position.lat_e7 = 900_000_001;
        check(bad_lat.encode(), |e| {
            matches!(e, DecodeError::Invalid { field: "lat", .. })
        });
    }

    #[test]
    fn verify_typestate() {
        let pk = b"pk-of-alice".to_vec();
        let mut tx = sample();
        tx.sender = AccountId::from_public_key(&pk);
        let sig = hash_sign(&pk, &Tx::signing_message(&tx.id()));
        let signed = SignedTx {
            tx: tx.clone(),
            public_key: pk.clone(),
            signature: sig.clone(),
        };
        let bytes = signed.encode();
        assert_eq!(SignedTx::decode(&bytes).unwrap(), signed);
        let v = signed.clone().verify(&HashSig).unwrap();
        assert_eq!(v.id(), tx.id());

        // Tampered body.
        let mut tampered = signed.clone();
        tampered.tx.amount += 1;
        assert!(matches!(
            tampered.verify(&HashSig),
            Err(Error::BadSignature { .. })
        ));
        // Key of someone else.
        let mut other = signed.clone();
        other.public_key = b"pk-of-mallory".to_vec();
        assert!(matches!(
            other.verify(&HashSig),
            Err(Error::KeyMismatch { .. })
        ));
    }

    fn arb_tx() -> impl Strategy<Value = Tx> {
        (
            0u8..7,
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            "[A-Z]{2}-[0-9]{1,4}",
            (
                -900_000_000i32..=900_000_000,
                -1_800_000_000i32..=1_800_000_000,
            ),
            any::<bool>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..8),
            proptest::collection::vec(any::<[u8; 32]>(), 0..8),
            proptest::collection::vec(any::<u8>(), 0..512),
        )
            .prop_map(|(k, s, r, a, n, t, c, (lat, lon), wifi, rs, ws, p)| {
                Tx {
                    kind: TxKind::from_u8(k).unwrap(),
                    sender: AccountId::from_bytes(s),
                    receiver: AccountId::from_bytes(r),
                    amount: a,
                    nonce: n,
                    timestamp_ms: t,
                    city_id: CityId::new(c).unwrap(),
                    position: Position {
                        lat_e7: lat,
                        lon_e7: lon,
                    },
                    method: if wifi {
                        PositionMethod::Wifi
                    } else {
                        PositionMethod::Gps
                    },
                    read_set: Vec::new(),
                    write_set: Vec::new(),
                    payload: p,
                }
                .with_read_set(rs.into_iter().map(ObjectId::from_bytes).collect())
                .with_write_set(ws.into_iter().map(ObjectId::from_bytes).collect())
            })
    }

    proptest! {
        #[test]
        fn encoding_round_trips(tx in arb_tx()) {
            let bytes = tx.encode();
            let back = Tx::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &tx);
            prop_assert_eq!(back.encode(), bytes);
            prop_assert_eq!(back.id(), tx.id());
        }

        #[test]
        fn signed_round_trips(tx in arb_tx(), pk in proptest::collection::vec(any::<u8>(), 0..100), sig in proptest::collection::vec(any::<u8>(), 0..100)) {
            let s = SignedTx { tx, public_key: pk, signature: sig };
            prop_assert_eq!(s.encoded_len(), s.encode().len());
            prop_assert_eq!(SignedTx::decode(&s.encode()).unwrap(), s);
        }

        #[test]
        fn any_field_change_changes_id(tx in arb_tx(), delta in 1u64..) {
            let mut other = tx.clone();
            other.amount = other.amount.wrapping_add(delta);
            prop_assert_ne!(other.id(), tx.id());
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SignedTx::decode(&bytes);
            let _ = Tx::decode(&bytes);
        }
    }
}

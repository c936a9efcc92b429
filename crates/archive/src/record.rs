//! Archived records: what goes in ([`ArchiveEntry`]), what comes out ([`ArchivedTx`],
//! [`DagNode`]), and the encrypted record format both backends store.
//!
//! # Record format (versions 1 and 2)
//!
//! All integers little endian; built with dag-core's [`Writer`] and read back strictly.
//!
//! | field | encoding |
//! |---|---|
//! | magic, version | `CCAR`, u8 = 1 or 2 |
//! | tx id | 32 bytes |
//! | ts (archive time, ms) | u64 |
//! | parent ids | u16 count (≤ 1024) + 32 bytes each |
//! | sender tag | 32 bytes: keyed BLAKE3 of the sender (blind index) |
//! | fingerprint | 32 bytes: keyed BLAKE3 of the signed tx and parents |
//! | clear body | u32 length + the tx body with sender, receiver, amount and payload blanked |
//! | wrapped data key | u16 length + [`pqc::WrappedKey`] (names its key id) |
//! | amount | u8 length + sealed 8-byte amount |
//! | parties | u16 length + sealed `sender ‖ receiver ‖ sender public key` |
//! | payload | u32 length + sealed payload |
//! | signature | u16 length + sealed signature |
//!
//! Version 1 (still read): the wrapped key is the record's own random data key, one KEM
//! encapsulation per record. Version 2 (written since issue 18): the wrapped key is a
//! random **batch key**, encapsulated once per archive batch and the same in every record of
//! that batch; the record's data key is `BLAKE3::derive_key("citychain archive record key
//! v2", batch key ‖ tx id)`, so no two records share a data key and each record still opens
//! on its own. The version byte is in the header every sealed field is bound to.
//!
//! ## Stored by reference (the embedded backend, since issue 18)
//!
//! Every record of a batch carries the same wrapped batch key (~1.2 KB for NTRU-HPS-4096-821),
//! which pushed a record of a 7.3 KB tx past redb's 8 KiB leaf into a 16 KiB one. The
//! embedded backend therefore stores the wrapped key once per batch (in its own table, under
//! `BLAKE3(wrapped key)`) and each record with magic `CCAK` and that 32-byte reference in
//! place of the wrapped-key field ([`StoredRecord::encode_by_ref`]). Reading puts the wrapped
//! key back before anything is checked, so the header every sealed field is bound to is the
//! one above, byte for byte: the cryptography does not change, only where 1.2 KB is kept.
//!
//! Sealed fields are XChaCha20-Poly1305 under the record's data key, with
//! associated data `BLAKE3(everything before the first sealed field) ‖ field name`: changing
//! any byte of the record, or moving a ciphertext to another record or field, fails
//! authentication. The public key and signature are sealed too because they identify the
//! sender. What stays in clear: tx id, archive time, parents, kind, nonce, the sender's
//! timestamp, city, position and object sets.

use crate::{ArchiveKeys, Error, Result};
use dag_core::{AccountId, DecodeError, Reader, SignedTx, Tx, TxId, VerifiedTx, Writer};
use pqc::{KemError, KeyId, WrappedKey};

const MAGIC: &[u8; 4] = b"CCAR";
/// Magic of a record stored with its wrapped key by reference ([`StoredRecord::encode_by_ref`]).
const MAGIC_REF: &[u8; 4] = b"CCAK";
/// Each record wraps its own data key (one KEM encapsulation per record); read only.
const VERSION_RECORD_KEY: u8 = 1;
/// Records wrap their batch's key and derive their own data key from it and their tx id.
const VERSION_BATCH_KEY: u8 = 2;
/// `BLAKE3::derive_key` context of a version-2 record's data key.
const RECORD_KEY_CONTEXT: &str = "citychain archive record key v2";
/// Most parent ids one archived node may name.
pub const MAX_PARENTS: usize = 1024;
const MAX_CLEAR_BODY: usize = 64 * 1024;
const MAX_SEALED: usize = dag_core::MAX_SIGNED_TX_LEN;

/// A held tx to archive: the verified tx, the archive time and its parents in the DAG.
#[derive(Debug, Clone)]
pub struct ArchiveEntry {
    /// The tx; only verified txs can be archived.
    pub tx: VerifiedTx,
    /// Archive time, ms since the Unix epoch: retention counts from here.
    pub ts_ms: u64,
    /// Ids of the DAG node's parents (at most [`MAX_PARENTS`]; more are cut off).
    pub parent_ids: Vec<TxId>,
}

impl ArchiveEntry {
    /// An entry with no parents.
    pub fn new(tx: VerifiedTx, ts_ms: u64) -> Self {
        ArchiveEntry {
            tx,
            ts_ms,
            parent_ids: Vec::new(),
        }
    }
    /// Sets the parents.
    pub fn with_parents(mut self, parent_ids: Vec<TxId>) -> Self {
        self.parent_ids = parent_ids;
        self
    }
    /// The tx id.
    pub fn id(&self) -> TxId {
        self.tx.id()
    }
}

/// A tx read back from the archive, decrypted, its id checked against the id asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedTx {
    /// The signed tx (re-verify its signature before trusting it beyond the archive).
    pub signed: SignedTx,
    /// Archive time, ms.
    pub ts_ms: u64,
    /// Parent ids.
    pub parent_ids: Vec<TxId>,
    /// The key its data key was wrapped under.
    pub key_id: KeyId,
}

impl ArchivedTx {
    /// The tx id.
    pub fn id(&self) -> TxId {
        self.signed.id()
    }
}

/// A DAG node: the clear part of a record, read without decrypting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagNode {
    /// The tx id.
    pub tx_id: TxId,
    /// Parent ids.
    pub parent_ids: Vec<TxId>,
    /// Archive time, ms.
    pub ts_ms: u64,
}

/// One archive batch's key: a random data key encapsulated once under the current key;
/// each record of the batch derives its own data key from it ([`record_key`]).
pub(crate) struct BatchKey {
    key: pqc::DataKey,
    wrapped: Vec<u8>,
}

impl BatchKey {
    /// A fresh batch key wrapped under the keys' current key (one KEM encapsulation).
    pub(crate) fn new(keys: &ArchiveKeys) -> std::result::Result<Self, KemError> {
        let (key, wrapped) = keys.wrap_new()?;
        Ok(BatchKey {
            key,
            wrapped: wrapped.encode(),
        })
    }
}

/// A version-2 record's data key: derived from its batch key and its tx id.
fn record_key(batch: &pqc::DataKey, tx_id: &TxId) -> pqc::DataKey {
    let mut material = zeroize::Zeroizing::new([0u8; 64]);
    material[..32].copy_from_slice(batch.expose_secret());
    material[32..].copy_from_slice(tx_id.as_bytes());
    pqc::DataKey::from_bytes(blake3::derive_key(RECORD_KEY_CONTEXT, &material[..]))
}

/// An encrypted record as stored (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    version: u8,
    pub(crate) tx_id: TxId,
    pub(crate) ts_ms: u64,
    pub(crate) parent_ids: Vec<TxId>,
    pub(crate) sender_tag: [u8; 32],
    pub(crate) fingerprint: [u8; 32],
    clear_body: Vec<u8>,
    wrapped_key: Vec<u8>,
    amount: Vec<u8>,
    parties: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// The content a fingerprint covers: the signed tx and the parents (not the archive time,
/// so archiving the same tx again later is a no-op, not a conflict).
pub(crate) fn fingerprint_of(keys: &ArchiveKeys, signed: &SignedTx, parents: &[TxId]) -> [u8; 32] {
    let mut w = Writer::with_capacity(16 * 1024);
    w.bytes_u32(&signed.encode());
    w.u32(parents.len() as u32);
    for p in parents {
        w.raw(p.as_bytes());
    }
    keys.fingerprint(w.as_slice())
}

fn aad(header_hash: &[u8; 32], field: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(32 + field.len());
    a.extend_from_slice(header_hash);
    a.extend_from_slice(field.as_bytes());
    a
}

impl StoredRecord {
    /// Encrypts an entry on its own: a batch of one (one KEM encapsulation).
    #[cfg(test)]
    pub(crate) fn seal(keys: &ArchiveKeys, entry: &ArchiveEntry) -> Result<Self> {
        let batch = BatchKey::new(keys).map_err(|source| Error::Encrypt {
            tx_id: entry.tx.id(),
            source: Box::new(source),
        })?;
        Self::seal_in_batch(keys, &batch, entry)
    }

    /// Encrypts every entry under one batch key (one KEM encapsulation for all of them).
    pub(crate) fn seal_all(keys: &ArchiveKeys, entries: &[ArchiveEntry]) -> Result<Vec<Self>> {
        let Some(first) = entries.first() else {
            return Ok(Vec::new());
        };
        let batch = BatchKey::new(keys).map_err(|source| Error::Encrypt {
            tx_id: first.tx.id(),
            source: Box::new(source),
        })?;
        entries
            .iter()
            .map(|e| Self::seal_in_batch(keys, &batch, e))
            .collect()
    }

    /// Encrypts an entry (version 2) under its data key derived from `batch`.
    pub(crate) fn seal_in_batch(
        keys: &ArchiveKeys,
        batch: &BatchKey,
        entry: &ArchiveEntry,
    ) -> Result<Self> {
        let dk = record_key(&batch.key, &entry.tx.id());
        Self::seal_with(keys, entry, VERSION_BATCH_KEY, dk, batch.wrapped.clone())
    }

    /// Encrypts an entry in the old format (version 1: its own wrapped data key), to show
    /// such records stay readable.
    #[cfg(test)]
    pub(crate) fn seal_v1(keys: &ArchiveKeys, entry: &ArchiveEntry) -> Result<Self> {
        let (dk, wrapped) = keys.wrap_new().map_err(|source| Error::Encrypt {
            tx_id: entry.tx.id(),
            source: Box::new(source),
        })?;
        Self::seal_with(keys, entry, VERSION_RECORD_KEY, dk, wrapped.encode())
    }

    fn seal_with(
        keys: &ArchiveKeys,
        entry: &ArchiveEntry,
        version: u8,
        dk: pqc::DataKey,
        wrapped_key: Vec<u8>,
    ) -> Result<Self> {
        let tx_id = entry.tx.id();
        let signed = entry.tx.signed();
        let tx = &signed.tx;
        let mut parent_ids = entry.parent_ids.clone();
        parent_ids.truncate(MAX_PARENTS);
        let enc = |source: KemError| Error::Encrypt {
            tx_id,
            source: Box::new(source),
        };

        let blank = Tx {
            sender: AccountId::default(),
            receiver: AccountId::default(),
            amount: 0,
            payload: Vec::new(),
            ..tx.clone()
        };
        let mut rec = StoredRecord {
            version,
            tx_id,
            ts_ms: entry.ts_ms,
            sender_tag: keys.sender_tag(&tx.sender),
            fingerprint: fingerprint_of(keys, signed, &parent_ids),
            parent_ids,
            clear_body: blank.encode(),
            wrapped_key,
            amount: Vec::new(),
            parties: Vec::new(),
            payload: Vec::new(),
            signature: Vec::new(),
        };
        let hh = rec.header_hash();
        let mut parties = Vec::with_capacity(64 + signed.public_key.len());
        parties.extend_from_slice(tx.sender.as_bytes());
        parties.extend_from_slice(tx.receiver.as_bytes());
        parties.extend_from_slice(&signed.public_key);
        rec.amount = dk
            .seal(&aad(&hh, "amount"), &tx.amount.to_le_bytes())
            .map_err(enc)?;
        rec.parties = dk.seal(&aad(&hh, "parties"), &parties).map_err(enc)?;
        rec.payload = dk.seal(&aad(&hh, "payload"), &tx.payload).map_err(enc)?;
        rec.signature = dk
            .seal(&aad(&hh, "signature"), &signed.signature)
            .map_err(enc)?;
        Ok(rec)
    }

    fn write_header(&self, w: &mut Writer) {
        self.write_header_as(w, false);
    }

    /// The header; `by_ref`: magic `CCAK` and the wrapped key's 32-byte reference in place
    /// of the key (the stored form of [`StoredRecord::encode_by_ref`]).
    fn write_header_as(&self, w: &mut Writer, by_ref: bool) {
        w.raw(if by_ref { MAGIC_REF } else { MAGIC })
            .u8(self.version)
            .raw(self.tx_id.as_bytes())
            .u64(self.ts_ms);
        w.u16(self.parent_ids.len() as u16);
        for p in &self.parent_ids {
            w.raw(p.as_bytes());
        }
        w.raw(&self.sender_tag)
            .raw(&self.fingerprint)
            .bytes_u32(&self.clear_body);
        if by_ref {
            w.raw(&self.wrapped_key_ref());
        } else {
            w.bytes_u16(&self.wrapped_key);
        }
    }

    fn header_hash(&self) -> [u8; 32] {
        let mut w = Writer::with_capacity(4096);
        self.write_header(&mut w);
        *blake3::hash(w.as_slice()).as_bytes()
    }

    /// The stored bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(
            4096 + self.clear_body.len() + self.payload.len() + self.parties.len(),
        );
        self.write_header(&mut w);
        self.write_sealed(&mut w);
        w.finish()
    }

    fn write_sealed(&self, w: &mut Writer) {
        w.bytes_u8(&self.amount)
            .bytes_u16(&self.parties)
            .bytes_u32(&self.payload)
            .bytes_u16(&self.signature);
    }

    /// The reference under which the wrapped key is kept by a backend that stores it once:
    /// `BLAKE3(wrapped key bytes)`.
    pub(crate) fn wrapped_key_ref(&self) -> [u8; 32] {
        *blake3::hash(&self.wrapped_key).as_bytes()
    }

    /// The wrapped key's bytes (what [`StoredRecord::wrapped_key_ref`] names).
    pub(crate) fn wrapped_key_bytes(&self) -> &[u8] {
        &self.wrapped_key
    }

    /// The stored bytes with the wrapped key replaced by [`StoredRecord::wrapped_key_ref`]
    /// (magic `CCAK`); [`StoredRecord::decode_with`] puts it back.
    pub(crate) fn encode_by_ref(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(
            4096 + self.clear_body.len() + self.payload.len() + self.parties.len(),
        );
        self.write_header_as(&mut w, true);
        self.write_sealed(&mut w);
        w.finish()
    }

    /// Whether stored bytes are in the by-reference layout ([`StoredRecord::encode_by_ref`]).
    pub(crate) fn is_by_ref(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC_REF)
    }

    /// The wrapped-key reference of stored bytes written by [`StoredRecord::encode_by_ref`];
    /// `None` for a record that carries its wrapped key (or bytes that are no record).
    pub(crate) fn key_ref_of(key: TxId, bytes: &[u8]) -> Option<[u8; 32]> {
        let mut seen = None;
        Self::decode_with(key, bytes, |r| {
            seen = Some(*r);
            Ok(Vec::new())
        })
        .ok()?;
        seen
    }

    /// Strictly decodes stored bytes found under `key`: a record whose tx id is not `key` is
    /// corrupt. Bytes that name their wrapped key by reference are refused here (they need
    /// [`StoredRecord::decode_with`] and the backend's key table). The MongoDB backend
    /// stores records whole.
    #[cfg_attr(not(any(test, feature = "mongodb")), allow(dead_code))]
    pub(crate) fn decode(key: TxId, bytes: &[u8]) -> Result<Self> {
        Self::decode_with(key, bytes, |_| {
            Err(Error::CorruptRecord {
                tx_id: key,
                reason: "wrapped key stored by reference, and no key table to read it".into(),
            })
        })
    }

    /// [`StoredRecord::decode`] of either layout: bytes written by
    /// [`StoredRecord::encode_by_ref`] get their wrapped key from `resolve` (given the
    /// reference); the record then is the one that was encoded, byte for byte.
    pub(crate) fn decode_with(
        key: TxId,
        bytes: &[u8],
        resolve: impl FnOnce(&[u8; 32]) -> Result<Vec<u8>>,
    ) -> Result<Self> {
        let corrupt = |reason: String| Error::CorruptRecord { tx_id: key, reason };
        let de = |e: DecodeError| Error::CorruptRecord {
            tx_id: key,
            reason: e.to_string(),
        };
        let mut r = Reader::new(bytes);
        let by_ref = match r.take(4, "magic").map_err(de)? {
            m if m == MAGIC => false,
            m if m == MAGIC_REF => true,
            _ => return Err(corrupt("not an archive record (bad magic)".into())),
        };
        let version = r.u8("version").map_err(de)?;
        if version != VERSION_RECORD_KEY && version != VERSION_BATCH_KEY {
            return Err(corrupt(format!("unsupported record version {version}")));
        }
        let tx_id = TxId::from_bytes(r.bytes32("tx_id").map_err(de)?);
        if tx_id != key {
            return Err(corrupt(format!("record names tx {tx_id}")));
        }
        let ts_ms = r.u64("ts").map_err(de)?;
        let n = r.u16("parent_ids").map_err(de)? as usize;
        if n > MAX_PARENTS {
            return Err(corrupt(format!(
                "{n} parents, over the limit of {MAX_PARENTS}"
            )));
        }
        let mut parent_ids = Vec::with_capacity(n);
        for _ in 0..n {
            parent_ids.push(TxId::from_bytes(r.bytes32("parent_id").map_err(de)?));
        }
        let rec = StoredRecord {
            version,
            tx_id,
            ts_ms,
            parent_ids,
            sender_tag: r.bytes32("sender_tag").map_err(de)?,
            fingerprint: r.bytes32("fingerprint").map_err(de)?,
            clear_body: r
                .bytes_u32("clear_body", MAX_CLEAR_BODY)
                .map_err(de)?
                .to_vec(),
            wrapped_key: if by_ref {
                let key_ref = r.bytes32("wrapped_key_ref").map_err(de)?;
                let wrapped = resolve(&key_ref)?;
                if !wrapped.is_empty() && *blake3::hash(&wrapped).as_bytes() != key_ref {
                    return Err(corrupt("wrapped key does not match its reference".into()));
                }
                wrapped
            } else {
                r.bytes_u16("wrapped_key", u16::MAX as usize)
                    .map_err(de)?
                    .to_vec()
            },
            amount: r.bytes_u8("amount", 255).map_err(de)?.to_vec(),
            parties: r
                .bytes_u16("parties", u16::MAX as usize)
                .map_err(de)?
                .to_vec(),
            payload: r.bytes_u32("payload", MAX_SEALED).map_err(de)?.to_vec(),
            signature: r
                .bytes_u16("signature", u16::MAX as usize)
                .map_err(de)?
                .to_vec(),
        };
        r.finish().map_err(de)?;
        Ok(rec)
    }

    /// The clear DAG node.
    pub(crate) fn dag_node(&self) -> DagNode {
        DagNode {
            tx_id: self.tx_id,
            parent_ids: self.parent_ids.clone(),
            ts_ms: self.ts_ms,
        }
    }

    /// The key id named by the wrapped data key.
    pub(crate) fn wrapped_key_id(&self) -> Result<KeyId> {
        Ok(self.wrapped()?.key_id())
    }

    fn wrapped(&self) -> Result<WrappedKey> {
        WrappedKey::decode(&self.wrapped_key).map_err(|e| Error::CorruptRecord {
            tx_id: self.tx_id,
            reason: format!("wrapped key: {e}"),
        })
    }

    /// The same record with its data key wrapped under the current key, or `None` if it
    /// already is. The data key is kept; since the wrapped key is part of the header that
    /// every sealed field is bound to, each field is opened and sealed again under the new
    /// header. Everything else (id, time, parents, tags, fingerprint, clear body) is kept, so
    /// the indexes stay valid.
    pub(crate) fn rewrap(&self, keys: &ArchiveKeys) -> Result<Option<Self>> {
        let tx_id = self.tx_id;
        let wrapped = self.wrapped()?;
        let key_id = wrapped.key_id();
        let Some((dk, again)) = keys.rewrap(&wrapped).map_err(|source| match source {
            KemError::UnknownKeyId(key_id) => Error::UnknownKey { tx_id, key_id },
            source => Error::KeyUnwrap {
                tx_id,
                key_id,
                source: Box::new(source),
            },
        })?
        else {
            return Ok(None);
        };
        let dk = self.data_key(dk);
        let old_hh = self.header_hash();
        let mut rec = self.clone();
        rec.wrapped_key = again.encode();
        let new_hh = rec.header_hash();
        let enc = |source: KemError| Error::Encrypt {
            tx_id,
            source: Box::new(source),
        };
        for (field, value) in [
            ("amount", &mut rec.amount),
            ("parties", &mut rec.parties),
            ("payload", &mut rec.payload),
            ("signature", &mut rec.signature),
        ] {
            let plain = zeroize::Zeroizing::new(
                dk.open(&aad(&old_hh, field), value)
                    .map_err(|_| Error::Tampered { tx_id, field })?,
            );
            *value = dk.seal(&aad(&new_hh, field), &plain).map_err(enc)?;
        }
        Ok(Some(rec))
    }

    /// The key the sealed fields are under, from the unwrapped key: itself (version 1) or
    /// derived from it as the batch key (version 2).
    fn data_key(&self, unwrapped: pqc::DataKey) -> pqc::DataKey {
        if self.version == VERSION_RECORD_KEY {
            unwrapped
        } else {
            record_key(&unwrapped, &self.tx_id)
        }
    }

    /// Decrypts and rebuilds the signed tx, checking its id.
    pub(crate) fn open(&self, keys: &ArchiveKeys) -> Result<ArchivedTx> {
        let tx_id = self.tx_id;
        let wrapped = self.wrapped()?;
        let key_id = wrapped.key_id();
        let dk = self.data_key(keys.unwrap(&wrapped).map_err(|source| match source {
            KemError::UnknownKeyId(key_id) => Error::UnknownKey { tx_id, key_id },
            source => Error::KeyUnwrap {
                tx_id,
                key_id,
                source: Box::new(source),
            },
        })?);
        let hh = self.header_hash();
        let open = |field: &'static str, sealed: &[u8]| {
            dk.open(&aad(&hh, field), sealed)
                .map_err(|_| Error::Tampered { tx_id, field })
        };
        let corrupt = |reason: String| Error::CorruptRecord { tx_id, reason };

        let amount_bytes: [u8; 8] = open("amount", &self.amount)?
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("amount is not 8 bytes".into()))?;
        let parties = open("parties", &self.parties)?;
        if parties.len() < 64 {
            return Err(corrupt(format!("parties field is {} bytes", parties.len())));
        }
        let payload = open("payload", &self.payload)?;
        let signature = open("signature", &self.signature)?;

        let mut tx =
            Tx::decode(&self.clear_body).map_err(|e| corrupt(format!("clear body: {e}")))?;
        tx.sender = AccountId::from_slice(&parties[..32]).map_err(|e| corrupt(e.to_string()))?;
        tx.receiver =
            AccountId::from_slice(&parties[32..64]).map_err(|e| corrupt(e.to_string()))?;
        tx.amount = u64::from_le_bytes(amount_bytes);
        tx.payload = payload;
        let signed = SignedTx {
            tx,
            public_key: parties[64..].to_vec(),
            signature,
        };
        let found = signed.id();
        if found != tx_id {
            return Err(Error::IdMismatch {
                asked: tx_id,
                found,
            });
        }
        Ok(ArchivedTx {
            signed,
            ts_ms: self.ts_ms,
            parent_ids: self.parent_ids.clone(),
            key_id,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::{CityId, Position, PositionMethod};
    use pqc::{Keypair, Keyring, MlDsa87, NtruParams, sign_tx};
    use std::sync::OnceLock;

    pub(crate) fn signer() -> &'static Keypair {
        static K: OnceLock<Keypair> = OnceLock::new();
        K.get_or_init(Keypair::generate)
    }

    pub(crate) fn verified(nonce: u64, payload: &[u8]) -> VerifiedTx {
        let kp = signer();
        let tx = Tx::fresh(
            kp.account_id(),
            AccountId::from_bytes([7; 32]),
            1_000 + nonce,
            nonce,
            1_700_000_000_000,
            CityId::new("JP-13").unwrap(),
            Position::from_degrees(35.68, 139.69).unwrap(),
            PositionMethod::Gps,
        )
        .with_payload(payload.to_vec());
        sign_tx(tx, kp).verify(&MlDsa87).unwrap()
    }

    pub(crate) fn keys() -> ArchiveKeys {
        ArchiveKeys::new(Keyring::generate(NtruParams::default()).unwrap())
    }

    #[test]
    fn round_trip() {
        let keys = keys();
        let v = verified(1, b"hello");
        let entry = ArchiveEntry::new(v.clone(), 5).with_parents(vec![TxId::from_bytes([1; 32])]);
        let rec = StoredRecord::seal(&keys, &entry).unwrap();
        let bytes = rec.encode();
        let back = StoredRecord::decode(v.id(), &bytes).unwrap();
        assert_eq!(back, rec);
        let out = back.open(&keys).unwrap();
        assert_eq!(&out.signed, v.signed());
        assert_eq!(out.ts_ms, 5);
        assert_eq!(out.parent_ids, entry.parent_ids);
        assert_eq!(out.key_id, keys.current_key_id());
        assert!(out.signed.verify(&MlDsa87).is_ok());
    }

    #[test]
    fn every_byte_flip_is_a_typed_error() {
        let keys = keys();
        let v = verified(2, b"payload bytes");
        let bytes = StoredRecord::seal(&keys, &ArchiveEntry::new(v.clone(), 9))
            .unwrap()
            .encode();
        // Flip a byte in every stretch of 97 bytes (plus the last): nothing decrypts wrongly.
        let mut positions: Vec<usize> = (0..bytes.len()).step_by(97).collect();
        positions.push(bytes.len() - 1);
        for pos in positions {
            let mut bad = bytes.clone();
            bad[pos] ^= 0x04;
            let res = StoredRecord::decode(v.id(), &bad).and_then(|r| r.open(&keys));
            match res {
                Err(Error::CorruptRecord { .. })
                | Err(Error::Tampered { .. })
                | Err(Error::KeyUnwrap { .. })
                | Err(Error::UnknownKey { .. }) => {}
                other => panic!("flip at {pos}: {other:?}"),
            }
        }
        // Truncation at any length is CorruptRecord.
        for len in [0, 3, 4, 10, 40, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(
                StoredRecord::decode(v.id(), &bytes[..len]),
                Err(Error::CorruptRecord { .. })
            ));
        }
        // Asked under another id.
        assert!(matches!(
            StoredRecord::decode(TxId::from_bytes([3; 32]), &bytes),
            Err(Error::CorruptRecord { .. })
        ));
    }

    #[test]
    fn ciphertexts_do_not_move_between_records() {
        let keys = keys();
        let a = StoredRecord::seal(&keys, &ArchiveEntry::new(verified(3, b"a"), 1)).unwrap();
        let b = StoredRecord::seal(&keys, &ArchiveEntry::new(verified(4, b"b"), 1)).unwrap();
        let mut mixed = a.clone();
        mixed.amount = b.amount.clone();
        assert!(matches!(
            mixed.open(&keys),
            Err(Error::Tampered {
                field: "amount",
                ..
            })
        ));
        // b's wrapped key in a: the data key unwraps but a's fields do not open under it.
        let mut swapped = a.clone();
        swapped.wrapped_key = b.wrapped_key.clone();
        assert!(matches!(swapped.open(&keys), Err(Error::Tampered { .. })));
    }

    #[test]
    fn a_batch_shares_one_wrapped_key_but_no_data_key() {
        let keys = keys();
        let entries: Vec<ArchiveEntry> = (0..4)
            .map(|i| ArchiveEntry::new(verified(20 + i, b"batch"), 1))
            .collect();
        let recs = StoredRecord::seal_all(&keys, &entries).unwrap();
        assert_eq!(recs.len(), 4);
        // One encapsulation: every record carries the same wrapped batch key.
        assert!(recs.iter().all(|r| r.wrapped_key == recs[0].wrapped_key));
        assert!(recs.iter().all(|r| r.version == VERSION_BATCH_KEY));
        for (r, e) in recs.iter().zip(&entries) {
            let back = StoredRecord::decode(e.id(), &r.encode()).unwrap();
            assert_eq!(&back.open(&keys).unwrap().signed, e.tx.signed());
        }
        // Same batch key, different data keys: a field moved between two records of the
        // batch (their headers made equal but for the id) does not open.
        let mut mixed = recs[0].clone();
        mixed.amount = recs[1].amount.clone();
        assert!(matches!(
            mixed.open(&keys),
            Err(Error::Tampered {
                field: "amount",
                ..
            })
        ));
        assert_ne!(
            record_key(&pqc::DataKey::from_bytes([1; 32]), &entries[0].id()),
            record_key(&pqc::DataKey::from_bytes([1; 32]), &entries[1].id())
        );
        assert!(StoredRecord::seal_all(&keys, &[]).unwrap().is_empty());
    }

    #[test]
    fn version_1_records_stay_readable_and_the_version_is_bound() {
        let keys = keys();
        let v = verified(30, b"old format");
        let old = StoredRecord::seal_v1(&keys, &ArchiveEntry::new(v.clone(), 3)).unwrap();
        let bytes = old.encode();
        assert_eq!(bytes[4], VERSION_RECORD_KEY);
        let back = StoredRecord::decode(v.id(), &bytes).unwrap();
        assert_eq!(&back.open(&keys).unwrap().signed, v.signed());
        // Claiming the other version changes the data key (and the header): refused.
        for (rec, other) in [
            (old, VERSION_BATCH_KEY),
            (
                StoredRecord::seal(&keys, &ArchiveEntry::new(v.clone(), 3)).unwrap(),
                VERSION_RECORD_KEY,
            ),
        ] {
            let mut b = rec.encode();
            b[4] = other;
            let r = StoredRecord::decode(v.id(), &b).unwrap();
            assert!(matches!(r.open(&keys), Err(Error::Tampered { .. })));
        }
        // An unknown version is corrupt.
        let mut b = StoredRecord::seal(&keys, &ArchiveEntry::new(v.clone(), 3))
            .unwrap()
            .encode();
        b[4] = 3;
        assert!(matches!(
            StoredRecord::decode(v.id(), &b),
            Err(Error::CorruptRecord { .. })
        ));
    }

    #[test]
    fn rewrap_keeps_both_versions_readable() {
        let keys = keys();
        let v1 = verified(40, b"v1");
        let v2 = verified(41, b"v2");
        let a = StoredRecord::seal_v1(&keys, &ArchiveEntry::new(v1.clone(), 1)).unwrap();
        let b = StoredRecord::seal_all(&keys, &[ArchiveEntry::new(v2.clone(), 1)])
            .unwrap()
            .remove(0);
        keys.rotate().unwrap();
        for (rec, v) in [(a, v1), (b, v2)] {
            let again = rec.rewrap(&keys).unwrap().expect("under an old key");
            assert_eq!(again.wrapped_key_id().unwrap(), keys.current_key_id());
            assert_eq!(&again.open(&keys).unwrap().signed, v.signed());
        }
    }

    #[test]
    fn unknown_key_is_typed() {
        let v = verified(5, b"");
        let rec = StoredRecord::seal(&keys(), &ArchiveEntry::new(v, 1)).unwrap();
        let other = keys();
        assert!(
            matches!(rec.open(&other), Err(Error::UnknownKey { key_id, .. }) if key_id == rec.wrapped_key_id().unwrap())
        );
    }
}

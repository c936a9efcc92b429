//! Strict conversions between protobuf messages and dag-core types.
//!
//! Protobuf → dag-core rebuilds the canonical value and runs its validation, so whatever
//! passes here encodes canonically and hashes to the id the sender signed.

use crate::pb;
use crate::{RejectCode, Rejection, StripeHolder, StripeInfo, TxState};
use dag_core::{
    AccountId, CityId, DecodeError, NodeId, ObjectId, Position, PositionMethod, Receipt, ShardHash,
    SignedReceipt, SignedTx, StripeId, Tx, TxKind,
};
use thiserror::Error;

/// Why a protobuf message does not convert into a dag-core value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConvertError {
    /// A required message field was absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field's value is invalid; the decode error says which and why.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
}

impl ConvertError {
    /// The rejection a node answers with.
    pub fn to_rejection(&self) -> Rejection {
        let code = match self {
            ConvertError::Invalid(DecodeError::TooLong { .. }) => RejectCode::TooLarge,
            _ => RejectCode::Malformed,
        };
        Rejection::new(code, self.to_string(), None)
    }
}

fn id32(field: &'static str, b: &[u8]) -> Result<[u8; 32], DecodeError> {
    b.try_into().map_err(|_| DecodeError::Invalid {
        field,
        reason: "expected exactly 32 bytes",
    })
}

fn objects(field: &'static str, v: &[Vec<u8>]) -> Result<Vec<ObjectId>, DecodeError> {
    if v.len() > dag_core::MAX_OBJECT_SET {
        return Err(DecodeError::TooLong {
            field,
            len: v.len(),
            max: dag_core::MAX_OBJECT_SET,
        });
    }
    v.iter()
        .map(|b| Ok(ObjectId::from_bytes(id32(field, b)?)))
        .collect()
}

/// The wire kind is the canonical kind byte plus one (`TX_KIND_UNSPECIFIED = 0` is never
/// valid). An unknown kind is reported by its wire value.
fn kind_from(v: i32) -> Result<TxKind, DecodeError> {
    let unknown = || DecodeError::UnknownKind(u8::try_from(v).unwrap_or(u8::MAX));
    v.checked_sub(1)
        .and_then(|b| u8::try_from(b).ok())
        .ok_or_else(unknown)
        .and_then(|b| TxKind::from_u8(b).map_err(|_| unknown()))
}

fn kind_to(k: TxKind) -> i32 {
    i32::from(k.as_u8()) + 1
}

/// `POSITION_METHOD_UNSPECIFIED = 0` is never valid.
fn method_from(v: i32) -> Result<PositionMethod, DecodeError> {
    match pb::PositionMethod::try_from(v) {
        Ok(pb::PositionMethod::Gps) => Ok(PositionMethod::Gps),
        Ok(pb::PositionMethod::Wifi) => Ok(PositionMethod::Wifi),
        Ok(pb::PositionMethod::Unspecified) | Err(_) => Err(DecodeError::UnknownMethod(
            u8::try_from(v).unwrap_or(u8::MAX),
        )),
    }
}

fn method_to(m: PositionMethod) -> i32 {
    match m {
        PositionMethod::Gps => pb::PositionMethod::Gps as i32,
        PositionMethod::Wifi => pb::PositionMethod::Wifi as i32,
    }
}

impl TryFrom<pb::Tx> for Tx {
    type Error = ConvertError;
    fn try_from(p: pb::Tx) -> Result<Self, ConvertError> {
        if p.payload.len() > dag_core::MAX_PAYLOAD {
            return Err(DecodeError::TooLong {
                field: "payload",
                len: p.payload.len(),
                max: dag_core::MAX_PAYLOAD,
            }
            .into());
        }
        let method = method_from(p.method)?;
        let tx = Tx {
            kind: kind_from(p.kind)?,
            sender: AccountId::from_bytes(id32("sender", &p.sender)?),
            receiver: AccountId::from_bytes(id32("receiver", &p.receiver)?),
            amount: p.amount,
            nonce: p.nonce,
            timestamp_ms: p.timestamp_ms,
            city_id: CityId::new(p.city_id)?,
            position: Position {
                lat_e7: p.lat_e7,
                lon_e7: p.lon_e7,
            },
            method,
            read_set: objects("read_set", &p.read_set)?,
            write_set: objects("write_set", &p.write_set)?,
            payload: p.payload,
        };
        tx.validate()?;
        Ok(tx)
    }
}

impl From<&Tx> for pb::Tx {
    fn from(t: &Tx) -> Self {
        pb::Tx {
            kind: kind_to(t.kind),
            sender: t.sender.as_bytes().to_vec(),
            receiver: t.receiver.as_bytes().to_vec(),
            amount: t.amount,
            nonce: t.nonce,
            timestamp_ms: t.timestamp_ms,
            city_id: t.city_id.as_str().to_string(),
            lat_e7: t.position.lat_e7,
            lon_e7: t.position.lon_e7,
            method: method_to(t.method),
            read_set: t.read_set.iter().map(|o| o.as_bytes().to_vec()).collect(),
            write_set: t.write_set.iter().map(|o| o.as_bytes().to_vec()).collect(),
            payload: t.payload.clone(),
        }
    }
}

impl TryFrom<pb::SignedTx> for SignedTx {
    type Error = ConvertError;
    fn try_from(p: pb::SignedTx) -> Result<Self, ConvertError> {
        if p.public_key.len() > dag_core::MAX_KEY_LEN {
            return Err(DecodeError::TooLong {
                field: "public_key",
                len: p.public_key.len(),
                max: dag_core::MAX_KEY_LEN,
            }
            .into());
        }
        if p.signature.len() > dag_core::MAX_SIGNATURE_LEN {
            return Err(DecodeError::TooLong {
                field: "signature",
                len: p.signature.len(),
                max: dag_core::MAX_SIGNATURE_LEN,
            }
            .into());
        }
        Ok(SignedTx {
            tx: p.tx.ok_or(ConvertError::Missing("tx"))?.try_into()?,
            public_key: p.public_key,
            signature: p.signature,
        })
    }
}

impl From<&SignedTx> for pb::SignedTx {
    fn from(s: &SignedTx) -> Self {
        pb::SignedTx {
            tx: Some((&s.tx).into()),
            public_key: s.public_key.clone(),
            signature: s.signature.clone(),
        }
    }
}

impl From<&SignedReceipt> for pb::Receipt {
    fn from(r: &SignedReceipt) -> Self {
        pb::Receipt {
            stripe_id: r.receipt.stripe_id.as_bytes().to_vec(),
            shard_index: u32::from(r.receipt.shard_index),
            shard_hash: r.receipt.shard_hash.as_bytes().to_vec(),
            holder: r.receipt.holder.as_bytes().to_vec(),
            time_ms: r.receipt.time_ms,
            holder_public_key: r.holder_public_key.clone(),
            signature: r.signature.clone(),
        }
    }
}

impl TryFrom<pb::Receipt> for SignedReceipt {
    type Error = ConvertError;
    fn try_from(p: pb::Receipt) -> Result<Self, ConvertError> {
        let shard_index = u16::try_from(p.shard_index).map_err(|_| DecodeError::Invalid {
            field: "shard_index",
            reason: "must fit in 16 bits",
        })?;
        if p.holder_public_key.len() > dag_core::MAX_KEY_LEN
            || p.signature.len() > dag_core::MAX_SIGNATURE_LEN
        {
            return Err(DecodeError::TooLong {
                field: "receipt key or signature",
                len: p.holder_public_key.len().max(p.signature.len()),
                max: dag_core::MAX_SIGNATURE_LEN,
            }
            .into());
        }
        Ok(SignedReceipt {
            receipt: Receipt {
                stripe_id: StripeId::from_bytes(id32("stripe_id", &p.stripe_id)?),
                shard_index,
                shard_hash: ShardHash::from_bytes(id32("shard_hash", &p.shard_hash)?),
                holder: NodeId::from_bytes(id32("holder", &p.holder)?),
                time_ms: p.time_ms,
            },
            holder_public_key: p.holder_public_key,
            signature: p.signature,
        })
    }
}

impl From<&StripeInfo> for pb::ListStripesResponse {
    fn from(s: &StripeInfo) -> Self {
        pb::ListStripesResponse {
            stripe_id: s.stripe_id.as_bytes().to_vec(),
            k: u32::from(s.k),
            m: u32::from(s.m),
            holders: s
                .holders
                .iter()
                .map(|h| pb::Holder {
                    index: u32::from(h.index),
                    node_id: h.node_id.as_bytes().to_vec(),
                    grpc_addr: h.grpc_addr.clone().unwrap_or_default(),
                    shard_hash: h.shard_hash.as_bytes().to_vec(),
                })
                .collect(),
        }
    }
}

fn small(field: &'static str, v: u32) -> Result<u16, DecodeError> {
    match u16::try_from(v) {
        Ok(x) if x <= storage::MAX_SHARDS => Ok(x),
        _ => Err(DecodeError::Invalid {
            field,
            reason: "must be at most 32 (the largest stripe)",
        }),
    }
}

impl TryFrom<pb::ListStripesResponse> for StripeInfo {
    type Error = ConvertError;
    fn try_from(p: pb::ListStripesResponse) -> Result<Self, ConvertError> {
        if p.holders.len() > usize::from(storage::MAX_SHARDS) {
            return Err(DecodeError::TooLong {
                field: "holders",
                len: p.holders.len(),
                max: usize::from(storage::MAX_SHARDS),
            }
            .into());
        }
        let holders = p
            .holders
            .into_iter()
            .map(|h| {
                Ok(StripeHolder {
                    index: small("holder index", h.index)?,
                    node_id: NodeId::from_bytes(id32("node_id", &h.node_id)?),
                    grpc_addr: (!h.grpc_addr.is_empty()).then_some(h.grpc_addr),
                    shard_hash: ShardHash::from_bytes(id32("shard_hash", &h.shard_hash)?),
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Ok(StripeInfo {
            stripe_id: StripeId::from_bytes(id32("stripe_id", &p.stripe_id)?),
            k: small("k", p.k)?,
            m: small("m", p.m)?,
            holders,
        })
    }
}

/// Converts a list of protobuf receipts.
pub fn receipts_from(v: Vec<pb::Receipt>) -> Result<Vec<SignedReceipt>, ConvertError> {
    v.into_iter().map(TryInto::try_into).collect()
}

impl From<TxState> for pb::TxState {
    fn from(s: TxState) -> Self {
        match s {
            TxState::Admitted => pb::TxState::Admitted,
            TxState::Held => pb::TxState::Held,
            TxState::Ordered => pb::TxState::Ordered,
            TxState::Federated => pb::TxState::Federated,
            TxState::Completed => pb::TxState::Completed,
        }
    }
}

/// The state a protobuf enum value names; `None` for unspecified or rejected.
pub fn state_from(v: i32) -> Option<TxState> {
    match pb::TxState::try_from(v).ok()? {
        pb::TxState::Admitted => Some(TxState::Admitted),
        pb::TxState::Held => Some(TxState::Held),
        pb::TxState::Ordered => Some(TxState::Ordered),
        pb::TxState::Federated => Some(TxState::Federated),
        pb::TxState::Completed => Some(TxState::Completed),
        pb::TxState::Unspecified | pb::TxState::Rejected => None,
    }
}

impl From<RejectCode> for pb::RejectCode {
    fn from(c: RejectCode) -> Self {
        match c {
            RejectCode::Malformed => pb::RejectCode::Malformed,
            RejectCode::TooLarge => pb::RejectCode::TooLarge,
            RejectCode::BadSignature => pb::RejectCode::BadSignature,
            RejectCode::KeyMismatch => pb::RejectCode::KeyMismatch,
            RejectCode::DuplicateTx => pb::RejectCode::DuplicateTx,
            RejectCode::NonceReused => pb::RejectCode::NonceReused,
            RejectCode::OutsideCity => pb::RejectCode::OutsideCity,
            RejectCode::Overloaded => pb::RejectCode::Overloaded,
            RejectCode::Unavailable => pb::RejectCode::Unavailable,
        }
    }
}

/// The rejection code a protobuf enum value names.
pub fn reject_code_from(v: i32) -> Option<RejectCode> {
    Some(match pb::RejectCode::try_from(v).ok()? {
        pb::RejectCode::Unspecified => return None,
        pb::RejectCode::Malformed => RejectCode::Malformed,
        pb::RejectCode::TooLarge => RejectCode::TooLarge,
        pb::RejectCode::BadSignature => RejectCode::BadSignature,
        pb::RejectCode::KeyMismatch => RejectCode::KeyMismatch,
        pb::RejectCode::DuplicateTx => RejectCode::DuplicateTx,
        pb::RejectCode::NonceReused => RejectCode::NonceReused,
        pb::RejectCode::OutsideCity => RejectCode::OutsideCity,
        pb::RejectCode::Overloaded => RejectCode::Overloaded,
        pb::RejectCode::Unavailable => RejectCode::Unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SignedTx {
        SignedTx {
            tx: Tx::fresh(
                AccountId::from_bytes([1; 32]),
                AccountId::from_bytes([2; 32]),
                5,
                6,
                7,
                CityId::new("NP-3").unwrap(),
                Position::from_degrees(27.7, 85.3).unwrap(),
                PositionMethod::Wifi,
            )
            .with_read_set(vec![ObjectId::from_bytes([3; 32])])
            .with_payload(vec![9; 10]),
            public_key: vec![1; 8],
            signature: vec![2; 8],
        }
    }

    #[test]
    fn signed_tx_round_trip() {
        let s = sample();
        let p: pb::SignedTx = (&s).into();
        assert_eq!(SignedTx::try_from(p).unwrap(), s);
    }

    #[test]
    fn kinds_and_methods_use_the_proto_numbers() {
        for b in 0..=u8::MAX {
            let Ok(kind) = TxKind::from_u8(b) else {
                continue;
            };
            let wire = kind_to(kind);
            assert_eq!(wire, i32::from(b) + 1);
            assert_eq!(kind_from(wire).unwrap(), kind);
            let name = pb::TxKind::try_from(wire).unwrap().as_str_name();
            assert!(name.starts_with("TX_KIND_") && name != "TX_KIND_UNSPECIFIED");
        }
        assert_eq!(kind_to(TxKind::FreshTx), pb::TxKind::FreshTx as i32);
        assert_eq!(kind_to(TxKind::SystemTx), pb::TxKind::SystemTx as i32);
        assert_eq!(method_to(PositionMethod::Gps), 1);
        assert_eq!(method_to(PositionMethod::Wifi), 2);
        assert_eq!(method_from(2).unwrap(), PositionMethod::Wifi);
    }

    #[test]
    fn stripe_info_round_trip_and_strictness() {
        let s = StripeInfo {
            stripe_id: StripeId::from_bytes([4; 32]),
            k: 4,
            m: 2,
            holders: vec![
                StripeHolder {
                    index: 0,
                    node_id: NodeId::from_bytes([5; 32]),
                    grpc_addr: Some("127.0.0.1:1".into()),
                    shard_hash: ShardHash::from_bytes([6; 32]),
                },
                StripeHolder {
                    index: 5,
                    node_id: NodeId::from_bytes([7; 32]),
                    grpc_addr: None,
                    shard_hash: ShardHash::from_bytes([8; 32]),
                },
            ],
        };
        let p: pb::ListStripesResponse = (&s).into();
        assert_eq!(StripeInfo::try_from(p.clone()).unwrap(), s);
        let mut bad = p.clone();
        bad.k = 70_000;
        assert!(StripeInfo::try_from(bad).is_err());
        let mut bad = p;
        bad.holders[0].node_id = vec![1; 31];
        assert!(StripeInfo::try_from(bad).is_err());
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let check = |mutate: fn(&mut pb::SignedTx), expect: RejectCode| {
            let mut p: pb::SignedTx = (&sample()).into();
            mutate(&mut p);
            let err = SignedTx::try_from(p).unwrap_err();
            assert_eq!(err.to_rejection().code, expect, "{err}");
        };
        check(|p| p.tx = None, RejectCode::Malformed);
        check(
            |p| p.tx.as_mut().unwrap().sender = vec![1; 31],
            RejectCode::Malformed,
        );
        check(|p| p.tx.as_mut().unwrap().kind = 42, RejectCode::Malformed);
        check(|p| p.tx.as_mut().unwrap().kind = -1, RejectCode::Malformed);
        check(|p| p.tx.as_mut().unwrap().method = 9, RejectCode::Malformed);
        // The proto's zero values are *_UNSPECIFIED: never a valid kind or method.
        check(|p| p.tx.as_mut().unwrap().kind = 0, RejectCode::Malformed);
        check(|p| p.tx.as_mut().unwrap().method = 0, RejectCode::Malformed);
        check(
            |p| p.tx.as_mut().unwrap().city_id = String::new(),
            RejectCode::Malformed,
        );
        check(
            |p| p.tx.as_mut().unwrap().lat_e7 = i32::MAX,
            RejectCode::Malformed,
        );
        check(
            |p| p.tx.as_mut().unwrap().payload = vec![0; 64 * 1024 + 1],
            RejectCode::TooLarge,
        );
        check(|p| p.signature = vec![0; 9000], RejectCode::TooLarge);
        check(
            |p| {
                let t = p.tx.as_mut().unwrap();
                t.read_set = vec![vec![2; 32], vec![1; 32]];
            },
            RejectCode::Malformed,
        );
    }
}

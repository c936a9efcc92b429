//! 32-byte identifiers: all are BLAKE3 digests of something, each with its own type so a
//! tx id can never be passed where a node id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A raw 32-byte BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash32(pub [u8; 32]);

/// Hex string in human-readable formats (JSON, TOML), raw bytes otherwise.
impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let mut out = [0u8; 32];
            hex::decode_to_slice(s.trim(), &mut out)
                .map_err(|_| D::Error::custom("expected 64 hex characters"))?;
            Ok(Hash32(out))
        } else {
            let v: Vec<u8> = Deserialize::deserialize(d)?;
            let arr: [u8; 32] = v
                .try_into()
                .map_err(|_| D::Error::custom("expected 32 bytes"))?;
            Ok(Hash32(arr))
        }
    }
}

impl Hash32 {
    /// BLAKE3 of `data`.
    pub fn digest(data: &[u8]) -> Self {
        Hash32(*blake3::hash(data).as_bytes())
    }
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Short form for logs: the first 8 hex digits and an ellipsis.
    pub fn short(&self) -> String {
        format!("{}…", &hex::encode(&self.0[..4]))
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub Hash32);

        impl $name {
            /// Wraps raw bytes (no hashing).
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                $name(Hash32(bytes))
            }
            /// The raw 32 bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0 .0
            }
            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }
            /// Parses 64 hex characters.
            pub fn from_hex(s: &str) -> Result<Self, crate::DecodeError> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s.trim(), &mut out).map_err(|_| crate::DecodeError::Invalid {
                    field: stringify!($name),
                    reason: "expected 64 hex characters",
                })?;
                Ok(Self::from_bytes(out))
            }
            /// Parses a 32-byte slice.
            pub fn from_slice(s: &[u8]) -> Result<Self, crate::DecodeError> {
                let arr: [u8; 32] = s.try_into().map_err(|_| crate::DecodeError::Invalid {
                    field: stringify!($name),
                    reason: "expected exactly 32 bytes",
                })?;
                Ok(Self::from_bytes(arr))
            }
            /// Short form for logs.
            pub fn short(&self) -> String {
                self.0.short()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id_type!(
    /// Id of a transaction: BLAKE3 of the canonical encoding of its unsigned body.
    TxId
);
id_type!(
    /// Id of an account: BLAKE3 of its ML-DSA-87 public key.
    AccountId
);
id_type!(
    /// Id of a node: BLAKE3 of the node's ML-DSA-87 public key.
    NodeId
);
id_type!(
    /// Id of an object a tx reads or writes.
    ObjectId
);
id_type!(
    /// Id of an erasure-coded stripe (one micro-batch): BLAKE3 of the stripe's bytes.
    StripeId
);
id_type!(
    /// BLAKE3 of one shard's bytes.
    ShardHash
);

impl AccountId {
    /// The account id of an ML-DSA-87 public key.
    pub fn from_public_key(pk: &[u8]) -> Self {
        AccountId(Hash32::digest(pk))
    }
}

impl NodeId {
    /// The node id of an ML-DSA-87 public key.
    pub fn from_public_key(pk: &[u8]) -> Self {
        NodeId(Hash32::digest(pk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = TxId::from_bytes([0xab; 32]);
        assert_eq!(TxId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(TxId::from_hex("zz").is_err());
        assert!(TxId::from_slice(&[0; 31]).is_err());
    }

    #[test]
    fn account_id_is_blake3_of_key() {
        let pk = b"public key bytes";
        assert_eq!(
            AccountId::from_public_key(pk).as_bytes(),
            blake3::hash(pk).as_bytes()
        );
    }
}

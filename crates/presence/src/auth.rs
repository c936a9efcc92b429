//! Who may change a node's presence: a login is signed by the node's own ML-DSA-87 key
//! (its NodeId is the BLAKE3 of that key) over the node info and a fresh timestamp; the
//! server answers with a random session token, and heartbeats and logouts must carry it.
//! So nobody can log another node in, keep it alive, or log it out.
//!
//! Replays: a login is accepted only within [`MAX_LOGIN_SKEW`] of the server's clock and
//! only if its timestamp is newer than the last login the store accepted for that node
//! (remembered for the skew window even after the node leaves), so a captured login can
//! never be played again to obtain a session.

use crate::{Error, Result};
use dag_core::{NodeId, NodeInfo, SignatureVerifier, Signer};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Domain separator of the signed login message.
pub const LOGIN_DOMAIN: &[u8] = b"citychain/presence-login/v1";

/// How far a login's timestamp may be from the server's clock (either way).
pub const MAX_LOGIN_SKEW: Duration = Duration::from_secs(30);

/// Why presence refused to act for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthFailure {
    /// The login's public key does not hash to the node id it claims.
    KeyNotNodeId,
    /// The login's signature does not verify under its public key.
    BadSignature,
    /// The login's timestamp is further than [`MAX_LOGIN_SKEW`] from the server's clock.
    Stale,
    /// The login's timestamp is not newer than the node's last accepted login.
    Replayed,
    /// The heartbeat or logout carries no session token, or not the node's current one.
    BadSession,
    /// This client holds no key to sign a login with.
    NoIdentity,
}

impl AuthFailure {
    /// The code used in HTTP error bodies.
    pub fn code(self) -> &'static str {
        match self {
            AuthFailure::KeyNotNodeId => "key_not_node_id",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Stale => "stale_login",
            AuthFailure::Replayed => "replayed_login",
            AuthFailure::BadSession => "bad_session",
            AuthFailure::NoIdentity => "no_identity",
        }
    }

    /// The failure an HTTP error code names, if any.
    pub fn from_code(code: &str) -> Option<Self> {
        [
            AuthFailure::KeyNotNodeId,
            AuthFailure::BadSignature,
            AuthFailure::Stale,
            AuthFailure::Replayed,
            AuthFailure::BadSession,
            AuthFailure::NoIdentity,
        ]
        .into_iter()
        .find(|f| f.code() == code)
    }
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthFailure::KeyNotNodeId => "the public key is not the node id's",
            AuthFailure::BadSignature => "the login signature does not verify",
            AuthFailure::Stale => "the login timestamp is too far from the server's clock",
            AuthFailure::Replayed => "the login is not newer than the last accepted one",
            AuthFailure::BadSession => "no valid session token for this node",
            AuthFailure::NoIdentity => "the client has no node key to sign a login",
        })
    }
}

/// A login signed by the node's key. JSON: `{"info": {…}, "public_key": hex,
/// "issued_at_ms": n, "signature": hex}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedLogin {
    /// What the node publishes.
    pub info: NodeInfo,
    /// Its ML-DSA-87 public key (hex in JSON).
    #[serde(with = "hex::serde")]
    pub public_key: Vec<u8>,
    /// When it signed, ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// ML-DSA-87 over [`SignedLogin::message`] (hex in JSON).
    #[serde(with = "hex::serde")]
    pub signature: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl SignedLogin {
    /// Signs `info` at `issued_at_ms` with `signer` (whose key must be `info.node_id`'s).
    pub fn sign(info: NodeInfo, issued_at_ms: u64, signer: &dyn Signer) -> Self {
        let signature = signer.sign(&Self::message(&info, issued_at_ms));
        SignedLogin {
            info,
            public_key: signer.public_key().to_vec(),
            issued_at_ms,
            signature,
        }
    }

    /// The signed bytes: the domain, then every field of the info (length-prefixed
    /// strings, little-endian numbers, floats as IEEE bits), then the timestamp.
    pub fn message(info: &NodeInfo, issued_at_ms: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(256);
        m.extend_from_slice(LOGIN_DOMAIN);
        m.extend_from_slice(info.node_id.as_bytes());
        put_str(&mut m, info.role.as_str());
        put_str(&mut m, &info.grpc_addr);
        put_str(&mut m, &info.city_id);
        put_str(&mut m, &info.zone);
        m.extend_from_slice(&info.lat.to_bits().to_le_bytes());
        m.extend_from_slice(&info.lon.to_bits().to_le_bytes());
        m.extend_from_slice(&info.free_capacity.to_le_bytes());
        m.extend_from_slice(&info.load.to_bits().to_le_bytes());
        put_str(&mut m, &info.version);
        m.extend_from_slice(&info.session_start_ms.to_le_bytes());
        m.extend_from_slice(&issued_at_ms.to_le_bytes());
        m
    }

    /// Checks the key is the node id's, the timestamp is within [`MAX_LOGIN_SKEW`] of
    /// `now_ms`, and the signature. (Replays are the store's check: it knows the last
    /// accepted timestamp.)
    pub fn verify(&self, verifier: &dyn SignatureVerifier, now_ms: u64) -> Result<()> {
        let node = self.info.node_id;
        let refuse = |reason| Err(Error::Unauthorized { node, reason });
        if NodeId::from_public_key(&self.public_key) != node {
            return refuse(AuthFailure::KeyNotNodeId);
        }
        if now_ms.abs_diff(self.issued_at_ms) > MAX_LOGIN_SKEW.as_millis() as u64 {
            return refuse(AuthFailure::Stale);
        }
        let msg = Self::message(&self.info, self.issued_at_ms);
        if verifier
            .verify(&self.public_key, &msg, &self.signature)
            .is_err()
        {
            return refuse(AuthFailure::BadSignature);
        }
        Ok(())
    }
}

/// A session token: 32 random bytes issued at a signed login (hex in JSON). Stores keep
/// only its [`hash`](SessionToken::hash).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionToken(#[serde(with = "hex::serde")] [u8; 32]);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(…)")
    }
}

impl SessionToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        SessionToken(rand::random())
    }

    /// A token from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SessionToken(bytes)
    }

    /// What stores keep: BLAKE3 of the token, so a read of the store gives no session.
    pub fn hash(&self) -> SessionHash {
        SessionHash(*blake3::hash(&self.0).as_bytes())
    }
}

/// BLAKE3 of a [`SessionToken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionHash(pub [u8; 32]);

impl SessionHash {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// A session login as stores record it: the token's hash and the login's timestamp
/// (for the replay check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// Hash of the session token.
    pub hash: SessionHash,
    /// The signed login's timestamp.
    pub issued_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag_core::Role;
    use pqc::{Keypair, MlDsa87};

    fn info(id: NodeId) -> NodeInfo {
        NodeInfo {
            node_id: id,
            role: Role::Light,
            grpc_addr: "127.0.0.1:1".into(),
            city_id: "JP-13".into(),
            zone: "a".into(),
            lat: 35.0,
            lon: 139.0,
            free_capacity: 7,
            load: 0.5,
            version: "t".into(),
            session_start_ms: 3,
        }
    }

    fn refused(r: Result<()>) -> AuthFailure {
        match r {
            Err(Error::Unauthorized { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_login_verifies_only_as_signed_by_the_nodes_key_and_fresh() {
        let key = Keypair::from_seed(&[1; 32]).unwrap();
        let other = Keypair::from_seed(&[2; 32]).unwrap();
        let now = 1_000_000;
        let good = SignedLogin::sign(info(key.node_id()), now, &key);
        good.verify(&MlDsa87, now).unwrap();
        good.verify(&MlDsa87, now + 29_000).unwrap();
        assert_eq!(
            refused(good.verify(&MlDsa87, now + 31_000)),
            AuthFailure::Stale
        );

        // Another key signing for this node id.
        let forged = SignedLogin::sign(info(key.node_id()), now, &other);
        assert_eq!(
            refused(forged.verify(&MlDsa87, now)),
            AuthFailure::KeyNotNodeId
        );
        // The right key, but a signature by another key.
        let mut swapped = forged.clone();
        swapped.public_key = key.public_key().to_vec();
        assert_eq!(
            refused(swapped.verify(&MlDsa87, now)),
            AuthFailure::BadSignature
        );
        // Any changed field breaks the signature.
        let mut changed = good.clone();
        changed.info.free_capacity = u64::MAX;
        assert_eq!(
            refused(changed.verify(&MlDsa87, now)),
            AuthFailure::BadSignature
        );
        let mut later = good.clone();
        later.issued_at_ms += 1;
        assert_eq!(
            refused(later.verify(&MlDsa87, now)),
            AuthFailure::BadSignature
        );
    }

    #[test]
    fn json_round_trip_and_codes() {
        let key = Keypair::from_seed(&[1; 32]).unwrap();
        let login = SignedLogin::sign(info(key.node_id()), 5, &key);
        let json = serde_json::to_string(&login).unwrap();
        assert_eq!(serde_json::from_str::<SignedLogin>(&json).unwrap(), login);
        let t = SessionToken::generate();
        let back: SessionToken = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back.hash(), t.hash());
        assert_ne!(SessionToken::generate().hash(), t.hash());
        for f in [
            AuthFailure::KeyNotNodeId,
            AuthFailure::BadSignature,
            AuthFailure::Stale,
            AuthFailure::Replayed,
            AuthFailure::BadSession,
            AuthFailure::NoIdentity,
        ] {
            assert_eq!(AuthFailure::from_code(f.code()), Some(f));
        }
    }
}

//! System txs: the payload types, their canonical encoding, the `dag_core::Tx` envelope
//! that carries them, and the typestate [`VerifiedSystemTx`].
//!
//! # Envelope
//!
//! A system tx is a `dag_core::Tx` with `kind = SystemTx`, `sender` = the acting account,
//! `amount = 0` (amounts live in the payload), the sender's next `nonce` (0, 1, 2, … per
//! account; a replay fails), and `payload` = [`SystemPayload::encode`]. It is signed by the
//! account's ML-DSA-87 key like any tx (`pqc::sign_tx`); [`sign_system_tx`] builds and signs
//! one. The other fields (receiver, city, position) are carried but not interpreted.
//!
//! # Payload encoding (version 1, integers little endian)
//!
//! `version u8 = 1 ‖ tag u8 ‖ body`:
//!
//! | tag | payload | body |
//! |---|---|---|
//! | 0 | RegisterNode | kind u8 (0 full, 1 light) ‖ metrics |
//! | 1 | UpdateMetrics | metrics |
//! | 2 | Bond | amount u64 |
//! | 3 | Delegate | validator 32 ‖ amount u64 |
//! | 4 | Unbond | validator 32 ‖ amount u64 |
//! | 5 | Withdraw | validator 32 |
//! | 6 | DoubleSign | [`DoubleSignEvidence::write`] |
//! | 7 | ReportIncident | node 32 ‖ incident digest 32 |
//! | 8 | RecordContribution | count u8 (1..=8) ‖ each `SignedReceipt` as u16 length + bytes |
//! | 9 | ClaimRewards | — |
//! | 10 | EndTerm | — |
//! | 11 | SetEndpoint | address as u16 length + UTF-8 bytes (see [`validate_endpoint`]) |
//!
//! metrics = access, memory_gb, harmony, bandwidth, uptime, error rate: u32 each.

use crate::{DoubleSignEvidence, Error, Metrics, Result};
use dag_core::{
    AccountId, CityId, DecodeError, Hash32, MAX_PAYLOAD, Position, PositionMethod, Reader,
    SignatureVerifier, SignedReceipt, SignedTx, Signer, Tx, TxId, TxKind, VerifiedTx, Writer,
};
use serde::{Deserialize, Serialize};

const PAYLOAD_VERSION: u8 = 1;

/// Longest endpoint a full node may publish ([`SystemPayload::SetEndpoint`]).
pub const MAX_ENDPOINT_LEN: usize = 255;

/// Checks an endpoint a full node publishes: 1 to [`MAX_ENDPOINT_LEN`] printable ASCII
/// bytes (no spaces), `host:port` or `scheme://host:port[/]`, port 1–65535, a non-empty
/// host. Representatives dial it for consensus after the node is elected.
pub fn validate_endpoint(address: &str) -> Result<()> {
    let bad = |reason| Err(Error::InvalidEndpoint { reason });
    if address.is_empty() || address.len() > MAX_ENDPOINT_LEN {
        return bad("must be 1 to 255 bytes");
    }
    if !address.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("must be printable ASCII without spaces");
    }
    let rest = match address.split_once("://") {
        Some((scheme, rest)) => {
            if scheme != "http" && scheme != "https" {
                return bad("scheme must be http or https");
            }
            rest.strip_suffix('/').unwrap_or(rest)
        }
        None => address,
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return bad("must be host:port");
    };
    if host.is_empty() || host.contains('/') {
        return bad("host must be non-empty and carry no path");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad("port must be 1 to 65535"),
    }
}

/// Most receipts in one `RecordContribution` (eight ML-DSA-87 receipts fit in a 64 KiB
/// payload).
pub const MAX_RECEIPTS_PER_TX: usize = 8;

/// What kind of node registers: full (city) nodes are election candidates and earn rate
/// 1.5; light nodes earn rate 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum NodeKind {
    /// A full (city) node.
    Full = 0,
    /// A light node.
    Light = 1,
}

impl NodeKind {
    pub(crate) fn from_u8(b: u8) -> std::result::Result<Self, DecodeError> {
        match b {
            0 => Ok(NodeKind::Full),
            1 => Ok(NodeKind::Light),
            _ => Err(DecodeError::Invalid {
                field: "node kind",
                reason: "expected 0 (full) or 1 (light)",
            }),
        }
    }
}

/// The body of a system tx: one state change requested by the signing account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SystemPayload {
    /// Register the sender's key as a node (its node id is its account id).
    RegisterNode {
        /// Full (candidate) or light.
        kind: NodeKind,
        /// Self-reported metrics.
        metrics: Metrics,
    },
    /// Replace the sender node's metrics.
    UpdateMetrics {
        /// New metrics.
        metrics: Metrics,
    },
    /// Bond liquid balance to the sender's own node (locked for `stake_lock_ms`).
    Bond {
        /// Base units.
        amount: u64,
    },
    /// Vote: bond liquid balance to a full-node candidate (locked for `stake_lock_ms`).
    Delegate {
        /// The candidate.
        validator: AccountId,
        /// Base units.
        amount: u64,
    },
    /// Start unbonding stake whose lock has expired.
    Unbond {
        /// The validator the stake is bonded to (the sender itself for a self-bond).
        validator: AccountId,
        /// Base units.
        amount: u64,
    },
    /// Move finished unbondings from `validator` back to the liquid balance.
    Withdraw {
        /// The validator.
        validator: AccountId,
    },
    /// Prove a double sign; slashes the author once.
    DoubleSign(DoubleSignEvidence),
    /// A representative reports an incident against a node (+20 suspicion).
    ReportIncident {
        /// The node.
        node: AccountId,
        /// Digest identifying the incident (e.g. BLAKE3 of its description); counted once.
        incident: Hash32,
    },
    /// Storage receipts (PoH_ACK) proving holders' contribution; each holder earns its
    /// per-epoch reward once.
    RecordContribution {
        /// 1 to [`MAX_RECEIPTS_PER_TX`] signed receipts.
        receipts: Vec<SignedReceipt>,
    },
    /// Move the sender's accrued rewards to its liquid balance.
    ClaimRewards,
    /// End the current term once it has run its length and elect the next representatives.
    EndTerm,
    /// Publish (or replace) the address where the sender full node serves consensus, so
    /// the committee can reach it once it is elected ([`validate_endpoint`]).
    SetEndpoint {
        /// `host:port` or `http(s)://host:port`.
        address: String,
    },
}

impl SystemPayload {
    /// The payload's kind name (for metrics labels and bench ids).
    pub fn kind_name(&self) -> &'static str {
        match self {
            SystemPayload::RegisterNode { .. } => "register_node",
            SystemPayload::UpdateMetrics { .. } => "update_metrics",
            SystemPayload::Bond { .. } => "bond",
            SystemPayload::Delegate { .. } => "delegate",
            SystemPayload::Unbond { .. } => "unbond",
            SystemPayload::Withdraw { .. } => "withdraw",
            SystemPayload::DoubleSign(_) => "double_sign",
            SystemPayload::ReportIncident { .. } => "report_incident",
            SystemPayload::RecordContribution { .. } => "record_contribution",
            SystemPayload::ClaimRewards => "claim_rewards",
            SystemPayload::EndTerm => "end_term",
            SystemPayload::SetEndpoint { .. } => "set_endpoint",
        }
    }

    /// Canonical encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        w.u8(PAYLOAD_VERSION);
        match self {
            SystemPayload::RegisterNode { kind, metrics } => {
                w.u8(0).u8(*kind as u8);
                metrics.write(&mut w);
            }
            SystemPayload::UpdateMetrics { metrics } => {
                w.u8(1);
                metrics.write(&mut w);
            }
            SystemPayload::Bond { amount } => {
                w.u8(2).u64(*amount);
            }
            SystemPayload::Delegate { validator, amount } => {
                w.u8(3).raw(validator.as_bytes()).u64(*amount);
            }
            SystemPayload::Unbond { validator, amount } => {
                w.u8(4).raw(validator.as_bytes()).u64(*amount);
            }
            SystemPayload::Withdraw { validator } => {
                w.u8(5).raw(validator.as_bytes());
            }
            SystemPayload::DoubleSign(e) => {
                w.u8(6);
                e.write(&mut w);
            }
            SystemPayload::ReportIncident { node, incident } => {
                w.u8(7).raw(node.as_bytes()).raw(&incident.0);
            }
            SystemPayload::RecordContribution { receipts } => {
                // Over-long lists are cut at the limit so encoding never panics; decoding
                // and `VerifiedSystemTx` reject them.
                let n = receipts.len().min(u8::MAX as usize);
                w.u8(8).u8(n as u8);
                for r in &receipts[..n] {
                    let bytes = r.encode();
                    w.bytes_u16(&bytes[..bytes.len().min(u16::MAX as usize)]);
                }
            }
            SystemPayload::ClaimRewards => {
                w.u8(9);
            }
            SystemPayload::EndTerm => {
                w.u8(10);
            }
            SystemPayload::SetEndpoint { address } => {
                // Over-long addresses are cut so encoding never panics; decoding and
                // `VerifiedSystemTx` reject them.
                let b = address.as_bytes();
                w.u8(11).bytes_u16(&b[..b.len().min(u16::MAX as usize)]);
            }
        }
        w.finish()
    }

    /// Strict decoding: unknown versions or tags, bad fields and trailing bytes fail.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("payload version")?;
        if version != PAYLOAD_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let account = |r: &mut Reader<'_>, f| r.bytes32(f).map(AccountId::from_bytes);
        let p = match r.u8("payload tag")? {
            0 => SystemPayload::RegisterNode {
                kind: NodeKind::from_u8(r.u8("node kind")?)?,
                metrics: Metrics::read(&mut r)?,
            },
            1 => SystemPayload::UpdateMetrics {
                metrics: Metrics::read(&mut r)?,
            },
            2 => SystemPayload::Bond {
                amount: r.u64("amount")?,
            },
            3 => SystemPayload::Delegate {
                validator: account(&mut r, "validator")?,
                amount: r.u64("amount")?,
            },
            4 => SystemPayload::Unbond {
                validator: account(&mut r, "validator")?,
                amount: r.u64("amount")?,
            },
            5 => SystemPayload::Withdraw {
                validator: account(&mut r, "validator")?,
            },
            6 => SystemPayload::DoubleSign(DoubleSignEvidence::read(&mut r)?),
            7 => SystemPayload::ReportIncident {
                node: account(&mut r, "node")?,
                incident: Hash32(r.bytes32("incident")?),
            },
            8 => {
                let n = r.u8("receipt count")? as usize;
                if n == 0 || n > MAX_RECEIPTS_PER_TX {
                    return Err(DecodeError::Invalid {
                        field: "receipt count",
                        reason: "must be 1 to 8",
                    });
                }
                let mut receipts = Vec::with_capacity(n);
                for _ in 0..n {
                    receipts.push(SignedReceipt::decode(r.bytes_u16("receipt", MAX_PAYLOAD)?)?);
                }
                SystemPayload::RecordContribution { receipts }
            }
            9 => SystemPayload::ClaimRewards,
            10 => SystemPayload::EndTerm,
            11 => {
                let b = r.bytes_u16("endpoint", MAX_ENDPOINT_LEN)?;
                let address = std::str::from_utf8(b)
                    .map_err(|_| DecodeError::Invalid {
                        field: "endpoint",
                        reason: "not UTF-8",
                    })?
                    .to_string();
                SystemPayload::SetEndpoint { address }
            }
            _ => {
                return Err(DecodeError::Invalid {
                    field: "payload tag",
                    reason: "unknown system tx kind",
                });
            }
        };
        r.finish()?;
        Ok(p)
    }

    /// Stateless checks of everything signed inside the payload: evidence signatures and
    /// receipt signatures, receipt count, metric ranges.
    fn verify_inner(&self, verifier: &(impl SignatureVerifier + ?Sized)) -> Result<()> {
        match self {
            SystemPayload::RegisterNode { metrics, .. }
            | SystemPayload::UpdateMetrics { metrics } => metrics.validate(),
            SystemPayload::DoubleSign(e) => e.verify(verifier),
            SystemPayload::SetEndpoint { address } => validate_endpoint(address),
            SystemPayload::RecordContribution { receipts } => {
                if receipts.is_empty() || receipts.len() > MAX_RECEIPTS_PER_TX {
                    return Err(Error::Envelope {
                        reason: "a contribution carries 1 to 8 receipts",
                    });
                }
                for r in receipts {
                    r.clone().verify(verifier)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Builds the envelope of a system tx for `sender` (see the module docs).
pub fn system_tx(
    payload: &SystemPayload,
    sender: AccountId,
    nonce: u64,
    timestamp_ms: u64,
    city: CityId,
) -> Tx {
    Tx {
        kind: TxKind::SystemTx,
        sender,
        receiver: AccountId::default(),
        amount: 0,
        nonce,
        timestamp_ms,
        city_id: city,
        position: Position::default(),
        method: PositionMethod::Gps,
        read_set: Vec::new(),
        write_set: Vec::new(),
        payload: payload.encode(),
    }
}

/// Builds and signs a system tx with the account key `signer` (ML-DSA-87 in production:
/// `pqc::Keypair`).
pub fn sign_system_tx(
    payload: &SystemPayload,
    nonce: u64,
    timestamp_ms: u64,
    city: CityId,
    signer: &(impl Signer + ?Sized),
) -> SignedTx {
    let sender = AccountId::from_public_key(signer.public_key());
    pqc::sign_tx(
        system_tx(payload, sender, nonce, timestamp_ms, city),
        signer,
    )
}

/// A system tx whose envelope signature, key binding, payload encoding and every inner
/// signature (evidence headers, receipts) have been verified. Only
/// [`VerifiedSystemTx::verify`] / [`VerifiedSystemTx::from_verified_tx`] make one, and
/// [`crate::DposState::apply`] only takes this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSystemTx {
    id: TxId,
    sender: AccountId,
    nonce: u64,
    payload: SystemPayload,
}

impl VerifiedSystemTx {
    /// Verifies a signed tx end to end (`verifier` is `pqc::MlDsa87` in production).
    pub fn verify(signed: SignedTx, verifier: &(impl SignatureVerifier + ?Sized)) -> Result<Self> {
        Self::check_envelope(&signed.tx)?;
        let verified = signed.verify(verifier)?;
        Self::from_verified_tx(&verified, verifier)
    }

    /// From a tx whose envelope signature is already verified (e.g. by
    /// `pqc::BatchVerifier`); checks the envelope, decodes the payload and verifies the
    /// signatures inside it.
    pub fn from_verified_tx(
        tx: &VerifiedTx,
        verifier: &(impl SignatureVerifier + ?Sized),
    ) -> Result<Self> {
        let body = tx.tx();
        Self::check_envelope(body)?;
        let payload = SystemPayload::decode(&body.payload)?;
        payload.verify_inner(verifier)?;
        Ok(VerifiedSystemTx {
            id: tx.id(),
            sender: body.sender,
            nonce: body.nonce,
            payload,
        })
    }

    fn check_envelope(tx: &Tx) -> Result<()> {
        if tx.kind != TxKind::SystemTx {
            return Err(Error::Envelope {
                reason: "tx kind is not system_tx",
            });
        }
        if tx.amount != 0 {
            return Err(Error::Envelope {
                reason: "envelope amount must be 0 (amounts live in the payload)",
            });
        }
        Ok(())
    }

    /// The tx id.
    pub fn id(&self) -> TxId {
        self.id
    }
    /// The signing account.
    pub fn sender(&self) -> AccountId {
        self.sender
    }
    /// The sender's nonce.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }
    /// The verified payload.
    pub fn payload(&self) -> &SystemPayload {
        &self.payload
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::test_utils::{city, keys, metrics_for_test};
    use crate::{SignedHeaderDigest, SlashLevel};
    use dag_core::{NodeId, Receipt, ShardHash, StripeId};
    use pqc::MlDsa87;

    fn all_payloads() -> Vec<SystemPayload> {
        let k = &keys()[0];
        let acc = AccountId::from_bytes([5; 32]);
        let h = |d| SignedHeaderDigest::sign(SlashLevel::Global, 9, Hash32([d; 32]), k);
        let receipt = SignedReceipt::sign(
            Receipt {
                stripe_id: StripeId::from_bytes([1; 32]),
                shard_index: 2,
                shard_hash: ShardHash::from_bytes([3; 32]),
                holder: NodeId::from_public_key(dag_core::Signer::public_key(k)),
                time_ms: 1000,
            },
            k,
        );
        vec![
            SystemPayload::RegisterNode {
                kind: NodeKind::Light,
                metrics: metrics_for_test(),
            },
            SystemPayload::UpdateMetrics {
                metrics: metrics_for_test(),
            },
            SystemPayload::Bond { amount: 7 },
            SystemPayload::Delegate {
                validator: acc,
                amount: u64::MAX,
            },
            SystemPayload::Unbond {
                validator: acc,
                amount: 1,
            },
            SystemPayload::Withdraw { validator: acc },
            SystemPayload::DoubleSign(
                DoubleSignEvidence::new(SlashLevel::Global, h(1), h(2)).unwrap(),
            ),
            SystemPayload::ReportIncident {
                node: acc,
                incident: Hash32([8; 32]),
            },
            SystemPayload::RecordContribution {
                receipts: vec![receipt; MAX_RECEIPTS_PER_TX],
            },
            SystemPayload::ClaimRewards,
            SystemPayload::EndTerm,
            SystemPayload::SetEndpoint {
                address: "https://rep-5.example:7443".into(),
            },
        ]
    }

    #[test]
    fn endpoints_are_host_port_with_an_optional_http_scheme() {
        for ok in [
            "127.0.0.1:7000",
            "rep.example:1",
            "[::1]:65535",
            "http://rep.example:80",
            "https://rep.example:443/",
        ] {
            validate_endpoint(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long = format!("{}:1", "a".repeat(MAX_ENDPOINT_LEN));
        for bad in [
            "",
            "rep.example",
            "rep.example:0",
            "rep.example:70000",
            ":7000",
            "a b:1",
            "ftp://rep.example:21",
            "http://rep.example:80/path",
            "rep\u{7f}:1",
            long.as_str(),
        ] {
            assert!(
                matches!(validate_endpoint(bad), Err(Error::InvalidEndpoint { .. })),
                "{bad:?} accepted"
            );
        }
        // Decoding bounds the length; a non-UTF-8 address is refused.
        assert!(SystemPayload::decode(&[1, 11, 2, 0, 0xff, 0xfe]).is_err());
        let mut over = vec![1, 11];
        over.extend_from_slice(&256u16.to_le_bytes());
        over.extend(std::iter::repeat_n(b'a', 256));
        assert!(SystemPayload::decode(&over).is_err());
    }

    #[test]
    fn every_payload_round_trips_and_fits_a_tx() {
        for p in all_payloads() {
            let bytes = p.encode();
            assert!(
                bytes.len() <= MAX_PAYLOAD,
                "{} is {} bytes",
                p.kind_name(),
                bytes.len()
            );
            assert_eq!(
                SystemPayload::decode(&bytes).unwrap(),
                p,
                "{}",
                p.kind_name()
            );
            let mut long = bytes.clone();
            long.push(0);
            assert!(SystemPayload::decode(&long).is_err());
            assert!(SystemPayload::decode(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn decode_rejects_unknown_version_and_tag() {
        assert!(matches!(
            SystemPayload::decode(&[2, 9]),
            Err(DecodeError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            SystemPayload::decode(&[1, 12]),
            Err(DecodeError::Invalid {
                field: "payload tag",
                ..
            })
        ));
        assert!(matches!(
            SystemPayload::decode(&[1, 0, 2]),
            Err(DecodeError::Invalid {
                field: "node kind",
                ..
            })
        ));
        assert!(matches!(
            SystemPayload::decode(&[1, 8, 0]),
            Err(DecodeError::Invalid {
                field: "receipt count",
                ..
            })
        ));
        assert!(matches!(
            SystemPayload::decode(&[1, 8, 9]),
            Err(DecodeError::Invalid {
                field: "receipt count",
                ..
            })
        ));
    }

    #[test]
    fn verify_checks_envelope_and_signatures() {
        let k = &keys()[1];
        let p = SystemPayload::Bond { amount: 5 };
        let signed = sign_system_tx(&p, 3, 10, city(), k);
        let v = VerifiedSystemTx::verify(signed.clone(), &MlDsa87).unwrap();
        assert_eq!(
            (v.sender(), v.nonce(), v.payload()),
            (k.account_id(), 3, &p)
        );
        assert_eq!(v.id(), signed.id());

        // Wrongly signed: body changed after signing.
        let mut t = signed.clone();
        t.tx.nonce = 4;
        assert!(matches!(
            VerifiedSystemTx::verify(t, &MlDsa87),
            Err(Error::Signature(_))
        ));
        // Unsigned.
        let mut t = signed.clone();
        t.signature.clear();
        assert!(matches!(
            VerifiedSystemTx::verify(t, &MlDsa87),
            Err(Error::Signature(_))
        ));
        // Signed by another key than the sender's.
        let mut t = signed.clone();
        t.public_key = dag_core::Signer::public_key(&keys()[2]).to_vec();
        assert!(matches!(
            VerifiedSystemTx::verify(t, &MlDsa87),
            Err(Error::Signature(_))
        ));
        // Not a system tx.
        let mut tx = system_tx(&p, k.account_id(), 0, 0, city());
        tx.kind = TxKind::FreshTx;
        assert!(matches!(
            VerifiedSystemTx::verify(pqc::sign_tx(tx, k), &MlDsa87),
            Err(Error::Envelope { .. })
        ));
        // Non-zero envelope amount.
        let mut tx = system_tx(&p, k.account_id(), 0, 0, city());
        tx.amount = 1;
        assert!(matches!(
            VerifiedSystemTx::verify(pqc::sign_tx(tx, k), &MlDsa87),
            Err(Error::Envelope { .. })
        ));
        // Garbage payload.
        let mut tx = system_tx(&p, k.account_id(), 0, 0, city());
        tx.payload = vec![1, 200];
        assert!(matches!(
            VerifiedSystemTx::verify(pqc::sign_tx(tx, k), &MlDsa87),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn verify_checks_inner_receipts_and_metrics() {
        let k = &keys()[1];
        let mut receipt = SignedReceipt::sign(
            Receipt {
                stripe_id: StripeId::from_bytes([1; 32]),
                shard_index: 0,
                shard_hash: ShardHash::from_bytes([3; 32]),
                holder: NodeId::from_public_key(dag_core::Signer::public_key(k)),
                time_ms: 1000,
            },
            k,
        );
        receipt.receipt.shard_index = 1; // tampered after signing
        let p = SystemPayload::RecordContribution {
            receipts: vec![receipt],
        };
        assert!(matches!(
            VerifiedSystemTx::verify(sign_system_tx(&p, 0, 0, city(), k), &MlDsa87),
            Err(Error::Signature(dag_core::Error::BadSignature { .. }))
        ));
        let mut m = metrics_for_test();
        m.uptime_ppm = 1_000_001;
        let p = SystemPayload::UpdateMetrics { metrics: m };
        assert!(matches!(
            VerifiedSystemTx::verify(sign_system_tx(&p, 0, 0, city(), k), &MlDsa87),
            Err(Error::InvalidMetric {
                field: "uptime_ppm",
                ..
            })
        ));
    }
}

//! The JSON shapes of `/v1` (fields as in proto/citychain/v1/city.proto, bytes as lower-case hex) and
//! their strict conversions to dag-core types: a wrong size, a bad hex digit or an unknown
//! name is a typed [`FieldError`], never a half-filled value.

use dag_core::{
    AccountId, CityId, NodeId, ObjectId, Position, PositionMethod, ShardHash, SignedReceipt,
    SignedTx, StripeId, Tx, TxId, TxKind,
};
use rpc::{
    AccountInfo, CrossState, CrossTx, ExecutionOutcome, OrderingInfo, StripeInfo, Submitted,
    TxExecution, TxRecord, TxState,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A field of a request that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct FieldError {
    /// The JSON field (dotted path).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(field: &'static str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field,
        reason: reason.into(),
    }
}

fn hex_bytes(field: &'static str, s: &str, max: usize) -> Result<Vec<u8>, FieldError> {
    if s.len() > max * 2 {
        return Err(bad(field, format!("longer than {max} bytes")));
    }
    hex::decode(s).map_err(|e| bad(field, format!("not hex: {e}")))
}

fn id32(field: &'static str, s: &str) -> Result<[u8; 32], FieldError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| bad(field, "expected 64 hex characters (32 bytes)"))?;
    Ok(out)
}

/// Parses a 64-hex-character tx id (as in a URL path).
pub fn parse_tx_id(s: &str) -> Result<TxId, FieldError> {
    id32("tx_id", s).map(TxId::from_bytes)
}

/// Parses a 64-hex-character account id.
pub fn parse_account(s: &str) -> Result<AccountId, FieldError> {
    id32("account", s).map(AccountId::from_bytes)
}

/// Parses a 64-hex-character stripe id.
pub fn parse_stripe_id(s: &str) -> Result<StripeId, FieldError> {
    id32("stripe_id", s).map(StripeId::from_bytes)
}

/// The unsigned body of a tx (proto `Tx`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonTx {
    /// `fresh_tx`, `poh_request`, `poh_ack`, `repair_request`, `repair_ack`, `checkpoint`,
    /// `system_tx` (the proto names in upper case are accepted too).
    pub kind: String,
    /// 32 bytes, hex: BLAKE3 of the sender's public key.
    pub sender: String,
    /// 32 bytes, hex.
    pub receiver: String,
    /// Amount in the smallest unit.
    pub amount: u64,
    /// The sender's sequence number.
    pub nonce: u64,
    /// Sender's clock, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// City claimed, e.g. `JP-13`.
    pub city_id: String,
    /// Latitude, degrees × 10⁷.
    pub lat_e7: i32,
    /// Longitude, degrees × 10⁷.
    pub lon_e7: i32,
    /// `gps` or `wifi`.
    pub method: String,
    /// 32-byte object ids, hex, strictly ascending.
    #[serde(default)]
    pub read_set: Vec<String>,
    /// 32-byte object ids, hex, strictly ascending.
    #[serde(default)]
    pub write_set: Vec<String>,
    /// Opaque payload, hex, at most 64 KiB.
    #[serde(default)]
    pub payload: String,
}

/// A signed tx (proto `SignedTx`): what `POST /v1/txs` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonSignedTx {
    /// The body.
    pub tx: JsonTx,
    /// ML-DSA-87 public key, hex (2,592 bytes).
    pub public_key: String,
    /// ML-DSA-87 signature over `citychain/tx/v1 ‖ tx_id`, hex (4,627 bytes).
    pub signature: String,
}

fn kind_from_name(s: &str) -> Result<TxKind, FieldError> {
    let lower = s.to_ascii_lowercase();
    [
        TxKind::FreshTx,
        TxKind::PohRequest,
        TxKind::PohAck,
        TxKind::RepairRequest,
        TxKind::RepairAck,
        TxKind::Checkpoint,
        TxKind::SystemTx,
    ]
    .into_iter()
    .find(|k| k.name() == lower)
    .ok_or_else(|| bad("tx.kind", format!("unknown kind {s:?}")))
}

fn method_name(m: PositionMethod) -> &'static str {
    match m {
        PositionMethod::Gps => "gps",
        PositionMethod::Wifi => "wifi",
    }
}

fn object_set(field: &'static str, v: &[String]) -> Result<Vec<ObjectId>, FieldError> {
    if v.len() > dag_core::MAX_OBJECT_SET {
        return Err(bad(
            field,
            format!("more than {} ids", dag_core::MAX_OBJECT_SET),
        ));
    }
    let ids = v
        .iter()
        .map(|s| id32(field, s).map(ObjectId::from_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad(field, "ids must be strictly ascending"));
    }
    Ok(ids)
}

impl JsonSignedTx {
    /// The dag-core value, every field checked (sizes, hex, names, the decoder's limits).
    pub fn to_signed(&self) -> Result<SignedTx, FieldError> {
        let t = &self.tx;
        let method = match t.method.to_ascii_lowercase().as_str() {
            "gps" => PositionMethod::Gps,
            "wifi" => PositionMethod::Wifi,
            other => return Err(bad("tx.method", format!("unknown method {other:?}"))),
        };
        let tx = Tx {
            kind: kind_from_name(&t.kind)?,
            sender: AccountId::from_bytes(id32("tx.sender", &t.sender)?),
            receiver: AccountId::from_bytes(id32("tx.receiver", &t.receiver)?),
            amount: t.amount,
            nonce: t.nonce,
            timestamp_ms: t.timestamp_ms,
            city_id: CityId::new(t.city_id.clone())
                .map_err(|e| bad("tx.city_id", e.to_string()))?,
            position: Position {
                lat_e7: t.lat_e7,
                lon_e7: t.lon_e7,
            },
            method,
            read_set: object_set("tx.read_set", &t.read_set)?,
            write_set: object_set("tx.write_set", &t.write_set)?,
            payload: hex_bytes("tx.payload", &t.payload, dag_core::MAX_PAYLOAD)?,
        };
        tx.validate().map_err(|e| bad("tx", e.to_string()))?;
        Ok(SignedTx {
            tx,
            public_key: hex_bytes("public_key", &self.public_key, dag_core::MAX_KEY_LEN)?,
            signature: hex_bytes("signature", &self.signature, dag_core::MAX_SIGNATURE_LEN)?,
        })
    }
}

impl From<&SignedTx> for JsonSignedTx {
    fn from(s: &SignedTx) -> Self {
        let t = &s.tx;
        JsonSignedTx {
            tx: JsonTx {
                kind: t.kind.name().into(),
                sender: t.sender.to_hex(),
                receiver: t.receiver.to_hex(),
                amount: t.amount,
                nonce: t.nonce,
                timestamp_ms: t.timestamp_ms,
                city_id: t.city_id.as_str().into(),
                lat_e7: t.position.lat_e7,
                lon_e7: t.position.lon_e7,
                method: method_name(t.method).into(),
                read_set: t.read_set.iter().map(ObjectId::to_hex).collect(),
                write_set: t.write_set.iter().map(ObjectId::to_hex).collect(),
                payload: hex::encode(&t.payload),
            },
            public_key: hex::encode(&s.public_key),
            signature: hex::encode(&s.signature),
        }
    }
}

/// A holder's signed storage receipt (PoH_ACK).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JsonReceipt {
    /// The stripe (micro-batch), hex.
    pub stripe_id: String,
    /// Index of the shard in the stripe.
    pub shard_index: u16,
    /// BLAKE3 of the shard, hex.
    pub shard_hash: String,
    /// The holder's node id, hex.
    pub holder: String,
    /// Holder's clock when it stored the shard, ms.
    pub time_ms: u64,
    /// Holder's ML-DSA-87 public key, hex.
    pub holder_public_key: String,
    /// Signature over the receipt, hex.
    pub signature: String,
}

impl From<&SignedReceipt> for JsonReceipt {
    fn from(r: &SignedReceipt) -> Self {
        JsonReceipt {
            stripe_id: r.receipt.stripe_id.to_hex(),
            shard_index: r.receipt.shard_index,
            shard_hash: r.receipt.shard_hash.to_hex(),
            holder: r.receipt.holder.to_hex(),
            time_ms: r.receipt.time_ms,
            holder_public_key: hex::encode(&r.holder_public_key),
            signature: hex::encode(&r.signature),
        }
    }
}

/// Lower-case state name.
pub fn state_name(s: TxState) -> &'static str {
    match s {
        TxState::Admitted => "admitted",
        TxState::Held => "held",
        TxState::Ordered => "ordered",
        TxState::Federated => "federated",
        TxState::Completed => "completed",
    }
}

/// The answer to an accepted `POST /v1/txs` (as gRPC `SubmitTx`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubmitAnswer {
    /// The tx id, hex.
    pub tx_id: String,
    /// `admitted` or `held`.
    pub state: String,
    /// Storage receipts, when held.
    pub receipts: Vec<JsonReceipt>,
}

impl From<&Submitted> for SubmitAnswer {
    fn from(s: &Submitted) -> Self {
        SubmitAnswer {
            tx_id: s.tx_id.to_hex(),
            state: state_name(s.state).into(),
            receipts: s.receipts.iter().map(JsonReceipt::from).collect(),
        }
    }
}

/// Where the committee ordered a tx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JsonOrdering {
    /// Checkpoint sequence.
    pub sequence: u64,
    /// The committed leader's round.
    pub leader_round: u64,
    /// Leader batch digest, hex.
    pub leader: String,
    /// Digest of the batch that carried the tx, hex.
    pub batch: String,
    /// When this representative committed it, ms.
    pub committed_at_ms: u64,
    /// When the continent's proof arrived, ms.
    pub federated_at_ms: Option<u64>,
}

impl From<&OrderingInfo> for JsonOrdering {
    fn from(o: &OrderingInfo) -> Self {
        JsonOrdering {
            sequence: o.sequence,
            leader_round: o.leader_round,
            leader: o.leader.to_hex(),
            batch: o.batch.to_hex(),
            committed_at_ms: o.committed_at_ms,
            federated_at_ms: o.federated_at_ms,
        }
    }
}

/// How the committee executed a transfer (as gRPC `TxExecution`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JsonExecution {
    /// The checkpoint that executed it.
    pub sequence: u64,
    /// `applied`, `insufficient_funds`, `sets_do_not_cover`, `nonce_already_applied`,
    /// `balance_overflow` or `unknown_city`.
    pub outcome: String,
    /// Why it failed, for people (empty when applied).
    pub detail: String,
    /// The state root after that checkpoint, hex (absent when not recorded): the same on
    /// every representative of the committee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_root: Option<String>,
}

impl From<&TxExecution> for JsonExecution {
    fn from(e: &TxExecution) -> Self {
        JsonExecution {
            sequence: e.sequence,
            outcome: match e.outcome {
                ExecutionOutcome::Applied => "applied",
                ExecutionOutcome::InsufficientFunds => "insufficient_funds",
                ExecutionOutcome::SetsDoNotCover => "sets_do_not_cover",
                ExecutionOutcome::NonceAlreadyApplied => "nonce_already_applied",
                ExecutionOutcome::BalanceOverflow => "balance_overflow",
                ExecutionOutcome::UnknownCity => "unknown_city",
            }
            .into(),
            detail: e.detail.clone(),
            state_root: e.state_root.map(|r| r.to_hex()),
        }
    }
}

/// A cross-city transfer in the answering city (as gRPC `CrossTx`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JsonCross {
    /// `pending`, `completed` or `refunded` in the sender's city; `credited` or `expired`
    /// in the receiver's.
    pub state: String,
    /// The sender's city.
    pub from_city: String,
    /// The receiver's city.
    pub to_city: String,
    /// The transfer-out statement, hex.
    pub statement: String,
    /// The sender city's certified transfer-out (canonical proof bytes, hex).
    pub transfer_out_proof: Option<String>,
    /// The receiver city's certified answer (canonical proof bytes, hex).
    pub answer_proof: Option<String>,
}

impl From<&CrossTx> for JsonCross {
    fn from(c: &CrossTx) -> Self {
        JsonCross {
            state: match c.state {
                CrossState::Pending => "pending",
                CrossState::Completed => "completed",
                CrossState::Refunded => "refunded",
                CrossState::Credited => "credited",
                CrossState::Expired => "expired",
            }
            .into(),
            from_city: c.from_city.clone(),
            to_city: c.to_city.clone(),
            statement: c.statement.to_hex(),
            transfer_out_proof: c.transfer_out_proof.as_ref().map(hex::encode),
            answer_proof: c.answer_proof.as_ref().map(hex::encode),
        }
    }
}

/// An account as the representative executed it (as gRPC `GetAccount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountAnswer {
    /// The account id, hex.
    pub account: String,
    /// False when never credited (balance and nonce 0).
    pub exists: bool,
    /// Balance in the smallest unit.
    pub balance: u64,
    /// Next nonce: one above the highest applied nonce it sent.
    pub nonce: u64,
    /// Writes of the account object so far.
    pub version: u64,
    /// Checkpoints executed when this was read (the state the answer reflects).
    pub executed_checkpoints: u64,
}

impl From<&AccountInfo> for AccountAnswer {
    fn from(a: &AccountInfo) -> Self {
        AccountAnswer {
            account: a.account.to_hex(),
            exists: a.exists,
            balance: a.balance,
            nonce: a.nonce,
            version: a.version,
            executed_checkpoints: a.executed_checkpoints,
        }
    }
}

/// A tx as read back (as gRPC `GetTx`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TxAnswer {
    /// The tx id, hex.
    pub tx_id: String,
    /// `admitted`, `held`, `ordered`, `federated` or `completed` (the rule is
    /// `TX_STATE_COMPLETED` in proto/citychain/v1/city.proto).
    pub state: String,
    /// Where the node found it (`store`, `shards (4 used)`, `archive`, `order`).
    pub source: String,
    /// The signed tx, when this node has its body.
    pub tx: Option<JsonSignedTx>,
    /// Storage receipts, when held here.
    pub receipts: Vec<JsonReceipt>,
    /// Where the committee ordered it.
    pub ordering: Option<JsonOrdering>,
    /// Canonical `TxProof` bytes, hex, once federated (checked offline by `repair-cli verify`).
    pub proof: Option<String>,
    /// How the committee executed it, once executed here (transfers).
    #[serde(default)]
    pub execution: Option<JsonExecution>,
    /// A cross-city transfer's state and proofs, in either city (in the receiver's city the
    /// answer has no `tx`: that city never stored the body).
    #[serde(default)]
    pub cross: Option<JsonCross>,
}

impl TxAnswer {
    /// The answer for `rec`.
    pub fn new(id: TxId, rec: &TxRecord) -> Self {
        TxAnswer {
            tx_id: id.to_hex(),
            state: state_name(rec.state).into(),
            source: rec.source.clone(),
            tx: rec.tx.as_ref().map(JsonSignedTx::from),
            receipts: rec.receipts.iter().map(JsonReceipt::from).collect(),
            ordering: rec.ordering.as_ref().map(JsonOrdering::from),
            proof: rec.proof.as_ref().map(hex::encode),
            execution: None,
            cross: rec.cross.as_ref().map(JsonCross::from),
        }
    }

    /// With the execution outcome.
    pub fn with_execution(mut self, e: Option<&TxExecution>) -> Self {
        self.execution = e.map(JsonExecution::from);
        self
    }
}

/// `POST /v1/repair_requests` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepairRequestBody {
    /// The tx to repair, 64 hex characters.
    pub tx_id: String,
}

/// One placed shard of a stripe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JsonHolder {
    /// Shard index.
    pub index: u16,
    /// Holder node id, hex.
    pub node_id: String,
    /// Its gRPC address when live in this node's view.
    pub grpc_addr: Option<String>,
    /// True when the holder is live in this node's view.
    pub live: bool,
    /// BLAKE3 of the shard from the manifest, hex.
    pub shard_hash: String,
}

/// A stripe and its holders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StripeAnswer {
    /// The stripe id, hex.
    pub stripe_id: String,
    /// Data shards.
    pub k: u16,
    /// Parity shards.
    pub m: u16,
    /// Placed shards.
    pub holders: Vec<JsonHolder>,
}

impl From<&StripeInfo> for StripeAnswer {
    fn from(s: &StripeInfo) -> Self {
        StripeAnswer {
            stripe_id: s.stripe_id.to_hex(),
            k: s.k,
            m: s.m,
            holders: s
                .holders
                .iter()
                .map(|h| JsonHolder {
                    index: h.index,
                    node_id: h.node_id.to_hex(),
                    live: h.grpc_addr.is_some(),
                    grpc_addr: h.grpc_addr.clone(),
                    shard_hash: h.shard_hash.to_hex(),
                })
                .collect(),
        }
    }
}

/// Hex of a node id (for callers that build views).
pub fn node_hex(n: &NodeId) -> String {
    n.to_hex()
}

/// Hex of a shard hash.
pub fn shard_hex(h: &ShardHash) -> String {
    h.to_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JsonSignedTx {
        JsonSignedTx {
            tx: JsonTx {
                kind: "fresh_tx".into(),
                sender: "11".repeat(32),
                receiver: "22".repeat(32),
                amount: 5,
                nonce: 1,
                timestamp_ms: 1_700_000_000_000,
                city_id: "JP-13".into(),
                lat_e7: 356_895_000,
                lon_e7: 1_396_917_000,
                method: "gps".into(),
                read_set: vec![],
                write_set: vec![],
                payload: "abcd".into(),
            },
            public_key: "01".repeat(8),
            signature: "02".repeat(8),
        }
    }

    #[test]
    fn round_trips_through_dag_core() {
        let j = sample();
        let s = j.to_signed().unwrap();
        assert_eq!(s.tx.payload, vec![0xab, 0xcd]);
        assert_eq!(JsonSignedTx::from(&s), j);
        let upper = JsonSignedTx {
            tx: JsonTx {
                kind: "FRESH_TX".into(),
                ..sample().tx
            },
            ..sample()
        };
        assert_eq!(upper.to_signed().unwrap(), s);
    }

    fn check(mutate: impl FnOnce(&mut JsonSignedTx), field: &str) {
        let mut j = sample();
        mutate(&mut j);
        let e = j.to_signed().unwrap_err();
        assert_eq!(e.field, field, "{e}");
    }

    #[test]
    fn rejects_each_bad_field() {
        check(|j| j.tx.sender = "11".repeat(31), "tx.sender");
        check(|j| j.tx.receiver = "zz".repeat(32), "tx.receiver");
        check(|j| j.tx.kind = "nope".into(), "tx.kind");
        check(|j| j.tx.method = "radar".into(), "tx.method");
        check(|j| j.tx.city_id = String::new(), "tx.city_id");
        check(|j| j.tx.payload = "0".into(), "tx.payload");
        check(
            |j| j.tx.payload = "00".repeat(dag_core::MAX_PAYLOAD + 1),
            "tx.payload",
        );
        check(|j| j.tx.lat_e7 = 1_000_000_000, "tx");
        check(
            |j| j.tx.read_set = vec!["02".repeat(32), "01".repeat(32)],
            "tx.read_set",
        );
        check(
            |j| j.public_key = "00".repeat(dag_core::MAX_KEY_LEN + 1),
            "public_key",
        );
        check(|j| j.signature = "x".into(), "signature");
    }

    #[test]
    fn ids_parse_strictly() {
        assert!(parse_tx_id(&"ab".repeat(32)).is_ok());
        assert_eq!(parse_tx_id("abc").unwrap_err().field, "tx_id");
        assert!(parse_account(&"zz".repeat(32)).is_err());
        assert!(parse_stripe_id(&"00".repeat(33)).is_err());
    }
}

//! The repair protocol (proto/citychain/v1/repair.proto): a city's REPAIR_REQUEST tx to a holder and the
//! holder's REPAIR_ACK tx with its shard and receipt. The payload layouts, the trait a light
//! node implements ([`RepairResponder`]), its tonic adapter ([`RepairGrpc`]) and a typed
//! client ([`RepairClient`]).

use crate::error::Result;
use crate::{ClientError, ConvertError, MAX_SHARD_MESSAGE_BYTES, pb};
use dag_core::{DecodeError, ShardHash, SignedReceipt, SignedTx, StripeId, TxId};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// What a REPAIR_REQUEST asks for: one shard of a stripe, for one tx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairRequestPayload {
    /// The stripe.
    pub stripe: StripeId,
    /// The shard index.
    pub index: u16,
    /// The tx being repaired.
    pub tx: TxId,
}

/// Length of an encoded [`RepairRequestPayload`].
pub const REPAIR_REQUEST_PAYLOAD_LEN: usize = 32 + 2 + 32;
/// Length of an encoded [`RepairAckPayload`].
pub const REPAIR_ACK_PAYLOAD_LEN: usize = 64;

fn bad(field: &'static str) -> DecodeError {
    DecodeError::Invalid {
        field,
        reason: "wrong length",
    }
}

impl RepairRequestPayload {
    /// stripe (32) ‖ index (u16 LE) ‖ tx (32).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(REPAIR_REQUEST_PAYLOAD_LEN);
        v.extend_from_slice(self.stripe.as_bytes());
        v.extend_from_slice(&self.index.to_le_bytes());
        v.extend_from_slice(self.tx.as_bytes());
        v
    }
    /// Strict decode.
    pub fn decode(b: &[u8]) -> std::result::Result<Self, DecodeError> {
        if b.len() != REPAIR_REQUEST_PAYLOAD_LEN {
            return Err(bad("repair_request.payload"));
        }
        Ok(RepairRequestPayload {
            stripe: StripeId::from_slice(&b[..32])?,
            index: u16::from_le_bytes([b[32], b[33]]),
            tx: TxId::from_slice(&b[34..])?,
        })
    }
}

/// What a REPAIR_ACK says: which request it answers and the hash of the shard sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairAckPayload {
    /// Id of the REPAIR_REQUEST tx answered.
    pub request: TxId,
    /// BLAKE3 of the shard sent with it.
    pub shard_hash: ShardHash,
}

impl RepairAckPayload {
    /// request (32) ‖ shard hash (32).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(REPAIR_ACK_PAYLOAD_LEN);
        v.extend_from_slice(self.request.as_bytes());
        v.extend_from_slice(self.shard_hash.as_bytes());
        v
    }
    /// Strict decode.
    pub fn decode(b: &[u8]) -> std::result::Result<Self, DecodeError> {
        if b.len() != REPAIR_ACK_PAYLOAD_LEN {
            return Err(bad("repair_ack.payload"));
        }
        Ok(RepairAckPayload {
            request: TxId::from_slice(&b[..32])?,
            shard_hash: ShardHash::from_slice(&b[32..])?,
        })
    }
}

/// A holder's answer to a REPAIR_REQUEST, not yet checked by the city.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairAnswer {
    /// The REPAIR_ACK tx, signed by the holder.
    pub ack: SignedTx,
    /// The encoded shard.
    pub shard: Vec<u8>,
    /// The holder's receipt for the shard.
    pub receipt: SignedReceipt,
}

/// What a light node implements to answer REPAIR_REQUESTs.
pub trait RepairResponder: Send + Sync + 'static {
    /// Answers one request (already decoded, not yet verified).
    fn answer(
        &self,
        request: SignedTx,
    ) -> impl Future<Output = std::result::Result<RepairAnswer, Status>> + Send;
}

/// Serves the `Repair` gRPC service over a [`RepairResponder`].
#[derive(Debug)]
pub struct RepairGrpc<T> {
    inner: Arc<T>,
}

impl<T> Clone for RepairGrpc<T> {
    fn clone(&self) -> Self {
        RepairGrpc {
            inner: self.inner.clone(),
        }
    }
}

impl<T: RepairResponder> RepairGrpc<T> {
    /// An adapter over `inner`.
    pub fn new(inner: Arc<T>) -> Self {
        RepairGrpc { inner }
    }
    /// The tonic server (messages up to [`MAX_SHARD_MESSAGE_BYTES`]).
    pub fn into_server(self) -> pb::repair_service_server::RepairServiceServer<Self> {
        pb::repair_service_server::RepairServiceServer::new(self)
            .max_decoding_message_size(MAX_SHARD_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_SHARD_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl<T: RepairResponder> pb::repair_service_server::RepairService for RepairGrpc<T> {
    async fn repair_shard(
        &self,
        request: Request<pb::RepairShardRequest>,
    ) -> std::result::Result<Response<pb::RepairShardResponse>, Status> {
        let req = request.into_inner().request.ok_or_else(|| {
            crate::status::with_error_info(Status::invalid_argument("MALFORMED: missing request"))
        })?;
        let tx = SignedTx::try_from(req).map_err(|e| {
            crate::status::with_error_info(Status::invalid_argument(format!("MALFORMED: {e}")))
        })?;
        let a = self
            .inner
            .answer(tx)
            .await
            .map_err(crate::status::with_error_info)?;
        Ok(Response::new(pb::RepairShardResponse {
            ack: Some(pb::SignedTx::from(&a.ack)),
            shard: a.shard,
            receipt: Some(pb::Receipt::from(&a.receipt)),
        }))
    }
}

/// Sends REPAIR_REQUESTs to one holder.
#[derive(Debug, Clone)]
pub struct RepairClient {
    inner: pb::repair_service_client::RepairServiceClient<Channel>,
    timeout: Duration,
}

impl RepairClient {
    /// Connects to `addr`; every call fails after `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self> {
        let ch = crate::error::connect(addr).await?;
        Ok(RepairClient {
            inner: pb::repair_service_client::RepairServiceClient::new(ch)
                .max_decoding_message_size(MAX_SHARD_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_SHARD_MESSAGE_BYTES),
            timeout,
        })
    }

    /// Sends one REPAIR_REQUEST; returns the holder's answer (unchecked).
    pub async fn request(&self, request: &SignedTx) -> Result<RepairAnswer> {
        let msg = pb::RepairShardRequest {
            request: Some(pb::SignedTx::from(request)),
        };
        let call = async {
            let r = self.inner.clone().repair_shard(msg).await?.into_inner();
            let ack = r
                .ack
                .ok_or(ConvertError::Invalid(bad("ack")))
                .and_then(SignedTx::try_from)
                .map_err(ClientError::Malformed)?;
            let receipt = r
                .receipt
                .ok_or(ConvertError::Invalid(bad("receipt")))
                .and_then(SignedReceipt::try_from)
                .map_err(ClientError::Malformed)?;
            Ok(RepairAnswer {
                ack,
                shard: r.shard,
                receipt,
            })
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Status {
                code: tonic::Code::DeadlineExceeded,
                message: format!("no REPAIR_ACK within {:?}", self.timeout),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_reject_wrong_lengths() {
        let p = RepairRequestPayload {
            stripe: StripeId::from_bytes([1; 32]),
            index: 513,
            tx: TxId::from_bytes([2; 32]),
        };
        assert_eq!(RepairRequestPayload::decode(&p.encode()).unwrap(), p);
        assert!(RepairRequestPayload::decode(&p.encode()[1..]).is_err());
        let a = RepairAckPayload {
            request: TxId::from_bytes([3; 32]),
            shard_hash: ShardHash::from_bytes([4; 32]),
        };
        assert_eq!(RepairAckPayload::decode(&a.encode()).unwrap(), a);
        assert!(RepairAckPayload::decode(&[0; 65]).is_err());
    }
}

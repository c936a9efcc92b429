//! The `CrossCityService` service (proto/citychain/v1/crosscity.proto): where a cross-city
//! transfer stands in the asked city. The trait a representative implements
//! ([`CrossCityApi`]), its tonic adapter ([`CrossCityGrpc`]) and a typed client
//! ([`CrossCityClient`]).

use crate::error::Result;
use crate::{ClientError, ConvertError, pb};
use dag_core::{AccountId, DecodeError, Hash32, TxId};
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// A cross-city transfer's state in one city.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossState {
    /// Sender city: escrowed, waiting for the receiver city's answer.
    Pending,
    /// Sender city: credited in the receiver city; the escrow left with the money.
    Completed,
    /// Sender city: expired in the receiver city; refunded here.
    Refunded,
    /// Receiver city: credited, exactly once.
    Credited,
    /// Receiver city: arrived at or past its deadline; never credited.
    Expired,
}

impl CrossState {
    pub(crate) fn to_proto(self) -> i32 {
        use pb::CrossTransferState as P;
        (match self {
            CrossState::Pending => P::Pending,
            CrossState::Completed => P::Completed,
            CrossState::Refunded => P::Refunded,
            CrossState::Credited => P::Credited,
            CrossState::Expired => P::Expired,
        }) as i32
    }
    pub(crate) fn from_proto(v: i32) -> Option<Self> {
        use pb::CrossTransferState as P;
        Some(match P::try_from(v).ok()? {
            P::Pending => CrossState::Pending,
            P::Completed => CrossState::Completed,
            P::Refunded => CrossState::Refunded,
            P::Credited => CrossState::Credited,
            P::Expired => CrossState::Expired,
            P::Unspecified => return None,
        })
    }
}

/// The transfer itself, as the sender city recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossTransferBody {
    /// The receiver's city.
    pub to_city: String,
    /// Debited account.
    pub sender: AccountId,
    /// Credited account.
    pub receiver: AccountId,
    /// Amount.
    pub amount: u64,
    /// Deadline in the receiver city (ms since the Unix epoch).
    pub deadline_ms: u64,
}

/// A cross-city transfer as one city sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossTransferView {
    /// The state here.
    pub state: CrossState,
    /// The answering city.
    pub city: String,
    /// The certified transfer-out statement.
    pub statement: Hash32,
    /// The transfer (sender city only).
    pub body: Option<CrossTransferBody>,
    /// This city's checkpoint that escrowed it (sender city).
    pub escrow_checkpoint: Option<u64>,
    /// This city's checkpoint that settled it (sender city).
    pub settle_checkpoint: Option<u64>,
    /// This city's checkpoint that first answered it (receiver city).
    pub answer_checkpoint: Option<u64>,
}

/// What a representative implements.
pub trait CrossCityApi: Send + Sync + 'static {
    /// The transfer `id` in this city (None: no record).
    fn cross_transfer(&self, id: TxId) -> std::result::Result<Option<CrossTransferView>, Status>;
}

/// Serves `CrossCityService` over a [`CrossCityApi`].
#[derive(Debug)]
pub struct CrossCityGrpc<T> {
    inner: Arc<T>,
}

impl<T> Clone for CrossCityGrpc<T> {
    fn clone(&self) -> Self {
        CrossCityGrpc {
            inner: self.inner.clone(),
        }
    }
}

impl<T: CrossCityApi> CrossCityGrpc<T> {
    /// An adapter over `inner`.
    pub fn new(inner: Arc<T>) -> Self {
        CrossCityGrpc { inner }
    }
    /// The tonic server.
    pub fn into_server(self) -> pb::cross_city_service_server::CrossCityServiceServer<Self> {
        pb::cross_city_service_server::CrossCityServiceServer::new(self)
    }
}

fn seq_plus_one(s: Option<u64>) -> u64 {
    s.map_or(0, |s| s.saturating_add(1))
}

fn seq_from(v: u64) -> Option<u64> {
    v.checked_sub(1)
}

#[tonic::async_trait]
impl<T: CrossCityApi> pb::cross_city_service_server::CrossCityService for CrossCityGrpc<T> {
    async fn get_cross_transfer(
        &self,
        request: Request<pb::GetCrossTransferRequest>,
    ) -> std::result::Result<Response<pb::GetCrossTransferResponse>, Status> {
        let id = TxId::from_slice(&request.into_inner().tx_id)
            .map_err(|e| Status::invalid_argument(format!("MALFORMED: tx_id: {e}")))?;
        let inner = self.inner.clone();
        let v = tokio::task::spawn_blocking(move || inner.cross_transfer(id))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        let Some(v) = v else {
            return Ok(Response::new(pb::GetCrossTransferResponse::default()));
        };
        let body = v.body.as_ref();
        Ok(Response::new(pb::GetCrossTransferResponse {
            found: true,
            state: v.state.to_proto(),
            city: v.city,
            statement: v.statement.0.to_vec(),
            to_city: body.map(|b| b.to_city.clone()).unwrap_or_default(),
            sender: body
                .map(|b| b.sender.as_bytes().to_vec())
                .unwrap_or_default(),
            receiver: body
                .map(|b| b.receiver.as_bytes().to_vec())
                .unwrap_or_default(),
            amount: body.map_or(0, |b| b.amount),
            deadline_ms: body.map_or(0, |b| b.deadline_ms),
            escrow_checkpoint: seq_plus_one(v.escrow_checkpoint),
            settle_checkpoint: seq_plus_one(v.settle_checkpoint),
            answer_checkpoint: seq_plus_one(v.answer_checkpoint),
        }))
    }
}

/// Asks one representative about cross-city transfers.
#[derive(Debug, Clone)]
pub struct CrossCityClient {
    inner: pb::cross_city_service_client::CrossCityServiceClient<Channel>,
}

fn bad(field: &'static str, reason: &'static str) -> ClientError {
    ClientError::Malformed(ConvertError::Invalid(DecodeError::Invalid {
        field,
        reason,
    }))
}

impl CrossCityClient {
    /// Connects to `addr` (a representative's gRPC address).
    pub async fn connect(addr: &str) -> Result<Self> {
        let ch = crate::error::connect(addr).await?;
        Ok(CrossCityClient {
            inner: pb::cross_city_service_client::CrossCityServiceClient::new(ch),
        })
    }

    /// Transfer `id` in the asked city (None: no record there).
    pub async fn get(&self, id: TxId) -> Result<Option<CrossTransferView>> {
        let r = self
            .inner
            .clone()
            .get_cross_transfer(pb::GetCrossTransferRequest {
                tx_id: id.as_bytes().to_vec(),
            })
            .await?
            .into_inner();
        if !r.found {
            return Ok(None);
        }
        let state = CrossState::from_proto(r.state).ok_or(bad("state", "unknown"))?;
        let statement = Hash32(
            <[u8; 32]>::try_from(r.statement.as_slice())
                .map_err(|_| bad("statement", "not 32 bytes"))?,
        );
        let body = if r.to_city.is_empty() {
            None
        } else {
            let acct = |b: &[u8], f| {
                <[u8; 32]>::try_from(b)
                    .map(AccountId::from_bytes)
                    .map_err(|_| bad(f, "not 32 bytes"))
            };
            Some(CrossTransferBody {
                to_city: r.to_city,
                sender: acct(&r.sender, "sender")?,
                receiver: acct(&r.receiver, "receiver")?,
                amount: r.amount,
                deadline_ms: r.deadline_ms,
            })
        };
        Ok(Some(CrossTransferView {
            state,
            city: r.city,
            statement,
            body,
            escrow_checkpoint: seq_from(r.escrow_checkpoint),
            settle_checkpoint: seq_from(r.settle_checkpoint),
            answer_checkpoint: seq_from(r.answer_checkpoint),
        }))
    }
}

//! The tonic adapter: serves `CityNode` over any [`CityApi`].

use crate::convert::ConvertError;
use crate::{CityApi, Rejection, Submitted, pb};
use dag_core::{AccountId, SignedTx, TxId};
use futures::StreamExt;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Largest gRPC message accepted: a maximal signed tx plus protobuf overhead.
pub const MAX_MESSAGE_BYTES: usize = dag_core::MAX_SIGNED_TX_LEN + 16 * 1024;
/// Largest gRPC response: a maximal signed tx plus the receipts of a largest stripe
/// (`GetTx`, `RepairTx`).
pub const MAX_RESPONSE_BYTES: usize = MAX_MESSAGE_BYTES
    + storage::MAX_SHARDS as usize * (dag_core::MAX_KEY_LEN + dag_core::MAX_SIGNATURE_LEN + 256);
/// How many txs of one `SubmitTxStream` are processed at once.
pub const STREAM_CONCURRENCY: usize = 256;

/// Serves the `CityNode` gRPC service by calling a [`CityApi`].
#[derive(Debug)]
pub struct CityNodeService<T> {
    api: Arc<T>,
}

impl<T> Clone for CityNodeService<T> {
    fn clone(&self) -> Self {
        CityNodeService {
            api: self.api.clone(),
        }
    }
}

impl<T: CityApi> CityNodeService<T> {
    /// An adapter over `api`.
    pub fn new(api: Arc<T>) -> Self {
        CityNodeService { api }
    }

    /// The tonic server, with message size limits set to [`MAX_MESSAGE_BYTES`].
    pub fn into_server(self) -> pb::city_node_service_server::CityNodeServiceServer<Self> {
        pb::city_node_service_server::CityNodeServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
    }
}

fn accepted(s: Submitted) -> pb::SubmitTxResponse {
    pb::SubmitTxResponse {
        tx_id: s.tx_id.as_bytes().to_vec(),
        state: pb::TxState::from(s.state) as i32,
        stripe_id: crate::slim::stripe_of(&s.receipts)
            .map(|id| id.as_bytes().to_vec())
            .unwrap_or_default(),
        receipts: s.receipts.iter().map(Into::into).collect(),
        reject_code: 0,
        message: String::new(),
        holders: Vec::new(),
    }
}

/// A stream answer: slim (stripe and holders only) when the request asked for it and the
/// same receipts of its stripe went out in full on this stream within the window, else
/// full.
fn accepted_on_stream(
    s: Submitted,
    slim: bool,
    sent: &mut crate::slim::StripeWindow,
) -> pb::SubmitTxResponse {
    let stripe = crate::slim::stripe_of(&s.receipts);
    match stripe {
        Some(id) if s.state == crate::TxState::Held && slim && sent.holds(&id, &s.receipts) => {
            pb::SubmitTxResponse {
                tx_id: s.tx_id.as_bytes().to_vec(),
                state: pb::TxState::from(s.state) as i32,
                receipts: Vec::new(),
                reject_code: 0,
                message: String::new(),
                stripe_id: id.as_bytes().to_vec(),
                holders: s
                    .receipts
                    .iter()
                    .map(|r| r.receipt.holder.as_bytes().to_vec())
                    .collect(),
            }
        }
        Some(id) => {
            if s.state == crate::TxState::Held {
                sent.sent_in_full(id, &s.receipts);
            }
            accepted(s)
        }
        None => accepted(s),
    }
}

fn rejected(r: &Rejection) -> pb::SubmitTxResponse {
    pb::SubmitTxResponse {
        tx_id: r.tx_id.map(|t| t.as_bytes().to_vec()).unwrap_or_default(),
        state: pb::TxState::Rejected as i32,
        receipts: Vec::new(),
        reject_code: pb::RejectCode::from(r.code) as i32,
        message: r.message.clone(),
        stripe_id: Vec::new(),
        holders: Vec::new(),
    }
}

fn streamed(index: u64, result: pb::SubmitTxResponse) -> pb::SubmitTxStreamResponse {
    pb::SubmitTxStreamResponse {
        index,
        result: Some(result),
    }
}

fn decode_request(req: pb::SubmitTxRequest) -> Result<SignedTx, Rejection> {
    let p = req
        .tx
        .ok_or_else(|| ConvertError::Missing("tx").to_rejection())?;
    SignedTx::try_from(p).map_err(|e| e.to_rejection())
}

async fn submit_one<T: CityApi>(api: &T, req: pb::SubmitTxRequest) -> Result<Submitted, Rejection> {
    let tx = match decode_request(req) {
        Ok(tx) => tx,
        Err(r) => {
            api.note_rejected(r.code);
            return Err(r);
        }
    };
    api.submit(tx).await
}

#[tonic::async_trait]
impl<T: CityApi> pb::city_node_service_server::CityNodeService for CityNodeService<T> {
    async fn submit_tx(
        &self,
        request: Request<pb::SubmitTxRequest>,
    ) -> Result<Response<pb::SubmitTxResponse>, Status> {
        match submit_one(&*self.api, request.into_inner()).await {
            Ok(s) => Ok(Response::new(accepted(s))),
            Err(r) => Err(r.to_status()),
        }
    }

    type SubmitTxStreamStream = ReceiverStream<Result<pb::SubmitTxStreamResponse, Status>>;

    async fn submit_tx_stream(
        &self,
        request: Request<Streaming<pb::SubmitTxStreamRequest>>,
    ) -> Result<Response<Self::SubmitTxStreamStream>, Status> {
        let mut input = request.into_inner();
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(STREAM_CONCURRENCY);
        let api = self.api.clone();
        tokio::spawn(async move {
            // Decode errors of the stream itself (malformed protobuf) end it: answer that
            // item as rejected, then stop reading.
            let (items_tx, items_rx) = tokio::sync::mpsc::channel(STREAM_CONCURRENCY);
            let reader_out = out_tx.clone();
            let reader = tokio::spawn(async move {
                let mut index = 0u64;
                while let Some(item) = input.next().await {
                    match item {
                        Ok(req) => {
                            let slim = req.slim_answers;
                            let req = pb::SubmitTxRequest { tx: req.tx };
                            if items_tx.send((index, slim, req)).await.is_err() {
                                return;
                            }
                        }
                        Err(status) => {
                            let r = Rejection::new(
                                crate::RejectCode::Malformed,
                                format!("undecodable stream message: {}", status.message()),
                                None,
                            );
                            let _ = reader_out.send(Ok(streamed(index, rejected(&r)))).await;
                            return;
                        }
                    }
                    index += 1;
                }
            });
            let mut results = ReceiverStream::new(items_rx)
                .map(|(index, slim, req)| {
                    let api = api.clone();
                    async move { (index, slim, submit_one(&*api, req).await) }
                })
                .buffer_unordered(STREAM_CONCURRENCY);
            // Answers are shaped here, one at a time in the order they are sent, so the
            // window of stripes sent in full is exactly the one the client mirrors.
            let mut sent = crate::slim::StripeWindow::new(crate::slim::STREAM_STRIPE_WINDOW);
            while let Some((index, slim, out)) = results.next().await {
                let resp = match out {
                    Ok(s) => streamed(index, accepted_on_stream(s, slim, &mut sent)),
                    Err(r) => streamed(index, rejected(&r)),
                };
                if out_tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
            let _ = reader.await;
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    async fn get_tx(
        &self,
        request: Request<pb::GetTxRequest>,
    ) -> Result<Response<pb::GetTxResponse>, Status> {
        let req = request.into_inner();
        let id = TxId::from_slice(&req.tx_id).map_err(|e| {
            crate::status::with_error_info(Status::invalid_argument(format!(
                "MALFORMED: tx_id: {e}"
            )))
        })?;
        let unknown = || {
            crate::status::typed(
                tonic::Code::NotFound,
                "UNKNOWN_TX",
                format_args!("tx {id} is not known to this node"),
            )
        };
        if req.body_only {
            return match self.api.get_body(id).await {
                Ok(Some(tx)) => Ok(Response::new(pb::GetTxResponse {
                    tx: Some((&tx).into()),
                    source: "body".into(),
                    ..Default::default()
                })),
                Ok(None) => Err(unknown()),
                Err(r) => Err(r.to_status()),
            };
        }
        match self.api.get(id).await {
            Ok(Some(rec)) => {
                let execution = self
                    .api
                    .execution(id)
                    .await
                    .map_err(|r| r.to_status())?
                    .map(|e| pb::TxExecution {
                        sequence: e.sequence,
                        outcome: e.outcome.to_proto(),
                        detail: e.detail,
                        state_root: e.state_root.map(|r| r.0.to_vec()).unwrap_or_default(),
                    });
                Ok(Response::new(pb::GetTxResponse {
                    tx: rec.tx.as_ref().map(Into::into),
                    state: pb::TxState::from(rec.state) as i32,
                    receipts: rec.receipts.iter().map(Into::into).collect(),
                    source: rec.source,
                    ordering: rec.ordering.map(|o| pb::Ordering {
                        sequence: o.sequence,
                        leader_round: o.leader_round,
                        leader: o.leader.0.to_vec(),
                        batch: o.batch.0.to_vec(),
                        committed_at_ms: o.committed_at_ms,
                        federated_at_ms: o.federated_at_ms.unwrap_or(0),
                    }),
                    proof: rec.proof.unwrap_or_default(),
                    execution,
                    cross: rec.cross.as_ref().map(Into::into),
                }))
            }
            Ok(None) => Err(unknown()),
            Err(r) => Err(r.to_status()),
        }
    }

    async fn repair_tx(
        &self,
        request: Request<pb::RepairTxRequest>,
    ) -> Result<Response<pb::RepairTxResponse>, Status> {
        let req = request.into_inner();
        let id = TxId::from_slice(&req.tx_id).map_err(|e| {
            crate::status::with_error_info(Status::invalid_argument(format!(
                "MALFORMED: tx_id: {e}"
            )))
        })?;
        match self.api.repair(id, req.rebuild).await {
            Ok(Some(r)) => Ok(Response::new(pb::RepairTxResponse {
                tx: Some((&r.tx).into()),
                receipts: r.receipts.iter().map(Into::into).collect(),
                source: r.source,
                shards_rebuilt: r.shards_rebuilt,
            })),
            Ok(None) => Err(crate::status::typed(
                tonic::Code::NotFound,
                "UNKNOWN_TX",
                format_args!("tx {id} is not held by this city"),
            )),
            Err(r) => Err(r.to_status()),
        }
    }

    type ListStripesStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::ListStripesResponse, Status>>>;

    async fn list_stripes(
        &self,
        _request: Request<pb::ListStripesRequest>,
    ) -> Result<Response<Self::ListStripesStream>, Status> {
        let stripes = self.api.list_stripes().await.map_err(|r| r.to_status())?;
        let items: Vec<_> = stripes.iter().map(|s| Ok(s.into())).collect();
        Ok(Response::new(tokio_stream::iter(items)))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let account = AccountId::from_slice(&request.into_inner().account).map_err(|e| {
            crate::status::with_error_info(Status::invalid_argument(format!(
                "MALFORMED: account: {e}"
            )))
        })?;
        let a = self.api.account(account).await.map_err(|r| r.to_status())?;
        Ok(Response::new(pb::GetAccountResponse {
            account: a.account.as_bytes().to_vec(),
            exists: a.exists,
            balance: a.balance,
            nonce: a.nonce,
            version: a.version,
            executed_checkpoints: a.executed_checkpoints,
        }))
    }

    async fn get_stake(
        &self,
        request: Request<pb::GetStakeRequest>,
    ) -> Result<Response<pb::GetStakeResponse>, Status> {
        let account = AccountId::from_slice(&request.into_inner().account).map_err(|e| {
            crate::status::with_error_info(Status::invalid_argument(format!(
                "MALFORMED: account: {e}"
            )))
        })?;
        let s = self.api.stake(account).await.map_err(|e| e.to_status())?;
        Ok(Response::new((&s).into()))
    }

    async fn get_committee(
        &self,
        _request: Request<pb::GetCommitteeRequest>,
    ) -> Result<Response<pb::GetCommitteeResponse>, Status> {
        let c = self.api.committee().await.map_err(|e| e.to_status())?;
        Ok(Response::new((&c).into()))
    }

    async fn get_checkpoints(
        &self,
        request: Request<pb::GetCheckpointsRequest>,
    ) -> Result<Response<pb::GetCheckpointsResponse>, Status> {
        let r = request.into_inner();
        let max = r.max.clamp(1, crate::MAX_CHECKPOINTS_PER_READ);
        let c = self
            .api
            .checkpoints(r.from_sequence, max)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new((&c).into()))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.api.status().await;
        Ok(Response::new(pb::StatusResponse {
            node_id: s.node_id.as_bytes().to_vec(),
            role: s.role,
            version: s.version,
            uptime_ms: s.uptime_ms,
            stored_txs: s.stored_txs,
            counters: s
                .counters
                .into_iter()
                .map(|(name, value)| pb::Counter { name, value })
                .collect(),
        }))
    }
}

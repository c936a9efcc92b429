//! A typed client for the `CityNode` service.

use crate::convert::{receipts_from, reject_code_from, state_from};
use crate::{
    ClientError, NodeStatus, Rejection, Repaired, Result, StripeInfo, Submitted, TxRecord, TxState,
    pb,
};
use dag_core::{NodeId, SignedTx, TxId};
use futures::{Stream, StreamExt};
use tonic::transport::Channel;

/// Talks to a city node over gRPC with dag-core types.
#[derive(Debug, Clone)]
pub struct CityClient {
    inner: pb::city_node_service_client::CityNodeServiceClient<Channel>,
}

impl CityClient {
    /// Connects to `addr` (`http://host:port` or `host:port`).
    pub async fn connect(addr: &str) -> Result<Self> {
        Ok(Self::from_channel(crate::error::connect(addr).await?))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        CityClient {
            inner: pb::city_node_service_client::CityNodeServiceClient::new(channel)
                .max_decoding_message_size(crate::MAX_RESPONSE_BYTES)
                .max_encoding_message_size(crate::MAX_MESSAGE_BYTES),
        }
    }

    /// Submits one tx and waits for the node's answer.
    pub async fn submit(&self, tx: &SignedTx) -> Result<Submitted> {
        self.submit_raw(pb::SubmitTxRequest {
            tx: Some(tx.into()),
        })
        .await
    }

    /// Submits `tx`, and again after an `UNAVAILABLE` rejection, with `policy`'s backoff:
    /// that answer means Held's promise could not be kept in time and nothing of the tx
    /// stayed, so submitting it again is safe (what a wallet does). Any other error, or the
    /// last `UNAVAILABLE` once the attempts are used up, is returned.
    pub async fn submit_retrying(
        &self,
        tx: &SignedTx,
        policy: &resilience::RetryPolicy,
    ) -> Result<Submitted> {
        resilience::retry(
            policy,
            None,
            |e: &ClientError| {
                matches!(e, ClientError::Rejected(r) if r.code == crate::RejectCode::Unavailable)
            },
            |_| self.submit(tx),
        )
        .await
        .map_err(resilience::RetryError::into_inner)
    }

    /// Submits a request as given (for tools that send deliberately malformed messages).
    pub async fn submit_raw(&self, req: pb::SubmitTxRequest) -> Result<Submitted> {
        let resp = self.inner.clone().submit_tx(req).await?.into_inner();
        submitted_from(resp)
    }

    /// Submits a stream of txs; yields `(index, answer)` in completion order.
    pub async fn submit_stream(
        &self,
        txs: impl Stream<Item = SignedTx> + Send + 'static,
    ) -> Result<impl Stream<Item = (u64, std::result::Result<Submitted, ClientError>)>> {
        let reqs = txs.map(|t| pb::SubmitTxRequest {
            tx: Some((&t).into()),
        });
        self.submit_stream_raw(reqs).await
    }

    /// Like [`CityClient::submit_stream`] over pre-built requests (so a load generator can
    /// convert before timing).
    pub async fn submit_stream_raw(
        &self,
        reqs: impl Stream<Item = pb::SubmitTxRequest> + Send + 'static,
    ) -> Result<impl Stream<Item = (u64, std::result::Result<Submitted, ClientError>)>> {
        let out = self
            .inner
            .clone()
            .submit_tx_stream(reqs.map(|r| pb::SubmitTxStreamRequest {
                tx: r.tx,
                slim_answers: true,
            }))
            .await?
            .into_inner();
        // The receipts of the stripes sent in full so far, for the slim answers after them.
        let mut window = crate::slim::ReceiptWindow::new(crate::slim::STREAM_STRIPE_WINDOW);
        Ok(out.map(move |item| match item {
            Ok(resp) => match resp.result {
                Some(result) => (resp.index, submitted_from_stream(result, &mut window)),
                None => (
                    resp.index,
                    Err(crate::ConvertError::Missing("result").into()),
                ),
            },
            Err(status) => (u64::MAX, Err(status.into())),
        }))
    }

    /// One `GetTx` call; `Ok(None)` when the node answers NotFound.
    async fn get_tx_raw(&self, id: TxId, body_only: bool) -> Result<Option<pb::GetTxResponse>> {
        match self
            .inner
            .clone()
            .get_tx(pb::GetTxRequest {
                tx_id: id.as_bytes().to_vec(),
                body_only,
            })
            .await
        {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    /// Only the signed tx `id` (no receipts, ordering or proof looked up); `Ok(None)` if the
    /// node has no body for it. The body is decoded, not verified: the caller checks it.
    pub async fn get_body(&self, id: TxId) -> Result<Option<SignedTx>> {
        let Some(resp) = self.get_tx_raw(id, true).await? else {
            return Ok(None);
        };
        Ok(resp.tx.map(TryInto::try_into).transpose()?)
    }

    /// Reads a tx back; `Ok(None)` if the node does not know it.
    pub async fn get(&self, id: TxId) -> Result<Option<TxRecord>> {
        let Some(resp) = self.get_tx_raw(id, false).await? else {
            return Ok(None);
        };
        let tx: Option<SignedTx> = resp.tx.map(TryInto::try_into).transpose()?;
        let hash = |field: &'static str, b: &[u8]| {
            <[u8; 32]>::try_from(b)
                .map(dag_core::Hash32)
                .map_err(|_| crate::ConvertError::Missing(field))
        };
        let ordering = match resp.ordering {
            Some(o) => Some(crate::OrderingInfo {
                sequence: o.sequence,
                leader_round: o.leader_round,
                leader: hash("ordering.leader", &o.leader)?,
                batch: hash("ordering.batch", &o.batch)?,
                committed_at_ms: o.committed_at_ms,
                federated_at_ms: (o.federated_at_ms != 0).then_some(o.federated_at_ms),
            }),
            None => None,
        };
        Ok(Some(TxRecord {
            tx,
            state: state_from(resp.state).unwrap_or(TxState::Admitted),
            receipts: receipts_from(resp.receipts)?,
            source: resp.source,
            ordering,
            proof: (!resp.proof.is_empty()).then_some(resp.proof),
            cross: resp.cross.map(TryInto::try_into).transpose()?,
        }))
    }

    /// How the node executed tx `id` (from `GetTx`): `Ok(None)` when the tx is unknown or
    /// not executed there (yet).
    pub async fn execution(&self, id: TxId) -> Result<Option<crate::TxExecution>> {
        let Some(resp) = self.get_tx_raw(id, false).await? else {
            return Ok(None);
        };
        let Some(e) = resp.execution else {
            return Ok(None);
        };
        let outcome = crate::ExecutionOutcome::from_proto(e.outcome)
            .ok_or(crate::ConvertError::Missing("execution.outcome"))?;
        let state_root = match e.state_root.len() {
            0 => None,
            _ => Some(dag_core::Hash32(
                e.state_root.as_slice().try_into().map_err(|_| {
                    crate::ConvertError::Invalid(dag_core::DecodeError::Invalid {
                        field: "execution.state_root",
                        reason: "expected exactly 32 bytes",
                    })
                })?,
            )),
        };
        Ok(Some(crate::TxExecution {
            sequence: e.sequence,
            outcome,
            detail: e.detail,
            state_root,
        }))
    }

    /// Balance and nonce of `account` as the node executed it (`GetAccount`).
    pub async fn account(&self, account: dag_core::AccountId) -> Result<crate::AccountInfo> {
        let a = self
            .inner
            .clone()
            .get_account(pb::GetAccountRequest {
                account: account.as_bytes().to_vec(),
            })
            .await?
            .into_inner();
        let id = <[u8; 32]>::try_from(a.account.as_slice())
            .map(dag_core::AccountId::from_bytes)
            .map_err(|_| crate::ConvertError::Missing("account"))?;
        Ok(crate::AccountInfo {
            account: id,
            exists: a.exists,
            balance: a.balance,
            nonce: a.nonce,
            version: a.version,
            executed_checkpoints: a.executed_checkpoints,
        })
    }

    /// `account`'s stake as the node's dpos state holds it (`GetStake`): bonded,
    /// delegations, unbonding, rewards. An account nobody knows answers `exists = false`;
    /// a node that is not a representative answers `FAILED_PRECONDITION`
    /// (`NOT_A_REPRESENTATIVE`).
    pub async fn stake(&self, account: dag_core::AccountId) -> Result<crate::StakeInfo> {
        let s = self
            .inner
            .clone()
            .get_stake(pb::GetStakeRequest {
                account: account.as_bytes().to_vec(),
            })
            .await?
            .into_inner();
        Ok(crate::StakeInfo::try_from(s)?)
    }

    /// The committee and epoch the node's consensus runs, and the next committee as dpos
    /// decides it now (`GetCommittee`).
    pub async fn committee(&self) -> Result<crate::CommitteeInfo> {
        let c = self
            .inner
            .clone()
            .get_committee(pb::GetCommitteeRequest {})
            .await?
            .into_inner();
        Ok(crate::CommitteeInfo::try_from(c)?)
    }

    /// Up to `max` committed checkpoints from `from` on (`GetCheckpoints`), converted
    /// strictly; the caller checks them ([`crate::OrderedCheckpoint::check`]) and decides
    /// whom to believe.
    pub async fn checkpoints(&self, from: u64, max: u32) -> Result<crate::CheckpointRange> {
        let r = self
            .inner
            .clone()
            .get_checkpoints(pb::GetCheckpointsRequest {
                from_sequence: from,
                max,
            })
            .await?
            .into_inner();
        Ok(crate::CheckpointRange::try_from(r)?)
    }

    /// Restores a held tx from its shards (`RepairTx`); with `rebuild`, the node first
    /// re-creates the shards of its stripe whose holders are gone or silent. `Ok(None)` if
    /// the node does not hold the tx. The tx and receipts are converted, not verified.
    pub async fn repair(&self, id: TxId, rebuild: bool) -> Result<Option<Repaired>> {
        let resp = match self
            .inner
            .clone()
            .repair_tx(pb::RepairTxRequest {
                tx_id: id.as_bytes().to_vec(),
                rebuild,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(s.into()),
        };
        let tx: SignedTx = resp
            .tx
            .ok_or(crate::ConvertError::Missing("tx"))?
            .try_into()?;
        Ok(Some(Repaired {
            tx,
            receipts: receipts_from(resp.receipts)?,
            source: resp.source,
            shards_rebuilt: resp.shards_rebuilt,
        }))
    }

    /// Every stripe the node holds, with its holders (`ListStripes`, collected).
    pub async fn list_stripes(&self) -> Result<Vec<StripeInfo>> {
        let mut stream = self
            .inner
            .clone()
            .list_stripes(pb::ListStripesRequest {})
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(s) = stream.message().await? {
            out.push(StripeInfo::try_from(s)?);
        }
        Ok(out)
    }

    /// The node's status.
    pub async fn status(&self) -> Result<NodeStatus> {
        let s = self
            .inner
            .clone()
            .status(pb::StatusRequest {})
            .await?
            .into_inner();
        Ok(NodeStatus {
            node_id: NodeId::from_slice(&s.node_id).map_err(crate::ConvertError::from)?,
            role: s.role,
            version: s.version,
            uptime_ms: s.uptime_ms,
            stored_txs: s.stored_txs,
            counters: s.counters.into_iter().map(|c| (c.name, c.value)).collect(),
        })
    }
}

/// A stream answer: a slim one gets its receipts from `window`; a full Held one is
/// remembered there.
fn submitted_from_stream(
    mut resp: pb::SubmitTxResponse,
    window: &mut crate::slim::ReceiptWindow,
) -> Result<Submitted> {
    if resp.holders.is_empty() {
        let s = submitted_from(resp)?;
        if s.state == TxState::Held {
            window.received_in_full(&s.receipts);
        }
        return Ok(s);
    }
    let stripe = dag_core::StripeId::from_bytes(
        <[u8; 32]>::try_from(resp.stripe_id.as_slice()).map_err(|_| {
            crate::ConvertError::Invalid(dag_core::DecodeError::Invalid {
                field: "stripe_id",
                reason: "expected exactly 32 bytes",
            })
        })?,
    );
    let holders = std::mem::take(&mut resp.holders)
        .iter()
        .map(|h| NodeId::from_slice(h))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(crate::ConvertError::from)?;
    if !resp.receipts.is_empty() {
        return Err(
            crate::ConvertError::Invalid(dag_core::DecodeError::Invalid {
                field: "slim answer",
                reason: "carries both receipts and holders",
            })
            .into(),
        );
    }
    let mut s = submitted_from(resp)?;
    s.receipts = window.resolve(stripe, &holders)?;
    Ok(s)
}

fn submitted_from(resp: pb::SubmitTxResponse) -> Result<Submitted> {
    let tx_id = TxId::from_slice(&resp.tx_id).ok();
    match state_from(resp.state) {
        Some(state) => Ok(Submitted {
            tx_id: tx_id.ok_or(crate::ConvertError::Missing("tx_id"))?,
            state,
            receipts: std::sync::Arc::new(receipts_from(resp.receipts)?),
        }),
        None => {
            let code = reject_code_from(resp.reject_code).unwrap_or(crate::RejectCode::Unavailable);
            Err(ClientError::Rejected(Rejection::new(
                code,
                resp.message,
                tx_id,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CityApi, NodeStatus, RejectCode, Rejection, TxRecord};
    use dag_core::{CityId, Position, PositionMethod, Tx};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// Answers `code` to the first `failures` submissions, Held after.
    struct Flaky {
        failures: u32,
        code: RejectCode,
        calls: AtomicU32,
    }

    impl CityApi for Flaky {
        async fn submit(&self, tx: SignedTx) -> std::result::Result<Submitted, Rejection> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(Rejection::new(self.code, "holders too slow", Some(tx.id())));
            }
            Ok(Submitted {
                tx_id: tx.id(),
                state: TxState::Held,
                receipts: Default::default(),
            })
        }
        async fn get(&self, _id: TxId) -> std::result::Result<Option<TxRecord>, Rejection> {
            Ok(None)
        }
        async fn status(&self) -> NodeStatus {
            crate::api::test_status()
        }
    }

    /// Serves `api` on a loopback port; the client and the server task.
    async fn serve(api: Arc<Flaky>) -> (CityClient, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(crate::CityNodeService::new(api).into_server())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        (
            CityClient::connect(&addr.to_string()).await.unwrap(),
            server,
        )
    }

    fn tx() -> SignedTx {
        let key = pqc::Keypair::generate();
        let tx = Tx::fresh(
            key.account_id(),
            key.account_id(),
            1,
            0,
            1_767_225_600_000,
            CityId::new("tokyo").unwrap(),
            Position::from_degrees(35.6895, 139.6917).unwrap(),
            PositionMethod::Gps,
        );
        pqc::sign_tx(tx, &key)
    }

    const FAST: resilience::RetryPolicy = resilience::RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(1),
        multiplier: 2.0,
        max_delay: Duration::from_millis(5),
        jitter: resilience::Jitter::Equal,
    };

    /// Knows one tx; counts whole-record reads.
    struct OneTx {
        tx: SignedTx,
        full_reads: AtomicU32,
    }

    impl CityApi for OneTx {
        async fn submit(&self, tx: SignedTx) -> std::result::Result<Submitted, Rejection> {
            Err(Rejection::new(
                RejectCode::Unavailable,
                "read only",
                Some(tx.id()),
            ))
        }
        async fn get(&self, id: TxId) -> std::result::Result<Option<TxRecord>, Rejection> {
            self.full_reads.fetch_add(1, Ordering::SeqCst);
            Ok((id == self.tx.id()).then(|| TxRecord {
                tx: Some(self.tx.clone()),
                state: TxState::Held,
                receipts: Vec::new(),
                source: "store".into(),
                ordering: None,
                proof: None,
                cross: None,
            }))
        }
        async fn status(&self) -> NodeStatus {
            crate::api::test_status()
        }
    }

    #[tokio::test]
    async fn a_body_only_read_carries_the_tx_alone() {
        let known = tx();
        let api = Arc::new(OneTx {
            tx: known.clone(),
            full_reads: AtomicU32::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = api.clone();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(crate::CityNodeService::new(served).into_server())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let client = CityClient::connect(&addr.to_string()).await.unwrap();
        assert_eq!(
            client.get_body(known.id()).await.unwrap(),
            Some(known.clone())
        );
        assert_eq!(client.get_body(tx().id()).await.unwrap(), None);
        // The default `get_body` reads the whole record; a node overrides it.
        assert_eq!(api.full_reads.load(Ordering::SeqCst), 2);
        // On the wire: the tx and where it came from, nothing else.
        let raw = client
            .inner
            .clone()
            .get_tx(pb::GetTxRequest {
                tx_id: known.id().as_bytes().to_vec(),
                body_only: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(raw.source, "body");
        assert!(raw.receipts.is_empty() && raw.ordering.is_none() && raw.execution.is_none());
        assert_eq!(SignedTx::try_from(raw.tx.unwrap()).unwrap(), known);
        // A whole read still says Held.
        let rec = client.get(known.id()).await.unwrap().unwrap();
        assert_eq!(rec.state, TxState::Held);
        server.abort();
    }

    #[tokio::test]
    async fn unavailable_is_submitted_again_until_held() {
        let api = Arc::new(Flaky {
            failures: 3,
            code: RejectCode::Unavailable,
            calls: AtomicU32::new(0),
        });
        let (client, server) = serve(api.clone()).await;
        let tx = tx();
        let s = client.submit_retrying(&tx, &FAST).await.unwrap();
        assert_eq!((s.state, s.tx_id), (TxState::Held, tx.id()));
        assert_eq!(api.calls.load(Ordering::SeqCst), 4);
        server.abort();
    }

    #[tokio::test]
    async fn unavailable_past_the_attempts_and_other_rejections_are_returned() {
        let api = Arc::new(Flaky {
            failures: 10,
            code: RejectCode::Unavailable,
            calls: AtomicU32::new(0),
        });
        let (client, server) = serve(api.clone()).await;
        let e = client.submit_retrying(&tx(), &FAST).await.unwrap_err();
        assert!(matches!(e, ClientError::Rejected(r) if r.code == RejectCode::Unavailable));
        assert_eq!(api.calls.load(Ordering::SeqCst), 4);
        server.abort();

        // Any other rejection is final: one call.
        let api = Arc::new(Flaky {
            failures: 10,
            code: RejectCode::NonceReused,
            calls: AtomicU32::new(0),
        });
        let (client, server) = serve(api.clone()).await;
        let e = client.submit_retrying(&tx(), &FAST).await.unwrap_err();
        assert!(matches!(e, ClientError::Rejected(r) if r.code == RejectCode::NonceReused));
        assert_eq!(api.calls.load(Ordering::SeqCst), 1);
        server.abort();
    }

    #[tokio::test]
    async fn stake_reads_on_a_node_without_dpos_are_failed_precondition_with_error_info() {
        let api = Arc::new(Flaky {
            failures: 0,
            code: RejectCode::Unavailable,
            calls: AtomicU32::new(0),
        });
        let (client, server) = serve(api).await;
        let who = pqc::Keypair::generate().account_id();
        for e in [
            client.stake(who).await.unwrap_err(),
            client.committee().await.unwrap_err(),
        ] {
            assert!(
                matches!(&e, ClientError::Status { code: tonic::Code::FailedPrecondition, message }
                    if message.starts_with("NOT_A_REPRESENTATIVE: ")),
                "{e:?}"
            );
        }
        // The raw status carries the ErrorInfo; a malformed account id is MALFORMED.
        let mut raw = client.inner.clone();
        let s = raw
            .get_committee(pb::GetCommitteeRequest {})
            .await
            .unwrap_err();
        assert_eq!(
            crate::error_info(&s).unwrap().reason,
            "NOT_A_REPRESENTATIVE"
        );
        let s = raw
            .get_stake(pb::GetStakeRequest {
                account: vec![1; 31],
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(crate::error_info(&s).unwrap().reason, "MALFORMED");
        server.abort();
    }
}

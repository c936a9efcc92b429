//! A light node's side of the repair protocol: it answers a REPAIR_REQUEST tx (validly
//! signed, of kind REPAIR_REQUEST, fresh within its 15 s lifetime) with a REPAIR_ACK tx
//! signed by its own key, the shard named in the request (checked on read: a corrupt shard
//! is never sent) and a fresh signed receipt for it.

use super::{LightNode, blocking};
use dag_core::{AccountId, SignedTx, Tx, TxKind};
use rpc::{RepairAckPayload, RepairAnswer, RepairRequestPayload, RepairResponder};
use tonic::Status;

/// Most clock skew accepted between a request's timestamp and the holder's clock, on top
/// of the REPAIR_REQUEST lifetime.
const SKEW_MS: u64 = 5_000;

impl RepairResponder for LightNode {
    async fn answer(&self, request: SignedTx) -> Result<RepairAnswer, Status> {
        if request.tx.kind != TxKind::RepairRequest {
            return Err(Status::invalid_argument(format!(
                "MALFORMED: expected a repair_request tx, got {}",
                request.tx.kind
            )));
        }
        let payload = RepairRequestPayload::decode(&request.tx.payload)
            .map_err(|e| Status::invalid_argument(format!("MALFORMED: {e}")))?;
        let now = self.clock.now_ms();
        let ttl_ms = TxKind::RepairRequest.ttl_secs().unwrap_or(15) * 1000;
        if request.tx.timestamp_ms + ttl_ms + SKEW_MS < now
            || request.tx.timestamp_ms > now + SKEW_MS
        {
            return Err(Status::invalid_argument(format!(
                "STALE: repair request stamped {} ms, holder clock {now} ms",
                request.tx.timestamp_ms
            )));
        }
        let (store, key) = (self.store.clone(), self.key.clone());
        let req = request.clone();
        let out = blocking(move || {
            let verified = match req.verify(&pqc::MlDsa87) {
                Ok(v) => v,
                Err(e) => return Ok(Err(Status::unauthenticated(format!("BAD_SIGNATURE: {e}")))),
            };
            let Some(shard) = store.get(&payload.stripe, payload.index)? else {
                return Ok(Err(Status::not_found(format!(
                    "NOT_HELD: shard {} of stripe {}",
                    payload.index, payload.stripe
                ))));
            };
            let receipt = storage::issue_receipt(&shard.header, &*key, now);
            let ack_payload = RepairAckPayload {
                request: verified.id(),
                shard_hash: shard.hash(),
            };
            let city = verified.tx();
            let ack = Tx {
                kind: TxKind::RepairAck,
                sender: AccountId::from_bytes(*key.node_id().as_bytes()),
                receiver: city.sender,
                amount: 0,
                nonce: now,
                timestamp_ms: now,
                city_id: city.city_id.clone(),
                position: city.position,
                method: city.method,
                read_set: Vec::new(),
                write_set: Vec::new(),
                payload: ack_payload.encode(),
            };
            Ok(Ok(RepairAnswer {
                ack: pqc::sign_tx(ack, &*key),
                shard: shard.to_bytes(),
                receipt,
            }))
        })
        .await
        .map_err(|e| rpc::status_of(&e))?;
        metrics::counter!("citychain_light_repair_acks_total").increment(u64::from(out.is_ok()));
        out
    }
}

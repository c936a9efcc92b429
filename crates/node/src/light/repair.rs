//! A light node's side of the repair protocol: it answers a REPAIR_REQUEST tx (validly
//! signed by a representative of its city when it knows the committee, of kind
//! REPAIR_REQUEST, fresh within its 15 s lifetime) with a REPAIR_ACK tx
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
        let reps = self.representatives.clone();
        let req = request.clone();
        let out = blocking(move || {
            let verified = match req.verify(&pqc::MlDsa87) {
                Ok(v) => v,
                Err(e) => return Ok(Err(Status::unauthenticated(format!("BAD_SIGNATURE: {e}")))),
            };
            // The signature proves the sender's key; the committee says whether that key
            // speaks for this city.
            let signer = dag_core::NodeId::from_bytes(*verified.tx().sender.as_bytes());
            match reps.get() {
                Some(reps) if !reps.contains(&signer) => {
                    metrics::counter!("citychain_light_repair_refused_total", "reason" => "not_a_representative")
                        .increment(1);
                    return Ok(Err(Status::permission_denied(format!(
                        "NOT_A_REPRESENTATIVE: {} does not represent this node's city",
                        signer.short()
                    ))));
                }
                Some(_) => {}
                None => metrics::counter!("citychain_light_repair_unchecked_total").increment(1),
            }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::runtime::SystemClock;
    use dag_core::{CityId, Position, PositionMethod};
    use std::sync::Arc;
    use storage::{ErasureConfig, ShardStore, StoreConfig};

    fn request(signer: &pqc::Keypair, shard: &storage::Shard) -> SignedTx {
        let now = crate::runtime::now_ms();
        pqc::sign_tx(
            Tx {
                kind: TxKind::RepairRequest,
                sender: signer.account_id(),
                receiver: AccountId::from_bytes([1; 32]),
                amount: 0,
                nonce: now,
                timestamp_ms: now,
                city_id: CityId::new("JP-13").unwrap(),
                position: Position::default(),
                method: PositionMethod::Gps,
                read_set: Vec::new(),
                write_set: Vec::new(),
                payload: RepairRequestPayload {
                    stripe: shard.stripe_id(),
                    index: shard.index(),
                    tx: dag_core::TxId::from_bytes([5; 32]),
                }
                .encode(),
            },
            signer,
        )
    }

    #[tokio::test]
    async fn only_a_representative_of_the_city_gets_an_answer_once_the_committee_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ShardStore::open_or_quarantine(
            dir.path().join("shards.redb"),
            StoreConfig::default(),
            0,
        )
        .unwrap();
        let shards = ErasureConfig::default().encode(&[7u8; 4096]).unwrap();
        store.put(&shards[2]).unwrap();
        let light = LightNode::new(store, pqc::Keypair::generate(), Arc::new(SystemClock));
        let (rep, stranger) = (pqc::Keypair::generate(), pqc::Keypair::generate());

        // Committee unknown: any validly signed request is answered (and counted unchecked).
        assert!(light.answer(request(&stranger, &shards[2])).await.is_ok());

        assert!(light.set_representatives([rep.node_id()].into_iter().collect()));
        let refused = light
            .answer(request(&stranger, &shards[2]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains("NOT_A_REPRESENTATIVE"),
            "{refused:?}"
        );
        let ok = light.answer(request(&rep, &shards[2])).await.unwrap();
        assert_eq!(ok.shard, shards[2].to_bytes());
        assert_eq!(ok.ack.tx.receiver, rep.account_id());
        // Set once: a later call cannot widen the committee.
        assert!(!light.set_representatives([stranger.node_id()].into_iter().collect()));
    }
}

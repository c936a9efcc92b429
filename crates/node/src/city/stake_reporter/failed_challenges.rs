//! The monitor's failed-challenge incidents: a registered light node that answered this
//! city's storage challenge with a wrong proof, or said it does not hold a shard it took,
//! becomes a `ReportIncident` system tx.
//!
//! The rule: for each audit epoch the representative's own audit recorded
//! (`contributions.redb`), each holder with at least one `WrongProof` or `NotHeld` result
//! is reported once, with the digest `BLAKE3(tag ‖ audit epoch ‖ holder)`
//! ([`challenge_incident_digest`]). Audit epochs are wall-clock windows of the same length
//! on every representative, so representatives whose audits caught the same holder in the
//! same epoch submit the same digest and dpos counts it once (`IncidentReplayed` for the
//! rest). A holder that was merely unreachable or not live (an honest node offline, or a
//! slow link on a loaded machine) is not reported: it only loses the rewards of the epoch
//! (the contribution reporter holds it back). Unlike missed rounds this verdict is one
//! representative's own observation, not derived from the committed sequence: dpos lets
//! any representative report an incident, and each one counts once.

use super::SenderQueue;
use crate::city::challenges::{ChallengeResult, ContributionLog, ContributionRecord};
use crate::city::stake::StakeStore;
use crate::runtime::run_blocking;
use dag_core::{AccountId, Hash32, NodeId};
use dpos::SystemPayload;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Domain tag of the failed-challenge incident digest.
const TAG: &[u8] = b"citychain/incident/failed-challenge/v1";

/// How often the reporter looks for newly recorded audit epochs.
const POLL: Duration = Duration::from_secs(2);

/// `BLAKE3(tag ‖ audit epoch ‖ holder)`.
pub fn challenge_incident_digest(audit_epoch: u64, holder: &NodeId) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(TAG);
    h.update(&audit_epoch.to_le_bytes());
    h.update(holder.as_bytes());
    Hash32(*h.finalize().as_bytes())
}

/// The incidents in `records` (any audit epochs): one `ReportIncident` per (epoch, holder)
/// with a `WrongProof` or `NotHeld` result, in (epoch, holder) order.
pub fn challenge_incidents(records: &[ContributionRecord]) -> Vec<SystemPayload> {
    let failed: BTreeSet<(u64, NodeId)> = records
        .iter()
        .filter(|r| {
            matches!(
                r.result,
                ChallengeResult::WrongProof | ChallengeResult::NotHeld
            )
        })
        .map(|r| (r.epoch, r.holder))
        .collect();
    failed
        .into_iter()
        .map(|(epoch, holder)| SystemPayload::ReportIncident {
            node: AccountId::from_bytes(*holder.as_bytes()),
            incident: challenge_incident_digest(epoch, &holder),
        })
        .collect()
}

/// Runs the reporter: once the audit's log is in `log` (the audit starts after the
/// representative), each audit epoch recorded from then on (the newest one present at
/// that time included) is turned into [`challenge_incidents`], keeping only holders the
/// dpos state knows while `me` is one of its representatives (others would be refused),
/// and queued on `queue`.
pub fn spawn_challenge_incident_reporter(
    log: Arc<OnceLock<ContributionLog>>,
    stake: Arc<StakeStore>,
    me: NodeId,
    queue: SenderQueue,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let me = AccountId::from_bytes(*me.as_bytes());
        let mut next: Option<u64> = None;
        loop {
            tokio::time::sleep(POLL).await;
            let Some(log) = log.get().cloned() else {
                continue;
            };
            let from = next;
            let read = run_blocking("audit log", move || {
                let Some(last) = log.last_epoch()? else {
                    return Ok::<_, crate::Error>(None);
                };
                let from = from.unwrap_or(last);
                if from > last {
                    return Ok(Some((last, Vec::new())));
                }
                Ok(Some((last, log.epochs(from, last)?)))
            })
            .await;
            let (last, records) = match read {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reading the audit log");
                    continue;
                }
                Err(_) => return,
            };
            next = Some(last + 1);
            let payloads: Vec<SystemPayload> = stake
                .read(|s| {
                    if !s.representatives().contains(&me) {
                        return Vec::new();
                    }
                    challenge_incidents(&records)
                        .into_iter()
                        .filter(|p| {
                            matches!(p, SystemPayload::ReportIncident { node, .. } if s.node(node).is_some())
                        })
                        .collect()
                })
                .unwrap_or_default();
            for p in payloads {
                if let SystemPayload::ReportIncident { node, .. } = &p {
                    tracing::warn!(holder = %node, "a holder failed a storage challenge: reporting an incident");
                }
                if !queue.send(p).await {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::StripeId;

    fn rec(epoch: u64, holder: u8, index: u16, result: ChallengeResult) -> ContributionRecord {
        ContributionRecord {
            epoch,
            holder: NodeId::from_bytes([holder; 32]),
            stripe: StripeId::from_bytes([9; 32]),
            index,
            passed: result == ChallengeResult::Passed,
            result,
        }
    }

    #[test]
    fn wrong_proofs_and_missing_shards_are_incidents_once_per_epoch_silence_is_not() {
        use ChallengeResult::*;
        let records = [
            rec(7, 1, 0, Passed),
            rec(7, 2, 1, WrongProof),
            rec(7, 2, 2, NotHeld), // same holder, same epoch: one incident
            rec(7, 3, 3, Unreachable),
            rec(7, 4, 4, NotLive),
            rec(8, 2, 1, NotHeld), // next epoch: another one
        ];
        let got = challenge_incidents(&records);
        let h2 = NodeId::from_bytes([2; 32]);
        assert_eq!(
            got,
            [
                SystemPayload::ReportIncident {
                    node: AccountId::from_bytes([2; 32]),
                    incident: challenge_incident_digest(7, &h2),
                },
                SystemPayload::ReportIncident {
                    node: AccountId::from_bytes([2; 32]),
                    incident: challenge_incident_digest(8, &h2),
                },
            ]
        );
        assert_ne!(
            challenge_incident_digest(7, &h2),
            challenge_incident_digest(7, &NodeId::from_bytes([3; 32]))
        );
        // Not the missed-round digest of the same numbers.
        assert_ne!(
            challenge_incident_digest(7, &h2),
            super::super::incident_digest(7, 0, &h2)
        );
        assert!(challenge_incidents(&[rec(1, 5, 0, Passed)]).is_empty());
    }
}

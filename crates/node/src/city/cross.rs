//! Cross-city transfers in a running representative: the directory of cities and the check
//! of their certificates (from the genesis file), and the **relayer** that carries
//! certified statements from this city's federated checkpoints to the other city.
//!
//! - A transfer-out or an answer is *certified* when the checkpoint that emitted it is:
//!   the checkpoint header's 2f + 1 signatures (the certificate the continent logged, read
//!   back from this node's federation proof) over a state root whose `ledger` part the
//!   statement's Merkle proof leads to ([`ledger::StatementProof`]).
//! - The relayer follows the federated checkpoints. Each is relayed by one representative
//!   (sequence mod committee size); statements for another city go there as a relay
//!   SYSTEM_TX signed by this node and submitted to one of that city's representatives
//!   (from genesis; the next one on failure). The receiving committee orders it like any
//!   tx and executes it: credits once, records its answer in its own checkpoint, which its
//!   relayer sends back; the sender's city settles once.
//! - Retries: every representative relays again the transfer-outs still pending after
//!   [`RelayerConfig::retry`]. Replays are harmless: a transfer-in answers its recorded
//!   verdict again (and that answer is relayed back), a settled transfer-out stays settled.

use super::execution::Execution;
use super::order::OrderStore;
use dag_core::{AccountId, CityId, NodeId, Tx, TxId, TxKind};
use genesis::CityCommittee;
use ledger::{Answer, CrossRelay, CrossSetup, Ledger, OutState, RelayItem};
use pqc::Keypair;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A transfer-out's deadline: its checkpoint's agreed time plus this. Past it the receiver
/// city records it expired and the sender city refunds on that answer.
pub const CROSS_TIMEOUT_MS: u64 = 120_000;

pub use rpc::{CheckpointCert, GenesisCertificates};

/// The directory of the genesis `cities` and the check of their certificates, for a
/// representative of `here` (`None`: an outside verifier, to which every city is known).
pub fn genesis_certificates(
    here: Option<&str>,
    cities: &BTreeMap<String, CityCommittee>,
) -> GenesisCertificates {
    GenesisCertificates::new(
        here,
        cities
            .iter()
            .map(|(id, c)| (id.clone(), c.city, c.committee.clone())),
    )
}

/// Enables cross-city transfers on `ledger` for `here` with the genesis `cities`.
pub(crate) fn enable(ledger: &Ledger, here: &str, cities: &BTreeMap<String, CityCommittee>) {
    match CityId::new(here.to_string()) {
        Ok(city) => ledger.enable_cross(CrossSetup {
            city,
            certs: Arc::new(genesis_certificates(Some(here), cities)),
            timeout_ms: CROSS_TIMEOUT_MS,
        }),
        Err(_) => tracing::error!(here, "cross-city transfers off: the city id is not valid"),
    }
}

/// The longest wait between two relays of one pending transfer-out by one node.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// The relayer's timing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayerConfig {
    /// How often it looks for newly federated checkpoints.
    pub(crate) poll: Duration,
    /// A transfer-out still pending this long (times this node's position + 1 in its
    /// committee) is relayed again; then after twice as long each time, up to
    /// [`MAX_RETRY`].
    pub(crate) retry: Duration,
    /// Time allowed for one submission.
    pub(crate) submit_timeout: Duration,
}

impl Default for RelayerConfig {
    fn default() -> Self {
        RelayerConfig {
            poll: Duration::from_millis(100),
            // A cross-city round trip (the receiver holds, orders, executes and federates
            // the relay, then the answer comes back the same way) takes 15–30 s on a
            // loaded 2-core localnet: the first copy is resent after that, not before.
            retry: Duration::from_secs(15),
            submit_timeout: Duration::from_secs(10),
        }
    }
}

/// What a relayer needs.
pub(crate) struct Relayer {
    pub(crate) here: CityId,
    pub(crate) key: Keypair,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) order: Arc<OrderStore>,
    pub(crate) exec: Arc<Execution>,
    /// This node's position in its committee and the committee's size.
    pub(crate) index: usize,
    pub(crate) members: usize,
    /// Every other city's representatives' addresses.
    pub(crate) cities: BTreeMap<String, Vec<String>>,
    pub(crate) cfg: RelayerConfig,
}

/// When a pending transfer-out is due to be relayed again, the wait after that, and the
/// checkpoint that escrowed it.
#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    wait: Duration,
    escrow_seq: u64,
}

/// The pending transfer-outs due to be relayed again, by escrow checkpoint; updates `due`
/// (per transfer: when it is due and the wait after). The clock of a transfer-out starts
/// when it is first seen federated (when it was relayed), not at its escrow: federation
/// itself takes seconds under load, and a resend before the first relay could be answered
/// only adds copies for the receiver city to hold and order.
fn due_again(
    ledger: &Ledger,
    upto: u64,
    due: &mut HashMap<TxId, Due>,
    first_wait: Duration,
    now: Instant,
) -> BTreeMap<u64, Vec<TxId>> {
    let mut by_seq: BTreeMap<u64, Vec<TxId>> = BTreeMap::new();
    let Ok(Some(book)) = ledger.cross_book() else {
        return by_seq;
    };
    for t in book.pending() {
        let Some(d) = due.get_mut(&t.id) else {
            // First seen: its escrow checkpoint is read once and kept with its clock.
            if let Ok(Some(seq)) = ledger.escrowed_at(&t.id)
                && seq < upto
            {
                due.insert(
                    t.id,
                    Due {
                        at: now + first_wait,
                        wait: first_wait,
                        escrow_seq: seq,
                    },
                );
            }
            continue;
        };
        if now < d.at {
            continue;
        }
        by_seq.entry(d.escrow_seq).or_default().push(t.id);
        d.wait = (d.wait * 2).min(MAX_RETRY);
        d.at = now + d.wait;
    }
    due.retain(|id, _| book.out_state(id) == Some(&OutState::Pending));
    by_seq
}

impl Relayer {
    /// The relayer of a representative `me` of `here`.
    pub(crate) fn new(
        here: &CityCommittee,
        me: NodeId,
        key: Keypair,
        exec: Arc<Execution>,
        order: Arc<OrderStore>,
        cities: &BTreeMap<String, CityCommittee>,
    ) -> Option<Self> {
        let ledger = exec.ledger()?.clone();
        let index = here.addresses.keys().position(|id| *id == me)?;
        Some(Relayer {
            here: CityId::new(here.city_id.clone()).ok()?,
            key,
            ledger,
            order,
            exec,
            index,
            members: here.addresses.len().max(1),
            cities: cities
                .iter()
                .filter(|(id, _)| **id != here.city_id)
                .map(|(id, c)| (id.clone(), c.addresses.values().cloned().collect()))
                .collect(),
            cfg: RelayerConfig::default(),
        })
    }

    /// Runs until aborted.
    pub(crate) fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let mut next = self.order.federated_upto().unwrap_or(0);
        // Per pending transfer-out: when this node relays it (again) and the wait after.
        let mut due: HashMap<TxId, Due> = HashMap::new();
        // Representatives stagger their retries (the first after `retry`, the next after
        // twice that, …) and each doubles its wait per transfer up to `MAX_RETRY`, so a slow
        // receiver city is not flooded with copies.
        let first_wait = self.cfg.retry * (self.index as u32 + 1);
        let mut nonce = now_ms().saturating_mul(1_000);
        let mut rotate = self.index;
        let mut last_retry = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.poll).await;
            let upto = match self.order.federated_upto() {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "relayer: federation record unreadable");
                    continue;
                }
            };
            while next < upto {
                if (next as usize) % self.members == self.index {
                    self.relay_checkpoint(next, None, &mut nonce, &mut rotate)
                        .await;
                }
                next += 1;
            }
            if last_retry.elapsed() < self.cfg.poll * 10 {
                continue;
            }
            last_retry = Instant::now();
            // Transfer-outs still pending: relay again from their escrow checkpoint. The
            // scan reads the book and an escrow record per pending transfer: redb reads, on
            // the blocking pool, not a runtime worker.
            let ledger = self.ledger.clone();
            let scan = crate::runtime::run_blocking("cross-city relayer", move || {
                let by_seq = due_again(&ledger, upto, &mut due, first_wait, Instant::now());
                (by_seq, due)
            });
            let by_seq = match scan.await {
                Ok((by_seq, d)) => {
                    due = d;
                    by_seq
                }
                Err(_) => return,
            };
            for (seq, ids) in by_seq {
                metrics::counter!("citychain_cross_relayed_again_total")
                    .increment(ids.len() as u64);
                let only: std::collections::HashSet<TxId> = ids.into_iter().collect();
                self.relay_checkpoint(seq, Some(&only), &mut nonce, &mut rotate)
                    .await;
            }
        }
    }

    /// Relays checkpoint `seq`'s statements (only the transfer-outs in `only`, when given)
    /// to their cities. Returns the transfer-out ids submitted.
    async fn relay_checkpoint(
        &self,
        seq: u64,
        only: Option<&std::collections::HashSet<TxId>>,
        nonce: &mut u64,
        rotate: &mut usize,
    ) -> Vec<TxId> {
        let parts = match self.ledger.cross_statements(seq) {
            Ok(Some(p)) if !p.entries.is_empty() => p,
            Ok(_) => return Vec::new(),
            Err(e) => {
                tracing::warn!(seq, error = %e, "relayer: statements unreadable");
                return Vec::new();
            }
        };
        let cert = match self.certificate(seq) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(seq, why, "relayer: no certificate yet");
                return Vec::new();
            }
        };
        let Ok(Some(book)) = self.ledger.cross_book() else {
            return Vec::new();
        };
        let mut by_city: BTreeMap<String, Vec<(RelayItem, ledger::StatementProof)>> =
            BTreeMap::new();
        for (i, e) in parts.entries.iter().enumerate() {
            if only.is_some_and(|o| e.kind != 1 || !o.contains(&e.id)) {
                continue;
            }
            let item = match e.kind {
                1 => match book.out(&e.id) {
                    Some((t, _)) => RelayItem::Out(t.clone()),
                    None => continue,
                },
                _ => match book.in_record(&e.id) {
                    Some((transfer, verdict)) => RelayItem::Answer {
                        answer: Answer {
                            transfer,
                            id: e.id,
                            from_city: self.here.clone(),
                            verdict,
                        },
                        to_city: e.to_city.clone(),
                    },
                    None => continue,
                },
            };
            if item.statement() != e.statement {
                tracing::error!(seq, tx = %e.id, "relayer: a statement does not match the book");
                continue;
            }
            let Some(proof) = parts.proof(i) else {
                continue;
            };
            by_city
                .entry(e.to_city.as_str().to_string())
                .or_default()
                .push((item, proof));
        }
        let mut sent = Vec::new();
        for (city, items) in by_city {
            let Ok(to) = CityId::new(city.clone()) else {
                continue;
            };
            for chunk in items.chunks(CrossRelay::MAX_ITEMS) {
                let relay = CrossRelay {
                    from_city: self.here.clone(),
                    checkpoint: cert.clone(),
                    items: chunk.to_vec(),
                };
                *nonce += 1;
                let tx = relay_tx(&self.key, *nonce, &to, &relay);
                if self.submit(&city, &tx, rotate).await {
                    metrics::counter!("citychain_cross_relays_total").increment(1);
                    sent.extend(chunk.iter().filter_map(|(i, _)| match i {
                        RelayItem::Out(t) => Some(t.id),
                        RelayItem::Answer { .. } => None,
                    }));
                }
            }
        }
        sent
    }

    /// The certificate of checkpoint `seq` (federated).
    fn certificate(&self, seq: u64) -> Result<Vec<u8>, String> {
        certificate(&self.order, &self.exec, seq)?.ok_or_else(|| "not federated".into())
    }

    /// Submits to one of `city`'s representatives, the next one on failure.
    async fn submit(&self, city: &str, tx: &dag_core::SignedTx, rotate: &mut usize) -> bool {
        let Some(addrs) = self.cities.get(city).filter(|a| !a.is_empty()) else {
            return false;
        };
        for _ in 0..addrs.len() {
            let addr = &addrs[*rotate % addrs.len()];
            let url = if addr.starts_with("http") {
                addr.clone()
            } else {
                format!("http://{addr}")
            };
            let r = tokio::time::timeout(self.cfg.submit_timeout, async {
                let c = rpc::CityClient::connect(&url).await?;
                c.submit(tx).await
            })
            .await;
            match r {
                Ok(Ok(_)) => return true,
                Ok(Err(e)) => tracing::debug!(city, addr, error = %e, "relay refused or failed"),
                Err(_) => tracing::debug!(city, addr, "relay timed out"),
            }
            *rotate += 1;
        }
        false
    }
}

/// The certificate of this city's checkpoint `seq` ([`CheckpointCert`] bytes): the header
/// certificate from this node's federation proof and the roots it executed. `None` while
/// not federated (or not executed) here.
fn certificate(order: &OrderStore, exec: &Execution, seq: u64) -> Result<Option<Vec<u8>>, String> {
    let Some((proof, _)) = order.federated(seq).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let proof = rpc::FederationProof::decode(&proof).map_err(|e| e.to_string())?;
    let Some(rec) = exec.checkpoint(seq).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    Ok(Some(
        CheckpointCert {
            certified: proof.certified,
            roots: rec.roots,
        }
        .encode(),
    ))
}

/// This city's own certified statement about transfer `id` from its checkpoint `seq`
/// (kind 1: the transfer-out it escrowed, 2: its answer to a transfer-in), as
/// [`ledger::cross_proof`] bytes. `None` while that checkpoint is not federated here.
fn own_proof(
    order: &OrderStore,
    exec: &Execution,
    ledger: &Ledger,
    book: &ledger::CrossBook,
    seq: u64,
    kind: u8,
    id: &TxId,
) -> Result<Option<Vec<u8>>, String> {
    let Some(parts) = ledger.cross_statements(seq).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let Some(i) = parts
        .entries
        .iter()
        .position(|e| e.kind == kind && e.id == *id)
    else {
        return Err(format!("checkpoint {seq} emitted no statement for {id}"));
    };
    let item = match kind {
        1 => RelayItem::Out(
            book.out(id)
                .ok_or("the transfer-out is not in the book")?
                .0
                .clone(),
        ),
        _ => {
            let (transfer, verdict) = book
                .in_record(id)
                .ok_or("the transfer-in is not in the book")?;
            let out = ledger
                .cross_proof(ledger::ProofKind::TransferOut, id)
                .map_err(|e| e.to_string())?
                .ok_or("the verified transfer-out is not stored")?;
            let from = CrossRelay::decode(&out)
                .map_err(|e| e.to_string())?
                .from_city;
            RelayItem::Answer {
                answer: Answer {
                    transfer,
                    id: *id,
                    from_city: book.city().clone(),
                    verdict,
                },
                to_city: from,
            }
        }
    };
    if item.statement() != parts.entries[i].statement {
        return Err(format!(
            "checkpoint {seq}: the statement for {id} does not match the book"
        ));
    }
    let proof = parts.proof(i).ok_or("no inclusion path")?;
    let Some(cert) = certificate(order, exec, seq)? else {
        return Ok(None);
    };
    Ok(Some(ledger::cross_proof(
        book.city().clone(),
        cert,
        item,
        proof,
    )))
}

/// `GetTx`'s cross-city part (the rule is in `TX_STATE_COMPLETED`, proto/city.proto):
/// - sender city (this ledger escrowed `id`): `cross` with its state, the transfer-out proof
///   from its own federated escrow checkpoint and the answer proof it verified when it
///   settled; Completed once settled Completed with both proofs;
/// - receiver city (this ledger verified a transfer-out `id`): the record is built from the
///   cross record alone (no tx body here); Completed once Credited and the answering
///   checkpoint is federated (then both proofs are present);
/// - same-city FRESH_TX: Completed once Federated and executed Applied.
pub(crate) fn with_cross(
    order: Option<&OrderStore>,
    exec: Option<&Execution>,
    id: TxId,
    rec: Option<rpc::TxRecord>,
) -> Result<Option<rpc::TxRecord>, String> {
    let (Some(order), Some(exec)) = (order, exec) else {
        return Ok(rec);
    };
    let Some(ledger) = exec.ledger() else {
        return Ok(rec);
    };
    let err = |e: ledger::Error| e.to_string();
    if let Some(escrow) = ledger.escrowed_at(&id).map_err(err)? {
        let Some(mut rec) = rec else {
            return Ok(None);
        };
        let book = ledger.cross_book().map_err(err)?.ok_or("no cross book")?;
        let Some((t, state)) = book.out(&id) else {
            return Ok(Some(rec));
        };
        let state = match state {
            OutState::Pending => rpc::CrossState::Pending,
            OutState::Completed => rpc::CrossState::Completed,
            OutState::Refunded => rpc::CrossState::Refunded,
        };
        let cross = rpc::CrossTx {
            state,
            from_city: t.from_city.as_str().to_string(),
            to_city: t.to_city.as_str().to_string(),
            statement: t.statement(),
            transfer_out_proof: own_proof(order, exec, ledger, &book, escrow, 1, &id)?,
            answer_proof: ledger
                .cross_proof(ledger::ProofKind::Answer, &id)
                .map_err(err)?,
        };
        if state == rpc::CrossState::Completed
            && cross.transfer_out_proof.is_some()
            && cross.answer_proof.is_some()
        {
            rec.state = rpc::TxState::Completed;
        }
        rec.cross = Some(cross);
        return Ok(Some(rec));
    }
    if let Some(out) = ledger
        .cross_proof(ledger::ProofKind::TransferOut, &id)
        .map_err(err)?
    {
        let book = ledger.cross_book().map_err(err)?.ok_or("no cross book")?;
        let Some((statement, verdict)) = book.in_record(&id) else {
            return Ok(rec);
        };
        let relay = CrossRelay::decode(&out).map_err(|e| e.to_string())?;
        let answer_proof = match ledger.answered_at(&id).map_err(err)? {
            Some(seq) => own_proof(order, exec, ledger, &book, seq, 2, &id)?,
            None => None,
        };
        let state = match (verdict, answer_proof.is_some()) {
            (ledger::Verdict::Credited, true) => rpc::TxState::Completed,
            (_, true) => rpc::TxState::Federated,
            (_, false) => rpc::TxState::Ordered,
        };
        let mut rec = rec.unwrap_or_else(|| rpc::TxRecord {
            tx: None,
            state,
            receipts: Vec::new(),
            source: "cross".into(),
            ordering: None,
            proof: None,
            cross: None,
        });
        rec.state = state;
        rec.cross = Some(rpc::CrossTx {
            state: match verdict {
                ledger::Verdict::Credited => rpc::CrossState::Credited,
                ledger::Verdict::Expired => rpc::CrossState::Expired,
            },
            from_city: relay.from_city.as_str().to_string(),
            to_city: book.city().as_str().to_string(),
            statement,
            transfer_out_proof: Some(out),
            answer_proof,
        });
        return Ok(Some(rec));
    }
    if let Some(mut r) = rec {
        if r.state == rpc::TxState::Federated
            && matches!(
                ledger.outcome(&id).map_err(err)?,
                Some((_, ledger::Outcome::Applied))
            )
        {
            r.state = rpc::TxState::Completed;
        }
        return Ok(Some(r));
    }
    Ok(None)
}

/// A relay SYSTEM_TX signed by `key`.
pub(crate) fn relay_tx(
    key: &Keypair,
    nonce: u64,
    to: &CityId,
    relay: &CrossRelay,
) -> dag_core::SignedTx {
    let me = AccountId::from_public_key(dag_core::Signer::public_key(key));
    let tx = Tx {
        kind: TxKind::SystemTx,
        sender: me,
        receiver: me,
        amount: 0,
        nonce,
        timestamp_ms: now_ms(),
        city_id: to.clone(),
        position: dag_core::Position::default(),
        method: dag_core::PositionMethod::Gps,
        read_set: Vec::new(),
        write_set: Vec::new(),
        payload: relay.to_payload(),
    };
    pqc::sign_tx(tx, key)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `CrossCity` reads of a representative, from its ledger.
pub(crate) struct CrossView {
    pub(crate) here: String,
    pub(crate) exec: Arc<Execution>,
}

impl rpc::CrossCityApi for CrossView {
    fn cross_transfer(&self, id: TxId) -> Result<Option<rpc::CrossTransferView>, tonic::Status> {
        let internal = |e: ledger::Error| tonic::Status::unavailable(e.to_string());
        let Some(ledger) = self.exec.ledger() else {
            return Ok(None);
        };
        let Some(book) = ledger.cross_book().map_err(internal)? else {
            return Ok(None);
        };
        if let Some((t, state)) = book.out(&id) {
            return Ok(Some(rpc::CrossTransferView {
                state: match state {
                    OutState::Pending => rpc::CrossState::Pending,
                    OutState::Completed => rpc::CrossState::Completed,
                    OutState::Refunded => rpc::CrossState::Refunded,
                },
                city: self.here.clone(),
                statement: t.statement(),
                body: Some(rpc::CrossTransferBody {
                    to_city: t.to_city.as_str().to_string(),
                    sender: t.sender,
                    receiver: t.receiver,
                    amount: t.amount,
                    deadline_ms: t.deadline_ms,
                }),
                escrow_checkpoint: ledger.escrowed_at(&id).map_err(internal)?,
                settle_checkpoint: ledger.settled_at(&id).map_err(internal)?,
                answer_checkpoint: None,
            }));
        }
        if let Some((statement, verdict)) = book.in_record(&id) {
            return Ok(Some(rpc::CrossTransferView {
                state: match verdict {
                    ledger::Verdict::Credited => rpc::CrossState::Credited,
                    ledger::Verdict::Expired => rpc::CrossState::Expired,
                },
                city: self.here.clone(),
                statement,
                body: None,
                escrow_checkpoint: None,
                settle_checkpoint: None,
                answer_checkpoint: ledger.answered_at(&id).map_err(internal)?,
            }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::Hash32;
    use dag_core::consensus::Committee;
    use dag_core::execution::combined_root;
    use ledger::CheckpointCertificates;
    use rpc::{CertifiedCheckpoint, CheckpointHeader, sign_share};

    fn committee_of(keys: &[Keypair], city: &str, base: u16) -> CityCommittee {
        let committee = Committee::equal(
            keys.iter()
                .map(|k| dag_core::Signer::public_key(k).to_vec())
                .collect(),
        )
        .unwrap();
        CityCommittee {
            city_id: city.into(),
            city: genesis::city_hash(city),
            committee,
            addresses: keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.node_id(), format!("127.0.0.1:{}", base + i as u16)))
                .collect(),
        }
    }

    fn cert(city: &str, roots: &[(&str, Hash32)], signers: &[Keypair]) -> Vec<u8> {
        let header = CheckpointHeader {
            city: genesis::city_hash(city),
            sequence: 7,
            leader_round: 3,
            leader: Hash32([1; 32]),
            prev_hash: Hash32([2; 32]),
            running_hash: Hash32([3; 32]),
            batches: 1,
            state_hash: combined_root(roots),
        };
        CheckpointCert {
            certified: CertifiedCheckpoint::new(
                header,
                signers.iter().map(|k| sign_share(&header, k)).collect(),
            ),
            roots: roots.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
        }
        .encode()
    }

    fn fresh(from: &Keypair, to: AccountId, amount: u64, nonce: u64) -> dag_core::VerifiedTx {
        pqc::sign_tx(
            Tx::fresh(
                from.account_id(),
                to,
                amount,
                nonce,
                1_767_225_600_000,
                CityId::new("JP-27").unwrap(),
                dag_core::Position::from_degrees(34.6937, 135.5023).unwrap(),
                dag_core::PositionMethod::Gps,
            ),
            from,
        )
        .verify(&pqc::MlDsa87)
        .unwrap()
    }

    fn record(state: rpc::TxState) -> rpc::TxRecord {
        rpc::TxRecord {
            tx: None,
            state,
            receipts: Vec::new(),
            source: "order".into(),
            ordering: None,
            proof: None,
            cross: None,
        }
    }

    /// `GetTx`'s cross-city part over a real ledger of Osaka: a same-city transfer is
    /// Completed once Federated and Applied (not a failed one, not before federation); a
    /// transfer-in certified by Tokyo's genesis committee is answered without its body,
    /// with the verified transfer-out proof, Credited, and not Completed while Osaka's
    /// answering checkpoint is not federated.
    #[test]
    fn get_tx_completes_applied_federated_transfers_and_answers_a_transfer_in_without_its_body() {
        let dir = tempfile::tempdir().unwrap();
        let alice = Keypair::generate();
        let bob = AccountId::from_bytes([0xb0; 32]);
        let alloc: BTreeMap<AccountId, u64> = [(alice.account_id(), 1_000)].into();
        let (appliers, ledger) =
            super::super::execution::state_machines(dir.path(), &alloc).unwrap();
        let exec = Execution::open(
            &dir.path().join("execution.redb"),
            appliers,
            Some(ledger.clone()),
        )
        .unwrap();
        let order = OrderStore::open(&dir.path().join("order.redb")).unwrap();
        let tokyo: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let osaka: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let cities: BTreeMap<String, CityCommittee> = [
            ("JP-13".to_string(), committee_of(&tokyo, "JP-13", 7000)),
            ("JP-27".to_string(), committee_of(&osaka, "JP-27", 7100)),
        ]
        .into();
        enable(&ledger, "JP-27", &cities);

        // A transfer-out of Tokyo, the only statement of a checkpoint Tokyo certified.
        let t = ledger::CrossTransfer {
            id: TxId::from_bytes([7; 32]),
            from_city: CityId::new("JP-13").unwrap(),
            to_city: CityId::new("JP-27").unwrap(),
            sender: AccountId::from_bytes([8; 32]),
            receiver: bob,
            amount: 25,
            deadline_ms: 1_000_000,
        };
        let proof = ledger::StatementProof {
            chain: Hash32([1; 32]),
            book_root: Hash32([2; 32]),
            size: 1,
            index: 0,
            path: Vec::new(),
        };
        let root = proof.ledger_root(&t.statement()).unwrap();
        let relay = CrossRelay {
            from_city: t.from_city.clone(),
            checkpoint: cert(
                "JP-13",
                &[("dpos", Hash32([3; 32])), ("ledger", root)],
                &tokyo[..3],
            ),
            items: vec![(RelayItem::Out(t.clone()), proof)],
        };
        let relay = relay_tx(&Keypair::generate(), 1, &t.to_city, &relay)
            .verify(&pqc::MlDsa87)
            .unwrap();
        let ok = fresh(&alice, bob, 100, 0);
        let over = fresh(&alice, bob, 5_000, 1);
        dag_core::execution::CommitApplier::apply(
            &*ledger,
            0,
            2_000,
            &[ok.clone(), over.clone(), relay],
        )
        .unwrap();

        let get = |id: TxId, rec: Option<rpc::TxRecord>| {
            with_cross(Some(&order), Some(&exec), id, rec).unwrap()
        };
        use rpc::TxState::{Completed, Federated, Ordered};
        assert_eq!(
            get(ok.id(), Some(record(Federated))).unwrap().state,
            Completed
        );
        assert_eq!(get(ok.id(), Some(record(Ordered))).unwrap().state, Ordered);
        assert_eq!(
            get(over.id(), Some(record(Federated))).unwrap().state,
            Federated
        );
        assert_eq!(get(TxId::from_bytes([9; 32]), None), None);

        let r = get(t.id, None).unwrap();
        assert_eq!((r.tx, r.source.as_str(), r.state), (None, "cross", Ordered));
        let c = r.cross.unwrap();
        assert_eq!(c.state, rpc::CrossState::Credited);
        assert_eq!(
            (c.from_city.as_str(), c.to_city.as_str()),
            ("JP-13", "JP-27")
        );
        assert_eq!(c.statement, t.statement());
        assert_eq!(
            c.answer_proof, None,
            "Osaka's answering checkpoint is not federated"
        );
        let outside = genesis_certificates(None, &cities);
        match ledger::verify_cross_proof(c.transfer_out_proof.as_ref().unwrap(), &outside).unwrap()
        {
            RelayItem::Out(o) => assert_eq!(o, t),
            other => panic!("{other:?}"),
        }
        assert_eq!(ledger.account(&bob).unwrap().unwrap().balance, 125);
    }

    #[test]
    fn only_a_quorum_certified_checkpoint_of_that_city_vouches_for_its_ledger_root() {
        let tokyo: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let osaka: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let cities: BTreeMap<String, CityCommittee> = [
            ("JP-13".to_string(), committee_of(&tokyo, "JP-13", 7000)),
            ("JP-27".to_string(), committee_of(&osaka, "JP-27", 7100)),
        ]
        .into();
        let dir = genesis_certificates(Some("JP-27"), &cities);
        let (tk, os) = (CityId::new("JP-13").unwrap(), CityId::new("JP-27").unwrap());
        assert!(dir.knows(&tk));
        assert!(!dir.knows(&os), "a city is not another city to itself");
        assert!(!dir.knows(&CityId::new("XX-1").unwrap()));
        let ledger = Hash32([9; 32]);
        let roots = [("dpos", Hash32([8; 32])), ("ledger", ledger)];
        let good = cert("JP-13", &roots, &tokyo[..3]);
        assert!(dir.verify_ledger_root(&tk, &ledger, &good).is_ok());
        // Cached: a second statement under the same certificate; another root is refused.
        assert!(dir.verify_ledger_root(&tk, &ledger, &good).is_ok());
        assert!(
            dir.verify_ledger_root(&tk, &Hash32([7; 32]), &good)
                .is_err()
        );
        // Claimed for another city than the header's, or by the wrong city's committee.
        assert!(dir.verify_ledger_root(&os, &ledger, &good).is_err());
        let by_osaka = cert("JP-13", &roots, &osaka[..3]);
        assert!(dir.verify_ledger_root(&tk, &ledger, &by_osaka).is_err());
        // Two of four signatures are not a quorum.
        let thin = cert("JP-13", &roots, &tokyo[..2]);
        let e = dir.verify_ledger_root(&tk, &ledger, &thin).unwrap_err();
        assert!(
            e.reason.contains("quorum") || e.reason.contains("stake"),
            "{e}"
        );
        // Roots that do not give the certified state root.
        let mut c = CheckpointCert::decode(&good).unwrap();
        c.roots[0].1 = Hash32([0; 32]);
        assert!(dir.verify_ledger_root(&tk, &ledger, &c.encode()).is_err());
        // Junk.
        assert!(dir.verify_ledger_root(&tk, &ledger, b"junk").is_err());
    }
}

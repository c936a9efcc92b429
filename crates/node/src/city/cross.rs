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
use dag_core::consensus::Committee;
use dag_core::execution::combined_root;
use dag_core::{AccountId, CityId, DecodeError, Hash32, NodeId, Reader, Tx, TxId, TxKind, Writer};
use genesis::CityCommittee;
use ledger::{
    Answer, CertError, CheckpointCertificates, CrossRelay, CrossSetup, Ledger, OutState, RelayItem,
};
use parking_lot::Mutex;
use pqc::Keypair;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A transfer-out's deadline: its checkpoint's agreed time plus this. Past it the receiver
/// city records it expired and the sender city refunds on that answer.
pub const CROSS_TIMEOUT_MS: u64 = 120_000;

/// A checkpoint's certificate as relayed: the certified header (2f + 1 signatures) and
/// every state machine's root, so the receiver recomputes the header's state root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointCert {
    /// The certified checkpoint header.
    pub certified: rpc::CertifiedCheckpoint,
    /// Each state machine's root, by name.
    pub roots: Vec<(String, Hash32)>,
}

impl CheckpointCert {
    /// u32 certificate ‖ u16 count ‖ (u8 name ‖ root 32) each.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes_u32(&self.certified.encode())
            .u16(self.roots.len().min(usize::from(u16::MAX)) as u16);
        for (n, r) in &self.roots {
            w.bytes_u8(&n.as_bytes()[..n.len().min(255)]).raw(&r.0);
        }
        w.finish()
    }

    /// Strict decoding of [`CheckpointCert::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let certified = rpc::CertifiedCheckpoint::decode(r.bytes_u32("certificate", 1 << 20)?)?;
        let n = r.u16("roots")?;
        let mut roots = Vec::new();
        for _ in 0..n {
            let name = std::str::from_utf8(r.bytes_u8("name", 255)?)
                .map_err(|_| DecodeError::Invalid {
                    field: "name",
                    reason: "not UTF-8",
                })?
                .to_string();
            roots.push((name, Hash32(r.bytes32("root")?)));
        }
        r.finish()?;
        Ok(CheckpointCert { certified, roots })
    }
}

/// The directory of cities (genesis) and the check of their checkpoint certificates.
pub struct GenesisCertificates {
    here: String,
    cities: BTreeMap<String, (Hash32, Committee)>,
    /// BLAKE3 of a verified certificate → (city, ledger root): each certificate's
    /// signatures are checked once, not once per statement.
    verified: Mutex<HashMap<Hash32, (String, Hash32)>>,
}

impl std::fmt::Debug for GenesisCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenesisCertificates")
            .field("here", &self.here)
            .field("cities", &self.cities.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Verified certificates remembered.
const VERIFIED_CACHE: usize = 1024;

impl GenesisCertificates {
    /// The directory for a representative of `here`.
    pub fn new(here: &str, cities: &BTreeMap<String, CityCommittee>) -> Self {
        GenesisCertificates {
            here: here.to_string(),
            cities: cities
                .iter()
                .map(|(id, c)| (id.clone(), (c.city, c.committee.clone())))
                .collect(),
            verified: Mutex::new(HashMap::new()),
        }
    }
}

impl CheckpointCertificates for GenesisCertificates {
    fn knows(&self, city: &CityId) -> bool {
        city.as_str() != self.here && self.cities.contains_key(city.as_str())
    }

    fn verify_ledger_root(
        &self,
        city: &CityId,
        ledger_root: &Hash32,
        checkpoint: &[u8],
    ) -> Result<(), CertError> {
        let fail = |reason: String| CertError {
            city: city.clone(),
            statement: *ledger_root,
            reason,
        };
        let key = Hash32(*blake3::hash(checkpoint).as_bytes());
        if let Some((c, root)) = self.verified.lock().get(&key).cloned() {
            return if c == city.as_str() && root == *ledger_root {
                Ok(())
            } else {
                Err(fail(
                    "the certified checkpoint has another ledger root".into(),
                ))
            };
        }
        let Some((hash, committee)) = self.cities.get(city.as_str()) else {
            return Err(fail("unknown city".into()));
        };
        let cert = CheckpointCert::decode(checkpoint).map_err(|e| fail(e.to_string()))?;
        if cert.certified.header.city != *hash {
            return Err(fail("the checkpoint is another city's".into()));
        }
        let named: Vec<(&str, Hash32)> = cert.roots.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        if combined_root(&named) != cert.certified.header.state_hash {
            return Err(fail(
                "the roots do not give the certified state root".into(),
            ));
        }
        let Some((_, ledger)) = cert.roots.iter().find(|(n, _)| n == "ledger") else {
            return Err(fail("no ledger root in the checkpoint".into()));
        };
        cert.certified
            .verify(committee)
            .map_err(|e| fail(e.to_string()))?;
        {
            let mut v = self.verified.lock();
            if v.len() >= VERIFIED_CACHE {
                v.clear();
            }
            v.insert(key, (city.as_str().to_string(), *ledger));
        }
        if ledger != ledger_root {
            return Err(fail(
                "the certified checkpoint has another ledger root".into(),
            ));
        }
        Ok(())
    }
}

/// Enables cross-city transfers on `ledger` for `here` with the genesis `cities`.
pub(crate) fn enable(ledger: &Ledger, here: &str, cities: &BTreeMap<String, CityCommittee>) {
    match CityId::new(here.to_string()) {
        Ok(city) => ledger.enable_cross(CrossSetup {
            city,
            certs: Arc::new(GenesisCertificates::new(here, cities)),
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
            retry: Duration::from_secs(5),
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
        let mut due: HashMap<TxId, (Instant, Duration)> = HashMap::new();
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
            // Transfer-outs still pending: relay again from their escrow checkpoint.
            let Ok(Some(book)) = self.ledger.cross_book() else {
                continue;
            };
            let mut by_seq: BTreeMap<u64, Vec<TxId>> = BTreeMap::new();
            let now = Instant::now();
            for t in book.pending() {
                let (at, wait) = *due.entry(t.id).or_insert((now + first_wait, first_wait));
                if now < at {
                    continue;
                }
                if let Ok(Some(seq)) = self.ledger.escrowed_at(&t.id)
                    && seq < upto
                {
                    by_seq.entry(seq).or_default().push(t.id);
                    let wait = (wait * 2).min(MAX_RETRY);
                    due.insert(t.id, (now + wait, wait));
                }
            }
            due.retain(|id, _| book.out_state(id) == Some(&OutState::Pending));
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
        let (proof, _) = self
            .order
            .federated(seq)
            .map_err(|e| e.to_string())?
            .ok_or("not federated")?;
        let proof = rpc::FederationProof::decode(&proof).map_err(|e| e.to_string())?;
        let rec = self
            .exec
            .checkpoint(seq)
            .map_err(|e| e.to_string())?
            .ok_or("not executed")?;
        Ok(CheckpointCert {
            certified: proof.certified,
            roots: rec.roots,
        }
        .encode())
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

    #[test]
    fn only_a_quorum_certified_checkpoint_of_that_city_vouches_for_its_ledger_root() {
        let tokyo: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let osaka: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let cities: BTreeMap<String, CityCommittee> = [
            ("JP-13".to_string(), committee_of(&tokyo, "JP-13", 7000)),
            ("JP-27".to_string(), committee_of(&osaka, "JP-27", 7100)),
        ]
        .into();
        let dir = GenesisCertificates::new("JP-27", &cities);
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

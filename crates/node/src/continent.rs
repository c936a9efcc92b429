//! The continent role: serves `Federation` over a persistent RFC 6962 Merkle log of cities'
//! quorum-certified checkpoint headers, and pushes its signed tree head to the global.
//!
//! - **Quorum.** A push carries a [`CertifiedCheckpoint`]. Every signature must be a
//!   member's — of the committee in force at the header's sequence (see *Committees*) — and
//!   valid (else `NotMember` / `BadSignature`, nothing kept). One signature is
//!   a *share*: the continent pools shares of an identical header — only members, only for
//!   sequences in `[next, next + pool_window)`, one share per member and sequence (a newer
//!   share for another header replaces the older) — and appends once the pooled stake is a
//!   quorum; until then the push answers the retryable `AwaitingQuorum { have, need }`.
//!   More than one signature is a full certificate and must be a quorum by itself
//!   (`NoQuorum`). The leaf is the header with exactly the signatures that made the quorum.
//! - **Continuity.** Per city, only `sequence == next` with `prev_hash ==` the last logged
//!   running hash is appended (`Gap { expected }` / `WrongPrev`); another header at a logged
//!   sequence is a `Fork`. Re-pushing a logged checkpoint answers its stored proof.
//! - **Committees.** Each city has a committee chain `[(first sequence, committee)]`: its
//!   genesis committee from sequence 0, then one link per accepted [`CertifiedHandover`]
//!   (`PushHandover`). A handover to epoch `e` after checkpoint `last` is checked against
//!   the committee in force at `last` (the OLD one): signers members and signatures valid
//!   (`NotMember` / `BadSignature`), one signature pooled per old member until a quorum of
//!   the old committee's stake (retryable `HandoverAwaitingQuorum`; nothing kept before
//!   `last` is logged: retryable `HandoverTooEarly`), more than one a quorum by itself
//!   (`NoQuorum`). It is accepted only when `last` is logged with exactly the handover's
//!   running hash and `last + 1` is past the chain's last first sequence (else
//!   `HandoverConflict`, also for another handover of an accepted epoch); from `last + 1` on
//!   the new committee applies. Re-pushing an accepted handover answers its certificate.
//!   Pooled checkpoint shares at or past `last + 1` were checked against the old committee
//!   and are dropped on acceptance (their pushers retry); before a handover is accepted,
//!   shares of members the continent does not know yet are refused (`NotMember`).
//! - **Durability.** Leaf, certificate and the signed receipt are written in one fsynced
//!   redb transaction (`<data_dir>/continent.redb`) before anyone is answered; accepted
//!   handover certificates are appended and fsynced to `continent.redb.handovers`
//!   ([`handovers_path`]) before they are answered. On restart the log is rebuilt and every
//!   city's chain re-checked, then every handover re-checked against the committee before it
//!   and the logged chain ([`crate::Error::LogCorrupt`]: a forged handover file does not
//!   open; a torn last record, never acknowledged, is cut off).
//! - **Upward.** With a [`GlobalTarget`], a task pushes the newest signed tree head to the
//!   global every `head_push_interval` when it changed, with a consistency proof from the
//!   size the global last logged; outages of any length only delay it. The newest head
//!   the global logged (receipt checked, inclusion path fetched) is served as a
//!   [`GlobalAnchor`] for any receipt it covers (`GetGlobalAnchor`).

use crate::fed_log::{FedServer, PersistentLog, blocking, fed_store};
use crate::{Error, Result};
use dag_core::consensus::{Committee, Stake};
use dag_core::merkle::{ConsistencyProof, InclusionProof};
use dag_core::{Hash32, NodeId, Signer};
use pqc::{Keypair, MlDsa87};
use resilience::RetryPolicy;
use rpc::{
    CertifiedCheckpoint, CertifiedHandover, CheckpointHeader, CityHead, CommitteeHandover,
    FederationClient, FederationError, FederationHandler, FederationProof, GlobalAnchor,
    InclusionReceipt, LogKind, MAX_FEDERATION_MESSAGE_BYTES, ProofAnswer, SignedTreeHead,
    TreeHeadPush, quorum_stake,
};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

type FedResult<T> = std::result::Result<T, FederationError>;

/// A city the continent accepts checkpoints from: its id and its committee.
#[derive(Debug, Clone)]
pub struct CityCommittee {
    /// The city id headers carry.
    pub city: Hash32,
    /// The representatives (public keys, stake) whose 2f + 1 certify its checkpoints.
    pub committee: Committee,
}

impl CityCommittee {
    /// Every city's committee named in `genesis`.
    pub fn from_genesis(genesis: &genesis::Genesis) -> Vec<CityCommittee> {
        genesis
            .cities
            .values()
            .map(|c| CityCommittee {
                city: c.city,
                committee: c.committee.clone(),
            })
            .collect()
    }
}

impl GlobalTarget {
    /// The global log named in `genesis`, if any.
    pub fn from_genesis(genesis: &genesis::Genesis) -> Option<GlobalTarget> {
        genesis.global.as_ref().map(|g| GlobalTarget {
            addr: g.address.clone(),
            public_key: g.public_key.clone(),
        })
    }
}

/// Where the continent pushes its tree heads.
#[derive(Debug, Clone)]
pub struct GlobalTarget {
    /// The global's gRPC address.
    pub addr: String,
    /// The global's public key (to check its receipts).
    pub public_key: Vec<u8>,
}

/// Configuration of the continent role.
#[derive(Debug, Clone)]
pub struct ContinentConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Directory of `continent.redb` (and of its accepted committee handovers,
    /// `continent.redb.handovers`).
    pub data_dir: PathBuf,
    /// The cities accepted.
    pub cities: Vec<CityCommittee>,
    /// Sequences ahead of the next expected one whose shares are pooled (default 16).
    pub pool_window: u64,
    /// The global log, if any.
    pub global: Option<GlobalTarget>,
    /// Period of the tree-head push to the global (default 500 ms).
    pub head_push_interval: Duration,
    /// Mutual TLS for the server and the push to the global, which must prove the NodeId
    /// of `global.public_key`. Default: TLS with the identity in `data_dir`; plaintext
    /// only when set to `Insecure` explicitly.
    pub links: rpc::tls::LinkSecurity,
}

impl ContinentConfig {
    /// Defaults: a pool window of 16 sequences, no global, 500 ms head pushes.
    pub fn new(
        listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
        cities: Vec<CityCommittee>,
    ) -> Self {
        ContinentConfig {
            listen,
            data_dir: data_dir.into(),
            cities,
            pool_window: 16,
            global: None,
            head_push_interval: Duration::from_millis(500),
            links: rpc::tls::LinkSecurity::default(),
        }
    }
}

/// Shares pooled for one (city, sequence).
#[derive(Debug, Default)]
struct SeqPool {
    /// header → member → signature.
    by_header: HashMap<CheckpointHeader, BTreeMap<NodeId, Vec<u8>>>,
}

impl SeqPool {
    /// Adds a member's share (replacing its share for another header); returns the pooled
    /// stake for `header`.
    fn add(
        &mut self,
        committee: &Committee,
        header: CheckpointHeader,
        id: NodeId,
        sig: Vec<u8>,
    ) -> Stake {
        for (h, sigs) in self.by_header.iter_mut() {
            if *h != header {
                sigs.remove(&id);
            }
        }
        self.by_header.retain(|_, s| !s.is_empty());
        let sigs = self.by_header.entry(header).or_default();
        sigs.insert(id, sig);
        sigs.keys().map(|id| committee.stake_of(id)).sum()
    }

    /// A header whose pooled shares are a quorum.
    fn quorum(&self, committee: &Committee) -> Option<CertifiedCheckpoint> {
        self.by_header.iter().find_map(|(h, sigs)| {
            let stake: Stake = sigs.keys().map(|id| committee.stake_of(id)).sum();
            committee.is_quorum(stake).then(|| {
                CertifiedCheckpoint::new(*h, sigs.iter().map(|(i, s)| (*i, s.clone())).collect())
            })
        })
    }
}

/// One committee of a city's chain, in force from `first_seq` until the next link's.
#[derive(Debug, Clone)]
struct CommitteeLink {
    /// The consensus epoch (0 = genesis).
    epoch: u64,
    /// The first checkpoint it certifies.
    first_seq: u64,
    /// The committee.
    committee: Arc<Committee>,
    /// The accepted certificate that started it (None for the genesis committee).
    handover: Option<CertifiedHandover>,
}

/// Old-committee members' handover shares of one city: one share per member (a newer share
/// replaces its older one), so the pool never holds more than the committee's size.
#[derive(Debug, Default)]
struct HandoverPool {
    shares: BTreeMap<NodeId, (CommitteeHandover, Vec<u8>)>,
}

impl HandoverPool {
    /// Adds `id`'s share; returns the pooled stake of `handover`.
    fn add(
        &mut self,
        committee: &Committee,
        handover: &CommitteeHandover,
        id: NodeId,
        sig: Vec<u8>,
    ) -> Stake {
        self.shares.insert(id, (handover.clone(), sig));
        self.stake_of(committee, handover)
    }

    fn stake_of(&self, committee: &Committee, handover: &CommitteeHandover) -> Stake {
        self.shares
            .iter()
            .filter(|(_, (h, _))| h == handover)
            .map(|(id, _)| committee.stake_of(id))
            .sum()
    }

    /// The certificate of `handover` if its pooled shares are a quorum of `committee`.
    fn quorum(
        &self,
        committee: &Committee,
        handover: &CommitteeHandover,
    ) -> Option<CertifiedHandover> {
        committee
            .is_quorum(self.stake_of(committee, handover))
            .then(|| {
                CertifiedHandover::new(
                    handover.clone(),
                    self.shares
                        .iter()
                        .filter(|(_, (h, _))| h == handover)
                        .map(|(id, (_, sig))| (*id, sig.clone()))
                        .collect(),
                )
            })
    }
}

#[derive(Debug)]
struct CityState {
    /// The committee chain: genesis at sequence 0, then one link per accepted handover
    /// (first sequences strictly increasing).
    chain: Vec<CommitteeLink>,
    /// Pooled handover shares (cleared when a handover is accepted).
    handover_pool: HandoverPool,
    /// Next sequence to append.
    next: u64,
    /// Running hash of the last logged checkpoint (zero when none).
    last_hash: Hash32,
    /// Logged sequence → (leaf index, header).
    logged: HashMap<u64, (u64, CheckpointHeader)>,
    /// Pooled shares by sequence (within the window).
    pools: BTreeMap<u64, SeqPool>,
}

impl CityState {
    fn new(genesis: &Committee) -> Self {
        CityState {
            chain: vec![CommitteeLink {
                epoch: 0,
                first_seq: 0,
                committee: Arc::new(genesis.clone()),
                handover: None,
            }],
            handover_pool: HandoverPool::default(),
            next: 0,
            last_hash: Hash32([0; 32]),
            logged: HashMap::new(),
            pools: BTreeMap::new(),
        }
    }

    /// The committee in force at checkpoint `seq`.
    fn committee_at(&self, seq: u64) -> &Arc<Committee> {
        let i = self.chain.partition_point(|l| l.first_seq <= seq);
        // The genesis link starts at 0, so `i >= 1`.
        &self.chain[i.saturating_sub(1)].committee
    }

    fn last_link(&self) -> &CommitteeLink {
        // Never empty: the genesis link is first.
        &self.chain[self.chain.len() - 1]
    }

    /// Where `handover` stands against the chain: `Ok(Some(cert))` when it is accepted
    /// already, `Ok(None)` when it may extend the chain, else the conflict.
    fn position_of(&self, handover: &CommitteeHandover) -> FedResult<Option<CertifiedHandover>> {
        let conflict = FederationError::HandoverConflict {
            city: handover.city,
            epoch: handover.epoch,
        };
        if let Some(link) = self.chain.iter().find(|l| l.epoch == handover.epoch) {
            return match &link.handover {
                Some(c) if c.handover == *handover => Ok(Some(c.clone())),
                _ => Err(conflict),
            };
        }
        let last = self.last_link();
        if handover.epoch < last.epoch || handover.last_sequence < last.first_seq {
            return Err(conflict);
        }
        Ok(None)
    }

    /// Whether `handover`'s last checkpoint is logged with its running hash
    /// (`HandoverTooEarly` when not logged yet, `HandoverConflict` when logged otherwise).
    fn check_logged(&self, handover: &CommitteeHandover) -> FedResult<()> {
        match self.logged.get(&handover.last_sequence) {
            None => Err(FederationError::HandoverTooEarly {
                city: handover.city,
                epoch: handover.epoch,
                last_sequence: handover.last_sequence,
            }),
            Some((_, h)) if h.running_hash != handover.last_running_hash => {
                Err(FederationError::HandoverConflict {
                    city: handover.city,
                    epoch: handover.epoch,
                })
            }
            Some(_) => Ok(()),
        }
    }

    /// Makes `cert`'s committee the one in force from its first sequence: pooled shares
    /// checked against the committee it replaces are dropped (their pushers retry).
    fn accept(&mut self, cert: CertifiedHandover, committee: Committee) {
        let first = cert.handover.last_sequence + 1;
        self.chain.push(CommitteeLink {
            epoch: cert.handover.epoch,
            first_seq: first,
            committee: Arc::new(committee),
            handover: Some(cert),
        });
        self.handover_pool = HandoverPool::default();
        self.pools.retain(|seq, _| *seq < first);
    }
}

/// The append-only file of accepted handover certificates (`<log path>.handovers`):
/// records of `u32 length ‖ CertifiedHandover::encode`, each fsynced before the handover
/// is answered as accepted.
#[derive(Debug)]
struct HandoverFile {
    path: PathBuf,
    file: std::fs::File,
}

/// Where the handover certificates of the log at `log_path` are kept.
pub fn handovers_path(log_path: &Path) -> PathBuf {
    let mut p = log_path.as_os_str().to_owned();
    p.push(".handovers");
    PathBuf::from(p)
}

impl HandoverFile {
    /// Opens (or creates) the file and returns its certificates in order. A torn last
    /// record (a crash mid-append: never acknowledged) is cut off; a complete record that
    /// does not decode is [`Error::LogCorrupt`].
    fn open(path: &Path) -> Result<(Self, Vec<CertifiedHandover>)> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let existed = path.exists();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        if !existed {
            file.sync_all().map_err(io)?;
            if let Some(dir) = path.parent()
                && let Ok(d) = std::fs::File::open(dir)
            {
                d.sync_all().map_err(io)?;
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut certs = Vec::new();
        let mut off = 0usize;
        while off < bytes.len() {
            let rest = &bytes[off..];
            let Some(len) = rest
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            else {
                break;
            };
            if len > MAX_FEDERATION_MESSAGE_BYTES {
                return Err(Error::LogCorrupt {
                    path: path.to_path_buf(),
                    index: certs.len() as u64,
                    reason: format!("handover record of {len} bytes"),
                });
            }
            let Some(record) = rest.get(4..4 + len) else {
                break;
            };
            let c = CertifiedHandover::decode(record).map_err(|e| Error::LogCorrupt {
                path: path.to_path_buf(),
                index: certs.len() as u64,
                reason: format!("handover certificate: {e}"),
            })?;
            certs.push(c);
            off += 4 + len;
        }
        if off < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                kept = off,
                dropped = bytes.len() - off,
                "cutting off a torn handover record (never acknowledged)"
            );
            file.set_len(off as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok((
            HandoverFile {
                path: path.to_path_buf(),
                file,
            },
            certs,
        ))
    }

    /// Appends `c` and fsyncs. On failure the file is cut back to where it was, so a
    /// partly written record cannot end up in the middle of the file.
    fn append(&mut self, c: &CertifiedHandover) -> Result<()> {
        let bytes = c.encode();
        let mut record = Vec::with_capacity(4 + bytes.len());
        record.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
        record.extend_from_slice(&bytes);
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let before = self.file.metadata().map_err(io)?.len();
        let written = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_all());
        if let Err(e) = written {
            let _ = self
                .file
                .set_len(before)
                .and_then(|()| self.file.sync_all());
            return Err(io(e));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct State {
    log: PersistentLog,
    handovers: HandoverFile,
    cities: HashMap<Hash32, CityState>,
    /// The last signed head (re-signed when the size changes).
    head: Option<SignedTreeHead>,
}

/// The continent's persistent log. Implements [`FederationHandler`] (through
/// [`ContinentNode`]); the blocking methods are what the handler runs off the reactor.
pub struct ContinentLog {
    state: parking_lot::Mutex<State>,
    /// The newest head the global logged, with its receipt and inclusion path there.
    anchor: parking_lot::Mutex<Option<(SignedTreeHead, InclusionReceipt, InclusionProof)>>,
    key: Keypair,
    pool_window: u64,
}

impl std::fmt::Debug for ContinentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinentLog")
            .field("log", &self.state.lock().log)
            .finish_non_exhaustive()
    }
}

fn decode_leaf(
    path: &Path,
    index: u64,
    value: &[u8],
    receipt: &[u8],
) -> Result<(CertifiedCheckpoint, InclusionReceipt)> {
    let bad = |reason: String| Error::LogCorrupt {
        path: path.to_path_buf(),
        index,
        reason,
    };
    let c = CertifiedCheckpoint::decode(value).map_err(|e| bad(format!("certificate: {e}")))?;
    let r = InclusionReceipt::decode(receipt).map_err(|e| bad(format!("receipt: {e}")))?;
    if r.log_index != index || r.leaf != c.leaf_hash() {
        return Err(bad("receipt is not for this leaf".into()));
    }
    Ok((c, r))
}

impl ContinentLog {
    /// Opens (or creates) the log at `path`, signing with `key`, accepting `cities` (their
    /// genesis committees); every configured city's logged chain is re-checked (sequence
    /// and prev-hash continuity), and so is its committee chain from
    /// [`handovers_path`]`(path)` (each handover certified by the committee before it,
    /// continuing a logged checkpoint): a forged file is [`Error::LogCorrupt`].
    pub fn open(
        path: &Path,
        key: Keypair,
        cities: &[CityCommittee],
        pool_window: u64,
    ) -> Result<Self> {
        let (log, stored) = PersistentLog::open(path)?;
        let mut states: HashMap<Hash32, CityState> = cities
            .iter()
            .map(|c| (c.city, CityState::new(&c.committee)))
            .collect();
        for (index, leaf) in stored.iter().enumerate() {
            let index = index as u64;
            let (c, _) = decode_leaf(path, index, &leaf.value, &leaf.receipt)?;
            let h = c.header;
            let Some(cs) = states.get_mut(&h.city) else {
                tracing::warn!(city = %h.city.short(), index, "logged city is no longer configured");
                continue;
            };
            if h.sequence != cs.next || h.prev_hash != cs.last_hash {
                return Err(Error::LogCorrupt {
                    path: path.to_path_buf(),
                    index,
                    reason: format!(
                        "city {} sequence {} does not continue its chain (expected {})",
                        h.city.short(),
                        h.sequence,
                        cs.next
                    ),
                });
            }
            cs.next += 1;
            cs.last_hash = h.running_hash;
            cs.logged.insert(h.sequence, (index, h));
        }
        // The committee chains: every handover re-checked as when it was accepted —
        // certified by a quorum of the committee before it, continuing the logged chain.
        let hpath = handovers_path(path);
        let (handovers, certs) = HandoverFile::open(&hpath)?;
        for (index, cert) in certs.into_iter().enumerate() {
            let ho = &cert.handover;
            let Some(cs) = states.get_mut(&ho.city) else {
                tracing::warn!(city = %ho.city.short(), index, "handover of a city no longer configured");
                continue;
            };
            let bad = |reason: String| Error::LogCorrupt {
                path: hpath.clone(),
                index: index as u64,
                reason: format!(
                    "handover of city {} to epoch {}: {reason}",
                    ho.city.short(),
                    ho.epoch
                ),
            };
            match cs.position_of(ho) {
                Ok(None) => {}
                Ok(Some(_)) => return Err(bad("accepted twice".into())),
                Err(e) => return Err(bad(e.to_string())),
            }
            cs.check_logged(ho).map_err(|e| bad(e.to_string()))?;
            let old = cs.committee_at(ho.last_sequence).clone();
            cert.verify(&old).map_err(|e| bad(e.to_string()))?;
            let committee = ho
                .committee()
                .ok_or_else(|| bad("not a committee".into()))?;
            cs.accept(cert, committee);
        }
        Ok(ContinentLog {
            state: parking_lot::Mutex::new(State {
                log,
                handovers,
                cities: states,
                head: None,
            }),
            anchor: parking_lot::Mutex::new(None),
            key,
            pool_window: pool_window.max(1),
        })
    }

    /// Leaves in the log.
    pub fn size(&self) -> u64 {
        self.state.lock().log.size()
    }

    /// The current root.
    pub fn root(&self) -> Hash32 {
        self.state.lock().log.root()
    }

    /// The continent's node id (the log id in its receipts and tree heads).
    pub fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// The continent's public key (to verify its receipts).
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().to_vec()
    }

    /// Where the log stands for `city`.
    pub fn city_head(&self, city: &Hash32) -> FedResult<CityHead> {
        let st = self.state.lock();
        let cs = st
            .cities
            .get(city)
            .ok_or(FederationError::UnknownCity { city: *city })?;
        Ok(CityHead {
            next_sequence: cs.next,
            last_running_hash: cs.last_hash,
        })
    }

    /// Checks, pools and (at a quorum) logs `c` — see the module docs. Blocking: signature
    /// checks, fsync, signing.
    pub fn push_blocking(&self, c: &CertifiedCheckpoint) -> FedResult<FederationProof> {
        let h = c.header;
        if c.signatures.is_empty() {
            return Err(FederationError::Malformed(
                "a push needs at least one signature".into(),
            ));
        }
        loop {
            let committee = self.committee_in_force(&h.city, h.sequence)?;
            // Outside the lock: the signature checks are the expensive part.
            let stake = c.verify_signatures(&committee, &MlDsa87)?;
            let mut guard = self.state.lock();
            let st = &mut *guard;
            let cs = st
                .cities
                .get_mut(&h.city)
                .ok_or(FederationError::UnknownCity { city: h.city })?;
            if !Arc::ptr_eq(cs.committee_at(h.sequence), &committee) {
                // A handover was accepted meanwhile: check against the new committee.
                continue;
            }
            return self.push_checked(st, c, &committee, stake);
        }
    }

    /// The rest of [`ContinentLog::push_blocking`] under the lock, `c`'s signatures checked
    /// against `committee` (in force at its sequence).
    fn push_checked(
        &self,
        st: &mut State,
        c: &CertifiedCheckpoint,
        committee: &Committee,
        stake: Stake,
    ) -> FedResult<FederationProof> {
        let h = c.header;
        let need = quorum_stake(committee);
        let cs = st
            .cities
            .get_mut(&h.city)
            .ok_or(FederationError::UnknownCity { city: h.city })?;
        if let Some(&(index, logged)) = cs.logged.get(&h.sequence) {
            if logged != h {
                return Err(FederationError::Fork {
                    city: h.city,
                    sequence: h.sequence,
                });
            }
            return proof_of(&st.log, index);
        }
        let full = c.signatures.len() > 1;
        if full && !committee.is_quorum(stake) {
            return Err(FederationError::NoQuorum {
                city: h.city,
                sequence: h.sequence,
                have: stake,
                need,
            });
        }
        if h.sequence > cs.next {
            if !full && h.sequence < cs.next + self.pool_window {
                let (id, sig) = &c.signatures[0];
                cs.pools
                    .entry(h.sequence)
                    .or_default()
                    .add(committee, h, *id, sig.clone());
            }
            return Err(FederationError::Gap {
                city: h.city,
                expected: cs.next,
                got: h.sequence,
            });
        }
        if h.prev_hash != cs.last_hash {
            return Err(FederationError::WrongPrev {
                city: h.city,
                sequence: h.sequence,
            });
        }
        let certified = if full {
            c.clone()
        } else {
            let (id, sig) = &c.signatures[0];
            let pool = cs.pools.entry(h.sequence).or_default();
            let have = pool.add(committee, h, *id, sig.clone());
            match pool.quorum(committee) {
                Some(q) if q.header == h => q,
                _ => {
                    return Err(FederationError::AwaitingQuorum {
                        city: h.city,
                        sequence: h.sequence,
                        have,
                        need,
                    });
                }
            }
        };
        let index = self.append(&mut st.log, cs, &certified)?;
        // Pooled shares ahead may now complete the following sequences (each against the
        // committee in force at its sequence: shares past a handover were dropped when it
        // was accepted).
        loop {
            let next_committee = cs.committee_at(cs.next).clone();
            let Some(next) = cs
                .pools
                .get(&cs.next)
                .and_then(|p| p.quorum(&next_committee))
            else {
                break;
            };
            if next.header.prev_hash != cs.last_hash {
                cs.pools.remove(&cs.next);
                break;
            }
            self.append(&mut st.log, cs, &next)?;
        }
        proof_of(&st.log, index)
    }

    /// The committee in force at `seq` of `city`.
    fn committee_in_force(&self, city: &Hash32, seq: u64) -> FedResult<Arc<Committee>> {
        let st = self.state.lock();
        let cs = st
            .cities
            .get(city)
            .ok_or(FederationError::UnknownCity { city: *city })?;
        Ok(cs.committee_at(seq).clone())
    }

    /// The committee the log checks `city`'s checkpoint `seq` against (after the handovers
    /// accepted so far).
    pub fn committee_at(&self, city: &Hash32, seq: u64) -> Option<Committee> {
        self.committee_in_force(city, seq)
            .ok()
            .map(|c| (*c).clone())
    }

    /// `city`'s committee chain: `(epoch, first sequence, committee)`, genesis first.
    pub fn committee_chain(&self, city: &Hash32) -> Vec<(u64, u64, Committee)> {
        let st = self.state.lock();
        st.cities.get(city).map_or_else(Vec::new, |cs| {
            cs.chain
                .iter()
                .map(|l| (l.epoch, l.first_seq, (*l.committee).clone()))
                .collect()
        })
    }

    /// Checks, pools and (at a quorum of the OLD committee) accepts a committee handover —
    /// see the module docs. Answers the accepted certificate; a re-push of an accepted
    /// handover answers it again. Blocking: signature checks, fsync.
    pub fn push_handover_blocking(&self, c: &CertifiedHandover) -> FedResult<CertifiedHandover> {
        let ho = &c.handover;
        if c.signatures.is_empty() {
            return Err(FederationError::Malformed(
                "a handover push needs at least one signature".into(),
            ));
        }
        loop {
            let old = {
                let st = self.state.lock();
                let cs = st
                    .cities
                    .get(&ho.city)
                    .ok_or(FederationError::UnknownCity { city: ho.city })?;
                if let Some(accepted) = cs.position_of(ho)? {
                    return Ok(accepted);
                }
                cs.committee_at(ho.last_sequence).clone()
            };
            // Outside the lock: the signature checks are the expensive part.
            let stake = c.verify_signatures(&old, &MlDsa87)?;
            let need = quorum_stake(&old);
            let full = c.signatures.len() > 1;
            if full && !old.is_quorum(stake) {
                return Err(FederationError::NoQuorum {
                    city: ho.city,
                    sequence: ho.last_sequence,
                    have: stake,
                    need,
                });
            }
            let mut guard = self.state.lock();
            let st = &mut *guard;
            let cs = st
                .cities
                .get_mut(&ho.city)
                .ok_or(FederationError::UnknownCity { city: ho.city })?;
            if !Arc::ptr_eq(cs.committee_at(ho.last_sequence), &old) {
                continue;
            }
            if let Some(accepted) = cs.position_of(ho)? {
                return Ok(accepted);
            }
            cs.check_logged(ho)?;
            let committee = ho.committee().ok_or_else(|| {
                FederationError::Malformed("the handover's members are not a committee".into())
            })?;
            let cert = if full {
                c.clone()
            } else {
                let (id, sig) = &c.signatures[0];
                let have = cs.handover_pool.add(&old, ho, *id, sig.clone());
                match cs.handover_pool.quorum(&old, ho) {
                    Some(q) => q,
                    None => {
                        return Err(FederationError::HandoverAwaitingQuorum {
                            city: ho.city,
                            epoch: ho.epoch,
                            have,
                            need,
                        });
                    }
                }
            };
            st.handovers.append(&cert).map_err(fed_store)?;
            tracing::info!(
                city = %ho.city.short(),
                epoch = ho.epoch,
                first_seq = ho.last_sequence + 1,
                members = committee.size(),
                "committee handover accepted"
            );
            metrics::counter!("continent_handovers_accepted").increment(1);
            cs.accept(cert.clone(), committee);
            return Ok(cert);
        }
    }

    fn append(
        &self,
        log: &mut PersistentLog,
        cs: &mut CityState,
        c: &CertifiedCheckpoint,
    ) -> FedResult<u64> {
        let key = &self.key;
        let (index, _) = log
            .append(&c.encode(), |index, size, root, leaf| {
                InclusionReceipt::sign(LogKind::Continent, index, size, root, leaf, key).encode()
            })
            .map_err(fed_store)?;
        cs.next = c.header.sequence + 1;
        cs.last_hash = c.header.running_hash;
        cs.logged.insert(c.header.sequence, (index, c.header));
        let next = cs.next;
        cs.pools.retain(|seq, _| *seq >= next);
        metrics::counter!("continent_checkpoints_logged").increment(1);
        Ok(index)
    }

    /// The current signed tree head (signed again only when the size changed).
    pub fn tree_head(&self) -> SignedTreeHead {
        let mut st = self.state.lock();
        let st = &mut *st;
        crate::fed_log::signed_head(&st.log, &mut st.head, &self.key)
    }

    /// The inclusion proof of leaf `index` at `tree_size` (0 = current).
    pub fn proof(&self, index: u64, tree_size: u64) -> FedResult<ProofAnswer> {
        self.state.lock().log.inclusion(index, tree_size)
    }

    /// The consistency proof from `old` to `new` (0 = current).
    pub fn consistency(&self, old: u64, new: u64) -> FedResult<ConsistencyProof> {
        self.state.lock().log.consistency(old, new)
    }

    /// The newest head the global logged, if it covers the tree of `tree_size`, with the
    /// consistency proof from `tree_size` (the anchor is kept in memory: after a restart
    /// it is back once the next head push is acknowledged).
    pub fn global_anchor(&self, tree_size: u64) -> FedResult<GlobalAnchor> {
        let anchor = self.anchor.lock().clone();
        let Some((head, receipt, proof)) = anchor else {
            return Err(FederationError::NotYetAnchored {
                tree_size,
                anchored: 0,
            });
        };
        if head.size < tree_size || tree_size == 0 {
            return Err(FederationError::NotYetAnchored {
                tree_size,
                anchored: head.size,
            });
        }
        let consistency = self.consistency(tree_size, head.size)?;
        Ok(GlobalAnchor {
            head,
            consistency,
            receipt,
            proof,
        })
    }

    fn set_anchor(&self, head: SignedTreeHead, receipt: InclusionReceipt, proof: InclusionProof) {
        *self.anchor.lock() = Some((head, receipt, proof));
    }
}

/// The stored certificate, receipt and inclusion path (at the receipt's size) of `index`.
fn proof_of(log: &PersistentLog, index: u64) -> FedResult<FederationProof> {
    let leaf = log.read(index).map_err(fed_store)?;
    let (certified, receipt) =
        decode_leaf(log.path(), index, &leaf.value, &leaf.receipt).map_err(fed_store)?;
    let a = log.inclusion(index, receipt.tree_size)?;
    Ok(FederationProof {
        certified,
        root: receipt.root,
        receipt,
        proof: a.proof,
    })
}

/// [`FederationHandler`] over a shared [`ContinentLog`].
#[derive(Debug, Clone)]
pub struct ContinentNode(pub Arc<ContinentLog>);

impl FederationHandler for ContinentNode {
    async fn push_checkpoint(&self, c: CertifiedCheckpoint) -> FedResult<FederationProof> {
        let log = self.0.clone();
        blocking(move || log.push_blocking(&c)).await
    }

    async fn push_handover(&self, c: CertifiedHandover) -> FedResult<CertifiedHandover> {
        let log = self.0.clone();
        blocking(move || log.push_handover_blocking(&c)).await
    }

    async fn city_head(&self, city: Hash32) -> FedResult<CityHead> {
        self.0.city_head(&city)
    }

    async fn tree_head(&self) -> FedResult<SignedTreeHead> {
        let log = self.0.clone();
        blocking(move || Ok(log.tree_head())).await
    }

    async fn inclusion_proof(&self, index: u64, tree_size: u64) -> FedResult<ProofAnswer> {
        self.0.proof(index, tree_size)
    }

    async fn consistency_proof(&self, old: u64, new: u64) -> FedResult<ConsistencyProof> {
        self.0.consistency(old, new)
    }

    async fn global_anchor(&self, tree_size: u64) -> FedResult<GlobalAnchor> {
        self.0.global_anchor(tree_size)
    }
}

/// A running continent. Call [`ContinentHandle::shutdown`] (graceful) or
/// [`ContinentHandle::kill`] (abrupt, as a crash).
#[derive(Debug)]
pub struct ContinentHandle {
    server: FedServer,
    log: Arc<ContinentLog>,
    head_pusher: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    global_acked: watch::Receiver<u64>,
}

impl ContinentHandle {
    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
    /// The log (size, root, keys).
    pub fn log(&self) -> &Arc<ContinentLog> {
        &self.log
    }
    /// The size of the newest tree head the global has logged (0 before the first).
    pub fn global_acked(&self) -> watch::Receiver<u64> {
        self.global_acked.clone()
    }
    /// Stops the head pusher, stops accepting, lets in-flight calls finish.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some((stop, task)) = self.head_pusher.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        self.server.shutdown().await
    }
    /// Stops every task at once.
    pub async fn kill(mut self) {
        if let Some((_, task)) = self.head_pusher.take() {
            task.abort();
            let _ = task.await;
        }
        self.server.kill().await;
    }
}

/// Starts the continent role: opens `<data_dir>/continent.redb` (with its committee
/// handovers, [`handovers_path`]), binds `cfg.listen`, serves
/// Federation, gRPC health and reflection, and pushes tree heads to `cfg.global`.
pub async fn start_continent(cfg: &ContinentConfig, key: Keypair) -> Result<ContinentHandle> {
    let cfg = &ContinentConfig {
        links: crate::runtime::resolve_links(&cfg.links, &cfg.data_dir, &key)?,
        ..cfg.clone()
    };
    let path = cfg.data_dir.join("continent.redb");
    let cities = cfg.cities.clone();
    let window = cfg.pool_window;
    let log = crate::runtime::run_blocking("continent log", move || {
        ContinentLog::open(&path, key, &cities, window)
    })
    .await??;
    let log = Arc::new(log);
    let server =
        FedServer::start(cfg.listen, Arc::new(ContinentNode(log.clone())), &cfg.links).await?;
    let (acked_tx, global_acked) = watch::channel(0u64);
    let head_pusher = match &cfg.global {
        Some(g) => {
            let client = FederationClient::lazy_over(
                &g.addr,
                Duration::from_secs(2),
                &cfg.links,
                Some(NodeId::from_public_key(&g.public_key)),
            )
            .map_err(|source| Error::PeerAddress {
                addr: g.addr.clone(),
                source,
            })?;
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(push_heads(
                log.clone(),
                client,
                g.public_key.clone(),
                cfg.head_push_interval,
                stopped,
                acked_tx,
            ));
            Some((stop, task))
        }
        None => None,
    };
    tracing::info!(addr = %server.addr, size = log.size(), "continent serving");
    Ok(ContinentHandle {
        server,
        log,
        head_pusher,
        global_acked,
    })
}

/// Pushes the newest tree head to the global whenever it changed, forever: a failed push
/// is simply retried with the then-newest head (consistency makes older heads implied).
async fn push_heads(
    log: Arc<ContinentLog>,
    client: FederationClient,
    global_key: Vec<u8>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    acked: watch::Sender<u64>,
) {
    // The size the global logged last (None: unknown; it tells us with NeedConsistency).
    let mut logged: Option<u64> = None;
    let backoff = RetryPolicy {
        base_delay: interval,
        max_delay: Duration::from_secs(5).max(interval),
        ..RetryPolicy::default()
    };
    let mut failures = 0u32;
    loop {
        let wait = if failures == 0 {
            interval
        } else {
            backoff.delay(failures)
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let l = log.clone();
        let Ok(head) = tokio::task::spawn_blocking(move || l.tree_head()).await else {
            return;
        };
        if head.size == 0 || logged == Some(head.size) {
            continue;
        }
        let mut consistency = match logged {
            Some(old) if old > 0 && old < head.size => log.consistency(old, head.size).ok(),
            _ => None,
        };
        let mut result = Err(FederationError::Store("not pushed".into()));
        for _ in 0..2 {
            let push = TreeHeadPush {
                head: head.clone(),
                consistency: consistency.take(),
            };
            result = client.push_tree_head(&push).await;
            match &result {
                Err(FederationError::NeedConsistency { from_size, .. })
                    if *from_size < head.size =>
                {
                    consistency = log.consistency(*from_size, head.size).ok();
                }
                _ => break,
            }
        }
        match result {
            Ok(receipt) => match anchor_of(&client, &head, &receipt, &global_key).await {
                Ok(proof) => {
                    failures = 0;
                    logged = Some(head.size);
                    log.set_anchor(head.clone(), receipt, proof);
                    let _ = acked.send(head.size);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "global receipt or inclusion proof does not check");
                }
            },
            Err(e) => {
                failures = failures.saturating_add(1);
                metrics::counter!("continent_head_push_failures").increment(1);
                if e.is_retryable() {
                    tracing::debug!(error = %e, "tree head push failed; retrying");
                } else {
                    tracing::warn!(error = %e, "global refused the tree head; retrying");
                }
            }
        }
    }
}

/// Checks the global's receipt for `head` and fetches the inclusion path to its root.
async fn anchor_of(
    client: &FederationClient,
    head: &SignedTreeHead,
    receipt: &InclusionReceipt,
    global_key: &[u8],
) -> FedResult<InclusionProof> {
    receipt.verify(LogKind::Global, global_key)?;
    if receipt.leaf != head.leaf_hash() {
        return Err(FederationError::BadAnswer(
            "global receipt is not for our head".into(),
        ));
    }
    let a = client
        .inclusion_proof(receipt.log_index, receipt.tree_size)
        .await?;
    a.proof
        .verify(&receipt.leaf, &receipt.root)
        .map_err(|e| FederationError::BadAnswer(e.to_string()))?;
    Ok(a.proof)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::Signer;
    use dag_core::consensus::{BatchDigest, Checkpoint};
    use rpc::{sign_handover_share, sign_share};

    const CITY: Hash32 = Hash32([7; 32]);

    fn keys(n: usize) -> Vec<Keypair> {
        (0..n).map(|_| Keypair::generate()).collect()
    }

    fn committee_of(keys: &[&Keypair]) -> Committee {
        Committee::equal(keys.iter().map(|k| k.public_key().to_vec()).collect()).unwrap()
    }

    /// `n` chained checkpoint headers of `CITY`.
    fn headers(n: u64) -> Vec<CheckpointHeader> {
        let mut prev = Hash32([0; 32]);
        (0..n)
            .map(|i| {
                let leader = BatchDigest(Hash32([i as u8 + 1; 32]));
                let cp = Checkpoint {
                    sequence: i,
                    leader_round: 2 * i,
                    leader,
                    batches: vec![leader],
                    prev_hash: prev,
                };
                prev = cp.hash();
                CheckpointHeader::of(CITY, &cp)
            })
            .collect()
    }

    fn share(k: &Keypair, h: &CheckpointHeader) -> CertifiedCheckpoint {
        CertifiedCheckpoint::new(*h, vec![sign_share(h, k)])
    }

    fn full(keys: &[&Keypair], h: &CheckpointHeader) -> CertifiedCheckpoint {
        CertifiedCheckpoint::new(*h, keys.iter().map(|k| sign_share(h, *k)).collect())
    }

    fn handover_share(k: &Keypair, h: &CommitteeHandover) -> CertifiedHandover {
        CertifiedHandover::new(h.clone(), vec![sign_handover_share(h, k)])
    }

    fn handover_cert(keys: &[&Keypair], h: &CommitteeHandover) -> CertifiedHandover {
        CertifiedHandover::new(
            h.clone(),
            keys.iter().map(|k| sign_handover_share(h, *k)).collect(),
        )
    }

    /// Old committee A B C D; new committee B C D E (E joins, A leaves).
    struct Fixture {
        dir: tempfile::TempDir,
        ckey: Keypair,
        old: Vec<Keypair>,
        e: Keypair,
        genesis: Committee,
        new: Committee,
        hs: Vec<CheckpointHeader>,
    }

    impl Fixture {
        fn new() -> Self {
            let old = keys(4);
            let e = Keypair::generate();
            let genesis = committee_of(&old.iter().collect::<Vec<_>>());
            let new = committee_of(&[&old[1], &old[2], &old[3], &e]);
            Fixture {
                dir: tempfile::tempdir().unwrap(),
                ckey: Keypair::generate(),
                old,
                e,
                genesis,
                new,
                hs: headers(6),
            }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("continent.redb")
        }

        fn open(&self) -> Result<ContinentLog> {
            ContinentLog::open(
                &self.path(),
                self.ckey.clone(),
                &[CityCommittee {
                    city: CITY,
                    committee: self.genesis.clone(),
                }],
                16,
            )
        }

        /// The handover to the new committee after checkpoint `last`.
        fn handover(&self, last: u64) -> CommitteeHandover {
            CommitteeHandover::of(
                CITY,
                1,
                last,
                self.hs[last as usize].running_hash,
                &self.new.clone().with_epoch(1),
            )
        }

        /// Logs checkpoints `range` with full certificates of the old committee.
        fn log_old(&self, log: &ContinentLog, range: std::ops::Range<usize>) {
            let old: Vec<&Keypair> = self.old.iter().collect();
            for h in &self.hs[range] {
                log.push_blocking(&full(&old[..3], h)).unwrap();
            }
        }

        /// B C D and E: the new committee's keys.
        fn new_keys(&self) -> Vec<&Keypair> {
            vec![&self.old[1], &self.old[2], &self.old[3], &self.e]
        }
    }

    #[test]
    fn a_handover_certified_by_the_old_committee_lets_the_new_committee_in() {
        let f = Fixture::new();
        let log = f.open().unwrap();
        f.log_old(&log, 0..3);
        // Before the handover the newcomer's share of checkpoint 3 is not a member's.
        let e = log.push_blocking(&share(&f.e, &f.hs[3])).unwrap_err();
        assert!(matches!(e, FederationError::NotMember { .. }), "{e:?}");

        let ho = f.handover(2);
        // Old members' shares pool to a quorum of the OLD committee's stake.
        for (i, k) in f.old[..2].iter().enumerate() {
            let e = log
                .push_handover_blocking(&handover_share(k, &ho))
                .unwrap_err();
            assert_eq!(
                e,
                FederationError::HandoverAwaitingQuorum {
                    city: CITY,
                    epoch: 1,
                    have: i as u64 + 1,
                    need: 3
                }
            );
            assert!(e.is_retryable());
        }
        // The newcomer cannot vouch for itself.
        let e = log
            .push_handover_blocking(&handover_share(&f.e, &ho))
            .unwrap_err();
        assert!(matches!(e, FederationError::NotMember { .. }), "{e:?}");
        let accepted = log
            .push_handover_blocking(&handover_share(&f.old[2], &ho))
            .unwrap();
        assert_eq!(accepted.handover, ho);
        assert_eq!(accepted.verify(&f.genesis).unwrap(), 3);
        // Idempotent: a late share (or any re-push) answers the accepted certificate.
        assert_eq!(
            log.push_handover_blocking(&handover_share(&f.old[3], &ho))
                .unwrap(),
            accepted
        );
        let chain = log.committee_chain(&CITY);
        assert_eq!(chain.len(), 2);
        assert_eq!((chain[1].0, chain[1].1), (1, 3));
        assert_eq!(chain[1].2.authorities(), f.new.authorities());

        // The new committee's shares now make checkpoint 3; the member that left is out.
        let e = log.push_blocking(&share(&f.old[0], &f.hs[3])).unwrap_err();
        assert!(matches!(e, FederationError::NotMember { .. }), "{e:?}");
        let nk = f.new_keys();
        for k in &nk[2..] {
            assert!(matches!(
                log.push_blocking(&share(k, &f.hs[3])),
                Err(FederationError::AwaitingQuorum { .. })
            ));
        }
        let p = log.push_blocking(&share(nk[1], &f.hs[3])).unwrap();
        p.verify(&f.new, f.ckey.public_key()).unwrap();
        assert_eq!(log.city_head(&CITY).unwrap().next_sequence, 4);
        // Old-epoch checkpoints are still checked against the old committee: A's re-push of
        // checkpoint 2 answers its proof, E's share of it is not a member's.
        let p2 = log.push_blocking(&share(&f.old[0], &f.hs[2])).unwrap();
        p2.verify(&f.genesis, f.ckey.public_key()).unwrap();
        assert!(matches!(
            log.push_blocking(&share(&f.e, &f.hs[2])),
            Err(FederationError::NotMember { .. })
        ));
        // A full certificate of the new committee is appended directly.
        log.push_blocking(&full(&nk[1..], &f.hs[4])).unwrap();
        assert_eq!(log.size(), 5);
    }

    #[test]
    fn handovers_of_the_wrong_committee_or_too_little_stake_are_refused() {
        let f = Fixture::new();
        let log = f.open().unwrap();
        f.log_old(&log, 0..3);
        let ho = f.handover(2);
        let nk = f.new_keys();
        // The new committee certifying itself, a certificate short of a quorum, a forged
        // share: refused, nothing kept.
        let e = log
            .push_handover_blocking(&handover_cert(&nk[1..], &ho))
            .unwrap_err();
        assert!(matches!(e, FederationError::NotMember { .. }), "{e:?}");
        let old: Vec<&Keypair> = f.old.iter().collect();
        let e = log
            .push_handover_blocking(&handover_cert(&old[..2], &ho))
            .unwrap_err();
        assert!(
            matches!(
                e,
                FederationError::NoQuorum {
                    have: 2,
                    need: 3,
                    sequence: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        let mut forged = handover_share(&f.old[0], &ho);
        forged.signatures[0].1[3] ^= 1;
        let e = log.push_handover_blocking(&forged).unwrap_err();
        assert!(matches!(e, FederationError::BadSignature { .. }), "{e:?}");
        assert_eq!(log.committee_chain(&CITY).len(), 1);
        // The forged share did not count: the first honest share has stake 1.
        assert!(matches!(
            log.push_handover_blocking(&handover_share(&f.old[0], &ho)),
            Err(FederationError::HandoverAwaitingQuorum { have: 1, .. })
        ));
        // A handover naming another running hash for the logged checkpoint conflicts.
        let wrong = CommitteeHandover {
            last_running_hash: Hash32([9; 32]),
            ..ho.clone()
        };
        let e = log
            .push_handover_blocking(&handover_cert(&old[..3], &wrong))
            .unwrap_err();
        assert_eq!(
            e,
            FederationError::HandoverConflict {
                city: CITY,
                epoch: 1
            }
        );
        assert!(!e.is_retryable());
        // A quorum certificate is accepted directly; another handover for the same epoch,
        // or one before the accepted position, conflicts.
        let accepted = log
            .push_handover_blocking(&handover_cert(&old[1..], &ho))
            .unwrap();
        assert_eq!(accepted.signatures.len(), 3);
        let other = CommitteeHandover {
            members: vec![(f.e.public_key().to_vec(), 1)],
            ..ho.clone()
        };
        assert!(matches!(
            log.push_handover_blocking(&handover_cert(&old[..3], &other)),
            Err(FederationError::HandoverConflict { epoch: 1, .. })
        ));
        let earlier = CommitteeHandover {
            epoch: 2,
            ..f.handover(1)
        };
        assert!(matches!(
            log.push_handover_blocking(&handover_cert(&nk[..3], &earlier)),
            Err(FederationError::HandoverConflict { epoch: 2, .. })
        ));
        assert_eq!(log.committee_chain(&CITY).len(), 2);
        // Unknown city.
        let stranger = CommitteeHandover {
            city: Hash32([1; 32]),
            ..ho
        };
        assert!(matches!(
            log.push_handover_blocking(&handover_cert(&old[..3], &stranger)),
            Err(FederationError::UnknownCity { .. })
        ));
    }

    #[test]
    fn a_handover_before_its_last_checkpoint_is_logged_is_retryable() {
        let f = Fixture::new();
        let log = f.open().unwrap();
        f.log_old(&log, 0..2);
        let ho = f.handover(2);
        let e = log
            .push_handover_blocking(&handover_share(&f.old[0], &ho))
            .unwrap_err();
        assert_eq!(
            e,
            FederationError::HandoverTooEarly {
                city: CITY,
                epoch: 1,
                last_sequence: 2
            }
        );
        assert!(e.is_retryable());
        let old: Vec<&Keypair> = f.old.iter().collect();
        assert!(matches!(
            log.push_handover_blocking(&handover_cert(&old[..3], &ho)),
            Err(FederationError::HandoverTooEarly { .. })
        ));
        // Nothing was pooled: once checkpoint 2 is logged the count starts from scratch.
        f.log_old(&log, 2..3);
        assert!(matches!(
            log.push_handover_blocking(&handover_share(&f.old[1], &ho)),
            Err(FederationError::HandoverAwaitingQuorum { have: 1, .. })
        ));
        log.push_handover_blocking(&handover_share(&f.old[0], &ho))
            .unwrap_err();
        log.push_handover_blocking(&handover_share(&f.old[2], &ho))
            .unwrap();
        assert_eq!(log.committee_chain(&CITY).len(), 2);
    }

    #[test]
    fn pooled_old_committee_shares_past_the_handover_are_dropped() {
        let f = Fixture::new();
        let log = f.open().unwrap();
        f.log_old(&log, 0..3);
        // A's share of checkpoint 3 (ahead of nothing: it is next) pools under the genesis
        // committee, then the handover makes A a non-member from 3 on.
        assert!(matches!(
            log.push_blocking(&share(&f.old[0], &f.hs[3])),
            Err(FederationError::AwaitingQuorum { have: 1, .. })
        ));
        let old: Vec<&Keypair> = f.old.iter().collect();
        log.push_handover_blocking(&handover_cert(&old[..3], &f.handover(2)))
            .unwrap();
        // B and C alone are not a quorum of the new committee (3 of 4 needed): A's pooled
        // share no longer counts.
        assert!(matches!(
            log.push_blocking(&share(&f.old[1], &f.hs[3])),
            Err(FederationError::AwaitingQuorum { have: 1, .. })
        ));
        assert!(matches!(
            log.push_blocking(&share(&f.old[2], &f.hs[3])),
            Err(FederationError::AwaitingQuorum { have: 2, .. })
        ));
        let p = log.push_blocking(&share(&f.e, &f.hs[3])).unwrap();
        // The logged certificate holds only the new committee's signatures (A's pooled
        // share would make it fail the strict check).
        assert_eq!(p.certified.signatures.len(), 3);
        p.verify(&f.new, f.ckey.public_key()).unwrap();
    }

    #[test]
    fn reopen_keeps_the_committee_chain() {
        let f = Fixture::new();
        {
            let log = f.open().unwrap();
            f.log_old(&log, 0..3);
            let old: Vec<&Keypair> = f.old.iter().collect();
            log.push_handover_blocking(&handover_cert(&old[..3], &f.handover(2)))
                .unwrap();
        }
        // A torn record at the end (a crash mid-append, never acknowledged) is cut off.
        let hpath = handovers_path(&f.path());
        let len = std::fs::metadata(&hpath).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&hpath)
            .unwrap()
            .write_all(&[200, 1, 0, 0, 1, 2, 3])
            .unwrap();
        let log = f.open().unwrap();
        assert_eq!(std::fs::metadata(&hpath).unwrap().len(), len);
        let chain = log.committee_chain(&CITY);
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1].1, 3);
        // The new committee's full certificate gets in after the restart.
        let nk = f.new_keys();
        log.push_blocking(&full(&nk[1..], &f.hs[3])).unwrap();
        // A re-push of the accepted handover still answers it.
        let old: Vec<&Keypair> = f.old.iter().collect();
        assert_eq!(
            log.push_handover_blocking(&handover_share(old[3], &f.handover(2)))
                .unwrap()
                .handover,
            f.handover(2)
        );
    }

    #[test]
    fn a_forged_committee_chain_on_disk_is_refused_at_open() {
        let f = Fixture::new();
        {
            let log = f.open().unwrap();
            f.log_old(&log, 0..3);
        }
        // A handover "certified" by the new committee itself, written behind the log's back.
        let nk = f.new_keys();
        let forged = handover_cert(&nk[1..], &f.handover(2));
        let (mut file, certs) = HandoverFile::open(&handovers_path(&f.path())).unwrap();
        assert!(certs.is_empty());
        file.append(&forged).unwrap();
        drop(file);
        match f.open() {
            Err(Error::LogCorrupt {
                index: 0, reason, ..
            }) => {
                assert!(reason.contains("not a member"), "{reason}");
            }
            other => panic!("a forged chain opened: {other:?}"),
        }
        // Garbage where a record should be is refused too.
        std::fs::write(handovers_path(&f.path()), [3, 0, 0, 0, 1, 2, 3]).unwrap();
        assert!(matches!(f.open(), Err(Error::LogCorrupt { .. })));
        // A genuine certificate for a checkpoint the log does not hold is refused.
        let old: Vec<&Keypair> = f.old.iter().collect();
        std::fs::remove_file(handovers_path(&f.path())).unwrap();
        let (mut file, _) = HandoverFile::open(&handovers_path(&f.path())).unwrap();
        file.append(&handover_cert(&old[..3], &f.handover(4)))
            .unwrap();
        drop(file);
        assert!(matches!(f.open(), Err(Error::LogCorrupt { .. })));
    }
}

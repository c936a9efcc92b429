//! The representative's record of what its committee ordered: every committed checkpoint
//! by sequence, the position of every committed tx (first occurrence wins), the committed
//! batch headers that carry txs (for offline proofs), and the continent's proof per
//! checkpoint once federated. `GetTx` answers Ordered and Federated from here, on every
//! representative, for txs admitted by any of them.
//!
//! Applied in commit order, one redb transaction per checkpoint; a restarted
//! representative replays its commits from sequence 0 and the store skips what it already
//! holds, so every checkpoint is applied exactly once.

use crate::runtime::{db_err, open_db};
use crate::{Error, Result};
use dag_core::consensus::{BatchDigest, BatchHeader, BatchItem, Checkpoint, CommittedSubDag};
use dag_core::{DecodeError, Hash32, Reader, TxId, Writer};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// Sequence → `Checkpoint::encode` ‖ committed_at_ms u64.
const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
/// Tx id → sequence u64 ‖ batch digest 32.
const TX_ORDER: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("tx_order");
/// Batch digest → `BatchHeader::encode` (only batches that carry txs).
const BATCHES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("batches");
/// Sequence → federation proof bytes ‖ federated_at_ms u64.
const FEDERATED: TableDefinition<u64, &[u8]> = TableDefinition::new("federated");
/// Sequence → the committed leader's timestamp_ms (the checkpoint's agreed time).
const LEADER_TIMES: TableDefinition<u64, u64> = TableDefinition::new("leader_times");

/// Consensus epoch → first_seq u64 ‖ count u16 ‖ (u16 length ‖ public key ‖ stake u64)*
/// (the committee the epoch runs, in index order).
const EPOCHS: TableDefinition<u64, &[u8]> = TableDefinition::new("epochs");

/// Most members of a recorded epoch's committee (decode bound).
const MAX_EPOCH_MEMBERS: usize = rpc::MAX_HANDOVER_MEMBERS;

/// Most batches a stored checkpoint may name (decode bound).
const MAX_CHECKPOINT_BATCHES: usize = 1 << 20;

/// Where a committed tx sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOrdering {
    /// The checkpoint that committed it.
    pub sequence: u64,
    /// The committed leader's round.
    pub leader_round: u64,
    /// The committed leader's batch.
    pub leader: BatchDigest,
    /// The batch that carried it.
    pub batch: BatchDigest,
    /// When this representative committed it (ms since the Unix epoch).
    pub committed_at_ms: u64,
}

/// A checkpoint as stored, with its commit time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// When this representative committed it (ms since the Unix epoch).
    pub committed_at_ms: u64,
}

/// What applying one committed sub-DAG did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The checkpoint was already stored (a replay after restart): nothing changed.
    pub replay: bool,
    /// Txs given a position.
    pub txs: u64,
    /// Tx items already committed by an earlier checkpoint (a tx ordered twice; the first
    /// position stands).
    pub duplicates: u64,
}

/// The order store of one representative (`<data_dir>/order.redb`).
pub struct OrderStore {
    db: Database,
    path: PathBuf,
    next: AtomicU64,
    committed: watch::Sender<u64>,
    duplicates: AtomicU64,
    /// The contiguous federated prefix seen so far ([`OrderStore::federated_upto`]):
    /// federation records are only ever added, so the next call scans from here, not from 0.
    fed_upto: AtomicU64,
    /// Where ordered / federated events go (set once by the city node).
    events: std::sync::OnceLock<std::sync::Arc<super::events::EventBus>>,
}

impl std::fmt::Debug for OrderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderStore")
            .field("path", &self.path)
            .field("committed", &self.committed())
            .finish()
    }
}

fn corrupt(path: &Path, index: u64, source: DecodeError) -> Error {
    Error::CorruptRecord {
        path: path.to_path_buf(),
        index,
        source,
    }
}

impl OrderStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = open_db(path, |w| {
            w.open_table(CHECKPOINTS)?;
            w.open_table(TX_ORDER)?;
            w.open_table(BATCHES)?;
            w.open_table(FEDERATED)?;
            w.open_table(LEADER_TIMES)?;
            w.open_table(EPOCHS)?;
            Ok(())
        })?;
        let err = db_err(path);
        let next = {
            let r = db.begin_read().map_err(|e| err(e.into()))?;
            let t = r.open_table(CHECKPOINTS).map_err(|e| err(e.into()))?;
            t.last()
                .map_err(|e| err(e.into()))?
                .map_or(0, |(k, _)| k.value() + 1)
        };
        let (committed, _) = watch::channel(next);
        Ok(OrderStore {
            db,
            path: path.to_path_buf(),
            next: AtomicU64::new(next),
            committed,
            duplicates: AtomicU64::new(0),
            fed_upto: AtomicU64::new(0),
            events: std::sync::OnceLock::new(),
        })
    }

    /// Publishes `ordered` and `federated` events on `bus` from now on.
    pub(crate) fn set_events(&self, bus: std::sync::Arc<super::events::EventBus>) {
        let _ = self.events.set(bus);
    }

    /// Checkpoints stored (the next sequence expected).
    pub fn committed(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// Wakes on every new checkpoint; the value is [`OrderStore::committed`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Tx items seen committed a second time since this process started.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Applies one committed sub-DAG (blocking: one fsync). Sequences below
    /// [`OrderStore::committed`] are replays and change nothing; a sequence above it means
    /// a commit was lost on the way and is refused.
    pub fn apply(&self, sub: &CommittedSubDag, committed_at_ms: u64) -> Result<Applied> {
        let leader_time = sub
            .batches
            .iter()
            .find(|c| c.digest() == sub.checkpoint.leader)
            .map(|c| c.batch().header.timestamp_ms);
        self.apply_parts(
            &sub.checkpoint,
            leader_time,
            sub.batches.iter().map(|c| (c.digest(), &c.batch().header)),
            committed_at_ms,
        )
    }

    /// Applies a checkpoint another representative ordered ([`OrderStore::ordered`] there),
    /// as a standby node following the committee does; the caller has checked it (the
    /// headers are the checkpoint's, enough of the committee answered the same). Same
    /// rules as [`OrderStore::apply`].
    pub fn apply_ordered(
        &self,
        c: &rpc::OrderedCheckpoint,
        committed_at_ms: u64,
    ) -> Result<Applied> {
        self.apply_parts(
            &c.checkpoint,
            Some(c.leader_time_ms),
            c.batches.iter().map(|h| (h.digest(), h)),
            committed_at_ms,
        )
    }

    fn apply_parts<'a>(
        &self,
        checkpoint: &Checkpoint,
        leader_time: Option<u64>,
        headers: impl Iterator<Item = (BatchDigest, &'a BatchHeader)>,
        committed_at_ms: u64,
    ) -> Result<Applied> {
        let seq = checkpoint.sequence;
        let next = self.committed();
        if seq < next {
            return Ok(Applied {
                replay: true,
                ..Applied::default()
            });
        }
        if seq > next {
            return Err(Error::Membership(format!(
                "order store {}: checkpoint {seq} arrived before {next}",
                self.path.display()
            )));
        }
        let err = db_err(&self.path);
        let mut applied = Applied::default();
        let mut newly = Vec::new();
        let w = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut cps = w.open_table(CHECKPOINTS).map_err(|e| err(e.into()))?;
            let mut order = w.open_table(TX_ORDER).map_err(|e| err(e.into()))?;
            let mut batches = w.open_table(BATCHES).map_err(|e| err(e.into()))?;
            let mut cp = Writer::default();
            cp.raw(&checkpoint.encode()).u64(committed_at_ms);
            cps.insert(seq, cp.finish().as_slice())
                .map_err(|e| err(e.into()))?;
            if let Some(t) = leader_time {
                w.open_table(LEADER_TIMES)
                    .map_err(|e| err(e.into()))?
                    .insert(seq, t)
                    .map_err(|e| err(e.into()))?;
            }
            for (digest, header) in headers {
                let mut carries_tx = false;
                for item in &header.items {
                    let BatchItem::Tx(id) = item else { continue };
                    carries_tx = true;
                    let key = id.as_bytes();
                    if order.get(key).map_err(|e| err(e.into()))?.is_some() {
                        applied.duplicates += 1;
                        continue;
                    }
                    let mut v = Writer::default();
                    v.u64(seq).raw(digest.as_bytes());
                    order
                        .insert(key, v.finish().as_slice())
                        .map_err(|e| err(e.into()))?;
                    applied.txs += 1;
                    newly.push(*id);
                }
                if carries_tx {
                    batches
                        .insert(digest.as_bytes(), header.encode().as_slice())
                        .map_err(|e| err(e.into()))?;
                }
            }
        }
        w.commit().map_err(|e| err(e.into()))?;
        self.next.store(seq + 1, Ordering::Release);
        self.duplicates
            .fetch_add(applied.duplicates, Ordering::Relaxed);
        self.committed.send_replace(seq + 1);
        if let Some(bus) = self.events.get() {
            bus.ordered(seq, newly);
        }
        Ok(applied)
    }

    /// Checkpoint `seq` with its leader time and the headers of its batches that carry
    /// txs: what `GetCheckpoints` answers and [`OrderStore::apply_ordered`] takes.
    pub fn ordered(&self, seq: u64) -> Result<Option<rpc::OrderedCheckpoint>> {
        let Some(cp) = self.checkpoint(seq)? else {
            return Ok(None);
        };
        let missing = |field| {
            corrupt(
                &self.path,
                seq,
                DecodeError::Invalid {
                    field,
                    reason: "a stored checkpoint has no leader time",
                },
            )
        };
        let leader_time_ms = self
            .leader_time(seq)?
            .ok_or_else(|| missing("leader_times"))?;
        let mut batches = Vec::new();
        for d in &cp.checkpoint.batches {
            if let Some(h) = self.batch(d)? {
                batches.push(h);
            }
        }
        Ok(Some(rpc::OrderedCheckpoint {
            checkpoint: cp.checkpoint,
            leader_time_ms,
            batches,
        }))
    }

    /// The stored checkpoint `seq`.
    pub fn checkpoint(&self, seq: u64) -> Result<Option<StoredCheckpoint>> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(CHECKPOINTS).map_err(|e| err(e.into()))?;
        let Some(v) = t.get(seq).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        let bytes = v.value();
        let split = bytes.len().checked_sub(8).ok_or_else(|| {
            corrupt(
                &self.path,
                seq,
                DecodeError::Truncated {
                    field: "committed_at_ms",
                    needed: 8,
                    had: bytes.len(),
                },
            )
        })?;
        let checkpoint = Checkpoint::decode(&bytes[..split], MAX_CHECKPOINT_BATCHES)
            .map_err(|e| corrupt(&self.path, seq, e))?;
        let mut r = Reader::new(&bytes[split..]);
        let committed_at_ms = r
            .u64("committed_at_ms")
            .map_err(|e| corrupt(&self.path, seq, e))?;
        Ok(Some(StoredCheckpoint {
            checkpoint,
            committed_at_ms,
        }))
    }

    /// The committed leader's timestamp of checkpoint `seq` (the same on every
    /// representative: it is inside the certified leader batch).
    pub fn leader_time(&self, seq: u64) -> Result<Option<u64>> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(LEADER_TIMES).map_err(|e| err(e.into()))?;
        Ok(t.get(seq).map_err(|e| err(e.into()))?.map(|v| v.value()))
    }

    /// Where `tx` was committed, if it was.
    pub fn ordering(&self, tx: &TxId) -> Result<Option<TxOrdering>> {
        let err = db_err(&self.path);
        let (seq, batch) = {
            let r = self.db.begin_read().map_err(|e| err(e.into()))?;
            let t = r.open_table(TX_ORDER).map_err(|e| err(e.into()))?;
            let Some(v) = t.get(tx.as_bytes()).map_err(|e| err(e.into()))? else {
                return Ok(None);
            };
            let mut rd = Reader::new(v.value());
            let seq = rd.u64("sequence").map_err(|e| corrupt(&self.path, 0, e))?;
            let batch = BatchDigest(Hash32(
                rd.bytes32("batch")
                    .map_err(|e| corrupt(&self.path, seq, e))?,
            ));
            (seq, batch)
        };
        let Some(cp) = self.checkpoint(seq)? else {
            return Err(corrupt(
                &self.path,
                seq,
                DecodeError::Invalid {
                    field: "tx_order",
                    reason: "names a checkpoint that is not stored",
                },
            ));
        };
        Ok(Some(TxOrdering {
            sequence: seq,
            leader_round: cp.checkpoint.leader_round,
            leader: cp.checkpoint.leader,
            batch,
            committed_at_ms: cp.committed_at_ms,
        }))
    }

    /// A committed batch header that carries txs.
    pub fn batch(&self, digest: &BatchDigest) -> Result<Option<BatchHeader>> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(BATCHES).map_err(|e| err(e.into()))?;
        let Some(v) = t.get(digest.as_bytes()).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        BatchHeader::decode(v.value())
            .map(Some)
            .map_err(|e| corrupt(&self.path, 0, e))
    }

    /// Records the continent's proof for checkpoint `seq` (idempotent).
    pub fn record_federated(&self, seq: u64, proof: &[u8], at_ms: u64) -> Result<()> {
        let err = db_err(&self.path);
        let w = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut t = w.open_table(FEDERATED).map_err(|e| err(e.into()))?;
            let mut v = Writer::default();
            v.raw(proof).u64(at_ms);
            t.insert(seq, v.finish().as_slice())
                .map_err(|e| err(e.into()))?;
        }
        w.commit().map_err(|e| err(e.into()))?;
        if let Some(bus) = self.events.get() {
            bus.federated(seq);
        }
        Ok(())
    }

    /// The continent's proof for checkpoint `seq` and when it arrived.
    pub fn federated(&self, seq: u64) -> Result<Option<(Vec<u8>, u64)>> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(FEDERATED).map_err(|e| err(e.into()))?;
        let Some(v) = t.get(seq).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        let bytes = v.value();
        let split = bytes.len().saturating_sub(8);
        let mut rd = Reader::new(&bytes[split..]);
        let at = rd
            .u64("federated_at_ms")
            .map_err(|e| corrupt(&self.path, seq, e))?;
        Ok(Some((bytes[..split].to_vec(), at)))
    }

    /// Records that consensus epoch `epoch` runs `members` (`(public key, stake)` in index
    /// order) from checkpoint `first_seq` on (blocking: one fsync). Recording the same
    /// again changes nothing; another first sequence or committee for a recorded epoch is
    /// refused ([`Error::CorruptRecord`]: one of the two records is wrong).
    pub fn record_epoch(
        &self,
        epoch: u64,
        first_seq: u64,
        members: &[(Vec<u8>, u64)],
    ) -> Result<()> {
        let err = db_err(&self.path);
        let mut v = Writer::default();
        v.u64(first_seq)
            .u16(u16::try_from(members.len()).unwrap_or(u16::MAX));
        for (key, stake) in members {
            v.bytes_u16(key).u64(*stake);
        }
        let bytes = v.finish();
        let w = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut t = w.open_table(EPOCHS).map_err(|e| err(e.into()))?;
            if let Some(old) = t.get(epoch).map_err(|e| err(e.into()))? {
                if old.value() == bytes.as_slice() {
                    return Ok(());
                }
                return Err(corrupt(
                    &self.path,
                    epoch,
                    DecodeError::Invalid {
                        field: "epochs",
                        reason: "epoch already recorded with another start or committee",
                    },
                ));
            }
            t.insert(epoch, bytes.as_slice())
                .map_err(|e| err(e.into()))?;
        }
        w.commit().map_err(|e| err(e.into()))?;
        Ok(())
    }

    /// The recorded committee epochs, by epoch.
    pub fn epochs(&self) -> Result<Vec<crate::federation_push::CommitteeEpoch>> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(EPOCHS).map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let epoch = k.value();
            let decode = || -> std::result::Result<_, DecodeError> {
                let mut rd = Reader::new(v.value());
                let first_seq = rd.u64("first_seq")?;
                let n = rd.count_u16("members", MAX_EPOCH_MEMBERS)?;
                let mut members = Vec::with_capacity(n);
                for _ in 0..n {
                    let key = rd.bytes_u16("member key", dag_core::MAX_KEY_LEN)?.to_vec();
                    members.push((key, rd.u64("member stake")?));
                }
                rd.finish()?;
                Ok(crate::federation_push::CommitteeEpoch {
                    epoch,
                    first_seq,
                    members,
                })
            };
            out.push(decode().map_err(|e| corrupt(&self.path, epoch, e))?);
        }
        Ok(out)
    }

    /// Checkpoints federated without a gap from sequence 0.
    pub fn federated_upto(&self) -> Result<u64> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(FEDERATED).map_err(|e| err(e.into()))?;
        // Records are never removed: the prefix known contiguous stays so; scan on from it.
        let from = self.fed_upto.load(Ordering::Acquire);
        let mut n = from;
        for row in t.range(from..).map_err(|e| err(e.into()))? {
            let (k, _) = row.map_err(|e| err(e.into()))?;
            if k.value() != n {
                break;
            }
            n += 1;
        }
        self.fed_upto.fetch_max(n, Ordering::AcqRel);
        Ok(n)
    }
}

/// The representative's pusher reads checkpoints from here and records the continent's
/// proofs here.
impl crate::federation_push::CheckpointSource for OrderStore {
    fn checkpoint(&self, seq: u64) -> Result<Option<Checkpoint>> {
        Ok(OrderStore::checkpoint(self, seq)?.map(|c| c.checkpoint))
    }
    fn committed(&self) -> watch::Receiver<u64> {
        self.subscribe()
    }
    fn record_federated(&self, seq: u64, proof: rpc::FederationProof) -> Result<()> {
        OrderStore::record_federated(self, seq, &proof.encode(), crate::runtime::now_ms())
    }
    fn federated_upto(&self) -> u64 {
        OrderStore::federated_upto(self).unwrap_or_else(|e| {
            tracing::error!(error = %e, "order store: federation records unreadable");
            0
        })
    }
    fn epochs(&self) -> Result<Vec<crate::federation_push::CommitteeEpoch>> {
        OrderStore::epochs(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::consensus::{Committee, Consensus, ConsensusConfig, TestSigner, TestVerifier};

    /// Commits a few checkpoints with one honest single-member committee.
    pub(crate) fn commits(items: Vec<BatchItem>) -> Vec<CommittedSubDag> {
        let signer = TestSigner::new(1);
        let committee =
            Committee::equal(vec![dag_core::Signer::public_key(&signer).to_vec()]).unwrap();
        let mut c =
            Consensus::new(committee, signer, TestVerifier, ConsensusConfig::default()).unwrap();
        c.add_payload(items);
        let mut out = Vec::new();
        let mut now = 0;
        let mut outputs = c.start(now);
        for _ in 0..200 {
            for o in outputs.drain(..) {
                if let dag_core::consensus::Output::Committed(s) = o {
                    out.push(s);
                }
            }
            now += 100;
            outputs = c.tick(now);
        }
        out
    }

    #[test]
    fn a_follower_store_applies_what_a_member_ordered_to_the_same_records() {
        let ids: Vec<TxId> = (0..6u8).map(|i| TxId::from_bytes([i; 32])).collect();
        let mut items: Vec<BatchItem> = ids.iter().map(|i| BatchItem::Tx(*i)).collect();
        items.push(BatchItem::Tx(ids[0])); // a duplicate: the first position stands
        let subs = commits(items);
        let dir = tempfile::tempdir().unwrap();
        let member = OrderStore::open(&dir.path().join("member.redb")).unwrap();
        let follower = OrderStore::open(&dir.path().join("follower.redb")).unwrap();
        for s in &subs {
            member.apply(s, 7).unwrap();
        }
        assert!(member.ordered(subs.len() as u64).unwrap().is_none());
        // Out of order is refused; in order everything lands as on the member.
        if subs.len() > 1 {
            let second = member.ordered(1).unwrap().unwrap();
            assert!(follower.apply_ordered(&second, 9).is_err());
        }
        for seq in 0..subs.len() as u64 {
            let o = member.ordered(seq).unwrap().unwrap();
            o.check(0).unwrap();
            follower.apply_ordered(&o, 9).unwrap();
            assert!(follower.apply_ordered(&o, 9).unwrap().replay);
        }
        assert_eq!(follower.committed(), member.committed());
        for seq in 0..subs.len() as u64 {
            assert_eq!(follower.ordered(seq).unwrap(), member.ordered(seq).unwrap());
            assert_eq!(
                follower.leader_time(seq).unwrap(),
                member.leader_time(seq).unwrap()
            );
        }
        for id in &ids {
            let (a, b) = (
                member.ordering(id).unwrap().unwrap(),
                follower.ordering(id).unwrap().unwrap(),
            );
            assert_eq!((a.sequence, a.batch), (b.sequence, b.batch));
            assert_eq!(b.committed_at_ms, 9);
        }
    }

    #[test]
    fn applies_once_and_answers_positions() {
        let ids: Vec<TxId> = (0..5u8).map(|i| TxId::from_bytes([i; 32])).collect();
        let subs = commits(ids.iter().map(|i| BatchItem::Tx(*i)).collect());
        assert!(!subs.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let store = OrderStore::open(&dir.path().join("order.redb")).unwrap();
        let mut txs = 0;
        for s in &subs {
            txs += store.apply(s, 7).unwrap().txs;
        }
        assert_eq!(txs, 5);
        // Replays change nothing.
        assert!(store.apply(&subs[0], 9).unwrap().replay);
        let o = store.ordering(&ids[3]).unwrap().unwrap();
        assert_eq!(o.committed_at_ms, 7);
        let leader = subs[0].batches.last().unwrap().batch().header.timestamp_ms;
        assert_eq!(store.leader_time(0).unwrap(), Some(leader));
        let header = store.batch(&o.batch).unwrap().unwrap();
        assert!(header.items.contains(&BatchItem::Tx(ids[3])));
        let cp = store.checkpoint(o.sequence).unwrap().unwrap();
        assert!(cp.checkpoint.batches.contains(&o.batch));
        assert!(
            store
                .ordering(&TxId::from_bytes([99; 32]))
                .unwrap()
                .is_none()
        );
        // A gap is refused.
        let n = store.committed();
        let mut later = subs[0].clone();
        later.checkpoint.sequence = n + 1;
        assert!(store.apply(&later, 1).is_err());
        // Federation records and the gap-free prefix.
        assert_eq!(store.federated_upto().unwrap(), 0);
        store.record_federated(0, b"proof", 11).unwrap();
        assert_eq!(store.federated(0).unwrap(), Some((b"proof".to_vec(), 11)));
        assert_eq!(store.federated_upto().unwrap(), 1);
        // Reopen: everything is still there.
        drop(store);
        let store = OrderStore::open(&dir.path().join("order.redb")).unwrap();
        assert_eq!(store.committed(), n);
        assert!(store.ordering(&ids[0]).unwrap().is_some());
    }

    #[test]
    fn epochs_are_recorded_once_and_survive_reopen() {
        use crate::federation_push::{CheckpointSource, CommitteeEpoch};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let store = OrderStore::open(&path).unwrap();
        assert!(store.epochs().unwrap().is_empty());
        let genesis = vec![(vec![1u8; 40], 1u64), (vec![2u8; 40], 1)];
        let next = vec![(vec![2u8; 40], 3u64), (vec![3u8; 40], 2)];
        store.record_epoch(0, 0, &genesis).unwrap();
        store.record_epoch(1, 12, &next).unwrap();
        // The same record again is a no-op; another start or committee is refused.
        store.record_epoch(1, 12, &next).unwrap();
        assert!(store.record_epoch(1, 13, &next).is_err());
        assert!(store.record_epoch(0, 0, &next).is_err());
        let want = vec![
            CommitteeEpoch {
                epoch: 0,
                first_seq: 0,
                members: genesis.clone(),
            },
            CommitteeEpoch {
                epoch: 1,
                first_seq: 12,
                members: next.clone(),
            },
        ];
        assert_eq!(store.epochs().unwrap(), want);
        drop(store);
        let store = OrderStore::open(&path).unwrap();
        assert_eq!(CheckpointSource::epochs(&store).unwrap(), want);
    }

    #[test]
    fn the_handover_at_an_epoch_start_continues_the_previous_checkpoint() {
        use crate::federation_push::CheckpointSource;
        let subs = commits(vec![BatchItem::Tx(TxId::from_bytes([1; 32]))]);
        assert!(subs.len() >= 3, "need a few checkpoints");
        let dir = tempfile::tempdir().unwrap();
        let store = OrderStore::open(&dir.path().join("order.redb")).unwrap();
        for s in &subs {
            store.apply(s, 1).unwrap();
        }
        let city = Hash32([7; 32]);
        let members = vec![(vec![9u8; 40], 5u64)];
        store.record_epoch(0, 0, &[(vec![8u8; 40], 1)]).unwrap();
        store.record_epoch(1, 2, &members).unwrap();
        let h = store.handover_at(city, 2).unwrap().unwrap();
        assert_eq!(h.city, city);
        assert_eq!(h.epoch, 1);
        assert_eq!(h.last_sequence, 1);
        assert_eq!(
            h.last_running_hash,
            store.checkpoint(1).unwrap().unwrap().checkpoint.hash()
        );
        assert_eq!(h.members, members);
        // No epoch starts at 1; sequence 0 is genesis.
        assert!(store.handover_at(city, 1).unwrap().is_none());
        assert!(store.handover_at(city, 0).unwrap().is_none());
    }
}

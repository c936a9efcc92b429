//! Epochs of a running representative: when the committed sequence ends a term, the
//! consensus instance of epoch `e` is retired and one for `e + 1` starts with the elected
//! committee (see the module docs of [`super`], "Epochs").
//!
//! - [`EpochPlan`]: the term length and where the next committee comes from.
//! - [`TermClock`]: the boundary rule, the same as dpos's `advance_term` applied by the
//!   execution feed: a checkpoint's agreed time is the running maximum of the committed
//!   leaders' timestamps; term 0 starts at checkpoint 0's time, term `e + 1` at the time of
//!   epoch `e`'s last checkpoint; epoch `e` ends with the first checkpoint whose time is at
//!   or after its start plus the term length.
//! - [`EpochState`]: what a restarted representative needs to rebuild the instance of its
//!   current epoch (`<data_dir>/consensus-epoch.bin`, written before the instance starts);
//!   the records of epoch `e ≥ 1` live in `consensus-epoch-<e>.redb`.

use crate::{Error, Result};
use dag_core::consensus::{ChainStart, Checkpoint, Committee};
use dag_core::{DecodeError, Hash32, Reader, Writer};
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The end of an epoch, handed to [`EpochPlan::next_committee`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochEnd {
    /// The epoch that ended.
    pub epoch: u64,
    /// Its last checkpoint (the new epoch's chain continues after it).
    pub last: Checkpoint,
    /// That checkpoint's agreed time (the next term's start).
    pub at_ms: u64,
    /// The committee that ran it.
    pub committee: Committee,
}

/// The committee of the next epoch and where its members serve consensus.
#[derive(Debug, Clone)]
pub struct NextEpoch {
    /// The committee (the same on every member).
    pub committee: Committee,
    /// Consensus addresses of its members (members this node has no channel to yet are
    /// dialled at the epoch start; e.g. a newcomer elected from standby).
    pub addresses: std::collections::BTreeMap<dag_core::NodeId, String>,
}

/// Finds the committee of the epoch after an [`EpochEnd`] (e.g. waits until dpos applied
/// the last checkpoint and reads the elected set). Must answer the same on every member.
pub type NextCommittee =
    Arc<dyn Fn(EpochEnd) -> BoxFuture<'static, Result<NextEpoch>> + Send + Sync>;

/// How a representative changes committee. Without a plan it runs one committee forever.
#[derive(Clone)]
pub struct EpochPlan {
    /// Length of a term (ms): dpos's `term_ms`.
    pub term_ms: u64,
    /// The next epoch's committee.
    pub next_committee: NextCommittee,
}

impl std::fmt::Debug for EpochPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochPlan")
            .field("term_ms", &self.term_ms)
            .finish_non_exhaustive()
    }
}

/// The boundary rule over the committed sequence (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TermClock {
    /// When the current term started (None: before checkpoint 0).
    pub started_ms: Option<u64>,
    /// The last checkpoint's agreed time.
    pub at_ms: u64,
}

impl TermClock {
    /// A clock for a term that started at `started_ms` (an epoch ≥ 1).
    pub fn started_at(started_ms: u64) -> Self {
        TermClock {
            started_ms: Some(started_ms),
            at_ms: started_ms,
        }
    }

    /// Takes one committed checkpoint with its leader's timestamp; true if it ends the
    /// term (`term_ms` after its start).
    pub fn observe(&mut self, leader_ms: u64, term_ms: u64) -> bool {
        self.at_ms = self.at_ms.max(leader_ms);
        let start = *self.started_ms.get_or_insert(self.at_ms);
        self.at_ms >= start.saturating_add(term_ms)
    }
}

/// A representative's current epoch, persisted so a restart rebuilds the same instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochState {
    /// The epoch.
    pub epoch: u64,
    /// Where its checkpoint chain starts.
    pub start: ChainStart,
    /// When its term started (the previous epoch's last checkpoint time).
    pub term_started_ms: u64,
    /// Its committee: (public key, stake) in index order.
    pub members: Vec<(Vec<u8>, u64)>,
    /// Set when the epoch ended and this member is not in the next committee: the
    /// sequence of the epoch's last checkpoint (it stays retired after a restart).
    pub left_after: Option<u64>,
}

const MAGIC: &[u8; 4] = b"CEP1";

impl EpochState {
    /// The committee of the epoch (tagged with it).
    pub fn committee(&self) -> Result<Committee> {
        Committee::new(self.members.clone())
            .map(|c| c.with_epoch(self.epoch))
            .ok_or_else(|| Error::Membership("persisted epoch committee is invalid".into()))
    }

    /// The state of `committee`'s epoch, starting after `end`.
    pub fn after(end: &EpochEnd, committee: &Committee) -> Self {
        EpochState {
            epoch: end.epoch + 1,
            start: ChainStart::after(&end.last),
            term_started_ms: end.at_ms,
            members: committee
                .authorities()
                .iter()
                .map(|a| (a.public_key.clone(), a.stake))
                .collect(),
            left_after: None,
        }
    }

    /// `MAGIC ‖ epoch ‖ next_sequence ‖ prev_hash ‖ term_started_ms ‖ left flag u8 (‖ seq)
    /// ‖ count u16 ‖ (key u16-len ‖ stake u64)*`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(MAGIC)
            .u64(self.epoch)
            .u64(self.start.next_sequence)
            .raw(&self.start.prev_hash.0)
            .u64(self.term_started_ms);
        match self.left_after {
            None => {
                w.u8(0);
            }
            Some(s) => {
                w.u8(1).u64(s);
            }
        }
        w.u16(u16::try_from(self.members.len()).unwrap_or(u16::MAX));
        for (k, s) in &self.members {
            w.bytes_u16(k).u64(*s);
        }
        w.finish()
    }

    /// Strict decoding of [`EpochState::encode`].
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut r2 = Reader::new(bytes);
        let magic = r2.take(4, "epoch state magic")?;
        if magic != MAGIC {
            return Err(DecodeError::Invalid {
                field: "epoch state magic",
                reason: "expected CEP1",
            });
        }
        let epoch = r2.u64("epoch")?;
        let next_sequence = r2.u64("next_sequence")?;
        let prev_hash = Hash32(r2.bytes32("prev_hash")?);
        let term_started_ms = r2.u64("term_started_ms")?;
        let left_after = match r2.u8("left flag")? {
            0 => None,
            1 => Some(r2.u64("left_after")?),
            _ => {
                return Err(DecodeError::Invalid {
                    field: "left flag",
                    reason: "expected 0 or 1",
                });
            }
        };
        let n = r2.count_u16("members", 1024)?;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let k = r2.bytes_u16("member key", 8192)?.to_vec();
            let s = r2.u64("member stake")?;
            members.push((k, s));
        }
        r2.finish()?;
        Ok(EpochState {
            epoch,
            start: ChainStart {
                next_sequence,
                prev_hash,
            },
            term_started_ms,
            members,
            left_after,
        })
    }

    /// `<data_dir>/consensus-epoch.bin`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("consensus-epoch.bin")
    }

    /// The records of `epoch`: `consensus.redb` for epoch 0, else `consensus-epoch-<e>.redb`.
    pub fn records_path(data_dir: &Path, epoch: u64) -> PathBuf {
        if epoch == 0 {
            data_dir.join("consensus.redb")
        } else {
            data_dir.join(format!("consensus-epoch-{epoch}.redb"))
        }
    }

    /// Reads the persisted state (None on a first start or in epoch 0).
    pub fn load(data_dir: &Path) -> Result<Option<Self>> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => Self::decode(&bytes).map(Some).map_err(|e| {
                Error::Membership(format!("{}: corrupt epoch state: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Membership(format!("{}: {e}", path.display()))),
        }
    }

    /// Writes durably: a temporary file, fsync, rename, fsync of the directory.
    pub fn store(&self, data_dir: &Path) -> Result<()> {
        let path = Self::path(data_dir);
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| Error::Membership(format!("{}: {e}", path.display()));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&self.encode()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Ok(d) = std::fs::File::open(data_dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_clock_is_dpos_advance_term_over_leader_times() {
        let mut c = TermClock::default();
        // Term 0 starts at checkpoint 0's time; times are a running maximum.
        assert!(!c.observe(1_000, 500));
        assert!(!c.observe(900, 500)); // an older leader time does not go back
        assert_eq!(c.at_ms, 1_000);
        assert!(!c.observe(1_499, 500));
        assert!(c.observe(1_500, 500)); // at the end: the boundary
        let mut next = TermClock::started_at(c.at_ms);
        assert!(!next.observe(1_600, 500));
        assert!(next.observe(2_100, 500));
    }

    #[test]
    fn epoch_state_round_trips_and_refuses_garbage() {
        let s = EpochState {
            epoch: 3,
            start: ChainStart {
                next_sequence: 42,
                prev_hash: Hash32([9; 32]),
            },
            term_started_ms: 77,
            members: vec![(vec![1; 5], 2), (vec![2; 5], 1)],
            left_after: Some(41),
        };
        assert_eq!(EpochState::decode(&s.encode()).unwrap(), s);
        let none = EpochState {
            left_after: None,
            ..s.clone()
        };
        assert_eq!(EpochState::decode(&none.encode()).unwrap(), none);
        let mut bad = s.encode();
        bad[0] = b'X';
        assert!(EpochState::decode(&bad).is_err());
        let mut long = s.encode();
        long.push(0);
        assert!(EpochState::decode(&long).is_err());
        let c = s.committee().unwrap();
        assert_eq!(c.epoch(), 3);
        assert_eq!(c.size(), 2);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(EpochState::load(dir.path()).unwrap(), None);
        s.store(dir.path()).unwrap();
        assert_eq!(EpochState::load(dir.path()).unwrap(), Some(s));
    }
}

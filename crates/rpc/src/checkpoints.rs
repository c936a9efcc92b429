//! Committed checkpoints as a representative's order store holds them (`GetCheckpoints`):
//! what a standby node follows until it is elected into the committee. The conversions
//! are strict (a malformed answer is a [`ConvertError`]); [`OrderedCheckpoint::check`]
//! verifies that the batch headers are the checkpoint's.

use crate::convert::ConvertError;
use crate::pb;
use dag_core::consensus::{BatchHeader, Checkpoint};
use dag_core::{DecodeError, Hash32, Writer};

/// Most checkpoints one `GetCheckpoints` answer carries.
pub const MAX_CHECKPOINTS_PER_READ: u32 = 256;

/// Most batch digests a checkpoint in an answer may name (the decode bound).
pub const MAX_SYNCED_BATCHES: usize = 1 << 16;

/// One committed checkpoint with what executing it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The committed leader batch's timestamp: the checkpoint's agreed time.
    pub leader_time_ms: u64,
    /// The headers of the committed batches that carry txs, in checkpoint order.
    pub batches: Vec<BatchHeader>,
}

impl OrderedCheckpoint {
    /// A digest of everything in it (checkpoint, leader time, headers): two representatives
    /// that committed the same checkpoint answer with the same digest.
    pub fn digest(&self) -> Hash32 {
        let mut w = Writer::default();
        w.raw(&self.checkpoint.hash().0).u64(self.leader_time_ms);
        w.u32(u32::try_from(self.batches.len()).unwrap_or(u32::MAX));
        for b in &self.batches {
            w.raw(b.digest().as_bytes());
        }
        Hash32::digest(w.as_slice())
    }

    /// Checks the headers belong to the checkpoint: each is one of its batches, in its
    /// order, none twice, and of `epoch`.
    pub fn check(&self, epoch: u64) -> Result<(), DecodeError> {
        let mut pos = 0usize;
        for h in &self.batches {
            if h.epoch != epoch {
                return Err(DecodeError::Invalid {
                    field: "batch header",
                    reason: "of another epoch",
                });
            }
            let d = h.digest();
            let Some(i) = self.checkpoint.batches[pos..].iter().position(|b| *b == d) else {
                return Err(DecodeError::Invalid {
                    field: "batch header",
                    reason: "not a batch of the checkpoint (or out of order)",
                });
            };
            pos += i + 1;
        }
        Ok(())
    }
}

/// A `GetCheckpoints` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckpointRange {
    /// Consecutive checkpoints from the requested sequence (may be empty).
    pub checkpoints: Vec<OrderedCheckpoint>,
    /// How many checkpoints the answering representative has committed.
    pub committed: u64,
}

impl From<&OrderedCheckpoint> for pb::OrderedCheckpoint {
    fn from(c: &OrderedCheckpoint) -> Self {
        pb::OrderedCheckpoint {
            checkpoint: c.checkpoint.encode(),
            leader_time_ms: c.leader_time_ms,
            batch_headers: c.batches.iter().map(BatchHeader::encode).collect(),
        }
    }
}

impl TryFrom<pb::OrderedCheckpoint> for OrderedCheckpoint {
    type Error = ConvertError;
    fn try_from(p: pb::OrderedCheckpoint) -> Result<Self, ConvertError> {
        Ok(OrderedCheckpoint {
            checkpoint: Checkpoint::decode(&p.checkpoint, MAX_SYNCED_BATCHES)?,
            leader_time_ms: p.leader_time_ms,
            batches: p
                .batch_headers
                .iter()
                .map(|b| BatchHeader::decode(b))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<&CheckpointRange> for pb::GetCheckpointsResponse {
    fn from(r: &CheckpointRange) -> Self {
        pb::GetCheckpointsResponse {
            checkpoints: r.checkpoints.iter().map(Into::into).collect(),
            committed: r.committed,
        }
    }
}

impl TryFrom<pb::GetCheckpointsResponse> for CheckpointRange {
    type Error = ConvertError;
    fn try_from(p: pb::GetCheckpointsResponse) -> Result<Self, ConvertError> {
        if p.checkpoints.len() > MAX_CHECKPOINTS_PER_READ as usize {
            return Err(DecodeError::TooLong {
                field: "checkpoints",
                len: p.checkpoints.len(),
                max: MAX_CHECKPOINTS_PER_READ as usize,
            }
            .into());
        }
        Ok(CheckpointRange {
            checkpoints: p
                .checkpoints
                .into_iter()
                .map(OrderedCheckpoint::try_from)
                .collect::<Result<_, _>>()?,
            committed: p.committed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag_core::consensus::{BatchDigest, BatchItem};
    use dag_core::{NodeId, TxId};

    fn header(epoch: u64, round: u64, tx: u8) -> BatchHeader {
        BatchHeader {
            epoch,
            author: NodeId::from_bytes([1; 32]),
            round,
            timestamp_ms: 1_000 + round,
            parents: Vec::new(),
            weak_links: Vec::new(),
            items: vec![BatchItem::Tx(TxId::from_bytes([tx; 32]))],
        }
    }

    fn ordered(epoch: u64) -> OrderedCheckpoint {
        let (a, b) = (header(epoch, 1, 1), header(epoch, 2, 2));
        OrderedCheckpoint {
            checkpoint: Checkpoint {
                sequence: 7,
                leader_round: 2,
                leader: b.digest(),
                batches: vec![BatchDigest(Hash32([9; 32])), a.digest(), b.digest()],
                prev_hash: Hash32([3; 32]),
            },
            leader_time_ms: 1_002,
            batches: vec![a, b],
        }
    }

    #[test]
    fn round_trips_and_checks_its_headers() {
        let c = ordered(2);
        let range = CheckpointRange {
            checkpoints: vec![c.clone()],
            committed: 8,
        };
        let back = CheckpointRange::try_from(pb::GetCheckpointsResponse::from(&range)).unwrap();
        assert_eq!(back, range);
        assert_eq!(back.checkpoints[0].digest(), c.digest());
        c.check(2).unwrap();
        // Another epoch's headers, headers out of order, a header not in the checkpoint.
        assert!(c.check(3).is_err());
        let mut swapped = c.clone();
        swapped.batches.reverse();
        assert!(swapped.check(2).is_err());
        let mut foreign = c.clone();
        foreign.batches.push(header(2, 5, 5));
        assert!(foreign.check(2).is_err());
        // The digest covers the leader time and the headers.
        let mut later = c.clone();
        later.leader_time_ms += 1;
        assert_ne!(later.digest(), c.digest());
        let mut fewer = c.clone();
        fewer.batches.pop();
        assert_ne!(fewer.digest(), c.digest());
    }

    #[test]
    fn malformed_answers_are_refused() {
        let mut p = pb::GetCheckpointsResponse::from(&CheckpointRange {
            checkpoints: vec![ordered(0)],
            committed: 1,
        });
        p.checkpoints[0].batch_headers[0].push(0);
        assert!(CheckpointRange::try_from(p.clone()).is_err());
        p.checkpoints[0].checkpoint.truncate(10);
        assert!(CheckpointRange::try_from(p).is_err());
        let too_many = pb::GetCheckpointsResponse {
            checkpoints: vec![
                pb::OrderedCheckpoint::default();
                MAX_CHECKPOINTS_PER_READ as usize + 1
            ],
            committed: 0,
        };
        assert!(matches!(
            CheckpointRange::try_from(too_many),
            Err(ConvertError::Invalid(DecodeError::TooLong { .. }))
        ));
    }
}

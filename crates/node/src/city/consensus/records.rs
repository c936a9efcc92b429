//! A representative's durable consensus records (`<data_dir>/consensus.redb`): every
//! [`Record`] the driver asks to persist, in order, read back whole on restart so the driver
//! recovers without proposing or voting twice in a round.

use crate::runtime::db_err;
use crate::{Error, Result};
use dag_core::consensus::{BatchDigest, Certificate, Record, SignedBatch};
use dag_core::{DecodeError, Hash32, NodeId, Reader, Writer};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};

/// Record sequence number → encoded [`Record`].
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");

pub(super) fn encode_record(r: &Record) -> Vec<u8> {
    let mut w = Writer::default();
    match r {
        Record::Proposed(b) => {
            w.u8(0).raw(&b.encode());
        }
        Record::Voted {
            author,
            round,
            digest,
        } => {
            w.u8(1)
                .raw(author.as_bytes())
                .u64(*round)
                .raw(digest.as_bytes());
        }
        Record::Stored(c) => {
            w.u8(2).raw(&c.encode());
        }
    }
    w.finish()
}

pub(super) fn decode_record(bytes: &[u8]) -> std::result::Result<Record, DecodeError> {
    let (&tag, rest) = bytes.split_first().ok_or(DecodeError::Truncated {
        field: "record tag",
        needed: 1,
        had: 0,
    })?;
    Ok(match tag {
        0 => Record::Proposed(SignedBatch::decode(rest)?),
        1 => {
            let mut r = Reader::new(rest);
            let author = NodeId::from_bytes(r.bytes32("author")?);
            let round = r.u64("round")?;
            let digest = BatchDigest(Hash32(r.bytes32("digest")?));
            r.finish()?;
            Record::Voted {
                author,
                round,
                digest,
            }
        }
        2 => Record::Stored(Certificate::decode(rest)?),
        _ => {
            return Err(DecodeError::Invalid {
                field: "record tag",
                reason: "expected 0..=2",
            });
        }
    })
}

pub(super) struct RecordStore {
    db: Database,
    path: PathBuf,
    next: u64,
}

impl RecordStore {
    /// Opens the store and reads every record back.
    pub(super) fn open(path: &Path) -> Result<(Self, Vec<Record>)> {
        let db = crate::runtime::open_db(path, |w| {
            w.open_table(RECORDS)?;
            Ok(())
        })?;
        let err = db_err(path);
        let mut records = Vec::new();
        let mut next = 0;
        {
            let r = db.begin_read().map_err(|e| err(e.into()))?;
            let t = r.open_table(RECORDS).map_err(|e| err(e.into()))?;
            for row in t.iter().map_err(|e| err(e.into()))? {
                let (k, v) = row.map_err(|e| err(e.into()))?;
                next = k.value() + 1;
                records.push(
                    decode_record(v.value()).map_err(|source| Error::CorruptRecord {
                        path: path.to_path_buf(),
                        index: k.value(),
                        source,
                    })?,
                );
            }
        }
        Ok((
            RecordStore {
                db,
                path: path.to_path_buf(),
                next,
            },
            records,
        ))
    }

    /// Appends `records` in one durable transaction.
    pub(super) fn append(&mut self, records: &[Vec<u8>]) -> Result<()> {
        let err = db_err(&self.path);
        let w = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut t = w.open_table(RECORDS).map_err(|e| err(e.into()))?;
            for (i, r) in records.iter().enumerate() {
                t.insert(self.next + i as u64, r.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
        }
        w.commit().map_err(|e| err(e.into()))?;
        self.next += records.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = Record::Voted {
            author: NodeId::from_bytes([1; 32]),
            round: 9,
            digest: BatchDigest(Hash32([2; 32])),
        };
        assert_eq!(decode_record(&encode_record(&r)).unwrap(), r);
        assert!(decode_record(&[7]).is_err());
        assert!(decode_record(&[]).is_err());
    }
}

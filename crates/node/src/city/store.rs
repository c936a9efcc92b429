//! The city node's durable store of admitted txs, on redb, with group commit.
//!
//! Admission is decided inside one write transaction per group: a tx is refused if its id is
//! already stored (replay) or its (sender, nonce) was used by another tx. Each redb commit is
//! durable (fsync), so many admissions share one commit; a caller is answered only after the
//! commit that holds its tx, so nothing acknowledged is lost.

use crate::runtime::db_err;
use crate::{Error, Result};
use dag_core::{SignedTx, TxId, VerifiedTx};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// tx id → canonical signed tx bytes.
const TXS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("txs");
/// sender (32) ‖ nonce (u64 BE) → tx id.
const NONCES: TableDefinition<&[u8; 40], &[u8; 32]> = TableDefinition::new("nonces");

/// Most admissions committed in one redb transaction.
const MAX_GROUP: usize = 2048;

/// Why an admission was refused by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// This tx id is already stored.
    DuplicateTx,
    /// The (sender, nonce) pair belongs to the stored tx `other`.
    NonceReused {
        /// The tx that used the nonce first.
        other: TxId,
    },
}

fn nonce_key(tx: &SignedTx) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(tx.tx.sender.as_bytes());
    k[32..].copy_from_slice(&tx.tx.nonce.to_be_bytes());
    k
}

struct WriteReq {
    tx: VerifiedTx,
    reply: oneshot::Sender<Result<std::result::Result<(), Conflict>>>,
}

/// Durable store of admitted txs. Cloning shares the same database and writer; when the
/// last clone is dropped the writer finishes its group and the database file is released.
#[derive(Clone)]
pub struct TxStore {
    db: Arc<Database>,
    writer: mpsc::Sender<WriteReq>,
    path: Arc<std::path::PathBuf>,
    // Declared last: fields drop in order, so the writer's sender above is gone (and the
    // thread can finish) before the closer joins it.
    _closer: Arc<Closer>,
}

/// Joins the writer thread when the last handle goes, so reopening the same file works.
struct Closer {
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for TxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxStore").field("path", &self.path).finish()
    }
}

impl TxStore {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self> {
        let db = crate::runtime::open_db(path, |w| {
            w.open_table(TXS)?;
            w.open_table(NONCES)?;
            Ok(())
        })?;
        let db = Arc::new(db);
        let (writer, rx) = mpsc::channel(MAX_GROUP * 4);
        let thread_db = db.clone();
        let thread_path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("txstore-writer".into())
            .spawn(move || writer_loop(thread_db, rx, thread_path))
            .map_err(|e| Error::Io {
                path: path.to_path_buf(),
                source: e,
            })?;
        Ok(TxStore {
            db,
            writer,
            path: Arc::new(path.to_path_buf()),
            _closer: Arc::new(Closer {
                thread: parking_lot::Mutex::new(Some(thread)),
            }),
        })
    }

    /// Admits a verified tx durably, unless it is a replay. Returns after the commit.
    pub async fn admit(&self, tx: VerifiedTx) -> Result<std::result::Result<(), Conflict>> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(WriteReq { tx, reply })
            .await
            .map_err(|_| Error::StoreClosed)?;
        rx.await.map_err(|_| Error::StoreClosed)?
    }

    /// Read-only replay check (the writer re-checks authoritatively).
    pub fn precheck(&self, tx: &SignedTx, id: &TxId) -> Result<std::result::Result<(), Conflict>> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let txs = r.open_table(TXS).map_err(|e| err(e.into()))?;
        if txs.get(id.as_bytes()).map_err(|e| err(e.into()))?.is_some() {
            return Ok(Err(Conflict::DuplicateTx));
        }
        let nonces = r.open_table(NONCES).map_err(|e| err(e.into()))?;
        if let Some(other) = nonces.get(&nonce_key(tx)).map_err(|e| err(e.into()))? {
            return Ok(Err(Conflict::NonceReused {
                other: TxId::from_bytes(*other.value()),
            }));
        }
        Ok(Ok(()))
    }

    /// Reads a stored tx, checking that its bytes hash to the id asked for.
    pub fn get(&self, id: &TxId) -> Result<Option<SignedTx>> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let txs = r.open_table(TXS).map_err(|e| err(e.into()))?;
        let Some(v) = txs.get(id.as_bytes()).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        let signed = SignedTx::decode(v.value()).map_err(|e| Error::Corrupt {
            id: *id,
            reason: e.to_string(),
        })?;
        if signed.id() != *id {
            return Err(Error::Corrupt {
                id: *id,
                reason: format!("stored bytes hash to {}", signed.id()),
            });
        }
        Ok(Some(signed))
    }

    /// Number of stored txs.
    pub fn len(&self) -> Result<u64> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let txs = r.open_table(TXS).map_err(|e| err(e.into()))?;
        txs.len().map_err(|e| err(e.into()))
    }

    /// Every stored tx id, in id order (a full scan: for start-up work, not the hot path).
    pub fn ids(&self) -> Result<Vec<TxId>> {
        let err = db_err(&self.path);
        let r = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = r.open_table(TXS).map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err(e.into()))? {
            let (k, _) = row.map_err(|e| err(e.into()))?;
            out.push(TxId::from_bytes(*k.value()));
        }
        Ok(out)
    }

    /// True if nothing is stored.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

type Outcome = std::result::Result<(), Conflict>;

fn writer_loop(db: Arc<Database>, mut rx: mpsc::Receiver<WriteReq>, path: std::path::PathBuf) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        match commit_group(&db, &group) {
            Ok(outcomes) => {
                for (req, out) in group.drain(..).zip(outcomes) {
                    let _ = req.reply.send(Ok(out));
                }
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "txstore commit failed; group refused");
                for req in group.drain(..) {
                    let _ = req.reply.send(Err(Error::StoreCommit {
                        path: path.clone(),
                        reason: e.to_string(),
                    }));
                }
            }
        }
    }
}

fn commit_group(
    db: &Database,
    group: &[WriteReq],
) -> std::result::Result<Vec<Outcome>, redb::Error> {
    let w = db.begin_write()?;
    let mut outcomes = Vec::with_capacity(group.len());
    {
        let mut txs = w.open_table(TXS)?;
        let mut nonces = w.open_table(NONCES)?;
        let mut seen_ids = HashSet::with_capacity(group.len());
        let mut seen_nonces: std::collections::HashMap<[u8; 40], TxId> =
            std::collections::HashMap::with_capacity(group.len());
        for req in group {
            let id = req.tx.id();
            let signed = req.tx.signed();
            let nk = nonce_key(signed);
            let outcome = if seen_ids.contains(&id) || txs.get(id.as_bytes())?.is_some() {
                Err(Conflict::DuplicateTx)
            } else if let Some(other) = seen_nonces.get(&nk) {
                Err(Conflict::NonceReused { other: *other })
            } else if let Some(other) = nonces.get(&nk)? {
                Err(Conflict::NonceReused {
                    other: TxId::from_bytes(*other.value()),
                })
            } else {
                txs.insert(id.as_bytes(), signed.encode().as_slice())?;
                nonces.insert(&nk, id.as_bytes())?;
                seen_ids.insert(id);
                seen_nonces.insert(nk, id);
                Ok(())
            };
            outcomes.push(outcome);
        }
    }
    w.commit()?;
    Ok(outcomes)
}

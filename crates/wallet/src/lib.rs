//! # wallet
//!
//! The client a person or a DApp developer starts with: an ML-DSA-87 key file
//! ([`new_key`], [`load_key`]), an account's balance and nonce as a city representative
//! executed it ([`balance`]), and a transfer signed here, submitted over gRPC and followed
//! until the committee executed it ([`send`]: Applied, or the typed failure every
//! representative agrees on).
//!
//! Nothing secret leaves the device: the key file is written mode 0600 and only signatures
//! travel.

use dag_core::{AccountId, CityId, Position, PositionMethod, Tx, TxId};
use pqc::Keypair;
use rpc::{AccountInfo, CityClient, ExecutionOutcome, TxExecution, TxState};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Result with the wallet's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong in the wallet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key file exists and overwriting was not asked for.
    #[error("key file {0} exists (pass force to overwrite)")]
    KeyExists(PathBuf),
    /// The key file could not be written or read.
    #[error("key file {path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// pqc's error.
        #[source]
        source: pqc::Error,
    },
    /// A city id or position is not valid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which input.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The node refused the transfer, or the call failed.
    #[error("node {addr}: {source}")]
    Node {
        /// The node's address.
        addr: String,
        /// rpc's error.
        #[source]
        source: rpc::ClientError,
    },
    /// The transfer was not executed within the wait.
    #[error("tx {tx} was not executed within {waited:?} (last state {state:?})")]
    NotExecuted {
        /// The tx.
        tx: TxId,
        /// How long the wallet waited.
        waited: Duration,
        /// The last state the node reported.
        state: Option<TxState>,
    },
}

/// Creates a key file at `path` (mode 0600) and returns its account id.
pub fn new_key(path: &Path, force: bool) -> Result<AccountId> {
    if path.exists() && !force {
        return Err(Error::KeyExists(path.to_path_buf()));
    }
    let kp = Keypair::generate();
    kp.save(path).map_err(|source| Error::Key {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(kp.account_id())
}

/// Loads the key file at `path`.
pub fn load_key(path: &Path) -> Result<Keypair> {
    Keypair::load(path).map_err(|source| Error::Key {
        path: path.to_path_buf(),
        source,
    })
}

async fn connect(addr: &str) -> Result<CityClient> {
    CityClient::connect(addr)
        .await
        .map_err(|source| Error::Node {
            addr: addr.to_string(),
            source,
        })
}

/// Balance and nonce of `account` at the representative `addr`.
pub async fn balance(addr: &str, account: AccountId) -> Result<AccountInfo> {
    connect(addr)
        .await?
        .account(account)
        .await
        .map_err(|source| Error::Node {
            addr: addr.to_string(),
            source,
        })
}

/// A transfer to send.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Receiver.
    pub to: AccountId,
    /// Amount in the smallest unit.
    pub amount: u64,
    /// Nonce; `None`: the account's next nonce as the node reports it.
    pub nonce: Option<u64>,
    /// The city the sender is in.
    pub city: String,
    /// The sender's position (degrees).
    pub lat: f64,
    /// The sender's position (degrees).
    pub lon: f64,
    /// How long to wait for execution.
    pub wait: Duration,
}

/// What [`send`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The tx id.
    pub tx: TxId,
    /// The nonce used.
    pub nonce: u64,
    /// How the committee executed it.
    pub execution: TxExecution,
}

impl Sent {
    /// Whether the amount moved.
    pub fn applied(&self) -> bool {
        self.execution.outcome == ExecutionOutcome::Applied
    }
}

/// Signs `t` with `key`, submits it to the representative `addr` and waits until that
/// representative executed it. The clock for the tx timestamp is the caller's
/// (`now_ms`).
pub async fn send(addr: &str, key: &Keypair, t: &Transfer, now_ms: u64) -> Result<Sent> {
    let node_err = |source| Error::Node {
        addr: addr.to_string(),
        source,
    };
    let city = CityId::new(t.city.clone()).map_err(|e| Error::Invalid {
        field: "city",
        reason: e.to_string(),
    })?;
    let position = Position::from_degrees(t.lat, t.lon).map_err(|e| Error::Invalid {
        field: "position",
        reason: e.to_string(),
    })?;
    let client = connect(addr).await?;
    let nonce = match t.nonce {
        Some(n) => n,
        None => {
            client
                .account(key.account_id())
                .await
                .map_err(node_err)?
                .nonce
        }
    };
    let tx = Tx::fresh(
        key.account_id(),
        t.to,
        t.amount,
        nonce,
        now_ms,
        city,
        position,
        PositionMethod::Gps,
    );
    let signed = pqc::sign_tx(tx, key);
    // UNAVAILABLE (Held's promise not kept in time; nothing of the tx stayed) is submitted
    // again with the default backoff.
    let id = client
        .submit_retrying(&signed, &resilience::RetryPolicy::default())
        .await
        .map_err(node_err)?
        .tx_id;
    let start = tokio::time::Instant::now();
    let mut state = None;
    loop {
        if let Some(execution) = client.execution(id).await.map_err(node_err)? {
            return Ok(Sent {
                tx: id,
                nonce,
                execution,
            });
        }
        if let Some(r) = client.get(id).await.map_err(node_err)? {
            state = Some(r.state);
        }
        if start.elapsed() >= t.wait {
            return Err(Error::NotExecuted {
                tx: id,
                waited: t.wait,
                state,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_files_are_not_overwritten_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.key");
        let a = new_key(&p, false).unwrap();
        assert_eq!(load_key(&p).unwrap().account_id(), a);
        assert!(matches!(new_key(&p, false), Err(Error::KeyExists(_))));
        let b = new_key(&p, true).unwrap();
        assert_ne!(a, b);
        assert!(matches!(
            load_key(&dir.path().join("missing.key")),
            Err(Error::Key { .. })
        ));
    }

    #[tokio::test]
    async fn bad_inputs_are_typed_before_any_call() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.key");
        new_key(&p, false).unwrap();
        let key = load_key(&p).unwrap();
        let t = Transfer {
            to: AccountId::from_bytes([1; 32]),
            amount: 1,
            nonce: Some(0),
            city: String::new(),
            lat: 35.0,
            lon: 139.0,
            wait: Duration::from_secs(1),
        };
        // The address is never dialled: the city is checked first.
        let e = send("127.0.0.1:1", &key, &t, 0).await.unwrap_err();
        assert!(matches!(e, Error::Invalid { field: "city", .. }), "{e}");
        let e = send(
            "127.0.0.1:1",
            &key,
            &Transfer {
                city: "JP-13".into(),
                lat: 123.0,
                ..t
            },
            0,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Invalid {
                    field: "position",
                    ..
                }
            ),
            "{e}"
        );
    }
}

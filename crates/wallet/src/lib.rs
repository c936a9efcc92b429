//! # wallet
//!
//! The client a person or a DApp developer starts with: an ML-DSA-87 key file
//! ([`new_key`], [`load_key`]), an account's balance and nonce as a city representative
//! executed it ([`balance`]), and a transfer signed here, submitted over gRPC and followed
//! until it is **Completed** ([`send`]): a same-city transfer executed Applied in a
//! federated checkpoint; a cross-city one ([`Transfer::to_city`]) credited in the receiver's
//! city and settled in the sender's, with both certified proofs. A failed execution
//! ([`Error::Failed`]), a refund ([`Error::Refunded`]) or the wait running out
//! ([`Error::NotCompleted`]) is a typed error.
//!
//! Nothing secret leaves the device: the key file is written mode 0600 and only signatures
//! travel.

use dag_core::{AccountId, CityId, Position, PositionMethod, Tx, TxId};
use pqc::Keypair;
use rpc::{AccountInfo, CityClient, CrossState, CrossTx, ExecutionOutcome, TxExecution, TxState};
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
    /// The transfer did not reach Completed within the wait (it may still: the wallet
    /// stopped watching, nothing was cancelled).
    #[error(
        "tx {tx} was not completed within {waited:?} (last state {state:?}, cross-city {cross:?})"
    )]
    NotCompleted {
        /// The tx.
        tx: TxId,
        /// How long the wallet waited.
        waited: Duration,
        /// The last state the node reported.
        state: Option<TxState>,
        /// The last cross-city state, for a transfer to another city.
        cross: Option<CrossState>,
    },
    /// The committee executed the transfer and it failed: no money moved.
    #[error("tx {tx} failed in checkpoint {}: {:?} {}", execution.sequence, execution.outcome, execution.detail)]
    Failed {
        /// The tx.
        tx: TxId,
        /// The outcome every representative agrees on.
        execution: TxExecution,
    },
    /// The cross-city transfer expired in the receiver's city and was refunded here.
    #[error("tx {tx} expired in the receiver's city and was refunded to the sender")]
    Refunded {
        /// The tx.
        tx: TxId,
        /// Its cross-city record (with the receiver city's certified answer).
        cross: Box<CrossTx>,
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
    /// The receiver's city when it is not `city` (a cross-city transfer); `None`: same city.
    pub to_city: Option<String>,
    /// The sender's position (degrees).
    pub lat: f64,
    /// The sender's position (degrees).
    pub lon: f64,
    /// How long to wait for Completed.
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
    /// The state reached: [`TxState::Completed`].
    pub state: TxState,
    /// A cross-city transfer's record with both proofs (verify them with
    /// [`rpc::verify_cross_tx`]).
    pub cross: Option<CrossTx>,
}

impl Sent {
    /// Whether the amount moved.
    pub fn applied(&self) -> bool {
        self.execution.outcome == ExecutionOutcome::Applied
    }
}

/// Signs `t` with `key`, submits it to the representative `addr` (Held) and polls that
/// representative's `GetTx` until the transfer is Completed, failed, refunded or `t.wait`
/// passed. The clock for the tx timestamp is the caller's (`now_ms`).
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
    let to_city = t
        .to_city
        .as_ref()
        .map(|c| CityId::new(c.clone()))
        .transpose()
        .map_err(|e| Error::Invalid {
            field: "to_city",
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
    let mut tx = Tx::fresh(
        key.account_id(),
        t.to,
        t.amount,
        nonce,
        now_ms,
        city,
        position,
        PositionMethod::Gps,
    );
    if let Some(c) = &to_city {
        tx.payload = ledger::to_city_payload(c);
    }
    let signed = pqc::sign_tx(tx, key);
    // UNAVAILABLE (Held's promise not kept in time; nothing of the tx stayed) is submitted
    // again with the default backoff.
    let id = client
        .submit_retrying(&signed, &resilience::RetryPolicy::default())
        .await
        .map_err(node_err)?
        .tx_id;
    wait_completed(&client, id, t.wait)
        .await
        .map_err(|e| match e {
            Waited::Node(source) => node_err(source),
            Waited::Done(e) => e,
        })
        .map(|(execution, state, cross)| Sent {
            tx: id,
            nonce,
            execution,
            state,
            cross,
        })
}

enum Waited {
    Node(rpc::ClientError),
    Done(Error),
}

/// Polls `GetTx` for `id` until Completed (or a typed end).
async fn wait_completed(
    client: &CityClient,
    id: TxId,
    wait: Duration,
) -> std::result::Result<(TxExecution, TxState, Option<CrossTx>), Waited> {
    let start = tokio::time::Instant::now();
    let (mut state, mut cross_state) = (None, None);
    loop {
        let execution = client.execution(id).await.map_err(Waited::Node)?;
        if let Some(e) = &execution
            && e.outcome != ExecutionOutcome::Applied
        {
            return Err(Waited::Done(Error::Failed {
                tx: id,
                execution: e.clone(),
            }));
        }
        if let Some(r) = client.get(id).await.map_err(Waited::Node)? {
            state = Some(r.state);
            cross_state = r.cross.as_ref().map(|c| c.state);
            if let Some(c) = r.cross.as_ref().filter(|c| c.state == CrossState::Refunded) {
                return Err(Waited::Done(Error::Refunded {
                    tx: id,
                    cross: Box::new(c.clone()),
                }));
            }
            if let (TxState::Completed, Some(e)) = (r.state, execution) {
                return Ok((e, r.state, r.cross));
            }
        }
        if start.elapsed() >= wait {
            return Err(Waited::Done(Error::NotCompleted {
                tx: id,
                waited: wait,
                state,
                cross: cross_state,
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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

    use rpc::{CityApi, NodeStatus, Rejection, Submitted, TxRecord};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One `GetTx` answer: state, execution, cross-city record.
    type Step = (TxState, Option<TxExecution>, Option<CrossTx>);

    /// A representative that answers Held, then the scripted `GetTx` answers in turn (the
    /// last one forever).
    struct Scripted {
        steps: Vec<Step>,
        at: AtomicUsize,
    }

    impl Scripted {
        fn step(&self) -> &Step {
            &self.steps[self.at.load(Ordering::SeqCst).min(self.steps.len() - 1)]
        }
    }

    impl CityApi for Scripted {
        async fn submit(
            &self,
            tx: dag_core::SignedTx,
        ) -> std::result::Result<Submitted, Rejection> {
            Ok(Submitted {
                tx_id: tx.id(),
                state: TxState::Held,
                receipts: Default::default(),
            })
        }
        async fn get(&self, _id: TxId) -> std::result::Result<Option<TxRecord>, Rejection> {
            let (state, _, cross) = self.step().clone();
            self.at.fetch_add(1, Ordering::SeqCst);
            Ok(Some(TxRecord {
                tx: None,
                state,
                receipts: Vec::new(),
                source: "test".into(),
                ordering: None,
                proof: None,
                cross,
            }))
        }
        async fn execution(
            &self,
            _id: TxId,
        ) -> std::result::Result<Option<TxExecution>, Rejection> {
            Ok(self.step().1.clone())
        }
        async fn status(&self) -> NodeStatus {
            NodeStatus {
                node_id: dag_core::NodeId::from_bytes([0; 32]),
                role: "test".into(),
                version: "0".into(),
                uptime_ms: 0,
                stored_txs: 0,
                counters: Vec::new(),
            }
        }
    }

    fn exec(outcome: ExecutionOutcome) -> Option<TxExecution> {
        Some(TxExecution {
            sequence: 3,
            outcome,
            detail: String::new(),
            state_root: None,
        })
    }

    fn cross(state: CrossState) -> Option<CrossTx> {
        Some(CrossTx {
            state,
            from_city: "JP-13".into(),
            to_city: "JP-27".into(),
            statement: dag_core::Hash32([5; 32]),
            transfer_out_proof: None,
            answer_proof: None,
        })
    }

    /// Sends one transfer through a loopback gRPC server answering `steps`.
    async fn send_through(steps: Vec<Step>, to_city: Option<&str>, wait: Duration) -> Result<Sent> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let api = Arc::new(Scripted {
            steps,
            at: AtomicUsize::new(0),
        });
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(rpc::CityNodeService::new(api).into_server())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let key = Keypair::generate();
        let t = Transfer {
            to: AccountId::from_bytes([1; 32]),
            amount: 5,
            nonce: Some(0),
            city: "JP-13".into(),
            to_city: to_city.map(str::to_string),
            lat: 35.6895,
            lon: 139.6917,
            wait,
        };
        let out = send(&addr, &key, &t, 1_767_225_600_000).await;
        server.abort();
        assert!(server.await.unwrap_err().is_cancelled());
        out
    }

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn send_waits_past_held_and_federated_until_completed() {
        let applied = exec(ExecutionOutcome::Applied);
        let s = send_through(
            vec![
                (TxState::Held, None, None),
                (TxState::Ordered, None, None),
                (TxState::Federated, applied.clone(), None),
                (TxState::Completed, applied, None),
            ],
            None,
            LONG,
        )
        .await
        .unwrap();
        assert_eq!(s.state, TxState::Completed);
        assert!(s.applied());
        assert_eq!(s.cross, None);
        // Cross-city: Pending while the receiver's city works, then Completed.
        let applied = exec(ExecutionOutcome::Applied);
        let s = send_through(
            vec![
                (
                    TxState::Federated,
                    applied.clone(),
                    cross(CrossState::Pending),
                ),
                (TxState::Completed, applied, cross(CrossState::Completed)),
            ],
            Some("JP-27"),
            LONG,
        )
        .await
        .unwrap();
        assert_eq!(s.cross.unwrap().state, CrossState::Completed);
    }

    #[tokio::test]
    async fn a_failed_outcome_a_refund_and_the_wait_are_typed_errors() {
        let e = send_through(
            vec![
                (TxState::Ordered, None, None),
                (
                    TxState::Federated,
                    exec(ExecutionOutcome::InsufficientFunds),
                    None,
                ),
            ],
            None,
            LONG,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, Error::Failed { execution, .. } if execution.outcome == ExecutionOutcome::InsufficientFunds),
            "{e}"
        );
        let applied = exec(ExecutionOutcome::Applied);
        let e = send_through(
            vec![
                (
                    TxState::Federated,
                    applied.clone(),
                    cross(CrossState::Pending),
                ),
                (TxState::Federated, applied, cross(CrossState::Refunded)),
            ],
            Some("JP-27"),
            LONG,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Refunded { .. }), "{e}");
        // Still pending when the wait runs out.
        let e = send_through(
            vec![(
                TxState::Federated,
                exec(ExecutionOutcome::Applied),
                cross(CrossState::Pending),
            )],
            Some("JP-27"),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                Error::NotCompleted {
                    state: Some(TxState::Federated),
                    cross: Some(CrossState::Pending),
                    ..
                }
            ),
            "{e}"
        );
        // A receiver city id that is not one is refused before any call.
        let e = send_through(vec![(TxState::Held, None, None)], Some(""), LONG)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Invalid {
                    field: "to_city",
                    ..
                }
            ),
            "{e}"
        );
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
            to_city: None,
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

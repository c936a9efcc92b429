//! The demo's load: pre-signed txs at real Tokyo coordinates (a few claiming Tokyo from
//! Osaka), submitted over gRPC streams spread round robin over the live representatives,
//! every Held answer timed (ms since the epoch and `Instant`); and the deliberately bad
//! inputs.

use super::DemoConfig;
use super::report::BadCase;
use crate::devnet::CITY;
use crate::{Error, Result};
use dag_core::{CityId, Position, PositionMethod, SignedTx, Signer, Tx, TxId, TxKind};
use futures::StreamExt;
use pqc::{Keypair, sign_tx};
use rayon::prelude::*;
use rpc::{CityClient, RejectCode, TxState};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub(crate) fn cfg_err(e: impl std::fmt::Display) -> Error {
    Error::Measurement(e.to_string())
}

/// Milliseconds since the Unix epoch (the unit of the order store's timestamps).
pub(crate) fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Pre-signs the load: tx i is from account i % accounts at a real point in Tokyo, except
/// every `outside_every`-th, which claims Tokyo from a point in Osaka.
pub(crate) fn presign(
    cfg: &DemoConfig,
    accounts: &[Keypair],
) -> Result<(Vec<SignedTx>, Vec<bool>)> {
    let japan = pop_geo::shipped::japan().map_err(cfg_err)?;
    let tokyo = japan.sample_points(CITY, 512, 42);
    let osaka = japan.sample_points("JP-27", 64, 43);
    if tokyo.is_empty() || osaka.is_empty() {
        return Err(Error::Measurement(
            "no sample points in the shipped polygons".into(),
        ));
    }
    let city = CityId::new(CITY).map_err(cfg_err)?;
    let out: Vec<(SignedTx, bool)> = (0..cfg.txs)
        .into_par_iter()
        .map(|i| {
            let outside = cfg.outside_every > 0 && i % cfg.outside_every == cfg.outside_every - 1;
            let at = if outside {
                osaka[i % osaka.len()]
            } else {
                tokyo[i % tokyo.len()]
            };
            Ok((crate::load::load_transfer(accounts, i, &city, at)?, outside))
        })
        .collect::<Result<_>>()?;
    Ok(out.into_iter().unzip())
}

/// A tx answered Held during the load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeldAnswer {
    /// Its index in the pre-signed load.
    pub(crate) index: usize,
    /// Its id.
    pub(crate) id: TxId,
    /// The representative it was submitted to.
    pub(crate) rep: usize,
    /// When the Held answer arrived (ms since the Unix epoch).
    pub(crate) held_ms: u64,
    /// When the Held answer arrived.
    pub(crate) held_at: Instant,
}

/// What one phase's load got back.
#[derive(Debug, Default)]
pub(crate) struct LoadOutcome {
    /// The Held answers, in load order.
    pub(crate) held: Vec<HeldAnswer>,
    /// Held with a light node holding two shards of the stripe.
    pub(crate) colocated: usize,
    /// Admitted but not Held.
    pub(crate) admitted_only: usize,
    /// Rejected by proof of place.
    pub(crate) rejected_pop: usize,
    /// Rejected otherwise.
    pub(crate) rejected_other: usize,
    /// Submit → Held latencies, sorted.
    pub(crate) latencies: Vec<Duration>,
    /// First submission to last answer.
    pub(crate) load_time: Duration,
    /// When the load started (ms since the Unix epoch).
    pub(crate) started_ms: u64,
}

/// A half-way gate: each stream stops before its second half until the gate opens, and
/// `reached` counts the answers to the first halves.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    /// Opened by the caller (after doing what must happen mid-load).
    pub(crate) open: watch::Receiver<bool>,
    /// Answers received so far.
    pub(crate) answered: Arc<AtomicUsize>,
}

/// Offers `txs` (global indices starting at `offset`) over `streams` gRPC streams, stream
/// k to representative `targets[k % targets.len()]` (`(rep, addr)`). With a gate, every
/// stream waits at its half-way point until the gate opens; the returned count is the
/// number of first-half requests, whose answers the caller can wait for.
pub(crate) async fn spawn_load(
    streams: usize,
    targets: &[(usize, String)],
    txs: &[SignedTx],
    offset: usize,
    gate: Option<Gate>,
) -> Result<(tokio::task::JoinHandle<Result<LoadOutcome>>, usize)> {
    let n = txs.len();
    let streams = streams.max(targets.len()).max(1);
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let mut chunks: Vec<Vec<(usize, rpc::pb::SubmitTxRequest)>> =
        (0..streams).map(|_| Vec::new()).collect();
    for (i, t) in txs.iter().enumerate() {
        chunks[i % streams].push((i, rpc::pb::SubmitTxRequest { tx: Some(t.into()) }));
    }
    let first_halves: usize = chunks.iter().map(|c| c.len() / 2).sum();
    let mut clients = Vec::new();
    for k in 0..streams {
        let (rep, addr) = &targets[k % targets.len()];
        clients.push((*rep, CityClient::connect(addr).await?));
    }
    let started_ms = epoch_ms();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (chunk, (rep, client)) in chunks.into_iter().zip(clients) {
        let sent_at = sent_at.clone();
        let gate = gate.clone();
        let locals: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
        let half = chunk.len() / 2;
        tasks.push(tokio::spawn(async move {
            let sent = sent_at.clone();
            let mut open = gate.as_ref().map(|g| g.open.clone());
            let reqs =
                futures::stream::iter(chunk.into_iter().enumerate()).then(move |(k, (i, r))| {
                    let mut open = if k == half { open.take() } else { None };
                    let sent = sent.clone();
                    async move {
                        if let Some(open) = open.as_mut() {
                            // A closed sender means the caller is gone: go on.
                            let _ = open.wait_for(|o| *o).await;
                        }
                        sent[i].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        r
                    }
                });
            let mut out = client.submit_stream_raw(reqs).await?;
            let mut res = Vec::with_capacity(locals.len());
            while let Some((local, r)) = out.next().await {
                let (at, ms) = (Instant::now(), epoch_ms());
                if let Some(g) = &gate {
                    g.answered.fetch_add(1, Ordering::Relaxed);
                }
                res.push((locals.get(local as usize).copied(), rep, at, ms, r));
            }
            Ok::<_, Error>(res)
        }));
    }
    let offset_txs: Vec<TxId> = txs.iter().map(SignedTx::id).collect();
    let handle = tokio::spawn(async move {
        let mut o = LoadOutcome {
            started_ms,
            ..LoadOutcome::default()
        };
        for t in tasks {
            for (i, rep, at, ms, r) in t
                .await
                .map_err(|e| Error::Measurement(format!("load task: {e}")))??
            {
                match (i, r) {
                    (Some(i), Ok(s)) if s.state == TxState::Held => {
                        let holders: BTreeSet<_> =
                            s.receipts.iter().map(|r| r.receipt.holder).collect();
                        if holders.len() < s.receipts.len() {
                            o.colocated += 1;
                        }
                        let sent = Duration::from_nanos(sent_at[i].load(Ordering::Relaxed));
                        o.latencies
                            .push(at.saturating_duration_since(t0).saturating_sub(sent));
                        if s.tx_id != offset_txs[i] {
                            tracing::error!(tx = %s.tx_id, index = i, "answer names another tx");
                        }
                        o.held.push(HeldAnswer {
                            index: offset + i,
                            id: s.tx_id,
                            rep,
                            held_ms: ms,
                            held_at: at,
                        });
                    }
                    (_, Ok(_)) => o.admitted_only += 1,
                    (_, Err(rpc::ClientError::Rejected(r)))
                        if r.code == RejectCode::OutsideCity =>
                    {
                        o.rejected_pop += 1
                    }
                    (_, Err(e)) => {
                        o.rejected_other += 1;
                        tracing::warn!(error = %e, "tx rejected during load");
                    }
                }
            }
        }
        o.load_time = t0.elapsed();
        o.latencies.sort();
        o.held.sort_by_key(|a| a.index);
        Ok(o)
    });
    Ok((handle, first_halves))
}

/// Submits each deliberately bad input once and records the answer.
pub(crate) async fn bad_inputs(
    client: &CityClient,
    txs: &[SignedTx],
    accounts: &[Keypair],
) -> Result<Vec<BadCase>> {
    let mut cases = Vec::new();
    let mut run = |name: &'static str,
                   expected: RejectCode,
                   got: std::result::Result<rpc::Submitted, rpc::ClientError>| {
        let got = match got {
            Ok(s) => Err(format!("ACCEPTED as {}", s.tx_id)),
            Err(rpc::ClientError::Rejected(r)) => Ok(r),
            Err(e) => Err(format!("unexpected error: {e}")),
        };
        cases.push(BadCase {
            name,
            expected,
            got,
        });
    };
    let alice = &accounts[0];
    let bob = &accounts[1];
    let city = CityId::new(CITY).map_err(cfg_err)?;
    let tokyo = Position::from_degrees(35.6895, 139.6917).map_err(cfg_err)?;
    let fresh = |nonce: u64| {
        Tx::fresh(
            alice.account_id(),
            bob.account_id(),
            7,
            nonce,
            1_767_225_600_000,
            city.clone(),
            tokyo,
            PositionMethod::Gps,
        )
    };

    let mut t = sign_tx(fresh(1_000_001), alice);
    t.signature[100] ^= 0x55;
    run(
        "bad signature",
        RejectCode::BadSignature,
        client.submit(&t).await,
    );
    let mut t = sign_tx(fresh(1_000_002), bob);
    t.public_key = alice.public_key().to_vec();
    run(
        "signature by another key",
        RejectCode::BadSignature,
        client.submit(&t).await,
    );
    let t = sign_tx(fresh(1_000_003), bob);
    run(
        "key not the sender's",
        RejectCode::KeyMismatch,
        client.submit(&t).await,
    );
    let mut t = sign_tx(fresh(1_000_004), alice);
    t.signature.truncate(100);
    run(
        "truncated signature",
        RejectCode::BadSignature,
        client.submit(&t).await,
    );
    // A replayed tx (the very same bytes) is answered with its current state, not refused:
    // the repair phase (`demo::repair`) checks that; a different tx reusing its nonce is
    // refused below.
    let mut body = txs[0].tx.clone();
    body.amount += 1;
    let owner = accounts
        .iter()
        .find(|a| a.account_id() == body.sender)
        .ok_or_else(|| Error::Measurement("sender of tx 0 not found".into()))?;
    run(
        "reused nonce",
        RejectCode::NonceReused,
        client.submit(&sign_tx(body, owner)).await,
    );
    let mut far = fresh(1_000_008);
    far.position = Position::from_degrees(27.7172, 85.3240).map_err(cfg_err)?; // Kathmandu
    run(
        "claims Tokyo from Kathmandu",
        RejectCode::OutsideCity,
        client.submit(&sign_tx(far, alice)).await,
    );
    let t = sign_tx(
        fresh(1_000_005).with_payload(vec![0xAB; dag_core::MAX_PAYLOAD + 1]),
        alice,
    );
    run(
        "payload over 64 KiB",
        RejectCode::TooLarge,
        client.submit(&t).await,
    );
    run(
        "malformed: empty request",
        RejectCode::Malformed,
        client
            .submit_raw(rpc::pb::SubmitTxRequest { tx: None })
            .await,
    );
    let mut p: rpc::pb::SignedTx = (&sign_tx(fresh(1_000_006), alice)).into();
    if let Some(tx) = p.tx.as_mut() {
        tx.sender.pop();
    }
    run(
        "malformed: 31-byte sender",
        RejectCode::Malformed,
        client
            .submit_raw(rpc::pb::SubmitTxRequest { tx: Some(p) })
            .await,
    );
    let mut p: rpc::pb::SignedTx =
        (&sign_tx(fresh(1_000_007).with_kind(TxKind::FreshTx), alice)).into();
    if let Some(tx) = p.tx.as_mut() {
        tx.kind = 42;
    }
    run(
        "unknown kind 42",
        RejectCode::Malformed,
        client
            .submit_raw(rpc::pb::SubmitTxRequest { tx: Some(p) })
            .await,
    );
    Ok(cases)
}

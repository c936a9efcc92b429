//! The demo's repair phase: repair requests through the representatives' HTTP gateways
//! (`POST /v1/repair_requests`), one at a time, each served by a known tier, with the
//! serving tier's latency as the repair service measured it (the `seconds` of its
//! `repair_acknowledged` event):
//!
//! - `local_store`: txs representative 0 admitted just before (bodies leave its working
//!   store once ordered, executed and archived), asked of representative 0;
//! - `light_nodes`: txs representative 1 admitted, whose local copy it first evicts (the
//!   shards keep them): REPAIR_REQUEST / REPAIR_ACK to the stripe's holders;
//! - `peers`: txs representative 0 admitted, asked of representative 2, which knows them
//!   only from its committee's order: another representative's copy, signature checked.
//!
//! The archive tier is not measured here: it serves only when the light nodes cannot,
//! which this phase does not stage. It also checks that resubmitting a held tx answers its
//! current state instead of a refusal.

use super::load::HeldAnswer;
use crate::devnet::Devnet;
use crate::{Error, Result};
use dag_core::{SignedTx, TxId};
use node::gateway::EventKind;
use rpc::{CityClient, TxState};
use std::fmt::Write as _;
use std::time::Duration;

/// Repairs per tier.
pub(crate) const PER_TIER: usize = 20;

/// How long one repair may take before the phase calls it failed.
const REPAIR_WAIT: Duration = Duration::from_secs(30);

/// One tier's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierFigures {
    /// The tier (`local_store`, `light_nodes`, `peers`).
    pub tier: String,
    /// The serving tier's latency per repair, sorted.
    pub latencies: Vec<Duration>,
}

impl TierFigures {
    /// The `q` quantile of the latencies (nearest rank).
    pub fn quantile(&self, q: f64) -> Duration {
        let v = &self.latencies;
        if v.is_empty() {
            return Duration::ZERO;
        }
        v[(((v.len() as f64 - 1.0) * q).round() as usize).min(v.len() - 1)]
    }
}

/// What the repair phase measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairFigures {
    /// Per tier, in the order tried.
    pub tiers: Vec<TierFigures>,
    /// Repairs that did not complete by the expected tier (what happened instead).
    pub failures: Vec<String>,
    /// Resubmitted held txs answered with their current state / tried.
    pub resubmitted: (usize, usize),
}

impl RepairFigures {
    /// The table lines of the demo's report.
    pub fn render(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "repair requests over HTTP, one at a time (serving tier's latency)"
        );
        for t in &self.tiers {
            let _ = writeln!(
                s,
                "  {:<48} {:>20}",
                format!("{} ({} repairs) p50 / p99", t.tier, t.latencies.len()),
                format!(
                    "{:.1} / {:.1} ms",
                    t.quantile(0.50).as_secs_f64() * 1e3,
                    t.quantile(0.99).as_secs_f64() * 1e3
                )
            );
        }
        let _ = writeln!(
            s,
            "  {:<48} {:>20}",
            "resubmitted held txs answered their state",
            format!("{}/{}", self.resubmitted.0, self.resubmitted.1)
        );
        for f in &self.failures {
            let _ = writeln!(s, "  repair failed: {f}");
        }
    }
}

/// Asks representative `rep`'s gateway to repair `id`; returns the serving tier and its
/// latency once the request completes.
async fn repair_once(
    net: &Devnet,
    http: &reqwest::Client,
    rep: usize,
    id: TxId,
) -> std::result::Result<(String, Duration), String> {
    let node = net.rep(rep).ok_or("representative not running")?;
    let base = node.gateway_addr().ok_or("no gateway")?;
    let mut live = node.node().events().subscribe(None).live;
    let r = http
        .post(format!("http://{base}/v1/repair_requests"))
        .json(&serde_json::json!({ "tx_id": id.to_hex() }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 202 {
        return Err(format!("POST answered {}", r.status()));
    }
    let request = r
        .json::<serde_json::Value>()
        .await
        .map_err(|e| e.to_string())?["request_id"]
        .as_u64()
        .ok_or("no request id")?;
    let deadline = tokio::time::Instant::now() + REPAIR_WAIT;
    let mut served = None;
    loop {
        let e = tokio::time::timeout_at(deadline, live.recv())
            .await
            .map_err(|_| format!("no outcome within {REPAIR_WAIT:?}"))?
            .map_err(|e| e.to_string())?;
        if e.tx_id != id || e.detail["request"].as_u64() != Some(request) {
            continue;
        }
        match e.kind {
            EventKind::RepairAcknowledged => {
                if let (Some(t), Some(secs)) =
                    (e.detail["tier"].as_str(), e.detail["seconds"].as_f64())
                {
                    served = Some((t.to_string(), Duration::from_secs_f64(secs)));
                }
            }
            EventKind::RepairCompleted => return served.ok_or("completed without a tier".into()),
            EventKind::RepairFailed => return Err(e.detail["reason"].to_string()),
            _ => {}
        }
    }
}

/// [`PER_TIER`] transfers not in the load (load indices `offered..`), for the local-store
/// tier: submitted to representative 0 right before it is measured.
pub(crate) fn fresh_txs(offered: usize, accounts: &[pqc::Keypair]) -> Result<Vec<SignedTx>> {
    let city = dag_core::CityId::new(crate::CITY).map_err(|e| Error::Measurement(e.to_string()))?;
    (offered..offered + PER_TIER)
        .map(|i| crate::load::load_transfer(accounts, i, &city, crate::CITY_POS))
        .collect()
}

/// Runs the phase over the held txs (`held`, with their signed bodies in `txs`); `fresh`
/// are admitted to representative 0 for its local-store tier.
pub(crate) async fn run(
    net: &Devnet,
    held: &[HeldAnswer],
    txs: &[SignedTx],
    fresh: &[SignedTx],
) -> Result<RepairFigures> {
    let http = reqwest::Client::new();
    let mut figures = RepairFigures::default();
    let of = |rep: usize, skip: usize| {
        held.iter()
            .filter(move |a| a.rep == rep)
            .skip(skip)
            .take(PER_TIER)
            .map(|a| a.id)
            .collect::<Vec<_>>()
    };
    let mut local = Vec::new();
    if let Some(c) = net.rep(0) {
        let client = CityClient::connect(&c.addr().to_string()).await?;
        for tx in fresh {
            match client.submit(tx).await {
                Ok(s) if s.state == TxState::Held => local.push(s.tx_id),
                Ok(s) => figures
                    .failures
                    .push(format!("{}: answered {:?}, not Held", s.tx_id, s.state)),
                Err(e) => figures.failures.push(format!("local-store tx: {e}")),
            }
        }
    }
    let mut plan: Vec<(&str, usize, Vec<TxId>)> = vec![("local_store", 0, local)];
    if net.rep(1).is_some() {
        let ids = of(1, 0);
        let node = net.rep(1).map(|r| r.node().clone());
        if let Some(node) = node {
            for id in &ids {
                node.evict_held_copy(*id)
                    .await
                    .map_err(|e| Error::Measurement(format!("evict {id}: {e}")))?;
            }
        }
        plan.push(("light_nodes", 1, ids));
    }
    if net.rep(2).is_some() {
        plan.push(("peers", 2, of(0, PER_TIER)));
    }
    for (tier, rep, ids) in plan {
        let mut t = TierFigures {
            tier: tier.to_string(),
            latencies: Vec::new(),
        };
        for id in ids {
            match repair_once(net, &http, rep, id).await {
                Ok((served, d)) if served == tier => t.latencies.push(d),
                Ok((served, _)) => figures
                    .failures
                    .push(format!("{id}: served by {served}, expected {tier}")),
                Err(why) => figures.failures.push(format!("{id} ({tier}): {why}")),
            }
        }
        t.latencies.sort();
        figures.tiers.push(t);
    }

    // Resubmission: the tx's current state, not DUPLICATE_TX.
    if let Some(c) = net.rep(0) {
        let client = CityClient::connect(&c.addr().to_string()).await?;
        let again: Vec<&HeldAnswer> = held.iter().filter(|a| a.rep == 0).take(5).collect();
        let mut ok = 0;
        for a in &again {
            if let Ok(s) = client.submit(&txs[a.index]).await
                && s.tx_id == a.id
                && matches!(
                    s.state,
                    TxState::Held | TxState::Ordered | TxState::Federated
                )
            {
                ok += 1;
            }
        }
        figures.resubmitted = (ok, again.len());
    }
    Ok(figures)
}

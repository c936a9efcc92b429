//! Operator tooling behind `repair-cli`: check a tx a city restored (`RepairTx`) with the
//! operator's own ML-DSA-87 verification, and audit every holder of every stripe
//! (`ListStripes`, then `GetShard` checked against the manifest hash and a storage
//! challenge with a fresh nonce, answered against the verified bytes).
//!
//! The light nodes are reached through the [`HolderProbe`] port: [`GrpcProbe`] over the
//! `ShardStore` gRPC service in production, a test double in the unit tests below.
//!
//! [`verify_tx_proof`] checks a Federated tx's proof offline against a genesis file: the
//! batch carrying it, its checkpoint, the committee's quorum certificate, the continent's
//! Merkle path and signature, and the global anchor when the proof has one.

mod proof;
pub use proof::{ProofCheckError, VerifiedTxProof, verify_tx_proof};

use async_trait::async_trait;
use dag_core::{NodeId, ShardHash, SignatureVerifier, StripeId, TxId};
use futures::StreamExt;
use rpc::{ClientError, Repaired, ShardStoreClient, StripeHolder, StripeInfo};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use storage::{Challenge, ChallengeNonce, ChallengeProof, Shard};

/// Why a repaired tx does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The tx restored is not the one asked for.
    #[error("asked for tx {asked}, the city returned tx {got}")]
    WrongTx {
        /// Requested id.
        asked: String,
        /// Id of what came back.
        got: String,
    },
    /// The tx's signature does not verify.
    #[error("tx {id}: signature check failed: {reason}")]
    BadTxSignature {
        /// Tx id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A receipt does not verify.
    #[error("receipt for shard {index} of stripe {stripe}: {reason}")]
    BadReceipt {
        /// Stripe.
        stripe: String,
        /// Shard index.
        index: u16,
        /// Why.
        reason: String,
    },
    /// The receipts do not describe one stripe with one receipt per shard.
    #[error("receipts are inconsistent: {0}")]
    Inconsistent(String),
}

/// A repaired tx whose signature and receipts the operator verified locally.
#[derive(Debug, Clone)]
pub struct CheckedRepair {
    /// The tx id.
    pub id: TxId,
    /// What the city returned.
    pub repaired: Repaired,
    /// The stripe the receipts name (`None` if there were no receipts).
    pub stripe: Option<StripeId>,
}

/// Verifies what `RepairTx` returned for `asked`: the tx is the one asked for and its
/// signature verifies; every receipt's key belongs to its holder and its signature
/// verifies; the receipts name one stripe with distinct shard indexes.
pub fn check_repaired(
    asked: TxId,
    repaired: Repaired,
    verifier: &(impl SignatureVerifier + ?Sized),
) -> Result<CheckedRepair, CheckError> {
    let got = repaired.tx.id();
    if got != asked {
        return Err(CheckError::WrongTx {
            asked: asked.to_hex(),
            got: got.to_hex(),
        });
    }
    repaired
        .tx
        .clone()
        .verify_with_id(got, verifier)
        .map_err(|e| CheckError::BadTxSignature {
            id: got.to_hex(),
            reason: e.to_string(),
        })?;
    let mut stripes = BTreeSet::new();
    let mut indexes = BTreeSet::new();
    for r in &repaired.receipts {
        let (stripe, index) = (r.receipt.stripe_id, r.receipt.shard_index);
        r.clone()
            .verify(verifier)
            .map_err(|e| CheckError::BadReceipt {
                stripe: stripe.short(),
                index,
                reason: e.to_string(),
            })?;
        stripes.insert(stripe);
        if !indexes.insert(index) {
            return Err(CheckError::Inconsistent(format!(
                "two receipts for shard {index}"
            )));
        }
    }
    if stripes.len() > 1 {
        return Err(CheckError::Inconsistent(format!(
            "receipts name {} different stripes",
            stripes.len()
        )));
    }
    Ok(CheckedRepair {
        id: asked,
        stripe: stripes.into_iter().next(),
        repaired,
    })
}

impl CheckedRepair {
    /// A human-readable description: the tx, then one line per holder.
    pub fn describe(&self) -> String {
        let r = &self.repaired;
        let t = &r.tx.tx;
        let mut out = String::new();
        let _ = writeln!(out, "tx        {}", self.id);
        let _ = writeln!(out, "source    {}", r.source);
        let _ = writeln!(out, "signature ML-DSA-87 verified locally");
        let _ = writeln!(out, "kind      {:?}", t.kind);
        let _ = writeln!(out, "sender    {}", t.sender.to_hex());
        let _ = writeln!(out, "receiver  {}", t.receiver.to_hex());
        let _ = writeln!(out, "amount    {}", t.amount);
        let _ = writeln!(out, "nonce     {}", t.nonce);
        let _ = writeln!(out, "time      {} ms", t.timestamp_ms);
        let _ = writeln!(
            out,
            "city      {} at ({:.5}, {:.5})",
            t.city_id.as_str(),
            f64::from(t.position.lat_e7) / 1e7,
            f64::from(t.position.lon_e7) / 1e7
        );
        let _ = writeln!(out, "payload   {} bytes", t.payload.len());
        match self.stripe {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "stripe    {} ({} receipts, every signature verified locally)",
                    s,
                    r.receipts.len()
                );
            }
            None => {
                let _ = writeln!(out, "stripe    (no receipts)");
            }
        }
        let mut receipts: Vec<_> = r.receipts.iter().collect();
        receipts.sort_by_key(|x| x.receipt.shard_index);
        for x in receipts {
            let _ = writeln!(
                out,
                "  shard {:>2}  holder {}  shard hash {}  signed at {} ms",
                x.receipt.shard_index,
                x.receipt.holder.to_hex(),
                x.receipt.shard_hash.short(),
                x.receipt.time_ms
            );
        }
        out
    }
}

/// Why a call to a holder failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The holder says it does not hold the shard.
    #[error("not held: {0}")]
    NotHeld(String),
    /// The holder could not be reached or did not answer in time.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The holder reports the shard corrupt, or sent bytes that fail the shard checks.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// Any other failure.
    #[error("{0}")]
    Other(String),
}

impl From<ClientError> for ProbeError {
    fn from(e: ClientError) -> Self {
        use tonic::Code;
        match &e {
            ClientError::Connect { .. } => ProbeError::Unreachable(e.to_string()),
            ClientError::Malformed(_) => ProbeError::Corrupt(e.to_string()),
            ClientError::Status { code, .. } => match code {
                Code::NotFound => ProbeError::NotHeld(e.to_string()),
                Code::DataLoss => ProbeError::Corrupt(e.to_string()),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                    ProbeError::Unreachable(e.to_string())
                }
                _ => ProbeError::Other(e.to_string()),
            },
            ClientError::Rejected(_) => ProbeError::Other(e.to_string()),
        }
    }
}

/// How the auditor reaches a holder's `ShardStore`.
#[async_trait]
pub trait HolderProbe: Send + Sync + 'static {
    /// Fetches shard (stripe, index) from the node at `addr`.
    async fn get_shard(
        &self,
        addr: &str,
        stripe: StripeId,
        index: u16,
    ) -> Result<Shard, ProbeError>;
    /// Challenges the node at `addr` for shard (stripe, index) with `nonce`.
    async fn challenge(
        &self,
        addr: &str,
        stripe: StripeId,
        index: u16,
        nonce: ChallengeNonce,
    ) -> Result<ChallengeProof, ProbeError>;
}

/// [`HolderProbe`] over gRPC: one lazily connecting channel per address, every call bounded
/// by a deadline.
#[derive(Debug)]
pub struct GrpcProbe {
    timeout: Duration,
    clients: parking_lot::Mutex<BTreeMap<String, ShardStoreClient>>,
}

impl GrpcProbe {
    /// A probe whose connects and calls give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        GrpcProbe {
            timeout,
            clients: parking_lot::Mutex::new(BTreeMap::new()),
        }
    }

    fn client(&self, addr: &str) -> Result<ShardStoreClient, ProbeError> {
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let channel = tonic::transport::Endpoint::from_shared(url)
            .map_err(|e| ProbeError::Unreachable(format!("bad address {addr:?}: {e}")))?
            .connect_timeout(self.timeout)
            .connect_lazy();
        let c = ShardStoreClient::from_channel(channel).with_timeout(self.timeout);
        clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

#[async_trait]
impl HolderProbe for GrpcProbe {
    async fn get_shard(
        &self,
        addr: &str,
        stripe: StripeId,
        index: u16,
    ) -> Result<Shard, ProbeError> {
        Ok(self.client(addr)?.get_shard(stripe, index).await?)
    }

    async fn challenge(
        &self,
        addr: &str,
        stripe: StripeId,
        index: u16,
        nonce: ChallengeNonce,
    ) -> Result<ChallengeProof, ProbeError> {
        Ok(self.client(addr)?.challenge(stripe, index, nonce).await?)
    }
}

/// What the audit found for one holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The shard matches the manifest and the challenge was answered correctly.
    Ok,
    /// The city does not see the holder as live.
    NotLive,
    /// The holder could not be reached.
    Unreachable(String),
    /// The holder does not hold the shard.
    Missing(String),
    /// The shard returned fails its checks or the manifest hash (or the holder reports it
    /// corrupt).
    Corrupt(String),
    /// The challenge was not answered, or answered wrongly.
    ChallengeFailed(String),
}

impl Outcome {
    /// Short label for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotLive => "not live",
            Outcome::Unreachable(_) => "unreachable",
            Outcome::Missing(_) => "missing",
            Outcome::Corrupt(_) => "corrupt",
            Outcome::ChallengeFailed(_) => "challenge failed",
        }
    }
}

/// The audit of one holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderAudit {
    /// Stripe.
    pub stripe_id: StripeId,
    /// Shard index.
    pub index: u16,
    /// The holder.
    pub node_id: NodeId,
    /// Its address (if live).
    pub grpc_addr: Option<String>,
    /// What was found.
    pub outcome: Outcome,
    /// Encoded bytes of the shard it returned (0 if none came back).
    pub bytes: u64,
}

impl HolderAudit {
    /// One line for humans.
    pub fn describe(&self) -> String {
        let detail = match &self.outcome {
            Outcome::Ok | Outcome::NotLive => String::new(),
            Outcome::Unreachable(d)
            | Outcome::Missing(d)
            | Outcome::Corrupt(d)
            | Outcome::ChallengeFailed(d) => format!(": {d}"),
        };
        format!(
            "stripe {} shard {} on {} ({}): {}{detail}",
            self.stripe_id.short(),
            self.index,
            self.node_id.short(),
            self.grpc_addr.as_deref().unwrap_or("no address"),
            self.outcome.label(),
        )
    }
}

/// The audit of every holder of every stripe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Stripes audited.
    pub stripes: usize,
    /// Stripes with fewer than n distinct healthy holders: colocated (two shards on one
    /// node), unplaced, missing, unreachable or corrupt shards all count.
    pub underplaced_stripes: usize,
    /// Stripes whose manifest puts two or more shards on one node.
    pub colocated_stripes: usize,
    /// Stripes with exactly k distinct healthy holders: one more loss and they cannot be
    /// restored from shards.
    pub one_loss_from_unrecoverable: usize,
    /// Stripes with fewer than k distinct healthy holders: not restorable from shards now.
    pub unrecoverable_stripes: usize,
    /// One entry per holder, in stripe then index order.
    pub holders: Vec<HolderAudit>,
}

/// Shards and bytes one holder answered for, as the audit saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HolderUsage {
    /// Shards the manifests place on it.
    pub shards: usize,
    /// Shards it proved.
    pub ok: usize,
    /// Encoded bytes of the shards it returned.
    pub bytes: u64,
}

impl AuditReport {
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.holders.iter().filter(|h| f(&h.outcome)).count()
    }
    /// Shards that passed.
    pub fn ok(&self) -> usize {
        self.count(|o| *o == Outcome::Ok)
    }
    /// Shards whose holder is not live, unreachable, or does not hold them.
    pub fn missing(&self) -> usize {
        self.count(|o| {
            matches!(
                o,
                Outcome::NotLive | Outcome::Unreachable(_) | Outcome::Missing(_)
            )
        })
    }
    /// Shards returned corrupt.
    pub fn corrupt(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Corrupt(_)))
    }
    /// Challenges failed.
    pub fn challenge_failures(&self) -> usize {
        self.count(|o| matches!(o, Outcome::ChallengeFailed(_)))
    }
    /// True if every shard of every stripe passed and every stripe has n distinct healthy
    /// holders.
    pub fn is_clean(&self) -> bool {
        self.underplaced_stripes == 0 && self.ok() == self.holders.len()
    }

    /// Per holder: shards placed on it, shards it proved, bytes it returned.
    pub fn usage(&self) -> BTreeMap<NodeId, HolderUsage> {
        let mut out: BTreeMap<NodeId, HolderUsage> = BTreeMap::new();
        for h in &self.holders {
            let u = out.entry(h.node_id).or_default();
            u.shards += 1;
            u.bytes += h.bytes;
            if h.outcome == Outcome::Ok {
                u.ok += 1;
            }
        }
        out
    }

    /// The per-holder usage table.
    pub fn usage_table(&self) -> String {
        let mut out = String::new();
        let line = "+-----------+--------+--------+--------------+";
        let _ = writeln!(out, "{line}");
        let _ = writeln!(
            out,
            "| {:<9} | {:>6} | {:>6} | {:>12} |",
            "holder", "shards", "ok", "bytes"
        );
        let _ = writeln!(out, "{line}");
        for (id, u) in self.usage() {
            let _ = writeln!(
                out,
                "| {:<9} | {:>6} | {:>6} | {:>12} |",
                id.short(),
                u.shards,
                u.ok,
                u.bytes
            );
        }
        let _ = writeln!(out, "{line}");
        out
    }
    /// The entries that did not pass.
    pub fn problems(&self) -> impl Iterator<Item = &HolderAudit> {
        self.holders.iter().filter(|h| h.outcome != Outcome::Ok)
    }
    /// The summary table.
    pub fn table(&self) -> String {
        let rows = [
            ("stripes", self.stripes),
            ("stripes under-placed", self.underplaced_stripes),
            ("stripes colocated", self.colocated_stripes),
            ("one loss from lost", self.one_loss_from_unrecoverable),
            ("unrecoverable", self.unrecoverable_stripes),
            ("shards checked", self.holders.len()),
            ("shards ok", self.ok()),
            ("missing / unreachable", self.missing()),
            ("corrupt", self.corrupt()),
            ("challenge failures", self.challenge_failures()),
        ];
        let mut out = String::new();
        let _ = writeln!(out, "+-----------------------+--------+");
        let _ = writeln!(out, "| {:<21} | {:>6} |", "audit", "count");
        let _ = writeln!(out, "+-----------------------+--------+");
        for (name, v) in rows {
            let _ = writeln!(out, "| {name:<21} | {v:>6} |");
        }
        let _ = writeln!(out, "+-----------------------+--------+");
        out
    }
}

/// Audits one holder: fetch its shard, check it against the manifest hash, then challenge
/// it with a fresh random nonce and compare with BLAKE3(nonce ‖ verified bytes).
pub async fn audit_holder(
    probe: &(impl HolderProbe + ?Sized),
    stripe: StripeId,
    holder: &StripeHolder,
) -> HolderAudit {
    let (outcome, bytes) = audit_outcome(probe, stripe, holder).await;
    HolderAudit {
        stripe_id: stripe,
        index: holder.index,
        node_id: holder.node_id,
        grpc_addr: holder.grpc_addr.clone(),
        outcome,
        bytes,
    }
}

async fn audit_outcome(
    probe: &(impl HolderProbe + ?Sized),
    stripe: StripeId,
    holder: &StripeHolder,
) -> (Outcome, u64) {
    let Some(addr) = holder.grpc_addr.as_deref() else {
        return (Outcome::NotLive, 0);
    };
    let shard = match probe.get_shard(addr, stripe, holder.index).await {
        Ok(s) => s,
        Err(ProbeError::NotHeld(d)) => return (Outcome::Missing(d), 0),
        Err(ProbeError::Unreachable(d)) => return (Outcome::Unreachable(d), 0),
        Err(ProbeError::Corrupt(d)) => return (Outcome::Corrupt(d), 0),
        Err(ProbeError::Other(d)) => return (Outcome::Unreachable(d), 0),
    };
    let bytes = shard.encoded_len() as u64;
    if let Err(reason) = check_against_manifest(&shard, stripe, holder.index, holder.shard_hash) {
        return (Outcome::Corrupt(reason), bytes);
    }
    let nonce = ChallengeNonce(rand::random());
    let expected = Challenge::new(stripe, holder.index, shard.hash(), nonce, &shard.data);
    let outcome = match probe.challenge(addr, stripe, holder.index, nonce).await {
        Ok(proof) => match expected.check(&proof) {
            Ok(()) => Outcome::Ok,
            Err(_) => Outcome::ChallengeFailed("wrong proof for a fresh nonce".into()),
        },
        Err(e) => Outcome::ChallengeFailed(e.to_string()),
    };
    (outcome, bytes)
}

fn check_against_manifest(
    shard: &Shard,
    stripe: StripeId,
    index: u16,
    hash: ShardHash,
) -> Result<(), String> {
    shard
        .check()
        .map_err(|e| format!("fails its own checks: {e}"))?;
    if shard.stripe_id() != stripe || shard.index() != index {
        return Err(format!(
            "is shard {} of stripe {}",
            shard.index(),
            shard.stripe_id().short()
        ));
    }
    if shard.hash() != hash {
        return Err(format!(
            "hash {} differs from the manifest's {}",
            shard.hash().short(),
            hash.short()
        ));
    }
    Ok(())
}

/// Audits every holder of every stripe, `concurrency` holders at a time, calling
/// `on_done` after each (for progress display). Entries come back in stripe, index order.
pub async fn audit_stripes(
    probe: Arc<dyn HolderProbe>,
    stripes: &[StripeInfo],
    concurrency: usize,
    mut on_done: impl FnMut(&HolderAudit),
) -> AuditReport {
    let jobs: Vec<(StripeId, StripeHolder)> = stripes
        .iter()
        .flat_map(|s| s.holders.iter().map(move |h| (s.stripe_id, h.clone())))
        .collect();
    let mut results = futures::stream::iter(jobs.into_iter().enumerate().map(|(i, (s, h))| {
        let probe = probe.clone();
        async move { (i, audit_holder(&*probe, s, &h).await) }
    }))
    .buffer_unordered(concurrency.max(1));
    let mut done = Vec::new();
    while let Some((i, a)) = results.next().await {
        on_done(&a);
        done.push((i, a));
    }
    done.sort_by_key(|(i, _)| *i);
    let holders: Vec<HolderAudit> = done.into_iter().map(|(_, a)| a).collect();
    let mut report = AuditReport {
        stripes: stripes.len(),
        holders,
        ..AuditReport::default()
    };
    for s in stripes {
        let (k, n) = (usize::from(s.k), usize::from(s.k) + usize::from(s.m));
        let placed: BTreeSet<NodeId> = s.holders.iter().map(|h| h.node_id).collect();
        if placed.len() < s.holders.len() {
            report.colocated_stripes += 1;
        }
        // Distinct holders that proved a shard of this stripe.
        let healthy: BTreeSet<NodeId> = report
            .holders
            .iter()
            .filter(|h| h.stripe_id == s.stripe_id && h.outcome == Outcome::Ok)
            .map(|h| h.node_id)
            .collect();
        let healthy = healthy.len();
        if healthy < n {
            report.underplaced_stripes += 1;
        }
        if healthy == k {
            report.one_loss_from_unrecoverable += 1;
        }
        if healthy < k {
            report.unrecoverable_stripes += 1;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dag_core::{AccountId, CityId, Position, PositionMethod, SignedReceipt, Tx};
    use storage::{ErasureConfig, MicroBatch};

    /// One stripe on in-memory holders keyed by address; each can be told to misbehave.
    #[derive(Default)]
    struct FakeHolders {
        shards: BTreeMap<String, Shard>,
        wrong_proof: BTreeSet<String>,
        down: BTreeSet<String>,
    }

    #[async_trait]
    impl HolderProbe for FakeHolders {
        async fn get_shard(
            &self,
            addr: &str,
            stripe: StripeId,
            index: u16,
        ) -> Result<Shard, ProbeError> {
            if self.down.contains(addr) {
                return Err(ProbeError::Unreachable("connection refused".into()));
            }
            match self.shards.get(addr) {
                Some(s) if s.stripe_id() == stripe && s.index() == index => Ok(s.clone()),
                _ => Err(ProbeError::NotHeld("not held".into())),
            }
        }
        async fn challenge(
            &self,
            addr: &str,
            _stripe: StripeId,
            _index: u16,
            nonce: ChallengeNonce,
        ) -> Result<ChallengeProof, ProbeError> {
            let s = self.shards.get(addr).unwrap();
            if self.wrong_proof.contains(addr) {
                // A lazy holder: proves with a stale nonce.
                return Ok(storage::prove(&ChallengeNonce([0; 32]), &s.data));
            }
            Ok(storage::prove(&nonce, &s.data))
        }
    }

    fn stripe() -> (Vec<Shard>, StripeInfo) {
        let mb = MicroBatch::from_tx_bytes(&[vec![1; 300], vec![2; 500]]).unwrap();
        let shards = ErasureConfig::default().encode(&mb.stripe).unwrap();
        let info = StripeInfo {
            stripe_id: shards[0].stripe_id(),
            k: 4,
            m: 2,
            holders: shards
                .iter()
                .map(|s| StripeHolder {
                    index: s.index(),
                    node_id: NodeId::from_bytes([s.index() as u8; 32]),
                    grpc_addr: Some(format!("h{}", s.index())),
                    shard_hash: s.hash(),
                })
                .collect(),
        };
        (shards, info)
    }

    #[tokio::test]
    async fn clean_stripe_passes_and_every_failure_is_classified() {
        let (shards, mut info) = stripe();
        let mut fake = FakeHolders::default();
        for s in &shards {
            fake.shards.insert(format!("h{}", s.index()), s.clone());
        }
        let probe: Arc<dyn HolderProbe> = Arc::new(FakeHolders {
            shards: fake.shards.clone(),
            ..FakeHolders::default()
        });
        let mut seen = 0;
        let report = audit_stripes(probe, std::slice::from_ref(&info), 3, |_| seen += 1).await;
        assert_eq!(seen, 6);
        assert!(report.is_clean(), "{}", report.table());
        assert_eq!(report.ok(), 6);

        // h0 down, h1 holds shard 2's bytes (wrong shard), h2 answers stale proofs,
        // h3 not live, h4 missing.
        fake.down.insert("h0".into());
        fake.shards.insert("h1".into(), shards[2].clone());
        fake.wrong_proof.insert("h2".into());
        info.holders[3].grpc_addr = None;
        fake.shards.remove("h4");
        // The manifest names a different hash for shard 5.
        info.holders[5].shard_hash = ShardHash::from_bytes([9; 32]);
        let report = audit_stripes(Arc::new(fake), &[info], 2, |_| {}).await;
        assert!(!report.is_clean());
        let labels: Vec<_> = report.holders.iter().map(|h| h.outcome.label()).collect();
        assert_eq!(
            labels,
            [
                "unreachable",
                "missing",
                "challenge failed",
                "not live",
                "missing",
                "corrupt"
            ]
        );
        assert_eq!(report.ok(), 0);
        assert_eq!(report.missing(), 4);
        assert_eq!(report.corrupt(), 1);
        assert_eq!(report.challenge_failures(), 1);
        let table = report.table();
        assert!(
            table.contains("| challenge failures    |      1 |"),
            "{table}"
        );
        assert!(report.problems().count() == 6);
    }

    #[tokio::test]
    async fn colocated_and_one_loss_stripes_are_counted_and_not_clean() {
        let (shards, mut info) = stripe();
        let mut fake = FakeHolders::default();
        for s in &shards {
            fake.shards.insert(format!("h{}", s.index()), s.clone());
        }
        // Shard 1 sits on shard 0's node: every shard proves, yet only 5 distinct holders.
        info.holders[1].node_id = info.holders[0].node_id;
        let report = audit_stripes(
            Arc::new(FakeHolders {
                shards: fake.shards.clone(),
                ..FakeHolders::default()
            }),
            std::slice::from_ref(&info),
            2,
            |_| {},
        )
        .await;
        assert_eq!(report.ok(), 6);
        assert_eq!(report.colocated_stripes, 1);
        assert_eq!(report.underplaced_stripes, 1);
        assert_eq!(report.one_loss_from_unrecoverable, 0);
        assert!(!report.is_clean(), "{}", report.table());
        let usage = report.usage();
        assert_eq!(usage[&info.holders[0].node_id].shards, 2);
        assert_eq!(
            usage[&info.holders[0].node_id].bytes,
            (shards[0].encoded_len() + shards[1].encoded_len()) as u64
        );
        // Lose the colocated node: 4 distinct holders left, exactly k.
        fake.down.insert("h0".into());
        fake.down.insert("h1".into());
        let report = audit_stripes(Arc::new(fake), &[info], 2, |_| {}).await;
        assert_eq!(report.one_loss_from_unrecoverable, 1);
        assert_eq!(report.unrecoverable_stripes, 0);
        assert!(
            report
                .table()
                .contains("| one loss from lost    |      1 |")
        );
        assert!(report.usage_table().contains("shards"));
    }

    #[test]
    fn underplaced_stripe_is_not_clean() {
        let (_, info) = stripe();
        let report = futures::executor::block_on(audit_stripes(
            Arc::new(FakeHolders::default()),
            &[StripeInfo {
                holders: Vec::new(),
                ..info
            }],
            1,
            |_| {},
        ));
        assert_eq!(report.underplaced_stripes, 1);
        assert!(!report.is_clean());
    }

    fn repaired() -> (TxId, Repaired, pqc::Keypair) {
        let user = pqc::Keypair::generate();
        let tx = Tx::fresh(
            user.account_id(),
            AccountId::from_bytes([3; 32]),
            5,
            1,
            1_767_225_600_000,
            CityId::new("JP-13").unwrap(),
            Position::from_degrees(35.68, 139.69).unwrap(),
            PositionMethod::Gps,
        );
        let signed = pqc::sign_tx(tx, &user);
        let holder = pqc::Keypair::generate();
        let receipts: Vec<SignedReceipt> = (0..2u16)
            .map(|i| {
                SignedReceipt::sign(
                    dag_core::Receipt {
                        stripe_id: StripeId::from_bytes([1; 32]),
                        shard_index: i,
                        shard_hash: ShardHash::from_bytes([2; 32]),
                        holder: holder.node_id(),
                        time_ms: 7,
                    },
                    &holder,
                )
            })
            .collect();
        (
            signed.id(),
            Repaired {
                tx: signed,
                receipts,
                source: "shards (4 used)".into(),
                shards_rebuilt: 0,
            },
            holder,
        )
    }

    #[test]
    fn repaired_tx_and_receipts_are_verified() {
        let (id, r, _) = repaired();
        let checked = check_repaired(id, r.clone(), &pqc::MlDsa87).unwrap();
        assert_eq!(checked.stripe, Some(StripeId::from_bytes([1; 32])));
        let text = checked.describe();
        assert!(text.contains(&id.to_hex()), "{text}");
        assert!(text.contains("shard  1"), "{text}");

        let other = TxId::from_bytes([5; 32]);
        assert!(matches!(
            check_repaired(other, r.clone(), &pqc::MlDsa87),
            Err(CheckError::WrongTx { .. })
        ));

        let mut bad = r.clone();
        bad.tx.signature[10] ^= 1;
        assert!(matches!(
            check_repaired(id, bad, &pqc::MlDsa87),
            Err(CheckError::BadTxSignature { .. })
        ));

        // A receipt altered after signing (forged shard hash) is rejected.
        let mut bad = r.clone();
        bad.receipts[1].receipt.shard_hash = ShardHash::from_bytes([0xEE; 32]);
        assert!(matches!(
            check_repaired(id, bad, &pqc::MlDsa87),
            Err(CheckError::BadReceipt { index: 1, .. })
        ));

        let mut dup = r;
        let first = dup.receipts[0].clone();
        dup.receipts[1] = first;
        assert!(matches!(
            check_repaired(id, dup, &pqc::MlDsa87),
            Err(CheckError::Inconsistent(_))
        ));
    }
}

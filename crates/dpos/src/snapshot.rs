//! Snapshot and restore: the whole state as canonical bytes.
//!
//! Layout (integers little endian; every map in ascending key order, each list prefixed by
//! a u32 count):
//! `magic "citychain/dpos-state/v3" ‖ config ‖ supply (genesis, minted, burned, deposited, released: u64) ‖
//! term (index u64, started_at u64, representatives: 32 each) ‖ balances (account 32,
//! u64) ‖ nonces (account 32, u64) ‖ nodes (account 32, kind u8, metrics, suspicion u32,
//! stake u64, registered_at u64) ‖ bonds (validator 32, delegator 32, lots: amount u64,
//! unlock_at u64) ‖ unbondings (validator 32, delegator 32, entries: amount u64,
//! release_at u64) ‖ accrued (account 32, u64) ‖ rewarded (node 32, epoch u64) ‖
//! offences (32) ‖ incidents (node 32, incident 32) ‖ endpoints (node 32, u16 length +
//! UTF-8)`. A v2 snapshot (the same without endpoints) still restores, with none.
//!
//! Restoring is strict (unsorted or repeated keys, trailing bytes) and re-checks every
//! invariant ([`DposState::check_invariants`]), so a restored state is one `apply` could
//! have produced.

use crate::state::{Lot, NodeRecord, Pending, Supply, Term};
use crate::{DposConfig, DposState, Error, Metrics, NodeKind, Result};
use dag_core::{AccountId, DecodeError, Hash32, Reader, Writer};
use std::collections::{BTreeMap, BTreeSet};

const MAGIC: &[u8] = b"citychain/dpos-state/v3";
/// The layout before endpoints (restored with none).
const MAGIC_V2: &[u8] = b"citychain/dpos-state/v2";

fn count(w: &mut Writer, n: usize) {
    // Collections never approach 2³² entries (each costs a signed tx).
    w.u32(u32::try_from(n).unwrap_or(u32::MAX));
}

fn acc(r: &mut Reader<'_>, f: &'static str) -> std::result::Result<AccountId, DecodeError> {
    Ok(AccountId::from_bytes(r.bytes32(f)?))
}

/// Reads `count × item`, each key strictly greater than the previous.
fn read_sorted<K: Ord + Copy, V>(
    r: &mut Reader<'_>,
    field: &'static str,
    min_entry: usize,
    mut item: impl FnMut(&mut Reader<'_>) -> std::result::Result<(K, V), DecodeError>,
) -> std::result::Result<Vec<(K, V)>, DecodeError> {
    let n = r.u32(field)? as usize;
    if n > r.remaining() / min_entry.max(1) {
        return Err(DecodeError::TooLong {
            field,
            len: n,
            max: r.remaining() / min_entry.max(1),
        });
    }
    let mut out: Vec<(K, V)> = Vec::with_capacity(n);
    for _ in 0..n {
        let (k, v) = item(r)?;
        if out.last().is_some_and(|(prev, _)| *prev >= k) {
            return Err(DecodeError::Invalid {
                field,
                reason: "keys must be strictly ascending",
            });
        }
        out.push((k, v));
    }
    Ok(out)
}

impl DposState {
    /// The canonical bytes of the whole state. Equal states have equal bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(1024);
        w.raw(MAGIC);
        self.config.write(&mut w);
        w.u64(self.supply.genesis)
            .u64(self.supply.minted)
            .u64(self.supply.burned)
            .u64(self.supply.deposited)
            .u64(self.supply.released);
        w.u64(self.term.index).u64(self.term.started_at_ms);
        count(&mut w, self.term.representatives.len());
        for r in &self.term.representatives {
            w.raw(r.as_bytes());
        }
        for map in [&self.balances, &self.nonces] {
            count(&mut w, map.len());
            for (a, v) in map {
                w.raw(a.as_bytes()).u64(*v);
            }
        }
        count(&mut w, self.nodes.len());
        for (a, n) in &self.nodes {
            w.raw(a.as_bytes()).u8(n.kind as u8);
            n.metrics.write(&mut w);
            w.u32(n.suspicion).u64(n.stake).u64(n.registered_at_ms);
        }
        count(&mut w, self.bonds.len());
        for ((v, d), lots) in &self.bonds {
            w.raw(v.as_bytes()).raw(d.as_bytes());
            count(&mut w, lots.len());
            for l in lots {
                w.u64(l.amount).u64(l.unlock_at_ms);
            }
        }
        count(&mut w, self.unbonding.len());
        for ((v, d), ps) in &self.unbonding {
            w.raw(v.as_bytes()).raw(d.as_bytes());
            count(&mut w, ps.len());
            for p in ps {
                w.u64(p.amount).u64(p.release_at_ms);
            }
        }
        count(&mut w, self.accrued.len());
        for (a, v) in &self.accrued {
            w.raw(a.as_bytes()).u64(*v);
        }
        count(&mut w, self.rewarded.len());
        for (a, e) in &self.rewarded {
            w.raw(a.as_bytes()).u64(*e);
        }
        count(&mut w, self.offences.len());
        for o in &self.offences {
            w.raw(&o.0);
        }
        count(&mut w, self.incidents.len());
        for (a, i) in &self.incidents {
            w.raw(a.as_bytes()).raw(&i.0);
        }
        count(&mut w, self.endpoints.len());
        for (a, e) in &self.endpoints {
            let b = e.as_bytes();
            w.raw(a.as_bytes())
                .bytes_u16(&b[..b.len().min(crate::MAX_ENDPOINT_LEN)]);
        }
        w.finish()
    }

    /// BLAKE3 of the snapshot: a commitment to the whole state (for checkpoints).
    pub fn state_root(&self) -> Hash32 {
        Hash32::digest(&self.snapshot())
    }

    /// Rebuilds a state from [`DposState::snapshot`] bytes, strictly, and checks every
    /// invariant.
    pub fn restore(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let magic = r.take(MAGIC.len(), "snapshot magic")?;
        let v2 = magic == MAGIC_V2;
        if magic != MAGIC && !v2 {
            return Err(Error::CorruptSnapshot(
                "not a dpos state snapshot (v2 or v3)",
            ));
        }
        let config = DposConfig::read(&mut r)?;
        let supply = Supply {
            genesis: r.u64("genesis supply")?,
            minted: r.u64("minted")?,
            burned: r.u64("burned")?,
            deposited: r.u64("deposited")?,
            released: r.u64("released")?,
        };
        let index = r.u64("term index")?;
        let started_at_ms = r.u64("term start")?;
        let n = r.u32("representatives")? as usize;
        if n > r.remaining() / 32 {
            return Err(DecodeError::TooLong {
                field: "representatives",
                len: n,
                max: r.remaining() / 32,
            }
            .into());
        }
        let representatives = (0..n)
            .map(|_| acc(&mut r, "representative"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let kv = |r: &mut Reader<'_>| Ok((acc(r, "account")?, r.u64("value")?));
        let balances: BTreeMap<_, _> = read_sorted(&mut r, "balances", 40, kv)?
            .into_iter()
            .collect();
        let nonces: BTreeMap<_, _> = read_sorted(&mut r, "nonces", 40, kv)?.into_iter().collect();
        let nodes: BTreeMap<_, _> = read_sorted(&mut r, "nodes", 77, |r| {
            let a = acc(r, "node")?;
            let kind = NodeKind::from_u8(r.u8("node kind")?)?;
            let metrics = Metrics::read(r)?;
            Ok((
                a,
                NodeRecord {
                    kind,
                    metrics,
                    suspicion: r.u32("suspicion")?,
                    stake: r.u64("stake")?,
                    registered_at_ms: r.u64("registered_at")?,
                },
            ))
        })?
        .into_iter()
        .collect();
        let bonds = read_sorted(&mut r, "bonds", 68, |r| {
            let key = (acc(r, "validator")?, acc(r, "delegator")?);
            let n = r.u32("lots")? as usize;
            let mut lots = Vec::with_capacity(n.min(r.remaining() / 16));
            for _ in 0..n {
                lots.push(Lot {
                    amount: r.u64("lot amount")?,
                    unlock_at_ms: r.u64("lot unlock")?,
                });
            }
            Ok((key, lots))
        })?;
        let unbonding = read_sorted(&mut r, "unbondings", 68, |r| {
            let key = (acc(r, "validator")?, acc(r, "delegator")?);
            let n = r.u32("unbonding entries")? as usize;
            let mut ps = Vec::with_capacity(n.min(r.remaining() / 16));
            for _ in 0..n {
                ps.push(Pending {
                    amount: r.u64("unbonding amount")?,
                    release_at_ms: r.u64("unbonding release")?,
                });
            }
            Ok((key, ps))
        })?;
        let accrued: BTreeMap<_, _> = read_sorted(&mut r, "accrued", 40, kv)?
            .into_iter()
            .collect();
        let rewarded: BTreeSet<_> = read_sorted(&mut r, "rewarded", 40, |r| {
            Ok(((acc(r, "node")?, r.u64("epoch")?), ()))
        })?
        .into_iter()
        .map(|(k, ())| k)
        .collect();
        let offences: BTreeSet<_> = read_sorted(&mut r, "offences", 32, |r| {
            Ok((Hash32(r.bytes32("offence")?), ()))
        })?
        .into_iter()
        .map(|(k, ())| k)
        .collect();
        let incidents: BTreeSet<_> = read_sorted(&mut r, "incidents", 64, |r| {
            Ok(((acc(r, "node")?, Hash32(r.bytes32("incident")?)), ()))
        })?
        .into_iter()
        .map(|(k, ())| k)
        .collect();
        let endpoints: BTreeMap<_, _> = if v2 {
            BTreeMap::new()
        } else {
            read_sorted(&mut r, "endpoints", 35, |r| {
                let a = acc(r, "node")?;
                let b = r.bytes_u16("endpoint", crate::MAX_ENDPOINT_LEN)?;
                let e = std::str::from_utf8(b).map_err(|_| DecodeError::Invalid {
                    field: "endpoint",
                    reason: "not UTF-8",
                })?;
                Ok((a, e.to_string()))
            })?
            .into_iter()
            .collect()
        };
        r.finish()?;
        let state = DposState {
            config,
            supply,
            balances,
            nonces,
            nodes,
            bonds: bonds.into_iter().collect(),
            unbonding: unbonding.into_iter().collect(),
            accrued,
            rewarded,
            offences,
            incidents,
            endpoints,
            term: Term {
                index,
                started_at_ms,
                representatives,
            },
        };
        state.check_invariants()?;
        Ok(state)
    }
}

//! The working set by kind: how long each tx kind stays in a node's working set (the domain's
//! TTLs, [`TxKind::ttl_secs`]), and the garbage-collection rule that removes what expired — never a tx that is Held
//! and not yet Ordered.

use crate::{TxId, TxKind};
use std::collections::HashMap;
use std::time::Duration;

/// How often the garbage collector runs (the domain's 5 s).
pub const GC_INTERVAL: Duration = Duration::from_secs(5);

/// Where a tx in the working set stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkState {
    /// Admitted, not yet Held: collected once its kind's TTL has passed.
    Pending,
    /// Held (receipts from its holders), waiting to be ordered: never collected by age —
    /// the promise made to the sender stands until the tx is Ordered.
    Held,
    /// Ordered by the committee: its work here is done; collected on the next pass.
    Ordered,
}

/// What one garbage-collection pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Pending txs whose TTL passed, with their kind.
    pub expired: Vec<(TxId, TxKind)>,
    /// Ordered txs that left the working set.
    pub completed: Vec<TxId>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: TxKind,
    since_ms: u64,
    state: WorkState,
}

/// The txs a node is working on, by kind and state, with the TTL rule. Pure: time is passed in.
///
/// ```
/// use dag_core::{TxId, TxKind, WorkingSet, WorkState};
/// let mut ws = WorkingSet::default();
/// let (a, b) = (TxId::from_bytes([1; 32]), TxId::from_bytes([2; 32]));
/// ws.insert(a, TxKind::FreshTx, 0);
/// ws.insert(b, TxKind::FreshTx, 0);
/// ws.set_state(&b, WorkState::Held);
/// let report = ws.gc(60_001);
/// assert_eq!(report.expired, vec![(a, TxKind::FreshTx)]);
/// assert!(ws.contains(&b));
/// ```
#[derive(Debug, Clone, Default)]
pub struct WorkingSet {
    entries: HashMap<TxId, Entry>,
}

impl WorkingSet {
    /// Adds a tx admitted at `now_ms` (Pending). Re-inserting keeps the first entry.
    pub fn insert(&mut self, id: TxId, kind: TxKind, now_ms: u64) {
        self.entries.entry(id).or_insert(Entry {
            kind,
            since_ms: now_ms,
            state: WorkState::Pending,
        });
    }

    /// Moves a tx to `state`; false when it is not in the set.
    pub fn set_state(&mut self, id: &TxId, state: WorkState) -> bool {
        match self.entries.get_mut(id) {
            Some(e) => {
                e.state = state;
                true
            }
            None => false,
        }
    }

    /// Takes a tx out of the set (withdrawn, or its work ended elsewhere); returns its kind
    /// and state when it was there.
    pub fn remove(&mut self, id: &TxId) -> Option<(TxKind, WorkState)> {
        self.entries.remove(id).map(|e| (e.kind, e.state))
    }

    /// Ids of the txs in `state` (unordered).
    pub fn ids_in(&self, state: WorkState) -> Vec<TxId> {
        self.entries
            .iter()
            .filter(|(_, e)| e.state == state)
            .map(|(id, _)| *id)
            .collect()
    }

    /// True when the tx is in the set.
    pub fn contains(&self, id: &TxId) -> bool {
        self.entries.contains_key(id)
    }

    /// The state of a tx in the set.
    pub fn state(&self, id: &TxId) -> Option<WorkState> {
        self.entries.get(id).map(|e| e.state)
    }

    /// The kind of a tx in the set.
    pub fn kind(&self, id: &TxId) -> Option<TxKind> {
        self.entries.get(id).map(|e| e.kind)
    }

    /// Number of txs in the set.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Count by (kind, state), for metrics.
    pub fn counts(&self) -> HashMap<(TxKind, WorkState), usize> {
        let mut out = HashMap::new();
        for e in self.entries.values() {
            *out.entry((e.kind, e.state)).or_default() += 1;
        }
        out
    }

    /// One collection pass at `now_ms`: removes Pending txs older than their kind's TTL and
    /// Ordered txs; keeps Held ones and kinds without a TTL. Results are sorted by id.
    pub fn gc(&mut self, now_ms: u64) -> GcReport {
        let mut report = GcReport::default();
        self.entries.retain(|id, e| match e.state {
            WorkState::Held => true,
            WorkState::Ordered => {
                report.completed.push(*id);
                false
            }
            WorkState::Pending => match e.kind.ttl_secs() {
                Some(ttl) if now_ms.saturating_sub(e.since_ms) > ttl.saturating_mul(1000) => {
                    report.expired.push((*id, e.kind));
                    false
                }
                _ => true,
            },
        });
        report.expired.sort();
        report.completed.sort();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TxId {
        TxId::from_bytes([n; 32])
    }

    #[test]
    fn gc_interval_is_the_domains() {
        assert_eq!(GC_INTERVAL, Duration::from_secs(5));
    }

    #[test]
    fn expired_fresh_leave_held_stay() {
        let mut ws = WorkingSet::default();
        for n in 0..10 {
            ws.insert(id(n), TxKind::FreshTx, 1_000);
        }
        for n in 0..4 {
            ws.set_state(&id(n), WorkState::Held);
        }
        ws.insert(id(20), TxKind::RepairRequest, 50_000);
        ws.insert(id(21), TxKind::Checkpoint, 0);
        ws.insert(id(22), TxKind::FreshTx, 1_000);
        ws.set_state(&id(22), WorkState::Ordered);
        // At exactly the TTL nothing pending expires; the ordered one leaves.
        let r = ws.gc(61_000);
        assert!(r.expired.is_empty());
        assert_eq!(r.completed, vec![id(22)]);
        let r = ws.gc(61_001);
        assert_eq!(
            r.expired,
            (4..10)
                .map(|n| (id(n), TxKind::FreshTx))
                .collect::<Vec<_>>()
        );
        for n in 0..4 {
            assert_eq!(ws.state(&id(n)), Some(WorkState::Held));
        }
        assert!(ws.contains(&id(20)), "repair_request: 15 s from 50 s");
        let r = ws.gc(65_001);
        assert_eq!(r.expired, vec![(id(20), TxKind::RepairRequest)]);
        let r = ws.gc(u64::MAX);
        assert!(r.expired.is_empty(), "held and checkpoint never expire");
        assert_eq!(ws.len(), 5);
        let mut held = ws.ids_in(WorkState::Held);
        held.sort();
        assert_eq!(held, (0..4).map(id).collect::<Vec<_>>());
        assert_eq!(ws.remove(&id(0)), Some((TxKind::FreshTx, WorkState::Held)));
        assert_eq!(ws.remove(&id(0)), None);
        assert_eq!(ws.len(), 4);
    }
}

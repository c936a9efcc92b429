//! The monitor's missed-round incidents: a representative that stops taking part in the
//! consensus it was elected to run becomes a `ReportIncident` system tx, decided from the
//! committed sequence alone so every representative reaches the same verdict.
//!
//! The rule ([`MissedRule`]). Rounds of an epoch are cut into aligned windows of
//! `window_rounds` rounds (`w = round / window_rounds`). A **missed slot** is an even round
//! whose scheduled leader ([`Committee::leader`]) was skipped by the commit rule (no
//! committed checkpoint has that leader round) **and** of which no batch of that leader
//! was committed at all (not as a leader, nor in a later leader's history) by the time
//! the decision is taken. A leader is reported for window `w` when it had at least
//! `min_slots` slots in `w` and missed **every one** of them. The decision for `w` is
//! taken when the first checkpoint whose leader round is ≥ `(w + 1) × window_rounds +
//! lag_rounds` is committed: batches committed after that point do not count, so the
//! verdict is a function of the committed sequence only. The incident's digest is
//! `BLAKE3(tag ‖ epoch ‖ w ‖ leader)` ([`incident_digest`]): every representative reports
//! the same digest and dpos counts it once (`IncidentReplayed` for the others).
//!
//! Why an honest slow leader is not punished routinely: a leader that is merely late gets
//! skipped as leader, but its batch (certified by the others) is still committed through
//! a later leader's history or a weak link, which clears the slot; and one slot of the
//! window committed — as leader or not — clears the whole window. Only a leader whose
//! batches stay absent for all its slots of a window (crashed, partitioned, or not
//! proposing) is reported: once per window, each +`incident_suspicion` in dpos (20 by
//! default; inactive at 50), so three such windows vote it out at the next election.
//!
//! Checkpoints of an epoch are fed in commit order with the epoch's committee
//! ([`MissedRounds::observe`]); a new epoch restarts the tracker (its rounds restart at
//! 0). A representative that starts in the middle of an epoch observes only from there on:
//! it may decide fewer windows than the others (it reports nothing it did not see), never
//! a different verdict for a window it decides, as long as it observed that window from
//! its start ([`MissedRounds::new`] takes the first round it may judge).

use super::SenderQueue;
use dag_core::NodeId;
use dag_core::consensus::{CommittedSubDag, Committee, Round};
use dag_core::{AccountId, Hash32};
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Committed checkpoints queued for the missed-round reporter; when it falls behind, newer
/// ones are dropped and the tracker restarts after the gap (it then judges only whole
/// windows it saw, see [`MissedRounds::new`]).
pub const COMMIT_SUMMARIES: usize = 1024;

/// Domain tag of the missed-round incident digest.
const TAG: &[u8] = b"citychain/incident/missed-leader-rounds/v1";

/// The threshold rule (the same on every representative: a city's representatives run one
/// binary version; the digest names the window, so two rules would report different
/// incidents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MissedRule {
    /// Rounds per window (even, > 0). Default 64: with 4 members round-robin, 8 leader
    /// slots per member per window.
    pub window_rounds: u64,
    /// Fewest slots a leader must have had in a window to be judged on it. Default 4.
    pub min_slots: u32,
    /// Rounds past a window's end before it is decided (late batches of its rounds still
    /// count until then). Default 16.
    pub lag_rounds: u64,
}

impl Default for MissedRule {
    fn default() -> Self {
        MissedRule {
            window_rounds: 64,
            min_slots: 4,
            lag_rounds: 16,
        }
    }
}

/// One decided incident: `leader` missed all its `slots` leader slots in `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissedIncident {
    /// The consensus epoch.
    pub epoch: u64,
    /// The window index (`round / window_rounds`).
    pub window: u64,
    /// The representative that missed them (its account is its node id's bytes).
    pub leader: NodeId,
    /// How many leader slots it had (and missed) in the window.
    pub slots: u32,
    /// The digest dpos records ([`incident_digest`]).
    pub digest: Hash32,
}

impl MissedIncident {
    /// The representative's dpos account.
    pub fn account(&self) -> AccountId {
        AccountId::from_bytes(*self.leader.as_bytes())
    }

    /// The `ReportIncident` payload for it.
    pub fn payload(&self) -> dpos::SystemPayload {
        dpos::SystemPayload::ReportIncident {
            node: self.account(),
            incident: self.digest,
        }
    }
}

/// `BLAKE3(tag ‖ epoch ‖ window ‖ leader)`: the same on every representative.
pub fn incident_digest(epoch: u64, window: u64, leader: &NodeId) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(TAG);
    h.update(&epoch.to_le_bytes());
    h.update(&window.to_le_bytes());
    h.update(leader.as_bytes());
    Hash32(*h.finalize().as_bytes())
}

/// The tracker of one epoch (see the module docs).
#[derive(Debug)]
pub struct MissedRounds {
    rule: MissedRule,
    epoch: u64,
    committee: Committee,
    /// Windows before this one are never judged (observed from the middle).
    first_window: u64,
    /// The newest committed leader round seen (None before the first checkpoint).
    last_leader_round: Option<Round>,
    /// Skipped leader slots not decided yet: round → its leader.
    skipped: BTreeMap<Round, NodeId>,
    /// Committed (author, round) pairs of rounds not decided yet.
    committed: BTreeSet<(Round, NodeId)>,
    /// Leader rounds committed, of windows not decided yet.
    led: BTreeSet<Round>,
    /// The next window to decide.
    next_window: u64,
}

impl MissedRounds {
    /// A tracker of `epoch` run by `committee`, judging only windows that start at or
    /// after `from_round` (0 when it sees the epoch from its first checkpoint).
    ///
    /// # Panics
    /// Never for a valid rule; an odd or zero `window_rounds` is rounded up to the next
    /// even number ≥ 2.
    pub fn new(rule: MissedRule, epoch: u64, committee: Committee, from_round: Round) -> Self {
        let window = rule.window_rounds.max(2).next_multiple_of(2);
        let rule = MissedRule {
            window_rounds: window,
            ..rule
        };
        let first_window = from_round.div_ceil(window);
        MissedRounds {
            rule,
            epoch,
            committee,
            first_window,
            last_leader_round: None,
            skipped: BTreeMap::new(),
            committed: BTreeSet::new(),
            led: BTreeSet::new(),
            next_window: first_window,
        }
    }

    /// The epoch this tracker judges.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Feeds the next committed checkpoint of the epoch: its leader's round and the
    /// (author, round) of every batch it committed. Returns the incidents decided by it.
    pub fn observe(
        &mut self,
        leader_round: Round,
        batches: impl IntoIterator<Item = (NodeId, Round)>,
    ) -> Vec<MissedIncident> {
        let window_start = self.first_window * self.rule.window_rounds;
        // Leader slots between the previous committed leader and this one were skipped.
        let from = match self.last_leader_round {
            Some(r) => r + 2,
            None => window_start,
        };
        let mut r = from.next_multiple_of(2);
        while r < leader_round {
            if r >= window_start {
                self.skipped.insert(r, self.committee.leader(r));
            }
            r += 2;
        }
        if self.last_leader_round.is_none_or(|l| leader_round > l) {
            self.last_leader_round = Some(leader_round);
        }
        self.led.insert(leader_round);
        for (author, round) in batches {
            if round >= window_start {
                self.committed.insert((round, author));
            }
        }
        let mut out = Vec::new();
        // Decide every window whose end + lag the committed leader round has passed.
        while leader_round
            >= (self.next_window + 1) * self.rule.window_rounds + self.rule.lag_rounds
        {
            out.extend(self.decide(self.next_window));
            self.next_window += 1;
        }
        out
    }

    fn decide(&mut self, w: u64) -> Vec<MissedIncident> {
        let (lo, hi) = (
            w * self.rule.window_rounds,
            (w + 1) * self.rule.window_rounds,
        );
        // Per leader: slots in the window, and whether any was taken part in.
        let mut per: BTreeMap<NodeId, (u32, bool)> = BTreeMap::new();
        for r in (lo..hi).step_by(2) {
            let leader = self.committee.leader(r);
            let e = per.entry(leader).or_insert((0, false));
            e.0 += 1;
            let missed = self.skipped.contains_key(&r)
                && !self.led.contains(&r)
                && !self.committed.contains(&(r, leader));
            if !missed {
                e.1 = true;
            }
        }
        // Forget the window.
        self.skipped = self.skipped.split_off(&hi);
        self.committed = self.committed.split_off(&(hi, NodeId::from_bytes([0; 32])));
        self.led = self.led.split_off(&hi);
        per.into_iter()
            .filter(|(_, (slots, took_part))| *slots >= self.rule.min_slots && !took_part)
            .map(|(leader, (slots, _))| MissedIncident {
                epoch: self.epoch,
                window: w,
                leader,
                slots,
                digest: incident_digest(self.epoch, w, &leader),
            })
            .collect()
    }
}

/// What the reporter needs of one committed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSummary {
    /// The checkpoint's sequence.
    pub sequence: u64,
    /// The epoch its batches belong to.
    pub epoch: u64,
    /// The committed leader's round.
    pub leader_round: Round,
    /// (author, round) of every batch it committed.
    pub batches: Vec<(NodeId, Round)>,
}

impl CommitSummary {
    /// The summary of a committed sub-DAG (`None` without batches).
    pub fn of(sub_dag: &CommittedSubDag) -> Option<Self> {
        let leader = sub_dag.batches.last()?;
        Some(CommitSummary {
            sequence: sub_dag.checkpoint.sequence,
            epoch: leader.batch().header.epoch,
            leader_round: sub_dag.checkpoint.leader_round,
            batches: sub_dag
                .batches
                .iter()
                .map(|c| (c.author(), c.round()))
                .collect(),
        })
    }
}

/// Runs the missed-round monitor of one representative: each committed checkpoint's
/// summary (in commit order) goes through a [`MissedRounds`] tracker of its epoch, built
/// with the committee `committee` shows for that epoch; each incident decided becomes a
/// `ReportIncident` payload on `queue`. Every representative decides the same incidents;
/// the first applied counts, the others are refused by the rules (`IncidentReplayed`) as
/// deterministic no-ops. A gap in the sequence (dropped summaries, a replay after a
/// restart) or a committee not yet known for the epoch restarts the tracker after it.
pub fn spawn_missed_round_reporter(
    rule: MissedRule,
    mut summaries: mpsc::Receiver<CommitSummary>,
    committee: watch::Receiver<Committee>,
    me: NodeId,
    queue: SenderQueue,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tracker: Option<MissedRounds> = None;
        let mut last: Option<(u64, u64)> = None; // (sequence, epoch) of the previous summary
        while let Some(s) = summaries.recv().await {
            let follows = last.is_some_and(|(seq, _)| s.sequence == seq + 1);
            let same_epoch = tracker.as_ref().is_some_and(|t| t.epoch() == s.epoch);
            if !(follows && same_epoch) {
                let c = committee.borrow().clone();
                tracker = (c.epoch() == s.epoch).then(|| {
                    // A new epoch seen from its start (the previous summary was the last
                    // of the epoch before): judge from round 0; else from here on.
                    let from_start = follows && last.is_some_and(|(_, e)| e + 1 == s.epoch);
                    let from = if from_start { 0 } else { s.leader_round };
                    MissedRounds::new(rule, s.epoch, c, from)
                });
            }
            last = Some((s.sequence, s.epoch));
            let Some(t) = tracker.as_mut() else {
                continue;
            };
            for i in t.observe(s.leader_round, s.batches) {
                if i.leader == me {
                    continue;
                }
                tracing::warn!(
                    leader = %i.leader,
                    epoch = i.epoch,
                    window = i.window,
                    slots = i.slots,
                    "a representative missed every leader slot of a window: reporting an incident"
                );
                if !queue.send(i.payload()).await {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn committee(n: u8) -> (Committee, Vec<NodeId>) {
        let keys: Vec<pqc::Keypair> = (0..n).map(|_| pqc::Keypair::generate()).collect();
        let c = Committee::new(
            keys.iter()
                .map(|k| (dag_core::Signer::public_key(k).to_vec(), 1))
                .collect(),
        )
        .unwrap();
        let ids = c.authorities().iter().map(|a| a.id).collect();
        (c, ids)
    }

    const RULE: MissedRule = MissedRule {
        window_rounds: 16,
        min_slots: 2,
        lag_rounds: 4,
    };

    /// Drives a run: every even round's leader commits unless `down(leader, round)`;
    /// every member but the down ones has a batch in each round, committed with the next
    /// committed leader. Returns every incident decided.
    fn run(
        c: &Committee,
        ids: &[NodeId],
        rounds: Round,
        down: impl Fn(NodeId, Round) -> bool,
        late_batches: bool,
    ) -> Vec<MissedIncident> {
        let mut t = MissedRounds::new(RULE, 3, c.clone(), 0);
        let mut pending: Vec<(NodeId, Round)> = Vec::new();
        let mut out = Vec::new();
        for r in 0..rounds {
            for id in ids {
                // A slow leader's batch arrives late but is certified and committed later
                // (late_batches); a down one has none.
                if !down(*id, r) || (late_batches && c.leader(r) == *id && r % 2 == 0) {
                    pending.push((*id, r));
                }
            }
            if r % 2 == 0 && !down(c.leader(r), r) {
                out.extend(t.observe(r, std::mem::take(&mut pending)));
            }
        }
        out
    }

    #[test]
    fn a_crashed_leader_is_reported_once_per_window_with_the_same_digest_everywhere() {
        let (c, ids) = committee(4);
        let crashed = ids[1];
        let a = run(&c, &ids, 100, |id, r| id == crashed && r >= 16, false);
        // Windows of 16 rounds (round robin: 2 slots each): [0,16) before the crash → not
        // reported; [16,32), [32,48), [48,64), [64,80) are decided by leader round 98
        // ([80,96) would need one ≥ 96 + 4) → reported.
        let windows: Vec<u64> = a.iter().map(|i| i.window).collect();
        assert_eq!(windows, [1, 2, 3, 4], "{a:?}");
        assert!(
            a.iter()
                .all(|i| i.leader == crashed && i.epoch == 3 && i.slots == 2)
        );
        assert_eq!(a[0].digest, incident_digest(3, 1, &crashed));
        assert_ne!(a[0].digest, a[1].digest);
        assert_ne!(
            incident_digest(3, 1, &crashed),
            incident_digest(4, 1, &crashed)
        );
        assert_eq!(
            a[0].payload(),
            dpos::SystemPayload::ReportIncident {
                node: AccountId::from_bytes(*crashed.as_bytes()),
                incident: a[0].digest,
            }
        );
        // Another representative seeing the same sequence decides the same.
        assert_eq!(
            run(&c, &ids, 100, |id, r| id == crashed && r >= 16, false),
            a
        );
    }

    #[test]
    fn a_slow_leader_whose_batches_still_commit_is_never_reported() {
        let (c, ids) = committee(4);
        let slow = ids[2];
        // Skipped as leader every time, but its batches are committed through later
        // leaders' histories.
        assert!(run(&c, &ids, 200, |id, _| id == slow, true).is_empty());
        // Honest run: nothing.
        assert!(run(&c, &ids, 200, |_, _| false, false).is_empty());
    }

    #[test]
    fn one_slot_taken_part_in_clears_the_window() {
        let (c, ids) = committee(4);
        let flaky = ids[3];
        // Misses every slot of its except one in each window of 16 rounds (its first).
        let first_slot_in_window = |r: Round| {
            let lo = r / 16 * 16;
            (lo..lo + 16)
                .step_by(2)
                .find(|x| c.leader(*x) == flaky)
                .unwrap()
        };
        let out = run(
            &c,
            &ids,
            120,
            |id, r| id == flaky && r != first_slot_in_window(r),
            false,
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_tracker_started_mid_epoch_judges_only_whole_windows_it_saw() {
        let (c, ids) = committee(4);
        let crashed = ids[0];
        let mut t = MissedRounds::new(RULE, 0, c.clone(), 20);
        let mut out = Vec::new();
        for r in (20..100).step_by(2) {
            if c.leader(r) != crashed {
                out.extend(t.observe(r, ids.iter().filter(|i| **i != crashed).map(|i| (*i, r))));
            }
        }
        // Window 1 ([16,32)) started before round 20: not judged; 2, 3, 4 are.
        let windows: Vec<u64> = out.iter().map(|i| i.window).collect();
        assert_eq!(windows, [2, 3, 4]);
        assert_eq!(out[0].digest, incident_digest(0, 2, &crashed));
    }

    #[test]
    fn too_few_slots_in_a_window_are_not_judged() {
        let (c, ids) = committee(16);
        // 16 members, 8 slots per 16-round window: each leader has ≤ 1 slot < min_slots.
        let crashed = ids[5];
        assert!(run(&c, &ids, 200, |id, _| id == crashed, false).is_empty());
    }
}

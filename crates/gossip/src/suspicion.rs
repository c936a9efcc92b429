//! Suspicion timers for suspicions learned from others.
//!
//! foca starts a suspect → down timer only on the member whose own probe failed; the
//! others learn the suspicion, then wait for that member's Down broadcast. A member that
//! misses that broadcast (loss, a full packet) would keep the dead member as suspect until
//! its own round-robin probe reaches it — a cycle of N probe periods. SWIM (and Lifeguard)
//! start the timer on every member that learns a suspicion; this does that: a member seen
//! suspect at the same incarnation for longer than the suspicion is declared down locally
//! (and the Down is gossiped on). A refutation raises the incarnation, which resets it.

use crate::Member;
use dag_core::NodeId;
use foca::{Foca, Incarnation, PostcardCodec, Runtime, State};
use rand_010::rngs::StdRng;
use std::collections::HashMap;

/// The foca instance every member runs.
pub(crate) type Swim = Foca<Member, PostcardCodec, StdRng, foca::NoCustomBroadcast>;

/// When each (member, incarnation) was first seen suspect.
#[derive(Debug, Default)]
pub(crate) struct SuspicionClock {
    since: HashMap<NodeId, (Incarnation, u64)>,
}

impl SuspicionClock {
    /// Notes the current suspects at `now_ms` and declares down those suspect for longer
    /// than `after_ms` at one incarnation. Returns the suspects now.
    pub(crate) fn tick(
        &mut self,
        foca: &mut Swim,
        now_ms: u64,
        after_ms: u64,
        rt: impl Runtime<Member>,
    ) -> Vec<NodeId> {
        let suspects: Vec<(Member, Incarnation)> = foca
            .iter_membership_state()
            .filter(|m| m.state() == State::Suspect)
            .map(|m| (*m.id(), m.incarnation()))
            .collect();
        let mut next = HashMap::with_capacity(suspects.len());
        let mut expired = Vec::new();
        for (m, inc) in &suspects {
            let since = match self.since.get(&m.node_id) {
                Some((i, t)) if i == inc => *t,
                _ => now_ms,
            };
            if now_ms.saturating_sub(since) > after_ms {
                expired.push(foca::Member::new(*m, *inc, State::Down));
            } else {
                next.insert(m.node_id, (*inc, since));
            }
        }
        self.since = next;
        if !expired.is_empty() {
            let _ = foca.apply_many(expired.into_iter(), true, rt);
        }
        suspects
            .into_iter()
            .map(|(m, _)| m.node_id)
            .filter(|id| self.since.contains_key(id))
            .collect()
    }
}

/// Raises a suspicion against `node` (at its current incarnation) and gossips it, when
/// it is alive in this member's view: used when presence says the node is gone while
/// gossip still holds it. A live node refutes within the suspicion time; a dead one is
/// declared down when the suspicion runs out. Returns whether a suspicion was raised.
pub(crate) fn suspect(foca: &mut Swim, node: NodeId, rt: impl Runtime<Member>) -> bool {
    let Some((m, inc)) = foca
        .iter_membership_state()
        .find(|m| m.id().node_id == node && m.state() == State::Alive)
        .map(|m| (*m.id(), m.incarnation()))
    else {
        return false;
    };
    foca.apply_many(
        std::iter::once(foca::Member::new(m, inc, State::Suspect)),
        true,
        rt,
    )
    .is_ok()
}

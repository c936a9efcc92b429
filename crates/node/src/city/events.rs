//! The city node's event bus: every step of a tx's life (admitted, held, ordered,
//! federated) and of a repair, numbered in publication order, kept in a bounded history
//! for `Last-Event-ID` resume and fanned out live over a bounded broadcast channel (a
//! subscriber that falls behind is told it missed events, it never slows the node).

use dag_core::{AccountId, TxId};
use gateway::{EventKind, GatewayEvent, Subscription};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Sizes of the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBusConfig {
    /// Events kept for resume.
    pub history: usize,
    /// Live events buffered per subscriber before it is told it lagged.
    pub channel: usize,
    /// Txs whose accounts are remembered (so later events can be filtered by account).
    pub accounts: usize,
    /// Checkpoints whose txs are remembered until they are federated.
    pub checkpoints: usize,
}

impl Default for EventBusConfig {
    fn default() -> Self {
        EventBusConfig {
            history: 4096,
            channel: 1024,
            accounts: 65_536,
            checkpoints: 1024,
        }
    }
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    history: VecDeque<Arc<GatewayEvent>>,
    accounts: HashMap<TxId, Vec<AccountId>>,
    accounts_order: VecDeque<TxId>,
    ordered: BTreeMap<u64, Vec<TxId>>,
}

/// The bus. Publishing takes one short lock, so ids follow publication order exactly.
pub struct EventBus {
    cfg: EventBusConfig,
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<GatewayEvent>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("next_id", &self.inner.lock().next_id)
            .finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(EventBusConfig::default())
    }
}

impl EventBus {
    /// An empty bus. Ids start at 1 (so `Last-Event-ID: 0` replays the whole history).
    pub fn new(cfg: EventBusConfig) -> Self {
        let (live, _) = broadcast::channel(cfg.channel.max(1));
        EventBus {
            cfg,
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
            live,
        }
    }

    /// Publishes one event; returns its id.
    pub fn publish(&self, kind: EventKind, tx_id: TxId, detail: serde_json::Value) -> u64 {
        // The tx's life cycle in the logs (inside the `tx`, `order` or `federate` span).
        tracing::debug!(tx = %tx_id, event = kind.name(), %detail, "tx event");
        let mut g = self.inner.lock();
        let id = g.next_id;
        g.next_id += 1;
        let e = Arc::new(GatewayEvent {
            id,
            kind,
            tx_id,
            accounts: g.accounts.get(&tx_id).cloned().unwrap_or_default(),
            at_ms: crate::runtime::now_ms(),
            detail,
        });
        if g.history.len() >= self.cfg.history.max(1) {
            g.history.pop_front();
        }
        g.history.push_back(e.clone());
        // No subscriber is not an error.
        let _ = self.live.send(e);
        id
    }

    /// Remembers the sender and receiver of `tx` (for account filters), then publishes.
    pub fn publish_with_accounts(
        &self,
        kind: EventKind,
        tx_id: TxId,
        accounts: [AccountId; 2],
        detail: serde_json::Value,
    ) -> u64 {
        {
            let mut g = self.inner.lock();
            if !g.accounts.contains_key(&tx_id) {
                if g.accounts_order.len() >= self.cfg.accounts.max(1)
                    && let Some(old) = g.accounts_order.pop_front()
                {
                    g.accounts.remove(&old);
                }
                g.accounts_order.push_back(tx_id);
                let mut a = accounts.to_vec();
                a.dedup();
                g.accounts.insert(tx_id, a);
            }
        }
        self.publish(kind, tx_id, detail)
    }

    /// Checkpoint `seq` committed `txs`: one `ordered` event each; remembered until the
    /// checkpoint is federated.
    pub fn ordered(&self, seq: u64, txs: Vec<TxId>) {
        let _span = tracing::debug_span!("order", checkpoint = seq).entered();
        for t in &txs {
            self.publish(
                EventKind::Ordered,
                *t,
                serde_json::json!({ "sequence": seq }),
            );
        }
        let mut g = self.inner.lock();
        if g.ordered.len() >= self.cfg.checkpoints.max(1) {
            g.ordered.pop_first();
        }
        g.ordered.insert(seq, txs);
    }

    /// Checkpoint `seq` is in the continent log: one `federated` event per tx it ordered
    /// (those this process saw ordered).
    pub fn federated(&self, seq: u64) {
        let _span = tracing::debug_span!("federate", checkpoint = seq).entered();
        let txs = self.inner.lock().ordered.remove(&seq).unwrap_or_default();
        for t in txs {
            self.publish(
                EventKind::Federated,
                t,
                serde_json::json!({ "sequence": seq }),
            );
        }
    }

    /// Events after `after` still in the history, then the live feed.
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let g = self.inner.lock();
        let live = self.live.subscribe();
        let Some(after) = after else {
            return Subscription {
                backlog: Vec::new(),
                live,
                gap: false,
            };
        };
        let oldest = g.history.front().map_or(g.next_id, |e| e.id);
        let backlog = g.history.iter().filter(|e| e.id > after).cloned().collect();
        Subscription {
            backlog,
            live,
            gap: after.saturating_add(1) < oldest,
        }
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.inner.lock().next_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(n: u8) -> TxId {
        TxId::from_bytes([n; 32])
    }

    #[test]
    fn resume_replays_after_the_id_and_reports_gaps() {
        let bus = EventBus::new(EventBusConfig {
            history: 3,
            ..EventBusConfig::default()
        });
        for n in 1..=5 {
            bus.publish(EventKind::Held, tx(n), serde_json::Value::Null);
        }
        let s = bus.subscribe(Some(3));
        assert_eq!(
            s.backlog.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(!s.gap);
        let s = bus.subscribe(Some(1));
        assert_eq!(s.backlog.len(), 3);
        assert!(s.gap, "event 2 left the history");
        let s = bus.subscribe(None);
        assert!(s.backlog.is_empty() && !s.gap);
    }

    #[tokio::test]
    async fn ordered_then_federated_carry_accounts_in_order() {
        let bus = EventBus::default();
        let a = AccountId::from_bytes([9; 32]);
        let b = AccountId::from_bytes([8; 32]);
        let mut sub = bus.subscribe(None).live;
        bus.publish_with_accounts(EventKind::Held, tx(1), [a, b], serde_json::Value::Null);
        bus.ordered(7, vec![tx(1)]);
        bus.federated(7);
        bus.federated(7); // a second proof publishes nothing
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let e = sub.recv().await.unwrap();
            assert_eq!(e.accounts, vec![a, b]);
            assert!(e.matches(Some(&tx(1)), Some(&b)));
            assert!(!e.matches(Some(&tx(2)), None));
            kinds.push(e.kind);
        }
        assert_eq!(
            kinds,
            vec![EventKind::Held, EventKind::Ordered, EventKind::Federated]
        );
        assert!(sub.try_recv().is_err());
    }

    /// Captures what `tracing` logs (debug and up) on this thread while `f` runs.
    fn logs_of(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<parking_lot::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_logs_follow_a_tx_through_hold_order_and_federate_by_its_id() {
        let bus = EventBus::default();
        let id = tx(3);
        let logs = logs_of(|| {
            let _tx = tracing::debug_span!("tx", id = %id).entered();
            bus.publish(EventKind::Held, id, serde_json::Value::Null);
            drop(_tx);
            bus.ordered(11, vec![id, tx(4)]);
            bus.federated(11);
        });
        let line = |stage: &str, event: &str| {
            logs.lines()
                .any(|l| l.contains(stage) && l.contains(&format!("tx={id}")) && l.contains(event))
        };
        assert!(line(&format!("tx{{id={id}}}"), "event=\"held\""), "{logs}");
        assert!(line("order{checkpoint=11}", "event=\"ordered\""), "{logs}");
        assert!(
            line("federate{checkpoint=11}", "event=\"federated\""),
            "{logs}"
        );
        // The other tx of the checkpoint is logged under its own id.
        assert!(logs.contains(&format!("tx={}", tx(4))), "{logs}");
    }
}

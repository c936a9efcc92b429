//! Datagram authentication, sans-IO: who may speak, and with which key.
//!
//! An ML-DSA-87 signature is 4,627 bytes and a 1,500-byte MTU carries one SWIM datagram,
//! so signing each datagram would fragment every one and cost a signature per message.
//! Instead each direction of each pair of members runs one signed handshake that sets up a
//! session key, and every later datagram carries an 89-byte envelope with a MAC:
//!
//! ```text
//! Hello  (A → B): 1 | ver | A | sid(16) | time_ms | pk_A(2592) | ek(ML-KEM-768, 1184) | sig_A
//! Accept (B → A): 2 | ver | B | sid(16) | H(Hello) | pk_B(2592) | ct(1088) | sig_B
//! Data   (A → B): 3 | A | sid(16) | counter(8) | payload | MAC(32)
//! Rekey  (B → A): 4 | B | sid(16)            (unauthenticated: only makes A start a handshake)
//! ```
//!
//! Each side checks that BLAKE3(pk) is the node id it claims and verifies the signature
//! (domain-tagged, over everything before it); B encapsulates to A's ephemeral ML-KEM key,
//! so only A and B know the shared secret, and the key is
//! `BLAKE3-derive_key("citychain gossip session v1", ss ‖ H(Hello) ‖ ct)`. The MAC is keyed
//! BLAKE3 over the header and payload; counters are strictly fresh per session (a 64-wide
//! replay window), so a datagram cannot be replayed, altered or forged by anyone who does not
//! hold one of the two node keys. The handshake datagrams (~8.4 KB) are the only ones above
//! the MTU; they happen once per pair and direction (and after a restart).
//!
//! The hello carries a timestamp (±120 s) so an old hello cannot be replayed long after;
//! a replayed hello only creates a session whose key the attacker cannot derive. A node
//! must also pass the `allow` check (the city's node list) before any session exists.

use crate::{Error, Result};
use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, EncapsulationKey, ML_KEM_768};
use dag_core::{NodeId, SignatureVerifier, Signer};
use pqc::{Keypair, MlDsa87, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

const T_HELLO: u8 = 1;
const T_ACCEPT: u8 = 2;
const T_DATA: u8 = 3;
const T_REKEY: u8 = 4;
const VERSION: u8 = 1;
const DOMAIN_HELLO: &[u8] = b"citychain/gossip/hello/v1";
const DOMAIN_ACCEPT: &[u8] = b"citychain/gossip/accept/v1";
const KDF_CONTEXT: &str = "citychain gossip session v1";
const SID: usize = 16;
const EK_LEN: usize = 1184;
const CT_LEN: usize = 1088;
const MAC: usize = 32;
const DATA_HEADER: usize = 1 + 32 + SID + 8;
/// Bytes a data datagram adds to the SWIM payload (header + MAC).
pub const WIRE_OVERHEAD: usize = DATA_HEADER + MAC;
const HELLO_BODY: usize = 2 + 32 + SID + 8 + PUBLIC_KEY_LEN + EK_LEN;
const ACCEPT_BODY: usize = 2 + 32 + SID + 32 + PUBLIC_KEY_LEN + CT_LEN;
/// Largest accepted clock difference in a hello.
const MAX_SKEW_MS: u64 = 120_000;
/// Payloads kept while a handshake is in flight (per peer); older ones are dropped (SWIM
/// tolerates loss).
const QUEUE: usize = 32;
/// A handshake unanswered for this long is sent again.
const HELLO_RETRY_MS: u64 = 1_000;
/// Inbound sessions kept per peer (a restart or rekey opens a new one).
const INBOUND_PER_PEER: usize = 3;

/// Decides whether a node may gossip here (the city's node list).
pub type AllowFn = Arc<dyn Fn(&NodeId) -> bool + Send + Sync>;

/// What to do with an outgoing SWIM payload.
#[derive(Debug, PartialEq, Eq)]
pub enum SealOutcome {
    /// Send this datagram.
    Data(Vec<u8>),
    /// No session yet: send this hello; the payload waits for the accept.
    Hello(Vec<u8>),
    /// A handshake is in flight; the payload waits.
    Queued,
}

/// What an incoming datagram turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// An authentic SWIM payload from `peer`.
    Payload {
        /// The authenticated sender.
        peer: NodeId,
        /// The SWIM bytes.
        data: Vec<u8>,
    },
    /// Datagrams to send (an accept, the queued payloads of a finished handshake, a
    /// rekey request or a new hello).
    Send(Vec<(SocketAddr, Vec<u8>)>),
}

struct Pending {
    sid: [u8; SID],
    dk: DecapsulationKey,
    hello_hash: [u8; 32],
    sent_ms: u64,
}

struct Ready {
    sid: [u8; SID],
    key: [u8; 32],
    counter: u64,
    last_rekey_ms: Option<u64>,
}

struct Outbound {
    addr: SocketAddr,
    ready: Option<Ready>,
    pending: Option<Pending>,
    queue: VecDeque<Vec<u8>>,
}

struct Inbound {
    key: [u8; 32],
    highest: u64,
    window: u64,
    opened_ms: u64,
}

/// Every session of one node. Pure state: time comes in as arguments, randomness from the
/// operating system (session ids, KEM keys).
pub struct Sessions {
    me: NodeId,
    key: Keypair,
    allow: AllowFn,
    outbound: HashMap<NodeId, Outbound>,
    inbound: HashMap<(NodeId, [u8; SID]), Inbound>,
    last_rekey_sent: HashMap<NodeId, u64>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("me", &self.me)
            .field("outbound", &self.outbound.len())
            .field("inbound", &self.inbound.len())
            .finish()
    }
}

fn mac(key: &[u8; 32], header: &[u8], payload: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(header);
    h.update(payload);
    h.finalize()
}

fn session_key(ss: &[u8], hello_hash: &[u8; 32], ct: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(KDF_CONTEXT);
    h.update(ss);
    h.update(hello_hash);
    h.update(ct);
    *h.finalize().as_bytes()
}

fn signed(domain: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + body.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(body);
    m
}

fn node_at(b: &[u8], at: usize) -> NodeId {
    let mut id = [0u8; 32];
    id.copy_from_slice(&b[at..at + 32]);
    NodeId::from_bytes(id)
}

fn sid_at(b: &[u8], at: usize) -> [u8; SID] {
    let mut s = [0u8; SID];
    s.copy_from_slice(&b[at..at + SID]);
    s
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

impl Sessions {
    /// Sessions of the node holding `key`; peers must pass `allow`.
    pub fn new(key: Keypair, allow: AllowFn) -> Self {
        Sessions {
            me: key.node_id(),
            key,
            allow,
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            last_rekey_sent: HashMap::new(),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// Peers with an established outbound session.
    pub fn established(&self) -> usize {
        self.outbound.values().filter(|o| o.ready.is_some()).count()
    }

    fn hello(&self, now_ms: u64) -> Result<(Vec<u8>, Pending)> {
        let sid: [u8; SID] = rand::random();
        let dk =
            DecapsulationKey::generate(&ML_KEM_768).map_err(|_| Error::Kem { op: "keygen" })?;
        let ek = dk
            .encapsulation_key()
            .and_then(|k| k.key_bytes())
            .map_err(|_| Error::Kem { op: "encode" })?;
        let mut b = Vec::with_capacity(HELLO_BODY + SIGNATURE_LEN);
        b.extend_from_slice(&[T_HELLO, VERSION]);
        b.extend_from_slice(self.me.as_bytes());
        b.extend_from_slice(&sid);
        b.extend_from_slice(&now_ms.to_be_bytes());
        b.extend_from_slice(self.key.public_key());
        b.extend_from_slice(ek.as_ref());
        debug_assert_eq!(b.len(), HELLO_BODY);
        let sig = self.key.sign(&signed(DOMAIN_HELLO, &b));
        b.extend_from_slice(&sig);
        let hello_hash = *blake3::hash(&b).as_bytes();
        Ok((
            b,
            Pending {
                sid,
                dk,
                hello_hash,
                sent_ms: now_ms,
            },
        ))
    }

    fn data(me: NodeId, ready: &mut Ready, payload: &[u8]) -> Vec<u8> {
        ready.counter += 1;
        let mut b = Vec::with_capacity(WIRE_OVERHEAD + payload.len());
        b.push(T_DATA);
        b.extend_from_slice(me.as_bytes());
        b.extend_from_slice(&ready.sid);
        b.extend_from_slice(&ready.counter.to_be_bytes());
        let tag = mac(&ready.key, &b, payload);
        b.extend_from_slice(payload);
        b.extend_from_slice(tag.as_bytes());
        b
    }

    /// Wraps a SWIM payload for `peer` at `addr`.
    pub fn seal(
        &mut self,
        peer: NodeId,
        addr: SocketAddr,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<SealOutcome> {
        let me = self.me;
        let out = self.outbound.entry(peer).or_insert_with(|| Outbound {
            addr,
            ready: None,
            pending: None,
            queue: VecDeque::new(),
        });
        if out.addr != addr {
            // The peer moved (restarted elsewhere): its old session is gone.
            *out = Outbound {
                addr,
                ready: None,
                pending: None,
                queue: VecDeque::new(),
            };
        }
        if let Some(r) = out.ready.as_mut() {
            return Ok(SealOutcome::Data(Self::data(me, r, payload)));
        }
        if out.queue.len() == QUEUE {
            out.queue.pop_front();
        }
        out.queue.push_back(payload.to_vec());
        let stale = out
            .pending
            .as_ref()
            .is_none_or(|p| now_ms.saturating_sub(p.sent_ms) >= HELLO_RETRY_MS);
        if !stale {
            return Ok(SealOutcome::Queued);
        }
        let (hello, pending) = self.hello(now_ms)?;
        if let Some(out) = self.outbound.get_mut(&peer) {
            out.pending = Some(pending);
        }
        Ok(SealOutcome::Hello(hello))
    }

    /// Checks and opens a datagram that arrived from `from`.
    pub fn open(&mut self, from: SocketAddr, d: &[u8], now_ms: u64) -> Result<Opened> {
        let malformed = |what| Error::Malformed { from, what };
        match d.first() {
            Some(&T_DATA) => self.open_data(from, d, now_ms),
            Some(&T_HELLO) => self.on_hello(from, d, now_ms),
            Some(&T_ACCEPT) => self.on_accept(from, d, now_ms),
            Some(&T_REKEY) => {
                if d.len() != 1 + 32 + SID {
                    return Err(malformed("rekey length"));
                }
                self.on_rekey(node_at(d, 1), sid_at(d, 33), now_ms)
            }
            _ => Err(malformed("unknown datagram type")),
        }
    }

    fn open_data(&mut self, from: SocketAddr, d: &[u8], now_ms: u64) -> Result<Opened> {
        let bad = |reason| Error::Unauthentic { from, reason };
        if d.len() < WIRE_OVERHEAD {
            return Err(Error::Malformed {
                from,
                what: "data shorter than its envelope",
            });
        }
        let peer = node_at(d, 1);
        let sid = sid_at(d, 33);
        let counter = u64_at(d, 33 + SID);
        let Some(s) = self.inbound.get_mut(&(peer, sid)) else {
            // We lost this session (restart): ask the sender for a new handshake, at most
            // once a second per peer, and only for nodes that may gossip here (so forged
            // ids cannot grow the table).
            if !(self.allow)(&peer) {
                return Err(bad("unknown session"));
            }
            let last = self.last_rekey_sent.get(&peer).copied();
            if last.is_some_and(|t| now_ms.saturating_sub(t) < HELLO_RETRY_MS) {
                return Err(bad("unknown session"));
            }
            self.last_rekey_sent.insert(peer, now_ms);
            let mut r = Vec::with_capacity(1 + 32 + SID);
            r.push(T_REKEY);
            r.extend_from_slice(self.me.as_bytes());
            r.extend_from_slice(&sid);
            return Ok(Opened::Send(vec![(from, r)]));
        };
        let (header, rest) = d.split_at(DATA_HEADER);
        let (payload, tag) = rest.split_at(rest.len() - MAC);
        let mut t = [0u8; MAC];
        t.copy_from_slice(tag);
        // blake3::Hash compares in constant time.
        if mac(&s.key, header, payload) != blake3::Hash::from_bytes(t) {
            return Err(bad("bad MAC"));
        }
        if counter > s.highest {
            let shift = counter - s.highest;
            s.window = if shift >= 64 { 0 } else { s.window << shift };
            s.window |= 1;
            s.highest = counter;
        } else {
            let age = s.highest - counter;
            if age >= 64 || s.window & (1 << age) != 0 {
                return Err(bad("replayed or too old"));
            }
            s.window |= 1 << age;
        }
        Ok(Opened::Payload {
            peer,
            data: payload.to_vec(),
        })
    }

    fn on_hello(&mut self, from: SocketAddr, d: &[u8], now_ms: u64) -> Result<Opened> {
        let reject = |reason| Error::Handshake { from, reason };
        if d.len() != HELLO_BODY + SIGNATURE_LEN || d[1] != VERSION {
            return Err(reject("hello length or version"));
        }
        let peer = node_at(d, 2);
        let sid = sid_at(d, 34);
        let at = u64_at(d, 34 + SID);
        let pk = &d[42 + SID..42 + SID + PUBLIC_KEY_LEN];
        let ek = &d[42 + SID + PUBLIC_KEY_LEN..HELLO_BODY];
        if now_ms.abs_diff(at) > MAX_SKEW_MS {
            return Err(reject("hello too old or from the future"));
        }
        if NodeId::from_bytes(*blake3::hash(pk).as_bytes()) != peer {
            return Err(reject("public key does not hash to the node id"));
        }
        if peer == self.me {
            return Err(reject("hello from our own node id"));
        }
        if !(self.allow)(&peer) {
            return Err(Error::NotAllowed { node: peer });
        }
        MlDsa87
            .verify(
                pk,
                &signed(DOMAIN_HELLO, &d[..HELLO_BODY]),
                &d[HELLO_BODY..],
            )
            .map_err(|_| reject("bad hello signature"))?;
        let ek = EncapsulationKey::new(&ML_KEM_768, ek).map_err(|_| reject("bad ML-KEM key"))?;
        let (ct, ss) = ek
            .encapsulate()
            .map_err(|_| Error::Kem { op: "encapsulate" })?;
        let hello_hash = *blake3::hash(d).as_bytes();
        let key = session_key(ss.as_ref(), &hello_hash, ct.as_ref());
        // Keep a few sessions per peer (the newest), so a rekey does not cut the old one
        // before the peer switches.
        let mut mine: Vec<([u8; SID], u64)> = self
            .inbound
            .iter()
            .filter(|((p, _), _)| *p == peer)
            .map(|((_, s), i)| (*s, i.opened_ms))
            .collect();
        if mine.len() >= INBOUND_PER_PEER {
            mine.sort_by_key(|(_, t)| *t);
            for (s, _) in &mine[..=mine.len() - INBOUND_PER_PEER] {
                self.inbound.remove(&(peer, *s));
            }
        }
        self.inbound.insert(
            (peer, sid),
            Inbound {
                key,
                highest: 0,
                window: 0,
                opened_ms: now_ms,
            },
        );
        let mut b = Vec::with_capacity(ACCEPT_BODY + SIGNATURE_LEN);
        b.extend_from_slice(&[T_ACCEPT, VERSION]);
        b.extend_from_slice(self.me.as_bytes());
        b.extend_from_slice(&sid);
        b.extend_from_slice(&hello_hash);
        b.extend_from_slice(self.key.public_key());
        b.extend_from_slice(ct.as_ref());
        debug_assert_eq!(b.len(), ACCEPT_BODY);
        let sig = self.key.sign(&signed(DOMAIN_ACCEPT, &b));
        b.extend_from_slice(&sig);
        Ok(Opened::Send(vec![(from, b)]))
    }

    fn on_accept(&mut self, from: SocketAddr, d: &[u8], _now_ms: u64) -> Result<Opened> {
        let reject = |reason| Error::Handshake { from, reason };
        if d.len() != ACCEPT_BODY + SIGNATURE_LEN || d[1] != VERSION {
            return Err(reject("accept length or version"));
        }
        let peer = node_at(d, 2);
        let sid = sid_at(d, 34);
        let hello_hash = &d[34 + SID..66 + SID];
        let pk = &d[66 + SID..66 + SID + PUBLIC_KEY_LEN];
        let ct = &d[66 + SID + PUBLIC_KEY_LEN..ACCEPT_BODY];
        let me = self.me;
        let out = self
            .outbound
            .get_mut(&peer)
            .ok_or_else(|| reject("accept without a hello"))?;
        let pending = out
            .pending
            .as_ref()
            .filter(|p| p.sid == sid && p.hello_hash == hello_hash)
            .ok_or_else(|| reject("accept for another hello"))?;
        if NodeId::from_bytes(*blake3::hash(pk).as_bytes()) != peer {
            return Err(reject("public key does not hash to the node id"));
        }
        MlDsa87
            .verify(
                pk,
                &signed(DOMAIN_ACCEPT, &d[..ACCEPT_BODY]),
                &d[ACCEPT_BODY..],
            )
            .map_err(|_| reject("bad accept signature"))?;
        let ss = pending
            .dk
            .decapsulate(Ciphertext::from(ct))
            .map_err(|_| Error::Kem { op: "decapsulate" })?;
        let key = session_key(ss.as_ref(), &pending.hello_hash, ct);
        out.pending = None;
        let mut ready = Ready {
            sid,
            key,
            counter: 0,
            last_rekey_ms: None,
        };
        let addr = out.addr;
        let queued: Vec<(SocketAddr, Vec<u8>)> = out
            .queue
            .drain(..)
            .map(|p| (addr, Self::data(me, &mut ready, &p)))
            .collect();
        out.ready = Some(ready);
        Ok(Opened::Send(queued))
    }

    fn on_rekey(&mut self, peer: NodeId, sid: [u8; SID], now_ms: u64) -> Result<Opened> {
        let Some(out) = self.outbound.get_mut(&peer) else {
            return Ok(Opened::Send(Vec::new()));
        };
        let Some(r) = out.ready.as_mut() else {
            return Ok(Opened::Send(Vec::new()));
        };
        if r.sid != sid
            || r.last_rekey_ms
                .is_some_and(|t| now_ms.saturating_sub(t) < HELLO_RETRY_MS)
            || out.pending.is_some()
        {
            return Ok(Opened::Send(Vec::new()));
        }
        r.last_rekey_ms = Some(now_ms);
        let addr = out.addr;
        // The peer lost its end of the session: queue until the new one is accepted.
        let (hello, pending) = self.hello(now_ms)?;
        if let Some(out) = self.outbound.get_mut(&peer) {
            out.pending = Some(pending);
            out.ready = None;
        }
        Ok(Opened::Send(vec![(addr, hello)]))
    }

    /// Forgets `peer`'s outbound session (it was declared down or left).
    pub fn forget(&mut self, peer: &NodeId) {
        self.outbound.remove(peer);
        self.inbound.retain(|(p, _), _| p != peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sessions, Sessions, SocketAddr, SocketAddr) {
        let a = Sessions::new(Keypair::generate(), Arc::new(|_| true));
        let b = Sessions::new(Keypair::generate(), Arc::new(|_| true));
        (
            a,
            b,
            "127.0.0.1:1001".parse().unwrap(),
            "127.0.0.1:1002".parse().unwrap(),
        )
    }

    /// A → B handshake; returns the datagrams A flushes after the accept.
    fn handshake(a: &mut Sessions, b: &mut Sessions, aa: SocketAddr, ba: SocketAddr) -> Vec<u8> {
        let SealOutcome::Hello(hello) = a.seal(b.node_id(), ba, b"ping", 1_000).unwrap() else {
            panic!("first seal must start a handshake")
        };
        assert!(hello.len() > 8_000, "hello is {} bytes", hello.len());
        assert_eq!(
            a.seal(b.node_id(), ba, b"ping2", 1_001).unwrap(),
            SealOutcome::Queued
        );
        let Opened::Send(mut accept) = b.open(aa, &hello, 1_002).unwrap() else {
            panic!("hello answers an accept")
        };
        let (to, accept) = accept.pop().unwrap();
        assert_eq!(to, aa);
        let Opened::Send(flushed) = a.open(ba, &accept, 1_003).unwrap() else {
            panic!("accept flushes")
        };
        assert_eq!(flushed.len(), 2);
        for (i, (to, d)) in flushed.iter().enumerate() {
            assert_eq!(*to, ba);
            let want: &[u8] = if i == 0 { b"ping" } else { b"ping2" };
            assert_eq!(
                b.open(aa, d, 1_004).unwrap(),
                Opened::Payload {
                    peer: a.node_id(),
                    data: want.to_vec()
                }
            );
        }
        flushed[0].1.clone()
    }

    #[test]
    fn handshake_then_authentic_data() {
        let (mut a, mut b, aa, ba) = pair();
        handshake(&mut a, &mut b, aa, ba);
        let SealOutcome::Data(d) = a.seal(b.node_id(), ba, b"hello", 2_000).unwrap() else {
            panic!("established")
        };
        assert_eq!(d.len(), 5 + WIRE_OVERHEAD);
        assert!(matches!(
            b.open(aa, &d, 2_001).unwrap(),
            Opened::Payload { .. }
        ));
    }

    #[test]
    fn replays_tampering_and_forgeries_are_rejected() {
        let (mut a, mut b, aa, ba) = pair();
        let first = handshake(&mut a, &mut b, aa, ba);
        // Replay of an already delivered datagram.
        assert!(matches!(
            b.open(aa, &first, 2_000),
            Err(Error::Unauthentic { .. })
        ));
        let SealOutcome::Data(d) = a.seal(b.node_id(), ba, b"hello", 2_000).unwrap() else {
            panic!()
        };
        for i in [1, 40, d.len() - 40, d.len() - 1] {
            let mut t = d.clone();
            t[i] ^= 1;
            assert!(
                !matches!(b.open(aa, &t, 2_001), Ok(Opened::Payload { .. })),
                "flipped byte {i} accepted"
            );
        }
        assert!(b.open(aa, &d, 2_002).is_ok());
        assert!(b.open(aa, &d, 2_003).is_err(), "second delivery");
        // A third node cannot speak on A's session.
        let mut c = Sessions::new(Keypair::generate(), Arc::new(|_| true));
        let SealOutcome::Hello(h) = c.seal(b.node_id(), ba, b"x", 2_000).unwrap() else {
            panic!()
        };
        let mut forged = h.clone();
        forged[2..34].copy_from_slice(a.node_id().as_bytes()); // claim to be A
        assert!(matches!(
            b.open(aa, &forged, 2_004),
            Err(Error::Handshake { .. })
        ));
        let mut badsig = h;
        let n = badsig.len();
        badsig[n - 10] ^= 1;
        assert!(matches!(
            b.open(aa, &badsig, 2_005),
            Err(Error::Handshake { .. })
        ));
    }

    #[test]
    fn old_hellos_and_disallowed_nodes_are_refused() {
        let (mut a, _, _, ba) = pair();
        let mut b = Sessions::new(Keypair::generate(), Arc::new(|_| false));
        let SealOutcome::Hello(h) = a.seal(b.node_id(), ba, b"x", 1_000).unwrap() else {
            panic!()
        };
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(matches!(
            b.open(from, &h, 1_000),
            Err(Error::NotAllowed { .. })
        ));
        let mut b2 = Sessions::new(Keypair::generate(), Arc::new(|_| true));
        assert!(matches!(
            b2.open(from, &h, 1_000 + MAX_SKEW_MS + 1),
            Err(Error::Handshake { .. })
        ));
        assert!(b2.open(from, &[9, 9, 9], 0).is_err());
        assert!(b2.open(from, &[], 0).is_err());
    }

    #[test]
    fn a_restarted_receiver_asks_for_a_new_session() {
        let (mut a, mut b, aa, ba) = pair();
        handshake(&mut a, &mut b, aa, ba);
        // B restarts with the same key: its sessions are gone.
        let mut b = Sessions::new(b.key.clone(), Arc::new(|_| true));
        let SealOutcome::Data(d) = a.seal(b.node_id(), ba, b"after", 5_000).unwrap() else {
            panic!()
        };
        let Opened::Send(mut rekey) = b.open(aa, &d, 5_001).unwrap() else {
            panic!()
        };
        let (_, rekey) = rekey.pop().unwrap();
        let Opened::Send(mut hello) = a.open(ba, &rekey, 5_002).unwrap() else {
            panic!()
        };
        let (to, hello) = hello.pop().unwrap();
        assert_eq!(to, ba);
        let Opened::Send(mut acc) = b.open(aa, &hello, 5_003).unwrap() else {
            panic!()
        };
        let (_, acc) = acc.pop().unwrap();
        a.open(ba, &acc, 5_004).unwrap();
        let SealOutcome::Data(d) = a.seal(b.node_id(), ba, b"again", 5_005).unwrap() else {
            panic!()
        };
        assert!(matches!(
            b.open(aa, &d, 5_006).unwrap(),
            Opened::Payload { .. }
        ));
    }
}

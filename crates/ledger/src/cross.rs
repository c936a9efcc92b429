//! Transfers across cities, as a deterministic state machine each city's committee runs in
//! commit order: the sender's city **escrows** the amount when the transfer commits and
//! certifies a transfer-out; the receiver's city, given that certificate, **credits exactly
//! once** — or, when its own agreed time is past the transfer's deadline, records it
//! **expired** and never credits it; the sender's city, given the receiver city's certified
//! answer, **settles exactly once**: completed (the escrow leaves the city with the money)
//! or refunded (the escrow goes back to the sender).
//!
//! Why the refund waits for the receiver's answer rather than the sender's clock: a
//! sender-side timeout cannot know whether a delayed credit already happened, so it could
//! pay twice. Here only the receiver's committee decides (by its own checkpoint time
//! against the deadline written into the transfer), and the sender refunds on proof of
//! that decision. A city that is partitioned completes or refunds after healing, never
//! both; a city that is not in the directory is refused at execution (nothing escrowed).
//!
//! Everything is idempotent by tx id on both sides: a replayed transfer-out is answered
//! again with the recorded verdict and moves nothing; a replayed answer settles nothing.
//! Certificates are checked against the other city's committee
//! ([`CityCertificates::verify`]: in a node, the 2f + 1 certificate of a checkpoint header
//! under the other city's genesis committee and the statement's inclusion in that
//! checkpoint); a forged or misrouted message is a typed error and changes nothing.

use dag_core::{AccountId, CityId, DecodeError, Hash32, Reader, TxId, Writer};
use std::collections::BTreeMap;

/// Domain tag of a transfer-out statement.
const OUT_DOMAIN: &[u8] = b"citychain/cross-out/v1";
/// Domain tag of a book's root.
const BOOK_DOMAIN: &[u8] = b"citychain/cross-book/v1";
/// Domain tag of an answer statement.
const ANSWER_DOMAIN: &[u8] = b"citychain/cross-answer/v1";

/// A transfer from an account of one city to an account of another, as committed in the
/// sender's city.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossTransfer {
    /// The tx id (the key of both sides' records).
    pub id: TxId,
    /// The sender's city (which escrows).
    pub from_city: CityId,
    /// The receiver's city (which credits).
    pub to_city: CityId,
    /// Debited account.
    pub sender: AccountId,
    /// Credited account (in `to_city`).
    pub receiver: AccountId,
    /// Amount moved.
    pub amount: u64,
    /// The receiver city credits only while its agreed checkpoint time is below this (ms
    /// since the Unix epoch); at or past it the transfer expires there and is refunded.
    pub deadline_ms: u64,
}

impl CrossTransfer {
    /// The statement the sender city certifies: BLAKE3 over the tag and every field.
    pub fn statement(&self) -> Hash32 {
        let mut h = blake3::Hasher::new();
        h.update(OUT_DOMAIN);
        h.update(self.id.as_bytes());
        for c in [&self.from_city, &self.to_city] {
            h.update(&[c.as_str().len() as u8]);
            h.update(c.as_str().as_bytes());
        }
        h.update(self.sender.as_bytes());
        h.update(self.receiver.as_bytes());
        h.update(&self.amount.to_le_bytes());
        h.update(&self.deadline_ms.to_le_bytes());
        Hash32(*h.finalize().as_bytes())
    }
}

/// The receiver city's decision on a transfer-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The receiver was credited (once).
    Credited,
    /// The deadline had passed (or the credit would overflow): never credited; the sender
    /// city refunds.
    Expired,
}

/// The receiver city's answer about one transfer-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The transfer's statement ([`CrossTransfer::statement`]) it answers.
    pub transfer: Hash32,
    /// The transfer's id.
    pub id: TxId,
    /// The answering (receiver) city.
    pub from_city: CityId,
    /// The decision.
    pub verdict: Verdict,
}

impl Answer {
    /// The statement the receiver city certifies.
    pub fn statement(&self) -> Hash32 {
        let mut h = blake3::Hasher::new();
        h.update(ANSWER_DOMAIN);
        h.update(&self.transfer.0);
        h.update(self.id.as_bytes());
        h.update(&[self.from_city.as_str().len() as u8]);
        h.update(self.from_city.as_str().as_bytes());
        h.update(&[match self.verdict {
            Verdict::Credited => 1,
            Verdict::Expired => 2,
        }]);
        Hash32(*h.finalize().as_bytes())
    }
}

/// A statement with the certificate of the city that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certified<T> {
    /// The statement's content.
    pub body: T,
    /// The city's certificate over the statement (opaque here; see [`CityCertificates`]).
    pub cert: Vec<u8>,
}

/// Why a certificate does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate of {city} over statement {statement:?} does not verify: {reason}")]
pub struct CertError {
    /// The city it claims.
    pub city: CityId,
    /// The statement.
    pub statement: Hash32,
    /// Why.
    pub reason: String,
}

/// The continent's directory of cities and the check of their certificates.
pub trait CityCertificates {
    /// Whether `city` is a known city (from genesis / federation).
    fn knows(&self, city: &CityId) -> bool;
    /// Checks that `city`'s committee certified `statement` (in a committed checkpoint).
    fn verify(&self, city: &CityId, statement: &Hash32, cert: &[u8]) -> Result<(), CertError>;
}

/// Where balances live (the ledger's accounts, or a map in tests). Both writes are checked
/// and all-or-nothing.
pub trait Funds {
    /// Adds `amount`; `false` (and no change) on overflow.
    fn credit(&mut self, account: &AccountId, amount: u64) -> bool;
    /// Subtracts `amount`; `false` (and no change) when the balance is lower.
    fn debit(&mut self, account: &AccountId, amount: u64) -> bool;
}

impl Funds for BTreeMap<AccountId, u64> {
    fn credit(&mut self, account: &AccountId, amount: u64) -> bool {
        let b = self.entry(*account).or_insert(0);
        match b.checked_add(amount) {
            Some(n) => {
                *b = n;
                true
            }
            None => false,
        }
    }
    fn debit(&mut self, account: &AccountId, amount: u64) -> bool {
        match self.get_mut(account) {
            Some(b) if *b >= amount => {
                *b -= amount;
                true
            }
            _ => false,
        }
    }
}

/// What executing a cross-city transfer in the sender's city did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Debited and escrowed: certify [`CrossTransfer::statement`] and relay it.
    Escrowed,
    /// This tx id was executed before: nothing moved.
    Duplicate,
    /// The sender's balance is below the amount: nothing moved.
    InsufficientFunds,
    /// The receiver's city is not in the directory (or is this city): nothing moved.
    UnknownCity,
}

/// Where a transfer-out stands in the sender's city.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutState {
    /// Escrowed, waiting for the receiver city's answer.
    Pending,
    /// Credited in the receiver's city; the escrow left with the money.
    Completed,
    /// Expired in the receiver's city; the sender got the amount back.
    Refunded,
}

/// What settling an answer did in the sender's city.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Pending → Completed.
    Completed,
    /// Pending → Refunded.
    Refunded,
    /// Already settled: nothing changed.
    AlreadySettled,
    /// The refund would overflow the sender's balance: still pending, retried on the next
    /// delivery of the answer.
    RefundDeferred,
}

/// A message that is refused, changing nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrossError {
    /// The certificate does not verify.
    #[error(transparent)]
    Forged(#[from] CertError),
    /// The message is for another city.
    #[error("message for {to} delivered to {here}")]
    Misrouted {
        /// Its destination.
        to: CityId,
        /// This city.
        here: CityId,
    },
    /// An answer about a transfer this city never escrowed, or that differs from it.
    #[error("answer about unknown or different transfer {0}")]
    UnknownTransfer(TxId),
}

/// One city's cross-city records (both directions). Deterministic: the same committed
/// sequence of calls gives the same state on every representative.
#[derive(Debug, Clone)]
pub struct CrossBook {
    city: CityId,
    outs: BTreeMap<TxId, (CrossTransfer, OutState)>,
    ins: BTreeMap<TxId, (Hash32, Verdict)>,
    escrowed: u64,
}

impl CrossBook {
    /// An empty book for `city`.
    pub fn new(city: CityId) -> Self {
        CrossBook {
            city,
            outs: BTreeMap::new(),
            ins: BTreeMap::new(),
            escrowed: 0,
        }
    }

    /// The city.
    pub fn city(&self) -> &CityId {
        &self.city
    }

    /// The total held in escrow (part of this city's supply until settled).
    pub fn escrowed(&self) -> u64 {
        self.escrowed
    }

    /// A transfer-out's state.
    pub fn out_state(&self, id: &TxId) -> Option<&OutState> {
        self.outs.get(id).map(|(_, s)| s)
    }

    /// The receiver-side verdict on a transfer-in.
    pub fn in_verdict(&self, id: &TxId) -> Option<Verdict> {
        self.ins.get(id).map(|(_, v)| *v)
    }

    /// A transfer-out and its state.
    pub fn out(&self, id: &TxId) -> Option<(&CrossTransfer, &OutState)> {
        self.outs.get(id).map(|(t, s)| (t, s))
    }

    /// A transfer-in's certified statement and verdict.
    pub fn in_record(&self, id: &TxId) -> Option<(Hash32, Verdict)> {
        self.ins.get(id).copied()
    }

    /// Transfer-outs still waiting for an answer (to be relayed again), in id order.
    pub fn pending(&self) -> impl Iterator<Item = &CrossTransfer> {
        self.outs
            .values()
            .filter(|(_, s)| *s == OutState::Pending)
            .map(|(t, _)| t)
    }

    /// Canonical bytes (for `ledger.redb` and the root): city ‖ escrowed u64 ‖ outs (count,
    /// then per id ascending: id ‖ from ‖ to ‖ sender ‖ receiver ‖ amount ‖ deadline ‖
    /// state u8) ‖ ins (count, then id ‖ statement ‖ verdict u8).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes_u8(self.city.as_str().as_bytes()).u64(self.escrowed);
        w.u64(self.outs.len() as u64);
        for (t, state) in self.outs.values() {
            w.raw(t.id.as_bytes())
                .bytes_u8(t.from_city.as_str().as_bytes())
                .bytes_u8(t.to_city.as_str().as_bytes())
                .raw(t.sender.as_bytes())
                .raw(t.receiver.as_bytes())
                .u64(t.amount)
                .u64(t.deadline_ms)
                .u8(match state {
                    OutState::Pending => 0,
                    OutState::Completed => 1,
                    OutState::Refunded => 2,
                });
        }
        w.u64(self.ins.len() as u64);
        for (id, (statement, v)) in &self.ins {
            w.raw(id.as_bytes()).raw(&statement.0).u8(match v {
                Verdict::Credited => 1,
                Verdict::Expired => 2,
            });
        }
        w.finish()
    }

    /// Strict decoding of [`CrossBook::encode`]: ids strictly ascending, known codes, valid
    /// city ids, and the escrow equal to the sum of the pending transfer-outs.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let bad = |field, reason| DecodeError::Invalid { field, reason };
        let city = |r: &mut Reader<'_>, field| -> Result<CityId, DecodeError> {
            let b = r.bytes_u8(field, 255)?;
            let s = std::str::from_utf8(b).map_err(|_| bad(field, "not UTF-8"))?;
            CityId::new(s).map_err(|_| bad(field, "not a city id"))
        };
        let mut r = Reader::new(bytes);
        let mut book = CrossBook::new(city(&mut r, "city")?);
        let escrowed = r.u64("escrowed")?;
        let mut pending: u64 = 0;
        let mut last: Option<TxId> = None;
        for _ in 0..r.u64("outs")? {
            let id = TxId::from_bytes(r.bytes32("id")?);
            if last.is_some_and(|l| l >= id) {
                return Err(bad("outs", "ids not strictly ascending"));
            }
            last = Some(id);
            let t = CrossTransfer {
                id,
                from_city: city(&mut r, "from_city")?,
                to_city: city(&mut r, "to_city")?,
                sender: AccountId::from_bytes(r.bytes32("sender")?),
                receiver: AccountId::from_bytes(r.bytes32("receiver")?),
                amount: r.u64("amount")?,
                deadline_ms: r.u64("deadline_ms")?,
            };
            let state = match r.u8("state")? {
                0 => OutState::Pending,
                1 => OutState::Completed,
                2 => OutState::Refunded,
                _ => return Err(bad("state", "unknown code")),
            };
            if state == OutState::Pending {
                pending = pending
                    .checked_add(t.amount)
                    .ok_or(bad("escrowed", "overflows"))?;
            }
            book.outs.insert(id, (t, state));
        }
        if pending != escrowed {
            return Err(bad("escrowed", "differs from the pending transfer-outs"));
        }
        book.escrowed = escrowed;
        let mut last: Option<TxId> = None;
        for _ in 0..r.u64("ins")? {
            let id = TxId::from_bytes(r.bytes32("id")?);
            if last.is_some_and(|l| l >= id) {
                return Err(bad("ins", "ids not strictly ascending"));
            }
            last = Some(id);
            let statement = Hash32(r.bytes32("statement")?);
            let v = match r.u8("verdict")? {
                1 => Verdict::Credited,
                2 => Verdict::Expired,
                _ => return Err(bad("verdict", "unknown code")),
            };
            book.ins.insert(id, (statement, v));
        }
        r.finish()?;
        Ok(book)
    }

    /// BLAKE3 of a domain tag and [`CrossBook::encode`]: the commitment a checkpoint's
    /// state root can carry.
    pub fn root(&self) -> Hash32 {
        let mut h = blake3::Hasher::new();
        h.update(BOOK_DOMAIN);
        h.update(&self.encode());
        Hash32(*h.finalize().as_bytes())
    }

    /// Executes a committed cross-city transfer in the sender's city (this book's city must
    /// be `t.from_city`; a transfer from elsewhere is [`SendOutcome::UnknownCity`]).
    pub fn send(
        &mut self,
        funds: &mut impl Funds,
        t: CrossTransfer,
        dir: &impl CityCertificates,
    ) -> SendOutcome {
        if self.outs.contains_key(&t.id) {
            return SendOutcome::Duplicate;
        }
        if t.from_city != self.city || t.to_city == self.city || !dir.knows(&t.to_city) {
            return SendOutcome::UnknownCity;
        }
        let Some(escrowed) = self.escrowed.checked_add(t.amount) else {
            return SendOutcome::InsufficientFunds;
        };
        if !funds.debit(&t.sender, t.amount) {
            return SendOutcome::InsufficientFunds;
        }
        self.escrowed = escrowed;
        self.outs.insert(t.id, (t, OutState::Pending));
        SendOutcome::Escrowed
    }

    /// Executes a certified transfer-out in the receiver's city at this city's agreed
    /// checkpoint time `now_ms`: credits once if `now_ms < deadline_ms`, else records it
    /// expired. A replay answers the recorded verdict and moves nothing. Returns the answer
    /// to certify and send back.
    pub fn receive(
        &mut self,
        funds: &mut impl Funds,
        msg: &Certified<CrossTransfer>,
        now_ms: u64,
        dir: &impl CityCertificates,
    ) -> Result<Answer, CrossError> {
        let t = &msg.body;
        if t.to_city != self.city {
            return Err(CrossError::Misrouted {
                to: t.to_city.clone(),
                here: self.city.clone(),
            });
        }
        let statement = t.statement();
        dir.verify(&t.from_city, &statement, &msg.cert)?;
        let verdict = match self.ins.get(&t.id) {
            Some((s, v)) if *s == statement => *v,
            // Same id, different content: a forgery the sender city certified? Refuse.
            Some(_) => return Err(CrossError::UnknownTransfer(t.id)),
            None => {
                let v = if now_ms < t.deadline_ms && funds.credit(&t.receiver, t.amount) {
                    Verdict::Credited
                } else {
                    Verdict::Expired
                };
                self.ins.insert(t.id, (statement, v));
                v
            }
        };
        Ok(Answer {
            transfer: statement,
            id: t.id,
            from_city: self.city.clone(),
            verdict,
        })
    }

    /// Settles a certified answer in the sender's city, once.
    pub fn settle(
        &mut self,
        funds: &mut impl Funds,
        msg: &Certified<Answer>,
        dir: &impl CityCertificates,
    ) -> Result<Settled, CrossError> {
        let a = &msg.body;
        let Some((t, state)) = self.outs.get_mut(&a.id) else {
            return Err(CrossError::UnknownTransfer(a.id));
        };
        if t.statement() != a.transfer || t.to_city != a.from_city {
            return Err(CrossError::UnknownTransfer(a.id));
        }
        dir.verify(&a.from_city, &a.statement(), &msg.cert)?;
        if *state != OutState::Pending {
            return Ok(Settled::AlreadySettled);
        }
        match a.verdict {
            Verdict::Credited => {
                *state = OutState::Completed;
                self.escrowed -= t.amount;
                Ok(Settled::Completed)
            }
            Verdict::Expired => {
                // The amount left the sender's balance at escrow; crediting it back cannot
                // overflow unless the sender received more meanwhile: then it stays escrowed
                // and a later answer retries.
                if !funds.credit(&t.sender, t.amount) {
                    return Ok(Settled::RefundDeferred);
                }
                *state = OutState::Refunded;
                self.escrowed -= t.amount;
                Ok(Settled::Refunded)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Dir;
    impl CityCertificates for Dir {
        fn knows(&self, city: &CityId) -> bool {
            city.as_str() != "XX-00"
        }
        fn verify(&self, city: &CityId, s: &Hash32, cert: &[u8]) -> Result<(), CertError> {
            let want = blake3::keyed_hash(&[city.as_str().len() as u8; 32], &s.0);
            if cert == want.as_bytes() {
                Ok(())
            } else {
                Err(CertError {
                    city: city.clone(),
                    statement: *s,
                    reason: "bad mac".into(),
                })
            }
        }
    }
    fn cert(city: &CityId, s: &Hash32) -> Vec<u8> {
        blake3::keyed_hash(&[city.as_str().len() as u8; 32], &s.0)
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn escrow_credit_settle_each_once_and_forgeries_change_nothing() {
        let (a, b) = (
            CityId::new("JP-13").unwrap(),
            CityId::new("JP-271").unwrap(),
        );
        let (s, r) = (
            AccountId::from_bytes([1; 32]),
            AccountId::from_bytes([2; 32]),
        );
        let mut fa: BTreeMap<AccountId, u64> = [(s, 100)].into();
        let mut fb: BTreeMap<AccountId, u64> = BTreeMap::new();
        let (mut ba, mut bb) = (CrossBook::new(a.clone()), CrossBook::new(b.clone()));
        let t = CrossTransfer {
            id: TxId::from_bytes([7; 32]),
            from_city: a.clone(),
            to_city: b.clone(),
            sender: s,
            receiver: r,
            amount: 60,
            deadline_ms: 1_000,
        };
        assert_eq!(ba.send(&mut fa, t.clone(), &Dir), SendOutcome::Escrowed);
        assert_eq!(ba.send(&mut fa, t.clone(), &Dir), SendOutcome::Duplicate);
        let mut to_nowhere = t.clone();
        to_nowhere.id = TxId::from_bytes([8; 32]);
        to_nowhere.to_city = CityId::new("XX-00").unwrap();
        assert_eq!(ba.send(&mut fa, to_nowhere, &Dir), SendOutcome::UnknownCity);
        assert_eq!((fa[&s], ba.escrowed()), (40, 60));
        // Forged out (certified by the wrong city) and misrouted: refused, no trace.
        let forged = Certified {
            body: t.clone(),
            cert: cert(&b, &t.statement()),
        };
        assert!(matches!(
            bb.receive(&mut fb, &forged, 10, &Dir),
            Err(CrossError::Forged(_))
        ));
        let good = Certified {
            body: t.clone(),
            cert: cert(&a, &t.statement()),
        };
        assert!(matches!(
            ba.receive(&mut fa, &good, 10, &Dir),
            Err(CrossError::Misrouted { .. })
        ));
        assert!(fb.is_empty());
        let ans = bb.receive(&mut fb, &good, 10, &Dir).unwrap();
        assert_eq!(ans.verdict, Verdict::Credited);
        // A replay, even past the deadline, answers the same and credits nothing.
        assert_eq!(bb.receive(&mut fb, &good, 5_000, &Dir).unwrap(), ans);
        assert_eq!(fb[&r], 60);
        // A forged answer (Expired, certified by A itself) cannot refund.
        let lie = Answer {
            verdict: Verdict::Expired,
            ..ans.clone()
        };
        let lie = Certified {
            cert: cert(&a, &lie.statement()),
            body: lie,
        };
        assert!(ba.settle(&mut fa, &lie, &Dir).is_err());
        let ans = Certified {
            cert: cert(&b, &ans.statement()),
            body: ans,
        };
        assert_eq!(ba.settle(&mut fa, &ans, &Dir).unwrap(), Settled::Completed);
        assert_eq!(
            ba.settle(&mut fa, &ans, &Dir).unwrap(),
            Settled::AlreadySettled
        );
        assert_eq!((fa[&s], ba.escrowed(), fb[&r]), (40, 0, 60));

        // Past the deadline: expired there, refunded here, once.
        let mut late = t.clone();
        late.id = TxId::from_bytes([9; 32]);
        late.amount = 30;
        assert_eq!(ba.send(&mut fa, late.clone(), &Dir), SendOutcome::Escrowed);
        let m = Certified {
            cert: cert(&a, &late.statement()),
            body: late,
        };
        let ans = bb.receive(&mut fb, &m, 1_000, &Dir).unwrap();
        assert_eq!(ans.verdict, Verdict::Expired);
        let ans = Certified {
            cert: cert(&b, &ans.statement()),
            body: ans,
        };
        assert_eq!(ba.settle(&mut fa, &ans, &Dir).unwrap(), Settled::Refunded);
        assert_eq!(
            ba.settle(&mut fa, &ans, &Dir).unwrap(),
            Settled::AlreadySettled
        );
        assert_eq!((fa[&s], ba.escrowed(), fb[&r]), (40, 0, 60));
        assert_eq!(ba.pending().count(), 0);

        // Both books survive their encoding; junk and a wrong escrow are refused.
        let mut pend = t.clone();
        pend.id = TxId::from_bytes([3; 32]);
        pend.amount = 5;
        assert_eq!(ba.send(&mut fa, pend, &Dir), SendOutcome::Escrowed);
        for book in [&ba, &bb] {
            let again = CrossBook::decode(&book.encode()).unwrap();
            assert_eq!(again.encode(), book.encode());
            assert_eq!(again.root(), book.root());
        }
        assert_ne!(ba.root(), bb.root());
        let enc = ba.encode();
        assert!(CrossBook::decode(&enc[..enc.len() - 1]).is_err());
        let mut wrong = enc.clone();
        wrong[1 + ba.city().as_str().len()] ^= 1; // escrowed
        assert!(CrossBook::decode(&wrong).is_err());
    }
}

//! Cross-city transfers executed by two persisted ledgers from committed txs: a FRESH_TX
//! naming the other city escrows; a relay SYSTEM_TX carrying the sender city's certified
//! statements credits once; the answer relayed back settles once. Forged relays, replays
//! and unknown cities move nothing; money is conserved.

use super::{account, setup, sign};
use dag_core::consensus::TestSigner;
use dag_core::execution::CommitApplier;
use dag_core::{AccountId, CityId, Hash32, Position, PositionMethod, Tx, TxKind, VerifiedTx};
use ledger::{
    CertError, CheckpointCertificates, CrossProofError, CrossRelay, CrossSetup, FailReason, Ledger,
    LedgerConfig, OutState, Outcome, ProofKind, RelayItem, Verdict, to_city_payload,
    verify_cross_proof,
};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// "Certified" = the ledger root a city's ledger reported after a checkpoint (what the
/// committee signs in a node); the checkpoint bytes name it.
#[derive(Default)]
struct Certifier {
    roots: Mutex<BTreeSet<(String, Hash32)>>,
}

impl Certifier {
    fn certify(&self, city: &CityId, root: Hash32) {
        self.roots.lock().insert((city.as_str().to_string(), root));
    }
}

impl CheckpointCertificates for Certifier {
    fn knows(&self, city: &CityId) -> bool {
        ["JP-13", "JP-27"].contains(&city.as_str())
    }
    fn verify_ledger_root(
        &self,
        city: &CityId,
        ledger_root: &Hash32,
        checkpoint: &[u8],
    ) -> Result<(), CertError> {
        let fail = |reason: &str| CertError {
            city: city.clone(),
            statement: *ledger_root,
            reason: reason.into(),
        };
        if checkpoint != ledger_root.0 {
            return Err(fail("checkpoint names another root"));
        }
        if !self
            .roots
            .lock()
            .contains(&(city.as_str().to_string(), *ledger_root))
        {
            return Err(fail("not certified"));
        }
        Ok(())
    }
}

fn city(s: &str) -> CityId {
    CityId::new(s).unwrap()
}

fn cross_transfer(
    from: &TestSigner,
    to: AccountId,
    amount: u64,
    nonce: u64,
    c: &str,
) -> VerifiedTx {
    let mut tx = Tx::fresh(
        account(from),
        to,
        amount,
        nonce,
        1_767_225_600_000,
        city("JP-13"),
        Position::from_degrees(35.6895, 139.6917).unwrap(),
        PositionMethod::Gps,
    );
    tx.payload = to_city_payload(&city(c));
    sign(tx, from)
}

fn relay_tx(relayer: &TestSigner, nonce: u64, relay: &CrossRelay) -> VerifiedTx {
    let mut tx = Tx::fresh(
        account(relayer),
        account(relayer),
        0,
        nonce,
        1_767_225_600_000,
        city("JP-27"),
        Position::from_degrees(34.69, 135.50).unwrap(),
        PositionMethod::Gps,
    );
    tx.kind = TxKind::SystemTx;
    tx.payload = relay.to_payload();
    sign(tx, relayer)
}

/// The relay of everything `l` emitted in `seq` for `to`.
fn relay_of(l: &Ledger, seq: u64, from: &str, to: &str) -> CrossRelay {
    let parts = l.cross_statements(seq).unwrap().unwrap();
    let book = l.cross_book().unwrap().unwrap();
    let mut items = Vec::new();
    for (i, e) in parts.entries.iter().enumerate() {
        if e.to_city.as_str() != to {
            continue;
        }
        let item = if e.kind == 1 {
            RelayItem::Out(book.out(&e.id).unwrap().0.clone())
        } else {
            let (transfer, verdict) = book.in_record(&e.id).unwrap();
            RelayItem::Answer {
                answer: ledger::Answer {
                    transfer,
                    id: e.id,
                    from_city: city(from),
                    verdict,
                },
                to_city: e.to_city.clone(),
            }
        };
        assert_eq!(item.statement(), e.statement);
        items.push((item, parts.proof(i).unwrap()));
    }
    CrossRelay {
        from_city: city(from),
        checkpoint: parts.ledger_root().0.to_vec(),
        items,
    }
}

#[test]
fn escrow_credit_settle_through_committed_txs() {
    let dir = tempfile::tempdir().unwrap();
    let (u, alloc_a) = setup(2, 100);
    let bob = AccountId::from_bytes([0xb0; 32]);
    let relayer = TestSigner::new(77);
    let certs = Arc::new(Certifier::default());
    let open = |name: &str, alloc: &BTreeMap<AccountId, u64>, c: &str| {
        let l = Ledger::open(&dir.path().join(name), alloc, LedgerConfig::default()).unwrap();
        l.enable_cross(CrossSetup {
            city: city(c),
            certs: certs.clone(),
            timeout_ms: 10_000,
        });
        l
    };
    let a = open("a.redb", &alloc_a, "JP-13");
    let b = open("b.redb", &BTreeMap::new(), "JP-27");

    // Sender city: 60 escrowed, an overdraft and a transfer to an unknown city fail.
    let t = cross_transfer(&u[0], bob, 60, 0, "JP-27");
    let over = cross_transfer(&u[1], bob, 500, 0, "JP-27");
    let nowhere = cross_transfer(&u[1], bob, 5, 1, "XX-99");
    let late = cross_transfer(&u[1], bob, 30, 2, "JP-27");
    let ra = a
        .apply(0, 1_000, &[t.clone(), over.clone(), nowhere.clone()])
        .unwrap();
    certs.certify(&city("JP-13"), ra);
    assert_eq!(a.outcome(&t.id()).unwrap(), Some((0, Outcome::Applied)));
    assert!(matches!(
        a.outcome(&over.id()).unwrap(),
        Some((0, Outcome::Failed(FailReason::InsufficientFunds { .. })))
    ));
    assert_eq!(
        a.outcome(&nowhere.id()).unwrap(),
        Some((0, Outcome::Failed(FailReason::UnknownCity)))
    );
    assert_eq!(a.account(&account(&u[0])).unwrap().unwrap().balance, 40);
    assert_eq!(a.cross_book().unwrap().unwrap().escrowed(), 60);
    assert_eq!(a.escrowed_at(&t.id()).unwrap(), Some(0));
    // The nonce of the escrowed transfer is used: the same nonce again fails.
    let again = cross_transfer(&u[0], bob, 1, 0, "JP-27");
    a.apply(1, 2_000, &[again.clone(), late.clone()]).unwrap();
    assert_eq!(
        a.outcome(&again.id()).unwrap(),
        Some((1, Outcome::Failed(FailReason::NonceReused { nonce: 0 })))
    );
    certs.certify(&city("JP-13"), a.root_after(1).unwrap().unwrap());

    // A forged relay (a checkpoint nobody certified) moves nothing.
    let mut forged = relay_of(&a, 0, "JP-13", "JP-27");
    if let RelayItem::Out(t) = &mut forged.items[0].0 {
        t.amount = 6_000;
    }
    b.apply(0, 1_500, &[relay_tx(&relayer, 0, &forged)])
        .unwrap();
    assert_eq!(b.account(&bob).unwrap(), None);

    // The real relay credits once; a replay in a later checkpoint credits nothing more.
    let good = relay_of(&a, 0, "JP-13", "JP-27");
    b.apply(1, 1_600, &[relay_tx(&relayer, 1, &good)]).unwrap();
    b.apply(2, 1_700, &[relay_tx(&relayer, 2, &good)]).unwrap();
    assert_eq!(b.account(&bob).unwrap().unwrap().balance, 60);
    let bb = b.cross_book().unwrap().unwrap();
    assert_eq!(bb.in_verdict(&t.id()), Some(Verdict::Credited));
    // The late one reaches B past its deadline (2_000 + 10_000): expired, never credited.
    let late_relay = relay_of(&a, 1, "JP-13", "JP-27");
    b.apply(3, 12_000, &[relay_tx(&relayer, 3, &late_relay)])
        .unwrap();
    assert_eq!(b.account(&bob).unwrap().unwrap().balance, 60);
    for s in 1..=3 {
        certs.certify(&city("JP-27"), b.root_after(s).unwrap().unwrap());
    }

    // Answers back: completed and refunded, once each.
    let answers = relay_of(&b, 1, "JP-27", "JP-13");
    let expired = relay_of(&b, 3, "JP-27", "JP-13");
    a.apply(
        2,
        3_000,
        &[
            relay_tx(&relayer, 4, &answers),
            relay_tx(&relayer, 5, &expired),
        ],
    )
    .unwrap();
    a.apply(
        3,
        3_100,
        &[
            relay_tx(&relayer, 6, &answers),
            relay_tx(&relayer, 7, &expired),
        ],
    )
    .unwrap();
    let ab = a.cross_book().unwrap().unwrap();
    assert_eq!(ab.out_state(&t.id()), Some(&OutState::Completed));
    assert_eq!(ab.out_state(&late.id()), Some(&OutState::Refunded));
    assert_eq!(ab.escrowed(), 0);
    // Where each step happened: escrow 0 (and 1), answered in B 1 and 3, settled in A 2.
    assert_eq!(a.escrowed_at(&late.id()).unwrap(), Some(1));
    assert_eq!(b.answered_at(&t.id()).unwrap(), Some(1));
    assert_eq!(b.answered_at(&late.id()).unwrap(), Some(3));
    assert_eq!(a.settled_at(&t.id()).unwrap(), Some(2));
    assert_eq!(a.settled_at(&late.id()).unwrap(), Some(2));
    assert_eq!(a.account(&account(&u[1])).unwrap().unwrap().balance, 100);
    // Supply: 200 at genesis, 60 moved to the other city.
    assert_eq!(a.total_supply().unwrap() + b.total_supply().unwrap(), 200);
    assert_eq!(b.total_supply().unwrap(), 60);

    // Each side kept the other city's proof it verified, and it verifies offline: B the
    // transfer-out (credited and expired alike), A the answers; the forged relay left none.
    let out_proof = b
        .cross_proof(ProofKind::TransferOut, &t.id())
        .unwrap()
        .unwrap();
    match verify_cross_proof(&out_proof, &*certs).unwrap() {
        RelayItem::Out(o) => assert_eq!((o.id, o.amount, o.receiver), (t.id(), 60, bob)),
        other => panic!("{other:?}"),
    }
    assert!(
        b.cross_proof(ProofKind::TransferOut, &late.id())
            .unwrap()
            .is_some()
    );
    assert!(b.cross_proof(ProofKind::Answer, &t.id()).unwrap().is_none());
    let answer_proof = a.cross_proof(ProofKind::Answer, &t.id()).unwrap().unwrap();
    match verify_cross_proof(&answer_proof, &*certs).unwrap() {
        RelayItem::Answer { answer, .. } => {
            assert_eq!((answer.id, answer.verdict), (t.id(), Verdict::Credited))
        }
        other => panic!("{other:?}"),
    }
    let refund_proof = a
        .cross_proof(ProofKind::Answer, &late.id())
        .unwrap()
        .unwrap();
    assert!(verify_cross_proof(&refund_proof, &*certs).is_ok());
    // Tampered: another amount, a flipped byte of the certificate, two statements.
    let mut r = CrossRelay::decode(&out_proof).unwrap();
    if let RelayItem::Out(o) = &mut r.items[0].0 {
        o.amount = 61;
    }
    assert!(matches!(
        verify_cross_proof(&r.encode(), &*certs),
        Err(CrossProofError::Certificate(_))
    ));
    let mut r = CrossRelay::decode(&out_proof).unwrap();
    r.checkpoint[0] ^= 1;
    assert!(verify_cross_proof(&r.encode(), &*certs).is_err());
    let mut r = CrossRelay::decode(&out_proof).unwrap();
    r.items.push(r.items[0].clone());
    assert_eq!(
        verify_cross_proof(&r.encode(), &*certs),
        Err(CrossProofError::NotOneStatement(2))
    );
    assert!(matches!(
        verify_cross_proof(&out_proof[..out_proof.len() - 1], &*certs),
        Err(CrossProofError::Decode(_))
    ));

    // A restarted ledger reads the same book and roots.
    let root_a = a.root_after(3).unwrap();
    drop(a);
    let a = open("a.redb", &alloc_a, "JP-13");
    assert_eq!(a.root_after(3).unwrap(), root_a);
    assert_eq!(a.cross_book().unwrap().unwrap().encode(), ab.encode());
}

//! The conformance suite: one generic function every backend must pass.

use crate::common::{alice, bob, days, entry, tx};
use archive::{Archive, Error, PutOutcome};
use dag_core::TxId;
use pqc::MlDsa87;

/// Runs every behaviour the [`Archive`] trait promises on an empty archive. `base` is the
/// archive time the suite writes around; `ttl_backstop` says the backend may also expire
/// records on its own (MongoDB's TTL index), so a purge may find less to remove.
pub(crate) async fn run<A: Archive>(a: &A, base: u64, ttl_backstop: bool) {
    assert_eq!(
        a.count().await.unwrap(),
        0,
        "the suite needs an empty archive"
    );

    // Put and get: the decrypted tx is the one put, with its time and parents.
    let p1 = TxId::from_bytes([1; 32]);
    let p2 = TxId::from_bytes([2; 32]);
    let t1 = tx(alice(), 1, 500, b"first payload");
    let id1 = t1.id();
    assert_eq!(
        a.put(entry(t1.clone(), base, &[p1, p2])).await.unwrap(),
        PutOutcome::Inserted
    );
    let got = a.get(id1).await.unwrap().expect("archived");
    assert_eq!(&got.signed, t1.signed());
    assert_eq!(got.ts_ms, base);
    assert_eq!(got.parent_ids, vec![p1, p2]);
    assert_eq!(got.id(), id1);
    assert!(got.signed.clone().verify(&MlDsa87).is_ok());

    // DAG node, without decryption.
    let node = a.dag_node(id1).await.unwrap().expect("node");
    assert_eq!(
        (node.tx_id, node.parent_ids, node.ts_ms),
        (id1, vec![p1, p2], base)
    );

    // Missing ids.
    let missing = TxId::from_bytes([0xEE; 32]);
    assert!(a.get(missing).await.unwrap().is_none());
    assert!(a.dag_node(missing).await.unwrap().is_none());

    // Idempotent: same tx and parents again (even at a later time) is a no-op.
    assert_eq!(
        a.put(entry(t1.clone(), base + 5, &[p1, p2])).await.unwrap(),
        PutOutcome::Unchanged
    );
    assert_eq!(a.count().await.unwrap(), 1);
    assert_eq!(a.get(id1).await.unwrap().unwrap().ts_ms, base);

    // Conflict: other content under the same id; the stored record stays as it was.
    match a.put(entry(t1.clone(), base, &[p1])).await {
        Err(Error::Conflict { tx_id }) => assert_eq!(tx_id, id1),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(a.get(id1).await.unwrap().unwrap().parent_ids, vec![p1, p2]);

    // A batch with a conflict inside: the others are written, the conflict reported.
    let batch = vec![
        entry(tx(alice(), 2, 10, b""), base + 10, &[id1]),
        entry(t1.clone(), base, &[]), // conflict (different parents)
        entry(tx(alice(), 3, 20, b"x"), base + 20, &[id1]),
        entry(tx(bob(), 1, 30, b"bob"), base + 15, &[]),
        entry(tx(alice(), 4, 40, b"y"), base + 30, &[]),
    ];
    let ids: Vec<TxId> = batch.iter().map(|e| e.id()).collect();
    let out = a.put_batch(batch).await.unwrap();
    assert_eq!(out.len(), 5);
    assert!(matches!(out[0], Ok(PutOutcome::Inserted)));
    assert!(matches!(out[1], Err(Error::Conflict { .. })));
    assert!(matches!(out[2], Ok(PutOutcome::Inserted)));
    assert!(matches!(out[3], Ok(PutOutcome::Inserted)));
    assert!(matches!(out[4], Ok(PutOutcome::Inserted)));
    assert_eq!(a.count().await.unwrap(), 5);

    // Query by sender and time range, oldest first, end exclusive, with a limit.
    let q = a
        .query_by_sender(alice().account_id(), base + 10..base + 30, 100)
        .await
        .unwrap();
    let qids: Vec<TxId> = q.iter().map(|t| t.id()).collect();
    assert_eq!(qids, vec![ids[0], ids[2]]);
    let all = a
        .query_by_sender(alice().account_id(), base..base + 31, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
    assert!(
        all.iter()
            .all(|t| t.signed.tx.sender == alice().account_id())
    );
    let one = a
        .query_by_sender(alice().account_id(), base..base + 31, 1)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id(), id1);
    let b = a
        .query_by_sender(bob().account_id(), 0..u64::MAX, 100)
        .await
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].id(), ids[3]);
    assert!(
        a.query_by_sender(alice().account_id(), base + 5..base + 5, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Retention (180 days): only records older than now − retention go.
    let old = tx(bob(), 2, 1, b"old");
    let recent = tx(bob(), 3, 1, b"recent");
    let (old_id, recent_id) = (old.id(), recent.id());
    let now = base + days(1);
    a.put_batch(vec![
        entry(old, now - days(181), &[]),
        entry(recent, now - days(179), &[]),
    ])
    .await
    .unwrap();
    let before = a.count().await.unwrap();
    let removed = a.purge_expired(now).await.unwrap();
    if ttl_backstop {
        assert!(removed <= 1, "removed {removed}");
    } else {
        assert_eq!(removed, 1);
    }
    assert!(a.get(old_id).await.unwrap().is_none());
    assert!(a.get(recent_id).await.unwrap().is_some());
    assert!(a.get(id1).await.unwrap().is_some());
    assert_eq!(a.count().await.unwrap(), 6);
    assert!(before == 7 || ttl_backstop);
    // Purging again removes nothing; the boundary itself is kept.
    assert_eq!(a.purge_expired(now).await.unwrap(), 0);
    assert_eq!(
        a.purge_expired(now - days(179) + days(180)).await.unwrap(),
        0
    );
    assert_eq!(
        a.purge_expired(now - days(179) + days(180) + 1)
            .await
            .unwrap(),
        1
    );
    assert!(a.get(recent_id).await.unwrap().is_none());
}

//! The city DAG on the network: representatives over real gRPC on loopback with ML-DSA-87
//! keys, a restarted representative recovering from its records, and bad input answered
//! with typed statuses. (The whole committee with federation is tested in the devnet crate
//! and as processes in the workspace's localnet test.)

use dag_core::consensus::{BatchHeader, BatchItem, Committee, Message, SignedBatch};
use dag_core::{Hash32, NodeId, Signer, TxId};
use node::consensus::{RepresentativeConfig, start_representative};
use pqc::{Keypair, MlDsa87};
use rpc::{ClientError, ConsensusClient};
use std::collections::HashMap;
use std::time::Duration;
use tonic::Code;

fn status(e: &ClientError) -> (Code, String) {
    match e {
        ClientError::Status { code, message } => (*code, message.clone()),
        other => panic!("expected a status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_consensus_messages_are_rejected_with_typed_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
    let committee =
        Committee::equal(keys.iter().map(|k| k.public_key().to_vec()).collect()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rep = start_representative(
        RepresentativeConfig {
            links: rpc::tls::LinkSecurity::Insecure,
            ..RepresentativeConfig::new(dir.path())
        },
        keys[0].clone(),
        committee,
        listener,
        HashMap::new(),
    )
    .await
    .unwrap();
    let c =
        ConsensusClient::lazy(&rep.addr().unwrap().to_string(), Duration::from_secs(5)).unwrap();
    let member = keys[1].node_id();
    let genesis = |author: NodeId| BatchHeader {
        epoch: 0,
        round: 0,
        author,
        timestamp_ms: 1,
        parents: vec![],
        weak_links: vec![],
        items: vec![],
    };

    // Undecodable bytes.
    let e = c.deliver_bytes(member, vec![0xff, 1, 2]).await.unwrap_err();
    let (code, msg) = status(&e);
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.starts_with("MALFORMED:"), "{msg}");

    // A member's proposal signed with another member's key.
    let forged = SignedBatch::sign(genesis(member), &keys[2]);
    let e = c
        .deliver(member, &Message::Propose(forged))
        .await
        .unwrap_err();
    let (code, msg) = status(&e);
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.starts_with("REJECTED:"), "{msg}");

    // Unsigned.
    let unsigned = SignedBatch {
        header: genesis(member),
        signature: vec![],
    };
    let e = c
        .deliver(member, &Message::Propose(unsigned))
        .await
        .unwrap_err();
    assert_eq!(status(&e).0, Code::InvalidArgument);

    // A sender outside the committee.
    let outsider = Keypair::generate();
    let b = SignedBatch::sign(genesis(outsider.node_id()), &outsider);
    let e = c
        .deliver(outsider.node_id(), &Message::Propose(b))
        .await
        .unwrap_err();
    let (code, msg) = status(&e);
    assert_eq!(code, Code::PermissionDenied);
    assert!(msg.starts_with("UNKNOWN_SENDER:"), "{msg}");

    // The genuine proposal is accepted.
    let mut rep = rep;
    let mut evidence = rep.take_evidence().unwrap();
    let good = SignedBatch::sign(genesis(member), &keys[1]);
    c.deliver(member, &Message::Propose(good)).await.unwrap();

    // A second, different proposal by the same member for the same round: caught, and the
    // evidence is what dpos verifies before slashing.
    let mut other = genesis(member);
    other.items = vec![BatchItem::Tx(TxId::from_bytes([5; 32]))];
    let second = SignedBatch::sign(other, &keys[1]);
    c.deliver(member, &Message::Propose(second)).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), evidence.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.author(), member);
    ev.verify(&MlDsa87).unwrap();
    assert!(
        evidence.try_recv().is_err(),
        "one offence, one piece of evidence"
    );

    let stats = rep.stats().clone();
    assert_eq!(stats.accepted.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(stats.rejected.load(std::sync::atomic::Ordering::Relaxed), 3);
    rep.shutdown().await.unwrap();
}

type Seen = std::sync::Arc<parking_lot::Mutex<(Vec<Hash32>, Vec<BatchItem>)>>;

/// Collects a representative's checkpoint hashes and committed items. The collecting task
/// is pushed onto `tasks`, which the test joins at its end so an assertion failing inside
/// it fails the test.
fn collect(
    rx: tokio::sync::mpsc::UnboundedReceiver<node::consensus::CommittedEvent>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Seen {
    let seen: Seen = std::sync::Arc::new(parking_lot::Mutex::new((Vec::new(), Vec::new())));
    let s = seen.clone();
    let mut rx = rx;
    tasks.push(tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let mut g = s.lock();
            assert_eq!(
                ev.sub_dag.checkpoint.sequence,
                g.0.len() as u64,
                "gap or replay"
            );
            g.0.push(ev.sub_dag.checkpoint.hash());
            g.1.extend(ev.sub_dag.items().map(|(_, i)| *i));
        }
    }));
    seen
}

/// Joins the collecting tasks: one that panicked fails the test; one still waiting for
/// commits (its representative's sender kept alive elsewhere) is stopped.
async fn join_collectors(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        if t.is_finished() {
            t.await.expect("a collecting task failed");
        } else {
            t.abort();
            if let Err(e) = t.await
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

/// Waits up to 15 s for `done`; on time-out, fails with every representative's position.
async fn wait_for(
    what: &str,
    reps: &[node::consensus::RepresentativeHandle],
    mut done: impl FnMut() -> bool,
) {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() > Duration::from_secs(15) {
            let state: Vec<String> = reps
                .iter()
                .map(|r| format!("{:?} {:?}", *r.status().borrow(), r.stats()))
                .collect();
            panic!("timed out waiting for {what}:\n{}", state.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_representative_recovers_from_its_records_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
    let committee =
        Committee::equal(keys.iter().map(|k| k.public_key().to_vec()).collect()).unwrap();
    let mut listeners = Vec::new();
    let mut peers = HashMap::new();
    for k in &keys {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(k.node_id(), l.local_addr().unwrap().to_string());
        listeners.push(l);
    }
    let mut reps = Vec::new();
    let mut seen = Vec::new();
    let mut collectors = Vec::new();
    let mut evidence = Vec::new();
    for (i, (k, l)) in keys.iter().zip(listeners).enumerate() {
        // A short fixed interval: this test is about recovery (default: the dynamic one).
        let cfg = RepresentativeConfig {
            links: rpc::tls::LinkSecurity::Insecure,
            ..RepresentativeConfig::new(dir.path().join(format!("rep-{i}"))).with_fixed_interval(50)
        };
        let mut r = start_representative(cfg, k.clone(), committee.clone(), l, peers.clone())
            .await
            .unwrap();
        seen.push(collect(r.take_commits().unwrap(), &mut collectors));
        evidence.push(r.take_evidence().unwrap());
        reps.push(r);
    }
    let item = |i: u8| BatchItem::Tx(TxId::from_bytes([i; 32]));
    reps[0].submit(vec![item(1), item(2)]).await.unwrap();
    wait_for("first items", &reps, || {
        seen.iter().all(|s| s.lock().1.contains(&item(2)))
    })
    .await;

    // Stop representative 3 gracefully, then bring it back on the same address and data.
    let r3 = reps.pop().unwrap();
    let addr = r3.addr().unwrap();
    r3.shutdown().await.unwrap();
    let before = seen[3].lock().0.clone();
    reps[1].submit(vec![item(3)]).await.unwrap();
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    let cfg = RepresentativeConfig {
        links: rpc::tls::LinkSecurity::Insecure,
        ..RepresentativeConfig::new(dir.path().join("rep-3")).with_fixed_interval(50)
    };
    let mut r3 = start_representative(cfg, keys[3].clone(), committee.clone(), l, peers.clone())
        .await
        .unwrap();
    seen[3] = collect(r3.take_commits().unwrap(), &mut collectors);
    reps.push(r3);
    reps[3].submit(vec![item(4)]).await.unwrap();
    wait_for("items after the restart", &reps, || {
        seen.iter().all(|s| {
            let g = s.lock();
            g.1.contains(&item(3)) && g.1.contains(&item(4))
        })
    })
    .await;

    // Had it forgotten its own proposals it would have proposed again in a round it had
    // proposed in: the others would hold evidence against it.
    for ev in &mut evidence[..3] {
        assert!(
            ev.try_recv().is_err(),
            "the restarted representative equivocated"
        );
    }
    // The recovered history replays from sequence 0 and agrees with everyone's.
    let hashes: Vec<Vec<Hash32>> = seen.iter().map(|s| s.lock().0.clone()).collect();
    assert!(hashes[3].len() >= before.len());
    assert_eq!(hashes[3][..before.len()], before[..]);
    for a in &hashes {
        for b in &hashes {
            let n = a.len().min(b.len());
            assert_eq!(a[..n], b[..n], "committed sequences diverge");
        }
    }
    for r in reps {
        r.shutdown().await.unwrap();
    }
    join_collectors(collectors).await;
}

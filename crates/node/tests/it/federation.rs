//! Federation over real gRPC on loopback with ML-DSA-87 keys: the continent pools member
//! shares to a quorum, keeps sequence / prev-hash continuity, refuses bad input without a
//! trace, survives restarts and kills under disk-backed pushers; the global logs the
//! continent's tree heads with consistency checks.

use dag_core::consensus::{BatchDigest, Checkpoint, Committee};
use dag_core::merkle::ConsistencyProof;
use dag_core::{Hash32, Signer};
use node::continent::{
    CityCommittee, ContinentConfig, ContinentHandle, GlobalTarget, start_continent,
};
use node::federation_push::{
    CheckpointSource, CommitteeEpoch, MemoryCheckpointSource, PusherConfig, spawn_checkpoint_pusher,
};
use node::global::{GlobalConfig, start_global};
use pqc::Keypair;
use rpc::{
    CertifiedCheckpoint, CertifiedHandover, CheckpointHeader, CommitteeHandover, FederationClient,
    FederationError, LogKind, SignedTreeHead, TreeHeadPush, sign_handover_share, sign_share,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn committee(n: usize) -> (Vec<Keypair>, Committee) {
    let keys: Vec<Keypair> = (0..n).map(|_| Keypair::generate()).collect();
    let c = Committee::equal(keys.iter().map(|k| k.public_key().to_vec()).collect()).unwrap();
    (keys, c)
}

/// `n` chained checkpoints (`salt` varies the history, for forks).
fn chain(n: u64, salt: u8) -> Vec<Checkpoint> {
    let mut prev = Hash32([0; 32]);
    (0..n)
        .map(|i| {
            let leader = BatchDigest(Hash32([i as u8 ^ salt; 32]));
            let cp = Checkpoint {
                sequence: i,
                leader_round: 2 * i,
                leader,
                batches: vec![leader],
                prev_hash: prev,
            };
            prev = cp.hash();
            cp
        })
        .collect()
}

fn share(k: &Keypair, h: &CheckpointHeader) -> CertifiedCheckpoint {
    CertifiedCheckpoint::new(*h, vec![sign_share(h, k)])
}

fn full(keys: &[Keypair], h: &CheckpointHeader) -> CertifiedCheckpoint {
    CertifiedCheckpoint::new(*h, keys.iter().map(|k| sign_share(h, k)).collect())
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn client(addr: SocketAddr) -> FederationClient {
    FederationClient::lazy(&addr.to_string(), Duration::from_secs(10)).unwrap()
}

/// Starts a continent, retrying while the previous instance's file lock or port is freed.
async fn continent_at(cfg: &ContinentConfig, key: &Keypair) -> ContinentHandle {
    let start = std::time::Instant::now();
    loop {
        match start_continent(cfg, key.clone()).await {
            Ok(c) => return c,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                tracing::debug!(error = %e, "continent not startable yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("continent did not start: {e}"),
        }
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn city_cfg(dir: &Path, city: Hash32, committee: &Committee) -> ContinentConfig {
    ContinentConfig {
        // Plaintext links, chosen explicitly (the default is TLS).
        links: rpc::tls::LinkSecurity::Insecure,
        ..ContinentConfig::new(
            loopback(),
            dir.join("continent"),
            vec![CityCommittee {
                city,
                committee: committee.clone(),
            }],
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_pool_to_a_quorum_and_bad_shares_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, committee) = committee(4);
    let city = Hash32::digest(b"quorum-city");
    let ckey = Keypair::generate();
    let cont = continent_at(&city_cfg(dir.path(), city, &committee), &ckey).await;
    let c = client(cont.addr());
    let cps = chain(2, 0);
    let h0 = CheckpointHeader::of(city, &cps[0]);

    // A non-member's share, a forged share, a certificate short of a quorum: refused.
    let stranger = Keypair::generate();
    let e = c.push_checkpoint(&share(&stranger, &h0)).await.unwrap_err();
    assert!(matches!(e, FederationError::NotMember { .. }), "{e:?}");
    let mut forged = share(&keys[0], &h0);
    forged.signatures[0].1[7] ^= 1;
    let e = c.push_checkpoint(&forged).await.unwrap_err();
    assert!(matches!(e, FederationError::BadSignature { .. }), "{e:?}");
    let e = c.push_checkpoint(&full(&keys[..2], &h0)).await.unwrap_err();
    assert!(
        matches!(
            e,
            FederationError::NoQuorum {
                have: 2,
                need: 3,
                ..
            }
        ),
        "{e:?}"
    );
    let mut with_stranger = full(&keys[..3], &h0);
    with_stranger
        .signatures
        .push((stranger.node_id(), sign_share(&h0, &stranger).1));
    let with_stranger = CertifiedCheckpoint::new(h0, with_stranger.signatures);
    let e = c.push_checkpoint(&with_stranger).await.unwrap_err();
    assert!(matches!(e, FederationError::NotMember { .. }), "{e:?}");
    assert_eq!(cont.log().size(), 0);

    // Two honest shares: pooled, nothing appended.
    for (i, k) in keys[..2].iter().enumerate() {
        let e = c.push_checkpoint(&share(k, &h0)).await.unwrap_err();
        assert_eq!(
            e,
            FederationError::AwaitingQuorum {
                city,
                sequence: 0,
                have: i as u64 + 1,
                need: 3
            }
        );
        assert!(e.is_retryable());
    }
    // The forged share did not count and did not poison the pool.
    assert_eq!(cont.log().size(), 0);

    // The third share completes the quorum: appended with exactly the pooled signatures.
    let p = c.push_checkpoint(&share(&keys[2], &h0)).await.unwrap();
    assert_eq!(cont.log().size(), 1);
    assert_eq!(p.certified.header, h0);
    assert_eq!(p.certified.signatures.len(), 3);
    p.verify(&committee, ckey.public_key()).unwrap();
    // Every member (the late fourth too) gets the same proof and receipt.
    for k in &keys {
        assert_eq!(c.push_checkpoint(&share(k, &h0)).await.unwrap(), p);
    }
    assert_eq!(cont.log().size(), 1);

    // A full certificate is appended directly.
    let h1 = CheckpointHeader::of(city, &cps[1]);
    let p1 = c.push_checkpoint(&full(&keys[1..], &h1)).await.unwrap();
    assert_eq!(p1.receipt.log_index, 1);
    p1.verify(&committee, ckey.public_key()).unwrap();
    let head = c.city_head(city).await.unwrap();
    assert_eq!(head.next_sequence, 2);
    assert_eq!(head.last_running_hash, cps[1].hash());
    drop(c);
    cont.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_wrong_prev_and_forks_are_refused_and_pooled_shares_fill_in() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, committee) = committee(4);
    let city = Hash32::digest(b"chain-city");
    let ckey = Keypair::generate();
    let cont = continent_at(&city_cfg(dir.path(), city, &committee), &ckey).await;
    let c = client(cont.addr());
    let cps = chain(4, 0);
    let hs: Vec<CheckpointHeader> = cps
        .iter()
        .map(|cp| CheckpointHeader::of(city, cp))
        .collect();

    let e = c
        .push_checkpoint(&full(&keys[..3], &hs[2]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FederationError::Gap {
                expected: 0,
                got: 2,
                ..
            }
        ),
        "{e:?}"
    );
    let mut wrong = hs[0];
    wrong.prev_hash = Hash32([9; 32]);
    let e = c
        .push_checkpoint(&full(&keys[..3], &wrong))
        .await
        .unwrap_err();
    assert!(
        matches!(e, FederationError::WrongPrev { sequence: 0, .. }),
        "{e:?}"
    );
    let e = c
        .push_checkpoint(&CertifiedCheckpoint::new(hs[0], vec![]))
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::Malformed(_)), "{e:?}");
    let e = c
        .push_checkpoint(&full(
            &keys[..3],
            &CheckpointHeader {
                city: Hash32([1; 32]),
                ..hs[0]
            },
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::UnknownCity { .. }), "{e:?}");
    assert_eq!(cont.log().size(), 0, "nothing appended for refused pushes");

    c.push_checkpoint(&full(&keys[..3], &hs[0])).await.unwrap();
    // Another history at a logged sequence: a fork.
    let other = CheckpointHeader::of(city, &chain(1, 0x55)[0]);
    let e = c
        .push_checkpoint(&full(&keys[..3], &other))
        .await
        .unwrap_err();
    assert!(
        matches!(e, FederationError::Fork { sequence: 0, .. }),
        "{e:?}"
    );
    // Sequence 1 that does not chain to sequence 0.
    let e = c
        .push_checkpoint(&full(
            &keys[..3],
            &CheckpointHeader::of(city, &chain(2, 0x55)[1]),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(e, FederationError::WrongPrev { sequence: 1, .. }),
        "{e:?}"
    );

    // Shares for sequences 2 and 3 arrive first: Gap, but pooled; sequence 1 then lets
    // them all in, in order.
    for h in &hs[2..4] {
        for k in &keys[..3] {
            let e = c.push_checkpoint(&share(k, h)).await.unwrap_err();
            assert!(
                matches!(e, FederationError::Gap { expected: 1, .. }),
                "{e:?}"
            );
        }
    }
    assert_eq!(cont.log().size(), 1);
    c.push_checkpoint(&full(&keys[1..], &hs[1])).await.unwrap();
    assert_eq!(cont.log().size(), 4);
    let head = c.city_head(city).await.unwrap();
    assert_eq!(head.next_sequence, 4);
    assert_eq!(head.last_running_hash, cps[3].hash());
    for (i, h) in hs.iter().enumerate() {
        let p = c.push_checkpoint(&share(&keys[3], h)).await.unwrap();
        assert_eq!(p.receipt.log_index, i as u64);
        p.verify(&committee, ckey.public_key()).unwrap();
    }
    drop(c);
    cont.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushers_resume_across_continent_restart_and_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, committee) = committee(4);
    let city = Hash32::digest(b"restart-city");
    let ckey = Keypair::generate();
    let mut cfg = city_cfg(dir.path(), city, &committee);
    let cont = continent_at(&cfg, &ckey).await;
    // Later instances come back on the same address.
    cfg.listen = cont.addr();
    let cps = chain(15, 0);
    let sources: Vec<Arc<MemoryCheckpointSource>> = (0..4)
        .map(|_| Arc::new(MemoryCheckpointSource::new()))
        .collect();
    let mut pushers = Vec::new();
    for (k, s) in keys.iter().zip(&sources) {
        let mut pc = PusherConfig::new(cont.addr().to_string(), city, ckey.public_key().to_vec());
        pc.links = rpc::tls::LinkSecurity::Insecure;
        pc.retry.base_delay = Duration::from_millis(20);
        pc.retry.max_delay = Duration::from_millis(200);
        pc.timeout = Duration::from_secs(5);
        let source: Arc<dyn CheckpointSource> = s.clone();
        pushers.push(spawn_checkpoint_pusher(pc, k.clone(), source).unwrap());
    }
    let commit = |range: std::ops::Range<usize>| {
        for s in &sources {
            for cp in &cps[range.clone()] {
                s.commit(cp.clone());
            }
        }
    };
    let all_have = |n: usize| sources.iter().all(|s| s.proofs() >= n);

    // The log's root at `size` as a fresh client sees it (pushers may already be appending
    // to a restarted continent).
    let root_at = |size: u64| {
        let c = client(cfg.listen);
        async move { c.inclusion_proof(0, size).await.unwrap().root }
    };
    commit(0..5);
    wait_until("5 federated", || all_have(5)).await;
    let root5 = cont.log().root();
    cont.shutdown().await.unwrap();
    commit(5..10);
    let cont = continent_at(&cfg, &ckey).await;
    assert!(cont.log().size() >= 5, "the log came back");
    assert_eq!(root_at(5).await, root5);
    wait_until("10 federated", || all_have(10)).await;
    let root10 = root_at(10).await;
    cont.kill().await;
    commit(10..15);
    let cont = continent_at(&cfg, &ckey).await;
    assert!(cont.log().size() >= 10, "the log came back after a kill");
    assert_eq!(root_at(10).await, root10);
    wait_until("15 federated", || all_have(15)).await;

    // Each sequence logged exactly once; every member recorded the same verified proof.
    assert_eq!(cont.log().size(), 15);
    for seq in 0..15u64 {
        let p = sources[0].proof(seq).unwrap();
        assert_eq!(p.receipt.log_index, seq);
        assert_eq!(
            p.certified.header,
            CheckpointHeader::of(city, &cps[seq as usize])
        );
        p.verify(&committee, ckey.public_key()).unwrap();
        for s in &sources[1..] {
            assert_eq!(s.proof(seq).unwrap(), p);
        }
    }
    for p in pushers {
        assert_eq!(
            p.stats()
                .refusals
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        p.shutdown().await;
    }
    cont.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_logs_consistent_continent_heads_and_refuses_forged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, committee) = committee(4);
    let city = Hash32::digest(b"global-city");
    let ckey = Keypair::generate();
    let gkey = Keypair::generate();
    let global = start_global(
        &GlobalConfig {
            listen: loopback(),
            data_dir: dir.path().join("global"),
            continents: vec![ckey.public_key().to_vec()],
            links: rpc::tls::LinkSecurity::Insecure,
        },
        gkey.clone(),
    )
    .await
    .unwrap();
    let mut cfg = city_cfg(dir.path(), city, &committee);
    cfg.head_push_interval = Duration::from_millis(50);
    cfg.global = Some(GlobalTarget {
        addr: global.addr().to_string(),
        public_key: gkey.public_key().to_vec(),
    });
    let cont = continent_at(&cfg, &ckey).await;
    let c = client(cont.addr());
    let g = client(global.addr());
    let cps = chain(7, 0);
    let mut acked = cont.global_acked();
    let mut proofs = Vec::new();
    for (round, range) in [(0..3), (3..7)].into_iter().enumerate() {
        for cp in &cps[range] {
            proofs.push(
                c.push_checkpoint(&full(&keys[..3], &CheckpointHeader::of(city, cp)))
                    .await
                    .unwrap(),
            );
        }
        let want = cont.log().size();
        wait_until("the global to log the continent's head", || {
            *acked.borrow_and_update() == want
        })
        .await;
        assert_eq!(global.log().logged_size(&ckey.node_id()), Some(want));
        assert!(global.log().size() > round as u64);
    }

    // Every receipt is covered by a global anchor a client verifies offline.
    for p in &proofs {
        let a = c.global_anchor(p.receipt.tree_size).await.unwrap();
        assert_eq!(a.head.size, 7);
        a.verify(&p.receipt, ckey.public_key(), gkey.public_key())
            .unwrap();
    }
    let e = c.global_anchor(8).await.unwrap_err();
    assert!(
        matches!(
            e,
            FederationError::NotYetAnchored {
                tree_size: 8,
                anchored: 7
            }
        ),
        "{e:?}"
    );

    // The global's own head and an inclusion proof of the continent's latest head.
    let gh = g.tree_head().await.unwrap();
    gh.verify(gkey.public_key()).unwrap();
    let last = global.log().size() - 1;
    let a = g.inclusion_proof(last, 0).await.unwrap();
    a.proof.verify(&a.leaf, &gh.root).unwrap();
    // The continent's consistency proof between two of its heads.
    let ch = c.tree_head().await.unwrap();
    ch.verify(ckey.public_key()).unwrap();
    let old_root = c.inclusion_proof(0, 3).await.unwrap().root;
    let cp = c.consistency_proof(3, 0).await.unwrap();
    cp.verify(&old_root, &ch.root).unwrap();

    // Forged heads, signed with the continent's own key: a larger log whose root does not
    // extend the logged one, the same size with another root, an older size.
    let size = ch.size;
    let forged = SignedTreeHead::sign(size + 2, Hash32([0xee; 32]), 1, &ckey);
    let e = g
        .push_tree_head(&TreeHeadPush {
            head: forged.clone(),
            consistency: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e,
        FederationError::NeedConsistency {
            log_id: ckey.node_id(),
            from_size: size
        }
    );
    let e = g
        .push_tree_head(&TreeHeadPush {
            head: forged,
            consistency: Some(ConsistencyProof {
                old_size: size,
                new_size: size + 2,
                path: vec![Hash32([1; 32]); 3],
            }),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::Inconsistent { .. }), "{e:?}");
    let same_size = SignedTreeHead::sign(size, Hash32([0xee; 32]), 1, &ckey);
    let e = g
        .push_tree_head(&TreeHeadPush {
            head: same_size,
            consistency: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::Inconsistent { .. }), "{e:?}");
    let older = SignedTreeHead::sign(2, cont.log().root(), 1, &ckey);
    let e = g
        .push_tree_head(&TreeHeadPush {
            head: older,
            consistency: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::Stale { .. }), "{e:?}");
    let stranger = Keypair::generate();
    let e = g
        .push_tree_head(&TreeHeadPush {
            head: SignedTreeHead::sign(1, Hash32([1; 32]), 1, &stranger),
            consistency: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::UnknownLog { .. }), "{e:?}");
    let mut bad_sig = ch.clone();
    bad_sig.signature[3] ^= 1;
    let e = g
        .push_tree_head(&TreeHeadPush {
            head: bad_sig,
            consistency: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::BadTreeHead { .. }), "{e:?}");
    // Re-pushing the logged head answers its receipt; a continent does not log heads.
    let r = g
        .push_tree_head(&TreeHeadPush {
            head: ch.clone(),
            consistency: None,
        })
        .await
        .unwrap();
    r.verify(LogKind::Global, gkey.public_key()).unwrap();
    let e = c
        .push_tree_head(&TreeHeadPush {
            head: ch,
            consistency: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::NotServed(_)), "{e:?}");

    // The global survives a restart with every continent's last head.
    let gsize = global.log().size();
    let groot = global.log().root();
    drop((c, g));
    cont.shutdown().await.unwrap();
    global.shutdown().await.unwrap();
    let global = start_global(
        &GlobalConfig {
            listen: loopback(),
            data_dir: dir.path().join("global"),
            continents: vec![ckey.public_key().to_vec()],
            links: rpc::tls::LinkSecurity::Insecure,
        },
        gkey,
    )
    .await
    .unwrap();
    assert_eq!((global.log().size(), global.log().root()), (gsize, groot));
    assert_eq!(global.log().logged_size(&ckey.node_id()), Some(size));
    global.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continent_heads_reach_a_global_after_outages() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, committee) = committee(4);
    let city = Hash32::digest(b"outage-city");
    let ckey = Keypair::generate();
    let gkey = Keypair::generate();
    // A free port for the global, not listening yet.
    let gaddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gcfg = GlobalConfig {
        listen: gaddr,
        data_dir: dir.path().join("global"),
        continents: vec![ckey.public_key().to_vec()],
        links: rpc::tls::LinkSecurity::Insecure,
    };
    let mut cfg = city_cfg(dir.path(), city, &committee);
    cfg.head_push_interval = Duration::from_millis(20);
    cfg.global = Some(GlobalTarget {
        addr: gaddr.to_string(),
        public_key: gkey.public_key().to_vec(),
    });
    let cont = continent_at(&cfg, &ckey).await;
    let c = client(cont.addr());
    let cps = chain(6, 0);
    let push = |range: std::ops::Range<usize>| {
        let (c, keys, cps) = (&c, &keys, &cps);
        async move {
            for cp in &cps[range] {
                c.push_checkpoint(&full(&keys[..3], &CheckpointHeader::of(city, cp)))
                    .await
                    .unwrap();
            }
        }
    };
    push(0..2).await;
    // The global comes up late: the newest head gets there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let global = start_global(&gcfg, gkey.clone()).await.unwrap();
    let mut acked = cont.global_acked();
    wait_until("the head after the global came up", || {
        *acked.borrow_and_update() == 2
    })
    .await;
    // The global crashes; the continent grows meanwhile; the global restarts.
    global.kill().await;
    push(2..6).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = std::time::Instant::now();
    let global = loop {
        match start_global(&gcfg, gkey.clone()).await {
            Ok(g) => break g,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(20), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_until("the head after the restart", || {
        *acked.borrow_and_update() == 6
    })
    .await;
    assert_eq!(global.log().logged_size(&ckey.node_id()), Some(6));
    drop(c);
    cont.shutdown().await.unwrap();
    global.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tx_proof_from_the_continent_verifies_offline() {
    use dag_core::TxId;
    use dag_core::consensus::{BatchHeader, BatchItem};
    let dir = tempfile::tempdir().unwrap();
    let (keys, committee) = committee(4);
    let city = node::genesis::city_hash("JP-13");
    let ckey = Keypair::generate();
    let cont = continent_at(&city_cfg(dir.path(), city, &committee), &ckey).await;
    let c = client(cont.addr());
    let tx = TxId::from_bytes([7; 32]);
    let batch = BatchHeader {
        epoch: 0,
        round: 1,
        author: keys[0].node_id(),
        timestamp_ms: 1_700_000_000_000,
        parents: vec![],
        weak_links: vec![],
        items: vec![BatchItem::Tx(TxId::from_bytes([6; 32])), BatchItem::Tx(tx)],
    };
    let checkpoint = Checkpoint {
        sequence: 0,
        leader_round: 2,
        leader: batch.digest(),
        batches: vec![batch.digest()],
        prev_hash: Hash32([0; 32]),
    };
    let h = CheckpointHeader::of(city, &checkpoint);
    for k in &keys[..2] {
        c.push_checkpoint(&share(k, &h)).await.unwrap_err();
    }
    let federation = c.push_checkpoint(&share(&keys[2], &h)).await.unwrap();
    let proof = rpc::TxProof {
        tx_id: tx,
        batch,
        checkpoint,
        federation,
        global: None,
    };
    let decoded = rpc::TxProof::decode(&proof.encode()).unwrap();
    let v = decoded.verify(&committee, ckey.public_key()).unwrap();
    assert_eq!(
        (v.sequence, v.leader_round, v.log_index, v.tree_size),
        (0, 2, 0, 1)
    );
    assert!(
        decoded
            .verify(&committee, Keypair::generate().public_key())
            .is_err()
    );
    drop(c);
    cont.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pusher_is_counted_and_the_honest_history_still_gets_in() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let (keys, committee) = committee(4);
    let city = Hash32::digest(b"refusal-city");
    let ckey = Keypair::generate();
    let cont = continent_at(&city_cfg(dir.path(), city, &committee), &ckey).await;
    let cps = chain(3, 0);
    let pusher_for = |k: &Keypair, s: &Arc<MemoryCheckpointSource>| {
        let mut pc = PusherConfig::new(cont.addr().to_string(), city, ckey.public_key().to_vec());
        pc.links = rpc::tls::LinkSecurity::Insecure;
        pc.refusal_backoff = Duration::from_millis(50);
        let source: Arc<dyn CheckpointSource> = s.clone();
        spawn_checkpoint_pusher(pc, k.clone(), source).unwrap()
    };
    // A stranger's pusher: refused (not a member), counted, nothing appended.
    let stranger_source = Arc::new(MemoryCheckpointSource::new());
    for cp in &cps {
        stranger_source.commit(cp.clone());
    }
    let stranger = pusher_for(&Keypair::generate(), &stranger_source);
    wait_until("the stranger's refusals", || {
        stranger.stats().refusals.load(Relaxed) >= 2
    })
    .await;
    assert_eq!(cont.log().size(), 0);
    assert_eq!(stranger_source.proofs(), 0);

    // Three honest members: everything gets in, in order.
    let sources: Vec<_> = (0..3)
        .map(|_| Arc::new(MemoryCheckpointSource::new()))
        .collect();
    let pushers: Vec<_> = keys[..3]
        .iter()
        .zip(&sources)
        .map(|(k, s)| pusher_for(k, s))
        .collect();
    for s in &sources {
        for cp in &cps {
            s.commit(cp.clone());
        }
    }
    wait_until("3 federated", || sources.iter().all(|s| s.proofs() == 3)).await;
    assert_eq!(cont.log().size(), 3);
    for p in pushers {
        assert_eq!(p.stats().refusals.load(Relaxed), 0);
        p.shutdown().await;
    }
    stranger.shutdown().await;
    cont.shutdown().await.unwrap();
}

fn members_of(keys: &[&Keypair]) -> Vec<(Vec<u8>, u64)> {
    keys.iter().map(|k| (k.public_key().to_vec(), 1)).collect()
}

/// A committee change over real gRPC: A B C D run epoch 0 (checkpoints 0..4), then C D E F
/// run epoch 1 (4..8). C and D alone are not a quorum of the old committee: the members
/// left out (A, B) sign the handover too, once caught up at the boundary (they never get
/// checkpoint 4). The newcomers skip the epoch they were not in and federate the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committee_handover_lets_the_new_committee_federate() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, genesis) = committee(4);
    let (e, f) = (Keypair::generate(), Keypair::generate());
    let city = Hash32::digest(b"handover-city");
    let ckey = Keypair::generate();
    let cont = continent_at(&city_cfg(dir.path(), city, &genesis), &ckey).await;
    let c = client(cont.addr());
    let cps = chain(8, 0);
    let old: Vec<&Keypair> = keys.iter().collect();
    let new: Vec<&Keypair> = vec![&keys[2], &keys[3], &e, &f];
    let new_committee =
        Committee::equal(new.iter().map(|k| k.public_key().to_vec()).collect()).unwrap();
    let epochs = [
        CommitteeEpoch {
            epoch: 0,
            first_seq: 0,
            members: members_of(&old),
        },
        CommitteeEpoch {
            epoch: 1,
            first_seq: 4,
            members: members_of(&new),
        },
    ];
    let handover = CommitteeHandover {
        city,
        epoch: 1,
        last_sequence: 3,
        last_running_hash: cps[3].hash(),
        members: members_of(&new),
    };

    // Over the wire: a handover ahead of the log is the typed, retryable refusal.
    let early = CertifiedHandover::new(
        handover.clone(),
        vec![sign_handover_share(&handover, &keys[0])],
    );
    let err = c.push_handover(&early).await.unwrap_err();
    assert_eq!(
        err,
        FederationError::HandoverTooEarly {
            city,
            epoch: 1,
            last_sequence: 3
        }
    );
    assert!(err.is_retryable());

    // Every node recorded both epochs; A and B (left out) hold checkpoints 0..4, the others
    // all 8 (the newcomers followed the chain to join).
    let all: Vec<&Keypair> = vec![&keys[0], &keys[1], &keys[2], &keys[3], &e, &f];
    let sources: Vec<Arc<MemoryCheckpointSource>> = all
        .iter()
        .map(|_| Arc::new(MemoryCheckpointSource::new()))
        .collect();
    for (i, s) in sources.iter().enumerate() {
        s.record_epoch(epochs[0].clone());
        s.record_epoch(epochs[1].clone());
        let upto = if i < 2 { 4 } else { 8 };
        for cp in &cps[..upto] {
            s.commit(cp.clone());
        }
    }
    let mut pushers = Vec::new();
    for (k, s) in all.iter().zip(&sources) {
        let mut pc = PusherConfig::new(cont.addr().to_string(), city, ckey.public_key().to_vec());
        pc.links = rpc::tls::LinkSecurity::Insecure;
        pc.retry.base_delay = Duration::from_millis(20);
        pc.retry.max_delay = Duration::from_millis(200);
        pc.quorum_backoff_max = Duration::from_millis(100);
        pc.timeout = Duration::from_secs(5);
        let source: Arc<dyn CheckpointSource> = s.clone();
        pushers.push(spawn_checkpoint_pusher(pc, (*k).clone(), source).unwrap());
    }
    wait_until("the old epoch federated at A and B", || {
        sources[..2].iter().all(|s| s.proofs() == 4)
    })
    .await;
    wait_until("the new epoch federated at C D E F", || {
        sources[2..]
            .iter()
            .all(|s| (4..8).all(|q| s.proof(q).is_some()))
    })
    .await;
    assert_eq!(cont.log().size(), 8);
    let chain = cont.log().committee_chain(&city);
    assert_eq!(chain.len(), 2);
    assert_eq!((chain[1].0, chain[1].1), (1, 4));
    // Proofs verify against the committee of their epoch.
    for q in 0..4 {
        sources[2]
            .proof(q)
            .unwrap()
            .verify(&genesis, ckey.public_key())
            .unwrap();
        assert!(
            sources[4].proof(q).is_none(),
            "E records nothing for epoch 0"
        );
    }
    for q in 4..8 {
        sources[4]
            .proof(q)
            .unwrap()
            .verify(&new_committee, ckey.public_key())
            .unwrap();
    }
    // The accepted handover is what the old committee certified; a re-push answers it.
    let again = c.push_handover(&early).await.unwrap();
    assert_eq!(again.handover, handover);
    again.verify(&genesis).unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    let stats = |i: usize| pushers[i].stats().clone();
    for i in 4..6 {
        assert_eq!(
            stats(i).skipped.load(Relaxed),
            4,
            "newcomer {i} skipped epoch 0"
        );
        assert_eq!(
            stats(i).handovers.load(Relaxed),
            0,
            "newcomer {i} was not in the old committee"
        );
    }
    let handed: u64 = (0..4).map(|i| stats(i).handovers.load(Relaxed)).sum();
    assert!(
        handed >= 3,
        "a quorum of the old members pushed shares: {handed}"
    );
    for i in 0..6 {
        assert_eq!(stats(i).refusals.load(Relaxed), 0, "pusher {i} was refused");
    }
    for p in pushers {
        p.shutdown().await;
    }
    drop(c);
    cont.shutdown().await.unwrap();
}

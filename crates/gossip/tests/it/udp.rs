//! Real agents over loopback UDP in one process: authenticated handshakes, a crashed
//! agent confirmed down by every other, a graceful leave, and an outsider kept out.

use dag_core::NodeId;
use gossip::{GossipAgent, GossipConfig, GossipEvent, GossipHandle};
use pqc::Keypair;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn start(
    n: usize,
    allow: impl Fn(&NodeId) -> bool + Send + Sync + Clone + 'static,
) -> Vec<GossipHandle> {
    let mut agents = Vec::new();
    for _ in 0..n {
        let a = GossipAgent::start(
            Keypair::generate(),
            "127.0.0.1:0".parse().unwrap(),
            None,
            GossipConfig::default(),
            Arc::new(allow.clone()),
        )
        .await
        .unwrap();
        agents.push(a);
    }
    agents
}

/// Polls (generous deadline, real time: these are real sockets) until `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 30 s: {what}");
}

fn sees_all(agents: &[GossipHandle]) -> bool {
    agents.iter().all(|a| a.members().len() == agents.len() - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_form_a_cluster_and_confirm_a_crash_on_every_member() {
    let agents = start(5, |_| true).await;
    for a in &agents[1..] {
        a.announce(agents[0].me().node_id, agents[0].local_addr());
    }
    eventually("every agent sees the other four", || sees_all(&agents)).await;
    let mut downs: Vec<_> = agents[..4].iter().map(|a| a.subscribe()).collect();
    let mut agents = agents;
    let victim = agents.pop().unwrap();
    let victim_id = victim.me().node_id;
    victim.abort(); // a crash: no leave message
    for (i, rx) in downs.iter_mut().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(GossipEvent::Down(m)) = rx.recv().await
                    && m.node_id == victim_id
                {
                    return;
                }
            }
        })
        .await;
        assert!(got.is_ok(), "agent {i} never confirmed the crash");
        assert!(!agents[i].is_live(&victim_id));
    }
    for a in &agents {
        assert_eq!(a.stats().rejected.load(Ordering::Relaxed), 0);
        assert!(a.stats().bytes_sent.load(Ordering::Relaxed) > 0);
    }
    // A graceful leave is seen at once (no suspicion needed).
    let leaver = agents.pop().unwrap();
    let leaver_id = leaver.me().node_id;
    leaver.shutdown().await;
    eventually("the leave reaches everyone", || {
        agents.iter().all(|a| !a.is_live(&leaver_id))
    })
    .await;
    for a in agents {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_allow_list_cannot_join() {
    // Two insiders that only admit each other.
    let keys: Vec<Keypair> = (0..2).map(|_| Keypair::generate()).collect();
    let ids: HashSet<NodeId> = keys.iter().map(Keypair::node_id).collect();
    let mut agents = Vec::new();
    for k in keys {
        let ids = ids.clone();
        agents.push(
            GossipAgent::start(
                k,
                "127.0.0.1:0".parse().unwrap(),
                None,
                GossipConfig::default(),
                Arc::new(move |id: &NodeId| ids.contains(id)),
            )
            .await
            .unwrap(),
        );
    }
    agents[1].announce(agents[0].me().node_id, agents[0].local_addr());
    eventually("the two insiders meet", || sees_all(&agents)).await;
    let outsider = start(1, |_| true).await.pop().unwrap();
    outsider.announce(agents[0].me().node_id, agents[0].local_addr());
    eventually("the outsider's hello is refused", || {
        agents[0].stats().rejected.load(Ordering::Relaxed) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!agents[0].is_live(&outsider.me().node_id));
    assert!(outsider.members().is_empty());
    outsider.abort();
    for a in agents {
        a.shutdown().await;
    }
}

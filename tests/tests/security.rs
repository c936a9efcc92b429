//! Trust nothing on the wire: node links over mutual TLS with X25519MLKEM768 and
//! NodeId-bound certificates, over real loopback sockets. A peer without a valid binding is
//! refused on every node service (ShardStore, Consensus, Federation); PutShard only from
//! the city's representatives; a consensus envelope's sender must be the TLS peer; plaintext
//! callers reach only the public read methods of a TLS server.

#![allow(clippy::unwrap_used)]

use dag_core::consensus::{BatchHeader, Committee, Message, SignedBatch};
use dag_core::{Hash32, NodeId, Signer};
use node::consensus::{RepresentativeConfig, start_representative};
use node::genesis::{CityCommittee, CommitteeSource, city_hash};
use node::{LightConfig, LightHandle, LightWriters, start_light};
use pqc::Keypair;
use rpc::tls::{LinkSecurity, TlsContext, TlsIdentity};
use rpc::{ClientError, ConsensusClient, FederationClient, ShardStoreClient};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use storage::{ErasureConfig, Shard, StripeLayout};
use tonic::Code;

const CITY: &str = "JP-13";
const T: Duration = Duration::from_secs(10);

fn links(key: &Keypair) -> LinkSecurity {
    LinkSecurity::Tls(TlsContext::new(TlsIdentity::generate(key).unwrap()).unwrap())
}

fn forged(identity: TlsIdentity) -> LinkSecurity {
    LinkSecurity::Tls(TlsContext::new(identity).unwrap())
}

/// One city's committee, as genesis would give it.
#[derive(Debug)]
struct OneCity(CityCommittee);

impl CommitteeSource for OneCity {
    fn committee(&self, city_id: &str) -> Option<CityCommittee> {
        (city_id == self.0.city_id).then(|| self.0.clone())
    }
    fn city_of(&self, node: &NodeId) -> Option<CityCommittee> {
        self.0
            .committee
            .authority(node)
            .is_some()
            .then(|| self.0.clone())
    }
    fn cities(&self) -> Vec<CityCommittee> {
        vec![self.0.clone()]
    }
}

fn committee_of(keys: &[Keypair]) -> Committee {
    Committee::equal(keys.iter().map(|k| k.public_key().to_vec()).collect()).unwrap()
}

async fn tls_light(reps: &[Keypair]) -> (LightHandle, NodeId, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::generate();
    let id = key.node_id();
    let cfg = LightConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        links: links(&key),
        writers: Some(LightWriters {
            committees: Arc::new(OneCity(CityCommittee {
                city_id: CITY.into(),
                city: city_hash(CITY),
                committee: committee_of(reps),
                addresses: BTreeMap::new(),
            })),
            city_id: CITY.into(),
        }),
        ..LightConfig::default()
    };
    (start_light(&cfg, key).await.unwrap(), id, dir)
}

fn shards() -> (StripeLayout, Vec<Shard>) {
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i * 131 % 251) as u8).collect();
    let shards = ErasureConfig::default().encode(&data).unwrap();
    (StripeLayout::from_shards(&shards).unwrap(), shards)
}

fn client_over(l: &LinkSecurity, addr: &str, expect: NodeId) -> ShardStoreClient {
    ShardStoreClient::from_channel(l.lazy_channel(addr, Some(expect), T).unwrap()).with_timeout(T)
}

/// A refused handshake shows as a transport failure, never as an answer: in TLS 1.3 the
/// client finishes its side first and the server's alert then closes the connection
/// (`Cancelled`, or `Unknown: transport error` when it lands mid-request), or the
/// connection attempt itself fails (`Unavailable`).
fn assert_refused(e: &ClientError) {
    let (c, msg) = code(e);
    assert!(
        matches!(c, Code::Unavailable | Code::Cancelled)
            || (c == Code::Unknown && msg.contains("transport error")),
        "{c:?}: {msg}"
    );
}

fn code(e: &ClientError) -> (Code, String) {
    match e {
        ClientError::Status { code, message } => (*code, message.clone()),
        ClientError::Rejected(r) => (r.code.grpc_code(), r.to_string()),
        other => panic!("expected a status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_negotiate_x25519mlkem768_and_prove_node_ids() {
    let rep = Keypair::generate();
    let (light, light_id, _dir) = tls_light(std::slice::from_ref(&rep)).await;
    let addr = light.addr().to_string();
    let rep_links = links(&rep);
    let ctx = rep_links.tls().unwrap();

    let (_, peer) = ctx.connect(&addr, Some(light_id), T).await.unwrap();
    assert_eq!(peer.node_id, light_id);
    assert_eq!(peer.kx_group, Some(rustls::NamedGroup::X25519MLKEM768));

    // Dialling the address under another NodeId (a presence entry pointing at someone
    // else's server) fails: the server proves who it is.
    let e = ctx
        .connect(&addr, Some(rep.node_id()), T)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");

    // A peer that offers only classical X25519 is refused.
    let classical = TlsContext::with_provider(
        TlsIdentity::generate(&Keypair::generate()).unwrap(),
        rustls::crypto::CryptoProvider {
            kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
            ..rustls::crypto::aws_lc_rs::default_provider()
        },
    )
    .unwrap();
    assert!(classical.connect(&addr, None, T).await.is_err());
    light.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_shard_only_from_the_city_representatives() {
    let reps: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
    let (light, light_id, _dir) = tls_light(&reps).await;
    let addr = light.addr().to_string();
    let (layout, shards) = shards();

    let rep = client_over(&links(&reps[0]), &addr, light_id);
    let stored = rep.put_shard(&shards[0]).await.unwrap();
    assert_eq!(stored.receipt.receipt.holder, light_id);

    // A node with a valid identity that is no representative of the city: refused, nothing
    // stored under that (stripe, index), so the real put later succeeds.
    let outsider = client_over(&links(&Keypair::generate()), &addr, light_id);
    let e = outsider.put_shard(&shards[1]).await.unwrap_err();
    let (c, msg) = code(&e);
    assert_eq!(c, Code::PermissionDenied, "{msg}");
    assert!(msg.starts_with("NOT_A_REPRESENTATIVE:"), "{msg}");
    let e = rep.get_shard(layout.stripe_id, 1).await.unwrap_err();
    assert_eq!(code(&e).0, Code::NotFound);

    // Plaintext on a TLS server: node-only methods refused, public reads served.
    let plain = ShardStoreClient::connect(&addr).await.unwrap();
    let e = plain.put_shard(&shards[1]).await.unwrap_err();
    let (c, msg) = code(&e);
    assert_eq!(c, Code::Unauthenticated, "{msg}");
    assert_eq!(
        plain.get_shard(layout.stripe_id, 0).await.unwrap(),
        shards[0]
    );

    // A copied certificate (another TLS key under a representative's binding) and a
    // certificate with no binding never get past the handshake, whatever the method.
    let victim = TlsIdentity::generate(&reps[1]).unwrap();
    for bad in [
        forged(TlsIdentity::stolen_binding_for_test(&victim).unwrap()),
        forged(TlsIdentity::unbound_for_test().unwrap()),
    ] {
        let c = client_over(&bad, &addr, light_id);
        assert_refused(&c.put_shard(&shards[1]).await.unwrap_err());
        assert_refused(&c.get_shard(layout.stripe_id, 0).await.unwrap_err());
    }
    // The real put of index 1 still lands.
    assert!(!rep.put_shard(&shards[1]).await.unwrap().already_stored);
    light.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consensus_takes_the_sender_from_the_tls_peer() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = RepresentativeConfig::new(dir.path());
    cfg.links = links(&keys[0]);
    let rep = start_representative(
        cfg,
        keys[0].clone(),
        committee_of(&keys),
        listener,
        HashMap::new(),
    )
    .await
    .unwrap();
    let addr = rep.addr().unwrap().to_string();
    let target = keys[0].node_id();

    let as_member1 = ConsensusClient::lazy_over(&addr, T, &links(&keys[1]), target).unwrap();
    // Member 1 claiming to be member 2: refused before the message is even decoded.
    let e = as_member1
        .deliver_bytes(keys[2].node_id(), vec![0xff, 1, 2])
        .await
        .unwrap_err();
    let (c, msg) = code(&e);
    assert_eq!(c, Code::PermissionDenied, "{msg}");
    assert!(msg.starts_with("SPOOFED_SENDER:"), "{msg}");
    // Under its own name the same bytes get past authentication (and fail decoding).
    let e = as_member1
        .deliver_bytes(keys[1].node_id(), vec![0xff, 1, 2])
        .await
        .unwrap_err();
    let (c, msg) = code(&e);
    assert_eq!(c, Code::InvalidArgument, "{msg}");
    assert!(msg.starts_with("MALFORMED:"), "{msg}");

    // A node outside the committee, under its own (authentic) name.
    let outsider = Keypair::generate();
    let header = BatchHeader {
        epoch: 0,
        round: 0,
        author: outsider.node_id(),
        timestamp_ms: 1,
        parents: vec![],
        weak_links: vec![],
        items: vec![],
    };
    let c = ConsensusClient::lazy_over(&addr, T, &links(&outsider), target).unwrap();
    let e = c
        .deliver(
            outsider.node_id(),
            &Message::Propose(SignedBatch::sign(header, &outsider)),
        )
        .await
        .unwrap_err();
    let (c, msg) = code(&e);
    assert_eq!(c, Code::PermissionDenied, "{msg}");
    assert!(msg.starts_with("UNKNOWN_SENDER:"), "{msg}");

    // Plaintext to a TLS representative: unauthenticated.
    let plain = ConsensusClient::lazy(&addr, T).unwrap();
    let e = plain
        .deliver_bytes(keys[1].node_id(), vec![0xff])
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, Code::Unauthenticated);

    // Member 1's binding on another TLS key: no connection at all.
    let victim = TlsIdentity::generate(&keys[1]).unwrap();
    let stolen = forged(TlsIdentity::stolen_binding_for_test(&victim).unwrap());
    let c = ConsensusClient::lazy_over(&addr, T, &stolen, target).unwrap();
    assert_refused(
        &c.deliver_bytes(keys[1].node_id(), vec![0xff])
            .await
            .unwrap_err(),
    );
    rep.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_refuses_peers_without_a_valid_binding() {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::generate();
    let id = key.node_id();
    let mut cfg = node::continent::ContinentConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path(),
        Vec::new(),
    );
    cfg.links = links(&key);
    let cont = node::continent::start_continent(&cfg, key).await.unwrap();
    let addr = cont.addr().to_string();
    let city = Hash32::digest(b"nowhere");

    let good =
        FederationClient::lazy_over(&addr, T, &links(&Keypair::generate()), Some(id)).unwrap();
    good.tree_head().await.unwrap();
    for bad in [
        forged(
            TlsIdentity::stolen_binding_for_test(
                &TlsIdentity::generate(&Keypair::generate()).unwrap(),
            )
            .unwrap(),
        ),
        forged(TlsIdentity::unbound_for_test().unwrap()),
    ] {
        let c = FederationClient::lazy_over(&addr, T, &bad, Some(id)).unwrap();
        assert!(c.tree_head().await.is_err());
        assert!(c.city_head(city).await.is_err());
    }
    cont.shutdown().await.unwrap();
}

/// This process's resident set size, from /proc (nextest runs each test in its own
/// process, so it is the node's plus this test's small client).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

const MIB: u64 = 1024 * 1024;

/// Opens `streams` PutShard calls over plaintext HTTP/2 (as an anonymous client can, on a
/// TLS server's port), each announcing a 16 MiB message and sending half of it, respecting
/// flow control, then holding the stream open. Returns (bytes sent, streams refused).
async fn half_sent_streams(
    addr: std::net::SocketAddr,
    connections: usize,
    streams: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (
    Arc<std::sync::atomic::AtomicU64>,
    Arc<std::sync::atomic::AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let chunk = bytes::Bytes::from_static(&[0u8; 64 * 1024]);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        let mut stop_conn = stop.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                _ = stop_conn.wait_for(|s| *s) => {}
            }
        }));
        let per_conn = streams / connections + usize::from(c < streams % connections);
        for _ in 0..per_conn {
            let mut client = client.clone().ready().await.unwrap();
            let req = http::Request::post(format!(
                "http://{addr}/citychain.v1.ShardStoreService/PutShard"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
            let (resp, mut body) = client.send_request(req, false).unwrap();
            let (sent, refused, chunk) = (sent.clone(), refused.clone(), chunk.clone());
            let mut stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let send = async {
                    // gRPC frame header: uncompressed, 16 MiB message.
                    let mut header = vec![0u8];
                    header.extend_from_slice(&(16 * MIB as u32).to_be_bytes());
                    if body.send_data(header.into(), false).is_err() {
                        return;
                    }
                    let mut left = 8 * MIB as usize;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        body.reserve_capacity(n);
                        let got = match futures::future::poll_fn(|cx| body.poll_capacity(cx)).await
                        {
                            Some(Ok(got)) => got.min(n),
                            _ => return,
                        };
                        if body.send_data(chunk.slice(..got), false).is_err() {
                            return;
                        }
                        sent.fetch_add(got as u64, Ordering::Relaxed);
                        left -= got;
                    }
                    // Half sent: hold the stream open, never finish the message.
                    std::future::pending::<()>().await
                };
                tokio::select! {
                    r = resp => {
                        // The server answered before the message was complete: refused.
                        if let Ok(r) = r {
                            let status = r.headers().get("grpc-status").cloned();
                            assert_eq!(status.as_ref().map(|s| s.as_bytes()), Some(&b"8"[..]), "{r:?}");
                        }
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    _ = send => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                drop(body);
            }));
        }
    }
    (sent, refused, tasks)
}

/// 2,000 half-sent 16 MiB PutShard streams from one anonymous client keep the node's memory
/// bounded: each peer's in-flight request bytes are budgeted (64 MiB), so the streams past
/// the budget are refused with RESOURCE_EXHAUSTED as their first bytes arrive, and a
/// representative's put (its own budget, over TLS) still lands meanwhile. Unbounded, the
/// node would buffer 2,000 × 8 MiB = 16 GB; the test stops the attack past 1.5 GiB. (The
/// bytes the client counts as sent include those in flight on streams refused meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_streams_keep_rss_bounded() {
    use std::sync::atomic::Ordering;
    let reps: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
    let (light, light_id, _dir) = tls_light(&reps).await;
    let addr = light.addr();
    let (_, shards) = shards();
    let rep = client_over(&links(&reps[0]), &addr.to_string(), light_id);
    rep.put_shard(&shards[0]).await.unwrap();
    let before = rss_bytes();

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (sent, refused, tasks) = half_sent_streams(addr, 8, 2000, stop).await;
    // Watch until the attack settles (no byte sent for 2 s), bounded at 60 s; stop at
    // once if memory runs away.
    let (mut peak, mut last_sent, mut quiet_since) = (before, 0, tokio::time::Instant::now());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rss = rss_bytes();
        peak = peak.max(rss);
        if rss > before + 1536 * MIB {
            break;
        }
        let s = sent.load(Ordering::Relaxed);
        if s != last_sent {
            (last_sent, quiet_since) = (s, tokio::time::Instant::now());
        } else if quiet_since.elapsed() > Duration::from_secs(2)
            && refused.load(Ordering::Relaxed) > 0
        {
            break;
        }
    }
    let refused_n = refused.load(Ordering::Relaxed);
    let sent_n = sent.load(Ordering::Relaxed);
    // While the half-sent streams are held open, a representative still puts.
    let landed = rep.put_shard(&shards[1]).await;
    peak = peak.max(rss_bytes());
    let _ = stop_tx.send(true);
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "half-sent streams: 2000 offered (16 MiB announced, 8 MiB each to send), {sent_n} bytes accepted ({:.1} MiB), {refused_n} refused; RSS before {:.1} MiB, peak {:.1} MiB (+{:.1} MiB)",
        sent_n as f64 / MIB as f64,
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        (peak - before) as f64 / MIB as f64,
    );
    assert!(
        peak < before + 512 * MIB,
        "RSS grew by {} MiB",
        (peak - before) / MIB
    );
    // The rest are refused as their bytes arrive or wait on HTTP/2 flow control (bytes the
    // node never took in); none of them hold more than the budget.
    assert!(refused_n > 0, "no stream was refused");
    assert!(!landed.unwrap().already_stored);
    light.shutdown().await.unwrap();
}

/// Light nodes are admitted to placement by the city's allow-list: a light node that logs
/// in to presence (a valid, signed login) but is not on the list never gets a shard, while
/// the admitted ones hold every stripe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_node_not_admitted_gets_no_shard() {
    use dag_core::{AccountId, CityId, Position, PositionMethod, Tx};
    use devnet::{CITY_POS, Devnet, DevnetConfig};
    let dir = tempfile::tempdir().unwrap();
    let cfg = DevnetConfig {
        lights: 7,
        admitted_lights: Some(6),
        heartbeat: Duration::from_millis(200),
        ..DevnetConfig::default()
    };
    let net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(7, Duration::from_secs(20)).await);
    let client = rpc::CityClient::connect(&net.city().addr().to_string())
        .await
        .unwrap();
    let user = Keypair::generate();
    for nonce in 0..4 {
        let tx = pqc::sign_tx(
            Tx::fresh(
                user.account_id(),
                AccountId::from_bytes([7; 32]),
                5,
                nonce,
                1_700_000_000_000,
                CityId::new(CITY).unwrap(),
                Position::from_degrees(CITY_POS.0, CITY_POS.1).unwrap(),
                PositionMethod::Gps,
            ),
            &user,
        );
        assert_eq!(client.submit(&tx).await.unwrap().state, rpc::TxState::Held);
    }
    let stripes = |i: usize| {
        net.lights[i]
            .server()
            .unwrap()
            .node()
            .store()
            .list_stripes()
            .unwrap()
            .len()
    };
    assert_eq!(stripes(6), 0, "the light node not admitted holds shards");
    let admitted: Vec<usize> = (0..6).map(stripes).collect();
    // n = 6 holders per stripe and exactly 6 admitted: each of them holds every stripe.
    assert!(
        admitted[0] > 0 && admitted.iter().all(|&n| n == admitted[0]),
        "{admitted:?}"
    );
    net.shutdown().await.unwrap();
}

/// A TCP proxy that holds every new connection for `delay` before relaying it: a light node
/// whose TLS handshake is slow (a loaded machine, a far link).
async fn slow_proxy(
    to: std::net::SocketAddr,
    delay: Duration,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut relays = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = l.accept().await {
            relays.spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (addr, task)
}

/// The control for the test below: a transport that leaves connecting to the call itself
/// (as before issue 14's mend), so the handshake runs inside the put's deadline.
struct ConnectInsideTheCall(node::GrpcTransport);

#[async_trait::async_trait]
impl node::ShardTransport for ConnectInsideTheCall {
    async fn put_shard(
        &self,
        node: &dag_core::NodeInfo,
        shard: &Shard,
    ) -> Result<dag_core::SignedReceipt, node::TransportError> {
        self.0.put_shard(node, shard).await
    }

    async fn get_shard(
        &self,
        node: &dag_core::NodeInfo,
        stripe: dag_core::StripeId,
        index: u16,
    ) -> Result<Shard, node::TransportError> {
        self.0.get_shard(node, stripe, index).await
    }
}

/// Issue 14: the first put to a light node must not fail only because the mutual TLS +
/// ML-KEM handshake is slow. Six TLS light nodes, each behind a proxy that holds a new
/// connection for 3 s; puts have a 1.5 s deadline and a single attempt. The transport
/// connects (handshake included) under its own connect timeout before the put's deadline
/// starts, so the tx is Held on six distinct holders; the next tx reuses the connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_tls_handshake_does_not_count_against_the_put_deadline() {
    use node::{GrpcTransport, Pipeline, PipelineConfig, StaticDirectory};
    let rep = Keypair::generate();
    let mut lights = Vec::new();
    let mut proxies = Vec::new();
    let mut infos = Vec::new();
    for zone in 0..6 {
        let (h, id, dir) = tls_light(std::slice::from_ref(&rep)).await;
        let (addr, task) = slow_proxy(h.addr(), Duration::from_secs(3)).await;
        infos.push(dag_core::NodeInfo {
            node_id: id,
            role: dag_core::Role::Light,
            grpc_addr: addr.to_string(),
            city_id: CITY.into(),
            zone: format!("zone-{zone}"),
            lat: 35.68,
            lon: 139.69,
            free_capacity: 1 << 30,
            load: 0.0,
            version: "test".into(),
            session_start_ms: 0,
        });
        lights.push((h, dir));
        proxies.push(task);
    }
    let city_dir = tempfile::tempdir().unwrap();
    let start = |transport: Arc<dyn node::ShardTransport>, file: &str| {
        Pipeline::start(
            PipelineConfig {
                call_timeout: Duration::from_millis(1500),
                attempts: 1,
                ..PipelineConfig::default()
            },
            &city_dir.path().join(file),
            transport,
            Arc::new(StaticDirectory::new(infos.clone())),
            Arc::new(pqc::BatchVerifier::new(1).unwrap()),
        )
        .unwrap()
    };
    let user = Keypair::generate();
    let tx = |nonce: u64| {
        let tx = dag_core::Tx::fresh(
            user.account_id(),
            dag_core::AccountId::from_bytes([7; 32]),
            10,
            nonce,
            1_767_225_600_000 + nonce,
            dag_core::CityId::new(CITY).unwrap(),
            dag_core::Position::from_degrees(35.68, 139.69).unwrap(),
            dag_core::PositionMethod::Gps,
        );
        pqc::sign_tx(tx, &user).verify(&pqc::MlDsa87).unwrap()
    };

    // Control: handshake inside the put's deadline → the first put cannot make it.
    let control = start(
        Arc::new(ConnectInsideTheCall(GrpcTransport::over(
            Duration::from_secs(20),
            links(&rep),
        ))),
        "control.redb",
    );
    let err = control.hold(tx(100)).await.unwrap_err();
    println!("control (connect inside the put deadline): {err}");

    let pipeline = start(
        Arc::new(GrpcTransport::over(Duration::from_secs(20), links(&rep))),
        "stripes.redb",
    );
    for nonce in 0..2u64 {
        let v = tx(nonce);
        let held = pipeline
            .hold(v)
            .await
            .unwrap_or_else(|e| panic!("tx {nonce} not held: {e}"));
        let holders: std::collections::BTreeSet<NodeId> =
            held.receipts.iter().map(|r| r.receipt.holder).collect();
        assert_eq!(holders.len(), 6, "six distinct holders for tx {nonce}");
        assert!(
            holders
                .iter()
                .all(|h| infos.iter().any(|i| i.node_id == *h))
        );
    }
    for p in proxies {
        p.abort();
        let _ = p.await;
    }
    for (h, _dir) in lights {
        h.shutdown().await.unwrap();
    }
}

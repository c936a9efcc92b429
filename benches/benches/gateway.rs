//! SSE fan-out of the gateway: events published on the city's event bus reach N
//! subscribers of `GET /v1/events` over real loopback HTTP. Throughput is deliveries
//! (subscribers × events) per second; the baseline beside it is the same fan-out through
//! the bus's broadcast channel alone, in the same process.

#![allow(missing_docs, clippy::unwrap_used)]

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dag_core::{SignedTx, StripeId, TxId};
use futures::StreamExt;
use gateway::{
    EventKind, Gateway, GatewayBackend, GatewayConfig, NodesView, RepairRefused, RepairTicket,
    Subscription,
};
use node::EventBus;
use rpc::{RejectCode, Rejection, StripeInfo, Submitted, TxRecord};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const EVENTS: u64 = 100;

struct Bus(Arc<EventBus>);

#[async_trait]
impl GatewayBackend for Bus {
    async fn submit(&self, _tx: SignedTx) -> Result<Submitted, Rejection> {
        Err(Rejection::new(RejectCode::Unavailable, "bench", None))
    }
    async fn get(&self, _id: TxId) -> Result<Option<TxRecord>, Rejection> {
        Ok(None)
    }
    async fn request_repair(&self, id: TxId) -> Result<RepairTicket, RepairRefused> {
        Err(RepairRefused::UnknownTx(id))
    }
    fn repair_status(&self, _n: u64) -> Option<RepairTicket> {
        None
    }
    fn subscribe(&self, after: Option<u64>) -> Subscription {
        self.0.subscribe(after)
    }
    async fn nodes(&self) -> NodesView {
        NodesView {
            this_node: dag_core::NodeId::default(),
            city: String::new(),
            lights: Vec::new(),
            committee: Vec::new(),
        }
    }
    async fn stripe(&self, _id: StripeId) -> Result<Option<StripeInfo>, Rejection> {
        Ok(None)
    }
}

async fn wait_for(count: &AtomicU64, target: u64) {
    let t0 = Instant::now();
    while count.load(Ordering::Acquire) < target {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "subscribers stalled"
        );
        tokio::task::yield_now().await;
    }
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("gateway");
    g.sample_size(10);
    for subs in [1u64, 16, 64] {
        g.throughput(Throughput::Elements(subs * EVENTS));
        // Baseline: the bus's broadcast channel alone.
        g.bench_function(format!("bus_fanout/subscribers={subs}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let bus = Arc::new(EventBus::default());
                    let count = Arc::new(AtomicU64::new(0));
                    let mut tasks = Vec::new();
                    for _ in 0..subs {
                        let mut live = bus.subscribe(None).live;
                        let count = count.clone();
                        tasks.push(tokio::spawn(async move {
                            while live.recv().await.is_ok() {
                                count.fetch_add(1, Ordering::AcqRel);
                            }
                        }));
                    }
                    let t0 = Instant::now();
                    for i in 0..iters {
                        for n in 0..EVENTS {
                            bus.publish(
                                EventKind::Held,
                                TxId::from_bytes([n as u8; 32]),
                                serde_json::Value::Null,
                            );
                        }
                        wait_for(&count, (i + 1) * EVENTS * subs).await;
                    }
                    let d = t0.elapsed();
                    drop(bus);
                    for t in tasks {
                        t.await.unwrap();
                    }
                    d
                })
            });
        });
        g.bench_function(format!("sse_fanout/subscribers={subs}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let bus = Arc::new(EventBus::default());
                    let cfg = GatewayConfig {
                        listen: "127.0.0.1:0".parse().unwrap(),
                        rate_limit_per_second: 0,
                        ..GatewayConfig::default()
                    };
                    let h = Gateway::start(&cfg, Arc::new(Bus(bus.clone())), None)
                        .await
                        .unwrap();
                    let url = format!("http://{}/v1/events", h.addr());
                    let http = reqwest::Client::new();
                    let count = Arc::new(AtomicU64::new(0));
                    let mut tasks = Vec::new();
                    for _ in 0..subs {
                        let r = http.get(&url).send().await.unwrap();
                        let count = count.clone();
                        tasks.push(tokio::spawn(async move {
                            let mut s = r.bytes_stream();
                            let mut carry = Vec::new();
                            while let Some(Ok(chunk)) = s.next().await {
                                carry.extend_from_slice(&chunk);
                                let mut n = 0;
                                while let Some(p) = carry.windows(2).position(|w| w == b"\n\n") {
                                    if carry[..p].starts_with(b"id:")
                                        || carry[..p].windows(6).any(|w| w == b"event:")
                                    {
                                        n += 1;
                                    }
                                    carry.drain(..p + 2);
                                }
                                count.fetch_add(n, Ordering::AcqRel);
                            }
                        }));
                    }
                    // Every subscriber is registered before timing starts.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let t0 = Instant::now();
                    for i in 0..iters {
                        for n in 0..EVENTS {
                            bus.publish(
                                EventKind::Held,
                                TxId::from_bytes([n as u8; 32]),
                                serde_json::Value::Null,
                            );
                        }
                        wait_for(&count, (i + 1) * EVENTS * subs).await;
                    }
                    let d = t0.elapsed();
                    h.shutdown().await.unwrap();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    d
                })
            });
        });
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);

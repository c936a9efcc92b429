//! `city-node bench --fill-light-gib G`: a light node's footprint while it holds a lot.
//!
//! One presence server and one light node run as processes (the light node without a
//! genesis file, so it takes shards from any authenticated node). The bench, with a TLS
//! identity of its own, stores shards in it through `PutShard` over mutual TLS until it
//! holds `G` GiB: each shard is one of the 4 + 2 shards of a stripe of random bytes the size
//! a loaded city cuts (140 KiB by default: ~19 txs of 7.3 KB), one shard per stripe, as a
//! holder receives them. Every second it samples the light node's resident set, whole and
//! its anonymous part (heap and stacks; the rest is the executable's pages, shared by every
//! process running the binary). The figures are printed; nothing is checked against a
//! threshold here.

use crate::load::{rss_anon_bytes, rss_bytes};
use crate::load_bench::{
    BenchConfig, Procs, bench_root, dir_bytes, spawn_with_env, start_presence, wait_listening,
};
use crate::{Error, Result};
use rpc::ShardStoreClient;
use rpc::tls::{LinkSecurity, TlsContext, TlsIdentity};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use storage::ErasureConfig;

/// What to store.
#[derive(Debug, Clone)]
pub struct FillConfig {
    /// GiB of shards (encoded, header included) to store.
    pub gib: f64,
    /// Bytes of each stripe; its shards are a quarter of that (4 + 2).
    pub stripe_bytes: usize,
    /// `PutShard` calls in flight.
    pub concurrency: usize,
}

impl Default for FillConfig {
    fn default() -> Self {
        FillConfig {
            gib: 5.0,
            stripe_bytes: 140 * 1024,
            concurrency: 8,
        }
    }
}

/// One sample of the light node while it fills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FillSample {
    /// Seconds since the fill began.
    pub secs: f64,
    /// Shard bytes stored so far.
    pub stored: u64,
    /// Resident set, bytes.
    pub rss: u64,
    /// Its anonymous part, bytes.
    pub anon: u64,
}

/// What [`fill_light`] measured.
#[derive(Debug, Clone, Default)]
pub struct FillReport {
    /// Shard bytes stored (encoded shards, what the light node's quota counts).
    pub stored: u64,
    /// Shards stored.
    pub shards: u64,
    /// Each shard's encoded size, bytes.
    pub shard_bytes: usize,
    /// Seconds the fill took.
    pub secs: f64,
    /// Every sample, one a second.
    pub samples: Vec<FillSample>,
    /// The light node's data directory on disk at the end (allocated), bytes.
    pub disk: u64,
}

impl FillReport {
    /// Largest resident set sampled.
    pub fn rss_max(&self) -> u64 {
        self.samples.iter().map(|s| s.rss).max().unwrap_or(0)
    }
    /// Largest anonymous resident set sampled.
    pub fn anon_max(&self) -> u64 {
        self.samples.iter().map(|s| s.anon).max().unwrap_or(0)
    }

    /// The printed summary: the trend (a sample per tenth of the fill) and the maxima.
    pub fn render(&self) -> String {
        let mib = |b: u64| b as f64 / 1048576.0;
        let gib = |b: u64| b as f64 / 1073741824.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "light node filled through PutShard (mutual TLS): {} shards of {} B, {:.2} GiB in {:.0} s ({:.0} MB/s)",
            self.shards,
            self.shard_bytes,
            gib(self.stored),
            self.secs,
            self.stored as f64 / self.secs.max(1e-9) / 1e6
        );
        let _ = writeln!(
            s,
            "{:>8} {:>10} {:>9} {:>10}",
            "s", "held GiB", "RSS MiB", "anon MiB"
        );
        let step = (self.samples.len() / 10).max(1);
        let last = self.samples.len().saturating_sub(1);
        for (i, x) in self.samples.iter().enumerate() {
            if i % step == 0 || i == last {
                let _ = writeln!(
                    s,
                    "{:>8.0} {:>10.2} {:>9.1} {:>10.1}",
                    x.secs,
                    gib(x.stored),
                    mib(x.rss),
                    mib(x.anon)
                );
            }
        }
        let _ = writeln!(
            s,
            "largest RSS {:.1} MiB (anonymous {:.1} MiB); disk {:.2} GiB ({:.2} × the shard bytes)",
            mib(self.rss_max()),
            mib(self.anon_max()),
            gib(self.disk),
            self.disk as f64 / self.stored.max(1) as f64
        );
        s
    }
}

fn measurement(e: impl std::fmt::Display) -> Error {
    Error::Measurement(e.to_string())
}

/// Random bytes for stripe `i` (BLAKE3 in XOF mode: distinct, incompressible, cheap).
fn stripe_bytes(i: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(b"citychain light fill");
    h.update(&i.to_le_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

/// Starts a presence server and one light node under `cfg`'s directory and binaries, fills
/// the light node as `fill` says, and reports its footprint.
pub async fn fill_light(cfg: &BenchConfig, fill: &FillConfig) -> Result<FillReport> {
    let (root, _tmp) = bench_root(cfg)?;
    let target = (fill.gib * 1073741824.0) as u64;
    let mut procs = Procs { procs: Vec::new() };
    let presence = start_presence(cfg, &root, &mut procs).await?;
    // The quota counts encoded shards: room for the target and a margin.
    let quota = target + target / 4 + (1 << 30);
    let mut p = spawn_with_env(
        cfg,
        &root,
        "light-0",
        "light",
        Some(presence),
        &[("CITY_LIGHT__QUOTA_BYTES", quota.to_string())],
    )?;
    wait_listening(&mut p, Duration::from_secs(30)).await?;
    procs.procs.push(p);
    let result = run_fill(cfg, fill, &procs, target).await;
    procs.stop().await;
    result
}

async fn run_fill(
    cfg: &BenchConfig,
    fill: &FillConfig,
    procs: &Procs,
    target: u64,
) -> Result<FillReport> {
    let light = procs
        .procs
        .last()
        .ok_or_else(|| measurement("no light node"))?;
    let pid = light.pid()?;
    let links = if cfg.insecure {
        LinkSecurity::Insecure
    } else {
        let key = pqc::Keypair::generate();
        LinkSecurity::Tls(
            TlsContext::new(TlsIdentity::generate(&key).map_err(measurement)?)
                .map_err(measurement)?,
        )
    };
    let channel = links
        .channel(&light.addr.to_string(), None, Duration::from_secs(10))
        .await
        .map_err(measurement)?;
    let client = ShardStoreClient::from_channel(channel);
    let erasure = ErasureConfig::default();
    let n = u64::from(erasure.n());
    let shard_bytes = erasure.shard_len(fill.stripe_bytes) + storage::HEADER_LEN;

    let stored = Arc::new(AtomicU64::new(0));
    let shards = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let sampler = {
        let stored = stored.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let (Ok(rss), Ok(anon)) = (rss_bytes(pid), rss_anon_bytes(pid)) else {
                    break;
                };
                samples.push(FillSample {
                    secs: t0.elapsed().as_secs_f64(),
                    stored: stored.load(Ordering::Relaxed),
                    rss,
                    anon,
                });
                if done.load(Ordering::Relaxed) {
                    break;
                }
            }
            samples
        })
    };
    let mut workers = Vec::new();
    for _ in 0..fill.concurrency.max(1) {
        let (client, stored, shards, next) =
            (client.clone(), stored.clone(), shards.clone(), next.clone());
        let len = fill.stripe_bytes;
        workers.push(tokio::spawn(async move {
            while stored.load(Ordering::Relaxed) < target {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let mut all = erasure.encode(&stripe_bytes(i, len)).map_err(measurement)?;
                let shard = all.swap_remove((i % n) as usize);
                client.put_shard(&shard).await.map_err(measurement)?;
                stored.fetch_add(shard.encoded_len() as u64, Ordering::Relaxed);
                shards.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), Error>(())
        }));
    }
    let mut failed = None;
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = failed.or(Some(e)),
            Err(e) => failed = failed.or(Some(measurement(e))),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    // A few more samples once the writes stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    done.store(true, Ordering::Relaxed);
    let samples = sampler.await.map_err(measurement)?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(FillReport {
        stored: stored.load(Ordering::Relaxed),
        shards: shards.load(Ordering::Relaxed),
        shard_bytes,
        secs,
        samples,
        disk: dir_bytes(&light.dir),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stripes_are_distinct_and_of_the_asked_length() {
        let a = stripe_bytes(1, 1000);
        assert_eq!(a.len(), 1000);
        assert_ne!(a, stripe_bytes(2, 1000));
        assert_eq!(a, stripe_bytes(1, 1000));
    }

    #[test]
    fn the_summary_reports_the_largest_sample() {
        let r = FillReport {
            stored: 2 << 30,
            shards: 10,
            shard_bytes: 1000,
            secs: 2.0,
            samples: vec![
                FillSample {
                    secs: 1.0,
                    stored: 1 << 30,
                    rss: 50 << 20,
                    anon: 30 << 20,
                },
                FillSample {
                    secs: 2.0,
                    stored: 2 << 30,
                    rss: 60 << 20,
                    anon: 28 << 20,
                },
            ],
            disk: 3 << 30,
        };
        assert_eq!(r.rss_max(), 60 << 20);
        assert_eq!(r.anon_max(), 30 << 20);
        let text = r.render();
        assert!(
            text.contains("largest RSS 60.0 MiB (anonymous 30.0 MiB)"),
            "{text}"
        );
        assert!(text.contains("1.50 × the shard bytes"), "{text}");
    }
}

//! A `rewrap` from NTRU to ML-KEM-1024 killed (SIGKILL) in the middle, several times: after
//! each kill every record still decrypts and verifies, the indexes agree, and a final run
//! moves the rest. The child is this test binary re-run with `CITYCHAIN_ARCHIVE_REWRAP_DIR`
//! set, executing only [`child_rewrapper`]; without the variable that test returns at once.

use crate::common::{alice, bob, entry, tx};
use archive::{ARCHIVE_FILE, ArchiveConfig, ArchiveKeys, KEYRING_FILE, RedbArchive};
use pqc::{Kem, MlDsa87};
use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ENV: &str = "CITYCHAIN_ARCHIVE_REWRAP_DIR";
const RECORDS: u64 = 300;
/// Records per rewrap transaction in the child: small, so a run has many chunks to land in.
const CHUNK: usize = 2;
/// Kill rounds; round r waits (r + 1) / (ROUNDS + 1) of a chunk's measured duration after a
/// commit before the kill, so kills land at different points of a chunk. (Timing only aims
/// the kill; no assertion depends on it.)
const ROUNDS: u32 = 3;
/// Chunks each round lets the child commit before aiming the kill.
const CHUNKS_BEFORE_KILL: u64 = 4;

/// Kills and reaps the child even when the test fails.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The archive as a node configured for ML-KEM-1024 opens it.
fn open_ml_kem(dir: &Path) -> RedbArchive {
    let keys = ArchiveKeys::open_or_create_with(&dir.join(KEYRING_FILE), Kem::MlKem1024).unwrap();
    RedbArchive::open(
        &dir.join(ARCHIVE_FILE),
        Arc::new(keys),
        ArchiveConfig::default(),
    )
    .unwrap()
}

/// The child's body: rewraps, announcing each committed chunk, until killed (it never gets
/// far: the parent kills it a few chunks in).
#[test]
fn child_rewrapper() {
    let Some(dir) = std::env::var_os(ENV).map(PathBuf::from) else {
        return;
    };
    let a = open_ml_kem(&dir);
    let started = Instant::now();
    let stats = a
        .rewrap_blocking_with(CHUNK, |s| {
            println!("committed {}", s.chunks);
            if started.elapsed() > Duration::from_secs(60) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    println!("done {}", stats.done);
}

#[test]
fn killed_rewrap_leaves_every_record_readable() {
    if std::env::var_os(ENV).is_some() {
        return; // inside the child
    }
    let dir = tempfile::tempdir().unwrap();
    // Records written under NTRU (the default ring).
    let mut ids = Vec::new();
    {
        let a = RedbArchive::open_in_dir(dir.path()).unwrap();
        assert_eq!(a.keys().current_kem(), Kem::default());
        for start in (0..RECORDS).step_by(60) {
            let batch: Vec<_> = (start..(start + 60).min(RECORDS))
                .map(|n| {
                    let who = if n % 2 == 0 { alice() } else { bob() };
                    entry(tx(who, n, n, &[n as u8; 200]), n, &[])
                })
                .collect();
            ids.extend(batch.iter().map(|e| e.id()));
            a.put_batch_blocking(batch).unwrap();
        }
    }
    // The operator switches the archive to ML-KEM-1024: the ring gets the new key, saved.
    let ml_key = open_ml_kem(dir.path()).keys().current_key_id();

    let mut moved_before = 0;
    for round in 0..ROUNDS {
        // Records are visited in key order, so the moved ones are a prefix: the child first
        // walks past them (chunks that change nothing), then moves more.
        let skip = moved_before / CHUNK as u64;
        kill_rewrap_mid_chunk(dir.path(), round, skip + CHUNKS_BEFORE_KILL);
        let a = open_ml_kem(dir.path());
        assert_eq!(a.keys().current_key_id(), ml_key, "no new key per open");
        let usage = a.key_usage_blocking().unwrap();
        let moved = usage
            .iter()
            .find(|(k, _)| *k == ml_key)
            .map_or(0, |(_, n)| *n);
        let total: u64 = usage.iter().map(|(_, n)| n).sum();
        assert_eq!(total, RECORDS, "round {round}: records lost or added");
        assert!(
            moved > moved_before && moved < RECORDS,
            "round {round}: the kill should land mid-rewrap: {moved} of {RECORDS} moved"
        );
        moved_before = moved;
        assert_eq!(a.index_counts_blocking().unwrap(), (RECORDS, RECORDS));
        // Readable: unwrapped, decrypted, and the id checked against the one asked for.
        for id in &ids {
            assert_eq!(a.get_blocking(*id).unwrap().expect("present").id(), *id);
        }
    }
    // A last run to completion.
    let a = open_ml_kem(dir.path());
    let stats = a.rewrap_blocking(64).unwrap();
    assert!(stats.done);
    assert_eq!(stats.already_current, moved_before);
    assert_eq!(a.key_usage_blocking().unwrap(), vec![(ml_key, RECORDS)]);
    for id in &ids {
        a.get_blocking(*id)
            .unwrap()
            .expect("present")
            .signed
            .verify(&MlDsa87)
            .unwrap();
    }
}

/// Runs the child until it has committed `chunks` chunks, waits the round's fraction of a
/// chunk's duration and SIGKILLs it.
fn kill_rewrap_mid_chunk(dir: &Path, round: u32, chunks: u64) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "rewrap::child_rewrapper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = Reaper(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut last: Option<Instant> = None;
    let mut chunk_time = Duration::ZERO;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        assert!(!line.starts_with("done"), "rewrap finished before the kill");
        if let Some(n) = line.strip_prefix("committed ") {
            // Between two commits: one chunk (the child's start-up is not counted).
            if let Some(t) = last {
                chunk_time = chunk_time.max(t.elapsed());
            }
            last = Some(Instant::now());
            if n.trim().parse::<u64>().unwrap() >= chunks {
                std::thread::sleep(chunk_time * (round + 1) / (ROUNDS + 1));
                child.0.kill().unwrap();
                break;
            }
        }
    }
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "child ended by itself: {status:?}");
}

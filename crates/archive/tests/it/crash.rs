//! A writer process killed (SIGKILL) in the middle of its batches: on reopen every record
//! decodes and verifies, the indexes agree with the records, and only whole batches exist.
//!
//! The child is this test binary re-run with `CITYCHAIN_ARCHIVE_CRASH_DIR` set, executing
//! only [`child_writer`]; without the variable that test returns at once.

use crate::common::{alice, entry, tx};
use archive::RedbArchive;
use pqc::MlDsa87;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ENV: &str = "CITYCHAIN_ARCHIVE_CRASH_DIR";
const BATCH: usize = 16;
/// Kill rounds; round r kills at (r + 1) / (ROUNDS + 1) of a batch's measured duration after
/// the child announced the batch, so the kills land at different points of sealing, writing
/// and committing. (Timing only aims the kill; no assertion depends on it.)
const ROUNDS: u32 = 4;
const BATCHES_BEFORE_KILL: u64 = 3;

/// Kills and reaps the child even when the test fails.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's body: writes batches of signed txs until killed (or 60 s pass, so it never
/// outlives a parent that died).
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(ENV).map(PathBuf::from) else {
        return;
    };
    let a = RedbArchive::open_in_dir(&dir).unwrap();
    let started = Instant::now();
    // Continue after the records of earlier rounds (all of them are this writer's).
    let mut nonce = a.count_blocking().unwrap();
    for batch in 0u64.. {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        let entries = (0..BATCH)
            .map(|_| {
                nonce += 1;
                entry(tx(alice(), nonce, nonce, &[nonce as u8; 300]), nonce, &[])
            })
            .collect();
        println!("begin {batch}");
        let out = a.put_batch_blocking(entries).unwrap();
        assert!(out.iter().all(|o| o.is_ok()));
        println!("committed {batch}");
    }
}

#[test]
fn killed_writer_leaves_no_partial_record() {
    if std::env::var_os(ENV).is_some() {
        return; // inside the child
    }
    let dir = tempfile::tempdir().unwrap();
    // Create the key ring first so the child loads it instead of racing to create it.
    drop(RedbArchive::open_in_dir(dir.path()).unwrap());
    let mut committed_total = 0u64;
    for round in 0..ROUNDS {
        let last = kill_writer_mid_batch(dir.path(), round);
        committed_total += (last + 1) * BATCH as u64;
        let a = RedbArchive::open_in_dir(dir.path()).unwrap();
        let ids = a.ids_blocking().unwrap();
        let n = ids.len() as u64;
        assert_eq!(
            n % BATCH as u64,
            0,
            "round {round}: {n} records, a partial batch survived"
        );
        assert!(
            n >= committed_total,
            "round {round}: committed batches lost: {n} records"
        );
        committed_total = n;
        assert_eq!(
            a.index_counts_blocking().unwrap(),
            (n, n),
            "indexes disagree"
        );
        for id in ids {
            let rec = a.get_blocking(id).unwrap().expect("listed record present");
            assert_eq!(rec.id(), id);
            rec.signed.verify(&MlDsa87).unwrap();
        }
    }
    // And it keeps working.
    let a = RedbArchive::open_in_dir(dir.path()).unwrap();
    let more = tx(alice(), 1_000_000, 1, b"after crash");
    a.put_batch_blocking(vec![entry(more.clone(), 1, &[])])
        .unwrap();
    assert!(a.get_blocking(more.id()).unwrap().is_some());
}

/// Runs the writer until it starts batch `BATCHES_BEFORE_KILL`, waits the round's fraction
/// of a batch's duration, SIGKILLs it and returns the number of the last batch it reported
/// committed.
fn kill_writer_mid_batch(dir: &std::path::Path, round: u32) -> u64 {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash::child_writer",
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
    let mut last = None;
    let mut began = Instant::now();
    let mut batch_time = Duration::ZERO;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("committed ") {
            last = Some(n.trim().parse::<u64>().unwrap());
            batch_time = batch_time.max(began.elapsed());
        } else if let Some(n) = line.strip_prefix("begin ") {
            began = Instant::now();
            if n.trim().parse::<u64>().unwrap() >= BATCHES_BEFORE_KILL {
                // The child is inside put_batch: kill it somewhere in the write.
                std::thread::sleep(batch_time * (round + 1) / (ROUNDS + 1));
                child.0.kill().unwrap();
                break;
            }
        }
    }
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "child ended by itself: {status:?}");
    last.expect("child committed batches")
}

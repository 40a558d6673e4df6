//! A saturating writer for 20 s against a directory replica, three runs with different seeds:
//! every run restores exactly, replication catches up after the writer stops, the WAL stays
//! bounded (sampled) while walship checkpoints behind the writer, and the whole run is one
//! generation (walship never lost its hold on the WAL: a restore from any moment of the run
//! replays one unbroken chain, not a string of fresh snapshots).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use walship_integration::*;

const MAX_PAGES: u64 = 10_000;

fn run(seed: u64) {
    let s = FileSetup::new(&format!("    max-checkpoint-page-count: {MAX_PAGES}\n"), "");
    let (d, db, replica, url) = (&s.dir, &s.db, &s.replica, &s.url);
    let mut p = s.replicate();
    let stop = Arc::new(AtomicBool::new(false));
    let max_wal = Arc::new(AtomicU64::new(0));
    let max_at = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let t0 = Instant::now();
    let sampler = {
        let (stop, max_wal, max_at) = (stop.clone(), max_wal.clone(), max_at.clone());
        let wal = d.path().join("app.db-wal");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                if max_wal.fetch_max(len, Ordering::Relaxed) < len {
                    *max_at.lock().unwrap() = t0.elapsed();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut w = Writer::new(db, seed);
    w.conn.execute_batch("PRAGMA synchronous = NORMAL").unwrap();
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(20) {
        w.tx_small();
    }
    let txs = w.txs;
    let want = digest(db);
    // Timed on the replica's files themselves (its newest index equals the WAL up to the last
    // commit), not on a restore of the whole database, which took longer than the catch-up.
    let caught = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "replica to hold the whole WAL",
        || replica_holds_wal(replica, db),
    );
    let catch_up = caught.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    let page_bytes = 4096 + 24;
    let max_pages = max_wal.load(Ordering::Relaxed) / page_bytes;
    eprintln!("seed {seed}: {txs} tx in 20 s ({:.0} tx/s), max WAL {max_pages} pages, caught up in {catch_up:?}", txs as f64 / 20.0);
    // 2.5 x max-checkpoint-page-count, as the README promises "near" it. With the backfill at
    // the RESTART threshold done under the write lock (the writer waits instead of growing the
    // WAL) the peaks were 13,037-16,210 pages, also while a `dd` of 3 GB kept the disk's
    // writeback busy; without it, 15,184-19,954 on an idle disk and 29,063-46,824 under that
    // writeback (one slow unlocked backfill round of 976 ms). The pacing bug this also catches
    // (the monitor paced by the `-wal` file's length, blind to restarts) reached 30,000-68,000.
    assert!(
        max_pages * 2 <= 5 * MAX_PAGES,
        "seed {seed}: WAL reached {max_pages} pages (> 2.5 x max-checkpoint-page-count {MAX_PAGES}) at {:?} into the run",
        max_at.lock().unwrap()
    );
    assert!(
        catch_up <= Duration::from_secs(2),
        "seed {seed}: the replica caught up {catch_up:?} after the writer stopped (> 2 s)"
    );
    let out = d.path().join("out.db");
    let gens = generations(replica);
    assert_eq!(
        gens.len(),
        1,
        "seed {seed}: the run split into generations {gens:?}:\n{}",
        p.log_text()
    );
    let segments = block_on(oracle::assert_no_wal_gap(&oracle::file_replica(replica)));
    eprintln!("seed {seed}: no WAL gap over {segments} segments");
    restore_walship(&[url], &out);
    assert_eq!(integrity(&out), "ok", "seed {seed}");
    assert_eq!(digest(&out), want, "seed {seed}");
    let log = p.log_text();
    assert!(!log.contains("ERROR"), "seed {seed}: {log}");
}

#[test]
fn saturating_writer_three_seeds() {
    for seed in [1, 2, 3] {
        run(seed);
    }
}

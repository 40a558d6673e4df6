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
    let sampler = {
        let (stop, max_wal) = (stop.clone(), max_wal.clone());
        let wal = d.path().join("app.db-wal");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                max_wal.fetch_max(len, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut w = Writer::new(db, seed);
    w.conn.execute_batch("PRAGMA synchronous = NORMAL").unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        w.tx_small();
    }
    let txs = w.txs;
    let want = digest(db);
    let caught = Instant::now();
    wait_caught_up(
        url,
        db,
        &d.path().join("scratch.db"),
        Duration::from_secs(60),
    );
    let catch_up = caught.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    let page_bytes = 4096 + 24;
    let max_pages = max_wal.load(Ordering::Relaxed) / page_bytes;
    eprintln!("seed {seed}: {txs} tx in 20 s ({:.0} tx/s), max WAL {max_pages} pages, caught up in {catch_up:?}", txs as f64 / 20.0);
    assert!(
        max_pages <= 10 * MAX_PAGES,
        "WAL reached {max_pages} pages (> 10 x {MAX_PAGES})"
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

//! Regression: the monitor noticed a busy writer by the `-wal` file's length, which does not grow
//! after SQLite restarts the WAL (it writes from the start of the same file again). A burst into a
//! restarted WAL then waited out the whole monitor-interval, and under a saturating writer the WAL
//! reached 30-100k pages. With a 10 s monitor-interval the lag after such a burst was ~8 s; now the
//! monitor sees the frames in SQLite's WAL index and syncs within a poll (100 ms).

use std::time::{Duration, Instant};
use walship_integration::*;

/// Commits `n` transactions that each add one ~3 KiB row (a new leaf page, its parent and the
/// first page: about three WAL frames each).
fn burst(conn: &rusqlite::Connection, n: usize) {
    for _ in 0..n {
        conn.execute("INSERT INTO t (k, v) VALUES (1, randomblob(3000))", [])
            .unwrap();
    }
}

fn wal_pages(db: &std::path::Path) -> u64 {
    let wal = db.with_file_name("app.db-wal");
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0) / (4096 + 24)
}

#[test]
fn burst_into_a_restarted_wal_is_synced_before_the_monitor_interval() {
    // Debug lines (syncs' checkpoints) make a failure here readable.
    let s = FileSetup::new(
        "    monitor-interval: 10s\n    max-checkpoint-page-count: 2000\n",
        "logging:\n  level: debug\n",
    );
    let (db, url) = (&s.db, &s.url);
    let conn = app_conn(db);
    let mut p = s.replicate();
    // One transaction of ~3000 pages: a WAL file that big, which walship copies and checkpoints;
    // the next commit restarts the WAL inside the same file.
    conn.execute_batch(
        "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO t (k, v) SELECT i, randomblob(3000) FROM n; COMMIT;",
    )
    .unwrap();
    let scratch = s.dir.path().join("scratch.db");
    wait_caught_up(url, db, &scratch, Duration::from_secs(30));
    let big = wal_pages(db);
    assert!(big >= 2500, "WAL file only {big} pages");
    // Let the monitor's one-second memory of the busy burst run out, so it is back to coalescing.
    std::thread::sleep(Duration::from_millis(1500));
    // ~1800 frames (7 MB, over the 4 MiB that ends the coalescing wait) into the restarted WAL:
    // the file does not grow.
    // Timed from the first commit: from the burst's end, a disk with slow fsync
    // makes the burst outlast the 10 s the bug waits, and the test would pass with the bug.
    let t = Instant::now();
    burst(&conn, 600);
    let burst_took = t.elapsed();
    assert!(
        wal_pages(db) <= big,
        "the WAL did not restart (file grew from {big} to {} pages); the test needs a restart:\n{}",
        wal_pages(db),
        p.log_text()
    );
    assert!(
        burst_took < Duration::from_secs(3),
        "the burst took {burst_took:?}: too slow a disk for this test to tell the 10 s wait apart"
    );
    wait_caught_up(url, db, &scratch, Duration::from_secs(15));
    let lag = t.elapsed();
    eprintln!(
        "caught up {lag:?} after the first commit of a burst ({burst_took:?}) into a restarted WAL of {big} pages"
    );
    assert!(
        lag < Duration::from_secs(5),
        "replica caught up only {lag:?} after the burst began (monitor-interval is 10 s):\n{}",
        p.log_text()
    );
    assert_eq!(p.stop(), 0, "{}", p.log_text());
}

/// Regression (failed in CI under load): the early sync that records a WAL restart at once also
/// opened a new coalescing window, so a burst it cut in two was judged by its second half alone;
/// a half under 4 MiB then waited out the whole monitor-interval (10 s here). Two commits of
/// ~2.5 MB each make the cut deterministic: the first restarts the WAL and is synced at once, the
/// second alone is under the threshold but the new WAL as a whole is over it.
#[test]
fn a_burst_cut_by_the_restart_sync_counts_whole() {
    let s = FileSetup::new(
        "    monitor-interval: 10s\n    max-checkpoint-page-count: 2000\n",
        "logging:\n  level: debug\n",
    );
    let (db, url) = (&s.db, &s.url);
    let conn = app_conn(db);
    let mut p = s.replicate();
    let big = |from: usize| {
        conn.execute_batch(&format!(
            "BEGIN; WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n
             WHERE i < {from} + 599) INSERT INTO t (k, v) SELECT i, randomblob(3000) FROM n;
             COMMIT;"
        ))
        .unwrap();
    };
    // A WAL of ~3000 pages, which walship copies and checkpoints (RESTART, complete).
    conn.execute_batch(
        "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO t (k, v) SELECT i, randomblob(3000) FROM n; COMMIT;",
    )
    .unwrap();
    let scratch = s.dir.path().join("scratch.db");
    wait_caught_up(url, db, &scratch, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    let before = wal_header(db);
    let t = Instant::now();
    big(10_000);
    assert_ne!(
        wal_header(db),
        before,
        "the first commit did not restart the WAL"
    );
    wait_caught_up(url, db, &scratch, Duration::from_secs(15));
    let first = t.elapsed();
    let t = Instant::now();
    big(20_000);
    wait_caught_up(url, db, &scratch, Duration::from_secs(15));
    let second = t.elapsed();
    eprintln!("restart synced after {first:?}, the rest of the burst after {second:?}");
    assert!(
        first < Duration::from_secs(4) && second < Duration::from_secs(4),
        "caught up after {first:?} and {second:?} (monitor-interval is 10 s):\n{}",
        p.log_text()
    );
    assert_eq!(p.stop(), 0, "{}", p.log_text());
}

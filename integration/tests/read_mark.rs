//! The SQLite locks walship holds while it replicates, seen from outside through `/proc/locks`:
//! they decide how much an application's commits pay for being replicated.
//!
//! The regression pinned here cost a saturating writer half its rate and is not visible in a
//! restore: after walship's complete checkpoint its long read transaction sat on read-mark 0
//! (reading the database file) until the next checkpoint, and every application commit past 1000
//! WAL frames then sorted the whole WAL index for a checkpoint that could not run.

use rusqlite::Connection;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};
use walship_integration::*;

/// The unix VFS's shm lock bytes: 120 + slot; 3 + i is read-mark i (i < 5), 128 is the dead-man
/// switch every connection holds.
const READ_MARK_0: u64 = 123;
const READ_MARKS: u64 = 5;

/// (kind, mode, pid, start) of every lock on `ino`, from `/proc/locks`.
fn locks_on(ino: u64) -> Vec<(String, String, i64, u64)> {
    let text = std::fs::read_to_string("/proc/locks").unwrap();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "1: POSIX  ADVISORY  READ 1234 fd:01:5678 123 123"; waiters ("->") are not holders.
            if f.len() < 8 || f[1] == "->" {
                return None;
            }
            let i: u64 = f[5].rsplit(':').next()?.parse().ok()?;
            (i == ino).then(|| {
                (
                    f[1].to_string(),
                    f[3].to_string(),
                    f[4].parse().unwrap_or(0),
                    f[6].parse().unwrap_or(0),
                )
            })
        })
        .collect()
}

/// The read-mark slots walship's process holds shared locks on.
fn read_marks_of(pid: i32, shm_ino: u64) -> Vec<u64> {
    locks_on(shm_ino)
        .into_iter()
        .filter(|(kind, mode, p, start)| {
            kind == "POSIX"
                && mode == "READ"
                && *p == i64::from(pid)
                && (READ_MARK_0..READ_MARK_0 + READ_MARKS).contains(start)
        })
        .map(|l| l.3 - READ_MARK_0)
        .collect()
}

fn passive(c: &Connection) -> (i64, i64, i64) {
    c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .unwrap()
}

fn shm_ino(db: &Path) -> u64 {
    let mut p = db.as_os_str().to_owned();
    p.push("-shm");
    std::fs::metadata(p).unwrap().ino()
}

#[test]
fn read_transaction_moves_onto_the_restarted_wal() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let mut w = Writer::new(&db, 31);
    w.conn.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    for _ in 0..10 {
        w.tx_small();
    }
    let replica = d.path().join("replica");
    let cfg = write_config(
        d.path(),
        &db,
        &replica,
        "    monitor-interval: 200ms\n    min-checkpoint-page-count: 50\n",
        "",
    );
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &d.path().join("replicate.log"),
    );
    let pid = p.pid();
    let ino = shm_ino(&db);

    // Enough frames for walship's checkpoint; it completes (nothing else reads) and leaves its
    // read transaction on the database file until the WAL restarts. Settled means that for a
    // whole second (5 monitor intervals): a restart by one of the commits above, after an earlier
    // checkpoint, moves it to the WAL until the checkpoint after that.
    // When the last commits of a batch restart the WAL, too few frames follow for another
    // checkpoint and walship stays on the WAL (the fixed behaviour): write another batch.
    let settled = (0..10).any(|_| {
        for _ in 0..200 {
            w.tx_small();
        }
        let t0 = Instant::now();
        let mut since: Option<Instant> = None;
        while t0.elapsed() < Duration::from_secs(4) {
            if read_marks_of(pid, ino) == vec![0] {
                if since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1) {
                    return true;
                }
            } else {
                since = None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    assert!(
        settled,
        "no complete checkpoint by walship: {:?}",
        locks_on(ino)
    );
    let before = wal_header(&db);

    // The application's next commit restarts the WAL; walship's next sync moves onto it. Before
    // the fix it stayed on read-mark 0 until its next checkpoint (here: never, one commit is far
    // below min-checkpoint-page-count and checkpoint-interval is a minute).
    w.tx_small();
    assert_ne!(
        wal_header(&db),
        before,
        "the WAL did not restart; locks {:?}; log {}",
        locks_on(ino),
        p.log_text()
    );
    wait_until(
        Duration::from_secs(10),
        "walship's read transaction on a WAL read-mark",
        || {
            let m = read_marks_of(pid, ino);
            m.len() == 1 && m[0] >= 1
        },
    );

    // walship still replicates everything; once it stops, the application's checkpoint runs.
    let scratch = d.path().join("check.db");
    wait_caught_up(&file_url(&replica), &db, &scratch, Duration::from_secs(30));
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    let (busy, log, done) = passive(&w.conn);
    assert_eq!((busy, log), (0, done), "checkpoint after walship stopped");
}

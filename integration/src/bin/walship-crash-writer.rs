//! The application of the crash campaign (`tests/crash.rs`): a process of its own, so the test
//! can kill it like a crashing application.
//!
//! `walship-crash-writer DB SEED LOG [RATE] [VACUUM_AT]` commits transaction after transaction
//! (`walship_integration::crash::apply`) at RATE per second (default 400) on one connection with
//! SQLite's default autocheckpoint, runs `PRAGMA wal_checkpoint(MODE)` every 2-5 s in a random
//! mode, and VACUUMs once at its first transaction from VACUUM_AT on. It appends one line per event to
//! LOG with a single write(2), so a SIGKILL loses at most the last transaction's line.

use rand::{Rng, SeedableRng};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use walship_integration::crash;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: walship-crash-writer DB SEED LOG [RATE] [VACUUM_AT]");
        std::process::exit(2);
    }
    let db = &args[1];
    let seed: u64 = args[2].parse().expect("SEED");
    let rate: f64 = args.get(4).map_or(400.0, |r| r.parse().expect("RATE"));
    let vacuum_at: u64 = args
        .get(5)
        .map_or(u64::MAX, |v| v.parse().expect("VACUUM_AT"));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args[3])
        .expect("open LOG");
    let mut line = |s: String| log.write_all(s.as_bytes()).expect("write LOG");

    let mut c = rusqlite::Connection::open(db).expect("open DB");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let mode: String = c
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    c.execute_batch("PRAGMA synchronous = NORMAL")
        .expect("synchronous");
    crash::schema(&c).expect("schema");
    let mut k = crash::progress(&c).expect("progress");
    line(format!("start {k}\n"));

    // Checkpoint timing and modes need not be reproducible; the transactions are.
    let mut rng = rand::rngs::StdRng::seed_from_u64(now_ns() as u64 ^ std::process::id() as u64);
    let modes = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"];
    let mut next_ckpt = Instant::now() + Duration::from_millis(rng.random_range(2000..5000));
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut began = Instant::now();
    let mut n: u32 = 0;
    let mut vacuumed = false;
    loop {
        k += 1;
        let start = now_ns();
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("begin");
        crash::apply(&tx, seed, k).expect("apply");
        tx.commit().expect("commit");
        line(format!("tx {k} {start} {}\n", now_ns()));
        // At the first transaction from VACUUM_AT on, once: a writer killed during the VACUUM (it
        // rolls back) is followed by one that starts past VACUUM_AT and must still run it.
        if k >= vacuum_at && !vacuumed {
            c.execute_batch("VACUUM").expect("vacuum");
            vacuumed = true;
            line(format!("vacuum {k}\n"));
        }
        if Instant::now() >= next_ckpt {
            let m = modes[rng.random_range(0..modes.len())];
            line(format!("ckpt-begin {m} {}\n", now_ns()));
            let r = c.query_row(&format!("PRAGMA wal_checkpoint({m})"), [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
            match r {
                Ok((busy, log_pages, done)) => {
                    line(format!("ckpt {m} {busy} {log_pages} {done}\n"))
                }
                Err(_) => line(format!("ckpt {m} error\n")),
            }
            next_ckpt = Instant::now() + Duration::from_millis(rng.random_range(2000..5000));
        }
        n += 1;
        // Paced against the start, so a stall is followed by a catch-up burst like a real queue
        // (of at most one second's work).
        let due = began + period * n;
        match due.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None if Instant::now() - due > Duration::from_secs(1) => {
                began = Instant::now();
                n = 0;
            }
            None => {}
        }
    }
}

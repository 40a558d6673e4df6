//! The crash campaign's workload and its oracle (`tests/crash.rs`, writer process
//! `walship-crash-writer`).
//!
//! Transaction `k` of seed `s` is a pure function of `(s, k)`: which rows it inserts (rowids
//! `4k..4k+3`, so an `INTEGER PRIMARY KEY` never depends on what SQLite picked before), which it
//! updates and deletes, and every byte it writes. The writer stores `k` in `progress` inside the
//! same transaction, so a restored database says by itself which transaction it ends with, and
//! [`Replay`] rebuilds the exact state after any `k` to compare with, row by row.

use rand::{Rng, SeedableRng};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::Path;

/// Rows older than this many transactions are deleted, so the database stays at a steady size
/// (about 10-20 MB) however long the campaign runs.
pub const WINDOW: u64 = 2000;

/// Creates the campaign's tables (idempotent).
pub fn schema(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS progress (id INTEGER PRIMARY KEY CHECK (id = 1), k INTEGER NOT NULL);",
    )
}

/// The last committed transaction number (0 before the first).
pub fn progress(c: &Connection) -> rusqlite::Result<u64> {
    match c.query_row("SELECT k FROM progress WHERE id = 1", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(k) => Ok(k as u64),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(0),
        Err(e) => Err(e),
    }
}

/// A row size: log-uniform between 10 B and 20 KiB, and 200 KiB (overflow chains of ~50 pages)
/// in one transaction of 200.
fn row_len(rng: &mut impl Rng) -> usize {
    if rng.random_range(0..200) == 0 {
        return 200 * 1024;
    }
    let lo = (10f64).ln();
    let hi = (20.0 * 1024.0f64).ln();
    rng.random_range(lo..hi).exp() as usize
}

fn bytes(rng: &mut impl Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// Applies transaction `k` inside the caller's transaction (the writer's `BEGIN IMMEDIATE`, or
/// the replay's).
pub fn apply(c: &Connection, seed: u64, k: u64) -> rusqlite::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k);
    let inserts = rng.random_range(1..=2u64);
    for j in 0..inserts {
        let len = row_len(&mut rng);
        let v = bytes(&mut rng, len);
        c.execute(
            "INSERT INTO t (id, v) VALUES (?1, ?2)",
            rusqlite::params![(4 * k + j) as i64, v],
        )?;
    }
    let live_from = 4 * k.saturating_sub(WINDOW).max(1);
    if rng.random_range(0..10) < 3 {
        let id = rng.random_range(live_from..4 * k + 1);
        let len = rng.random_range(10..2000);
        let v = bytes(&mut rng, len);
        c.execute(
            "UPDATE t SET v = ?2 WHERE id = ?1",
            rusqlite::params![id as i64, v],
        )?;
    }
    if rng.random_range(0..10) == 0 {
        let id = rng.random_range(live_from..4 * k + 1);
        c.execute("DELETE FROM t WHERE id = ?1", [id as i64])?;
    }
    if k > WINDOW {
        let old = 4 * (k - WINDOW);
        c.execute(
            "DELETE FROM t WHERE id >= ?1 AND id < ?2",
            [old as i64, (old + 4) as i64],
        )?;
    }
    c.execute(
        "INSERT INTO progress (id, k) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET k = excluded.k",
        [k as i64],
    )?;
    Ok(())
}

/// Rebuilds the state after transaction `k` for any increasing sequence of `k`s.
pub struct Replay {
    conn: Connection,
    seed: u64,
    k: u64,
}

impl Replay {
    /// A scratch database at `path` (no durability needed: it is rebuilt each run).
    pub fn new(path: &Path, seed: u64) -> Replay {
        let _ = std::fs::remove_file(path);
        let conn = Connection::open(path).expect("open replay database");
        conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
            .expect("replay pragmas");
        schema(&conn).expect("replay schema");
        Replay { conn, seed, k: 0 }
    }

    /// Applies transactions up to and including `k` (which must not be behind).
    pub fn advance_to(&mut self, k: u64) {
        assert!(k >= self.k, "replay cannot go back from {} to {k}", self.k);
        while self.k < k {
            let tx = self.conn.transaction().expect("replay begin");
            let n = (self.k + 1..=k).take(500).count() as u64;
            for kk in self.k + 1..=self.k + n {
                apply(&tx, self.seed, kk).expect("replay apply");
            }
            tx.commit().expect("replay commit");
            self.k += n;
        }
    }

    pub fn digest(&self) -> String {
        crate::digest_conn(&self.conn)
    }
}

/// What the writer processes logged: each transaction's wall-clock times around its commit
/// (nanoseconds since the Unix epoch), and the application checkpoints they ran.
#[derive(Default, Debug)]
pub struct WriterLog {
    /// k -> (time before BEGIN, time after COMMIT returned).
    pub txs: BTreeMap<u64, (u128, u128)>,
    /// mode -> (attempts, completed: not busy and every frame checkpointed).
    pub checkpoints: BTreeMap<String, (u64, u64)>,
    pub vacuums: u64,
    pub starts: u64,
}

impl WriterLog {
    /// Reads every `writer-*.log` line (`tx K START END`, `ckpt MODE BUSY LOG CKPT`,
    /// `vacuum K`, `start K0`); a line cut by SIGKILL is ignored.
    pub fn read(paths: &[std::path::PathBuf]) -> WriterLog {
        let mut w = WriterLog::default();
        for p in paths {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            // A line is only whole with its newline (one write(2) each, but be strict).
            for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                let f: Vec<&str> = line.split_whitespace().collect();
                match f.as_slice() {
                    ["tx", k, s, e] => {
                        if let (Ok(k), Ok(s), Ok(e)) = (k.parse(), s.parse(), e.parse()) {
                            w.txs.insert(k, (s, e));
                        }
                    }
                    ["ckpt", mode, busy, log, done] => {
                        let c = w.checkpoints.entry(mode.to_string()).or_default();
                        c.0 += 1;
                        if *busy == "0" && log == done {
                            c.1 += 1;
                        }
                    }
                    ["ckpt", mode, "error"] => {
                        w.checkpoints.entry(mode.to_string()).or_default().0 += 1;
                    }
                    ["vacuum", _] => w.vacuums += 1,
                    ["start", _] => w.starts += 1,
                    _ => {}
                }
            }
        }
        w
    }

    /// The earliest moment transaction `k` may have become visible: its start when logged, else
    /// (killed between commit and log line) the end of `k - 1`.
    pub fn earliest_commit(&self, k: u64) -> Option<u128> {
        self.txs
            .get(&k)
            .map(|t| t.0)
            .or_else(|| self.txs.get(&(k - 1)).map(|t| t.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_are_deterministic_and_window_bounded() {
        let d = tempfile::tempdir().unwrap();
        let mut a = Replay::new(&d.path().join("a.db"), 7);
        let mut b = Replay::new(&d.path().join("b.db"), 7);
        a.advance_to(300);
        b.advance_to(120);
        b.advance_to(300);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(progress(&a.conn).unwrap(), 300);
        let mut c = Replay::new(&d.path().join("c.db"), 8);
        c.advance_to(300);
        assert_ne!(a.digest(), c.digest(), "the seed matters");
        a.advance_to(WINDOW + 500);
        let min: i64 = a
            .conn
            .query_row("SELECT min(id) FROM t", [], |r| r.get(0))
            .unwrap();
        assert!(min >= 4 * 500, "rows older than the window are gone: {min}");
    }

    #[test]
    fn writer_log_parses_and_tolerates_a_cut_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("writer-0.log");
        std::fs::write(
            &p,
            "start 0\ntx 1 10 20\ntx 2 30 40\nckpt TRUNCATE 0 5 5\nckpt FULL 1 5 3\nckpt RESTART error\ntx 4 70 8",
        )
        .unwrap();
        let w = WriterLog::read(&[p]);
        assert_eq!(w.txs.len(), 2, "the unterminated last line is ignored");
        assert_eq!(w.earliest_commit(2), Some(30));
        assert_eq!(w.earliest_commit(3), Some(40), "missing line: end of k-1");
        assert_eq!(w.checkpoints["TRUNCATE"], (1, 1));
        assert_eq!(w.checkpoints["FULL"], (1, 0));
        assert_eq!(w.checkpoints["RESTART"], (1, 0));
    }
}

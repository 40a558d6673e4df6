//! Holds SQLite's checkpoint lock while walship is not checkpointing itself.
//!
//! Why: walship's long read transaction keeps every application checkpoint from finishing (it
//! must, or the WAL could restart before walship copied it). But SQLite does not know that, and an
//! application connection with the default `wal_autocheckpoint` tries a PASSIVE checkpoint after
//! *every* commit once the WAL is past 1000 frames: a checkpoint-lock round trip plus a probe of
//! each reader slot, 3 to 5 `fcntl` calls per commit. Under a saturating writer that was 17 % of
//! its time. With the checkpoint lock already taken, SQLite gives up at the first `fcntl`
//! (`SQLITE_BUSY`, no busy handler: "If any other process is running a checkpoint operation at
//! the same time, the lock cannot be obtained and SQLITE_BUSY is returned").
//!
//! Nothing is lost by it: walship backfills the WAL itself (see `Db::checkpoint`), releasing the
//! lock for exactly that. An application that checkpoints by hand gets `busy = 1`, as it would
//! from walship's read transaction anyway. When walship stops, the lock goes with its descriptor.
//!
//! The lock is an open-file-description lock (`F_OFD_SETLK`) on byte 121 of the `-shm` file, the
//! byte SQLite's unix VFS uses for `WAL_CKPT_LOCK` (lock area at 120, checkpoint lock is slot 1).
//! OFD locks conflict with the classic POSIX locks SQLite takes, also those of walship's own
//! connections, which is why walship releases it around its own checkpoints.
//!
//! The descriptor must stay open as long as this process has SQLite connections on the database:
//! closing any descriptor of a file drops every classic POSIX lock the process holds on it,
//! including SQLite's own read and recovery locks. The owner keeps it alongside its connections
//! and drops it after them.

use std::fs::File;
use std::path::Path;

/// SQLite unix VFS: first shm lock byte (`UNIX_SHM_BASE`) plus `WAL_CKPT_LOCK`.
const CKPT_BYTE: i64 = 120 + 1;

pub struct CheckpointLock {
    file: File,
    held: bool,
}

impl CheckpointLock {
    /// Opens the `-shm` file of a database that walship has connections on. None when it cannot
    /// be opened (walship then works without the lock, just slower for a busy application).
    pub fn open(db: &Path) -> Option<CheckpointLock> {
        let mut p = db.as_os_str().to_owned();
        p.push("-shm");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .ok()?;
        Some(CheckpointLock { file, held: false })
    }

    /// Takes the lock if nobody holds it; a checkpoint in progress elsewhere keeps it free.
    pub fn hold(&mut self) -> bool {
        if !self.held {
            self.held = self.set(true);
        }
        self.held
    }

    /// Returns whether it was held.
    pub fn release(&mut self) -> bool {
        let was = self.held;
        if was {
            self.set(false);
            self.held = false;
        }
        was
    }

    #[cfg(target_os = "linux")]
    fn set(&self, lock: bool) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: zeroed is a valid `flock`; every field the call reads is set below.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = if lock { libc::F_WRLCK } else { libc::F_UNLCK } as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = CKPT_BYTE;
        fl.l_len = 1;
        // SAFETY: valid descriptor and a pointer to an initialised `flock`.
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) == 0 }
    }

    #[cfg(not(target_os = "linux"))]
    fn set(&self, _lock: bool) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn app(p: &Path) -> Connection {
        let c = Connection::open(p).unwrap();
        let _: String = c
            .query_row("PRAGMA journal_mode=wal", [], |r| r.get(0))
            .unwrap();
        c.execute_batch("CREATE TABLE IF NOT EXISTS t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        c
    }

    /// (busy, log, checkpointed) of `PRAGMA wal_checkpoint(PASSIVE)`.
    fn passive(c: &Connection) -> (i64, i64, i64) {
        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
    }

    #[test]
    fn an_application_checkpoint_is_refused_while_held_and_runs_after_release() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        let c = app(&p);
        let mut l = CheckpointLock::open(&p).expect("shm exists");
        assert!(l.hold());
        c.execute_batch("INSERT INTO t VALUES (2)").unwrap();
        assert_eq!(
            passive(&c).0,
            1,
            "checkpoint must be busy while the lock is held"
        );
        // Writes and reads are not affected.
        c.execute_batch("INSERT INTO t VALUES (3)").unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
        l.release();
        let (busy, log, done) = passive(&c);
        assert_eq!((busy, log), (0, done));
        assert!(log > 0);
    }

    #[test]
    fn not_taken_while_a_checkpoint_holds_it_elsewhere() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        let _c = app(&p);
        let mut a = CheckpointLock::open(&p).unwrap();
        let mut b = CheckpointLock::open(&p).unwrap();
        assert!(a.hold());
        assert!(!b.hold(), "a second holder must be refused");
        a.release();
        assert!(b.hold());
    }
}

//! Releasing an idle database: walship closes both connections and its descriptors of a database
//! whose WAL it has copied and fully backfilled, keeping only the instance lock, and attaches
//! again at the next change (or when a snapshot needs the file). Thousands of idle databases
//! then cost one descriptor each instead of eight.
//!
//! # Why no frame can be lost unnoticed
//! While released, nothing pins the WAL: the application may restart it, or delete it when its
//! last connection closes. What walship needs to know when it attaches again is whether anything
//! was committed after the frames it copied and then left the WAL. It releases only when
//!
//! 1. every committed frame is in the shadow WAL and the WAL is fully backfilled into the
//!    database file (both checked under SQLite's write lock, so no commit falls in between), and
//! 2. the database file and the WAL were last changed more than [`QUIET`] ago, so any later
//!    write shows as a new change time even with the kernel's coarse file clock.
//!
//! It records each file's identity, length and change time ([`FileMark`]). SQLite restarts a WAL
//! (or deletes it on the last close) only after backfilling every frame of it into the database
//! file. So if frames had been committed after walship's copy, the restart or deletion that
//! dropped them wrote them into the database file first, and changed its change time. A database
//! file exactly as walship left it therefore proves that the new WAL life starts from the state
//! walship copied last: the generation continues in the next index, whatever the new WAL's salts
//! ([`EndMark::proves_end`]). A database file that changed falls back to the start-up rules
//! (one restart, proven from the WAL file itself), and when those cannot tell, a new generation
//! starts with a snapshot. Never a gap.

use super::mark::{EndMark, FileMark};
use super::{Db, Open, HEADER_SIZE};
use crate::error::{ErrorKind, Result};
use crate::sqlite::CheckpointMode;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

/// A file must be unchanged for this long before walship releases on its change time: a write
/// within the same tick of the kernel's coarse file clock (a few ms) would leave it as it was.
/// Two seconds: the coarsest change-time granularity of a Linux filesystem SQLite may run on.
pub(super) const QUIET: Duration = Duration::from_secs(2);

/// What walship left behind when it released a database.
#[derive(Debug, Clone)]
pub(super) struct Released {
    /// The shadow's end and the database file at release: proves the WAL life ended there
    /// ([`EndMark::proves_end`]).
    pub(super) end: EndMark,
    /// None: no WAL file (or one without a header) at release.
    wal: Option<FileMark>,
}

/// What changed since a release, judged from file metadata alone (no SQLite, no descriptors).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Since {
    /// Nothing walship would copy: stay released.
    Quiet,
    /// The WAL or the database changed: attach and look.
    Changed,
    /// Another file is at the database's path: attach it as a new generation.
    Replaced,
}

impl Released {
    /// Called with the database path known to exist.
    pub(super) fn since(&self, db: &Path, wal: &Path) -> Result<Since> {
        let Some(now) = FileMark::of(db)? else {
            return Ok(Since::Changed);
        };
        if !now.same_file(&self.end.db) {
            return Ok(Since::Replaced);
        }
        if now != self.end.db {
            return Ok(Since::Changed);
        }
        // A database file as walship left it with the WAL gone or emptied: the application's
        // last close (or a TRUNCATE) found nothing to backfill, so nothing was committed.
        let wal_now = FileMark::of(wal)?.filter(|m| m.len >= HEADER_SIZE as u64);
        Ok(match wal_now {
            None => Since::Quiet,
            Some(w) if Some(w) == self.wal => Since::Quiet,
            Some(_) => Since::Changed,
        })
    }
}

impl Db {
    /// Closes walship's connections and descriptors of an idle database that is fully copied and
    /// backfilled (module doc); the next sync that sees a change attaches again. False when it is
    /// not the moment (a commit, a reader holding the checkpoint back, a snapshot reading, a
    /// file changed within [`QUIET`]): the caller tries again later.
    pub fn release(&self) -> Result<bool> {
        let mut guard = self.lock_state();
        let st = &mut *guard;
        let Some(open) = st.open.as_mut() else {
            return Ok(false);
        };
        if !backfilled(open) {
            let ck = self.checkpoint(open, &mut st.last_checkpoint, CheckpointMode::Passive)?;
            if !ck.is_some_and(|c| c.complete) {
                return Ok(false);
            }
        }
        // A snapshot reads the database file under R: not now.
        let Ok(_gate) = self.gate.try_write() else {
            return Ok(false);
        };
        match self.begin_immediate(&open.conns.w) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Transient => return Ok(false),
            Err(e) => return Err(e),
        }
        // Under the write lock: no commit, restart or deletion of the WAL until ROLLBACK, so
        // what is marked here is what the application finds when it writes next.
        let marked = (|| -> Result<Option<Released>> {
            // An application's TRUNCATE checkpoint may have emptied the WAL since walship's
            // complete one. Nothing was committed in between: R, reading the database file
            // since then, keeps any checkpoint from backfilling a new frame, and a WAL is only
            // emptied once every frame is backfilled.
            if super::read_wal_header(&self.wal_path)?.is_some() {
                self.wal_unchanged(open)?;
                self.copy_frames(&mut open.shadow, None)?;
            }
            if !backfilled(open) {
                return Ok(None);
            }
            let now = SystemTime::now();
            let Some(db) = FileMark::of(&self.path)? else {
                return Ok(None);
            };
            let wal = FileMark::of(&self.wal_path)?.filter(|m| m.len >= HEADER_SIZE as u64);
            if db.recent(now, QUIET) || wal.is_some_and(|w| w.recent(now, QUIET)) {
                return Ok(None);
            }
            let sh = &open.shadow;
            Ok(Some(Released {
                end: EndMark {
                    generation: sh.generation.clone(),
                    index: sh.index,
                    size: sh.size,
                    header: sh.header.raw,
                    db,
                },
                wal,
            }))
        })();
        let _ = open.conns.w.execute_batch("ROLLBACK");
        let released = match marked {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Transient => return Ok(false),
            Err(e) => return Err(e),
        };
        if let Some(open) = st.open.take() {
            let super::Conns { r, w } = open.conns;
            let _ = r.execute_batch("ROLLBACK");
            drop(r);
            // If the application has no connection open, this is the last one: SQLite removes
            // the fully backfilled WAL (see `sqlite::close_as_application`).
            crate::sqlite::close_as_application(w);
        }
        // Only after the connections: closing these first would drop their POSIX locks.
        *self.shm_file.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.db_file.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.free_slot();
        tracing::debug!(db = %self.path.display(), generation = %released.end.generation, index = released.end.index, size = released.end.size, "released idle database");
        st.released = Some(released);
        self.released.store(true, Ordering::Relaxed);
        Ok(true)
    }

    /// Whether walship holds nothing of the database but its instance lock ([`Db::release`]).
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Relaxed)
    }

    /// Attaches a released database again, whatever changed: a snapshot or drill reads the file
    /// under walship's read transaction. False: no slot of the descriptor budget was free.
    /// Refuses (transient) when the database could not be attached otherwise: nothing would pin
    /// the WAL while the file is read.
    pub(super) fn attach_now(&self) -> Result<bool> {
        let mut st = self.lock_state();
        let mut deferred = false;
        let res = if st.released.is_some() {
            self.sync_locked(&mut st, true).map(|r| {
                deferred = r.deferred;
                if let Some(open) = &st.open {
                    self.publish(open);
                    self.reattached.notify_one();
                }
            })
        } else {
            Ok(())
        };
        if st.open.is_none() {
            self.let_go();
            res?;
            if deferred {
                return Ok(false);
            }
            return Err(crate::Error::transient(format!(
                "{}: not attached (the file is missing or its WAL keeps being emptied); the next attempt tries again",
                self.path.display()
            )));
        }
        res.map(|()| true)
    }

    /// Signalled when [`Db::hold_attached`] attached a released database.
    pub fn reattached(&self) -> &tokio::sync::Notify {
        &self.reattached
    }
}

/// The WAL holds no frame that is not also in the database file, as of walship's last copy.
fn backfilled(open: &Open) -> bool {
    let sh = &open.shadow;
    sh.size <= HEADER_SIZE as u64 || open.checkpointed_at == Some((sh.index, sh.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(ino: u64, len: u64, ctime: i64) -> FileMark {
        FileMark {
            dev: 1,
            ino,
            len,
            ctime: (ctime, 0),
        }
    }

    /// A file put in the database's place while it was released is a new generation, never a
    /// continuation of the old file's WAL.
    #[test]
    fn a_database_replaced_while_released_starts_a_new_generation() {
        let d = tempfile::tempdir().unwrap();
        let (app, db) = super::super::tests::app_and_db(d.path());
        std::thread::sleep(QUIET + Duration::from_millis(100));
        assert!(
            !db.release().unwrap(),
            "the checkpoint release runs just wrote the file"
        );
        std::thread::sleep(QUIET + Duration::from_millis(100));
        assert!(db.release().unwrap());
        let first = db.pos().generation;
        assert!(
            db.sync().unwrap().new_generation.is_none(),
            "nothing changed"
        );
        assert!(db.is_released());
        drop(app);
        let other = d.path().join("other.db");
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = wal; CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('other');",
        )
        .unwrap();
        drop(c);
        std::fs::rename(&other, db.path()).unwrap();
        let _ = std::fs::remove_file(db.wal_path());
        let g = db.sync().unwrap().new_generation.expect("a new generation");
        assert_ne!(g, first);
        assert!(!db.is_released());
    }

    #[test]
    fn a_change_within_the_quiet_time_is_recent() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let quiet = QUIET.as_secs() as i64;
        assert!(mark(1, 1, 1000).recent(now, QUIET));
        assert!(mark(1, 1, 1001 - quiet).recent(now + Duration::from_millis(500), QUIET));
        assert!(!mark(1, 1, 1000 - quiet).recent(now, QUIET));
        assert!(!mark(1, 1, 999 - quiet).recent(now + Duration::from_millis(500), QUIET));
        // A change time after now (the clock was set back) is never trusted as old.
        assert!(mark(1, 1, 2000).recent(now, QUIET));
    }
}

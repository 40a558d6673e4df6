//! The pinning and checkpoint protocol: when walship's read transaction may end, and what proves
//! that a later WAL restart lost nothing.
//!
//! # The no-lost-frame invariant
//! walship keeps a read transaction open on connection `R` at all times. While it is open, SQLite
//! can restart the WAL (overwrite it from the start with new salts) at most once, and only when
//! the WAL was fully backfilled *before* `R` began. So:
//!
//! 1. **`R` ends only under `W`'s write lock** (`BEGIN IMMEDIATE`), and only after every committed
//!    frame of the WAL's current life is in the shadow WAL ([`Db::repin`]). Under the write lock
//!    no frame can be committed, and no restart can happen, between that copy and the moment `R`
//!    is gone.
//! 2. **The shadow follows the WAL's current life when `R` ends.** [`Db::repin`] first checks,
//!    under the write lock, that the WAL still has the header the shadow copies, and refuses
//!    otherwise ([`Db::wal_unchanged`]). An application may restart the WAL once under a standing proof at
//!    any moment; a step that missed that restart would copy up to the old life's end only (the
//!    copy stops at the first frame with new salts), backfill or unpin a life walship never
//!    copied, and re-pin with a proof naming the old header, so the application's next commit
//!    restarts the WAL a second time (the crash campaign's "two restarts under a proof",
//!    2026-12-04; regression test `a_restart_just_before_a_checkpoint_is_left_to_the_next_sync`).
//!    Left alone, `R` still pins: the next sync sees exactly one restart and continues.
//! 3. **What proves a restart.** When `R` begins again, the moment is recorded as a [`Proof`]
//!    (shadow index, WAL header). A later header whose salt-1 is exactly one more than the proof's
//!    ([`proves_one_restart`]) is the one restart SQLite could make under `R`: the generation
//!    continues in the next index. The header's checkpoint sequence is no evidence (SQLite counts
//!    it per connection, and a reconnected application starts again). With `R` pinned, a second
//!    restart can only follow a life without a frame (two TRUNCATE checkpoints in a row); exactly
//!    one restart is still required, so that rare case costs a new generation rather than trust
//!    in a reading of SQLite's locking.
//!
//! [`Db::repin`] is the one place `R` ends: it enforces 2 in every build and asserts 1 in debug
//! builds.
//!
//! # The checkpoint
//! Always PASSIVE (RESTART and TRUNCATE wait on application readers while holding up application
//! writers: v0.3.13's #724 outage). Below max-checkpoint-page-count the bulk of the backfill runs
//! with `R` moved to the WAL's end under a brief write lock, and the final locked step only
//! backfills what was committed meanwhile. At the RESTART threshold the whole backfill runs under
//! the write lock: the writer waits rather than growing the WAL past what the user allowed.
//! A snapshot reading the database file holds the gate ([`Db::hold_checkpoints`]) and the monitor
//! then neither checkpoints nor moves `R`, so no page the snapshot's position relies on moves.

use super::DbOptions;
use super::{read_wal_header, Db, Open, Shadow};
use crate::error::{Error, Result};
use crate::sqlite::{checkpoint, CheckpointMode};
use crate::wal::{WalHeader, HEADER_SIZE};
use rusqlite::Connection;
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// Recorded under `W`: shadow `index` held every frame of the WAL life `header` when `R` began.
#[derive(Debug, Clone, Copy)]
pub(super) struct Proof {
    pub(super) index: u32,
    pub(super) header: WalHeader,
}

/// Whether `next` is the header SQLite writes after exactly one restart of the WAL whose header
/// was `proven`: salt-1 one more, wrapping. The checkpoint sequence is not evidence (SQLite keeps
/// it per connection, and a reconnected application starts again from 0).
pub(crate) fn proves_one_restart(proven: &WalHeader, next: &WalHeader) -> bool {
    next.salt1 == proven.salt1.wrapping_add(1) && next.page_size == proven.page_size
}

/// A WAL past `max-checkpoint-page-count` but smaller than this is restarted at most once per
/// monitor-interval, as v0.3.13 does; a larger one at every sync, so that a saturating writer
/// keeps it near the threshold. Each restart starts a WAL index, and every index is at least one
/// more object per sync and one more request on restore: with `max-checkpoint-page-count: 20`
/// under 1,000 tx/s, restarting at every sync made 28 indexes (and uploads) a second where
/// v0.3.13 made one, and a WAL of a few MiB costs the application nothing for a second.
pub(crate) const SMALL_WAL_BYTES: u64 = 4 << 20;

/// The v0.3 checkpoint policy (docs/format.md): the mode v0.3.13 would have used, or None when no
/// checkpoint is due. `last` is walship's last attempt, `started` when monitoring began.
pub(super) fn checkpoint_due(
    o: &DbOptions,
    sh: &Shadow,
    checkpointed_at: Option<(u32, u64)>,
    last: Option<Instant>,
    started: Instant,
) -> Option<CheckpointMode> {
    if checkpointed_at == Some((sh.index, sh.size)) || sh.size <= HEADER_SIZE as u64 {
        return None;
    }
    let pages = (sh.size - HEADER_SIZE as u64) / sh.header.frame_size();
    if o.truncate_page_count > 0 && pages >= o.truncate_page_count {
        Some(CheckpointMode::Truncate)
    } else if o.max_checkpoint_page_count > 0
        && pages >= o.max_checkpoint_page_count
        && (pages * u64::from(sh.header.page_size) >= SMALL_WAL_BYTES
            || last.is_none_or(|t| t.elapsed() >= o.monitor_interval))
    {
        Some(CheckpointMode::Restart)
    } else if (pages >= o.min_checkpoint_page_count
        // Syncs can come faster than monitor-interval under a heavy writer; v0.3 made at most
        // one PASSIVE attempt per interval, and so do we below the RESTART threshold.
        && last.is_none_or(|t| t.elapsed() >= o.monitor_interval))
        || (!o.checkpoint_interval.is_zero()
            && last.unwrap_or(started).elapsed() >= o.checkpoint_interval)
    {
        Some(CheckpointMode::Passive)
    } else {
        None
    }
}

/// How long the WAL must stay unchanged, with frames walship has not backfilled, before walship
/// checkpoints it whatever the thresholds say: `monitor-interval`, at least a second.
///
/// Why: `R` keeps a read transaction open at all times, so an application's own FULL, RESTART
/// or TRUNCATE checkpoint cannot finish while frames are left that walship has not backfilled:
/// it waits out its busy timeout holding the write lock (walship cannot checkpoint meanwhile)
/// and returns SQLITE_BUSY. Below min-checkpoint-page-count that lasted until
/// checkpoint-interval (1 minute), as it does under v0.3.13. Backfilling once the writer pauses
/// leaves `R` on the database file (read-mark 0), where it blocks neither a restart nor a
/// TRUNCATE, so the application's next checkpoint completes at once. A steady writer never
/// pauses that long and keeps v0.3.13's thresholds; a pausing one gets one checkpoint per burst,
/// which SQLite's own autocheckpoint would have made at 1,000 pages anyway.
pub(crate) fn quiet_after(o: &DbOptions) -> Duration {
    o.monitor_interval.max(Duration::from_secs(1))
}

/// Attempts of the quiet checkpoint at one WAL position: an application that keeps a read
/// transaction open makes every attempt partial, and retrying each monitor-interval forever
/// would cost an idle database a write lock a second.
pub(super) const QUIET_TRIES: u8 = 10;

/// The WAL position the quiet checkpoint watches ([`quiet_after`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Quiet {
    /// (index, size) of the shadow when last seen changing.
    pos: (u32, u64),
    since: Instant,
    tries: u8,
}

impl Quiet {
    pub(super) fn new(sh: &Shadow) -> Quiet {
        Quiet {
            pos: (sh.index, sh.size),
            since: Instant::now(),
            tries: 0,
        }
    }

    /// Records the shadow's position after a sync's copy: a change starts the wait again.
    pub(super) fn observe(&mut self, sh: &Shadow) {
        if self.pos != (sh.index, sh.size) {
            *self = Quiet::new(sh);
        }
    }

    /// How long until a quiet checkpoint is due at this position, or None when none will be:
    /// nothing left to backfill, or the attempts are used up.
    pub(super) fn due_in(
        &self,
        o: &DbOptions,
        sh: &Shadow,
        checkpointed_at: Option<(u32, u64)>,
    ) -> Option<Duration> {
        let unbackfilled =
            sh.size > HEADER_SIZE as u64 && checkpointed_at != Some((sh.index, sh.size));
        (unbackfilled && self.tries < QUIET_TRIES)
            .then(|| quiet_after(o).saturating_sub(self.since.elapsed()))
    }

    /// Counts an attempt made at this position.
    pub(super) fn tried(&mut self) {
        self.tries = self.tries.saturating_add(1);
    }
}

impl Db {
    /// Takes SQLite's write lock on `w` (transient error when busy).
    pub(super) fn begin_immediate(&self, w: &Connection) -> Result<()> {
        w.execute_batch("BEGIN IMMEDIATE").map_err(|e| {
            if is_busy(&e) {
                Error::transient(format!("{}: write lock busy", self.path.display()))
            } else {
                Error::sqlite(format!("{}: take write lock", self.path.display()), e)
            }
        })
    }

    /// Runs `f` holding SQLite's write lock on `W`, then re-pins `R` ([`Db::repin`]). An `f` that
    /// refuses, or a WAL that restarted since the last sync, leaves `R` and its proof as they
    /// were.
    pub(super) fn with_write_lock(
        &self,
        open: &mut Open,
        f: impl FnOnce(&Db, &mut Open) -> Result<()>,
    ) -> Result<()> {
        self.begin_immediate(&open.conns.w)?;
        let res = f(self, open).and_then(|()| self.repin(open, |_| ()));
        let _ = open.conns.w.execute_batch("ROLLBACK");
        res
    }

    /// The one place `R` ends; called under `W`'s write lock. Refuses (transient) unless the
    /// shadow follows the WAL's current life (invariant 2); then copies every committed frame
    /// (invariant 1), ends `R`, runs `unpinned` (the moment the WAL may be backfilled), begins `R`
    /// again and records the [`Proof`].
    pub(super) fn repin<T>(
        &self,
        open: &mut Open,
        unpinned: impl FnOnce(&Connection) -> T,
    ) -> Result<T> {
        self.wal_unchanged(open)?;
        self.copy_frames(&mut open.shadow, None)?;
        debug_assert_eq!(
            self.copy_frames(&mut open.shadow, None).ok(),
            Some(0),
            "under the write lock one copy takes every committed frame"
        );
        let _ = open.conns.r.execute_batch("ROLLBACK");
        // `R` no longer pins the WAL: an old proof must not vouch for a later restart.
        open.proof = None;
        let out = unpinned(&open.conns.r);
        begin_read(&open.conns.r, &self.path)?;
        let sh = &open.shadow;
        open.reader_on_db_file =
            (open.checkpointed_at == Some((sh.index, sh.size))).then_some(sh.index);
        open.proof = Some(Proof {
            index: sh.index,
            header: sh.header,
        });
        // Before the write lock goes: a restart the application makes next, and a kill before
        // the next sync records it, must find the mark at start-up.
        self.mark_end(open);
        Ok(out)
    }

    /// Refuses (transient) when the WAL restarted since the sync compared headers; called under
    /// `W`'s write lock, where no restart can happen meanwhile (invariant 2).
    pub(super) fn wal_unchanged(&self, open: &Open) -> Result<()> {
        let real = read_wal_header(&self.wal_path)?;
        if real.map(|h| h.raw) == Some(open.shadow.header.raw) {
            return Ok(());
        }
        Err(Error::transient(format!(
            "{}: the WAL restarted since the last look; the next sync continues from it",
            self.wal_path.display()
        )))
    }

    /// Backfills the WAL into the database so the next writer restarts it, without losing a frame
    /// (module doc). `mode` is the one v0.3.13's policy called for, reported, not run. None when
    /// the checkpoint was skipped (lock busy, a snapshot reading, the WAL restarted meanwhile).
    pub(super) fn checkpoint(
        &self,
        open: &mut Open,
        last_checkpoint: &mut Option<Instant>,
        mode: CheckpointMode,
    ) -> Result<Option<super::CheckpointOutcome>> {
        // A snapshot is reading the database file: leave `R` alone until it is done.
        let Ok(_gate) = self.gate.try_write() else {
            return Ok(None);
        };
        let started = Instant::now();
        let mut round_lock_waits = [Duration::ZERO; 2];
        let mut unlocked_rounds = 0u8;
        // Below max-checkpoint-page-count: move `R`'s read mark to the end of the WAL under a
        // brief write lock, then do the bulk of the backfill up to it while application writers
        // keep going; the locked step below only backfills what was committed meanwhile. A busy
        // writer appends thousands of frames while a bulk backfill runs, and backfilling them
        // under the lock kept it 10-15 ms: a second round takes most of them, and the WAL is
        // flushed before the lock, so the locked checkpoint's own WAL sync has only the last
        // moments to write.
        // At the RESTART (or TRUNCATE) threshold the WAL is already as long as the user allows,
        // and an unlocked round lets a saturating writer grow it for as long as the backfill
        // takes: one round slowed to 976 ms by disk writeback took the WAL to 46,824 pages
        // (4.7 x the threshold). There the whole backfill runs under the lock, as v0.3.13's
        // RESTART does: the writer waits (worst commit 56 ms in walship-bench's saturating
        // workload, v0.3.13 442 ms) and the WAL stays near the threshold (the bulk rounds'
        // peaks were 15-19k pages on an idle disk; without them 12-16k, and under writeback).
        let bulk_rounds = mode == CheckpointMode::Passive;
        if open.shadow.size > HEADER_SIZE as u64 && bulk_rounds {
            let frame = open.shadow.header.frame_size();
            let mut busy = false;
            for (round, lock_wait) in round_lock_waits.iter_mut().enumerate() {
                let before = crate::pace::wal_mark(&self.wal_path, self.shm_file().as_deref());
                // Copied first without the lock: a locked copy of megabytes holds writers up.
                self.copy_frames(&mut open.shadow, None)?;
                let t = Instant::now();
                let locked = self.with_write_lock(open, |_, _| Ok(()));
                *lock_wait = t.elapsed();
                match locked {
                    Ok(()) => {
                        let _ = checkpoint(&open.conns.w, CheckpointMode::Passive);
                        unlocked_rounds += 1;
                    }
                    Err(e) if e.kind() == crate::ErrorKind::Transient && round == 0 => {
                        tracing::debug!(db = %self.path.display(), error = %e, "checkpoint skipped");
                        return Ok(None);
                    }
                    Err(e) if e.kind() == crate::ErrorKind::Transient => break,
                    Err(e) => return Err(e),
                }
                let after = crate::pace::wal_mark(&self.wal_path, self.shm_file().as_deref());
                let appended = crate::pace::grown(before, after) / frame;
                busy = appended >= self.opts.min_checkpoint_page_count.max(1);
                if !busy {
                    break;
                }
            }
            if busy {
                if let Ok(f) = File::open(&self.wal_path) {
                    let _ = f.sync_data();
                }
            }
        }
        // Copied first without the lock: a locked copy of megabytes holds writers up.
        self.copy_frames(&mut open.shadow, None)?;
        let waited = Instant::now();
        if let Err(e) = open.conns.w.execute_batch("BEGIN IMMEDIATE") {
            tracing::debug!(db = %self.path.display(), error = %e, "checkpoint skipped: write lock busy");
            return Ok(None);
        }
        let held = Instant::now();
        let lock_wait = held - waited;
        let res = (|| -> Result<Option<bool>> {
            let t = Instant::now();
            let copied = self.copy_frames(&mut open.shadow, None)?;
            let copy_took = t.elapsed();
            let pinned = self.repin(open, |r| {
                // An application's own checkpoint may hold the checkpointer lock for a moment
                // (busy, log = -1): retry briefly rather than give up the whole cycle.
                let mut ck = checkpoint(r, CheckpointMode::Passive);
                for _ in 0..50 {
                    match &ck {
                        Ok(c) if c.busy && c.log < 0 => {
                            std::thread::sleep(Duration::from_micros(200));
                            ck = checkpoint(r, CheckpointMode::Passive);
                        }
                        _ => break,
                    }
                }
                ck
            });
            let ck = match pinned {
                Ok(ck) => ck,
                Err(e) if e.kind() == crate::ErrorKind::Transient => {
                    tracing::debug!(db = %self.path.display(), error = %e, "checkpoint skipped");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let ck =
                ck.map_err(|e| Error::sqlite(format!("{}: checkpoint", self.path.display()), e))?;
            let sh = &open.shadow;
            let frames = ((sh.size - HEADER_SIZE as u64) / sh.header.frame_size()) as i64;
            tracing::debug!(db = %self.path.display(), busy = ck.busy, log = ck.log, checkpointed = ck.checkpointed, frames, copied, ?copy_took, backfill_took = ?t.elapsed() - copy_took, "passive checkpoint");
            Ok(Some(
                !ck.busy && ck.log == ck.checkpointed && ck.log == frames,
            ))
        })();
        let _ = open.conns.w.execute_batch("ROLLBACK");
        let lock_held = held.elapsed();
        let Some(complete) = res? else {
            return Ok(None);
        };
        *last_checkpoint = Some(Instant::now());
        if complete {
            open.checkpointed_at = Some((open.shadow.index, open.shadow.size));
            open.reader_on_db_file = Some(open.shadow.index);
        }
        tracing::debug!(db = %self.path.display(), %mode, complete, ?lock_wait, ?lock_held, unlocked_rounds, ?round_lock_waits, took = ?started.elapsed(), "checkpoint");
        Ok(Some(super::CheckpointOutcome {
            mode,
            complete,
            lock_wait,
            lock_held,
            unlocked_rounds,
        }))
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Busy handler of walship's write connection: many short retries instead of SQLite's default
/// 1-100 ms sleeps, because a saturating writer leaves the lock free only for microseconds
/// between its transactions. About 1 s in all, like v0.3.13's busy timeout.
pub(super) fn write_lock_busy(attempt: i32) -> bool {
    match attempt {
        0..2000 => {
            std::thread::sleep(Duration::from_micros(50));
            true
        }
        2000..2900 => {
            std::thread::sleep(Duration::from_millis(1));
            true
        }
        _ => false,
    }
}

fn begin_read(r: &Connection, path: &Path) -> Result<()> {
    r.execute_batch("BEGIN")
        .and_then(|_| {
            r.query_row("SELECT COUNT(1) FROM _litestream_seq", [], |row| {
                row.get::<_, i64>(0)
            })
        })
        .map(|_| ())
        .map_err(|e| Error::sqlite(format!("{}: begin read transaction", path.display()), e))
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::CheckpointOutcome;
    use super::*;
    use crate::wal::tests::build_wal;
    use crate::wal::{self, WalHeader};
    use std::fs::File;
    use std::io::BufReader;

    fn header(salt1: u32, salt2: u32, ckpt: u32) -> WalHeader {
        WalHeader::parse(&build_wal(4096, (salt1, salt2), ckpt, &[])).unwrap()
    }

    /// What the monitor's checkpoint step does, run now whatever the policy says.
    pub(in crate::db) fn checkpoint_now(db: &Db) -> Option<CheckpointOutcome> {
        checkpoint_as(db, CheckpointMode::Passive)
    }

    /// The checkpoint step as the policy's `mode` would have called it.
    fn checkpoint_as(db: &Db, mode: CheckpointMode) -> Option<CheckpointOutcome> {
        let mut st = db.lock_state();
        let st = &mut *st;
        let open = st.open.as_mut().expect("synced once");
        db.checkpoint(open, &mut st.last_checkpoint, mode).unwrap()
    }

    /// Issue 23 item 1: an unlocked backfill round slowed to 976 ms by disk writeback let a
    /// saturating writer take the WAL to 46,824 pages, 4.7 x max-checkpoint-page-count. At that
    /// threshold (RESTART, and TRUNCATE past its own) the backfill runs under the write lock only;
    /// below it (PASSIVE) the bulk still runs while writers go on, keeping the lock short.
    #[test]
    fn at_the_restart_threshold_no_backfill_runs_beside_the_writer() {
        let d = tempfile::tempdir().unwrap();
        let (app, db) = super::super::tests::app_and_db(d.path());
        for (mode, rounds) in [
            (CheckpointMode::Restart, 0),
            (CheckpointMode::Truncate, 0),
            (CheckpointMode::Passive, 1),
        ] {
            for i in 0..20 {
                app.execute("INSERT INTO t VALUES (?1)", [format!("{mode} {i}")])
                    .unwrap();
            }
            db.sync().unwrap();
            let out = checkpoint_as(&db, mode).expect("not skipped");
            assert!(out.complete, "{mode}");
            assert_eq!(out.unlocked_rounds, rounds, "{mode}");
        }
    }

    #[test]
    fn one_restart_is_salt1_plus_one_whatever_the_checkpoint_sequence() {
        let proven = header(41, 7, 9);
        // A reconnected application restarts with its own counter (1), not 10.
        assert!(proves_one_restart(&proven, &header(42, 12345, 1)));
        assert!(proves_one_restart(&proven, &header(42, 0, 10)));
        // Two restarts, none, or fresh random salts prove nothing.
        assert!(!proves_one_restart(&proven, &header(43, 1, 10)));
        assert!(!proves_one_restart(&proven, &header(41, 1, 10)));
        assert!(!proves_one_restart(&proven, &header(0x9e3779b9, 1, 0)));
        // Salt-1 wraps.
        assert!(proves_one_restart(
            &header(u32::MAX, 1, 3),
            &header(0, 2, 4)
        ));
        // Another page size is another database.
        let other = WalHeader::parse(&build_wal(1024, (42, 1), 10, &[])).unwrap();
        assert!(!proves_one_restart(&proven, &other));
    }

    /// The crash campaign's "two restarts under a proof" (2026-12-04): the application restarted
    /// the WAL (allowed once under the proof) after the sync had compared headers but before its
    /// checkpoint. The checkpoint's copy stopped at the new life's first frame, its backfill took
    /// the whole new life (never copied), and `R` re-began with a proof still naming the old
    /// header: the application's next commit restarted the WAL a second time, and the next sync
    /// had to start a new generation (the relaxed rule tried that day lost the life instead).
    #[test]
    fn a_restart_just_before_a_checkpoint_is_left_to_the_next_sync() {
        let d = tempfile::tempdir().unwrap();
        let (app, db) = super::super::tests::app_and_db(d.path());
        let generation = db.pos().generation;
        let salt1 = || {
            read_wal_header(&d.path().join("a.db-wal"))
                .unwrap()
                .unwrap()
                .salt1
        };
        {
            // walship's own complete checkpoint: `R` now reads the database file only.
            let out = checkpoint_now(&db).unwrap();
            assert!(out.complete);
        }
        let s0 = salt1();
        app.execute("INSERT INTO t VALUES ('first life after the restart')", [])
            .unwrap();
        assert_eq!(
            salt1(),
            s0.wrapping_add(1),
            "the application restarted the WAL"
        );
        {
            // The race, made deterministic: a checkpoint that has not seen the restart.
            checkpoint_now(&db);
        }
        app.execute("INSERT INTO t VALUES ('second')", []).unwrap();
        assert_eq!(
            salt1(),
            s0.wrapping_add(1),
            "the checkpoint backfilled a life walship had not copied: the WAL restarted again"
        );
        db.sync().unwrap();
        assert_eq!(db.pos().generation, generation, "no new generation");
        let shadow = db.meta.shadow_path(&generation, db.pos().index);
        let scan = wal::scan(BufReader::new(File::open(shadow).unwrap()))
            .unwrap()
            .unwrap();
        assert_eq!(scan.header.salt1, s0.wrapping_add(1));
        assert!(
            scan.committed_len > HEADER_SIZE as u64,
            "the new life was copied"
        );
    }

    /// The flaky CI failure of 2026-12-06 (`continuity.rs`, "TRUNCATE checkpoint never
    /// completed"): 23 frames after walship's last checkpoint, below min-checkpoint-page-count,
    /// and an idle application whose TRUNCATE checkpoint then got SQLITE_BUSY for a whole
    /// checkpoint-interval, because `R` pinned frames nobody would backfill. Now a WAL that stays
    /// quiet for `quiet_after` is checkpointed, and the application's checkpoint completes.
    #[test]
    fn a_quiet_wal_is_checkpointed_so_the_application_can_truncate_it() {
        let d = tempfile::tempdir().unwrap();
        let (app, db) = super::super::tests::app_and_db(d.path());
        let generation = db.pos().generation;
        app.busy_timeout(Duration::ZERO).unwrap();
        let truncate = || {
            app.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .unwrap()
        };
        for i in 0..5 {
            app.execute("INSERT INTO t VALUES (?1)", [format!("burst {i}")])
                .unwrap();
        }
        let report = db.sync().unwrap();
        assert!(report.copied_bytes > 0);
        assert!(report.checkpoint.is_none(), "below every threshold");
        let wait = report
            .quiet_checkpoint_in
            .expect("a quiet checkpoint is planned");
        assert!(wait <= quiet_after(&db.opts) && wait > Duration::ZERO);
        assert_eq!(
            truncate().0,
            1,
            "R pins the frames: the application is busy"
        );
        std::thread::sleep(quiet_after(&db.opts));
        let report = db.sync().unwrap();
        assert_eq!(report.copied_bytes, 0);
        assert!(report.checkpoint.is_some_and(|c| c.complete), "{report:?}");
        assert_eq!(report.quiet_checkpoint_in, None, "nothing left to backfill");
        let (busy, log, done) = truncate();
        assert_eq!(
            (busy, log, done),
            (0, 0, 0),
            "the application's TRUNCATE completes"
        );
        assert_eq!(std::fs::metadata(db.wal_path()).unwrap().len(), 0);
        // The application's next commit continues the generation in the next index.
        app.execute("INSERT INTO t VALUES ('after')", []).unwrap();
        let report = db.sync().unwrap();
        assert_eq!(report.new_generation, None);
        assert_eq!(db.pos().generation, generation);
        assert_eq!(db.pos().index, 1);
    }

    /// An application read transaction makes every attempt partial: the quiet checkpoint gives
    /// up after QUIET_TRIES instead of taking the write lock every monitor-interval for ever.
    #[test]
    fn the_quiet_checkpoint_gives_up_on_a_wal_an_application_reader_holds() {
        let d = tempfile::tempdir().unwrap();
        let (app, db) = super::super::tests::app_and_db(d.path());
        app.execute("INSERT INTO t VALUES ('pinned')", []).unwrap();
        let reader = rusqlite::Connection::open(d.path().join("a.db")).unwrap();
        reader
            .execute_batch("BEGIN; SELECT COUNT(*) FROM t;")
            .unwrap();
        app.execute("INSERT INTO t VALUES ('after the reader')", [])
            .unwrap();
        db.sync().unwrap();
        std::thread::sleep(quiet_after(&db.opts));
        let mut attempts = 0;
        for _ in 0..QUIET_TRIES + 3 {
            let report = db.sync().unwrap();
            if let Some(c) = report.checkpoint {
                assert!(!c.complete, "the application's reader holds frames");
                attempts += 1;
            }
        }
        assert_eq!(attempts, QUIET_TRIES);
        assert_eq!(db.sync().unwrap().quiet_checkpoint_in, None);
        reader.execute_batch("COMMIT").unwrap();
    }

    fn shadow(frames: u64, index: u32) -> Shadow {
        Shadow {
            generation: "g".into(),
            index,
            header: header(1, 2, 0),
            size: HEADER_SIZE as u64 + frames * (4096 + 24),
            seed: (0, 0),
        }
    }

    /// v0.3.13's policy: TRUNCATE and RESTART thresholds at every sync, PASSIVE at
    /// min-checkpoint-page-count at most once per monitor-interval, or on checkpoint-interval.
    #[test]
    fn checkpoint_policy_follows_v0_3_thresholds() {
        let o = DbOptions::default();
        let now = Instant::now();
        let long_ago = now - Duration::from_secs(3600);
        let due = |frames, at, last| checkpoint_due(&o, &shadow(frames, 3), at, last, now);
        assert_eq!(
            due(0, None, None),
            None,
            "an empty index has nothing to backfill"
        );
        assert_eq!(due(999, None, Some(now)), None);
        assert_eq!(due(1000, None, None), Some(CheckpointMode::Passive));
        // Once per monitor-interval below the RESTART threshold...
        assert_eq!(due(1000, None, Some(now)), None);
        assert_eq!(
            due(1000, None, Some(long_ago)),
            Some(CheckpointMode::Passive)
        );
        // ... but every sync at and above it, once the WAL is past a few MiB ...
        assert_eq!(due(10_000, None, Some(now)), Some(CheckpointMode::Restart));
        // ... and below that, once per monitor-interval (v0.3.13's rate).
        let tiny = DbOptions {
            max_checkpoint_page_count: 20,
            ..DbOptions::default()
        };
        let small = |frames, last| checkpoint_due(&tiny, &shadow(frames, 3), None, last, now);
        assert_eq!(small(19, None), None);
        assert_eq!(small(20, None), Some(CheckpointMode::Restart));
        assert_eq!(small(20, Some(long_ago)), Some(CheckpointMode::Restart));
        assert_eq!(small(20, Some(now)), None);
        let page = u64::from(shadow(1, 3).header.page_size);
        let big = SMALL_WAL_BYTES.div_ceil(page);
        assert_eq!(small(big, Some(now)), Some(CheckpointMode::Restart));
        assert_eq!(
            due(500_000, None, Some(now)),
            Some(CheckpointMode::Truncate)
        );
        // checkpoint-interval alone, counted from the start until a first attempt.
        assert_eq!(due(1, None, Some(long_ago)), Some(CheckpointMode::Passive));
        assert_eq!(
            checkpoint_due(&o, &shadow(1, 3), None, None, long_ago),
            Some(CheckpointMode::Passive)
        );
        assert_eq!(checkpoint_due(&o, &shadow(1, 3), None, None, now), None);
        // Nothing new since the last complete checkpoint of this very position.
        let at = Some((3, shadow(1000, 3).size));
        assert_eq!(due(1000, at, None), None);
        assert_eq!(due(1001, at, None), Some(CheckpointMode::Passive));
        // Zero disables a threshold.
        let off = DbOptions {
            max_checkpoint_page_count: 0,
            truncate_page_count: 0,
            checkpoint_interval: Duration::ZERO,
            ..DbOptions::default()
        };
        assert_eq!(
            checkpoint_due(&off, &shadow(600_000, 3), None, Some(now), long_ago),
            None
        );
    }
}

//! The database monitor: copies committed WAL frames into the shadow WAL and runs checkpoints
//! without ever letting SQLite discard a frame walship has not copied.
//!
//! # The no-lost-frame invariant
//! walship keeps a read transaction open on connection `R`, so SQLite can restart the WAL at most
//! once under it, and ends `R` only under the write lock after copying every committed frame. The
//! protocol, its invariants and the checkpoint live in [`checkpoint`]. The monitor's state is
//! typed: [`Open`] exists only with both connections and the [`Shadow`] they feed, so no step can
//! run on a half-opened database.
//!
//! # Restarts while no walship ran
//! At start-up nothing pinned the WAL. A restart continues the generation only when it was
//! exactly one (salt-1 + 1; the checkpoint sequence is no evidence: SQLite counts it per
//! connection) and the WAL file still shows that nothing was committed after the frames walship
//! had copied ([`wal::life_ended_at`]), or the database file is exactly as it was when walship
//! last wrote down a copied, fully backfilled WAL life ([`mark`]: nothing committed after it can
//! have left the WAL without being written into that file); otherwise a new generation with the
//! reason logged, never a gap.
//!
//! # What else starts a new generation
//! Damage to walship's own meta directory (generation file or current shadow WAL missing or
//! short), checked at every sync, and a database file replaced under walship's descriptors
//! (another device/inode at the path): the next snapshot must come from the file the
//! application now uses, never from a descriptor of the old one.

pub mod budget;
mod checkpoint;
mod mark;
mod release;

use crate::error::{Error, Result};
use crate::layout::{new_generation, Pos, MAX_INDEX};
use crate::meta::{default_meta_dir, InstanceLock, MetaDir};
use crate::sqlite::{self, CheckpointMode};
use crate::wal::{self, WalHeader, HEADER_SIZE};
pub(crate) use checkpoint::proves_one_restart;
use checkpoint::{checkpoint_due, write_lock_busy, Proof, Quiet};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, RwLock};

/// Per-database settings (README "Configuration") with v0.3.13's defaults.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Meta directory (generation file, shadow WAL, lock); None: `.<file>-litestream` beside the
    /// database, where v0.3.13 keeps it.
    pub meta_path: Option<PathBuf>,
    /// Gap between monitor syncs: commits are coalesced into one sync per interval unless the WAL
    /// grows fast or restarts. Zero disables the monitor loop.
    pub monitor_interval: Duration,
    /// A checkpoint is due at least this often while frames are not yet checkpointed (zero: never
    /// on time alone).
    pub checkpoint_interval: Duration,
    /// WAL frames in the current index at which a checkpoint is due, at most one attempt per
    /// monitor-interval.
    pub min_checkpoint_page_count: u64,
    /// WAL frames at which a checkpoint is due at every sync (v0.3.13's RESTART threshold; walship
    /// still runs PASSIVE). Zero disables.
    pub max_checkpoint_page_count: u64,
    /// Like `max_checkpoint_page_count` for v0.3.13's TRUNCATE threshold; walship still runs
    /// PASSIVE. Zero disables.
    pub truncate_page_count: u64,
    /// Busy timeout of walship's own connections (v0.3: 1 s).
    pub busy_timeout: Duration,
    /// Longest a sync copies before it ships what it has (bounded work under a saturating writer).
    pub max_copy_bytes: u64,
    /// An idle database is released after this long without a change ([`Db::release`]): its
    /// connections and descriptors closed until the next change. Zero: never.
    pub release_after: Duration,
    /// This process answers `walship snapshot` requests (a running `replicate`); the lock file
    /// says so, and only then does `walship snapshot` signal the holder.
    pub takes_requests: bool,
    /// The descriptor budget the database counts against; None: the process's
    /// ([`budget::Budget::process`]).
    pub budget: Option<Arc<budget::Budget>>,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            meta_path: None,
            monitor_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(60),
            min_checkpoint_page_count: 1000,
            max_checkpoint_page_count: 10000,
            truncate_page_count: 500_000,
            busy_timeout: Duration::from_secs(1),
            max_copy_bytes: 256 * 1024 * 1024,
            release_after: Duration::ZERO,
            takes_requests: false,
            budget: None,
        }
    }
}

/// What starting on an existing meta directory decides.
#[derive(Debug)]
enum Resume {
    /// The meta directory provably describes this WAL: the generation goes on from this shadow.
    Continue(Shadow),
    /// It does not, for this reason (logged with the new generation).
    NewGeneration(&'static str),
}

/// While it lives, the monitor makes no checkpoint on this database ([`Db::hold_checkpoints`]).
#[must_use = "checkpoints are held only while the guard lives"]
pub struct CheckpointHold {
    _guard: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// Where the shadow WAL ends: what shippers may read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbPos {
    /// Current generation; empty until the first sync has started or resumed one.
    pub generation: String,
    /// Shadow WAL index being written (the real WAL's current life).
    pub index: u32,
    /// Committed length of the current shadow WAL file.
    pub size: u64,
}

impl DbPos {
    /// This end as a [`Pos`] (offset = committed size): what a shipper may ship up to.
    pub fn pos(&self) -> Pos {
        Pos::new(self.generation.clone(), self.index, self.size)
    }
}

struct Conns {
    r: Connection,
    w: Connection,
}

/// The shadow WAL file being written and how far its committed frames reach. Replaced whole (a
/// new index or generation), so a step that fails half-way leaves the previous one intact.
#[derive(Debug, Clone)]
struct Shadow {
    generation: String,
    index: u32,
    /// Header of the WAL life this index copies; the shadow file begins with it.
    header: WalHeader,
    /// Committed length of the shadow file.
    size: u64,
    /// Running checksum at `size`, which the next frame must continue.
    seed: (u32, u32),
}

impl Shadow {
    fn pos(&self) -> Pos {
        Pos::new(self.generation.clone(), self.index, self.size)
    }
}

/// walship's hold on the database while it monitors it: both connections and the shadow they
/// feed. It only exists complete (built at the end of `Db::init`, dropped whole by `detach` and
/// `close`).
struct Open {
    conns: Conns,
    shadow: Shadow,
    /// Set by `Db::repin` while `R` pins the WAL (see [`checkpoint`]).
    proof: Option<Proof>,
    /// (index, size) at the last complete checkpoint: nothing new to checkpoint since.
    checkpointed_at: Option<(u32, u64)>,
    /// Set while `R` reads the database file itself (it began on a fully backfilled WAL, so
    /// SQLite gave it read-mark 0), with the index it began in. That still blocks every backfill,
    /// as it must, but each application commit beyond its autocheckpoint threshold then sorts the
    /// whole WAL index for a checkpoint that cannot proceed; measured, that was half of a
    /// saturating writer's time. Once the WAL has restarted, `R` moves onto it (read-mark >= 1:
    /// the application backfills up to it once, then its attempts stop early).
    reader_on_db_file: Option<u32>,
    /// Since when the WAL has not changed: a quiet checkpoint after a burst
    /// ([`checkpoint::quiet_after`]).
    quiet: Quiet,
    /// Device and inode of the database file the connections and descriptor refer to.
    file_id: (u64, u64),
    /// (index, size) of the shadow end last written down as fully backfilled ([`mark`]).
    end_marked: Option<(u32, u64)>,
}

struct State {
    /// None until the first sync opened the database, and again after it was replaced.
    open: Option<Open>,
    /// When walship last attempted a checkpoint (none yet: the first one is not held back).
    last_checkpoint: Option<Instant>,
    /// When monitoring began: checkpoint-interval counts from here until a first checkpoint.
    started: Instant,
    /// The database path had no file at the last sync (logged once, then quiet).
    file_missing: bool,
    /// Set when the next opening must start a new generation, with the reason; cleared once one
    /// has started.
    force_new_generation: Option<&'static str>,
    /// Set while walship holds nothing of an idle database but its lock ([`Db::release`]).
    released: Option<release::Released>,
}

/// What a sync did, for logs and metrics.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// Committed bytes appended to the shadow WAL by this sync.
    pub copied_bytes: u64,
    /// The generation this sync started, if it started one.
    pub new_generation: Option<String>,
    /// The checkpoint this sync ran; None when none was due or it was skipped (lock busy, a
    /// snapshot reading, or the WAL restarted meanwhile).
    pub checkpoint: Option<CheckpointOutcome>,
    /// A checkpoint was due and did not complete (skipped or partial): the monitor tries again
    /// after monitor-interval instead of waiting for the next change, which for an idle
    /// database may never come (a WAL left above max-checkpoint-page-count, and an application
    /// RESTART/TRUNCATE checkpoint waiting on walship's read transaction until it times out).
    pub checkpoint_pending: bool,
    /// The database needed attaching and the descriptor budget had no slot: the monitor waits
    /// for one ([`budget::Budget::take`], [`Db::grant`]) and syncs again.
    pub deferred: bool,
    /// Sync again after this long (if nothing changes first): the WAL then has been quiet long
    /// enough for the checkpoint that lets an application's own checkpoints finish
    /// ([`checkpoint::quiet_after`]).
    pub quiet_checkpoint_in: Option<Duration>,
}

/// A checkpoint attempt that ran, for logs and the `litestream_checkpoint_*` metrics.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointOutcome {
    /// The mode v0.3.13's policy called for (walship itself always runs PASSIVE; see
    /// `Db::checkpoint`).
    pub mode: CheckpointMode,
    /// Every frame of the WAL was backfilled into the database (so the next writer can restart it).
    pub complete: bool,
    /// Time spent waiting for SQLite's write lock before the final, locked backfill.
    pub lock_wait: Duration,
    /// Time the write lock was held for that final step (copy and backfill under the lock).
    pub lock_held: Duration,
    /// Backfill rounds run while application writers kept going (none at the RESTART threshold,
    /// where the writer waits instead of growing the WAL).
    pub unlocked_rounds: u8,
}

/// One monitored database: walship's connections, its shadow WAL in the meta directory and the
/// instance lock. Shared by the monitor loop and every shipper of the database.
pub struct Db {
    path: PathBuf,
    wal_path: PathBuf,
    meta: MetaDir,
    opts: DbOptions,
    state: Mutex<State>,
    pos_tx: watch::Sender<DbPos>,
    /// Salts of the WAL the shadow follows (salt-1 << 32 | salt-2; 0 before the first sync), for
    /// the monitor to see a restart without taking the state lock.
    shadow_salts: std::sync::atomic::AtomicU64,
    /// Held (read) by snapshots; the monitor only refreshes `R` when it can take it (write).
    gate: Arc<RwLock<()>>,
    /// Held by a restore drill from its start to its verdict: one drill per database at a time
    /// (each reads the whole database file and restores a whole copy).
    drills: Arc<tokio::sync::Mutex<()>>,
    replica_positions: Mutex<BTreeMap<String, Pos>>,
    /// Generation and index below which every shadow index file was removed by the last clean:
    /// until a replica moves that bound, listing the shadow directory again finds nothing to do.
    cleaned_below: Mutex<Option<(String, u32)>>,
    /// The one descriptor walship itself opens on the database file (see [`crate::snapshot`]).
    /// Replaced only when the file at the path is replaced.
    db_file: Mutex<Option<Arc<File>>>,
    /// The one descriptor walship itself opens on `-shm`, kept open for as long as walship's
    /// connections are: closing any descriptor of a file drops every POSIX lock the process holds
    /// on it, so a read of `-shm` through a fresh `File` released `R`'s read-mark lock (and the
    /// deadman switch SQLite keeps on the file), and the application restarted the WAL under
    /// walship. It is only closed after those connections are, when the database is replaced.
    shm_file: Mutex<Option<Arc<File>>>,
    /// Re-taken when the meta directory (and the lock file in it) was removed under walship.
    lock: Mutex<InstanceLock>,
    /// Signalled when a snapshot attached a released database, so the monitor schedules its
    /// next release (it only looks after its own syncs otherwise).
    reattached: tokio::sync::Notify,
    /// Mirrors `State::released` for readers that must not wait for a sync (metrics, monitor).
    released: std::sync::atomic::AtomicBool,
    budget: Arc<budget::Budget>,
    /// Held while the database is attached (or about to be: granted by the monitor after
    /// waiting); given back when it is released, detached or closed.
    slot: Mutex<Option<budget::Slot>>,
    _member: budget::Member,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

fn wal_path_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

impl Db {
    /// Prepares monitoring: takes the per-database instance lock. Nothing touches SQLite yet.
    pub fn open(path: &Path, opts: DbOptions) -> Result<Arc<Db>> {
        let path = path.to_path_buf();
        let meta = MetaDir::owned(
            opts.meta_path
                .clone()
                .unwrap_or_else(|| default_meta_dir(&path)),
            crate::meta::Ownership::of_db(&path),
        );
        meta.create_dir(&meta.root)?;
        let lock = InstanceLock::acquire(&meta.lock_file(), &path, opts.takes_requests)?;
        meta.own_file(&meta.lock_file());
        meta.remove_tmp_files();
        let (pos_tx, _) = watch::channel(DbPos::default());
        let budget = opts.budget.clone().unwrap_or_else(budget::Budget::process);
        Ok(Arc::new(Db {
            _member: budget.member(),
            budget,
            slot: Mutex::new(None),
            wal_path: wal_path_of(&path),
            path,
            meta,
            opts,
            state: Mutex::new(State {
                open: None,
                last_checkpoint: None,
                started: Instant::now(),
                file_missing: false,
                force_new_generation: None,
                released: None,
            }),
            pos_tx,
            shadow_salts: std::sync::atomic::AtomicU64::new(0),
            gate: Arc::new(RwLock::new(())),
            drills: Arc::new(tokio::sync::Mutex::new(())),
            replica_positions: Mutex::new(BTreeMap::new()),
            cleaned_below: Mutex::new(None),
            db_file: Mutex::new(None),
            shm_file: Mutex::new(None),
            lock: Mutex::new(lock),
            reattached: tokio::sync::Notify::new(),
            released: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// `-shm` (see the field); None until the first sync has opened the database.
    pub fn shm_file(&self) -> Option<Arc<File>> {
        self.shm_file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The database file's path as configured.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// `<path>-wal`, the real WAL the monitor copies from.
    pub fn wal_path(&self) -> &Path {
        &self.wal_path
    }
    /// walship's meta directory of this database (generation file, shadow WAL, lock).
    pub fn meta(&self) -> &MetaDir {
        &self.meta
    }
    /// The settings this database was opened with.
    pub fn options(&self) -> &DbOptions {
        &self.opts
    }
    /// Watches the shadow WAL's end; it changes only when a sync moved it, so shippers wake on
    /// new data.
    pub fn subscribe(&self) -> watch::Receiver<DbPos> {
        self.pos_tx.subscribe()
    }
    /// The shadow WAL's end as of the last sync (default, empty generation, before the first).
    pub fn pos(&self) -> DbPos {
        self.pos_tx.borrow().clone()
    }
    /// Salts of the WAL the shadow WAL follows, as of the last sync.
    pub fn shadow_salts(&self) -> Option<[u32; 2]> {
        match self.shadow_salts.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            v => Some([(v >> 32) as u32, v as u32]),
        }
    }

    /// Keeps the monitor from checkpointing (and from detaching a replaced file) until the
    /// returned guard is dropped: a snapshot reads the database file under it, so no page the
    /// snapshot's position relies on moves meanwhile. Waits for a checkpoint in progress.
    pub async fn hold_checkpoints(&self) -> CheckpointHold {
        CheckpointHold {
            _guard: self.gate.clone().read_owned().await,
        }
    }
    /// [`Db::hold_checkpoints`] on an attached database: a released one ([`Db::release`]) is
    /// attached first, since a snapshot reads the file under walship's read transaction.
    /// Waits for a descriptor slot first if the budget has none free (before the hold, which
    /// would keep the monitor from releasing another database meanwhile).
    pub async fn hold_attached(self: &Arc<Self>) -> Result<CheckpointHold> {
        // A release may land between the look and the attach (the monitor releases early while
        // databases wait for slots): then wait for a slot and try again.
        for _attempt in 0..3 {
            if self.is_released() && !self.has_slot() {
                let slot = self.budget.take().await;
                self.grant(slot);
            }
            let hold = self.hold_checkpoints().await;
            let db = self.clone();
            let attached = tokio::task::spawn_blocking(move || db.attach_now())
                .await
                .map_err(|e| {
                    Error::new(crate::ErrorKind::Other, format!("attach task failed: {e}"))
                })??;
            if attached {
                return Ok(hold);
            }
        }
        Err(Error::transient(format!(
            "{}: no descriptor slot to attach the database (see the descriptor budget); the next attempt tries again",
            self.path.display()
        )))
    }
    /// The right to run a restore drill on this database now, unless another replica's drill
    /// holds it (it is tried again later, never waited for in a shipper's loop).
    pub fn try_drill(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.drills.clone().try_lock_owned().ok()
    }
    /// Page size of the WAL the shadow follows; None before a sync has read a WAL header, or after
    /// the database file was replaced (until the next sync opens the new one).
    pub fn page_size(&self) -> Option<u32> {
        self.lock_state()
            .open
            .as_ref()
            .map(|o| o.shadow.header.page_size)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shippers report how far each replica got, so shadow files can be removed behind them.
    pub fn set_replica_pos(&self, replica: &str, pos: Pos) {
        self.replica_positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(replica.to_string(), pos);
    }

    /// One monitor step: copy committed frames, roll indexes, checkpoint when due. Blocking.
    pub fn sync(&self) -> Result<SyncReport> {
        let mut st = self.lock_state();
        let report = self.sync_locked(&mut st, false);
        let Some(open) = &st.open else {
            self.let_go();
            return report;
        };
        let report = report?;
        self.publish(open);
        drop(st);
        self.clean_shadows();
        Ok(report)
    }

    /// `attach`: open a released database even when nothing changed (a snapshot needs it).
    fn sync_locked(&self, st: &mut State, attach: bool) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        if let Some(open) = &st.open {
            let file = self.file_state(open.file_id)?;
            self.note_file_missing(&mut st.file_missing, matches!(file, FileState::Missing));
            match file {
                FileState::Same => {}
                FileState::Missing => return Ok(report),
                FileState::Replaced => {
                    if !self.detach(st, "database file replaced") {
                        // A snapshot is reading the old file: the next sync tries again.
                        return Ok(report);
                    }
                }
            }
        }
        if st.open.is_none() {
            if !self.path.exists() {
                return Ok(report);
            }
            if let Some(rel) = &st.released {
                match rel.since(&self.path, &self.wal_path)? {
                    release::Since::Quiet if !attach => return Ok(report),
                    release::Since::Replaced => {
                        st.force_new_generation = Some("database file replaced")
                    }
                    release::Since::Quiet | release::Since::Changed => {}
                }
            }
            if !self.has_slot() {
                if self.opts.release_after.is_zero() {
                    self.grant(self.budget.take_anyway());
                } else {
                    match self.budget.try_take() {
                        Some(slot) => self.grant(slot),
                        None => {
                            report.deferred = true;
                            return Ok(report);
                        }
                    }
                }
            }
            self.init(st, &mut report)?;
        }
        // Still none: the WAL was emptied during start-up; the next sync tries again.
        let Some(open) = st.open.as_mut() else {
            return Ok(report);
        };
        // An empty WAL (an application's TRUNCATE checkpoint) is a normal state: nothing to copy
        // until the next commit writes a header. walship must not write one itself: its own
        // connection may never have restarted the WAL, and SQLite then gives the new header
        // random salts, which no proof can follow.
        let Some(real) = read_wal_header(&self.wal_path)? else {
            return Ok(report);
        };
        let cur = open.shadow.header;
        if let Some(reason) = self.meta_damage(&open.shadow) {
            report.new_generation = Some(self.restart_generation(open, reason)?);
            self.relock();
        } else if real.raw != cur.raw {
            match open.proof {
                // Exactly one restart (salt-1 + 1) since the proof: a relaxed rule that took any
                // new header let a life through whose frames were never copied (crash campaign on
                // S3, 2026-12-04, before `wal_unchanged` guarded every re-pin). It stays the last
                // line of defence.
                Some(p)
                    if p.index == open.shadow.index
                        && p.header == cur
                        && proves_one_restart(&p.header, &real) =>
                {
                    if open.shadow.index < MAX_INDEX {
                        open.shadow = self.next_index(&open.shadow, real)?;
                        open.proof = None;
                    } else {
                        report.new_generation =
                            Some(self.restart_generation(open, "max index exceeded")?);
                    }
                }
                _ => {
                    // Details for a post-mortem: with every re-pin guarded this should only
                    // follow two TRUNCATE checkpoints in a row (ARCHITECTURE.md, monitor invariant 3).
                    tracing::info!(
                        db = %self.path.display(),
                        index = open.shadow.index,
                        proof_index = open.proof.map(|p| p.index),
                        proof_salt1 = open.proof.map(|p| format!("{:08x}", p.header.salt1)),
                        shadow_salt1 = format!("{:08x}", cur.salt1),
                        wal_salt1 = format!("{:08x}", real.salt1),
                        reader_on_db_file = ?open.reader_on_db_file,
                        "wal restarted without a proof"
                    );
                    let reason =
                        "wal restarted while walship could not prove it had copied every frame";
                    report.new_generation = Some(self.restart_generation(open, reason)?);
                }
            }
        } else if let Some(reason) = self.overwritten(&open.shadow)? {
            report.new_generation = Some(self.restart_generation(open, reason)?);
        }
        report.copied_bytes +=
            self.copy_frames(&mut open.shadow, Some(self.opts.max_copy_bytes))?;
        if open
            .reader_on_db_file
            .is_some_and(|i| i < open.shadow.index)
        {
            match self.with_write_lock(open, |_, _| Ok(())) {
                Ok(()) => {}
                // Busy: the next sync tries again.
                Err(e) if e.kind() == crate::ErrorKind::Transient => {}
                Err(e) => return Err(e),
            }
        }
        open.quiet.observe(&open.shadow);
        let quiet = open
            .quiet
            .due_in(&self.opts, &open.shadow, open.checkpointed_at)
            .is_some_and(|d| d.is_zero());
        let due = checkpoint_due(
            &self.opts,
            &open.shadow,
            open.checkpointed_at,
            st.last_checkpoint,
            st.started,
        )
        .or(quiet.then_some(CheckpointMode::Passive));
        if let Some(mode) = due {
            report.checkpoint = self.checkpoint(open, &mut st.last_checkpoint, mode)?;
            report.checkpoint_pending = report.checkpoint.is_none_or(|c| !c.complete);
            if quiet {
                open.quiet.tried();
            }
        }
        report.quiet_checkpoint_in =
            open.quiet
                .due_in(&self.opts, &open.shadow, open.checkpointed_at);
        Ok(report)
    }

    /// Whether the database path still names the file `known` (device, inode).
    fn file_state(&self, known: (u64, u64)) -> Result<FileState> {
        use std::os::unix::fs::MetadataExt;
        match fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == known => Ok(FileState::Same),
            Ok(_) => Ok(FileState::Replaced),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileState::Missing),
            Err(e) => Err(Error::io(format!("stat {}", self.path.display()), e)),
        }
    }

    /// Logs a missing database file once, and its return.
    fn note_file_missing(&self, was_missing: &mut bool, missing: bool) {
        if missing && !*was_missing {
            tracing::warn!(db = %self.path.display(), "database file is gone: replication paused until it returns (the replica is kept as it is)");
        } else if !missing && *was_missing {
            tracing::info!(db = %self.path.display(), "database file is back");
        }
        *was_missing = missing;
    }

    /// Closes walship's connections and descriptors of a replaced database file, so the next
    /// initialisation opens the new one and starts a new generation. False when a snapshot is
    /// reading the old file right now.
    fn detach(&self, st: &mut State, reason: &'static str) -> bool {
        let Ok(_gate) = self.gate.try_write() else {
            return false;
        };
        if let Some(open) = st.open.take() {
            tracing::warn!(db = %self.path.display(), generation = %open.shadow.generation, reason, "reopening the database");
            // walship's connections keep the WAL on close (see `sqlite::open`), so closing the
            // old file's connections never deletes the `-wal` a new file now uses at the path.
            let _ = open.conns.r.execute_batch("ROLLBACK");
            drop(open);
        }
        // Only after the connections: closing it earlier would drop their POSIX locks on -shm.
        *self.shm_file.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.db_file.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.free_slot();
        st.force_new_generation = Some(reason);
        true
    }

    /// Damage to the meta directory that would make walship copy into nothing or ship a gap.
    fn meta_damage(&self, sh: &Shadow) -> Option<&'static str> {
        match self.meta.read_generation() {
            Ok(Some(g)) if g == sh.generation => {}
            Ok(Some(_)) => return Some("generation file changed by another process"),
            Ok(None) => return Some("no generation exists"),
            Err(_) => return Some("generation file unreadable"),
        }
        match fs::metadata(self.meta.shadow_path(&sh.generation, sh.index)) {
            Ok(m) if m.len() >= sh.size => None,
            Ok(_) => Some("short shadow wal"),
            Err(_) => Some("no shadow wal"),
        }
    }

    /// Takes the instance lock again when its file was removed with the meta directory, so a
    /// second `replicate` on this database is still refused.
    fn relock(&self) {
        let mut lock = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.meta.lock_file();
        if lock.is_current(&path) {
            return;
        }
        match InstanceLock::acquire(&path, &self.path, self.opts.takes_requests) {
            Ok(l) => {
                self.meta.own_file(&path);
                *lock = l
            }
            Err(e) => {
                tracing::error!(db = %self.path.display(), error = %e, "cannot take the instance lock again")
            }
        }
    }

    /// Opens the database (descriptor, both connections) and resumes or starts a generation under
    /// the write lock; sets `st.open` on success. Leaves it None, without an error, when the
    /// application kept emptying the WAL meanwhile.
    fn init(&self, st: &mut State, report: &mut SyncReport) -> Result<()> {
        let file_id = self.open_db_file()?;
        let conns = self.connect()?;
        {
            let mut shm = self.shm_file.lock().unwrap_or_else(|p| p.into_inner());
            let mut p = self.path.as_os_str().to_owned();
            p.push("-shm");
            let p = PathBuf::from(p);
            // Kept while it is the file at the path (closing it drops the connections' locks on
            // it); one from before the application's last close removed it is replaced.
            let stale = shm.as_ref().is_some_and(|f| {
                use std::os::unix::fs::MetadataExt;
                let id = |m: std::fs::Metadata| (m.dev(), m.ino());
                f.metadata().map(id).ok() != fs::metadata(&p).map(id).ok()
            });
            if shm.is_none() || stale {
                // After our connections exist, so SQLite created the file, not us.
                *shm = File::open(&p).ok().map(Arc::new);
            }
        }
        // The application may empty the WAL (TRUNCATE) between our write and our write lock.
        for _attempt in 0..5 {
            self.ensure_wal_exists(&conns.w)?;
            self.begin_immediate(&conns.w)?;
            let decided = (|| -> Result<Option<Shadow>> {
                let Some(hdr) = read_wal_header(&self.wal_path)? else {
                    return Ok(None);
                };
                let decision = match st.force_new_generation {
                    Some(reason) => Resume::NewGeneration(reason),
                    None => self.resume(&hdr, st.released.as_ref())?,
                };
                Ok(Some(match decision {
                    Resume::Continue(shadow) if st.released.is_some() => {
                        tracing::debug!(db = %self.path.display(), position = %shadow.pos(), "attached released database, continuing generation");
                        shadow
                    }
                    Resume::Continue(shadow) => {
                        tracing::info!(db = %self.path.display(), position = %shadow.pos(), "initialized db, continuing generation");
                        shadow
                    }
                    Resume::NewGeneration(reason) => {
                        let shadow = self.create_generation(file_id, reason)?;
                        report.new_generation = Some(shadow.generation.clone());
                        shadow
                    }
                }))
            })();
            let shadow = match decided {
                Ok(Some(shadow)) => shadow,
                Ok(None) => {
                    let _ = conns.w.execute_batch("ROLLBACK");
                    continue;
                }
                Err(e) => {
                    let _ = conns.w.execute_batch("ROLLBACK");
                    return Err(e);
                }
            };
            let mut open = Open {
                conns,
                quiet: Quiet::new(&shadow),
                shadow,
                proof: None,
                checkpointed_at: None,
                reader_on_db_file: None,
                file_id,
                end_marked: None,
            };
            let pinned = self.repin(&mut open, |_| ());
            let _ = open.conns.w.execute_batch("ROLLBACK");
            pinned?;
            st.open = Some(open);
            st.force_new_generation = None;
            st.released = None;
            self.released
                .store(false, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        // An application emptying the WAL this often: not an error, start at the next sync.
        tracing::debug!(db = %self.path.display(), "WAL emptied during start-up; trying again at the next sync");
        Ok(())
    }

    /// The one descriptor walship opens on the database file (kept while it is the same file:
    /// snapshots may hold clones, and closing any descriptor of the file would drop walship's
    /// connections' locks on it). Returns its device and inode.
    fn open_db_file(&self) -> Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let id = |f: &File| f.metadata().map(|m| (m.dev(), m.ino()));
        let stat = |e| Error::io(format!("stat {}", self.path.display()), e);
        let mut cur = self.db_file.lock().unwrap_or_else(|p| p.into_inner());
        let at_path = fs::metadata(&self.path).map_err(stat)?;
        let f = match cur.as_ref() {
            Some(f) if id(f).is_ok_and(|i| i == (at_path.dev(), at_path.ino())) => f.clone(),
            _ => {
                let f = Arc::new(
                    File::open(&self.path)
                        .map_err(|e| Error::io(format!("open {}", self.path.display()), e))?,
                );
                *cur = Some(f.clone());
                f
            }
        };
        id(&f).map_err(stat)
    }

    /// walship's two connections: `W` takes the write lock, `R` holds the pinning read.
    fn connect(&self) -> Result<Conns> {
        let busy = Some(self.opts.busy_timeout);
        let mut w = sqlite::open(&self.path, busy)?;
        let r = sqlite::open(&self.path, busy)?;
        let sq = |what: &str, e| Error::sqlite(format!("{}: {what}", self.path.display()), e);
        // Before anything that writes: a saturating application must not starve our first write.
        w.busy_handler(Some(write_lock_busy))
            .map_err(|e| sq("set busy handler", e))?;
        let mode: String = w
            .query_row("PRAGMA journal_mode = wal", [], |r| r.get(0))
            .map_err(|e| sq("enable WAL mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::invalid(format!(
                "{}: could not enable WAL mode (journal_mode is {mode})",
                self.path.display()
            )));
        }
        for c in [&w, &r] {
            c.execute_batch("PRAGMA wal_autocheckpoint = 0")
                .map_err(|e| sq("disable autocheckpoint", e))?;
        }
        w.execute_batch(
            "CREATE TABLE IF NOT EXISTS _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER);
             CREATE TABLE IF NOT EXISTS _litestream_lock (id INTEGER);",
        )
        .map_err(|e| sq("create _litestream tables", e))?;
        Ok(Conns { r, w })
    }

    /// Decides, under the write lock, whether the generation in the meta directory provably
    /// describes this WAL (`real` is its header), and if so, the shadow to go on from.
    fn resume(&self, real: &WalHeader, released: Option<&release::Released>) -> Result<Resume> {
        let Some(generation) = self.meta.read_generation()? else {
            return Ok(Resume::NewGeneration("no generation exists"));
        };
        let Some(&index) = self.meta.shadow_indexes(&generation)?.last() else {
            return Ok(Resume::NewGeneration("no shadow wal"));
        };
        if index >= MAX_INDEX {
            return Ok(Resume::NewGeneration("max index exceeded"));
        }
        let shadow_path = self.meta.shadow_path(&generation, index);
        let data = File::open(&shadow_path)
            .map_err(|e| Error::io(format!("open {}", shadow_path.display()), e))?;
        let scan = match wal::scan(BufReader::new(data))
            .map_err(|e| Error::io(format!("read {}", shadow_path.display()), e))?
        {
            Ok(s) => s,
            Err(_) => return Ok(Resume::NewGeneration("short shadow wal")),
        };
        if scan.header.raw != real.raw {
            let end = (generation.as_str(), index, scan.committed_len, &scan.header);
            let by_release =
                released.is_some_and(|r| r.end.proves_end(end, real, &self.path).unwrap_or(false));
            let by_mark = !by_release && end_marked(&self.meta, &self.path, end, real);
            if index + 1 < MAX_INDEX && (by_release || by_mark) {
                let last = adopt_shadow(generation, index, &scan, &shadow_path)?;
                let next = self.next_index(&last, *real)?;
                if by_release {
                    tracing::debug!(db = %self.path.display(), generation = %next.generation, index = next.index, "the wal started again while the database was released, and the database file is as walship left it: continuing in the next index");
                } else {
                    tracing::info!(db = %self.path.display(), generation = %next.generation, index = next.index, "the wal restarted after walship's complete checkpoint, and the database file is as it was then: continuing in the next index");
                }
                return Ok(Resume::Continue(next));
            }
            if !proves_one_restart(&scan.header, real) || index + 1 >= MAX_INDEX {
                return Ok(Resume::NewGeneration(
                    "wal header mismatch: the wal was restarted while walship was not running",
                ));
            }
            // Called under the write lock: the slot read below cannot change while it is judged.
            let slot = read_slot(&self.wal_path, scan.committed_len, real.frame_size())?;
            match wal::life_ended_at(&scan.header, scan.committed_seed, real, slot.as_deref()) {
                wal::LifeEnd::Ended => {}
                wal::LifeEnd::Continued => {
                    return Ok(Resume::NewGeneration("wal restarted while walship was not running, after commits walship had not copied"));
                }
                wal::LifeEnd::Unknown(why) => {
                    tracing::debug!(db = %self.path.display(), why, "cannot tell whether commits followed walship's copy before the wal restarted");
                    return Ok(Resume::NewGeneration("wal restarted while walship was not running, and the wal no longer shows whether commits followed walship's copy"));
                }
            }
            let last = adopt_shadow(generation, index, &scan, &shadow_path)?;
            let next = self.next_index(&last, *real)?;
            tracing::info!(db = %self.path.display(), generation = %next.generation, index = next.index, "the wal restarted once while walship was not running, after walship had copied all of it: continuing in the next index");
            return Ok(Resume::Continue(next));
        }
        let real_len = fs::metadata(&self.wal_path).map(|m| m.len()).unwrap_or(0);
        if real_len < scan.committed_len {
            return Ok(Resume::NewGeneration("wal truncated by another process"));
        }
        // The shadow may hold an uncommitted tail after a crash: cut it, then compare the last frame.
        let shadow = adopt_shadow(generation, index, &scan, &shadow_path)?;
        if let Some(reason) = self.overwritten(&shadow)? {
            return Ok(Resume::NewGeneration(reason));
        }
        Ok(Resume::Continue(shadow))
    }

    /// v0.3's check that the last copied frame is still in the real WAL, byte for byte.
    fn overwritten(&self, sh: &Shadow) -> Result<Option<&'static str>> {
        if sh.size <= HEADER_SIZE as u64 {
            return Ok(None);
        }
        let fs_ = sh.header.frame_size();
        let start = sh.size - fs_;
        let mut a = vec![0u8; fs_ as usize];
        let mut b = vec![0u8; fs_ as usize];
        let sp = self.meta.shadow_path(&sh.generation, sh.index);
        read_at(&sp, start, &mut a)?;
        let real_len = fs::metadata(&self.wal_path).map(|m| m.len()).unwrap_or(0);
        if real_len < sh.size {
            return Ok(Some("wal truncated by another process"));
        }
        read_at(&self.wal_path, start, &mut b)?;
        Ok((a != b).then_some("wal overwritten by another process"))
    }

    /// Starts a new generation under the write lock and re-pins; returns its name.
    fn restart_generation(&self, open: &mut Open, reason: &str) -> Result<String> {
        self.with_write_lock(open, |db, open| {
            open.shadow = db.create_generation(open.file_id, reason)?;
            open.checkpointed_at = None;
            Ok(())
        })?;
        Ok(open.shadow.generation.clone())
    }

    /// A new generation of the database file `file_id`: its index 0 holds every committed frame
    /// of the WAL now, and the generation file names it. Called under the write lock.
    fn create_generation(&self, file_id: (u64, u64), reason: &str) -> Result<Shadow> {
        let generation = new_generation();
        let real = read_wal_header(&self.wal_path)?.ok_or_else(|| {
            Error::transient(format!("{}: the WAL is empty", self.wal_path.display()))
        })?;
        // The WAL just read must belong to the file the snapshot will be read from.
        if !matches!(self.file_state(file_id)?, FileState::Same) {
            return Err(Error::transient(format!(
                "{}: the database file changed while a new generation began",
                self.path.display()
            )));
        }
        self.meta.create_dir(&self.meta.root)?;
        let mut shadow = self.write_index_header(generation, 0, real)?;
        self.copy_frames(&mut shadow, None)?;
        self.meta.write_generation(&shadow.generation)?;
        self.meta.remove_other_generations(&shadow.generation);
        tracing::info!(db = %self.path.display(), generation = %shadow.generation, reason, "sync: new generation");
        Ok(shadow)
    }

    /// The index after `cur`, for the WAL life `header`.
    ///
    /// Shadow files are written without a sync per copy (at a saturating writer's rate, that
    /// forced hundreds of MB/s of shadow data to disk that is deleted once shipped). What makes
    /// that safe is this: after a power loss the current index is checked frame by frame against
    /// the real WAL and copied again or replaced by a new generation, but an earlier index is
    /// trusted to be complete, so it is synced here, before its successor exists.
    /// The sync is skipped when every replica already holds the whole index: nothing will read
    /// it again but the cleanup that deletes it, and syncing it wrote megabytes to disk (6 % of
    /// walship's CPU at a steady 200 tx/s) that were about to be deleted unread.
    fn next_index(&self, cur: &Shadow, header: WalHeader) -> Result<Shadow> {
        let prev = self.meta.shadow_path(&cur.generation, cur.index);
        let shipped = {
            let positions = self
                .replica_positions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            shipped_everywhere(positions.values(), &cur.generation, cur.index, cur.size)
        };
        if !shipped {
            let io = |e| Error::io(format!("sync {}", prev.display()), e);
            File::open(&prev).and_then(|f| f.sync_data()).map_err(io)?;
        }
        self.write_index_header(cur.generation.clone(), cur.index + 1, header)
    }

    /// Begins shadow file `index` with the real WAL's header (synced: see `next_index`).
    fn write_index_header(
        &self,
        generation: String,
        index: u32,
        header: WalHeader,
    ) -> Result<Shadow> {
        let dir = self.meta.shadow_dir(&generation);
        self.meta.create_dir(&dir)?;
        let p = self.meta.shadow_path(&generation, index);
        let io = |e| Error::io(format!("write {}", p.display()), e);
        let mut f = File::create(&p).map_err(io)?;
        self.meta.own_file(&p);
        f.write_all(&header.raw).map_err(io)?;
        f.sync_data().map_err(io)?;
        Ok(Shadow {
            generation,
            index,
            header,
            size: HEADER_SIZE as u64,
            seed: header.checksum,
        })
    }

    /// Appends validated, committed frames of the real WAL to the shadow WAL.
    fn copy_frames(&self, sh: &mut Shadow, limit: Option<u64>) -> Result<u64> {
        let h = sh.header;
        let mut real = File::open(&self.wal_path)
            .map_err(|e| Error::io(format!("open {}", self.wal_path.display()), e))?;
        let end = real.metadata().map(|m| m.len()).unwrap_or(0);
        if end < sh.size + h.frame_size() {
            return Ok(0);
        }
        real.seek(SeekFrom::Start(sh.size))
            .map_err(|e| Error::io(format!("seek {}", self.wal_path.display()), e))?;
        let budget = limit.unwrap_or(u64::MAX);
        let sp = self.meta.shadow_path(&sh.generation, sh.index);
        let io = |e| Error::io(format!("write {}", sp.display()), e);
        let mut shadow = OpenOptions::new().write(true).open(&sp).map_err(io)?;
        shadow.seek(SeekFrom::Start(sh.size)).map_err(io)?;
        // Read no further than the WAL's size now: a writer that keeps appending cannot make one
        // sync copy forever. Whole frames are read into one buffer, checked there and written
        // from there (wal::check_frames).
        let mut real = real.take(end - sh.size);
        let fsize = h.frame_size() as usize;
        let mut buf = vec![0u8; (COPY_BUF / fsize).max(1) * fsize];
        let mut written = sh.size;
        let mut committed = sh.size;
        let mut seed = sh.seed;
        let mut commit_seed = sh.seed;
        loop {
            let n = wal::read_full(&mut real, &mut buf)
                .map_err(|e| Error::io(format!("read {}", self.wal_path.display()), e))?;
            let whole = n - n % fsize;
            // Frames after the last commit count too: they are committed with the next commit.
            let left = budget.saturating_sub(written - sh.size);
            let run = wal::check_frames(&h, seed, &buf[..whole], left);
            shadow.write_all(&buf[..run.valid]).map_err(io)?;
            if run.committed > 0 {
                committed = written + run.committed as u64;
                commit_seed = run.commit_seed;
            }
            written += run.valid as u64;
            seed = run.seed;
            if run.stop || whole < buf.len() {
                break;
            }
        }
        if written != committed {
            shadow.set_len(committed).map_err(io)?;
        }
        let copied = committed - sh.size;
        sh.size = committed;
        sh.seed = commit_seed;
        Ok(copied)
    }

    /// Makes the application's WAL non-empty with a write of walship's own (a header is needed to
    /// start or resume a generation).
    fn ensure_wal_exists(&self, w: &Connection) -> Result<()> {
        let len = fs::metadata(&self.wal_path).map(|m| m.len()).unwrap_or(0);
        if len >= HEADER_SIZE as u64 {
            return Ok(());
        }
        w.execute_batch(
            "INSERT INTO _litestream_seq (id, seq) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET seq = seq + 1",
        )
        .map_err(|e| Error::sqlite(format!("{}: write _litestream_seq", self.path.display()), e))
    }

    fn publish(&self, open: &Open) {
        let sh = &open.shadow;
        self.shadow_salts.store(
            (sh.header.salt1 as u64) << 32 | sh.header.salt2 as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let pos = DbPos {
            generation: sh.generation.clone(),
            index: sh.index,
            size: sh.size,
        };
        self.pos_tx.send_if_modified(|cur| {
            if *cur != pos {
                *cur = pos;
                true
            } else {
                false
            }
        });
    }

    /// Removes shadow files of past indexes every replica has shipped; never the current one.
    fn clean_shadows(&self) {
        let cur = self.pos();
        let positions = self
            .replica_positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if positions.is_empty() {
            return;
        }
        let min = first_shadow_needed(positions.values(), &cur.generation, cur.index);
        // The monitor only ever creates the current index's file, which is at or above `min`:
        // with the bound unchanged there is nothing new below it (a directory listing per sync,
        // five system calls, saved ten times a second at a 100 ms sync-interval).
        let mut cleaned = self.cleaned_below.lock().unwrap_or_else(|p| p.into_inner());
        if cleaned
            .as_ref()
            .is_some_and(|(g, below)| *g == cur.generation && *below == min)
        {
            return;
        }
        let Ok(idx) = self.meta.shadow_indexes(&cur.generation) else {
            return;
        };
        let mut all = true;
        for i in idx.into_iter().filter(|&i| i < min) {
            match fs::remove_file(self.meta.shadow_path(&cur.generation, i)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Tried again at the next sync.
                Err(_) => all = false,
            }
        }
        *cleaned = all.then(|| (cur.generation.clone(), min));
    }

    /// The snapshot source; `None` until the database has been opened by a first sync.
    pub fn snapshotter(&self) -> Option<crate::snapshot::FileSnapshotter> {
        self.db_file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(crate::snapshot::FileSnapshotter::new)
    }

    /// Opens shadow bytes `[from, to)` of one index for shipping.
    pub fn open_shadow(
        &self,
        generation: &str,
        index: u32,
        from: u64,
        to: u64,
    ) -> std::io::Result<impl Read + Send> {
        let mut f = File::open(self.meta.shadow_path(generation, index))?;
        f.seek(SeekFrom::Start(from))?;
        Ok(f.take(to.saturating_sub(from)))
    }

    /// Committed length of a past shadow index (the current one is in [`DbPos`]).
    pub fn shadow_len(&self, generation: &str, index: u32) -> Option<u64> {
        fs::metadata(self.meta.shadow_path(generation, index))
            .ok()
            .map(|m| m.len())
    }

    /// Ends the read transaction and closes walship's connections (on shutdown).
    pub fn close(&self) {
        if let Some(open) = self.lock_state().open.take() {
            let _ = open.conns.r.execute_batch("ROLLBACK");
        }
        self.free_slot();
    }

    /// Gives the database a slot of the descriptor budget the monitor waited for; the next sync
    /// that needs to attach uses it.
    pub fn grant(&self, slot: budget::Slot) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(slot);
    }

    fn has_slot(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Called once walship holds no descriptor of the database but its lock.
    fn free_slot(&self) {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// With no connection open (not attached yet, released, or an attach that failed half
    /// way): the database file and `-shm` descriptors go too, having no lock of walship's to
    /// keep, and so does the slot.
    fn let_go(&self) {
        *self.shm_file.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.db_file.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.free_slot();
    }

    /// The descriptor budget this database counts against.
    pub fn budget(&self) -> &Arc<budget::Budget> {
        &self.budget
    }
}

/// Buffer of a shadow copy (whole frames of it): 15 frames of 4 KiB per system call is cheap even
/// for a saturating writer's megabytes, and a steady one keeps no large buffers resident (256 KiB
/// buffers were a tenth of the process at a steady 200 tx/s).
const COPY_BUF: usize = 64 * 1024;

pub(crate) fn wal_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Whether the end mark in the meta directory ([`mark`]) proves that the shadow end `shadow`
/// (generation, index, committed length, header) is where the WAL life before `real` ended.
pub(crate) fn end_marked(
    meta: &MetaDir,
    db: &Path,
    shadow: (&str, u32, u64, &WalHeader),
    real: &WalHeader,
) -> bool {
    mark::EndMark::load(&meta.generation_dir(shadow.0).join(mark::FILE_NAME))
        .is_some_and(|m| m.proves_end(shadow, real, db).unwrap_or(false))
}

/// The WAL's header, or None while the WAL is absent or shorter than a header (after a TRUNCATE
/// checkpoint, before the next commit).
fn read_wal_header(p: &Path) -> Result<Option<WalHeader>> {
    use std::os::unix::fs::FileExt;
    let f = match File::open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("open {}", p.display()), e)),
    };
    let mut b = [0u8; HEADER_SIZE];
    match f.read_exact_at(&mut b, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", p.display()), e)),
    }
    WalHeader::parse(&b)
        .map(Some)
        .map_err(|e| Error::corrupt(format!("{}: {e}", p.display())))
}

/// The database path compared with the file walship has open.
enum FileState {
    Same,
    /// Nothing at the path: paused until a file appears.
    Missing,
    /// Another file (device/inode) at the path.
    Replaced,
}

/// The lowest shadow index that must stay for the replicas at `positions` (shadow files below it
/// may go).
///
/// A replica that moved on to the start of an index (offset 0) has nothing of it yet: its
/// listing still ends in the index before, and that is where a restarted walship finds it. The
/// shadow of that index stays until a segment of the next one is written, or the restart sees
/// "shadow wal needed by the replica is gone", takes a snapshot past the next index, and that
/// index is never shipped (a hole in the generation's WAL chain; crash campaign, 2026-12-04).
fn first_shadow_needed<'a>(
    positions: impl IntoIterator<Item = &'a Pos>,
    generation: &str,
    cur_index: u32,
) -> u32 {
    positions
        .into_iter()
        .map(|p| match p {
            p if p.generation != generation => 0,
            p if p.offset == 0 => p.index.saturating_sub(1),
            p => p.index,
        })
        .min()
        .unwrap_or(0)
        .min(cur_index)
}

/// Whether every replica has stored shadow index `index` of `generation` up to `size` (a
/// replica's position only moves once an upload is durable). No replica known: false.
fn shipped_everywhere<'a>(
    positions: impl IntoIterator<Item = &'a Pos>,
    generation: &str,
    index: u32,
    size: u64,
) -> bool {
    let mut any = false;
    for p in positions {
        any = true;
        let holds = p.generation == generation
            && (p.index > index || (p.index == index && p.offset >= size));
        if !holds {
            return false;
        }
    }
    any
}

/// Takes up the last shadow WAL as the monitor's position, cut to its last commit (a crash may
/// have left an uncommitted tail).
fn adopt_shadow(
    generation: String,
    index: u32,
    scan: &wal::WalScan,
    shadow_path: &Path,
) -> Result<Shadow> {
    truncate_file(shadow_path, scan.committed_len)?;
    Ok(Shadow {
        generation,
        index,
        header: scan.header,
        size: scan.committed_len,
        seed: scan.committed_seed,
    })
}

/// The `len` bytes of `p` at `off`, or None when the file ends before them.
fn read_slot(p: &Path, off: u64, len: u64) -> Result<Option<Vec<u8>>> {
    use std::os::unix::fs::FileExt;
    let f = File::open(p).map_err(|e| Error::io(format!("open {}", p.display()), e))?;
    let mut buf = vec![0u8; len as usize];
    match f.read_exact_at(&mut buf, off) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
    }
}

fn read_at(p: &Path, off: u64, buf: &mut [u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = File::open(p).map_err(|e| Error::io(format!("open {}", p.display()), e))?;
    f.read_exact_at(buf, off)
        .map_err(|e| Error::io(format!("read {}", p.display()), e))
}

fn truncate_file(p: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(p)
        .map_err(|e| Error::io(format!("open {}", p.display()), e))?;
    if f.metadata().map(|m| m.len()).unwrap_or(0) != len {
        f.set_len(len)
            .map_err(|e| Error::io(format!("truncate {}", p.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::tests::build_wal;

    /// An application database in WAL mode that never checkpoints on its own, and walship's
    /// monitor on it after a first sync.
    pub(super) fn app_and_db(d: &Path) -> (Connection, Arc<Db>) {
        let path = d.join("a.db");
        let app = Connection::open(&path).unwrap();
        app.execute_batch(
            "PRAGMA journal_mode = wal; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('first');",
        )
        .unwrap();
        let db = Db::open(&path, DbOptions::default()).unwrap();
        let report = db.sync().unwrap();
        assert!(report.new_generation.is_some(), "the first sync starts one");
        (app, db)
    }

    fn insert(app: &Connection, x: &str) {
        app.execute("INSERT INTO t VALUES (?1)", [x]).unwrap();
    }

    /// Where the last commit of a WAL (or shadow WAL) file ends.
    fn committed_len(p: &Path) -> u64 {
        wal::scan(BufReader::new(File::open(p).unwrap()))
            .unwrap()
            .unwrap()
            .committed_len
    }

    #[test]
    fn every_commit_is_copied_and_a_restart_under_the_proof_continues_in_the_next_index() {
        let d = tempfile::tempdir().unwrap();
        let (app, db) = app_and_db(d.path());
        let g = db.pos().generation;
        insert(&app, "second");
        db.sync().unwrap();
        let shadow0 = db.meta.shadow_path(&g, 0);
        assert_eq!(committed_len(&shadow0), committed_len(db.wal_path()));
        assert_eq!(db.pos().size, committed_len(db.wal_path()));
        // walship's own complete checkpoint, then the application's next commit restarts the WAL.
        {
            let out = checkpoint::tests::checkpoint_now(&db).unwrap();
            assert!(out.complete);
        }
        insert(&app, "after the restart");
        let report = db.sync().unwrap();
        assert_eq!(report.new_generation, None);
        let pos = db.pos();
        assert_eq!((pos.generation.as_str(), pos.index), (g.as_str(), 1));
        assert_eq!(pos.size, committed_len(db.wal_path()));
        assert!(
            pos.size > HEADER_SIZE as u64,
            "the new life's commit was copied"
        );
        assert!(shadow0.exists(), "no replica shipped index 0 yet: it stays");
    }

    #[test]
    fn shadows_behind_every_replica_are_removed_once_per_bound() {
        let d = tempfile::tempdir().unwrap();
        let (app, db) = app_and_db(d.path());
        let g = db.pos().generation;
        for i in 1..=2 {
            {
                let out = checkpoint::tests::checkpoint_now(&db).unwrap();
                assert!(out.complete);
            }
            insert(&app, &format!("index {i}"));
            db.sync().unwrap();
        }
        assert_eq!(db.pos().index, 2);
        let shadow = |i| db.meta.shadow_path(&g, i);
        assert!(shadow(0).exists() && shadow(1).exists());
        // The replica holds index 1 in part: index 0 goes, 1 stays.
        db.set_replica_pos("r", Pos::new(g.clone(), 1, 100));
        db.sync().unwrap();
        assert!(!shadow(0).exists());
        assert!(shadow(1).exists() && shadow(2).exists());
        // With the bound unchanged the directory is not listed again: a file below it that
        // walship did not make stays (the monitor never makes one there).
        std::fs::write(shadow(0), b"stray").unwrap();
        insert(&app, "same index");
        db.sync().unwrap();
        assert!(shadow(0).exists(), "listed again with the bound unchanged");
        // The bound moves: everything below it goes, the stray file too.
        db.set_replica_pos("r", Pos::new(g.clone(), 2, 100));
        db.sync().unwrap();
        assert!(!shadow(0).exists() && !shadow(1).exists());
        assert!(shadow(2).exists());
    }

    #[test]
    fn a_restarted_walship_continues_its_generation_from_the_shadow() {
        let d = tempfile::tempdir().unwrap();
        let (app, db) = app_and_db(d.path());
        let before = db.pos();
        db.close();
        drop(db);
        insert(&app, "while walship was away");
        let db = Db::open(&d.path().join("a.db"), DbOptions::default()).unwrap();
        let report = db.sync().unwrap();
        assert_eq!(report.new_generation, None);
        let after = db.pos();
        assert_eq!(
            (after.generation, after.index),
            (before.generation, before.index)
        );
        assert!(
            after.size > before.size,
            "the commit made meanwhile was copied"
        );
        assert_eq!(after.size, committed_len(db.wal_path()));
    }

    /// Commits walship never copied, then a restart, all while it was away: no proof can cover
    /// them, so resuming would ship a gap.
    #[test]
    fn uncopied_commits_before_a_restart_while_away_start_a_generation() {
        let d = tempfile::tempdir().unwrap();
        let (app, db) = app_and_db(d.path());
        let before = db.pos().generation;
        db.close();
        drop(db);
        insert(&app, "never copied");
        app.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
            .unwrap();
        insert(&app, "in the next life");
        let db = Db::open(&d.path().join("a.db"), DbOptions::default()).unwrap();
        let report = db.sync().unwrap();
        let g = report.new_generation.expect("a new generation");
        assert_ne!(g, before);
        assert_eq!(db.pos().index, 0);
    }

    #[test]
    fn damage_to_the_meta_directory_or_a_replaced_database_starts_a_generation() {
        let d = tempfile::tempdir().unwrap();
        let (app, db) = app_and_db(d.path());
        let g1 = db.pos().generation;
        // The generation file removed by hand.
        fs::remove_file(db.meta.generation_file()).unwrap();
        insert(&app, "after the damage");
        let g2 = db.sync().unwrap().new_generation.expect("new generation");
        assert_ne!(g2, g1);
        assert_eq!(
            db.meta.read_generation().unwrap().as_deref(),
            Some(g2.as_str())
        );
        // The current shadow WAL cut short.
        let sp = db.meta.shadow_path(&g2, 0);
        OpenOptions::new()
            .write(true)
            .open(&sp)
            .unwrap()
            .set_len(HEADER_SIZE as u64)
            .unwrap();
        let g3 = db.sync().unwrap().new_generation.expect("new generation");
        assert_ne!(g3, g2);
        // Another database file moved into place (a restore by hand): the next generation's
        // snapshot must come from it, so walship reopens.
        drop(app);
        let other = d.path().join("other.db");
        let c = Connection::open(&other).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = wal; CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('other');",
        )
        .unwrap();
        drop(c);
        fs::rename(&other, d.path().join("a.db")).unwrap();
        let _ = fs::remove_file(d.path().join("a.db-wal"));
        let _ = fs::remove_file(d.path().join("a.db-shm"));
        let report = db.sync().unwrap();
        let g4 = report
            .new_generation
            .expect("new generation for the new file");
        assert_ne!(g4, g3);
        assert_eq!(db.pos().size, committed_len(db.wal_path()));
    }

    #[test]
    fn the_shadow_a_restarted_replica_resumes_from_stays() {
        let p = |g: &str, index, offset| Pos::new(g.to_string(), index, offset);
        // Moved on to index 13 with nothing shipped there yet: 12 is what its listing shows.
        assert_eq!(first_shadow_needed(&[p("g", 13, 0)], "g", 14), 12);
        assert_eq!(first_shadow_needed(&[p("g", 13, 4152)], "g", 14), 13);
        assert_eq!(first_shadow_needed(&[p("g", 0, 0)], "g", 3), 0);
        // The slowest replica decides; one in another generation (about to snapshot) keeps all.
        assert_eq!(
            first_shadow_needed(&[p("g", 13, 4152), p("g", 9, 100)], "g", 14),
            9
        );
        assert_eq!(first_shadow_needed(&[p("old", 40, 9)], "g", 14), 0);
        // Never past the monitor's own index.
        assert_eq!(first_shadow_needed(&[p("g", 20, 9)], "g", 14), 14);
    }

    #[test]
    fn an_index_every_replica_holds_needs_no_sync() {
        let p = |g: &str, index, offset| Pos::new(g.to_string(), index, offset);
        let shipped = |ps: &[Pos]| shipped_everywhere(ps, "g", 7, 5000);
        assert!(shipped(&[p("g", 7, 5000)]));
        assert!(shipped(&[p("g", 7, 5000), p("g", 8, 0)]));
        // One replica short of the end, on another generation, or none known: sync.
        assert!(!shipped(&[p("g", 7, 5000), p("g", 7, 4000)]));
        assert!(!shipped(&[p("g", 6, 9000)]));
        assert!(!shipped(&[p("old", 9, 0)]));
        assert!(!shipped(&[]));
    }

    #[test]
    fn empty_or_missing_wal_has_no_header() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.db-wal");
        assert!(read_wal_header(&p).unwrap().is_none());
        fs::write(&p, b"").unwrap();
        assert!(read_wal_header(&p).unwrap().is_none());
        fs::write(&p, &build_wal(4096, (1, 2), 0, &[])[..20]).unwrap();
        assert!(read_wal_header(&p).unwrap().is_none());
        fs::write(&p, build_wal(4096, (1, 2), 0, &[1])).unwrap();
        assert_eq!(read_wal_header(&p).unwrap().unwrap().salt1, 1);
        fs::write(&p, [0xffu8; 32]).unwrap();
        let e = read_wal_header(&p).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{e}");
    }
}

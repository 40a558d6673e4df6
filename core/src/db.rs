//! The database monitor: copies committed WAL frames into the shadow WAL and runs checkpoints
//! without ever letting SQLite discard a frame walship has not copied.
//!
//! # The no-lost-frame invariant
//! walship keeps a read transaction open on connection `R` at all times. While it is open, SQLite
//! can restart the WAL (overwrite it from the start with new salts) at most once, and only when
//! the WAL was fully backfilled *before* `R` began. `R` is therefore only ever ended and re-begun
//! while connection `W` holds the write lock (`BEGIN IMMEDIATE`), right after copying every
//! committed frame: no frame can appear between the copy and the moment a restart becomes
//! possible. That moment is recorded ([`Proof`]); a later WAL header whose salt-1 is exactly one
//! more (SQLite adds 1 at each restart) continues the generation in the next index. The header's
//! checkpoint sequence is no evidence: SQLite counts it per connection, so an application that
//! reconnected writes 1 at its first restart. Every other change of the WAL starts a new
//! generation with a logged reason, never a gap.
//!
//! Every step that ends and re-begins `R` first checks, under the write lock, that the WAL still
//! has the header the last sync saw (`wal_unchanged`): an application may restart the WAL once
//! under a standing proof at any moment, and a checkpoint that missed that restart would backfill
//! a life walship never copied and re-pin with a proof naming the old header, so the next commit
//! restarts the WAL a second time (seen in the crash campaign as "two restarts under a proof",
//! fixed 2026-12-04; regression test `a_restart_just_before_a_checkpoint_is_left_to_the_next_sync`).
//! With `R` pinned, a second restart can only follow a life without a frame (two TRUNCATE
//! checkpoints in a row); exactly one restart is still required, so that rare case costs a new
//! generation rather than trust in a reading of SQLite's locking.
//!
//! # Restarts while no walship ran
//! At start-up nothing pinned the WAL. A restart continues the generation only when it was
//! exactly one (salt-1 + 1; the checkpoint sequence is no evidence: SQLite counts it per
//! connection) and the WAL file still shows that nothing was committed after the frames walship
//! had copied ([`wal::life_ended_at`]); otherwise a new generation with the reason logged, never a
//! gap.
//!
//! # What else starts a new generation
//! Damage to walship's own meta directory (generation file or current shadow WAL missing or
//! short), checked at every sync, and a database file replaced under walship's descriptors
//! (another device/inode at the path): the next snapshot must come from the file the
//! application now uses, never from a descriptor of the old one.

use crate::error::{Error, Result};
use crate::layout::{new_generation, Pos, MAX_INDEX};
use crate::meta::{default_meta_dir, InstanceLock, MetaDir};
use crate::sqlite::{self, checkpoint, CheckpointMode};
use crate::wal::{self, FrameReader, WalHeader, HEADER_SIZE};
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
    /// This process answers `walship snapshot` requests (a running `replicate`); the lock file
    /// says so, and only then does `walship snapshot` signal the holder.
    pub takes_requests: bool,
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
            takes_requests: false,
        }
    }
}

/// What starting on an existing meta directory decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// The meta directory provably describes this WAL: the generation goes on.
    Continue,
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

/// Recorded under `W`: shadow `index` held every frame of the WAL life `header` when `R` began.
#[derive(Debug, Clone, Copy)]
struct Proof {
    index: u32,
    header: WalHeader,
}

struct Conns {
    r: Connection,
    w: Connection,
}

struct State {
    conns: Option<Conns>,
    generation: String,
    index: u32,
    header: Option<WalHeader>,
    size: u64,
    seed: (u32, u32),
    proof: Option<Proof>,
    /// When walship last attempted a checkpoint (none yet: the first one is not held back).
    last_checkpoint: Option<Instant>,
    /// When monitoring began: checkpoint-interval counts from here until a first checkpoint.
    started: Instant,
    /// (index, size) at the last complete checkpoint: nothing new to checkpoint since.
    checkpointed_at: Option<(u32, u64)>,
    /// Set while `R` reads the database file itself (it began on a fully backfilled WAL, so
    /// SQLite gave it read-mark 0), with the index it began in. That still blocks every backfill,
    /// as it must, but each application commit beyond its autocheckpoint threshold then sorts the
    /// whole WAL index for a checkpoint that cannot proceed; measured, that was half of a
    /// saturating writer's time. Once the WAL has restarted, `R` moves onto it (read-mark >= 1:
    /// the application backfills up to it once, then its attempts stop early).
    reader_on_db_file: Option<u32>,
    /// Device and inode of the database file walship's connections and descriptor refer to.
    file_id: Option<(u64, u64)>,
    /// The database path had no file at the last sync (logged once, then quiet).
    file_missing: bool,
    /// Set when the next (re)initialisation must start a new generation, with the reason.
    force_new_generation: Option<&'static str>,
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
    replica_positions: Mutex<BTreeMap<String, Pos>>,
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
        Ok(Arc::new(Db {
            wal_path: wal_path_of(&path),
            path,
            meta,
            opts,
            state: Mutex::new(State {
                conns: None,
                generation: String::new(),
                index: 0,
                header: None,
                size: 0,
                seed: (0, 0),
                proof: None,
                last_checkpoint: None,
                started: Instant::now(),
                checkpointed_at: None,
                reader_on_db_file: None,
                file_id: None,
                file_missing: false,
                force_new_generation: None,
            }),
            pos_tx,
            shadow_salts: std::sync::atomic::AtomicU64::new(0),
            gate: Arc::new(RwLock::new(())),
            replica_positions: Mutex::new(BTreeMap::new()),
            db_file: Mutex::new(None),
            shm_file: Mutex::new(None),
            lock: Mutex::new(lock),
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
    /// Page size of the WAL the shadow follows; None before a sync has read a WAL header, or after
    /// the database file was replaced (until the next sync opens the new one).
    pub fn page_size(&self) -> Option<u32> {
        self.lock_state().header.map(|h| h.page_size)
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
        let report = self.sync_locked(&mut st)?;
        if st.conns.is_none() {
            return Ok(report);
        }
        self.publish(&st);
        drop(st);
        self.clean_shadows();
        Ok(report)
    }

    fn sync_locked(&self, st: &mut State) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        if st.conns.is_some() {
            match self.file_state(st)? {
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
        if st.conns.is_none() {
            if !self.path.exists() {
                return Ok(report);
            }
            self.init(st, &mut report)?;
        }
        // An empty WAL (an application's TRUNCATE checkpoint) is a normal state: nothing to copy
        // until the next commit writes a header. walship must not write one itself: its own
        // connection may never have restarted the WAL, and SQLite then gives the new header
        // random salts, which no proof can follow.
        let Some(real) = read_wal_header(&self.wal_path)? else {
            return Ok(report);
        };
        let Some(cur) = st.header else {
            return Err(Error::new(
                crate::ErrorKind::Other,
                format!("{}: monitor state has no WAL header", self.path.display()),
            ));
        };
        if let Some(reason) = self.meta_damage(st) {
            self.with_write_lock(st, |db, st| db.new_generation(st, reason))?;
            report.new_generation = Some(st.generation.clone());
            self.relock();
        } else if real.raw != cur.raw {
            match st.proof {
                // Exactly one restart (salt-1 + 1) since the proof: a relaxed rule that took any
                // new header let a life through whose frames were never copied (crash campaign on
                // S3, 2026-12-04, before `wal_unchanged` guarded every re-pin). It stays the last
                // line of defence.
                Some(p)
                    if p.index == st.index
                        && p.header == cur
                        && proves_one_restart(&p.header, &real) =>
                {
                    if st.index < MAX_INDEX {
                        let next = st.index + 1;
                        self.start_index(st, next, real)?;
                        st.proof = None;
                    } else {
                        self.with_write_lock(st, |db, st| {
                            db.new_generation(st, "max index exceeded")
                        })?;
                        report.new_generation = Some(st.generation.clone());
                    }
                }
                _ => {
                    // Details for a post-mortem: with every re-pin guarded this should only
                    // follow two TRUNCATE checkpoints in a row (ARCHITECTURE.md, monitor invariant 3).
                    tracing::info!(
                        db = %self.path.display(),
                        index = st.index,
                        proof_index = st.proof.map(|p| p.index),
                        proof_salt1 = st.proof.map(|p| format!("{:08x}", p.header.salt1)),
                        shadow_salt1 = format!("{:08x}", cur.salt1),
                        wal_salt1 = format!("{:08x}", real.salt1),
                        reader_on_db_file = ?st.reader_on_db_file,
                        "wal restarted without a proof"
                    );
                    let reason =
                        "wal restarted while walship could not prove it had copied every frame";
                    self.with_write_lock(st, |db, st| db.new_generation(st, reason))?;
                    report.new_generation = Some(st.generation.clone());
                }
            }
        } else if let Some(reason) = self.overwritten(st)? {
            self.with_write_lock(st, |db, st| db.new_generation(st, reason))?;
            report.new_generation = Some(st.generation.clone());
        }
        report.copied_bytes += self.copy_frames(st, Some(self.opts.max_copy_bytes))?;
        if st.reader_on_db_file.is_some_and(|i| i < st.index) {
            match self.with_write_lock(st, |db, st| db.wal_unchanged(st)) {
                Ok(()) => {}
                // Busy: the next sync tries again.
                Err(e) if e.kind() == crate::ErrorKind::Transient => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(mode) = self.checkpoint_due(st) {
            report.checkpoint = self.checkpoint(st, mode)?;
        }
        Ok(report)
    }

    /// Whether the database path still names the file walship's descriptors refer to.
    fn file_state(&self, st: &mut State) -> Result<FileState> {
        use std::os::unix::fs::MetadataExt;
        match fs::metadata(&self.path) {
            Ok(m) => {
                if st.file_missing {
                    st.file_missing = false;
                    tracing::info!(db = %self.path.display(), "database file is back");
                }
                Ok(if st.file_id.is_some_and(|id| id != (m.dev(), m.ino())) {
                    FileState::Replaced
                } else {
                    FileState::Same
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !st.file_missing {
                    st.file_missing = true;
                    tracing::warn!(db = %self.path.display(), "database file is gone: replication paused until it returns (the replica is kept as it is)");
                }
                Ok(FileState::Missing)
            }
            Err(e) => Err(Error::io(format!("stat {}", self.path.display()), e)),
        }
    }

    /// Closes walship's connections and descriptors of a replaced database file, so the next
    /// initialisation opens the new one and starts a new generation. False when a snapshot is
    /// reading the old file right now.
    fn detach(&self, st: &mut State, reason: &'static str) -> bool {
        let Ok(_gate) = self.gate.try_write() else {
            return false;
        };
        tracing::warn!(db = %self.path.display(), generation = %st.generation, reason, "reopening the database");
        // walship's connections keep the WAL on close (see `sqlite::open`), so closing the old
        // file's connections never deletes the `-wal` a new file now uses at the same path.
        if let Some(c) = st.conns.take() {
            let _ = c.r.execute_batch("ROLLBACK");
            drop(c);
        }
        // Only after the connections: closing it earlier would drop their POSIX locks on -shm.
        *self.shm_file.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.db_file.lock().unwrap_or_else(|p| p.into_inner()) = None;
        st.header = None;
        st.proof = None;
        st.file_id = None;
        st.checkpointed_at = None;
        st.reader_on_db_file = None;
        st.force_new_generation = Some(reason);
        true
    }

    /// Damage to the meta directory that would make walship copy into nothing or ship a gap.
    fn meta_damage(&self, st: &State) -> Option<&'static str> {
        match self.meta.read_generation() {
            Ok(Some(g)) if g == st.generation => {}
            Ok(Some(_)) => return Some("generation file changed by another process"),
            Ok(None) => return Some("no generation exists"),
            Err(_) => return Some("generation file unreadable"),
        }
        match fs::metadata(self.meta.shadow_path(&st.generation, st.index)) {
            Ok(m) if m.len() >= st.size => None,
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

    fn init(&self, st: &mut State, report: &mut SyncReport) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let id = |f: &File| f.metadata().map(|m| (m.dev(), m.ino()));
        let stat = |e| Error::io(format!("stat {}", self.path.display()), e);
        {
            // A descriptor of the same file is kept, never replaced: snapshots may hold clones,
            // and closing any descriptor of the file would drop our connections' locks on it.
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
            st.file_id = Some(id(&f).map_err(stat)?);
        }
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
        st.conns = Some(Conns { r, w });
        {
            let mut shm = self.shm_file.lock().unwrap_or_else(|p| p.into_inner());
            if shm.is_none() {
                // After our connections exist, so SQLite created the file, not us.
                let mut p = self.path.as_os_str().to_owned();
                p.push("-shm");
                *shm = File::open(PathBuf::from(p)).ok().map(Arc::new);
            }
        }
        // The application may empty the WAL (TRUNCATE) between our write and our write lock.
        let mut attempts = 0;
        let res = loop {
            attempts += 1;
            if let Err(e) = self.ensure_wal_exists(st) {
                break Err(e);
            }
            let mut empty = false;
            let res = self.with_write_lock(st, |db, st| {
                let Some(hdr) = read_wal_header(&db.wal_path)? else {
                    empty = true;
                    return Err(Error::transient(format!(
                        "{}: the WAL was emptied while walship started",
                        db.wal_path.display()
                    )));
                };
                let decision = match st.force_new_generation.take() {
                    Some(reason) => Resume::NewGeneration(reason),
                    None => db.resume(st, &hdr)?,
                };
                match decision {
                    Resume::Continue => {
                        tracing::info!(db = %db.path.display(), position = %st_pos(st), "initialized db, continuing generation");
                    }
                    Resume::NewGeneration(reason) => {
                        db.new_generation(st, reason)?;
                        report.new_generation = Some(st.generation.clone());
                    }
                }
                Ok(())
            });
            if empty && attempts < 5 {
                continue;
            }
            if empty {
                // An application emptying the WAL this often: not an error, start at the next sync.
                tracing::debug!(db = %self.path.display(), "WAL emptied during start-up; trying again at the next sync");
                st.conns = None;
                return Ok(());
            }
            break res;
        };
        if let Err(e) = res {
            st.conns = None;
            return Err(e);
        }
        Ok(())
    }

    /// Continues the generation in the meta directory if it provably describes this WAL.
    fn resume(&self, st: &mut State, real: &WalHeader) -> Result<Resume> {
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
            adopt_shadow(st, generation, index, &scan, &shadow_path)?;
            self.start_index(st, index + 1, *real)?;
            tracing::info!(db = %self.path.display(), generation = %st.generation, index = st.index, "the wal restarted once while walship was not running, after walship had copied all of it: continuing in the next index");
            return Ok(Resume::Continue);
        }
        let real_len = fs::metadata(&self.wal_path).map(|m| m.len()).unwrap_or(0);
        if real_len < scan.committed_len {
            return Ok(Resume::NewGeneration("wal truncated by another process"));
        }
        // The shadow may hold an uncommitted tail after a crash: cut it, then compare the last frame.
        adopt_shadow(st, generation, index, &scan, &shadow_path)?;
        if let Some(reason) = self.overwritten(st)? {
            return Ok(Resume::NewGeneration(reason));
        }
        Ok(Resume::Continue)
    }

    /// v0.3's check that the last copied frame is still in the real WAL, byte for byte.
    fn overwritten(&self, st: &State) -> Result<Option<&'static str>> {
        let h = st.header.expect("header");
        if st.size <= HEADER_SIZE as u64 {
            return Ok(None);
        }
        let fs_ = h.frame_size();
        let start = st.size - fs_;
        let mut a = vec![0u8; fs_ as usize];
        let mut b = vec![0u8; fs_ as usize];
        let sp = self.meta.shadow_path(&st.generation, st.index);
        read_at(&sp, start, &mut a)?;
        let real_len = fs::metadata(&self.wal_path).map(|m| m.len()).unwrap_or(0);
        if real_len < st.size {
            return Ok(Some("wal truncated by another process"));
        }
        read_at(&self.wal_path, start, &mut b)?;
        Ok((a != b).then_some("wal overwritten by another process"))
    }

    fn new_generation(&self, st: &mut State, reason: &str) -> Result<()> {
        let generation = new_generation();
        let real = read_wal_header(&self.wal_path)?.ok_or_else(|| {
            Error::transient(format!("{}: the WAL is empty", self.wal_path.display()))
        })?;
        // The WAL just read must belong to the file the snapshot will be read from.
        if matches!(
            self.file_state(st)?,
            FileState::Replaced | FileState::Missing
        ) {
            return Err(Error::transient(format!(
                "{}: the database file changed while a new generation began",
                self.path.display()
            )));
        }
        self.meta.create_dir(&self.meta.root)?;
        st.generation = generation.clone();
        st.checkpointed_at = None;
        self.start_index(st, 0, real)?;
        self.copy_frames(st, None)?;
        self.meta.write_generation(&generation)?;
        self.meta.remove_other_generations(&generation);
        tracing::info!(db = %self.path.display(), generation = %generation, reason, "sync: new generation");
        Ok(())
    }

    /// Begins shadow file `index` with the real WAL's header.
    ///
    /// Shadow files are written without a sync per copy (at a saturating writer's rate, that
    /// forced hundreds of MB/s of shadow data to disk that is deleted once shipped). What makes
    /// that safe is this: after a power loss the current index is checked frame by frame against
    /// the real WAL and copied again or replaced by a new generation, but an earlier index is
    /// trusted to be complete, so it is synced here, before its successor exists.
    fn start_index(&self, st: &mut State, index: u32, header: WalHeader) -> Result<()> {
        if index > 0 && index == st.index + 1 {
            let prev = self.meta.shadow_path(&st.generation, st.index);
            let io = |e| Error::io(format!("sync {}", prev.display()), e);
            File::open(&prev).and_then(|f| f.sync_data()).map_err(io)?;
        }
        let dir = self.meta.shadow_dir(&st.generation);
        self.meta.create_dir(&dir)?;
        let p = self.meta.shadow_path(&st.generation, index);
        let io = |e| Error::io(format!("write {}", p.display()), e);
        let mut f = File::create(&p).map_err(io)?;
        self.meta.own_file(&p);
        f.write_all(&header.raw).map_err(io)?;
        f.sync_data().map_err(io)?;
        st.index = index;
        st.header = Some(header);
        st.size = HEADER_SIZE as u64;
        st.seed = header.checksum;
        Ok(())
    }

    /// Appends validated, committed frames of the real WAL to the shadow WAL.
    fn copy_frames(&self, st: &mut State, limit: Option<u64>) -> Result<u64> {
        let h = st.header.expect("header");
        let mut real = File::open(&self.wal_path)
            .map_err(|e| Error::io(format!("open {}", self.wal_path.display()), e))?;
        let end = real.metadata().map(|m| m.len()).unwrap_or(0);
        if end < st.size + h.frame_size() {
            return Ok(0);
        }
        real.seek(SeekFrom::Start(st.size))
            .map_err(|e| Error::io(format!("seek {}", self.wal_path.display()), e))?;
        let budget = limit.unwrap_or(u64::MAX);
        let sp = self.meta.shadow_path(&st.generation, st.index);
        let io = |e| Error::io(format!("write {}", sp.display()), e);
        let mut shadow = OpenOptions::new().write(true).open(&sp).map_err(io)?;
        shadow.seek(SeekFrom::Start(st.size)).map_err(io)?;
        let mut out = std::io::BufWriter::with_capacity(COPY_BUF, shadow);
        // Read no further than the WAL's size now: a writer that keeps appending cannot make one
        // sync copy forever.
        let mut fr = FrameReader::new(
            BufReader::with_capacity(COPY_BUF, real.take(end - st.size)),
            h,
            st.seed,
        );
        let mut written = st.size;
        let mut committed = st.size;
        let mut seed = st.seed;
        while let Some((fh, bytes)) = fr
            .next_frame()
            .map_err(|e| Error::io(format!("read {}", self.wal_path.display()), e))?
        {
            out.write_all(bytes).map_err(io)?;
            written += bytes.len() as u64;
            if fh.commit_size != 0 {
                committed = written;
                seed = fh.checksum;
                if committed - st.size >= budget {
                    break;
                }
            }
        }
        let shadow = out.into_inner().map_err(|e| io(e.into_error()))?;
        if written != committed {
            shadow.set_len(committed).map_err(io)?;
        }
        let copied = committed - st.size;
        st.size = committed;
        st.seed = seed;
        Ok(copied)
    }

    fn ensure_wal_exists(&self, st: &mut State) -> Result<()> {
        let len = fs::metadata(&self.wal_path).map(|m| m.len()).unwrap_or(0);
        if len >= HEADER_SIZE as u64 {
            return Ok(());
        }
        let c = &st.conns.as_ref().expect("conns").w;
        c.execute_batch(
            "INSERT INTO _litestream_seq (id, seq) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET seq = seq + 1",
        )
        .map_err(|e| Error::sqlite(format!("{}: write _litestream_seq", self.path.display()), e))
    }

    /// Runs `f` holding SQLite's write lock on `W`, then (re)opens `R` after copying every frame,
    /// and records the proof that makes one later WAL restart a continuation.
    fn with_write_lock(
        &self,
        st: &mut State,
        f: impl FnOnce(&Db, &mut State) -> Result<()>,
    ) -> Result<()> {
        let conns = st.conns.take().expect("conns");
        let res = (|| {
            conns.w.execute_batch("BEGIN IMMEDIATE").map_err(|e| {
                if is_busy(&e) {
                    Error::transient(format!("{}: write lock busy", self.path.display()))
                } else {
                    Error::sqlite(format!("{}: take write lock", self.path.display()), e)
                }
            })?;
            let inner = (|| {
                // Before `R` ends: an `f` that refuses (see `wal_unchanged`) leaves `R` and its
                // proof as they were.
                f(self, st)?;
                let _ = conns.r.execute_batch("ROLLBACK");
                // `R` no longer pins the WAL: an old proof must not vouch for a later restart.
                st.proof = None;
                self.copy_frames(st, None)?;
                begin_read(&conns.r, &self.path)?;
                st.reader_on_db_file =
                    (st.checkpointed_at == Some((st.index, st.size))).then_some(st.index);
                st.proof = Some(Proof {
                    index: st.index,
                    header: st.header.expect("header"),
                });
                Ok(())
            })();
            let _ = conns.w.execute_batch("ROLLBACK");
            inner
        })();
        st.conns = Some(conns);
        res
    }

    /// Refuses (transient) when the WAL restarted since the sync compared headers; called under
    /// `W`'s write lock, where no restart can happen.
    ///
    /// Every step that ends `R` and begins it again would otherwise copy up to the old life's end
    /// only (the copy stops at the first frame with the new salts), backfill or unpin the new life
    /// without having copied it, and record a proof naming the old header: the application's next
    /// commit then restarts the WAL a second time and the frames of the life between are gone
    /// (the crash campaign's "two restarts under a proof"). Left alone, `R` still pins: the next
    /// sync sees exactly one restart under the standing proof and continues in the next index.
    fn wal_unchanged(&self, st: &State) -> Result<()> {
        let real = read_wal_header(&self.wal_path)?;
        if real.map(|h| h.raw) == st.header.map(|h| h.raw) {
            return Ok(());
        }
        Err(Error::transient(format!(
            "{}: the WAL restarted since the last look; the next sync continues from it",
            self.wal_path.display()
        )))
    }

    /// The v0.3 checkpoint policy (format §7); returns the v0.3 mode name it would have used.
    fn checkpoint_due(&self, st: &State) -> Option<CheckpointMode> {
        let h = st.header?;
        if st.checkpointed_at == Some((st.index, st.size)) || st.size <= HEADER_SIZE as u64 {
            return None;
        }
        let pages = (st.size - HEADER_SIZE as u64) / h.frame_size();
        let o = &self.opts;
        if o.truncate_page_count > 0 && pages >= o.truncate_page_count {
            Some(CheckpointMode::Truncate)
        } else if o.max_checkpoint_page_count > 0 && pages >= o.max_checkpoint_page_count {
            Some(CheckpointMode::Restart)
        } else if (pages >= o.min_checkpoint_page_count
            // Syncs can come faster than monitor-interval under a heavy writer; v0.3 made at most
            // one PASSIVE attempt per interval, and so do we below the RESTART threshold.
            && st.last_checkpoint.is_none_or(|t| t.elapsed() >= o.monitor_interval))
            || (!o.checkpoint_interval.is_zero()
                && st.last_checkpoint.unwrap_or(st.started).elapsed() >= o.checkpoint_interval)
        {
            Some(CheckpointMode::Passive)
        } else {
            None
        }
    }

    /// Backfills the WAL into the database so the next writer restarts it, without losing a frame.
    ///
    /// Always a PASSIVE checkpoint: RESTART and TRUNCATE would wait on application readers while
    /// holding up application writers (v0.3.13's #724 outage).
    fn checkpoint(
        &self,
        st: &mut State,
        mode: CheckpointMode,
    ) -> Result<Option<CheckpointOutcome>> {
        // A snapshot is reading the database file: leave `R` alone until it is done.
        let Ok(_gate) = self.gate.try_write() else {
            return Ok(None);
        };
        let started = Instant::now();
        let mut round_lock_waits = [Duration::ZERO; 2];
        // Move `R`'s read mark to the end of the WAL under a brief write lock, then do the bulk of
        // the backfill up to it while application writers keep going; the locked step below only
        // backfills what was committed meanwhile. A busy writer appends thousands of frames while
        // a bulk backfill runs, and backfilling them under the lock kept it 10-15 ms: a second
        // round takes most of them, and the WAL is flushed before the lock, so the locked
        // checkpoint's own WAL sync has only the last moments to write.
        if st.size > HEADER_SIZE as u64 {
            let frame = st.header.expect("header").frame_size();
            let mut busy = false;
            for (round, lock_wait) in round_lock_waits.iter_mut().enumerate() {
                let before = crate::pace::wal_mark(&self.wal_path, self.shm_file().as_deref());
                // Copied first without the lock: a locked copy of megabytes holds writers up.
                self.copy_frames(st, None)?;
                let t = Instant::now();
                let locked = self.with_write_lock(st, |db, st| db.wal_unchanged(st));
                *lock_wait = t.elapsed();
                match locked {
                    Ok(()) => {
                        let _ = checkpoint(
                            &st.conns.as_ref().expect("conns").w,
                            CheckpointMode::Passive,
                        );
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
            self.copy_frames(st, None)?;
        }
        let waited = Instant::now();
        let conns = st.conns.as_ref().expect("conns");
        if let Err(e) = conns.w.execute_batch("BEGIN IMMEDIATE") {
            tracing::debug!(db = %self.path.display(), error = %e, "checkpoint skipped: write lock busy");
            return Ok(None);
        }
        let held = Instant::now();
        let lock_wait = held - waited;
        let res = (|| -> Result<Option<bool>> {
            let t = Instant::now();
            let copied = self.copy_frames(st, None)?;
            let copy_took = t.elapsed();
            if let Err(e) = self.wal_unchanged(st) {
                tracing::debug!(db = %self.path.display(), error = %e, "checkpoint skipped");
                return Ok(None);
            }
            let conns = st.conns.as_ref().expect("conns");
            let _ = conns.r.execute_batch("ROLLBACK");
            st.proof = None;
            // An application's own checkpoint may hold the checkpointer lock for a moment (busy,
            // log = -1): retry briefly rather than give up the whole cycle.
            let mut ck = checkpoint(&conns.r, CheckpointMode::Passive);
            for _ in 0..50 {
                match &ck {
                    Ok(c) if c.busy && c.log < 0 => {
                        std::thread::sleep(Duration::from_micros(200));
                        ck = checkpoint(&conns.r, CheckpointMode::Passive);
                    }
                    _ => break,
                }
            }
            begin_read(&conns.r, &self.path)?;
            st.proof = Some(Proof {
                index: st.index,
                header: st.header.expect("header"),
            });
            let ck =
                ck.map_err(|e| Error::sqlite(format!("{}: checkpoint", self.path.display()), e))?;
            let h = st.header.expect("header");
            let frames = ((st.size - HEADER_SIZE as u64) / h.frame_size()) as i64;
            tracing::debug!(db = %self.path.display(), busy = ck.busy, log = ck.log, checkpointed = ck.checkpointed, frames, copied, ?copy_took, backfill_took = ?t.elapsed() - copy_took, "passive checkpoint");
            Ok(Some(
                !ck.busy && ck.log == ck.checkpointed && ck.log == frames,
            ))
        })();
        let _ = st
            .conns
            .as_ref()
            .expect("conns")
            .w
            .execute_batch("ROLLBACK");
        let lock_held = held.elapsed();
        let Some(complete) = res? else {
            return Ok(None);
        };
        st.last_checkpoint = Some(Instant::now());
        if complete {
            st.checkpointed_at = Some((st.index, st.size));
            st.reader_on_db_file = Some(st.index);
        }
        tracing::debug!(db = %self.path.display(), %mode, complete, ?lock_wait, ?lock_held, ?round_lock_waits, took = ?started.elapsed(), "checkpoint");
        Ok(Some(CheckpointOutcome {
            mode,
            complete,
            lock_wait,
            lock_held,
        }))
    }

    fn publish(&self, st: &State) {
        if let Some(h) = st.header {
            self.shadow_salts.store(
                (h.salt1 as u64) << 32 | h.salt2 as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let pos = DbPos {
            generation: st.generation.clone(),
            index: st.index,
            size: st.size,
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
        if let Ok(idx) = self.meta.shadow_indexes(&cur.generation) {
            for i in idx.into_iter().filter(|&i| i < min) {
                let _ = fs::remove_file(self.meta.shadow_path(&cur.generation, i));
            }
        }
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
        let mut st = self.lock_state();
        if let Some(c) = st.conns.take() {
            let _ = c.r.execute_batch("ROLLBACK");
        }
    }
}

/// Buffer size of each side of a shadow copy: 16 frames of 4 KiB per system call is cheap even
/// for a saturating writer's megabytes, and a steady one keeps no large buffers resident (256 KiB
/// buffers were a tenth of the process at a steady 200 tx/s).
const COPY_BUF: usize = 64 * 1024;

pub(crate) fn wal_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
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
fn write_lock_busy(attempt: i32) -> bool {
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

fn st_pos(st: &State) -> Pos {
    Pos::new(st.generation.clone(), st.index, st.size)
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

/// Whether `next` is the header SQLite writes after exactly one restart of the WAL whose header
/// was `proven`: salt-1 one more, wrapping. The checkpoint sequence is not evidence (SQLite keeps
/// it per connection, and a reconnected application starts again from 0).
pub(crate) fn proves_one_restart(proven: &WalHeader, next: &WalHeader) -> bool {
    next.salt1 == proven.salt1.wrapping_add(1) && next.page_size == proven.page_size
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

/// Takes up the last shadow WAL as the monitor's position, cut to its last commit (a crash may
/// have left an uncommitted tail).
fn adopt_shadow(
    st: &mut State,
    generation: String,
    index: u32,
    scan: &wal::WalScan,
    shadow_path: &Path,
) -> Result<()> {
    truncate_file(shadow_path, scan.committed_len)?;
    st.generation = generation;
    st.index = index;
    st.header = Some(scan.header);
    st.size = scan.committed_len;
    st.seed = scan.committed_seed;
    Ok(())
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

    fn header(salt1: u32, salt2: u32, ckpt: u32) -> WalHeader {
        WalHeader::parse(&build_wal(4096, (salt1, salt2), ckpt, &[])).unwrap()
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
        let path = d.path().join("a.db");
        let app = Connection::open(&path).unwrap();
        app.execute_batch(
            "PRAGMA journal_mode = wal; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('before');",
        )
        .unwrap();
        let db = Db::open(&path, DbOptions::default()).unwrap();
        db.sync().unwrap();
        let generation = db.pos().generation;
        let salt1 = || {
            read_wal_header(&d.path().join("a.db-wal"))
                .unwrap()
                .unwrap()
                .salt1
        };
        {
            // walship's own complete checkpoint: `R` now reads the database file only.
            let mut st = db.lock_state();
            let out = db
                .checkpoint(&mut st, CheckpointMode::Passive)
                .unwrap()
                .unwrap();
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
            let mut st = db.lock_state();
            db.checkpoint(&mut st, CheckpointMode::Passive).unwrap();
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

//! The database monitor: copies committed WAL frames into the shadow WAL and runs checkpoints
//! without ever letting SQLite discard a frame walship has not copied.
//!
//! # The no-lost-frame invariant
//! walship keeps a read transaction open on connection `R` at all times. While it is open, SQLite
//! can restart the WAL (overwrite it from the start with new salts) at most once, and only when
//! the WAL was fully backfilled *before* `R` began. `R` is therefore only ever ended and re-begun
//! while connection `W` holds the write lock (`BEGIN IMMEDIATE`), right after copying every
//! committed frame: no frame can appear between the copy and the moment a restart becomes
//! possible. That moment is recorded ([`Proof`]); a later WAL header with exactly one more
//! checkpoint sequence continues the generation in the next index. Every other change of the WAL
//! starts a new generation with a logged reason, never a gap.

use crate::error::{Error, Result};
use crate::layout::{new_generation, Pos, MAX_INDEX};
use crate::meta::{default_meta_dir, InstanceLock, MetaDir};
use crate::sqlite::{self, checkpoint};
use crate::wal::{self, FrameReader, WalHeader, HEADER_SIZE};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, RwLock};

/// Per-database settings (spec §5.2) with v0.3.13's defaults.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub meta_path: Option<PathBuf>,
    pub monitor_interval: Duration,
    pub checkpoint_interval: Duration,
    pub min_checkpoint_page_count: u64,
    pub max_checkpoint_page_count: u64,
    pub truncate_page_count: u64,
    /// Busy timeout of walship's own connections (v0.3: 1 s).
    pub busy_timeout: Duration,
    /// Longest a sync copies before it ships what it has (bounded work under a saturating writer).
    pub max_copy_bytes: u64,
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
        }
    }
}

/// Where the shadow WAL ends: what shippers may read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbPos {
    pub generation: String,
    pub index: u32,
    /// Committed length of the current shadow WAL file.
    pub size: u64,
}

impl DbPos {
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
}

/// What a sync did, for logs and metrics.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    pub copied_bytes: u64,
    pub new_generation: Option<String>,
    pub checkpoint: Option<CheckpointOutcome>,
}

#[derive(Debug, Clone, Copy)]
pub struct CheckpointOutcome {
    pub mode: &'static str,
    pub complete: bool,
    pub lock_wait: Duration,
    pub lock_held: Duration,
}

pub struct Db {
    path: PathBuf,
    wal_path: PathBuf,
    meta: MetaDir,
    opts: DbOptions,
    state: Mutex<State>,
    pos_tx: watch::Sender<DbPos>,
    /// Held (read) by snapshots; the monitor only refreshes `R` when it can take it (write).
    gate: Arc<RwLock<()>>,
    replica_positions: Mutex<BTreeMap<String, Pos>>,
    /// The one descriptor walship itself opens on the database file (see [`crate::snapshot`]).
    db_file: std::sync::OnceLock<Arc<File>>,
    /// The one descriptor walship itself opens on `-shm`, kept open for as long as `Db` lives:
    /// closing any descriptor of a file drops every POSIX lock the process holds on it, so a
    /// read of `-shm` through a fresh `File` released `R`'s read-mark lock (and the deadman
    /// switch SQLite keeps on the file), and the application restarted the WAL under walship.
    shm_file: std::sync::OnceLock<File>,
    _lock: InstanceLock,
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
        let meta = MetaDir::new(
            opts.meta_path
                .clone()
                .unwrap_or_else(|| default_meta_dir(&path)),
        );
        create_dir_like(&meta.root, path.parent())?;
        let lock = InstanceLock::acquire(&meta.lock_file(), &path)?;
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
            }),
            pos_tx,
            gate: Arc::new(RwLock::new(())),
            replica_positions: Mutex::new(BTreeMap::new()),
            db_file: std::sync::OnceLock::new(),
            shm_file: std::sync::OnceLock::new(),
            _lock: lock,
        }))
    }

    /// `-shm` (see the field); None until the first sync has opened the database.
    pub fn shm_file(&self) -> Option<&File> {
        self.shm_file.get()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn wal_path(&self) -> &Path {
        &self.wal_path
    }
    pub fn meta(&self) -> &MetaDir {
        &self.meta
    }
    pub fn options(&self) -> &DbOptions {
        &self.opts
    }
    pub fn subscribe(&self) -> watch::Receiver<DbPos> {
        self.pos_tx.subscribe()
    }
    pub fn pos(&self) -> DbPos {
        self.pos_tx.borrow().clone()
    }
    pub fn gate(&self) -> Arc<RwLock<()>> {
        self.gate.clone()
    }
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
        if st.conns.is_none() {
            if !self.path.exists() {
                return Ok(report);
            }
            self.init(st, &mut report)?;
        }
        self.ensure_wal_exists(st)?;
        let hdr_bytes = read_header_bytes(&self.wal_path)?;
        let real = WalHeader::parse(&hdr_bytes)
            .map_err(|e| Error::corrupt(format!("{}: {e}", self.wal_path.display())))?;
        let cur = st.header.expect("initialised state has a header");
        if real.raw != cur.raw {
            match st.proof {
                Some(p)
                    if p.index == st.index
                        && real.checkpoint_seq == p.header.checkpoint_seq.wrapping_add(1)
                        && real.salt1 == p.header.salt1.wrapping_add(1)
                        && st.index < MAX_INDEX =>
                {
                    let next = st.index + 1;
                    self.start_index(st, next, real)?;
                    st.proof = None;
                }
                _ => {
                    let reason = if st.index >= MAX_INDEX {
                        "max index exceeded"
                    } else {
                        "wal restarted while walship could not prove it had copied every frame"
                    };
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
            match self.with_write_lock(st, |_, _| Ok(())) {
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

    fn init(&self, st: &mut State, report: &mut SyncReport) -> Result<()> {
        if self.db_file.get().is_none() {
            let f = File::open(&self.path)
                .map_err(|e| Error::io(format!("open {}", self.path.display()), e))?;
            let _ = self.db_file.set(Arc::new(f));
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
        if self.shm_file.get().is_none() {
            // After our connections exist, so SQLite created the file, not us.
            let mut p = self.path.as_os_str().to_owned();
            p.push("-shm");
            if let Ok(f) = File::open(PathBuf::from(p)) {
                let _ = self.shm_file.set(f);
            }
        }
        self.ensure_wal_exists(st)?;
        let res = self.with_write_lock(st, |db, st| {
            let hdr = WalHeader::parse(&read_header_bytes(&db.wal_path)?)
                .map_err(|e| Error::corrupt(format!("{}: {e}", db.wal_path.display())))?;
            match db.resume(st, &hdr)? {
                Ok(()) => {
                    tracing::info!(db = %db.path.display(), position = %st_pos(st), "initialized db, continuing generation");
                }
                Err(reason) => {
                    db.new_generation(st, reason)?;
                    report.new_generation = Some(st.generation.clone());
                }
            }
            Ok(())
        });
        if let Err(e) = res {
            st.conns = None;
            return Err(e);
        }
        Ok(())
    }

    /// Continues the generation in the meta directory if it provably describes this WAL.
    fn resume(&self, st: &mut State, real: &WalHeader) -> Result<Result<(), &'static str>> {
        let Some(generation) = self.meta.read_generation()? else {
            return Ok(Err("no generation exists"));
        };
        let Some(&index) = self.meta.shadow_indexes(&generation)?.last() else {
            return Ok(Err("no shadow wal"));
        };
        if index >= MAX_INDEX {
            return Ok(Err("max index exceeded"));
        }
        let shadow_path = self.meta.shadow_path(&generation, index);
        let data = File::open(&shadow_path)
            .map_err(|e| Error::io(format!("open {}", shadow_path.display()), e))?;
        let scan = match wal::scan(BufReader::new(data))
            .map_err(|e| Error::io(format!("read {}", shadow_path.display()), e))?
        {
            Ok(s) => s,
            Err(_) => return Ok(Err("short shadow wal")),
        };
        if scan.header.raw != real.raw {
            return Ok(Err(
                "wal header mismatch: the wal was restarted while walship was not running",
            ));
        }
        let real_len = fs::metadata(&self.wal_path).map(|m| m.len()).unwrap_or(0);
        if real_len < scan.committed_len {
            return Ok(Err("wal truncated by another process"));
        }
        // The shadow may hold an uncommitted tail after a crash: cut it, then compare the last frame.
        truncate_file(&shadow_path, scan.committed_len)?;
        st.generation = generation;
        st.index = index;
        st.header = Some(scan.header);
        st.size = scan.committed_len;
        st.seed = scan.committed_seed;
        if let Some(reason) = self.overwritten(st)? {
            return Ok(Err(reason));
        }
        Ok(Ok(()))
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
        let real = WalHeader::parse(&read_header_bytes(&self.wal_path)?)
            .map_err(|e| Error::corrupt(format!("{}: {e}", self.wal_path.display())))?;
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
        create_dir_like(&dir, self.path.parent())?;
        let p = self.meta.shadow_path(&st.generation, index);
        let io = |e| Error::io(format!("write {}", p.display()), e);
        let mut f = File::create(&p).map_err(io)?;
        f.write_all(&header.raw).map_err(io)?;
        f.sync_data().map_err(io)?;
        copy_owner_mode(&self.path, &p);
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
                let _ = conns.r.execute_batch("ROLLBACK");
                // `R` no longer pins the WAL: an old proof must not vouch for a later restart.
                st.proof = None;
                f(self, st)?;
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

    /// The v0.3 checkpoint policy (spec §2.5); returns the v0.3 mode name it would have used.
    fn checkpoint_due(&self, st: &State) -> Option<&'static str> {
        let h = st.header?;
        if st.checkpointed_at == Some((st.index, st.size)) || st.size <= HEADER_SIZE as u64 {
            return None;
        }
        let pages = (st.size - HEADER_SIZE as u64) / h.frame_size();
        let o = &self.opts;
        if o.truncate_page_count > 0 && pages >= o.truncate_page_count {
            Some("TRUNCATE")
        } else if o.max_checkpoint_page_count > 0 && pages >= o.max_checkpoint_page_count {
            Some("RESTART")
        } else if (pages >= o.min_checkpoint_page_count
            // Syncs can come faster than monitor-interval under a heavy writer; v0.3 made at most
            // one PASSIVE attempt per interval, and so do we below the RESTART threshold.
            && st.last_checkpoint.is_none_or(|t| t.elapsed() >= o.monitor_interval))
            || (!o.checkpoint_interval.is_zero()
                && st.last_checkpoint.unwrap_or(st.started).elapsed() >= o.checkpoint_interval)
        {
            Some("PASSIVE")
        } else {
            None
        }
    }

    /// Backfills the WAL into the database so the next writer restarts it, without losing a frame.
    ///
    /// Always a PASSIVE checkpoint: RESTART and TRUNCATE would wait on application readers while
    /// holding up application writers (v0.3.13's #724 outage).
    fn checkpoint(&self, st: &mut State, mode: &'static str) -> Result<Option<CheckpointOutcome>> {
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
                let before = crate::pace::wal_mark(&self.wal_path, self.shm_file());
                // Copied first without the lock: a locked copy of megabytes holds writers up.
                self.copy_frames(st, None)?;
                let t = Instant::now();
                let locked = self.with_write_lock(st, |_, _| Ok(()));
                *lock_wait = t.elapsed();
                match locked {
                    Ok(()) => {
                        let _ = checkpoint(&st.conns.as_ref().expect("conns").w, "PASSIVE");
                    }
                    Err(e) if e.kind() == crate::ErrorKind::Transient && round == 0 => {
                        tracing::debug!(db = %self.path.display(), "checkpoint skipped: write lock busy");
                        return Ok(None);
                    }
                    Err(e) if e.kind() == crate::ErrorKind::Transient => break,
                    Err(e) => return Err(e),
                }
                let after = crate::pace::wal_mark(&self.wal_path, self.shm_file());
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
        let res = (|| -> Result<bool> {
            let t = Instant::now();
            let copied = self.copy_frames(st, None)?;
            let copy_took = t.elapsed();
            let conns = st.conns.as_ref().expect("conns");
            let _ = conns.r.execute_batch("ROLLBACK");
            st.proof = None;
            // An application's own checkpoint may hold the checkpointer lock for a moment (busy,
            // log = -1): retry briefly rather than give up the whole cycle.
            let mut ck = checkpoint(&conns.r, "PASSIVE");
            for _ in 0..50 {
                match &ck {
                    Ok(c) if c.busy && c.log < 0 => {
                        std::thread::sleep(Duration::from_micros(200));
                        ck = checkpoint(&conns.r, "PASSIVE");
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
            Ok(!ck.busy && ck.log == ck.checkpointed && ck.log == frames)
        })();
        let _ = st
            .conns
            .as_ref()
            .expect("conns")
            .w
            .execute_batch("ROLLBACK");
        let lock_held = held.elapsed();
        let complete = res?;
        st.last_checkpoint = Some(Instant::now());
        if complete {
            st.checkpointed_at = Some((st.index, st.size));
            st.reader_on_db_file = Some(st.index);
        }
        tracing::debug!(db = %self.path.display(), mode, complete, ?lock_wait, ?lock_held, ?round_lock_waits, took = ?started.elapsed(), "checkpoint");
        Ok(Some(CheckpointOutcome {
            mode,
            complete,
            lock_wait,
            lock_held,
        }))
    }

    fn publish(&self, st: &State) {
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
        let min = positions
            .values()
            .map(|p| {
                if p.generation == cur.generation {
                    p.index
                } else {
                    0
                }
            })
            .min()
            .unwrap_or(0)
            .min(cur.index);
        if let Ok(idx) = self.meta.shadow_indexes(&cur.generation) {
            for i in idx.into_iter().filter(|&i| i < min) {
                let _ = fs::remove_file(self.meta.shadow_path(&cur.generation, i));
            }
        }
    }

    /// The snapshot source; `None` until the database has been opened by a first sync.
    pub fn snapshotter(&self) -> Option<crate::snapshot::FileSnapshotter> {
        self.db_file
            .get()
            .map(|f| crate::snapshot::FileSnapshotter::new(f.clone()))
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

fn read_header_bytes(p: &Path) -> Result<[u8; HEADER_SIZE]> {
    let mut b = [0u8; HEADER_SIZE];
    read_at(p, 0, &mut b)?;
    Ok(b)
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

/// Creates a directory (and parents) with the mode and owner of `like` (the database's directory).
pub(crate) fn create_dir_like(dir: &Path, like: Option<&Path>) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("create directory {}", dir.display()), e))?;
    if let Some(like) = like {
        copy_owner_mode(like, dir);
    }
    Ok(())
}

fn copy_owner_mode(like: &Path, target: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Ok(m) = fs::metadata(like) {
        let _ = fs::set_permissions(target, fs::Permissions::from_mode(m.mode() & 0o7777));
        let _ = std::os::unix::fs::chown(target, Some(m.uid()), Some(m.gid()));
    }
}

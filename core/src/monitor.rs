//! Runs one database and its shippers: the monitor loop, shutdown, and the final sync.

use crate::db::Db;
use crate::error::Result;
use crate::pace::{grown, next_look, restarted, wal_look, wal_mark, RateWindow};
use crate::shipper::{DrillReport, Request, Shipper};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// A replica's answer to a snapshot request: the snapshot's position, or why there is none.
pub type Answer = std::result::Result<crate::layout::Pos, String>;

/// What the monitor did, counted for metrics (v0.3.13's `litestream_sync_*`,
/// `litestream_checkpoint_*`, `litestream_total_wal_bytes`).
#[derive(Debug, Default)]
pub struct DbStats {
    /// Monitor steps run, failed or not (`litestream_sync_count`).
    pub sync_count: AtomicU64,
    /// Monitor steps that failed (`litestream_sync_error_count`).
    pub sync_error_count: AtomicU64,
    /// Time spent in monitor steps, in nanoseconds (exported as `litestream_sync_seconds`).
    pub sync_nanos: AtomicU64,
    /// Committed WAL bytes copied into the shadow WAL (`litestream_total_wal_bytes`).
    pub wal_bytes: AtomicU64,
    /// Monitor steps failed in a row (0 after a success): a monitor that keeps failing stops the
    /// database's position, and its replicas would look caught up while nothing is backed up.
    pub consecutive_errors: AtomicU64,
    /// Per checkpoint mode: (attempts, incomplete attempts, nanoseconds holding the lock).
    pub checkpoints: std::sync::Mutex<std::collections::BTreeMap<&'static str, (u64, u64, u64)>>,
    /// Looks at the writer's position while gathering a burst: each is a wake-up of the process
    /// (not exported; the tests hold the monitor to one or two per window for a steady writer).
    pub looks: AtomicU64,
}

impl DbStats {
    fn record(&self, elapsed: Duration, res: &Result<crate::db::SyncReport>) {
        self.sync_count.fetch_add(1, Ordering::Relaxed);
        self.sync_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        match res {
            Ok(r) => {
                self.consecutive_errors.store(0, Ordering::Relaxed);
                self.wal_bytes.fetch_add(r.copied_bytes, Ordering::Relaxed);
                if let Some(c) = r.checkpoint {
                    let mut m = self.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
                    let e = m.entry(c.mode.as_str()).or_default();
                    e.0 += 1;
                    e.1 += u64::from(!c.complete);
                    e.2 += c.lock_held.as_nanos() as u64;
                }
            }
            Err(_) => {
                self.consecutive_errors.fetch_add(1, Ordering::Relaxed);
                self.sync_error_count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A running database: its monitor task and one task per replica.
pub struct Running {
    /// The database being monitored.
    pub db: Arc<Db>,
    /// Counters of its monitor, shared with metrics and the health check.
    pub stats: Arc<DbStats>,
    monitor: JoinHandle<()>,
    catch_up: CatchUp,
    shippers: Vec<(String, crate::shipper::Phase, JoinHandle<Result<()>>)>,
    requests: Vec<(String, mpsc::Sender<Request>)>,
    stop_monitor: watch::Sender<bool>,
    stop_shippers: watch::Sender<bool>,
}

/// One blocking monitor step on the blocking pool.
pub async fn sync_db(db: &Arc<Db>) -> Result<crate::db::SyncReport> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.sync())
        .await
        .map_err(|e| {
            crate::Error::new(crate::ErrorKind::Other, format!("monitor task failed: {e}"))
        })?
}

/// Asks the monitor to copy the WAL into the shadow WAL now, and waits until it has: a shipper
/// about to upload calls it, so what it ships is as of now rather than as of the monitor's last
/// cycle (up to monitor-interval earlier). Without a running monitor it returns at once.
#[derive(Clone, Debug)]
pub struct CatchUp {
    tx: Option<mpsc::Sender<oneshot::Sender<()>>>,
}

impl CatchUp {
    /// A handle with no monitor behind it (shippers driven by hand, tests).
    pub fn none() -> CatchUp {
        CatchUp { tx: None }
    }

    /// Whether a monitor answers (false for [`CatchUp::none`] and without a monitor task).
    pub fn active(&self) -> bool {
        self.tx.is_some()
    }

    /// Returns once a monitor step that started after this call has finished (or the monitor
    /// has stopped).
    pub async fn now(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(done).await.is_ok() {
            // Also done when the monitor has gone: a request sent with a slot taken just before
            // the monitor stopped stays queued in the channel (tokio drops queued messages when
            // the receiver goes, but not one pushed just after that), so `wait` alone could wait
            // for ever.
            tokio::select! {
                _ = wait => {}
                _ = tx.closed() => {}
            }
        }
    }
}

/// Spawns the monitor loop (it returns at once when monitor-interval is zero) and one task per
/// shipper; stop them with [`Running::stop`], which makes the final syncs.
pub fn start(db: Arc<Db>, shippers: Vec<Shipper>) -> Running {
    let (stop_monitor, mut mrx) = watch::channel(false);
    let (stop_shippers, rx) = watch::channel(false);
    let interval = db.options().monitor_interval;
    let (catch_tx, mut catch_rx) = mpsc::channel::<oneshot::Sender<()>>(REQUESTS_QUEUED);
    let catch_up = CatchUp {
        tx: (!interval.is_zero()).then_some(catch_tx),
    };
    let mdb = db.clone();
    let stats = Arc::new(DbStats::default());
    let mstats = stats.clone();
    let monitor = tokio::spawn(async move {
        if interval.is_zero() {
            return;
        }
        let watch = crate::watch::WalWatch::new(mdb.wal_path());
        // With change notification an idle database is only polled as a safety net.
        let idle_poll = if watch.active {
            (interval * 60).max(Duration::from_secs(60))
        } else {
            interval
        };
        // Each idle poll that finds nothing doubles the next one, up to MAX_IDLE_POLL: a
        // thousand idle databases polled every minute cost about 1 % of a core, for nothing.
        let mut idle_wait = idle_poll;
        // A due checkpoint that did not complete: sync again after monitor-interval.
        let mut retry_checkpoint = false;
        // When the WAL will have been quiet long enough for the checkpoint after a burst.
        let mut quiet_at: Option<tokio::time::Instant> = None;
        let mut recent = RateWindow::new(RATE_WINDOW);
        let mut errors = 0u32;
        let mut last = tokio::time::Instant::now();
        // When to release the database if nothing changes before (see `Db::release`).
        let release_after = mdb.options().release_after;
        let mut release_at: Option<tokio::time::Instant> = None;
        let mut last_try: Option<tokio::time::Instant> = None;
        // The coalescing window a restart interrupted: (its deadline, the mark it began at, when).
        let mut window: Option<(
            tokio::time::Instant,
            crate::pace::WalMark,
            tokio::time::Instant,
        )> = None;
        // Shippers waiting for a copy; answered by the next step that starts after they asked.
        let mut asked: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            let started = tokio::time::Instant::now();
            let since = started - last;
            last = started;
            let mut fast = false;
            // Armed before the sync: a commit made while syncing wakes the next cycle.
            let armed = watch.arm();
            while let Ok(tx) = catch_rx.try_recv() {
                asked.push(tx);
            }
            let driven = !asked.is_empty();
            let res = sync_db(&mdb).await;
            for tx in asked.drain(..) {
                let _ = tx.send(());
            }
            // After the sync, which writes there itself: damage to walship's own files wakes the
            // monitor even while the database is idle.
            watch.arm_also(&mdb.meta().root);
            let generation = mdb.pos().generation;
            if !generation.is_empty() {
                watch.arm_also(&mdb.meta().shadow_dir(&generation));
            }
            if res.as_ref().is_ok_and(|r| r.deferred) {
                // Over the descriptor budget: wait for a database to be released, or for a
                // snapshot that got a slot first to attach this one.
                tokio::select! {
                    slot = mdb.budget().take() => mdb.grant(slot),
                    _ = mdb.reattached().notified() => {}
                    _ = mrx.changed() => return,
                }
                continue;
            }
            mstats.record(started.elapsed(), &res);
            match res {
                Ok(r) => {
                    errors = 0;
                    tracing::trace!(db = %mdb.path().display(), copied = r.copied_bytes, elapsed = ?started.elapsed(), ?since, "sync");
                    // A writer producing more than BUSY_RATE keeps the monitor on a short cadence
                    // so the WAL stays near max-checkpoint-page-count; otherwise one sync per
                    // monitor-interval, and only after a change.
                    fast = recent.push(std::time::Instant::now(), r.copied_bytes, BUSY_RATE);
                    if r.copied_bytes > 0 {
                        idle_wait = idle_poll;
                    }
                    if !release_after.is_zero() {
                        let changed = r.copied_bytes > 0 || r.new_generation.is_some();
                        if changed || (release_at.is_none() && !mdb.is_released()) {
                            release_at = Some(tokio::time::Instant::now() + release_after);
                        }
                    }
                    retry_checkpoint = r.checkpoint_pending;
                    quiet_at = r
                        .quiet_checkpoint_in
                        .map(|d| tokio::time::Instant::now() + d);
                }
                Err(e) => {
                    errors += 1;
                    tracing::error!(db = %mdb.path().display(), error = %e, "sync error");
                }
            }
            let wait = if errors > 0 {
                interval * errors.min(10)
            } else if fast {
                FAST_GAP
            } else if retry_checkpoint {
                interval
            } else {
                Duration::ZERO
            };
            if !wait.is_zero() || !armed {
                window = None;
                let wait = if wait.is_zero() { interval } else { wait };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = mrx.changed() => return,
                    Some(tx) = catch_rx.recv() => asked.push(tx),
                }
                continue;
            }
            // Enabled before looking at `contended`, so a wait that starts in between wakes it.
            let pressure = mdb.budget().pressure().notified();
            tokio::pin!(pressure);
            pressure.as_mut().enable();
            if release_at.is_some() && mdb.budget().contended() {
                // Databases wait for descriptors: release as soon as idle, not after
                // release-after (a busy one is tried again at most every PRESSURE_RETRY).
                let now = tokio::time::Instant::now();
                let soon = last_try.map_or(now, |t| (t + PRESSURE_RETRY).max(now));
                release_at = release_at.map(|t| t.min(soon));
            }
            let release_in =
                release_at.map(|t| t.saturating_duration_since(tokio::time::Instant::now()));
            let quiet_in =
                quiet_at.map(|t| t.saturating_duration_since(tokio::time::Instant::now()));
            let sleep = [release_in, quiet_in, Some(idle_wait)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(idle_wait);
            tokio::select! {
                _ = watch.notify.notified() => idle_wait = idle_poll,
                _ = &mut pressure, if release_at.is_some() => continue,
                _ = mdb.reattached().notified() => {
                    if !release_after.is_zero() {
                        release_at = Some(tokio::time::Instant::now() + release_after);
                    }
                    continue;
                }
                _ = tokio::time::sleep(sleep) => {
                    if quiet_at.is_some_and(|t| t <= tokio::time::Instant::now()) {
                        // The sync checkpoints the quiet WAL; the idle polls keep their pace.
                        quiet_at = None;
                        continue;
                    }
                    if release_at.is_some_and(|t| t <= tokio::time::Instant::now()) {
                        let retry = RELEASE_RETRY.min(release_after).max(interval);
                        last_try = Some(tokio::time::Instant::now());
                        release_at = match release_db(&mdb).await {
                            Ok(true) => {
                                crate::trim::after_burst();
                                None
                            }
                            Ok(false) if mdb.budget().contended() => {
                                Some(tokio::time::Instant::now() + PRESSURE_RETRY)
                            }
                            Ok(false) => Some(tokio::time::Instant::now() + retry),
                            Err(e) => {
                                tracing::warn!(db = %mdb.path().display(), error = %e, "release of an idle database failed");
                                Some(tokio::time::Instant::now() + release_after)
                            }
                        };
                        // The sync that follows finds a released database quiet at the cost of
                        // two stat calls, and arms the watch again.
                        continue;
                    }
                    idle_wait = (idle_wait * 2).min(MAX_IDLE_POLL.max(idle_poll));
                    // Nothing is known to have changed: no burst to gather, sync at once.
                    continue;
                }
                _ = mrx.changed() => return,
                Some(tx) = catch_rx.recv() => {
                    asked.push(tx);
                    continue;
                }
            }
            // Coalesce a burst of commits into one sync per monitor-interval (a shipper that
            // wants them sooner asks for a copy: CatchUp), unless the WAL
            // grows fast enough that waiting would let it balloon (a writer going flat out), or
            // the WAL restarted: the proof that the restart continues the generation lives in
            // this process until the next sync records the new index, so that sync comes at
            // once (a crash in between costs a new generation and a full snapshot).
            // That early sync does not open a new coalescing window: a burst it cut in two
            // still counts whole against FAST_BYTES (each half alone may stay under it and
            // wait out the interval, as a 10 s monitor-interval showed under CI load).
            // The writer is looked at as often as its rate and a possible restart need
            // (`next_look`): each look wakes the process.
            let (next, base, opened) = window.take().unwrap_or_else(|| {
                (
                    started
                        + interval
                        + if driven {
                            driven_slack(interval)
                        } else {
                            Duration::ZERO
                        },
                    wal_mark(mdb.wal_path(), mdb.shm_file().as_deref()),
                    tokio::time::Instant::now(),
                )
            });
            loop {
                let now = tokio::time::Instant::now();
                mstats.looks.fetch_add(1, Ordering::Relaxed);
                let (mark, restart_next) = wal_look(mdb.wal_path(), mdb.shm_file().as_deref());
                if now >= next {
                    break;
                }
                let written = grown(base, mark);
                if written >= FAST_BYTES {
                    recent.outgrown(std::time::Instant::now());
                    break;
                }
                if restarted(mdb.shadow_salts(), mark) {
                    window = Some((next, base, opened));
                    break;
                }
                let look = next_look(written, now - opened, FAST_BYTES, restart_next);
                tokio::select! {
                    _ = tokio::time::sleep_until(next.min(now + look)) => {}
                    _ = mrx.changed() => return,
                    Some(tx) = catch_rx.recv() => {
                        asked.push(tx);
                        break;
                    }
                }
            }
        }
    });
    let mut requests = Vec::new();
    let shippers = shippers
        .into_iter()
        .map(|s| {
            let name = s.name().to_string();
            let phase = s.phase();
            let (tx, requests_rx) = mpsc::channel(REQUESTS_QUEUED);
            requests.push((name.clone(), tx));
            (
                name,
                phase,
                tokio::spawn(s.run(rx.clone(), requests_rx, catch_up.clone())),
            )
        })
        .collect();
    Running {
        db,
        stats,
        monitor,
        catch_up,
        shippers,
        requests,
        stop_monitor,
        stop_shippers,
    }
}

impl Running {
    /// A handle that makes the monitor copy the WAL now (what shippers use before uploading).
    pub fn catch_up(&self) -> CatchUp {
        self.catch_up.clone()
    }

    /// A handle that asks this database's replicas for snapshots (movable into a task).
    pub fn requester(&self) -> Requester {
        Requester {
            db: self.db.clone(),
            replicas: self.requests.clone(),
        }
    }

    /// Stops monitoring, copies what is left, lets every shipper make its final sync, within
    /// [`DEFAULT_SHUTDOWN_SYNC_TIMEOUT`]. Returns false when any final sync failed.
    pub async fn stop(self) -> bool {
        self.stop_within(DEFAULT_SHUTDOWN_SYNC_TIMEOUT).await
    }

    /// [`Running::stop`] bounded by `limit` (zero: no bound). A step still running at the limit
    /// is abandoned with an ERROR naming it, and the stop counts as failed (exit code 1): a
    /// service manager's stop timeout would otherwise kill the process part way with nothing in
    /// the log, and a replicator that never exits blocks the deploy or reboot behind it.
    /// Abandoning loses nothing: every upload is atomic under its final key (an interrupted one
    /// leaves a temporary file, removed at the next start, or an S3 incomplete multipart upload,
    /// left to the bucket's lifecycle rule), and the next start resumes from what the replica
    /// holds.
    pub async fn stop_within(self, limit: Duration) -> bool {
        let path = self.db.path().to_path_buf();
        let stop = Stopping {
            path: &path,
            deadline: (!limit.is_zero()).then(|| tokio::time::Instant::now() + limit),
            limit,
        };
        // Order matters: the last frames reach the shadow WAL before any shipper's final sync.
        let _ = self.stop_monitor.send(true);
        let mut ok = stop
            .task(self.monitor, || "the monitor's current step".into())
            .await
            .is_some();
        // The final copy, at shutdown, with no budget left (the databases stopping one after
        // another hold theirs until they close), takes a slot over the limit: waiting could wait
        // on a database that stops after this one. Stopping closes it moments later.
        loop {
            match stop
                .step(sync_db(&self.db), || "the final copy".into())
                .await
            {
                Some(Ok(r)) if r.deferred => self.db.grant(self.db.budget().take_anyway()),
                Some(Ok(_)) => break,
                Some(Err(e)) => {
                    tracing::error!(db = %path.display(), error = %e, "final sync error");
                    ok = false;
                    break;
                }
                None => {
                    ok = false;
                    break;
                }
            }
        }
        let _ = self.stop_shippers.send(true);
        for (name, phase, h) in self.shippers {
            let what = || format!("replica {name}'s final sync (at: {})", phase.get());
            match stop.task(h, what).await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::error!(db = %path.display(), replica = %name, error = %e, "final replica sync failed");
                    ok = false;
                }
                None => ok = false,
            }
        }
        let db = self.db.clone();
        let closed = tokio::task::spawn_blocking(move || db.close());
        if stop
            .task(closed, || "the database to close".into())
            .await
            .is_none()
        {
            ok = false;
        }
        ok
    }
}

/// The bound of one database's stop (see [`Running::stop_within`]).
struct Stopping<'a> {
    path: &'a std::path::Path,
    deadline: Option<tokio::time::Instant>,
    limit: Duration,
}

impl Stopping<'_> {
    /// `f` to its end, or None when the deadline came first (logged, naming `what`).
    async fn step<F: std::future::Future>(
        &self,
        f: F,
        what: impl Fn() -> String,
    ) -> Option<F::Output> {
        let noted = noting_delay(f, self.path, &what);
        let Some(deadline) = self.deadline else {
            return Some(noted.await);
        };
        match tokio::time::timeout_at(deadline, noted).await {
            Ok(out) => Some(out),
            Err(_) => {
                tracing::error!(db = %self.path.display(), limit = ?self.limit, "stopping: gave up waiting for {} after shutdown-sync-timeout; the next start resumes from what the replicas hold", what());
                None
            }
        }
    }

    /// A task to its end (None when it failed, logged, or the deadline came first: then it is
    /// aborted).
    async fn task<T>(&self, mut h: JoinHandle<T>, what: impl Fn() -> String) -> Option<T> {
        match self.step(&mut h, &what).await {
            Some(Ok(out)) => Some(out),
            Some(Err(e)) => {
                tracing::error!(db = %self.path.display(), error = %e, "task failed while stopping: {}", what());
                None
            }
            None => {
                h.abort();
                None
            }
        }
    }
}

/// How long one database may take to stop (final copy and every replica's final sync) unless
/// `shutdown-sync-timeout` says otherwise: under systemd's default stop timeout (90 s), so a
/// stop that cannot finish is logged and exits 1 instead of being killed silently.
pub const DEFAULT_SHUTDOWN_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Asks a running database's replicas for a snapshot now (`walship snapshot` through a running
/// `replicate`).
#[derive(Clone)]
pub struct Requester {
    db: Arc<Db>,
    replicas: Vec<(String, mpsc::Sender<Request>)>,
}

impl Requester {
    /// Copies what is committed into the shadow WAL first (the monitor may be coalescing a burst),
    /// so every snapshot holds every commit made before the request; then every replica ships its
    /// WAL and snapshots. Returns each replica's answer once all are in.
    pub async fn snapshot_all(&self) -> Vec<(String, Answer)> {
        self.ask_all("snapshot", Request::Snapshot).await
    }

    /// Runs a restore drill on every replica, one after another (a database drills one replica
    /// at a time), after copying what is committed: each compares the replica with the database
    /// as of its own position. Returns each replica's report once all are in.
    pub async fn verify_all(&self) -> Vec<(String, std::result::Result<DrillReport, String>)> {
        self.ask_all("drill", Request::Verify).await
    }

    async fn ask_all<T>(
        &self,
        what: &str,
        wrap: fn(oneshot::Sender<std::result::Result<T, String>>) -> Request,
    ) -> Vec<(String, std::result::Result<T, String>)> {
        let synced = sync_db(&self.db).await;
        tracing::debug!(db = %self.db.path().display(), copied = synced.as_ref().map(|r| r.copied_bytes).ok(), position = %self.db.pos().pos(), "synced before the requested {what}");
        if let Err(e) = synced {
            let why = format!("cannot copy the WAL before the {what}: {e}");
            return self
                .replicas
                .iter()
                .map(|(name, _)| (name.clone(), Err(why.clone())))
                .collect();
        }
        let mut waiting = Vec::new();
        for (name, tx) in &self.replicas {
            let (reply, answer) = oneshot::channel();
            if let Err(e) = tx.try_send(wrap(reply)) {
                let why = match &e {
                    mpsc::error::TrySendError::Full(_) => "too many requests waiting",
                    mpsc::error::TrySendError::Closed(_) => "the replica has stopped",
                };
                match e.into_inner() {
                    Request::Snapshot(tx) => drop(tx.send(Err(why.to_string()))),
                    Request::Verify(tx) => drop(tx.send(Err(why.to_string()))),
                }
            }
            waiting.push((name.clone(), answer));
        }
        let mut answers = Vec::new();
        for (name, answer) in waiting {
            let a = answer
                .await
                .unwrap_or_else(|_| Err(format!("replicate stopped before the {what}")));
            answers.push((name, a));
        }
        answers
    }
}

/// Snapshot requests a replica holds before it refuses more (each is answered by one snapshot,
/// so a queue this long means the replica is stuck, not that the user asked too often).
const REQUESTS_QUEUED: usize = 16;
/// A release that found the database busy (a commit, a reader holding the checkpoint back, a
/// file changed within the last second) is tried again this much later.
const RELEASE_RETRY: Duration = Duration::from_secs(5);
/// While databases wait for descriptors ([`crate::db::budget`]), an attached idle database tries
/// to release at most this often.
const PRESSURE_RETRY: Duration = Duration::from_secs(1);

/// A stop that takes long says, every STOP_NOTE, what it is waiting for: a shutdown that
/// stalls (a store that does not answer, a lock held elsewhere) is then visible in the log,
/// naming the database and the step, rather than a log that simply ends.
async fn noting_delay<F: std::future::Future>(
    f: F,
    db: &std::path::Path,
    what: impl Fn() -> String,
) -> F::Output {
    tokio::pin!(f);
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            out = &mut f => return out,
            _ = tokio::time::sleep(STOP_NOTE) => {
                tracing::warn!(db = %db.display(), waited = ?started.elapsed(), "stopping: still waiting for {}", what());
            }
        }
    }
}

/// See [`noting_delay`].
const STOP_NOTE: Duration = Duration::from_secs(15);

/// [`Db::release`] on the blocking pool.
async fn release_db(db: &Arc<Db>) -> Result<bool> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.release())
        .await
        .map_err(|e| {
            crate::Error::new(crate::ErrorKind::Other, format!("release task failed: {e}"))
        })?
}

/// Longest wait between safety-net polls of an idle database whose directory is watched.
const MAX_IDLE_POLL: Duration = Duration::from_secs(3600);

/// Copy rate (bytes/s) above which the monitor syncs on the short cadence.
const BUSY_RATE: f64 = 4.0 * 1024.0 * 1024.0;
/// How far back that rate looks: long enough to span a WAL restart.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// WAL growth that ends the coalescing wait early.
const FAST_BYTES: u64 = 4 * 1024 * 1024;

/// Gap between syncs while a writer is busy.
const FAST_GAP: Duration = Duration::from_millis(20);

/// How much later a window opened by a shipper's copy closes. The shipper asks for its next copy
/// sync-interval after this one (rounds are spaced start to start); with sync-interval equal to
/// monitor-interval both fall due in the same millisecond, and a window closing first would copy
/// a few milliseconds before the shipper asks for a copy again. Closing a little later lets the
/// request arrive first, so one copy serves both. When no request comes (a longer sync-interval)
/// the monitor copies that much later, which changes no upload: each round asks for its own copy.
fn driven_slack(interval: Duration) -> Duration {
    (interval / 20).min(Duration::from_millis(50))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypt::Age;
    use crate::db::DbOptions;
    use crate::listing::Listing;
    use crate::plan::{self, Target};
    use crate::replica::DynReplica;
    use crate::shipper::ReplicaOptions;
    use crate::testing::MemoryReplica;
    use rusqlite::Connection;

    fn rows(c: &Connection) -> Vec<i64> {
        let mut st = c.prepare("SELECT x FROM t ORDER BY x").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// An application database, a monitor with `monitor_interval`, and one shipper to memory that
    /// waits `sync_interval` between rounds.
    fn running(
        dir: &std::path::Path,
        monitor_interval: Duration,
        sync_interval: Duration,
    ) -> (Connection, std::sync::Arc<MemoryReplica>, Running) {
        let opts = DbOptions {
            monitor_interval,
            ..DbOptions::default()
        };
        running_with(dir, opts, sync_interval)
    }

    fn running_with(
        dir: &std::path::Path,
        opts: DbOptions,
        sync_interval: Duration,
    ) -> (Connection, std::sync::Arc<MemoryReplica>, Running) {
        let path = dir.join("app.db");
        let app = Connection::open(&path).unwrap();
        app.execute_batch(
            "PRAGMA journal_mode = wal; CREATE TABLE t (x INTEGER); CREATE TABLE pad (b BLOB);",
        )
        .unwrap();
        let (mem, r) = shipping(&path, opts, sync_interval);
        (app, mem, r)
    }

    /// The database at `path` monitored, with one shipper to a replica in memory.
    fn shipping(
        path: &std::path::Path,
        opts: DbOptions,
        sync_interval: Duration,
    ) -> (std::sync::Arc<MemoryReplica>, Running) {
        let db = Db::open(path, opts).unwrap();
        let mem = MemoryReplica::new();
        let s = Shipper::new(
            db.clone(),
            mem.clone(),
            ReplicaOptions {
                name: "mem".into(),
                sync_interval,
                ..ReplicaOptions::default()
            },
        );
        (mem, start(db, vec![s]))
    }

    /// The database at `path` monitored with `opts`, with one shipper (`replica`'s options) to
    /// a replica in memory behind a [`crate::testing::Faulty`] wrapper, which counts calls and
    /// takes faults.
    fn shipping_faulty(
        path: &std::path::Path,
        opts: DbOptions,
        replica: ReplicaOptions,
    ) -> (
        std::sync::Arc<MemoryReplica>,
        std::sync::Arc<crate::testing::Faulty>,
        Running,
    ) {
        let db = Db::open(path, opts).unwrap();
        let mem = MemoryReplica::new();
        let faulty = crate::testing::Faulty::new(mem.clone());
        let s = Shipper::new(db.clone(), faulty.clone(), replica);
        (mem, faulty, start(db, vec![s]))
    }

    async fn restored(replica: DynReplica, out: &std::path::Path) -> Vec<i64> {
        let listing = Listing::fetch(replica.as_ref(), None).await.unwrap();
        let p = plan::plan(&listing, None, Target::Latest).unwrap();
        crate::restore::execute(replica, &Age::default(), &p, out, 1)
            .await
            .unwrap();
        rows(&Connection::open(out).unwrap())
    }

    /// Drills back to back (a validation-interval shorter than a drill) leave room for the
    /// scheduled snapshots: each round runs what is due before it starts the next drill. Before,
    /// the round that saw a drill end started the next one first, and snapshots (which wait for
    /// a drill) never ran again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn back_to_back_drills_do_not_starve_scheduled_snapshots() {
        use crate::replica::Replica;
        use crate::testing::{Calls, Fault, Op};
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.db");
        let app = Connection::open(&path).unwrap();
        app.execute_batch("PRAGMA journal_mode = wal; CREATE TABLE t (x INTEGER);")
            .unwrap();
        for i in 0..50 {
            app.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let (mem, slow, r) = shipping_faulty(
            &path,
            DbOptions {
                monitor_interval: Duration::from_millis(50),
                ..DbOptions::default()
            },
            ReplicaOptions {
                name: "mem".into(),
                sync_interval: Duration::from_millis(50),
                snapshot_interval: Duration::from_millis(200),
                validation_interval: Duration::from_millis(1),
                ..ReplicaOptions::default()
            },
        );
        // Every download is slow, so a drill lasts several shipper rounds.
        slow.inject(
            Op::Get,
            Calls::From(1),
            Fault::Delay(Duration::from_millis(300)),
        );
        let snapshot_times = || async {
            let mut v: Vec<_> = mem
                .list("generations/")
                .await
                .unwrap()
                .into_iter()
                .filter(|o| o.key.contains("/snapshots/"))
                .map(|o| o.modified)
                .collect();
            v.sort();
            v
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = snapshot_times().await;
        assert!(slow.calls(Op::Get) >= 2, "drills are running");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let after = snapshot_times().await;
        assert!(r.stop().await);
        assert!(!before.is_empty());
        assert!(
            after.last() > before.last(),
            "no scheduled snapshot in 2.5 s of back-to-back drills: {before:?} {after:?}"
        );
    }

    /// A checkpoint that was due and could not complete (an application reader held an older
    /// snapshot) is tried again after monitor-interval, though nothing changes on disk after it:
    /// before, the monitor slept until the next change, so an idle database kept a WAL above the
    /// threshold, and an application TRUNCATE waiting on walship's read transaction timed out
    /// (seen in drill.rs, where only walship's own log writes woke the monitor).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_incomplete_checkpoint_is_retried_while_the_database_is_idle() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.db");
        let app = Connection::open(&path).unwrap();
        app.execute_batch("PRAGMA journal_mode = wal; CREATE TABLE t (x INTEGER, v BLOB);")
            .unwrap();
        let insert = |n: i64| {
            for i in 0..n {
                app.execute("INSERT INTO t VALUES (?1, randomblob(1000))", [i])
                    .unwrap();
            }
        };
        insert(10);
        // A reader on the WAL as it is now: no checkpoint can backfill past it.
        let reader = Connection::open(&path).unwrap();
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM t;")
            .unwrap();
        insert(40);
        let db = Db::open(
            &path,
            DbOptions {
                monitor_interval: Duration::from_millis(100),
                min_checkpoint_page_count: 16,
                ..DbOptions::default()
            },
        )
        .unwrap();
        let s = Shipper::new(
            db.clone(),
            MemoryReplica::new(),
            ReplicaOptions {
                name: "mem".into(),
                // Nothing from the shipper's schedule may wake the monitor during the test.
                sync_interval: Duration::from_secs(3600),
                ..ReplicaOptions::default()
            },
        );
        let r = start(db, vec![s]);
        let counts = || {
            r.stats
                .checkpoints
                .lock()
                .unwrap()
                .values()
                .fold((0, 0), |(a, i), (n, inc, _)| (a + n, i + inc))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while counts().1 == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (attempts, incomplete) = counts();
        assert!(
            incomplete >= 1 && attempts == incomplete,
            "{attempts} {incomplete}"
        );
        // The reader goes away; the application writes nothing more.
        reader.execute_batch("COMMIT").unwrap();
        drop(reader);
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while counts().0 == counts().1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (attempts, incomplete) = counts();
        assert!(r.stop().await);
        assert!(
            attempts > incomplete,
            "no complete checkpoint within 3 s of the reader leaving: {attempts} attempts, {incomplete} incomplete"
        );
    }

    /// An idle database costs its store nothing between the retention runs that have work to
    /// do: after one listing, the next comes when the oldest snapshot ages out of retention, not
    /// at every retention-check-interval (thousands of idle databases listed every hour were
    /// most of a store bill). When that moment comes, the run does its work (a new snapshot).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_retention_lists_only_when_something_can_be_due() {
        use crate::replica::Replica;
        use crate::testing::Op;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.db");
        let app = Connection::open(&path).unwrap();
        app.execute_batch("PRAGMA journal_mode = wal; CREATE TABLE t (x INTEGER);")
            .unwrap();
        for i in 0..20 {
            app.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let (mem, counted, r) = shipping_faulty(
            &path,
            DbOptions::default(),
            ReplicaOptions {
                name: "mem".into(),
                sync_interval: Duration::from_millis(50),
                retention: Duration::from_secs(3),
                retention_check_interval: Duration::from_millis(100),
                ..ReplicaOptions::default()
            },
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
        let settled = counted.calls(Op::List);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let idle = counted.calls(Op::List) - settled;
        // The newest snapshot's upload time (a new snapshot of the same index replaces the
        // object: its key names the index only).
        let newest = || async {
            mem.list("generations/")
                .await
                .unwrap()
                .into_iter()
                .filter(|o| o.key.contains("/snapshots/"))
                .map(|o| o.modified)
                .max()
        };
        let first = newest().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after = newest().await;
        assert!(r.stop().await);
        assert_eq!(
            idle, 0,
            "an idle replica was listed {idle} times in 1.5 s with nothing due"
        );
        assert!(first.is_some());
        assert!(
            after > first,
            "the snapshot aged out of retention and no run took a new one"
        );
    }

    /// Waits up to `secs` for `f`.
    async fn until(secs: u64, what: &str, f: impl Fn() -> bool) {
        let end = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn releasing(d: &std::path::Path) -> (Connection, std::sync::Arc<MemoryReplica>, Running) {
        let opts = DbOptions {
            monitor_interval: Duration::from_millis(50),
            release_after: Duration::from_millis(200),
            ..DbOptions::default()
        };
        running_with(d, opts, Duration::from_millis(100))
    }

    fn insert_rows(app: &Connection, from: i64, n: i64) {
        app.execute_batch("BEGIN").unwrap();
        for i in from..from + n {
            app.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
            app.execute("INSERT INTO pad VALUES (zeroblob(4000))", [])
                .unwrap();
        }
        app.execute_batch("COMMIT").unwrap();
    }

    async fn generations(mem: &std::sync::Arc<MemoryReplica>) -> usize {
        let replica: DynReplica = mem.clone();
        Listing::fetch(replica.as_ref(), None)
            .await
            .unwrap()
            .generations()
            .len()
    }

    /// Restores the replica and asserts the rows are exactly `0..n` and the file is sound.
    async fn assert_restores_rows(
        mem: &std::sync::Arc<MemoryReplica>,
        out: &std::path::Path,
        n: i64,
    ) {
        assert_eq!(
            restored(mem.clone(), out).await,
            (0..n).collect::<Vec<i64>>()
        );
        let ok: String = Connection::open(out)
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
    }

    /// A released database keeps its generation when the application restarts the WAL with a
    /// transaction larger than the WAL walship left (the WAL file itself then no longer shows
    /// where the old life ended: without the database file's change time as proof, that cost a
    /// new generation and a full snapshot at every first write after idle), and when the
    /// application's last close deletes the WAL. Restored exactly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_released_database_keeps_its_generation_across_restart_and_close() {
        let d = tempfile::tempdir().unwrap();
        let (app, mem, r) = releasing(d.path());
        insert_rows(&app, 0, 1);
        let db = r.db.clone();
        until(15, "released", || db.is_released()).await;
        let first = db.pos();
        // Fully backfilled at release: this commit restarts the WAL, and its 40 frames reach
        // past the one-frame life walship copied last.
        insert_rows(&app, 1, 40);
        until(5, "attached again", || db.pos().index > first.index).await;
        assert_eq!(db.pos().generation, first.generation);
        until(15, "released again", || db.is_released()).await;
        // A snapshot reads the file under walship's read transaction: it attaches first, and
        // the database is released again afterwards.
        let answers = r.requester().snapshot_all().await;
        assert!(answers[0].1.is_ok(), "{:?}", answers[0].1);
        assert!(!db.is_released());
        until(15, "released after the snapshot", || db.is_released()).await;
        // The last connection closes: SQLite backfills (nothing) and deletes the WAL.
        drop(app);
        let wal = d.path().join("app.db-wal");
        assert!(!wal.exists(), "the application's close removed the WAL");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            db.is_released(),
            "a WAL deleted after nothing new is no change"
        );
        let app = Connection::open(d.path().join("app.db")).unwrap();
        insert_rows(&app, 41, 3);
        let before = db.pos().index;
        until(5, "attached again", || db.pos().index > before).await;
        assert!(r.stop().await);
        assert_eq!(db.pos().generation, first.generation);
        assert_eq!(generations(&mem).await, 1, "one generation throughout");
        assert_restores_rows(&mem, &d.path().join("out.db"), 44).await;
    }

    /// The application is away when walship releases: walship's close is the last and removes
    /// the backfilled WAL, so the application's next session has no WAL to recover (recovering
    /// one marks nothing as backfilled, and that session's close wrote every frame into the
    /// database file again: a new generation after each short session). An application TRUNCATE
    /// checkpoint that empties the WAL does not keep the database from being released either
    /// (it was retried every few seconds for ever). One generation throughout, restored exactly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_release_while_the_application_is_away_keeps_the_generation() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.db");
        let wal = d.path().join("app.db-wal");
        let (app, mem, r) = releasing(d.path());
        insert_rows(&app, 0, 2);
        drop(app);
        let db = r.db.clone();
        until(15, "released", || db.is_released()).await;
        assert!(
            !wal.exists(),
            "walship's close, the last one, removed the WAL"
        );
        {
            let c = Connection::open(&path).unwrap();
            let n: i64 = c
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 2);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(db.is_released(), "a read-only session changes nothing");
        let first = db.pos();
        let app = Connection::open(&path).unwrap();
        insert_rows(&app, 2, 3);
        until(5, "attached again", || db.pos().index > first.index).await;
        assert_eq!(db.pos().generation, first.generation);
        // Once walship's checkpoint is complete (at its release attempt), the application's
        // TRUNCATE empties the WAL.
        until(15, "an application TRUNCATE that empties the WAL", || {
            let _ = app.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
            std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) == 0
        })
        .await;
        until(15, "released with the WAL emptied", || db.is_released()).await;
        insert_rows(&app, 5, 2);
        let before = db.pos().index;
        until(5, "attached again", || db.pos().index > before).await;
        drop(app);
        assert!(r.stop().await);
        assert_eq!(db.pos().generation, first.generation);
        assert_eq!(generations(&mem).await, 1, "one generation throughout");
        assert_restores_rows(&mem, &d.path().join("out.db"), 7).await;
    }

    /// Releasing is safe: the application commits many small transactions past its
    /// autocheckpoint (so it backfills and restarts the WAL on its own) while walship attaches
    /// again, several times. Whatever walship decides (continue, or a new generation when it
    /// cannot prove the WAL's history), the restore holds every commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_past_the_autocheckpoint_while_attaching_again_lose_nothing() {
        let d = tempfile::tempdir().unwrap();
        let (app, mem, r) = releasing(d.path());
        app.execute_batch("PRAGMA wal_autocheckpoint = 100")
            .unwrap();
        let db = r.db.clone();
        let mut next = 0;
        for _round in 0..3 {
            until(15, "released", || db.is_released()).await;
            for _ in 0..600 {
                insert_rows(&app, next, 1);
                next += 1;
            }
        }
        assert!(r.stop().await);
        assert_restores_rows(&mem, &d.path().join("out.db"), next).await;
        eprintln!("generations: {}", generations(&mem).await);
    }

    /// Commits made just before a stop are in the replica: the monitor (coalescing for a whole
    /// minute) and the shipper (waiting an hour) are cut short, and the final syncs copy and ship
    /// them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_copies_and_ships_the_last_commits() {
        let d = tempfile::tempdir().unwrap();
        let (app, mem, r) = running(d.path(), Duration::from_secs(60), Duration::from_secs(3600));
        // The first round (a generation and its snapshot) happens at start.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..20 {
            app.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        assert!(r.stop().await, "every final sync succeeded");
        assert_eq!(
            restored(mem.clone(), &d.path().join("out.db")).await,
            (0..20).collect::<Vec<i64>>()
        );
    }

    /// A snapshot request copies what is committed first, and each replica answers with the
    /// position of a snapshot that holds every commit made before the request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_request_holds_every_earlier_commit() {
        let d = tempfile::tempdir().unwrap();
        let (app, mem, r) = running(d.path(), Duration::from_secs(60), Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..5 {
            app.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let answers = r.requester().snapshot_all().await;
        assert_eq!(answers.len(), 1);
        let pos = answers[0].1.clone().expect("a snapshot");
        assert_eq!(answers[0].0, "mem");
        let key = crate::layout::snapshot_key(&pos.generation, pos.index);
        assert!(mem.bytes(&key).is_some(), "{key} was written");
        // Restored from the replica as it is now (no stop, so no final sync): all five are in.
        assert_eq!(
            restored(mem.clone(), &d.path().join("out.db")).await,
            (0..5).collect::<Vec<i64>>()
        );
        assert!(r.stop().await);
    }

    /// The WAL's committed length, which the shadow WAL reaches once a copy has taken it all
    /// (no checkpoint runs in these tests: the WAL stays far below the thresholds).
    fn wal_len(dir: &std::path::Path) -> u64 {
        std::fs::metadata(dir.join("app.db-wal")).unwrap().len()
    }

    #[test]
    fn a_window_opened_by_a_shipper_closes_a_little_later() {
        assert_eq!(
            driven_slack(Duration::from_secs(1)),
            Duration::from_millis(50)
        );
        assert_eq!(
            driven_slack(Duration::from_secs(10)),
            Duration::from_millis(50)
        );
        assert_eq!(
            driven_slack(Duration::from_millis(100)),
            Duration::from_millis(5)
        );
    }

    /// A catch-up request copies commits at once, in the middle of a coalescing window that
    /// would otherwise hold them for a minute (monitor-interval 60 s, sync-interval 1 h).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_catch_up_copies_commits_the_window_would_hold() {
        let d = tempfile::tempdir().unwrap();
        let (app, _mem, r) = running(d.path(), Duration::from_secs(60), Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = r.db.pos();
        for i in 0..5 {
            app.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        // The inotify wake-up opens a window of 60 s: nothing is copied for now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(r.db.pos(), before, "copied without being asked");
        let t0 = std::time::Instant::now();
        r.catch_up().now().await;
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(
            r.db.pos().size,
            wal_len(d.path()),
            "the catch-up copied every commit"
        );
        assert!(r.stop().await);
    }

    /// Regression (issue 18): while gathering a burst the monitor looked at the writer every
    /// 100 ms, ten wake-ups a second that were a quarter of walship's CPU at a steady 200 tx/s.
    /// A steady, slow writer is now looked at when the window opens, once more to measure its
    /// rate, and when the window ends: 14 looks for 5 windows here, 45 with a look every 100 ms.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_steady_writer_is_looked_at_a_few_times_per_window() {
        let d = tempfile::tempdir().unwrap();
        // The shipper sleeps for its hour and never cuts a window short.
        let (app, _mem, r) = running(d.path(), Duration::from_secs(1), Duration::from_secs(3600));
        // Past the quiet checkpoint after the first sync, whose fully backfilled WAL is looked at
        // every 100 ms until the next commit restarts it.
        for i in 0..10 {
            app.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (syncs0, looks0) = (
            r.stats.sync_count.load(Ordering::Relaxed),
            r.stats.looks.load(Ordering::Relaxed),
        );
        // 40 small commits a second for 4 s: far from the 4 MiB that ends a window early.
        let t0 = std::time::Instant::now();
        let mut i = 100;
        while t0.elapsed() < Duration::from_secs(4) {
            app.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
            i += 1;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let syncs = r.stats.sync_count.load(Ordering::Relaxed) - syncs0;
        let looks = r.stats.looks.load(Ordering::Relaxed) - looks0;
        eprintln!("{syncs} syncs, {looks} looks");
        assert!(syncs >= 2, "{syncs} syncs in 4 s at monitor-interval 1 s");
        assert!(
            looks <= 3 * syncs + 3,
            "{looks} looks for {syncs} windows: the monitor polls the writer"
        );
        assert!(r.stop().await);
    }

    /// Regression (issue 18): with sync-interval equal to monitor-interval the monitor copied
    /// twice a round: at the end of its own window, then a few milliseconds later for the
    /// shipper, whose wait counted from the end of its upload. Rounds are now spaced start to
    /// start and a window opened by a shipper's copy closes a little later, so one copy serves
    /// both: one sync per upload here, 1.6 before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shipper_at_the_monitor_interval_shares_its_copy() {
        let d = tempfile::tempdir().unwrap();
        let (app, mem, r) = running(d.path(), Duration::from_secs(1), Duration::from_secs(1));
        let segments = || {
            mem.keys()
                .iter()
                .filter(|k| k.ends_with(".wal.lz4"))
                .count() as u64
        };
        // 40 small commits a second for `secs`.
        async fn write_for(app: &Connection, i: &mut i64, secs: u64) {
            let t0 = std::time::Instant::now();
            while t0.elapsed() < Duration::from_secs(secs) {
                app.execute("INSERT INTO t VALUES (?1)", [*i]).unwrap();
                *i += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        let mut i = 0;
        // Settle into the steady rhythm first.
        write_for(&app, &mut i, 3).await;
        let (syncs0, uploads0) = (r.stats.sync_count.load(Ordering::Relaxed), segments());
        write_for(&app, &mut i, 10).await;
        let syncs = r.stats.sync_count.load(Ordering::Relaxed) - syncs0;
        let uploads = segments() - uploads0;
        eprintln!("{syncs} syncs, {uploads} uploads");
        assert!(
            uploads >= 7,
            "{uploads} uploads in 10 s at sync-interval 1 s"
        );
        // Before: 16 syncs for 10 uploads.
        assert!(
            syncs <= uploads + 3,
            "{syncs} syncs for {uploads} uploads: the monitor copies twice a round"
        );
        assert!(r.stop().await);
    }

    /// With a sync-interval shorter than monitor-interval, a commit reaches the replica within
    /// about one sync-interval, not one monitor-interval (60 s here): the caught-up shipper is
    /// woken by the commit and asks for the copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_reaches_the_replica_within_the_sync_interval() {
        let d = tempfile::tempdir().unwrap();
        let (app, mem, r) = running(
            d.path(),
            Duration::from_secs(60),
            Duration::from_millis(200),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let out = d.path().join("out.db");
        for i in 0..3i64 {
            app.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
            let t0 = std::time::Instant::now();
            loop {
                let _ = std::fs::remove_file(&out);
                if restored(mem.clone(), &out).await.contains(&i) {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "commit {i} not in the replica after 10 s (monitor-interval 60 s)"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!("commit {i} reached the replica in {:?}", t0.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(r.stop().await);
    }

    #[test]
    fn stats_count_syncs_errors_and_checkpoints() {
        let s = DbStats::default();
        let ok = crate::db::SyncReport {
            copied_bytes: 4152,
            ..Default::default()
        };
        s.record(Duration::from_millis(2), &Ok(ok.clone()));
        s.record(
            Duration::from_millis(1),
            &Err(crate::Error::transient("busy")),
        );
        s.record(
            Duration::from_millis(1),
            &Err(crate::Error::transient("busy")),
        );
        assert_eq!(s.consecutive_errors.load(Ordering::Relaxed), 2);
        s.record(Duration::from_millis(1), &Ok(ok));
        assert_eq!(s.sync_count.load(Ordering::Relaxed), 4);
        assert_eq!(s.sync_error_count.load(Ordering::Relaxed), 2);
        assert_eq!(s.consecutive_errors.load(Ordering::Relaxed), 0);
        assert_eq!(s.wal_bytes.load(Ordering::Relaxed), 8304);
        assert_eq!(s.sync_nanos.load(Ordering::Relaxed), 5_000_000);
    }

    /// More databases than the descriptor budget attaches at once (room for one here): each
    /// waits for a slot, waiting makes the idle attached one release at once (release-after is an
    /// hour), and every database replicates, again after a write to a released one, with never
    /// more than one attached. Restored exactly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn databases_over_the_descriptor_budget_take_turns_and_all_replicate() {
        use crate::db::budget::{Budget, PER_ATTACHED};
        let budget = Budget::new(2 * PER_ATTACHED);
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut apps = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            let app = Connection::open(d.path().join("app.db")).unwrap();
            app.execute_batch(
                "PRAGMA journal_mode = wal; CREATE TABLE t (x INTEGER); CREATE TABLE pad (b BLOB);",
            )
            .unwrap();
            insert_rows(&app, 0, 3 + i as i64);
            apps.push(app);
        }
        // A release needs files unchanged for QUIET.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let opts = DbOptions {
            monitor_interval: Duration::from_millis(50),
            release_after: Duration::from_secs(3600),
            budget: Some(budget.clone()),
            ..DbOptions::default()
        };
        let running: Vec<_> = dirs
            .iter()
            .map(|d| {
                shipping(
                    &d.path().join("app.db"),
                    opts.clone(),
                    Duration::from_millis(100),
                )
            })
            .collect();
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let watcher = tokio::spawn({
            let (budget, most) = (budget.clone(), most.clone());
            async move {
                loop {
                    most.fetch_max(budget.attached(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        for (mem, _) in &running {
            until(60, "every database replicated", || !mem.keys().is_empty()).await;
        }
        // A write to a database that gave its slot away: it waits for one and ships.
        let first = running[0].1.db.clone();
        until(60, "the first database released", || first.is_released()).await;
        let before = first.pos();
        insert_rows(&apps[0], 3, 5);
        until(60, "the write reached the shadow", || first.pos() != before).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        for (i, (mem, r)) in running.into_iter().enumerate() {
            assert!(r.stop().await);
            let want = if i == 0 { 8 } else { 3 + i as i64 };
            assert_restores_rows(&mem, &dirs[i].path().join("out.db"), want).await;
        }
        watcher.abort();
        assert_eq!(
            most.load(Ordering::Relaxed),
            1,
            "never more than the budget attached"
        );
    }

    /// Databases that never release (`release-after: 0s`, the default of `path:` entries) do
    /// not wait for the descriptor budget: waiting would stop them for good, where before the
    /// budget they simply opened their files. They count against it all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn databases_that_never_release_are_not_held_back_by_the_budget() {
        use crate::db::budget::{Budget, PER_ATTACHED};
        let budget = Budget::new(2 * PER_ATTACHED);
        let opts = DbOptions {
            monitor_interval: Duration::from_millis(50),
            budget: Some(budget.clone()),
            ..DbOptions::default()
        };
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut all = Vec::new();
        for d in &dirs {
            let (app, mem, r) = running_with(d.path(), opts.clone(), Duration::from_millis(100));
            insert_rows(&app, 0, 2);
            all.push((app, mem, r));
        }
        for (_, mem, _) in &all {
            until(20, "every database replicated", || !mem.keys().is_empty()).await;
        }
        assert_eq!(budget.attached(), 3, "counted, over a limit of one");
        for ((_, mem, r), d) in all.into_iter().zip(&dirs) {
            assert!(r.stop().await);
            assert_restores_rows(&mem, &d.path().join("out.db"), 2).await;
        }
        assert_eq!(budget.attached(), 0);
    }

    /// A final sync that cannot finish (a store that accepts the connection and never answers)
    /// is abandoned at the stop's bound, and the stop says it failed: without the bound the
    /// replicator never exited after SIGTERM, until the service manager killed it. What reached
    /// the replica before still restores exactly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_final_sync_that_never_ends_is_abandoned_at_the_bound() {
        use crate::testing::{Calls, Fault, Op};
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.db");
        let app = Connection::open(&path).unwrap();
        app.execute_batch(
            "PRAGMA journal_mode = wal; CREATE TABLE t (x INTEGER); CREATE TABLE pad (b BLOB);",
        )
        .unwrap();
        let opts = DbOptions {
            monitor_interval: Duration::from_millis(50),
            ..DbOptions::default()
        };
        let (mem, faulty, r) = shipping_faulty(
            &path,
            opts,
            ReplicaOptions {
                name: "stuck".into(),
                sync_interval: Duration::from_millis(50),
                ..ReplicaOptions::default()
            },
        );
        insert_rows(&app, 0, 3);
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        let probe = d.path().join("probe.db");
        loop {
            let _ = std::fs::remove_file(&probe);
            let listing = Listing::fetch(mem.as_ref(), None).await.unwrap();
            if let Ok(p) = plan::plan(&listing, None, Target::Latest) {
                let replica: DynReplica = mem.clone();
                if crate::restore::execute(replica, &Age::default(), &p, &probe, 1)
                    .await
                    .is_ok()
                    && rows(&Connection::open(&probe).unwrap()).len() == 3
                {
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < end, "the rows never shipped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        faulty.inject(
            Op::Put,
            Calls::From(faulty.calls(Op::Put) + 1),
            Fault::Delay(Duration::from_secs(3600)),
        );
        insert_rows(&app, 3, 2);
        let started = std::time::Instant::now();
        assert!(
            !r.stop_within(Duration::from_secs(2)).await,
            "an abandoned final sync is a failed stop"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(10),
            "stopped after {took:?}"
        );
        drop(app);
        assert_restores_rows(&mem, &d.path().join("out.db"), 3).await;
    }

    /// Stopping finishes whatever step each task is at: a busy database (commits, application
    /// checkpoints of every mode) stopped at moments spread over its cycles, with the writer
    /// still going or just stopped, stops well within the bound every time, with every commit
    /// made before the stop restored. Rounds: `WALSHIP_STOP_ROUNDS` (default 12).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_at_any_moment_of_a_busy_database_finishes() {
        let rounds: u64 = std::env::var("WALSHIP_STOP_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(12);
        for round in 0..rounds {
            let d = tempfile::tempdir().unwrap();
            let opts = DbOptions {
                monitor_interval: Duration::from_millis(20 + 40 * (round % 3)),
                min_checkpoint_page_count: 50,
                ..DbOptions::default()
            };
            let (app, mem, r) =
                running_with(d.path(), opts, Duration::from_millis(30 + 70 * (round % 4)));
            let phases: Vec<_> = r.shippers.iter().map(|(_, p, _)| p.clone()).collect();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mut writer = Some({
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let modes = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"];
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        insert_rows(&app, n, 1);
                        n += 1;
                        if n % 25 == 0 {
                            let _ = app.execute_batch(&format!(
                                "PRAGMA wal_checkpoint({})",
                                modes[(n / 25) as usize % 4]
                            ));
                        }
                    }
                    n
                })
            });
            // Spread over monitor and sync cycles; odd rounds stop the writer first (the
            // application quiet at SIGTERM), even ones stop while it writes.
            tokio::time::sleep(Duration::from_millis(150 + (round * 137) % 600)).await;
            let quiet_first = round % 2 == 1;
            let mut written = None;
            if quiet_first {
                stop.store(true, Ordering::SeqCst);
                written = writer.take().map(|w| w.join().unwrap());
                tokio::time::sleep(Duration::from_millis((round * 53) % 400)).await;
            }
            let started = std::time::Instant::now();
            let stopped = r.stop_within(Duration::from_secs(20)).await;
            let steps: Vec<&str> = phases.iter().map(|p| p.get()).collect();
            assert!(
                stopped,
                "round {round}: the stop failed or was abandoned (steps {steps:?})"
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "round {round}: stop took {:?} (steps {steps:?})",
                started.elapsed()
            );
            stop.store(true, Ordering::SeqCst);
            let n = written.unwrap_or_else(|| writer.take().unwrap().join().unwrap());
            let got = restored(mem.clone(), &d.path().join("out.db")).await;
            if quiet_first {
                assert_eq!(got, (0..n).collect::<Vec<i64>>(), "round {round}");
            } else {
                // Commits after the final copy are for the next start; those before are all in.
                assert!(
                    got.len() as i64 <= n && got == (0..got.len() as i64).collect::<Vec<_>>(),
                    "round {round}"
                );
            }
        }
    }
}

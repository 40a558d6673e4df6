//! One shipper per replica: uploads shadow WAL segments in order, takes snapshots, enforces
//! retention. Its position is derived from the replica's listing, so nothing about a replica is
//! stored locally and a restart resumes exactly where the replica is.

use crate::codec::Lz4Encoder;
use crate::crypt::Age;
use crate::db::{Db, DbPos};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::{self, Pos};
use crate::listing::{Listing, SegmentInfo};
use crate::plan::{self, Reads, Target};
use crate::replica::{DynReplica, PutSource};
use crate::restore::download_decoded;
use crate::retention;
use crate::retry::RetryPolicy;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};

mod drill;
mod tail;
pub use drill::{Drill, DrillReport, DRILL_BYTES_PER_SEC};

/// A request for a snapshot now (`walship snapshot` through a running `replicate`), answered
/// with the snapshot's position or the error that stopped it.
pub type SnapshotRequest = oneshot::Sender<std::result::Result<Pos, String>>;
/// A request for a restore drill now (`walship verify` through a running `replicate`), answered
/// with its report or the error that stopped it.
pub type VerifyRequest = oneshot::Sender<std::result::Result<DrillReport, String>>;

/// What a running shipper can be asked for between its syncs.
pub enum Request {
    /// Ship the WAL, then take a snapshot.
    Snapshot(SnapshotRequest),
    /// Run a restore drill.
    Verify(VerifyRequest),
}

/// Per-replica settings (README "Configuration") with v0.3.13's defaults.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// The replica's name, unique per database: labels logs and keys its position in [`Db`].
    pub name: String,
    /// Wait after each shipping round before the next (a schedule or a snapshot request can end
    /// it early); the backoff after a failed round starts from it.
    pub sync_interval: Duration,
    /// How often a scheduled snapshot is taken; zero (the default) schedules none, though retention
    /// still takes one when no snapshot is recent enough.
    pub snapshot_interval: Duration,
    /// How long snapshots are kept (see [`retention::plan`]); zero disables retention.
    pub retention: Duration,
    /// How often retention runs (at most `retention`); zero disables it.
    pub retention_check_interval: Duration,
    /// age keys (format §2): uploads are encrypted when it has recipients.
    pub age: Age,
    /// How often a restore drill proves the replica (`validation-interval`); zero: never.
    pub validation_interval: Duration,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            name: String::new(),
            sync_interval: Duration::from_secs(1),
            snapshot_interval: Duration::ZERO,
            retention: Duration::from_secs(24 * 3600),
            retention_check_interval: Duration::from_secs(3600),
            age: Age::default(),
            validation_interval: Duration::ZERO,
        }
    }
}

/// Ships one database's shadow WAL and snapshots to one replica. Its position comes from the
/// replica's listing, never from local state, so a restart resumes where the replica is.
pub struct Shipper {
    db: Arc<Db>,
    replica: DynReplica,
    opts: ReplicaOptions,
    pos: Option<Pos>,
    status: Arc<watch::Sender<ShipperStatus>>,
    /// What a restore of the replica's latest state downloads, kept up to date from the
    /// listing at resume and from each upload since; None until known.
    budget: Option<Reads>,
    /// Segments uploaded for the newest index: (index, count, stored bytes). A snapshot of that
    /// index keeps them in its restore (an index replays from offset 0 on top of its snapshot).
    index_uploads: (u32, u64, u64),
    phase: Phase,
}

/// Where a shipper's task is: a stop that waits long for its final sync names the step
/// (`monitor::Running::stop`), so a stall says where it stalls instead of a log that ends.
#[derive(Clone, Debug, Default)]
pub struct Phase(Arc<std::sync::Mutex<&'static str>>);

impl Phase {
    fn set(&self, what: &'static str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = what;
    }

    /// The step the shipper entered last.
    pub fn get(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a shipper last achieved, for `replicas`, metrics and the heartbeat.
#[derive(Debug, Clone, Default)]
pub struct ShipperStatus {
    /// Where the replica ends as of the last successful sync; None before one found a generation.
    pub pos: Option<Pos>,
    /// Wall-clock time of the last successful sync.
    pub last_sync_ok: Option<SystemTime>,
    /// Message of the last failed sync; cleared by a success.
    pub last_error: Option<String>,
    /// Syncs failed in a row; 0 after a success.
    pub consecutive_errors: u32,
    /// What a restore of the latest state would download (objects, bytes); None until known.
    pub restore: Option<Reads>,
    /// Restore drills that matched.
    pub validations_ok: u64,
    /// Restore drills that did not: a mismatch, or a drill that could not complete.
    pub validations_error: u64,
    /// Wall-clock time of the last drill that matched.
    pub last_validated: Option<SystemTime>,
    /// Why the last drill did not match; cleared by one that does. The replica is not healthy
    /// meanwhile, however well its uploads go.
    pub validation_failure: Option<String>,
}

impl Shipper {
    /// Registers the replica with `db` at a position matching no generation, so shadow WAL files
    /// are kept until this replica has shipped them.
    pub fn new(db: Arc<Db>, replica: DynReplica, opts: ReplicaOptions) -> Self {
        // Registered before its first report, with a position that matches no generation: a
        // replica that has not shipped anything yet (unreachable since start) holds every shadow
        // file, instead of letting the other replicas' progress delete WAL it still owes.
        db.set_replica_pos(&opts.name, Pos::new(String::new(), 0, 0));
        Shipper {
            db,
            replica,
            opts,
            pos: None,
            status: Arc::new(watch::channel(ShipperStatus::default()).0),
            budget: None,
            index_uploads: (0, 0, 0),
            phase: Phase::default(),
        }
    }

    /// A handle on the step this shipper is at (see [`Phase`]).
    pub fn phase(&self) -> Phase {
        self.phase.clone()
    }

    /// The replica's name, from its options.
    pub fn name(&self) -> &str {
        &self.opts.name
    }

    /// Watches what this shipper last achieved; it is updated after every sync.
    pub fn status(&self) -> watch::Receiver<ShipperStatus> {
        self.status.subscribe()
    }

    /// Ships everything the shadow WAL holds now. Errors clear the cached position, so the next
    /// attempt starts again from the listing and can never leave a gap.
    pub async fn sync(&mut self) -> Result<()> {
        let res = self.sync_inner().await;
        self.status.send_modify(|s| match &res {
            Ok(()) => {
                s.pos = self.pos.clone();
                s.restore = self.budget;
                s.last_sync_ok = Some(SystemTime::now());
                s.last_error = None;
                s.consecutive_errors = 0;
            }
            Err(e) => {
                s.last_error = Some(e.to_string());
                s.consecutive_errors += 1;
            }
        });
        if res.is_err() {
            self.pos = None;
        }
        res
    }

    async fn sync_inner(&mut self) -> Result<()> {
        let dbpos = self.db.pos();
        if dbpos.generation.is_empty() {
            return Ok(());
        }
        if self
            .pos
            .as_ref()
            .is_none_or(|p| p.generation != dbpos.generation)
        {
            self.pos = Some(self.resume_position(&dbpos).await?.0);
        }
        self.ship_until(None).await
    }

    /// The replica's position in the current generation, from its listing (format §6).
    /// Also says whether it had to take a snapshot to get one.
    async fn resume_position(&mut self, dbpos: &DbPos) -> Result<(Pos, bool)> {
        self.phase.set("listing the replica");
        let g = &dbpos.generation;
        let listing = Listing::fetch(self.replica.as_ref(), Some(g)).await?;
        if listing.snapshots.is_empty() {
            // Segments of the current index may exist already: continue after them, never overlap.
            let last = listing
                .segments
                .iter()
                .filter(|s| s.index == dbpos.index)
                .max_by_key(|s| s.offset);
            self.pos = match last {
                Some(seg) => self
                    .segment_end(seg)
                    .await?
                    .map(|end| Pos::new(g.clone(), seg.index, end)),
                None => None,
            };
            return Ok((self.snapshot_locked().await?, true));
        }
        let snap_index = listing.snapshots.iter().map(|s| s.index).max().unwrap_or(0);
        // The restore budget as the listing stands; uploads keep it current from here.
        let planned = plan::plan(&listing, Some(g), Target::Latest).ok();
        self.budget = planned.as_ref().map(|p| p.reads());
        self.index_uploads = planned
            .as_ref()
            .and_then(|p| p.indexes.last())
            .map_or((snap_index, 0, 0), |(i, v)| {
                (*i, v.len() as u64, v.iter().map(|s| s.size).sum())
            });
        let last = listing
            .segments
            .iter()
            .filter(|s| s.index >= snap_index)
            .max_by_key(|s| (s.index, s.offset));
        let pos = match last {
            Some(seg) => match self.segment_end(seg).await? {
                Some(end) => Pos::new(g.clone(), seg.index, end),
                None => {
                    self.pos = None;
                    return Ok((self.snapshot_locked().await?, true));
                }
            },
            None => Pos::new(g.clone(), snap_index, 0),
        };
        // The replica can only be behind or equal; anything else is another writer's tree.
        let ahead =
            pos.index > dbpos.index || (pos.index == dbpos.index && pos.offset > dbpos.size);
        if ahead {
            tracing::warn!(db = %self.db.path().display(), replica = %self.opts.name, replica_pos = %pos, db_pos = %dbpos.pos(), "replica is ahead of the database; starting a new generation is needed");
            return Err(Error::invalid(format!(
                "replica {} holds position {pos}, ahead of the database ({}): another process writes to this replica path",
                self.opts.name,
                dbpos.pos()
            )));
        }
        // The shadow file for the next index to ship must still exist, or shipping would leave a gap.
        if pos.index < dbpos.index && self.db.shadow_len(g, pos.index).is_none() {
            tracing::warn!(db = %self.db.path().display(), replica = %self.opts.name, replica_pos = %pos, "shadow wal needed by the replica is gone; taking a new snapshot");
            self.pos = None;
            return Ok((self.snapshot_locked().await?, true));
        }
        Ok((pos, false))
    }

    /// Where the replica's last segment ends in the WAL: v0.3.13 decodes it to know. A replica
    /// that cannot decrypt it (recipients without identities: the host can write backups it
    /// cannot read; or a write-only credential) resumes at the segment's *start* instead, so the
    /// next upload rewrites that segment from the shadow WAL under the same key. The shadow WAL
    /// only grows within an index, so the new object holds the old bytes and possibly more, and
    /// the put is atomic: a reader never sees a gap or an overlap.
    /// A damaged segment (it does not decode, or its bytes differ from the shadow WAL's) is
    /// rewritten the same way; None when the shadow WAL no longer holds its bytes: the caller
    /// takes a snapshot, so shipping goes on from there (see [`tail`]).
    async fn segment_end(&self, seg: &SegmentInfo) -> Result<Option<u64>> {
        let age = &self.opts.age;
        if age.encrypts() && !age.decrypts() {
            tracing::debug!(db = %self.db.path().display(), replica = %self.opts.name, key = %seg.key, "no age identity: the last segment will be uploaded again");
            return Ok(Some(seg.offset));
        }
        self.phase.set("reading the replica's last WAL segment");
        let g = self.db.pos().generation;
        let shadow = self.db.meta().shadow_path(&g, seg.index);
        let check = tail::ShadowCheck::open(&shadow, seg.offset);
        let damage = match download_decoded(
            self.replica.clone(),
            age,
            seg.key.clone(),
            "nowhere",
            check,
        )
        .await
        {
            Ok((n, check)) => match check.differs_at() {
                None => return Ok(Some(seg.offset + n)),
                Some(at) => format!("its byte {at} differs from the shadow WAL"),
            },
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                tracing::warn!(db = %self.db.path().display(), replica = %self.opts.name, key = %seg.key, error = %e, "cannot read the last segment; it will be uploaded again");
                return Ok(Some(seg.offset));
            }
            Err(e) if e.kind() == ErrorKind::Corrupt => e.to_string(),
            Err(e) => return Err(e),
        };
        if self
            .db
            .shadow_len(&g, seg.index)
            .is_some_and(|len| len > seg.offset)
        {
            tracing::warn!(db = %self.db.path().display(), replica = %self.opts.name, key = %seg.key, damage = %damage, "the replica's last WAL segment is damaged; uploading it again from the shadow WAL");
            Ok(Some(seg.offset))
        } else {
            tracing::warn!(db = %self.db.path().display(), replica = %self.opts.name, key = %seg.key, damage = %damage, "the replica's last WAL segment is damaged and the shadow WAL no longer holds it; taking a snapshot");
            Ok(None)
        }
    }

    /// Uploads segments until the replica holds everything up to `until` (default: now).
    async fn ship_until(&mut self, until: Option<DbPos>) -> Result<()> {
        loop {
            let dbpos = until.clone().unwrap_or_else(|| self.db.pos());
            let mut pos = self.pos.clone().expect("position resolved");
            if pos.generation != dbpos.generation {
                return Ok(());
            }
            let end = if pos.index < dbpos.index {
                match self.db.shadow_len(&pos.generation, pos.index) {
                    Some(len) => len,
                    None => {
                        return Err(Error::invalid(format!(
                            "shadow wal {}/{:08x} is gone before replica {} shipped it",
                            pos.generation, pos.index, self.opts.name
                        )))
                    }
                }
            } else {
                dbpos.size
            };
            if pos.offset < end {
                let size = self.upload_segment(&pos, end).await?;
                self.count_upload(&pos, size);
                pos.offset = end;
            } else if pos.index < dbpos.index {
                pos = Pos::new(pos.generation.clone(), pos.index + 1, 0);
            } else {
                self.db.set_replica_pos(&self.opts.name, pos.clone());
                self.pos = Some(pos);
                return Ok(());
            }
            self.db.set_replica_pos(&self.opts.name, pos.clone());
            self.pos = Some(pos);
        }
    }

    /// Adds an uploaded segment to the restore budget.
    fn count_upload(&mut self, pos: &Pos, size: u64) {
        let (i, n, b) = self.index_uploads;
        self.index_uploads = if i == pos.index {
            (i, n + 1, b + size)
        } else {
            (pos.index, 1, size)
        };
        if let Some(r) = &mut self.budget {
            r.objects += 1;
            r.segments += 1;
            r.bytes += size;
            r.indexes += u64::from(pos.offset == 0);
        }
    }

    /// Uploads one segment; returns its stored size.
    async fn upload_segment(&self, pos: &Pos, end: u64) -> Result<u64> {
        let key = layout::wal_segment_key(&pos.generation, pos.index, pos.offset);
        let db = self.db.clone();
        let (g, i, from) = (pos.generation.clone(), pos.index, pos.offset);
        let age = self.opts.age.clone();
        let source = PutSource::stream(move || {
            let r = db.open_shadow(&g, i, from, end)?;
            age.encrypt(Lz4Encoder::new(r))
        });
        // v0.3.13's two INFO lines per upload, with its fields: users tail the log to see backups
        // happen. `position` is where the segment starts and `sz` the WAL bytes it holds.
        self.phase.set("uploading a WAL segment");
        tracing::info!(db = %self.db.path().display(), replica = %self.opts.name, position = %pos, "write wal segment");
        tracing::debug!(db = %self.db.path().display(), replica = %self.opts.name, key = %key, wal_bytes = end - pos.offset, "replica sync: put");
        let started = Instant::now();
        let size = self
            .replica
            .put(&key, source)
            .await
            .map_err(|e| e.with_operation("write wal segment", key.as_str()))?;
        tracing::info!(db = %self.db.path().display(), replica = %self.opts.name, position = %pos, elapsed = ?started.elapsed(), sz = end - pos.offset, "wal segment written");
        Ok(size)
    }

    /// Takes a snapshot now (holding the snapshot gate so `R` cannot move while the file is read).
    pub async fn snapshot(&mut self) -> Result<Pos> {
        let dbpos = self.db.pos();
        if dbpos.generation.is_empty() {
            return Err(Error::invalid("database not initialised yet"));
        }
        if self
            .pos
            .as_ref()
            .is_none_or(|p| p.generation != dbpos.generation)
        {
            let (pos, snapshotted) = self.resume_position(&dbpos).await?;
            self.pos = Some(pos.clone());
            if snapshotted {
                return Ok(pos);
            }
        }
        self.snapshot_locked().await
    }

    async fn snapshot_locked(&mut self) -> Result<Pos> {
        // A replica behind in this generation (a slow or failing link) first ships the WAL it
        // still owes: a snapshot must never leave a hole that a point-in-time restore would walk
        // into. The bulk goes before the gate, so checkpoints are not held back meanwhile.
        if self.owes_past_indexes() {
            self.ship_until(None).await?;
        }
        self.phase
            .set("snapshot: holding checkpoints and attaching the database");
        let _hold = self.db.hold_attached().await?;
        let dbpos = self.db.pos();
        // Ship the snapshot's index up to now first: the file may already hold pages of those
        // frames, and a restore to the snapshot's time must find them.
        let start = match &self.pos {
            Some(p) if p.generation == dbpos.generation && p.index == dbpos.index => p.clone(),
            Some(p) if p.generation == dbpos.generation && self.owes_past_indexes() => p.clone(),
            _ => Pos::new(dbpos.generation.clone(), dbpos.index, 0),
        };
        self.pos = Some(start);
        self.ship_until(Some(dbpos.clone())).await?;
        let key = layout::snapshot_key(&dbpos.generation, dbpos.index);
        let snap = self
            .db
            .snapshotter()
            .ok_or_else(|| Error::invalid("database not opened yet"))?;
        let age = self.opts.age.clone();
        let source = PutSource::stream(move || {
            use crate::snapshot::Snapshotter;
            age.encrypt(Lz4Encoder::new(snap.open()?))
        });
        self.phase.set("uploading a snapshot");
        tracing::info!(db = %self.db.path().display(), replica = %self.opts.name, position = %dbpos.pos(), "write snapshot");
        tracing::debug!(db = %self.db.path().display(), replica = %self.opts.name, key = %key, "snapshot: put");
        let started = Instant::now();
        let size = self
            .replica
            .put(&key, source)
            .await
            .map_err(|e| e.with_operation("write snapshot", key.as_str()))?;
        tracing::info!(db = %self.db.path().display(), replica = %self.opts.name, position = %dbpos.pos(), elapsed = ?started.elapsed(), sz = size, "snapshot written");
        crate::trim::after_burst();
        let (i, n, b) = self.index_uploads;
        let (n, b) = if i == dbpos.index { (n, b) } else { (0, 0) };
        self.budget = Some(Reads {
            objects: 1 + n,
            segments: n,
            indexes: u64::from(n > 0),
            bytes: size + b,
        });
        Ok(dbpos.pos())
    }

    /// Whether the replica's position is at an earlier index of the current generation whose
    /// shadow WAL is still here to ship from.
    fn owes_past_indexes(&self) -> bool {
        let dbpos = self.db.pos();
        self.pos.as_ref().is_some_and(|p| {
            p.generation == dbpos.generation
                && p.index < dbpos.index
                && self.db.shadow_len(&p.generation, p.index).is_some()
        })
    }

    /// Applies retention (format §8).
    pub async fn enforce_retention(&mut self) -> Result<usize> {
        self.retention_round().await.map(|(n, _)| n)
    }

    /// One retention run: the objects deleted, and when the next run can have anything to do
    /// ([`retention::next_change`]): until then checking would only cost a listing, which for
    /// thousands of idle databases was most of the store's bill.
    async fn retention_round(&mut self) -> Result<(usize, Option<SystemTime>)> {
        let mut listing = Listing::fetch(self.replica.as_ref(), None).await?;
        let mut plan = retention::plan(&listing, SystemTime::now(), self.opts.retention);
        if plan.need_snapshot {
            self.snapshot().await?;
            listing = Listing::fetch(self.replica.as_ref(), None).await?;
            plan = retention::plan(&listing, SystemTime::now(), self.opts.retention);
        }
        for chunk in plan.delete.chunks(1000) {
            self.replica.delete(chunk).await?;
        }
        if !plan.delete.is_empty() {
            tracing::info!(db = %self.db.path().display(), replica = %self.opts.name, deleted = plan.delete.len(), "retention: objects deleted");
        }
        let next = retention::next_change(&listing, SystemTime::now(), self.opts.retention);
        Ok((plan.delete.len(), next))
    }

    /// Time until the next scheduled snapshot, from the newest snapshot of the current generation.
    async fn first_snapshot_delay(&self) -> Duration {
        let iv = self.opts.snapshot_interval;
        let g = self.db.pos().generation;
        if g.is_empty() {
            return iv;
        }
        match Listing::fetch(self.replica.as_ref(), Some(&g)).await {
            Ok(l) => match l.snapshots.iter().map(|s| s.created).max() {
                Some(t) => {
                    iv.saturating_sub(SystemTime::now().duration_since(t).unwrap_or_default())
                }
                None => iv,
            },
            Err(_) => iv,
        }
    }

    /// Runs until `shutdown` flips to true, then makes one final sync.
    /// `requests`: snapshots and drills asked for now; each is taken after the WAL is shipped,
    /// and answered.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut requests: mpsc::Receiver<Request>,
        catch_up: crate::monitor::CatchUp,
    ) -> Result<()> {
        let mut db_rx = self.db.subscribe();
        let mut asked: Vec<SnapshotRequest> = Vec::new();
        let mut verify_asked: Vec<VerifyRequest> = Vec::new();
        let vi = self.opts.validation_interval;
        let mut next_validation = (!vi.is_zero()).then(|| tokio::time::Instant::now() + vi);
        // The drill restoring in the background. Snapshots and retention wait for it: a snapshot
        // of the drill's index would replace the object its restore reads (snapshot keys name
        // the index only), and retention could delete it.
        let mut drilling: Option<tokio::task::JoinHandle<()>> = None;
        let drill_stop = tokio_util::sync::CancellationToken::new();
        let mut next_snapshot =
            (!self.opts.snapshot_interval.is_zero()).then(tokio::time::Instant::now);
        if next_snapshot.is_some() {
            next_snapshot = Some(tokio::time::Instant::now() + self.first_snapshot_delay().await);
        }
        let ri = self.opts.retention_check_interval.min(self.opts.retention);
        let mut next_retention = (!self.opts.retention.is_zero() && !ri.is_zero())
            .then(|| tokio::time::Instant::now() + ri);
        match self.replica.remove_stale_temporaries().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(db = %self.db.path().display(), replica = %self.opts.name, removed = n, "removed temporary files of interrupted uploads")
            }
            Err(e) => {
                tracing::warn!(db = %self.db.path().display(), replica = %self.opts.name, error = %e, "cannot remove temporary files of interrupted uploads")
            }
        }
        let failure_policy = failure_backoff(self.opts.sync_interval);
        let mut failures = failure_policy.delays();
        let mut backoff = Duration::ZERO;
        // A commit to a database this replica is caught up with wakes it at once (then the
        // monitor copies it on request): the monitor alone would copy it only at the end of its
        // own gathering window, up to monitor-interval later.
        let commits = catch_up
            .active()
            .then(|| crate::watch::WalWatch::new(self.db.wal_path()))
            .filter(|w| w.active);
        // When this round's copy was asked for (None: the round starts at the top of the loop).
        // Rounds are spaced from start to start (v0.3.13's ticker does the same), so the next
        // request falls due as the monitor's window, opened by this round's copy, closes: the
        // monitor makes one copy for both instead of its own and, milliseconds later, the
        // shipper's (two copies a second at 1 s, each a dozen system calls and two hand-offs).
        let mut round_start: Option<tokio::time::Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let started = round_start.take().unwrap_or_else(tokio::time::Instant::now);
            self.phase.set("syncing");
            if let Err(e) = self.sync().await {
                backoff = failures.next().unwrap_or(failure_policy.max_delay);
                tracing::error!(db = %self.db.path().display(), replica = %self.opts.name, error = %e, retry_in = ?backoff, "monitor error");
            } else if !backoff.is_zero() {
                backoff = Duration::ZERO;
                failures = failure_policy.delays();
            }
            let now = tokio::time::Instant::now();
            if drilling.as_ref().is_some_and(|h| h.is_finished()) {
                drilling = None;
            }
            let drill_on = drilling.is_some();
            if !asked.is_empty() && !drill_on {
                let res = self.snapshot().await;
                match &res {
                    Ok(pos) => {
                        tracing::info!(db = %self.db.path().display(), replica = %self.opts.name, position = %pos, "requested snapshot taken")
                    }
                    Err(e) => {
                        tracing::error!(db = %self.db.path().display(), replica = %self.opts.name, error = %e, "requested snapshot failed");
                        self.pos = None;
                    }
                }
                let answer = res.map_err(|e| e.to_string());
                for tx in asked.drain(..) {
                    let _ = tx.send(answer.clone());
                }
                // The request stands in for the scheduled snapshot it is closest to.
                if next_snapshot.is_some() {
                    next_snapshot = Some(now + self.opts.snapshot_interval);
                }
            }
            if next_snapshot.is_some_and(|t| now >= t) && !drill_on {
                if let Err(e) = self.snapshot().await {
                    tracing::error!(db = %self.db.path().display(), replica = %self.opts.name, error = %e, "snapshotter error");
                    self.pos = None;
                }
                next_snapshot = Some(now + self.opts.snapshot_interval);
            }
            if next_retention.is_some_and(|t| now >= t) && !drill_on {
                self.phase.set("retention");
                // The next check at retention-check-interval, or later when the listing shows
                // that nothing can be due before then.
                let mut wait = ri;
                match self.retention_round().await {
                    Ok((_, next)) => {
                        if let Some(d) = next.and_then(|t| t.duration_since(SystemTime::now()).ok())
                        {
                            wait = wait.max(d);
                        }
                    }
                    Err(e) => {
                        tracing::error!(db = %self.db.path().display(), replica = %self.opts.name, error = %e, "retainer error");
                        self.pos = None;
                    }
                }
                next_retention = Some(now + wait);
            }
            // After the snapshot and retention due this round: drills back to back (an interval
            // shorter than a drill) must not starve them.
            if drilling.is_none()
                && (!verify_asked.is_empty() || next_validation.is_some_and(|t| now >= t))
            {
                self.phase.set("preparing a restore drill");
                match self.prepare_drill().await {
                    Ok(Some(d)) => {
                        let status = self.status.clone();
                        let waiting = std::mem::take(&mut verify_asked);
                        let stop = drill_stop.clone();
                        drilling = Some(tokio::spawn(async move {
                            let answer = d.run_and_record(status, stop).await;
                            for tx in waiting {
                                let _ = tx.send(answer.clone());
                            }
                        }));
                        next_validation = next_validation.map(|_| now + vi);
                    }
                    // Another replica's drill, or nothing to drill yet: the next round tries.
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(db = %self.db.path().display(), replica = %self.opts.name, error = %e, "validation failed: the restore drill could not start");
                        let res = Err(e);
                        drill::record(&self.status, &res);
                        let answer = res.map_err(|e| e.to_string());
                        for tx in verify_asked.drain(..) {
                            let _ = tx.send(answer.clone());
                        }
                        next_validation = next_validation.map(|_| now + vi);
                        self.pos = None;
                    }
                }
            }
            let mut deadline = next_round(
                started,
                tokio::time::Instant::now(),
                self.opts.sync_interval,
                backoff,
            );
            for t in [next_snapshot, next_retention, next_validation]
                .into_iter()
                .flatten()
            {
                deadline = deadline.min(t.max(tokio::time::Instant::now()));
            }
            // Wait the sync interval, then for a change of the shadow WAL (or a schedule).
            // A request cuts the wait short: the user is waiting for its answer.
            self.phase.set("waiting for the sync interval");
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => continue,
                Some(r) = requests.recv() => take(r, &mut asked, &mut verify_asked),
            }
            // Armed before the copy: a commit made after it wakes the wait below.
            let armed = commits.as_ref().is_some_and(|w| w.arm());
            // What was committed during the wait is copied now, not at the monitor's next cycle:
            // the upload that follows carries it, so a commit waits about one sync-interval.
            self.phase.set("waiting for the monitor's copy");
            round_start = Some(tokio::time::Instant::now());
            catch_up.now().await;
            if asked.is_empty()
                && verify_asked.is_empty()
                && !drill_on
                && backoff.is_zero()
                && self.pos.as_ref().is_some_and(|p| *p == self.db.pos().pos())
            {
                let mut wake = next_snapshot
                    .into_iter()
                    .chain(next_retention)
                    .chain(next_validation)
                    .min();
                let sleep = async {
                    match wake.take() {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                let commit = async {
                    match &commits {
                        Some(w) if armed => w.notify.notified().await,
                        _ => std::future::pending().await,
                    }
                };
                self.phase.set("caught up: waiting for a change");
                tokio::select! {
                    _ = db_rx.changed() => {}
                    _ = commit => {
                        self.phase.set("a commit: waiting for the monitor's copy");
                        round_start = Some(tokio::time::Instant::now());
                        catch_up.now().await
                    }
                    _ = sleep => {}
                    _ = shutdown.changed() => {}
                    Some(r) = requests.recv() => take(r, &mut asked, &mut verify_asked),
                }
            }
        }
        if let Some(mut h) = drilling {
            // Not an abort: that would drop the restore's future while its decoders go on
            // reading on blocking threads, through pacing timers the runtime is about to shut
            // down (a panic). Stopped, every download fails at once and the drill ends.
            self.phase.set("stopping the restore drill");
            drill_stop.cancel();
            if tokio::time::timeout(DRILL_STOP_WAIT, &mut h).await.is_err() {
                tracing::warn!(db = %self.db.path().display(), replica = %self.opts.name, "the restore drill did not stop in time; abandoning it");
                h.abort();
            }
        }
        self.phase.set("final sync");
        self.final_sync().await
    }

    async fn final_sync(&mut self) -> Result<()> {
        self.sync().await.map_err(|e| {
            tracing::error!(db = %self.db.path().display(), replica = %self.opts.name, error = %e, "final sync failed");
            e
        })
    }
}

/// When the next upload round may start: sync-interval after this round started (not after its
/// upload ended, which would add the upload's duration to every interval and put the request a
/// few milliseconds after the monitor's own copy), and never before now. After a failure the
/// backoff counts from now: a store that fails fast must not be retried at once.
fn next_round(
    round_start: tokio::time::Instant,
    now: tokio::time::Instant,
    interval: Duration,
    backoff: Duration,
) -> tokio::time::Instant {
    if backoff.is_zero() {
        (round_start + interval).max(now)
    } else {
        now + interval.max(backoff)
    }
}

/// How long a stopping shipper waits for its drill to end once told to: reads fail at once, so
/// this only covers a decoder finishing the block it holds and a digest in progress.
const DRILL_STOP_WAIT: Duration = Duration::from_secs(10);

/// Longest wait between failed syncs once sync-interval is shorter: a store that comes back
/// after an outage of any length is tried again within this, so the replica catches up in
/// seconds (a 60 s cap left a replica 53 s behind after a 70 s outage). Each failed sync already
/// spent several attempts inside the retry layer, so this does not hammer a store that is down.
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(4);

/// The waits after failed rounds in a row: from sync-interval (at least 100 ms) doubling up to
/// max(sync-interval, [`MAX_FAILURE_BACKOFF`]), without end and without jitter (the retry
/// layer's attempts inside each round already spread a fleet's retries).
/// Files a request with the others of its kind, answered at the next round.
fn take(r: Request, snapshots: &mut Vec<SnapshotRequest>, drills: &mut Vec<VerifyRequest>) {
    match r {
        Request::Snapshot(tx) => snapshots.push(tx),
        Request::Verify(tx) => drills.push(tx),
    }
}

pub(crate) fn failure_backoff(sync_interval: Duration) -> RetryPolicy {
    let cap = sync_interval.max(MAX_FAILURE_BACKOFF);
    RetryPolicy {
        min_delay: sync_interval.max(Duration::from_millis(100)).min(cap),
        max_delay: cap,
        max_attempts: usize::MAX,
        jitter: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_near_the_sync_interval() {
        let ms = |s: Duration, n: usize| -> Vec<u128> {
            failure_backoff(s)
                .delays()
                .take(n)
                .map(|d| d.as_millis())
                .collect()
        };
        let seen = ms(Duration::from_secs(1), 40);
        assert_eq!(&seen[..4], &[1000, 2000, 4000, 4000]);
        assert_eq!(seen.len(), 40, "failures never run out of waits");
        assert!(seen.iter().all(|&x| x <= 4000), "{seen:?}");
        // A long sync-interval is its own cap; a short one still starts at it.
        assert_eq!(ms(Duration::from_secs(10), 3), [10_000, 10_000, 10_000]);
        assert_eq!(
            ms(Duration::from_millis(100), 7),
            [100, 200, 400, 800, 1600, 3200, 4000]
        );
        // A zero sync-interval never makes a failing shipper spin.
        assert_eq!(ms(Duration::ZERO, 1), [100]);
    }

    #[test]
    fn rounds_are_spaced_from_start_to_start() {
        let t0 = tokio::time::Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // An upload of 7 ms does not push the next round back.
        assert_eq!(next_round(t0, t0 + ms(7), s(1), Duration::ZERO), t0 + s(1));
        // A round longer than the interval is followed at once, never by a round in the past.
        assert_eq!(
            next_round(t0, t0 + ms(1500), s(1), Duration::ZERO),
            t0 + ms(1500)
        );
        // After a failure the wait counts from now, and is at least the interval.
        assert_eq!(next_round(t0, t0 + ms(7), s(1), s(4)), t0 + ms(7) + s(4));
        assert_eq!(next_round(t0, t0 + ms(7), s(10), s(4)), t0 + ms(7) + s(10));
    }
}

#[cfg(test)]
mod engine_tests;

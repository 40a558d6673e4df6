//! A shipper's restore drill (see [`crate::drill`]): prepared in the shipper's loop under the
//! checkpoint hold (ship to a position, list the replica, digest the local database), then run
//! as its own task (restore into a private file, digest, compare), so shipping goes on while a
//! large database is restored.

use super::{Shipper, ShipperStatus};
use crate::crypt::Age;
use crate::drill::{self, Digests};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::Pos;
use crate::listing::Listing;
use crate::plan::{self, Plan, Target};
use crate::replica::DynReplica;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Requests in flight while a drill restores: few, so that a drill never crowds out the
/// shipper's own uploads on a thin link; restore's own budgets bound its memory.
const DRILL_PARALLELISM: usize = 2;
/// Stored bytes a second a drill downloads at most, all its requests together: a daily check of
/// a large database must not saturate the droplet's link or disk while the application and the
/// uploads use them (a 1 GiB database that stores as 400 MB takes about 7 s at this rate).
pub const DRILL_BYTES_PER_SEC: u64 = 64 << 20;

/// What a drill found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillReport {
    /// The position both sides were computed at.
    pub pos: Pos,
    /// Pages compared (the local database's page count).
    pub pages: u64,
    /// Objects the restore read.
    pub objects: u64,
    /// Stored bytes the restore read.
    pub bytes: u64,
    /// Wall time of the whole drill, preparation included.
    pub elapsed: Duration,
    /// How long walship's own checkpoints waited for the local half (the application's never
    /// wait for a drill).
    pub held: Duration,
    /// None when the replica restores exactly the local database; otherwise what differs and
    /// the objects the restore was built from.
    pub mismatch: Option<String>,
}

impl std::fmt::Display for DrillReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mismatch {
            None => write!(
                f,
                "ok: position {}, {} pages equal, {} objects ({} bytes) read in {:.2?} (checkpoints held {:.2?})",
                self.pos, self.pages, self.objects, self.bytes, self.elapsed, self.held
            ),
            Some(m) => write!(f, "MISMATCH at position {}: {m}", self.pos),
        }
    }
}

/// A drill whose local half is done: the replica must now restore `plan` to the same content.
pub struct Drill {
    db: String,
    replica_name: String,
    replica: DynReplica,
    age: Age,
    pos: Pos,
    plan: Plan,
    local: Digests,
    scratch: PathBuf,
    started: Instant,
    held: Duration,
    _exclusive: tokio::sync::OwnedMutexGuard<()>,
}

impl Shipper {
    /// The local half of a drill. None when another replica of this database is drilling, or
    /// the replica's generation changed under it (try later); an error when the database has
    /// no generation at all.
    pub async fn prepare_drill(&mut self) -> Result<Option<Drill>> {
        let age = &self.opts.age;
        if age.encrypts() && !age.decrypts() {
            return Err(Error::invalid(format!(
                "replica {} is encrypted for recipients without an identity here: a restore drill needs the age identities to read it",
                self.opts.name
            )));
        }
        let Some(exclusive) = self.db.try_drill() else {
            return Ok(None);
        };
        let started = Instant::now();
        let dbpos = self.db.pos();
        // Not a wait: a database that is missing (or never opened) stays so, and `walship
        // verify` must hear it rather than wait for a drill that cannot start.
        if dbpos.generation.is_empty() {
            return Err(Error::not_found(
                "nothing to drill: the database has no generation yet (missing, or not opened by a first sync)",
            ));
        }
        if self
            .pos
            .as_ref()
            .is_none_or(|p| p.generation != dbpos.generation)
        {
            self.pos = Some(self.resume_position(&dbpos).await?.0);
        }
        // The bulk first, as a snapshot does: the hold below only waits for what came since.
        self.ship_until(None).await?;
        let hold = self.db.hold_attached().await?;
        let held_since = Instant::now();
        let dbpos = self.db.pos();
        if dbpos.size == 0
            || self
                .pos
                .as_ref()
                .is_none_or(|p| p.generation != dbpos.generation)
        {
            return Ok(None);
        }
        self.ship_until(Some(dbpos.clone())).await?;
        let pos = dbpos.pos();
        let g = &pos.generation;
        let listing = Listing::fetch(self.replica.as_ref(), Some(g)).await?;
        let plan = plan::plan(&listing, Some(g), Target::Position(pos.index, pos.offset))
            .map_err(|e| e.with_operation("plan the restore drill", pos.to_string()))?;
        let snap = self
            .db
            .snapshotter()
            .ok_or_else(|| Error::invalid("database not opened yet"))?;
        let db = self.db.clone();
        let (gen, index, upto) = (g.clone(), pos.index, pos.offset);
        let local = tokio::task::spawn_blocking(move || {
            use crate::snapshot::Snapshotter;
            let image = snap.open()?;
            let wal = db.open_shadow(&gen, index, 0, upto)?;
            drill::local_digests(image, wal, upto)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Other, format!("drill task failed: {e}")))?
        .map_err(|e| Error::io("digest the local database for the restore drill", e))?;
        drop(hold);
        let held = held_since.elapsed();
        let name: String = self
            .opts
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Ok(Some(Drill {
            db: self.db.path().display().to_string(),
            replica_name: self.opts.name.clone(),
            replica: self.replica.clone(),
            age: self.opts.age.clone(),
            pos,
            plan,
            local,
            scratch: self.db.meta().root.join(format!("drill-{name}.db")),
            started,
            held,
            _exclusive: exclusive,
        }))
    }

    /// Prepares and runs a whole drill here (`walship verify` without a running replicate).
    pub async fn drill_now(&mut self) -> Result<Option<DrillReport>> {
        match self.prepare_drill().await? {
            Some(d) => d.run(&CancellationToken::new()).await.map(Some),
            None => Ok(None),
        }
    }
}

impl Drop for Drill {
    /// A drill stopped half-way (replicate shutting down) leaves no copy of the database behind.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.scratch);
    }
}

impl Drill {
    /// The replica's half: restores the plan into a private file beside the meta directory,
    /// digests it and compares. The file is removed whatever happens. Cancelling `stop` makes
    /// every download fail at once, so the drill (its blocking decoders included) ends soon.
    pub async fn run(self, stop: &CancellationToken) -> Result<DrillReport> {
        let _ = std::fs::remove_file(&self.scratch);
        let res = crate::restore::execute(
            crate::throttle::throttled(self.replica.clone(), DRILL_BYTES_PER_SEC, stop.clone()),
            &self.age,
            &self.plan,
            &self.scratch,
            DRILL_PARALLELISM,
        )
        .await;
        let res = match res {
            Ok(()) => {
                let path = self.scratch.clone();
                tokio::task::spawn_blocking(move || drill::file_digests(&path))
                    .await
                    .map_err(|e| Error::new(ErrorKind::Other, format!("drill task failed: {e}")))?
                    .map_err(|e| {
                        Error::io(
                            format!("digest the restored copy {}", self.scratch.display()),
                            e,
                        )
                    })
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&self.scratch);
        let remote = res?;
        let reads = self.plan.reads();
        let mismatch = drill::first_difference(&self.local, &remote).map(|d| {
            let segments: Vec<&str> = self
                .plan
                .indexes
                .iter()
                .flat_map(|(_, v)| v)
                .map(|s| s.key.as_str())
                .collect();
            let wal = match (segments.first(), segments.last()) {
                (Some(a), Some(b)) if segments.len() > 1 => {
                    format!("{} WAL segments {a} .. {b}", segments.len())
                }
                (Some(a), _) => format!("WAL segment {a}"),
                _ => "no WAL segment".to_string(),
            };
            format!(
                "{d}: the restore from snapshot {} and {wal} is not the database at this position",
                self.plan.snapshot.key
            )
        });
        Ok(DrillReport {
            pos: self.pos.clone(),
            pages: self.local.pages.len() as u64,
            objects: reads.objects,
            bytes: reads.bytes,
            elapsed: self.started.elapsed(),
            held: self.held,
            mismatch,
        })
    }

    /// Runs the drill, logs its verdict and records it in the replica's status: a mismatch or a
    /// drill that could not complete makes the replica unhealthy until one matches. A drill
    /// stopped by `stop` (replicate shutting down) proves nothing either way: it is logged and
    /// not recorded.
    pub async fn run_and_record(
        self,
        status: Arc<watch::Sender<ShipperStatus>>,
        stop: CancellationToken,
    ) -> std::result::Result<DrillReport, String> {
        let (db, name) = (self.db.clone(), self.replica_name.clone());
        let res = self.run(&stop).await;
        if res.is_err() && stop.is_cancelled() {
            tracing::info!(db = %db, replica = %name, "restore drill stopped: walship is shutting down");
            return Err("the drill was stopped: walship is shutting down".into());
        }
        match &res {
            Ok(r) if r.mismatch.is_none() => {
                tracing::info!(db = %db, replica = %name, position = %r.pos, pages = r.pages, objects = r.objects, bytes = r.bytes, elapsed = ?r.elapsed, checkpoints_held = ?r.held, "validation ok: the replica restores this database exactly");
            }
            Ok(r) => {
                tracing::error!(db = %db, replica = %name, position = %r.pos, error = %r.mismatch.as_deref().unwrap_or_default(), "validation mismatch");
            }
            Err(e) => {
                tracing::error!(db = %db, replica = %name, error = %e, "validation failed: the restore drill could not complete");
            }
        }
        record(&status, &res);
        res.map_err(|e| e.to_string())
    }
}

/// Records a drill's verdict (or a failure to prepare one) in the replica's status.
pub(super) fn record(status: &watch::Sender<ShipperStatus>, res: &Result<DrillReport>) {
    status.send_modify(|s| match res {
        Ok(r) if r.mismatch.is_none() => {
            s.validations_ok += 1;
            s.last_validated = Some(SystemTime::now());
            s.validation_failure = None;
        }
        Ok(r) => {
            s.validations_error += 1;
            s.validation_failure = r.mismatch.as_ref().map(|m| format!("validation: {m}"));
        }
        Err(e) => {
            s.validations_error += 1;
            s.validation_failure = Some(format!("validation: {e}"));
        }
    });
}

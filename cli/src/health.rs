//! What `replicate` knows about its replicas, in one place: the systemd `STATUS=` line, the
//! heartbeat's "is every replica healthy" and the lag metrics all read it.
//!
//! Healthy means: the replica's last sync succeeded, and it either holds the database's current
//! position or its last success is recent (a few sync intervals). So an idle database is healthy
//! (nothing to ship, nothing failed) and so is a long import that keeps shipping (every sync
//! succeeds), while a replica that fails, or that has not succeeded for a while, is not.

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use walship_core::db::Db;
use walship_core::monitor::DbStats;
use walship_core::shipper::ShipperStatus;

/// One replica of one database, as the running engine reports it.
pub struct ReplicaView {
    pub db: Arc<Db>,
    pub name: String,
    pub sync_interval: Duration,
    pub status: watch::Receiver<ShipperStatus>,
}

/// One database and its monitor counters.
pub struct DbView {
    pub db: Arc<Db>,
    pub stats: Arc<DbStats>,
}

#[derive(Default)]
pub struct Health {
    pub dbs: Vec<DbView>,
    pub replicas: Vec<ReplicaView>,
}

/// The current [`Health`], replaced whole when a reload (SIGHUP) adds, removes or restarts
/// databases; readers (metrics, heartbeat, `STATUS=`) take the current one for each look.
#[derive(Default)]
pub struct Shared(std::sync::RwLock<Arc<Health>>);

impl Shared {
    pub fn new(h: Health) -> Shared {
        Shared(std::sync::RwLock::new(Arc::new(h)))
    }

    pub fn get(&self) -> Arc<Health> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, h: Health) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(h);
    }
}

/// A replica's state at one moment, computed by [`judge`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub healthy: bool,
    /// Bytes of the current shadow WAL index not yet on the replica (0 when caught up; unknown
    /// across indexes or generations, reported as the whole current index).
    pub lag_bytes: u64,
    /// Seconds since the replica last held the database's position (0 when it holds it now).
    pub lag_seconds: f64,
    pub failing: Option<String>,
}

/// How long a replica may go without a successful sync while behind and still count as healthy.
pub fn grace(sync_interval: Duration) -> Duration {
    (sync_interval * 5).max(Duration::from_secs(60))
}

/// Pure judgement of one replica from its shipper status and the database position.
pub fn judge(
    st: &ShipperStatus,
    db: &walship_core::db::DbPos,
    sync_interval: Duration,
    now: SystemTime,
) -> Verdict {
    let caught_up = db.generation.is_empty()
        || st.pos.as_ref().is_some_and(|p| {
            p.generation == db.generation && p.index == db.index && p.offset >= db.size
        });
    let lag_bytes = match &st.pos {
        _ if caught_up => 0,
        Some(p) if p.generation == db.generation && p.index == db.index => {
            db.size.saturating_sub(p.offset)
        }
        _ => db.size,
    };
    let since_ok = st
        .last_sync_ok
        .map(|t| now.duration_since(t).unwrap_or_default());
    let lag_seconds = if caught_up && st.consecutive_errors == 0 {
        0.0
    } else {
        since_ok.map(|d| d.as_secs_f64()).unwrap_or(0.0)
    };
    // A failed restore drill outweighs successful uploads: they go to a replica that does not
    // restore the database.
    let failing = (st.consecutive_errors > 0)
        .then(|| {
            st.last_error
                .clone()
                .unwrap_or_else(|| "sync failed".to_string())
        })
        .or_else(|| st.validation_failure.clone());
    // A replica that never reached the current generation (say, unreachable since start) is not
    // healthy, however recent its last (empty) success: that one happened before there was
    // anything to ship.
    let started = db.generation.is_empty() || st.pos.is_some();
    let healthy = failing.is_none()
        && started
        && since_ok.is_some()
        && (caught_up || since_ok.is_some_and(|d| d <= grace(sync_interval)));
    Verdict {
        healthy,
        lag_bytes,
        lag_seconds,
        failing,
    }
}

/// Monitor steps that may fail in a row (a busy database, say) before the database counts as not
/// backed up.
const MONITOR_ERRORS_TOLERATED: u64 = 3;

impl DbView {
    /// Why this database is not being backed up, if it is not: it has no generation (missing file,
    /// not opened yet) or its monitor keeps failing (disk full, meta directory unwritable). Its
    /// replicas would otherwise look caught up to a position that no longer moves.
    pub fn problem(&self) -> Option<String> {
        let errors = self
            .stats
            .consecutive_errors
            .load(std::sync::atomic::Ordering::Relaxed);
        if errors >= MONITOR_ERRORS_TOLERATED {
            Some(format!("monitor failed {errors} times in a row"))
        } else if self.db.pos().generation.is_empty() {
            Some("no generation yet (database missing or not opened)".into())
        } else {
            None
        }
    }
}

impl ReplicaView {
    pub fn verdict(&self, now: SystemTime) -> Verdict {
        let st = self.status.borrow().clone();
        judge(&st, &self.db.pos(), self.sync_interval, now)
    }
}

impl Health {
    /// True when every replica of every database is healthy (and there is at least one).
    pub fn all_healthy(&self) -> bool {
        let now = SystemTime::now();
        !self.replicas.is_empty()
            && self.dbs.iter().all(|d| d.problem().is_none())
            && self.replicas.iter().all(|r| r.verdict(now).healthy)
    }

    /// A short sync-state line for systemd's `STATUS=`.
    pub fn summary(&self) -> String {
        let now = SystemTime::now();
        let total = self.replicas.len();
        let mut ok = 0;
        let mut failing = Vec::new();
        let mut max_lag = 0f64;
        for r in &self.replicas {
            let v = r.verdict(now);
            max_lag = max_lag.max(v.lag_seconds);
            if v.healthy {
                ok += 1;
            } else if let Some(why) = v.failing {
                failing.push(format!(
                    "{} {}: {}",
                    r.db.path().display(),
                    r.name,
                    short(&why)
                ));
            }
        }
        let pending = total.saturating_sub(ok + failing.len());
        // A database that is not being backed up comes first: it explains its replicas.
        let mut db_problems: Vec<String> = self
            .dbs
            .iter()
            .filter_map(|d| {
                d.problem()
                    .map(|p| format!("{}: {p}", d.db.path().display()))
            })
            .collect();
        let mut s = format!("{} databases, {total} replicas: {ok} ok", self.dbs.len());
        if !failing.is_empty() {
            s.push_str(&format!(", {} failing", failing.len()));
        }
        if !db_problems.is_empty() {
            s.push_str(&format!(", {} databases not backed up", db_problems.len()));
        }
        db_problems.append(&mut failing);
        let failing = db_problems;
        if pending > 0 {
            s.push_str(&format!(", {pending} pending"));
        }
        if max_lag >= 1.0 {
            s.push_str(&format!("; max lag {max_lag:.0}s"));
        }
        if let Some(first) = failing.first() {
            s.push_str(&format!("; {first}"));
        }
        s
    }
}

/// First line, at most 160 characters: STATUS= is shown in `systemctl status`.
fn short(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > 160 {
        format!("{}…", line.chars().take(160).collect::<String>())
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_core::db::DbPos;
    use walship_core::layout::Pos;

    fn dbpos(index: u32, size: u64) -> DbPos {
        DbPos {
            generation: "0123456789abcdef".into(),
            index,
            size,
        }
    }

    fn status(
        pos: Option<(u32, u64)>,
        ok_ago: Option<u64>,
        errors: u32,
        now: SystemTime,
    ) -> ShipperStatus {
        ShipperStatus {
            pos: pos.map(|(i, o)| Pos::new("0123456789abcdef", i, o)),
            last_sync_ok: ok_ago.map(|s| now - Duration::from_secs(s)),
            last_error: (errors > 0).then(|| "s3 PutObject: connection refused".into()),
            consecutive_errors: errors,
            ..Default::default()
        }
    }

    #[test]
    fn a_failed_drill_makes_a_caught_up_replica_unhealthy_until_one_matches() {
        let now = SystemTime::now();
        let mut st = status(Some((3, 4152)), Some(1), 0, now);
        st.validation_failure = Some("validation: page 7 differs".into());
        let v = judge(&st, &dbpos(3, 4152), Duration::from_secs(1), now);
        assert!(!v.healthy);
        assert_eq!(v.failing.as_deref(), Some("validation: page 7 differs"));
        st.validation_failure = None;
        assert!(judge(&st, &dbpos(3, 4152), Duration::from_secs(1), now).healthy);
    }

    #[test]
    fn idle_caught_up_replica_is_healthy_however_old_its_last_sync() {
        let now = SystemTime::now();
        let v = judge(
            &status(Some((3, 4152)), Some(86_400), 0, now),
            &dbpos(3, 4152),
            Duration::from_secs(1),
            now,
        );
        assert!(v.healthy);
        assert_eq!((v.lag_bytes, v.lag_seconds), (0, 0.0));
    }

    #[test]
    fn busy_replica_that_keeps_shipping_is_healthy() {
        let now = SystemTime::now();
        let v = judge(
            &status(Some((3, 1000)), Some(2), 0, now),
            &dbpos(3, 9000),
            Duration::from_secs(1),
            now,
        );
        assert!(v.healthy);
        assert_eq!(v.lag_bytes, 8000);
        assert_eq!(v.lag_seconds, 2.0);
    }

    #[test]
    fn stalled_or_failing_replica_is_not() {
        let now = SystemTime::now();
        let si = Duration::from_secs(1);
        let stalled = judge(
            &status(Some((3, 1000)), Some(600), 0, now),
            &dbpos(3, 9000),
            si,
            now,
        );
        assert!(!stalled.healthy);
        assert_eq!(stalled.lag_seconds, 600.0);
        let failing = judge(
            &status(Some((3, 9000)), Some(5), 2, now),
            &dbpos(3, 9000),
            si,
            now,
        );
        assert!(!failing.healthy);
        assert!(failing.failing.unwrap().contains("connection refused"));
        // Synced before the database had a generation, nothing shipped since: pending.
        let early = judge(&status(None, Some(1), 0, now), &dbpos(0, 4152), si, now);
        assert!(!early.healthy && early.failing.is_none());
        // Never synced yet: not healthy, not failing (pending).
        let fresh = judge(&status(None, None, 0, now), &dbpos(0, 4152), si, now);
        assert!(!fresh.healthy && fresh.failing.is_none());
        // Another index: the whole current index is outstanding.
        let v = judge(
            &status(Some((2, 500)), Some(1), 0, now),
            &dbpos(3, 700),
            si,
            now,
        );
        assert_eq!(v.lag_bytes, 700);
    }

    #[test]
    fn no_database_yet_is_healthy_once_synced() {
        let now = SystemTime::now();
        let v = judge(
            &status(None, Some(1), 0, now),
            &DbPos::default(),
            Duration::from_secs(1),
            now,
        );
        assert!(v.healthy);
    }
}

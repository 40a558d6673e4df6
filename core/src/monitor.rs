//! Runs one database and its shippers: the monitor loop, shutdown, and the final sync.

use crate::db::Db;
use crate::error::Result;
use crate::shipper::Shipper;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running database: its monitor task and one task per replica.
pub struct Running {
    pub db: Arc<Db>,
    monitor: JoinHandle<()>,
    shippers: Vec<(String, JoinHandle<Result<()>>)>,
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

pub fn start(db: Arc<Db>, shippers: Vec<Shipper>) -> Running {
    let (stop_monitor, mut mrx) = watch::channel(false);
    let (stop_shippers, rx) = watch::channel(false);
    let interval = db.options().monitor_interval;
    let mdb = db.clone();
    let monitor = tokio::spawn(async move {
        if interval.is_zero() {
            return;
        }
        let mut errors = 0u32;
        loop {
            match sync_db(&mdb).await {
                Ok(r) => {
                    errors = 0;
                    if r.copied_bytes > 0 {
                        tracing::trace!(db = %mdb.path().display(), bytes = r.copied_bytes, "copied wal frames");
                    }
                }
                Err(e) => {
                    errors += 1;
                    tracing::error!(db = %mdb.path().display(), error = %e, "sync error");
                }
            }
            let wait = if errors > 0 {
                interval * errors.min(10)
            } else {
                interval
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = mrx.changed() => return,
            }
        }
    });
    let shippers = shippers
        .into_iter()
        .map(|s| {
            let name = s.name().to_string();
            (name, tokio::spawn(s.run(rx.clone())))
        })
        .collect();
    Running {
        db,
        monitor,
        shippers,
        stop_monitor,
        stop_shippers,
    }
}

impl Running {
    /// Stops monitoring, copies what is left, lets every shipper make its final sync.
    /// Returns false when any final sync failed.
    pub async fn stop(self) -> bool {
        // Order matters: the last frames reach the shadow WAL before any shipper's final sync.
        let _ = self.stop_monitor.send(true);
        let _ = self.monitor.await;
        let mut ok = true;
        if let Err(e) = sync_db(&self.db).await {
            tracing::error!(db = %self.db.path().display(), error = %e, "final sync error");
            ok = false;
        }
        let _ = self.stop_shippers.send(true);
        for (name, h) in self.shippers {
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(db = %self.db.path().display(), replica = %name, error = %e, "final replica sync failed");
                    ok = false;
                }
                Err(e) => {
                    tracing::error!(replica = %name, error = %e, "replica task failed");
                    ok = false;
                }
            }
        }
        let db = self.db.clone();
        let _ = tokio::task::spawn_blocking(move || db.close()).await;
        ok
    }
}

/// Polling cadence used when nothing else is configured.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(1);

//! `replicate -once`: one pass over every database and replica, then exit. For cron jobs and
//! pre-stop hooks. Each database gets one monitor step (copy committed frames into the shadow
//! WAL), then each replica one sync (a snapshot when the generation has none) and, when retention
//! is on, one retention pass. Exit 1 if anything failed; every failure is logged with the
//! database and the replica it concerns.

use anyhow::Result;
use walship_config::DbConfig;
use walship_core::db::Db;
use walship_core::monitor;
use walship_core::replica::DynReplica;
use walship_core::shipper::{ReplicaOptions, Shipper};

/// Databases with their replica clients and options, as `replicate` builds them.
pub type Prepared<'a> = Vec<(&'a DbConfig, Vec<(DynReplica, ReplicaOptions)>)>;

/// Returns the exit code.
/// `force_snapshot` (`-force-snapshot`, `walship snapshot`): every replica also gets a new
/// snapshot now, after its WAL is shipped (before maintenance, before an upgrade).
pub async fn run(prepared: Prepared<'_>, force_snapshot: bool) -> Result<i32> {
    let mut failed = 0usize;
    for (dbc, shippers) in prepared {
        if !one_db(dbc, shippers, force_snapshot).await? {
            failed += 1;
        }
    }
    if failed > 0 {
        tracing::error!(
            databases = failed,
            "replicate -once: not every replica is up to date"
        );
        return Ok(1);
    }
    tracing::info!("replicate -once: every replica is up to date");
    Ok(0)
}

/// Syncs one database to its replicas; Ok(false) when any step failed.
async fn one_db(
    dbc: &DbConfig,
    shippers: Vec<(DynReplica, ReplicaOptions)>,
    force_snapshot: bool,
) -> Result<bool> {
    let db_name = dbc.path.display().to_string();
    if !dbc.path.exists() {
        tracing::error!(db = %db_name, "database does not exist: nothing to replicate");
        return Ok(false);
    }
    let db = match Db::open(&dbc.path, crate::setup::db_options(dbc)) {
        Ok(db) => db,
        // Counted as a failure, and the other databases still get their pass.
        Err(e) => {
            tracing::error!(db = %db_name, error = %e, "cannot open database");
            return Ok(false);
        }
    };
    if shippers.is_empty() {
        tracing::error!(db = %db_name, "no replicas configured for this database");
    }
    let mut ok = !shippers.is_empty();
    if let Err(e) = monitor::sync_db(&db).await {
        tracing::error!(db = %db_name, error = %e, "sync error");
        ok = false;
    }
    if ok {
        for (client, opts) in shippers {
            let name = opts.name.clone();
            let retention = !opts.retention.is_zero();
            let mut s = Shipper::new(db.clone(), client, opts);
            match s.sync().await {
                Ok(()) => {
                    tracing::info!(db = %db_name, replica = %name, position = %db.pos().pos(), "replica synced")
                }
                Err(e) => {
                    tracing::error!(db = %db_name, replica = %name, error = %e, "sync failed");
                    ok = false;
                    continue;
                }
            }
            if force_snapshot {
                if let Err(e) = s.snapshot().await {
                    tracing::error!(db = %db_name, replica = %name, error = %e, "snapshot failed");
                    ok = false;
                    continue;
                }
            }
            if retention {
                if let Err(e) = s.enforce_retention().await {
                    tracing::error!(db = %db_name, replica = %name, error = %e, "retainer error");
                    ok = false;
                }
            }
        }
    }
    let closing = db.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    Ok(ok)
}

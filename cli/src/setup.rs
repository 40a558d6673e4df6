//! From configuration to engine objects: databases, replica clients, options.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use walship_config::{Config, DbConfig, ReplicaConfig};
use walship_core::crypt::Age;
use walship_core::db::DbOptions;
use walship_core::registry;
use walship_core::replica::DynReplica;
use walship_core::retry::{RetryLayer, RetryPolicy};
use walship_core::shipper::ReplicaOptions;

/// Loads the config file named by `-config` or the lookup order, printing its warnings.
pub fn load_config(flag: Option<&Path>, no_expand_env: bool) -> Result<(Config, PathBuf)> {
    let path = walship_config::resolve_config_path(flag);
    let (cfg, warnings) = Config::load(&path, !no_expand_env)?;
    for w in warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    Ok((cfg, path))
}

/// Two entries that name one database file (through a symlink, a bind mount or a hard link)
/// would run two monitors on it with two meta directories, each checkpointing and each
/// believing it holds the WAL. The config's own check compares paths as written; this one
/// compares the files.
pub fn refuse_same_file_twice(cfg: &Config) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut seen: Vec<((u64, u64), &Path)> = Vec::new();
    for db in &cfg.dbs {
        let Ok(m) = std::fs::metadata(&db.path) else {
            continue;
        };
        let id = (m.dev(), m.ino());
        if let Some((_, first)) = seen.iter().find(|(i, _)| *i == id) {
            bail!(
                "database {} is configured twice: it is the same file as database {} (through a symlink or another path); keep one entry",
                db.path.display(),
                first.display()
            );
        }
        seen.push((id, &db.path));
    }
    Ok(())
}

pub fn db_options(db: &DbConfig) -> DbOptions {
    let d = DbOptions::default();
    DbOptions {
        meta_path: db.meta_path.clone(),
        monitor_interval: db.monitor_interval.unwrap_or(d.monitor_interval),
        checkpoint_interval: db.checkpoint_interval.unwrap_or(d.checkpoint_interval),
        min_checkpoint_page_count: db
            .min_checkpoint_page_count
            .unwrap_or(d.min_checkpoint_page_count),
        max_checkpoint_page_count: db
            .max_checkpoint_page_count
            .unwrap_or(d.max_checkpoint_page_count),
        release_after: db.release_after.unwrap_or(d.release_after),
        ..d
    }
}

pub fn replica_options(r: &ReplicaConfig) -> Result<ReplicaOptions> {
    let d = ReplicaOptions::default();
    Ok(ReplicaOptions {
        name: r.name.clone(),
        sync_interval: r.sync_interval.unwrap_or(d.sync_interval),
        snapshot_interval: r.snapshot_interval.unwrap_or(d.snapshot_interval),
        retention: r.retention.unwrap_or(d.retention),
        retention_check_interval: r
            .retention_check_interval
            .unwrap_or(d.retention_check_interval),
        age: replica_age(r)?,
        validation_interval: r.validation_interval.unwrap_or(d.validation_interval),
    })
}

/// The replica's age keys (format §2; README "Encryption"); a malformed key fails with the entry and line,
/// never the key itself.
pub fn replica_age(r: &ReplicaConfig) -> Result<Age> {
    match &r.age {
        Some(a) => Age::parse(&a.identities, &a.recipients)
            .map_err(|e| e.with_replica(r.name.as_str()).into()),
        None => Ok(Age::default()),
    }
}

/// Builds the replica client (wrapped in the retry layer) for one replica section.
pub fn open_replica(r: &ReplicaConfig, db_path: Option<&Path>) -> Result<DynReplica> {
    let inner = registry::open(&r.settings(db_path))?;
    let db = db_path.map_or_else(|| "-".to_string(), |p| p.display().to_string());
    Ok(Arc::new(
        RetryLayer::new(inner, retry_policy()?).labelled(db, r.name.clone()),
    ))
}

/// The retry policy for replica operations. `WALSHIP_RETRY_MAX_DELAY` (a Go duration) caps
/// the backoff between attempts: tests that inject faults lower it, and so can a host that
/// prefers to hammer a flaky link rather than wait.
fn retry_policy() -> Result<RetryPolicy> {
    let mut p = RetryPolicy::default();
    if let Some(v) = std::env::var("WALSHIP_RETRY_MAX_DELAY")
        .ok()
        .filter(|v| !v.is_empty())
    {
        let d = walship_config::parse_duration(&v)
            .map_err(|m| anyhow!("WALSHIP_RETRY_MAX_DELAY={v:?}: {m}"))?;
        if d.is_zero() {
            bail!("WALSHIP_RETRY_MAX_DELAY must be greater than 0");
        }
        p.max_delay = d;
        p.min_delay = p.min_delay.min(d);
    }
    Ok(p)
}

/// Absolute path, with `~` expanded, as v0.3.13 looks databases up.
pub fn abs_path(p: &str) -> Result<PathBuf> {
    let expanded = match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    };
    if expanded.is_absolute() {
        Ok(expanded)
    } else {
        Ok(std::env::current_dir()
            .context("current directory")?
            .join(expanded))
    }
}

/// Whether a positional argument is a replica URL rather than a database path.
pub fn is_url(s: &str) -> bool {
    registry::url_scheme(s).is_some()
}

/// Replica clients by name, with the age keys to read them.
pub type NamedReplicas = Vec<(String, DynReplica, Age)>;

/// Replicas to read from: the ones of a configured database (filtered by name) or one URL.
pub fn replicas_for(
    target: &str,
    config: Option<&Path>,
    no_expand_env: bool,
    replica_filter: Option<&str>,
) -> Result<(Option<PathBuf>, NamedReplicas)> {
    if is_url(target) {
        if config.is_some() {
            bail!("cannot specify a replica URL and the -config flag");
        }
        let rc = ReplicaConfig::from_url(target)?;
        let r = open_replica(&rc, None)?;
        return Ok((None, vec![(rc.name.clone(), r, Age::default())]));
    }
    let (cfg, cfg_path) = load_config(config, no_expand_env)?;
    let db_path = abs_path(target)?;
    let db = cfg.db_or_found(&db_path).ok_or_else(|| {
        anyhow!(
            "database not found in config: {} (config {})",
            db_path.display(),
            cfg_path.display()
        )
    })?;
    let mut out = Vec::new();
    for r in &db.replicas {
        if replica_filter.is_some_and(|f| f != r.name) {
            continue;
        }
        out.push((
            r.name.clone(),
            open_replica(r, Some(&db.path))?,
            replica_age(r)?,
        ));
    }
    if let Some(f) = replica_filter {
        if out.is_empty() {
            bail!("replica {f:?} not found for database {}", db_path.display());
        }
    }
    Ok((Some(db.path.clone()), out))
}

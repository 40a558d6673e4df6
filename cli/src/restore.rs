//! `restore`: v0.3.13's flags (README), with v0.3.13's restore bugs fixed.

use crate::setup;
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use walship_core::listing::Listing;
use walship_core::plan::{self, Target};
use walship_core::ErrorKind;

pub struct RestoreArgs<'a> {
    pub config: Option<&'a Path>,
    pub no_expand_env: bool,
    pub output: Option<PathBuf>,
    pub replica: Option<&'a str>,
    pub generation: Option<&'a str>,
    pub index: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub parallelism: usize,
    pub if_db_not_exists: bool,
    pub if_replica_exists: bool,
    /// Check the restored database before it reaches the output path (default quick).
    pub integrity_check: crate::verify::IntegrityCheck,
    pub target: &'a str,
}

pub fn parse_timestamp(s: &str) -> Result<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            anyhow!("invalid -timestamp {s:?}: expected RFC 3339, e.g. 2000-01-01T00:00:00Z ({e})")
        })?;
    Ok(t.into())
}

pub fn parse_index(s: &str) -> Result<u32> {
    let v = i32::from_str_radix(s, 16)
        .map_err(|_| anyhow!("invalid -index {s:?}: expected a hexadecimal WAL index"))?;
    u32::try_from(v).map_err(|_| anyhow!("invalid -index {s:?}: must not be negative"))
}

/// Returns Ok(false) when nothing was restored but that is fine (`-if-*` flags).
pub async fn run(a: RestoreArgs<'_>) -> Result<bool> {
    if a.index.is_some() && a.generation.is_none() {
        bail!("must specify generation when restoring to index");
    }
    if a.index.is_some() && a.timestamp.is_some() {
        bail!("cannot specify index & timestamp to restore");
    }
    let target = match (a.index, a.timestamp) {
        (Some(i), _) => Target::Index(parse_index(i)?),
        (_, Some(t)) => Target::Time(parse_timestamp(t)?),
        _ => Target::Latest,
    };
    let (db_path, replicas) = setup::replicas_for(a.target, a.config, a.no_expand_env, a.replica)?;
    // The database a restore concerns, named in its log lines ("-" for a bare replica URL).
    let db_name = db_path
        .as_ref()
        .map_or("-".into(), |p| p.display().to_string());
    let output = match (a.output.clone(), db_path) {
        (Some(o), _) => setup::abs_path(&o.to_string_lossy())?,
        (None, Some(db)) => db,
        (None, None) => bail!("output path required"),
    };
    if output.exists() {
        if a.if_db_not_exists {
            tracing::info!(path = %output.display(), "database already exists, skipping");
            return Ok(false);
        }
        bail!(
            "cannot restore, output path already exists: {}",
            output.display()
        );
    }
    // Choose, across replicas, the one whose chosen generation was updated last (format §5).
    let mut best: Option<(
        plan::Plan,
        String,
        walship_core::replica::DynReplica,
        walship_core::crypt::Age,
    )> = None;
    let mut first_err = None;
    for (name, r, age) in replicas {
        let listing = match Listing::fetch(r.as_ref(), a.generation).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(db = %db_name, replica = %name, error = %e, "cannot list replica");
                first_err.get_or_insert(e.with_replica(name.as_str()).into());
                continue;
            }
        };
        match plan::plan(&listing, a.generation, target) {
            Ok(p) => {
                if best.as_ref().is_none_or(|(b, ..)| p.updated > b.updated) {
                    best = Some((p, name, r, age));
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                first_err.get_or_insert(e.into());
            }
            Err(e) => return Err(e.with_replica(name.as_str()).into()),
        }
    }
    let Some((plan, name, replica, age)) = best else {
        let err = first_err.unwrap_or_else(|| anyhow!("no matching backups found"));
        if a.if_replica_exists && err.to_string().starts_with("no matching backups found") {
            tracing::info!("no matching backups found");
            return Ok(false);
        }
        return Err(err);
    };
    tracing::info!(db = %db_name, replica = %name, generation = %plan.generation, snapshot = plan.snapshot.index, indexes = plan.indexes.len(), output = %output.display(), "restoring");
    // Restore beside the output, check, then move into place: a restore that fails anywhere,
    // including the integrity check, leaves the output path untouched.
    let total = plan.snapshot.size
        + plan
            .indexes
            .iter()
            .flat_map(|(_, segs)| segs.iter().map(|s| s.size))
            .sum::<u64>();
    let pb = crate::progress::bar(total);
    let replica = match &pb {
        Some(pb) => crate::progress::counting(replica, pb.clone()),
        None => replica,
    };
    let staged = crate::verify::staging_path(&output);
    let res = walship_core::restore::execute(replica, &age, &plan, &staged, a.parallelism.max(1))
        .await
        .map_err(anyhow::Error::from);
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if let Err(e) = res {
        crate::verify::discard(&staged);
        return Err(e);
    }
    if a.integrity_check != crate::verify::IntegrityCheck::None {
        tracing::info!(mode = ?a.integrity_check, "checking integrity of the restored database");
    }
    crate::verify::finish(&staged, &output, a.integrity_check)?;
    tracing::info!(path = %output.display(), "restore complete");
    Ok(true)
}

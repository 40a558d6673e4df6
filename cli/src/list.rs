//! `snapshots`, `generations`, `wal`, `databases`: listings in v0.3.13's columns.

use crate::setup;
use crate::table::{go_duration, render, rfc3339, signed_between};
use anyhow::Result;
use std::path::Path;
use std::time::SystemTime;
use walship_core::listing::Listing;

pub struct Common<'a> {
    pub config: Option<&'a Path>,
    pub no_expand_env: bool,
    pub replica: Option<&'a str>,
    pub target: &'a str,
}

async fn listings(
    c: &Common<'_>,
    generation: Option<&str>,
) -> Result<(Option<std::path::PathBuf>, Vec<(String, Listing)>, Unlisted)> {
    let (db, replicas) = setup::replicas_for(c.target, c.config, c.no_expand_env, c.replica)?;
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for (name, r, _) in replicas {
        match Listing::fetch(r.as_ref(), generation).await {
            Ok(l) => out.push((name, l)),
            Err(e) => {
                let db = db.as_ref().map_or("-".into(), |p| p.display().to_string());
                tracing::error!(db = %db, replica = %name, error = %e, "cannot list replica");
                failed.push(name);
            }
        }
    }
    Ok((db, out, Unlisted(failed)))
}

/// Replicas that could not be listed. The table still shows the others, then the command exits
/// 1, as v0.3.13 does, so a script never mistakes an unreachable replica for an empty one.
struct Unlisted(Vec<String>);

impl Unlisted {
    fn result(self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            _ => anyhow::bail!("cannot list replica(s): {}", self.0.join(", ")),
        }
    }
}

pub async fn snapshots(c: Common<'_>) -> Result<()> {
    let (_, ls, unlisted) = listings(&c, None).await?;
    let mut rows = vec![vec!["replica", "generation", "index", "size", "created"]
        .into_iter()
        .map(String::from)
        .collect()];
    for (name, l) in ls {
        for s in l.snapshots {
            rows.push(vec![
                name.clone(),
                s.generation,
                s.index.to_string(),
                s.size.to_string(),
                rfc3339(s.created),
            ]);
        }
    }
    print!("{}", render(&rows));
    unlisted.result()
}

pub async fn wal(c: Common<'_>, generation: Option<&str>) -> Result<()> {
    let (_, ls, unlisted) = listings(&c, generation).await?;
    let mut rows = vec![vec![
        "replica",
        "generation",
        "index",
        "offset",
        "size",
        "created",
    ]
    .into_iter()
    .map(String::from)
    .collect()];
    for (name, l) in ls {
        for s in l.segments {
            rows.push(vec![
                name.clone(),
                s.generation,
                s.index.to_string(),
                s.offset.to_string(),
                s.size.to_string(),
                rfc3339(s.created),
            ]);
        }
    }
    print!("{}", render(&rows));
    unlisted.result()
}

pub async fn generations(c: Common<'_>) -> Result<()> {
    let (db, ls, unlisted) = listings(&c, None).await?;
    // Lag is measured from the database's last change (URL mode: now), as v0.3.13 does.
    let reference = match &db {
        Some(p) => {
            let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut wal = p.as_os_str().to_owned();
            wal.push("-wal");
            [mtime(p), mtime(Path::new(&wal))]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or_else(SystemTime::now)
        }
        None => SystemTime::now(),
    };
    let mut rows = vec![vec!["name", "generation", "lag", "start", "end"]
        .into_iter()
        .map(String::from)
        .collect()];
    for (name, l) in ls {
        for g in l.generations() {
            if let Some((start, end)) = l.bounds(&g) {
                rows.push(vec![
                    name.clone(),
                    g,
                    go_duration(signed_between(reference, end)),
                    rfc3339(start),
                    rfc3339(end),
                ]);
            }
        }
    }
    print!("{}", render(&rows));
    unlisted.result()
}

pub fn databases(config: Option<&Path>, no_expand_env: bool) -> Result<()> {
    let (cfg, _) = setup::load_config(config, no_expand_env)?;
    let mut rows = vec![vec!["path".to_string(), "replicas".to_string()]];
    for db in &cfg.dbs {
        let names: Vec<&str> = db.replicas.iter().map(|r| r.name.as_str()).collect();
        rows.push(vec![db.path.display().to_string(), names.join(",")]);
    }
    print!("{}", render(&rows));
    Ok(())
}

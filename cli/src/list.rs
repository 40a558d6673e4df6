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
    /// `-json`: one JSON array of objects (field names in the README) instead of the table.
    pub json: bool,
}

/// Prints the rows as v0.3.13's table, or as a JSON array for `-json`.
fn print_rows<T: serde::Serialize>(
    json: bool,
    header: &[&str],
    rows: &[T],
    cells: impl Fn(&T) -> Vec<String>,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    let mut table = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    table.extend(rows.iter().map(cells));
    print!("{}", render(&table));
    Ok(())
}

#[derive(serde::Serialize)]
struct SnapshotRow {
    replica: String,
    generation: String,
    index: u32,
    size: u64,
    created: String,
}

#[derive(serde::Serialize)]
struct SegmentRow {
    replica: String,
    generation: String,
    index: u32,
    offset: u64,
    size: u64,
    created: String,
}

#[derive(serde::Serialize)]
struct GenerationRow {
    replica: String,
    generation: String,
    /// v0.3.13's lag column (a Go duration) and the same in seconds for scripts.
    lag: String,
    lag_seconds: f64,
    start: String,
    end: String,
}

#[derive(serde::Serialize)]
struct DatabaseRow {
    path: String,
    replicas: Vec<String>,
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
    let mut rows = Vec::new();
    for (name, l) in ls {
        for s in l.snapshots {
            rows.push(SnapshotRow {
                replica: name.clone(),
                generation: s.generation,
                index: s.index,
                size: s.size,
                created: rfc3339(s.created),
            });
        }
    }
    print_rows(
        c.json,
        &["replica", "generation", "index", "size", "created"],
        &rows,
        |r| {
            vec![
                r.replica.clone(),
                r.generation.clone(),
                r.index.to_string(),
                r.size.to_string(),
                r.created.clone(),
            ]
        },
    )?;
    unlisted.result()
}

pub async fn wal(c: Common<'_>, generation: Option<&str>) -> Result<()> {
    let (_, ls, unlisted) = listings(&c, generation).await?;
    let mut rows = Vec::new();
    for (name, l) in ls {
        for s in l.segments {
            rows.push(SegmentRow {
                replica: name.clone(),
                generation: s.generation,
                index: s.index,
                offset: s.offset,
                size: s.size,
                created: rfc3339(s.created),
            });
        }
    }
    print_rows(
        c.json,
        &[
            "replica",
            "generation",
            "index",
            "offset",
            "size",
            "created",
        ],
        &rows,
        |r| {
            vec![
                r.replica.clone(),
                r.generation.clone(),
                r.index.to_string(),
                r.offset.to_string(),
                r.size.to_string(),
                r.created.clone(),
            ]
        },
    )?;
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
    let mut rows = Vec::new();
    for (name, l) in ls {
        for g in l.generations() {
            if let Some((start, end)) = l.bounds(&g) {
                let lag = signed_between(reference, end);
                rows.push(GenerationRow {
                    replica: name.clone(),
                    generation: g,
                    lag: go_duration(lag),
                    lag_seconds: lag as f64 / 1e9,
                    start: rfc3339(start),
                    end: rfc3339(end),
                });
            }
        }
    }
    print_rows(
        c.json,
        &["name", "generation", "lag", "start", "end"],
        &rows,
        |r| {
            vec![
                r.replica.clone(),
                r.generation.clone(),
                r.lag.clone(),
                r.start.clone(),
                r.end.clone(),
            ]
        },
    )?;
    unlisted.result()
}

pub fn databases(config: Option<&Path>, no_expand_env: bool, json: bool) -> Result<()> {
    let (cfg, _) = setup::load_config(config, no_expand_env)?;
    let rows: Vec<DatabaseRow> = crate::dirs::desired(&cfg)
        .iter()
        .map(|db| DatabaseRow {
            path: db.path.display().to_string(),
            replicas: db.replicas.iter().map(|r| r.name.clone()).collect(),
        })
        .collect();
    print_rows(json, &["path", "replicas"], &rows, |r| {
        vec![r.path.clone(), r.replicas.join(",")]
    })
}

//! `walship replicas`: one row per database and replica with the replica's position (from its
//! listing), the database's own position (from its real WAL and meta directory, see
//! [`walship_core::local`]) and the lag between them. Read-only: no SQLite connection, no lock, no
//! write, so it is safe beside a running `replicate` and right without one.

use crate::setup;
use crate::table::{go_duration, render, rfc3339};
use anyhow::{anyhow, bail, Result};
use std::path::Path;
use std::time::SystemTime;
use walship_config::{DbConfig, ReplicaConfig};
use walship_core::crypt::Age;
use walship_core::layout::Pos;
use walship_core::listing::Listing;
use walship_core::local::{self, lag_bytes, lag_seconds, LagBytes, Local, LocalState};
use walship_core::meta::{default_meta_dir, MetaDir};
use walship_core::plan::{self, Reads, Target};
use walship_core::replica::DynReplica;
use walship_core::restore::decoded_len;

pub struct Args<'a> {
    pub config: Option<&'a Path>,
    pub no_expand_env: bool,
    pub replica: Option<&'a str>,
    pub target: Option<&'a str>,
    pub json: bool,
}

/// One row of the table (and one object of `-json`).
#[derive(Debug, Default)]
struct Row {
    db: String,
    name: String,
    kind: String,
    target: String,
    generation: Option<String>,
    replica_pos: Option<Pos>,
    local_pos: Option<Pos>,
    lag_bytes: Option<u64>,
    lag_seconds: Option<f64>,
    newest_segment: Option<SystemTime>,
    newest_snapshot: Option<SystemTime>,
    replicating: Option<bool>,
    /// What a restore of the latest state would download from this replica.
    restore: Option<Reads>,
    status: String,
    failed: bool,
}

pub async fn run(a: Args<'_>) -> Result<i32> {
    let (cfg, cfg_path) = setup::load_config(a.config, a.no_expand_env)?;
    let dbs: Vec<DbConfig> = match a.target {
        Some(t) if setup::is_url(t) => {
            bail!("replicas compares a replica with its local database: give a configured database path, not a URL")
        }
        Some(t) => {
            let p = setup::abs_path(t)?;
            vec![cfg.db_or_found(&p).ok_or_else(|| {
                anyhow!(
                    "database not found in config: {} (config {})",
                    p.display(),
                    cfg_path.display()
                )
            })?]
        }
        None => crate::dirs::desired(&cfg),
    };
    let mut rows = Vec::new();
    for db in &dbs {
        let meta = MetaDir::new(
            db.meta_path
                .clone()
                .unwrap_or_else(|| default_meta_dir(&db.path)),
        );
        let path = db.path.clone();
        let st = tokio::task::spawn_blocking(move || local::read(&path, &meta))
            .await
            .map_err(|e| anyhow!("{e}"))?
            .map_err(|e| e.context(db.path.display()))?;
        let mut matched = false;
        for r in &db.replicas {
            if a.replica.is_some_and(|f| f != r.name) {
                continue;
            }
            matched = true;
            rows.push(row(db, r, &st).await?);
        }
        if let (Some(f), false) = (a.replica, matched) {
            bail!("replica {f:?} not found for database {}", db.path.display());
        }
    }
    if a.json {
        println!("{}", to_json(&rows));
    } else {
        print!("{}", render(&table(&rows)));
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.failed)
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        // As the other listings: an unreachable replica is never mistaken for an empty one.
        eprintln!("error: cannot list replica(s): {}", failed.join(", "));
        return Ok(1);
    }
    Ok(0)
}

async fn row(db: &DbConfig, r: &ReplicaConfig, st: &LocalState) -> Result<Row> {
    let client = setup::open_replica(r, Some(&db.path))?;
    let age = setup::replica_age(r)?;
    let mut row = Row {
        db: db.path.display().to_string(),
        name: r.name.clone(),
        kind: client.kind().to_string(),
        target: client.target(),
        replicating: st.replicating,
        ..Row::default()
    };
    let (local_gen, local_pos, index_lens) = match &st.local {
        Local::NoGeneration => (None, None, None),
        Local::At { pos, index_lens } => (
            Some(pos.generation.clone()),
            Some(pos.clone()),
            Some(index_lens),
        ),
        Local::NewGenerationPending { generation, .. } => (Some(generation.clone()), None, None),
    };
    row.local_pos = local_pos.clone();
    let listing = match Listing::fetch(client.as_ref(), None).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(db = %row.db, replica = %row.name, error = %e, "cannot list replica");
            row.generation = local_gen;
            row.status = format!("error: {}", one_line(&e.to_string()));
            row.failed = true;
            return Ok(row);
        }
    };
    let generation = pick_generation(&listing, local_gen.as_deref());
    row.generation = generation.clone().or(local_gen);
    if let Some(g) = &generation {
        row.newest_segment = listing
            .segments
            .iter()
            .filter(|s| &s.generation == g)
            .map(|s| s.created)
            .max();
        row.newest_snapshot = listing
            .snapshots
            .iter()
            .filter(|s| &s.generation == g)
            .map(|s| s.created)
            .max();
        // A replica with segments but no snapshot (or a gap) has no plan: no budget to show.
        row.restore = plan::plan(&listing, Some(g), Target::Latest)
            .ok()
            .map(|p| p.reads());
        match replica_position(&client, &age, &listing, g).await {
            Ok(p) => row.replica_pos = p,
            Err(e) => {
                tracing::error!(db = %row.db, replica = %row.name, error = %e, "cannot read the replica's last segment");
                row.status = format!("error: {}", one_line(&e.to_string()));
                row.failed = true;
                return Ok(row);
            }
        }
    }
    let newest = row.newest_segment.max(row.newest_snapshot);
    row.status = match (&st.local, &local_pos) {
        (Local::NoGeneration, _) => "no local generation (replicate has not run here)".into(),
        (Local::NewGenerationPending { reason, .. }, _) => {
            row.lag_seconds = lag_seconds(false, st.changed, newest);
            format!("new generation pending ({reason})")
        }
        (Local::At { .. }, Some(lp)) => {
            match lag_bytes(row.replica_pos.as_ref(), lp, index_lens.expect("At")) {
                LagBytes::Behind(n) => {
                    row.lag_bytes = Some(n);
                    row.lag_seconds = lag_seconds(n == 0, st.changed, newest);
                    if n == 0 { "ok" } else { "behind" }.into()
                }
                LagBytes::OtherGeneration => {
                    row.lag_seconds = lag_seconds(false, st.changed, newest);
                    "generation not on replica yet (snapshot pending)".into()
                }
                LagBytes::Ahead => "replica ahead of the database (another writer?)".into(),
                LagBytes::Unknown => {
                    row.lag_seconds = lag_seconds(false, st.changed, newest);
                    "behind (shadow wal of an index in between is gone)".into()
                }
            }
        }
        (Local::At { .. }, None) => unreachable!("At always has a position"),
    };
    Ok(row)
}

/// The local generation if the replica has it, else the replica's most recent one.
fn pick_generation(l: &Listing, local: Option<&str>) -> Option<String> {
    if let Some(g) = local.filter(|g| l.keys.contains_key(*g)) {
        return Some(g.to_string());
    }
    l.generations()
        .into_iter()
        .filter_map(|g| l.bounds(&g).map(|(_, end)| (end, g)))
        .max()
        .map(|(_, g)| g)
}

/// Where the replica's WAL ends in `generation`: the end of its last segment (decoded, as the
/// shipper resumes), or the start of the newest snapshot's index when it holds no segment.
/// Only a segment this host may not decrypt counts from its start; any other failure to read
/// it is an error, never a made-up lag.
async fn replica_position(
    client: &DynReplica,
    age: &Age,
    l: &Listing,
    generation: &str,
) -> walship_core::Result<Option<Pos>> {
    let last = l
        .segments
        .iter()
        .filter(|s| s.generation == generation)
        .max_by_key(|s| (s.index, s.offset));
    if let Some(seg) = last {
        // A replica whose segments this host cannot decrypt counts from the segment's start.
        let len = match decoded_len(client.clone(), age, &seg.key).await {
            Ok(n) => n,
            Err(e) if e.kind() == walship_core::ErrorKind::PermissionDenied => 0,
            Err(e) => return Err(e),
        };
        return Ok(Some(Pos::new(generation, seg.index, seg.offset + len)));
    }
    Ok(l.snapshots
        .iter()
        .filter(|s| s.generation == generation)
        .map(|s| s.index)
        .max()
        .map(|i| Pos::new(generation, i, 0)))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `index:offset`, or the full `<gen>/index:offset` when it is not the row's generation.
fn short_pos(p: &Option<Pos>, generation: &Option<String>) -> String {
    match p {
        None => "-".into(),
        Some(p) if Some(&p.generation) == generation.as_ref() => {
            format!("{:08x}:{}", p.index, p.offset)
        }
        Some(p) => p.to_string(),
    }
}

fn table(rows: &[Row]) -> Vec<Vec<String>> {
    let dash = || "-".to_string();
    let mut out = vec![[
        "db",
        "name",
        "type",
        "target",
        "generation",
        "replica-position",
        "local-position",
        "lag-bytes",
        "lag",
        "newest-segment",
        "newest-snapshot",
        "restore-reads",
        "status",
    ]
    .into_iter()
    .map(String::from)
    .collect()];
    for r in rows {
        out.push(vec![
            r.db.clone(),
            r.name.clone(),
            r.kind.clone(),
            r.target.clone(),
            r.generation.clone().unwrap_or_else(dash),
            short_pos(&r.replica_pos, &r.generation),
            short_pos(&r.local_pos, &r.generation),
            r.lag_bytes.map(|n| n.to_string()).unwrap_or_else(dash),
            r.lag_seconds
                .map(|s| go_duration((s * 1e9) as i128))
                .unwrap_or_else(dash),
            r.newest_segment.map(rfc3339).unwrap_or_else(dash),
            r.newest_snapshot.map(rfc3339).unwrap_or_else(dash),
            r.restore.map(reads_text).unwrap_or_else(dash),
            r.status.clone(),
        ]);
    }
    out
}

/// `1+8640 objects, 12.3 MiB`: the snapshot plus the segments, and the bytes downloaded.
fn reads_text(r: Reads) -> String {
    let mib = r.bytes as f64 / (1024.0 * 1024.0);
    format!("1+{} objects, {mib:.1} MiB", r.segments)
}

/// A JSON string literal (RFC 8259 escapes). The output is small and flat, so it is written by
/// hand rather than pulling a serializer into the binary.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn opt<T>(v: &Option<T>, f: impl Fn(&T) -> String) -> String {
    v.as_ref().map(f).unwrap_or_else(|| "null".into())
}

fn pos_json(p: &Pos) -> String {
    format!(
        "{{\"generation\": {}, \"index\": {}, \"offset\": {}}}",
        js(&p.generation),
        p.index,
        p.offset
    )
}

fn to_json(rows: &[Row]) -> String {
    let objs: Vec<String> = rows
        .iter()
        .map(|r| {
            let fields = [
                ("db", js(&r.db)),
                ("name", js(&r.name)),
                ("type", js(&r.kind)),
                ("target", js(&r.target)),
                ("generation", opt(&r.generation, |g| js(g))),
                ("replica_position", opt(&r.replica_pos, pos_json)),
                ("local_position", opt(&r.local_pos, pos_json)),
                ("lag_bytes", opt(&r.lag_bytes, |n| n.to_string())),
                ("lag_seconds", opt(&r.lag_seconds, |s| format!("{s:.3}"))),
                (
                    "newest_segment",
                    opt(&r.newest_segment, |t| js(&rfc3339(*t))),
                ),
                (
                    "newest_snapshot",
                    opt(&r.newest_snapshot, |t| js(&rfc3339(*t))),
                ),
                ("replicating", opt(&r.replicating, |b| b.to_string())),
                (
                    "restore_objects",
                    opt(&r.restore, |x| x.objects.to_string()),
                ),
                (
                    "restore_segments",
                    opt(&r.restore, |x| x.segments.to_string()),
                ),
                (
                    "restore_indexes",
                    opt(&r.restore, |x| x.indexes.to_string()),
                ),
                ("restore_bytes", opt(&r.restore, |x| x.bytes.to_string())),
                ("status", js(&r.status)),
            ];
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("    {}: {v}", js(k)))
                .collect();
            format!("  {{\n{}\n  }}", body.join(",\n"))
        })
        .collect();
    if objs.is_empty() {
        "[]".into()
    } else {
        format!("[\n{}\n]", objs.join(",\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_print_short_in_their_generation() {
        let g = Some("0123456789abcdef".to_string());
        let p = Some(Pos::new("0123456789abcdef", 3, 8272));
        assert_eq!(short_pos(&p, &g), "00000003:8272");
        let other = Some(Pos::new("fedcba9876543210", 0, 32));
        assert_eq!(short_pos(&other, &g), "fedcba9876543210/00000000:32");
        assert_eq!(short_pos(&None, &g), "-");
    }

    #[test]
    fn json_escapes_and_nulls() {
        assert_eq!(js("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        let r = Row {
            db: "/x.db".into(),
            name: "s3".into(),
            kind: "s3".into(),
            target: "s3://b/p".into(),
            generation: Some("0123456789abcdef".into()),
            local_pos: Some(Pos::new("0123456789abcdef", 1, 100)),
            lag_bytes: Some(0),
            lag_seconds: Some(0.0),
            status: "ok".into(),
            ..Row::default()
        };
        let j = to_json(&[r]);
        assert!(
            j.contains(
                r#""local_position": {"generation": "0123456789abcdef", "index": 1, "offset": 100}"#
            ),
            "{j}"
        );
        assert!(j.contains(r#""replica_position": null"#), "{j}");
        assert!(j.contains(r#""restore_objects": null"#), "{j}");
        assert!(j.contains(r#""lag_seconds": 0.000"#), "{j}");
        let r = Row {
            restore: Some(Reads {
                objects: 8641,
                segments: 8640,
                indexes: 9,
                bytes: 3 << 20,
            }),
            ..Row::default()
        };
        let j = to_json(&[r]);
        assert!(j.contains(r#""restore_objects": 8641"#), "{j}");
        assert!(j.contains(r#""restore_bytes": 3145728"#), "{j}");
        assert_eq!(
            reads_text(Reads {
                objects: 8641,
                segments: 8640,
                indexes: 9,
                bytes: 3 << 20
            }),
            "1+8640 objects, 3.0 MiB"
        );
        assert_eq!(to_json(&[]), "[]");
    }
}

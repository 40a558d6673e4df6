//! `walship verify DB_PATH`: a restore drill on every replica of one database now, the same one
//! `validation-interval` runs (see `walship_core::drill`): each replica is restored into a
//! private file at a position walship also knows locally, and compared page by page with the
//! database at that position. The runbook's monthly check; exit 0 only when every replica
//! restores the database exactly.
//!
//! With a `replicate` running, it asks that process (a request in the meta directory, as
//! `walship snapshot` does): only the holder of the database's lock knows the shadow WAL and can
//! hold its checkpoints. Otherwise it ships what is pending first, as `replicate -once` would,
//! and drills here.
//!
//! A replica URL has no database to compare with: its drill proves what can be proven without
//! one, that the latest state restores (every object there, decoding, chaining) into a database
//! SQLite's full `integrity_check` accepts.

use anyhow::{anyhow, bail, Result};
use std::path::Path;
use std::time::Duration;
use walship_config::DbConfig;
use walship_core::db::Db;
use walship_core::layout::Pos;
use walship_core::meta::{LockHolder, MetaDir, Ownership};
use walship_core::shipper::{DrillReport, Shipper};

/// Each replica's report, or why its drill could not run.
pub type Answers = Vec<(String, std::result::Result<DrillReport, String>)>;

/// Runs the command; returns the exit code.
pub async fn run(
    config: Option<&Path>,
    no_expand_env: bool,
    target: &str,
    replica: Option<&str>,
    json: bool,
) -> Result<i32> {
    if crate::setup::is_url(target) {
        if config.is_some() {
            bail!("cannot specify a replica URL and the -config flag");
        }
        if replica.is_some() {
            bail!("cannot specify a replica URL and the -replica flag");
        }
        return url_drill(target, json).await;
    }
    let (cfg, cfg_path) = crate::setup::load_config(config, no_expand_env)?;
    let path = crate::setup::abs_path(target)?;
    let dbc = cfg.db_or_found(&path).ok_or_else(|| {
        anyhow!(
            "database not found in config: {} (config {})",
            path.display(),
            cfg_path.display()
        )
    })?;
    if let Some(f) = replica {
        if !dbc.replicas.iter().any(|r| r.name == f) {
            bail!("replica {f:?} not found for database {}", path.display());
        }
    }
    if dbc.replicas.is_empty() {
        bail!("database {} has no replica", path.display());
    }
    let meta = MetaDir::owned(
        dbc.meta_path
            .clone()
            .unwrap_or_else(|| walship_core::meta::default_meta_dir(&dbc.path)),
        Ownership::of_db(&dbc.path),
    );
    let answers = if walship_core::local::lock_held(&meta.lock_file()) == Some(true) {
        let holder = LockHolder::read(&meta.lock_file());
        let text =
            crate::snapreq::ask_raw(&dbc.path, &meta, &holder, crate::snapreq::VERIFY).await?;
        decode(&text)
    } else {
        here(&dbc, replica).await?
    };
    let answers: Answers = answers
        .into_iter()
        .filter(|(name, _)| replica.is_none_or(|f| f == name.as_str()))
        .collect();
    if answers.is_empty() {
        bail!(
            "the running replicate has no replica for database {}",
            path.display()
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(&answers))?);
    } else {
        for (name, a) in &answers {
            match a {
                Ok(r) => println!("{name}: {r}"),
                Err(e) => println!("{name}: ERROR: {e}"),
            }
        }
    }
    let all_ok = answers
        .iter()
        .all(|(_, a)| a.as_ref().is_ok_and(|r| r.mismatch.is_none()));
    Ok(if all_ok { 0 } else { 1 })
}

/// No replicate runs: ship what is pending, then drill each replica in turn.
async fn here(dbc: &DbConfig, only: Option<&str>) -> Result<Answers> {
    if !dbc.path.exists() {
        bail!(
            "database {} does not exist: nothing to verify",
            dbc.path.display()
        );
    }
    let db = Db::open(&dbc.path, crate::setup::db_options(dbc))?;
    let mut out = Vec::new();
    let synced = walship_core::monitor::sync_db(&db).await;
    for r in &dbc.replicas {
        if only.is_some_and(|f| f != r.name) {
            continue;
        }
        let res = match &synced {
            Err(e) => Err(format!("cannot copy the WAL: {e}")),
            Ok(_) => {
                let client = crate::setup::open_replica(r, Some(&dbc.path))?;
                let mut s = Shipper::new(db.clone(), client, crate::setup::replica_options(r)?);
                match s.sync().await {
                    Err(e) => Err(format!("cannot ship the WAL before the drill: {e}")),
                    Ok(()) => match s.drill_now().await {
                        Ok(Some(rep)) => Ok(rep),
                        Ok(None) => {
                            Err("nothing to verify: the database has no WAL position yet".into())
                        }
                        Err(e) => Err(e.to_string()),
                    },
                }
            }
        };
        out.push((r.name.clone(), res));
    }
    let closing = db.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    Ok(out)
}

/// The drill of a bare replica URL; returns the exit code.
async fn url_drill(target: &str, json: bool) -> Result<i32> {
    let (_, replicas) = crate::setup::replicas_for(target, None, false, None)?;
    let mut rows = Vec::new();
    let mut all_ok = true;
    for (name, r, age) in replicas {
        let res = restore_and_check(r, &age).await;
        all_ok &= res.is_ok();
        if json {
            rows.push(match &res {
                Ok(u) => serde_json::json!({
                    "replica": name,
                    "status": "ok",
                    "compared": false,
                    "generation": u.generation,
                    "index": u.index,
                    "pages": u.pages,
                    "objects": u.objects,
                    "bytes": u.bytes,
                    "elapsed_seconds": u.elapsed.as_secs_f64(),
                }),
                Err(e) => serde_json::json!({
                    "replica": name,
                    "status": "error",
                    "compared": false,
                    "detail": format!("{e:#}"),
                }),
            });
        } else {
            match &res {
                Ok(u) => println!(
                    "{name}: ok: the latest state (generation {}, index {:08x}) restores and passes integrity_check: {} pages, {} objects ({} bytes) read in {:.2?}; no local database to compare",
                    u.generation, u.index, u.pages, u.objects, u.bytes, u.elapsed
                ),
                Err(e) => println!("{name}: ERROR: {e:#}"),
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(if all_ok { 0 } else { 1 })
}

/// What a URL's drill restored.
struct Restored {
    generation: String,
    index: u32,
    pages: u64,
    objects: u64,
    bytes: u64,
    elapsed: Duration,
}

/// Restores the latest state into a private temporary file (paced like a drill), checks it with
/// `integrity_check`, removes it.
async fn restore_and_check(
    r: walship_core::replica::DynReplica,
    age: &walship_core::crypt::Age,
) -> Result<Restored> {
    use walship_core::plan::{self, Target};
    let started = std::time::Instant::now();
    let listing = walship_core::listing::Listing::fetch(r.as_ref(), None).await?;
    let plan = plan::plan(&listing, None, Target::Latest)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let out =
        std::env::temp_dir().join(format!("walship-verify-{}-{nanos}.db", std::process::id()));
    let paced = walship_core::throttle::throttled(
        r,
        walship_core::shipper::DRILL_BYTES_PER_SEC,
        tokio_util::sync::CancellationToken::new(),
    );
    let res = async {
        walship_core::restore::execute(paced, age, &plan, &out, 2).await?;
        crate::verify::check(&out, crate::verify::IntegrityCheck::Full)?;
        let c = rusqlite::Connection::open(&out)?;
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        anyhow::Ok(pages as u64)
    }
    .await;
    crate::verify::discard(&out);
    let pages = res?;
    let reads = plan.reads();
    Ok(Restored {
        generation: plan.generation.clone(),
        index: plan.indexes.last().map_or(plan.snapshot.index, |(i, _)| *i),
        pages,
        objects: reads.objects,
        bytes: reads.bytes,
        elapsed: started.elapsed(),
    })
}

fn to_json(answers: &Answers) -> serde_json::Value {
    let rows = answers.iter().map(|(name, a)| match a {
        Ok(r) => serde_json::json!({
            "replica": name,
            "status": if r.mismatch.is_none() { "ok" } else { "mismatch" },
            "generation": r.pos.generation,
            "index": r.pos.index,
            "offset": r.pos.offset,
            "pages": r.pages,
            "objects": r.objects,
            "bytes": r.bytes,
            "elapsed_seconds": r.elapsed.as_secs_f64(),
            "checkpoints_held_seconds": r.held.as_secs_f64(),
            "detail": r.mismatch,
        }),
        Err(e) => serde_json::json!({
            "replica": name,
            "status": "error",
            "detail": e,
        }),
    });
    serde_json::Value::Array(rows.collect())
}

/// One line per replica for the answer file: `report<TAB>name<TAB>generation<TAB>index<TAB>
/// offset<TAB>pages<TAB>objects<TAB>bytes<TAB>elapsed-ms<TAB>held-ms<TAB>mismatch (empty when equal)` or
/// `error<TAB>name<TAB>why`.
pub fn encode(answers: &Answers) -> String {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    answers
        .iter()
        .map(|(name, a)| match a {
            Ok(r) => format!(
                "report\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                clean(name),
                r.pos.generation,
                r.pos.index,
                r.pos.offset,
                r.pages,
                r.objects,
                r.bytes,
                r.elapsed.as_millis(),
                r.held.as_millis(),
                clean(r.mismatch.as_deref().unwrap_or_default())
            ),
            Err(e) => format!("error\t{}\t{}\n", clean(name), clean(e)),
        })
        .collect()
}

/// The answer file back; a line that does not parse is not a success.
pub fn decode(text: &str) -> Answers {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            match f.as_slice() {
                ["report", name, g, i, o, pages, objects, bytes, ms, held, mismatch] => Some((
                    name.to_string(),
                    Ok(DrillReport {
                        pos: Pos::new(g.to_string(), i.parse().ok()?, o.parse().ok()?),
                        pages: pages.parse().ok()?,
                        objects: objects.parse().ok()?,
                        bytes: bytes.parse().ok()?,
                        elapsed: Duration::from_millis(ms.parse().ok()?),
                        held: Duration::from_millis(held.parse().ok()?),
                        mismatch: (!mismatch.is_empty()).then(|| mismatch.to_string()),
                    }),
                )),
                ["error", name, why @ ..] => Some((name.to_string(), Err(why.join(" ")))),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_survive_the_answer_file() {
        let ok = DrillReport {
            pos: Pos::new("0123456789abcdef".to_string(), 3, 8272),
            pages: 25_600,
            objects: 4,
            bytes: 1_234_567,
            elapsed: Duration::from_millis(1500),
            held: Duration::from_millis(20),
            mismatch: None,
        };
        let bad = DrillReport {
            mismatch: Some("page 7 differs:\tsnapshot x".into()),
            ..ok.clone()
        };
        let answers: Answers = vec![
            ("s3".into(), Ok(ok.clone())),
            ("file".into(), Ok(bad)),
            ("sftp".into(), Err("list: connection\trefused".into())),
        ];
        let back = decode(&encode(&answers));
        assert_eq!(back[0], answers[0]);
        assert_eq!(
            back[1].1.as_ref().unwrap().mismatch.as_deref(),
            Some("page 7 differs: snapshot x")
        );
        assert_eq!(back[2].1, Err("list: connection refused".to_string()));
        assert!(decode("report\ts3\tnot-enough").is_empty());
    }
}

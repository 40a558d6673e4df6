//! `restore -dir OUT_DIR DIR|URL`: every database of a directory entry, restored at once.
//!
//! The databases are the ones the replica holds (each under `<entry location>/<relative
//! path>/generations/`), not the ones on disk: this is how a new server gets all its tenants
//! back. Each is an ordinary restore (the same choice of replica and generation, the same
//! integrity check), N at a time; one failure does not stop the others, and the summary names
//! every failure.

use crate::setup;
use anyhow::{anyhow, bail, Result};
use futures::StreamExt;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub struct DirRestoreArgs<'a> {
    pub config: Option<&'a Path>,
    pub no_expand_env: bool,
    pub out_dir: PathBuf,
    pub replica: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub parallelism: usize,
    /// How many databases restore at once.
    pub concurrency: usize,
    pub if_db_not_exists: bool,
    pub integrity_check: crate::verify::IntegrityCheck,
    pub target: &'a str,
}

/// The databases under a directory entry's location, from its object keys: the part before
/// `/generations/` (pure: tested below).
pub fn databases_in(keys: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    keys.into_iter()
        .filter_map(|k| {
            k.find("/generations/")
                .map(|i| k[..i].trim_start_matches('/').to_string())
        })
        .filter(|rel| !rel.is_empty() && !rel.split('/').any(|p| p == ".." || p == "."))
        .collect()
}

pub async fn run(a: DirRestoreArgs<'_>) -> Result<i32> {
    if let Some(t) = a.timestamp {
        crate::restore::parse_timestamp(t)?;
    }
    let out_dir = setup::abs_path(&a.out_dir.to_string_lossy())?;
    // (relative path, restore target, config to read it with)
    let (found, url) = if setup::is_url(a.target) {
        if a.config.is_some() {
            bail!("cannot specify a replica URL and the -config flag");
        }
        let rc = walship_config::ReplicaConfig::from_url(a.target)?;
        let r = setup::open_replica(&rc, None)?;
        let keys = r
            .list("")
            .await
            .map_err(|e| anyhow!("list {}: {e}", a.target))?;
        (databases_in(keys.into_iter().map(|o| o.key)), true)
    } else {
        let (cfg, cfg_path) = setup::load_config(a.config, a.no_expand_env)?;
        let dir = setup::abs_path(a.target)?;
        let entry = cfg.dirs.iter().find(|d| d.dir == dir).ok_or_else(|| {
            anyhow!(
                "no directory entry (`dir:`) for {} in config {}",
                dir.display(),
                cfg_path.display()
            )
        })?;
        let mut found = BTreeSet::new();
        let mut matched = false;
        for r in &entry.template.replicas {
            if a.replica.is_some_and(|f| f != r.name) {
                continue;
            }
            matched = true;
            let client = setup::open_replica(r, None)?;
            let keys = client
                .list("")
                .await
                .map_err(|e| anyhow!("replica {}: list {}: {e}", r.name, client.target()))?;
            found.extend(
                databases_in(keys.into_iter().map(|o| o.key))
                    .into_iter()
                    .filter(|rel| entry.relative(&entry.dir.join(rel)).is_ok()),
            );
        }
        if let (Some(f), false) = (a.replica, matched) {
            bail!("replica {f:?} not found for directory {}", dir.display());
        }
        (found, false)
    };
    if found.is_empty() {
        bail!("no database backups found under {}", a.target);
    }
    std::fs::create_dir_all(&out_dir).map_err(|e| anyhow!("create {}: {e}", out_dir.display()))?;
    let total = found.len();
    tracing::info!(databases = total, to = %out_dir.display(), "restoring every database of the directory");
    let base = a.target.to_string();
    let results: Vec<(String, Result<bool>)> = futures::stream::iter(found)
        .map(|rel| {
            let output = out_dir.join(&rel);
            let target = if url {
                walship_config::join_url(&base, &rel)
            } else {
                Path::new(&base).join(&rel).to_string_lossy().into_owned()
            };
            let a = &a;
            async move {
                if let Some(parent) = output.parent() {
                    if let Err(e) = std::fs::create_dir_all(parent) {
                        return (rel, Err(anyhow!("create {}: {e}", parent.display())));
                    }
                }
                let r = crate::restore::run(crate::restore::RestoreArgs {
                    config: a.config,
                    no_expand_env: a.no_expand_env,
                    output: Some(output),
                    replica: if url { None } else { a.replica },
                    generation: None,
                    index: None,
                    timestamp: a.timestamp,
                    parallelism: a.parallelism,
                    if_db_not_exists: a.if_db_not_exists,
                    if_replica_exists: false,
                    integrity_check: a.integrity_check,
                    target: &target,
                })
                .await;
                (rel, r)
            }
        })
        .buffer_unordered(a.concurrency.max(1))
        .collect()
        .await;
    let mut failed: Vec<String> = Vec::new();
    let (mut restored, mut skipped) = (0, 0);
    for (rel, r) in results {
        match r {
            Ok(true) => restored += 1,
            Ok(false) => skipped += 1,
            Err(e) => {
                tracing::error!(db = %rel, error = %format!("{e:#}"), "restore failed");
                failed.push(format!("{rel} ({})", one_line(&format!("{e:#}"))));
            }
        }
    }
    failed.sort();
    let mut line = format!(
        "restored {restored} of {total} databases to {}",
        out_dir.display()
    );
    if skipped > 0 {
        line.push_str(&format!(", {skipped} skipped (already exist)"));
    }
    if failed.is_empty() {
        println!("{line}");
        Ok(0)
    } else {
        println!("{line}, {} failed: {}", failed.len(), failed.join("; "));
        Ok(1)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_from_keys() {
        let keys = [
            "a.db/generations/0123456789abcdef/snapshots/00000000.snapshot.lz4",
            "a.db/generations/0123456789abcdef/wal/00000000/00000000.wal.lz4",
            "eu/b.db/generations/0123456789abcdef/wal/00000000/00000000.wal.lz4",
            "generations/0123456789abcdef/wal/00000000/00000000.wal.lz4",
            "../x.db/generations/0/wal/0",
            "stray-object",
        ];
        let got = databases_in(keys.iter().map(|k| k.to_string()));
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec!["a.db".to_string(), "eu/b.db".to_string()]
        );
    }
}

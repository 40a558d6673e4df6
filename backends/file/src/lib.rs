//! walship-file: a replica in a local directory (`type: file`, `file:///abs/path`).
//!
//! Writes go to `<final>.tmp`, are fsynced and renamed, so a reader never sees a partial object;
//! the file's modification time is the creation time listings report (format §2).

mod store;

pub use store::FileReplica;
use walship_core::registry::{Backend, ReplicaSettings};
use walship_core::replica::DynReplica;
use walship_core::{Error, Result};

/// Builds a file replica from `path:` or `url: file:///...`.
pub fn open(settings: &ReplicaSettings) -> Result<DynReplica> {
    let root = match (&settings.url, &settings.path) {
        (Some(_), Some(_)) => {
            return Err(Error::config("replica url cannot be combined with path"))
        }
        (Some(url), None) => {
            let dir = walship_config::file_url_path(url)
                .ok_or_else(|| {
                    Error::config(format!(
                        "invalid file replica url {url:?}: expected file:///path"
                    ))
                })?
                .map_err(Error::config)?;
            return Ok(std::sync::Arc::new(FileReplica::new(
                dir,
                settings.db_path.clone(),
            )?));
        }
        (None, Some(p)) => p.clone(),
        (None, None) => return Err(Error::config("file replica path required")),
    };
    if root.is_empty() {
        return Err(Error::config("file replica path required"));
    }
    Ok(std::sync::Arc::new(FileReplica::new(
        expand_home(&root),
        settings.db_path.clone(),
    )?))
}

fn expand_home(p: &str) -> std::path::PathBuf {
    match (
        p.strip_prefix("~/").or((p == "~").then_some("")),
        std::env::var_os("HOME"),
    ) {
        (Some(rest), Some(home)) => std::path::Path::new(&home).join(rest),
        _ => std::path::PathBuf::from(p),
    }
}

walship_core::inventory::submit! {
    Backend { kind: "file", schemes: &["file"], options: &[], open }
}

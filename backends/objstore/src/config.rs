//! Pieces of a replica section both object_store backends read the same way.

use std::time::Duration;
use walship_core::registry::ReplicaSettings;
use walship_core::{Error, Result};

/// Per-request timeout when `operation-timeout` is not set: long enough to send one part.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// `scheme://authority/path` → (authority, path cleaned as Go's `path.Clean` and without its
/// leading `/`), as v0.3.13 reads replica URLs. `kind` names the replica type in errors.
pub fn split_url<'a>(url: &'a str, kind: &str, schemes: &[&str]) -> Result<(&'a str, String)> {
    let rest = schemes
        .iter()
        .find_map(|s| url.strip_prefix(s).and_then(|r| r.strip_prefix("://")))
        .ok_or_else(|| {
            Error::config(format!(
                "invalid {kind} replica url: expected {}://{}/path",
                schemes[0],
                if kind == "abs" {
                    "[account@]container"
                } else {
                    "bucket"
                }
            ))
        })?;
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], clean(&rest[i..])),
        None => (rest, String::new()),
    })
}

/// Go's `path.Clean` without the leading `/`: `a//b/./c/` → `a/b/c`, `/` → ``.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// The `operation-timeout` of a section (walship addition), or the default.
pub fn operation_timeout(s: &ReplicaSettings) -> Result<Duration> {
    match s.option("operation-timeout") {
        None => Ok(DEFAULT_OPERATION_TIMEOUT),
        Some(v) => {
            let d = walship_core::duration::parse_duration(v)
                .map_err(|m| Error::config(format!("operation-timeout: {m}")))?;
            if d.is_zero() {
                return Err(Error::config("operation-timeout must be greater than 0"));
            }
            Ok(d)
        }
    }
}

/// The key prefix of a `path:` field. v0.3.13 used it verbatim (Go's `path.Join`), so a leading
/// `/` became part of every object name. A backend that names such objects (`keeps_leading`:
/// GCS, through the JSON API) keeps it; the others cannot (`object_store` paths never start with
/// `/`), so it is dropped, and said once (a v0.3.13 replica written there is not seen).
pub fn section_prefix(s: &ReplicaSettings, kind: &str, keeps_leading: bool) -> String {
    let p = s.path.clone().unwrap_or_default();
    if p.starts_with('/') {
        if keeps_leading {
            return format!("/{}", clean(&p));
        }
        tracing::warn!(
            replica = %s.name,
            path = %p,
            "{kind} replica path starts with '/': walship stores its objects without the leading \
             '/' (Litestream v0.3.13 kept it in the object names, so a replica it wrote under \
             this path is not seen by walship)"
        );
    }
    clean(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_like_v0_3() {
        assert_eq!(
            split_url("gcs://b/x//y/", "gcs", &["gcs", "gs"]).unwrap(),
            ("b", "x/y".to_string())
        );
        assert_eq!(
            split_url("gs://b", "gcs", &["gcs", "gs"]).unwrap(),
            ("b", String::new())
        );
        assert_eq!(
            split_url("abs://acct@c/p?x=1", "abs", &["abs"]).unwrap(),
            ("acct@c", "p".to_string())
        );
        let e = split_url("s3://b/p", "gcs", &["gcs", "gs"]).unwrap_err();
        assert!(e.to_string().contains("gcs://bucket/path"), "{e}");
        assert_eq!(clean("/a/./b/../c/"), "a/c");
    }
}

//! Directory entries (`dbs: - dir: ...`, Litestream v0.5's keys): one entry stands for every
//! SQLite database under a directory whose file name matches a pattern.
//!
//! Everything here is pure (names and paths, no file system access) so the rules that decide
//! which files are databases and where each one's replica lives are tested on their own; the
//! replicator scans and watches the directory with them.

use std::path::{Component, Path, PathBuf};

use crate::model::DbConfig;

/// One `dbs[]` entry with `dir:` instead of `path:`.
#[derive(Debug, Clone, PartialEq)]
pub struct DirConfig {
    /// Absolute and cleaned.
    pub dir: PathBuf,
    /// The glob as written (checked by the loader), matched against file names.
    pub pattern: String,
    pub recursive: bool,
    /// Pick up databases created, removed and renamed while `replicate` runs.
    pub watch: bool,
    /// `meta-dir`: a root under which each database gets `<relative path>-litestream`;
    /// `None` keeps the default `.<file>-litestream` beside each database.
    pub meta_dir: Option<PathBuf>,
    /// The settings every database found inherits (`path` is the directory itself, replicas
    /// hold the entry's locations, to which each database appends its relative path).
    pub template: DbConfig,
    pub line: Option<usize>,
}

/// Why a name under the directory is not one of its databases (logged at debug level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not under the directory, or in a subdirectory of a non-recursive entry.
    Outside,
    /// SQLite's companions (`-wal`, `-shm`, `-journal`) and walship's or Litestream's own files.
    Companion,
    /// Inside a meta directory (`.<db>-litestream`) or another hidden directory.
    Hidden,
    /// The file name does not match `pattern`.
    NoMatch,
}

impl DirConfig {
    /// The path of `path` relative to the directory when it names one of this entry's
    /// databases by name alone (whether the file is a WAL-mode database is for the caller to
    /// check on disk).
    pub fn relative(&self, path: &Path) -> Result<PathBuf, Skip> {
        let rel = path.strip_prefix(&self.dir).map_err(|_| Skip::Outside)?;
        let parts: Vec<&std::ffi::OsStr> = rel
            .components()
            .map(|c| match c {
                Component::Normal(s) => Ok(s),
                _ => Err(Skip::Outside),
            })
            .collect::<Result<_, _>>()?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(Skip::Outside);
        };
        if !self.recursive && !parents.is_empty() {
            return Err(Skip::Outside);
        }
        if parents.iter().any(|p| p.to_string_lossy().starts_with('.')) {
            return Err(Skip::Hidden);
        }
        let name = name.to_string_lossy();
        if is_companion(&name) {
            return Err(Skip::Companion);
        }
        if !self.matches(&name) {
            return Err(Skip::NoMatch);
        }
        Ok(rel.to_path_buf())
    }

    /// Whether a subdirectory is scanned (recursive entries skip hidden directories, which
    /// hold meta directories, and never descend into anything when not recursive).
    pub fn descends_into(&self, name: &str) -> bool {
        self.recursive && !name.starts_with('.')
    }

    fn matches(&self, name: &str) -> bool {
        glob::Pattern::new(&self.pattern).is_ok_and(|p| {
            p.matches_with(
                name,
                glob::MatchOptions {
                    case_sensitive: true,
                    require_literal_separator: true,
                    require_literal_leading_dot: true,
                },
            )
        })
    }

    /// The configuration of the database at `rel` (relative to the directory): the entry's
    /// settings, its own meta directory, and every replica location extended by `rel`, so each
    /// database has a replica of its own that Litestream restores from the same prefix.
    pub fn db(&self, rel: &Path) -> DbConfig {
        let mut db = self.template.clone();
        db.path = self.dir.join(rel);
        db.release_after.get_or_insert(DIR_RELEASE_AFTER);
        db.meta_path = self.meta_dir.as_ref().map(|m| {
            let mut name = rel.as_os_str().to_os_string();
            name.push("-litestream");
            m.join(name)
        });
        let rel = rel.to_string_lossy();
        for r in &mut db.replicas {
            match (&r.url, &r.path) {
                (Some(u), None) => r.url = Some(join_url(u, &rel)),
                (_, Some(p)) => r.path = Some(join(p, &rel)),
                (None, None) => r.path = Some(rel.to_string()),
            }
        }
        db
    }
}

/// `release-after` of a directory entry's databases unless set: an idle tenant holds one
/// descriptor instead of eight (README, "Many databases").
pub const DIR_RELEASE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Names SQLite and replicators keep beside a database: never databases themselves.
fn is_companion(name: &str) -> bool {
    name.starts_with('.')
        || ["-wal", "-shm", "-journal", ".tmp", "-litestream"]
            .iter()
            .any(|s| name.ends_with(s))
}

fn join(base: &str, rel: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        rel.to_string()
    } else {
        format!("{base}/{rel}")
    }
}

/// `rel` appended to the path of `url`, before its query or fragment: where a directory
/// entry's replica URL keeps the database at `rel`.
pub fn join_url(url: &str, rel: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['?', '#'])
        .map_or(url.len(), |i| start + i);
    let (head, tail) = url.split_at(end);
    let (scheme, rest) = head.split_at(start);
    format!("{scheme}{}/{rel}{tail}", rest.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReplicaConfig;

    fn entry(recursive: bool) -> DirConfig {
        let mut template = DbConfig {
            path: "/t".into(),
            ..Default::default()
        };
        template.replicas.push(ReplicaConfig {
            name: "s3".into(),
            kind: "s3".into(),
            path: Some("tenants/".into()),
            ..Default::default()
        });
        template
            .replicas
            .push(ReplicaConfig::from_url("s3://bkt/pre?endpoint=http://x:9000").unwrap());
        template
            .replicas
            .push(ReplicaConfig::from_url("file:///bk").unwrap());
        template.replicas.push(ReplicaConfig {
            name: "f".into(),
            kind: "file".into(),
            ..Default::default()
        });
        DirConfig {
            dir: "/t".into(),
            pattern: "*.db".into(),
            recursive,
            watch: true,
            meta_dir: None,
            template,
            line: Some(3),
        }
    }

    #[test]
    fn which_names_are_databases() {
        let flat = entry(false);
        let deep = entry(true);
        assert_eq!(flat.relative(Path::new("/t/a.db")), Ok("a.db".into()));
        assert_eq!(flat.relative(Path::new("/t/x/a.db")), Err(Skip::Outside));
        assert_eq!(deep.relative(Path::new("/t/x/a.db")), Ok("x/a.db".into()));
        assert_eq!(flat.relative(Path::new("/u/a.db")), Err(Skip::Outside));
        assert_eq!(flat.relative(Path::new("/t")), Err(Skip::Outside));
        for companion in ["/t/a.db-wal", "/t/a.db-shm", "/t/a.db-journal", "/t/.a.db"] {
            assert_eq!(
                flat.relative(Path::new(companion)),
                Err(Skip::Companion),
                "{companion}"
            );
        }
        assert_eq!(
            deep.relative(Path::new("/t/.a.db-litestream/drill-s3.db")),
            Err(Skip::Hidden)
        );
        assert_eq!(flat.relative(Path::new("/t/a.sqlite")), Err(Skip::NoMatch));
        assert!(deep.descends_into("x") && !deep.descends_into(".a.db-litestream"));
        assert!(!flat.descends_into("x"));
    }

    #[test]
    fn each_database_gets_its_own_replica_location_and_meta_dir() {
        let mut e = entry(true);
        let db = e.db(Path::new("x/a.db"));
        assert_eq!(db.path, Path::new("/t/x/a.db"));
        assert_eq!(db.meta_path, None);
        assert_eq!(db.replicas[0].path.as_deref(), Some("tenants/x/a.db"));
        assert_eq!(
            db.replicas[1].url.as_deref(),
            Some("s3://bkt/pre/x/a.db?endpoint=http://x:9000")
        );
        assert_eq!(db.replicas[2].url.as_deref(), Some("file:///bk/x/a.db"));
        assert_eq!(db.replicas[3].path.as_deref(), Some("x/a.db"));
        // Two databases never share a target.
        let other = e.db(Path::new("a.db"));
        for (a, b) in db.replicas.iter().zip(&other.replicas) {
            assert_ne!(a.target(), b.target());
        }
        e.meta_dir = Some("/m".into());
        assert_eq!(
            e.db(Path::new("x/a.db")).meta_path.as_deref(),
            Some(Path::new("/m/x/a.db-litestream"))
        );
    }

    #[test]
    fn url_join_keeps_query_and_bucket_only_urls() {
        assert_eq!(join_url("s3://bkt", "a.db"), "s3://bkt/a.db");
        assert_eq!(join_url("s3://bkt/", "a.db"), "s3://bkt/a.db");
        assert_eq!(join_url("s3://bkt/p/", "a.db"), "s3://bkt/p/a.db");
        assert_eq!(join_url("file:///", "a.db"), "file:///a.db");
        assert_eq!(
            join_url("s3://bkt?region=x", "a.db"),
            "s3://bkt/a.db?region=x"
        );
        assert_eq!(
            join_url("sftp://u@h:22/home/u/bk#f", "t/a.db"),
            "sftp://u@h:22/home/u/bk/t/a.db#f"
        );
    }
}

//! The decoded configuration.
//!
//! Defaults (sync interval 1s, retention 24h, ...) are deliberately not filled in here: `None`
//! means "not in the file", which the engine needs to tell apart from an explicit value (e.g. a
//! CLI URL replica and a file replica share the 1s default, but `monitor-interval: 0` disables).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;
use crate::{paths, url};
use walship_core::registry::ReplicaSettings;

const REDACTED: &str = "<redacted>";

/// The whole `litestream.yml`.
#[derive(Clone, Default, PartialEq)]
pub struct Config {
    /// Metrics listener (`:9090`); `None` when absent or empty.
    pub addr: Option<String>,
    pub dbs: Vec<DbConfig>,
    /// `dbs` entries with `dir:` (Litestream v0.5): each stands for the databases under it.
    pub dirs: Vec<crate::dirs::DirConfig>,
    pub exec: Option<String>,
    /// Top-level credentials; already copied into each replica's `options` by the loader.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub logging: LoggingConfig,
    /// walship addition (`heartbeat-url`), ignored by v0.3.13.
    pub heartbeat_url: Option<String>,
    /// walship addition (`heartbeat-interval`), ignored by v0.3.13.
    pub heartbeat_interval: Option<Duration>,
    /// walship addition (`metrics: per-db: false`): only aggregate series, for thousands of
    /// databases. `None`: per-database series on, as v0.3.13.
    pub metrics_per_db: Option<bool>,
    /// walship addition (`shutdown-sync-timeout`): how long one database's final copy and final
    /// syncs may take at shutdown before they are abandoned (logged, exit code 1). `None`: the
    /// default; zero: no bound.
    pub shutdown_sync_timeout: Option<Duration>,
}

/// `logging:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggingConfig {
    pub level: LogLevel,
    /// `type: json`.
    pub json: bool,
    /// Log to stderr instead of stdout (v0.3.13's default is stdout).
    pub stderr: bool,
}

/// `logging.level`; v0.3.13 treats anything it does not recognise as `info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// Case-insensitive; `warning` is accepted like v0.3.13; anything else is `Info`.
    pub fn parse(s: &str) -> LogLevel {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" => LogLevel::Debug,
            "warn" | "warning" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }

    /// Whether `s` is one of the spellings `parse` recognises (so the loader can warn).
    pub(crate) fn is_known(s: &str) -> bool {
        matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "debug" | "info" | "warn" | "warning" | "error"
        )
    }
}

/// One `dbs[]` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DbConfig {
    /// Absolute and cleaned; the key `Config::db` looks up.
    pub path: PathBuf,
    /// Absolute and cleaned when set; `None` means `<dir>/.<file>-litestream`.
    pub meta_path: Option<PathBuf>,
    pub monitor_interval: Option<Duration>,
    pub checkpoint_interval: Option<Duration>,
    /// Always > 0 when set (checked by the loader).
    pub min_checkpoint_page_count: Option<u64>,
    /// 0 disables the forced RESTART checkpoint.
    pub max_checkpoint_page_count: Option<u64>,
    /// walship's `release-after`: idle time after which walship closes its hold on the database
    /// until the next change (0: never). Unset: never for a `path` entry, 1 minute for the
    /// databases of a `dir` entry.
    pub release_after: Option<Duration>,
    pub replicas: Vec<ReplicaConfig>,
    /// Line of the entry in the file, for messages about this database.
    pub line: Option<usize>,
}

/// One `dbs[].replicas[]` entry (or a replica URL given on the command line).
#[derive(Clone, Default, PartialEq)]
pub struct ReplicaConfig {
    /// Defaults to `kind`; unique within its database.
    pub name: String,
    /// The URL scheme if there is a URL, else `type`, else `"file"`. Unknown kinds are kept as
    /// written: whether a backend exists is decided where backends are registered.
    pub kind: String,
    /// May hold a password (`sftp://user:pass@host`); `Debug` redacts it.
    pub url: Option<String>,
    /// Used verbatim (not absolutized): the backend knows whether it is a directory or a prefix.
    pub path: Option<String>,
    pub retention: Option<Duration>,
    pub retention_check_interval: Option<Duration>,
    pub sync_interval: Option<Duration>,
    pub snapshot_interval: Option<Duration>,
    pub validation_interval: Option<Duration>,
    pub age: Option<AgeConfig>,
    /// Every other scalar key, by its YAML name, with the value as written in the file
    /// (`yes` stays `yes`; a backend reads it through [`ReplicaConfig::settings`]).
    pub options: BTreeMap<String, String>,
    pub line: Option<usize>,
}

/// `age:` section of a replica.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AgeConfig {
    /// Private keys: never printed.
    pub identities: Vec<String>,
    pub recipients: Vec<String>,
}

impl Config {
    /// The database whose path is `path` once `~`-expanded, absolutized and cleaned, so any
    /// spelling of the same path the user types on the command line finds it.
    pub fn db(&self, path: &Path) -> Option<&DbConfig> {
        let key = paths::absolutize(path).unwrap_or_else(|_| paths::clean(path));
        self.dbs.iter().find(|db| db.path == key)
    }

    /// Like [`Config::db`], and else the database of a directory entry whose name `path`
    /// matches (whether or not the file exists: a missing tenant can still be restored).
    pub fn db_or_found(&self, path: &Path) -> Option<DbConfig> {
        if let Some(db) = self.db(path) {
            return Some(db.clone());
        }
        let key = paths::absolutize(path).unwrap_or_else(|_| paths::clean(path));
        self.dirs
            .iter()
            .find_map(|d| d.relative(&key).ok().map(|rel| d.db(&rel)))
    }
}

impl ReplicaConfig {
    /// A replica from a URL on the command line (`replicate DB URL...`, `restore URL`).
    ///
    /// Intervals stay `None`; the engine applies the same defaults as for file replicas.
    pub fn from_url(url: &str) -> Result<ReplicaConfig, ConfigError> {
        let kind = url::scheme(url).ok_or_else(|| ConfigError::Url {
            url: url::redact(url),
            message: "replica url scheme required".into(),
        })?;
        Ok(ReplicaConfig {
            name: kind.clone(),
            kind,
            url: Some(url.to_owned()),
            ..ReplicaConfig::default()
        })
    }

    /// Where this replica's objects live, spelled one way for every spelling of the same place:
    /// the type, the store (S3: endpoint and bucket; SFTP: host and port), and the path without
    /// surrounding slashes (file: absolute and cleaned). Credentials never enter it, so it can be
    /// printed. Two databases with one target would restore each other's data.
    pub fn target(&self) -> String {
        let url = self.url.as_deref().map(split_url);
        let (host, url_path) = url.clone().unwrap_or_default();
        let path = self.path.clone().unwrap_or(url_path);
        match self.kind.as_str() {
            "file" => {
                let from_url = match (&self.url, &self.path) {
                    (Some(u), None) => crate::url::file_url_path(u).and_then(Result::ok),
                    _ => None,
                };
                let abs = from_url.unwrap_or_else(|| {
                    let p = std::path::Path::new(&path);
                    crate::paths::absolutize(p).unwrap_or_else(|_| crate::paths::clean(p))
                });
                format!("file:{}", abs.display())
            }
            "sftp" => {
                let host = self.option("host").map(str::to_owned).unwrap_or(host);
                let host = if host.contains(':') {
                    host
                } else {
                    format!("{host}:22")
                };
                format!("sftp://{host}/{}", path.trim_matches('/'))
            }
            kind => {
                let bucket = self.option("bucket").map(str::to_owned).unwrap_or(host);
                let endpoint = self
                    .option("endpoint")
                    .map(|e| e.trim_end_matches('/').to_ascii_lowercase())
                    .unwrap_or_default();
                format!("{kind}://{endpoint}|{bucket}/{}", path.trim_matches('/'))
            }
        }
    }

    /// The raw value of an option, if set.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }

    /// The backend-neutral section a backend's constructor reads; `db_path` is the database it
    /// serves, when known (file modes follow it).
    pub fn settings(&self, db_path: Option<&std::path::Path>) -> ReplicaSettings {
        ReplicaSettings {
            name: self.name.clone(),
            kind: self.kind.clone(),
            url: self.url.clone(),
            path: self.path.clone(),
            options: self.options.clone(),
            db_path: db_path.map(std::path::Path::to_path_buf),
        }
    }
}

/// (host without user info, path) of `scheme://[user[:pass]@]host[:port]/path[?query]`.
fn split_url(url: &str) -> (String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (host.to_ascii_lowercase(), path.to_owned())
}

pub(crate) use walship_core::registry::parse_bool;

fn redact_opt(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| REDACTED)
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("dbs", &self.dbs)
            .field("dirs", &self.dirs)
            .field("exec", &self.exec)
            .field("access_key_id", &redact_opt(&self.access_key_id))
            .field("secret_access_key", &redact_opt(&self.secret_access_key))
            .field("logging", &self.logging)
            .field(
                "heartbeat_url",
                &self.heartbeat_url.as_deref().map(url::redact),
            )
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("metrics_per_db", &self.metrics_per_db)
            .field("shutdown_sync_timeout", &self.shutdown_sync_timeout)
            .finish()
    }
}

impl fmt::Debug for ReplicaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| {
                let v = if walship_core::registry::is_secret_key(k) {
                    REDACTED
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("ReplicaConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url.as_deref().map(url::redact))
            .field("path", &self.path.as_deref().map(url::redact))
            .field("retention", &self.retention)
            .field("retention_check_interval", &self.retention_check_interval)
            .field("sync_interval", &self.sync_interval)
            .field("snapshot_interval", &self.snapshot_interval)
            .field("validation_interval", &self.validation_interval)
            .field("age", &self.age)
            .field("options", &options)
            .field("line", &self.line)
            .finish()
    }
}

impl fmt::Debug for AgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgeConfig")
            .field(
                "identities",
                &format_args!("[{} redacted]", self.identities.len()),
            )
            .field("recipients", &self.recipients)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels() {
        assert_eq!(LogLevel::parse("DEBUG"), LogLevel::Debug);
        assert_eq!(LogLevel::parse("info"), LogLevel::Info);
        assert_eq!(LogLevel::parse("Warning"), LogLevel::Warn);
        assert_eq!(LogLevel::parse("warn"), LogLevel::Warn);
        assert_eq!(LogLevel::parse("error"), LogLevel::Error);
        assert_eq!(LogLevel::parse("trace"), LogLevel::Info);
        assert_eq!(LogLevel::parse(""), LogLevel::Info);
        assert!(!LogLevel::is_known("trace"));
    }

    #[test]
    fn yaml11_booleans() {
        for t in ["true", "TRUE", "yes", "Yes", "y", "Y", "on", "ON"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "False", "no", "NO", "n", "N", "off", "Off"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for x in ["", "1", "0", "maybe", "yess"] {
            assert_eq!(parse_bool(x), None, "{x}");
        }
    }

    #[test]
    fn settings_carry_the_section_for_the_backend() {
        let mut r = ReplicaConfig::from_url("s3://b/p").unwrap();
        r.options.insert("force-path-style".into(), "yes".into());
        r.options.insert("password".into(), "hunter2".into());
        let s = r.settings(Some(std::path::Path::new("/data/app.db")));
        assert_eq!((s.name.as_str(), s.kind.as_str()), ("s3", "s3"));
        assert_eq!(s.url.as_deref(), Some("s3://b/p"));
        assert_eq!(s.bool_option("force-path-style").unwrap(), Some(true));
        assert_eq!(
            s.db_path.as_deref(),
            Some(std::path::Path::new("/data/app.db"))
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn from_url() {
        let r = ReplicaConfig::from_url("s3://bucket/db").unwrap();
        assert_eq!((r.kind.as_str(), r.name.as_str()), ("s3", "s3"));
        assert_eq!(r.url.as_deref(), Some("s3://bucket/db"));
        assert_eq!(r.sync_interval, None);
        assert!(r.options.is_empty());
        let r = ReplicaConfig::from_url("SFTP://u:p@h/x").unwrap();
        assert_eq!(r.kind, "sftp");
        assert_eq!(
            ReplicaConfig::from_url("file:///tmp/r").unwrap().kind,
            "file"
        );
        for bad in ["/tmp/x", "", "bucket/path", "s3:bucket"] {
            assert!(ReplicaConfig::from_url(bad).is_err(), "{bad}");
        }
        let e = ReplicaConfig::from_url("x y://u:hunter2@h")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn debug_hides_secrets() {
        let mut r = ReplicaConfig::from_url("sftp://user:urlpass@host/p").unwrap();
        for (k, v) in [
            ("access-key-id", "AKIDSECRET1"),
            ("secret-access-key", "SECRET2"),
            ("password", "SECRET3"),
            ("key-passphrase", "SECRET4"),
            ("account-key", "SECRET5"),
            ("bucket", "visible-bucket"),
        ] {
            r.options.insert(k.into(), v.into());
        }
        r.age = Some(AgeConfig {
            identities: vec!["AGE-SECRET-KEY-1XYZ".into()],
            recipients: vec!["age1public".into()],
        });
        let cfg = Config {
            access_key_id: Some("TOPKEY".into()),
            secret_access_key: Some("TOPSECRET".into()),
            heartbeat_url: Some("https://u:hbpass@hc.example/ping".into()),
            dbs: vec![DbConfig {
                path: "/d.db".into(),
                replicas: vec![r],
                ..DbConfig::default()
            }],
            ..Config::default()
        };
        let s = format!("{cfg:?} {cfg:#?}");
        for secret in [
            "urlpass",
            "AKIDSECRET1",
            "SECRET2",
            "SECRET3",
            "SECRET4",
            "SECRET5",
            "AGE-SECRET-KEY",
            "TOPKEY",
            "TOPSECRET",
            "hbpass",
        ] {
            assert!(!s.contains(secret), "{secret} leaked in {s}");
        }
        assert!(s.contains("visible-bucket"));
        assert!(s.contains("age1public"));
        assert!(s.contains("sftp://user:xxxxx@host/p"));
    }

    #[test]
    fn db_lookup_normalises() {
        let cfg = Config {
            dbs: vec![DbConfig {
                path: "/data/app.db".into(),
                ..DbConfig::default()
            }],
            ..Config::default()
        };
        assert!(cfg.db(Path::new("/data/app.db")).is_some());
        assert!(cfg.db(Path::new("/data/./x/../app.db")).is_some());
        assert!(cfg.db(Path::new("//data//app.db")).is_some());
        assert!(cfg.db(Path::new("/data/other.db")).is_none());
    }
}

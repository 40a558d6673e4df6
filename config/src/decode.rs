//! From the YAML tree to [`Config`], collecting warnings and validating like v0.3.13 (plus the
//! checks v0.3.13 only made later, at startup, so mistakes surface with a file and line).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dirs::DirConfig;
use crate::error::{ConfigError, Warning};
use crate::model::{
    parse_bool, AgeConfig, Config, DbConfig, LogLevel, LoggingConfig, ReplicaConfig,
};
use crate::yaml::{self, Node, Value};
use crate::{env, paths, url};
use walship_core::duration::parse_duration;
use walship_core::registry;

impl Config {
    /// Reads and parses the file at `path`; `expand_env: false` is `-no-expand-env`.
    pub fn load(
        path: &Path,
        expand_env: bool,
    ) -> std::result::Result<(Config, Vec<Warning>), ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::NotFound {
                    path: path.to_path_buf(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line: Some(valid.iter().filter(|&&b| b == b'\n').count() + 1),
                message: "file is not valid UTF-8".into(),
            }
        })?;
        Config::parse(&text, path, expand_env)
    }

    /// Parses config text; `source` is only used in messages.
    pub fn parse(
        text: &str,
        source: &Path,
        expand_env: bool,
    ) -> std::result::Result<(Config, Vec<Warning>), ConfigError> {
        let (text, empty) = if expand_env {
            env::expand_env_reporting(text)
        } else {
            (text.to_owned(), Vec::new())
        };
        let mut d = Decoder {
            src: &text,
            path: source,
            warnings: Vec::new(),
        };
        for (line, name) in empty {
            d.warnings.push(Warning {
                line: Some(line),
                message: format!(
                    "${{{name}}} is unset or empty, so it expanded to nothing (use -no-expand-env to read $ literally)"
                ),
            });
        }
        let config = d.config()?;
        Ok((config, d.warnings))
    }
}

struct Decoder<'a> {
    src: &'a str,
    path: &'a Path,
    warnings: Vec<Warning>,
}

/// One `key: value` pair after duplicate resolution.
struct Entry<'n> {
    key: String,
    line: Option<usize>,
    value: &'n Node,
}

type Result<T> = std::result::Result<T, ConfigError>;

/// A `dbs[]` entry: one database, or a directory of them.
enum Found {
    Db(DbConfig),
    Dir(Box<DirConfig>),
}

impl<'a> Decoder<'a> {
    fn config(&mut self) -> Result<Config> {
        let parsed = yaml::parse(self.src).map_err(|e| ConfigError::Syntax {
            path: self.path.to_path_buf(),
            line: e.line,
            message: e.message,
        })?;
        if parsed.documents > 1 {
            self.warn(
                None,
                format!(
                    "only the first of {} YAML documents is read",
                    parsed.documents
                ),
            );
        }
        let mut cfg = Config::default();
        let Some(root) = parsed.root else {
            return Ok(cfg);
        };
        if matches!(root.value, Value::Null) {
            return Ok(cfg);
        }
        if !matches!(root.value, Value::Map(_)) {
            return Err(ConfigError::Syntax {
                path: self.path.to_path_buf(),
                line: root.line,
                message: format!(
                    "expected a mapping of keys at the top, found {}",
                    root.kind_name()
                ),
            });
        }
        let mut dbs = None;
        for e in self.entries(&root, "") {
            match e.key.as_str() {
                "addr" => cfg.addr = self.string(&e)?,
                "dbs" => dbs = Some(e),
                "exec" => cfg.exec = self.string(&e)?,
                "access-key-id" => cfg.access_key_id = self.string(&e)?,
                "secret-access-key" => cfg.secret_access_key = self.string(&e)?,
                "logging" => cfg.logging = self.logging(&e)?,
                "heartbeat-url" => cfg.heartbeat_url = self.string(&e)?,
                "heartbeat-interval" => cfg.heartbeat_interval = self.duration(&e)?,
                "metrics" => cfg.metrics_per_db = self.metrics(&e)?,
                "shutdown-sync-timeout" => cfg.shutdown_sync_timeout = self.duration(&e)?,
                _ => self.unknown(&e, ""),
            }
        }
        if let Some(e) = dbs {
            for item in self.list(&e)? {
                let db = match self.db(item, &cfg)? {
                    Found::Db(db) => db,
                    Found::Dir(d) => {
                        if let Some(other) = cfg.dirs.iter().find(|o| o.dir == d.dir) {
                            let at = other
                                .line
                                .map_or_else(String::new, |l| format!(" (line {l})"));
                            return Err(self.invalid(
                                d.line,
                                "dir",
                                format!(
                                    "duplicate dir {:?}: also the entry{at}",
                                    d.dir.display().to_string()
                                ),
                            ));
                        }
                        cfg.dirs.push(*d);
                        continue;
                    }
                };
                if cfg.dbs.iter().any(|other| other.path == db.path) {
                    return Err(self.invalid(
                        db.line,
                        "path",
                        format!("duplicate db path {:?}", db.path.display().to_string()),
                    ));
                }
                cfg.dbs.push(db);
            }
        }
        self.refuse_shared_targets(&cfg)?;
        Ok(cfg)
    }

    /// Two replicas writing to one place: their generations would mix, and restoring one
    /// database could return the other's data. Named by both entries' lines.
    fn refuse_shared_targets(&self, cfg: &Config) -> Result<()> {
        let mut seen: Vec<(String, &DbConfig, &ReplicaConfig)> = Vec::new();
        for db in &cfg.dbs {
            for r in &db.replicas {
                let t = r.target();
                // Replicas of one database may share a target (the same store reached with
                // other credentials, as `-dry-run` comparisons do): they hold the same data.
                if let Some((_, other_db, other)) = seen
                    .iter()
                    .find(|(s, other_db, _)| *s == t && other_db.path != db.path)
                {
                    let whose = format!(
                        "the replica of db {:?}",
                        other_db.path.display().to_string()
                    );
                    let at = other
                        .line
                        .map_or_else(String::new, |l| format!(" (line {l})"));
                    return Err(self.invalid(
                        r.line,
                        "replicas",
                        format!("replica target {t} is also {whose}{at}: each database needs a replica path of its own"),
                    ));
                }
                seen.push((t, db, r));
            }
        }
        Ok(())
    }

    /// `metrics:` section (walship): `per-db`.
    fn metrics(&mut self, e: &Entry<'_>) -> Result<Option<bool>> {
        if matches!(e.value.value, Value::Null) {
            return Ok(None);
        }
        self.expect_map(e)?;
        let mut per_db = None;
        for f in self.entries(e.value, "metrics") {
            match f.key.as_str() {
                "per-db" => per_db = self.boolean(&f)?,
                _ => self.unknown(&f, "metrics"),
            }
        }
        Ok(per_db)
    }

    fn logging(&mut self, e: &Entry<'_>) -> Result<LoggingConfig> {
        let mut out = LoggingConfig::default();
        if matches!(e.value.value, Value::Null) {
            return Ok(out);
        }
        self.expect_map(e)?;
        for f in self.entries(e.value, "logging") {
            match f.key.as_str() {
                "level" => {
                    if let Some(level) = self.string(&f)? {
                        if !LogLevel::is_known(&level) {
                            self.warn(
                                f.line,
                                format!("unknown logging level {level:?}, using \"info\""),
                            );
                        }
                        out.level = LogLevel::parse(&level);
                    }
                }
                "type" => {
                    let kind = self.string(&f)?.unwrap_or_default();
                    out.json = match kind.trim().to_ascii_lowercase().as_str() {
                        "" | "text" => false,
                        "json" => true,
                        _ => {
                            return Err(self.invalid(
                                f.line,
                                "type",
                                format!(
                                    "invalid logging type {kind:?} (expected \"text\" or \"json\")"
                                ),
                            ))
                        }
                    };
                }
                "stderr" => out.stderr = self.boolean(&f)?.unwrap_or(false),
                _ => self.unknown(&f, "logging"),
            }
        }
        Ok(out)
    }

    fn db(&mut self, node: &Node, cfg: &Config) -> Result<Found> {
        let mut db = DbConfig {
            line: node.line,
            ..DbConfig::default()
        };
        if !matches!(node.value, Value::Map(_)) {
            return Err(self.invalid(
                node.line,
                "dbs",
                format!(
                    "expected a mapping for each database, found {}",
                    node.kind_name()
                ),
            ));
        }
        let mut path = None;
        let mut replicas = None;
        let mut single = None;
        let (mut dir, mut pattern, mut recursive, mut watch, mut meta_dir) =
            (None, None, None, None, None);
        for e in self.entries(node, "db") {
            match e.key.as_str() {
                "path" => path = self.path_value(&e)?,
                "dir" => dir = Some((self.path_value(&e)?, e.line)),
                "pattern" => pattern = Some((self.string(&e)?, e.line)),
                "recursive" => recursive = Some((self.boolean(&e)?, e.line)),
                "watch" => watch = Some((self.boolean(&e)?, e.line)),
                "meta-dir" => meta_dir = Some((self.path_value(&e)?, e.line)),
                "meta-path" => db.meta_path = self.path_value(&e)?,
                "monitor-interval" => db.monitor_interval = self.duration(&e)?,
                "checkpoint-interval" => db.checkpoint_interval = self.duration(&e)?,
                "release-after" => db.release_after = self.duration(&e)?,
                "min-checkpoint-page-count" => {
                    db.min_checkpoint_page_count = self.count(&e)?;
                    if db.min_checkpoint_page_count == Some(0) {
                        return Err(self.invalid(e.line, &e.key, "must be greater than 0".into()));
                    }
                }
                "max-checkpoint-page-count" => db.max_checkpoint_page_count = self.count(&e)?,
                "replicas" => replicas = Some(e),
                // Litestream v0.5 writes one replica as a `replica:` mapping; read as a one-entry
                // `replicas:` list rather than warned about and ignored (a process that runs
                // and backs up nothing).
                "replica" => single = Some(e),
                _ => self.unknown(&e, "db"),
            }
        }
        let dir = match dir {
            Some((dir, line)) => {
                if path.is_some() {
                    return Err(self.invalid(
                        line,
                        "dir",
                        "`dir` and `path` are both set: an entry is one database (`path`) or a directory of them (`dir`)".into(),
                    ));
                }
                if db.meta_path.is_some() {
                    return Err(self.invalid(
                        line,
                        "meta-path",
                        "`meta-path` names one database's meta directory: use `meta-dir` with `dir`".into(),
                    ));
                }
                let dir = dir.ok_or_else(|| self.invalid(line, "dir", "dir is empty".into()))?;
                let (pattern, pline) = pattern.unwrap_or((None, line));
                let pattern = pattern.filter(|p| !p.trim().is_empty()).ok_or_else(|| {
                    self.invalid(
                        pline,
                        "pattern",
                        "a `dir` entry needs a `pattern` for its database files, e.g. \"*.db\""
                            .into(),
                    )
                })?;
                if let Err(e) = glob::Pattern::new(&pattern) {
                    return Err(self.invalid(
                        pline,
                        "pattern",
                        format!("invalid pattern {pattern:?}: {e}"),
                    ));
                }
                Some((dir, pattern))
            }
            None => {
                for (key, line) in [
                    ("pattern", pattern.as_ref().map(|p| p.1)),
                    ("recursive", recursive.map(|p| p.1)),
                    ("watch", watch.map(|p| p.1)),
                    ("meta-dir", meta_dir.as_ref().map(|p| p.1)),
                ] {
                    if let Some(line) = line {
                        return Err(self.invalid(
                            line,
                            key,
                            format!(
                                "`{key}` can only be used with `dir` (a directory of databases)"
                            ),
                        ));
                    }
                }
                None
            }
        };
        db.path = match &dir {
            Some((d, _)) => d.clone(),
            None => {
                path.ok_or_else(|| self.invalid(node.line, "path", "db path required".into()))?
            }
        };
        if let Some(e) = single {
            if let Some(list) = &replicas {
                return Err(self.invalid(
                    list.line.or(e.line),
                    "replica",
                    "`replica` (one replica, Litestream v0.5) and `replicas` (a list) are both set: use one".into(),
                ));
            }
            db.replicas.push(self.replica(e.value, cfg)?);
        }
        if let Some(e) = replicas {
            for item in self.list(&e)? {
                let r = self.replica(item, cfg)?;
                if db.replicas.iter().any(|other| other.name == r.name) {
                    return Err(self.invalid(
                        r.line,
                        "name",
                        format!("duplicate replica name {:?}", r.name),
                    ));
                }
                db.replicas.push(r);
            }
        }
        Ok(match dir {
            Some((dir, pattern)) => Found::Dir(Box::new(DirConfig {
                dir,
                pattern,
                recursive: recursive.and_then(|r| r.0).unwrap_or(false),
                watch: watch.and_then(|w| w.0).unwrap_or(false),
                meta_dir: meta_dir.and_then(|m| m.0),
                line: db.line,
                template: db,
            })),
            None => Found::Db(db),
        })
    }

    fn replica(&mut self, node: &Node, cfg: &Config) -> Result<ReplicaConfig> {
        if !matches!(node.value, Value::Map(_)) {
            return Err(self.invalid(
                node.line,
                "replicas",
                format!(
                    "expected a mapping for each replica, found {}",
                    node.kind_name()
                ),
            ));
        }
        let mut r = ReplicaConfig {
            line: node.line,
            ..ReplicaConfig::default()
        };
        let (mut kind, mut name, mut url_line, mut path_line) = (None, None, None, None);
        let mut options = BTreeMap::new();
        for e in self.entries(node, "replica") {
            match e.key.as_str() {
                "type" => kind = self.string(&e)?,
                "name" => name = self.string(&e)?,
                "url" => {
                    r.url = self.string(&e)?;
                    url_line = e.line;
                }
                "path" => {
                    r.path = self.string(&e)?;
                    path_line = e.line;
                }
                "retention" => r.retention = self.duration(&e)?,
                "retention-check-interval" => r.retention_check_interval = self.duration(&e)?,
                "sync-interval" => r.sync_interval = self.duration(&e)?,
                "snapshot-interval" => r.snapshot_interval = self.duration(&e)?,
                "validation-interval" => r.validation_interval = self.duration(&e)?,
                "age" => r.age = self.age(&e)?,
                _ => {
                    if let Some(v) = self.option(&e)? {
                        options.insert(e.key, (v, e.line));
                    }
                }
            }
        }
        r.kind = match &r.url {
            // Go's url.Parse takes `file:/abs` and `file:rel` too (v0.3.13 reads them).
            Some(u) => url::scheme(u)
                .or_else(|| url::file_url_path(u).map(|_| "file".to_string()))
                .ok_or_else(|| {
                    self.invalid(
                        url_line,
                        "url",
                        format!("replica url scheme required: {}", url::redact(u)),
                    )
                })?,
            None => kind.unwrap_or_else(|| "file".into()),
        };
        r.name = name.unwrap_or_else(|| r.kind.clone());
        if let Some(p) = r.path.as_deref().filter(|p| p.contains("://")) {
            return Err(self.invalid(
                path_line,
                "path",
                format!(
                    "replica path cannot be a url, please use the 'url' field instead: {}",
                    url::redact(p)
                ),
            ));
        }
        if r.url.is_some() {
            let conflict = if r.path.is_some() {
                Some("path")
            } else if matches!(r.kind.as_str(), "s3" | "gcs" | "abs")
                && options.contains_key("bucket")
            {
                Some("bucket")
            } else if r.kind == "sftp" && options.contains_key("host") {
                Some("host")
            } else {
                None
            };
            if let Some(other) = conflict {
                return Err(self.invalid(
                    url_line,
                    "url",
                    format!("cannot specify url & {other} for {} replica", r.kind),
                ));
            }
        }
        r.options = options.into_iter().map(|(k, (v, _))| (k, v)).collect();
        for (key, value) in [
            ("access-key-id", &cfg.access_key_id),
            ("secret-access-key", &cfg.secret_access_key),
        ] {
            if let Some(v) = value {
                r.options.entry(key.to_owned()).or_insert_with(|| v.clone());
            }
        }
        Ok(r)
    }

    /// An unrecognised replica key: kept for the backends if it is a scalar.
    fn option(&mut self, e: &Entry<'_>) -> Result<Option<String>> {
        let spec = registry::option_spec(&e.key);
        if matches!(e.value.value, Value::Seq(_) | Value::Map(_)) {
            self.warn(
                e.line,
                format!(
                    "replica key {:?} ignored: expected a single value, found {}",
                    e.key,
                    e.value.kind_name()
                ),
            );
            return Ok(None);
        }
        if spec.is_none() {
            self.warn(
                e.line,
                format!(
                    "unknown replica key {:?}: no walship backend reads it",
                    e.key
                ),
            );
        }
        let Some(v) = e.value.scalar_text(self.src).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if let Some(spec) = spec {
            spec.check(&v)
                .map_err(|m| self.invalid(e.line, &e.key, m))?;
        }
        Ok(Some(v))
    }

    fn age(&mut self, e: &Entry<'_>) -> Result<Option<AgeConfig>> {
        if matches!(e.value.value, Value::Null) {
            return Ok(None);
        }
        self.expect_map(e)?;
        let mut age = AgeConfig::default();
        for f in self.entries(e.value, "age") {
            match f.key.as_str() {
                "identities" => age.identities = self.strings(&f)?,
                "recipients" => age.recipients = self.strings(&f)?,
                _ => self.unknown(&f, "age"),
            }
        }
        Ok(Some(age))
    }

    // ----- the mapping itself -----

    /// The entries of a mapping node; a repeated key warns and the last one wins (yaml.v2).
    fn entries<'n>(&mut self, node: &'n Node, section: &str) -> Vec<Entry<'n>> {
        let Value::Map(pairs) = &node.value else {
            return Vec::new();
        };
        let mut out: Vec<Entry<'n>> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let key = k.scalar_text(self.src).unwrap_or_default();
            let line = k.line.or(v.line);
            if let Some(prev) = out.iter_mut().find(|e| e.key == key) {
                let msg = format!(
                    "duplicate key {key:?}{}{}; the last one is used",
                    in_section(section),
                    prev.line
                        .map(|l| format!(" (first at line {l})"))
                        .unwrap_or_default(),
                );
                prev.line = line;
                prev.value = v;
                self.warn(line, msg);
            } else {
                out.push(Entry {
                    key,
                    line,
                    value: v,
                });
            }
        }
        out
    }

    fn unknown(&mut self, e: &Entry<'_>, section: &str) {
        self.warn(
            e.line,
            format!("unknown key {:?}{} ignored", e.key, in_section(section)),
        );
    }

    fn warn(&mut self, line: Option<usize>, message: String) {
        self.warnings.push(Warning { line, message });
    }

    fn invalid(&self, line: Option<usize>, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            key: key.to_owned(),
            message,
        }
    }

    fn expected(&self, e: &Entry<'_>, what: &str) -> ConfigError {
        self.invalid(
            e.line,
            &e.key,
            format!("expected {what}, found {}", e.value.kind_name()),
        )
    }

    fn expect_map(&self, e: &Entry<'_>) -> Result<()> {
        match e.value.value {
            Value::Map(_) => Ok(()),
            _ => Err(self.expected(e, "a mapping")),
        }
    }

    // ----- typed values -----

    /// A scalar as written; null and `""` are "not set", as in Go.
    fn string(&self, e: &Entry<'_>) -> Result<Option<String>> {
        match e.value.value {
            Value::Seq(_) | Value::Map(_) => Err(self.expected(e, "a single value")),
            _ => Ok(e.value.scalar_text(self.src).filter(|s| !s.is_empty())),
        }
    }

    /// A list; null is empty. Items are returned for the caller to check one by one.
    fn list<'n>(&self, e: &Entry<'n>) -> Result<&'n [Node]> {
        match &e.value.value {
            Value::Seq(items) => Ok(items),
            Value::Null => Ok(&[]),
            _ => Err(self.expected(e, "a list")),
        }
    }

    /// A list of strings; a single string is accepted as a list of one.
    fn strings(&self, e: &Entry<'_>) -> Result<Vec<String>> {
        match &e.value.value {
            Value::Seq(items) => items
                .iter()
                .filter(|n| !matches!(n.value, Value::Null))
                .map(|n| {
                    n.scalar_text(self.src)
                        .ok_or_else(|| self.expected(e, "a list of strings"))
                })
                .collect(),
            Value::Map(_) => Err(self.expected(e, "a list of strings")),
            _ => Ok(e.value.scalar_text(self.src).into_iter().collect()),
        }
    }

    /// A Go duration string, or an integer number of nanoseconds.
    fn duration(&self, e: &Entry<'_>) -> Result<Option<Duration>> {
        match e.value.value {
            Value::Null => Ok(None),
            Value::Seq(_) | Value::Map(_) => Err(self.expected(e, "a duration")),
            _ => {
                let text = e.value.scalar_text(self.src).unwrap_or_default();
                parse_duration(&text)
                    .map(Some)
                    .map_err(|m| self.invalid(e.line, &e.key, m))
            }
        }
    }

    fn count(&self, e: &Entry<'_>) -> Result<Option<u64>> {
        match e.value.value {
            Value::Null => Ok(None),
            Value::Seq(_) | Value::Map(_) => Err(self.expected(e, "an integer")),
            _ => {
                let text = e.value.scalar_text(self.src).unwrap_or_default();
                text.trim().parse::<u64>().map(Some).map_err(|_| {
                    self.invalid(
                        e.line,
                        &e.key,
                        format!("expected a non-negative integer, found {text:?}"),
                    )
                })
            }
        }
    }

    fn boolean(&self, e: &Entry<'_>) -> Result<Option<bool>> {
        match self.string(e)? {
            None => Ok(None),
            Some(s) => parse_bool(&s)
                .map(Some)
                .ok_or_else(|| self.invalid(e.line, &e.key, format!("invalid boolean {s:?}"))),
        }
    }

    /// `~` expanded, absolute, cleaned.
    fn path_value(&self, e: &Entry<'_>) -> Result<Option<PathBuf>> {
        self.string(e)?
            .map(|s| paths::absolutize(Path::new(&s)).map_err(|m| self.invalid(e.line, &e.key, m)))
            .transpose()
    }
}

fn in_section(section: &str) -> String {
    if section.is_empty() {
        String::new()
    } else {
        format!(" in {section}")
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;

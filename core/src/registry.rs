//! Backend registration: each backend crate submits a [`Backend`] with `inventory::submit!`.
//!
//! The binary must name every backend crate it links (`use walship_file as _;`), because the
//! linker drops a crate nothing references, and with it the registration.

use crate::error::{Error, Result};
use crate::replica::DynReplica;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// A replica section, backend-neutral: what a constructor needs to build its client.
#[derive(Clone, Default)]
pub struct ReplicaSettings {
    /// The replica's name, unique per database; errors and logs name the replica by it.
    pub name: String,
    /// The `type:` value; empty means `file`. A `url` scheme takes precedence.
    pub kind: String,
    /// The `url:` value; when set, its scheme chooses the backend.
    pub url: Option<String>,
    /// The `path:` value, interpreted by the backend (a directory, or a key prefix in a bucket).
    pub path: Option<String>,
    /// Every other key of the section by its YAML name (`bucket`, `endpoint`, `host`, ...).
    pub options: BTreeMap<String, String>,
    /// The database this replica serves, when known (file modes follow it).
    pub db_path: Option<PathBuf>,
}

/// Option keys whose values must never be printed: in `Debug` output, in logs, and in the config
/// loader's errors (walship-config uses this same rule, so the two can never disagree).
///
/// Explicit names first, then patterns, so a future backend's `session-token` or `api-secret`
/// is hidden before anyone remembers to list it.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(
        k.as_str(),
        "access-key-id" | "secret-access-key" | "password" | "key-passphrase" | "account-key"
    ) || [
        "secret",
        "password",
        "passphrase",
        "token",
        "credential",
        "private",
        "identit",
    ]
    .iter()
    .any(|p| k.contains(p))
        || (k.ends_with("-key") && k != "host-key")
}

/// YAML 1.1 booleans (`yes`/`no`/`on`/`off`/`y`/`n`, `true`/`false`, any case, surrounding
/// spaces ignored), as v0.3.13's yaml.v2 accepted them: the one parser of the config loader and
/// the backends.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" => Some(true),
        "false" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// Hides the password of `scheme://user:password@host/...`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (auth, tail) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((userinfo, host)) = auth.rsplit_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}{tail}");
            }
        }
    }
    url.to_string()
}

impl fmt::Debug for ReplicaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opts: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret_key(k) { "***" } else { v.as_str() },
                )
            })
            .collect();
        f.debug_struct("ReplicaSettings")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("path", &self.path)
            .field("options", &opts)
            .finish()
    }
}

impl ReplicaSettings {
    /// The value of option `key`; an empty value counts as unset.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A boolean option ([`parse_bool`]).
    pub fn bool_option(&self, key: &str) -> Result<Option<bool>> {
        match self.option(key) {
            None => Ok(None),
            Some(v) => match parse_bool(v) {
                Some(b) => Ok(Some(b)),
                None => Err(
                    Error::config(format!("{key}: expected a boolean, got {v:?}"))
                        .with_replica(self.name.as_str()),
                ),
            },
        }
    }
}

/// What an option's value must be; the config loader checks it, so a bad value fails with the
/// file and line before any backend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    /// Any text (a name, a host, a path, a key).
    Text,
    /// A YAML 1.1 boolean ([`parse_bool`]).
    Bool,
    /// A Go duration ([`crate::duration::parse_duration`]).
    Duration,
}

/// One option key of a replica section that a backend reads.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The key as written in `litestream.yml`.
    pub name: &'static str,
    /// What its value must be.
    pub ty: OptionType,
    /// The default, as a user would write it (for documentation and `--help`-like listings).
    pub default: Option<&'static str>,
}

impl OptionSpec {
    /// A text option without a default.
    pub const fn text(name: &'static str) -> Self {
        OptionSpec {
            name,
            ty: OptionType::Text,
            default: None,
        }
    }
    /// A boolean option that defaults to `false`.
    pub const fn flag(name: &'static str) -> Self {
        OptionSpec {
            name,
            ty: OptionType::Bool,
            default: Some("false"),
        }
    }
    /// A duration option with its default.
    pub const fn duration(name: &'static str, default: &'static str) -> Self {
        OptionSpec {
            name,
            ty: OptionType::Duration,
            default: Some(default),
        }
    }
    /// Whether the value must never be printed ([`is_secret_key`]: one rule for every backend).
    pub fn secret(&self) -> bool {
        is_secret_key(self.name)
    }
    /// Checks a value against the type: the error names what was expected, never the value of a
    /// secret.
    pub fn check(&self, value: &str) -> std::result::Result<(), String> {
        let shown = |what: &str| {
            if self.secret() {
                what.to_owned()
            } else {
                format!("{what} {value:?}")
            }
        };
        match self.ty {
            OptionType::Text => Ok(()),
            OptionType::Bool => parse_bool(value)
                .map(|_| ())
                .ok_or_else(|| shown("invalid boolean")),
            OptionType::Duration => crate::duration::parse_duration(value).map(|_| ()),
        }
    }
}

/// The option `key` as some linked backend declares it; None when no backend reads it (the
/// config loader warns: a typo such as `acess-key-id` would otherwise fall back to other
/// credentials silently).
pub fn option_spec(key: &str) -> Option<OptionSpec> {
    inventory::iter::<Backend>
        .into_iter()
        .flat_map(|b| b.options)
        .find(|o| o.name == key)
        .copied()
}

/// A backend's registration.
pub struct Backend {
    /// The `type:` value, e.g. `file`.
    pub kind: &'static str,
    /// URL schemes handled, e.g. `["file"]`.
    pub schemes: &'static [&'static str],
    /// Every option key of a replica section the backend reads, besides `url` and `path`.
    pub options: &'static [OptionSpec],
    /// Builds the backend's client for a replica section; [`open`] adds the replica's name to
    /// its errors.
    pub open: fn(&ReplicaSettings) -> Result<DynReplica>,
}

inventory::collect!(Backend);

/// Types of every linked backend, sorted.
pub fn kinds() -> Vec<&'static str> {
    let mut v: Vec<_> = inventory::iter::<Backend>
        .into_iter()
        .map(|b| b.kind)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The type named by a replica URL's scheme, or `None` when the string is not a URL.
pub fn url_scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    (!scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-'))
    .then_some(scheme)
}

/// Builds the replica client for a section, choosing the backend by URL scheme, else by type.
pub fn open(settings: &ReplicaSettings) -> Result<DynReplica> {
    let kind = match settings.url.as_deref().and_then(url_scheme) {
        Some(s) => s.to_string(),
        None if settings.kind.is_empty() => "file".to_string(),
        None => settings.kind.clone(),
    };
    for b in inventory::iter::<Backend> {
        if b.kind == kind || b.schemes.contains(&kind.as_str()) {
            return (b.open)(settings).map_err(|e| e.with_replica(settings.name.as_str()));
        }
    }
    // A type a v0.3.13 configuration may name is missing from this build, not misspelled; the
    // list is the config format's, so a new backend needs no edit here.
    let msg = if LITESTREAM_TYPES.contains(&kind.as_str()) {
        format!(
            "replica type {kind:?} is not supported by this build of walship (supported: {})",
            kinds().join(", ")
        )
    } else {
        format!(
            "unknown replica type in config: {kind:?} (supported: {})",
            kinds().join(", ")
        )
    };
    Err(Error::config(msg).with_replica(settings.name.as_str()))
}

/// Replica types of Litestream v0.3.13's configuration (docs/format.md).
const LITESTREAM_TYPES: &[&str] = &["abs", "file", "gcs", "s3", "sftp"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_passwords_and_secret_options() {
        assert_eq!(
            redact_url("sftp://bob:hunter2@host:22/p"),
            "sftp://bob:***@host:22/p"
        );
        assert_eq!(redact_url("s3://bucket/path"), "s3://bucket/path");
        let mut s = ReplicaSettings {
            name: "s3".into(),
            ..Default::default()
        };
        s.options
            .insert("secret-access-key".into(), "SUPERSECRET".into());
        s.options.insert("bucket".into(), "b".into());
        s.url = Some("sftp://u:pw1234@h/x".into());
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("SUPERSECRET") && !dbg.contains("pw1234"),
            "{dbg}"
        );
        assert!(dbg.contains("bucket"));
    }

    /// Regression: the registry's rule and the config loader's disagreed, so a
    /// `sas-token` or a `session-token` was hidden by one and printed by the other.
    #[test]
    fn one_secret_rule() {
        for k in [
            "access-key-id",
            "secret-access-key",
            "password",
            "key-passphrase",
            "account-key",
            "sas-token",
            "session-token",
            "SECRET",
            "sas-key",
            "client-credentials",
            "private-key",
            "identities",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "bucket", "host", "user", "key-path", "host-key", "region", "endpoint", "path",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn bool_options_accept_yaml11() {
        let mut s = ReplicaSettings::default();
        for (v, want) in [("yes", true), ("On", true), ("false", false), ("no", false)] {
            s.options.insert("skip-verify".into(), v.into());
            assert_eq!(s.bool_option("skip-verify").unwrap(), Some(want));
        }
        s.options.insert("skip-verify".into(), "maybe".into());
        assert!(s.bool_option("skip-verify").is_err());
    }

    #[test]
    fn unknown_type_is_a_config_error() {
        let s = ReplicaSettings {
            name: "x".into(),
            kind: "ftp".into(),
            ..Default::default()
        };
        let e = open(&s).unwrap_err();
        assert!(e.to_string().contains("unknown replica type"), "{e}");
        let s = ReplicaSettings {
            name: "g".into(),
            kind: "gcs".into(),
            ..Default::default()
        };
        let e = open(&s).unwrap_err();
        assert!(e.to_string().contains("not supported by this build"), "{e}");
        assert_eq!(e.replica(), Some("g"));
    }

    #[test]
    fn scheme_detection() {
        assert_eq!(url_scheme("s3://b/p"), Some("s3"));
        assert_eq!(url_scheme("/var/backups"), None);
    }
}

//! From a replica section to an [`SftpConfig`]: v0.3.13's keys (`host`, `user`, `password`,
//! `key-path`, `path`, `sftp://user[:pass]@host[:port]/path`) plus walship's host-key settings
//! (`host-key`, `known-hosts-path`, `insecure-ignore-host-key`), `key-passphrase` and
//! `operation-timeout`. Pure (home directory passed in) and unit-tested.

use crate::hostkey::{self, HostKeyPolicy};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use walship_core::registry::ReplicaSettings;
use walship_core::{Error, Result};

/// Per-request timeout when `operation-timeout` is not set: a slow disk on the server must not
/// look like a dead connection.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A resolved SFTP replica configuration. `Debug` never shows the password or passphrase.
#[derive(Clone, PartialEq, Eq)]
pub struct SftpConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub key_path: Option<PathBuf>,
    pub key_passphrase: Option<String>,
    /// Remote directory of the replica: absolute, or relative to the login directory; `""` is
    /// the login directory itself. Cleaned of trailing and doubled `/`.
    pub root: String,
    pub host_key: HostKeyPolicy,
    pub operation_timeout: Duration,
}

impl fmt::Debug for SftpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("key_path", &self.key_path)
            .field(
                "key_passphrase",
                &self.key_passphrase.as_ref().map(|_| "***"),
            )
            .field("root", &self.root)
            .field("host_key", &self.host_key)
            .field("operation_timeout", &self.operation_timeout)
            .finish()
    }
}

impl SftpConfig {
    /// `sftp://user@host:port/root`, for humans: never the password. A root relative to the
    /// login directory is shown under `~/`.
    pub fn target(&self) -> String {
        let root = match self.root.as_str() {
            r if r.starts_with('/') => r.to_string(),
            "" => "/~".to_string(),
            r => format!("/~/{r}"),
        };
        format!("sftp://{}@{}{root}", self.user, self.addr())
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The remote path of a replica-relative key.
    pub fn remote_path(&self, key: &str) -> String {
        join(&self.root, key)
    }

    /// Builds the configuration of a replica section. `home` is the running user's home
    /// directory (for `~` in paths and the default known_hosts file).
    pub fn from_settings(s: &ReplicaSettings, home: Option<&Path>) -> Result<SftpConfig> {
        let mut host = s.option("host").map(str::to_owned);
        let mut user = s.option("user").map(str::to_owned);
        let mut password = s.option("password").map(str::to_owned);
        let mut path = s.path.clone().unwrap_or_default();
        if let Some(url) = s.url.as_deref() {
            if s.path.as_deref().is_some_and(|p| !p.is_empty()) {
                return Err(Error::config("cannot specify url & path for sftp replica"));
            }
            if host.is_some() {
                return Err(Error::config("cannot specify url & host for sftp replica"));
            }
            let u = parse_url(url)?;
            host = Some(u.host);
            path = u.path;
            if user.is_none() {
                user = u.user;
            }
            if password.is_none() {
                password = u.password;
            }
        }
        let host = host.ok_or_else(|| Error::config("sftp replica host required"))?;
        let (host, port) = split_host_port(&host)?;
        let user = user.ok_or_else(|| Error::config("sftp replica user required"))?;
        let key_path = s.option("key-path").map(|p| expand_home(p, home));
        if password.is_none() && key_path.is_none() {
            return Err(Error::config(
                "sftp replica needs a password or a key-path to log in",
            ));
        }
        let key_passphrase = s.option("key-passphrase").map(str::to_owned);
        if key_passphrase.is_some() && key_path.is_none() {
            return Err(Error::config("key-passphrase is set but key-path is not"));
        }
        let insecure = s.bool_option("insecure-ignore-host-key")?.unwrap_or(false);
        let pinned = s.option("host-key");
        let known = s.option("known-hosts-path").map(|p| expand_home(p, home));
        let host_key = match (insecure, pinned, known) {
            (true, None, None) => HostKeyPolicy::Insecure,
            (true, _, _) => {
                return Err(Error::config(
                    "insecure-ignore-host-key: true cannot be combined with host-key or \
                     known-hosts-path",
                ))
            }
            (false, Some(_), Some(_)) => {
                return Err(Error::config(
                    "host-key and known-hosts-path cannot be combined: pin the key or name \
                     the known_hosts file, not both",
                ))
            }
            (false, Some(p), None) => HostKeyPolicy::Pinned(
                hostkey::parse_pins(p).map_err(|m| Error::config(format!("host-key: {m}")))?,
            ),
            (false, None, Some(k)) => HostKeyPolicy::KnownHosts(vec![k]),
            (false, None, None) => HostKeyPolicy::KnownHosts(hostkey::default_known_hosts(home)),
        };
        let operation_timeout = match s.option("operation-timeout") {
            None => DEFAULT_OPERATION_TIMEOUT,
            Some(v) => {
                let d = walship_core::duration::parse_duration(v)
                    .map_err(|m| Error::config(format!("operation-timeout: {m}")))?;
                if d < Duration::from_secs(1) {
                    return Err(Error::config("operation-timeout must be at least 1s"));
                }
                d
            }
        };
        Ok(SftpConfig {
            host,
            port,
            user,
            password,
            key_path,
            key_passphrase,
            root: clean(&path),
            host_key,
            operation_timeout,
        })
    }
}

/// The parts of an `sftp://` URL.
#[derive(Debug, PartialEq, Eq)]
struct UrlParts {
    user: Option<String>,
    password: Option<String>,
    host: String,
    path: String,
}

/// `sftp://user[:pass]@host[:port]/path`; the path keeps its leading `/` (v0.3.13 uses
/// `u.Path` verbatim for sftp). User and password are percent-decoded, as Go's `url.Parse` does.
fn parse_url(url: &str) -> Result<UrlParts> {
    let bad = |why: &str| {
        Error::config(format!(
            "invalid sftp replica url {}: {why}",
            walship_core::registry::redact_url(url)
        ))
    };
    let rest = url
        .split_once("://")
        .filter(|(s, _)| s.eq_ignore_ascii_case("sftp"))
        .map(|(_, r)| r)
        .ok_or_else(|| bad("expected sftp://user@host[:port]/path"))?;
    let (auth, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, host) = match auth.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, auth),
    };
    if host.is_empty() {
        return Err(bad("host required"));
    }
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (Some(decode(u).map_err(bad)?), Some(decode(p).map_err(bad)?)),
            None => (Some(decode(u).map_err(bad)?), None),
        },
    };
    Ok(UrlParts {
        user: user.filter(|u| !u.is_empty()),
        password: password.filter(|p| !p.is_empty()),
        host: host.to_string(),
        path: decode(path).map_err(bad)?,
    })
}

/// Percent-decoding of a URL component.
fn decode(s: &str) -> std::result::Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or("bad percent escape")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "bad percent escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad percent escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 after percent-decoding")
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; the port defaults to 22 as in v0.3.13.
pub fn split_host_port(s: &str) -> Result<(String, u16)> {
    let bad = || {
        Error::config(format!(
            "invalid sftp host {s:?}: expected host or host:port"
        ))
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(bad);
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(bad)?;
        return match tail {
            "" => Ok((h.to_string(), 22)),
            t => Ok((h.to_string(), port(t.strip_prefix(':').ok_or_else(bad)?)?)),
        };
    }
    match s.split_once(':') {
        None if !s.is_empty() => Ok((s.to_string(), 22)),
        Some((h, p)) if !h.is_empty() && !p.contains(':') => Ok((h.to_string(), port(p)?)),
        _ => Err(bad()),
    }
}

fn expand_home(p: &str, home: Option<&Path>) -> PathBuf {
    match (p.strip_prefix("~/").or((p == "~").then_some("")), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(p),
    }
}

/// Go's `path.Clean`-like tidy-up of the root: no trailing or doubled `/`, `.` segments dropped.
fn clean(p: &str) -> String {
    let abs = p.starts_with('/');
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let body = parts.join("/");
    match (abs, body.is_empty()) {
        (true, true) => "/".into(),
        (true, false) => format!("/{body}"),
        (false, _) => body,
    }
}

/// `root/key` with exactly one `/` between them.
pub fn join(root: &str, key: &str) -> String {
    let key = key.trim_start_matches('/');
    match root {
        "" => key.to_string(),
        "/" => format!("/{key}"),
        r if key.is_empty() => r.to_string(),
        r => format!("{r}/{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registration's declared defaults are the ones this backend applies.
    #[test]
    fn declared_defaults_are_applied() {
        let spec = crate::OPTIONS
            .iter()
            .find(|o| o.name == "operation-timeout")
            .unwrap();
        assert_eq!(
            walship_core::duration::parse_duration(spec.default.unwrap()).unwrap(),
            DEFAULT_OPERATION_TIMEOUT
        );
        for o in crate::OPTIONS {
            if o.ty == walship_core::registry::OptionType::Bool {
                assert_eq!(o.default, Some("false"), "{}", o.name);
            }
        }
    }

    fn settings(opts: &[(&str, &str)], url: Option<&str>, path: Option<&str>) -> ReplicaSettings {
        let mut s = ReplicaSettings {
            name: "sftp".into(),
            kind: "sftp".into(),
            url: url.map(Into::into),
            path: path.map(Into::into),
            ..Default::default()
        };
        for (k, v) in opts {
            s.options.insert(k.to_string(), v.to_string());
        }
        s
    }

    #[test]
    fn fields_with_default_port_and_known_hosts_order() {
        let s = settings(
            &[
                ("host", "backup.example.com"),
                ("user", "bob"),
                ("key-path", "~/.ssh/id"),
            ],
            None,
            Some("backups/app//"),
        );
        let c = SftpConfig::from_settings(&s, Some(Path::new("/home/bob"))).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("backup.example.com", 22));
        assert_eq!(c.key_path.as_deref(), Some(Path::new("/home/bob/.ssh/id")));
        assert_eq!(c.root, "backups/app");
        assert_eq!(c.remote_path("generations/x"), "backups/app/generations/x");
        assert_eq!(
            c.host_key,
            HostKeyPolicy::KnownHosts(vec![
                "/home/bob/.ssh/known_hosts".into(),
                "/etc/walship/known_hosts".into(),
                "/etc/ssh/ssh_known_hosts".into(),
            ])
        );
        let s = settings(
            &[("host", "[::1]:2222"), ("user", "u"), ("password", "pw")],
            None,
            Some("/srv/r"),
        );
        let c = SftpConfig::from_settings(&s, None).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 2222));
        assert_eq!(c.addr(), "[::1]:2222");
        assert_eq!(c.remote_path("k"), "/srv/r/k");
        assert_eq!(c.target(), "sftp://u@[::1]:2222/srv/r");
    }

    #[test]
    fn url_form_keeps_leading_slash_and_hides_password() {
        let s = settings(
            &[],
            Some("sftp://alice:p%40ss@h.example:2200/var/backups/db"),
            None,
        );
        let c = SftpConfig::from_settings(&s, None).unwrap();
        assert_eq!(c.user, "alice");
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert_eq!((c.host.as_str(), c.port), ("h.example", 2200));
        assert_eq!(c.root, "/var/backups/db");
        assert!(!c.target().contains("p@ss") && !format!("{c:?}").contains("p@ss"));
        assert_eq!(c.target(), "sftp://alice@h.example:2200/var/backups/db");
        // An explicit user/password field wins over the URL's.
        let s = settings(&[("password", "other")], Some("sftp://alice:x@h/p"), None);
        let c = SftpConfig::from_settings(&s, None).unwrap();
        assert_eq!(c.password.as_deref(), Some("other"));
    }

    /// Options, url, path, expected message fragment.
    type ErrorCase<'a> = (
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
    );

    #[test]
    fn config_errors() {
        let cases: &[ErrorCase] = &[
            (&[("user", "u"), ("password", "p")], None, None, "host required"),
            (&[("host", "h"), ("password", "p")], None, None, "user required"),
            (&[("host", "h"), ("user", "u")], None, None, "password or a key-path"),
            (&[("host", "h:0"), ("user", "u"), ("password", "p")], None, None, "invalid sftp host"),
            (&[("host", "h:x"), ("user", "u"), ("password", "p")], None, None, "invalid sftp host"),
            (&[("host", "h")], Some("sftp://u:p@h/x"), None, "url & host"),
            (&[], Some("sftp://u:p@h/x"), Some("p"), "url & path"),
            (&[], Some("sftp://u:p@/x"), None, "host required"),
            (
                &[("host", "h"), ("user", "u"), ("password", "p"), ("host-key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ"), ("known-hosts-path", "/k")],
                None,
                None,
                "cannot be combined",
            ),
            (
                &[("host", "h"), ("user", "u"), ("password", "p"), ("insecure-ignore-host-key", "true"), ("known-hosts-path", "/k")],
                None,
                None,
                "cannot be combined",
            ),
            (
                &[("host", "h"), ("user", "u"), ("password", "p"), ("host-key", "nonsense")],
                None,
                None,
                "host-key:",
            ),
            (
                &[("host", "h"), ("user", "u"), ("password", "p"), ("key-passphrase", "x")],
                None,
                None,
                "key-path is not",
            ),
            (
                &[("host", "h"), ("user", "u"), ("password", "p"), ("operation-timeout", "10ms")],
                None,
                None,
                "at least 1s",
            ),
        ];
        for (opts, url, path, want) in cases {
            let e = SftpConfig::from_settings(&settings(opts, *url, *path), None).unwrap_err();
            assert!(e.to_string().contains(want), "{opts:?} {url:?}: {e}");
            assert!(!e.is_retryable());
        }
    }

    #[test]
    fn insecure_and_pinned_policies() {
        let s = settings(
            &[
                ("host", "h"),
                ("user", "u"),
                ("password", "p"),
                ("insecure-ignore-host-key", "yes"),
            ],
            None,
            None,
        );
        let c = SftpConfig::from_settings(&s, None).unwrap();
        assert_eq!(c.host_key, HostKeyPolicy::Insecure);
        assert_eq!(c.root, "");
        assert_eq!(c.remote_path("generations/a"), "generations/a");
        let s = settings(
            &[
                ("host", "h"),
                ("user", "u"),
                ("password", "p"),
                ("host-key", "SHA256:abc"),
            ],
            None,
            None,
        );
        let c = SftpConfig::from_settings(&s, None).unwrap();
        assert!(matches!(c.host_key, HostKeyPolicy::Pinned(ref v) if v.len() == 1));
        assert!(!format!("{c:?}").contains("\"p\""));
    }

    #[test]
    fn cleaning_and_joining() {
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("//a/./b/"), "/a/b");
        assert_eq!(clean(""), "");
        assert_eq!(join("/", "k"), "/k");
        assert_eq!(join("a", "/k"), "a/k");
        assert_eq!(join("a", ""), "a");
    }
}

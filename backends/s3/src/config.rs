//! From a replica section to an [`S3Config`]: v0.3.13's URL host rules (format §9), the
//! precedence of explicit fields over URL-derived values, and the credential order (format §9).
//! Everything here is pure (the environment is passed in) and unit-tested.

use std::fmt;
use std::time::Duration;
use walship_core::registry::ReplicaSettings;
use walship_core::{Error, Result};

/// Per-attempt timeout when `operation-timeout` is not set: long enough to send one part.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Time allowed to open a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A resolved S3 replica configuration. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix, cleaned like Go's `path.Clean` (`""` for none); objects live at
    /// `<prefix>/<key>`. A leading `/` from a `path:` field is kept, as v0.3.13 keeps it.
    pub prefix: String,
    /// `None` means AWS itself.
    pub endpoint: Option<String>,
    /// `None`: ask the bucket's location (AWS) at first use.
    pub region: Option<String>,
    pub force_path_style: bool,
    pub skip_verify: bool,
    /// `AWS_CA_BUNDLE`: a PEM file of extra trust anchors (MinIO or Ceph behind a private CA),
    /// as v0.3.13's SDK honours it. `SSL_CERT_FILE`/`SSL_CERT_DIR` replace the system store
    /// (rustls-native-certs reads them) for this client as for every other.
    pub ca_bundle: Option<std::path::PathBuf>,
    pub operation_timeout: Duration,
    pub credentials: CredentialSource,
}

/// Where the credentials come from, in v0.3.13's order.
#[derive(Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// Static keys: from the replica section (or the top-level keys the config copied into it),
    /// or from the environment.
    Static {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        /// `replica config` or `environment`, for logs.
        origin: &'static str,
    },
    /// Nothing explicit: the AWS default chain (shared profile files, container and instance roles).
    DefaultChain,
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Static {
                access_key_id,
                session_token,
                origin,
                ..
            } => f
                .debug_struct("Static")
                .field("access_key_id", &redact_id(access_key_id))
                .field("secret_access_key", &"***")
                .field("session_token", &session_token.as_ref().map(|_| "***"))
                .field("origin", origin)
                .finish(),
            CredentialSource::DefaultChain => f.write_str("DefaultChain"),
        }
    }
}

/// Shows only the first four characters of a key id (enough to tell keys apart).
fn redact_id(id: &str) -> String {
    let head: String = id.chars().take(4).collect();
    format!("{head}***")
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("skip_verify", &self.skip_verify)
            .field("ca_bundle", &self.ca_bundle)
            .field("operation_timeout", &self.operation_timeout)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl S3Config {
    /// The full object key for a replica-relative key.
    pub fn object_key(&self, key: &str) -> String {
        match self.prefix.as_str() {
            "" => key.to_string(),
            "/" => format!("/{key}"),
            p => format!("{p}/{key}"),
        }
    }

    /// The replica-relative key of a listed object key (`None` when outside the prefix).
    pub fn relative_key<'a>(&self, object_key: &'a str) -> Option<&'a str> {
        match self.prefix.as_str() {
            "" => Some(object_key),
            "/" => object_key.strip_prefix('/'),
            p => object_key.strip_prefix(p)?.strip_prefix('/'),
        }
    }

    /// `s3://bucket/prefix` plus the endpoint: for humans, never a secret.
    pub fn target(&self) -> String {
        let mut t = format!("s3://{}", self.bucket);
        match self.prefix.as_str() {
            "" => {}
            p if p.starts_with('/') => t.push_str(p),
            p => {
                t.push('/');
                t.push_str(p);
            }
        }
        if let Some(e) = &self.endpoint {
            t.push_str(&format!(" (endpoint {e})"));
        }
        t
    }

    /// Builds the configuration of a replica section; `env` looks up environment variables.
    pub fn from_settings(
        s: &ReplicaSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<S3Config> {
        let bucket_opt = s.option("bucket").map(str::to_owned);
        if s.url.is_some() && s.path.as_deref().is_some_and(|p| !p.is_empty()) {
            return Err(Error::config("cannot specify url & path for s3 replica"));
        }
        if s.url.is_some() && bucket_opt.is_some() {
            return Err(Error::config("cannot specify url & bucket for s3 replica"));
        }
        let mut bucket = bucket_opt.unwrap_or_default();
        let mut path = s.path.clone().unwrap_or_default();
        let mut region = s.option("region").unwrap_or("").to_string();
        let mut endpoint = s.option("endpoint").unwrap_or("").to_string();
        let mut force_path_style = s
            .bool_option("force-path-style")?
            .unwrap_or(!endpoint.is_empty());
        if let Some(url) = s.url.as_deref() {
            let (host, upath) = split_url(url)?;
            let h = parse_host(host);
            if path.is_empty() {
                path = upath.to_string();
            }
            if bucket.is_empty() {
                bucket = h.bucket;
            }
            if region.is_empty() {
                region = h.region;
            }
            if endpoint.is_empty() {
                endpoint = h.endpoint;
            }
            if !force_path_style {
                force_path_style = h.force_path_style;
            }
        }
        if bucket.is_empty() {
            return Err(Error::config("bucket required for s3 replica"));
        }
        let endpoint = (!endpoint.is_empty()).then(|| normalize_endpoint(&endpoint));
        let skip_verify = s.bool_option("skip-verify")?.unwrap_or(false);
        let operation_timeout = match s.option("operation-timeout") {
            None => DEFAULT_OPERATION_TIMEOUT,
            Some(v) => {
                let d = walship_core::duration::parse_duration(v)
                    .map_err(|m| Error::config(format!("operation-timeout: {m}")))?;
                if d.is_zero() {
                    return Err(Error::config("operation-timeout must be greater than 0"));
                }
                d
            }
        };
        let credentials = resolve_credentials(
            s.option("access-key-id"),
            s.option("secret-access-key"),
            env,
        )?;
        Ok(S3Config {
            bucket,
            prefix: clean_prefix(&path),
            endpoint,
            region: (!region.is_empty()).then_some(region),
            force_path_style,
            skip_verify,
            ca_bundle: env("AWS_CA_BUNDLE")
                .filter(|p| !p.trim().is_empty())
                .map(std::path::PathBuf::from),
            operation_timeout,
            credentials,
        })
    }
}

/// `s3://host/path` → (host, path without its leading `/`), as v0.3.13's `ParseReplicaURL`.
fn split_url(url: &str) -> Result<(&str, &str)> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        Error::config(format!(
            "invalid s3 replica url {url:?}: expected s3://bucket/path"
        ))
    })?;
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        // Never echoed: the part before '@' is usually KEY:SECRET, and a bucket name built from
        // it went into every log line and the dry run.
        return Err(Error::config(
            "invalid s3 replica url: it carries credentials before '@', which walship does not \
             read from URLs (and does not print); set access-key-id and secret-access-key, or \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
        ));
    }
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_start_matches('/')),
        None => (rest, ""),
    })
}

/// What a URL's host says about the provider (v0.3.13 `s3.ParseHost`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostInfo {
    pub bucket: String,
    pub region: String,
    pub endpoint: String,
    pub force_path_style: bool,
}

/// v0.3.13's provider detection from a URL host (port preserved; https except for localhost).
pub fn parse_host(s: &str) -> HostInfo {
    let (host, port) = split_host_port(s);
    // `[bucket.]<suffix>`; the bucket may itself contain dots.
    let bucket_before = |rest: &str| -> Option<String> {
        if rest.is_empty() {
            Some(String::new())
        } else {
            rest.strip_suffix('.').map(str::to_owned)
        }
    };
    // `[bucket.]<region>.<suffix>` (or `[bucket.]<lead><region>.<suffix>`).
    let bucket_region = |stem: &str| -> Option<(String, String)> {
        let (b, r) = match stem.rfind('.') {
            Some(i) => (stem[..i].to_string(), &stem[i + 1..]),
            None => (String::new(), stem),
        };
        (!r.is_empty()).then(|| (b, r.to_string()))
    };
    let mut scheme = "https";
    let (bucket, region, endpoint) = if let Some(rest) = host.strip_suffix("localhost") {
        match bucket_before(rest) {
            Some(b) => {
                scheme = "http";
                (b, "us-east-1".to_string(), "localhost".to_string())
            }
            None => return aws(host),
        }
    } else if let Some(stem) = host.strip_suffix(".backblazeb2.com") {
        match stem_with_lead(stem, "s3.").and_then(|(b, r)| Some((bucket_before(&b)?, r))) {
            Some((b, r)) => (b, r.clone(), format!("s3.{r}.backblazeb2.com")),
            None => return aws(host),
        }
    } else if let Some(rest) = host.strip_suffix("s3.filebase.com") {
        match bucket_before(rest) {
            Some(b) => (b, String::new(), "s3.filebase.com".to_string()),
            None => return aws(host),
        }
    } else if let Some(stem) = host.strip_suffix(".digitaloceanspaces.com") {
        match bucket_region(stem) {
            Some((b, r)) => (b, r.clone(), format!("{r}.digitaloceanspaces.com")),
            None => return aws(host),
        }
    } else if let Some(stem) = host.strip_suffix(".scw.cloud") {
        match stem_with_lead(stem, "s3.").and_then(|(b, r)| Some((bucket_before(&b)?, r))) {
            Some((b, r)) => (b, r.clone(), format!("s3.{r}.scw.cloud")),
            None => return aws(host),
        }
    } else if let Some(stem) = host.strip_suffix(".linodeobjects.com") {
        match bucket_region(stem) {
            Some((b, r)) => (b, r.clone(), format!("{r}.linodeobjects.com")),
            None => return aws(host),
        }
    } else {
        return aws(host);
    };
    let endpoint = match port {
        Some(p) => format!("{scheme}://{endpoint}:{p}"),
        None => format!("{scheme}://{endpoint}"),
    };
    HostInfo {
        bucket,
        region,
        endpoint,
        force_path_style: true,
    }
}

/// `<bucket-part>s3.<region>` → (`<bucket-part>`, region): the region is the last label, and
/// the label before it must be `s3`.
fn stem_with_lead(stem: &str, lead: &str) -> Option<(String, String)> {
    let i = stem.rfind('.')?;
    let (before, region) = (&stem[..i + 1], &stem[i + 1..]);
    let b = before.strip_suffix(lead)?;
    (!region.is_empty()).then(|| (b.to_string(), region.to_string()))
}

fn aws(host: &str) -> HostInfo {
    HostInfo {
        bucket: host.to_string(),
        ..Default::default()
    }
}

/// Go's `net.SplitHostPort`, leniently: a host without a port is returned whole.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            return (h, tail.strip_prefix(':'));
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && !p.is_empty() => (h, Some(p)),
        _ => (s, None),
    }
}

/// An endpoint without a scheme means https (so `nyc3.digitaloceanspaces.com` works).
pub fn normalize_endpoint(e: &str) -> String {
    let e = e.trim();
    if e.contains("://") {
        e.trim_end_matches('/').to_string()
    } else {
        format!("https://{}", e.trim_end_matches('/'))
    }
}

/// Go's `path.Clean`, with `"."` (empty) mapped to `""`: v0.3.13 joins keys with `path.Join`.
pub fn clean_prefix(p: &str) -> String {
    if p.is_empty() {
        return String::new();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => String::new(),
        (false, false) => joined,
    }
}

/// v0.3.13's order: the replica's keys (top-level keys were copied into them by the config
/// loader), then `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, each filled from its
/// `LITESTREAM_*` twin only when unset; only when none of these exists, the AWS default chain.
pub fn resolve_credentials(
    id: Option<&str>,
    secret: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CredentialSource> {
    let set = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_owned);
    match (set(id), set(secret)) {
        (Some(id), Some(secret)) => {
            return Ok(CredentialSource::Static {
                access_key_id: id,
                secret_access_key: secret,
                session_token: None,
                origin: "replica config",
            })
        }
        (Some(_), None) => {
            return Err(Error::config(
                "access-key-id is set but secret-access-key is not",
            ))
        }
        (None, Some(_)) => {
            return Err(Error::config(
                "secret-access-key is set but access-key-id is not",
            ))
        }
        (None, None) => {}
    }
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let aws_id = get("AWS_ACCESS_KEY_ID");
    let aws_secret = get("AWS_SECRET_ACCESS_KEY");
    let from_aws = aws_id.is_some() && aws_secret.is_some();
    let id = aws_id.or_else(|| get("LITESTREAM_ACCESS_KEY_ID"));
    let secret = aws_secret.or_else(|| get("LITESTREAM_SECRET_ACCESS_KEY"));
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(CredentialSource::Static {
            access_key_id: id,
            secret_access_key: secret,
            session_token: if from_aws {
                get("AWS_SESSION_TOKEN")
            } else {
                None
            },
            origin: "environment",
        }),
        _ => Ok(CredentialSource::DefaultChain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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

    fn host(bucket: &str, region: &str, endpoint: &str, fps: bool) -> HostInfo {
        HostInfo {
            bucket: bucket.into(),
            region: region.into(),
            endpoint: endpoint.into(),
            force_path_style: fps,
        }
    }

    #[test]
    fn host_rules_of_spec_section_7() {
        let cases = [
            (
                "bkt.localhost:9000",
                host("bkt", "us-east-1", "http://localhost:9000", true),
            ),
            (
                "localhost:9000",
                host("", "us-east-1", "http://localhost:9000", true),
            ),
            (
                "bkt.localhost",
                host("bkt", "us-east-1", "http://localhost", true),
            ),
            (
                "bkt.s3.us-west-004.backblazeb2.com",
                host(
                    "bkt",
                    "us-west-004",
                    "https://s3.us-west-004.backblazeb2.com",
                    true,
                ),
            ),
            (
                "bkt.s3.filebase.com",
                host("bkt", "", "https://s3.filebase.com", true),
            ),
            (
                "bkt.nyc3.digitaloceanspaces.com",
                host("bkt", "nyc3", "https://nyc3.digitaloceanspaces.com", true),
            ),
            (
                "my.bkt.fra1.digitaloceanspaces.com:443",
                host(
                    "my.bkt",
                    "fra1",
                    "https://fra1.digitaloceanspaces.com:443",
                    true,
                ),
            ),
            (
                "nyc3.digitaloceanspaces.com",
                host("", "nyc3", "https://nyc3.digitaloceanspaces.com", true),
            ),
            (
                "bkt.s3.fr-par.scw.cloud",
                host("bkt", "fr-par", "https://s3.fr-par.scw.cloud", true),
            ),
            (
                "bkt.us-east-1.linodeobjects.com",
                host(
                    "bkt",
                    "us-east-1",
                    "https://us-east-1.linodeobjects.com",
                    true,
                ),
            ),
            ("my.bucket.com", host("my.bucket.com", "", "", false)),
            ("mybucket", host("mybucket", "", "", false)),
            ("notlocalhost", host("notlocalhost", "", "", false)),
        ];
        for (h, want) in cases {
            assert_eq!(parse_host(h), want, "{h}");
        }
    }

    #[test]
    fn prefix_cleaning_and_keys() {
        assert_eq!(clean_prefix(""), "");
        assert_eq!(clean_prefix("."), "");
        assert_eq!(clean_prefix("db/"), "db");
        assert_eq!(clean_prefix("a//b/./c/"), "a/b/c");
        assert_eq!(clean_prefix("/db"), "/db");
        assert_eq!(clean_prefix("/"), "/");
        let mut c = cfg_with(&[("bucket", "b")], None, Some("backups/app.db/"));
        assert_eq!(
            c.object_key("generations/x"),
            "backups/app.db/generations/x"
        );
        assert_eq!(
            c.relative_key("backups/app.db/generations/x"),
            Some("generations/x")
        );
        assert_eq!(c.relative_key("backups/app.dbx/generations/x"), None);
        c.prefix = String::new();
        assert_eq!(c.object_key("generations/x"), "generations/x");
        c.prefix = "/".into();
        assert_eq!(c.object_key("generations/x"), "/generations/x");
        assert_eq!(c.relative_key("/generations/x"), Some("generations/x"));
    }

    fn settings(opts: &[(&str, &str)], url: Option<&str>, path: Option<&str>) -> ReplicaSettings {
        ReplicaSettings {
            name: "s3".into(),
            kind: "s3".into(),
            url: url.map(Into::into),
            path: path.map(Into::into),
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            db_path: None,
        }
    }

    fn cfg_with(opts: &[(&str, &str)], url: Option<&str>, path: Option<&str>) -> S3Config {
        S3Config::from_settings(&settings(opts, url, path), &|_| None).unwrap()
    }

    #[test]
    fn fields_and_url_precedence() {
        // Explicit endpoint without a scheme: https, and path style by default.
        let c = cfg_with(
            &[
                ("bucket", "b"),
                ("endpoint", "nyc3.digitaloceanspaces.com"),
                ("region", "nyc3"),
            ],
            None,
            Some("/verbatim"),
        );
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://nyc3.digitaloceanspaces.com")
        );
        assert!(c.force_path_style);
        assert_eq!(c.prefix, "/verbatim", "a path field is used verbatim");
        assert_eq!(c.region.as_deref(), Some("nyc3"));
        assert_eq!(c.operation_timeout, DEFAULT_OPERATION_TIMEOUT);
        // AWS: no endpoint, virtual-host style, region looked up later.
        let c = cfg_with(&[("bucket", "b")], None, Some("p"));
        assert_eq!(
            (
                c.endpoint.as_deref(),
                c.force_path_style,
                c.region.as_deref()
            ),
            (None, false, None)
        );
        // Explicit false wins over the endpoint default...
        let c = cfg_with(
            &[
                ("bucket", "b"),
                ("endpoint", "http://127.0.0.1:8333"),
                ("force-path-style", "false"),
            ],
            None,
            None,
        );
        assert!(!c.force_path_style);
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        // ...but a URL-derived true applies when still false (v0.3.13).
        let c = cfg_with(
            &[("force-path-style", "false")],
            Some("s3://bkt.localhost:9000/x/y"),
            None,
        );
        assert!(c.force_path_style);
        assert_eq!(c.bucket, "bkt");
        assert_eq!(c.prefix, "x/y", "URL paths lose the leading slash");
        assert_eq!(c.endpoint.as_deref(), Some("http://localhost:9000"));
        assert_eq!(c.region.as_deref(), Some("us-east-1"));
        // Explicit fields override URL-derived values.
        let c = cfg_with(
            &[("region", "eu-1"), ("endpoint", "http://127.0.0.1:1")],
            Some("s3://bkt.nyc3.digitaloceanspaces.com/db"),
            None,
        );
        assert_eq!(
            (c.region.as_deref(), c.endpoint.as_deref()),
            (Some("eu-1"), Some("http://127.0.0.1:1"))
        );
        let c = cfg_with(&[], Some("s3://my.bucket.com"), None);
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("my.bucket.com", "")
        );
        let c = cfg_with(&[("bucket", "b"), ("operation-timeout", "2s")], None, None);
        assert_eq!(c.operation_timeout, Duration::from_secs(2));
    }

    #[test]
    fn config_errors() {
        let err = |opts: &[(&str, &str)], url: Option<&str>, path: Option<&str>| {
            S3Config::from_settings(&settings(opts, url, path), &|_| None)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[], Some("s3://localhost:9000/p"), None).contains("bucket required"));
        assert!(err(&[], None, Some("p")).contains("bucket required"));
        assert!(err(&[("bucket", "b")], Some("s3://b/p"), None).contains("url & bucket"));
        assert!(err(&[], Some("s3://b/p"), Some("q")).contains("url & path"));
        assert!(err(
            &[("bucket", "b"), ("operation-timeout", "soon")],
            None,
            None
        )
        .contains("operation-timeout"));
        assert!(
            err(&[("bucket", "b"), ("skip-verify", "maybe")], None, None).contains("skip-verify")
        );
        let c = cfg_with(
            &[
                ("bucket", "b"),
                ("skip-verify", "true"),
                ("endpoint", "minio.lan"),
            ],
            None,
            None,
        );
        assert!(c.skip_verify);
        assert_eq!(c.endpoint.as_deref(), Some("https://minio.lan"));
        let e = err(&[("bucket", "b"), ("access-key-id", "AKID")], None, None);
        assert!(e.contains("secret-access-key is not"), "{e}");
        // Regression: user info became part of the bucket name, secret and all.
        for url in [
            "s3://KEYID:SeCrEt@bucket.localhost:29999/x",
            "s3://SeCrEt@bucket/x",
            "s3://KEYID:SeCrEt@bucket",
        ] {
            let e = err(&[], Some(url), None);
            assert!(e.contains("credentials"), "{e}");
            assert!(!e.contains("SeCrEt") && !e.contains("KEYID"), "{e}");
        }
        let c = cfg_with(&[], Some("s3://bucket.localhost:29999/x"), None);
        assert_eq!(c.bucket, "bucket");
        assert_eq!(c.endpoint.as_deref(), Some("http://localhost:29999"));
        assert_eq!(c.prefix, "x");
    }

    #[test]
    fn credential_order() {
        let env = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |k: &str| m.get(k).cloned()
        };
        let id_of = |c: CredentialSource| match c {
            CredentialSource::Static {
                access_key_id,
                secret_access_key,
                session_token,
                origin,
            } => {
                format!(
                    "{access_key_id}/{secret_access_key}/{}/{origin}",
                    session_token.unwrap_or_default()
                )
            }
            CredentialSource::DefaultChain => "chain".into(),
        };
        let all = env(&[
            ("AWS_ACCESS_KEY_ID", "AWSID"),
            ("AWS_SECRET_ACCESS_KEY", "AWSSECRET"),
            ("AWS_SESSION_TOKEN", "TOK"),
            ("LITESTREAM_ACCESS_KEY_ID", "LSID"),
            ("LITESTREAM_SECRET_ACCESS_KEY", "LSSECRET"),
        ]);
        // 1. The replica's keys win.
        assert_eq!(
            id_of(resolve_credentials(Some("R"), Some("RS"), &all).unwrap()),
            "R/RS//replica config"
        );
        // 2. AWS_* over LITESTREAM_*.
        assert_eq!(
            id_of(resolve_credentials(None, None, &all).unwrap()),
            "AWSID/AWSSECRET/TOK/environment"
        );
        // 3. LITESTREAM_* fill each AWS_* only when it is unset (or empty).
        let e = env(&[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", "AWSSECRET"),
            ("LITESTREAM_ACCESS_KEY_ID", "LSID"),
            ("LITESTREAM_SECRET_ACCESS_KEY", "LSSECRET"),
        ]);
        assert_eq!(
            id_of(resolve_credentials(None, None, &e).unwrap()),
            "LSID/AWSSECRET//environment"
        );
        let e = env(&[
            ("LITESTREAM_ACCESS_KEY_ID", "LSID"),
            ("LITESTREAM_SECRET_ACCESS_KEY", "LSSECRET"),
        ]);
        assert_eq!(
            id_of(resolve_credentials(None, None, &e).unwrap()),
            "LSID/LSSECRET//environment"
        );
        // 4. Nothing: the default chain.
        assert_eq!(
            id_of(resolve_credentials(None, None, &env(&[])).unwrap()),
            "chain"
        );
        assert_eq!(
            id_of(resolve_credentials(None, None, &env(&[("AWS_ACCESS_KEY_ID", "X")])).unwrap()),
            "chain"
        );
    }

    #[test]
    fn secrets_never_in_debug() {
        let s = settings(
            &[
                ("bucket", "b"),
                ("access-key-id", "AKIAEXAMPLEKEY"),
                ("secret-access-key", "TOPSECRETVALUE"),
            ],
            None,
            Some("p"),
        );
        let c = S3Config::from_settings(&s, &|_| Some("ENVSECRET".into())).unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("TOPSECRETVALUE") && !dbg.contains("AKIAEXAMPLEKEY"),
            "{dbg}"
        );
        assert!(dbg.contains("AKIA***"), "{dbg}");
        let c = S3Config::from_settings(&settings(&[("bucket", "b")], None, None), &|k| {
            Some(format!("ENV-{k}-VALUE"))
        })
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("ENV-AWS_SECRET_ACCESS_KEY-VALUE")
                && !dbg.contains("ENV-AWS_SESSION_TOKEN"),
            "{dbg}"
        );
        assert!(!c.target().contains("SECRET"));
    }
}

//! The GCS and Azure Blob Storage emulators scripts/test.sh starts: fake-gcs-server
//! (`STORAGE_EMULATOR_HOST`, `TEST_GCS_BUCKET`) and Azurite (`TEST_ABS_*`). Each test works
//! under a key prefix of its own in the one bucket or container the script made.

use std::sync::atomic::{AtomicU32, Ordering};
use walship_core::registry::{self, ReplicaSettings};
use walship_core::replica::DynReplica;
use walship_core::retry::{RetryLayer, RetryPolicy};

/// A unique key prefix per call: `t-<pid>-<nanos>-<n>-<tag>`.
pub fn new_prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    let tag: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(24)
        .collect();
    format!(
        "t-{}-{nanos}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// Under CI a missing emulator is a failure; elsewhere the test says SKIPPED.
fn missing(what: &str, vars: &str) {
    if crate::ci() {
        panic!("no {what}: set {vars} (scripts/test.sh starts it and sets them)");
    }
    eprintln!("SKIPPED: no {what} ({vars} unset; scripts/test.sh sets them)");
}

fn through_registry(s: &ReplicaSettings) -> DynReplica {
    let inner = registry::open(s).unwrap_or_else(|e| panic!("open {} replica: {e}", s.kind));
    std::sync::Arc::new(RetryLayer::new(inner, RetryPolicy::default()))
}

/// fake-gcs-server, reached the way every Google client reaches an emulator.
#[derive(Debug, Clone)]
pub struct GcsTarget {
    /// `STORAGE_EMULATOR_HOST` (walship and Litestream read it from their environment).
    pub emulator_host: String,
    pub bucket: String,
}

impl GcsTarget {
    /// The emulator from the environment, or `None` (after saying SKIPPED) outside CI.
    pub fn from_env() -> Option<GcsTarget> {
        match (var("STORAGE_EMULATOR_HOST"), var("TEST_GCS_BUCKET")) {
            (Some(emulator_host), Some(bucket)) => Some(GcsTarget {
                emulator_host,
                bucket,
            }),
            _ => {
                missing("GCS emulator", "STORAGE_EMULATOR_HOST, TEST_GCS_BUCKET");
                None
            }
        }
    }

    /// The URL of a replica under `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("gcs://{}/{prefix}", self.bucket)
    }

    /// A URL section; a section with `bucket` and `path` when `prefix` starts with `/` (a URL's
    /// path never keeps one).
    pub fn settings(&self, prefix: &str) -> ReplicaSettings {
        if prefix.starts_with('/') {
            return ReplicaSettings {
                name: "gcs".into(),
                kind: "gcs".into(),
                path: Some(prefix.to_owned()),
                options: [("bucket".to_owned(), self.bucket.clone())].into(),
                ..Default::default()
            };
        }
        ReplicaSettings {
            name: "gcs".into(),
            kind: "gcs".into(),
            url: Some(self.url(prefix)),
            ..Default::default()
        }
    }

    /// A replica through the registry, with the retry layer the binary uses.
    pub fn replica(&self, prefix: &str) -> DynReplica {
        through_registry(&self.settings(prefix))
    }

    /// The YAML lines of a replica section (indented for `replicas:`).
    pub fn yaml(&self, prefix: &str) -> String {
        if prefix.starts_with('/') {
            return format!(
                "      - type: gcs\n        bucket: {}\n        path: {prefix}\n",
                self.bucket
            );
        }
        format!("      - url: {}\n", self.url(prefix))
    }
}

/// Azurite's blob service, with its well-known development account.
#[derive(Debug, Clone)]
pub struct AbsTarget {
    /// The account's blob URL, e.g. `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: String,
    pub account: String,
    pub key: String,
    pub container: String,
}

impl AbsTarget {
    /// The emulator from the environment, or `None` (after saying SKIPPED) outside CI.
    pub fn from_env() -> Option<AbsTarget> {
        match (
            var("TEST_ABS_ENDPOINT"),
            var("TEST_ABS_ACCOUNT"),
            var("TEST_ABS_KEY"),
            var("TEST_ABS_CONTAINER"),
        ) {
            (Some(endpoint), Some(account), Some(key), Some(container)) => Some(AbsTarget {
                endpoint,
                account,
                key,
                container,
            }),
            _ => {
                missing(
                    "Azure Blob Storage emulator",
                    "TEST_ABS_ENDPOINT, TEST_ABS_ACCOUNT, TEST_ABS_KEY, TEST_ABS_CONTAINER",
                );
                None
            }
        }
    }

    pub fn settings(&self, prefix: &str) -> ReplicaSettings {
        let mut s = ReplicaSettings {
            name: "abs".into(),
            kind: "abs".into(),
            path: Some(prefix.to_owned()),
            ..Default::default()
        };
        for (k, v) in [
            ("account-name", &self.account),
            ("account-key", &self.key),
            ("bucket", &self.container),
            ("endpoint", &self.endpoint),
        ] {
            s.options.insert(k.into(), v.clone());
        }
        s
    }

    /// A replica through the registry, with the retry layer the binary uses.
    pub fn replica(&self, prefix: &str) -> DynReplica {
        through_registry(&self.settings(prefix))
    }

    /// The YAML lines of a replica section, v0.3.13's keys only (indented for `replicas:`).
    pub fn yaml(&self, prefix: &str) -> String {
        format!(
            "      - type: abs\n        account-name: {}\n        account-key: {}\n        bucket: {}\n        path: {prefix}\n        endpoint: {}\n",
            self.account, self.key, self.container, self.endpoint
        )
    }
}

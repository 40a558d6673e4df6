//! The S3 server the tests use: `TEST_S3_ENDPOINT`, `TEST_S3_ACCESS_KEY`, `TEST_S3_SECRET_KEY`,
//! `TEST_S3_REGION` (scripts/test.sh starts SeaweedFS and exports them). Without them a test is
//! skipped, except under `CI=true`, where that is a failure. Each test makes its own bucket.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use std::sync::atomic::{AtomicU32, Ordering};
use walship_core::registry::{self, ReplicaSettings};
use walship_core::replica::DynReplica;
use walship_core::retry::{RetryLayer, RetryPolicy};

#[derive(Clone)]
pub struct S3Target {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Target({}, {})", self.endpoint, self.region)
    }
}

impl S3Target {
    /// The server from the environment, else MinIO through testcontainers when a Docker daemon
    /// answers, else `None` (after saying SKIPPED) outside CI.
    pub fn from_env() -> Option<S3Target> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (
            var("TEST_S3_ENDPOINT"),
            var("TEST_S3_ACCESS_KEY"),
            var("TEST_S3_SECRET_KEY"),
        ) {
            (Some(endpoint), Some(access_key), Some(secret_key)) => Some(S3Target {
                endpoint,
                access_key,
                secret_key,
                region: var("TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            }),
            _ if crate::minio::docker_answers() => crate::minio::target(),
            _ if crate::ci() => panic!(
                "no S3 server: set TEST_S3_ENDPOINT, TEST_S3_ACCESS_KEY, TEST_S3_SECRET_KEY \
                 (scripts/test.sh starts SeaweedFS and sets them)"
            ),
            _ => {
                eprintln!(
                    "SKIPPED: no S3 server (TEST_S3_ENDPOINT unset; scripts/test.sh sets it)"
                );
                None
            }
        }
    }

    /// A plain SDK client for test setup (bucket creation, direct inspection).
    pub fn sdk(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "test",
            ))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Creates a bucket of its own for one test: `t-<pid>-<nanos>-<n>-<tag>`.
    pub async fn new_bucket(&self, tag: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000_000;
        let tag: String = tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(20)
            .collect();
        let name = format!(
            "t-{}-{nanos}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        self.sdk()
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create bucket {name}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
        name
    }

    /// The replica section a user would write for this server.
    pub fn settings(&self, bucket: &str, path: &str) -> ReplicaSettings {
        let mut s = ReplicaSettings {
            name: "s3".into(),
            kind: "s3".into(),
            path: Some(path.into()),
            ..Default::default()
        };
        for (k, v) in [
            ("bucket", bucket),
            ("endpoint", &self.endpoint),
            ("region", &self.region),
            ("force-path-style", "true"),
            ("access-key-id", &self.access_key),
            ("secret-access-key", &self.secret_key),
        ] {
            s.options.insert(k.into(), v.into());
        }
        s
    }

    /// One S3 replica item of a `replicas:` list (6-space indent) on this server, keys inline,
    /// reached through `endpoint` (this server's, or a proxy's in front of it).
    pub fn replica_yaml(&self, endpoint: &str, bucket: &str, path: &str, sync: &str) -> String {
        format!(
            "      - type: s3\n        bucket: {bucket}\n        path: {path}\n        endpoint: {endpoint}\n        region: {region}\n        force-path-style: true\n        access-key-id: {ak}\n        secret-access-key: {sk}\n        sync-interval: {sync}\n",
            region = self.region,
            ak = self.access_key,
            sk = self.secret_key,
        )
    }

    /// Writes a litestream.yml (read by walship and by Litestream v0.3.13 alike) with one
    /// database and one S3 replica on this server, keys inline.
    pub fn write_config(
        &self,
        dir: &std::path::Path,
        db: &std::path::Path,
        bucket: &str,
        path: &str,
        extra_db: &str,
        extra_replica: &str,
    ) -> std::path::PathBuf {
        let p = dir.join("litestream.yml");
        let text = format!(
            "dbs:\n  - path: {db}\n{extra_db}    replicas:\n{}{extra_replica}",
            self.replica_yaml(&self.endpoint, bucket, path, "100ms"),
            db = db.display(),
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Keys under `prefix` in `bucket`, read directly with the SDK.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut pages = self
            .sdk()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| {
                panic!(
                    "list {bucket}/{prefix}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        out
    }

    /// A replica through the registry (so the `s3` registration is exercised), with the retry
    /// layer the binary uses.
    pub fn replica(&self, bucket: &str, path: &str) -> DynReplica {
        let inner = registry::open(&self.settings(bucket, path)).expect("open s3 replica");
        std::sync::Arc::new(RetryLayer::new(inner, RetryPolicy::default()))
    }
}

//! From a replica section to a [`GcsConfig`], and from that to a client. Pure but for
//! [`GcsConfig::replica`] (the environment is passed in), and unit-tested.

use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
use object_store::{ObjectStore, StaticCredentialProvider};
use std::sync::Arc;
use std::time::Duration;
use walship_core::registry::ReplicaSettings;
use walship_core::{Error, Result};
use walship_objstore::config::{operation_timeout, section_prefix, split_url};
use walship_objstore::{
    client_options, retry_config, Client, ObjectStoreReplica, Parts, CONNECT_TIMEOUT,
};

/// A resolved GCS replica configuration (no secret in it: credentials stay in their file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsConfig {
    pub bucket: String,
    /// Key prefix without a trailing `/`; with a leading one when `path:` had it (as v0.3.13).
    pub prefix: String,
    /// `STORAGE_EMULATOR_HOST` as a URL: requests go there, unauthenticated.
    pub emulator: Option<String>,
    /// `GOOGLE_APPLICATION_CREDENTIALS`.
    pub credentials_file: Option<String>,
    pub operation_timeout: Duration,
}

impl GcsConfig {
    /// The configuration of a replica section; `env` looks up environment variables.
    pub fn from_settings(
        s: &ReplicaSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GcsConfig> {
        let bucket_opt = s.option("bucket").map(str::to_owned);
        if s.url.is_some() && s.path.as_deref().is_some_and(|p| !p.is_empty()) {
            return Err(Error::config("cannot specify url & path for gcs replica"));
        }
        if s.url.is_some() && bucket_opt.is_some() {
            return Err(Error::config("cannot specify url & bucket for gcs replica"));
        }
        let (bucket, prefix) = match s.url.as_deref() {
            Some(url) => {
                let (host, path) = split_url(url, "gcs", &["gcs", "gs"])?;
                (host.to_owned(), path)
            }
            None => (
                bucket_opt.unwrap_or_default(),
                section_prefix(s, "gcs", true),
            ),
        };
        if bucket.is_empty() {
            return Err(Error::config("bucket required for gcs replica"));
        }
        let emulator = env("STORAGE_EMULATOR_HOST")
            .map(|h| h.trim().trim_end_matches('/').to_owned())
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.contains("://") {
                    h
                } else {
                    format!("http://{h}")
                }
            });
        Ok(GcsConfig {
            bucket,
            prefix,
            emulator,
            credentials_file: env("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()),
            operation_timeout: operation_timeout(s)?,
        })
    }

    /// `gcs://bucket/prefix`.
    pub fn base(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("gcs://{}", self.bucket),
            p => format!("gcs://{}/{p}", self.bucket),
        }
    }

    fn build(&self) -> Result<Client> {
        let mut opts = client_options(self.operation_timeout);
        let mut b = GoogleCloudStorageBuilder::new()
            .with_bucket_name(&self.bucket)
            .with_retry(retry_config());
        if let Some(url) = &self.emulator {
            opts = opts.with_allow_http(url.starts_with("http://"));
            b = b
                .with_base_url(url)
                .with_skip_signature(true)
                .with_credentials(Arc::new(StaticCredentialProvider::new(GcpCredential {
                    bearer: String::new(),
                })));
        } else if let Some(path) = &self.credentials_file {
            b = b.with_application_credentials(path);
        }
        let store = b.with_client_options(opts).build().map_err(|e| {
            let what = match &self.credentials_file {
                Some(p) if self.emulator.is_none() => {
                    format!("gcs replica: credentials from GOOGLE_APPLICATION_CREDENTIALS={p}")
                }
                _ => "gcs replica".to_owned(),
            };
            Error::config(format!("{what}: {e}"))
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(self.operation_timeout)
            .build()
            .map_err(|e| Error::config(format!("gcs replica: HTTP client: {e}")))?;
        let api = Arc::new(crate::api::JsonApi {
            http,
            base: self
                .emulator
                .clone()
                .unwrap_or_else(|| "https://storage.googleapis.com".to_owned()),
            bucket: self.bucket.clone(),
            credentials: store.credentials().clone(),
        });
        Ok(Client {
            store: Arc::new(store) as Arc<dyn ObjectStore>,
            upload: Some(api.clone()),
            list: Some(api.clone()),
            download: Some(api.clone()),
            delete: Some(api),
        })
    }

    /// The replica; the client is built now once, so a bad credentials file fails at start.
    pub fn replica(&self) -> Result<ObjectStoreReplica> {
        self.build()?;
        let target = match &self.emulator {
            Some(u) => format!("{} (emulator {u})", self.base()),
            None => self.base(),
        };
        let me = self.clone();
        Ok(ObjectStoreReplica::new(Parts {
            kind: "gcs",
            base: self.base(),
            target,
            root: self.prefix.clone(),
            client_key: format!(
                "gcs\n{}\n{:?}\n{:?}\n{:?}",
                self.bucket, self.emulator, self.credentials_file, self.operation_timeout
            ),
            build: Arc::new(move || me.build()),
            secrets: Vec::new(),
            operation_timeout: self.operation_timeout,
            // The JSON API's `startOffset` (crate::list).
            lists_after_natively: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(url: Option<&str>, path: Option<&str>, opts: &[(&str, &str)]) -> ReplicaSettings {
        ReplicaSettings {
            name: "gcs".into(),
            kind: "gcs".into(),
            url: url.map(Into::into),
            path: path.map(Into::into),
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            db_path: None,
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn urls_fields_and_their_conflicts_as_v0_3() {
        let c = GcsConfig::from_settings(&section(Some("gcs://bk/db/app.db"), None, &[]), &no_env)
            .unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("bk", "db/app.db"));
        let c = GcsConfig::from_settings(&section(Some("gs://bk"), None, &[]), &no_env).unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("bk", ""));
        let c = GcsConfig::from_settings(
            &section(None, Some("backups/app"), &[("bucket", "bk")]),
            &no_env,
        )
        .unwrap();
        assert_eq!(c.base(), "gcs://bk/backups/app");
        // v0.3.13 joined `path:` verbatim: a leading `/` is part of every object name.
        let c = GcsConfig::from_settings(
            &section(None, Some("/backups//app/"), &[("bucket", "bk")]),
            &no_env,
        )
        .unwrap();
        assert_eq!(c.prefix, "/backups/app");
        // A URL's path never keeps it (v0.3.13 trimmed it there too).
        let c =
            GcsConfig::from_settings(&section(Some("gcs://bk//x"), None, &[]), &no_env).unwrap();
        assert_eq!(c.prefix, "x");
        let err = |s: ReplicaSettings| {
            GcsConfig::from_settings(&s, &no_env)
                .unwrap_err()
                .to_string()
        };
        assert!(err(section(Some("gcs://b/p"), Some("x"), &[])).contains("url & path"));
        assert!(err(section(Some("gcs://b/p"), None, &[("bucket", "b")])).contains("url & bucket"));
        assert!(err(section(None, Some("x"), &[])).contains("bucket required"));
        assert!(err(section(
            None,
            None,
            &[("bucket", "b"), ("operation-timeout", "0s")]
        ))
        .contains("operation-timeout"));
    }

    #[test]
    fn the_emulator_host_is_a_url_and_credentials_come_from_adc() {
        let env = |k: &str| match k {
            "STORAGE_EMULATOR_HOST" => Some("127.0.0.1:4443".to_owned()),
            "GOOGLE_APPLICATION_CREDENTIALS" => Some("/etc/sa.json".to_owned()),
            _ => None,
        };
        let c = GcsConfig::from_settings(&section(Some("gcs://b"), None, &[]), &env).unwrap();
        assert_eq!(c.emulator.as_deref(), Some("http://127.0.0.1:4443"));
        assert_eq!(c.credentials_file.as_deref(), Some("/etc/sa.json"));
    }

    #[test]
    fn an_unreadable_credentials_file_is_a_clear_config_error() {
        let env = |k: &str| {
            (k == "GOOGLE_APPLICATION_CREDENTIALS").then(|| "/nonexistent/sa.json".to_owned())
        };
        let c = GcsConfig::from_settings(&section(Some("gcs://b"), None, &[]), &env).unwrap();
        let e = c.replica().unwrap_err();
        assert_eq!(e.kind(), walship_core::ErrorKind::Config);
        assert!(e.to_string().contains("/nonexistent/sa.json"), "{e}");
    }
}

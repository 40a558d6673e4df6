//! From a replica section to an [`AbsConfig`], and from that to a client. Pure but for
//! [`AbsConfig::replica`] (the environment is passed in), and unit-tested.

use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::ObjectStore;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use walship_core::registry::ReplicaSettings;
use walship_core::{Error, Result};
use walship_objstore::config::{operation_timeout, section_prefix, split_url};
use walship_objstore::{client_options, retry_config, Client, ObjectStoreReplica, Parts};

/// How requests are authorized. `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum AbsAuth {
    /// Shared key (`account-key` or `LITESTREAM_AZURE_ACCOUNT_KEY`), as v0.3.13.
    Key(String),
    /// A shared access signature (`sas-token`).
    Sas(String),
    /// The managed identity of the machine (or `AZURE_CLIENT_ID`'s).
    ManagedIdentity { client_id: Option<String> },
}

impl fmt::Debug for AbsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbsAuth::Key(_) => f.write_str("Key(***)"),
            AbsAuth::Sas(_) => f.write_str("Sas(***)"),
            AbsAuth::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
        }
    }
}

/// A resolved Azure Blob Storage replica configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsConfig {
    pub account: String,
    pub container: String,
    /// Key prefix without a leading or trailing `/`.
    pub prefix: String,
    /// The account's blob service URL (`endpoint`), e.g. Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1`; None: `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
    pub auth: AbsAuth,
    pub operation_timeout: Duration,
}

impl AbsConfig {
    /// The configuration of a replica section; `env` looks up environment variables.
    pub fn from_settings(
        s: &ReplicaSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AbsConfig> {
        let nonempty = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        if s.url.is_some() && s.path.as_deref().is_some_and(|p| !p.is_empty()) {
            return Err(Error::config("cannot specify url & path for abs replica"));
        }
        if s.url.is_some() && s.option("bucket").is_some() {
            return Err(Error::config("cannot specify url & bucket for abs replica"));
        }
        let mut account = nonempty(s.option("account-name"));
        let (container, prefix) = match s.url.as_deref() {
            Some(url) => {
                let (authority, path) = split_url(url, "abs", &["abs"])?;
                let (user, host) = match authority.rsplit_once('@') {
                    Some((u, h)) => (Some(u), h),
                    None => (None, authority),
                };
                if user.is_some_and(|u| u.contains(':')) {
                    // Never echoed: after the ':' would be a key.
                    return Err(Error::config(
                        "invalid abs replica url: only an account name may come before '@' \
                         (set account-key, sas-token or LITESTREAM_AZURE_ACCOUNT_KEY for the secret)",
                    ));
                }
                if account.is_none() {
                    account = user.map(str::to_owned).filter(|u| !u.is_empty());
                }
                (host.to_owned(), path)
            }
            None => (
                s.option("bucket").unwrap_or("").to_owned(),
                section_prefix(s, "abs", false),
            ),
        };
        if container.is_empty() {
            return Err(Error::config("bucket required for abs replica"));
        }
        let account = account.ok_or_else(|| {
            Error::config("account-name required for abs replica (or abs://ACCOUNT@container/path)")
        })?;
        let key = nonempty(s.option("account-key"))
            .or_else(|| nonempty(env("LITESTREAM_AZURE_ACCOUNT_KEY").as_deref()));
        let sas = nonempty(s.option("sas-token"));
        let auth = match (key, sas) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "abs replica: set account-key or sas-token, not both",
                ))
            }
            (Some(k), None) => AbsAuth::Key(k),
            (None, Some(t)) => AbsAuth::Sas(t),
            (None, None) => AbsAuth::ManagedIdentity {
                client_id: nonempty(env("AZURE_CLIENT_ID").as_deref()),
            },
        };
        let endpoint = nonempty(s.option("endpoint")).map(|e| {
            let e = e.trim_end_matches('/').to_owned();
            if e.contains("://") {
                e
            } else {
                format!("https://{e}")
            }
        });
        Ok(AbsConfig {
            account,
            container,
            prefix,
            endpoint,
            auth,
            operation_timeout: operation_timeout(s)?,
        })
    }

    /// `abs://account@container/prefix`.
    pub fn base(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("abs://{}@{}", self.account, self.container),
            p => format!("abs://{}@{}/{p}", self.account, self.container),
        }
    }

    fn secrets(&self) -> Vec<String> {
        match &self.auth {
            AbsAuth::Key(k) => vec![k.clone()],
            AbsAuth::Sas(t) => {
                // The signature alone too: it is what a URL in an error would carry.
                let mut v = vec![t.clone()];
                v.extend(
                    t.trim_start_matches('?')
                        .split('&')
                        .filter_map(|kv| kv.strip_prefix("sig="))
                        .map(str::to_owned),
                );
                v
            }
            AbsAuth::ManagedIdentity { .. } => Vec::new(),
        }
    }

    fn build(&self) -> Result<Client> {
        let mut opts = client_options(self.operation_timeout);
        let mut b = MicrosoftAzureBuilder::new()
            .with_account(&self.account)
            .with_container_name(&self.container)
            .with_retry(retry_config());
        if let Some(e) = &self.endpoint {
            opts = opts.with_allow_http(e.starts_with("http://"));
            b = b.with_endpoint(e.clone());
        }
        b = match &self.auth {
            AbsAuth::Key(k) => b.with_access_key(k),
            AbsAuth::Sas(t) => b.with_config(AzureConfigKey::SasKey, t),
            AbsAuth::ManagedIdentity { client_id } => match client_id {
                Some(id) => b.with_client_id(id),
                None => b,
            },
        };
        let secrets = self.secrets();
        let store = b.with_client_options(opts).build().map_err(|e| {
            let mut m = format!("abs replica {}: {e}", self.base());
            for s in &secrets {
                m = m.replace(s.as_str(), "***");
            }
            Error::config(m)
        })?;
        Ok(Client {
            store: Arc::new(store) as Arc<dyn ObjectStore>,
            upload: None,
            list: None,
            download: None,
            delete: None,
        })
    }

    /// The replica; the client is built now once, so a malformed key fails at start.
    pub fn replica(&self) -> Result<ObjectStoreReplica> {
        self.build()?;
        let target = match &self.endpoint {
            Some(e) => format!("{} (endpoint {e})", self.base()),
            None => self.base(),
        };
        let me = self.clone();
        Ok(ObjectStoreReplica::new(Parts {
            kind: "abs",
            base: self.base(),
            target,
            root: self.prefix.clone(),
            client_key: format!(
                "abs\n{}\n{}\n{:?}\n{:?}\n{:?}",
                self.account,
                self.container,
                self.endpoint,
                self.secrets(),
                self.operation_timeout
            ),
            build: Arc::new(move || me.build()),
            secrets: self.secrets(),
            operation_timeout: self.operation_timeout,
            // List Blobs has only opaque continuation markers: no listing from a key.
            lists_after_natively: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(url: Option<&str>, path: Option<&str>, opts: &[(&str, &str)]) -> ReplicaSettings {
        ReplicaSettings {
            name: "abs".into(),
            kind: "abs".into(),
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
        let c =
            AbsConfig::from_settings(&section(Some("abs://acct@box/db/app"), None, &[]), &no_env)
                .unwrap();
        assert_eq!(
            (c.account.as_str(), c.container.as_str(), c.prefix.as_str()),
            ("acct", "box", "db/app")
        );
        assert_eq!(c.base(), "abs://acct@box/db/app");
        // The field wins over the URL's user, as in v0.3.13.
        let c = AbsConfig::from_settings(
            &section(Some("abs://acct@box"), None, &[("account-name", "other")]),
            &no_env,
        )
        .unwrap();
        assert_eq!(c.account, "other");
        let err = |s: ReplicaSettings| {
            AbsConfig::from_settings(&s, &no_env)
                .unwrap_err()
                .to_string()
        };
        assert!(err(section(Some("abs://a@b/p"), Some("x"), &[])).contains("url & path"));
        assert!(
            err(section(Some("abs://a@b/p"), None, &[("bucket", "b")])).contains("url & bucket")
        );
        assert!(err(section(None, None, &[("account-name", "a")])).contains("bucket required"));
        assert!(err(section(None, None, &[("bucket", "b")])).contains("account-name required"));
        let e = err(section(Some("abs://a:S3CR3TKEY@b/p"), None, &[]));
        assert!(!e.contains("S3CR3TKEY"), "{e}");
    }

    #[test]
    fn credentials_in_v0_3_order_plus_sas_and_managed_identity() {
        let env = |k: &str| (k == "LITESTREAM_AZURE_ACCOUNT_KEY").then(|| "ZW52a2V5".to_owned());
        let c = AbsConfig::from_settings(&section(Some("abs://a@b"), None, &[]), &env).unwrap();
        assert_eq!(c.auth, AbsAuth::Key("ZW52a2V5".into()));
        let c = AbsConfig::from_settings(
            &section(Some("abs://a@b"), None, &[("account-key", "c2VjdGlvbg==")]),
            &env,
        )
        .unwrap();
        assert_eq!(c.auth, AbsAuth::Key("c2VjdGlvbg==".into()));
        assert!(
            !format!("{c:?}").contains("c2VjdGlvbg"),
            "Debug hides the key"
        );
        let c = AbsConfig::from_settings(
            &section(
                Some("abs://a@b"),
                None,
                &[("sas-token", "?sv=1&sig=abcdSIG")],
            ),
            &no_env,
        )
        .unwrap();
        assert!(c.secrets().contains(&"abcdSIG".to_string()));
        assert!(!format!("{c:?}").contains("abcdSIG"));
        let c = AbsConfig::from_settings(&section(Some("abs://a@b"), None, &[]), &no_env).unwrap();
        assert_eq!(c.auth, AbsAuth::ManagedIdentity { client_id: None });
        let both = section(
            Some("abs://a@b"),
            None,
            &[("account-key", "a2V5"), ("sas-token", "sig=x")],
        );
        assert!(AbsConfig::from_settings(&both, &no_env).is_err());
        let c = AbsConfig::from_settings(
            &section(
                Some("abs://a@b"),
                None,
                &[("endpoint", "127.0.0.1:10000/devstoreaccount1")],
            ),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://127.0.0.1:10000/devstoreaccount1")
        );
    }
}

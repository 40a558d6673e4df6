//! [`ObjectStoreReplica`]: the replica trait on an `object_store` client, keys under a root.

use crate::errors::map_error;
use crate::shared::{shared, Build, Shared};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStoreExt};
use std::future::Future;
use std::time::{Duration, SystemTime};
use walship_core::replica::{ByteReader, ObjectMeta, ObjectReader, PutSource, Replica};
use walship_core::{Error, ErrorKind, Result};

/// A replica in a bucket (GCS) or container (Azure) under a key prefix.
pub struct ObjectStoreReplica {
    kind: &'static str,
    /// `gcs://bucket/root` or `abs://account@container/root`: names objects in errors.
    base: String,
    /// `base` plus where the service is, for humans.
    target: String,
    /// What every full object name starts with: empty (the bucket's root), or the prefix and
    /// a `/` (`backups/app/`; `/backups/app/` where the backend keeps a leading `/`).
    root: String,
    client_key: String,
    build: Build,
    secrets: Vec<String>,
    operation_timeout: Duration,
    lists_after_natively: bool,
}

impl std::fmt::Debug for ObjectStoreReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreReplica")
            .field("kind", &self.kind)
            .field("target", &self.target)
            .field("operation_timeout", &self.operation_timeout)
            .finish_non_exhaustive()
    }
}

/// What a backend hands over to make a replica.
pub struct Parts {
    /// The `type:` of the replica (`gcs`, `abs`).
    pub kind: &'static str,
    /// How objects are named in errors, e.g. `gcs://bucket/backups/app` (no secret).
    pub base: String,
    /// `base` and the service's address, for humans (no secret).
    pub target: String,
    /// Key prefix; trailing `/` are dropped, and a leading one too unless the backend brings
    /// its own [`crate::Delete`] (an `object_store` path cannot start with `/`; v0.3.13 kept
    /// it in GCS object names, so GCS does).
    pub root: String,
    /// Identifies store and credentials, so replicas that share them share a client; never
    /// printed.
    pub client_key: String,
    /// Builds the client.
    pub build: Build,
    /// Values that must never appear in an error (keys, SAS tokens).
    pub secrets: Vec<String>,
    /// Longest a single request may take (`operation-timeout`).
    pub operation_timeout: Duration,
    /// Whether the backend's listing starts at a key on the service's side (its own
    /// [`crate::List`] with a start), see [`Replica::lists_after_natively`].
    pub lists_after_natively: bool,
}

impl ObjectStoreReplica {
    /// A replica over the client `p.build` makes; the client itself is built at first use, in
    /// the runtime that uses it (see [`shared`]).
    pub fn new(p: Parts) -> Self {
        ObjectStoreReplica {
            kind: p.kind,
            base: p.base,
            target: p.target,
            root: root_of(&p.root),
            client_key: p.client_key,
            build: p.build,
            secrets: p.secrets,
            operation_timeout: p.operation_timeout,
            lists_after_natively: p.lists_after_natively,
        }
    }

    pub(crate) fn client(&self) -> Result<Shared> {
        shared(&self.client_key, &self.build)
    }

    /// The full object name of a replica-relative key.
    pub(crate) fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    pub(crate) fn path(&self, key: &str) -> Result<Path> {
        Path::parse(self.full(key)).map_err(|e| {
            Error::config(format!(
                "object name {:?} is not valid on {}: {e}",
                self.full(key),
                self.kind
            ))
        })
    }

    /// How errors name the object `key`.
    pub(crate) fn what(&self, key: &str) -> String {
        format!("{}/{key}", self.base.trim_end_matches('/'))
    }

    pub(crate) fn error(&self, op: &str, key: &str, e: object_store::Error) -> Error {
        map_error(op, &self.what(key), e, &self.secrets)
    }

    pub(crate) fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// Runs one request under `operation-timeout` (a stall is transient: the retry layer tries
    /// again).
    pub(crate) async fn timed<T>(
        &self,
        op: &str,
        key: &str,
        fut: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.operation_timeout, fut).await {
            Ok(r) => r.map_err(|e| self.error(op, key, e)),
            Err(_) => Err(Error::transient(format!(
                "{op} {}: no answer within operation-timeout ({:?})",
                self.what(key),
                self.operation_timeout
            ))),
        }
    }

    fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.root.as_str())
    }

    /// Every object whose key starts with `prefix` (a string prefix, as on S3, not
    /// `object_store`'s whole path segments), after `after` when given.
    async fn list_from(&self, prefix: &str, after: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let shared = self.client()?;
        let _slot = shared.slot().await;
        let full_prefix = self.full(prefix);
        let after = after.filter(|a| !a.is_empty());
        let listed: Vec<(String, u64, SystemTime)> = match &shared.list {
            Some(l) => {
                let start = after.map(|a| self.full(a));
                l.list(
                    &full_prefix,
                    start.as_deref(),
                    &self.what(prefix),
                    self.operation_timeout,
                )
                .await?
                .into_iter()
                .map(|o| (o.name, o.size, o.modified))
                .collect()
            }
            None => {
                let dir = full_prefix.rfind('/').map_or("", |i| &full_prefix[..i]);
                let dir = (!dir.is_empty()).then(|| Path::from(dir));
                let mut stream = match after {
                    Some(a) => shared.store.list_with_offset(dir.as_ref(), &self.path(a)?),
                    None => shared.store.list(dir.as_ref()),
                };
                let mut out = Vec::new();
                while let Some(item) = stream.next().await {
                    let m = item.map_err(|e| self.error("List", prefix, e))?;
                    out.push((m.location.to_string(), m.size, m.last_modified.into()));
                }
                out
            }
        };
        let mut out = Vec::new();
        for (name, size, modified) in listed {
            if !name.starts_with(&full_prefix) {
                continue;
            }
            let Some(key) = self.relative(&name) else {
                continue;
            };
            if after.is_some_and(|a| key <= a) {
                continue;
            }
            out.push(ObjectMeta {
                key: key.to_owned(),
                size,
                modified,
            });
        }
        Ok(out)
    }
}

/// The names one level below `prefix` from a delimiter listing's full prefixes (each ending in
/// `/`), sorted, once each. Pure, for the tests.
fn names_of(prefix: &str, full: Vec<String>) -> Vec<String> {
    let mut names: Vec<String> = full
        .iter()
        .filter_map(|f| f.strip_prefix(prefix)?.strip_suffix('/'))
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The prefix every full object name starts with, from a section's key prefix: `/` separated,
/// no trailing `/` kept, a leading one kept (the backend drops it first when it cannot name such
/// objects). Pure, for the tests.
fn root_of(prefix: &str) -> String {
    let inner = prefix.trim_matches('/');
    match (prefix.starts_with('/'), inner.is_empty()) {
        (false, true) => String::new(),
        (false, false) => format!("{inner}/"),
        (true, true) => "/".to_owned(),
        (true, false) => format!("/{inner}/"),
    }
}

#[async_trait]
impl Replica for ObjectStoreReplica {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    async fn put(&self, key: &str, source: PutSource) -> Result<u64> {
        crate::upload::put(self, key, source).await
    }

    async fn get(&self, key: &str) -> Result<ByteReader> {
        Ok(self.get_from(key, 0, None).await?.reader)
    }

    /// A ranged GET, pinned to the ETag when resuming (`If-Match`), so a resumed download never
    /// splices two versions of an object.
    async fn get_from(
        &self,
        key: &str,
        offset: u64,
        version: Option<&str>,
    ) -> Result<ObjectReader> {
        let shared = self.client()?;
        if let Some(d) = &shared.download {
            let _slot = shared.slot().await;
            return d
                .get(
                    &self.full(key),
                    offset,
                    version,
                    &self.what(key),
                    self.operation_timeout,
                )
                .await;
        }
        let path = self.path(key)?;
        let opts = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            if_match: version.map(str::to_owned),
            ..Default::default()
        };
        let got = {
            // The slot covers the request, not the body a caller may read for long after.
            let _slot = shared.slot().await;
            self.timed("Get", key, shared.store.get_opts(&path, opts))
                .await
                .map_err(|e| match e.kind() {
                    ErrorKind::NotFound => {
                        Error::not_found(format!("object {} not found", self.what(key)))
                    }
                    _ => e,
                })?
        };
        let remaining = got.range.end.saturating_sub(got.range.start);
        let version = got.meta.e_tag.clone();
        let what = self.what(key);
        let body = got
            .into_stream()
            .map_err(move |e| std::io::Error::other(format!("read {what}: {e}")));
        Ok(ObjectReader {
            reader: Box::new(tokio_util::io::StreamReader::new(body)),
            remaining: Some(remaining),
            version,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.list_from(prefix, None).await
    }

    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<ObjectMeta>> {
        self.list_from(prefix, Some(start_after)).await
    }

    fn lists_after_natively(&self) -> bool {
        self.lists_after_natively
    }

    /// A HEAD through `object_store`, or, for a backend with its own listing (whose reads
    /// `object_store` may not make the way the service answers), a listing of the key.
    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let shared = self.client()?;
        if shared.list.is_some() {
            return Ok(self
                .list_from(key, None)
                .await?
                .into_iter()
                .find(|o| o.key == key));
        }
        let path = self.path(key)?;
        let _slot = shared.slot().await;
        match self.timed("Head", key, shared.store.head(&path)).await {
            Ok(m) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: m.size,
                modified: m.last_modified.into(),
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A delimiter listing (GCS `delimiter=/`, Azure `List Blobs` with a delimiter): one page
    /// per 1,000 names, whatever the history under them.
    async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        let shared = self.client()?;
        let _slot = shared.slot().await;
        let full_prefix = self.full(prefix);
        let full: Vec<String> = match &shared.list {
            Some(l) => {
                l.names(&full_prefix, &self.what(prefix), self.operation_timeout)
                    .await?
            }
            None => {
                let dir = full_prefix.trim_end_matches('/');
                let dir = (!dir.is_empty()).then(|| Path::from(dir));
                self.timed(
                    "List",
                    prefix,
                    shared.store.list_with_delimiter(dir.as_ref()),
                )
                .await?
                .common_prefixes
                .into_iter()
                .map(|p| format!("{p}/"))
                .collect()
            }
        };
        Ok(names_of(&full_prefix, full))
    }

    /// In bulk where the service has it (Azure batch), else one request per key; a key that
    /// is already gone is not an error.
    async fn delete(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let shared = self.client()?;
        let _slot = shared.slot().await;
        if let Some(d) = &shared.delete {
            let names: Vec<String> = keys.iter().map(|k| self.full(k)).collect();
            return d
                .delete(&names, &self.what(&keys[0]), self.operation_timeout)
                .await;
        }
        let paths = keys
            .iter()
            .map(|k| self.path(k))
            .collect::<Result<Vec<_>>>()?;
        let first = keys[0].clone();
        let mut results = shared
            .store
            .delete_stream(futures::stream::iter(paths.into_iter().map(Ok)).boxed());
        loop {
            match tokio::time::timeout(self.operation_timeout, results.next()).await {
                Ok(None) => return Ok(()),
                Ok(Some(Ok(_))) | Ok(Some(Err(object_store::Error::NotFound { .. }))) => {}
                Ok(Some(Err(e))) => return Err(self.error("Delete", &first, e)),
                Err(_) => {
                    return Err(Error::transient(format!(
                        "Delete {}: no answer within operation-timeout ({:?})",
                        self.what(&first),
                        self.operation_timeout
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{names_of, root_of};

    #[test]
    fn names_are_the_first_level_below_the_prefix() {
        let full = [
            "/r/generations/b/",
            "/r/generations/a/",
            "/r/generations/a/",
            "/r/generations//",
            "/r/other/c/",
            "/r/generations/x/y/",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(names_of("/r/generations/", full), ["a", "b"]);
    }

    #[test]
    fn roots_keep_a_leading_slash_as_v0_3_path_join_did() {
        assert_eq!(root_of(""), "");
        assert_eq!(root_of("a/b"), "a/b/");
        assert_eq!(root_of("a/b/"), "a/b/");
        // path.Join("/", "generations") = "/generations"; path.Join("/a", ...) = "/a/..."
        assert_eq!(root_of("/"), "/");
        assert_eq!(root_of("/a/b"), "/a/b/");
    }
}

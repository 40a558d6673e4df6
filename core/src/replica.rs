//! The one storage trait every backend implements: objects under a root.
//!
//! A backend knows nothing about generations, WAL or SQLite; core owns the layout. Keys are
//! relative to the replica root and `/`-separated.

use crate::error::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::AsyncRead;

/// A listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the replica root.
    pub key: String,
    /// Stored size (compressed and possibly encrypted bytes).
    pub size: u64,
    /// The storage's own time for the object: the creation time that v0.3 restores rely on.
    pub modified: SystemTime,
}

type Rebuild = Arc<dyn Fn() -> std::io::Result<Box<dyn Read + Send>> + Send + Sync>;

/// What `put` uploads. It can always be re-opened from the start, so a retry replays it exactly.
#[derive(Clone)]
pub enum PutSource {
    /// An in-memory payload, replayed from its first byte on a retry.
    Bytes(Bytes),
    /// A local file, opened again from its start for each attempt.
    File(PathBuf),
    /// Rebuilds the (compressed) stream on every call.
    Stream(Rebuild),
}

impl PutSource {
    /// A source that `f` rebuilds for each attempt (e.g. compressing a range of the shadow WAL).
    pub fn stream<F>(f: F) -> Self
    where
        F: Fn() -> std::io::Result<Box<dyn Read + Send>> + Send + Sync + 'static,
    {
        PutSource::Stream(Arc::new(f))
    }

    /// Opens the source from its first byte. Blocking: call from a blocking thread.
    pub fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        match self {
            PutSource::Bytes(b) => Ok(Box::new(std::io::Cursor::new(b.clone()))),
            PutSource::File(p) => Ok(Box::new(std::fs::File::open(p)?)),
            PutSource::Stream(f) => f(),
        }
    }
}

impl fmt::Debug for PutSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutSource::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            PutSource::File(p) => write!(f, "File({})", p.display()),
            PutSource::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// A byte stream returned by `get`.
pub type ByteReader = Box<dyn AsyncRead + Send + Unpin>;

/// A download from some byte of an object ([`Replica::get_from`]), with what the store knows.
pub struct ObjectReader {
    /// The object's bytes from the offset asked for.
    pub reader: ByteReader,
    /// Bytes from that offset to the end, when the store says: a body that ends sooner broke.
    pub remaining: Option<u64>,
    /// The store's version of the object (S3's ETag), when it has one: a resumed download pins it,
    /// so it never splices two versions of an object.
    pub version: Option<String>,
}

impl fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectReader")
            .field("remaining", &self.remaining)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Object storage under one replica root: all core asks of a backend. Errors carry an
/// [`ErrorKind`](crate::ErrorKind) so the retry layer and shipper can act on them.
#[async_trait]
pub trait Replica: Send + Sync + fmt::Debug {
    /// The backend type (`file`, `s3`, `sftp`).
    fn kind(&self) -> &'static str;

    /// Where objects go, for humans: never includes a secret.
    fn target(&self) -> String;

    /// Stores `source` under `key`, atomically: a reader sees the old object, the new one, or none.
    /// Returns the number of bytes stored.
    async fn put(&self, key: &str, source: PutSource) -> Result<u64>;

    /// Streams the object at `key`; a missing key is `ErrorKind::NotFound`.
    async fn get(&self, key: &str) -> Result<ByteReader>;

    /// Streams the object at `key` from byte `offset`; with `version` (from an earlier
    /// `get_from` of the key), fails rather than read another version of it. The retry layer
    /// resumes broken downloads through this. Stores that can seek override it; the default,
    /// for those that cannot, reads and drops the first `offset` bytes and pins nothing.
    async fn get_from(
        &self,
        key: &str,
        offset: u64,
        version: Option<&str>,
    ) -> Result<ObjectReader> {
        let _ = version;
        let mut reader = self.get(key).await?;
        let skipped = tokio::io::copy(
            &mut tokio::io::AsyncReadExt::take(&mut reader, offset),
            &mut tokio::io::sink(),
        )
        .await
        .map_err(|e| Error::io(format!("read object {key}"), e))?;
        if skipped < offset {
            return Err(Error::invalid(format!(
                "object {key} ends at byte {skipped}, before byte {offset}"
            )));
        }
        Ok(ObjectReader {
            reader,
            remaining: None,
            version: None,
        })
    }

    /// Every object whose key starts with `prefix`, in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// The objects under `prefix` whose key sorts after `start_after` (byte order), in no
    /// particular order: a listing that continues from a known position (the last segment a
    /// follower applied, the last key a poller saw) instead of reading a whole generation again.
    /// Stores that can start a listing at a key (S3 `StartAfter`) override this; the default
    /// filters a full listing.
    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<ObjectMeta>> {
        let mut v = self.list(prefix).await?;
        v.retain(|o| o.key.as_str() > start_after);
        Ok(v)
    }

    /// Whether [`Replica::list_after`] starts at the key on the store's side, so its cost does
    /// not grow with what sorts before the key. Where it does not (the default), a follower
    /// polls by [`Replica::stat`] of the names that would come next instead.
    fn lists_after_natively(&self) -> bool {
        false
    }

    /// The object at `key` (its size and time), or `None` when there is none: one `stat` or
    /// HEAD where the store has it. The default lists `key` as a prefix.
    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.list(key).await?.into_iter().find(|o| o.key == key))
    }

    /// The names one level below `prefix` (which ends in `/`) under which objects exist, sorted:
    /// what S3 returns as CommonPrefixes for delimiter `/`, without the objects. A follower looks
    /// for a new generation this way at a cost that does not grow with the replica's history.
    /// Stores that keep empty directories (a file replica, SeaweedFS) may also name prefixes
    /// whose objects were all deleted. Stores that can list by delimiter override it; the
    /// default reads the full listing.
    async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(names_below(prefix, self.list(prefix).await?))
    }

    /// Deletes the keys; missing keys are not an error.
    async fn delete(&self, keys: &[String]) -> Result<()>;

    /// Removes the temporary files that uploads of an earlier process left under `generations/`
    /// when it was killed mid-upload (`<object>.<pid>-<n>.tmp`), and returns how many. Called once
    /// when replication starts. Never follows a symbolic link and never leaves the replica root.
    /// Stores whose uploads are atomic (S3) have nothing to remove.
    async fn remove_stale_temporaries(&self) -> Result<usize> {
        Ok(0)
    }

    /// A cheap round trip proving the replica is usable (write, list, read, delete a probe).
    ///
    /// The probe lives at the replica root, outside `generations/`, so Litestream and walship's
    /// own listings never see it; its name is unique per call so two checks never collide. A
    /// probe that was written is deleted even when a later step fails, so a failed check leaves
    /// nothing behind either.
    async fn check(&self) -> Result<()> {
        let key = probe_key();
        let body = Bytes::from_static(b"walship probe\n");
        self.put(&key, PutSource::Bytes(body.clone())).await?;
        let verified = async {
            let listed = self.list(&key).await?;
            if !listed.iter().any(|o| o.key == key) {
                return Err(Error::invalid(format!(
                    "probe object {key} was written but not listed"
                )));
            }
            let mut r = self.get(&key).await?;
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut got)
                .await
                .map_err(|e| Error::io(format!("read probe {key}"), e))?;
            if got != body {
                return Err(Error::corrupt(format!(
                    "probe object {key} read back differently"
                )));
            }
            Ok(())
        }
        .await;
        let deleted = self.delete(std::slice::from_ref(&key)).await;
        verified.and(deleted)
    }
}

/// Turns each download's byte stream into another (counting it, pacing it).
pub type WrapReader = Arc<dyn Fn(ByteReader) -> ByteReader + Send + Sync>;

/// A replica whose downloads pass through a [`WrapReader`]; everything else is `inner`'s own.
/// What restore progress and a drill's bandwidth cap are made of, without either knowing the
/// backend.
pub struct WrappedReads {
    inner: DynReplica,
    wrap: WrapReader,
}

impl WrappedReads {
    /// `inner`, with every `get` and `get_from` stream passed through `wrap`.
    pub fn wrap(inner: DynReplica, wrap: WrapReader) -> DynReplica {
        Arc::new(WrappedReads { inner, wrap })
    }
}

/// The distinct first path segments of `objects` below `prefix`, sorted (objects directly at
/// `prefix` have none).
pub fn names_below(prefix: &str, objects: Vec<ObjectMeta>) -> Vec<String> {
    let mut names: Vec<String> = objects
        .into_iter()
        .filter_map(|o| {
            let (name, _) = o.key.strip_prefix(prefix)?.split_once('/')?;
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

impl fmt::Debug for WrappedReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedReads")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Replica for WrappedReads {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn target(&self) -> String {
        self.inner.target()
    }
    async fn put(&self, key: &str, source: PutSource) -> Result<u64> {
        self.inner.put(key, source).await
    }
    async fn get(&self, key: &str) -> Result<ByteReader> {
        Ok((self.wrap)(self.inner.get(key).await?))
    }
    async fn get_from(
        &self,
        key: &str,
        offset: u64,
        version: Option<&str>,
    ) -> Result<ObjectReader> {
        let mut r = self.inner.get_from(key, offset, version).await?;
        r.reader = (self.wrap)(r.reader);
        Ok(r)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list_after(prefix, start_after).await
    }
    async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list_names(prefix).await
    }
    fn lists_after_natively(&self) -> bool {
        self.inner.lists_after_natively()
    }
    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.inner.stat(key).await
    }
    async fn delete(&self, keys: &[String]) -> Result<()> {
        self.inner.delete(keys).await
    }
    async fn remove_stale_temporaries(&self) -> Result<usize> {
        self.inner.remove_stale_temporaries().await
    }
    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }
}

/// Whether `name` (a file name, no directory) is the temporary name of an upload by a walship
/// process other than `own_pid`: `<object>.<pid>-<n>.tmp` with decimal pid and n.
pub fn is_stale_temporary(name: &str, own_pid: u32) -> bool {
    let Some(rest) = name.strip_suffix(".tmp") else {
        return false;
    };
    let Some((object, tag)) = rest.rsplit_once('.') else {
        return false;
    };
    let Some((pid, n)) = tag.split_once('-') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !object.is_empty() && digits(pid) && digits(n) && pid.parse::<u32>() != Ok(own_pid)
}

/// The self-check's probe key: at the root, outside `generations/`, unique per call.
pub fn probe_key() -> String {
    format!(".walship-probe-{:016x}", rand::random::<u64>())
}

/// A shared replica client, as [`crate::registry::open`] builds it and shippers and restore use it.
pub type DynReplica = Arc<dyn Replica>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_below_a_prefix_are_first_segments_once_each() {
        let o = |k: &str| ObjectMeta {
            key: k.into(),
            size: 0,
            modified: std::time::SystemTime::UNIX_EPOCH,
        };
        let names = names_below(
            "generations/",
            vec![
                o("generations/b/wal/1"),
                o("generations/a/snapshots/1"),
                o("generations/b/snapshots/1"),
                o("generations/stray"),
                o("generations//x"),
            ],
        );
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn stale_temporary_names() {
        assert!(is_stale_temporary(
            "00000001_00000000.wal.lz4.4242-7.tmp",
            1
        ));
        assert!(is_stale_temporary("00000000.snapshot.lz4.1-0.tmp", 2));
        // This process's own uploads may be in flight.
        assert!(!is_stale_temporary("00000000.snapshot.lz4.2-0.tmp", 2));
        // Not walship's shape: v0.3.13's own `.tmp` names, objects, empty parts.
        assert!(!is_stale_temporary("00000000.snapshot.lz4.tmp", 2));
        assert!(!is_stale_temporary("00000000.snapshot.lz4", 2));
        assert!(!is_stale_temporary(".12-3.tmp", 2));
        assert!(!is_stale_temporary("x.12-.tmp", 2));
        assert!(!is_stale_temporary("x.a2-3.tmp", 2));
        assert!(!is_stale_temporary("x.12_3.tmp", 2));
    }
}

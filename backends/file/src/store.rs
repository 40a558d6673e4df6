use async_trait::async_trait;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use walship_core::replica::{ByteReader, ObjectMeta, ObjectReader, PutSource, Replica};
use walship_core::{Error, ErrorKind, Result};

/// Write size of an upload: eight times std's 8 KiB, from a buffer on the stack. Not on the heap:
/// glibc handed each upload fresh pages (256 KiB: 65-71 page faults per upload, 687 a second at a
/// 100ms sync-interval; 64 KiB: 22), and faulting them in cost more CPU than the saved calls.
const PUT_BUF: usize = 64 * 1024;

#[derive(Debug)]
pub struct FileReplica {
    root: PathBuf,
    /// Mode and owner for new files and directories (from the database, as v0.3.13 does).
    db_path: Option<PathBuf>,
}

impl FileReplica {
    pub fn new(root: PathBuf, db_path: Option<PathBuf>) -> Result<Self> {
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("current directory", e))?
                .join(root)
        };
        Ok(FileReplica { root, db_path })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        if key.split('/').any(|c| c == "..") {
            return Err(Error::invalid(format!("invalid object key {key:?}")));
        }
        Ok(self.root.join(key.trim_start_matches('/')))
    }

    fn modes(&self) -> (u32, u32, Option<(u32, u32)>) {
        let file = self.db_path.as_deref().and_then(|p| fs::metadata(p).ok());
        let dir = self
            .db_path
            .as_deref()
            .and_then(|p| p.parent())
            .and_then(|p| fs::metadata(p).ok());
        (
            file.as_ref().map(|m| m.mode() & 0o777).unwrap_or(0o600),
            dir.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(0o700),
            file.map(|m| (m.uid(), m.gid())),
        )
    }

    fn mkdirs(&self, dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> std::io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.mkdirs(parent, mode, owner)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {
                let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode));
                if let Some((u, g)) = owner {
                    let _ = std::os::unix::fs::chown(dir, Some(u), Some(g));
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn put_blocking(&self, key: &str, source: &PutSource) -> Result<u64> {
        let path = self.path(key)?;
        let what = || format!("write {}", path.display());
        let (fmode, dmode, owner) = self.modes();
        if let Some(dir) = path.parent() {
            self.mkdirs(dir, dmode, owner)
                .map_err(|e| Error::io(what(), e))?;
        }
        // A temporary name of its own per write (still ending in `.tmp`, which listings skip):
        // two concurrent puts of one key must not rename each other's file away.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tmp = path.clone().into_os_string();
        tmp.push(format!(".{}-{seq}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let res = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(fmode)
                .open(&tmp)?;
            // Mode and owner through the descriptor, and only where they differ: each path-based
            // call was a lookup of its own, at every upload (ten a second at a 100ms
            // sync-interval).
            let meta = f.metadata()?;
            if meta.mode() & 0o7777 != fmode {
                let _ = f.set_permissions(fs::Permissions::from_mode(fmode));
            }
            if let Some((u, g)) = owner.filter(|&(u, g)| (meta.uid(), meta.gid()) != (u, g)) {
                let _ = std::os::unix::fs::fchown(&f, Some(u), Some(g));
            }
            let mut src = source.open()?;
            // Large writes: std's copy moves 8 KiB per write call, and each call of a new file
            // costs ext4 a page reservation round and an inode update.
            let mut buf = [0u8; PUT_BUF];
            let mut n = 0u64;
            loop {
                let filled = walship_core::wal::read_full(&mut src, &mut buf)?;
                if filled > 0 {
                    f.write_all(&buf[..filled])?;
                }
                n += filled as u64;
                if filled < buf.len() {
                    break;
                }
            }
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                if let Ok(d) = fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok(n)
        })();
        res.map_err(|e: std::io::Error| {
            let _ = fs::remove_file(&tmp);
            Error::io(what(), e)
        })
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Walk from the deepest directory the prefix names, then filter by the full prefix.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = self.path(dir_part)?;
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
                let p = ent.path();
                let Ok(rel) = p.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel.to_string_lossy().replace('\\', "/");
                let meta = match ent.metadata() {
                    Ok(m) => m,
                    Err(_) => continue, // removed while listing
                };
                if meta.is_dir() {
                    let k = format!("{key}/");
                    if k.starts_with(prefix) || prefix.starts_with(&k) {
                        stack.push(p);
                    }
                } else if key.starts_with(prefix) && !key.ends_with(".tmp") {
                    out.push(ObjectMeta {
                        key,
                        size: meta.len(),
                        modified: meta
                            .modified()
                            .map_err(|e| Error::io(format!("stat {}", p.display()), e))?,
                    });
                }
            }
        }
        Ok(out)
    }

    /// See [`Replica::remove_stale_temporaries`]. `DirEntry::file_type` does not follow links, so
    /// a link (to a directory or a file) under `generations/` is neither entered nor removed.
    fn remove_stale_temporaries_blocking(&self) -> Result<usize> {
        let own = std::process::id();
        let top = self.root.join("generations");
        match fs::symlink_metadata(&top) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Ok(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(format!("stat {}", top.display()), e)),
        }
        let mut removed = 0;
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
            };
            for ent in rd.flatten() {
                let Ok(ft) = ent.file_type() else { continue };
                let p = ent.path();
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file()
                    && walship_core::replica::is_stale_temporary(
                        &ent.file_name().to_string_lossy(),
                        own,
                    )
                {
                    match fs::remove_file(&p) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(format!("delete {}", p.display()), e)),
                    }
                }
            }
        }
        Ok(removed)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Other, format!("file replica task failed: {e}")))?
}

#[async_trait]
impl Replica for FileReplica {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn target(&self) -> String {
        self.root.display().to_string()
    }

    async fn put(&self, key: &str, source: PutSource) -> Result<u64> {
        let me = FileReplica {
            root: self.root.clone(),
            db_path: self.db_path.clone(),
        };
        let key = key.to_string();
        blocking(move || me.put_blocking(&key, &source)).await
    }

    async fn get(&self, key: &str) -> Result<ByteReader> {
        Ok(self.get_from(key, 0, None).await?.reader)
    }

    /// Seeks to `offset`. Objects are replaced by rename, so a new version is a new inode: the
    /// version is the inode and modification time, and a resumed read of a replaced object fails.
    async fn get_from(
        &self,
        key: &str,
        offset: u64,
        version: Option<&str>,
    ) -> Result<ObjectReader> {
        use tokio::io::AsyncSeekExt;
        let path = self.path(key)?;
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::not_found(format!("object {key} not found in {}", self.root.display()))
            }
            _ => Error::io(format!("read {}", path.display()), e),
        };
        let mut f = tokio::fs::File::open(&path).await.map_err(io)?;
        let m = f.metadata().await.map_err(io)?;
        let this = format!("{}-{}.{}", m.ino(), m.mtime(), m.mtime_nsec());
        if version.is_some_and(|v| v != this) {
            return Err(Error::invalid(format!(
                "object {key} was replaced while it was read"
            )));
        }
        if offset > 0 {
            f.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
        }
        Ok(ObjectReader {
            reader: Box::new(tokio::io::BufReader::with_capacity(256 * 1024, f)),
            remaining: Some(m.len().saturating_sub(offset)),
            version: Some(this),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let me = FileReplica {
            root: self.root.clone(),
            db_path: None,
        };
        let prefix = prefix.to_string();
        blocking(move || me.list_blocking(&prefix)).await
    }

    /// One `lstat`, classified as the listing classifies entries.
    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let p = self.path(key)?;
        let key = key.to_owned();
        blocking(move || {
            let meta = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(format!("stat {}", p.display()), e)),
            };
            if meta.is_dir() || key.ends_with(".tmp") {
                return Ok(None);
            }
            let modified = meta
                .modified()
                .map_err(|e| Error::io(format!("stat {}", p.display()), e))?;
            Ok(Some(ObjectMeta {
                key,
                size: meta.len(),
                modified,
            }))
        })
        .await
    }

    /// The directories below `prefix`: one `read_dir`, whatever the history under them.
    async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.path(prefix.trim_end_matches('/'))?;
        blocking(move || {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
            };
            let mut names = Vec::new();
            for ent in rd {
                let ent = ent.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
                // Not following links, as the full listing does not.
                if ent.file_type().is_ok_and(|t| t.is_dir()) {
                    names.push(ent.file_name().to_string_lossy().into_owned());
                }
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn delete(&self, keys: &[String]) -> Result<()> {
        let paths = keys
            .iter()
            .map(|k| self.path(k))
            .collect::<Result<Vec<_>>>()?;
        let root = self.root.clone();
        blocking(move || {
            for p in paths {
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("delete {}", p.display()), e)),
                }
                // Remove directories left empty (a deleted generation), never the root.
                let mut dir = p.parent().map(Path::to_path_buf);
                while let Some(d) = dir {
                    if d == root || !d.starts_with(&root) || fs::remove_dir(&d).is_err() {
                        break;
                    }
                    dir = d.parent().map(Path::to_path_buf);
                }
            }
            Ok(())
        })
        .await
    }

    async fn remove_stale_temporaries(&self) -> Result<usize> {
        let me = FileReplica {
            root: self.root.clone(),
            db_path: None,
        };
        blocking(move || me.remove_stale_temporaries_blocking()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn put_get_list_delete() {
        let d = tempfile::tempdir().unwrap();
        let r = FileReplica::new(d.path().join("r"), None).unwrap();
        r.put(
            "generations/0123456789abcdef/wal/00000000_00000000.wal.lz4",
            PutSource::Bytes(Bytes::from_static(b"abc")),
        )
        .await
        .unwrap();
        r.put("other/x", PutSource::Bytes(Bytes::from_static(b"x")))
            .await
            .unwrap();
        let l = r.list("generations/").await.unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].size, 3);
        let mut buf = Vec::new();
        r.get(&l[0].key)
            .await
            .unwrap()
            .read_to_end(&mut buf)
            .await
            .unwrap();
        assert_eq!(buf, b"abc");
        assert_eq!(
            r.get("nope").await.err().map(|e| e.kind()),
            Some(ErrorKind::NotFound)
        );
        r.delete(&[l[0].key.clone(), "missing".into()])
            .await
            .unwrap();
        assert!(r.list("generations/").await.unwrap().is_empty());
        assert!(
            !d.path().join("r/generations").exists(),
            "empty dirs are removed"
        );
        r.check().await.unwrap();
    }

    #[tokio::test]
    async fn removes_stale_temporaries_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        let wal = root.join("generations/0123456789abcdef/wal");
        fs::create_dir_all(&wal).unwrap();
        let stale = wal.join("00000000_00000000.wal.lz4.999999-3.tmp");
        let object = wal.join("00000000_00000000.wal.lz4");
        let foreign = wal.join("notes.tmp");
        for p in [&stale, &object, &foreign] {
            fs::write(p, b"x").unwrap();
        }
        // Outside the replica: a link to it must not lead the sweep there.
        let outside = d.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        let victim = outside.join("x.lz4.999999-1.tmp");
        fs::write(&victim, b"x").unwrap();
        std::os::unix::fs::symlink(&outside, wal.join("link")).unwrap();
        std::os::unix::fs::symlink(&victim, wal.join("y.lz4.999999-2.tmp")).unwrap();
        // A loop of links does not hang it.
        std::os::unix::fs::symlink(".", wal.join("loop")).unwrap();
        let r = FileReplica::new(root, None).unwrap();
        assert_eq!(r.remove_stale_temporaries().await.unwrap(), 1);
        assert!(!stale.exists());
        assert!(object.exists() && foreign.exists() && victim.exists());
        assert!(fs::symlink_metadata(wal.join("y.lz4.999999-2.tmp")).is_ok());
    }

    #[tokio::test]
    async fn rejects_path_traversal() {
        let d = tempfile::tempdir().unwrap();
        let r = FileReplica::new(d.path().to_path_buf(), None).unwrap();
        assert!(r.put("../x", PutSource::Bytes(Bytes::new())).await.is_err());
    }
}

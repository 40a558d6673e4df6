//! The SFTP replica: objects are files under the root directory, keys are relative paths.
//!
//! - `put` writes a temporary `<name>.<pid>-<n>.tmp` (listings skip `.tmp`), fsyncs it when the
//!   server offers `fsync@openssh.com`, and renames it over the final name with
//!   `posix-rename@openssh.com`, so a reader sees the old object, the new one, or none. Missing
//!   directories are created. The source is read on a blocking thread, a chunk at a time, with
//!   a bounded window of writes in flight: a snapshot never sits in memory.
//! - `get` streams with a window of pipelined reads.
//! - The connection is opened at first use and dropped when it fails; the next operation (the
//!   retry layer's next attempt) connects again.

use crate::config::SftpConfig;
use crate::conn::{self, map_sftp, Conn};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use russh::keys::PrivateKey;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, FileType, OpenFlags, Packet, StatusCode};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Mutex, Semaphore};
use walship_core::replica::{ByteReader, ObjectMeta, ObjectReader, PutSource, Replica};
use walship_core::{Error, Result};

/// Bytes per SFTP write request (OpenSSH's own client default).
const WRITE_CHUNK: usize = 32 * 1024;
/// Writes in flight per upload.
const WRITE_WINDOW: usize = 32;
/// Bytes per SFTP read request.
const READ_CHUNK: u32 = 64 * 1024;
/// Reads in flight per download.
const READ_WINDOW: usize = 16;
/// Open file and directory handles per connection. OpenSSH numbers handles by slot and
/// russh-sftp decodes them as UTF-8 strings, so slots must stay below 128.
const MAX_HANDLES: usize = 48;
/// Directories listed at once.
const LIST_CONCURRENCY: usize = 8;
/// Deletes in flight.
const DELETE_CONCURRENCY: usize = 16;

pub struct SftpReplica {
    cfg: Arc<SftpConfig>,
    key: Option<Arc<PrivateKey>>,
    conn: Slot,
    handles: Arc<Semaphore>,
    /// Temporary files of uploads that failed with the connection: removed at the next upload,
    /// so a flaky link does not pile up partial snapshots on the server.
    orphans: std::sync::Mutex<Vec<String>>,
}

/// The replica's one connection, shared with download tasks so they can reconnect mid-stream.
type Slot = Arc<Mutex<Option<Arc<Conn>>>>;

/// The live connection in `slot`, or a new one.
async fn connect_slot(
    slot: &Slot,
    cfg: &SftpConfig,
    key: Option<&Arc<PrivateKey>>,
) -> Result<Arc<Conn>> {
    let mut slot = slot.lock().await;
    if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
        return Ok(c.clone());
    }
    *slot = None;
    let c = Arc::new(
        conn::connect(cfg, key)
            .await
            .map_err(|e| e.context(format_args!("{}", cfg.target())))?,
    );
    *slot = Some(c.clone());
    Ok(c)
}

impl std::fmt::Debug for SftpReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpReplica")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl SftpReplica {
    /// Loads the private key now, so an unreadable or undecryptable key fails before anything
    /// starts; connects lazily.
    pub fn new(cfg: SftpConfig) -> Result<Self> {
        let key = match &cfg.key_path {
            Some(p) => Some(conn::load_key(p, cfg.key_passphrase.as_deref())?),
            None => None,
        };
        Ok(SftpReplica {
            cfg: Arc::new(cfg),
            key,
            conn: Arc::new(Mutex::new(None)),
            handles: Arc::new(Semaphore::new(MAX_HANDLES)),
            orphans: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub fn config(&self) -> &SftpConfig {
        &self.cfg
    }

    /// The live connection, or a new one.
    async fn conn(&self) -> Result<Arc<Conn>> {
        connect_slot(&self.conn, &self.cfg, self.key.as_ref()).await
    }

    /// Maps a request failure and forgets the connection when it is no longer usable.
    async fn fail(&self, c: &Arc<Conn>, what: &str, e: SftpError) -> Error {
        let (err, lost) = map_sftp(&format!("sftp {}: {what}", self.cfg.addr()), e);
        if lost {
            let mut slot = self.conn.lock().await;
            if slot.as_ref().is_some_and(|x| Arc::ptr_eq(x, c)) {
                *slot = None;
            }
        }
        err
    }

    async fn open_write(&self, c: &Arc<Conn>, path: &str) -> Result<String> {
        let mut attrs = FileAttributes::empty();
        attrs.permissions = Some(0o600);
        let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
        match c.sftp.open(path, flags, attrs.clone()).await {
            Ok(h) => return Ok(h.handle),
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {}
            Err(e) => return Err(self.fail(c, &format!("create {path}"), e).await),
        }
        if let Some((dir, _)) = path.rsplit_once('/').filter(|(d, _)| !d.is_empty()) {
            self.mkdirs(c, dir).await?;
        }
        match c.sftp.open(path, flags, attrs).await {
            Ok(h) => Ok(h.handle),
            Err(e) => Err(self.fail(c, &format!("create {path}"), e).await),
        }
    }

    /// Creates `dir` and its missing parents (mode 0700).
    async fn mkdirs(&self, c: &Arc<Conn>, dir: &str) -> Result<()> {
        let abs = dir.starts_with('/');
        let parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
        for i in 1..=parts.len() {
            let p = format!("{}{}", if abs { "/" } else { "" }, parts[..i].join("/"));
            let mut attrs = FileAttributes::empty();
            attrs.permissions = Some(0o700);
            let err = match c.sftp.mkdir(p.as_str(), attrs).await {
                Ok(_) => continue,
                Err(e) => e,
            };
            // Exists already (OpenSSH answers a generic Failure), or a real problem?
            match c.sftp.stat(p.as_str()).await {
                Ok(a) if a.attrs.file_type() == FileType::Dir => continue,
                Ok(_) => {
                    return Err(Error::invalid(format!(
                        "sftp {}: create directory {p}: a file of that name exists",
                        self.cfg.addr()
                    )))
                }
                Err(_) => return Err(self.fail(c, &format!("create directory {p}"), err).await),
            }
        }
        Ok(())
    }

    async fn close_quietly(c: &Arc<Conn>, handle: String) {
        let _ = c.sftp.close(handle).await;
    }

    async fn rename_over(&self, c: &Arc<Conn>, from: &str, to: &str) -> Result<()> {
        if c.posix_rename {
            let mut data = Vec::with_capacity(8 + from.len() + to.len());
            for s in [from, to] {
                data.extend_from_slice(&(s.len() as u32).to_be_bytes());
                data.extend_from_slice(s.as_bytes());
            }
            return match c.sftp.extended("posix-rename@openssh.com", data).await {
                Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
                Ok(Packet::Status(s)) => Err(self
                    .fail(c, &format!("rename {from} to {to}"), SftpError::Status(s))
                    .await),
                Ok(_) => Err(self
                    .fail(
                        c,
                        &format!("rename {from} to {to}"),
                        SftpError::UnexpectedPacket,
                    )
                    .await),
                Err(e) => Err(self.fail(c, &format!("rename {from} to {to}"), e).await),
            };
        }
        // Plain SFTPv3 refuses to rename onto an existing file: remove it first (not atomic,
        // but only servers without posix-rename get here).
        match c.sftp.remove(to).await {
            Ok(_) => {}
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {}
            Err(e) => return Err(self.fail(c, &format!("replace {to}"), e).await),
        }
        match c.sftp.rename(from, to).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(c, &format!("rename {from} to {to}"), e).await),
        }
    }

    /// Streams the source into an open handle; returns the bytes written.
    async fn upload(
        &self,
        c: &Arc<Conn>,
        handle: &str,
        path: &str,
        source: PutSource,
    ) -> Result<u64> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(WRITE_WINDOW);
        let reader = tokio::task::spawn_blocking(move || {
            let mut src = match source.open() {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; WRITE_CHUNK];
                let mut n = 0;
                while n < WRITE_CHUNK {
                    match src.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
                if n == 0 {
                    return;
                }
                buf.truncate(n);
                if tx.blocking_send(Ok(buf)).is_err() {
                    return;
                }
            }
        });
        let mut offset = 0u64;
        let mut inflight = FuturesUnordered::new();
        let mut done = false;
        let mut source_error = None;
        let result = loop {
            while !done && inflight.len() < WRITE_WINDOW {
                match rx.recv().await {
                    Some(Ok(buf)) => {
                        let (sftp, h, off) = (c.sftp.clone(), handle.to_string(), offset);
                        offset += buf.len() as u64;
                        inflight.push(async move { sftp.write(h, off, buf).await });
                    }
                    Some(Err(e)) => {
                        source_error = Some(e);
                        done = true;
                    }
                    None => done = true,
                }
            }
            match inflight.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(self.fail(c, &format!("write {path}"), e).await),
                None => {
                    break match source_error.take() {
                        Some(e) => Err(Error::io(format!("read the source of {path}"), e)),
                        None => Ok(offset),
                    }
                }
            }
        };
        drop(rx);
        let _ = reader.await;
        result
    }
}

/// A temporary name of its own per write: two concurrent puts of one key must not rename each
/// other's file away. Ends in `.tmp`, which listings (and v0.3.13's) skip.
fn temp_name(path: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{path}.{}-{n}.tmp", std::process::id())
}

/// Reads `len` bytes at `offset`, asking again after a short read; fewer only at end of file.
async fn read_range(
    sftp: Arc<russh_sftp::client::RawSftpSession>,
    handle: String,
    offset: u64,
    len: u32,
) -> std::result::Result<Vec<u8>, SftpError> {
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u32) < len {
        let want = len - out.len() as u32;
        match sftp
            .read(handle.as_str(), offset + out.len() as u64, want)
            .await
        {
            Ok(d) if d.data.is_empty() => break,
            Ok(d) => out.extend_from_slice(&d.data),
            Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn io_err(e: &Error) -> std::io::Error {
    let kind = if e.is_retryable() {
        std::io::ErrorKind::ConnectionAborted
    } else {
        std::io::ErrorKind::Other
    };
    std::io::Error::new(kind, e.to_string())
}

/// The modification time of a listed file (whole seconds, as SFTPv3 reports them).
fn mtime(attrs: &FileAttributes) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(attrs.mtime.unwrap_or(0) as u64)
}

/// Whether a directory at relative key `dir` can hold keys starting with `prefix`.
fn dir_may_match(dir: &str, prefix: &str) -> bool {
    let d = format!("{dir}/");
    d.starts_with(prefix) || prefix.starts_with(&d)
}

/// Joins a relative key directory and a name.
fn rel_join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl SftpReplica {
    /// Entries of one remote directory (`None` when it does not exist).
    async fn read_dir(
        &self,
        c: &Arc<Conn>,
        dir: &str,
    ) -> Result<Option<Vec<russh_sftp::protocol::File>>> {
        let _permit = self.handles.acquire().await.expect("semaphore open");
        let remote = if dir.is_empty() { "." } else { dir };
        let handle = match c.sftp.opendir(remote).await {
            Ok(h) => h.handle,
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {
                return Ok(None)
            }
            Err(e) => return Err(self.fail(c, &format!("list {remote}"), e).await),
        };
        let mut out = Vec::new();
        let res = loop {
            match c.sftp.readdir(handle.as_str()).await {
                Ok(name) => out.extend(name.files),
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
                Err(e) => break Err(self.fail(c, &format!("list {remote}"), e).await),
            }
        };
        Self::close_quietly(c, handle).await;
        res.map(|()| Some(out))
    }

    /// See [`Replica::remove_stale_temporaries`]: walks `generations/` without following links
    /// (entries are classified by the attributes `readdir` returns, which are `lstat`'s).
    async fn remove_stale_temporaries_inner(&self, c: &Arc<Conn>) -> Result<usize> {
        let own = std::process::id();
        let mut removed = 0;
        let mut pending = vec!["generations".to_string()];
        while let Some(rel) = pending.pop() {
            let remote = self.cfg.remote_path(&rel);
            let Some(entries) = self.read_dir(c, &remote).await? else {
                continue;
            };
            for f in entries {
                if f.filename == "." || f.filename == ".." {
                    continue;
                }
                match f.attrs.file_type() {
                    FileType::Dir => pending.push(rel_join(&rel, &f.filename)),
                    FileType::File
                        if walship_core::replica::is_stale_temporary(&f.filename, own) =>
                    {
                        let path = rel_join(&remote, &f.filename);
                        match c.sftp.remove(path.as_str()).await {
                            Ok(_) => removed += 1,
                            Err(SftpError::Status(s))
                                if s.status_code == StatusCode::NoSuchFile => {}
                            Err(e) => return Err(self.fail(c, &format!("delete {path}"), e).await),
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(removed)
    }

    async fn list_names_inner(&self, c: &Arc<Conn>, prefix: &str) -> Result<Vec<String>> {
        let remote = self.cfg.remote_path(prefix.trim_end_matches('/'));
        let Some(entries) = self.read_dir(c, &remote).await? else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for f in entries {
            if f.filename == "." || f.filename == ".." {
                continue;
            }
            let dir = match f.attrs.file_type() {
                FileType::Dir => true,
                // Followed, as the full listing follows them.
                FileType::Symlink => c
                    .sftp
                    .stat(rel_join(&remote, &f.filename))
                    .await
                    .is_ok_and(|a| a.attrs.file_type() == FileType::Dir),
                _ => false,
            };
            if dir {
                names.push(f.filename);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn list_inner(&self, c: &Arc<Conn>, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let start = match prefix.rfind('/') {
            Some(i) => prefix[..i].to_string(),
            None => String::new(),
        };
        let mut out = Vec::new();
        let mut pending = vec![start];
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < LIST_CONCURRENCY {
                let Some(rel) = pending.pop() else { break };
                let remote = self.cfg.remote_path(&rel);
                running.push(async move { (self.read_dir(c, &remote).await, rel, remote) });
            }
            let Some((res, rel, remote)) = running.next().await else {
                break;
            };
            let Some(entries) = res? else { continue };
            for f in entries {
                if f.filename == "." || f.filename == ".." {
                    continue;
                }
                let key = rel_join(&rel, &f.filename);
                let mut attrs = f.attrs;
                if attrs.file_type() == FileType::Symlink {
                    // Follow links (a replica directory may be a link to another disk).
                    match c.sftp.stat(rel_join(&remote, &f.filename)).await {
                        Ok(a) => attrs = a.attrs,
                        Err(_) => continue,
                    }
                }
                match attrs.file_type() {
                    FileType::Dir if dir_may_match(&key, prefix) => pending.push(key),
                    FileType::File if key.starts_with(prefix) && !key.ends_with(".tmp") => out
                        .push(ObjectMeta {
                            key,
                            size: attrs.size.unwrap_or(0),
                            modified: mtime(&attrs),
                        }),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    async fn put_inner(&self, c: &Arc<Conn>, key: &str, source: PutSource) -> Result<u64> {
        self.remove_orphans(c).await;
        let path = self.cfg.remote_path(key);
        let tmp = temp_name(&path);
        let _permit = self.handles.acquire().await.expect("semaphore open");
        let handle = self.open_write(c, &tmp).await?;
        let written = self.upload(c, &handle, &path, source).await;
        let written = match written {
            Ok(n) => {
                let synced = if c.fsync {
                    match c.sftp.fsync(handle.as_str()).await {
                        Ok(_) => Ok(()),
                        Err(e) => Err(self.fail(c, &format!("fsync {tmp}"), e).await),
                    }
                } else {
                    Ok(())
                };
                let closed = match c.sftp.close(handle.as_str()).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(self.fail(c, &format!("close {tmp}"), e).await),
                };
                synced.and(closed).map(|()| n)
            }
            Err(e) => {
                Self::close_quietly(c, handle).await;
                Err(e)
            }
        };
        let res = match written {
            Ok(n) => self.rename_over(c, &tmp, &path).await.map(|()| n),
            Err(e) => Err(e),
        };
        if res.is_err() {
            if c.is_closed() {
                self.orphans
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(tmp);
            } else {
                let _ = c.sftp.remove(tmp.as_str()).await;
            }
        }
        res
    }

    /// Removes the temporary files of uploads that failed with an earlier connection.
    async fn remove_orphans(&self, c: &Arc<Conn>) {
        let orphans = std::mem::take(&mut *self.orphans.lock().unwrap_or_else(|p| p.into_inner()));
        for tmp in orphans {
            match c.sftp.remove(tmp.as_str()).await {
                Ok(_) => {
                    tracing::debug!(path = %tmp, "removed the temporary file of a failed upload")
                }
                Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {}
                Err(_) => self
                    .orphans
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(tmp),
            }
        }
    }

    /// Streams `key` from `offset` with a window of pipelined reads. A read that fails ends the
    /// stream with the error (the connection is forgotten when it is lost): the retry layer
    /// resumes the download from the byte reached, on a new connection.
    async fn get_inner(&self, c: &Arc<Conn>, key: &str, offset: u64) -> Result<ObjectReader> {
        let path = self.cfg.remote_path(key);
        let permit = self
            .handles
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let handle = match c
            .sftp
            .open(path.as_str(), OpenFlags::READ, FileAttributes::empty())
            .await
        {
            Ok(h) => h.handle,
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {
                return Err(Error::not_found(format!(
                    "object {key} not found in {}",
                    self.cfg.target()
                )))
            }
            Err(e) => return Err(self.fail(c, &format!("open {path}"), e).await),
        };
        let size = match c.sftp.fstat(handle.as_str()).await {
            Ok(a) => a.attrs.size,
            Err(e) => {
                Self::close_quietly(c, handle).await;
                return Err(self.fail(c, &format!("stat {path}"), e).await);
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let conn = c.clone();
        let what = format!("sftp {}: read {path}", self.cfg.addr());
        let slot = self.conn.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let end = size.unwrap_or(u64::MAX);
            let mut next = offset;
            let mut reads = FuturesOrdered::new();
            loop {
                while reads.len() < READ_WINDOW && next < end {
                    let len = (end - next).min(READ_CHUNK as u64) as u32;
                    reads.push_back(read_range(conn.sftp.clone(), handle.clone(), next, len));
                    next += len as u64;
                }
                let Some(r) = reads.next().await else {
                    break;
                };
                match r {
                    Ok(data) => {
                        let short = (data.len() as u32) < READ_CHUNK;
                        let eof = data.is_empty();
                        if !eof && tx.send(Ok(Bytes::from(data))).await.is_err() {
                            break; // reader dropped
                        }
                        if size.is_none() && short {
                            break;
                        }
                        if eof {
                            if size.is_some() {
                                let e = Error::transient(format!("{what}: file ended early"));
                                let _ = tx.send(Err(io_err(&e))).await;
                            }
                            break;
                        }
                    }
                    Err(e) => {
                        let (e, lost) = map_sftp(&what, e);
                        if lost {
                            let mut slot = slot.lock().await;
                            if slot.as_ref().is_some_and(|x| Arc::ptr_eq(x, &conn)) {
                                *slot = None;
                            }
                        }
                        let _ = tx.send(Err(io_err(&e))).await;
                        break;
                    }
                }
            }
            drop(reads);
            let _ = conn.sftp.close(handle).await;
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(ObjectReader {
            reader: Box::new(tokio_util::io::StreamReader::new(Box::pin(stream))),
            remaining: size.map(|n| n.saturating_sub(offset)),
            version: None,
        })
    }

    async fn delete_inner(&self, c: &Arc<Conn>, keys: &[String]) -> Result<()> {
        let mut pending = keys.iter();
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < DELETE_CONCURRENCY {
                let Some(k) = pending.next() else { break };
                let path = self.cfg.remote_path(k);
                let sftp = c.sftp.clone();
                running.push(async move { (sftp.remove(path.as_str()).await, path) });
            }
            let Some((res, path)) = running.next().await else {
                break;
            };
            match res {
                Ok(_) => {}
                Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {}
                Err(e) => return Err(self.fail(c, &format!("delete {path}"), e).await),
            }
        }
        // Remove directories left empty (a deleted generation), deepest first, never the root.
        let mut dirs: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                k.trim_start_matches('/')
                    .rsplit_once('/')
                    .map(|(d, _)| d.to_string())
            })
            .collect();
        dirs.sort_unstable_by(|a, b| {
            b.matches('/')
                .count()
                .cmp(&a.matches('/').count())
                .then(b.cmp(a))
        });
        dirs.dedup();
        let mut tried = std::collections::HashSet::new();
        for d in dirs {
            let mut cur = Some(d);
            while let Some(dir) = cur {
                if !tried.insert(dir.clone()) {
                    break;
                }
                if c.sftp.rmdir(self.cfg.remote_path(&dir)).await.is_err() {
                    break;
                }
                cur = dir.rsplit_once('/').map(|(p, _)| p.to_string());
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Replica for SftpReplica {
    fn kind(&self) -> &'static str {
        "sftp"
    }

    fn target(&self) -> String {
        self.cfg.target()
    }

    async fn put(&self, key: &str, source: PutSource) -> Result<u64> {
        let c = self.conn().await?;
        self.put_inner(&c, key, source).await
    }

    async fn get(&self, key: &str) -> Result<ByteReader> {
        Ok(self.get_from(key, 0, None).await?.reader)
    }

    async fn get_from(
        &self,
        key: &str,
        offset: u64,
        _version: Option<&str>,
    ) -> Result<ObjectReader> {
        let c = self.conn().await?;
        self.get_inner(&c, key, offset).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let c = self.conn().await?;
        self.list_inner(&c, prefix).await
    }

    /// One `stat` (links followed, as the listing follows them).
    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let c = self.conn().await?;
        let path = self.cfg.remote_path(key);
        match c.sftp.stat(path.as_str()).await {
            Ok(a) if a.attrs.file_type() == FileType::File && !key.ends_with(".tmp") => {
                Ok(Some(ObjectMeta {
                    key: key.to_owned(),
                    size: a.attrs.size.unwrap_or(0),
                    modified: mtime(&a.attrs),
                }))
            }
            Ok(_) => Ok(None),
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(None),
            Err(e) => Err(self.fail(&c, &format!("stat {path}"), e).await),
        }
    }

    /// The directories below `prefix`: one `readdir`, whatever the history under them.
    async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        let c = self.conn().await?;
        self.list_names_inner(&c, prefix).await
    }

    async fn delete(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let c = self.conn().await?;
        self.delete_inner(&c, keys).await
    }

    async fn remove_stale_temporaries(&self) -> Result<usize> {
        let c = self.conn().await?;
        self.remove_stale_temporaries_inner(&c).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert!(dir_may_match("generations", "generations/"));
        assert!(dir_may_match("generations/abc", "generations/"));
        assert!(dir_may_match("generations/abc", "generations/abc"));
        assert!(!dir_may_match("generationsX", "generations/"));
        assert!(dir_may_match("generations", ""));
        assert_eq!(rel_join("", "a"), "a");
        assert_eq!(rel_join("a", "b"), "a/b");
        let t = temp_name("/r/k");
        assert!(t.starts_with("/r/k.") && t.ends_with(".tmp"));
        assert_ne!(temp_name("k"), temp_name("k"));
        let mut a = FileAttributes::empty();
        a.mtime = Some(1_700_000_000);
        assert_eq!(
            mtime(&a),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }
}

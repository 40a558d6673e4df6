//! Directory entries on disk: finding their databases at start (and on reload), and watching
//! the directories for databases created, removed and renamed while `replicate` runs.
//!
//! Which names count is decided by [`DirConfig::relative`] (pure, tested in walship-config);
//! this module adds the two facts only the disk knows: the file exists, and it is a SQLite
//! database in WAL mode (header bytes 18 and 19 are 2). A database the application has just
//! created in rollback mode becomes one when it switches to WAL, which creates its `-wal` file:
//! the watcher hears that and looks again.

use anyhow::{anyhow, Result};
use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use walship_config::{Config, DbConfig, DirConfig};

/// Whether `path` is a SQLite database in WAL mode (a missing or short file is not).
pub fn is_wal_database(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[..16] == b"SQLite format 3\0"
        && head[18] == 2
        && head[19] == 2
}

/// A directory entry's directory must exist and be readable when `replicate` starts: a typo
/// would otherwise back up nothing, silently.
pub fn check_dirs(cfg: &Config, file: &Path) -> Result<()> {
    for d in &cfg.dirs {
        let at = d.line.map(|l| format!(" line {l}:")).unwrap_or_default();
        match std::fs::metadata(&d.dir) {
            Err(e) => {
                return Err(anyhow!(
                    "{}:{at} dir {}: {e}",
                    file.display(),
                    d.dir.display()
                ))
            }
            Ok(m) if !m.is_dir() => {
                return Err(anyhow!(
                    "{}:{at} dir {} is not a directory",
                    file.display(),
                    d.dir.display()
                ))
            }
            Ok(_) => {}
        }
        std::fs::read_dir(&d.dir).map_err(|e| {
            anyhow!(
                "{}:{at} dir {} cannot be read: {e}",
                file.display(),
                d.dir.display()
            )
        })?;
    }
    Ok(())
}

/// Every database `replicate` runs: the configured ones, then those found under directory
/// entries (a database configured explicitly keeps its own entry's settings).
pub fn desired(cfg: &Config) -> Vec<DbConfig> {
    let mut out = cfg.dbs.clone();
    let mut seen: HashSet<PathBuf> = out.iter().map(|d| d.path.clone()).collect();
    for d in &cfg.dirs {
        let found = scan(d);
        if found.is_empty() {
            tracing::warn!(dir = %d.dir.display(), pattern = %d.pattern, "no database matches in directory yet");
        }
        for rel in found {
            let db = d.db(&rel);
            if seen.insert(db.path.clone()) {
                out.push(db);
            } else {
                tracing::debug!(db = %db.path.display(), "configured explicitly: its own entry applies");
            }
        }
    }
    out
}

/// The relative paths of the WAL-mode databases under `d`, sorted.
pub fn scan(d: &DirConfig) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![d.dir.clone()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read directory");
                continue;
            }
        };
        for e in entries.flatten() {
            let path = e.path();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                if d.descends_into(&e.file_name().to_string_lossy()) {
                    stack.push(path);
                }
                continue;
            }
            if let Some(rel) = database_at(d, &path) {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// `path`'s place in `d` when it is one of its databases now.
fn database_at(d: &DirConfig, path: &Path) -> Option<PathBuf> {
    match d.relative(path) {
        Ok(rel) if is_wal_database(path) => Some(rel),
        Ok(_) => {
            tracing::debug!(file = %path.display(), "matches the pattern but is not a SQLite database in WAL mode (yet): ignored");
            None
        }
        Err(walship_config::Skip::NoMatch) => {
            tracing::debug!(file = %path.display(), "does not match the pattern: ignored");
            None
        }
        Err(_) => None,
    }
}

/// What a change under a watched directory means for one database path.
#[derive(Debug, PartialEq)]
pub enum Change {
    /// `path` is (now) one of a directory entry's databases.
    Present(DbConfig),
    /// `path` is not (or no longer) a database of any directory entry.
    Absent(PathBuf),
}

/// Looks at one path after an event: the database it belongs to (a `-wal` event is about its
/// database) and whether that is a WAL-mode database of an entry now.
pub fn judge(cfg: &Config, path: &Path) -> Option<Change> {
    let db_path = database_of(path);
    if cfg.dbs.iter().any(|d| d.path == db_path) {
        return None;
    }
    for d in &cfg.dirs {
        if d.relative(&db_path).is_ok() {
            return Some(match database_at(d, &db_path) {
                Some(rel) => Change::Present(d.db(&rel)),
                None => Change::Absent(db_path),
            });
        }
    }
    None
}

/// The database a companion file belongs to (`x.db-wal` -> `x.db`), else `path` itself.
fn database_of(path: &Path) -> PathBuf {
    let name = path.as_os_str().to_string_lossy();
    for suffix in ["-wal", "-shm", "-journal"] {
        if let Some(db) = name.strip_suffix(suffix) {
            return PathBuf::from(db);
        }
    }
    path.to_path_buf()
}

/// An event from the watcher.
#[derive(Debug)]
pub enum Event {
    /// Something happened to this path (created, removed, renamed to or from).
    Path(PathBuf),
    /// Events were lost (the kernel queue overflowed) or a directory appeared: scan again.
    Rescan,
}

/// Watches the directories of every `watch: true` entry (their subdirectories too when
/// recursive) through one inotify instance read by a tokio task; dropping it stops watching.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_CLOSE_WRITE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

impl Watcher {
    /// `None` when no entry watches. Events arrive on `tx`.
    pub fn start(dirs: &[DirConfig], tx: mpsc::UnboundedSender<Event>) -> Result<Option<Watcher>> {
        let watched: Vec<DirConfig> = dirs.iter().filter(|d| d.watch).cloned().collect();
        if watched.is_empty() {
            return Ok(None);
        }
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(anyhow!(
                "cannot watch directories: inotify: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: fd was just returned by inotify_init1 and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut state = State {
            wds: std::collections::HashMap::new(),
            dirs: watched,
        };
        for d in state.dirs.clone() {
            state.add_tree(&fd, &d.dir, &d)?;
        }
        // SAFETY: an OwnedFd is a valid descriptor that stays open, unchanged, while it lives,
        // and the AsyncFd owns it.
        let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow!("cannot watch directories: {e}"))?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let Ok(mut guard) = afd.readable().await else {
                    return;
                };
                let raw = afd.get_ref().as_raw_fd();
                // SAFETY: reading into an owned buffer of the given length.
                let n = unsafe { libc::read(raw, buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        guard.clear_ready();
                        continue;
                    }
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    tracing::error!(error = %e, "directory watch failed; new databases need a reload (SIGHUP)");
                    return;
                }
                if state
                    .events(afd.get_ref(), &buf[..n as usize], &tx)
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Some(Watcher { task }))
    }
}

struct State {
    /// Watch descriptor -> (directory, index of its entry).
    wds: std::collections::HashMap<i32, (PathBuf, usize)>,
    dirs: Vec<DirConfig>,
}

impl State {
    fn add_tree(&mut self, fd: &OwnedFd, root: &Path, d: &DirConfig) -> Result<()> {
        let idx = self.dirs.iter().position(|x| x.dir == d.dir).unwrap_or(0);
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let c = CString::new(dir.as_os_str().as_bytes())?;
            // SAFETY: valid descriptor and NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), MASK) };
            if wd < 0 {
                let e = std::io::Error::last_os_error();
                if dir == d.dir {
                    return Err(anyhow!("cannot watch dir {}: {e}", dir.display()));
                }
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch subdirectory");
                continue;
            }
            self.wds.insert(wd, (dir.clone(), idx));
            if d.recursive {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir())
                        && d.descends_into(&e.file_name().to_string_lossy())
                    {
                        stack.push(e.path());
                    }
                }
            }
        }
        Ok(())
    }

    /// Err when the receiver is gone.
    fn events(
        &mut self,
        fd: &OwnedFd,
        buf: &[u8],
        tx: &mpsc::UnboundedSender<Event>,
    ) -> Result<(), ()> {
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut off = 0;
        while off + header <= buf.len() {
            // SAFETY: the kernel wrote whole events; read_unaligned copes with the byte buffer.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let name_bytes = &buf[off + header..(off + header + ev.len as usize).min(buf.len())];
            off += header + ev.len as usize;
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                tracing::warn!("directory events overflowed: scanning again");
                tx.send(Event::Rescan).map_err(|_| ())?;
                continue;
            }
            let Some((dir, idx)) = self.wds.get(&ev.wd).cloned() else {
                continue;
            };
            if ev.mask & libc::IN_IGNORED != 0 {
                self.wds.remove(&ev.wd);
                continue;
            }
            if ev.mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
                if Some(&dir) == self.dirs.get(idx).map(|d| &d.dir) {
                    tracing::error!(dir = %dir.display(), "watched directory removed or moved: its databases are no longer found");
                }
                tx.send(Event::Rescan).map_err(|_| ())?;
                continue;
            }
            let name_len = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            if name_len == 0 {
                continue;
            }
            let path = dir.join(std::ffi::OsStr::from_bytes(&name_bytes[..name_len]));
            if ev.mask & libc::IN_ISDIR != 0 {
                let d = self.dirs[idx].clone();
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 && d.descends_into(&name) {
                    // Files may have appeared before the watch: the rescan finds them.
                    if let Err(e) = self.add_tree(fd, &path, &d) {
                        tracing::warn!(dir = %path.display(), error = %format!("{e:#}"), "cannot watch subdirectory");
                    }
                    tx.send(Event::Rescan).map_err(|_| ())?;
                } else if ev.mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
                    tx.send(Event::Rescan).map_err(|_| ())?;
                }
                continue;
            }
            tx.send(Event::Path(path)).map_err(|_| ())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companion_events_are_about_their_database() {
        assert_eq!(database_of(Path::new("/t/a.db-wal")), Path::new("/t/a.db"));
        assert_eq!(database_of(Path::new("/t/a.db-shm")), Path::new("/t/a.db"));
        assert_eq!(database_of(Path::new("/t/a.db")), Path::new("/t/a.db"));
    }

    #[test]
    fn only_wal_mode_databases_count() {
        let d = tempfile::tempdir().unwrap();
        let wal = d.path().join("w.db");
        let c = rusqlite::Connection::open(&wal).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x);")
            .unwrap();
        let rollback = d.path().join("r.db");
        rusqlite::Connection::open(&rollback)
            .unwrap()
            .execute_batch("CREATE TABLE t(x);")
            .unwrap();
        std::fs::write(d.path().join("junk.db"), b"not a database at all, no").unwrap();
        std::fs::write(d.path().join("empty.db"), b"").unwrap();
        assert!(is_wal_database(&wal));
        for p in ["r.db", "junk.db", "empty.db", "missing.db"] {
            assert!(!is_wal_database(&d.path().join(p)), "{p}");
        }
        let entry = DirConfig {
            dir: d.path().to_path_buf(),
            pattern: "*.db".into(),
            recursive: false,
            watch: false,
            meta_dir: None,
            template: DbConfig::default(),
            line: None,
        };
        assert_eq!(scan(&entry), vec![PathBuf::from("w.db")]);
    }
}

//! Wake a database's monitor when its directory changes, through one inotify instance for the
//! whole process: a monitor arms its subscription, syncs, and sleeps until the first change. An
//! idle database costs nothing, a burst is seen at once, and a busy one costs one wake per sync
//! rather than one per commit (per-commit wakes were most of walship's CPU at a steady 200
//! tx/s). Databases that share a directory are told apart by the event's file name (see
//! [`Armed`]), so a commit wakes its own database's monitor and shipper only.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::Notify;

struct Inotify {
    fd: i32,
    /// Watch descriptor -> who waits on it. A one-shot watch fires once, then is gone.
    armed: Mutex<HashMap<i32, Armed>>,
    /// Database directory -> the databases that have watched it. A directory of one database
    /// keeps one-shot watches (its monitor's wake-ups cost one event each, not one per write);
    /// once a second database appears, its watch becomes persistent (see [`Armed`]).
    dir_dbs: Mutex<HashMap<CString, std::collections::HashSet<OsString>>>,
}

/// The subscribers of one directory's watch.
///
/// Many databases can share a directory (a directory entry of thousands of tenants): a commit
/// to one must wake that database's monitor and shipper only, not every monitor of the
/// directory (which, with 1,000 databases and 10 of them written, cost a quarter of a core and
/// hundreds of blocking threads). So subscribers of the database directory name their database
/// and an event wakes the ones whose database it is about. Such a shared directory's watch is
/// persistent: a one-shot watch fired by another database's event would be gone until re-added,
/// and a commit in that gap woke nobody (seen as an application TRUNCATE checkpoint that timed
/// out waiting for a monitor that slept). Each subscriber still wakes once per arm, so a busy
/// database costs one wake per sync; only this thread reads its other events. A directory of
/// one database, and meta and shadow directories, keep one-shot watches, whose event wakes
/// everyone on them.
struct Armed {
    dir: CString,
    mask: u32,
    /// Woken by any event on the watch (meta and shadow directories: one database each).
    any: Vec<Arc<Notify>>,
    /// Woken by events about one database (its file, `-wal`, `-shm`, `-journal`, meta dir).
    by_db: HashMap<OsString, Vec<Arc<Notify>>>,
}

impl Armed {
    fn is_empty(&self) -> bool {
        self.any.is_empty() && self.by_db.is_empty()
    }

    fn wake_all(self) {
        for n in self
            .any
            .into_iter()
            .chain(self.by_db.into_values().flatten())
        {
            n.notify_one();
        }
    }

    fn remove(&mut self, notify: &Arc<Notify>) {
        self.any.retain(|n| !Arc::ptr_eq(n, notify));
        for v in self.by_db.values_mut() {
            v.retain(|n| !Arc::ptr_eq(n, notify));
        }
        self.by_db.retain(|_, v| !v.is_empty());
    }
}

/// The database an event's file name is about: `x.db-wal`, `x.db-shm`, `x.db-journal` and the
/// meta directory `.x.db-litestream` are all about `x.db`.
fn database_of(name: &OsStr) -> &OsStr {
    let mut b = name.as_bytes();
    if let Some(rest) = b
        .strip_prefix(b".")
        .and_then(|r| r.strip_suffix(b"-litestream"))
    {
        b = rest;
    }
    for suffix in [&b"-wal"[..], b"-shm", b"-journal"] {
        if let Some(rest) = b.strip_suffix(suffix) {
            b = rest;
            break;
        }
    }
    OsStr::from_bytes(b)
}

impl Inotify {
    fn armed(&self) -> MutexGuard<'_, HashMap<i32, Armed>> {
        self.armed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn instance() -> Option<&'static Inotify> {
    static INSTANCE: OnceLock<Option<Inotify>> = OnceLock::new();
    INSTANCE
        .get_or_init(|| {
            // SAFETY: plain syscall; the descriptor is owned by the process-wide instance.
            let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
            if fd < 0 {
                tracing::warn!(error = %std::io::Error::last_os_error(), "inotify unavailable; polling at monitor-interval");
                return None;
            }
            let spawned = std::thread::Builder::new()
                .name("walship-inotify".into())
                .spawn(move || read_loop(fd));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "inotify thread unavailable; polling at monitor-interval");
                return None;
            }
            Some(Inotify {
                fd,
                armed: Mutex::new(HashMap::new()),
                dir_dbs: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
}

fn read_loop(fd: i32) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: reading into an owned buffer of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let Some(inst) = instance() else { return };
        let n = n as usize;
        let mut off = 0;
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut armed = inst.armed();
        while off + header <= n {
            // SAFETY: the kernel wrote whole events; read_unaligned copes with the byte buffer.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let name = &buf[off + header..(off + header + ev.len as usize).min(n)];
            off += header + ev.len as usize;
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                // Events were lost: everyone looks.
                for (_, a) in armed.drain() {
                    a.wake_all();
                }
                continue;
            }
            let persistent = armed
                .get(&ev.wd)
                .is_some_and(|a| a.mask & libc::IN_ONESHOT == 0);
            if !persistent || ev.mask & libc::IN_IGNORED != 0 || name.is_empty() {
                // A one-shot watch that fired, a watch that is gone (its directory removed), or
                // an event about the directory itself: everyone on it looks.
                if let Some(a) = armed.remove(&ev.wd) {
                    let keep = persistent && ev.mask & libc::IN_IGNORED == 0;
                    let (dir, mask) = (a.dir.clone(), a.mask);
                    a.wake_all();
                    if keep {
                        armed.insert(
                            ev.wd,
                            Armed {
                                dir,
                                mask,
                                any: Vec::new(),
                                by_db: HashMap::new(),
                            },
                        );
                    }
                }
                continue;
            }
            let Some(a) = armed.get_mut(&ev.wd) else {
                continue;
            };
            for n in a.any.drain(..) {
                n.notify_one();
            }
            for n in a
                .by_db
                .remove(database_of(OsStr::from_bytes(name)))
                .into_iter()
                .flatten()
            {
                n.notify_one();
            }
        }
    }
}

/// A database's change subscription.
pub struct WalWatch {
    dir: CString,
    /// The database's file name: events about other databases of the directory do not wake it.
    db: OsString,
    /// Notified once per armed watch that fires; the monitor waits on it.
    pub notify: Arc<Notify>,
    /// False when inotify is unavailable: callers poll.
    pub active: bool,
}

impl WalWatch {
    /// A subscription to changes of the database whose WAL is `wal` (in its directory);
    /// nothing wakes it until it is armed.
    pub fn new(wal: &Path) -> WalWatch {
        let dir: PathBuf = wal.parent().unwrap_or(Path::new("/")).to_path_buf();
        let dir = CString::new(dir.as_os_str().as_bytes()).unwrap_or_default();
        let db = database_of(wal.file_name().unwrap_or_default()).to_os_string();
        WalWatch {
            dir,
            db,
            notify: Arc::new(Notify::new()),
            active: instance().is_some(),
        }
    }

    /// Asks for one wake-up at the next change of the database (its file, WAL, shared memory,
    /// journal or default meta directory). Call before syncing, so a commit made during the
    /// sync is not missed. Returns false when the watch cannot be set (then poll).
    pub fn arm(&self) -> bool {
        let Some(inst) = instance() else { return false };
        // One-shot while the directory holds one database, persistent once it is shared (see
        // [`Armed`]); each subscriber is woken once per arm either way.
        let shared = {
            let mut m = inst.dir_dbs.lock().unwrap_or_else(|p| p.into_inner());
            let dbs = m.entry(self.dir.clone()).or_default();
            if !dbs.contains(&self.db) {
                dbs.insert(self.db.clone());
            }
            dbs.len() > 1
        };
        let mut mask = libc::IN_MODIFY
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM;
        if !shared {
            mask |= libc::IN_ONESHOT;
        }
        self.arm_dir(&self.dir, mask, Some(&self.db))
    }

    /// Also wakes at the next change inside `dir` or of `dir` itself: the meta directory and the
    /// current shadow WAL's directory, so damage to them is seen at once even when the database
    /// is idle. Call it after a sync, since walship writes there itself while syncing.
    pub fn arm_also(&self, dir: &Path) -> bool {
        let Ok(dir) = CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        let mask = libc::IN_MODIFY
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF
            | libc::IN_ONESHOT;
        self.arm_dir(&dir, mask, None)
    }

    fn arm_dir(&self, dir: &CString, mask: u32, db: Option<&OsStr>) -> bool {
        let Some(inst) = instance() else { return false };
        let mut armed = inst.armed();
        // SAFETY: valid descriptor and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(inst.fd, dir.as_ptr(), mask) };
        if wd < 0 {
            return false;
        }
        let a = armed.entry(wd).or_insert_with(|| Armed {
            dir: dir.clone(),
            mask,
            any: Vec::new(),
            by_db: HashMap::new(),
        });
        // The kernel keeps one mask per directory: the last arm's.
        a.mask = mask;
        let list = match db {
            Some(db) => a.by_db.entry(db.to_os_string()).or_default(),
            None => &mut a.any,
        };
        if !list.iter().any(|n| Arc::ptr_eq(n, &self.notify)) {
            list.push(self.notify.clone());
        }
        true
    }
}

impl Drop for WalWatch {
    fn drop(&mut self) {
        if let Some(inst) = instance() {
            let mut armed = inst.armed();
            for a in armed.values_mut() {
                a.remove(&self.notify);
            }
            armed.retain(|_, a| !a.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_wake_per_arm() {
        let d = tempfile::tempdir().unwrap();
        let wal = d.path().join("x.db-wal");
        let w = WalWatch::new(&wal);
        assert!(w.active);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), w.notify.notified())
                .await
                .is_err()
        );
        assert!(w.arm());
        std::fs::write(&wal, b"1").unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.notify.notified())
            .await
            .expect("woken");
        // Not re-armed: further writes do not wake.
        std::fs::write(&wal, b"2").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), w.notify.notified())
                .await
                .is_err()
        );
        assert!(w.arm());
        std::fs::write(&wal, b"3").unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.notify.notified())
            .await
            .expect("woken again");
    }

    #[test]
    fn events_name_their_database() {
        for (name, db) in [
            ("x.db", "x.db"),
            ("x.db-wal", "x.db"),
            ("x.db-shm", "x.db"),
            ("x.db-journal", "x.db"),
            (".x.db-litestream", "x.db"),
            ("x.db.tmp", "x.db.tmp"),
        ] {
            assert_eq!(database_of(OsStr::new(name)), OsStr::new(db), "{name}");
        }
    }

    /// Databases sharing a directory: a commit to one wakes only its subscriber, and the other
    /// stays armed (the one-shot watch is re-armed for it) until its own database changes.
    #[tokio::test]
    async fn a_shared_directory_wakes_only_the_database_that_changed() {
        let d = tempfile::tempdir().unwrap();
        let (wal_a, wal_b) = (d.path().join("a.db-wal"), d.path().join("b.db-wal"));
        let (a, b) = (WalWatch::new(&wal_a), WalWatch::new(&wal_b));
        let quiet = |w: &WalWatch| {
            let n = w.notify.clone();
            async move {
                tokio::time::timeout(Duration::from_millis(200), n.notified())
                    .await
                    .is_err()
            }
        };
        assert!(a.arm() && b.arm());
        for i in 0..3u8 {
            std::fs::write(&wal_a, [i]).unwrap();
            tokio::time::timeout(Duration::from_secs(5), a.notify.notified())
                .await
                .expect("a woken");
            assert!(quiet(&b).await, "b woken by a's write {i}");
            assert!(a.arm());
        }
        // Another database's file, a temporary: neither wakes.
        std::fs::write(d.path().join("c.db"), b"x").unwrap();
        assert!(quiet(&a).await && quiet(&b).await);
        std::fs::write(&wal_b, b"1").unwrap();
        tokio::time::timeout(Duration::from_secs(5), b.notify.notified())
            .await
            .expect("b still armed and woken by its own write");
        // a was armed again above and has not changed since.
        assert!(quiet(&a).await);
        std::fs::write(d.path().join("a.db"), b"1").unwrap();
        tokio::time::timeout(Duration::from_secs(5), a.notify.notified())
            .await
            .expect("a woken by its database file");
    }
}

//! Wake a database's monitor when its directory changes, through one inotify instance for the
//! whole process, with one-shot watches: a monitor arms its watch, syncs, and sleeps until the
//! first change. An idle database costs nothing, a burst is seen at once, and a busy one costs one
//! event per sync rather than one per commit (per-commit events were most of walship's CPU at a
//! steady 200 tx/s).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::Notify;

struct Inotify {
    fd: i32,
    /// Watch descriptor -> monitors armed on it. A one-shot watch fires once, then is gone.
    armed: Mutex<HashMap<i32, Vec<Arc<Notify>>>>,
}

impl Inotify {
    fn armed(&self) -> MutexGuard<'_, HashMap<i32, Vec<Arc<Notify>>>> {
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
            Some(Inotify { fd, armed: Mutex::new(HashMap::new()) })
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
        while off + header <= n {
            // SAFETY: the kernel wrote whole events; read_unaligned copes with the byte buffer.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            off += header + ev.len as usize;
            let woken = inst.armed().remove(&ev.wd);
            for n in woken.into_iter().flatten() {
                n.notify_one();
            }
        }
    }
}

/// A database's change subscription.
pub struct WalWatch {
    dir: CString,
    /// Notified once per armed watch that fires; the monitor waits on it.
    pub notify: Arc<Notify>,
    /// False when inotify is unavailable: callers poll.
    pub active: bool,
}

impl WalWatch {
    /// A subscription to changes in the directory of `wal`; nothing wakes it until it is armed.
    pub fn new(wal: &Path) -> WalWatch {
        let dir: PathBuf = wal.parent().unwrap_or(Path::new("/")).to_path_buf();
        let dir = CString::new(dir.as_os_str().as_bytes()).unwrap_or_default();
        WalWatch {
            dir,
            notify: Arc::new(Notify::new()),
            active: instance().is_some(),
        }
    }

    /// Asks for one wake-up at the next change in the database's directory. Call before
    /// syncing, so a commit made during the sync is not missed. Returns false when the watch
    /// cannot be set (then poll).
    pub fn arm(&self) -> bool {
        let mask = libc::IN_MODIFY
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_ONESHOT;
        self.arm_dir(&self.dir, mask)
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
        self.arm_dir(&dir, mask)
    }

    fn arm_dir(&self, dir: &CString, mask: u32) -> bool {
        let Some(inst) = instance() else { return false };
        let mut armed = inst.armed();
        // SAFETY: valid descriptor and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(inst.fd, dir.as_ptr(), mask) };
        if wd < 0 {
            return false;
        }
        let list = armed.entry(wd).or_default();
        if !list.iter().any(|n| Arc::ptr_eq(n, &self.notify)) {
            list.push(self.notify.clone());
        }
        true
    }
}

impl Drop for WalWatch {
    fn drop(&mut self) {
        if let Some(inst) = instance() {
            for v in inst.armed().values_mut() {
                v.retain(|n| !Arc::ptr_eq(n, &self.notify));
            }
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
}

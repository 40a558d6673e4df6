//! Wake a database's monitor when its WAL changes, through one inotify watcher for the whole
//! process: idle databases cost nothing, and a burst is seen at once instead of at the next poll.

use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::Notify;

type Targets = HashMap<PathBuf, Vec<Arc<Notify>>>;
type WatcherState = Option<(notify::RecommendedWatcher, HashMap<PathBuf, usize>)>;

/// WAL path -> monitors to wake. The only lock the watcher's callback takes.
fn targets() -> MutexGuard<'static, Targets> {
    static TARGETS: OnceLock<Mutex<Targets>> = OnceLock::new();
    TARGETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The watcher and its watched directories (with counts). Never held while `targets` is
/// wanted by the callback thread: `watch()` waits on that thread, so a shared lock would deadlock.
fn watcher() -> MutexGuard<'static, WatcherState> {
    static WATCHER: OnceLock<Mutex<WatcherState>> = OnceLock::new();
    WATCHER
        .get_or_init(|| {
            let w = notify::recommended_watcher(|res: notify::Result<notify::Event>| {
                let Ok(ev) = res else { return };
                if matches!(ev.kind, EventKind::Access(_)) {
                    return;
                }
                let t = targets();
                for p in &ev.paths {
                    for n in t.get(p).into_iter().flatten() {
                        n.notify_one();
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "file change notification unavailable; polling at monitor-interval"))
            .ok();
            Mutex::new(w.map(|w| (w, HashMap::new())))
        })
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// A subscription to changes of one WAL file; unsubscribes on drop.
pub struct WalWatch {
    wal: PathBuf,
    dir: PathBuf,
    pub notify: Arc<Notify>,
    /// False when the kernel watch could not be set up: callers must poll.
    pub active: bool,
}

impl WalWatch {
    pub fn new(wal: &Path) -> WalWatch {
        let dir = wal.parent().unwrap_or(Path::new("/")).to_path_buf();
        let notify = Arc::new(Notify::new());
        let active = {
            let mut w = watcher();
            match w.as_mut() {
                None => false,
                Some((watcher, dirs)) => {
                    let ok = dirs.contains_key(&dir)
                        || match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; polling at monitor-interval");
                                false
                            }
                        };
                    if ok {
                        *dirs.entry(dir.clone()).or_default() += 1;
                    }
                    ok
                }
            }
        };
        if active {
            targets()
                .entry(wal.to_path_buf())
                .or_default()
                .push(notify.clone());
        }
        WalWatch {
            wal: wal.to_path_buf(),
            dir,
            notify,
            active,
        }
    }
}

impl Drop for WalWatch {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        {
            let mut t = targets();
            if let Some(v) = t.get_mut(&self.wal) {
                v.retain(|n| !Arc::ptr_eq(n, &self.notify));
                if v.is_empty() {
                    t.remove(&self.wal);
                }
            }
        }
        let mut w = watcher();
        if let Some((watcher, dirs)) = w.as_mut() {
            let last = dirs.get_mut(&self.dir).map(|c| {
                *c -= 1;
                *c == 0
            });
            if last == Some(true) {
                dirs.remove(&self.dir);
                let _ = watcher.unwatch(&self.dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_on_wal_write_only() {
        let d = tempfile::tempdir().unwrap();
        let wal = d.path().join("x.db-wal");
        let w = WalWatch::new(&wal);
        assert!(w.active);
        std::fs::write(d.path().join("other"), b"1").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), w.notify.notified())
                .await
                .is_err()
        );
        std::fs::write(&wal, b"1").unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.notify.notified())
            .await
            .expect("woken");
    }
}

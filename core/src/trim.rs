//! Hands memory freed after a burst back to the system.
//!
//! A thousand tenants start at once: every database attaches, copies and snapshots, then goes
//! idle and is released. The memory of that burst is freed, but glibc keeps freed heap pages
//! resident unless they sit at the top of the heap, so the process stayed at its start-up peak
//! (walship-bench `many`, 1,000 databases: 233 MiB idle). `malloc_trim` returns every whole free
//! page. It runs once, two seconds after the last of a burst of events (a snapshot written, a
//! database released), so an idle process never wakes for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// How long after the event the trim runs; events meanwhile join it.
const SETTLE: Duration = Duration::from_secs(2);

/// Notes that a burst of allocations may just have ended; trims once things settle.
pub fn after_burst() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if SCHEDULED.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the flag however the task ends (a runtime shut down mid-sleep included).
        struct Clear;
        impl Drop for Clear {
            fn drop(&mut self) {
                SCHEDULED.store(false, Ordering::Release);
            }
        }
        rt.spawn(async {
            let clear = Clear;
            tokio::time::sleep(SETTLE).await;
            drop(clear);
            // SAFETY: malloc_trim only walks glibc's own arenas; any thread may call it.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        });
    }
}

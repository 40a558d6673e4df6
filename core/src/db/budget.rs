//! The descriptor budget: how many databases may be attached at once.
//!
//! An attached database costs up to [`PER_ATTACHED`] descriptors (two SQLite connections, each
//! with the database file and the WAL open, `-shm`, walship's own descriptors of the database
//! file and `-shm`, the shadow WAL it copies into, and a snapshot's files); a released one ([`super::Db::release`]) costs
//! only its instance lock. Started on ten thousand databases, walship would attach them all at
//! once and run out of descriptors long before the idle ones are released ("Too many open
//! files" on the database it opens next, and on the replicas' sockets). With the budget, a
//! database that would exceed it waits for a slot, and waiting asks the idle attached ones to
//! release at once instead of after `release-after` ([`Budget::pressure`]): start-up then runs
//! through the set a few thousand at a time, bounded by snapshot uploads, not by the limit.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

/// Descriptors one attached database may hold beyond its instance lock: 8 while idle
/// (measured), and about 4 more while its replicas take a snapshot (each reads a duplicate of
/// the database descriptor and writes or sends the compressed copy). Counted at the idle figure,
/// 10,000 databases starting at once ran out: 1,317 attached and snapshotting took 16,000
/// descriptors beside the 10,000 locks.
pub const PER_ATTACHED: usize = 12;

/// Descriptors kept for everything else: replica connections, logs, the metrics server, files a
/// shipper has open for a moment (a local-directory replica writes on the blocking pool, up to
/// 512 threads, two files each).
const RESERVE: usize = 1024;

/// A waiter looks again this often even without a freed slot (a database removed raises the
/// limit without freeing one).
const RECHECK: Duration = Duration::from_secs(10);

/// The descriptor limit of the process, shared by every database it monitors.
pub struct Budget {
    nofile: usize,
    inner: Mutex<Inner>,
    freed: Notify,
    pressure: Notify,
}

#[derive(Default)]
struct Inner {
    /// Databases holding a slot.
    attached: usize,
    /// Databases that exist (each holds its instance lock).
    dbs: usize,
    /// Tasks in [`Budget::take`].
    waiting: usize,
    /// While a set of databases starts: how many there will be ([`Budget::expecting`]).
    floor: usize,
    /// Logged once per stretch of waiting.
    told: bool,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Budget")
            .field("nofile", &self.nofile)
            .field("attached", &inner.attached)
            .field("dbs", &inner.dbs)
            .finish()
    }
}

/// The right to hold one database attached; given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Budget>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.lock().attached -= 1;
        self.0.freed.notify_one();
    }
}

/// Counts one database against the budget while it exists (its instance lock).
#[derive(Debug)]
pub(super) struct Member(Arc<Budget>);

impl Drop for Member {
    fn drop(&mut self) {
        self.0.lock().dbs -= 1;
        self.0.freed.notify_one();
    }
}

/// See [`Budget::expecting`].
#[derive(Debug)]
pub struct Expecting(Arc<Budget>);

impl Drop for Expecting {
    fn drop(&mut self) {
        self.0.lock().floor = 0;
        // The limit may have risen by many slots.
        self.0.freed.notify_waiters();
    }
}

impl Budget {
    /// A budget for a process allowed `nofile` open descriptors.
    pub fn new(nofile: usize) -> Arc<Budget> {
        Arc::new(Budget {
            nofile,
            inner: Mutex::new(Inner::default()),
            freed: Notify::new(),
            pressure: Notify::new(),
        })
    }

    /// The budget of this process, from its soft `RLIMIT_NOFILE` as it is at first use (the CLI
    /// raises it to the hard limit before).
    pub fn process() -> Arc<Budget> {
        static PROCESS: OnceLock<Arc<Budget>> = OnceLock::new();
        PROCESS.get_or_init(|| Budget::new(nofile_limit())).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many databases may be attached with `dbs` databases in all: what the limit leaves
    /// after the reserve and one lock per database, but never less than one.
    fn limit(&self, dbs: usize) -> usize {
        let reserve = RESERVE.min(self.nofile / 8);
        (self.nofile.saturating_sub(reserve + dbs) / PER_ATTACHED).max(1)
    }

    /// Counts `n` more databases from now on, before they are opened: a set started one by one
    /// would otherwise attach its first databases against a limit that the last ones' locks
    /// then lower, and run out of descriptors on the way (measured, 10,000 databases). Until
    /// the guard is dropped.
    pub fn expecting(self: &Arc<Self>, n: usize) -> Expecting {
        let mut inner = self.lock();
        inner.floor = inner.dbs + n;
        Expecting(self.clone())
    }

    pub(super) fn member(self: &Arc<Self>) -> Member {
        self.lock().dbs += 1;
        Member(self.clone())
    }

    /// A slot if one is free now.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let mut inner = self.lock();
        let limit = self.limit(inner.dbs.max(inner.floor));
        if inner.attached < limit {
            inner.attached += 1;
            if inner.attached * 2 < limit {
                inner.told = false;
            }
            return Some(Slot(self.clone()));
        }
        if !inner.told {
            inner.told = true;
            tracing::info!(
                attached = inner.attached,
                databases = inner.dbs,
                nofile = self.nofile,
                "descriptor budget reached: databases wait for a slot and idle ones are released early (raise LimitNOFILE to attach more at once)"
            );
        }
        None
    }

    /// A slot even over the limit, for a database that never gives its slot back
    /// (`release-after: 0s`, the default of `path:` entries): making it wait would stop it for
    /// good, where before the budget it simply opened its files. It still counts, so databases
    /// that can be released wait for it instead.
    pub fn take_anyway(self: &Arc<Self>) -> Slot {
        self.lock().attached += 1;
        Slot(self.clone())
    }

    /// Waits for a slot.
    pub async fn take(self: &Arc<Self>) -> Slot {
        struct Waiting<'a>(&'a Budget);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.lock().waiting -= 1;
            }
        }
        let first = {
            let mut inner = self.lock();
            inner.waiting += 1;
            inner.waiting == 1
        };
        let _waiting = Waiting(self);
        if first {
            self.pressure.notify_waiters();
        }
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_take() {
                return slot;
            }
            let _ = tokio::time::timeout(RECHECK, freed).await;
        }
    }

    /// Signalled when databases begin to wait for a slot: an idle attached database should
    /// release now rather than after its `release-after`, and keep trying while
    /// [`Budget::contended`]. Only the start of a wait is signalled (every waiter looking again
    /// would wake every attached monitor): enable the `Notified` before looking at `contended`.
    pub fn pressure(&self) -> &Notify {
        &self.pressure
    }

    /// Whether databases are waiting for a slot: an idle attached database whose release was
    /// not possible yet tries again soon.
    pub fn contended(&self) -> bool {
        self.lock().waiting > 0
    }

    /// Databases attached now (for metrics and tests).
    pub fn attached(&self) -> usize {
        self.lock().attached
    }
}

/// The soft limit on open descriptors, or 1024 (the usual default) if it cannot be read.
fn nofile_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid, owned struct.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok || lim.rlim_cur == libc::RLIM_INFINITY {
        return if ok { usize::MAX / 2 } else { 1024 };
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_leaves_one_descriptor_per_database_and_the_reserve() {
        let b = Budget::new(20_000);
        assert_eq!(b.limit(0), (20_000 - 1024) / 12);
        assert_eq!(b.limit(10_000), (20_000 - 1024 - 10_000) / 12);
        // More databases than descriptors: one at a time still progresses.
        assert_eq!(b.limit(30_000), 1);
        // Databases about to start count before they are opened.
        let expecting = b.expecting(10_000);
        let first: Vec<_> = std::iter::from_fn(|| b.try_take()).collect();
        assert_eq!(first.len(), b.limit(10_000));
        drop(expecting);
        // A small limit keeps a proportional reserve.
        assert_eq!(Budget::new(1024).limit(100), (1024 - 128 - 100) / 12);
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_given_back_and_pressure_is_signalled() {
        let b = Budget::new(2 * PER_ATTACHED);
        let _members: Vec<_> = (0..3).map(|_| b.member()).collect();
        // (24 - 3 reserved - 3 locks) / 12 = 1 slot.
        let first = b.try_take().expect("one slot");
        assert!(b.try_take().is_none());
        let pressure = b.pressure().notified();
        tokio::pin!(pressure);
        pressure.as_mut().enable();
        assert!(!b.contended());
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.take().await }
        });
        tokio::time::timeout(Duration::from_secs(1), pressure)
            .await
            .expect("pressure signalled");
        assert!(b.contended());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken by the freed slot")
            .unwrap();
        assert_eq!(b.attached(), 1);
        assert!(!b.contended());
        drop(second);
        assert_eq!(b.attached(), 0);
    }
}

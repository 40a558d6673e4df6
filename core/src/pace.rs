//! How the monitor tells a busy writer from a quiet one: pure measurements, no I/O policy.
//!
//! Two measurements had to change after a saturating writer showed the WAL at 40-100k pages
//! (10 x max-checkpoint-page-count) for a second at a time:
//! - progress between syncs was read from the `-wal` file's length, which does not change after
//!   SQLite restarts the WAL (it writes from the start again), so the monitor waited out its whole
//!   monitor-interval while the writer refilled the old file; SQLite's WAL-index header in `-shm`
//!   says how many frames the current WAL holds, and its salts say whether it restarted;
//! - "busy" was judged from the one sync before, and the sync right after a restart copies next to
//!   nothing; a window of the last second of syncs does not forget a writer that fast.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Where the writer is: from the WAL-index header when it can be read, else the file length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalMark {
    /// Read from `-shm`'s WAL-index header: the frame count of the current life, restarts visible.
    Index {
        /// The WAL's salts as the index stores them (the header's big-endian bytes, read natively).
        salts: [u32; 2],
        /// Frames of the current WAL life as the index header counts them (SQLite's `mxFrame`).
        frames: u32,
        /// Page size plus the 24-byte frame header, in bytes.
        frame_size: u64,
    },
    /// The `-wal` file's length in bytes, when there is no readable index; blind to restarts,
    /// which rewrite the file from its start without shrinking it.
    Len(u64),
}

/// Size of one copy of the WAL-index header (`WalIndexHdr` in SQLite's wal.c).
const INDEX_HEADER: usize = 48;
/// `WALINDEX_MAX_VERSION`, the only version SQLite writes.
const INDEX_VERSION: u32 = 3007000;

/// Parses the first copy of the WAL-index header. SQLite keeps it in shared memory in the host's
/// byte order; it is read here without SQLite's locks, so a torn read is possible and the result
/// only ever decides when to sync next, never what is copied.
pub fn parse_index_header(b: &[u8]) -> Option<WalMark> {
    let b = b.get(..INDEX_HEADER)?;
    let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let is_init = b[12] != 0;
    if u32_at(0) != INDEX_VERSION || !is_init {
        return None;
    }
    let page = match u16::from_ne_bytes([b[14], b[15]]) {
        0 => return None,
        1 => 65536u64,
        p => u64::from(p),
    };
    Some(WalMark::Index {
        salts: [u32_at(32), u32_at(36)],
        frames: u32_at(16),
        frame_size: page + 24,
    })
}

/// Offset of SQLite's `nBackfill` in `-shm`: the first field after both copies of the header.
const BACKFILL_AT: usize = 2 * INDEX_HEADER;

/// The WAL-index header and how many of its frames are in the database file (SQLite's
/// `nBackfill`). Read without SQLite's locks: a caller holding the write lock (no commit, no
/// restart meanwhile) may rely on "every frame is backfilled", which only a restart undoes.
pub fn backfill(shm: &File) -> Option<(WalMark, u32)> {
    let mut buf = [0u8; BACKFILL_AT + 4];
    shm.read_exact_at(&mut buf, 0).ok()?;
    let mark = parse_index_header(&buf)?;
    let n = u32::from_ne_bytes(buf[BACKFILL_AT..].try_into().expect("4 bytes"));
    Some((mark, n))
}

/// Reads the writer's position: `-shm` header first, `-wal` length when there is no index.
///
/// `shm` must be a descriptor that stays open (`Db::shm_file`): closing a descriptor of `-shm`
/// would drop every POSIX lock this process holds on it, SQLite's included.
pub fn wal_mark(wal: &Path, shm: Option<&File>) -> WalMark {
    let mut buf = [0u8; INDEX_HEADER];
    if let Some(m) = shm
        .and_then(|f| f.read_exact_at(&mut buf, 0).ok())
        .and_then(|()| parse_index_header(&buf))
    {
        return m;
    }
    WalMark::Len(crate::db::wal_len(wal))
}

/// [`wal_mark`], and whether the next commit may restart the WAL: every frame of the current
/// life is backfilled (SQLite restarts the WAL at the first write after that, unless a reader
/// pins it). Unknown without a readable index, and then assumed.
pub fn wal_look(wal: &Path, shm: Option<&File>) -> (WalMark, bool) {
    match shm.and_then(backfill) {
        Some((mark @ WalMark::Index { frames, .. }, backfilled)) => (mark, backfilled >= frames),
        _ => (wal_mark(wal, shm), true),
    }
}

/// The shortest wait between two looks at the writer while the monitor coalesces a burst.
pub const MIN_LOOK: Duration = Duration::from_millis(100);
/// The longest: a writer that speeds up between two looks grows the WAL by at most this much of
/// its writing past the threshold (v0.3.13 looks once per monitor-interval, 1 s by default).
pub const MAX_LOOK: Duration = Duration::from_secs(1);

/// How long the monitor waits before it looks at the writer again while coalescing: `grown`
/// bytes were written in the `elapsed` since the window opened, and the window ends early at
/// `threshold`.
///
/// Each look is a wake-up of the process, and at 10 a second those wake-ups were a quarter of
/// walship's CPU at a steady 200 tx/s (sync-interval 1 s). So the first look, at [`MIN_LOOK`],
/// measures the writer's rate, and the next comes at half the time that rate needs to reach the
/// threshold, within [`MIN_LOOK`]..[`MAX_LOOK`]: a steady writer is looked at once per window, a
/// fast one as before. A WAL that the next commit may restart is looked at every [`MIN_LOOK`]:
/// the sync that follows a restart records the new index at once (see the monitor).
pub fn next_look(grown: u64, elapsed: Duration, threshold: u64, restart_next: bool) -> Duration {
    if restart_next || elapsed < MIN_LOOK || grown >= threshold {
        return MIN_LOOK;
    }
    if grown == 0 {
        return MAX_LOOK;
    }
    let eta = elapsed.as_secs_f64() * (threshold - grown) as f64 / grown as f64;
    Duration::from_secs_f64((eta / 2.0).min(MAX_LOOK.as_secs_f64())).max(MIN_LOOK)
}

/// The WAL-index shows salts other than those of the WAL the shadow follows: the WAL restarted
/// since the last sync (or was emptied and written again).
/// SQLite copies the salts into the index verbatim from the WAL header (big-endian bytes), unlike
/// the index's other fields.
pub fn restarted(shadow: Option<[u32; 2]>, now: WalMark) -> bool {
    let be = |x: u32| u32::from_be_bytes(x.to_ne_bytes());
    matches!((shadow, now), (Some(s), WalMark::Index { salts, frames, .. })
        if frames > 0 && [be(salts[0]), be(salts[1])] != s)
}

/// WAL bytes written between two marks. A restart in between counts the new WAL whole; a change
/// of kind (the index appeared or vanished) counts as "a lot", so the caller syncs.
pub fn grown(base: WalMark, now: WalMark) -> u64 {
    match (base, now) {
        (
            WalMark::Index {
                salts: s0,
                frames: f0,
                ..
            },
            WalMark::Index {
                salts: s1,
                frames: f1,
                frame_size,
            },
        ) => {
            let frames = if s0 == s1 { f1.saturating_sub(f0) } else { f1 };
            u64::from(frames) * frame_size
        }
        (WalMark::Len(a), WalMark::Len(b)) => b.saturating_sub(a),
        _ => u64::MAX,
    }
}

/// Bytes copied by the syncs of the last `window`.
#[derive(Debug)]
pub struct RateWindow {
    window: Duration,
    syncs: VecDeque<(Instant, u64)>,
    /// Set when the WAL outgrew the coalescing threshold before the interval ended.
    busy_until: Option<Instant>,
}

impl RateWindow {
    /// A window `window` long: syncs older than that stop counting.
    pub fn new(window: Duration) -> Self {
        RateWindow {
            window,
            syncs: VecDeque::new(),
            busy_until: None,
        }
    }

    /// Records that the writer outgrew the coalescing threshold within one wait: busy for the
    /// next `window`, whatever the syncs copy. Without it the copy rate decided alone, and a burst
    /// that the early sync cut in two could copy a little under `rate` in a second (two syncs of
    /// 0.3 and 3.8 MB: 3.9 MiB of a 35 MB/s writer), so its second half, under the threshold,
    /// waited out the whole monitor-interval (CI, pacing.rs, 10.4 s with a 10 s interval).
    pub fn outgrown(&mut self, now: Instant) {
        self.busy_until = Some(now + self.window);
    }

    /// Records a sync that copied `bytes`, and says whether the window's copy rate reached
    /// `rate` bytes per second.
    pub fn push(&mut self, now: Instant, bytes: u64, rate: f64) -> bool {
        self.syncs.push_back((now, bytes));
        while self
            .syncs
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.window)
        {
            self.syncs.pop_front();
        }
        let total: u64 = self.syncs.iter().map(|(_, b)| b).sum();
        self.busy_until.is_some_and(|t| now < t) || total as f64 >= rate * self.window.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_seen_from_index_salts_in_file_byte_order() {
        let index = |s1: u32, s2: u32, frames| WalMark::Index {
            salts: [
                u32::from_ne_bytes(s1.to_be_bytes()),
                u32::from_ne_bytes(s2.to_be_bytes()),
            ],
            frames,
            frame_size: 4120,
        };
        let shadow = Some([0x0102_0304, 0x0a0b_0c0d]);
        assert!(!restarted(shadow, index(0x0102_0304, 0x0a0b_0c0d, 7)));
        assert!(restarted(shadow, index(0x0102_0305, 0x1111_2222, 1)));
        assert!(
            !restarted(shadow, index(0x0102_0305, 0x1111_2222, 0)),
            "not written yet"
        );
        assert!(!restarted(None, index(1, 2, 3)));
        assert!(!restarted(shadow, WalMark::Len(100)));
    }

    fn header(version: u32, init: u8, page: u16, frames: u32, salts: [u32; 2]) -> [u8; 48] {
        let mut b = [0u8; 48];
        b[0..4].copy_from_slice(&version.to_ne_bytes());
        b[12] = init;
        b[14..16].copy_from_slice(&page.to_ne_bytes());
        b[16..20].copy_from_slice(&frames.to_ne_bytes());
        b[32..36].copy_from_slice(&salts[0].to_ne_bytes());
        b[36..40].copy_from_slice(&salts[1].to_ne_bytes());
        b
    }

    #[test]
    fn index_header_fields() {
        let m = parse_index_header(&header(3007000, 1, 4096, 17, [5, 6])).unwrap();
        assert_eq!(
            m,
            WalMark::Index {
                salts: [5, 6],
                frames: 17,
                frame_size: 4120
            }
        );
        let big = parse_index_header(&header(3007000, 1, 1, 2, [5, 6])).unwrap();
        assert!(matches!(
            big,
            WalMark::Index {
                frame_size: 65560,
                ..
            }
        ));
        assert_eq!(
            parse_index_header(&header(3007000, 0, 4096, 17, [5, 6])),
            None
        );
        assert_eq!(parse_index_header(&header(1, 1, 4096, 17, [5, 6])), None);
        assert_eq!(parse_index_header(&header(3007000, 1, 0, 17, [5, 6])), None);
        assert_eq!(parse_index_header(&[0u8; 10]), None);
    }

    /// The bug this module exists for: after a restart the file length stands still while the
    /// new WAL fills; the index header shows the new frames.
    #[test]
    fn restart_counts_the_new_wal() {
        let m = |frames, salt| WalMark::Index {
            salts: [salt, 9],
            frames,
            frame_size: 4120,
        };
        assert_eq!(grown(m(1000, 1), m(1500, 1)), 500 * 4120);
        assert_eq!(grown(m(40_000, 1), m(1500, 2)), 1500 * 4120);
        assert_eq!(grown(m(1500, 1), m(1000, 1)), 0);
        assert_eq!(grown(WalMark::Len(10), WalMark::Len(30)), 20);
        assert_eq!(grown(WalMark::Len(30), WalMark::Len(10)), 0);
        assert_eq!(grown(WalMark::Len(30), m(1, 1)), u64::MAX);
    }

    /// A WAL-mode database in `dir` without automatic checkpoints, its `-wal` path and its `-shm`
    /// open for reading.
    fn wal_db(dir: &Path) -> (rusqlite::Connection, std::path::PathBuf, File) {
        let c = rusqlite::Connection::open(dir.join("a.db")).unwrap();
        c.execute_batch("PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);")
            .unwrap();
        let shm = File::open(dir.join("a.db-shm")).unwrap();
        (c, dir.join("a.db-wal"), shm)
    }

    #[test]
    fn real_sqlite_index_header_tracks_frames_and_restarts() {
        let d = tempfile::tempdir().unwrap();
        let (c, wal, shm_file) = wal_db(d.path());
        let shm = Some(&shm_file);
        let a = wal_mark(&wal, shm);
        assert!(
            matches!(
                a,
                WalMark::Index {
                    frame_size: 4120,
                    ..
                }
            ),
            "{a:?}"
        );
        for i in 0..10 {
            c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let b = wal_mark(&wal, shm);
        assert_eq!(grown(a, b), 10 * 4120);
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); INSERT INTO t VALUES (99);")
            .unwrap();
        let after = wal_mark(&wal, shm);
        assert_eq!(grown(b, after), 4120, "{b:?} -> {after:?}");
        assert!(matches!(wal_mark(&wal, None), WalMark::Len(_)));
    }

    /// The wake-ups of the coalescing window: one look for a steady writer, the old cadence for a
    /// fast one or a WAL about to restart (10 looks a second were a quarter of the CPU at 1 s).
    #[test]
    fn looks_follow_the_writers_rate() {
        let ms = Duration::from_millis;
        let t = 4u64 << 20;
        // The first look measures the rate; so does any look before MIN_LOOK has passed.
        assert_eq!(next_look(0, ms(0), t, false), MIN_LOOK);
        assert_eq!(next_look(100_000, ms(50), t, false), MIN_LOOK);
        // 200 tx/s of 4 KiB frames (about 870 KB/s): 4.7 s to the threshold, so the next look is
        // the longest allowed and the window (1 s by default) closes first.
        assert_eq!(next_look(87_000, ms(100), t, false), MAX_LOOK);
        // Nothing written since the window opened.
        assert_eq!(next_look(0, ms(100), t, false), MAX_LOOK);
        // 10 MB/s: 4 MiB in 0.42 s; the next look at half of the 0.32 s still to go.
        let g = next_look(1_000_000, ms(100), t, false);
        assert!(g > ms(150) && g < ms(170), "{g:?}");
        // Close to the threshold, and past it: the old cadence.
        assert_eq!(next_look(t - 1000, ms(400), t, false), MIN_LOOK);
        assert_eq!(next_look(t, ms(400), t, false), MIN_LOOK);
        // A WAL that the next commit may restart is looked at every MIN_LOOK, whatever the rate.
        assert_eq!(next_look(87_000, ms(100), t, true), MIN_LOOK);
        assert_eq!(next_look(0, ms(900), t, true), MIN_LOOK);
    }

    /// SQLite's own index says when the next commit restarts the WAL: every frame backfilled.
    #[test]
    fn a_backfilled_wal_is_seen_as_about_to_restart() {
        let d = tempfile::tempdir().unwrap();
        let (c, wal, shm_file) = wal_db(d.path());
        for i in 0..5 {
            c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let (m, restart_next) = wal_look(&wal, Some(&shm_file));
        assert!(!restart_next, "{m:?}");
        assert_eq!(m, wal_mark(&wal, Some(&shm_file)));
        c.execute_batch("PRAGMA wal_checkpoint(PASSIVE);").unwrap();
        assert!(wal_look(&wal, Some(&shm_file)).1, "all backfilled");
        c.execute("INSERT INTO t VALUES (99)", []).unwrap();
        let (m, restart_next) = wal_look(&wal, Some(&shm_file));
        assert!(!restart_next, "restarted and written: {m:?}");
        assert!(matches!(m, WalMark::Index { frames: 1, .. }), "{m:?}");
        // Without an index nothing is known, and a restart is assumed possible.
        assert!(matches!(wal_look(&wal, None), (WalMark::Len(_), true)));
    }

    #[test]
    fn window_remembers_a_busy_second() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut w = RateWindow::new(Duration::from_secs(1));
        let rate = 4.0 * 1024.0 * 1024.0;
        assert!(w.push(ms(0), 30 << 20, rate));
        // The near-empty sync right after a WAL restart: still busy.
        assert!(w.push(ms(150), 4120, rate));
        assert!(w.push(ms(900), 0, rate));
        // A second later the busy sync has left the window.
        assert!(!w.push(ms(1200), 0, rate));
        // A steady 200 tx/s (about 800 KiB/s) is never busy.
        let mut s = RateWindow::new(Duration::from_secs(1));
        assert!((0..10).all(|i| !s.push(ms(i * 1000), 800 << 10, rate)));
    }

    /// Regression (CI, pacing.rs): a burst cut by the early sync into 0.3 MB and 3.8 MB copied
    /// less than the busy rate (4 MiB/s) in the window, so the monitor went back to coalescing and the
    /// burst's remaining 3.3 MB waited out a 10 s monitor-interval.
    #[test]
    fn a_wait_cut_short_by_growth_keeps_the_fast_cadence() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let rate = 4.0 * 1024.0 * 1024.0;
        let mut w = RateWindow::new(Duration::from_secs(1));
        assert!(!w.push(ms(0), 300_000, rate));
        w.outgrown(ms(100));
        assert!(
            w.push(ms(110), 3_800_000, rate),
            "the sync right after the growth"
        );
        assert!(w.push(ms(130), 0, rate), "the burst's rest follows at once");
        assert!(w.push(ms(1050), 0, rate));
        // A second after the growth, an idle writer is quiet again.
        assert!(!w.push(ms(1200), 0, rate));
    }
}

//! What proves, from the database file alone, that a WAL life ended exactly where walship's copy
//! ended: used when a released database is attached again ([`super::release`]) and at start-up
//! after a `kill -9` ([`EndMark::persist`]).
//!
//! # The argument
//! SQLite restarts a WAL (or deletes it at the last close) only once every frame of it is in the
//! database file. So when walship has copied a WAL life up to its end *and* that life is fully
//! backfilled, any frame committed to it afterwards can only disappear by being written into the
//! database file first. A database file with the same device, inode, length and change time as
//! then proves that nothing was: whatever WAL life is there now starts from exactly what walship
//! copied, and the generation goes on in the next index.
//!
//! # Why it is written down at once, and the file clock
//! While walship runs, `R` reads the database file itself after such a checkpoint (read-mark 0):
//! SQLite then lets the application's next commit restart the WAL, and walship learns of it at
//! its next sync. A `kill -9` in between used to leave a restart the next start could not place
//! (made while walship ran, or after it died with commits walship never saw?) when the new life
//! had already overwritten the WAL file past the copied end: a new generation and a full snapshot
//! (the crash campaign's last unexplained generations, issue 14). So the mark is written to the
//! meta directory under the write lock, before any restart can happen, and read at start-up.
//!
//! The change time comes from the kernel's coarse clock truncated to the filesystem's
//! granularity: a write in the same tick as the checkpoint's last one would leave it unchanged.
//! The mark is therefore kept only once a file walship writes on the same filesystem carries a
//! later change time than the database file (git's "racily clean" rule); until then walship holds
//! the write lock a few milliseconds longer, and gives up (no mark, the old rules decide) past
//! [`TICK_WAIT`]. While `R` reads the database file nothing can backfill it, so any write the
//! mark must see comes later than that probe. Known limit, as for releases: a write that does not
//! update the change time (SQLite built with `SQLITE_MMAP_READWRITE`, a FUSE filesystem caching
//! attributes), or a clock set back into the very same tick.

use super::{Db, Open};
use crate::error::{Error, Result};
use crate::pace::WalMark;
use crate::wal::{WalHeader, HEADER_SIZE};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// Longest walship holds the write lock waiting for the file clock to tick past the database
/// file's change time: a few jiffies on any Linux filesystem with sub-second timestamps. A
/// filesystem with whole-second timestamps gets no mark.
pub(super) const TICK_WAIT: Duration = Duration::from_millis(12);

/// Name of the mark in a generation's directory (removed with it).
pub(super) const FILE_NAME: &str = "walship-backfilled";

/// What identifies one state of a file: a write changes its change time, a replacement its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileMark {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) len: u64,
    pub(super) ctime: (i64, i64),
}

impl FileMark {
    /// None when there is no file at `p`.
    pub(super) fn of(p: &Path) -> Result<Option<FileMark>> {
        match fs::metadata(p) {
            Ok(m) => Ok(Some(FileMark::from_meta(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("stat {}", p.display()), e)),
        }
    }

    fn from_meta(m: &fs::Metadata) -> FileMark {
        FileMark {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Changed less than `quiet` before `now` (or, with a clock set back, after it).
    pub(super) fn recent(&self, now: SystemTime, quiet: Duration) -> bool {
        let Ok(since_epoch) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return true;
        };
        let changed = Duration::new(
            self.ctime.0.max(0) as u64,
            self.ctime.1.clamp(0, 999_999_999) as u32,
        );
        since_epoch.checked_sub(changed).is_none_or(|d| d < quiet)
    }

    pub(super) fn same_file(&self, other: &FileMark) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

/// Whether a file stamped `probe` on the same filesystem as one stamped `db` proves the file
/// clock has moved past `db`: every later write then gets a change time above `db`'s.
pub(super) fn clock_passed(probe: (i64, i64), db: (i64, i64)) -> bool {
    probe > db
}

/// A WAL life walship copied to its end, fully backfilled, and the database file as it was then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EndMark {
    pub(super) generation: String,
    pub(super) index: u32,
    /// Committed length of the shadow index (= of the WAL life).
    pub(super) size: u64,
    pub(super) header: [u8; HEADER_SIZE],
    pub(super) db: FileMark,
}

impl EndMark {
    /// Whether the WAL life walship copied ended exactly at its copy (module doc): `shadow` is the
    /// (generation, index, committed length, header) found in the meta directory, `new` the WAL's
    /// header now, `db` the database path.
    pub(super) fn proves_end(
        &self,
        shadow: (&str, u32, u64, &WalHeader),
        new: &WalHeader,
        db: &Path,
    ) -> Result<bool> {
        let (generation, index, size, header) = shadow;
        if generation != self.generation
            || index != self.index
            || size != self.size
            || header.raw != self.header
            || new.page_size != header.page_size
        {
            return Ok(false);
        }
        Ok(FileMark::of(db)? == Some(self.db))
    }

    fn encode(&self) -> String {
        let hex: String = self.header.iter().map(|b| format!("{b:02x}")).collect();
        let d = &self.db;
        format!(
            "walship-backfilled 1\n{} {} {} {hex}\n{} {} {} {} {}\n",
            self.generation, self.index, self.size, d.dev, d.ino, d.len, d.ctime.0, d.ctime.1
        )
    }

    fn decode(text: &str) -> Option<EndMark> {
        let mut lines = text.lines();
        if lines.next()? != "walship-backfilled 1" {
            return None;
        }
        let a: Vec<&str> = lines.next()?.split(' ').collect();
        let b: Vec<&str> = lines.next()?.split(' ').collect();
        if a.len() != 4 || b.len() != 5 || a[3].len() != 2 * HEADER_SIZE || lines.next().is_some() {
            return None;
        }
        let mut header = [0u8; HEADER_SIZE];
        for (i, h) in header.iter_mut().enumerate() {
            *h = u8::from_str_radix(a[3].get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(EndMark {
            generation: a[0].to_string(),
            index: a[1].parse().ok()?,
            size: a[2].parse().ok()?,
            header,
            db: FileMark {
                dev: b[0].parse().ok()?,
                ino: b[1].parse().ok()?,
                len: b[2].parse().ok()?,
                ctime: (b[3].parse().ok()?, b[4].parse().ok()?),
            },
        })
    }

    /// Writes the mark as `path` once the file clock has passed the database file's change time
    /// (module doc). Called under the write lock. False when it could not be proven in
    /// [`TICK_WAIT`] (or the meta directory is on another filesystem, whose clock granularity
    /// says nothing of the database file's): then there is no mark, and any older one names an
    /// earlier shadow end, which never matches again.
    pub(super) fn persist(&self, path: &Path, own: impl Fn(&Path)) -> Result<bool> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let io = |e| Error::io(format!("write {}", tmp.display()), e);
        let written = (|| -> Result<bool> {
            let mut f = fs::File::create(&tmp).map_err(io)?;
            own(&tmp);
            f.write_all(self.encode().as_bytes()).map_err(io)?;
            let give_up = Instant::now() + TICK_WAIT;
            loop {
                let m = f.metadata().map_err(io)?;
                if m.dev() != self.db.dev {
                    return Ok(false);
                }
                if clock_passed((m.ctime(), m.ctime_nsec()), self.db.ctime) {
                    return Ok(true);
                }
                if Instant::now() >= give_up {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_micros(500));
                // Stamps the file with the clock as it is now.
                f.set_modified(SystemTime::now()).map_err(io)?;
            }
        })();
        match written {
            Ok(true) => fs::rename(&tmp, path)
                .map(|()| true)
                .map_err(|e| Error::io(format!("rename {}", tmp.display()), e)),
            other => {
                let _ = fs::remove_file(&tmp);
                other
            }
        }
    }

    /// The mark at `path`; None when there is none or it cannot be read (then the old rules
    /// decide, never a continuation on a guess).
    pub(super) fn load(path: &Path) -> Option<EndMark> {
        EndMark::decode(&fs::read_to_string(path).ok()?)
    }
}

impl Db {
    /// Called under the write lock once `R` has begun again: when the WAL is fully backfilled and
    /// the shadow holds all of it, writes the [`EndMark`] down (once per shadow end). Failing to
    /// costs nothing but the proof, so it is logged, never an error.
    pub(super) fn mark_end(&self, open: &mut Open) {
        let sh = &open.shadow;
        let end = (sh.index, sh.size);
        if open.end_marked == Some(end) || sh.size <= HEADER_SIZE as u64 {
            return;
        }
        let Some((index @ WalMark::Index { frames, .. }, backfilled)) =
            self.shm_file().and_then(|f| crate::pace::backfill(&f))
        else {
            return;
        };
        let copied = (sh.size - HEADER_SIZE as u64) / sh.header.frame_size();
        if backfilled != frames
            || u64::from(frames) != copied
            || crate::pace::restarted(Some([sh.header.salt1, sh.header.salt2]), index)
        {
            return;
        }
        let db = match FileMark::of(&self.path) {
            Ok(Some(m)) if (m.dev, m.ino) == open.file_id => m,
            _ => return,
        };
        let mark = EndMark {
            generation: sh.generation.clone(),
            index: sh.index,
            size: sh.size,
            header: sh.header.raw,
            db,
        };
        let path = self.meta.generation_dir(&sh.generation).join(FILE_NAME);
        match mark.persist(&path, |p| self.meta.own_file(p)) {
            Ok(true) => open.end_marked = Some(end),
            Ok(false) => {
                tracing::debug!(db = %self.path.display(), "the file clock did not pass the database file's change time; no end mark")
            }
            Err(e) => tracing::debug!(db = %self.path.display(), error = %e, "no end mark"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(salt1: u32) -> WalHeader {
        WalHeader::parse(&crate::wal::tests::build_wal(4096, (salt1, 1), 0, &[])).unwrap()
    }

    fn mark_of(db: &Path, h: &WalHeader) -> EndMark {
        EndMark {
            generation: "0123456789abcdef".into(),
            index: 3,
            size: 32 + 10 * 4120,
            header: h.raw,
            db: FileMark::of(db).unwrap().unwrap(),
        }
    }

    #[test]
    fn a_mark_reads_back_as_written_and_garbage_reads_as_none() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("db");
        fs::write(&db, b"x").unwrap();
        let m = mark_of(&db, &header(7));
        assert_eq!(EndMark::decode(&m.encode()), Some(m.clone()));
        let text = m.encode();
        for bad in [
            String::new(),
            text.replace("walship-backfilled 1", "walship-backfilled 2"),
            text.lines().take(2).collect::<Vec<_>>().join("\n"),
            text.replacen(' ', "  ", 2),
            format!("{text}extra\n"),
            text.replace(&format!(" {} ", m.size), " x "),
        ] {
            let got = EndMark::decode(&bad);
            assert!(got.is_none(), "{bad:?} read as {got:?}");
        }
    }

    /// Every field must match: a mark of another shadow end, another page size, or a database
    /// file written or replaced since proves nothing.
    #[test]
    fn only_the_same_end_and_an_untouched_database_file_prove_the_end() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("db");
        fs::write(&db, b"x").unwrap();
        let h = header(7);
        let m = mark_of(&db, &h);
        let next = header(8);
        let g = m.generation.clone();
        assert!(m.proves_end((&g, 3, m.size, &h), &next, &db).unwrap());
        // Any salts: the proof is the database file, not the number of restarts.
        assert!(m.proves_end((&g, 3, m.size, &h), &header(99), &db).unwrap());
        assert!(!m
            .proves_end(("fedcba9876543210", 3, m.size, &h), &next, &db)
            .unwrap());
        assert!(!m.proves_end((&g, 4, m.size, &h), &next, &db).unwrap());
        assert!(!m
            .proves_end((&g, 3, m.size + 4120, &h), &next, &db)
            .unwrap());
        assert!(!m
            .proves_end((&g, 3, m.size, &header(6)), &next, &db)
            .unwrap());
        let mut other_page = next;
        other_page.page_size = 8192;
        assert!(!m.proves_end((&g, 3, m.size, &h), &other_page, &db).unwrap());
        // Written since (the change time moves even when the content and length do not).
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&db, b"x").unwrap();
        assert!(!m.proves_end((&g, 3, m.size, &h), &next, &db).unwrap());
        // Replaced, or gone.
        let m = mark_of(&db, &h);
        let other = d.path().join("other");
        fs::write(&other, b"x").unwrap();
        fs::rename(&other, &db).unwrap();
        assert!(!m.proves_end((&g, 3, m.size, &h), &next, &db).unwrap());
        fs::remove_file(&db).unwrap();
        assert!(!m.proves_end((&g, 3, m.size, &h), &next, &db).unwrap());
    }

    #[test]
    fn the_clock_has_passed_only_when_strictly_later() {
        assert!(clock_passed((10, 5), (10, 4)));
        assert!(clock_passed((11, 0), (10, 999_999_999)));
        assert!(!clock_passed((10, 4), (10, 4)), "the same tick");
        assert!(!clock_passed((10, 3), (10, 4)), "a clock set back");
    }

    /// Written beside a file just changed, the mark waits for the next tick of the file clock, so
    /// its own change time is later than the database file's; it is read back whole.
    #[test]
    fn a_mark_is_persisted_only_after_the_file_clock_ticked() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("db");
        let path = d.path().join(FILE_NAME);
        for _ in 0..20 {
            fs::write(&db, b"x").unwrap();
            let m = mark_of(&db, &header(7));
            assert!(m.persist(&path, |_| ()).unwrap(), "tmpfs/ext4 tick in ms");
            let stamped = fs::metadata(&path).unwrap();
            assert!(clock_passed(
                (stamped.ctime(), stamped.ctime_nsec()),
                m.db.ctime
            ));
            assert_eq!(EndMark::load(&path), Some(m));
        }
        assert!(!d.path().join(format!("{FILE_NAME}.tmp")).exists());
        // A database on another filesystem than the mark: no mark.
        let mut m = mark_of(&db, &header(7));
        m.db.dev ^= 1;
        fs::remove_file(&path).unwrap();
        assert!(!m.persist(&path, |_| ()).unwrap());
        assert!(!path.exists() && EndMark::load(&path).is_none());
    }
}

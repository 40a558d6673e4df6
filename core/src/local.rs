//! Where the database itself is, read from its real WAL and the meta directory without writing
//! anything, opening SQLite or taking the replication lock, so `walship replicas` shows the right
//! lag whether or not `replicate` runs (and never disturbs one that does).
//!
//! The local position is the one the next sync would publish: the current generation (the meta
//! directory's `generation` file), the newest shadow index, and the end of the real WAL's committed
//! frames, provided the real WAL is still the life of the WAL that shadow index follows (same
//! header, last copied frame unchanged). Otherwise the next sync starts a new generation, and the
//! row says so.

use crate::error::{Error, Result};
use crate::layout::Pos;
use crate::meta::MetaDir;
use crate::wal::{self, FrameReader, WalHeader, HEADER_SIZE};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::SystemTime;

/// The database's own replication state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// No generation in the meta directory: `replicate` never ran on this database here.
    NoGeneration,
    /// The shadow WAL follows the real WAL; `pos` ends at the real WAL's last commit frame.
    /// `index_lens` holds the shadow WAL length of every earlier index still on disk.
    At {
        /// Current generation, newest shadow index, and the end of the real WAL's committed frames.
        pos: Pos,
        /// Shadow WAL length of each earlier index still on disk, by index.
        index_lens: BTreeMap<u32, u64>,
    },
    /// The real WAL is no longer the one the shadow WAL follows (restarted, truncated, overwritten
    /// or removed while walship did not see it): the next sync starts a new generation.
    NewGenerationPending {
        /// The generation the meta directory names, which the next sync replaces.
        generation: String,
        /// Why the shadow WAL no longer follows the real WAL, for display.
        reason: &'static str,
    },
}

/// [`Local`] plus what the lag in seconds is measured from.
#[derive(Debug, Clone)]
pub struct LocalState {
    /// Where the database stands; see [`Local`].
    pub local: Local,
    /// Last change of the database or its WAL (modification times).
    pub changed: Option<SystemTime>,
    /// Whether a `replicate` process holds the database's lock (None: cannot tell).
    pub replicating: Option<bool>,
}

fn wal_path(db: &Path) -> std::path::PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    p.into()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reads the local state of `db` whose meta directory is `meta`. Read-only.
pub fn read(db: &Path, meta: &MetaDir) -> Result<LocalState> {
    let wal = wal_path(db);
    let changed = [mtime(db), mtime(&wal)].into_iter().flatten().max();
    let replicating = lock_held(&meta.lock_file());
    let local = read_local(db, &wal, meta, replicating == Some(true))?;
    Ok(LocalState {
        local,
        changed,
        replicating,
    })
}

fn read_local(db: &Path, wal_file: &Path, meta: &MetaDir, replicating: bool) -> Result<Local> {
    let Some(generation) = meta.read_generation()? else {
        return Ok(Local::NoGeneration);
    };
    let pending = |reason| {
        Ok(Local::NewGenerationPending {
            generation: generation.clone(),
            reason,
        })
    };
    let indexes = meta.shadow_indexes(&generation)?;
    let Some(&index) = indexes.last() else {
        return pending("no shadow wal");
    };
    let shadow_path = meta.shadow_path(&generation, index);
    let shadow = match File::open(&shadow_path) {
        Ok(f) => f,
        // Cleaned up between listing and opening: a running walship moved on; look again later.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return pending("no shadow wal"),
        Err(e) => return Err(Error::io(format!("open {}", shadow_path.display()), e)),
    };
    let Ok(shadow_scan) = wal::scan(BufReader::new(shadow))
        .map_err(|e| Error::io(format!("read {}", shadow_path.display()), e))?
    else {
        return pending("short shadow wal");
    };
    let mut index_lens = BTreeMap::new();
    for &i in &indexes[..indexes.len() - 1] {
        if let Ok(m) = fs::metadata(meta.shadow_path(&generation, i)) {
            index_lens.insert(i, m.len());
        }
    }
    let mut real = match File::open(wal_file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return pending("wal removed (checkpointed by the last connection to close)")
        }
        Err(e) => return Err(Error::io(format!("open {}", wal_file.display()), e)),
    };
    let io = |e| Error::io(format!("read {}", wal_file.display()), e);
    let real_len = real.metadata().map_err(io)?.len();
    let mut hdr = [0u8; HEADER_SIZE];
    if real_len < HEADER_SIZE as u64 {
        return pending("wal removed (checkpointed by the last connection to close)");
    }
    real.read_exact(&mut hdr).map_err(io)?;
    let Ok(real_header) = WalHeader::parse(&hdr) else {
        return pending("wal header invalid");
    };
    let sh = shadow_scan.header;
    if real_header.raw != sh.raw {
        // Exactly one restart continues in the next index: a running walship proved it had
        // copied every frame (it notices within a monitor interval), and a stopped one will at
        // its next start when nothing was committed after the frames it copied, or when the
        // database file is as it was at walship's last complete checkpoint.
        let end = (generation.as_str(), index, shadow_scan.committed_len, &sh);
        let continues = crate::db::end_marked(meta, db, end, &real_header)
            || crate::db::proves_one_restart(&sh, &real_header)
                && (replicating || {
                    let fsz = sh.frame_size();
                    let mut slot = vec![0u8; fsz as usize];
                    let have = real_len >= shadow_scan.committed_len + fsz
                        && real
                            .seek(SeekFrom::Start(shadow_scan.committed_len))
                            .is_ok()
                        && real.read_exact(&mut slot).is_ok();
                    wal::life_ended_at(
                        &sh,
                        shadow_scan.committed_seed,
                        &real_header,
                        have.then_some(&slot[..]),
                    ) == wal::LifeEnd::Ended
                });
        if continues {
            let end = committed_end(
                &mut real,
                real_header,
                HEADER_SIZE as u64,
                real_header.checksum,
            )
            .map_err(io)?;
            index_lens.insert(index, shadow_scan.committed_len);
            return Ok(Local::At {
                pos: Pos::new(generation.clone(), index + 1, end),
                index_lens,
            });
        }
        return pending("wal restarted while walship did not see it");
    }
    let copied = shadow_scan.committed_len;
    if real_len < copied {
        return pending("wal truncated by another process");
    }
    if copied > HEADER_SIZE as u64 {
        let fsz = sh.frame_size();
        let mut a = vec![0u8; fsz as usize];
        let mut b = vec![0u8; fsz as usize];
        read_at(&shadow_path, copied - fsz, &mut a)?;
        real.seek(SeekFrom::Start(copied - fsz)).map_err(io)?;
        real.read_exact(&mut b).map_err(io)?;
        if a != b {
            return pending("wal overwritten by another process");
        }
    }
    let end = committed_end(&mut real, sh, copied, shadow_scan.committed_seed).map_err(io)?;
    Ok(Local::At {
        pos: Pos::new(generation, index, end),
        index_lens,
    })
}

/// End of the last commit frame at or after `from` (whose checksum seed is `seed`).
fn committed_end(
    real: &mut File,
    header: WalHeader,
    from: u64,
    seed: (u32, u32),
) -> std::io::Result<u64> {
    real.seek(SeekFrom::Start(from))?;
    let mut fr = FrameReader::new(BufReader::with_capacity(1 << 20, real), header, seed);
    let mut pos = from;
    let mut committed = from;
    while let Some((fh, bytes)) = fr.next_frame()? {
        pos += bytes.len() as u64;
        if fh.commit_size != 0 {
            committed = pos;
        }
    }
    Ok(committed)
}

fn read_at(p: &Path, off: u64, buf: &mut [u8]) -> Result<()> {
    let io = |e| Error::io(format!("read {}", p.display()), e);
    let mut f = File::open(p).map_err(io)?;
    f.seek(SeekFrom::Start(off)).map_err(io)?;
    f.read_exact(buf).map_err(io)
}

/// Whether some process holds a `flock` on `path`, from `/proc/locks` (Linux): looking must not
/// take the lock, even briefly, or a `replicate` starting at that moment would refuse to run.
pub fn lock_held(path: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let ino = match fs::metadata(path) {
        Ok(m) => m.ino(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    let locks = fs::read_to_string("/proc/locks").ok()?;
    Some(flock_on_inode(&locks, ino))
}

/// Whether `/proc/locks` text lists a FLOCK on inode `ino` (`1: FLOCK ADVISORY WRITE pid
/// maj:min:ino start end`; blocked waiters, `->` lines, are not holders).
fn flock_on_inode(locks: &str, ino: u64) -> bool {
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 6
            && f[1] == "FLOCK"
            && f[5].rsplit(':').next().and_then(|i| i.parse::<u64>().ok()) == Some(ino)
    })
}

/// How far a replica is behind the database, in WAL bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagBytes {
    /// The replica holds the current generation up to this many bytes before the local position.
    Behind(u64),
    /// The replica has nothing of the current generation: the next sync uploads a snapshot.
    OtherGeneration,
    /// The replica is further than the database: another writer uses this replica path.
    Ahead,
    /// An index between the two positions is no longer on disk (cannot count it).
    Unknown,
}

/// WAL bytes between the replica's position and the local one. Indexes are counted from offset
/// 0 (segments of an index start with the WAL header), so a replica at `(i, o)` owes
/// `len(i) - o`, every index after `i`, and the local index up to its offset.
pub fn lag_bytes(replica: Option<&Pos>, local: &Pos, index_lens: &BTreeMap<u32, u64>) -> LagBytes {
    let Some(r) = replica.filter(|r| r.generation == local.generation) else {
        return LagBytes::OtherGeneration;
    };
    if (r.index, r.offset) > (local.index, local.offset) {
        return LagBytes::Ahead;
    }
    if r.index == local.index {
        return LagBytes::Behind(local.offset - r.offset);
    }
    let mut total = local.offset;
    for i in r.index..local.index {
        let Some(&len) = index_lens.get(&i) else {
            return LagBytes::Unknown;
        };
        total += if i == r.index {
            len.saturating_sub(r.offset)
        } else {
            len
        };
    }
    LagBytes::Behind(total)
}

/// Lag in seconds: 0 when caught up; otherwise how much newer the database's last change is than
/// the replica's newest object (clamped at 0): the span of changes the replica does not hold yet.
pub fn lag_seconds(
    caught_up: bool,
    changed: Option<SystemTime>,
    replica_newest: Option<SystemTime>,
) -> Option<f64> {
    if caught_up {
        return Some(0.0);
    }
    let (c, r) = (changed?, replica_newest?);
    Some(c.duration_since(r).map(|d| d.as_secs_f64()).unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::tests::build_wal;
    use std::time::Duration;

    const G: &str = "0123456789abcdef";

    fn p(i: u32, o: u64) -> Pos {
        Pos::new(G, i, o)
    }

    #[test]
    fn lag_within_one_index() {
        let none = BTreeMap::new();
        assert_eq!(
            lag_bytes(Some(&p(2, 100)), &p(2, 400), &none),
            LagBytes::Behind(300)
        );
        assert_eq!(
            lag_bytes(Some(&p(2, 400)), &p(2, 400), &none),
            LagBytes::Behind(0)
        );
        assert_eq!(
            lag_bytes(Some(&p(2, 500)), &p(2, 400), &none),
            LagBytes::Ahead
        );
        assert_eq!(
            lag_bytes(Some(&p(3, 0)), &p(2, 400), &none),
            LagBytes::Ahead
        );
    }

    #[test]
    fn lag_across_indexes_counts_each_shadow() {
        let lens: BTreeMap<u32, u64> = [(1, 1000), (2, 500)].into_iter().collect();
        // owes 1000-600 of index 1, all 500 of index 2, and 200 of index 3.
        assert_eq!(
            lag_bytes(Some(&p(1, 600)), &p(3, 200), &lens),
            LagBytes::Behind(1100)
        );
        assert_eq!(
            lag_bytes(Some(&p(0, 0)), &p(3, 200), &lens),
            LagBytes::Unknown
        );
    }

    #[test]
    fn lag_other_generation() {
        let none = BTreeMap::new();
        assert_eq!(lag_bytes(None, &p(0, 32), &none), LagBytes::OtherGeneration);
        let other = Pos::new("fedcba9876543210", 0, 32);
        assert_eq!(
            lag_bytes(Some(&other), &p(0, 32), &none),
            LagBytes::OtherGeneration
        );
    }

    #[test]
    fn lag_seconds_rules() {
        let t = |s| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(lag_seconds(true, t(100), t(10)), Some(0.0));
        assert_eq!(lag_seconds(false, t(100), t(10)), Some(90.0));
        assert_eq!(lag_seconds(false, t(10), t(100)), Some(0.0));
        assert_eq!(lag_seconds(false, t(10), None), None);
    }

    #[test]
    fn proc_locks_parsing() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234567 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 4243 08:01:7654321 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 99 00:2a:555 0 EOF\n";
        assert!(flock_on_inode(text, 1234567));
        assert!(!flock_on_inode(text, 7654321));
        assert!(!flock_on_inode(text, 555));
    }

    #[test]
    fn lock_held_sees_a_real_flock() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("walship.lock");
        assert_eq!(lock_held(&path), Some(false));
        let l = crate::meta::InstanceLock::acquire(&path, Path::new("/x.db"), false).unwrap();
        assert_eq!(lock_held(&path), Some(true));
        drop(l);
        assert_eq!(lock_held(&path), Some(false));
    }

    /// A meta directory with one shadow index copied from `shadow`, and a real WAL `real`.
    fn setup(
        shadow: &[u8],
        real: Option<&[u8]>,
    ) -> (tempfile::TempDir, MetaDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let meta = MetaDir::new(d.path().join(".app.db-litestream"));
        fs::create_dir_all(meta.shadow_dir(G)).unwrap();
        meta.write_generation(G).unwrap();
        fs::write(meta.shadow_path(G, 3), shadow).unwrap();
        let wal = d.path().join("app.db-wal");
        if let Some(r) = real {
            fs::write(&wal, r).unwrap();
        }
        (d, meta, wal)
    }

    #[test]
    fn local_position_ends_at_the_real_wal_last_commit() {
        let full = build_wal(512, (1, 2), 0, &[2, 3, 1]);
        let frame = 536usize;
        // The shadow copied the first transaction; the real WAL has two more and a torn tail.
        let shadow = &full[..32 + 2 * frame];
        let mut real = full.clone();
        real.extend_from_slice(&full[32..32 + 100]);
        let (_d, meta, wal) = setup(shadow, Some(&real));
        assert_eq!(
            read_local(&wal.with_file_name("app.db"), &wal, &meta, false).unwrap(),
            Local::At {
                pos: p(3, full.len() as u64),
                index_lens: BTreeMap::new()
            }
        );
        // Nothing new: the position is the shadow's end.
        let (_d, meta, wal) = setup(shadow, Some(shadow));
        assert!(
            matches!(read_local(&wal.with_file_name("app.db"), &wal, &meta, false).unwrap(), Local::At { pos, .. } if pos == p(3, 32 + 2 * frame as u64))
        );
    }

    #[test]
    fn pending_when_the_wal_changed_unseen() {
        let full = build_wal(512, (1, 2), 0, &[2, 1]);
        let shadow = &full[..32 + 2 * 536];
        // Restarted (next salts, one more checkpoint): a new generation unless walship runs.
        let restarted = build_wal(512, (2, 9), 1, &[1]);
        let (_d, meta, wal) = setup(shadow, Some(&restarted));
        assert!(matches!(
            read_local(&wal.with_file_name("app.db"), &wal, &meta, false).unwrap(),
            Local::NewGenerationPending { .. }
        ));
        assert_eq!(
            read_local(&wal.with_file_name("app.db"), &wal, &meta, true).unwrap(),
            Local::At {
                pos: p(4, restarted.len() as u64),
                index_lens: [(3, shadow.len() as u64)].into_iter().collect()
            }
        );
        // Restarted over the old file while walship was stopped: a frame committed after the
        // copied ones survives past the new life, so frames were lost; without one, the next
        // start continues in the next index.
        let mut lost = full.clone();
        lost[..restarted.len()].copy_from_slice(&restarted);
        let (_d, meta, wal) = setup(shadow, Some(&lost));
        assert!(matches!(
            read_local(&wal.with_file_name("app.db"), &wal, &meta, false).unwrap(),
            Local::NewGenerationPending { .. }
        ));
        let mut ended = shadow.to_vec();
        ended.extend_from_slice(&[0u8; 536]);
        ended[..restarted.len()].copy_from_slice(&restarted);
        let (_d, meta, wal) = setup(shadow, Some(&ended));
        assert_eq!(
            read_local(&wal.with_file_name("app.db"), &wal, &meta, false).unwrap(),
            Local::At {
                pos: p(4, restarted.len() as u64),
                index_lens: [(3, shadow.len() as u64)].into_iter().collect()
            }
        );
        // Truncated, removed, overwritten.
        let (_d, meta, wal) = setup(shadow, Some(&full[..32 + 536]));
        assert!(
            matches!(read_local(&wal.with_file_name("app.db"), &wal, &meta, false).unwrap(), Local::NewGenerationPending { reason, .. } if reason.contains("truncated"))
        );
        let (_d, meta, wal) = setup(shadow, None);
        assert!(
            matches!(read_local(&wal.with_file_name("app.db"), &wal, &meta, false).unwrap(), Local::NewGenerationPending { reason, .. } if reason.contains("removed"))
        );
        let mut over = full.clone();
        over[32 + 536 + 200] ^= 1;
        let (_d, meta, wal) = setup(shadow, Some(&over));
        assert!(
            matches!(read_local(&wal.with_file_name("app.db"), &wal, &meta, false).unwrap(), Local::NewGenerationPending { reason, .. } if reason.contains("overwritten"))
        );
    }

    #[test]
    fn no_generation_without_meta() {
        let d = tempfile::tempdir().unwrap();
        let meta = MetaDir::new(d.path().join(".x-litestream"));
        assert_eq!(
            read_local(&d.path().join("x"), &d.path().join("x-wal"), &meta, false).unwrap(),
            Local::NoGeneration
        );
    }
}

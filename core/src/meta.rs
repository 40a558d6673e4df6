//! The local meta directory, exactly v0.3's (`.<name>-litestream/`), so that v0.3.13 and walship
//! can hand a database over to each other and continue the same generation.
//!
//! ```text
//! generation                                  "<16 hex>\n", written via generation.tmp + rename
//! generations/<gen>/wal/<index %08x>.wal      shadow WAL: one life of the real WAL
//! walship.lock                                walship's flock; not *.tmp, which v0.3.13 deletes
//!                                             "<pid>\n", or "<pid> requests\n" from a replicate
//!                                             that answers snapshot requests on SIGUSR1
//! walship-snapshot-<id>.request               `walship snapshot` asks the running replicate
//! walship-snapshot-<id>.response              and reads its answer here
//! ```

use crate::error::{Error, Result};
use crate::layout::is_generation;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Default meta directory for a database path: `<dir>/.<file>-litestream`.
pub fn default_meta_dir(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    db.parent()
        .unwrap_or(Path::new("/"))
        .join(format!(".{name}-litestream"))
}

/// A database's meta directory, laid out as v0.3.13's so either tool can continue the other's
/// generation. Only paths: nothing is opened until an operation needs it.
#[derive(Debug, Clone)]
pub struct MetaDir {
    /// The directory itself, e.g. `/data/.app.db-litestream`.
    pub root: PathBuf,
    /// Whose files these are: walship run once as root on an application's database must not
    /// leave files the application's user cannot later open (v0.3.13 gives them the database
    /// file's owner too).
    owner: Option<Ownership>,
}

/// The owner, group and group access of a database file, which walship's files follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// User id given to walship's files and directories (when the process may chown).
    pub uid: u32,
    /// Group id given to walship's files and directories (when the process may chown).
    pub gid: u32,
    /// The database's mode bits for its group (read 0o040, write 0o020); others get nothing.
    pub group: u32,
}

impl Ownership {
    /// The database file's owner and group; its directory's when the file does not exist yet
    /// (then only the owner has access).
    pub fn of_db(db: &Path) -> Option<Ownership> {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = fs::metadata(db) {
            return Some(Ownership {
                uid: m.uid(),
                gid: m.gid(),
                group: m.mode() & 0o060,
            });
        }
        let m = fs::metadata(db.parent()?).ok()?;
        Some(Ownership {
            uid: m.uid(),
            gid: m.gid(),
            group: 0,
        })
    }

    /// 0600, or 0640/0660 when the database's group may read/write it.
    pub fn file_mode(&self) -> u32 {
        0o600 | self.group
    }

    /// 0700, or 0750/0770 when the database's group may read/write it.
    pub fn dir_mode(&self) -> u32 {
        let g = self.group;
        0o700 | g | if g & 0o040 != 0 { 0o010 } else { 0 }
    }

    /// Best effort: a process that is not root cannot give a file away, and then it is its own.
    fn apply(&self, p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::os::unix::fs::chown(p, Some(self.uid), Some(self.gid));
        let _ = fs::set_permissions(p, fs::Permissions::from_mode(mode));
    }
}

impl MetaDir {
    /// A meta directory whose new files keep the process's own owner and mode (readers, tests);
    /// the monitor uses [`MetaDir::owned`].
    pub fn new(root: PathBuf) -> Self {
        MetaDir { root, owner: None }
    }

    /// A meta directory whose files and directories follow `owner`.
    pub fn owned(root: PathBuf, owner: Option<Ownership>) -> Self {
        MetaDir { root, owner }
    }

    /// Creates `dir` and every missing parent, each with the owner and mode of walship's files.
    pub fn create_dir(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut d = dir;
        while !d.as_os_str().is_empty() && !d.exists() {
            missing.push(d.to_path_buf());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        for d in missing.iter().rev() {
            match fs::create_dir(d) {
                Ok(()) => {
                    if let Some(o) = self.owner {
                        o.apply(d, o.dir_mode());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::io(format!("create directory {}", d.display()), e));
                }
            }
        }
        Ok(())
    }

    /// Gives a file walship created the owner and mode of walship's files.
    pub fn own_file(&self, p: &Path) {
        if let Some(o) = self.owner {
            o.apply(p, o.file_mode());
        }
    }

    /// `generation`: the current generation's name; see [`MetaDir::read_generation`].
    pub fn generation_file(&self) -> PathBuf {
        self.root.join("generation")
    }

    /// `walship.lock`, held by [`InstanceLock`]; not `*.tmp`, which v0.3.13's sweep deletes.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("walship.lock")
    }

    /// Where `walship snapshot` leaves request `id` for the replicate that holds the lock.
    pub fn snapshot_request(&self, id: &str) -> PathBuf {
        self.root
            .join(format!("{REQUEST_PREFIX}{id}{REQUEST_SUFFIX}"))
    }

    /// Where the replicate answers request `id`.
    pub fn snapshot_response(&self, id: &str) -> PathBuf {
        self.root
            .join(format!("{REQUEST_PREFIX}{id}{RESPONSE_SUFFIX}"))
    }

    /// Removes answers nobody read (the asker was interrupted) once they are `max_age` old.
    pub fn remove_stale_responses(&self, max_age: std::time::Duration) {
        let Ok(rd) = fs::read_dir(&self.root) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let answer = name.starts_with(REQUEST_PREFIX)
                && (name.ends_with(RESPONSE_SUFFIX) || name.ends_with(".part"));
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > max_age);
            if answer && old {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The ids of the snapshot requests waiting in the meta directory.
    pub fn pending_snapshot_requests(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = rd
            .flatten()
            .filter_map(|e| request_id(&e.file_name().to_string_lossy()).map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    /// `generations/<gen>`: a generation's local state, removed whole when another one starts.
    pub fn generation_dir(&self, generation: &str) -> PathBuf {
        self.root.join("generations").join(generation)
    }

    /// `generations/<gen>/wal`: the shadow WAL files of a generation.
    pub fn shadow_dir(&self, generation: &str) -> PathBuf {
        self.generation_dir(generation).join("wal")
    }

    /// Shadow WAL of one index, `<index %08x>.wal`: the header and committed frames of one life of
    /// the real WAL.
    pub fn shadow_path(&self, generation: &str, index: u32) -> PathBuf {
        self.shadow_dir(generation).join(format!("{index:08x}.wal"))
    }

    /// The current generation, if the file holds exactly 16 characters (v0.3's rule).
    pub fn read_generation(&self) -> Result<Option<String>> {
        match fs::read_to_string(self.generation_file()) {
            Ok(s) => {
                let g = s.trim();
                Ok((g.len() == 16 && is_generation(g)).then(|| g.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(
                format!("read {}", self.generation_file().display()),
                e,
            )),
        }
    }

    /// Replaces the generation file atomically: temporary file, fsync, rename, directory fsync.
    pub fn write_generation(&self, generation: &str) -> Result<()> {
        let tmp = self.root.join("generation.tmp");
        let path = self.generation_file();
        let io = |e| Error::io(format!("write {}", path.display()), e);
        let mut f = fs::File::create(&tmp).map_err(io)?;
        self.own_file(&tmp);
        f.write_all(format!("{generation}\n").as_bytes())
            .map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&self.root);
        Ok(())
    }

    /// Deletes the generation file (already gone is fine), so the next sync or start-up begins a
    /// new generation.
    pub fn remove_generation_file(&self) -> Result<()> {
        match fs::remove_file(self.generation_file()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(
                format!("remove {}", self.generation_file().display()),
                e,
            )),
            _ => Ok(()),
        }
    }

    /// Shadow WAL indexes present for a generation, ascending.
    pub fn shadow_indexes(&self, generation: &str) -> Result<Vec<u32>> {
        let dir = self.shadow_dir(generation);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if let Some(idx) = name.strip_suffix(".wal") {
                if idx.len() == 8 {
                    if let Ok(i) = u32::from_str_radix(idx, 16) {
                        out.push(i);
                    }
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Removes every generation directory other than `keep` (v0.3 does the same on each sync).
    pub fn remove_other_generations(&self, keep: &str) {
        let Ok(rd) = fs::read_dir(self.root.join("generations")) else {
            return;
        };
        for ent in rd.flatten() {
            if ent.file_name().to_string_lossy() != keep {
                let _ = fs::remove_dir_all(ent.path());
            }
        }
    }

    /// Deletes leftover `*.tmp` files (v0.3 does this on open; both tools write through them).
    ///
    /// Symbolic links are never followed and the walk stays inside walship's own layout (at most
    /// `generations/<id>/wal`): a link to another directory once made the sweep delete that
    /// directory's `*.tmp` files, and two links to `.` made start-up loop forever.
    pub fn remove_tmp_files(&self) {
        fn walk(dir: &Path, depth: u32) {
            let Ok(rd) = fs::read_dir(dir) else { return };
            for ent in rd.flatten() {
                let Ok(kind) = ent.file_type() else { continue };
                let p = ent.path();
                if kind.is_dir() {
                    if depth < MAX_DEPTH {
                        walk(&p, depth + 1);
                    }
                } else if kind.is_file() && p.extension().is_some_and(|e| e == "tmp") {
                    let _ = fs::remove_file(&p);
                }
            }
        }
        /// `generations/<id>/wal` and one level below for anything v0.3 may add.
        const MAX_DEPTH: u32 = 4;
        walk(&self.root, 0);
    }
}

/// Best-effort fsync of a directory so a rename survives a crash.
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

const REQUEST_PREFIX: &str = "walship-snapshot-";
const REQUEST_SUFFIX: &str = ".request";
const RESPONSE_SUFFIX: &str = ".response";

/// The id of a request file name; ids are what `walship snapshot` makes: `[0-9a-z-]`, so a
/// name can never reach outside the meta directory.
fn request_id(name: &str) -> Option<&str> {
    let id = name
        .strip_prefix(REQUEST_PREFIX)?
        .strip_suffix(REQUEST_SUFFIX)?;
    (!id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-'))
    .then_some(id)
}

/// What the lock file says about the process holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The holder's process id; None when the file is empty or does not start with a number.
    pub pid: Option<u32>,
    /// The holder is a `replicate` that answers snapshot requests on SIGUSR1. Anything else
    /// (`replicate -once`, `walship snapshot` alone, an older walship) would be killed by the
    /// signal, so it is sent only to a holder that says so.
    pub takes_requests: bool,
}

impl LockHolder {
    /// Parses lock file text, `<pid>\n` or `<pid> requests\n`; a first word that is not a number
    /// gives no pid.
    pub fn parse(text: &str) -> LockHolder {
        let mut words = text.split_whitespace();
        LockHolder {
            pid: words.next().and_then(|w| w.parse().ok()),
            takes_requests: words.any(|w| w == "requests"),
        }
    }

    /// Reads and parses the lock file at `path`; an unreadable file reads as empty (no pid).
    pub fn read(path: &Path) -> LockHolder {
        LockHolder::parse(&fs::read_to_string(path).unwrap_or_default())
    }
}

/// An exclusive advisory lock that the kernel releases when the process dies.
#[derive(Debug)]
pub struct InstanceLock {
    file: fs::File,
}

impl InstanceLock {
    /// Takes the lock or fails naming the process that holds it.
    /// `takes_requests`: this process answers snapshot requests (see [`LockHolder`]).
    pub fn acquire(path: &Path, db: &Path, takes_requests: bool) -> Result<InstanceLock> {
        use std::os::unix::io::AsRawFd;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(format!("open lock file {}", path.display()), e))?;
        // SAFETY: flock on a valid, owned descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let holder = LockHolder::read(path);
            if holder.pid == Some(std::process::id()) {
                // This process holds it: another entry of the same config names the same file
                // (through a symlink, a bind mount or a hard link).
                return Err(Error::invalid(format!(
                    "database {} is configured twice: another entry of the config names the same file (through a symlink or another path); lock file {}",
                    db.display(),
                    path.display()
                )));
            }
            return Err(Error::invalid(format!(
                "database {} is already being replicated by another process ({}); lock file {}",
                db.display(),
                match holder.pid {
                    None => "pid unknown".to_string(),
                    Some(pid) => format!("pid {pid}"),
                },
                path.display()
            )));
        }
        let _ = file.set_len(0);
        let requests = if takes_requests { " requests" } else { "" };
        let _ = (&file).write_all(format!("{}{requests}\n", std::process::id()).as_bytes());
        Ok(InstanceLock { file })
    }

    /// Whether `path` still names the locked file (it is gone once its directory was removed).
    pub fn is_current(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(path), self.file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_meta_dir_matches_v03() {
        assert_eq!(
            default_meta_dir(Path::new("/data/app.db")),
            PathBuf::from("/data/.app.db-litestream")
        );
    }

    /// Regression: the sweep followed symlinks out of the meta directory and
    /// looped on links to `.`.
    #[test]
    fn tmp_sweep_never_follows_links() {
        let d = tempfile::tempdir().unwrap();
        let other = d.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("keep.tmp"), b"x").unwrap();
        let root = d.path().join("meta");
        let wal = root.join("generations/0123456789abcdef/wal");
        fs::create_dir_all(&wal).unwrap();
        fs::write(wal.join("00000001.wal.tmp"), b"x").unwrap();
        fs::write(root.join("generation.tmp"), b"x").unwrap();
        std::os::unix::fs::symlink(&other, root.join("out")).unwrap();
        std::os::unix::fs::symlink(&other, wal.join("out")).unwrap();
        std::os::unix::fs::symlink(".", root.join("a")).unwrap();
        std::os::unix::fs::symlink(".", root.join("b")).unwrap();
        std::os::unix::fs::symlink(other.join("keep.tmp"), root.join("link.tmp")).unwrap();
        let started = std::time::Instant::now();
        MetaDir::new(root.clone()).remove_tmp_files();
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(other.join("keep.tmp").exists(), "followed a link out");
        assert!(!wal.join("00000001.wal.tmp").exists());
        assert!(!root.join("generation.tmp").exists());
        assert!(fs::symlink_metadata(root.join("link.tmp")).is_ok());
    }

    /// Regression: walship run as root left root-owned 0644 files that the
    /// application's user could not open later; they now follow the database file.
    #[test]
    fn files_follow_the_database_owner_and_group_access() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("app.db");
        fs::write(&db, b"").unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        // Others never get access; the group gets what it has on the database.
        for (db_mode, file_mode, dir_mode) in [
            (0o600, 0o600, 0o700),
            (0o644, 0o640, 0o750),
            (0o660, 0o660, 0o770),
        ] {
            fs::set_permissions(&db, fs::Permissions::from_mode(db_mode)).unwrap();
            if root {
                std::os::unix::fs::chown(&db, Some(4321), Some(4322)).unwrap();
            }
            let meta_root = d.path().join(format!("meta-{db_mode:o}"));
            let m = MetaDir::owned(meta_root.clone(), Ownership::of_db(&db));
            let wal = m.shadow_dir("0123456789abcdef");
            m.create_dir(&wal).unwrap();
            m.write_generation("0123456789abcdef").unwrap();
            let mut dirs = vec![meta_root.clone(), meta_root.join("generations")];
            dirs.push(m.generation_dir("0123456789abcdef"));
            dirs.push(wal);
            for p in &dirs {
                let md = fs::metadata(p).unwrap();
                assert_eq!(md.mode() & 0o777, dir_mode, "{}", p.display());
                if root {
                    assert_eq!((md.uid(), md.gid()), (4321, 4322), "{}", p.display());
                }
            }
            let md = fs::metadata(m.generation_file()).unwrap();
            assert_eq!(md.mode() & 0o777, file_mode);
            if root {
                assert_eq!((md.uid(), md.gid()), (4321, 4322));
            }
        }
    }

    #[test]
    fn generation_file_rules() {
        let d = tempfile::tempdir().unwrap();
        let m = MetaDir::new(d.path().to_path_buf());
        assert_eq!(m.read_generation().unwrap(), None);
        m.write_generation("0123456789abcdef").unwrap();
        assert_eq!(
            m.read_generation().unwrap().as_deref(),
            Some("0123456789abcdef")
        );
        fs::write(m.generation_file(), "short\n").unwrap();
        assert_eq!(m.read_generation().unwrap(), None);
    }

    #[test]
    fn lock_is_exclusive_within_and_across_descriptors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("walship.lock");
        let l = InstanceLock::acquire(&p, Path::new("/x.db"), true).unwrap();
        let e = InstanceLock::acquire(&p, Path::new("/x.db"), false).unwrap_err();
        // Regression: the holder is this process, so it is not "another process".
        assert!(e.to_string().contains("configured twice"), "{e}");
        assert_eq!(
            LockHolder::read(&p),
            LockHolder {
                pid: Some(std::process::id()),
                takes_requests: true
            }
        );
        drop(l);
        InstanceLock::acquire(&p, Path::new("/x.db"), false).unwrap();
        assert!(!LockHolder::read(&p).takes_requests);
    }

    #[test]
    fn lock_holder_of_older_and_damaged_files() {
        // Files written before requests existed hold the pid alone.
        assert_eq!(
            LockHolder::parse("4242\n"),
            LockHolder {
                pid: Some(4242),
                takes_requests: false
            }
        );
        assert_eq!(LockHolder::parse("").pid, None);
        assert_eq!(LockHolder::parse("x requests").pid, None);
    }

    #[test]
    fn request_names_stay_inside_the_meta_directory() {
        let d = tempfile::tempdir().unwrap();
        let m = MetaDir::new(d.path().to_path_buf());
        fs::write(m.snapshot_request("12-ab"), "").unwrap();
        fs::write(m.snapshot_response("12-ab"), "").unwrap();
        fs::write(d.path().join("walship-snapshot-.request"), "").unwrap();
        fs::write(d.path().join("walship-snapshot-A.request"), "").unwrap();
        fs::write(d.path().join("walship-snapshot-x.request.tmp"), "").unwrap();
        assert_eq!(m.pending_snapshot_requests(), vec!["12-ab".to_string()]);
        assert_eq!(request_id("walship-snapshot-..%2f.request"), None);
    }
}

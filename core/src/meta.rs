//! The local meta directory, exactly v0.3's (`.<name>-litestream/`), so that v0.3.13 and walship
//! can hand a database over to each other and continue the same generation.
//!
//! ```text
//! generation                                  "<16 hex>\n", written via generation.tmp + rename
//! generations/<gen>/wal/<index %08x>.wal      shadow WAL: one life of the real WAL
//! walship.lock                                walship's flock; not *.tmp, which v0.3.13 deletes
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

#[derive(Debug, Clone)]
pub struct MetaDir {
    pub root: PathBuf,
}

impl MetaDir {
    pub fn new(root: PathBuf) -> Self {
        MetaDir { root }
    }

    pub fn generation_file(&self) -> PathBuf {
        self.root.join("generation")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("walship.lock")
    }

    pub fn generation_dir(&self, generation: &str) -> PathBuf {
        self.root.join("generations").join(generation)
    }

    pub fn shadow_dir(&self, generation: &str) -> PathBuf {
        self.generation_dir(generation).join("wal")
    }

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

    pub fn write_generation(&self, generation: &str) -> Result<()> {
        let tmp = self.root.join("generation.tmp");
        let path = self.generation_file();
        let io = |e| Error::io(format!("write {}", path.display()), e);
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(format!("{generation}\n").as_bytes())
            .map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&self.root);
        Ok(())
    }

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
    pub fn remove_tmp_files(&self) {
        fn walk(dir: &Path) {
            let Ok(rd) = fs::read_dir(dir) else { return };
            for ent in rd.flatten() {
                let p = ent.path();
                if p.is_dir() {
                    walk(&p);
                } else if p.extension().is_some_and(|e| e == "tmp") {
                    let _ = fs::remove_file(&p);
                }
            }
        }
        walk(&self.root);
    }
}

/// Best-effort fsync of a directory so a rename survives a crash.
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// An exclusive advisory lock that the kernel releases when the process dies.
#[derive(Debug)]
pub struct InstanceLock {
    file: fs::File,
}

impl InstanceLock {
    /// Takes the lock or fails naming the process that holds it.
    pub fn acquire(path: &Path, db: &Path) -> Result<InstanceLock> {
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
            let holder = fs::read_to_string(path).unwrap_or_default();
            let holder = holder.trim();
            return Err(Error::invalid(format!(
                "database {} is already being replicated by another process ({}); lock file {}",
                db.display(),
                if holder.is_empty() {
                    "pid unknown".to_string()
                } else {
                    format!("pid {holder}")
                },
                path.display()
            )));
        }
        let _ = file.set_len(0);
        let _ = (&file).write_all(format!("{}\n", std::process::id()).as_bytes());
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
        let l = InstanceLock::acquire(&p, Path::new("/x.db")).unwrap();
        let e = InstanceLock::acquire(&p, Path::new("/x.db")).unwrap_err();
        assert!(e.to_string().contains("already being replicated"), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(l);
        InstanceLock::acquire(&p, Path::new("/x.db")).unwrap();
    }
}

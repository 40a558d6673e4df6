//! The `Snapshotter` seam: how a consistent image of a database at a WAL position is produced.
//!
//! The default reads the database file while walship's read transaction pins the WAL, exactly as
//! v0.3.13 does; restore then replays the snapshot's WAL index from offset 0 (spec §3.2), which
//! makes pages backfilled during the read consistent again.
//!
//! It reads through one handle that stays open for the life of the monitor. Opening and closing
//! another descriptor on the database file would drop every POSIX lock this process holds on it,
//! SQLite's included: an application closing its last connection would then checkpoint past
//! walship's read transaction and delete the WAL.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

pub trait Snapshotter: Send + Sync {
    /// Opens a fresh stream of the image; called again from the start when an upload is retried.
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>>;
}

/// Reads the raw database file through a shared, never-closed handle.
#[derive(Debug, Clone)]
pub struct FileSnapshotter {
    file: Arc<File>,
}

impl FileSnapshotter {
    pub fn new(file: Arc<File>) -> Self {
        FileSnapshotter { file }
    }
}

impl Snapshotter for FileSnapshotter {
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            PositionalReader {
                file: self.file.clone(),
                pos: 0,
            },
        )))
    }
}

/// `Read` over `pread`, so readers share one descriptor without sharing a file offset.
struct PositionalReader {
    file: Arc<File>,
    pos: u64,
}

impl Read for PositionalReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_whole_file_twice() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let s = FileSnapshotter::new(Arc::new(File::open(&p).unwrap()));
        for _ in 0..2 {
            let mut out = Vec::new();
            s.open().unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }
}

//! The `Snapshotter` seam: how a consistent image of a database at a WAL position is produced.
//!
//! The default reads the database file while walship's read transaction pins the WAL, exactly as
//! v0.3.13 does; restore then replays the snapshot's WAL index from offset 0 (spec §3.2), which
//! makes pages backfilled during the read consistent again.

use std::io::Read;
use std::path::{Path, PathBuf};

pub trait Snapshotter: Send + Sync {
    /// Opens a fresh stream of the image; called again from the start when an upload is retried.
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>>;
}

/// Reads the raw database file.
#[derive(Debug, Clone)]
pub struct FileSnapshotter {
    path: PathBuf,
}

impl FileSnapshotter {
    pub fn new(path: &Path) -> Self {
        FileSnapshotter {
            path: path.to_path_buf(),
        }
    }
}

impl Snapshotter for FileSnapshotter {
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        let f = std::fs::File::open(&self.path)?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
    }
}

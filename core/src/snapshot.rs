//! The `Snapshotter` seam: how a consistent image of a database at a WAL position is produced.
//!
//! The default reads the database file while walship's read transaction pins the WAL, exactly as
//! v0.3.13 does; restore then replays the snapshot's WAL index from offset 0 (format §7), which
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

/// A source of a database image for a snapshot upload, opened again for each upload attempt.
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
    /// Reads through `file`, which must be walship's long-lived descriptor of the database (see the
    /// module documentation), never one opened for the snapshot alone.
    pub fn new(file: Arc<File>) -> Self {
        FileSnapshotter { file }
    }
}

impl Snapshotter for FileSnapshotter {
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(buffered(PositionalReader {
            file: self.file.clone(),
            pos: 0,
            promised: None,
            head: Vec::with_capacity(HEADER_LEN),
        }))
    }
}

fn buffered(r: impl Read + Send + 'static) -> Box<dyn Read + Send> {
    Box::new(std::io::BufReader::with_capacity(SNAPSHOT_READ_BUF, r))
}

/// `Read` over `pread`, so readers share one descriptor without sharing a file offset.
///
/// The image is at least as long as the page count in the header it emitted: a complete
/// checkpoint that shrinks the file (after a VACUUM) while the image is read would otherwise
/// leave it shorter than its own header says, which restore refuses as a truncated snapshot.
/// The pages padded with zeros are past the end of the database at the position the image is
/// taken for, and restore's replay of that WAL index truncates them away.
struct PositionalReader {
    file: Arc<File>,
    pos: u64,
    /// Length promised by the header (known once the first 100 bytes are read).
    promised: Option<u64>,
    head: Vec<u8>,
}

impl Read for PositionalReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        if self.promised.is_none() && self.head.len() < HEADER_LEN {
            let take = n.min(HEADER_LEN - self.head.len());
            self.head.extend_from_slice(&buf[..take]);
            if self.head.len() == HEADER_LEN {
                self.promised = header_len(&self.head);
            }
        }
        if n == 0 {
            let pad = self.promised.unwrap_or(0).saturating_sub(self.pos);
            let n = usize::try_from(pad).unwrap_or(usize::MAX).min(buf.len());
            buf[..n].fill(0);
            self.pos += n as u64;
            return Ok(n);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The snapshot stream's read buffer. `BufReader` zero-fills the whole buffer before its first
/// read from a reader without a native `read_buf` (ours reads with `pread`), so every page of it
/// becomes resident at once, even for a database of a few pages: at 1 MiB each snapshot (the
/// first sync's included) raised walship's peak RSS by ~0.8 MiB, 6 % of the whole process.
/// 256 KiB still reads the file in large `pread`s (the encoder consumes 64 KiB at a time).
pub const SNAPSHOT_READ_BUF: usize = 256 * 1024;

/// Bytes of the SQLite database header that say what the file is.
pub const HEADER_LEN: usize = 100;
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The database length the header promises (page size x in-header page count), when the
/// in-header count is valid (SQLite >= 3.7.0 keeps it so; it is valid when the change counter
/// at 24 equals the version-valid-for number at 92).
pub(crate) fn header_len(h: &[u8]) -> Option<u64> {
    let h = h.get(..HEADER_LEN)?;
    if &h[..16] != MAGIC {
        return None;
    }
    let page = page_size(h)?;
    let count = u32::from_be_bytes(h[28..32].try_into().ok()?);
    (h[24..28] == h[92..96] && count > 0).then_some(page * u64::from(count))
}

/// Page size from a database header's bytes 16-17 (1 means 65536), if valid.
pub(crate) fn page_size(h: &[u8]) -> Option<u64> {
    match u16::from_be_bytes([h[16], h[17]]) {
        1 => Some(65536),
        p if p >= 512 && p.is_power_of_two() => Some(u64::from(p)),
        _ => None,
    }
}

/// Checks that a decoded snapshot is a whole SQLite database: the header names SQLite, a valid
/// page size, and a page count whose pages are all present. SQLite itself would open an empty
/// or truncated file without complaint (an empty file is an empty database, whose `quick_check`
/// is ok), so a 0-byte object or an empty LZ4 frame would otherwise restore as an empty
/// database with success.
///
/// A file longer than its header's count is accepted: v0.3.13 (like walship) reads the database
/// file while checkpoints may backfill pages that grew it after the header was read, and the
/// replay of the snapshot's WAL index makes those pages consistent again.
///
/// A file SHORTER than its header's count is accepted only when that index is `replayed`: an
/// application checkpoint backfills in page order, so v0.3.13 can read page 1 (with the new,
/// larger count) before the checkpoint has written the last pages; those pages are frames of the
/// replayed index (seen in CI: 1806 pages under a header of 1807). Restore's integrity check
/// then proves the result. Without a replay, a short image is a truncated snapshot.
pub fn check_image(head: &[u8], len: u64, replayed: bool) -> Result<(), String> {
    if len == 0 {
        return Err("the snapshot is empty (0 bytes decoded), not a SQLite database".into());
    }
    if len < HEADER_LEN as u64 || head.len() < HEADER_LEN {
        return Err(format!(
            "the snapshot is {len} bytes, shorter than a SQLite database header"
        ));
    }
    if &head[..16] != MAGIC {
        return Err("the snapshot does not start with the SQLite database header".into());
    }
    let page = page_size(head).ok_or_else(|| {
        format!(
            "the snapshot's header has an invalid page size ({})",
            u16::from_be_bytes([head[16], head[17]])
        )
    })?;
    if !len.is_multiple_of(page) {
        return Err(format!(
            "the snapshot is {len} bytes, not a whole number of {page}-byte pages"
        ));
    }
    if let Some(want) = header_len(head) {
        if len < want && !replayed {
            return Err(format!(
                "the snapshot is truncated: its header says {} pages of {page} bytes ({want} bytes) but it holds {len} bytes",
                want / page
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (peak RSS, 2026-12-07): the buffer `BufReader` zero-fills in full is what the
    /// image reader is asked for at most, and it stays at SNAPSHOT_READ_BUF (it was 1 MiB).
    #[test]
    fn the_snapshot_stream_reads_at_most_its_small_buffer_at_a_time() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Probe {
            left: usize,
            largest: Arc<AtomicUsize>,
        }
        impl Read for Probe {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.largest.fetch_max(buf.len(), Ordering::Relaxed);
                let n = buf.len().min(self.left);
                buf[..n].fill(7);
                self.left -= n;
                Ok(n)
            }
        }
        let largest = Arc::new(AtomicUsize::new(0));
        let mut r = buffered(Probe {
            left: 3 << 20,
            largest: largest.clone(),
        });
        let mut chunk = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = crate::wal::read_full(&mut r, &mut chunk).unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 3 << 20);
        let asked = largest.load(Ordering::Relaxed);
        assert!(asked <= 256 * 1024, "asked for {asked} bytes at once");
        assert!(asked >= 64 * 1024, "asked for {asked} bytes at once");
    }

    /// A header for `count` pages of `page` bytes with a valid in-header count.
    fn header(page: u16, count: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..16].copy_from_slice(MAGIC);
        h[16..18].copy_from_slice(&page.to_be_bytes());
        h[24..28].copy_from_slice(&7u32.to_be_bytes());
        h[28..32].copy_from_slice(&count.to_be_bytes());
        h[92..96].copy_from_slice(&7u32.to_be_bytes());
        h
    }

    #[test]
    fn images_that_are_not_whole_databases_are_refused() {
        let h = header(4096, 3);
        assert!(check_image(&h, 3 * 4096, false).is_ok());
        // Longer than the header says: pages a concurrent checkpoint added.
        assert!(check_image(&h, 5 * 4096, false).is_ok());
        assert!(check_image(&[], 0, true).unwrap_err().contains("empty"));
        assert!(check_image(&h, 2 * 4096, false)
            .unwrap_err()
            .contains("truncated"));
        // Short, but the pages a concurrent checkpoint had not written come from the replay.
        assert!(check_image(&h, 2 * 4096, true).is_ok());
        assert!(check_image(&h, 3 * 4096 - 1, true)
            .unwrap_err()
            .contains("whole number"));
        assert!(check_image(&h[..50], 50, true)
            .unwrap_err()
            .contains("shorter"));
        let mut bad = h.clone();
        bad[0] = b's';
        assert!(check_image(&bad, 3 * 4096, true)
            .unwrap_err()
            .contains("header"));
        assert!(check_image(&header(1000, 3), 3000, true)
            .unwrap_err()
            .contains("page size (1000)"));
        // 65536-byte pages are spelled 1.
        assert!(check_image(&header(1, 2), 2 * 65536, false).is_ok());
        // An invalid in-header count (a pre-3.7.0 writer): the file's length decides.
        let mut legacy = header(4096, 9);
        legacy[92] = 1;
        assert!(check_image(&legacy, 4096, false).is_ok());
    }

    #[test]
    fn an_image_shorter_than_its_header_is_padded_to_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        let mut data = header(512, 4);
        data.resize(2 * 512 + 7, 0xab);
        data.truncate(2 * 512);
        std::fs::write(&p, &data).unwrap();
        let s = FileSnapshotter::new(Arc::new(File::open(&p).unwrap()));
        let mut out = Vec::new();
        s.open().unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 4 * 512);
        assert_eq!(&out[..data.len()], &data[..]);
        assert!(out[data.len()..].iter().all(|b| *b == 0));
        assert!(check_image(&out[..HEADER_LEN], out.len() as u64, false).is_ok());
    }

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

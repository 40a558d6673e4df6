//! The replica's last segment, checked before shipping resumes after it.
//!
//! Shipping resumes where the replica's last segment ends, so that segment must hold exactly
//! the shadow WAL's bytes. A torn or mixed object there (Litestream v0.3.13's shutdown race
//! writes one segment twice under one temporary name; a crash of any writer without atomic
//! puts) would otherwise stop replication for good: every restart decodes it, fails, and
//! tries again, while every restore fails on it too. Compared against the shadow WAL while it
//! is decoded, a damaged tail is found and uploaded again under the same key.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// A writer for a decoded segment that compares each byte with the shadow WAL from the
/// segment's offset. Bytes past the shadow's end are only counted: a replica ahead of the
/// database is a different fault, found from the length.
pub(super) struct ShadowCheck {
    shadow: Option<BufReader<File>>,
    written: u64,
    differs_at: Option<u64>,
    buf: Vec<u8>,
}

impl ShadowCheck {
    /// Compares with `shadow` from byte `offset`; with no readable shadow file, only counts.
    pub(super) fn open(shadow: &Path, offset: u64) -> ShadowCheck {
        let file = File::open(shadow)
            .and_then(|mut f| f.seek(SeekFrom::Start(offset)).map(|_| f))
            .ok();
        ShadowCheck {
            shadow: file.map(BufReader::new),
            written: 0,
            differs_at: None,
            buf: Vec::new(),
        }
    }

    /// The first byte (from the segment's start) where the segment and the shadow WAL differ.
    pub(super) fn differs_at(&self) -> Option<u64> {
        self.differs_at
    }
}

impl Write for ShadowCheck {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.differs_at.is_none() {
            if let Some(shadow) = self.shadow.as_mut() {
                self.buf.resize(data.len(), 0);
                let mut have = 0;
                while have < data.len() {
                    match shadow.read(&mut self.buf[have..]) {
                        Ok(0) => break,
                        Ok(n) => have += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if let Some(i) = (0..have).find(|&i| self.buf[i] != data[i]) {
                    self.differs_at = Some(self.written + i as u64);
                }
                if have < data.len() {
                    // The shadow ends here: nothing further to compare.
                    self.shadow = None;
                }
            }
        }
        self.written += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(shadow: &[u8], offset: u64, segment: &[u8], chunk: usize) -> (u64, Option<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("00000000.wal");
        std::fs::write(&p, shadow).unwrap();
        let mut c = ShadowCheck::open(&p, offset);
        for part in segment.chunks(chunk) {
            c.write_all(part).unwrap();
        }
        (c.written, c.differs_at())
    }

    #[test]
    fn a_segment_equal_to_the_shadow_matches_in_any_chunking() {
        let shadow: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for chunk in [1, 7, 4096, 20_000] {
            assert_eq!(
                check(&shadow, 32, &shadow[32..], chunk),
                (shadow.len() as u64 - 32, None)
            );
        }
    }

    #[test]
    fn the_first_differing_byte_is_reported_from_the_segment_start() {
        let shadow: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut seg = shadow[100..].to_vec();
        seg[5000] ^= 1;
        seg[7000] ^= 1;
        assert_eq!(
            check(&shadow, 100, &seg, 333),
            (seg.len() as u64, Some(5000))
        );
    }

    /// A segment longer than the shadow (the replica ahead) is counted whole and not called
    /// damaged: the caller's length check names that fault.
    #[test]
    fn bytes_past_the_shadow_end_are_counted_not_compared() {
        let shadow = vec![9u8; 1000];
        let mut seg = vec![9u8; 1500];
        seg[1200] = 1;
        assert_eq!(check(&shadow, 0, &seg, 256), (1500, None));
    }

    #[test]
    fn without_a_shadow_file_it_only_counts() {
        let mut c = ShadowCheck::open(Path::new("/nonexistent/00000000.wal"), 0);
        c.write_all(&[1, 2, 3]).unwrap();
        assert_eq!((c.written, c.differs_at()), (3, None));
    }
}

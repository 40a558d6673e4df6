//! A WAL file from a replica or a damaged disk: header, frames, checksums, commits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use walship_core::wal::{scan, FrameReader, WalHeader};

fuzz_target!(|data: &[u8]| {
    let _ = scan(data);
    if let Ok(h) = WalHeader::parse(data) {
        let body = data.get(32..).unwrap_or(&[]);
        let mut r = FrameReader::new(body, h, h.checksum);
        while let Ok(Some(_)) = r.next_frame() {}
    }
});

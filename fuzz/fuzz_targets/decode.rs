//! An object from a replica: age sniffing, the LZ4 frame decoder, then the snapshot check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Read;
use walship_core::crypt::Age;

/// Decoded bytes read at most: an LZ4 bomb must not make the target itself run out of memory.
const LIMIT: u64 = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = Age::default().decrypt("fuzz", std::io::Cursor::new(data.to_vec())) else {
        return;
    };
    let mut dec = walship_core::codec::decoder(r).take(LIMIT);
    let mut head = Vec::new();
    let mut sink = [0u8; 65536];
    let mut len = 0u64;
    loop {
        match dec.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if head.len() < walship_core::snapshot::HEADER_LEN {
                    let take = n.min(walship_core::snapshot::HEADER_LEN - head.len());
                    head.extend_from_slice(&sink[..take]);
                }
                len += n as u64;
            }
        }
    }
    let _ = walship_core::snapshot::check_image(&head, len, len % 2 == 0);
});

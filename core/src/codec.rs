//! Object payload encoding: one independent LZ4 frame per object, as format §2.
//!
//! Both directions stream: the encoder is a `Read` adapter (so a `put` source can be rebuilt from
//! the start for a retry), and the decoder is lz4_flex's frame decoder, which checks the content
//! checksum at the end of the frame.
//!
//! walship writes 64 KiB blocks where v0.3.13 writes 4 MiB ones: the frame format lets the
//! writer choose, v0.3.13's reader (pierrec/lz4) takes any block size, and an encoder holds one
//! block plus its compressed copy (the 4 MiB version kept 4-8 MiB resident after each upload,
//! 256 KiB blocks still half a megabyte). LZ4 looks back only 64 KiB anyway, so independent
//! 64 KiB blocks compress within a fraction of a percent of larger ones (1 GiB benchmark
//! database: see the README). Decoding a v0.3.13 object still needs its 4 MiB block.

use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};
use std::io::{self, Read, Write};

fn frame_info() -> FrameInfo {
    FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Independent)
        .content_checksum(true)
}

const CHUNK: usize = 64 * 1024;

/// Compresses everything read from `inner` into one LZ4 frame, on demand.
pub struct Lz4Encoder<R> {
    inner: R,
    enc: Option<FrameEncoder<Vec<u8>>>,
    out: Vec<u8>,
    out_pos: usize,
    chunk: Vec<u8>,
}

impl<R: Read> Lz4Encoder<R> {
    /// Wraps `inner`; nothing is read or compressed until the first `read`.
    pub fn new(inner: R) -> Self {
        Lz4Encoder {
            inner,
            enc: Some(FrameEncoder::with_frame_info(frame_info(), Vec::new())),
            out: Vec::new(),
            out_pos: 0,
            chunk: vec![0; CHUNK],
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        while self.out_pos >= self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            let Some(enc) = self.enc.as_mut() else {
                return Ok(());
            };
            let n = loop {
                match self.inner.read(&mut self.chunk) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                let enc = self.enc.take().expect("checked above");
                let buf = enc.finish().map_err(io::Error::other)?;
                self.out = buf;
            } else {
                enc.write_all(&self.chunk[..n])?;
                std::mem::swap(&mut self.out, enc.get_mut());
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for Lz4Encoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill()?;
        let avail = &self.out[self.out_pos..];
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// Decodes one LZ4 frame; corrupt input fails with `InvalidData`.
pub fn decoder<R: Read>(inner: R) -> impl Read {
    DecodeErrors(FrameDecoder::new(inner))
}

/// lz4_flex reports some corruption as `Other`; callers need `InvalidData` to classify it.
struct DecodeErrors<R>(R);

impl<R: Read> Read for DecodeErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            // Only the decoder's own errors: a transfer error passing through keeps its kind.
            let from_decoder = e
                .get_ref()
                .is_some_and(|i| i.is::<lz4_flex::frame::Error>());
            if e.kind() == io::ErrorKind::Other && from_decoder {
                io::Error::new(io::ErrorKind::InvalidData, e.to_string())
            } else {
                e
            }
        })
    }
}

/// Compresses a byte slice (small objects, tests).
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Lz4Encoder::new(data)
        .read_to_end(&mut out)
        .expect("in-memory compression cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FLG as the Go writer's (version 1, independent blocks, content checksum); BD says 64 KiB
    /// blocks where the Go writer says 4 MiB (0x70), which its reader accepts (see the module
    /// comment).
    #[test]
    fn frame_header_matches_go_writer_flags() {
        let c = compress(b"hello");
        assert_eq!(&c[..6], &[0x04, 0x22, 0x4d, 0x18, 0x64, 0x40]);
    }

    #[test]
    fn roundtrip_large_and_empty() {
        for size in [0usize, 1, 1000, 5 * 1024 * 1024 + 17] {
            let data: Vec<u8> = (0..size).map(|i| ((i * 7) % 251) as u8).collect();
            let c = compress(&data);
            let mut out = Vec::new();
            decoder(&c[..]).read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "size {size}");
        }
    }

    #[test]
    fn corruption_is_detected() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut c = compress(&data);
        let mid = c.len() / 2;
        c[mid] ^= 0x01;
        let mut out = Vec::new();
        let err = decoder(&c[..]).read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}

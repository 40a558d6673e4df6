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
//!
//! The frame around the blocks is written here rather than by lz4_flex's `FrameEncoder`: on WAL
//! segments of the benchmark's lag workload that encoder spent 0.88-1.04 ms of CPU per MB where
//! its own block compressor plus the content checksum spend 0.69-0.76 (`walship-codec-bench`;
//! README, issue 18 section). Compression is the largest single item of an upload's CPU, and the frame is three
//! fixed fields (LZ4 frame format 1.6.x), so the encoder owns them; what it writes is read back by
//! lz4_flex's `FrameDecoder` in the tests below and in `walship-codec-bench`, and by v0.3.13's
//! reader in the interoperability suite.

use lz4_flex::frame::FrameDecoder;
use std::hash::Hasher;
use std::io::{self, Read};
use twox_hash::XxHash32;

/// Frame magic, then FLG (version 01, independent blocks, content checksum) and BD (64 KiB
/// maximum block size).
const HEADER: [u8; 6] = [0x04, 0x22, 0x4d, 0x18, 0x64, 0x40];

/// Largest block the header allows; each block holds one full chunk of input but the last.
const CHUNK: usize = 64 * 1024;

/// Block size field bit marking a block stored uncompressed (it would not shrink).
const UNCOMPRESSED: u32 = 0x8000_0000;

/// Header checksum byte: the second byte of XXH32 (seed 0) of FLG and BD.
fn header_checksum() -> u8 {
    (XxHash32::oneshot(0, &HEADER[4..6]) >> 8) as u8
}

/// Compresses everything read from `inner` into one LZ4 frame, on demand.
///
/// Holds one input chunk and one output block (about 130 KiB), reused from block to block.
pub struct Lz4Encoder<R> {
    inner: R,
    stage: Stage,
    hasher: XxHash32,
    chunk: Box<[u8]>,
    out: Box<[u8]>,
    out_len: usize,
    out_pos: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Blocks,
    Done,
}

impl<R: Read> Lz4Encoder<R> {
    /// Wraps `inner`; nothing is read or compressed until the first `read`.
    pub fn new(inner: R) -> Self {
        Lz4Encoder {
            inner,
            stage: Stage::Header,
            hasher: XxHash32::with_seed(0),
            chunk: vec![0; CHUNK].into_boxed_slice(),
            out: vec![0; 4 + lz4_flex::block::get_maximum_output_size(CHUNK)].into_boxed_slice(),
            out_len: 0,
            out_pos: 0,
        }
    }

    /// Puts the next piece of the frame into `out` once the previous one has been read.
    fn fill(&mut self) -> io::Result<()> {
        if self.out_pos < self.out_len {
            return Ok(());
        }
        self.out_pos = 0;
        self.out_len = 0;
        match self.stage {
            Stage::Header => {
                self.out[..6].copy_from_slice(&HEADER);
                self.out[6] = header_checksum();
                self.out_len = 7;
                self.stage = Stage::Blocks;
            }
            Stage::Blocks => {
                // Full chunks: short reads would make short blocks, which compress worse.
                let n = crate::wal::read_full(&mut self.inner, &mut self.chunk)?;
                if n == 0 {
                    // End mark, then the checksum of all the content.
                    self.out[..4].copy_from_slice(&0u32.to_le_bytes());
                    self.out[4..8].copy_from_slice(&self.hasher.finish_32().to_le_bytes());
                    self.out_len = 8;
                    self.stage = Stage::Done;
                    return Ok(());
                }
                let input = &self.chunk[..n];
                self.hasher.write(input);
                let packed = lz4_flex::block::compress_into(input, &mut self.out[4..])
                    .map_err(io::Error::other)?;
                let size = if packed < n {
                    packed as u32
                } else {
                    self.out[4..4 + n].copy_from_slice(input);
                    n as u32 | UNCOMPRESSED
                };
                self.out[..4].copy_from_slice(&size.to_le_bytes());
                self.out_len = 4 + (size & !UNCOMPRESSED) as usize;
            }
            Stage::Done => {}
        }
        Ok(())
    }
}

impl<R: Read> Read for Lz4Encoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill()?;
        let avail = &self.out[self.out_pos..self.out_len];
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

/// Bytes that do not compress (xorshift), for tests of stored sizes.
#[cfg(test)]
pub(crate) fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
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

    /// The header checksum byte and the fixed fields, as lz4_flex's own frame encoder writes
    /// them for the same frame description.
    #[test]
    fn header_equals_the_library_encoders() {
        use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
        use std::io::Write;
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Independent)
            .content_checksum(true);
        let mut theirs = FrameEncoder::with_frame_info(info, Vec::new());
        theirs.write_all(b"hello").unwrap();
        let theirs = theirs.finish().unwrap();
        assert_eq!(compress(b"hello")[..7], theirs[..7]);
    }

    /// Random bytes do not shrink: their blocks are stored with the uncompressed bit and still
    /// decode, checksum included.
    #[test]
    fn incompressible_blocks_are_stored() {
        let data = noise(200_000);
        let c = compress(&data);
        let first = u32::from_le_bytes(c[7..11].try_into().unwrap());
        assert_eq!(first, CHUNK as u32 | UNCOMPRESSED);
        let mut out = Vec::new();
        decoder(&c[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    /// A source that hands out a few bytes per read still makes full 64 KiB blocks (the same
    /// frame as from one slice).
    #[test]
    fn short_reads_make_full_blocks() {
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 97) as u8 ^ (i / 5000) as u8)
            .collect();
        let mut dribbled = Vec::new();
        Lz4Encoder::new(Dribble(&data))
            .read_to_end(&mut dribbled)
            .unwrap();
        assert_eq!(dribbled, compress(&data));
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

//! SQLite WAL header and frame parsing with SQLite's own cumulative checksums.
//!
//! This is what decides which bytes of the live WAL are *committed* and belong to the current
//! "life" of the WAL (one salt pair). Everything is pure: readers in, validated frames out.

use std::io::{self, Read};

/// Bytes of the WAL file header; the first frame starts here.
pub const HEADER_SIZE: usize = 32;
/// Bytes of the header that precedes each page in a frame.
pub const FRAME_HEADER_SIZE: usize = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const VERSION: u32 = 3_007_000;

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// SQLite's running WAL checksum over 8-byte units; `big_endian` follows the magic number.
pub fn checksum(big_endian: bool, data: &[u8], seed: (u32, u32)) -> (u32, u32) {
    debug_assert!(data.len().is_multiple_of(8));
    let (mut s0, mut s1) = seed;
    for chunk in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (be32(&chunk[0..4]), be32(&chunk[4..8]))
        } else {
            (
                u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            )
        };
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    (s0, s1)
}

/// The 32-byte WAL header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    /// The 32 bytes as read: compared whole to tell two lives of the WAL apart, and written as the
    /// first bytes of each shadow WAL.
    pub raw: [u8; HEADER_SIZE],
    /// Checksum byte order, from the magic number (`0x377f0683`: big-endian).
    pub big_endian: bool,
    /// Database page size in bytes: a power of two in 512..=65536.
    pub page_size: u32,
    /// SQLite's checkpoint sequence; no evidence of a restart (SQLite counts it per connection).
    pub checkpoint_seq: u32,
    /// Salt-1: SQLite adds 1 at each restart, which is how walship recognises exactly one restart.
    pub salt1: u32,
    /// Salt-2: changes at each restart; every frame of this life carries both salts.
    pub salt2: u32,
    /// The header's checksum, the seed of the first frame's cumulative checksum.
    pub checksum: (u32, u32),
}

/// Why bytes are not a valid WAL header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WalError {
    /// Fewer than 32 bytes (how many there were).
    #[error("WAL header too short ({0} bytes)")]
    Short(usize),
    /// Not SQLite's WAL magic number (the value found).
    #[error("bad WAL magic {0:#010x}")]
    Magic(u32),
    /// A WAL format version other than 3007000 (the value found).
    #[error("unsupported WAL version {0}")]
    Version(u32),
    /// A page size that is not a power of two in 512..=65536.
    #[error("invalid WAL page size {0}")]
    PageSize(u32),
    /// The header's own checksum does not match: torn, or not a WAL header.
    #[error("WAL header checksum mismatch")]
    Checksum,
}

impl WalHeader {
    /// Parses and validates the first 32 bytes of `b` (the rest is ignored).
    pub fn parse(b: &[u8]) -> Result<WalHeader, WalError> {
        if b.len() < HEADER_SIZE {
            return Err(WalError::Short(b.len()));
        }
        let magic = be32(&b[0..4]);
        let big_endian = match magic {
            MAGIC_LE => false,
            MAGIC_BE => true,
            m => return Err(WalError::Magic(m)),
        };
        let version = be32(&b[4..8]);
        if version != VERSION {
            return Err(WalError::Version(version));
        }
        let page_size = be32(&b[8..12]);
        // SQLite stores 65536 as 1 in the database header, but the WAL header holds the real value.
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(WalError::PageSize(page_size));
        }
        let stored = (be32(&b[24..28]), be32(&b[28..32]));
        if checksum(big_endian, &b[0..24], (0, 0)) != stored {
            return Err(WalError::Checksum);
        }
        let mut raw = [0u8; HEADER_SIZE];
        raw.copy_from_slice(&b[..HEADER_SIZE]);
        Ok(WalHeader {
            raw,
            big_endian,
            page_size,
            checkpoint_seq: be32(&b[12..16]),
            salt1: be32(&b[16..20]),
            salt2: be32(&b[20..24]),
            checksum: stored,
        })
    }

    /// Bytes of one frame: the 24-byte frame header plus one page.
    pub fn frame_size(&self) -> u64 {
        FRAME_HEADER_SIZE as u64 + u64::from(self.page_size)
    }

    /// Byte offset of frame `n` (0-based) in the WAL file.
    pub fn frame_offset(&self, n: u64) -> u64 {
        HEADER_SIZE as u64 + n * self.frame_size()
    }

    /// Rounds a byte size down to the end of the last whole frame.
    pub fn align(&self, size: u64) -> u64 {
        if size < HEADER_SIZE as u64 {
            return 0;
        }
        HEADER_SIZE as u64 + (size - HEADER_SIZE as u64) / self.frame_size() * self.frame_size()
    }
}

/// Fields of one frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Database page number this frame's page replaces.
    pub page_no: u32,
    /// Database size in pages after this frame's commit; non-zero only on commit frames.
    pub commit_size: u32,
    /// Salt-1 of the WAL life that wrote the frame; differs from the header's for a stale frame.
    pub salt1: u32,
    /// Salt-2 of the WAL life that wrote the frame; differs from the header's for a stale frame.
    pub salt2: u32,
    /// Cumulative checksum of every frame of the life up to and including this one.
    pub checksum: (u32, u32),
}

impl FrameHeader {
    /// Decodes the first 24 bytes of `b`, validating nothing (panics when shorter).
    pub fn parse(b: &[u8]) -> FrameHeader {
        FrameHeader {
            page_no: be32(&b[0..4]),
            commit_size: be32(&b[4..8]),
            salt1: be32(&b[8..12]),
            salt2: be32(&b[12..16]),
            checksum: (be32(&b[16..20]), be32(&b[20..24])),
        }
    }
}

/// Reads frames that belong to `header`'s WAL life, validating salts and cumulative checksums.
///
/// Iteration stops, without error, at EOF, a partial frame, the first frame of another salt pair,
/// or the first checksum failure: exactly SQLite's own notion of where the valid log ends.
pub struct FrameReader<R> {
    inner: R,
    header: WalHeader,
    seed: (u32, u32),
    buf: Vec<u8>,
    done: bool,
}

impl<R: Read> FrameReader<R> {
    /// `seed` is the checksum of the last frame already accepted (or the header's checksum).
    pub fn new(inner: R, header: WalHeader, seed: (u32, u32)) -> Self {
        let size = header.frame_size() as usize;
        FrameReader {
            inner,
            header,
            seed,
            buf: vec![0; size],
            done: false,
        }
    }

    /// The next valid frame (header + page bytes), or `None` where the valid log ends.
    pub fn next_frame(&mut self) -> io::Result<Option<(FrameHeader, &[u8])>> {
        if self.done {
            return Ok(None);
        }
        let filled = read_full(&mut self.inner, &mut self.buf)?;
        if filled < self.buf.len() {
            self.done = true;
            return Ok(None);
        }
        let Some(fh) = continues(&self.header, self.seed, &self.buf) else {
            self.done = true;
            return Ok(None);
        };
        self.seed = fh.checksum;
        Ok(Some((fh, &self.buf)))
    }

    /// Running checksum after the last frame returned: the seed to continue this life from.
    pub fn seed(&self) -> (u32, u32) {
        self.seed
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read. A read may return fewer
/// bytes than asked for without the source having ended: a frame, a compressed block or an
/// upload's write that took a short read for the end would come out cut or too small.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The frame's header when `frame` (one whole frame) belongs to `header`'s life and continues
/// the cumulative checksum `seed`; `None` where SQLite would say the valid log ends.
fn continues(header: &WalHeader, seed: (u32, u32), frame: &[u8]) -> Option<FrameHeader> {
    let fh = FrameHeader::parse(&frame[..FRAME_HEADER_SIZE]);
    if fh.salt1 != header.salt1 || fh.salt2 != header.salt2 {
        return None;
    }
    let c = checksum(header.big_endian, &frame[..8], seed);
    let c = checksum(header.big_endian, &frame[FRAME_HEADER_SIZE..], c);
    (c == fh.checksum).then_some(fh)
}

/// What [`check_frames`] found in a run of whole frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRun {
    /// Bytes of valid frames from the start of the run.
    pub valid: usize,
    /// Bytes up to the end of the last valid commit frame (0 when there is none).
    pub committed: usize,
    /// Cumulative checksum after the last valid frame.
    pub seed: (u32, u32),
    /// Cumulative checksum after the last commit frame (the seed given when there is none).
    pub commit_seed: (u32, u32),
    /// Nothing after `valid` is to be read: the log ended inside the run, or a commit reached
    /// the budget.
    pub stop: bool,
}

/// Validates a run of whole frames in place, as [`FrameReader`] would frame by frame; stops
/// after the first commit frame that brings the committed bytes to `budget`.
///
/// Why in place: the monitor copies every committed byte of the WAL into the shadow WAL, and
/// checking the frames where they were read into, then writing that same buffer, spares two
/// copies of each frame in user space.
pub fn check_frames(header: &WalHeader, seed: (u32, u32), run: &[u8], budget: u64) -> FrameRun {
    let size = header.frame_size() as usize;
    let mut out = FrameRun {
        valid: 0,
        committed: 0,
        seed,
        commit_seed: seed,
        stop: false,
    };
    for frame in run.chunks_exact(size) {
        let Some(fh) = continues(header, out.seed, frame) else {
            out.stop = true;
            break;
        };
        out.valid += size;
        out.seed = fh.checksum;
        if fh.commit_size != 0 {
            out.committed = out.valid;
            out.commit_seed = fh.checksum;
            if out.committed as u64 >= budget {
                out.stop = true;
                break;
            }
        }
    }
    out
}

/// Summary of a whole WAL image: how far its valid, committed prefix reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalScan {
    /// The image's validated header.
    pub header: WalHeader,
    /// Byte length of the prefix ending at the last commit frame (32 when only the header).
    pub committed_len: u64,
    /// Number of valid frames (committed or not).
    pub valid_frames: u64,
    /// Checksum after the last committed frame.
    pub committed_seed: (u32, u32),
}

/// Reads and validates the 32-byte header at the start of a reader (a short read is
/// [`WalError::Short`]).
fn read_header<R: Read>(r: &mut R) -> io::Result<Result<WalHeader, WalError>> {
    let mut hdr = [0u8; HEADER_SIZE];
    let mut filled = 0;
    while filled < HEADER_SIZE {
        match r.read(&mut hdr[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(WalHeader::parse(&hdr[..filled]))
}

/// Validates a complete WAL image from a reader.
pub fn scan<R: Read>(mut r: R) -> io::Result<Result<WalScan, WalError>> {
    let header = match read_header(&mut r)? {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let mut fr = FrameReader::new(r, header, header.checksum);
    let mut frames = 0u64;
    let mut committed_len = HEADER_SIZE as u64;
    let mut committed_seed = header.checksum;
    while let Some((fh, _)) = fr.next_frame()? {
        frames += 1;
        if fh.commit_size != 0 {
            committed_len = header.frame_offset(frames);
            committed_seed = fh.checksum;
        }
    }
    Ok(Ok(WalScan {
        header,
        committed_len,
        valid_frames: frames,
        committed_seed,
    }))
}

/// Replays the frames of a WAL image up to byte `upto` (a commit boundary [`scan`] found) onto a
/// database through `write_page(page_no, page)`, as SQLite's checkpoint does: pages in log order,
/// a later frame of a page replacing an earlier one. Returns the database size in pages after the
/// last replayed commit, for the caller to cut or extend the file to (`None`: no frame).
///
/// Restore replays each WAL index this way instead of opening SQLite on it and checkpointing:
/// the result is the same bytes, without a connection, a `-shm` and a checkpoint per index, which
/// is most of the time of restoring a history of hundreds of small indexes. `upto` keeps frames
/// after the last commit (a transaction the writer never finished) out of the database.
pub fn replay<R: Read>(
    mut r: R,
    upto: u64,
    mut write_page: impl FnMut(u32, &[u8]) -> io::Result<()>,
) -> io::Result<Result<Option<u32>, WalError>> {
    let header = match read_header(&mut r)? {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let mut fr = FrameReader::new(r, header, header.checksum);
    let mut end = HEADER_SIZE as u64;
    let mut size = None;
    while end < upto {
        let Some((fh, frame)) = fr.next_frame()? else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the WAL's valid frames end at byte {end}, before byte {upto}"),
            ));
        };
        if fh.page_no == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the frame at byte {end} names page 0"),
            ));
        }
        write_page(fh.page_no, &frame[FRAME_HEADER_SIZE..])?;
        end += header.frame_size();
        if fh.commit_size != 0 {
            size = Some(fh.commit_size);
        }
    }
    Ok(Ok(size))
}

/// Whether a WAL life (header `old`) whose committed frames were all copied up to `end` ended
/// there, judged once the file holds the next life (`new`, exactly one restart later) from the
/// frame-sized `slot` of the file at offset `end` (`None`: the file is shorter than that).
///
/// This is what lets a start-up continue a generation across a restart that happened while no
/// walship ran. Every frame committed into the old life after `end` starts at `end`: committed
/// frames are never rewritten within a life, and SQLite appends after the last one. So if one
/// was committed there, the slot holds a frame with the old salts whose checksum continues from
/// `seed` (the running checksum after the frame ending at `end`), unless something wrote over
/// it since. Only two things could: the new life, which writes its slots in order from the start
/// and stamps each with its own salts (so any new-life frame in the slot shows), and a truncation
/// (a TRUNCATE checkpoint or `journal_size_limit`), after which the file can be shorter than
/// `end` + one frame, which is refused rather than trusted. A second restart is excluded by the
/// caller (salt-1 + 1 exactly). Anything else in the slot (an older life's frame, a torn frame of
/// a transaction that never committed, zeros) means nothing was committed after `end`.
pub fn life_ended_at(
    old: &WalHeader,
    seed: (u32, u32),
    new: &WalHeader,
    slot: Option<&[u8]>,
) -> LifeEnd {
    if old.page_size != new.page_size {
        return LifeEnd::Unknown("the page size changed");
    }
    let Some(slot) = slot.filter(|s| s.len() as u64 == old.frame_size()) else {
        return LifeEnd::Unknown("the wal file ends where walship's copy ended");
    };
    let fh = FrameHeader::parse(&slot[..FRAME_HEADER_SIZE]);
    if (fh.salt1, fh.salt2) == (new.salt1, new.salt2) {
        return LifeEnd::Unknown("the new wal already overwrote the frames after walship's copy");
    }
    if (fh.salt1, fh.salt2) != (old.salt1, old.salt2) {
        return LifeEnd::Ended;
    }
    let c = checksum(old.big_endian, &slot[..8], seed);
    let c = checksum(old.big_endian, &slot[FRAME_HEADER_SIZE..], c);
    if c == fh.checksum {
        LifeEnd::Continued
    } else {
        LifeEnd::Ended
    }
}

/// What [`life_ended_at`] can tell of a WAL life after one restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifeEnd {
    /// Nothing was committed after the copied frames: the generation continues.
    Ended,
    /// A frame was committed after them, and it is gone from the WAL.
    Continued,
    /// The file no longer shows it (why).
    Unknown(&'static str),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a valid WAL image: `commits` lists, per transaction, how many frames it has.
    pub(crate) fn build_wal(
        page_size: u32,
        salts: (u32, u32),
        ckpt: u32,
        commits: &[u32],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC_LE.to_be_bytes());
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&page_size.to_be_bytes());
        out.extend_from_slice(&ckpt.to_be_bytes());
        out.extend_from_slice(&salts.0.to_be_bytes());
        out.extend_from_slice(&salts.1.to_be_bytes());
        let c = checksum(false, &out[..24], (0, 0));
        out.extend_from_slice(&c.0.to_be_bytes());
        out.extend_from_slice(&c.1.to_be_bytes());
        let mut seed = c;
        let mut pgno = 1u32;
        for &n in commits {
            for i in 0..n {
                let mut fh = Vec::new();
                fh.extend_from_slice(&pgno.to_be_bytes());
                let commit = if i + 1 == n { pgno } else { 0 };
                fh.extend_from_slice(&commit.to_be_bytes());
                fh.extend_from_slice(&salts.0.to_be_bytes());
                fh.extend_from_slice(&salts.1.to_be_bytes());
                let page: Vec<u8> = (0..page_size).map(|b| (b as u8) ^ (pgno as u8)).collect();
                let s = checksum(false, &fh[..8], seed);
                let s = checksum(false, &page, s);
                fh.extend_from_slice(&s.0.to_be_bytes());
                fh.extend_from_slice(&s.1.to_be_bytes());
                out.extend_from_slice(&fh);
                out.extend_from_slice(&page);
                seed = s;
                pgno += 1;
            }
        }
        out
    }

    #[test]
    fn header_roundtrip_and_checksum() {
        let w = build_wal(1024, (7, 9), 3, &[]);
        let h = WalHeader::parse(&w).unwrap();
        assert_eq!(h.page_size, 1024);
        assert_eq!(h.checkpoint_seq, 3);
        assert_eq!((h.salt1, h.salt2), (7, 9));
        assert_eq!(h.frame_offset(1), 32 + 1048);
        let mut bad = w.clone();
        bad[13] ^= 1;
        assert_eq!(WalHeader::parse(&bad), Err(WalError::Checksum));
        assert_eq!(WalHeader::parse(&w[..10]), Err(WalError::Short(10)));
    }

    #[test]
    fn scan_stops_at_last_commit() {
        let w = build_wal(512, (1, 2), 0, &[2, 3, 1]);
        let s = scan(&w[..]).unwrap().unwrap();
        assert_eq!(s.valid_frames, 6);
        assert_eq!(s.committed_len, w.len() as u64);
        // Drop the final commit frame: the committed prefix ends after the second transaction.
        let cut = &w[..w.len() - 536];
        let s = scan(cut).unwrap().unwrap();
        assert_eq!(s.committed_len, 32 + 5 * 536);
        // A partial trailing frame is ignored.
        let s = scan(&w[..w.len() - 10]).unwrap().unwrap();
        assert_eq!(s.committed_len, 32 + 5 * 536);
    }

    #[test]
    fn scan_stops_at_checksum_or_salt_mismatch() {
        let w = build_wal(512, (1, 2), 0, &[1, 1, 1]);
        let mut bad = w.clone();
        bad[32 + 536 + 100] ^= 0xff; // flip a byte in frame 2's page
        let s = scan(&bad[..]).unwrap().unwrap();
        assert_eq!(s.committed_len, 32 + 536);
        // Frames of a previous WAL life (other salts) after a restart are not part of this one.
        let old = build_wal(512, (5, 5), 0, &[1, 1, 1]);
        let new = build_wal(512, (6, 8), 1, &[1]);
        let mut mixed = new.clone();
        mixed.extend_from_slice(&old[32 + 536..]);
        let s = scan(&mixed[..]).unwrap().unwrap();
        assert_eq!(s.valid_frames, 1);
    }

    #[test]
    fn replay_writes_committed_frames_in_log_order() {
        // Three transactions: pages 1-2, page 3, then page 1 again (appended by hand).
        let mut w = build_wal(512, (1, 2), 0, &[2, 1]);
        let h = WalHeader::parse(&w).unwrap();
        let seed = scan(&w[..]).unwrap().unwrap().committed_seed;
        let mut fh = Vec::new();
        fh.extend_from_slice(&1u32.to_be_bytes());
        fh.extend_from_slice(&3u32.to_be_bytes());
        fh.extend_from_slice(&1u32.to_be_bytes());
        fh.extend_from_slice(&2u32.to_be_bytes());
        let page = vec![0xabu8; 512];
        let c = checksum(false, &fh[..8], seed);
        let c = checksum(false, &page, c);
        fh.extend_from_slice(&c.0.to_be_bytes());
        fh.extend_from_slice(&c.1.to_be_bytes());
        w.extend_from_slice(&fh);
        w.extend_from_slice(&page);
        assert_eq!(h.frame_size(), 536);
        let upto = scan(&w[..]).unwrap().unwrap().committed_len;
        assert_eq!(upto, w.len() as u64);
        let mut db = std::collections::BTreeMap::new();
        let mut order = Vec::new();
        let size = replay(&w[..], upto, |p, b| {
            order.push(p);
            db.insert(p, b.to_vec());
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(size, Some(3));
        assert_eq!(order, vec![1, 2, 3, 1]);
        assert_eq!(db[&1], page, "the later frame of page 1 wins");
        assert_eq!(db[&2][0], 2, "page 2 as written");
    }

    #[test]
    fn replay_leaves_out_frames_after_upto_and_refuses_a_short_log() {
        let w = build_wal(512, (1, 2), 0, &[2, 3]);
        let first = 32 + 2 * 536;
        let mut pages = Vec::new();
        let size = replay(&w[..], first, |p, _| {
            pages.push(p);
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!((size, pages), (Some(2), vec![1, 2]));
        // A file whose frames stop before `upto` (changed since the scan) is an error.
        let err = replay(&w[..first as usize], w.len() as u64, |_, _| Ok(())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Only a header: nothing to replay.
        assert_eq!(replay(&w[..32], 32, |_, _| Ok(())).unwrap().unwrap(), None);
        assert_eq!(
            replay(&w[..10], 32, |_, _| Ok(())).unwrap(),
            Err(WalError::Short(10))
        );
    }

    /// In-place checking agrees with the frame reader: the valid and committed extents, the
    /// seeds, a damaged frame, a run cut in two, and the budget.
    #[test]
    fn frames_checked_in_place_end_where_the_reader_ends() {
        let wal = build_wal(512, (7, 9), 0, &[2, 1, 3]);
        let h = WalHeader::parse(&wal[..HEADER_SIZE]).unwrap();
        let fs = h.frame_size() as usize;
        let frames = &wal[HEADER_SIZE..];
        let all = check_frames(&h, h.checksum, frames, u64::MAX);
        assert_eq!(
            (all.valid, all.committed, all.stop),
            (6 * fs, 6 * fs, false)
        );
        let mut fr = FrameReader::new(frames, h, h.checksum);
        while fr.next_frame().unwrap().is_some() {}
        assert_eq!(all.seed, fr.seed());
        assert_eq!(all.commit_seed, all.seed);

        // Cut after four frames: the first commit ends at two, the second at three.
        let first = check_frames(&h, h.checksum, &frames[..4 * fs], u64::MAX);
        assert_eq!(
            (first.valid, first.committed, first.stop),
            (4 * fs, 3 * fs, false)
        );
        let rest = check_frames(&h, first.seed, &frames[4 * fs..], u64::MAX);
        assert_eq!(
            (rest.valid, rest.committed, rest.commit_seed),
            (2 * fs, 2 * fs, all.seed)
        );

        // A flipped byte in the fifth frame ends the log before it.
        let mut bad = frames.to_vec();
        bad[4 * fs + FRAME_HEADER_SIZE + 1] ^= 1;
        let cut = check_frames(&h, h.checksum, &bad, u64::MAX);
        assert_eq!((cut.valid, cut.committed, cut.stop), (4 * fs, 3 * fs, true));
        assert_eq!(cut.commit_seed, first.commit_seed);

        // The budget stops at the first commit that reaches it.
        let budget = check_frames(&h, h.checksum, frames, fs as u64 + 1);
        assert_eq!(
            (budget.valid, budget.committed, budget.stop),
            (2 * fs, 2 * fs, true)
        );
    }

    #[test]
    fn align_rounds_down() {
        let h = WalHeader::parse(&build_wal(4096, (1, 1), 0, &[])).unwrap();
        assert_eq!(h.align(0), 0);
        assert_eq!(h.align(31), 0);
        assert_eq!(h.align(32), 32);
        assert_eq!(h.align(32 + 4120 + 5), 32 + 4120);
    }

    /// The slot after a copied life, for `life_ended_at`: the frames of `wal` from `end`.
    fn slot_at(wal: &[u8], end: usize, page_size: u32) -> Option<&[u8]> {
        wal.get(end..end + FRAME_HEADER_SIZE + page_size as usize)
    }

    #[test]
    fn a_life_ended_where_nothing_valid_follows_the_copied_frames() {
        let old_full = build_wal(512, (5, 77), 0, &[2, 1, 3]);
        let old = WalHeader::parse(&old_full).unwrap();
        let new = WalHeader::parse(&build_wal(512, (6, 31), 1, &[])).unwrap();
        // Walship copied the first two transactions; the third was committed after it.
        let copied = scan(&old_full[..old.frame_offset(3) as usize])
            .unwrap()
            .unwrap();
        let end = copied.committed_len as usize;
        let seed = copied.committed_seed;
        assert_eq!(
            life_ended_at(&old, seed, &new, slot_at(&old_full, end, 512)),
            LifeEnd::Continued,
            "a committed frame follows: frames would be lost"
        );
        // The whole life was copied; the file goes on with a frame of an older life.
        let all = scan(&old_full[..]).unwrap().unwrap();
        let older = build_wal(512, (4, 12), 0, &[7]);
        let mut file = old_full.clone();
        let older_frame = &older[older.len() - 536..];
        file.extend_from_slice(older_frame);
        let slot = slot_at(&file, all.committed_len as usize, 512);
        assert_eq!(
            life_ended_at(&old, all.committed_seed, &new, slot),
            LifeEnd::Ended
        );
        // Zeros, or a torn frame of the old salts that never committed.
        let zeros = vec![0u8; 536];
        let ended = |slot| life_ended_at(&old, all.committed_seed, &new, slot);
        assert_eq!(ended(Some(&zeros)), LifeEnd::Ended);
        let mut torn = old_full[end..end + 536].to_vec();
        torn[400] ^= 1;
        assert_eq!(life_ended_at(&old, seed, &new, Some(&torn)), LifeEnd::Ended);
        // The file ends at the copied end (truncated, or never longer): no proof.
        assert!(matches!(ended(None), LifeEnd::Unknown(_)));
        // The new life already reached the slot: what was there is gone, no proof.
        let new_full = build_wal(512, (6, 31), 1, &[8]);
        let new_slot = &new_full[32 + 536 * 6..32 + 536 * 7];
        assert!(matches!(ended(Some(new_slot)), LifeEnd::Unknown(_)));
        // Another page size is another database, whatever the salts say.
        let other = WalHeader::parse(&build_wal(1024, (6, 31), 1, &[])).unwrap();
        assert!(matches!(
            life_ended_at(&old, all.committed_seed, &other, Some(&zeros)),
            LifeEnd::Unknown(_)
        ));
    }
}

//! The v0.3 replica layout, in one place, so every backend stores exactly the same tree.
//!
//! ```text
//! generations/<gen>/snapshots/<index %08x>.snapshot.lz4
//! generations/<gen>/wal/<index %08x>_<offset %08x>.wal.lz4
//! ```
//! Names are written with 8 hex digits (Go's `%08x`, a minimum width) and parsed with 8 to 16, so
//! offsets past 4 GiB written by v0.3.13 are not silently dropped as they are by v0.3.13 itself.

use std::fmt;

/// Largest WAL index of the v0.3 format; reaching it forces a new generation.
pub const MAX_INDEX: u32 = 0x7FFF_FFFF;

/// Top-level directory under the replica root; every object of the layout lives below it.
pub const GENERATIONS_DIR: &str = "generations";

/// A position in the logical WAL stream of a database: generation, WAL index, byte offset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// 16 lowercase hex digits; empty for the zero position (no generation yet).
    pub generation: String,
    /// WAL index within the generation: one per life of the real WAL (SQLite restarts it).
    pub index: u32,
    /// Byte offset in that index's shadow WAL, counting its 32-byte header (0 is the start).
    pub offset: u64,
}

impl Pos {
    /// The position `offset` bytes into WAL `index` of `generation`.
    pub fn new(generation: impl Into<String>, index: u32, offset: u64) -> Self {
        Pos {
            generation: generation.into(),
            index,
            offset,
        }
    }
    /// True for the zero position (empty generation): nothing copied or shipped yet.
    pub fn is_zero(&self) -> bool {
        self.generation.is_empty()
    }
}

impl fmt::Display for Pos {
    /// v0.3 log format: `<gen>/<index %08x>:<offset>`; the zero position prints nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return Ok(());
        }
        write!(f, "{}/{:08x}:{}", self.generation, self.index, self.offset)
    }
}

/// True when `name` is a v0.3 generation name: exactly 16 lowercase hex characters.
pub fn is_generation(name: &str) -> bool {
    name.len() == 16
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh random generation name.
pub fn new_generation() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Key prefix of every object of one generation, ending in `/` (for listing and deletion).
pub fn generation_prefix(generation: &str) -> String {
    format!("{GENERATIONS_DIR}/{generation}/")
}

/// Key prefix of a generation's snapshots, ending in `/`.
pub fn snapshots_prefix(generation: &str) -> String {
    format!("{GENERATIONS_DIR}/{generation}/snapshots/")
}

/// Key prefix of a generation's WAL segments, ending in `/`.
pub fn wal_prefix(generation: &str) -> String {
    format!("{GENERATIONS_DIR}/{generation}/wal/")
}

/// Key of the snapshot taken while `index` was the current WAL index, relative to the root.
pub fn snapshot_key(generation: &str, index: u32) -> String {
    format!("{}{}", snapshots_prefix(generation), snapshot_name(index))
}

/// File name of a snapshot, `<index %08x>.snapshot.lz4`, without its directory.
pub fn snapshot_name(index: u32) -> String {
    format!("{index:08x}.snapshot.lz4")
}

/// Key of the segment holding bytes of WAL `index` from `offset` on, relative to the root.
pub fn wal_segment_key(generation: &str, index: u32, offset: u64) -> String {
    format!(
        "{}{}",
        wal_prefix(generation),
        wal_segment_name(index, offset)
    )
}

/// File name of a segment, `<index %08x>_<offset %08x>.wal.lz4` (Go's minimum-width `%08x`).
pub fn wal_segment_name(index: u32, offset: u64) -> String {
    format!("{index:08x}_{offset:08x}.wal.lz4")
}

fn parse_hex(s: &str, min: usize, max: usize) -> Option<u64> {
    if s.len() < min
        || s.len() > max
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Parses `%08x.snapshot.lz4`; anything else (including `.tmp` files) is not a snapshot.
pub fn parse_snapshot_name(name: &str) -> Option<u32> {
    let idx = name.strip_suffix(".snapshot.lz4")?;
    let v = parse_hex(idx, 8, 8)?;
    u32::try_from(v).ok()
}

/// Parses `%08x_%08x.wal.lz4` with an offset of 8 to 16 hex digits.
pub fn parse_wal_segment_name(name: &str) -> Option<(u32, u64)> {
    let stem = name.strip_suffix(".wal.lz4")?;
    let (idx, off) = stem.split_once('_')?;
    let idx = u32::try_from(parse_hex(idx, 8, 8)?).ok()?;
    let off = parse_hex(off, 8, 16)?;
    Some((idx, off))
}

/// What a key under the replica root is, according to the v0.3 layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A snapshot object: an image of the database taken while `index` was current.
    Snapshot {
        /// Generation the object belongs to (16 hex digits).
        generation: String,
        /// WAL index that was current when the snapshot was taken.
        index: u32,
    },
    /// A WAL segment object: shadow WAL bytes of `index` starting at `offset`.
    WalSegment {
        /// Generation the object belongs to (16 hex digits).
        generation: String,
        /// WAL index the bytes belong to.
        index: u32,
        /// Byte offset in the index's shadow WAL where the segment starts (0 includes the header).
        offset: u64,
    },
}

/// Classifies a key relative to the replica root; keys outside the layout give `None`.
pub fn parse_key(key: &str) -> Option<Entry> {
    let rest = key.strip_prefix("generations/")?;
    let (generation, rest) = rest.split_once('/')?;
    if !is_generation(generation) {
        return None;
    }
    let generation = generation.to_string();
    if let Some(name) = rest.strip_prefix("snapshots/") {
        let index = parse_snapshot_name(name)?;
        return Some(Entry::Snapshot { generation, index });
    }
    if let Some(name) = rest.strip_prefix("wal/") {
        let (index, offset) = parse_wal_segment_name(name)?;
        return Some(Entry::WalSegment {
            generation,
            index,
            offset,
        });
    }
    None
}

/// POSIX `path.Join` of a root and a relative key, as v0.3 builds object keys.
pub fn join(root: &str, key: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in root.split('/').chain(key.split('/')) {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    if root.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_v03_examples() {
        assert_eq!(
            wal_segment_key("0a1b2c3d4e5f6789", 3, 4152),
            "generations/0a1b2c3d4e5f6789/wal/00000003_00001038.wal.lz4"
        );
        assert_eq!(
            snapshot_key("0a1b2c3d4e5f6789", 0),
            "generations/0a1b2c3d4e5f6789/snapshots/00000000.snapshot.lz4"
        );
        assert_eq!(wal_segment_name(3, 8272), "00000003_00002050.wal.lz4");
        // Past 4 GiB Go writes 9 digits; we must write and read them the same way.
        assert_eq!(
            wal_segment_name(1, 0x1_0000_0000),
            "00000001_100000000.wal.lz4"
        );
    }

    #[test]
    fn parses_names_strictly() {
        assert_eq!(parse_snapshot_name("00000003.snapshot.lz4"), Some(3));
        assert_eq!(parse_snapshot_name("3.snapshot.lz4"), None);
        assert_eq!(parse_snapshot_name("0000000A.snapshot.lz4"), None);
        assert_eq!(parse_snapshot_name("00000003.snapshot.lz4.tmp"), None);
        assert_eq!(
            parse_wal_segment_name("00000003_00002050.wal.lz4"),
            Some((3, 8272))
        );
        assert_eq!(
            parse_wal_segment_name("00000001_100000000.wal.lz4"),
            Some((1, 0x1_0000_0000))
        );
        assert_eq!(
            parse_wal_segment_name("00000001_00000000000000000.wal.lz4"),
            None
        );
        assert_eq!(parse_wal_segment_name("00000001_0000000.wal.lz4"), None);
        assert_eq!(parse_wal_segment_name("00000001.wal.lz4"), None);
        assert_eq!(
            parse_wal_segment_name("ffffffff_00000000.wal.lz4"),
            Some((u32::MAX, 0))
        );
    }

    #[test]
    fn classifies_keys() {
        assert_eq!(
            parse_key("generations/0a1b2c3d4e5f6789/wal/00000001_00000020.wal.lz4"),
            Some(Entry::WalSegment {
                generation: "0a1b2c3d4e5f6789".into(),
                index: 1,
                offset: 32
            })
        );
        assert_eq!(
            parse_key("generations/XYZ/wal/00000001_00000020.wal.lz4"),
            None
        );
        assert_eq!(parse_key("generations/0a1b2c3d4e5f6789/other/x"), None);
        assert_eq!(parse_key(".walship-probe"), None);
    }

    #[test]
    fn generation_names() {
        assert!(is_generation("0123456789abcdef"));
        assert!(!is_generation("0123456789ABCDEF"));
        assert!(!is_generation("0123456789abcde"));
        let g = new_generation();
        assert!(is_generation(&g), "{g}");
    }

    #[test]
    fn join_like_go_path_join() {
        assert_eq!(join("", "generations/x"), "generations/x");
        assert_eq!(join("db/", "/generations/x"), "db/generations/x");
        assert_eq!(join("/abs//dir/", "a"), "/abs/dir/a");
        assert_eq!(join("a/./b", "../c"), "a/c");
    }

    #[test]
    fn pos_display() {
        assert_eq!(
            Pos::new("0a1b2c3d4e5f6789", 3, 8272).to_string(),
            "0a1b2c3d4e5f6789/00000003:8272"
        );
        assert_eq!(Pos::default().to_string(), "");
    }
}

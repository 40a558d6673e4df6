//! Where a follower stands, in a small text file beside its output database
//! (`<output>.walship-follow`), so a follower killed and started again continues instead of
//! restoring the whole database.
//!
//! The file is written in two steps around every commit to the output: first the position the
//! commit will reach, marked pending (and synced), then, after the commit, the same position as
//! applied. A follower that finds a pending mark cannot tell whether that commit happened, so it
//! re-bases on a fresh restore (one transaction: readers never see the doubt). Nothing else in
//! the file is trusted either: an unreadable file means a fresh restore, never a guess.

use crate::wal::{WalHeader, HEADER_SIZE};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The last state of the replica the output database holds: the WAL of `index` applied up to
/// byte `offset` (a commit boundary) on top of everything before it in `generation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The replica generation the output holds.
    pub generation: String,
    /// The WAL index being applied.
    pub index: u32,
    /// Bytes of the index's WAL applied, header included; 0: nothing of this index yet.
    pub offset: u64,
    /// The index's WAL header, once its first segment was read (`offset > 0`).
    pub header: Option<WalHeader>,
    /// Running checksum after the last applied frame (the header's checksum before any).
    pub seed: (u32, u32),
    /// Listings continue after this key: the last segment wholly applied, or just before the
    /// segment whose bytes after `offset` are not applied yet (a transaction not committed when
    /// it was shipped).
    pub after: String,
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The output's position (or, with `pending`, the one the commit under way reaches).
    pub applied: Position,
    /// Set between writing the file and the commit it announces: the output may be at either.
    pub pending: bool,
}

const MAGIC: &str = "walship-follow 1";

/// The state file of an output database.
pub fn path_for(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".walship-follow");
    PathBuf::from(s)
}

/// The file's text: one `key value` line each, after a magic line.
pub fn format(s: &State) -> String {
    let p = &s.applied;
    let mut out = format!(
        "{MAGIC}\ngeneration {}\nindex {:08x}\noffset {}\nseed {:08x} {:08x}\nafter {}\n",
        p.generation, p.index, p.offset, p.seed.0, p.seed.1, p.after
    );
    if let Some(h) = &p.header {
        out.push_str(&format!("header {}\n", hex(&h.raw)));
    }
    if s.pending {
        out.push_str("pending\n");
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses [`format`]'s text; the error says which line is wrong.
pub fn parse(text: &str) -> Result<State, String> {
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("first line is not {MAGIC:?}"));
    }
    let (mut generation, mut index, mut offset, mut seed, mut after, mut header) =
        (None, None, None, None, None, None);
    let mut pending = false;
    for (n, line) in lines.enumerate() {
        let n = n + 2;
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let bad = || format!("line {n}: bad {key} {value:?}");
        match key {
            "generation" if crate::layout::is_generation(value) => {
                generation = Some(value.to_owned())
            }
            "index" => index = Some(u32::from_str_radix(value, 16).map_err(|_| bad())?),
            "offset" => offset = Some(value.parse::<u64>().map_err(|_| bad())?),
            "seed" => {
                let (a, b) = value.split_once(' ').ok_or_else(bad)?;
                let a = u32::from_str_radix(a, 16).map_err(|_| bad())?;
                let b = u32::from_str_radix(b, 16).map_err(|_| bad())?;
                seed = Some((a, b));
            }
            "after" if value.starts_with("generations/") => after = Some(value.to_owned()),
            "header" => {
                let raw = unhex(value)
                    .filter(|b| b.len() == HEADER_SIZE)
                    .ok_or_else(bad)?;
                header = Some(WalHeader::parse(&raw).map_err(|e| format!("line {n}: {e}"))?);
            }
            "pending" if value.is_empty() => pending = true,
            _ => return Err(bad()),
        }
    }
    let missing = |k: &str| format!("no {k} line");
    let applied = Position {
        generation: generation.ok_or_else(|| missing("generation"))?,
        index: index.ok_or_else(|| missing("index"))?,
        offset: offset.ok_or_else(|| missing("offset"))?,
        seed: seed.ok_or_else(|| missing("seed"))?,
        after: after.ok_or_else(|| missing("after"))?,
        header,
    };
    if (applied.offset > 0) != applied.header.is_some() {
        return Err("a header goes with a non-zero offset, and only then".into());
    }
    Ok(State { applied, pending })
}

/// Writes the file whole (temporary file, rename), synced when `durable`: the pending mark must
/// be on disk before the commit it announces; the applied one may be lost (it leaves the
/// pending mark, so a fresh restore, which is always right).
pub fn write(path: &Path, s: &State, durable: bool) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format(s).as_bytes())?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)?;
    if durable {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// The file's state: `Ok(None)` when there is no file; `Err` names what is wrong with it.
pub fn read(path: &Path) -> Result<Option<State>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => parse(&t)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> WalHeader {
        // A little-endian WAL header for 4096-byte pages with a valid checksum.
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&0x377f_0682u32.to_be_bytes());
        b[4..8].copy_from_slice(&3_007_000u32.to_be_bytes());
        b[8..12].copy_from_slice(&4096u32.to_be_bytes());
        b[16..20].copy_from_slice(&7u32.to_be_bytes());
        b[20..24].copy_from_slice(&9u32.to_be_bytes());
        let c = crate::wal::checksum(false, &b[..24], (0, 0));
        b[24..28].copy_from_slice(&c.0.to_be_bytes());
        b[28..32].copy_from_slice(&c.1.to_be_bytes());
        WalHeader::parse(&b).unwrap()
    }

    #[test]
    fn a_state_reads_back_as_written() {
        let h = header();
        for (header, offset, pending) in [(None, 0, false), (Some(h), 8272, true)] {
            let s = State {
                applied: Position {
                    generation: "0123456789abcdef".into(),
                    index: 0x1a,
                    offset,
                    header,
                    seed: (0xdeadbeef, 7),
                    after: "generations/0123456789abcdef/wal/0000001a_00000000.wal.lz4".into(),
                },
                pending,
            };
            assert_eq!(parse(&format(&s)).unwrap(), s);
        }
    }

    #[test]
    fn anything_unexpected_is_refused_with_its_line() {
        let good = format(&State {
            applied: Position {
                generation: "0123456789abcdef".into(),
                index: 1,
                offset: 0,
                header: None,
                seed: (1, 2),
                after: "generations/0123456789abcdef/wal/".into(),
            },
            pending: false,
        });
        assert!(parse(&good).is_ok());
        let e = parse(&good.replace("index 00000001", "index zz")).unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        assert!(parse(&good.replace("walship-follow 1", "x")).is_err());
        assert!(parse(&good.replace("generation 0123456789abcdef", "generation ../x")).is_err());
        assert!(
            parse(&good.replace("offset 0", "offset 10")).is_err(),
            "offset without header"
        );
        assert!(parse(&good.replace("seed 00000001 00000002\n", "")).is_err());
        assert!(parse(&format!("{good}extra 1\n")).is_err());
    }
}

//! Shipped WAL frames into the follower's output database, through SQLite itself.
//!
//! Pages are written with SQLite's `sqlite_dbpage` virtual table inside one write transaction
//! of the output (a WAL-mode database, as the primary is): SQLite journals them, takes its own
//! write lock, and readers in other processes see the state before the transaction or after it,
//! never a mix. A batch holds only whole transactions of the primary (frames up to a commit
//! frame), and its last commit sets the output's size, so every state a reader can see is the
//! primary's state after one of its commits.
//!
//! Within a batch only the last image of each page matters (SQLite's own checkpoint writes the
//! same), and pages past the batch's final size are left out, as a checkpoint leaves them out:
//! that is what lets one transaction end with the truncation `sqlite_dbpage` allows only as its
//! last write.

use crate::error::{Error, Result};
use crate::wal::{FrameReader, WalHeader, FRAME_HEADER_SIZE, HEADER_SIZE};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

/// Where a page image lies: in which spool file, at which byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAt {
    /// Index of the spool file in the batch.
    pub spool: usize,
    /// Byte offset of the page image in it.
    pub at: u64,
}

/// What a scan of one index's new bytes found.
#[derive(Debug, Clone)]
pub struct Scanned {
    /// The index's WAL header (read from the spool when it starts at offset 0).
    pub header: WalHeader,
    /// Whole transactions, in order: their frames' pages, and the database size at each commit.
    pub commits: Vec<Commit>,
    /// Bytes of the spool holding valid frames (committed or not), from its start.
    pub valid_len: u64,
}

/// One committed transaction of the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// (page number, where its image lies) in log order.
    pub pages: Vec<(u32, PageAt)>,
    /// Database size in pages after the commit.
    pub size: u32,
    /// Byte offset in the index's WAL just after the commit frame.
    pub end: u64,
    /// Running checksum after the commit frame.
    pub seed: (u32, u32),
}

/// Scans a spool of one index's bytes that start at byte `base` of that index's WAL: at 0 the
/// spool begins with the WAL header, otherwise `header` and `seed` (the running checksum at
/// `base`) continue the frames already applied. Frames after the last commit are not in any
/// [`Commit`]; a frame that fails its checksum ends the scan, as it ends SQLite's own recovery.
pub fn scan_spool(
    f: &File,
    spool: usize,
    base: u64,
    header: Option<WalHeader>,
    seed: (u32, u32),
) -> Result<Scanned> {
    let mut r =
        BufReader::with_capacity(256 << 10, f.try_clone().map_err(|e| Error::io("spool", e))?);
    r.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("spool", e))?;
    let (header, seed, mut pos) = match (base, header) {
        (0, _) => {
            let mut b = [0u8; HEADER_SIZE];
            r.read_exact(&mut b)
                .map_err(|e| Error::corrupt(format!("WAL header: {e}")))?;
            let h = WalHeader::parse(&b).map_err(|e| Error::corrupt(format!("WAL header: {e}")))?;
            (h, h.checksum, HEADER_SIZE as u64)
        }
        (_, Some(h)) => (h, seed, 0),
        (_, None) => {
            return Err(Error::invalid(format!(
                "no WAL header to continue from at offset {base}"
            )))
        }
    };
    let frame = header.frame_size();
    let mut fr = FrameReader::new(r, header, seed);
    let mut commits = Vec::new();
    let mut pages = Vec::new();
    while let Some((fh, _)) = fr.next_frame().map_err(|e| Error::io("read spool", e))? {
        if fh.page_no == 0 {
            return Err(Error::corrupt(format!(
                "the frame at byte {} names page 0",
                base + pos
            )));
        }
        pages.push((
            fh.page_no,
            PageAt {
                spool,
                at: pos + FRAME_HEADER_SIZE as u64,
            },
        ));
        pos += frame;
        if fh.commit_size != 0 {
            commits.push(Commit {
                pages: std::mem::take(&mut pages),
                size: fh.commit_size,
                end: base + pos,
                seed: fr.seed(),
            });
        }
    }
    Ok(Scanned {
        header,
        commits,
        valid_len: pos,
    })
}

/// The pages a batch of commits writes (the last image of each, none past the final size) and
/// the final size. Pure.
pub fn batch_pages<'a>(
    commits: impl IntoIterator<Item = &'a Commit>,
) -> (BTreeMap<u32, PageAt>, u32) {
    let mut pages = BTreeMap::new();
    let mut size = 0;
    for c in commits {
        for (p, at) in &c.pages {
            pages.insert(*p, *at);
        }
        size = c.size;
    }
    pages.retain(|p, _| *p <= size);
    (pages, size)
}

/// Opens the output for following: SQLite's own locking, commits synced before they return (the
/// state file written after a commit must never get ahead of it), and `sqlite_dbpage` present.
pub fn open_output(path: &std::path::Path) -> Result<Connection> {
    let what = format!("follower output {}", path.display());
    let conn = Connection::open(path).map_err(|e| Error::sqlite(&what, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| Error::sqlite(&what, e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(|e| Error::sqlite(&what, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::invalid(format!(
            "{what} is in journal mode {mode}, not wal: it is not a copy of a WAL-mode database"
        )));
    }
    conn.execute_batch("PRAGMA synchronous = FULL")
        .map_err(|e| Error::sqlite(&what, e))?;
    conn.query_row(
        "SELECT count(*) FROM sqlite_dbpage WHERE pgno = 1",
        [],
        |_| Ok(()),
    )
    .map_err(|e| {
        Error::sqlite(
            format!("{what}: SQLite's sqlite_dbpage table (built with SQLITE_ENABLE_DBPAGE_VTAB)"),
            e,
        )
    })?;
    Ok(conn)
}

/// The output's size in pages.
pub fn page_count(conn: &Connection) -> Result<u32> {
    conn.query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(|e| Error::sqlite("page_count", e))
}

/// Writes `pages` (read through `read_page`) and sets the size to `size` pages in one
/// transaction of the output; `before_commit` runs after the writes, before COMMIT (the state
/// file's pending mark). Any failure rolls the transaction back: readers never see part of it.
pub fn write_batch(
    conn: &Connection,
    pages: impl IntoIterator<Item = u32>,
    mut read_page: impl FnMut(u32, &mut [u8]) -> Result<()>,
    page_size: usize,
    size: u32,
    before_commit: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let sql = |e| Error::sqlite("follower transaction", e);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
    let res = (|| {
        let mut st = conn
            .prepare_cached("INSERT INTO sqlite_dbpage(pgno, data) VALUES (?1, ?2)")
            .map_err(sql)?;
        let mut buf = vec![0u8; page_size];
        for p in pages {
            read_page(p, &mut buf)?;
            st.execute(rusqlite::params![p, &buf[..]]).map_err(sql)?;
        }
        // The truncation must be the transaction's last write (`sqlite_dbpage` forgets it at
        // the next page written).
        if size < page_count(conn)? {
            conn.execute(
                "INSERT INTO sqlite_dbpage(pgno, data) VALUES (?1, NULL)",
                [size + 1],
            )
            .map_err(sql)?;
        }
        before_commit()?;
        conn.execute_batch("COMMIT").map_err(sql)
    })();
    if res.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    res?;
    let now = page_count(conn)?;
    if now != size {
        return Err(Error::invalid(format!(
            "the output has {now} pages after the transaction, not the primary's {size}"
        )));
    }
    Ok(())
}

/// Reads a page image from a spool (or a whole database file: `at` = (page - 1) × page size).
pub fn read_at(f: &File, at: u64, buf: &mut [u8]) -> Result<()> {
    f.read_exact_at(buf, at)
        .map_err(|e| Error::io(format!("read page at byte {at}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(pages: &[u32], size: u32) -> Commit {
        Commit {
            pages: pages
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    (
                        *p,
                        PageAt {
                            spool: 0,
                            at: (i as u64 + 1) * 100 + *p as u64,
                        },
                    )
                })
                .collect(),
            size,
            end: 0,
            seed: (0, 0),
        }
    }

    #[test]
    fn a_batch_keeps_the_last_image_of_each_page_and_nothing_past_its_size() {
        // Grows to 100 pages, then a VACUUM-like commit shrinks it to 50.
        let (pages, size) = batch_pages(&[c(&[1, 2, 100], 100), c(&[2, 3], 50)]);
        assert_eq!(size, 50);
        assert_eq!(pages.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(pages[&2].at, 102, "the second commit's image of page 2");
        let (pages, size) = batch_pages(&[]);
        assert!(pages.is_empty());
        assert_eq!(size, 0);
    }
}

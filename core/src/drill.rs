//! Restore drills (`validation-interval`, `walship verify`): the database's content at one
//! position, computed both from the replica (a real restore into a private file) and locally
//! (the database file plus the shadow WAL up to that position), compared page by page.
//!
//! v0.3.13's validation forced a RESTART checkpoint to line the two sides up, held up the
//! application's writers while it waited, and raced with the replica (false mismatches, #253,
//! #431). A drill forces nothing: the position is the shadow WAL's end at a moment when the
//! monitor's checkpoints are held ([`crate::db::Db::hold_checkpoints`]) and the replica has been
//! shipped up to it. At that moment the database file holds no page of a frame after the
//! position (walship's read transaction stops the application's checkpoints at or before it), so
//! the file overlaid with the shadow frames up to the position is the database at the position,
//! exactly as a snapshot taken then plus its WAL index would restore it. Only the page digests
//! are kept (8 bytes a page), and the hold ends before the slow half, the restore, begins.
//!
//! This module is the pure half: digests of an image, of an image plus WAL frames, and the first
//! difference between two. The shipper runs the drill ([`crate::shipper::Drill`]).

use crate::wal;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use twox_hash::XxHash3_64;

/// Per-page digests of a database at one position: page `n` is `pages[n - 1]`, and there are as
/// many as the database has pages (its header's page count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Bytes per page.
    pub page_size: u32,
    /// One digest per page, in page order.
    pub pages: Vec<u64>,
}

/// Where a replica's image first differs from the local one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The two images do not even share a page size.
    PageSize {
        /// The local database's page size.
        local: u32,
        /// The restored copy's.
        replica: u32,
    },
    /// Page `n` (1-based) differs.
    Page(u64),
    /// Every shared page matches, but the databases have different page counts.
    PageCount {
        /// The local database's page count.
        local: u64,
        /// The restored copy's.
        replica: u64,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::PageSize { local, replica } => write!(
                f,
                "page size differs: {local} bytes locally, {replica} restored from the replica"
            ),
            Difference::Page(n) => write!(f, "page {n} differs"),
            Difference::PageCount { local, replica } => write!(
                f,
                "page count differs: {local} pages locally, {replica} restored from the replica"
            ),
        }
    }
}

/// The first difference between the local image and the replica's, in page order; None when
/// they are the same database.
pub fn first_difference(local: &Digests, replica: &Digests) -> Option<Difference> {
    if local.page_size != replica.page_size {
        return Some(Difference::PageSize {
            local: local.page_size,
            replica: replica.page_size,
        });
    }
    if let Some(i) = local
        .pages
        .iter()
        .zip(&replica.pages)
        .position(|(a, b)| a != b)
    {
        return Some(Difference::Page(i as u64 + 1));
    }
    (local.pages.len() != replica.pages.len()).then_some(Difference::PageCount {
        local: local.pages.len() as u64,
        replica: replica.pages.len() as u64,
    })
}

fn digest(page: &[u8]) -> u64 {
    XxHash3_64::oneshot(page)
}

/// Digests of a database file as it is (a restored copy: no WAL beside it).
pub fn file_digests(path: &Path) -> io::Result<Digests> {
    let f = std::fs::File::open(path)?;
    image_digests(io::BufReader::with_capacity(1 << 20, f), Overlay::default())
}

/// Digests of the database at a position: `image` (the database file, read under the checkpoint
/// hold) with the frames of `wal` (the shadow WAL index, from its header) up to byte `upto`
/// applied in log order, as a checkpoint or a restore would apply them. `upto` is a commit
/// boundary (the shadow's committed end); 0 means the index has no byte yet.
pub fn local_digests(image: impl Read, wal: impl Read, upto: u64) -> io::Result<Digests> {
    let mut overlay = Overlay::default();
    if upto > 0 {
        let size = wal::replay(wal, upto, |page, data| {
            overlay.pages.insert(page, digest(data));
            if page == 1 {
                overlay.first = Some(data.to_vec());
            }
            Ok(())
        })?
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("shadow WAL: {e}")))?;
        overlay.commit_pages = size;
    }
    image_digests(image, overlay)
}

/// The shadow frames' pages, by number: the newest frame of each up to the position.
#[derive(Default)]
struct Overlay {
    pages: HashMap<u32, u64>,
    /// Page 1's newest bytes, for its header's page count.
    first: Option<Vec<u8>>,
    /// Page count after the last replayed commit.
    commit_pages: Option<u32>,
}

fn image_digests(mut image: impl Read, overlay: Overlay) -> io::Result<Digests> {
    let mut head = [0u8; crate::snapshot::HEADER_LEN];
    let n = crate::wal::read_full(&mut image, &mut head)?;
    let first: &[u8] = overlay.first.as_deref().unwrap_or(&head[..n]);
    let page_size = first
        .get(..crate::snapshot::HEADER_LEN)
        .and_then(crate::snapshot::page_size)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "not an SQLite database: no valid page size in its header",
            )
        })?;
    let header_pages = crate::snapshot::header_len(first).map(|len| len / page_size);
    let mut page = vec![0u8; page_size as usize];
    page[..n].copy_from_slice(&head[..n]);
    let mut filled = n;
    let mut pages = Vec::new();
    let mut no = 0u32;
    loop {
        filled += crate::wal::read_full(&mut image, &mut page[filled..])?;
        if filled == 0 {
            break;
        }
        // A short last page reads as zeros beyond the end, as SQLite reads a short file.
        page[filled..].fill(0);
        no += 1;
        pages.push(
            overlay
                .pages
                .get(&no)
                .copied()
                .unwrap_or_else(|| digest(&page)),
        );
        filled = 0;
    }
    let zero = digest(&vec![0u8; page_size as usize]);
    if let Some(&max) = overlay.pages.keys().max() {
        for no in pages.len() as u32 + 1..=max {
            pages.push(overlay.pages.get(&no).copied().unwrap_or(zero));
        }
    }
    // The database is as long as its header says (restore and checkpoints cut the file to it);
    // without a valid count, as the last commit said, or as long as the file.
    let count = header_pages
        .or(overlay.commit_pages.map(u64::from))
        .unwrap_or(pages.len() as u64);
    pages.resize(count as usize, zero);
    Ok(Digests {
        page_size: page_size as u32,
        pages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// A WAL-mode database with `rows` rows, its WAL kept (no checkpoint on close).
    fn db_with_wal(dir: &Path, rows: usize) -> (std::path::PathBuf, Connection) {
        let path = dir.join("a.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x TEXT);",
        )
        .unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        for i in 0..rows {
            c.execute(
                "INSERT INTO t VALUES (?1)",
                [format!("row {i} {}", "x".repeat(300))],
            )
            .unwrap();
        }
        (path, c)
    }

    /// The database file plus its WAL equals the same database after a checkpoint, page for
    /// page: the local side of a drill computes what a restore produces.
    #[test]
    fn image_plus_wal_equals_the_checkpointed_database() {
        let d = tempfile::tempdir().unwrap();
        let (path, c) = db_with_wal(d.path(), 400);
        let wal_path = d.path().join("a.db-wal");
        let wal_bytes = std::fs::read(&wal_path).unwrap();
        let scan = wal::scan(&wal_bytes[..]).unwrap().unwrap();
        let local = local_digests(
            std::fs::File::open(&path).unwrap(),
            &wal_bytes[..],
            scan.committed_len,
        )
        .unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let after = file_digests(&path).unwrap();
        assert!(after.pages.len() > 20, "{}", after.pages.len());
        assert_eq!(first_difference(&local, &after), None);
    }

    #[test]
    fn an_older_image_differs_at_the_first_changed_page() {
        let d = tempfile::tempdir().unwrap();
        let (path, c) = db_with_wal(d.path(), 50);
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let before = std::fs::read(&path).unwrap();
        c.execute("UPDATE t SET x = 'changed' WHERE rowid = 50", [])
            .unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let now = file_digests(&path).unwrap();
        let old = image_digests(&before[..], Overlay::default()).unwrap();
        match first_difference(&now, &old) {
            Some(Difference::Page(n)) => assert!(n >= 1, "{n}"),
            other => panic!("{other:?}"),
        }
        // Growth shows as a page count difference when every shared page matches.
        let mut longer = now.clone();
        longer.pages.push(1);
        assert_eq!(
            first_difference(&now, &longer),
            Some(Difference::PageCount {
                local: now.pages.len() as u64,
                replica: now.pages.len() as u64 + 1
            })
        );
    }

    /// Frames after the position are not applied, and the page count is the header's at the
    /// position, whatever the file's length.
    #[test]
    fn the_position_bounds_the_frames_applied() {
        let d = tempfile::tempdir().unwrap();
        let (path, c) = db_with_wal(d.path(), 0);
        let wal_path = d.path().join("a.db-wal");
        c.execute("INSERT INTO t VALUES ('first')", []).unwrap();
        let first_end = std::fs::metadata(&wal_path).unwrap().len();
        let copy = d.path().join("copy.db");
        // The database at the first commit, made by SQLite itself.
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(&wal_path, d.path().join("copy.db-wal")).unwrap();
        for i in 0..100 {
            c.execute(
                "INSERT INTO t VALUES (?1)",
                [format!("{i} {}", "y".repeat(500))],
            )
            .unwrap();
        }
        let wal_bytes = std::fs::read(&wal_path).unwrap();
        let local = local_digests(
            std::fs::File::open(&path).unwrap(),
            &wal_bytes[..],
            first_end,
        )
        .unwrap();
        let cc = Connection::open(&copy).unwrap();
        cc.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        drop(cc);
        assert_eq!(
            first_difference(&local, &file_digests(&copy).unwrap()),
            None
        );
        let all = local_digests(
            std::fs::File::open(&path).unwrap(),
            &wal_bytes[..],
            wal_bytes.len() as u64,
        )
        .unwrap();
        assert!(all.pages.len() > local.pages.len());
    }

    #[test]
    fn not_a_database_is_an_error() {
        let e = image_digests(&b"hello"[..], Overlay::default()).unwrap_err();
        assert!(e.to_string().contains("not an SQLite database"), "{e}");
    }
}

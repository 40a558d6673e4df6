//! Its own test binary: SQLite's memory settings only take before SQLite initialises, and unit
//! tests in the library share one process where any test may open a connection first.

use rusqlite::ffi;

/// Lookaside high-water mark of a connection that has parsed and run statements.
fn lookaside_hiwtr(conn: &rusqlite::Connection) -> i32 {
    let (mut cur, mut hi) = (0, 0);
    // SAFETY: valid handle for the connection's lifetime; out-pointers to live ints.
    let rc = unsafe {
        ffi::sqlite3_db_status(
            conn.handle(),
            ffi::SQLITE_DBSTATUS_LOOKASIDE_USED,
            &mut cur,
            &mut hi,
            0,
        )
    };
    assert_eq!(rc, ffi::SQLITE_OK);
    hi
}

#[test]
fn connections_get_no_preallocated_lookaside_or_page_cache_block() {
    assert!(walship_core::sqlite::lean_memory(), "settings refused");
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("a.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA journal_mode=wal; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
        .unwrap();
    let conn = walship_core::sqlite::open(&path, None).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    // With SQLite's default (1200-byte slots, 100 of them) statements use lookaside at once.
    assert_eq!(lookaside_hiwtr(&conn), 0);
    // SQLite's default page cache takes a block of 20 pages when a connection reads its first
    // page; without it, pages come one at a time as they are read.
    // SAFETY: see below.
    let before = unsafe { ffi::sqlite3_memory_used() };
    let conn2 = walship_core::sqlite::open(&path, None).unwrap();
    let _: i64 = conn2
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    // SAFETY (both calls): a plain read of SQLite's global counter.
    let grew = unsafe { ffi::sqlite3_memory_used() } - before;
    // Measured: 24 KB with the setting, 102 KB without it (the 20-page block).
    assert!(
        grew < 60_000,
        "a second connection's first read took {grew} bytes: the page-cache setting is off"
    );
    // Calling again after SQLite is initialised is harmless and reports the first outcome.
    assert!(walship_core::sqlite::lean_memory());
}

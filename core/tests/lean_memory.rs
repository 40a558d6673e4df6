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
fn connections_get_no_preallocated_lookaside() {
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
    // Calling again after SQLite is initialised is harmless and reports the first outcome.
    assert!(walship_core::sqlite::lean_memory());
}

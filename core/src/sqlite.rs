//! SQLite connection setup shared by the monitor and restore.

use crate::error::{Error, Result};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// Opens a connection that never deletes the WAL and never checkpoints on close.
///
/// PERSIST_WAL keeps the `-wal` file (and its header) when our connection is the last to close;
/// NO_CKPT_ON_CLOSE keeps that header's frames un-backfilled, so a replicator started later on the
/// same host (walship or v0.3.13) still finds the WAL its shadow copy describes.
pub fn open(path: &Path, busy: Option<Duration>) -> Result<Connection> {
    let what = || format!("open database {}", path.display());
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::sqlite(what(), e))?;
    set_persist_wal(&conn).map_err(|e| Error::sqlite(what(), e))?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(|e| Error::sqlite(what(), e))?;
    if let Some(b) = busy {
        conn.busy_timeout(b).map_err(|e| Error::sqlite(what(), e))?;
    }
    Ok(conn)
}

pub fn set_persist_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut on: std::os::raw::c_int = 1;
    // SAFETY: the handle is valid for the connection's lifetime; the pointer is to a live c_int.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut std::os::raw::c_int).cast(),
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rc),
            None,
        ));
    }
    Ok(())
}

/// Result row of `PRAGMA wal_checkpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointResult {
    pub busy: bool,
    pub log: i64,
    pub checkpointed: i64,
}

pub fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<CheckpointResult> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(CheckpointResult {
            busy: r.get::<_, i64>(0)? != 0,
            log: r.get(1)?,
            checkpointed: r.get(2)?,
        })
    })
}

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
    lean_memory();
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

/// Stops SQLite from pre-allocating memory for every connection: a 120 KiB lookaside buffer and a
/// 20-page bulk page-cache block, both written through at open, so resident from the start.
/// walship keeps two or three connections open per database and runs a handful of statements on
/// them, so this was most of an idle database's ~0.6 MiB (and a tenth of the whole process at a
/// steady load); pages are still cached, allocated one at a time as SQLite needs them.
///
/// Takes effect only before SQLite initialises (its first connection or mutex), so the CLI calls
/// it first thing; later calls are no-ops. Returns whether both settings were accepted.
pub fn lean_memory() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        use rusqlite::ffi;
        use std::os::raw::{c_int, c_void};
        // SAFETY: sqlite3_config with these argument types is documented for both options; it
        // only returns SQLITE_MISUSE when SQLite is already initialised.
        unsafe {
            let lookaside =
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_LOOKASIDE, 0 as c_int, 0 as c_int);
            let pagecache = ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_PAGECACHE,
                std::ptr::null_mut::<c_void>(),
                0 as c_int,
                0 as c_int,
            );
            lookaside == ffi::SQLITE_OK && pagecache == ffi::SQLITE_OK
        }
    })
}

/// Sets SQLITE_FCNTL_PERSIST_WAL on `conn`'s main database, so its close keeps the `-wal` file.
pub fn set_persist_wal(conn: &Connection) -> rusqlite::Result<()> {
    set_persist_wal_to(conn, true)
}

/// Closes `conn` as an application's connection closes: when it is the last connection to the
/// database, SQLite checkpoints and deletes the `-wal` and `-shm` files. walship releases an idle
/// database this way (`Db::release`): its WAL is fully backfilled then, so that checkpoint writes
/// nothing, and the application's next first connection finds no WAL to recover. A WAL left
/// behind would be recovered by that connection with nothing marked as backfilled, and its close
/// would write every frame into the database file again: the change that proves nothing to
/// walship, and so a new generation after every short session of the application.
pub fn close_as_application(conn: Connection) {
    let _ = set_persist_wal_to(&conn, false);
    let _ = conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        false,
    );
    drop(conn);
}

fn set_persist_wal_to(conn: &Connection, persist: bool) -> rusqlite::Result<()> {
    let mut on: std::os::raw::c_int = persist.into();
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
    /// Column 1: SQLITE_BUSY, another connection kept the checkpoint from running or completing.
    pub busy: bool,
    /// Column 2: frames in the WAL, or -1 when the checkpoint could not run (not in WAL mode,
    /// or another checkpoint held the checkpointer lock).
    pub log: i64,
    /// Column 3: frames backfilled into the database, or -1 when the checkpoint could not run.
    pub checkpointed: i64,
}

/// SQLite's checkpoint modes (`PRAGMA wal_checkpoint(MODE)`) that walship names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckpointMode {
    /// Backfills what it can without waiting for readers or writers; the monitor only runs this.
    Passive,
    /// Backfills everything, then waits until the next writer will restart the WAL; named for
    /// v0.3.13's policy, never run by walship.
    Restart,
    /// RESTART, then truncates the WAL file to zero bytes; restore applies each WAL index with it.
    Truncate,
}

impl CheckpointMode {
    /// The SQL keyword, as used in the PRAGMA and as the mode label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointMode::Passive => "PASSIVE",
            CheckpointMode::Restart => "RESTART",
            CheckpointMode::Truncate => "TRUNCATE",
        }
    }
}

impl std::fmt::Display for CheckpointMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs `PRAGMA wal_checkpoint(mode)` on `conn`: a busy or partial checkpoint is a result,
/// not an error.
pub fn checkpoint(conn: &Connection, mode: CheckpointMode) -> rusqlite::Result<CheckpointResult> {
    let mode = mode.as_str();
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(CheckpointResult {
            busy: r.get::<_, i64>(0)? != 0,
            log: r.get(1)?,
            checkpointed: r.get(2)?,
        })
    })
}

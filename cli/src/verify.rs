//! `restore -integrity-check none|quick|full`: the restored database is built at a staging path
//! beside the output, checked with SQLite's own `PRAGMA quick_check` / `integrity_check`, and
//! only then moved into place. A restore that fails the check exits 1 and leaves the output path
//! untouched (it never exists). v0.3.13 checks nothing; walship checks `quick` by default, because
//! a backup that restores to a malformed database is worse than an error.

use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityCheck {
    None,
    Quick,
    Full,
}

impl std::str::FromStr for IntegrityCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "off" => Ok(IntegrityCheck::None),
            "quick" => Ok(IntegrityCheck::Quick),
            "full" => Ok(IntegrityCheck::Full),
            _ => Err(format!(
                "invalid -integrity-check {s:?}: expected none, quick or full"
            )),
        }
    }
}

impl IntegrityCheck {
    fn pragma(self) -> Option<&'static str> {
        match self {
            IntegrityCheck::None => None,
            IntegrityCheck::Quick => Some("quick_check"),
            IntegrityCheck::Full => Some("integrity_check"),
        }
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Where the database is restored before it is checked: beside the output (same filesystem, so
/// the final move is a rename), under a name no other restore uses.
pub fn staging_path(output: &Path) -> PathBuf {
    with_suffix(output, &format!(".walship-restore-{:08x}", rand_u32()))
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id().rotate_left(16)).wrapping_mul(2654435761)
}

/// Removes the staging file and any SQLite side files next to it.
pub fn discard(staged: &Path) {
    for s in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(with_suffix(staged, s));
    }
}

/// Runs the check on `db`; Err lists SQLite's first complaints.
pub fn check(db: &Path, mode: IntegrityCheck) -> Result<()> {
    let Some(pragma) = mode.pragma() else {
        return Ok(());
    };
    let conn = rusqlite::Connection::open(db)
        .map_err(|e| anyhow!("integrity check: cannot open {}: {e}", db.display()))?;
    let rows: rusqlite::Result<Vec<String>> = conn
        .prepare(&format!("PRAGMA {pragma}(20)"))
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        });
    drop(conn);
    let problems = match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => return Ok(()),
        Ok(rows) => rows,
        // A damaged page can make the check itself fail ("database disk image is malformed").
        Err(e) => vec![e.to_string()],
    };
    bail!(
        "restored database failed the {} integrity check ({pragma}): {}",
        match mode {
            IntegrityCheck::Full => "full",
            _ => "quick",
        },
        summarize(&problems)
    )
}

/// First few problems on one line.
fn summarize(problems: &[String]) -> String {
    let mut s = problems
        .iter()
        .take(3)
        .map(|p| p.trim().replace('\n', " "))
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > 3 {
        s.push_str(&format!("; and {} more", problems.len() - 3));
    }
    s
}

/// Checks the staged database and moves it to `output`; on any failure the staging files are
/// removed and `output` is left as it was. The move never replaces a file that appeared at
/// `output` meanwhile (link, then unlink; rename only where hard links are unsupported).
pub fn finish(staged: &Path, output: &Path, mode: IntegrityCheck) -> Result<()> {
    if let Err(e) = check(staged, mode) {
        discard(staged);
        return Err(e);
    }
    // The check's connection may leave side files; the database file alone is the result.
    for s in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(staged, s));
    }
    let moved = match std::fs::hard_link(staged, output) {
        Ok(()) => std::fs::remove_file(staged),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            discard(staged);
            bail!(
                "cannot restore, output path already exists: {}",
                output.display()
            );
        }
        Err(_) => std::fs::rename(staged, output),
    };
    if let Err(e) = moved {
        discard(staged);
        bail!("rename {} to {}: {e}", staged.display(), output.display());
    }
    if let Some(dir) = output.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("quick".parse::<IntegrityCheck>(), Ok(IntegrityCheck::Quick));
        assert_eq!("FULL".parse::<IntegrityCheck>(), Ok(IntegrityCheck::Full));
        assert_eq!("none".parse::<IntegrityCheck>(), Ok(IntegrityCheck::None));
        assert!("fast"
            .parse::<IntegrityCheck>()
            .unwrap_err()
            .contains("none, quick or full"));
    }

    #[test]
    fn good_database_moves_into_place_and_damaged_one_does_not() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out.db");
        let staged = staging_path(&out);
        {
            let c = rusqlite::Connection::open(&staged).unwrap();
            c.execute_batch(
                "PRAGMA page_size=1024; CREATE TABLE t(x); CREATE INDEX ti ON t(x);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<2000)
                 INSERT INTO t SELECT printf('%0100d', i) FROM n;",
            )
            .unwrap();
        }
        finish(&staged, &out, IntegrityCheck::Full).unwrap();
        assert!(out.exists() && !staged.exists());

        // Break page 3 (a b-tree page of t or its index): the check catches it.
        let mut bytes = std::fs::read(&out).unwrap();
        for b in &mut bytes[2 * 1024..3 * 1024] {
            *b = 0x5a;
        }
        let staged = staging_path(&out);
        std::fs::write(&staged, &bytes).unwrap();
        let out2 = d.path().join("out2.db");
        let e = finish(&staged, &out2, IntegrityCheck::Full).unwrap_err();
        assert!(e.to_string().contains("integrity check"), "{e}");
        assert!(!out2.exists() && !staged.exists());
        // `none` trusts it.
        std::fs::write(&staged, &bytes).unwrap();
        finish(&staged, &out2, IntegrityCheck::None).unwrap();
        assert!(out2.exists());
        // An output that appeared meanwhile is never replaced.
        std::fs::write(&staged, &bytes).unwrap();
        let e = finish(&staged, &out, IntegrityCheck::None).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert!(!staged.exists());
    }

    #[test]
    fn summary_is_one_line() {
        let p: Vec<String> = (0..5).map(|i| format!("row {i}\nmissing")).collect();
        assert_eq!(
            summarize(&p),
            "row 0 missing; row 1 missing; row 2 missing; and 2 more"
        );
    }
}

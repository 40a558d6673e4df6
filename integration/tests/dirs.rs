//! Issue 19: directory entries (`dir`, `pattern`, `recursive`, `watch`, Litestream v0.5's keys).
//!
//! Every WAL-mode database under the directory replicates to `<replica path>/<relative path>`,
//! other files are ignored, a database created while running replicates within seconds, one
//! removed gets its final sync and stops, a rename is a remove plus an add, metrics follow the
//! live set, and every database restores exactly through `restore -config CFG PATH`.
//!
//! `WALSHIP_DIR_DBS` sets how many databases (1000 by default, the suite size).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use walship_integration::*;

fn count() -> usize {
    std::env::var("WALSHIP_DIR_DBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Tenant `i`: even ones at the top, odd ones in `eu/` (the entry is recursive).
fn rel(i: usize) -> PathBuf {
    if i.is_multiple_of(2) {
        PathBuf::from(format!("tenant-{i:05}.db"))
    } else {
        PathBuf::from(format!("eu/tenant-{i:05}.db"))
    }
}

fn has_generation(replica: &Path) -> bool {
    !generations(replica).is_empty()
}

fn config(dir: &Path, tenants: &Path, replica: &Path, addr: &str) -> PathBuf {
    let cfg = dir.join("litestream.yml");
    std::fs::write(
        &cfg,
        format!(
            "addr: {addr}\ndbs:\n  - dir: {}\n    pattern: \"*.db\"\n    recursive: true\n    watch: true\n    release-after: 2s\n    replicas:\n      - type: file\n        path: {}\n        sync-interval: 10s\n",
            tenants.display(),
            replica.display()
        ),
    )
    .unwrap();
    cfg
}

/// Restores `db` through the config (a path under the directory entry) and checks it.
fn restored_equals(cfg: &Path, db: &Path, out: &Path, want: &str) -> Result<(), String> {
    let _ = std::fs::remove_file(out);
    let o = walship(&[
        "restore",
        "-config",
        cfg.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        db.to_str().unwrap(),
    ]);
    if !o.status.success() {
        return Err(format!(
            "restore of {} failed: {}",
            db.display(),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let ok = integrity(out);
    if ok != "ok" {
        return Err(format!("{}: integrity_check {ok}", db.display()));
    }
    let got = digest(out);
    if got != want {
        return Err(format!("{}: restored {got}, source {want}", db.display()));
    }
    Ok(())
}

#[test]
fn directory_entry_replicates_every_database_and_follows_the_directory() {
    let n = count().max(4);
    let d = tempfile::tempdir().unwrap();
    let tenants = d.path().join("tenants");
    let replica = d.path().join("replica");
    std::fs::create_dir_all(tenants.join("eu")).unwrap();
    let started = Instant::now();
    for i in 0..n {
        let mut w = Writer::new(&tenants.join(rel(i)), i as u64);
        for _ in 0..3 {
            w.tx();
        }
    }
    eprintln!("created {n} databases in {:?}", started.elapsed());
    // Not databases of the entry: ignored, never replicated.
    std::fs::write(tenants.join("notes.txt"), b"hello").unwrap();
    std::fs::write(tenants.join("junk.db"), b"not a sqlite database, just text").unwrap();
    rusqlite::Connection::open(tenants.join("rollback.db"))
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    std::fs::create_dir_all(tenants.join(".hidden")).unwrap();
    drop(app_conn(&tenants.join(".hidden/secret.db")));

    let addr = format!("127.0.0.1:{}", walship_integration::sftp::free_port());
    let cfg = config(d.path(), &tenants, &replica, &addr);
    let started = Instant::now();
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &d.path().join("w.log"),
    );
    wait_until(
        Duration::from_secs(120 + n as u64 / 10),
        "every database's first generation",
        || (0..n).all(|i| has_generation(&replica.join(rel(i)))),
    );
    eprintln!(
        "all {n} databases replicating {:?} after start",
        started.elapsed()
    );
    for ignored in ["junk.db", "rollback.db", "notes.txt", ".hidden"] {
        assert!(
            !replica.join(ignored).exists(),
            "{ignored} was replicated: {:?}",
            files(&replica.join(ignored))
        );
    }
    let listed = walship(&["databases", "-config", cfg.to_str().unwrap()]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.lines().count(), n + 1, "{listed}");

    // Idle databases are released (release-after 2s): walship keeps one descriptor (the
    // instance lock) of each. The writes below attach them again.
    let released = |m: &str| -> usize {
        m.lines()
            .find_map(|l| l.strip_prefix("walship_databases_released "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    wait_until(
        Duration::from_secs(60 + n as u64 / 20),
        "every idle database released",
        || released(&scrape(&addr, "/metrics")) == n,
    );
    let fds = std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
        .unwrap()
        .count();
    eprintln!(
        "all {n} idle databases released {:?} later: {fds} descriptors in all, {:.2} per database",
        t0.elapsed(),
        fds as f64 / n as f64
    );
    assert!(
        fds <= 3 * n + 64,
        "{fds} descriptors for {n} idle databases"
    );

    // A database created while running is picked up at once (it shows in /metrics) and has its
    // first generation at its first sync-interval.
    let new = tenants.join("eu/new.db");
    let t0 = Instant::now();
    let mut wn = Writer::new(&new, 7_000_001);
    wn.tx();
    let series = format!("db=\"{}\"", new.display());
    wait_until(
        Duration::from_secs(10),
        "the new database in /metrics",
        || scrape(&addr, "/metrics").contains(&series),
    );
    let found_after = t0.elapsed();
    wait_until(
        Duration::from_secs(20),
        "the new database's generation",
        || has_generation(&replica.join("eu/new.db")),
    );
    eprintln!(
        "a database created while running: replicating after {found_after:?}, first generation after {:?} (sync-interval 10s)",
        t0.elapsed()
    );
    assert!(
        found_after <= Duration::from_secs(2),
        "found after {found_after:?}"
    );
    for _ in 0..20 {
        wn.tx();
    }

    // Writes to running tenants keep flowing.
    let mut writers: Vec<(PathBuf, Writer)> = (0..4)
        .map(|i| {
            let db = tenants.join(rel(i * 3 + 1));
            let w = Writer::new(&db, 100 + i as u64);
            (db, w)
        })
        .collect();
    for _ in 0..20 {
        for (_, w) in &mut writers {
            w.tx();
        }
    }

    // Removed: commits walship has copied (its monitor runs at least every monitor-interval, 1 s)
    // but not shipped yet (sync-interval 10 s) reach the replica by the final sync.
    // Commits made in the instant before the unlink, before walship's monitor woke, cannot be
    // saved: the file is gone.
    let gone = tenants.join(rel(0));
    let mut wg = Writer::new(&gone, 5);
    for _ in 0..10 {
        wg.tx();
    }
    let gone_digest = digest(&gone);
    drop(wg);
    std::thread::sleep(Duration::from_millis(1500));
    for suffix in ["", "-wal", "-shm"] {
        let mut f = gone.as_os_str().to_owned();
        f.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(f));
    }
    wait_until(Duration::from_secs(30), "the removal's final sync", || {
        p.log_text().lines().any(|l| {
            l.contains("stopped after its final sync") && l.contains(&*gone.to_string_lossy())
        })
    });
    let gone_series = format!("db=\"{}\"", gone.display());
    wait_until(
        Duration::from_secs(10),
        "the removed database gone from /metrics",
        || {
            let m = scrape(&addr, "/metrics");
            !m.is_empty() && !m.contains(&gone_series)
        },
    );

    // Renamed: a remove plus an add (a new generation under the new name).
    let old_name = tenants.join(rel(2));
    let renamed = tenants.join("renamed.db");
    let renamed_digest = digest(&old_name);
    std::fs::rename(&old_name, &renamed).unwrap();
    wait_until(
        Duration::from_secs(20),
        "the renamed database's generation",
        || has_generation(&replica.join("renamed.db")),
    );

    // Everything written so far reaches the replicas; then a clean stop.
    let scratch = d.path().join("scratch.db");
    for (db, _) in &writers {
        wait_caught_up_with(
            &["-config", cfg.to_str().unwrap(), db.to_str().unwrap()],
            db,
            &scratch,
            Duration::from_secs(30),
        );
    }
    wait_caught_up_with(
        &["-config", cfg.to_str().unwrap(), new.to_str().unwrap()],
        &new,
        &scratch,
        Duration::from_secs(30),
    );
    drop(writers);
    drop(wn);
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    let log = p.log_text();
    assert!(!log.contains("panicked"), "{log}");

    // Oracle: every database the replica holds (the removed one and the old name of the renamed
    // one too) restores to exactly its source, all at once with `restore -dir`...
    let mut want: Vec<(PathBuf, String)> = (1..n)
        .filter(|&i| i != 2)
        .map(|i| (rel(i), digest(&tenants.join(rel(i)))))
        .collect();
    want.push(("eu/new.db".into(), digest(&new)));
    want.push(("renamed.db".into(), digest(&renamed)));
    want.push((rel(0), gone_digest.clone()));
    want.push((rel(2), renamed_digest));
    let out_dir = d.path().join("restored");
    let restore_dir = |extra: &[&str]| {
        let mut a = vec!["restore", "-config", cfg.to_str().unwrap()];
        a.extend_from_slice(extra);
        a.extend(["-dir", out_dir.to_str().unwrap(), tenants.to_str().unwrap()]);
        walship(&a)
    };
    let o = restore_dir(&[]);
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let total = want.len();
    assert!(
        summary.contains(&format!("restored {total} of {total} databases")),
        "{summary}"
    );
    let wrong: Vec<String> = want
        .iter()
        .filter_map(|(rel, w)| {
            let p = out_dir.join(rel);
            let (ok, got) = (integrity(&p), digest(&p));
            (ok != "ok" || &got != w).then(|| format!("{}: {ok} {got} want {w}", rel.display()))
        })
        .collect();
    let about_gone: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&*gone.to_string_lossy()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {total} restores wrong: {:?}\nlog of the removed database:\n{}",
        wrong.len(),
        &wrong[..wrong.len().min(5)],
        about_gone.join("\n")
    );
    // ... and one at a time by its path through the config (a sample, and the removed one).
    let scratch = d.path().join("one.db");
    for (rel, w) in want.iter().step_by((total / 20).max(1)).chain(want.last()) {
        restored_equals(&cfg, &tenants.join(rel), &scratch, w).unwrap();
    }
    // Run again into the same directory: every output exists, so each is refused (never
    // overwritten) and the summary says so with exit 1; -if-db-not-exists skips them instead.
    let again = restore_dir(&[]);
    let text = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{total} failed")) && text.contains("already exists"),
        "{text}"
    );
    let skip = restore_dir(&["-if-db-not-exists"]);
    let text = String::from_utf8_lossy(&skip.stdout);
    assert!(skip.status.success(), "{text}");
    assert!(text.contains(&format!("{total} skipped")), "{text}");
}

#[test]
fn directory_entry_bad_input_is_named() {
    let d = tempfile::tempdir().unwrap();
    let replica = d.path().join("replica");
    let missing = d.path().join("nope");
    let cfg = config(d.path(), &missing, &replica, "127.0.0.1:0");
    let o = walship(&["replicate", "-config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&*missing.to_string_lossy()) && err.contains("line 3"),
        "{err}"
    );

    let file = d.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let cfg = config(d.path(), &file, &replica, "127.0.0.1:0");
    let o = walship(&["replicate", "-config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is not a directory"), "{err}");

    // A pattern that matches nothing yet is a warning: databases may come later.
    let empty = d.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let addr = format!("127.0.0.1:{}", walship_integration::sftp::free_port());
    let cfg = config(d.path(), &empty, &replica, &addr);
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &d.path().join("w.log"),
    );
    wait_until(Duration::from_secs(10), "the warning", || {
        p.log_text().contains("no database matches")
    });
    let later = empty.join("later.db");
    let mut w = Writer::new(&later, 1);
    w.tx();
    wait_until(
        Duration::from_secs(20),
        "the first database's generation",
        || has_generation(&replica.join("later.db")),
    );
    assert_eq!(p.stop(), 0, "{}", p.log_text());
}

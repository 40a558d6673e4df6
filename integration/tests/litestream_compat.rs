//! Compatibility with the real Litestream v0.3.13 binary, in both directions: each tool restores
//! the other's replica exactly, and a replication handover between the tools (same database, same
//! meta directory, same replica) continues the same generation.
//!
//! Litestream v0.3.13 loses frames when an application commits inside its checkpoint window (see
//! DESIGN.md, "Known traps"). That race is not what these tests are about, so while Litestream
//! replicates, the configuration raises its checkpoint thresholds beyond what the tests write and
//! Litestream never checkpoints; walship's phases run with the default thresholds, so walship
//! restarts the WAL and the replica holds several WAL indexes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use walship_integration::*;

/// The tests run one at a time: each one drives a writer and a replicator flat out on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Database-level keys that keep Litestream from checkpointing during a test.
const NO_LITESTREAM_CHECKPOINTS: &str =
    "    min-checkpoint-page-count: 1000000\n    max-checkpoint-page-count: 2000000\n    checkpoint-interval: 1h\n";

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    db: PathBuf,
    replica: PathBuf,
    /// Default checkpoint thresholds (walship's phases).
    cfg_walship: PathBuf,
    /// No checkpoints (Litestream's phases).
    cfg_litestream: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let db = dir.join("app.db");
    let replica = dir.join("replica");
    std::fs::create_dir_all(dir.join("cfg-walship")).unwrap();
    std::fs::create_dir_all(dir.join("cfg-litestream")).unwrap();
    let cfg_walship = write_config(&dir.join("cfg-walship"), &db, &replica, "", "");
    let cfg_litestream = write_config(
        &dir.join("cfg-litestream"),
        &db,
        &replica,
        NO_LITESTREAM_CHECKPOINTS,
        "",
    );
    Setup {
        _tmp: tmp,
        dir,
        db,
        replica,
        cfg_walship,
        cfg_litestream,
    }
}

fn writes(w: &mut Writer, n: usize) {
    for _ in 0..n {
        w.tx();
    }
}

fn spawn_walship(s: &Setup, cfg: &Path, log: &str) -> Proc {
    Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &s.dir.join(log),
    )
}

fn spawn_litestream(ls: &Path, s: &Setup, cfg: &Path, log: &str) -> Proc {
    Proc::spawn(
        ls,
        &["replicate", "-config", cfg.to_str().unwrap()],
        &s.dir.join(log),
    )
}

fn wait_first_snapshot(s: &Setup, p: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while snapshot_count(&s.replica) == 0 {
        if let Some(code) = p.wait_exit(Duration::from_millis(100)) {
            panic!(
                "replicator exited early with code {code}:\n{}",
                p.log_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot in the replica after 20 s; log:\n{}",
            p.log_text()
        );
    }
}

fn stop_clean(p: &mut Proc, who: &str) {
    let code = p.stop();
    assert_eq!(
        code,
        0,
        "{who} did not exit 0 on SIGTERM; log:\n{}",
        p.log_text()
    );
}

/// Highest WAL index present in the replica.
/// Keeps writing while walship runs until it has checkpointed, the WAL has restarted and the
/// new index has reached the replica (so the handover happens at an index above 0).
fn write_until_wal_restart(w: &mut Writer, s: &Setup) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while max_wal_index(&s.replica) < 1 {
        assert!(
            Instant::now() < deadline,
            "walship never restarted the WAL: {:#?}",
            files(&s.replica)
        );
        writes(w, 50);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The handover continued the generation: no new directory, no "new generation" in the log.
fn assert_same_generation(s: &Setup, gens: &[String], who: &str, p: &Proc) {
    let log = p.log_text();
    assert_eq!(
        generations(&s.replica),
        gens,
        "{who} changed the generation; log:\n{log}"
    );
    assert!(
        !log.contains("new generation"),
        "{who} logged a new generation:\n{log}"
    );
}

fn max_wal_index(replica: &Path) -> u32 {
    replica_objects(replica)
        .iter()
        .filter(|o| o.offset.is_some())
        .map(|o| o.index)
        .max()
        .unwrap_or(0)
}

fn check_restored(out: &Path, want: &str, how: &str) {
    assert_eq!(
        integrity(out),
        "ok",
        "{how}: integrity_check of {}",
        out.display()
    );
    assert_eq!(
        digest(out),
        want,
        "{how}: restored content differs from the source"
    );
}

fn restore_litestream(ls: &Path, s: &Setup, want: &str) {
    for (name, args) in [
        (
            "litestream restore -config",
            vec![
                "-config",
                s.cfg_walship.to_str().unwrap(),
                s.db.to_str().unwrap(),
            ],
        ),
        ("litestream restore <file-url>", vec![]),
    ] {
        let out = s.dir.join(format!("ls-restored-{}.db", args.len()));
        let url = file_url(&s.replica);
        let mut a = vec!["restore", "-o", out.to_str().unwrap()];
        a.extend_from_slice(&args);
        if args.is_empty() {
            a.push(&url);
        }
        let o = run(ls, &a);
        assert!(
            o.status.success(),
            "{name} failed ({:?}):\nstdout: {}\nstderr: {}\nreplica files: {:#?}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            files(&s.replica)
        );
        check_restored(&out, want, name);
    }
}

fn restore_with_walship(s: &Setup, want: &str) {
    let out = s.dir.join("ws-restored-cfg.db");
    restore_walship(
        &[
            "-config",
            s.cfg_walship.to_str().unwrap(),
            s.db.to_str().unwrap(),
        ],
        &out,
    );
    check_restored(&out, want, "walship restore -config");
    let out = s.dir.join("ws-restored-url.db");
    restore_walship(&[&file_url(&s.replica)], &out);
    check_restored(&out, want, "walship restore <file-url>");
}

/// (a) Litestream v0.3.13 restores a replica written by walship.
#[test]
fn litestream_restores_walship_replica() {
    let Some(ls) = litestream_bin() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let s = setup();
    let mut w = Writer::new(&s.db, 1);
    writes(&mut w, 20);
    let mut p = spawn_walship(&s, &s.cfg_walship, "walship.log");
    wait_first_snapshot(&s, &mut p);
    writes(&mut w, 3000);
    let want = digest(&s.db);
    stop_clean(&mut p, "walship");
    drop(w);
    assert!(
        max_wal_index(&s.replica) >= 1,
        "expected walship to restart the WAL at least once; files: {:#?}",
        files(&s.replica)
    );
    assert_eq!(
        generations(&s.replica).len(),
        1,
        "one generation expected: {:?}",
        generations(&s.replica)
    );
    restore_litestream(&ls, &s, &want);
    eprintln!(
        "litestream_restores_walship_replica: {want} in {:?}",
        t0.elapsed()
    );
}

/// (b) walship restores a replica written by Litestream v0.3.13.
#[test]
fn walship_restores_litestream_replica() {
    let Some(ls) = litestream_bin() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let s = setup();
    let mut w = Writer::new(&s.db, 2);
    writes(&mut w, 20);
    let mut p = spawn_litestream(&ls, &s, &s.cfg_litestream, "litestream.log");
    wait_first_snapshot(&s, &mut p);
    writes(&mut w, 3000);
    let want = digest(&s.db);
    stop_clean(&mut p, "litestream");
    drop(w);
    assert_eq!(
        generations(&s.replica).len(),
        1,
        "one generation expected: {:?}",
        generations(&s.replica)
    );
    restore_with_walship(&s, &want);
    eprintln!(
        "walship_restores_litestream_replica: {want} in {:?}",
        t0.elapsed()
    );
}

/// (c) Litestream replicates, stops; the application writes on; walship takes over the same
/// generation; both tools restore the result.
#[test]
fn handover_litestream_to_walship() {
    let Some(ls) = litestream_bin() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let s = setup();
    let mut w = Writer::new(&s.db, 3);
    w.conn.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    writes(&mut w, 20);

    let mut lsp = spawn_litestream(&ls, &s, &s.cfg_litestream, "litestream.log");
    wait_first_snapshot(&s, &mut lsp);
    writes(&mut w, 1000);
    stop_clean(&mut lsp, "litestream");
    let gens = generations(&s.replica);
    assert_eq!(
        gens.len(),
        1,
        "litestream should have written one generation: {gens:?}"
    );
    let header_before = wal_header(&s.db);

    // Nobody replicates: the application goes on (its autocheckpoint is off, the WAL keeps its salts).
    writes(&mut w, 300);
    assert_eq!(
        wal_header(&s.db),
        header_before,
        "the WAL was restarted while nobody replicated"
    );

    let mut wsp = spawn_walship(&s, &s.cfg_walship, "walship.log");
    let scratch = s.dir.join("scratch.db");
    wait_caught_up(
        &file_url(&s.replica),
        &s.db,
        &scratch,
        Duration::from_secs(30),
    );
    assert_same_generation(&s, &gens, "walship", &wsp);

    writes(&mut w, 2000);
    write_until_wal_restart(&mut w, &s);
    let want = digest(&s.db);
    stop_clean(&mut wsp, "walship");
    drop(w);
    assert_same_generation(&s, &gens, "walship", &wsp);
    assert!(
        max_wal_index(&s.replica) >= 1,
        "expected walship to restart the WAL at least once; files: {:#?}",
        files(&s.replica)
    );
    restore_with_walship(&s, &want);
    restore_litestream(&ls, &s, &want);
    eprintln!(
        "handover_litestream_to_walship: {want} in {:?}",
        t0.elapsed()
    );
}

/// (d) walship replicates (and restarts the WAL), stops; the application writes on; Litestream
/// takes over the same generation; both tools restore the result.
#[test]
fn handover_walship_to_litestream() {
    let Some(ls) = litestream_bin() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let s = setup();
    let mut w = Writer::new(&s.db, 4);
    w.conn.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    writes(&mut w, 20);

    let mut wsp = spawn_walship(&s, &s.cfg_walship, "walship.log");
    wait_first_snapshot(&s, &mut wsp);
    writes(&mut w, 2000);
    write_until_wal_restart(&mut w, &s);
    stop_clean(&mut wsp, "walship");
    let gens = generations(&s.replica);
    assert_eq!(
        gens.len(),
        1,
        "walship should have written one generation: {gens:?}"
    );
    assert!(
        max_wal_index(&s.replica) >= 1,
        "expected walship to restart the WAL at least once; files: {:#?}",
        files(&s.replica)
    );
    let header_before = wal_header(&s.db);

    writes(&mut w, 300);
    assert_eq!(
        wal_header(&s.db),
        header_before,
        "the WAL was restarted while nobody replicated"
    );

    let mut lsp = spawn_litestream(&ls, &s, &s.cfg_litestream, "litestream.log");
    let scratch = s.dir.join("scratch.db");
    wait_caught_up(
        &file_url(&s.replica),
        &s.db,
        &scratch,
        Duration::from_secs(30),
    );
    assert_same_generation(&s, &gens, "litestream", &lsp);

    writes(&mut w, 1000);
    let want = digest(&s.db);
    stop_clean(&mut lsp, "litestream");
    drop(w);
    assert_same_generation(&s, &gens, "litestream", &lsp);
    restore_litestream(&ls, &s, &want);
    restore_with_walship(&s, &want);
    eprintln!(
        "handover_walship_to_litestream: {want} in {:?}",
        t0.elapsed()
    );
}

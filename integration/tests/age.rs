//! age encryption (format §2) end to end through the binaries: encrypted round trip on a directory
//! replica, Litestream v0.3.13 ↔ walship with the same keys, restores that cannot decrypt, and a
//! replica configured with recipients only that keeps replicating across a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use walship_core::crypt::age::secrecy::ExposeSecret;
use walship_core::crypt::{age, AGE_MAGIC};
use walship_integration::*;

/// One test at a time: each drives a writer and a replicator on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Keeps Litestream from checkpointing while it replicates (its checkpoint race is not the subject
/// here; see litestream_compat.rs).
const NO_LITESTREAM_CHECKPOINTS: &str =
    "    min-checkpoint-page-count: 1000000\n    max-checkpoint-page-count: 2000000\n    checkpoint-interval: 1h\n";

struct Keys {
    identity: String,
    recipient: String,
}

fn keys() -> Keys {
    let id = age::x25519::Identity::generate();
    Keys {
        identity: id.to_string().expose_secret().to_string(),
        recipient: id.to_public().to_string(),
    }
}

/// The replica's `age:` section (8-space replica indentation, as `write_config` uses).
fn age_section(identities: &[&str], recipients: &[&str]) -> String {
    let list = |name: &str, v: &[&str]| {
        if v.is_empty() {
            return String::new();
        }
        let mut s = format!("          {name}:\n");
        for k in v {
            s.push_str(&format!("            - {k}\n"));
        }
        s
    };
    format!(
        "        age:\n{}{}",
        list("identities", identities),
        list("recipients", recipients)
    )
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    db: PathBuf,
    replica: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    Setup {
        db: dir.join("app.db"),
        replica: dir.join("replica"),
        dir,
        _tmp: tmp,
    }
}

impl Setup {
    /// A config in its own directory `name`, for this database and replica.
    fn config(&self, name: &str, extra_db: &str, age: &str) -> PathBuf {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        write_config(&d, &self.db, &self.replica, extra_db, age)
    }
}

fn writes(w: &mut Writer, n: usize) {
    for _ in 0..n {
        w.tx();
    }
}

fn replicate(bin: &Path, s: &Setup, cfg: &Path, log: &str) -> Proc {
    Proc::spawn(
        bin,
        &["replicate", "-config", cfg.to_str().unwrap()],
        &s.dir.join(log),
    )
}

fn wait_first_snapshot(s: &Setup, p: &mut Proc) {
    wait_snapshot_in(&s.replica, p)
}

fn wait_snapshot_in(replica: &Path, p: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while snapshot_count(replica) == 0 {
        if let Some(code) = p.wait_exit(Duration::from_millis(100)) {
            panic!(
                "replicator exited early with code {code}:\n{}",
                p.log_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot after 20 s; log:\n{}",
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

fn max_wal_index(replica: &Path) -> u32 {
    replica_objects(replica)
        .iter()
        .filter(|o| o.offset.is_some())
        .map(|o| o.index)
        .max()
        .unwrap_or(0)
}

/// The newest WAL segment object of a file replica.
fn last_segment(replica: &Path) -> PathBuf {
    replica_objects(replica)
        .into_iter()
        .filter(|o| o.offset.is_some())
        .max_by_key(|o| (o.index, o.offset))
        .expect("segments")
        .path
}

/// Every file under `generations/` is a binary age file: never an LZ4 frame or a SQLite page.
fn assert_all_encrypted(replica: &Path) {
    let objs: Vec<String> = files(replica)
        .into_iter()
        .filter(|f| f.starts_with("generations/"))
        .collect();
    assert!(
        objs.len() >= 2,
        "expected a snapshot and segments: {objs:?}"
    );
    for f in &objs {
        let bytes = std::fs::read(replica.join(f)).unwrap();
        assert!(
            bytes.starts_with(AGE_MAGIC),
            "{f} does not start with the age header: {:02x?}",
            &bytes[..bytes.len().min(16)]
        );
    }
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

fn restore_with_walship(s: &Setup, cfg: &Path, out_name: &str, want: &str) {
    let out = s.dir.join(out_name);
    restore_walship(
        &["-config", cfg.to_str().unwrap(), s.db.to_str().unwrap()],
        &out,
    );
    check_restored(&out, want, "walship restore -config");
}

/// A restore that must fail: exit 1, one clear line naming an object, nothing at the output path,
/// no temporary file left beside it, and no secret in the output.
fn assert_restore_refused(s: &Setup, args: &[&str], out_name: &str, expect: &str, secret: &str) {
    let out_dir = s.dir.join(format!("{out_name}.d"));
    let out = out_dir.join("restored.db");
    let mut a = vec!["restore", "-o", out.to_str().unwrap()];
    a.extend_from_slice(args);
    let o = walship(&a);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{a:?}: stdout {stdout}\nstderr {stderr}"
    );
    assert!(
        stderr.contains("object generations/") && stderr.contains(expect),
        "{a:?}: the error must name the object and say {expect:?}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !out.exists(),
        "{} exists after a failed restore",
        out.display()
    );
    let left = files(&out_dir);
    assert!(left.is_empty(), "files left beside the output: {left:?}");
    assert!(
        !stderr.contains(secret) && !stdout.contains(secret),
        "secret key printed"
    );
}

/// Writes until walship has restarted the WAL at least once (the replica holds index 1+).
fn write_until_wal_restart(w: &mut Writer, s: &Setup) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while max_wal_index(&s.replica) < 1 {
        assert!(
            Instant::now() < deadline,
            "the WAL never restarted: {:#?}",
            files(&s.replica)
        );
        writes(w, 50);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Encrypted round trip on a directory replica; every object is age; the listing commands work;
/// restores without the identity or with another one fail cleanly.
#[test]
fn encrypted_round_trip_and_refused_restores() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let s = setup();
    let k = keys();
    let other = keys();
    let cfg = s.config("cfg", "", &age_section(&[&k.identity], &[&k.recipient]));
    let mut w = Writer::new(&s.db, 61);
    writes(&mut w, 20);
    let mut p = replicate(&walship_bin(), &s, &cfg, "walship.log");
    wait_first_snapshot(&s, &mut p);
    writes(&mut w, 2000);
    write_until_wal_restart(&mut w, &s);
    let want = digest(&s.db);
    // The application stays open: its last close would checkpoint and delete the WAL, and the
    // restart below must find the same one.
    stop_clean(&mut p, "walship");
    let log = p.log_text();
    assert!(!log.contains(&k.identity), "identity in the log");
    assert!(
        !log.contains("ERROR") && !log.contains("error="),
        "errors logged:\n{log}"
    );

    assert_all_encrypted(&s.replica);
    restore_with_walship(&s, &cfg, "restored.db", &want);

    // A restart with identities resumes where the replica ends by decrypting its last segment
    // (as v0.3.13 does): the same generation, and that segment is not uploaded again.
    let gens = generations(&s.replica);
    let last = last_segment(&s.replica);
    let last_bytes = std::fs::read(&last).unwrap();
    let mut p = replicate(&walship_bin(), &s, &cfg, "walship-2.log");
    // Writes start once walship holds the WAL again: its last checkpoint may have been complete,
    // and a write before that would restart the WAL, which rightly means a new generation.
    wait_until(
        Duration::from_secs(20),
        "walship to continue the generation",
        || p.log_text().contains("continuing generation"),
    );
    writes(&mut w, 300);
    let want = digest(&s.db);
    let scratch = s.dir.join("scratch.db");
    wait_until(Duration::from_secs(30), "the restart to ship", || {
        let _ = std::fs::remove_file(&scratch);
        let o = walship(&[
            "restore",
            "-o",
            scratch.to_str().unwrap(),
            "-config",
            cfg.to_str().unwrap(),
            s.db.to_str().unwrap(),
        ]);
        o.status.success() && digest(&scratch) == want
    });
    stop_clean(&mut p, "walship (restart)");
    drop(w);
    let log = p.log_text();
    assert!(
        !log.contains("new generation"),
        "a new generation was started:\n{log}"
    );
    assert_eq!(generations(&s.replica), gens, "the generation changed");
    assert_eq!(
        std::fs::read(&last).unwrap(),
        last_bytes,
        "{} was rewritten",
        last.display()
    );
    assert_all_encrypted(&s.replica);
    restore_with_walship(&s, &cfg, "restored-2.db", &want);

    // Listings show stored sizes and need no identity.
    let recipients_only = s.config("cfg-rcpt", "", &age_section(&[], &[&k.recipient]));
    for cmd in ["snapshots", "wal", "generations"] {
        let o = walship(&[
            cmd,
            "-config",
            recipients_only.to_str().unwrap(),
            s.db.to_str().unwrap(),
        ]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.lines().count() >= 2, "{cmd} printed no rows:\n{out}");
    }

    // No identity: no age section, recipients only, and URL mode (which cannot carry one).
    let no_age = s.config("cfg-none", "", "");
    let db = s.db.to_str().unwrap();
    let url = file_url(&s.replica);
    let missing = "is age-encrypted but the replica has no age identities configured";
    assert_restore_refused(
        &s,
        &["-config", no_age.to_str().unwrap(), db],
        "none",
        missing,
        &k.identity,
    );
    assert_restore_refused(
        &s,
        &["-config", recipients_only.to_str().unwrap(), db],
        "rcpt",
        missing,
        &k.identity,
    );
    assert_restore_refused(&s, &[&url], "url", missing, &k.identity);
    // Another identity.
    let wrong = s.config(
        "cfg-wrong",
        "",
        &age_section(&[&other.identity], &[&other.recipient]),
    );
    assert_restore_refused(
        &s,
        &["-config", wrong.to_str().unwrap(), db],
        "wrong",
        "none of the replica's age identities can decrypt it",
        &other.identity,
    );
    // A malformed identity is a config error that does not echo the key.
    let mut broken = k.identity.clone();
    broken.truncate(broken.len() - 3);
    let bad = s.config("cfg-bad", "", &age_section(&[&broken], &[]));
    let o = walship(&[
        "restore",
        "-o",
        s.dir.join("x.db").to_str().unwrap(),
        "-config",
        bad.to_str().unwrap(),
        db,
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("age.identities[0], line 1: malformed secret key"),
        "{stderr}"
    );
    assert!(!stderr.contains(&broken[20..]), "key echoed: {stderr}");
    eprintln!(
        "encrypted_round_trip_and_refused_restores: {want} in {:?}",
        t0.elapsed()
    );
}

/// Litestream v0.3.13 restores an encrypted replica written by walship.
#[test]
fn litestream_restores_encrypted_walship_replica() {
    let Some(ls) = litestream_bin() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let s = setup();
    let k = keys();
    let cfg = s.config("cfg", "", &age_section(&[&k.identity], &[&k.recipient]));
    let mut w = Writer::new(&s.db, 62);
    writes(&mut w, 20);
    let mut p = replicate(&walship_bin(), &s, &cfg, "walship.log");
    wait_first_snapshot(&s, &mut p);
    writes(&mut w, 2000);
    write_until_wal_restart(&mut w, &s);
    let want = digest(&s.db);
    stop_clean(&mut p, "walship");
    drop(w);
    assert_all_encrypted(&s.replica);
    let out = s.dir.join("ls-restored.db");
    let o = run(
        &ls,
        &[
            "restore",
            "-o",
            out.to_str().unwrap(),
            "-config",
            cfg.to_str().unwrap(),
            s.db.to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "litestream restore failed: {}{}\nfiles: {:#?}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        files(&s.replica)
    );
    check_restored(
        &out,
        &want,
        "litestream restore of walship's encrypted replica",
    );
    eprintln!(
        "litestream_restores_encrypted_walship_replica: {want} in {:?}",
        t0.elapsed()
    );
}

/// walship restores an encrypted replica written by Litestream v0.3.13 with the same keys.
#[test]
fn walship_restores_encrypted_litestream_replica() {
    let Some(ls) = litestream_bin() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let s = setup();
    let k = keys();
    let age = age_section(&[&k.identity], &[&k.recipient]);
    let cfg_ls = s.config("cfg-ls", NO_LITESTREAM_CHECKPOINTS, &age);
    let cfg = s.config("cfg", "", &age);
    let mut w = Writer::new(&s.db, 63);
    writes(&mut w, 20);
    let mut p = replicate(&ls, &s, &cfg_ls, "litestream.log");
    wait_first_snapshot(&s, &mut p);
    writes(&mut w, 2000);
    let want = digest(&s.db);
    stop_clean(&mut p, "litestream");
    drop(w);
    assert_all_encrypted(&s.replica);
    restore_with_walship(&s, &cfg, "ws-restored.db", &want);
    eprintln!(
        "walship_restores_encrypted_litestream_replica: {want} in {:?}",
        t0.elapsed()
    );
}

/// A replica with recipients and no identities (the host cannot read its own backups) keeps
/// replicating across a restart: it resumes by uploading its last segment again from the shadow
/// WAL under the same key, in the same generation; a restore with the identity is exact.
#[test]
fn recipients_only_replica_resumes_after_restart() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let s = setup();
    let k = keys();
    // First run without checkpoints, so the WAL the application goes on writing while walship is
    // stopped is the same one (a restarted WAL would rightly start a new generation instead).
    let rcpt = age_section(&[], &[&k.recipient]);
    let cfg1 = s.config("cfg-rcpt-1", NO_LITESTREAM_CHECKPOINTS, &rcpt);
    let cfg = s.config("cfg-rcpt", "", &rcpt);
    let cfg_read = s.config("cfg-read", "", &age_section(&[&k.identity], &[]));
    let mut w = Writer::new(&s.db, 64);
    w.conn.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    writes(&mut w, 20);
    let mut p = replicate(&walship_bin(), &s, &cfg1, "walship-1.log");
    wait_first_snapshot(&s, &mut p);
    writes(&mut w, 500);
    let want1 = digest(&s.db);
    stop_clean(&mut p, "walship (first run)");
    assert_all_encrypted(&s.replica);
    restore_with_walship(&s, &cfg_read, "restored-1.db", &want1);
    let gens = generations(&s.replica);
    assert_eq!(gens.len(), 1, "{gens:?}");
    let last = last_segment(&s.replica);
    let last_bytes = std::fs::read(&last).unwrap();

    // Nobody replicates while the application writes on (no checkpoint: same WAL, same index).
    let header = wal_header(&s.db);
    writes(&mut w, 300);
    assert_eq!(
        wal_header(&s.db),
        header,
        "the WAL restarted while nobody replicated"
    );
    let mut p = replicate(&walship_bin(), &s, &cfg, "walship-2.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    // Same key, now holding the old bytes and the 300 transactions written meanwhile.
    while std::fs::read(&last).is_ok_and(|b| b.len() <= last_bytes.len()) {
        assert!(
            Instant::now() < deadline,
            "{} was not uploaded again within 30 s; log:\n{}\nfiles: {:#?}",
            last.display(),
            p.log_text(),
            files(&s.replica)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    writes(&mut w, 2000);
    write_until_wal_restart(&mut w, &s);
    let want2 = digest(&s.db);
    stop_clean(&mut p, "walship (second run)");
    let log = p.log_text();
    assert!(
        !log.contains("new generation"),
        "a new generation was started:\n{log}"
    );
    assert!(
        !log.contains("ERROR") && !log.contains("error="),
        "errors logged:\n{log}"
    );
    assert_eq!(generations(&s.replica), gens, "the generation changed");
    assert_all_encrypted(&s.replica);
    restore_with_walship(&s, &cfg_read, "restored-2.db", &want2);

    // A third run whose identity does not match (a key rotated on the host, say) degrades the
    // same way instead of failing every sync: it says so once and uploads the last segment again.
    let other = keys();
    let cfg_wrong = s.config(
        "cfg-wrong",
        "",
        &age_section(&[&other.identity], &[&k.recipient]),
    );
    let last = last_segment(&s.replica);
    let last_bytes = std::fs::read(&last).unwrap();
    let mut p = replicate(&walship_bin(), &s, &cfg_wrong, "walship-3.log");
    wait_until(
        Duration::from_secs(30),
        "the last segment to be uploaded again",
        || std::fs::read(&last).is_ok_and(|b| b != last_bytes),
    );
    writes(&mut w, 300);
    let want3 = digest(&s.db);
    let scratch = s.dir.join("scratch.db");
    wait_until(Duration::from_secs(30), "the third run to ship", || {
        let _ = std::fs::remove_file(&scratch);
        let o = walship(&[
            "restore",
            "-o",
            scratch.to_str().unwrap(),
            "-config",
            cfg_read.to_str().unwrap(),
            s.db.to_str().unwrap(),
        ]);
        o.status.success() && digest(&scratch) == want3
    });
    stop_clean(&mut p, "walship (third run)");
    drop(w);
    let log = p.log_text();
    assert!(
        log.contains("cannot read the last segment; it will be uploaded again"),
        "no warning about the unreadable segment:\n{log}"
    );
    assert!(!log.contains(&other.identity), "identity in the log");
    assert_eq!(generations(&s.replica), gens, "the generation changed");
    restore_with_walship(&s, &cfg_read, "restored-3.db", &want3);
    eprintln!(
        "recipients_only_replica_resumes_after_restart: {want3} in {:?}",
        t0.elapsed()
    );
}

/// Litestream v0.3.13 replicates encrypted, stops; the application writes on; walship takes over
/// the same replica with recipients only. It cannot decrypt Litestream's last segment, so it
/// uploads that segment again from the shared shadow WAL and continues the same generation; both
/// tools restore the result with the identity.
#[test]
fn handover_encrypted_litestream_to_recipients_only_walship() {
    let Some(ls) = litestream_bin() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let s = setup();
    let k = keys();
    let both = age_section(&[&k.identity], &[&k.recipient]);
    let cfg_ls = s.config("cfg-ls", NO_LITESTREAM_CHECKPOINTS, &both);
    let cfg_rcpt = s.config("cfg-rcpt", "", &age_section(&[], &[&k.recipient]));
    let cfg_read = s.config("cfg-read", "", &both);
    let mut w = Writer::new(&s.db, 66);
    w.conn.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    writes(&mut w, 20);
    let mut p = replicate(&ls, &s, &cfg_ls, "litestream.log");
    wait_first_snapshot(&s, &mut p);
    writes(&mut w, 1000);
    stop_clean(&mut p, "litestream");
    let gens = generations(&s.replica);
    assert_eq!(gens.len(), 1, "{gens:?}");
    let last = last_segment(&s.replica);
    let last_bytes = std::fs::read(&last).unwrap();

    let header = wal_header(&s.db);
    writes(&mut w, 300);
    assert_eq!(
        wal_header(&s.db),
        header,
        "the WAL restarted while nobody replicated"
    );
    let mut p = replicate(&walship_bin(), &s, &cfg_rcpt, "walship.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read(&last).is_ok_and(|b| b.len() <= last_bytes.len()) {
        assert!(
            Instant::now() < deadline,
            "{} was not uploaded again within 30 s; log:\n{}\nfiles: {:#?}",
            last.display(),
            p.log_text(),
            files(&s.replica)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    writes(&mut w, 2000);
    write_until_wal_restart(&mut w, &s);
    let want = digest(&s.db);
    stop_clean(&mut p, "walship");
    drop(w);
    let log = p.log_text();
    assert!(
        !log.contains("new generation"),
        "a new generation was started:\n{log}"
    );
    assert_eq!(generations(&s.replica), gens, "the generation changed");
    assert_all_encrypted(&s.replica);
    restore_with_walship(&s, &cfg_read, "ws-restored.db", &want);
    let out = s.dir.join("ls-restored.db");
    let o = run(
        &ls,
        &[
            "restore",
            "-o",
            out.to_str().unwrap(),
            "-config",
            cfg_read.to_str().unwrap(),
            s.db.to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "litestream restore failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    check_restored(&out, &want, "litestream restore after the handover");
    eprintln!(
        "handover_encrypted_litestream_to_recipients_only_walship: {want} in {:?}",
        t0.elapsed()
    );
}

/// Issue 23.8: with logging turned up every way a user can (debug, WALSHIP_LOG=trace, JSON), the
/// identity appears in no output of replicate or restore, and the restore is exact.
#[test]
fn loud_logging_never_shows_the_identity() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup();
    let k = keys();
    let mut w = Writer::new(&s.db, 23);
    writes(&mut w, 20);
    for (name, logging, env) in LOUD_LOGGING {
        let replica = s.dir.join(format!("replica-{name}"));
        let d = s.dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let cfg = write_config(
            &d,
            &s.db,
            &replica,
            "",
            &age_section(&[&k.identity], &[&k.recipient]),
        );
        let mut p = replicate_loud(&cfg, logging, env, &d.join("walship.log"));
        wait_snapshot_in(&replica, &mut p);
        writes(&mut w, 100);
        let want = digest(&s.db);
        wait_caught_up_with(
            &["-config", cfg.to_str().unwrap(), s.db.to_str().unwrap()],
            &s.db,
            &d.join("scratch.db"),
            Duration::from_secs(30),
        );
        stop_clean(&mut p, name);
        let out = d.join("restored.db");
        let restored = restore_with_env(&cfg, &s.db, &out, env);
        assert_eq!(digest(&out), want, "{name}");
        let output = format!("{}{restored}", p.log_text());
        // The whole identity, and its secret part without the prefix (in case of re-encoding).
        let secret = k.identity.trim_start_matches("AGE-SECRET-KEY-1");
        assert_no_secret(name, &output, &[&k.identity, secret]);
    }
}

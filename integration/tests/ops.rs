//! Operations: `replicate -dry-run` / `check`, `replicate -once`,
//! `restore -integrity-check`, sd_notify, heartbeat and `/metrics`, end to end through the binary.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use walship_integration::s3::S3Target;
use walship_integration::*;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn seeded_db(dir: &Path, txs: u32) -> PathBuf {
    let db = dir.join("app.db");
    let mut w = Writer::new(&db, 11);
    for _ in 0..txs {
        w.tx();
    }
    db
}

/// An S3 replica section for `server` (credentials inline, as users write them).
fn s3_section(name: &str, endpoint: &str, bucket: &str, t: &S3Target, secret: &str) -> String {
    format!(
        "      - name: {name}\n        type: s3\n        bucket: {bucket}\n        path: backups/app\n        endpoint: {endpoint}\n        region: {}\n        force-path-style: true\n        access-key-id: {}\n        secret-access-key: {secret}\n        sync-interval: 100ms\n",
        t.region, t.access_key
    )
}

fn config_with(dir: &Path, file: &str, db: &Path, replicas: &str) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(
        &p,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n{replicas}",
            db.display()
        ),
    )
    .unwrap();
    p
}

/// The verdict line of one replica in a dry run's output.
fn line_of<'a>(out: &'a str, replica: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(replica))
        .unwrap_or_else(|| panic!("no line for replica {replica}: {out}"))
}

async fn bucket_keys(t: &S3Target, bucket: &str) -> Vec<String> {
    let out = t
        .sdk()
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .expect("list bucket");
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

#[test]
fn dry_run_file_replica_is_ok_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let db = seeded_db(d.path(), 20);
    let replica = d.path().join("replica");
    let cfg = write_config(d.path(), &db, &replica, "", "");
    let before = files(d.path());
    for args in [
        vec!["replicate", "-dry-run", "-config", cfg.to_str().unwrap()],
        vec!["check", "-config", cfg.to_str().unwrap()],
    ] {
        let o = walship(&args);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {out}");
        let l = line_of(&out, "file");
        assert!(
            l.contains(&db.display().to_string()) && l.trim_end().ends_with("ok"),
            "{l}"
        );
    }
    assert!(
        files(&replica).is_empty(),
        "probe left: {:?}",
        files(&replica)
    );
    assert_eq!(
        files(d.path()),
        before,
        "no meta directory, no other file written"
    );
    // The URL form works too.
    let o = walship(&["check", db.to_str().unwrap(), &file_url(&replica)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn dry_run_against_s3_names_each_cause() {
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(t.new_bucket("dry-run"));
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let good = config_with(
        d.path(),
        "good.yml",
        &db,
        &s3_section("good", &t.endpoint, &bucket, &t, &t.secret_key),
    );
    let o = walship(&["replicate", "-dry-run", "-config", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(line_of(&text(&o), "good").trim_end().ends_with("ok"));

    let mut bad = s3_section("good", &t.endpoint, &bucket, &t, &t.secret_key);
    bad += &s3_section("badsecret", &t.endpoint, &bucket, &t, "not-the-secret");
    bad += &s3_section(
        "nobucket",
        &t.endpoint,
        &format!("{bucket}-missing"),
        &t,
        &t.secret_key,
    );
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    bad += &s3_section("down", "http://127.0.0.1:1", &bucket, &t, &t.secret_key);
    // `.invalid` never resolves (RFC 6761).
    bad += &s3_section(
        "nodns",
        "http://walship-check.invalid:9000",
        &bucket,
        &t,
        &t.secret_key,
    );
    let cfg = config_with(d.path(), "bad.yml", &db, &bad);
    let o = walship(&["replicate", "-dry-run", "-config", cfg.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(line_of(&out, "good").trim_end().ends_with("ok"), "{out}");
    assert!(line_of(&out, "badsecret").contains("FAILED auth"), "{out}");
    assert!(
        line_of(&out, "nobucket").contains("FAILED bucket missing"),
        "{out}"
    );
    assert!(
        line_of(&out, "down").contains("FAILED unreachable"),
        "{out}"
    );
    // Issue 16.13: the DNS verdict was the SDK's whole error (490 characters, Debug dump and
    // all); it stays one short line with the cause, and the host is in the target column.
    let nodns = line_of(&out, "nodns");
    assert!(nodns.contains("FAILED DNS"), "{out}");
    assert!(nodns.contains("walship-check.invalid"), "{nodns}");
    let verdict = &nodns[nodns.find("FAILED").unwrap()..];
    assert!(
        verdict.len() <= 210,
        "{} characters: {verdict}",
        verdict.len()
    );
    assert!(!verdict.contains(" { "), "a Debug dump: {verdict}");
    assert!(!out.contains("not-the-secret"), "secret in output: {out}");
    assert!(!out.contains(&t.secret_key), "secret in output: {out}");
    // `check` is the same command.
    let o = walship(&["check", "-config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    let keys = rt.block_on(bucket_keys(&t, &bucket));
    assert!(keys.is_empty(), "the bucket holds new objects: {keys:?}");
    assert!(!db.exists(), "no database created");
    assert!(
        !d.path().join(".app.db-litestream").exists(),
        "no meta directory"
    );
}

#[test]
fn once_syncs_then_exits() {
    let d = tempfile::tempdir().unwrap();
    let db = seeded_db(d.path(), 200);
    let replica = d.path().join("replica");
    let cfg = write_config(d.path(), &db, &replica, "", "");
    let run_once = || walship(&["replicate", "-once", "-config", cfg.to_str().unwrap()]);
    let o = run_once();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(snapshot_count(&replica), 1, "a snapshot where none existed");
    let out = d.path().join("out.db");
    restore_walship(&[&file_url(&replica)], &out);
    assert_eq!(integrity(&out), "ok");
    assert_eq!(digest(&out), digest(&db));

    // More writes, including an application checkpoint between runs: the next run ships them
    // (possibly in a new generation), and the replica restores to the new state.
    let mut w = Writer::new(&db, 12);
    for _ in 0..150 {
        w.tx();
    }
    w.checkpoint("TRUNCATE");
    for _ in 0..50 {
        w.tx();
    }
    let o = run_once();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    restore_walship(&[&file_url(&replica)], &out);
    assert_eq!(integrity(&out), "ok");
    assert_eq!(digest(&out), digest(&db));
    // The instance lock is released: a continuous replicate can start right away.
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &d.path().join("r.log"),
    );
    // Taking the lock is what it must show (a sleep showed nothing).
    wait_until(
        Duration::from_secs(10),
        "replicate to take the lock and sync",
        || {
            let t = p.log_text();
            t.contains("continuing generation") || t.contains("sync: new generation")
        },
    );
    let log = p.log_text();
    assert!(!log.contains("ERROR"), "an error at start:\n{log}");
    assert_eq!(p.stop(), 0, "{log}");
}

#[test]
fn once_fails_with_the_replica_unreachable() {
    let d = tempfile::tempdir().unwrap();
    let db = seeded_db(d.path(), 20);
    let t = S3Target {
        endpoint: "http://127.0.0.1:1".into(),
        access_key: "k".into(),
        secret_key: "s3cr3t-value".into(),
        region: "us-east-1".into(),
    };
    let cfg = config_with(
        d.path(),
        "down.yml",
        &db,
        &s3_section("down", &t.endpoint, "b", &t, &t.secret_key),
    );
    let started = std::time::Instant::now();
    let o = walship(&["replicate", "-once", "-config", cfg.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("down") && out.contains(&db.display().to_string()),
        "names the database and the replica: {out}"
    );
    assert!(!out.contains("s3cr3t-value"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(60));
    // A database that does not exist is a failure too (nothing was backed up).
    let cfg = write_config(
        d.path(),
        &d.path().join("missing.db"),
        &d.path().join("r"),
        "",
        "",
    );
    let o = walship(&["replicate", "-once", "-config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

/// A database replicated by `-once` into a file replica whose snapshot holds every page of
/// table `t` (the application checkpointed first, so no WAL frame rewrites them on restore).
fn snapshot_only_replica(d: &Path) -> (PathBuf, PathBuf, u32) {
    let db = seeded_db(d, 400);
    let w = Writer::new(&db, 13);
    w.checkpoint("TRUNCATE");
    let root: u32 = w
        .conn
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 't'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(w);
    let replica = d.join("replica");
    let cfg = write_config(d, &db, &replica, "", "");
    let o = walship(&["replicate", "-once", "-config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    (db, replica, root)
}

fn snapshot_file(replica: &Path) -> PathBuf {
    let snaps: Vec<_> = replica_objects(replica)
        .into_iter()
        .filter(|o| o.offset.is_none())
        .collect();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    snaps[0].path.clone()
}

#[test]
fn damaged_snapshot_is_caught_and_output_never_exists() {
    use std::io::{Read, Write};
    let d = tempfile::tempdir().unwrap();
    let (db, replica, root) = snapshot_only_replica(d.path());
    let url = file_url(&replica);
    let out = d.path().join("restored.db");
    // The intact replica restores, checked (full) and equal to the source.
    restore_walship(&["-integrity-check", "full", &url], &out);
    assert_eq!(integrity(&out), "ok");
    assert_eq!(digest(&out), digest(&db));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(d.path().join(format!("restored.db{suffix}")));
    }

    // Decompress the snapshot, break the b-tree root page of `t`, recompress it as a valid LZ4
    // frame, and put it back in place.
    let snap = snapshot_file(&replica);
    let mut image = Vec::new();
    lz4_flex::frame::FrameDecoder::new(std::fs::File::open(&snap).unwrap())
        .read_to_end(&mut image)
        .unwrap();
    let page_size = u16::from_be_bytes([image[16], image[17]]) as usize;
    let page_size = if page_size == 1 { 65536 } else { page_size };
    let at = (root as usize - 1) * page_size;
    assert!(
        matches!(image[at], 0x05 | 0x0d),
        "page {root} is a table b-tree page"
    );
    // Keep the page type, scramble the cell pointers and content: a b-tree page that no longer
    // describes its rows.
    for (i, b) in image[at + 12..at + page_size].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ 0xa5;
    }
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
    enc.write_all(&image).unwrap();
    std::fs::write(&snap, enc.finish().unwrap()).unwrap();

    let o = walship(&[
        "restore",
        "-integrity-check",
        "full",
        "-o",
        out.to_str().unwrap(),
        &url,
    ]);
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(msg.contains("integrity check"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
    assert!(!out.exists(), "the output path does not exist");
    let left: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("restored.db"))
        .collect();
    assert!(left.is_empty(), "staging files left: {left:?}");
    // The default (quick) catches it too; `none` restores it as v0.3.13 would.
    let o = walship(&["restore", "-o", out.to_str().unwrap(), &url]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!out.exists());
    let o = walship(&[
        "restore",
        "-integrity-check",
        "none",
        "-o",
        out.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out.exists());
    let o = walship(&["restore", "-integrity-check", "fast", &url]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("none, quick or full"), "{}", text(&o));
}

/// `replicate` with extra environment variables, output in a log file.
fn spawn_env(args: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    let mut c = std::process::Command::new(walship_bin());
    c.args(args)
        .env_remove("WALSHIP_CONFIG")
        .env_remove("LITESTREAM_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    Proc {
        child: Some(c.spawn().unwrap()),
        log: log.to_path_buf(),
    }
}

/// A replica section nobody answers (connection refused at once).
fn unreachable_section() -> String {
    let t = S3Target {
        endpoint: "http://127.0.0.1:1".into(),
        access_key: "k".into(),
        secret_key: "s".into(),
        region: "us-east-1".into(),
    };
    s3_section("down", &t.endpoint, "b", &t, &t.secret_key)
}

fn file_section(dir: &Path) -> String {
    format!(
        "      - name: file\n        type: file\n        path: {}\n        sync-interval: 100ms\n",
        dir.display()
    )
}

#[test]
fn sd_notify_ready_while_the_replica_is_unreachable() {
    use std::os::unix::net::UnixDatagram;
    let d = tempfile::tempdir().unwrap();
    let db = seeded_db(d.path(), 20);
    let sock_path = d.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cfg = config_with(d.path(), "n.yml", &db, &unreachable_section());
    let mut p = spawn_env(
        &["replicate", "-config", cfg.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
        &d.path().join("n.log"),
    );
    let mut msgs: Vec<String> = Vec::new();
    let mut recv_until = |what: &str, timeout: Duration, f: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = f(&m);
                msgs.push(m);
                if hit {
                    return;
                }
            }
        }
        panic!("no {what} within {timeout:?}; got {msgs:?}");
    };
    recv_until("READY=1", Duration::from_secs(10), &|m| {
        m.lines().any(|l| l == "READY=1")
    });
    recv_until(
        "STATUS= naming the failure",
        Duration::from_secs(40),
        &|m| {
            m.lines()
                .any(|l| l.starts_with("STATUS=") && l.contains("1 failing") && l.contains("down"))
        },
    );
    recv_until("WATCHDOG=1", Duration::from_secs(5), &|m| {
        m.lines().any(|l| l == "WATCHDOG=1")
    });
    let log = p.log_text();
    p.stop();
    assert!(!log.contains("panicked"), "{log}");
    // READY=1 came first, before any upload could have succeeded.
    assert!(msgs[0].contains("READY=1"), "{msgs:?}");
}

/// A tiny HTTP server counting GET requests (the heartbeat receiver).
fn ping_server() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ping/0123456789abcdef", l.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 2048];
            let n = c.read(&mut buf).unwrap_or(0);
            if buf[..n].starts_with(b"GET /ping/0123456789abcdef") {
                h.lock().unwrap().push(std::time::Instant::now());
            }
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
        }
    });
    (url, hits)
}

#[test]
fn heartbeat_while_healthy_and_idle_and_none_while_unreachable() {
    let d = tempfile::tempdir().unwrap();
    let db = seeded_db(d.path(), 20);
    let (url, hits) = ping_server();
    let env = [("WALSHIP_HEARTBEAT_MIN_INTERVAL", "1s")];
    let head = format!("heartbeat-url: {url}\nheartbeat-interval: 1s\n");

    // Healthy: pings while the writer runs and while the database is idle.
    let cfg = d.path().join("h.yml");
    std::fs::write(
        &cfg,
        format!(
            "{head}dbs:\n  - path: {}\n    replicas:\n{}",
            db.display(),
            file_section(&d.path().join("replica"))
        ),
    )
    .unwrap();
    let mut p = spawn_env(
        &["replicate", "-config", cfg.to_str().unwrap()],
        &env,
        &d.path().join("h.log"),
    );
    let mut w = Writer::new(&db, 21);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        w.tx();
        std::thread::sleep(Duration::from_millis(20));
    }
    let busy = hits.lock().unwrap().len();
    let idle_from = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(3500));
    let idle = hits
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t > idle_from)
        .count();
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    assert!(
        busy >= 2,
        "pings while writing: {busy}; log: {}",
        p.log_text()
    );
    assert!(idle >= 2, "pings while idle: {idle}; log: {}", p.log_text());
    let log = p.log_text();
    assert!(
        !log.contains("0123456789abcdef"),
        "the ping id is not logged: {log}"
    );

    // Unreachable replica: no ping at all.
    drop(w);
    let before = hits.lock().unwrap().len();
    let cfg2 = d.path().join("u.yml");
    let db2 = seeded_db(&d.path().join("second").tap_mkdir(), 5);
    std::fs::write(
        &cfg2,
        format!(
            "{head}dbs:\n  - path: {}\n    replicas:\n{}",
            db2.display(),
            unreachable_section()
        ),
    )
    .unwrap();
    let mut p = spawn_env(
        &["replicate", "-config", cfg2.to_str().unwrap()],
        &env,
        &d.path().join("u.log"),
    );
    std::thread::sleep(Duration::from_secs(6));
    let log = p.log_text();
    p.stop();
    assert_eq!(
        hits.lock().unwrap().len(),
        before,
        "no heartbeat while the replica is unreachable: {log}"
    );
    assert!(log.contains("heartbeat skipped"), "{log}");

    // Regression: a configured database that does not exist (a typo in the path) is not backed
    // up, so no ping, though its replica has nothing to fail on.
    let before = hits.lock().unwrap().len();
    let cfg3 = d.path().join("m.yml");
    std::fs::write(
        &cfg3,
        format!(
            "{head}dbs:\n  - path: {}\n    replicas:\n{}",
            d.path().join("no-such-dir").join("typo.db").display(),
            file_section(&d.path().join("replica-missing"))
        ),
    )
    .unwrap();
    let mut p = spawn_env(
        &["replicate", "-config", cfg3.to_str().unwrap()],
        &env,
        &d.path().join("m.log"),
    );
    std::thread::sleep(Duration::from_secs(5));
    let log = p.log_text();
    p.stop();
    assert_eq!(
        hits.lock().unwrap().len(),
        before,
        "no heartbeat for a database that does not exist: {log}"
    );
}

/// Regression: with two replicas, one shipping and one unreachable since start, the shadow WAL
/// of past indexes stays until the unreachable one has shipped it (it was deleted as soon as the
/// reachable replica had, forcing the other into a snapshot and a hole for point-in-time restores).
#[test]
fn shadow_wal_kept_for_a_replica_that_never_shipped() {
    let d = tempfile::tempdir().unwrap();
    let db = seeded_db(d.path(), 20);
    let cfg = d.path().join("s.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    min-checkpoint-page-count: 50\n    replicas:\n{}{}",
            db.display(),
            file_section(&d.path().join("replica")),
            unreachable_section()
        ),
    )
    .unwrap();
    let mut p = spawn_env(
        &["replicate", "-config", cfg.to_str().unwrap()],
        &[("WALSHIP_RETRY_MAX_DELAY", "100ms")],
        &d.path().join("s.log"),
    );
    let mut w = Writer::new(&db, 31);
    let wal_dir = |d: &Path| -> Vec<String> {
        let meta = d.join(".app.db-litestream").join("generations");
        let Ok(gens) = std::fs::read_dir(&meta) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for g in gens.flatten() {
            if let Ok(files) = std::fs::read_dir(g.path().join("wal")) {
                out.extend(
                    files
                        .flatten()
                        .map(|f| f.file_name().to_string_lossy().into_owned()),
                );
            }
        }
        out.sort();
        out
    };
    // Write until walship has checkpointed past index 2 (the reachable replica ships them all).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !wal_dir(d.path()).iter().any(|f| f.starts_with("00000003")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no WAL index 3: {:?}\n{}",
            wal_dir(d.path()),
            p.log_text()
        );
        for _ in 0..50 {
            w.tx();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let shadows = wal_dir(d.path());
    p.stop();
    assert!(
        shadows.iter().any(|f| f.starts_with("00000000")),
        "shadow WAL index 0 was deleted although replica 'down' never shipped it: {shadows:?}"
    );
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}
impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// The value of one sample line (`name{labels} value`), if present.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_are_served_and_move_during_replication() {
    let d = tempfile::tempdir().unwrap();
    let db = seeded_db(d.path(), 20);
    let addr = format!("127.0.0.1:{}", walship_integration::sftp::free_port());
    let cfg = d.path().join("m.yml");
    std::fs::write(
        &cfg,
        format!(
            "addr: {addr}\ndbs:\n  - path: {}\n    monitor-interval: 100ms\n    replicas:\n{}",
            db.display(),
            file_section(&d.path().join("replica"))
        ),
    )
    .unwrap();
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &d.path().join("m.log"),
    );
    let dbl = format!("db=\"{}\"", db.display());
    let mut w = Writer::new(&db, 31);
    let mut first = String::new();
    wait_until(Duration::from_secs(10), "first scrape with a PUT", || {
        if std::net::TcpStream::connect(&addr).is_err() {
            return false;
        }
        first = scrape(&addr, "/metrics");
        sample(
            &first,
            "litestream_replica_operation_total{replica_type=\"file\",operation=\"PUT\"}",
        )
        .is_some()
    });
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    for _ in 0..200 {
        w.tx();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let second = scrape(&addr, "/metrics");
    let get = |t: &str, name: &str| sample(t, name).unwrap_or_else(|| panic!("no {name} in {t}"));
    let sync = format!("litestream_sync_count{{{dbl}}}");
    let put = "litestream_replica_operation_total{replica_type=\"file\",operation=\"PUT\"}";
    let wal_bytes = format!("litestream_total_wal_bytes{{{dbl}}}");
    let shipped = format!("litestream_replica_wal_bytes{{{dbl},name=\"file\"}}");
    for name in [sync.as_str(), put, wal_bytes.as_str(), shipped.as_str()] {
        assert!(
            get(&second, name) > get(&first, name),
            "{name} did not move: {} -> {}",
            get(&first, name),
            get(&second, name)
        );
    }
    for name in [
        format!("litestream_db_size{{{dbl}}}"),
        format!("litestream_wal_size{{{dbl}}}"),
        format!("litestream_shadow_wal_index{{{dbl}}}"),
        format!("litestream_replica_wal_index{{{dbl},name=\"file\"}}"),
        format!("litestream_replica_wal_offset{{{dbl},name=\"file\"}}"),
        format!("walship_replica_lag_seconds{{{dbl},name=\"file\"}}"),
        format!("walship_replica_last_sync_timestamp_seconds{{{dbl},name=\"file\"}}"),
    ] {
        get(&second, &name);
    }
    assert!(get(&second, &format!("litestream_db_size{{{dbl}}}")) > 0.0);
    // Caught up once the writer stopped: lag 0, last sync recent.
    wait_until(Duration::from_secs(10), "lag 0", || {
        let t = scrape(&addr, "/metrics");
        sample(
            &t,
            &format!("walship_replica_lag_seconds{{{dbl},name=\"file\"}}"),
        ) == Some(0.0)
            && sample(
                &t,
                &format!("walship_replica_lag_bytes{{{dbl},name=\"file\"}}"),
            ) == Some(0.0)
    });
    // Nothing but /metrics: no pprof.
    let pprof = scrape(&addr, "/debug/pprof/");
    assert!(pprof.starts_with("HTTP/1.1 404"), "{pprof}");
    assert_eq!(p.stop(), 0, "{}", p.log_text());
}

#[test]
fn metrics_count_errors_by_replica_and_operation() {
    let d = tempfile::tempdir().unwrap();
    let db = seeded_db(d.path(), 5);
    let addr = format!("127.0.0.1:{}", walship_integration::sftp::free_port());
    let cfg = d.path().join("e.yml");
    std::fs::write(
        &cfg,
        format!(
            "addr: {addr}\ndbs:\n  - path: {}\n    replicas:\n{}",
            db.display(),
            unreachable_section()
        ),
    )
    .unwrap();
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &d.path().join("e.log"),
    );
    let name = format!(
        "walship_replica_errors_total{{db=\"{}\",name=\"down\",operation=\"LIST\"}}",
        db.display()
    );
    wait_until(Duration::from_secs(40), "an error counted", || {
        std::net::TcpStream::connect(&addr).is_ok()
            && sample(&scrape(&addr, "/metrics"), &name).is_some_and(|v| v >= 1.0)
    });
    p.stop();
    // A busy addr fails replicate at start with a clear error.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = l.local_addr().unwrap().to_string();
    std::fs::write(
        &cfg,
        format!(
            "addr: {busy}\ndbs:\n  - path: {}\n    replicas:\n{}",
            db.display(),
            file_section(&d.path().join("r"))
        ),
    )
    .unwrap();
    let o = walship(&["replicate", "-config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("cannot serve metrics on addr"),
        "{}",
        text(&o)
    );
}

/// `-dry-run` against sshd: ok with the server's key in known_hosts; an sshd whose host key is
/// unknown to the given known_hosts, or differs from the one recorded, fails on a line that
/// names the host key; the replica directory holds no probe afterwards.
#[test]
fn dry_run_sftp_names_the_host_key_cause() {
    use walship_integration::sftp::{PrivateSshd, SftpTarget};
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let dir = t.new_dir("dry-run");
    let good = t
        .yaml(&dir)
        .replacen("- type: sftp", "- name: good\n        type: sftp", 1);
    let cfg = config_with(d.path(), "good.yml", &db, &good);
    let o = walship(&["replicate", "-dry-run", "-config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(line_of(&text(&o), "good").trim_end().ends_with("ok"));

    // A second server with its own host key: unknown to an empty known_hosts, and "changed"
    // where known_hosts records the main server's key for its address.
    let sshd = PrivateSshd::start(&PathBuf::from(format!("{}.pub", t.key.display())), false);
    let empty = d.path().join("known_hosts_empty");
    std::fs::write(&empty, "").unwrap();
    let main_key = std::fs::read_to_string(&t.known_hosts)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ");
    let changed = d.path().join("known_hosts_changed");
    std::fs::write(&changed, format!("[127.0.0.1]:{} {main_key}\n", sshd.port)).unwrap();
    let other = |name: &str, kh: &Path| {
        format!(
            "      - name: {name}\n        type: sftp\n        host: 127.0.0.1:{}\n        user: {}\n        key-path: {}\n        known-hosts-path: {}\n        path: {}\n",
            sshd.port,
            t.user,
            t.key.display(),
            kh.display(),
            dir.display()
        )
    };
    let replicas = format!(
        "{good}{}{}",
        other("unknown", &empty),
        other("changed", &changed)
    );
    let cfg = config_with(d.path(), "bad.yml", &db, &replicas);
    let o = walship(&["replicate", "-dry-run", "-config", cfg.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(line_of(&out, "good").trim_end().ends_with("ok"), "{out}");
    for name in ["unknown", "changed"] {
        let l = line_of(&out, name);
        assert!(l.contains("FAILED host key"), "{l}");
    }
    assert!(
        line_of(&out, "unknown").contains("unknown host key"),
        "{out}"
    );
    assert!(
        line_of(&out, "changed").contains("HOST KEY CHANGED"),
        "{out}"
    );
    // Nothing left behind by the probes (the directory may not even exist).
    assert!(files(&dir).is_empty(), "{:?}", files(&dir));
}

/// Regression: the metrics listener accepted every connection and kept an idle
/// one for 10 s, so 1,100 idle connections to `addr` held 1,100 descriptors that replication
/// needed. Now at most 32 are served at once (the rest wait in the kernel's backlog), an idle one
/// is closed after 2 s, and scrapes work again as soon as the flood ends.
#[test]
fn idle_connections_to_the_metrics_listener_are_bounded() {
    use std::io::Read;
    let d = tempfile::tempdir().unwrap();
    let db = seeded_db(d.path(), 5);
    let addr = format!("127.0.0.1:{}", walship_integration::sftp::free_port());
    let cfg = d.path().join("m.yml");
    std::fs::write(
        &cfg,
        format!(
            "addr: {addr}\ndbs:\n  - path: {}\n    replicas:\n{}",
            db.display(),
            file_section(&d.path().join("replica"))
        ),
    )
    .unwrap();
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &d.path().join("m.log"),
    );
    wait_until(Duration::from_secs(10), "the metrics listener", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let sockets = || {
        std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
            })
            .count()
    };
    let before = sockets();
    let idle: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let during = sockets();
    assert!(
        during <= before + 32,
        "{during} sockets with 300 idle connections (before: {before})"
    );
    // The first ones accepted are closed by walship within its request timeout.
    let mut first = idle[0].try_clone().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = std::time::Instant::now();
    let mut b = [0u8; 16];
    assert_eq!(first.read(&mut b).unwrap_or(1), 0, "not closed by walship");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        t.elapsed()
    );
    drop(first);
    drop(idle);
    wait_until(Duration::from_secs(10), "a scrape after the flood", || {
        scrape(&addr, "/metrics").contains("litestream_db_size")
    });
    assert_eq!(p.stop(), 0, "{}", p.log_text());
}

/// Regression: the heartbeat to an endpoint behind a private CA fails unless
/// `AWS_CA_BUNDLE` (the variable S3 users already set for that CA) is honoured.
#[test]
fn heartbeat_trusts_a_private_ca_from_aws_ca_bundle() {
    let d = tempfile::tempdir().unwrap();
    let db = seeded_db(d.path(), 5);
    let (plain, hits) = ping_server();
    let upstream: std::net::SocketAddr = plain
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let front = walship_integration::tls::TlsFront::start_with_private_ca(upstream, d.path());
    let url = format!(
        "https://localhost:{}/ping/0123456789abcdef",
        front.addr.port()
    );
    let cfg = d.path().join("h.yml");
    std::fs::write(
        &cfg,
        format!(
            "heartbeat-url: {url}\nheartbeat-interval: 1s\ndbs:\n  - path: {}\n    replicas:\n{}",
            db.display(),
            file_section(&d.path().join("replica"))
        ),
    )
    .unwrap();
    let ca = d.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    for (env, want_hits) in [(None, false), (Some(ca), true)] {
        let before = hits.lock().unwrap().len();
        let mut vars = vec![("WALSHIP_HEARTBEAT_MIN_INTERVAL", "1s")];
        if let Some(ca) = env {
            vars.push(("AWS_CA_BUNDLE", ca));
        }
        let mut p = spawn_env(
            &["replicate", "-config", cfg.to_str().unwrap()],
            &vars,
            &d.path().join("h.log"),
        );
        std::thread::sleep(Duration::from_millis(3500));
        assert_eq!(p.stop(), 0, "{}", p.log_text());
        let got = hits.lock().unwrap().len() - before;
        assert_eq!(
            got > 0,
            want_hits,
            "{got} pings with AWS_CA_BUNDLE={env:?}:\n{}",
            p.log_text()
        );
    }
}

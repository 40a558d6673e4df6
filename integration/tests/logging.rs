//! `logging.level`, `logging.type` and `logging.stderr` (README "Configuration") through the binary, and
//! every log line about a replica naming the database and the replica, including the retry
//! layer's "transient replica error, retrying".

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use walship_integration::*;

/// `replicate -config cfg` with stdout and stderr in separate files.
fn spawn(cfg: &Path, out: &Path, err: &Path) -> Child {
    Command::new(walship_bin())
        .args(["replicate", "-config", cfg.to_str().unwrap()])
        .env_remove("WALSHIP_CONFIG")
        .env_remove("LITESTREAM_CONFIG")
        .env_remove("WALSHIP_LOG")
        .env_remove("NOTIFY_SOCKET")
        // Retries come quickly, so a few happen within the test.
        .env("WALSHIP_RETRY_MAX_DELAY", "200ms")
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn walship")
}

/// SIGTERM, then the exit code: 1 here, since the unreachable replica's final sync fails (a
/// stop that leaves a replica behind must say so to systemd), and never a signal death.
fn stop(mut c: Child) {
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let status = c.wait().expect("wait for walship");
    assert_eq!(
        status.code(),
        Some(FINAL_SYNC_FAILED),
        "exit status after SIGTERM with an unreachable replica: {status:?}"
    );
}

const FINAL_SYNC_FAILED: i32 = 1;

/// A database with an unreachable S3 replica (connection refused: transient, so retried) and a
/// file replica.
fn setup(d: &Path, logging: &str) -> std::path::PathBuf {
    let db = d.join("app.db");
    let mut w = Writer::new(&db, 31);
    for _ in 0..10 {
        w.tx();
    }
    let cfg = d.join("litestream.yml");
    std::fs::write(
        &cfg,
        format!(
            "{logging}dbs:\n  - path: {}\n    replicas:\n      - name: down\n        type: s3\n        bucket: b\n        endpoint: http://127.0.0.1:1\n        region: us-east-1\n        force-path-style: true\n        access-key-id: k\n        secret-access-key: s\n        sync-interval: 100ms\n      - name: local\n        type: file\n        path: {}\n",
            db.display(),
            d.join("replica").display()
        ),
    )
    .unwrap();
    cfg
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn json_lines_name_db_and_replica() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), "logging:\n  type: json\n");
    let db = d.path().join("app.db").display().to_string();
    let (out, err) = (d.path().join("out.log"), d.path().join("err.log"));
    let c = spawn(&cfg, &out, &err);
    wait_until(Duration::from_secs(30), "a retry warning", || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("transient replica error, retrying")
    });
    stop(c);
    // Default: logs on stdout (v0.3.13), every line a JSON object.
    let lines = json_lines(&std::fs::read_to_string(&out).unwrap());
    let retry = lines
        .iter()
        .find(|l| l["message"] == "transient replica error, retrying")
        .expect("retry line");
    assert_eq!(retry["db"], db.as_str(), "{retry}");
    assert_eq!(retry["replica"], "down", "{retry}");
    assert_eq!(retry["level"], "WARN", "{retry}");
    assert!(retry["operation"].is_string(), "{retry}");
    for name in ["down", "local"] {
        let l = lines
            .iter()
            .find(|l| l["message"] == "replicating to" && l["replica"] == name)
            .unwrap_or_else(|| panic!("no 'replicating to' line for {name}: {lines:?}"));
        assert_eq!(l["db"], db.as_str(), "{l}");
    }
    // Every line that names a replica also names the database.
    for l in &lines {
        if l.get("replica").is_some() {
            assert!(l.get("db").is_some(), "replica without db: {l}");
        }
    }
}

#[test]
fn level_and_stderr() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), "logging:\n  level: warn\n  stderr: true\n");
    let (out, err) = (d.path().join("out.log"), d.path().join("err.log"));
    let c = spawn(&cfg, &out, &err);
    wait_until(Duration::from_secs(30), "a retry warning", || {
        std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("transient replica error, retrying")
    });
    stop(c);
    let text = std::fs::read_to_string(&err).unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "",
        "stdout stays empty"
    );
    assert!(!text.contains(" INFO "), "level warn hides info: {text}");
    let l = text
        .lines()
        .find(|l| l.contains("transient replica error, retrying"))
        .unwrap();
    // Text lines carry the fields as key=value, v0.3.13's shape.
    assert!(
        l.contains(&format!("db={}", d.path().join("app.db").display()))
            && l.contains("replica=down"),
        "{l}"
    );
}

//! `walship replicas` end to end: lag read from the real WAL whether or not `replicate` runs,
//! `-json`, S3 targets without secrets, and nothing written by looking.

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use walship_integration::s3::S3Target;
use walship_integration::*;

fn replicas_json(cfg: &Path) -> Vec<Value> {
    let o = walship(&["replicas", "-json", "-config", cfg.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    match serde_json::from_str(&out) {
        Ok(Value::Array(v)) => v,
        other => panic!("replicas -json is not a JSON array: {other:?}\n{out}"),
    }
}

fn lag(row: &Value) -> (u64, f64) {
    (
        row["lag_bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no lag_bytes: {row}")),
        row["lag_seconds"]
            .as_f64()
            .unwrap_or_else(|| panic!("no lag_seconds: {row}")),
    )
}

/// `walship replicas` shows the lag: with the writer's `wal_autocheckpoint=0`, the lag grows while
/// `replicate` is stopped and the writer runs, and is 0 once `replicate` runs again and the writer
/// has stopped. Looking at it writes nothing and does not stop `replicate` from starting.
#[test]
fn lag_grows_while_stopped_and_returns_to_zero() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let mut w = Writer::new(&db, 21);
    w.conn.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    for _ in 0..20 {
        w.tx();
    }
    let replica = d.path().join("replica");
    let cfg = write_config(d.path(), &db, &replica, "", "");
    let start = || {
        Proc::spawn(
            &walship_bin(),
            &["replicate", "-config", cfg.to_str().unwrap()],
            &d.path().join("replicate.log"),
        )
    };

    let mut p = start();
    wait_until(Duration::from_secs(30), "replica caught up", || {
        let r = replicas_json(&cfg);
        r[0]["status"] == "ok" && r[0]["lag_bytes"] == 0
    });
    let r = replicas_json(&cfg);
    assert_eq!(r[0]["replicating"], true, "{r:?}");
    let generation = r[0]["generation"].as_str().unwrap().to_string();
    assert_eq!(p.stop(), 0, "{}", p.log_text());

    // replicate stopped, the writer runs: the lag grows with every batch.
    let mut last = (0u64, 0f64);
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(1100));
        for _ in 0..30 {
            w.tx();
        }
        let before = files(d.path());
        let r = replicas_json(&cfg);
        assert_eq!(files(d.path()), before, "replicas wrote something");
        let row = &r[0];
        assert_eq!(row["replicating"], false, "{row}");
        assert_eq!(row["status"], "behind", "{row}");
        assert_eq!(row["generation"], generation.as_str(), "{row}");
        let now = lag(row);
        assert!(
            now.0 > last.0,
            "round {round}: lag bytes {now:?} after {last:?}"
        );
        assert!(
            now.1 > last.1,
            "round {round}: lag seconds {now:?} after {last:?}"
        );
        // The local position is the real WAL's committed end, beyond the replica's.
        assert_eq!(
            row["local_position"]["offset"].as_u64().unwrap(),
            row["replica_position"]["offset"].as_u64().unwrap() + now.0,
            "{row}"
        );
        last = now;
    }
    // The table form says the same.
    let o = walship(&["replicas", "-config", cfg.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.starts_with("db "), "{table}");
    assert!(
        table.contains(&last.0.to_string()) && table.contains("behind"),
        "{table}"
    );

    // replicate again, the writer stopped (its connection stays open, as an idle application's).
    let mut p = start();
    wait_until(Duration::from_secs(30), "lag back to 0", || {
        let r = replicas_json(&cfg);
        r[0]["status"] == "ok" && r[0]["lag_bytes"] == 0 && r[0]["lag_seconds"] == 0.0
    });
    let r = replicas_json(&cfg);
    assert_eq!(r[0]["generation"], generation.as_str(), "same generation");
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    let out = d.path().join("out.db");
    restore_walship(&[&file_url(&replica)], &out);
    assert_eq!(integrity(&out), "ok");
    assert_eq!(digest(&out), digest(&db));
}

/// A WAL restart walship did not see (the application checkpoints with TRUNCATE and writes
/// again while `replicate` is stopped) shows as a pending new generation.
#[test]
fn unseen_wal_restart_says_new_generation_pending() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let mut w = Writer::new(&db, 22);
    w.conn.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    for _ in 0..20 {
        w.tx();
    }
    let replica = d.path().join("replica");
    let cfg = write_config(d.path(), &db, &replica, "", "");
    let o = walship(&["replicate", "-once", "-config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(replicas_json(&cfg)[0]["status"], "ok");
    w.checkpoint("TRUNCATE");
    for _ in 0..5 {
        w.tx();
    }
    let r = replicas_json(&cfg);
    let status = r[0]["status"].as_str().unwrap();
    assert!(
        status.starts_with("new generation pending"),
        "{status}: {r:?}"
    );
    assert_eq!(r[0]["local_position"], Value::Null, "{r:?}");
}

#[test]
fn s3_replica_target_without_secrets() {
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let bucket = block_on(t.new_bucket("replicas"));
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let mut w = Writer::new(&db, 23);
    w.conn.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    for _ in 0..30 {
        w.tx();
    }
    let cfg = d.path().join("s3.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - name: spaces\n        type: s3\n        bucket: {bucket}\n        path: backups/app\n        endpoint: {}\n        region: {}\n        force-path-style: true\n        access-key-id: {}\n        secret-access-key: {}\n",
            db.display(),
            t.endpoint,
            t.region,
            t.access_key,
            t.secret_key
        ),
    )
    .unwrap();
    // Before any replication: no local generation, nothing on the replica, exit 0.
    let r = replicas_json(&cfg);
    assert_eq!(r[0]["replica_position"], Value::Null, "{r:?}");
    let o = walship(&["replicate", "-once", "-config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    for _ in 0..10 {
        w.tx();
    }
    let o = walship(&["replicas", "-json", "-config", cfg.to_str().unwrap()]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!all.contains(&t.secret_key), "secret in output: {all}");
    let r = replicas_json(&cfg);
    assert_eq!(r.len(), 1, "{r:?}");
    let row = &r[0];
    assert_eq!(row["name"], "spaces");
    assert_eq!(row["type"], "s3");
    let target = row["target"].as_str().unwrap();
    assert!(
        target.starts_with(&format!("s3://{bucket}/backups/app")),
        "{target}"
    );
    assert_eq!(row["status"], "behind", "{row}");
    assert!(lag(row).0 > 0, "{row}");
    assert!(row["newest_snapshot"].is_string(), "{row}");
    assert!(row["newest_segment"].is_string(), "{row}");
    let o = walship(&["replicate", "-once", "-config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let r = replicas_json(&cfg);
    assert_eq!(r[0]["status"], "ok", "{r:?}");
    assert_eq!(lag(&r[0]), (0, 0.0));
    // The restore budget: the snapshot and the segments after it, as the listing holds them.
    let keys = block_on(t.keys(&bucket, "backups/app/generations/"));
    let segments = keys.iter().filter(|k| k.contains("/wal/")).count() as u64;
    let snapshots = keys.iter().filter(|k| k.contains("/snapshots/")).count();
    assert_eq!(snapshots, 1, "{keys:?}");
    assert_eq!(r[0]["restore_segments"].as_u64(), Some(segments), "{r:?}");
    assert_eq!(
        r[0]["restore_objects"].as_u64(),
        Some(segments + 1),
        "{r:?}"
    );
    assert!(
        r[0]["restore_bytes"].as_u64().is_some_and(|b| b > 0),
        "{r:?}"
    );

    // An unreachable replica is a row with the error and exit 1, never an empty replica.
    let bad = d.path().join("bad.yml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&t.endpoint, "http://127.0.0.1:1");
    std::fs::write(&bad, text).unwrap();
    let o = walship(&["replicas", "-config", bad.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("error:"), "{out}");
}

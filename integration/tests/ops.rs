//! Operations (issue 7): `replicate -dry-run` / `check`, `replicate -once`,
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
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(p.stop(), 0, "{}", p.log_text());
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

//! Point-in-time restores, and crash/resume with `kill -9`.

use std::time::{Duration, SystemTime};
use walship_integration::*;

fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let secs = d.as_secs() as i64;
    let dt = time_of(secs);
    format!("{dt}.{:09}Z", d.subsec_nanos())
}

/// UTC `YYYY-MM-DDTHH:MM:SS` from Unix seconds (civil-from-days).
fn time_of(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

#[test]
fn point_in_time_restores_are_exact() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let replica = d.path().join("replica");
    let url = format!("file://{}", replica.display());
    let cfg = write_config(
        d.path(),
        &db,
        &replica,
        "    monitor-interval: 100ms\n    min-checkpoint-page-count: 100\n",
        "",
    );
    let mut w = Writer::new(&db, 9);
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &d.path().join("w.log"),
    );
    let scratch = d.path().join("scratch.db");
    let mut moments = Vec::new();
    for round in 0..6 {
        for _ in 0..400 + round * 150 {
            w.tx();
        }
        let want = wait_caught_up(&url, &db, &scratch, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(50));
        let t = SystemTime::now();
        std::thread::sleep(Duration::from_millis(50));
        moments.push((rfc3339_nanos(t), want));
    }
    for _ in 0..300 {
        w.tx();
    }
    let last = digest(&db);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    let out = d.path().join("out.db");
    for (t, want) in &moments {
        restore_walship(&["-timestamp", t, &url], &out);
        assert_eq!(integrity(&out), "ok", "at {t}");
        assert_eq!(&digest(&out), want, "state at {t}");
    }
    // A moment after the last upload is the newest state.
    let later = rfc3339_nanos(SystemTime::now() + Duration::from_secs(3600));
    restore_walship(&["-timestamp", &later, &url], &out);
    assert_eq!(digest(&out), last);
}

fn snapshot_count(replica: &std::path::Path) -> usize {
    files(replica)
        .iter()
        .filter(|f| f.contains("/snapshots/"))
        .count()
}

/// `kill -9` at random moments during writes, then restart. Phase 1: the WAL is left alone during
/// the gap, so the generation must continue without a new snapshot. Phase 2: the application
/// restarts the WAL (TRUNCATE checkpoint) during the gap and writes update-only transactions, so
/// continuity is unprovable and a new generation must start, with a reason in the log.
#[test]
fn crash_and_resume() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let replica = d.path().join("replica");
    // walship never checkpoints here, so in phase 1 nothing restarts the WAL during a gap; in
    // phase 2 the application does (TRUNCATE). Checkpoint-driven restarts are covered by the
    // round-trip, saturation and handover tests.
    let cfg = write_config(
        d.path(),
        &db,
        &replica,
        "    monitor-interval: 100ms\n    min-checkpoint-page-count: 1000000\n    max-checkpoint-page-count: 0\n    checkpoint-interval: 1h\n",
        "",
    );
    let mut w = Writer::new(&db, 11);
    w.conn
        .execute_batch("PRAGMA wal_autocheckpoint = 0")
        .unwrap();
    let seed = std::process::id() as u64;
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let spawn = |i: usize| {
        Proc::spawn(
            &walship_bin(),
            &["replicate", "-config", cfg.to_str().unwrap()],
            &d.path().join(format!("w{i}.log")),
        )
    };
    let mut p = spawn(0);
    // Kills before the first snapshot would make "no new generation" meaningless.
    wait_until(Duration::from_secs(30), "initial snapshot", || {
        snapshot_count(&replica) > 0
    });
    let (mut continued, mut restarted) = (0, 0);
    for i in 1..=12 {
        let phase2 = i > 6;
        for _ in 0..(100 + next(400)) {
            w.tx();
        }
        std::thread::sleep(Duration::from_millis(next(400)));
        let h_kill = wal_header(&db);
        p.kill9();
        let gens_before = generations(&replica);
        let snaps_before = snapshot_count(&replica);
        // The gap: the application keeps writing.
        if phase2 {
            w.checkpoint("TRUNCATE");
            for k in 0..(20 + next(50)) {
                w.conn
                    .execute(
                        "UPDATE u SET n = n + 1 WHERE name = ?1",
                        [format!("n{}", k % 50)],
                    )
                    .unwrap();
            }
        }
        for _ in 0..(10 + next(100)) {
            w.tx();
        }
        let h_restart = wal_header(&db);
        p = spawn(i);
        // Wait for the restart's first sync to settle.
        wait_until(Duration::from_secs(30), "walship to initialise", || {
            let log = p.log_text();
            log.contains("continuing generation") || log.contains("new generation")
        });
        std::thread::sleep(Duration::from_millis(600));
        let log = p.log_text();
        if h_kill == h_restart {
            assert!(
                log.contains("continuing generation"),
                "restart {i}: same WAL header must continue; log:\n{log}"
            );
            assert!(!log.contains("new generation"), "restart {i}: {log}");
            assert_eq!(
                generations(&replica),
                gens_before,
                "restart {i}: no new generation directory"
            );
            assert_eq!(
                snapshot_count(&replica),
                snaps_before,
                "restart {i}: no snapshot because of the restart"
            );
            continued += 1;
        } else {
            assert!(
                log.contains("new generation") && log.contains("reason="),
                "restart {i}: changed WAL needs a new generation with a reason; log:\n{log}"
            );
            restarted += 1;
        }
    }
    assert!(
        continued >= 3 && restarted >= 3,
        "both phases exercised: continued {continued}, restarted {restarted}"
    );
    let want = digest(&db);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    let out = d.path().join("out.db");
    restore_walship(
        &["-config", cfg.to_str().unwrap(), db.to_str().unwrap()],
        &out,
    );
    assert_eq!(integrity(&out), "ok");
    assert_eq!(digest(&out), want);
}

//! Retention end to end: with `retention: 4s`, snapshots every 2 s and a check every second,
//! walship deletes old snapshots and the WAL indexes below the oldest kept snapshot, and a
//! point-in-time restore gives exactly the state recorded at any moment inside the retention
//! window, while a moment before the oldest retained snapshot is refused with a clear error.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use walship_integration::*;

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn restore_at(url: &str, t: SystemTime, out: &Path) -> std::process::Output {
    let _ = std::fs::remove_file(out);
    walship(&[
        "restore",
        "-o",
        out.to_str().unwrap(),
        "-timestamp",
        &rfc3339(t),
        url,
    ])
}

#[test]
fn retention_deletes_old_objects_and_point_in_time_restores_are_exact() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("app.db");
    let replica = dir.join("replica");
    let url = file_url(&replica);
    let cfg = write_config(
        dir,
        &db,
        &replica,
        "    min-checkpoint-page-count: 200\n",
        "        retention: 4s\n        retention-check-interval: 1s\n        snapshot-interval: 2s\n",
    );
    let mut w = Writer::new(&db, 7);
    for _ in 0..20 {
        w.tx();
    }
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &dir.join("walship.log"),
    );
    wait_until(Duration::from_secs(20), "the first snapshot", || {
        snapshot_count(&replica) > 0
    });

    // Bursts of writes; after each, pause, let the replica catch up, and record (T, digest).
    let scratch = dir.join("scratch.db");
    let mut samples: Vec<(SystemTime, String)> = Vec::new();
    let mut seen_snapshots = BTreeSet::new();
    let mut seen_wal_indexes = BTreeSet::new();
    let mut sample = |w: &mut Writer, burst: Duration| {
        let start = Instant::now();
        while start.elapsed() < burst {
            w.tx();
        }
        // Give the shipper one sync interval (100 ms) first, so the first restore attempt counts.
        std::thread::sleep(Duration::from_millis(150));
        let want = wait_caught_up(&url, &db, &scratch, Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(60));
        let t = SystemTime::now();
        std::thread::sleep(Duration::from_millis(60));
        samples.push((t, want));
        for o in replica_objects(&replica) {
            match o.offset {
                None => seen_snapshots.insert(o.path.clone()),
                Some(_) => seen_wal_indexes.insert((o.generation.clone(), o.index)),
            };
        }
    };
    let run = Instant::now();
    while run.elapsed() < Duration::from_secs(15) {
        sample(&mut w, Duration::from_millis(250));
    }
    // A snapshot of an index that already has one replaces it (names are per index), which moves
    // the start of the restorable window forward. So that several samples fall inside the window,
    // wait for the next snapshot and take a quick sample before the following one (2 s later).
    let newest = || {
        replica_objects(&replica)
            .iter()
            .filter(|o| o.offset.is_none())
            .map(|o| o.mtime)
            .max()
    };
    let last = newest();
    wait_until(
        Duration::from_secs(10),
        "the next scheduled snapshot",
        || newest() > last,
    );
    let after_snapshot = Instant::now();
    sample(&mut w, Duration::from_millis(50));
    let quick = after_snapshot.elapsed();
    // The last moment: a few more writes, then SIGTERM (the final sync ships them); the replica
    // is frozen from here on, so no later snapshot can move the window past this sample.
    for _ in 0..20 {
        w.tx();
    }
    let code = p.stop();
    assert_eq!(
        code,
        0,
        "walship did not exit 0 on SIGTERM; log:\n{}",
        p.log_text()
    );
    let want = wait_caught_up(&url, &db, &scratch, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(60));
    samples.push((SystemTime::now(), want));
    std::thread::sleep(Duration::from_millis(60));
    drop(w);

    let objects = replica_objects(&replica);
    let listing = || format!("{:#?}\nlog:\n{}", files(&replica), p.log_text());
    let gens = generations(&replica);
    assert_eq!(
        gens.len(),
        1,
        "one generation expected: {gens:?}\n{}",
        listing()
    );
    let snapshots: Vec<&ReplicaObject> = objects.iter().filter(|o| o.offset.is_none()).collect();
    let wal: Vec<&ReplicaObject> = objects.iter().filter(|o| o.offset.is_some()).collect();

    // Old snapshots are deleted: few remain, and snapshots seen earlier are gone.
    assert!(
        !snapshots.is_empty() && snapshots.len() <= 4,
        "expected 1..=4 snapshots after retention, found {}:\n{}",
        snapshots.len(),
        listing()
    );
    // (A snapshot of an index already holding one replaces it: names are per index.)
    let gone = seen_snapshots.iter().filter(|p| !p.exists()).count();
    assert!(
        gone >= 1,
        "expected retention to delete old snapshots; seen {:#?}, none deleted:\n{}",
        seen_snapshots,
        listing()
    );

    // WAL below the oldest kept snapshot's index is deleted, per generation; the kept index is complete.
    for g in &gens {
        let m = snapshots
            .iter()
            .filter(|s| &s.generation == g)
            .map(|s| s.index)
            .min()
            .expect("a snapshot per generation");
        for seg in wal.iter().filter(|s| &s.generation == g) {
            assert!(
                seg.index >= m,
                "WAL segment {} is below the oldest kept snapshot index {m:08x}:\n{}",
                seg.path.display(),
                listing()
            );
        }
        assert!(
            wal.iter()
                .any(|s| &s.generation == g && s.index == m && s.offset == Some(0)),
            "the initial segment of index {m:08x} (oldest kept snapshot) must be kept:\n{}",
            listing()
        );
        let deleted: Vec<u32> = seen_wal_indexes
            .iter()
            .filter(|(sg, i)| sg == g && *i < m)
            .map(|(_, i)| *i)
            .collect();
        assert!(
            !deleted.is_empty(),
            "expected WAL indexes below {m:08x} to have existed and been deleted (the WAL never restarted?):\n{}",
            listing()
        );
    }

    // Point-in-time restores.
    let oldest = snapshots.iter().map(|s| s.mtime).min().unwrap();
    let out = dir.join("pit.db");
    let mut inside = 0;
    for (i, (t, want)) in samples.iter().enumerate() {
        if *t < oldest {
            continue;
        }
        let o = restore_at(&url, *t, &out);
        assert!(
            o.status.success(),
            "restore -timestamp {} (sample {i}) failed: {}{}\n{}",
            rfc3339(*t),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            listing()
        );
        assert_eq!(integrity(&out), "ok", "sample {i} at {}", rfc3339(*t));
        assert_eq!(
            &digest(&out),
            want,
            "sample {i}: restore at {} differs from the state recorded then",
            rfc3339(*t)
        );
        inside += 1;
    }
    assert!(
        inside >= 2,
        "only {inside} samples inside the retention window (oldest snapshot {}; the sample after the last snapshot took {quick:?}):\n{}",
        rfc3339(oldest),
        listing()
    );

    // Before the oldest retained snapshot: a clear error, exit code 1, no output file.
    let before: Vec<SystemTime> = samples
        .iter()
        .map(|s| s.0)
        .filter(|t| *t < oldest)
        .collect();
    assert!(
        !before.is_empty(),
        "no sample before the oldest retained snapshot {}",
        rfc3339(oldest)
    );
    for t in [before[0], *before.last().unwrap()] {
        let o = restore_at(&url, t, &out);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(1),
            "restore -timestamp {} before the window: {:?}\n{stderr}",
            rfc3339(t),
            o.status
        );
        assert!(
            stderr.contains("oldest retained snapshot"),
            "unclear error for {}: {stderr}",
            rfc3339(t)
        );
        assert!(!out.exists(), "a failed restore left {}", out.display());
    }
    eprintln!(
        "retention: {} samples, {inside} inside the window, {} snapshots kept of {} seen, sample after the last snapshot in {quick:?}, in {:?}",
        samples.len(),
        snapshots.len(),
        seen_snapshots.len(),
        t0.elapsed()
    );
}

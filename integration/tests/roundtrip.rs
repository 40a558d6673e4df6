//! Round trip under load: a writer commits >= 20,000 mixed transactions (some with overflow
//! pages) and issues every checkpoint mode while `walship replicate` runs; after a clean stop the
//! restore passes integrity_check and has exactly the source's rows.

use std::time::{Duration, Instant};
use walship_integration::*;

#[test]
fn round_trip_under_load_with_app_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let replica = d.path().join("replica");
    let cfg = write_config(
        d.path(),
        &db,
        &replica,
        "    monitor-interval: 100ms\n    min-checkpoint-page-count: 200\n",
        "",
    );
    let mut w = Writer::new(&db, 42);
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &d.path().join("walship.log"),
    );
    let started = Instant::now();
    let modes = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"];
    let mut checkpoints = 0;
    // Per mode: (attempts, completed: not busy and every frame backfilled).
    let mut results: std::collections::BTreeMap<&str, (u32, u32)> = Default::default();
    fn attempt<'m>(
        results: &mut std::collections::BTreeMap<&'m str, (u32, u32)>,
        w: &Writer,
        mode: &'m str,
    ) {
        let (busy, log, done) = w.checkpoint(mode);
        let r = results.entry(mode).or_default();
        r.0 += 1;
        r.1 += u32::from(busy == 0 && log >= 0 && log == done);
    }
    while w.txs < 20_000 {
        w.tx();
        if w.txs.is_multiple_of(1500) {
            // FULL/RESTART/TRUNCATE wait out the busy timeout while walship holds its read
            // transaction: that is expected and must not lose anything.
            w.conn.busy_timeout(Duration::from_millis(200)).unwrap();
            attempt(&mut results, &w, modes[checkpoints % 4]);
            w.conn.busy_timeout(Duration::from_secs(10)).unwrap();
            checkpoints += 1;
        }
    }
    // Each mode must have completed at least once: attempts alone show nothing.
    // A mode still waiting gets more tries between commits; without a busy timeout, so that
    // walship's checkpoint (which moves its read transaction) gets the write lock in between.
    let deadline = Instant::now() + Duration::from_secs(60);
    for mode in modes {
        while results.get(mode).is_none_or(|r| r.1 == 0) && Instant::now() < deadline {
            for _ in 0..20 {
                w.tx();
            }
            std::thread::sleep(Duration::from_millis(20));
            w.conn.busy_timeout(Duration::ZERO).unwrap();
            attempt(&mut results, &w, mode);
            w.conn.busy_timeout(Duration::from_secs(10)).unwrap();
        }
    }
    eprintln!("application checkpoints (attempts, completed): {results:?}");
    for mode in modes {
        assert!(
            results.get(mode).is_some_and(|r| r.1 >= 1),
            "{mode} never completed: {results:?}"
        );
    }
    eprintln!("wrote {} tx in {:?}", w.txs, started.elapsed());
    let want = digest(&db);
    drop(w);
    std::thread::sleep(Duration::from_millis(300));
    let code = p.stop();
    assert_eq!(code, 0, "clean stop; log:\n{}", p.log_text());
    let log = p.log_text();
    assert!(!log.contains("ERROR"), "errors in walship log:\n{log}");
    let out = d.path().join("restored.db");
    restore_walship(
        &["-config", cfg.to_str().unwrap(), db.to_str().unwrap()],
        &out,
    );
    // No temp files beside the output (checked before anything opens the restored database).
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("restored.db") && n != "restored.db")
        .collect();
    assert!(leftovers.is_empty(), "restore left {leftovers:?}");
    assert_eq!(integrity(&out), "ok");
    assert_eq!(digest(&out), want);
    // Application checkpoints never force a new generation: walship proves every restart.
    let gens = generations(&replica);
    assert_eq!(
        gens.len(),
        1,
        "unexpected generations {gens:?}; log:\n{log}"
    );
    let wal_indexes: std::collections::BTreeSet<String> = files(&replica)
        .into_iter()
        .filter(|f| f.contains("/wal/"))
        .map(|f| f.rsplit('/').next().unwrap()[..8].to_string())
        .collect();
    eprintln!("generations {gens:?}, wal indexes {}", wal_indexes.len());
    assert!(
        wal_indexes.len() > 3,
        "checkpoints must have restarted the WAL several times: {wal_indexes:?}"
    );
}

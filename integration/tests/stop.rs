//! SIGTERM at any moment: `replicate` stopped at random points of a busy database's cycles
//! (writer running, or quiet for a moment), at the runbook's sync-intervals and the default
//! monitor-interval, exits 0 within seconds, and after a stop with the application quiet the
//! replica restores exactly what was committed. Two CI runs of earlier builds saw a `replicate`
//! that never exited after SIGTERM (every thread parked, a replica's final sync waiting), in a
//! test shaped like this one; this campaign keeps looking for it at the process level.
//! Runs: `WALSHIP_STOP_RUNS` (default 12; the note of the session that added it gives a longer
//! run's figures).

use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use walship_integration::*;

#[test]
fn sigterm_at_any_moment_of_a_busy_database_exits_promptly_and_loses_nothing() {
    let runs: u64 = std::env::var("WALSHIP_STOP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5709);
    let mut slowest = Duration::ZERO;
    for run in 0..runs {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("app.db");
        let replica = d.path().join("replica");
        let monitor = ["1s", "100ms"][run as usize % 2];
        let sync = ["1s", "10s", "100ms"][run as usize % 3];
        let cfg = d.path().join("litestream.yml");
        std::fs::write(
            &cfg,
            format!(
                "dbs:\n  - path: {}\n    monitor-interval: {monitor}\n    replicas:\n      - type: file\n        path: {}\n        sync-interval: {sync}\n",
                db.display(),
                replica.display()
            ),
        )
        .unwrap();
        drop(app_conn(&db));
        let mut p = Proc::spawn(
            &walship_bin(),
            &["replicate", "-config", cfg.to_str().unwrap()],
            &d.path().join("walship.log"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut w = Writer::new(&db, run);
                let modes = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"];
                while !stop.load(Ordering::SeqCst) {
                    w.tx();
                    if w.txs.is_multiple_of(300) {
                        w.conn.busy_timeout(Duration::from_millis(200)).unwrap();
                        w.checkpoint(modes[(w.txs / 300) as usize % 4]);
                        w.conn.busy_timeout(Duration::from_secs(10)).unwrap();
                    }
                }
                w.txs
            })
        };
        std::thread::sleep(Duration::from_millis(rng.random_range(800..4000)));
        let quiet = rng.random_bool(0.5);
        let mut writer = Some(writer);
        let mut want = None;
        if quiet {
            stop.store(true, Ordering::SeqCst);
            writer.take().unwrap().join().unwrap();
            want = Some(digest(&db));
            std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        }
        let started = Instant::now();
        let code = p.stop_within(Duration::from_secs(120));
        let took = started.elapsed();
        stop.store(true, Ordering::SeqCst);
        let txs = writer.take().map(|w| w.join().unwrap());
        let log = p.log_text();
        let what = format!(
            "run {run} (monitor-interval {monitor}, sync-interval {sync}, application {}, {txs:?} tx)",
            if quiet { "quiet" } else { "writing" }
        );
        assert_eq!(
            code,
            Some(0),
            "{what}: exit after SIGTERM; log:\n{log}\nthreads (if killed):\n{}",
            std::fs::read_to_string(d.path().join("walship.log.stacks")).unwrap_or_default()
        );
        assert!(
            took < Duration::from_secs(20),
            "{what}: {took:?} from SIGTERM to exit; log:\n{log}"
        );
        assert!(!log.contains("ERROR"), "{what}: errors in the log:\n{log}");
        slowest = slowest.max(took);
        let out = d.path().join("restored.db");
        restore_walship(
            &["-config", cfg.to_str().unwrap(), db.to_str().unwrap()],
            &out,
        );
        assert_eq!(integrity(&out), "ok", "{what}");
        if let Some(want) = want {
            assert_eq!(
                digest(&out),
                want,
                "{what}: every commit before SIGTERM restored"
            );
        }
    }
    eprintln!("{runs} stops, slowest {slowest:?} from SIGTERM to exit");
}

//! The S3 backend end to end: Litestream v0.3.13 over S3 in both directions, replication through
//! a fault-injecting proxy, a server stopped for 30 s, and memory with a 1 GiB database.
//!
//! The compatibility and memory tests use the suite's server (`TEST_S3_*`, a bucket each); the
//! tests that disturb their server start a private SeaweedFS (`TEST_WEED_BIN`) on ports of their
//! own, so no other test sees their faults.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use walship_integration::faults::{FaultPlan, FaultProxy};
use walship_integration::oracle::assert_no_wal_gap;
use walship_integration::s3::S3Target;
use walship_integration::weed::WeedServer;
use walship_integration::*;

/// One heavy test at a time on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Keeps Litestream from checkpointing (its checkpoint race is not under test here; see
/// tests/litestream_compat.rs).
const NO_LITESTREAM_CHECKPOINTS: &str =
    "    min-checkpoint-page-count: 1000000\n    max-checkpoint-page-count: 2000000\n    checkpoint-interval: 1h\n";

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn replicate(bin: &Path, cfg: &Path, log: &Path) -> Proc {
    Proc::spawn(bin, &["replicate", "-config", cfg.to_str().unwrap()], log)
}

/// walship against a disturbed server: backoff capped at 500 ms, so the test spends its time
/// on faults, not on waiting.
fn replicate_impatient(cfg: &Path, log: &Path) -> Proc {
    Proc::spawn_env(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        log,
        &[("WALSHIP_RETRY_MAX_DELAY", "500ms")],
    )
}

fn snapshot_keys(t: &S3Target, bucket: &str, path: &str) -> Vec<String> {
    block_on(t.keys(bucket, &format!("{path}/generations/")))
        .into_iter()
        .filter(|k| k.contains("/snapshots/"))
        .collect()
}

fn wait_snapshot(t: &S3Target, bucket: &str, path: &str, p: &mut Proc, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while snapshot_keys(t, bucket, path).is_empty() {
        if let Some(code) = p.wait_exit(Duration::from_millis(200)) {
            panic!("replicator exited with {code}:\n{}", p.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot in s3://{bucket}/{path} after {timeout:?}; log:\n{}",
            p.log_text()
        );
    }
}

fn check_restored(out: &Path, want: &str, how: &str) {
    assert_eq!(integrity(out), "ok", "{how}: integrity_check");
    assert_eq!(digest(out), want, "{how}: restored content differs");
}

fn restore_cfg(bin: &Path, cfg: &Path, db: &Path, out: &Path) -> std::process::Output {
    let _ = std::fs::remove_file(out);
    run(
        bin,
        &[
            "restore",
            "-config",
            cfg.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            db.to_str().unwrap(),
        ],
    )
}

fn assert_ok(o: &std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// WAL indexes present in the replica (from the segment names).
fn wal_indexes(t: &S3Target, bucket: &str, path: &str) -> std::collections::BTreeSet<String> {
    block_on(t.keys(bucket, &format!("{path}/generations/")))
        .into_iter()
        .filter_map(|k| {
            let name = k.rsplit('/').next()?.to_string();
            k.contains("/wal/")
                .then(|| name.split('_').next().unwrap_or("").to_string())
        })
        .collect()
}

struct Case {
    _tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    db: PathBuf,
}

/// A directory for one test; kept after the run when `KEEP_TEST_DIRS` is set (for post-mortems).
fn case() -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let tmp = match std::env::var_os("KEEP_TEST_DIRS") {
        Some(_) => {
            eprintln!("keeping {}", dir.display());
            let _ = tmp.keep();
            None
        }
        None => Some(tmp),
    };
    Case {
        db: dir.join("app.db"),
        dir,
        _tmp: tmp,
    }
}

/// walship replicates to S3 (restarting the WAL along the way); Litestream v0.3.13 restores it.
#[test]
fn litestream_restores_walship_s3_replica() {
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let Some(ls) = litestream_bin() else { return };
    let _g = serial();
    let c = case();
    let bucket = block_on(t.new_bucket("ls-restores"));
    let cfg = t.write_config(&c.dir, &c.db, &bucket, "dbs/app.db", "", "");
    let mut w = Writer::new(&c.db, 11);
    for _ in 0..20 {
        w.tx();
    }
    let mut p = replicate(&walship_bin(), &cfg, &c.dir.join("walship.log"));
    wait_snapshot(&t, &bucket, "dbs/app.db", &mut p, Duration::from_secs(30));
    for _ in 0..3000 {
        w.tx();
    }
    // Then at a modest rate until the WAL has restarted in the replica: a fixed burst alone can
    // fit between two syncs on a fast (or slow) machine and never restart it (seen in CI).
    let deadline = Instant::now() + Duration::from_secs(60);
    write_while(&mut w, || {
        wal_indexes(&t, &bucket, "dbs/app.db").len() >= 2 || Instant::now() > deadline
    });
    let want = digest(&c.db);
    assert_eq!(p.stop(), 0, "walship exit code; log:\n{}", p.log_text());
    drop(w);
    assert!(
        wal_indexes(&t, &bucket, "dbs/app.db").len() >= 2,
        "expected walship to restart the WAL at least once in 60 s: {:?}",
        wal_indexes(&t, &bucket, "dbs/app.db")
    );
    let out = c.dir.join("ls-restored.db");
    assert_ok(
        &restore_cfg(&ls, &cfg, &c.db, &out),
        "litestream restore -config",
    );
    check_restored(&out, &want, "litestream restore of a walship S3 replica");
    let n = block_on(assert_no_wal_gap(&t.replica(&bucket, "dbs/app.db")));
    eprintln!("litestream restored walship's S3 replica ({n} segments): {want}");
}

/// Litestream v0.3.13 replicates to S3; walship restores it.
#[test]
fn walship_restores_litestream_s3_replica() {
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let Some(ls) = litestream_bin() else { return };
    let _g = serial();
    let c = case();
    let bucket = block_on(t.new_bucket("ws-restores"));
    let cfg = t.write_config(
        &c.dir,
        &c.db,
        &bucket,
        "dbs/app.db",
        NO_LITESTREAM_CHECKPOINTS,
        "",
    );
    let mut w = Writer::new(&c.db, 12);
    for _ in 0..20 {
        w.tx();
    }
    let mut p = replicate(&ls, &cfg, &c.dir.join("litestream.log"));
    wait_snapshot(&t, &bucket, "dbs/app.db", &mut p, Duration::from_secs(30));
    for _ in 0..3000 {
        w.tx();
    }
    let want = digest(&c.db);
    // v0.3.13 sometimes hangs at shutdown after its last upload (seen once in CI, 2026-11-29:
    // "wal segment written", then nothing for minutes). Its exit is not what is tested here; what
    // it uploaded is, by the restore below.
    match p.stop_within(Duration::from_secs(30)) {
        Some(code) => assert_eq!(code, 0, "litestream exit code; log:\n{}", p.log_text()),
        None => eprintln!(
            "litestream hung at shutdown and was killed; log:\n{}",
            p.log_text()
        ),
    }
    drop(w);
    let out = c.dir.join("ws-restored.db");
    assert_ok(
        &restore_cfg(&walship_bin(), &cfg, &c.db, &out),
        "walship restore -config",
    );
    check_restored(&out, &want, "walship restore of a Litestream S3 replica");
    eprintln!("walship restored Litestream's S3 replica: {want}");
}

/// Settings for tests against a disturbed server: a short operation timeout, so a stalled
/// connection costs seconds, not minutes.
const SHORT_TIMEOUT: &str = "        operation-timeout: 2s\n        snapshot-interval: 20s\n";

/// Keeps writing at a modest rate until `until` says stop; returns the transactions written.
fn write_while(w: &mut Writer, mut until: impl FnMut() -> bool) -> u64 {
    let n0 = w.txs;
    while !until() {
        for _ in 0..10 {
            w.tx();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    w.txs - n0
}

/// With ≥ 200 injected network faults (`WALSHIP_FAULTS` to change the count; resets mid-request,
/// dropped and truncated responses, stalls) during a write workload, replication continues, no WAL gap is uploaded, and the
/// final restore is exact.
#[test]
fn replication_survives_network_faults() {
    let _g = serial();
    let c = case();
    let Some(weed) = WeedServer::start(&c.dir.join("weed")) else {
        return;
    };
    let t = weed.target();
    let bucket = block_on(t.new_bucket("faults"));
    let faults = knob("WALSHIP_FAULTS", 200) as u64;
    let proxy = FaultProxy::start(
        weed.s3_addr(),
        FaultPlan {
            seed: 7,
            ..FaultPlan::default()
        },
    );
    let proxied = S3Target {
        endpoint: proxy.endpoint(),
        ..t.clone()
    };
    std::fs::create_dir_all(c.dir.join("via-proxy")).unwrap();
    // Sync often, so faults meet many requests: every WAL segment upload, listing and snapshot.
    let cfg = proxied.write_config(
        &c.dir.join("via-proxy"),
        &c.db,
        &bucket,
        "app.db",
        "    monitor-interval: 100ms\n",
        SHORT_TIMEOUT,
    );
    let direct = t.write_config(&c.dir, &c.db, &bucket, "app.db", "", "");

    let mut w = Writer::new(&c.db, 21);
    for _ in 0..20 {
        w.tx();
    }
    let mut p = replicate_impatient(&cfg, &c.dir.join("walship.log"));
    wait_snapshot(&t, &bucket, "app.db", &mut p, Duration::from_secs(30));

    proxy.set_enabled(true);
    let t0 = Instant::now();
    let segments_before = block_on(t.keys(&bucket, "app.db/generations/")).len();
    let mut last_progress = (Instant::now(), segments_before);
    let mut stalled_for = Duration::ZERO;
    let txs = write_while(&mut w, || {
        if let Some(code) = p.wait_exit(Duration::ZERO) {
            panic!("walship exited with {code} under faults:\n{}", p.log_text());
        }
        // Replication continues: the replica gains objects while faults go on.
        if last_progress.0.elapsed() > Duration::from_secs(5) {
            let n = block_on(t.keys(&bucket, "app.db/generations/")).len();
            if n == last_progress.1 {
                stalled_for += last_progress.0.elapsed();
            }
            last_progress = (Instant::now(), n);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(200),
            "only {} after 200 s",
            proxy.counts.summary()
        );
        proxy.counts.total() >= faults
    });
    let fault_phase = t0.elapsed();
    proxy.set_enabled(false);
    eprintln!(
        "fault phase: {} in {fault_phase:?}, {txs} tx written, replica made no progress for {stalled_for:?}",
        proxy.counts.summary()
    );
    let segments_after = block_on(t.keys(&bucket, "app.db/generations/")).len();
    assert!(
        segments_after > segments_before + 20,
        "replication did not continue under faults: {segments_before} -> {segments_after} objects"
    );
    assert!(
        stalled_for < fault_phase / 2,
        "replication made no progress for {stalled_for:?} of {fault_phase:?}"
    );

    for _ in 0..100 {
        w.tx();
    }
    let caught = Instant::now();
    let want = wait_caught_up_with(
        &["-config", direct.to_str().unwrap(), c.db.to_str().unwrap()],
        &c.db,
        &c.dir.join("scratch.db"),
        Duration::from_secs(60),
    );
    eprintln!("caught up {:?} after the faults stopped", caught.elapsed());
    assert_eq!(p.stop(), 0, "walship exit code; log:\n{}", p.log_text());
    drop(w);
    let segs = block_on(assert_no_wal_gap(&t.replica(&bucket, "app.db")));
    let out = c.dir.join("restored.db");
    assert_ok(
        &restore_cfg(&walship_bin(), &direct, &c.db, &out),
        "walship restore",
    );
    check_restored(&out, &want, "restore after network faults");
    let gens = generations_listed(&direct, &c.db);
    assert_eq!(
        gens.len(),
        1,
        "faults started generations {gens:?}; log:\n{}",
        p.log_text()
    );
    eprintln!("no WAL gap over {segs} segments; restore exact: {want}");
    drop(proxy);
}

/// The S3 server stops for 30 s while the application writes and walship replicates; once it
/// is back, walship catches up on its own, without a gap.
#[test]
fn replication_resumes_after_server_outage() {
    let _g = serial();
    let c = case();
    let Some(mut weed) = WeedServer::start(&c.dir.join("weed")) else {
        return;
    };
    let t = weed.target();
    let bucket = block_on(t.new_bucket("outage"));
    let cfg = t.write_config(&c.dir, &c.db, &bucket, "app.db", "", SHORT_TIMEOUT);
    let mut w = Writer::new(&c.db, 31);
    for _ in 0..20 {
        w.tx();
    }
    let mut p = replicate_impatient(&cfg, &c.dir.join("walship.log"));
    wait_snapshot(&t, &bucket, "app.db", &mut p, Duration::from_secs(30));
    for _ in 0..200 {
        w.tx();
    }
    weed.stop();
    let down = Instant::now();
    let txs = write_while(&mut w, || down.elapsed() >= Duration::from_secs(30));
    if let Some(code) = p.wait_exit(Duration::ZERO) {
        panic!(
            "walship exited with {code} during the outage:\n{}",
            p.log_text()
        );
    }
    weed.restart();
    eprintln!(
        "server was down {:?} while {txs} tx were written",
        down.elapsed()
    );
    for _ in 0..50 {
        w.tx();
    }
    let back = Instant::now();
    let want = wait_caught_up_with(
        &["-config", cfg.to_str().unwrap(), c.db.to_str().unwrap()],
        &c.db,
        &c.dir.join("scratch.db"),
        Duration::from_secs(90),
    );
    eprintln!("caught up {:?} after the server came back", back.elapsed());
    assert_eq!(p.stop(), 0, "walship exit code; log:\n{}", p.log_text());
    drop(w);
    let segs = block_on(assert_no_wal_gap(&t.replica(&bucket, "app.db")));
    let out = c.dir.join("restored.db");
    assert_ok(
        &restore_cfg(&walship_bin(), &cfg, &c.db, &out),
        "walship restore",
    );
    check_restored(&out, &want, "restore after a server outage");
    let gens = generations_listed(&cfg, &c.db);
    assert_eq!(
        gens.len(),
        1,
        "the outage started generations {gens:?}; log:\n{}",
        p.log_text()
    );
    eprintln!("no WAL gap over {segs} segments; restore exact: {want}");
}

/// A restore of a long history through a store with latency keeps several requests in flight:
/// 150 WAL segments restored through a proxy that delays every request by 20 ms would take 3 s
/// one after another. The mechanism is asserted (requests delayed at the same moment), not the
/// time, which is printed.
#[test]
fn a_long_history_restores_with_requests_in_flight_together() {
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let _g = serial();
    let c = case();
    let bucket = block_on(t.new_bucket("history"));
    // Many small segments quickly: a short monitor-interval, and the test's 100 ms sync-interval.
    let cfg = t.write_config(
        &c.dir,
        &c.db,
        &bucket,
        "app.db",
        "    monitor-interval: 50ms\n",
        "",
    );
    let mut w = Writer::new(&c.db, 5);
    w.tx();
    let mut p = replicate(&walship_bin(), &cfg, &c.dir.join("walship.log"));
    wait_snapshot(&t, &bucket, "app.db", &mut p, Duration::from_secs(30));
    let segments = || {
        block_on(t.keys(&bucket, "app.db/generations/"))
            .iter()
            .filter(|k| k.contains("/wal/"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while segments() < 150 {
        assert!(
            Instant::now() < deadline,
            "only {} segments after 120 s; log:\n{}",
            segments(),
            p.log_text()
        );
        assert!(p.wait_exit(Duration::ZERO).is_none(), "{}", p.log_text());
        for _ in 0..3 {
            w.tx();
        }
        std::thread::sleep(Duration::from_millis(60));
    }
    let want = digest(&c.db);
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    drop(w);
    let n = segments();

    let proxy = walship_integration::latency::LatencyProxy::in_front_of(
        &t.endpoint,
        Duration::from_millis(20),
    )
    .unwrap();
    let slow = S3Target {
        endpoint: format!("http://{}", proxy.addr()),
        ..t.clone()
    };
    let slow_dir = c.dir.join("slow");
    std::fs::create_dir_all(&slow_dir).unwrap();
    let slow_cfg = slow.write_config(&slow_dir, &c.db, &bucket, "app.db", "", "");
    let out = c.dir.join("restored.db");
    let t0 = Instant::now();
    assert_ok(
        &restore_cfg(&walship_bin(), &slow_cfg, &c.db, &out),
        "walship restore through the latency proxy",
    );
    let wall = t0.elapsed();
    check_restored(&out, &want, "restore of a long history through latency");
    let counts = proxy.counts();
    let most = counts
        .most_delayed
        .load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "restored {n} segments through 20 ms per request in {wall:?}: {} requests over {} connections, at most {most} delayed together",
        counts.writes.load(std::sync::atomic::Ordering::SeqCst),
        counts.connections.load(std::sync::atomic::Ordering::SeqCst),
    );
    assert!(
        most >= 4,
        "at most {most} requests were in flight together: segments are fetched one after another"
    );
}

/// Replicating and restoring a 1 GiB database through S3 at default settings keeps walship's
/// peak RSS under 100 MiB: snapshots stream in bounded multipart parts, restores stream back.
#[test]
fn one_gib_database_through_s3_in_bounded_memory() {
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let _g = serial();
    let c = case();
    let t0 = Instant::now();
    build_big_db(&c.db, (1u64 << 30) / 1024);
    let want = digest(&c.db);
    eprintln!(
        "built a {:.2} GiB database in {:?}",
        std::fs::metadata(&c.db).unwrap().len() as f64 / (1u64 << 30) as f64,
        t0.elapsed()
    );
    let bucket = block_on(t.new_bucket("one-gib"));
    let cfg = t.write_config(&c.dir, &c.db, &bucket, "big.db", "", "");
    let t1 = Instant::now();
    let mut p = replicate(&walship_bin(), &cfg, &c.dir.join("walship.log"));
    let mut hwm_kib = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while snapshot_keys(&t, &bucket, "big.db").is_empty() {
        hwm_kib = hwm_kib.max(proc_status_kib(p.pid(), "VmHWM"));
        assert!(
            p.wait_exit(Duration::from_millis(200)).is_none(),
            "{}",
            p.log_text()
        );
        assert!(
            Instant::now() < deadline,
            "no snapshot after 600 s:\n{}",
            p.log_text()
        );
    }
    hwm_kib = hwm_kib.max(proc_status_kib(p.pid(), "VmHWM"));
    let snap_wall = t1.elapsed();
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    let out = c.dir.join("restored.db");
    let t2 = Instant::now();
    let (o, restore_kib) = run_with_max_rss(
        &walship_bin(),
        &[
            "restore",
            "-config",
            cfg.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            c.db.to_str().unwrap(),
        ],
    );
    assert_ok(&o, "walship restore of 1 GiB");
    let restore_wall = t2.elapsed();
    check_restored(&out, &want, "1 GiB restore through S3");
    eprintln!(
        "1 GiB through S3: snapshot uploaded in {snap_wall:?} with peak RSS {:.1} MiB; restored in {restore_wall:?} with peak RSS {:.1} MiB",
        hwm_kib as f64 / 1024.0,
        restore_kib as f64 / 1024.0
    );
    assert!(
        hwm_kib < 100 * 1024,
        "replicate peak RSS {hwm_kib} KiB >= 100 MiB"
    );
    assert!(
        restore_kib < 100 * 1024,
        "restore peak RSS {restore_kib} KiB >= 100 MiB"
    );
}

/// An https endpoint with a self-signed certificate (a self-hosted store): refused by default
/// with an error that names the certificate problem; `skip-verify: true` replicates and
/// restores through it.
#[test]
fn skip_verify_accepts_a_self_signed_certificate() {
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let _g = serial();
    let c = case();
    let upstream =
        std::net::ToSocketAddrs::to_socket_addrs(t.endpoint.trim_start_matches("http://"))
            .ok()
            .and_then(|mut a| a.next())
            .expect("the S3 endpoint is http://HOST:PORT");
    let front = walship_integration::tls::TlsFront::start(upstream, &c.dir);
    let tls = S3Target {
        endpoint: front.endpoint(),
        ..t.clone()
    };
    let bucket = block_on(t.new_bucket("skip-verify"));
    let verified_dir = c.dir.join("verified");
    std::fs::create_dir_all(&verified_dir).unwrap();
    let verified = tls.write_config(&verified_dir, &c.db, &bucket, "app.db", "", "");
    let insecure = tls.write_config(
        &c.dir,
        &c.db,
        &bucket,
        "app.db",
        "",
        "        skip-verify: true\n",
    );
    let mut w = Writer::new(&c.db, 41);
    for _ in 0..50 {
        w.tx();
    }

    // Verified (the default): the certificate is refused, and the error says why.
    let o = run(
        &walship_bin(),
        &[
            "snapshots",
            "-config",
            verified.to_str().unwrap(),
            c.db.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.to_lowercase().contains("certificate"),
        "the error should name the certificate problem: {err}"
    );

    let mut p = replicate(&walship_bin(), &insecure, &c.dir.join("walship.log"));
    wait_snapshot(&t, &bucket, "app.db", &mut p, Duration::from_secs(30));
    for _ in 0..300 {
        w.tx();
    }
    let want = wait_caught_up_with(
        &[
            "-config",
            insecure.to_str().unwrap(),
            c.db.to_str().unwrap(),
        ],
        &c.db,
        &c.dir.join("scratch.db"),
        Duration::from_secs(30),
    );
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    let out = c.dir.join("restored.db");
    assert_ok(
        &restore_cfg(&walship_bin(), &insecure, &c.db, &out),
        "walship restore with skip-verify",
    );
    check_restored(&out, &want, "restore through TLS with skip-verify");
}

/// Regression: with `logging.level: debug` the AWS SDK's own debug lines printed
/// the access key id (`Credentials{access_key_id: "..."}`) and signing details. The configured
/// level applies to walship; the SDK's crates stay at warnings.
#[test]
fn debug_logging_never_shows_credentials() {
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let _g = serial();
    let c = case();
    let bucket = block_on(t.new_bucket("debug-log"));
    let mut w = Writer::new(&c.db, 5);
    for _ in 0..20 {
        w.tx();
    }
    // Every way to turn logging up, replicate and restore alike.
    for (name, logging, env) in LOUD_LOGGING {
        let dir = c.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = format!("dbs/{name}/app.db");
        let cfg = t.write_config(&dir, &c.db, &bucket, &path, "", "");
        let mut p = replicate_loud(&cfg, logging, env, &dir.join("walship.log"));
        wait_snapshot(&t, &bucket, &path, &mut p, Duration::from_secs(30));
        for _ in 0..100 {
            w.tx();
        }
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(p.stop(), 0, "{name}: {}", p.log_text());
        let out = dir.join("restored.db");
        let restored = restore_with_env(&cfg, &c.db, &out, env);
        let log = format!("{}{restored}", p.log_text());
        assert_no_secret(name, &log, &[&t.access_key, &t.secret_key]);
    }
}

/// Regression: `AWS_CA_BUNDLE` was ignored, so an S3-compatible store behind a
/// private CA (v0.3.13 honours the variable) failed every request with a certificate error.
/// `SSL_CERT_FILE` replaces the system roots and works too.
#[test]
fn a_private_ca_is_trusted_through_aws_ca_bundle_or_ssl_cert_file() {
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let _g = serial();
    let c = case();
    let upstream =
        std::net::ToSocketAddrs::to_socket_addrs(t.endpoint.trim_start_matches("http://"))
            .ok()
            .and_then(|mut a| a.next())
            .expect("the S3 endpoint is http://HOST:PORT");
    let front = walship_integration::tls::TlsFront::start_with_private_ca(upstream, &c.dir);
    let ca = c.dir.join("ca.pem");
    let tls = S3Target {
        endpoint: front.endpoint(),
        ..t.clone()
    };
    let bucket = block_on(t.new_bucket("private-ca"));
    let cfg = tls.write_config(&c.dir, &c.db, &bucket, "app.db", "", "");
    let mut w = Writer::new(&c.db, 43);
    for _ in 0..50 {
        w.tx();
    }
    let once = |env: &[(&str, &std::path::Path)]| {
        let mut cmd = std::process::Command::new(walship_bin());
        cmd.args(["replicate", "-once", "-config", cfg.to_str().unwrap()])
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let o = once(&[]);
    let err = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "without the CA: {err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    for var in ["AWS_CA_BUNDLE", "SSL_CERT_FILE"] {
        let o = once(&[(var, &ca)]);
        let text =
            String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "with {var}: {text}");
        w.tx();
    }
    assert!(!snapshot_keys(&t, &bucket, "app.db").is_empty());
    // A bundle that holds no certificate is a clear error, not a panic.
    let junk = c.dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let o = once(&[("AWS_CA_BUNDLE", &junk)]);
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("AWS_CA_BUNDLE") && !text.contains("panicked"),
        "{text}"
    );
}

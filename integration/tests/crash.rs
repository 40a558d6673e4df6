//! The crash campaign: an application writing 300-500 transactions a second (rows of 10 B to
//! 20 KiB, some of 200 KiB, updates, deletes, checkpoints of every mode every few seconds, one
//! VACUUM, SQLite's default autocheckpoint) while `replicate` is killed with SIGKILL 0.3-4 s after
//! each start and started again at once, and the application itself is killed and restarted (a new
//! connection) every ~20 kills; on the file replica and on S3, at the runbook's `sync-interval: 1s`
//! and every other setting default.
//!
//! Oracles at the end: the latest restore (by walship and by Litestream v0.3.13) equals the
//! database row for row; 30 point-in-time restores each equal the replayed state after exactly one
//! committed transaction that had begun by the timestamp; a strict no-gap scan of every
//! generation; and new generations are classified: explained when started at a start-up of
//! walship after the WAL really restarted while no walship ran (headers compared by the test, not
//! taken from walship's word), unexplained otherwise (bounded; see `assert_clean`).
//!
//! Size knobs (kills per campaign): `CRASH_KILLS_FILE` (default 40), `CRASH_KILLS_S3` (default
//! 15); the acceptance run is 150 and 50. `CRASH_SEED` replays a campaign's transactions.
//! `CRASH_LITESTREAM=1` also runs the same campaigns with Litestream v0.3.13 as the replicator and
//! prints its figures side by side (no assertions: they describe v0.3.13).

use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use walship_core::listing::Listing;
use walship_core::replica::DynReplica;
use walship_integration::crash::{Replay, WriterLog};
use walship_integration::oracle::{assert_no_wal_gap, file_replica};
use walship_integration::s3::S3Target;
use walship_integration::weed::WeedServer;
use walship_integration::*;

/// One campaign at a time: each wants both cores for its writer and replicator.
static SERIAL: Mutex<()> = Mutex::new(());

/// Paced at 450 a second; the average is lower, since an application checkpoint of mode FULL,
/// RESTART or TRUNCATE holds every writer while it waits for the replicator's read transaction.
const RATE: &str = "450";
const PITR_RESTORES: usize = 30;

#[derive(Clone)]
enum Tool {
    Walship,
    Litestream(PathBuf),
}

impl Tool {
    fn bin(&self) -> PathBuf {
        match self {
            Tool::Walship => walship_bin(),
            Tool::Litestream(p) => p.clone(),
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Tool::Walship => "walship",
            Tool::Litestream(_) => "litestream v0.3.13",
        }
    }
}

enum Store {
    File(PathBuf),
    S3 {
        t: S3Target,
        bucket: String,
        _server: WeedServer,
    },
}

impl Store {
    fn replica(&self) -> DynReplica {
        match self {
            Store::File(p) => file_replica(p),
            Store::S3 { t, bucket, .. } => t.replica(bucket, "app"),
        }
    }
    /// Timestamps of the store: file mtimes come from the kernel's coarse clock (up to a tick
    /// behind the time of the write); S3 `LastModified` has whole seconds.
    fn is_s3(&self) -> bool {
        matches!(self, Store::S3 { .. })
    }
    fn config(&self, dir: &Path, db: &Path) -> PathBuf {
        let cfg = match self {
            Store::File(p) => write_config(dir, db, p, "", ""),
            Store::S3 { t, bucket, .. } => t.write_config(dir, db, bucket, "app", "", ""),
        };
        // The runbook's setting; everything else stays at its default.
        let mut text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("sync-interval: 100ms", "sync-interval: 1s");
        // For a post-mortem (the campaign keeps its files when it fails).
        if let Ok(level) = std::env::var("CRASH_LOG_LEVEL") {
            text = format!("logging:\n  level: {level}\n{text}");
        }
        std::fs::write(&cfg, text).unwrap();
        cfg
    }
}

/// One start of the replicator, as the test saw it.
struct Run {
    log: PathBuf,
    /// WAL header read right before the start.
    at_spawn: [u8; 32],
    /// WAL header read as soon as the log showed the start-up decision (continue or new
    /// generation), if it did before the kill.
    at_decision: Option<[u8; 32]>,
    /// WAL header read right before the kill (None: the last run, stopped with SIGTERM).
    at_kill: Option<[u8; 32]>,
}

#[derive(Default, Debug)]
struct Report {
    tool: String,
    store: String,
    seed: u64,
    kills: usize,
    writer_restarts: usize,
    txs: u64,
    rate: f64,
    seconds: f64,
    /// Starts where the test saw the WAL header change while no replicator ran.
    wal_restarted_in_gap: usize,
    /// Of those, starts that continued the generation (walship proved nothing was lost).
    continued_across_restart: usize,
    generations: usize,
    reasons: BTreeMap<String, usize>,
    unexplained: Vec<String>,
    latest_ok: Vec<String>,
    latest_wrong: Vec<String>,
    pitr_checked: usize,
    /// Restores that exited non-zero.
    pitr_failed: Vec<String>,
    /// Restores whose content is not the state after one transaction begun by the timestamp.
    pitr_wrong: Vec<String>,
    segments_checked: usize,
    gap: Option<String>,
    checkpoints: BTreeMap<String, (u64, u64)>,
    vacuums: u64,
}

impl Report {
    fn print(&self) {
        eprintln!(
            "CRASH CAMPAIGN {} on {} (seed {}): {} kills, {} writer restarts, {} transactions at {:.0} tx/s in {:.0} s; \
             WAL restarted during {} gaps, continued across {} of them; {} generations, reasons {:?}; unexplained {}; \
             latest restore ok by {:?}, wrong {:?}; {} point-in-time restores checked, {} wrong, {} failed; {} segments, gap: {}; \
             application checkpoints (attempts, completed) {:?}; vacuums {}",
            self.tool,
            self.store,
            self.seed,
            self.kills,
            self.writer_restarts,
            self.txs,
            self.rate,
            self.seconds,
            self.wal_restarted_in_gap,
            self.continued_across_restart,
            self.generations,
            self.reasons,
            self.unexplained.len(),
            self.latest_ok,
            self.latest_wrong,
            self.pitr_checked,
            self.pitr_wrong.len(),
            self.pitr_failed.len(),
            self.segments_checked,
            self.gap.as_deref().unwrap_or("none"),
            self.checkpoints,
            self.vacuums
        );
        for u in &self.unexplained {
            eprintln!("  unexplained: {u}");
        }
        for w in self.pitr_wrong.iter().chain(&self.latest_wrong) {
            eprintln!("  wrong: {w}");
        }
        for f in self.pitr_failed.iter().take(3) {
            eprintln!("  failed: {f}");
        }
    }
}

fn writer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_walship-crash-writer"))
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn rfc3339(ns: u128) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ns % 1_000_000_000
    )
}

fn salt1(h: &[u8; 32]) -> u32 {
    u32::from_be_bytes([h[16], h[17], h[18], h[19]])
}

/// Records the WAL header as soon as a start's log shows its decision (the header walship decided
/// on, to within the polling interval).
fn note_decision(r: &mut Run, db: &Path) {
    let text = std::fs::read_to_string(&r.log).unwrap_or_default();
    if decisions(&text).0.is_some() {
        r.at_decision = Some(wal_header(db));
    }
}

/// The first start-up decision in a walship log, and the new generations after it.
fn decisions(log: &str) -> (Option<Result<(), String>>, Vec<String>) {
    let mut first = None;
    let mut later = Vec::new();
    for line in log.lines() {
        let d = if line.contains("continuing generation") {
            Ok(())
        } else if line.contains("new generation") {
            Err(reason_of(line))
        } else {
            continue;
        };
        match (&first, d) {
            (None, d) => first = Some(d),
            (Some(_), Err(r)) => later.push(r),
            (Some(_), Ok(())) => {}
        }
    }
    (first, later)
}

/// The `reason=` of a log line (quoted or bare).
fn reason_of(line: &str) -> String {
    let Some(i) = line.find("reason=") else {
        return "(none logged)".into();
    };
    let r = &line[i + 7..];
    match r.strip_prefix('"') {
        Some(q) => q.split('"').next().unwrap_or("").to_string(),
        None => r.split_whitespace().next().unwrap_or("").to_string(),
    }
}

fn restore(tool: &Tool, cfg: &Path, db: &Path, out: &Path, at: Option<&str>) -> Result<(), String> {
    let _ = std::fs::remove_file(out);
    let mut args = vec![
        "restore",
        "-config",
        cfg.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    if let Some(t) = at {
        args.extend(["-timestamp", t]);
    }
    args.push(db.to_str().unwrap());
    let o = run(&tool.bin(), &args);
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {args:?}: {:?}: {}{}",
            tool.name(),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// `k` stored in a restored database, its row digest, and its integrity verdict.
/// A database the harness cannot even read (v0.3.13 restored "malformed" ones in the comparison
/// campaign) is reported as such, not a panic.
fn inspect(out: &Path) -> (u64, String, String) {
    std::panic::catch_unwind(|| {
        let c =
            rusqlite::Connection::open_with_flags(out, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let k = walship_integration::crash::progress(&c).unwrap_or(0);
        (k, digest_conn(&c), integrity(out))
    })
    .unwrap_or_else(|_| (0, "unreadable".into(), "unreadable (malformed)".into()))
}

fn campaign(tool: Tool, store: Store, kills: usize, dir: &Path) -> Report {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ns() as u64 % 1_000_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let db = dir.join("app.db");
    let cfg = store.config(dir, &db);
    let replica = store.replica();
    let writer_every = (kills / 3).clamp(1, 20);
    // VACUUM about half way through (400 tx/s, ~2.2 s per kill).
    let vacuum_at = (kills as u64 * 430).to_string();
    let mut writer_logs = Vec::new();
    let mut spawn_writer = |i: usize| {
        let log = dir.join(format!("writer-{i}.log"));
        // A writer killed during its VACUUM rolled it back: the next one runs it (CI, 2026-12-05:
        // the kill that restarts the writer landed in the VACUUM, and the campaign had none).
        let vacuumed = writer_logs.iter().any(|l: &PathBuf| {
            std::fs::read_to_string(l).is_ok_and(|t| t.lines().any(|l| l.starts_with("vacuum ")))
        });
        let vacuum_at = if vacuumed {
            u64::MAX.to_string()
        } else {
            vacuum_at.clone()
        };
        writer_logs.push(log.clone());
        Proc::spawn(
            &writer_bin(),
            &[
                db.to_str().unwrap(),
                &seed.to_string(),
                log.to_str().unwrap(),
                RATE,
                &vacuum_at,
            ],
            &dir.join(format!("writer-{i}.out")),
        )
    };
    let began = Instant::now();
    let mut writer = spawn_writer(0);
    wait_until(Duration::from_secs(30), "the writer's first commit", || {
        std::fs::read_to_string(dir.join("writer-0.log")).is_ok_and(|t| t.contains("tx 1 "))
    });
    let spawn = |i: usize| -> (Proc, PathBuf) {
        let log = dir.join(format!("replicate-{i}.log"));
        let p = Proc::spawn(
            &tool.bin(),
            &["replicate", "-config", cfg.to_str().unwrap()],
            &log,
        );
        (p, log)
    };
    let mut runs = Vec::new();
    let at_spawn = wal_header(&db);
    let (mut p, log) = spawn(0);
    runs.push(Run {
        log,
        at_spawn,
        at_decision: None,
        at_kill: None,
    });
    wait_until(Duration::from_secs(60), "the first snapshot", || {
        block_on(Listing::fetch(replica.as_ref(), None)).is_ok_and(|l| !l.snapshots.is_empty())
    });
    let pitr_from = now_ns() + 1_000_000_000;
    let mut writer_restarts = 0;
    let mut started = Instant::now();
    for i in 1..=kills {
        let due = started + Duration::from_millis(rng.random_range(300..4000));
        while Instant::now() < due {
            let r = runs.last_mut().unwrap();
            let deciding = r.at_decision.is_none() && matches!(tool, Tool::Walship);
            if deciding {
                note_decision(r, &db);
            }
            if let Ok(Some(st)) = p.child.as_mut().expect("running").try_wait() {
                panic!(
                    "{} exited with {st} during the campaign; log:\n{}",
                    tool.name(),
                    p.log_text()
                );
            }
            // Polled fast until the decision, so the header read is the one walship decided on
            // (its first checkpoint, and a restart of its own, take 10 ms or more after it).
            std::thread::sleep(Duration::from_millis(if deciding { 1 } else { 20 }));
        }
        // Read just before the kill: once walship is gone, the application's next
        // autocheckpoint may restart the WAL within a millisecond, and that restart happened
        // while no walship ran.
        runs.last_mut().unwrap().at_kill = Some(wal_header(&db));
        p.kill9();
        if i % writer_every == 0 {
            writer.kill9();
            writer = spawn_writer(i);
            writer_restarts += 1;
        }
        let at_spawn = wal_header(&db);
        let (np, log) = spawn(i);
        p = np;
        started = Instant::now();
        runs.push(Run {
            log,
            at_spawn,
            at_decision: None,
            at_kill: None,
        });
    }
    // The last start's decision, observed as the others were.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let r = runs.last_mut().unwrap();
        if r.at_decision.is_some() || !matches!(tool, Tool::Walship) {
            break;
        }
        note_decision(r, &db);
        std::thread::sleep(Duration::from_millis(1));
    }
    // The end: the application stops (as a crash), the replicator ships the rest and exits.
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    writer.kill9();
    std::thread::sleep(Duration::from_secs(3));
    let pitr_to = now_ns();
    let code = p.stop();
    let seconds = began.elapsed().as_secs_f64();
    assert_eq!(
        code,
        0,
        "{} final stop; log:\n{}",
        tool.name(),
        p.log_text()
    );
    let want = digest(&db);
    let want_k = {
        let c = rusqlite::Connection::open(&db).unwrap();
        walship_integration::crash::progress(&c).unwrap()
    };
    let wl = WriterLog::read(&writer_logs);
    let mut rep = Report {
        tool: tool.name().into(),
        store: if store.is_s3() {
            "S3 (SeaweedFS)"
        } else {
            "file"
        }
        .into(),
        seed,
        kills,
        writer_restarts,
        txs: want_k,
        rate: want_k as f64 / seconds,
        seconds,
        checkpoints: wl.checkpoints.clone(),
        vacuums: wl.vacuums,
        ..Default::default()
    };

    // Generations, and whether each was needed.
    let listing = block_on(Listing::fetch(replica.as_ref(), None)).expect("list the replica");
    rep.generations = listing.generations().len();
    let mut last_kill: Option<[u8; 32]> = None;
    let mut changed_since_kill = false;
    for (i, r) in runs.iter().enumerate() {
        let text = std::fs::read_to_string(&r.log).unwrap_or_default();
        if let Some(h) = last_kill {
            changed_since_kill |= h != r.at_spawn;
        }
        // The gap ends when the replicator holds its read transaction (walship: its start-up
        // decision); until then the application's autocheckpoint may restart the WAL.
        let gap_end = r.at_decision.unwrap_or(r.at_spawn);
        if i > 0 && runs[i - 1].at_kill.is_some_and(|h| h != gap_end) {
            rep.wal_restarted_in_gap += 1;
        }
        if std::env::var_os("CRASH_VERBOSE").is_some() {
            eprintln!(
                "start {i}: salt-1 at spawn {:08x}, at decision {:?}, at kill {:?}; {:?}",
                salt1(&r.at_spawn),
                r.at_decision.map(|h| format!("{:08x}", salt1(&h))),
                r.at_kill.map(|h| format!("{:08x}", salt1(&h))),
                decisions(&text).0
            );
        }
        match &tool {
            Tool::Walship => {
                let (first, later) = decisions(&text);
                for reason in &later {
                    *rep.reasons.entry(reason.clone()).or_default() += 1;
                    rep.unexplained.push(format!(
                        "start {i}: new generation while running: reason={reason}"
                    ));
                }
                match first {
                    Some(Err(reason)) => {
                        *rep.reasons.entry(reason.clone()).or_default() += 1;
                        // The header the decision was made on: seen at the decision, else (the
                        // log showed it only after the kill) at the kill, which is lenient.
                        let seen = r.at_decision.or(r.at_kill).unwrap_or(r.at_spawn);
                        let restarted = changed_since_kill || last_kill.is_some_and(|h| h != seen);
                        if i > 0 && !restarted {
                            rep.unexplained.push(format!(
                                "start {i}: new generation (reason={reason}) though the WAL header was the same as at the last kill (salt-1 {:08x} at the kill, {:08x} at the decision)",
                                salt1(&last_kill.unwrap_or_default()),
                                salt1(&seen)
                            ));
                        }
                        last_kill = r.at_kill;
                        changed_since_kill = false;
                    }
                    Some(Ok(())) => {
                        let seen = r.at_decision.unwrap_or(r.at_spawn);
                        if i > 0 && (changed_since_kill || last_kill.is_some_and(|h| h != seen)) {
                            rep.continued_across_restart += 1;
                        }
                        last_kill = r.at_kill;
                        changed_since_kill = false;
                    }
                    // Killed before it decided: whatever it did, the next start compares with
                    // the last kill after a decision, and any change since counts.
                    None => {
                        if let (Some(k), Some(h)) = (r.at_kill, last_kill) {
                            changed_since_kill |= k != h;
                        }
                    }
                }
            }
            Tool::Litestream(_) => {
                for line in text.lines().filter(|l| l.contains("new generation")) {
                    *rep.reasons.entry(reason_of(line)).or_default() += 1;
                }
                last_kill = r.at_kill;
            }
        }
    }

    // The latest state, restored by both tools.
    let out = dir.join("out.db");
    let mut restorers = vec![tool.clone()];
    if let (Tool::Walship, Some(ls)) = (&tool, litestream_bin()) {
        restorers.push(Tool::Litestream(ls));
    }
    if matches!(tool, Tool::Litestream(_)) {
        restorers.push(Tool::Walship);
    }
    for r in &restorers {
        match restore(r, &cfg, &db, &out, None) {
            Ok(()) => {
                let (k, d, ok) = inspect(&out);
                if ok == "ok" && d == want && k == want_k {
                    rep.latest_ok.push(r.name().into());
                } else {
                    rep.latest_wrong.push(format!(
                        "latest by {}: k {k} (want {want_k}), integrity {ok}, rows {d} (want {want})",
                        r.name()
                    ));
                }
            }
            Err(e) => rep.latest_wrong.push(format!("latest: {e}")),
        }
    }

    // Points in time, restored by the replicating tool, checked against the writer's replay.
    let mut checks = Vec::new();
    for _ in 0..PITR_RESTORES {
        let mut at = rng.random_range(pitr_from..pitr_to.max(pitr_from + 1));
        if store.is_s3() {
            at = at / 1_000_000_000 * 1_000_000_000 + 999_999_999;
        }
        let ts = rfc3339(at);
        match restore(&tool, &cfg, &db, &out, Some(&ts)) {
            Ok(()) => {
                let (k, d, ok) = inspect(&out);
                checks.push((k, d, ok, at, ts));
            }
            Err(e) => rep.pitr_failed.push(format!("at {ts}: {e}")),
        }
    }
    checks.sort_by_key(|c| c.0);
    let mut replay = Replay::new(&dir.join("replay.db"), seed);
    // The kernel stamps file mtimes from a clock that may lag by a tick (4 ms at HZ=250).
    let slack = if store.is_s3() { 0 } else { 10_000_000 };
    for (k, d, ok, at, ts) in checks {
        replay.advance_to(k);
        let began = wl.earliest_commit(k.max(1));
        let in_time = began.is_some_and(|b| b <= at + slack);
        if ok != "ok" || d != replay.digest() || !in_time {
            rep.pitr_wrong.push(format!(
                "at {ts}: transaction {k} (began {:?} ns before the timestamp), integrity {ok}, rows {d} vs replay {}",
                began.map(|b| at as i128 - b as i128),
                replay.digest()
            ));
        }
        rep.pitr_checked += 1;
    }

    // No gap, in any generation.
    let r = replica.clone();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block_on(assert_no_wal_gap(&r))
    })) {
        Ok(n) => rep.segments_checked = n,
        Err(e) => {
            rep.gap = Some(
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            )
        }
    }
    rep.print();
    rep
}

/// Fails the test on any wrong restore, gap or unexplained generation, keeping the campaign's
/// files (logs, database, replica) for a post-mortem.
fn assert_clean(rep: &Report, dir: tempfile::TempDir) {
    let mut dir = Some(dir);
    let mut fail = |what: String| -> ! {
        if let Some(d) = dir.take() {
            eprintln!("campaign files kept in {}", d.keep().display());
        }
        panic!("{what}");
    };
    // A restart the application made while walship ran (after walship's complete checkpoint),
    // followed by a kill before walship's next sync recorded it, continues at the next start:
    // from the WAL file when the new life has not reached the slot after walship's copy, else
    // from the end mark when the database file is as it was at that checkpoint (ARCHITECTURE.md,
    // monitor invariant 5). What is left cannot be decided: an application checkpoint wrote the
    // database file between the kill and the next start, and that write may hold commits walship
    // never saw. That needs a kill inside a window of milliseconds and then a checkpoint inside
    // the next start's few tens: full-size runs (150 + 50 kills, 2026-12-07) showed none, and one
    // is allowed so that a rare one does not fail the suite; restores stay exact either way.
    let allowed = (rep.kills / 100).max(1);
    if rep.unexplained.len() > allowed {
        fail(format!(
            "{} unexplained generations in {} kills (at most {allowed}): {:#?}",
            rep.unexplained.len(),
            rep.kills,
            rep.unexplained
        ));
    }
    if !rep.latest_wrong.is_empty() || rep.latest_ok.len() < 2 {
        fail(format!(
            "latest restores: ok by {:?}, wrong {:#?}",
            rep.latest_ok, rep.latest_wrong
        ));
    }
    if !rep.pitr_wrong.is_empty() || !rep.pitr_failed.is_empty() {
        fail(format!(
            "point-in-time restores wrong: {:#?}; failed: {:#?}",
            rep.pitr_wrong, rep.pitr_failed
        ));
    }
    if let Some(g) = &rep.gap {
        fail(format!("gap: {g}"));
    }
    if rep.segments_checked == 0 {
        fail("no WAL segment in the replica".into());
    }
    if rep.vacuums != 1 {
        fail(format!("the campaign VACUUMs once (got {})", rep.vacuums));
    }
    if rep.rate < 250.0 {
        fail(format!(
            "the writer reached only {:.0} tx/s; the campaign needs 300-500",
            rep.rate
        ));
    }
}

/// A directory for one campaign; kept after the run when `KEEP_TEST_DIRS` is set.
fn workdir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().to_path_buf();
    if std::env::var_os("KEEP_TEST_DIRS").is_some() {
        eprintln!("keeping {}", p.display());
        let _ = t.keep();
        return (tempfile::tempdir().unwrap(), p);
    }
    (t, p)
}

#[test]
fn crash_campaign_file_replica() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let kills = knob("CRASH_KILLS_FILE", 40);
    let (t, dir) = workdir();
    let rep = campaign(Tool::Walship, Store::File(dir.join("replica")), kills, &dir);
    assert_clean(&rep, t);
}

fn s3_store(dir: &Path) -> Option<Store> {
    let server = WeedServer::start(&dir.join("weed"))?;
    let t = server.target();
    let bucket = block_on(t.new_bucket("crash"));
    Some(Store::S3 {
        t,
        bucket,
        _server: server,
    })
}

#[test]
fn crash_campaign_s3_replica() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let kills = knob("CRASH_KILLS_S3", 15);
    let (t, dir) = workdir();
    let Some(store) = s3_store(&dir) else { return };
    let rep = campaign(Tool::Walship, store, kills, &dir);
    assert_clean(&rep, t);
}

/// The same campaigns with Litestream v0.3.13 as the replicator, for the figures side by side
/// (`CRASH_LITESTREAM=1`); they describe v0.3.13, so nothing is asserted.
#[test]
fn crash_campaign_litestream_for_comparison() {
    if std::env::var("CRASH_LITESTREAM").as_deref() != Ok("1") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(ls) = litestream_bin() else { return };
    let (_t, dir) = workdir();
    campaign(
        Tool::Litestream(ls.clone()),
        Store::File(dir.join("replica")),
        knob("CRASH_KILLS_FILE", 40),
        &dir,
    );
    let (_t, dir) = workdir();
    if let Some(store) = s3_store(&dir) {
        campaign(
            Tool::Litestream(ls),
            store,
            knob("CRASH_KILLS_S3", 15),
            &dir,
        );
    }
}

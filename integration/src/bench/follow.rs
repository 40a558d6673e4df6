//! `follow`: a read replica (`walship restore -f`) on the same machine, following the S3 replica
//! of a primary that one tool (walship or Litestream v0.3.13) replicates. The follower is always
//! walship; the two columns differ by who wrote the replica. A reader polls the follower's output
//! the way an application would (a fresh read transaction every few milliseconds), so the lag is
//! primary commit → visible to a reader of the follower.

use super::lag::quantile;
use super::procstat::{cpu_secs, status_kib};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use walship_integration::s3::S3Target;
use walship_integration::{app_conn, digest, Proc};

/// Sizes and settings of one run.
pub struct FollowOpts {
    /// Seconds of the 200 tx/s writer.
    pub steady_secs: f64,
    /// Seconds of the writer at its saturating rate.
    pub sat_secs: f64,
    /// The primary's `sync-interval`.
    pub sync_interval: String,
    /// The follower's `-follow-interval`.
    pub follow_interval: String,
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct Follow {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub unseen: usize,
    pub cpu_ms_per_1k: Option<f64>,
    pub hwm_mib: Option<f64>,
    pub sat_tx_per_s: Option<f64>,
    pub sat_p99_ms: Option<f64>,
    pub sat_catch_up_secs: Option<f64>,
    pub exact: Option<bool>,
}

/// (rowid, when) of each commit a writer made.
type Commits = Vec<(i64, Instant)>;

/// Polls the follower's output for the largest rowid a reader sees, and when it first saw it.
struct Reader {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(i64, Instant)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    fn start(out: &Path) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v, out) = (stop.clone(), seen.clone(), out.to_path_buf());
        let thread = std::thread::spawn(move || {
            let mut conn: Option<Connection> = None;
            let mut last = i64::MIN;
            while !s.load(Ordering::Relaxed) {
                if conn.is_none() {
                    conn = Connection::open_with_flags(&out, OpenFlags::SQLITE_OPEN_READ_ONLY)
                        .ok()
                        .inspect(|c| {
                            let _ = c.busy_timeout(Duration::from_millis(100));
                        });
                }
                if let Some(c) = &conn {
                    match c.query_row("SELECT coalesce(max(id), 0) FROM t", [], |r| r.get(0)) {
                        Ok(id) if id != last => {
                            last = id;
                            v.lock().unwrap().push((id, Instant::now()));
                        }
                        Ok(_) => {}
                        Err(_) => conn = None,
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Reader {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn max_seen(&self) -> i64 {
        self.seen.lock().unwrap().last().map_or(0, |s| s.0)
    }

    /// Lags (ms) from each commit to the first read that saw it, and the commits never seen.
    fn lags(&self, commits: &[(i64, Instant)]) -> (Vec<f64>, usize) {
        let seen = self.seen.lock().unwrap();
        let mut lags = Vec::new();
        let mut unseen = 0;
        let mut j = 0;
        for (id, at) in commits {
            while j < seen.len() && seen[j].0 < *id {
                j += 1;
            }
            match seen.get(j) {
                Some((_, t)) => lags.push(t.saturating_duration_since(*at).as_secs_f64() * 1e3),
                None => unseen += 1,
            }
        }
        lags.sort_by(f64::total_cmp);
        (lags, unseen)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn insert(c: &Connection, k: i64) -> i64 {
    c.execute(
        "INSERT INTO t (k, v) VALUES (?1, randomblob(100))",
        rusqlite::params![k],
    )
    .unwrap();
    c.last_insert_rowid()
}

fn snapshot_in(t: &S3Target, bucket: &str) -> bool {
    let sdk = t.sdk();
    walship_integration::block_on(async {
        sdk.list_objects_v2()
            .bucket(bucket)
            .prefix("app/")
            .send()
            .await
            .map(|p| {
                p.contents()
                    .iter()
                    .any(|o| o.key().unwrap_or_default().ends_with(".snapshot.lz4"))
            })
            .unwrap_or(false)
    })
}

/// One run: `primary` (walship or v0.3.13) replicates, walship at `walship` follows.
pub fn run(
    name: &str,
    primary: &Path,
    walship: &Path,
    t: &S3Target,
    o: &FollowOpts,
    warn: &dyn Fn(String),
) -> Follow {
    let mut out = Follow::default();
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let conn = app_conn(&db);
    insert(&conn, 0);
    let bucket = walship_integration::block_on(t.new_bucket(&format!("follow-{name}")));
    let cfg = d.path().join("litestream.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n{}",
            db.display(),
            t.replica_yaml(&t.endpoint, &bucket, "app", &o.sync_interval)
        ),
    )
    .unwrap();
    eprintln!("follow: {name} primary, walship follower");
    let mut rep = Proc::spawn(
        primary,
        &["replicate", "-config", cfg.to_str().unwrap()],
        &d.path().join(format!("{name}.log")),
    );
    let t0 = Instant::now();
    while !snapshot_in(t, &bucket) {
        if t0.elapsed() > Duration::from_secs(60) {
            warn(format!("follow: {name}: no snapshot in S3 after 60 s"));
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = d.path().join("follower").join("replica.db");
    std::fs::create_dir_all(output.parent().unwrap()).unwrap();
    let mut f = Proc::spawn(
        walship,
        &[
            "restore",
            "-f",
            "-follow-interval",
            &o.follow_interval,
            "-config",
            cfg.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            db.to_str().unwrap(),
        ],
        &d.path().join("follower.log"),
    );
    let t0 = Instant::now();
    while !output.exists() {
        if f.wait_exit(Duration::ZERO).is_some() || t0.elapsed() > Duration::from_secs(60) {
            warn(format!(
                "follow: {name}: the follower did not start:\n{}",
                f.log_text()
            ));
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let reader = Reader::start(&output);
    let fpid = f.pid();

    // 200 tx/s.
    let mut commits: Commits = Vec::new();
    let c0 = cpu_secs(fpid);
    let start = Instant::now();
    let mut k = 1;
    while start.elapsed().as_secs_f64() < o.steady_secs {
        if let Some(s) =
            (start + Duration::from_millis(5) * k as u32).checked_duration_since(Instant::now())
        {
            std::thread::sleep(s);
        }
        commits.push((insert(&conn, k), Instant::now()));
        k += 1;
    }
    let last = commits.last().map_or(0, |c| c.0);
    let caught = wait_seen(&reader, last, Duration::from_secs(60));
    let c1 = cpu_secs(fpid);
    // Only when it caught up: a timed-out wait would add a minute of idle polling.
    if let (Some(a), Some(b), Some(_)) = (c0, c1, caught) {
        out.cpu_ms_per_1k = Some((b - a) * 1e3 / (commits.len() as f64 / 1e3));
    }
    if caught.is_none() {
        warn(format!(
            "follow: {name}: the last commit at 200 tx/s not seen by a follower's reader 60 s later"
        ));
    }
    let (lags, unseen) = reader.lags(&commits);
    out.p50_ms = quantile(&lags, 0.5);
    out.p99_ms = quantile(&lags, 0.99);
    out.max_ms = lags.last().copied();
    out.unseen = unseen;

    // Saturating: as fast as the writer goes, every commit timed.
    let mut sat: Commits = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < o.sat_secs {
        sat.push((insert(&conn, k), Instant::now()));
        k += 1;
    }
    let wrote = start.elapsed();
    out.sat_tx_per_s = Some(sat.len() as f64 / wrote.as_secs_f64());
    let last = sat.last().map_or(0, |c| c.0);
    let stopped = Instant::now();
    match wait_seen(&reader, last, Duration::from_secs(120)) {
        Some(_) => out.sat_catch_up_secs = Some(stopped.elapsed().as_secs_f64()),
        None => warn(format!(
            "follow: {name}: the saturating writer's last commit not seen 120 s after it stopped"
        )),
    }
    let (lags, _) = reader.lags(&sat);
    out.sat_p99_ms = quantile(&lags, 0.99);
    out.hwm_mib = status_kib(fpid, "VmHWM").map(|k| k as f64 / 1024.0);
    drop(reader);
    let code = f.stop();
    if code != 0 {
        warn(format!(
            "follow: {name}: the follower exited {code}:\n{}",
            f.log_text()
        ));
    }
    drop(conn);
    let _ = rep.stop();
    out.exact = Some(output.exists() && digest(&output) == digest(&db));
    out
}

/// Waits until a reader of the follower saw `id`; how long it took.
fn wait_seen(r: &Reader, id: i64, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if r.max_seen() >= id {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The workload in one line, for the table's notes.
pub fn describe(o: &FollowOpts) -> String {
    format!(
        "follow: a walship follower (`restore -f -follow-interval {}`) of the S3 replica a primary writes at sync-interval {} (column walship: walship's replica; column litestream: v0.3.13's replica, the follower is walship in both); a reader of the follower's output polls every 5 ms; {} s at 200 tx/s, then {} s of a saturating writer; lag is primary commit to visible to that reader; no ratio (the follower is the same program)",
        o.follow_interval, o.sync_interval, o.steady_secs, o.sat_secs
    )
}

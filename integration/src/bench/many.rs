//! `many`: one host, many tenant databases. walship replicates them through one directory entry,
//! Litestream v0.3.13 through one entry per database (it has no other way). Each database has
//! two replicas: a local directory (to see when commits arrive) and the suite's S3 server behind
//! a counting proxy (to count what an idle fleet costs in requests). Both tools use
//! `retention-check-interval: 1m`, so an idle window of a few minutes shows the per-hour rate of
//! retention listings that the default 1 h spreads thinner.

use super::lag::{quantile, Commit, Poller, WalFollower};
use super::procstat::{cpu_secs, status_kib};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use walship_integration::faults::{FaultPlan, FaultProxy};
use walship_integration::latency::LatencyProxy;
use walship_integration::s3::S3Target;
use walship_integration::{app_conn, Proc, Writer};

/// Sizes and settings of one run.
pub struct ManyOpts {
    pub n: usize,
    /// After every database has its first snapshot, before the idle window.
    pub warm_secs: f64,
    pub idle_secs: f64,
    pub write_secs: f64,
    pub sync_interval: String,
    /// walship's `release-after` for the entry; None: its default (1m for a directory entry).
    pub release_after: Option<String>,
    /// Seconds from start during which the S3 link fails; 0: never.
    pub fault_secs: f64,
}

/// What one tool did.
#[derive(Debug, Default)]
pub struct Many {
    pub ready_secs: Option<f64>,
    pub idle_cpu_pct: Option<f64>,
    pub rss_mib: Option<f64>,
    pub fds_per_db: Option<f64>,
    pub threads: Option<f64>,
    pub requests_per_db_hour: Option<f64>,
    pub write_cpu_pct: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    pub unseen: usize,
    /// SIGTERM to exit, every database's final sync included (systemd kills a service still
    /// running 90 s after it, by default).
    pub stop_secs: Option<f64>,
}

fn rel(i: usize) -> String {
    format!("t{i:05}.db")
}

fn s3_replica(t: &S3Target, proxy: &LatencyProxy, bucket: &str, path: &str, sync: &str) -> String {
    t.replica_yaml(&format!("http://{}", proxy.addr()), bucket, path, sync)
        + "        retention-check-interval: 1m\n"
}

fn config(
    dir_entry: bool,
    tenants: &Path,
    replicas: &Path,
    s3: &dyn Fn(&str) -> String,
    o: &ManyOpts,
) -> String {
    let sync = &o.sync_interval;
    if dir_entry {
        let release = o
            .release_after
            .as_ref()
            .map(|r| format!("    release-after: {r}\n"))
            .unwrap_or_default();
        return format!(
            "dbs:\n  - dir: {}\n    pattern: \"*.db\"\n    watch: true\n{release}    replicas:\n      - type: file\n        path: {}\n        sync-interval: {sync}\n        retention-check-interval: 1m\n{}",
            tenants.display(),
            replicas.display(),
            s3("tenants")
        );
    }
    let mut c = String::from("dbs:\n");
    for i in 0..o.n {
        c.push_str(&format!(
            "  - path: {}\n    replicas:\n      - type: file\n        path: {}\n        sync-interval: {sync}\n        retention-check-interval: 1m\n{}",
            tenants.join(rel(i)).display(),
            replicas.join(rel(i)).display(),
            s3(&format!("tenants/{}", rel(i)))
        ));
    }
    c
}

/// Databases with a snapshot in the S3 bucket (listed straight from the server, not through the
/// counting proxy).
fn s3_snapshots(t: &S3Target, bucket: &str) -> usize {
    let sdk = t.sdk();
    walship_integration::block_on(async {
        let mut dbs = std::collections::HashSet::new();
        let mut token = None;
        loop {
            let Ok(page) = sdk
                .list_objects_v2()
                .bucket(bucket)
                .prefix("tenants/")
                .set_continuation_token(token)
                .send()
                .await
            else {
                return 0;
            };
            for o in page.contents() {
                let key = o.key().unwrap_or_default();
                if key.ends_with(".snapshot.lz4") {
                    dbs.insert(key.split('/').nth(1).unwrap_or_default().to_string());
                }
            }
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => return dbs.len(),
            }
        }
    })
}

fn has_snapshot(replica: &Path) -> bool {
    walship_integration::files(replica)
        .iter()
        .any(|f| f.ends_with(".snapshot.lz4"))
}

/// One tool's run; `dir_entry` picks walship's directory entry over explicit entries.
pub fn run(
    name: &str,
    bin: &Path,
    dir_entry: bool,
    t: &S3Target,
    o: &ManyOpts,
    warn: &dyn Fn(String),
) -> Many {
    let d = tempfile::tempdir().unwrap();
    let tenants = d.path().join("tenants");
    let replicas = d.path().join("replicas");
    std::fs::create_dir_all(&tenants).unwrap();
    eprintln!("many: {name} with {} databases", o.n);
    for i in 0..o.n {
        let c = app_conn(&tenants.join(rel(i)));
        c.execute(
            "INSERT INTO t (k, v) VALUES (?1, ?2)",
            rusqlite::params![i as i64, vec![7u8; 100]],
        )
        .unwrap();
    }
    // Counting proxy -> (fault proxy, when asked) -> S3.
    let faults = (o.fault_secs > 0.0).then(|| {
        let upstream = t
            .endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let f = FaultProxy::start(
            upstream.parse().expect("S3 endpoint http://IP:PORT"),
            FaultPlan {
                rate: 0.3,
                stall: Duration::from_secs(2),
                ..FaultPlan::default()
            },
        );
        f.set_enabled(true);
        f
    });
    let upstream = faults.as_ref().map_or(t.endpoint.clone(), |f| f.endpoint());
    let proxy = LatencyProxy::in_front_of(&upstream, Duration::ZERO)
        .unwrap_or_else(|e| panic!("many: proxy before {upstream}: {e}"));
    let bucket = walship_integration::block_on(t.new_bucket(&format!("many-{name}")));
    let s3 = |path: &str| s3_replica(t, &proxy, &bucket, path, &o.sync_interval);
    let cfg = d.path().join("litestream.yml");
    std::fs::write(&cfg, config(dir_entry, &tenants, &replicas, &s3, o)).unwrap();
    let mut p = Proc::spawn(
        bin,
        &["replicate", "-config", cfg.to_str().unwrap()],
        &d.path().join(format!("{name}.log")),
    );
    let pid = p.pid();
    let mut out = Many::default();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(300 + o.n as u64 / 5);
    let mut pending: Vec<usize> = (0..o.n).collect();
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain(|&i| !has_snapshot(&replicas.join(rel(i))));
        std::thread::sleep(Duration::from_millis(200));
    }
    if pending.is_empty() {
        out.ready_secs = Some(t0.elapsed().as_secs_f64());
    } else {
        warn(format!(
            "many: {name}: {} of {} databases without a snapshot after {:?}",
            pending.len(),
            o.n,
            t0.elapsed()
        ));
    }
    // The idle window starts once the S3 replicas caught up too: a slow store still taking first
    // snapshots is start-up, not idle cost.
    let in_s3 = loop {
        let n = s3_snapshots(t, &bucket);
        if n >= o.n || Instant::now() >= deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if in_s3 < o.n {
        warn(format!(
            "many: {name}: {} of {} databases without a snapshot in S3 after {:?}",
            o.n - in_s3,
            o.n,
            t0.elapsed()
        ));
    }
    if let Some(f) = &faults {
        let until = t0 + Duration::from_secs_f64(o.fault_secs);
        if let Some(d) = until.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        f.set_enabled(false);
        eprintln!("many: {name}: faults off, {}", f.counts.summary());
    }
    std::thread::sleep(Duration::from_secs_f64(o.warm_secs));

    // Idle window.
    let writes = || proxy.counts().writes.load(Ordering::Relaxed);
    let (c0, w0, i0) = (cpu_secs(pid), writes(), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(o.idle_secs));
    let (c1, w1, wall) = (cpu_secs(pid), writes(), i0.elapsed().as_secs_f64());
    out.idle_cpu_pct = c0.zip(c1).map(|(a, b)| (b - a) / wall * 100.0);
    out.rss_mib = status_kib(pid, "VmRSS").map(|k| k as f64 / 1024.0);
    out.threads = status_kib(pid, "Threads").map(|t| t as f64);
    out.fds_per_db = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|r| r.count() as f64 / o.n as f64);
    out.requests_per_db_hour = Some((w1 - w0) as f64 / o.n as f64 / (wall / 3600.0));

    // 1 % of the databases write 10 transactions a second each.
    let k = (o.n / 100).max(1);
    let step = o.n / k;
    let chosen: Vec<usize> = (0..k).map(|j| j * step).collect();
    let pollers: Vec<Poller> = chosen
        .iter()
        .map(|&i| Poller::start(&replicas.join(rel(i))))
        .collect();
    let mut writers: Vec<(Writer, WalFollower, Vec<Commit>)> = chosen
        .iter()
        .map(|&i| {
            let db = tenants.join(rel(i));
            (
                Writer::new(&db, i as u64),
                WalFollower::new(&db),
                Vec::new(),
            )
        })
        .collect();
    let c0 = cpu_secs(pid);
    let start = Instant::now();
    let mut tick = 0u32;
    while start.elapsed().as_secs_f64() < o.write_secs {
        if let Some(s) =
            (start + Duration::from_millis(100) * tick).checked_duration_since(Instant::now())
        {
            std::thread::sleep(s);
        }
        for (w, f, commits) in &mut writers {
            w.tx_small();
            let at = Instant::now();
            if let Some((salts, end)) = f.poll() {
                commits.push(Commit { at, salts, end });
            }
        }
        tick += 1;
    }
    let c1 = cpu_secs(pid);
    let wall = start.elapsed().as_secs_f64();
    out.write_cpu_pct = c0.zip(c1).map(|(a, b)| (b - a) / wall * 100.0);
    let mut lags = Vec::new();
    for (poller, (_, _, commits)) in pollers.iter().zip(&writers) {
        if let Some(last) = commits.last() {
            if poller.wait_held(last, Duration::from_secs(60)).is_none() {
                warn(format!(
                    "many: {name}: a written database's last commit not in its replica 60 s later"
                ));
            }
        }
        let (l, unseen) = poller.lags_ms(commits);
        lags.extend(l);
        out.unseen += unseen;
    }
    lags.sort_by(f64::total_cmp);
    out.lag_p99_ms = quantile(&lags, 0.99);
    drop(pollers);
    drop(writers);
    let stopping = Instant::now();
    let code = p.stop();
    out.stop_secs = Some(stopping.elapsed().as_secs_f64());
    if code != 0 {
        warn(format!("many: {name}: replicate exited {code}"));
    }
    let log = p.log_text();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("level=ERROR"))
        .collect();
    if !errors.is_empty() {
        warn(format!(
            "many: {name}: {} error lines in its log; the first of each kind:\n{}",
            errors.len(),
            error_samples(&errors, 6)
        ));
    }
    out
}

/// Up to `max` error lines, one per kind (the text after the database path), each cut to a
/// readable length: a failed CI run shows why without its logs.
fn error_samples(lines: &[&str], max: usize) -> String {
    let mut kinds: Vec<String> = Vec::new();
    let mut shown = Vec::new();
    for l in lines {
        // Databases differ only in their numbers: the kind is the line without digits.
        let kind: String = l
            .chars()
            .skip_while(|c| !c.is_alphabetic())
            .filter(|c| !c.is_ascii_digit())
            .collect();
        if kinds.contains(&kind) {
            continue;
        }
        kinds.push(kind);
        shown.push(format!("    {}", l.chars().take(400).collect::<String>()));
        if shown.len() == max {
            break;
        }
    }
    shown.join("\n")
}

/// The workload in one line, for the table's notes.
pub fn describe(o: &ManyOpts) -> String {
    format!(
        "many: {} databases (walship: one `dir` entry{}; v0.3.13: one entry each), two replicas each (a local directory, and S3 through a counting proxy), sync-interval {}, retention-check-interval 1m; warm-up {} s after every first snapshot (in both replicas){}, idle window {} s, then 1 % of the databases at 10 tx/s for {} s",
        o.n,
        o.release_after
            .as_ref()
            .map(|r| format!(", release-after {r}"))
            .unwrap_or_else(|| ", release-after 1m (default)".into()),
        o.sync_interval,
        o.warm_secs,
        if o.fault_secs > 0.0 {
            format!(", the S3 link failing for the first {} s", o.fault_secs)
        } else {
            String::new()
        },
        o.idle_secs,
        o.write_secs
    )
}

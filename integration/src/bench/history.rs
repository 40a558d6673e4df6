//! `history`: restore time of a long history through an object store with latency.
//!
//! The replica is built once, on the suite's S3 server, by walship's own monitor and shipper
//! driven in this process (one small commit, one copy, one upload per WAL segment: a day of a
//! trickle at `sync-interval: 10s` is 8,640 such segments), then restored by each tool through a
//! [`LatencyProxy`] that delays every request, as a same-region store does.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use walship_core::db::{Db, DbOptions};
use walship_core::shipper::{ReplicaOptions, Shipper};
use walship_integration::latency::LatencyProxy;
use walship_integration::s3::S3Target;
use walship_integration::{block_on, digest, integrity, Writer};

/// A replica with a history of `segments` WAL segments, and the content a restore must equal.
pub struct History {
    pub bucket: String,
    pub path: String,
    pub db: PathBuf,
    pub digest: String,
    pub segments: usize,
    pub indexes: usize,
    pub build_secs: f64,
}

/// Builds a replica of `n` WAL segments (after one snapshot) under `dir` on `t`.
pub fn build(t: &S3Target, dir: &Path, n: usize) -> History {
    let t0 = Instant::now();
    let bucket = block_on(t.new_bucket(&format!("history-{n}")));
    let path = "app.db".to_string();
    let db_path = dir.join("app.db");
    let mut w = Writer::new(&db_path, 7);
    w.tx_small();
    let replica = t.replica(&bucket, &path);
    block_on(async {
        let db = Db::open(
            &db_path,
            DbOptions {
                // Driven by hand below: no monitor task.
                monitor_interval: Duration::ZERO,
                ..DbOptions::default()
            },
        )
        .expect("open the database");
        let mut s = Shipper::new(
            db.clone(),
            replica.clone(),
            ReplicaOptions {
                name: "s3".into(),
                ..ReplicaOptions::default()
            },
        );
        db.sync().expect("first sync");
        s.sync().await.expect("first upload");
        for i in 0..n {
            w.tx_small();
            db.sync().expect("sync");
            s.sync().await.expect("upload");
            if (i + 1) % 1000 == 0 {
                eprintln!("history: {} of {n} segments", i + 1);
            }
        }
        db.close();
    });
    History::listed(t, bucket, path, db_path, t0)
}

impl History {
    /// The replica `bucket`/`path` as listed now, for the database at `db` (its content is what
    /// a restore must equal), built since `t0`.
    fn listed(t: &S3Target, bucket: String, path: String, db: PathBuf, t0: Instant) -> History {
        let keys = block_on(t.keys(&bucket, &format!("{path}/generations/")));
        let wal: Vec<&String> = keys.iter().filter(|k| k.contains("/wal/")).collect();
        let indexes = wal
            .iter()
            .filter_map(|k| k.rsplit('/').next()?.split('_').next())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        History {
            bucket,
            path,
            digest: digest(&db),
            db,
            segments: wal.len(),
            indexes,
            build_secs: t0.elapsed().as_secs_f64(),
        }
    }
}

/// One tool's restore of a [`History`] through the proxy.
#[derive(Default)]
pub struct Restored {
    pub wall: Option<f64>,
    pub rss_mib: Option<f64>,
    pub requests: Option<u64>,
    pub exact: Option<bool>,
}

/// Restores `h` with `bin` (walship or Litestream v0.3.13, same command line) through `proxy`.
pub fn restore(
    name: &str,
    bin: &Path,
    t: &S3Target,
    proxy: &LatencyProxy,
    h: &History,
    dir: &Path,
) -> Restored {
    let tdir = dir.join(name);
    std::fs::create_dir_all(&tdir).unwrap();
    let slow = S3Target {
        endpoint: format!("http://{}", proxy.addr()),
        ..t.clone()
    };
    let cfg = slow.write_config(&tdir, &h.db, &h.bucket, &h.path, "", "");
    let out = tdir.join("restored.db");
    let before = proxy.counts().writes.load(Ordering::SeqCst);
    let u = super::procstat::run_measured(
        bin,
        &[
            "restore",
            "-config",
            cfg.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            h.db.to_str().unwrap(),
        ],
        &tdir.join("restore.log"),
        Duration::from_secs(3600),
    );
    let requests = proxy.counts().writes.load(Ordering::SeqCst) - before;
    if !u.ok {
        eprintln!(
            "history: {name} restore failed:\n{}",
            std::fs::read_to_string(tdir.join("restore.log")).unwrap_or_default()
        );
        return Restored {
            exact: Some(false),
            ..Restored::default()
        };
    }
    let exact = integrity(&out) == "ok" && digest(&out) == h.digest;
    Restored {
        wall: Some(u.wall),
        rss_mib: Some(u.max_rss_kib as f64 / 1024.0),
        requests: Some(requests),
        exact: Some(exact),
    }
}

/// A proxy in front of the S3 server `t`.
pub fn proxy(t: &S3Target, delay: Duration) -> LatencyProxy {
    LatencyProxy::in_front_of(&t.endpoint, delay)
        .unwrap_or_else(|e| panic!("history: latency proxy before {}: {e}", t.endpoint))
}

/// Builds a replica the way `tool` (walship or Litestream v0.3.13) writes it: `replicate` with
/// `max-checkpoint-page-count: 20` under a writer committing `rate` small transactions a second
/// for `secs`, so the history holds many WAL indexes (each restored with a checkpoint of its
/// own). Returns the replica and its content once the replicator has stopped.
pub fn replicated_with_many_indexes(
    name: &str,
    bin: &Path,
    t: &S3Target,
    dir: &Path,
    secs: f64,
    rate: u32,
) -> Option<History> {
    let t0 = Instant::now();
    let bucket = block_on(t.new_bucket(&format!("indexes-{name}")));
    let path = "app.db".to_string();
    let db_path = dir.join("app.db");
    let mut w = Writer::new(&db_path, 11);
    w.tx_small();
    let cfg = t.write_config(
        dir,
        &db_path,
        &bucket,
        &path,
        "    max-checkpoint-page-count: 20\n",
        "",
    );
    let mut p = walship_integration::Proc::spawn(
        bin,
        &["replicate", "-config", cfg.to_str().unwrap()],
        &dir.join(format!("{name}-replicate.log")),
    );
    let snapshot = || {
        block_on(t.keys(&bucket, &format!("{path}/generations/")))
            .iter()
            .any(|k| k.contains("/snapshots/"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !snapshot() {
        if Instant::now() > deadline || p.wait_exit(Duration::from_millis(100)).is_some() {
            eprintln!(
                "indexes: {name} made no snapshot in 60 s:\n{}",
                p.log_text()
            );
            p.stop();
            return None;
        }
    }
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut i = 0u32;
    while start.elapsed().as_secs_f64() < secs {
        if let Some(s) = (start + period * i).checked_duration_since(Instant::now()) {
            std::thread::sleep(s);
        }
        w.tx_small();
        i += 1;
    }
    // Both tools ship what is left on a clean stop (v0.3.13 within its sync-interval).
    std::thread::sleep(Duration::from_secs(2));
    let code = p.stop();
    if code != 0 {
        eprintln!("indexes: {name} replicate exited {code}:\n{}", p.log_text());
    }
    drop(w);
    Some(History::listed(t, bucket, path, db_path, t0))
}

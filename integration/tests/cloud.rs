//! GCS (fake-gcs-server) and Azure Blob Storage (Azurite) end to end, through the walship binary
//! and Litestream v0.3.13: each tool restores the other's replica exactly, walship's replica has
//! no gap, and `walship check` names what is wrong with a replica (issue 20). The behaviour
//! suite (tests/behaviour.rs) covers the storage operations themselves.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use walship_core::replica::DynReplica;
use walship_integration::cloud::{new_prefix, AbsTarget, GcsTarget};
use walship_integration::faults::{FaultPlan, FaultProxy};
use walship_integration::latency::LatencyProxy;
use walship_integration::oracle::assert_no_wal_gap;
use walship_integration::*;

/// One heavy test at a time on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Keeps Litestream from checkpointing (its checkpoint race is not under test here; see
/// tests/litestream_compat.rs).
const NO_LITESTREAM_CHECKPOINTS: &str =
    "    min-checkpoint-page-count: 1000000\n    max-checkpoint-page-count: 2000000\n    checkpoint-interval: 1h\n";

/// A replica on one of the emulators, as the tests need it.
trait Cloud {
    fn name(&self) -> &'static str;
    /// The replica section's YAML lines (indented for `replicas:`).
    fn yaml(&self, prefix: &str) -> String;
    fn replica(&self, prefix: &str) -> DynReplica;
    /// The emulator's address, for a proxy in front of it.
    fn upstream(&self) -> SocketAddr;
    /// The YAML lines and the environment that send walship through a proxy at `via`
    /// (`http://host:port`).
    fn through(&self, prefix: &str, via: &str) -> (String, Vec<(&'static str, String)>);
}

fn socket(host_port: &str) -> SocketAddr {
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("not host:port: {host_port}"))
}

impl Cloud for GcsTarget {
    fn name(&self) -> &'static str {
        "gcs"
    }
    fn yaml(&self, prefix: &str) -> String {
        GcsTarget::yaml(self, prefix)
    }
    fn replica(&self, prefix: &str) -> DynReplica {
        GcsTarget::replica(self, prefix)
    }
    fn upstream(&self) -> SocketAddr {
        socket(self.emulator_host.trim_start_matches("http://"))
    }
    fn through(&self, prefix: &str, via: &str) -> (String, Vec<(&'static str, String)>) {
        (
            self.yaml(prefix),
            vec![("STORAGE_EMULATOR_HOST", via.to_owned())],
        )
    }
}

impl Cloud for AbsTarget {
    fn name(&self) -> &'static str {
        "abs"
    }
    fn yaml(&self, prefix: &str) -> String {
        AbsTarget::yaml(self, prefix)
    }
    fn replica(&self, prefix: &str) -> DynReplica {
        AbsTarget::replica(self, prefix)
    }
    fn upstream(&self) -> SocketAddr {
        let rest = self.endpoint.trim_start_matches("http://");
        socket(rest.split('/').next().unwrap_or(rest))
    }
    fn through(&self, prefix: &str, via: &str) -> (String, Vec<(&'static str, String)>) {
        let t = AbsTarget {
            endpoint: format!("{via}/{}", self.account),
            ..self.clone()
        };
        (t.yaml(prefix), Vec::new())
    }
}

struct Case {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    db: PathBuf,
    cfg: PathBuf,
    prefix: String,
}

fn case(c: &dyn Cloud, tag: &str, extra_db: &str) -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let db = dir.join("app.db");
    // A tag starting with `/` gives a `path:` starting with one (v0.3.13 kept it in GCS names).
    let prefix = match tag.strip_prefix('/') {
        Some(t) => format!("/{}", new_prefix(t)),
        None => new_prefix(tag),
    };
    let cfg = dir.join("litestream.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n{extra_db}    replicas:\n{}        sync-interval: 200ms\n",
            db.display(),
            c.yaml(&prefix)
        ),
    )
    .unwrap();
    Case {
        _tmp: tmp,
        dir,
        db,
        cfg,
        prefix,
    }
}

fn keys(c: &dyn Cloud, prefix: &str) -> Vec<String> {
    block_on(c.replica(prefix).list("generations/"))
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

fn wal_indexes(c: &dyn Cloud, prefix: &str) -> std::collections::BTreeSet<String> {
    keys(c, prefix)
        .into_iter()
        .filter(|k| k.contains("/wal/"))
        .filter_map(|k| Some(k.rsplit('/').next()?.split('_').next()?.to_string()))
        .collect()
}

fn wait_snapshot(c: &dyn Cloud, prefix: &str, p: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !keys(c, prefix).iter().any(|k| k.contains("/snapshots/")) {
        if let Some(code) = p.wait_exit(Duration::from_millis(200)) {
            panic!("replicator exited with {code}:\n{}", p.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot on {} under {prefix} after 30 s; log:\n{}",
            c.name(),
            p.log_text()
        );
    }
}

fn restore(bin: &Path, s: &Case, out: &Path) -> std::process::Output {
    let _ = std::fs::remove_file(out);
    run(
        bin,
        &[
            "restore",
            "-config",
            s.cfg.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            s.db.to_str().unwrap(),
        ],
    )
}

fn assert_restored(o: &std::process::Output, out: &Path, want: &str, how: &str) {
    assert!(
        o.status.success(),
        "{how} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(integrity(out), "ok", "{how}: integrity_check");
    assert_eq!(digest(out), want, "{how}: restored content differs");
}

/// walship replicates (through WAL restarts, at the default checkpoint settings); walship and
/// Litestream v0.3.13 both restore it exactly, and no WAL segment is missing.
fn walship_replica_restores_with_both_tools(c: &dyn Cloud) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = case(c, "ws-replica", "");
    let mut w = Writer::new(&s.db, 31);
    for _ in 0..20 {
        w.tx();
    }
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", s.cfg.to_str().unwrap()],
        &s.dir.join("walship.log"),
    );
    wait_snapshot(c, &s.prefix, &mut p);
    for _ in 0..3000 {
        w.tx();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while wal_indexes(c, &s.prefix).len() < 2 && Instant::now() < deadline {
        for _ in 0..200 {
            w.tx();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let want = digest(&s.db);
    assert_eq!(p.stop(), 0, "walship exit code; log:\n{}", p.log_text());
    drop(w);
    let log = p.log_text();
    assert!(!log.contains("ERROR"), "{log}");
    assert!(
        wal_indexes(c, &s.prefix).len() >= 2,
        "expected the WAL to restart at least once: {:?}",
        wal_indexes(c, &s.prefix)
    );
    let out = s.dir.join("walship-restored.db");
    assert_restored(
        &restore(&walship_bin(), &s, &out),
        &out,
        &want,
        "walship restore",
    );
    let n = block_on(assert_no_wal_gap(&c.replica(&s.prefix)));
    if let Some(ls) = litestream_bin() {
        let out = s.dir.join("ls-restored.db");
        assert_restored(
            &restore(&ls, &s, &out),
            &out,
            &want,
            "litestream v0.3.13 restore of walship's replica",
        );
    }
    eprintln!(
        "{}: walship's replica ({n} segments) restored by both tools: {want}",
        c.name()
    );
}

/// Litestream v0.3.13 replicates; walship restores it exactly.
fn litestream_replica_restores_with_walship(c: &dyn Cloud) {
    let Some(ls) = litestream_bin() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = case(c, "ls-replica", NO_LITESTREAM_CHECKPOINTS);
    let mut w = Writer::new(&s.db, 32);
    for _ in 0..20 {
        w.tx();
    }
    let mut p = Proc::spawn(
        &ls,
        &["replicate", "-config", s.cfg.to_str().unwrap()],
        &s.dir.join("litestream.log"),
    );
    wait_snapshot(c, &s.prefix, &mut p);
    for _ in 0..2000 {
        w.tx();
    }
    let want = digest(&s.db);
    match p.stop_within(Duration::from_secs(30)) {
        Some(code) => assert_eq!(code, 0, "litestream exit code; log:\n{}", p.log_text()),
        None => eprintln!(
            "litestream hung at shutdown and was killed; log:\n{}",
            p.log_text()
        ),
    }
    drop(w);
    let out = s.dir.join("ws-restored.db");
    assert_restored(
        &restore(&walship_bin(), &s, &out),
        &out,
        &want,
        "walship restore of Litestream's replica",
    );
    eprintln!(
        "{}: walship restored Litestream v0.3.13's replica: {want}",
        c.name()
    );
}

/// `walship check` passes on a good replica and names the cause on a bad one, with exit 1.
fn check_names_what_is_wrong(c: &dyn Cloud, bad: &str, cause: &str) {
    let s = case(c, "check", "");
    let mut w = Writer::new(&s.db, 33);
    w.tx();
    let ok = run(
        &walship_bin(),
        &["check", "-config", s.cfg.to_str().unwrap()],
    );
    assert!(
        ok.status.success(),
        "check of a good replica: {}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    let cfg = s.dir.join("bad.yml");
    std::fs::write(
        &cfg,
        format!("dbs:\n  - path: {}\n    replicas:\n{bad}", s.db.display()),
    )
    .unwrap();
    let o = run(&walship_bin(), &["check", "-config", cfg.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains(cause), "expected {cause:?} in:\n{text}");
}

#[test]
fn gcs_walship_replica_restores_with_both_tools() {
    if let Some(t) = GcsTarget::from_env() {
        walship_replica_restores_with_both_tools(&t);
    }
}

#[test]
fn gcs_litestream_replica_restores_with_walship() {
    if let Some(t) = GcsTarget::from_env() {
        litestream_replica_restores_with_walship(&t);
    }
}

/// The object names a client sent (percent-decoded): `name=` and `prefix=` in request targets,
/// `"name":"..."` in JSON metadata (where Go's client puts an upload's name).
fn names_sent(sent: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(sent);
    let mut out = Vec::new();
    for marker in ["?name=", "&name=", "?prefix=", "&prefix="] {
        for (i, _) in text.match_indices(marker) {
            let v = &text[i + marker.len()..];
            let end = v
                .find(|c: char| c == '&' || c.is_whitespace())
                .unwrap_or(v.len());
            let v = v[..end].replace('+', " ");
            out.push(
                percent_encoding::percent_decode_str(&v)
                    .decode_utf8_lossy()
                    .into_owned(),
            );
        }
    }
    for (i, _) in text.match_indices("\"name\":") {
        let v = text[i + 7..].trim_start();
        if let Some(v) = v.strip_prefix('"') {
            if let Some(end) = v.find('"') {
                out.push(v[..end].to_owned());
            }
        }
    }
    out
}

/// A name's shape: path components (before any `.`) made of hex digits, which are generation
/// ids, indexes and offsets, as `x`s.
fn shape(name: &str) -> String {
    name.split('/')
        .map(|c| {
            let (head, tail) = c.split_at(c.find('.').unwrap_or(c.len()));
            if !head.is_empty() && head.chars().all(|ch| ch.is_ascii_hexdigit()) {
                format!("{}{tail}", "x".repeat(head.len()))
            } else {
                c.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// v0.3.13 joins a `path:` starting with `/` into GCS object names as it stands
/// (`/backups/app/generations/...`; GCS keeps such names, Google's naming page uses
/// `/europe/france/paris.jpg` as its example), so walship must name its objects the same way or
/// neither tool finds the other's replica on GCS. fake-gcs-server drops a leading `/` when it
/// stores an upload (fsouza/fake-gcs-server#349), so the bucket cannot show it: this compares the
/// names each tool *sends*, recorded by a proxy in front of the emulator.
#[test]
fn gcs_path_with_a_leading_slash_names_objects_as_v0_3() {
    let Some(t) = GcsTarget::from_env() else {
        return;
    };
    let Some(ls) = litestream_bin() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut shapes = Vec::new();
    for (tool, bin) in [("litestream", ls), ("walship", walship_bin())] {
        let proxy = LatencyProxy::recording(t.upstream()).unwrap();
        let s = case(&t, &format!("/{tool}-slash"), NO_LITESTREAM_CHECKPOINTS);
        assert!(s.prefix.starts_with('/'));
        let mut w = Writer::new(&s.db, 36);
        for _ in 0..20 {
            w.tx();
        }
        let via = proxy.addr().to_string();
        let mut p = Proc::spawn_env(
            &bin,
            &["replicate", "-config", s.cfg.to_str().unwrap()],
            &s.dir.join(format!("{tool}.log")),
            &[("STORAGE_EMULATOR_HOST", via.as_str())],
        );
        let core = &s.prefix[1..];
        let ours = |proxy: &LatencyProxy| -> Vec<String> {
            let sent = proxy.counts().sent.lock().unwrap().clone();
            names_sent(&sent)
                .into_iter()
                .filter(|n| n.contains(core))
                .collect()
        };
        // The emulator stores the upload without the `/`, so neither tool finds its snapshot
        // there again, and neither goes on to WAL segments: a snapshot's name is what compares.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ours(&proxy).iter().any(|n| n.contains("/snapshots/")) {
            if let Some(code) = p.wait_exit(Duration::ZERO) {
                panic!("{tool} exited with {code}:\n{}", p.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{tool} sent no snapshot name under {} in 30 s: {:?}\nlog:\n{}",
                s.prefix,
                ours(&proxy),
                p.log_text()
            );
            w.tx();
            std::thread::sleep(Duration::from_millis(200));
        }
        // A few more rounds of listings and uploads.
        std::thread::sleep(Duration::from_secs(2));
        p.kill9();
        let names = ours(&proxy);
        for n in &names {
            assert!(
                n.starts_with(&format!("{}/", s.prefix)),
                "{tool} sent the name {n:?}, not under {}/",
                s.prefix
            );
        }
        let mut uploaded: Vec<String> = names
            .iter()
            .filter(|n| n.ends_with(".snapshot.lz4"))
            .map(|n| shape(&n[s.prefix.len()..]))
            .collect();
        uploaded.sort();
        uploaded.dedup();
        eprintln!(
            "gcs: {tool} under {}: {} names, shapes {uploaded:?}",
            s.prefix,
            names.len()
        );
        shapes.push(uploaded);
    }
    assert_eq!(
        shapes[0], shapes[1],
        "walship's object names differ in shape from v0.3.13's (left v0.3.13, right walship)"
    );
}

#[test]
fn abs_walship_replica_restores_with_both_tools() {
    if let Some(t) = AbsTarget::from_env() {
        walship_replica_restores_with_both_tools(&t);
    }
}

#[test]
fn abs_litestream_replica_restores_with_walship() {
    if let Some(t) = AbsTarget::from_env() {
        litestream_replica_restores_with_walship(&t);
    }
}

#[test]
fn gcs_check_names_a_missing_bucket() {
    if let Some(t) = GcsTarget::from_env() {
        check_names_what_is_wrong(
            &t,
            "      - url: gcs://no-such-bucket-walship/x\n",
            "gcs://no-such-bucket-walship/x",
        );
    }
}

#[test]
fn abs_check_names_a_wrong_key_and_hides_it() {
    if let Some(t) = AbsTarget::from_env() {
        let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
        let bad = format!(
            "      - type: abs\n        account-name: {}\n        account-key: {wrong}\n        bucket: {}\n        endpoint: {}\n",
            t.account, t.container, t.endpoint
        );
        check_names_what_is_wrong(&t, &bad, "FAILED auth");
        let s = case(&t, "check-secret", "");
        Writer::new(&s.db, 34).tx();
        let cfg = s.dir.join("bad.yml");
        std::fs::write(
            &cfg,
            format!("dbs:\n  - path: {}\n    replicas:\n{bad}", s.db.display()),
        )
        .unwrap();
        let o = run(&walship_bin(), &["check", "-config", cfg.to_str().unwrap()]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!text.contains(wrong), "the key is in the output:\n{text}");
    }
}

/// A 1 GiB database (`WALSHIP_CLOUD_BIG_MIB` to change the size): its snapshot goes up in a
/// multipart upload and comes back in one streamed download, replicate and restore each below
/// 100 MiB of peak RSS, restored exactly.
fn big_database_in_bounded_memory(c: &dyn Cloud) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mib = knob("WALSHIP_CLOUD_BIG_MIB", 1024) as u64;
    let s = case(c, "big", "");
    let t0 = Instant::now();
    build_big_db(&s.db, (mib << 20) / 1024);
    let want = digest(&s.db);
    let size = std::fs::metadata(&s.db).unwrap().len();
    eprintln!(
        "{}: built a {:.2} GiB database in {:?}",
        c.name(),
        size as f64 / (1u64 << 30) as f64,
        t0.elapsed()
    );
    let t1 = Instant::now();
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", s.cfg.to_str().unwrap()],
        &s.dir.join("walship.log"),
    );
    let mut hwm_kib = 0;
    let deadline = Instant::now() + Duration::from_secs(900);
    while !keys(c, &s.prefix).iter().any(|k| k.contains("/snapshots/")) {
        hwm_kib = hwm_kib.max(proc_status_kib(p.pid(), "VmHWM"));
        assert!(
            p.wait_exit(Duration::from_millis(500)).is_none(),
            "{}",
            p.log_text()
        );
        assert!(
            Instant::now() < deadline,
            "no snapshot after 900 s:\n{}",
            p.log_text()
        );
    }
    hwm_kib = hwm_kib.max(proc_status_kib(p.pid(), "VmHWM"));
    let snap_wall = t1.elapsed();
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    let out = s.dir.join("restored.db");
    let t2 = Instant::now();
    let (o, restore_kib) = run_with_max_rss(
        &walship_bin(),
        &[
            "restore",
            "-config",
            s.cfg.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            s.db.to_str().unwrap(),
        ],
    );
    assert_restored(&o, &out, &want, "restore of the big database");
    eprintln!(
        "{}: {mib} MiB: snapshot uploaded in {snap_wall:?} with peak RSS {:.1} MiB; restored in {:?} with peak RSS {:.1} MiB",
        c.name(),
        hwm_kib as f64 / 1024.0,
        t2.elapsed(),
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

#[test]
fn gcs_big_database_in_bounded_memory() {
    if let Some(t) = GcsTarget::from_env() {
        big_database_in_bounded_memory(&t);
    }
}

#[test]
fn abs_big_database_in_bounded_memory() {
    if let Some(t) = AbsTarget::from_env() {
        big_database_in_bounded_memory(&t);
    }
}

/// With at least 150 injected network faults (`WALSHIP_FAULTS` to change the count; resets mid-request, dropped and truncated
/// responses, stalls) between walship and the emulator during a write workload, replication
/// goes on, no WAL gap is uploaded, one generation, and the final restore is exact.
fn replication_survives_network_faults(c: &dyn Cloud) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = case(c, "faults", "");
    let faults = knob("WALSHIP_FAULTS", 150) as u64;
    let proxy = FaultProxy::start(
        c.upstream(),
        FaultPlan {
            seed: 17,
            ..FaultPlan::default()
        },
    );
    let (yaml, env) = c.through(&s.prefix, &proxy.endpoint());
    let cfg = s.dir.join("via-proxy.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    monitor-interval: 100ms\n    replicas:\n{yaml}        sync-interval: 200ms\n        operation-timeout: 2s\n        snapshot-interval: 20s\n",
            s.db.display()
        ),
    )
    .unwrap();
    let mut w = Writer::new(&s.db, 35);
    for _ in 0..20 {
        w.tx();
    }
    let mut envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.push(("WALSHIP_RETRY_MAX_DELAY", "500ms"));
    let mut p = Proc::spawn_env(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &s.dir.join("walship.log"),
        &envs,
    );
    wait_snapshot(c, &s.prefix, &mut p);
    proxy.set_enabled(true);
    let t0 = Instant::now();
    let before = keys(c, &s.prefix).len();
    while proxy.counts.total() < faults {
        if let Some(code) = p.wait_exit(Duration::ZERO) {
            panic!("walship exited with {code} under faults:\n{}", p.log_text());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(200),
            "only {} after 200 s; log:\n{}",
            proxy.counts.summary(),
            p.log_text()
        );
        for _ in 0..10 {
            w.tx();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy.set_enabled(false);
    eprintln!(
        "{}: fault phase {} in {:?}",
        c.name(),
        proxy.counts.summary(),
        t0.elapsed()
    );
    let after = keys(c, &s.prefix).len();
    assert!(
        after > before + 10,
        "replication did not go on under faults: {before} -> {after} objects"
    );
    for _ in 0..100 {
        w.tx();
    }
    let want = digest(&s.db);
    // Caught up: a restore through the emulator directly equals the database.
    let out = s.dir.join("restored.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = restore(&walship_bin(), &s, &out);
        if o.status.success() && digest(&out) == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up 60 s after the faults; log:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(p.stop(), 0, "walship exit code; log:\n{}", p.log_text());
    drop(w);
    assert_eq!(integrity(&out), "ok");
    let segs = block_on(assert_no_wal_gap(&c.replica(&s.prefix)));
    let gens = generations_listed(&s.cfg, &s.db);
    assert_eq!(
        gens.len(),
        1,
        "faults started generations {gens:?}; log:\n{}",
        p.log_text()
    );
    eprintln!(
        "{}: no WAL gap over {segs} segments, one generation, restore exact",
        c.name()
    );
    drop(proxy);
}

#[test]
fn gcs_replication_survives_network_faults() {
    if let Some(t) = GcsTarget::from_env() {
        replication_survives_network_faults(&t);
    }
}

#[test]
fn abs_replication_survives_network_faults() {
    if let Some(t) = AbsTarget::from_env() {
        replication_survives_network_faults(&t);
    }
}

/// Litestream v0.3.13 replicates, stops; walship starts on the same configuration and continues
/// Litestream's generation; then the other way round. Each tool's restore is exact at the end.
fn handover_both_ways_continues_the_generation(c: &dyn Cloud) {
    let Some(ls) = litestream_bin() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = case(c, "handover", NO_LITESTREAM_CHECKPOINTS);
    let mut w = Writer::new(&s.db, 36);
    for _ in 0..20 {
        w.tx();
    }
    let spawn = |bin: &Path, log: &str| {
        Proc::spawn(
            bin,
            &["replicate", "-config", s.cfg.to_str().unwrap()],
            &s.dir.join(log),
        )
    };
    let stop = |p: &mut Proc, who: &str| match p.stop_within(Duration::from_secs(30)) {
        Some(code) => assert_eq!(code, 0, "{who} exit code; log:\n{}", p.log_text()),
        None => eprintln!(
            "{who} hung at shutdown and was killed; log:\n{}",
            p.log_text()
        ),
    };
    let mut p = spawn(&ls, "litestream-1.log");
    wait_snapshot(c, &s.prefix, &mut p);
    for _ in 0..500 {
        w.tx();
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop(&mut p, "litestream");
    let first = generations_listed(&s.cfg, &s.db);
    assert_eq!(first.len(), 1, "{first:?}");
    // Writes wait for each replicator to hold the database: a commit in between would let the
    // application restart the WAL (nothing pins it) and rightly cost a new generation.
    let started = |p: &Proc, what: &[&str]| what.iter().any(|w| p.log_text().contains(w));
    let mut p = spawn(&walship_bin(), "walship.log");
    wait_until(Duration::from_secs(30), "walship to start", || {
        started(&p, &["continuing generation", "new generation"])
    });
    for _ in 0..500 {
        w.tx();
    }
    let want = digest(&s.db);
    let out = s.dir.join("mid.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(restore(&walship_bin(), &s, &out).status.success() && digest(&out) == want) {
        assert!(
            Instant::now() < deadline,
            "walship did not catch up; log:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    let log = p.log_text();
    assert!(
        !log.contains("new generation"),
        "walship started a generation:\n{log}"
    );
    assert_eq!(
        generations_listed(&s.cfg, &s.db),
        first,
        "one generation after the handover"
    );
    let mut p = spawn(&ls, "litestream-2.log");
    wait_until(Duration::from_secs(30), "litestream to start", || {
        started(&p, &["initialized db"])
    });
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..300 {
        w.tx();
    }
    std::thread::sleep(Duration::from_millis(2500));
    stop(&mut p, "litestream");
    drop(w);
    let want = digest(&s.db);
    assert_eq!(
        generations_listed(&s.cfg, &s.db),
        first,
        "one generation after handing back"
    );
    for (bin, how) in [(&walship_bin(), "walship"), (&ls, "litestream")] {
        let out = s.dir.join(format!("{how}-final.db"));
        assert_restored(
            &restore(bin, &s, &out),
            &out,
            &want,
            &format!("{how} restore after both handovers"),
        );
    }
    eprintln!(
        "{}: handover both ways kept generation {first:?}: {want}",
        c.name()
    );
}

#[test]
fn gcs_handover_both_ways_continues_the_generation() {
    if let Some(t) = GcsTarget::from_env() {
        handover_both_ways_continues_the_generation(&t);
    }
}

#[test]
fn abs_handover_both_ways_continues_the_generation() {
    if let Some(t) = AbsTarget::from_env() {
        handover_both_ways_continues_the_generation(&t);
    }
}

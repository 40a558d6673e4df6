//! The behaviour suite against every backend: the file backend always, S3 against the server
//! in `TEST_S3_*` (scripts/test.sh starts SeaweedFS; each test makes its own bucket), and the
//! replicate → restore round trip through the walship binary against S3.

use std::future::Future;
use std::process::Command;
use std::time::Duration;
use walship_core::registry::{self, ReplicaSettings};
use walship_core::replica::DynReplica;
use walship_core::retry::{RetryLayer, RetryPolicy};
use walship_integration::behaviour;
use walship_integration::cloud::{self, AbsTarget, GcsTarget};
use walship_integration::s3::S3Target;
use walship_integration::sftp::SftpTarget;
use walship_integration::*;

fn file_replica(dir: &std::path::Path) -> DynReplica {
    let s = ReplicaSettings {
        name: "file".into(),
        kind: "file".into(),
        path: Some(dir.join("replica").to_string_lossy().into_owned()),
        ..Default::default()
    };
    std::sync::Arc::new(RetryLayer::new(
        registry::open(&s).expect("open file replica"),
        RetryPolicy::default(),
    ))
}

async fn on_file<F, Fut>(f: F)
where
    F: FnOnce(DynReplica) -> Fut,
    Fut: Future<Output = ()>,
{
    let d = tempfile::tempdir().unwrap();
    f(file_replica(d.path())).await;
}

/// Runs a behaviour on a fresh bucket, under a key prefix like a real deployment's.
async fn on_s3<F, Fut>(tag: &str, f: F)
where
    F: FnOnce(DynReplica) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let bucket = t.new_bucket(tag).await;
    f(t.replica(&bucket, "backups/app.db")).await;
}

/// Runs a behaviour in a fresh directory of its own under the SFTP root (not created first: the
/// backend creates missing directories).
async fn on_sftp<F, Fut>(tag: &str, f: F)
where
    F: FnOnce(DynReplica) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    f(t.replica(&t.new_dir(tag))).await;
}

/// Runs a behaviour under a fresh key prefix of the GCS emulator's bucket.
async fn on_gcs<F, Fut>(tag: &str, f: F)
where
    F: FnOnce(DynReplica) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(t) = GcsTarget::from_env() else {
        return;
    };
    f(t.replica(&cloud::new_prefix(tag))).await;
}

/// Runs a behaviour under a fresh key prefix of Azurite's container.
async fn on_abs<F, Fut>(tag: &str, f: F)
where
    F: FnOnce(DynReplica) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(t) = AbsTarget::from_env() else {
        return;
    };
    f(t.replica(&cloud::new_prefix(tag))).await;
}

macro_rules! behaviour_tests {
    ($($name:ident),* $(,)?) => {
        mod file {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    on_file(behaviour::$name).await;
                }
            )*
        }
        mod s3 {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    on_s3(stringify!($name), behaviour::$name).await;
                }
            )*
        }
        mod sftp {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    on_sftp(stringify!($name), behaviour::$name).await;
                }
            )*
        }
        mod gcs {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    on_gcs(stringify!($name), behaviour::$name).await;
                }
            )*
        }
        mod abs {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    on_abs(stringify!($name), behaviour::$name).await;
                }
            )*
        }
    };
}

behaviour_tests!(
    round_trip,
    many_keys,
    list_after,
    large_object,
    missing_keys,
    overwrite,
    concurrent_puts,
    check
);

/// An empty prefix is the bucket root; a trailing `/` is cleaned as v0.3.13's `path.Join` does.
/// (A leading `/` is kept verbatim, as on AWS; SeaweedFS strips it from keys, so that case is
/// covered by the crate's unit tests only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_prefix_forms() {
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let bucket = t.new_bucket("prefix-forms").await;
    for path in ["", "a/b/"] {
        behaviour::overwrite(t.replica(&bucket, path)).await;
    }
    let out = t
        .sdk()
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![
            "a/b/generations/00000000000000cc/wal/00000000_00000000.wal.lz4",
            "generations/00000000000000cc/wal/00000000_00000000.wal.lz4",
        ]
    );
}

/// Wrong credentials: a permission error naming the bucket, not retried, secret not shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_bad_credentials_are_permanent_and_redacted() {
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let bucket = t.new_bucket("bad-creds").await;
    let mut s = t.settings(&bucket, "p");
    s.options.insert(
        "secret-access-key".into(),
        "WRONG-SECRET-do-not-print".into(),
    );
    let r = registry::open(&s).unwrap();
    let started = std::time::Instant::now();
    let e = r.list("generations/").await.unwrap_err();
    assert_eq!(e.kind(), walship_core::ErrorKind::PermissionDenied, "{e}");
    assert!(!e.is_retryable());
    let msg = format!("{e} {e:?}");
    assert!(msg.contains(&bucket), "{msg}");
    assert!(!msg.contains("WRONG-SECRET"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let e = t
        .replica("no-such-bucket-walship", "p")
        .list("")
        .await
        .unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("no-such-bucket-walship"), "{e}");
}

/// replicate → restore through the walship binary against S3, credentials from the child's
/// environment (AWS_* for replicate, LITESTREAM_* for restore), exact digest.
#[test]
fn s3_replicate_restore_round_trip() {
    let Some(t) = S3Target::from_env() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(t.new_bucket("e2e"));
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("app.db");
    let cfg = d.path().join("litestream.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    monitor-interval: 100ms\n    replicas:\n      - type: s3\n        bucket: {bucket}\n        path: servers/one/app.db\n        endpoint: {}\n        region: {}\n        force-path-style: true\n        sync-interval: 100ms\n        operation-timeout: 30s\n",
            db.display(),
            t.endpoint,
            t.region
        ),
    )
    .unwrap();
    let mut w = Writer::new(&db, 7);
    for _ in 0..300 {
        w.tx();
    }
    let log = d.path().join("walship.log");
    let logf = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(walship_bin())
        .args(["replicate", "-config", cfg.to_str().unwrap()])
        .env_remove("WALSHIP_CONFIG")
        .env_remove("LITESTREAM_CONFIG")
        .env_remove("LITESTREAM_ACCESS_KEY_ID")
        .env_remove("LITESTREAM_SECRET_ACCESS_KEY")
        .env("AWS_ACCESS_KEY_ID", &t.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &t.secret_key)
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .unwrap();
    for i in 0..2000 {
        w.tx();
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let want = digest(&db);
    drop(w);
    std::thread::sleep(Duration::from_millis(500));
    unsafe_kill(child.id(), 15);
    let st = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(st.code(), Some(0), "clean stop; log:\n{text}");
    assert!(!text.contains("ERROR"), "errors in walship log:\n{text}");
    assert!(!text.contains(&t.secret_key), "secret in log:\n{text}");

    let out = d.path().join("restored.db");
    let o = Command::new(walship_bin())
        .args([
            "restore",
            "-config",
            cfg.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            db.to_str().unwrap(),
        ])
        .env_remove("WALSHIP_CONFIG")
        .env_remove("LITESTREAM_CONFIG")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("LITESTREAM_ACCESS_KEY_ID", &t.access_key)
        .env("LITESTREAM_SECRET_ACCESS_KEY", &t.secret_key)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "restore failed: {}{}\nreplicate log:\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(integrity(&out), "ok");
    assert_eq!(digest(&out), want);
    // The objects are where v0.3.13 puts them.
    let keys = rt.block_on(async {
        let out = t
            .sdk()
            .list_objects_v2()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect::<Vec<_>>()
    });
    assert!(
        keys.iter()
            .any(|k| k.starts_with("servers/one/app.db/generations/")
                && k.ends_with(".snapshot.lz4")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .all(|k| k.starts_with("servers/one/app.db/generations/")),
        "{keys:?}"
    );
}

fn unsafe_kill(pid: u32, sig: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        kill(pid as i32, sig);
    }
}

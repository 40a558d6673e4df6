//! SFTP end to end against real OpenSSH sshd: host-key verification (pinned, known_hosts,
//! unknown, changed, insecure), key types and encrypted keys, password logins, the replicate →
//! restore round trip through the walship binary, a server restart during replication, and the
//! clear one-line errors for bad credentials and permissions (run as an unprivileged user, since
//! CI runs as root, which ignores file modes).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use walship_core::registry::{self, ReplicaSettings};
use walship_core::ErrorKind;
use walship_integration::sftp::{keygen, unprivileged_user, user_ids, PrivateSshd, SftpTarget};
use walship_integration::*;

/// The main server's host key as a pin (`type base64`), from the known_hosts file.
fn main_host_key(t: &SftpTarget) -> String {
    let text = std::fs::read_to_string(&t.known_hosts).unwrap();
    text.split_whitespace()
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A directory the unprivileged user can read (tempdirs are 0700).
fn open_tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A config with one database and the given replica section.
fn config(dir: &Path, replica_yaml: &str) -> (PathBuf, PathBuf) {
    let db = dir.join("app.db");
    let cfg = dir.join("litestream.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    monitor-interval: 100ms\n    replicas:\n{replica_yaml}",
            db.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    (cfg, db)
}

/// Replica section lines (`      - type: sftp` ...) from key/value pairs.
fn section(pairs: &[(&str, String)]) -> String {
    let mut s = "      - type: sftp\n        sync-interval: 100ms\n".to_string();
    for (k, v) in pairs {
        s.push_str(&format!("        {k}: {v}\n"));
    }
    s
}

/// `walship restore -config cfg` (it lists the replica first), optionally as another user.
fn restore_cmd(cfg: &Path, as_user: Option<(u32, u32)>) -> Output {
    // The unprivileged user may not reach the build tree (a clone under /root): run a copy.
    let bin_dir = open_tempdir();
    let bin = match as_user {
        Some(_) => {
            let b = bin_dir.path().join("walship");
            std::fs::copy(walship_bin(), &b).unwrap();
            std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o755)).unwrap();
            b
        }
        None => walship_bin(),
    };
    let mut c = Command::new(bin);
    let db = cfg.with_file_name("app.db");
    let out = cfg.with_file_name("restored.db");
    c.args([
        "restore",
        "-config",
        cfg.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        db.to_str().unwrap(),
    ])
    .env_remove("WALSHIP_CONFIG")
    .env_remove("LITESTREAM_CONFIG");
    if let Some((uid, gid)) = as_user {
        c.uid(uid).gid(gid).env("HOME", "/nonexistent");
    }
    c.output().expect("run walship")
}

/// Exit code 1 and exactly one `error:` line on stderr (log lines aside); returns it.
fn one_line_error(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(
        o.status.code(),
        Some(1),
        "exit code; stdout: {} stderr: {err}",
        String::from_utf8_lossy(&o.stdout)
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

fn base_pairs(t: &SftpTarget, port: u16, dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("host", format!("{}:{port}", t.host)),
        ("user", t.user.clone()),
        ("key-path", t.key.display().to_string()),
        ("path", dir.display().to_string()),
    ]
}

fn settings(pairs: &[(&str, String)]) -> ReplicaSettings {
    let mut s = ReplicaSettings {
        name: "sftp".into(),
        kind: "sftp".into(),
        ..Default::default()
    };
    for (k, v) in pairs {
        if *k == "path" {
            s.path = Some(v.clone());
        } else {
            s.options.insert(k.to_string(), v.clone());
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_host_key_accepted_wrong_pin_refused() {
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    let dir = t.new_dir("pinned");
    let mut pairs = base_pairs(&t, t.port, &dir);
    pairs.push(("host-key", main_host_key(&t)));
    let r = registry::open(&settings(&pairs)).unwrap();
    r.check().await.expect("pinned key accepted");
    // The same with a SHA256 fingerprint as the pin.
    let pubfile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pubfile.path(), main_host_key(&t)).unwrap();
    let fp = String::from_utf8(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(pubfile.path())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    pairs.pop();
    pairs.push(("host-key", fp.clone()));
    registry::open(&settings(&pairs))
        .unwrap()
        .check()
        .await
        .expect("fingerprint pin");
    // Another key pinned: refused, not retried, the message shows the real fingerprint.
    let d = tempfile::tempdir().unwrap();
    keygen(&d.path().join("other"), "ed25519", "");
    let other = std::fs::read_to_string(d.path().join("other.pub")).unwrap();
    pairs.pop();
    pairs.push(("host-key", other.trim().to_string()));
    let e = registry::open(&settings(&pairs))
        .unwrap()
        .list("")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(!e.is_retryable());
    let msg = e.to_string();
    assert!(
        msg.contains("does not match the pinned host-key") && msg.contains(&fp),
        "{msg}"
    );
    assert!(msg.contains("host-key: \"ssh-ed25519 "), "{msg}");
}

#[test]
fn unknown_host_refused_with_fingerprint_and_how_to_pin() {
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    let d = open_tempdir();
    let empty = d.path().join("known_hosts");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let mut pairs = base_pairs(&t, t.port, &t.new_dir("unknown"));
    pairs.push(("known-hosts-path", empty.display().to_string()));
    let (cfg, _) = config(d.path(), &section(&pairs));
    let line = one_line_error(&restore_cmd(&cfg, None));
    assert!(line.contains("unknown host key for [127.0.0.1]:"), "{line}");
    assert!(line.contains("SHA256:"), "{line}");
    assert!(
        line.contains(&format!("host-key: \"{}\"", main_host_key(&t))),
        "{line}"
    );
    assert!(line.contains("ssh-keyscan -p"), "{line}");
}

#[test]
fn changed_host_key_refused() {
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    // A second server with a key of its own, on a port of its own; known_hosts records the main
    // server's key for that port, as if the server had been replaced.
    let d = open_tempdir();
    let sshd = PrivateSshd::start(&PathBuf::from(format!("{}.pub", t.key.display())), false);
    let kh = d.path().join("known_hosts");
    std::fs::write(
        &kh,
        format!("[127.0.0.1]:{} {}\n", sshd.port, main_host_key(&t)),
    )
    .unwrap();
    let mut pairs = base_pairs(&t, sshd.port, &t.new_dir("changed"));
    pairs.push(("known-hosts-path", kh.display().to_string()));
    let (cfg, _) = config(d.path(), &section(&pairs));
    let line = one_line_error(&restore_cmd(&cfg, None));
    assert!(line.contains("HOST KEY CHANGED for [127.0.0.1]:"), "{line}");
    assert!(
        line.contains(&format!("line 1 of {}", kh.display())),
        "{line}"
    );
    // Its real key in known_hosts: accepted (an empty replica: nothing to restore).
    std::fs::write(&kh, sshd.known_hosts_line()).unwrap();
    let line = one_line_error(&restore_cmd(&cfg, None));
    assert_eq!(line, "error: no matching backups found");
}

#[test]
fn insecure_mode_accepted_with_a_warning() {
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    let d = open_tempdir();
    let mut pairs = base_pairs(&t, t.port, &t.new_dir("insecure"));
    pairs.push(("insecure-ignore-host-key", "true".into()));
    let (cfg, db) = config(d.path(), &section(&pairs));
    let o = walship(&[
        "generations",
        "-config",
        cfg.to_str().unwrap(),
        db.to_str().unwrap(),
    ]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{all}");
    assert!(
        all.contains("WARN") && all.contains("host key is NOT verified"),
        "{all}"
    );
}

/// ecdsa and rsa keys, an encrypted ed25519 key with its passphrase, a password login; and a
/// missing passphrase or a wrong one is a clear config error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_types_encrypted_keys_and_passwords() {
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut pubs = String::new();
    for (name, kind, pass) in [
        ("ecdsa", "ecdsa", ""),
        ("rsa", "rsa", ""),
        ("enc", "ed25519", "correct horse"),
    ] {
        keygen(&d.path().join(name), kind, pass);
        pubs.push_str(&std::fs::read_to_string(d.path().join(format!("{name}.pub"))).unwrap());
    }
    let ak = d.path().join("authorized");
    std::fs::write(&ak, pubs).unwrap();
    let unpriv = unprivileged_user();
    let sshd = PrivateSshd::start(&ak, unpriv.is_some());
    let kh = d.path().join("known_hosts");
    std::fs::write(&kh, sshd.known_hosts_line()).unwrap();
    let dir = t.new_dir("keys");
    let common = |extra: &[(&'static str, String)]| {
        let mut p = vec![
            ("host", format!("127.0.0.1:{}", sshd.port)),
            ("user", t.user.clone()),
            ("path", dir.display().to_string()),
            ("known-hosts-path", kh.display().to_string()),
        ];
        p.extend_from_slice(extra);
        settings(&p)
    };
    for (name, pass) in [
        ("ecdsa", None),
        ("rsa", None),
        ("enc", Some("correct horse")),
    ] {
        let mut extra = vec![("key-path", d.path().join(name).display().to_string())];
        if let Some(p) = pass {
            extra.push(("key-passphrase", p.to_string()));
        }
        registry::open(&common(&extra))
            .unwrap()
            .check()
            .await
            .unwrap_or_else(|e| panic!("{name} key: {e}"));
    }
    let enc = d.path().join("enc").display().to_string();
    let e = registry::open(&common(&[("key-path", enc.clone())])).unwrap_err();
    assert!(
        e.to_string().contains("is encrypted; set key-passphrase"),
        "{e}"
    );
    let e = registry::open(&common(&[
        ("key-path", enc),
        ("key-passphrase", "wrong".into()),
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("wrong key-passphrase?"), "{e}");
    assert!(!format!("{e} {e:?}").contains("correct horse"));
    if let Some((user, password)) = unpriv {
        let s = settings(&[
            ("host", format!("127.0.0.1:{}", sshd.port)),
            ("user", user.clone()),
            ("password", password.clone()),
            ("path", "walship-pw-check".into()),
            ("known-hosts-path", kh.display().to_string()),
        ]);
        let r = registry::open(&s).unwrap();
        r.check().await.expect("password login");
        assert!(!format!("{r:?} {}", r.target()).contains(&password));
    }
}

/// Wrong password, wrong key, unreadable key file, a remote directory without permission: each
/// exit code 1 with one clear line.
#[test]
fn bad_credentials_and_permissions_are_one_line_errors() {
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    let Some((user, _password)) = unprivileged_user() else {
        return;
    };
    let ids = user_ids(&user);
    let d = open_tempdir();
    let kh = t.known_hosts.display().to_string();
    // Wrong key: a key the server does not know.
    keygen(&d.path().join("stranger"), "ed25519", "");
    let mut pairs = base_pairs(&t, t.port, &t.new_dir("wrongkey"));
    pairs[2].1 = d.path().join("stranger").display().to_string();
    pairs.push(("known-hosts-path", kh.clone()));
    let (cfg, _) = config(d.path(), &section(&pairs));
    let line = one_line_error(&restore_cmd(&cfg, None));
    assert!(
        line.contains(&format!("login as {:?} refused (tried key", t.user)),
        "{line}"
    );

    // Wrong password (a server of its own that accepts passwords).
    let sshd = PrivateSshd::start(&PathBuf::from(format!("{}.pub", t.key.display())), true);
    let kh2 = d.path().join("known_hosts2");
    std::fs::write(&kh2, sshd.known_hosts_line()).unwrap();
    let d2 = open_tempdir();
    let (cfg, _) = config(
        d2.path(),
        &section(&[
            ("host", format!("127.0.0.1:{}", sshd.port)),
            ("user", user.clone()),
            ("password", "not-the-password".into()),
            ("path", "x".into()),
            ("known-hosts-path", kh2.display().to_string()),
        ]),
    );
    let line = one_line_error(&restore_cmd(&cfg, None));
    assert!(
        line.contains(&format!("login as {user:?} refused (tried password)")),
        "{line}"
    );
    assert!(!line.contains("not-the-password"), "{line}");

    // Unreadable key file: walship runs as the unprivileged user, the key is root's (0600).
    let d3 = open_tempdir();
    let mut pairs = base_pairs(&t, t.port, &t.new_dir("unreadable"));
    pairs.push(("known-hosts-path", kh.clone()));
    let (cfg, _) = config(d3.path(), &section(&pairs));
    std::fs::set_permissions(&t.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let line = one_line_error(&restore_cmd(&cfg, Some(ids)));
    assert!(
        line.contains(&format!(
            "key-path {}: cannot read the private key: Permission denied",
            t.key.display()
        )),
        "{line}"
    );

    // A remote directory the login may not read or write: the unprivileged user logs in with
    // the test key (the server's authorized_keys file serves every account).
    let locked = t.new_dir("locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let d4 = open_tempdir();
    let key_copy = d4.path().join("key");
    std::fs::copy(&t.key, &key_copy).unwrap();
    std::os::unix::fs::chown(&key_copy, Some(ids.0), Some(ids.1)).unwrap();
    let mut pairs = base_pairs(&t, t.port, &locked.join("replica"));
    pairs[1].1 = user.clone();
    pairs[2].1 = key_copy.display().to_string();
    pairs.push(("known-hosts-path", kh.clone()));
    let (cfg, _) = config(d4.path(), &section(&pairs));
    let line = one_line_error(&restore_cmd(&cfg, Some(ids)));
    assert!(
        line.contains("Permission denied") && line.contains(&locked.display().to_string()),
        "{line}"
    );
    // Writing there too (through the library, as that user cannot be switched to in-process:
    // the directory is made root-owned 0755 instead, readable but not writable).
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = settings(&pairs);
    let e = rt
        .block_on(async {
            registry::open(&s)
                .unwrap()
                .put(
                    "generations/0123456789abcdef/wal/00000000_00000000.wal.lz4",
                    walship_core::replica::PutSource::Bytes(bytes::Bytes::from_static(b"x")),
                )
                .await
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(!e.is_retryable());
    assert!(
        e.to_string().contains("create directory") && e.to_string().contains("Permission denied"),
        "{e}"
    );
}

/// Runs `walship replicate` with the config until `stop`, returning its log.
fn replicate(cfg: &Path, log: &Path) -> Proc {
    Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        log,
    )
}

fn restore_exact(cfg: &Path, db: &Path, out: &Path, want: &str, log: &str) {
    let o = walship(&[
        "restore",
        "-config",
        cfg.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        db.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "restore failed: {}{}\nreplicate log:\n{log}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(integrity(out), "ok");
    assert_eq!(
        digest(out),
        want,
        "restored content differs\nreplicate log:\n{log}"
    );
}

/// replicate → restore through the walship binary against the shared sshd, known_hosts checked;
/// objects land in v0.3.13's layout under the remote directory.
#[test]
fn sftp_replicate_restore_round_trip() {
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let dir = t.new_dir("e2e").join("servers/one/app.db");
    let (cfg, db) = config(
        d.path(),
        &format!("{}        sync-interval: 100ms\n", t.yaml(&dir)),
    );
    let mut w = Writer::new(&db, 11);
    for _ in 0..300 {
        w.tx();
    }
    let mut p = replicate(&cfg, &d.path().join("walship.log"));
    for i in 0..2000 {
        w.tx();
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let want = digest(&db);
    drop(w);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(p.stop(), 0, "clean stop; log:\n{}", p.log_text());
    let log = p.log_text();
    assert!(!log.contains("ERROR"), "errors in walship log:\n{log}");
    restore_exact(&cfg, &db, &d.path().join("restored.db"), &want, &log);
    let objects = files(&dir);
    assert!(
        objects
            .iter()
            .any(|k| k.starts_with("generations/") && k.ends_with(".snapshot.lz4")),
        "{objects:?}"
    );
    assert!(
        objects
            .iter()
            .all(|k| k.starts_with("generations/") && !k.ends_with(".tmp")),
        "{objects:?}"
    );
}

/// The server goes away during replication (listener and sessions killed) and comes back on the
/// same port with the same key: replication resumes without a gap and the restore is exact.
#[test]
fn replication_resumes_after_sshd_restart() {
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut sshd = PrivateSshd::start(&PathBuf::from(format!("{}.pub", t.key.display())), false);
    let kh = d.path().join("known_hosts");
    std::fs::write(&kh, sshd.known_hosts_line()).unwrap();
    let dir = t.new_dir("restart");
    let mut pairs = base_pairs(&t, sshd.port, &dir);
    pairs.push(("known-hosts-path", kh.display().to_string()));
    pairs.push(("operation-timeout", "5s".into()));
    let (cfg, db) = config(d.path(), &section(&pairs));
    let mut w = Writer::new(&db, 23);
    for _ in 0..200 {
        w.tx();
    }
    let mut p = replicate(&cfg, &d.path().join("walship.log"));
    for _ in 0..500 {
        w.tx();
    }
    std::thread::sleep(Duration::from_secs(1));
    sshd.stop();
    let down = std::time::Instant::now();
    while down.elapsed() < Duration::from_secs(4) {
        w.tx();
        std::thread::sleep(Duration::from_millis(5));
    }
    sshd.resume();
    for _ in 0..500 {
        w.tx();
    }
    let want = digest(&db);
    drop(w);
    // Caught up: a restore from the replica equals the source (the monitor retries with backoff).
    let out = d.path().join("restored.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let _ = std::fs::remove_file(&out);
        let o = walship(&[
            "restore",
            "-config",
            cfg.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            db.to_str().unwrap(),
        ]);
        if o.status.success() && digest(&out) == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica did not catch up after the restart; log:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(p.stop(), 0, "clean stop; log:\n{}", p.log_text());
    let log = p.log_text();
    assert!(
        log.contains("sftp") && (log.contains("connect") || log.contains("connection")),
        "the outage shows in the log:\n{log}"
    );
    let _ = std::fs::remove_file(&out);
    restore_exact(&cfg, &db, &out, &want, &log);
    let gens = generations_listed(&cfg, &db);
    assert_eq!(
        gens.len(),
        1,
        "the outage started generations {gens:?}; log:\n{log}"
    );
}

/// A replica (through the registry) on a private sshd of the test's own, which it may stop.
fn private_replica(
    t: &SftpTarget,
    tag: &str,
) -> (
    PrivateSshd,
    tempfile::TempDir,
    PathBuf,
    walship_core::replica::DynReplica,
) {
    let sshd = PrivateSshd::start(&PathBuf::from(format!("{}.pub", t.key.display())), false);
    let d = tempfile::tempdir().unwrap();
    let kh = d.path().join("known_hosts");
    std::fs::write(&kh, sshd.known_hosts_line()).unwrap();
    let dir = t.new_dir(tag);
    let mut pairs = base_pairs(t, sshd.port, &dir);
    pairs.push(("known-hosts-path", kh.display().to_string()));
    let r = registry::open(&settings(&pairs)).expect("open sftp replica");
    (sshd, d, dir, r)
}

/// A download whose connection drops midway (sshd stopped and started again while the object
/// is being read) reconnects and continues where it stopped: the bytes read equal the object.
#[test]
fn download_resumes_after_the_connection_drops() {
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    let (mut sshd, _d, _dir, r) = private_replica(&t, "resume-get");
    // Resuming is the retry layer's, as in `replicate` and `restore`.
    let r: walship_core::replica::DynReplica = std::sync::Arc::new(
        walship_core::retry::RetryLayer::new(r, walship_core::retry::RetryPolicy::default()),
    );
    // 24 MiB of varied bytes, far more than the reader's window of pipelined reads.
    let body: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    block_on(async {
        use tokio::io::AsyncReadExt;
        r.put(
            "generations/0123456789abcdef/snapshots/00000000.snapshot.lz4",
            walship_core::replica::PutSource::Bytes(bytes::Bytes::from(body.clone())),
        )
        .await
        .expect("put");
        let mut rd = r
            .get("generations/0123456789abcdef/snapshots/00000000.snapshot.lz4")
            .await
            .expect("get");
        let mut got = vec![0u8; 2 << 20];
        rd.read_exact(&mut got).await.expect("first 2 MiB");
        // The reader task is blocked on its full window: drop every connection now.
        sshd.stop();
        sshd.resume();
        rd.read_to_end(&mut got).await.expect("read after the drop");
        assert_eq!(got.len(), body.len(), "length after resume");
        assert!(got == body, "content after resume differs");
    });
}

/// An upload whose connection drops midway leaves its temporary file on the server; the next
/// upload, on a new connection, removes it (a flaky link must not pile up partial snapshots).
#[test]
fn temporary_file_of_a_broken_upload_is_removed() {
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    let (mut sshd, _d, dir, r) = private_replica(&t, "orphans");
    let tmp_files = || -> Vec<String> {
        files(&dir)
            .into_iter()
            .filter(|f| f.ends_with(".tmp"))
            .collect()
    };
    // A source that yields 4 MiB, then waits until the test has dropped the connection.
    let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
    let source = {
        let gate = gate.clone();
        walship_core::replica::PutSource::stream(move || {
            struct Slow {
                sent: usize,
                gate: std::sync::Arc<std::sync::Barrier>,
                waited: bool,
            }
            impl std::io::Read for Slow {
                fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                    if self.sent >= 4 << 20 && !self.waited {
                        self.waited = true;
                        self.gate.wait(); // the test stops sshd here
                        self.gate.wait(); // ... and lets the upload go on into the dead link
                    }
                    if self.sent >= 8 << 20 {
                        return Ok(0);
                    }
                    let n = buf.len().min(64 << 10);
                    buf[..n].fill(7);
                    self.sent += n;
                    Ok(n)
                }
            }
            Ok(Box::new(Slow {
                sent: 0,
                gate: gate.clone(),
                waited: false,
            }) as Box<dyn std::io::Read + Send>)
        })
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let r2 = r.clone();
    let upload = rt.spawn(async move {
        r2.put(
            "generations/0123456789abcdef/wal/00000000_00000000.wal.lz4",
            source,
        )
        .await
    });
    gate.wait();
    assert_eq!(
        tmp_files().len(),
        1,
        "the upload's temporary file exists: {:?}",
        files(&dir)
    );
    sshd.stop();
    gate.wait();
    let res = rt.block_on(upload).unwrap();
    assert!(
        res.is_err(),
        "the upload through a dropped connection fails"
    );
    assert_eq!(
        tmp_files().len(),
        1,
        "left behind by the broken upload: {:?}",
        files(&dir)
    );
    sshd.resume();
    rt.block_on(r.put(
        "generations/0123456789abcdef/wal/00000000_00000000.wal.lz4",
        walship_core::replica::PutSource::Bytes(bytes::Bytes::from_static(b"whole")),
    ))
    .expect("put after reconnecting");
    assert!(
        tmp_files().is_empty(),
        "orphaned temporary file not removed: {:?}",
        files(&dir)
    );
}

/// Issue 23.8: an encrypted key's passphrase and a login password appear in no output of
/// replicate or restore with logging turned up every way a user can (debug, WALSHIP_LOG=trace,
/// JSON), and each round trip is exact. (The password login needs the unprivileged account, which
/// scripts/test.sh creates as root; required under CI.)
#[test]
fn loud_logging_never_shows_the_key_passphrase_or_password() {
    let Some(t) = SftpTarget::from_env() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let pass = "staple battery 7f3a";
    keygen(&d.path().join("enc"), "ed25519", pass);
    let ak = d.path().join("authorized");
    std::fs::copy(d.path().join("enc.pub"), &ak).unwrap();
    let unpriv = unprivileged_user();
    let sshd = PrivateSshd::start(&ak, unpriv.is_some());
    let kh = d.path().join("known_hosts");
    std::fs::write(&kh, sshd.known_hosts_line()).unwrap();
    let host = format!("127.0.0.1:{}", sshd.port);
    // (login name, replica settings but the path, the secret, the remote user's ids)
    type Login = (
        &'static str,
        Vec<(&'static str, String)>,
        String,
        Option<(u32, u32)>,
    );
    let mut logins: Vec<Login> = vec![(
        "key",
        vec![
            ("user", t.user.clone()),
            ("key-path", d.path().join("enc").display().to_string()),
            ("key-passphrase", format!("\"{pass}\"")),
        ],
        pass.to_string(),
        None,
    )];
    if let Some((user, password)) = unpriv {
        let ids = user_ids(&user);
        logins.push((
            "password",
            vec![("user", user), ("password", format!("\"{password}\""))],
            password,
            Some(ids),
        ));
    }
    for (login, settings, secret, owner) in &logins {
        for (name, logging, env) in LOUD_LOGGING {
            let name = format!("{login}-{name}");
            let dir = d.path().join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            let remote = t.new_dir(&format!("loud-{name}"));
            std::fs::create_dir_all(&remote).unwrap();
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&remote, Some(*uid), Some(*gid)).unwrap();
            }
            let mut pairs = vec![
                ("host", host.clone()),
                ("path", remote.display().to_string()),
                ("known-hosts-path", kh.display().to_string()),
            ];
            pairs.extend(settings.iter().cloned());
            let (cfg, db) = config(&dir, &section(&pairs));
            let mut w = Writer::new(&db, 29);
            for _ in 0..200 {
                w.tx();
            }
            let mut p = replicate_loud(&cfg, logging, env, &dir.join("walship.log"));
            for _ in 0..300 {
                w.tx();
            }
            let want = digest(&db);
            drop(w);
            wait_caught_up_with(
                &["-config", cfg.to_str().unwrap(), db.to_str().unwrap()],
                &db,
                &dir.join("scratch.db"),
                Duration::from_secs(30),
            );
            assert_eq!(p.stop(), 0, "{name}: {}", p.log_text());
            let out = dir.join("restored.db");
            let restored = restore_with_env(&cfg, &db, &out, env);
            assert_eq!(digest(&out), want, "{name}");
            let output = format!("{}{restored}", p.log_text());
            assert_no_secret(&name, &output, &[secret]);
        }
    }
}

//! The SFTP server the tests use: `TEST_SFTP_HOST`, `TEST_SFTP_PORT`, `TEST_SFTP_USER`,
//! `TEST_SFTP_KEY`, `TEST_SFTP_KNOWN_HOSTS`, `TEST_SFTP_ROOT` (scripts/test.sh starts OpenSSH's
//! sshd and exports them). Without them a test is skipped, except under `CI=true`, where that is
//! a failure. Each test uses its own directory under the root.
//!
//! [`PrivateSshd`] starts a server of the test's own (own port, own host key) for tests that stop
//! it, change its key or need password logins.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use walship_core::registry::{self, ReplicaSettings};
use walship_core::replica::DynReplica;
use walship_core::retry::{RetryLayer, RetryPolicy};

#[derive(Debug, Clone)]
pub struct SftpTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub root: PathBuf,
}

/// The unprivileged account scripts/test.sh creates (name, password), when running as root.
pub fn unprivileged_user() -> Option<(String, String)> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        var("TEST_SFTP_UNPRIV_USER"),
        var("TEST_SFTP_UNPRIV_PASSWORD"),
    ) {
        (Some(u), Some(p)) => Some((u, p)),
        _ if crate::ci() => panic!(
            "no unprivileged test user: scripts/test.sh creates it and sets TEST_SFTP_UNPRIV_USER"
        ),
        _ => {
            eprintln!("SKIPPED: no unprivileged test user (TEST_SFTP_UNPRIV_USER unset)");
            None
        }
    }
}

/// uid and gid of a local account.
pub fn user_ids(name: &str) -> (u32, u32) {
    let out = Command::new("id").args(["-u", name]).output().unwrap();
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = Command::new("id").args(["-g", name]).output().unwrap();
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (uid, gid)
}

impl SftpTarget {
    /// The server from the environment, or `None` (after saying SKIPPED) outside CI.
    pub fn from_env() -> Option<SftpTarget> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (
            var("TEST_SFTP_HOST"),
            var("TEST_SFTP_PORT"),
            var("TEST_SFTP_USER"),
            var("TEST_SFTP_KEY"),
            var("TEST_SFTP_KNOWN_HOSTS"),
            var("TEST_SFTP_ROOT"),
        ) {
            (Some(host), Some(port), Some(user), Some(key), Some(kh), Some(root)) => {
                Some(SftpTarget {
                    host,
                    port: port.parse().expect("TEST_SFTP_PORT"),
                    user,
                    key: key.into(),
                    known_hosts: kh.into(),
                    root: root.into(),
                })
            }
            _ if crate::ci() => panic!(
                "no SFTP server: set TEST_SFTP_HOST, TEST_SFTP_PORT, TEST_SFTP_USER, TEST_SFTP_KEY, \
                 TEST_SFTP_KNOWN_HOSTS, TEST_SFTP_ROOT (scripts/test.sh starts sshd and sets them)"
            ),
            _ => {
                eprintln!("SKIPPED: no SFTP server (TEST_SFTP_HOST unset; scripts/test.sh sets it)");
                None
            }
        }
    }

    /// A fresh directory of its own under the root (`t-<pid>-<nanos>-<n>-<tag>`), not created:
    /// the backend must create missing directories.
    pub fn new_dir(&self, tag: &str) -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000_000;
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(24)
            .collect();
        self.root.join(format!(
            "t-{}-{nanos}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ))
    }

    /// The replica section a user would write for this server (known_hosts checked).
    pub fn settings(&self, dir: &Path) -> ReplicaSettings {
        let mut s = ReplicaSettings {
            name: "sftp".into(),
            kind: "sftp".into(),
            path: Some(dir.to_string_lossy().into_owned()),
            ..Default::default()
        };
        for (k, v) in [
            ("host", format!("{}:{}", self.host, self.port)),
            ("user", self.user.clone()),
            ("key-path", self.key.to_string_lossy().into_owned()),
            (
                "known-hosts-path",
                self.known_hosts.to_string_lossy().into_owned(),
            ),
        ] {
            s.options.insert(k.into(), v);
        }
        s
    }

    /// A replica through the registry (so the `sftp` registration is exercised), with the retry
    /// layer the binary uses.
    pub fn replica(&self, dir: &Path) -> DynReplica {
        let inner = registry::open(&self.settings(dir)).expect("open sftp replica");
        std::sync::Arc::new(RetryLayer::new(inner, RetryPolicy::default()))
    }

    /// The YAML lines of a replica section for this server (indented for `replicas:`).
    pub fn yaml(&self, dir: &Path) -> String {
        format!(
            "      - type: sftp\n        host: {}:{}\n        user: {}\n        key-path: {}\n        known-hosts-path: {}\n        path: {}\n",
            self.host,
            self.port,
            self.user,
            self.key.display(),
            self.known_hosts.display(),
            dir.display()
        )
    }
}

/// An sshd of the test's own: own port, own host key; the client key of [`SftpTarget`] may log
/// in, and passwords too when asked. Stopped (with its session processes) on drop.
pub struct PrivateSshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub host_key_pub: String,
    config: PathBuf,
    child: Option<Child>,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl PrivateSshd {
    /// Starts sshd on a free port; `authorized` is the public key file allowed to log in.
    pub fn start(authorized: &Path, passwords: bool) -> PrivateSshd {
        Self::start_on(free_port(), authorized, passwords, None)
    }

    /// Starts sshd on `port`, with a new host key unless `host_key` (a private key file) is given.
    pub fn start_on(
        port: u16,
        authorized: &Path,
        passwords: bool,
        host_key: Option<&Path>,
    ) -> PrivateSshd {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let hk = dir.path().join("host_key");
        match host_key {
            Some(src) => {
                std::fs::copy(src, &hk).unwrap();
                std::fs::set_permissions(&hk, std::fs::Permissions::from_mode(0o600)).unwrap();
                let o = Command::new("ssh-keygen")
                    .args(["-y", "-f"])
                    .arg(&hk)
                    .output()
                    .unwrap();
                std::fs::write(dir.path().join("host_key.pub"), o.stdout).unwrap();
            }
            None => keygen(&hk, "ed25519", ""),
        }
        let ak = dir.path().join("authorized_keys");
        std::fs::copy(authorized, &ak).unwrap();
        std::fs::set_permissions(&ak, std::fs::Permissions::from_mode(0o644)).unwrap();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nPidFile none\nAuthorizedKeysFile {}\n\
                 StrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication {}\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 AllowTcpForwarding no\nX11Forwarding no\nSubsystem sftp internal-sftp\n",
                hk.display(),
                ak.display(),
                if passwords { "yes" } else { "no" }
            ),
        )
        .unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let host_key_pub = std::fs::read_to_string(dir.path().join("host_key.pub"))
            .unwrap()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let mut s = PrivateSshd {
            port,
            dir,
            host_key_pub,
            config,
            child: None,
        };
        s.resume();
        s
    }

    /// A known_hosts line for this server.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_key_pub)
    }

    /// The private host key file (to start another server with the same key).
    pub fn host_key(&self) -> PathBuf {
        self.dir.path().join("host_key")
    }

    /// Starts (again) and waits for the SSH banner.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "sshd already running");
        let bin = std::env::var("TEST_SSHD_BIN").unwrap_or_else(|_| "/usr/sbin/sshd".into());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sshd.log"))
            .unwrap();
        let child = Command::new(&bin)
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::Read;
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut b = [0u8; 4];
                if s.read_exact(&mut b).is_ok() && &b == b"SSH-" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "private sshd on port {} did not start: {}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the listener and every session process it started (a server going away).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_tree(c.id());
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGKILLs a process and all its descendants (found through /proc).
fn kill_tree(pid: u32) {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                // pid (comm) state ppid ...: comm may hold spaces, so parse after the last ')'.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|s| s.parse::<u32>().ok());
                if ppid == Some(parent) && !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        i += 1;
    }
    for p in all.iter().rev() {
        // SAFETY: kill(2) on processes this test started.
        unsafe {
            libc::kill(*p as i32, libc::SIGKILL);
        }
    }
}

/// `ssh-keygen -t <kind> -N <passphrase> -f <path>`.
pub fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(format!("{}.pub", path.display()));
    let o = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            kind,
            "-N",
            passphrase,
            "-C",
            "walship-test",
            "-f",
        ])
        .arg(path)
        .output()
        .expect("run ssh-keygen");
    assert!(
        o.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

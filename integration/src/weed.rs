//! A private SeaweedFS S3 server for tests that stop, restart or disturb their server, so tests
//! sharing the suite's server are unaffected. `TEST_WEED_BIN` names the binary (scripts/test.sh
//! sets it); without it the test is skipped, except under `CI=true`, where that is a failure.

use crate::s3::S3Target;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `weed mini` on 127.0.0.1 with ports of its own and a data directory that survives restarts.
pub struct WeedServer {
    bin: PathBuf,
    dir: PathBuf,
    base: u16,
    child: Option<Child>,
    starts: u32,
}

const ACCESS_KEY: &str = "weedkey";
const SECRET_KEY: &str = "weedsecret-0123456789";

/// Offsets from the base port: s3, master, volume, filer, admin; each also uses port + 10000
/// for gRPC.
const PORT_OFFSETS: [u16; 5] = [0, 1, 2, 3, 4];

impl WeedServer {
    /// The binary from `TEST_WEED_BIN`, or `None` (after saying SKIPPED) outside CI.
    pub fn binary() -> Option<PathBuf> {
        match std::env::var_os("TEST_WEED_BIN").filter(|v| !v.is_empty()) {
            Some(p) => Some(PathBuf::from(p)),
            None if crate::ci() => {
                panic!("TEST_WEED_BIN is not set: scripts/test.sh installs SeaweedFS and sets it")
            }
            None => {
                eprintln!(
                    "SKIPPED: no SeaweedFS binary (TEST_WEED_BIN unset; scripts/test.sh sets it)"
                );
                None
            }
        }
    }

    /// Starts a server whose data lives in `dir`, and waits until it accepts S3 requests.
    pub fn start(dir: &Path) -> Option<WeedServer> {
        let bin = Self::binary()?;
        let mut s = WeedServer {
            bin,
            dir: dir.to_path_buf(),
            base: free_base_port(),
            child: None,
            starts: 0,
        };
        s.spawn();
        Some(s)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "weed already running");
        std::fs::create_dir_all(self.dir.join("data")).unwrap();
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("weed-{}.log", self.starts)))
            .expect("weed log");
        let b = self.base;
        let child = Command::new(&self.bin)
            .arg("mini")
            .arg(format!("-dir={}", self.dir.join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-s3.autoCreateBucket=false",
                "-s3.allowDeleteBucketNotEmpty=false",
                // One volume per bucket with data; the default count follows free disk space
                // (see scripts/test.sh).
                "-volume.max=1000",
            ])
            .arg(format!("-s3.port={b}"))
            .arg(format!("-master.port={}", b + 1))
            .arg(format!("-volume.port={}", b + 2))
            .arg(format!("-filer.port={}", b + 3))
            .arg(format!("-admin.port={}", b + 4))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Ready when a bucket can be created (or exists) and an object written to it.
    fn wait_ready(&mut self) {
        let target = self.target();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let sdk = target.sdk();
        loop {
            let ok = rt.block_on(async {
                let _ = sdk.create_bucket().bucket("ready-probe").send().await;
                sdk.put_object()
                    .bucket("ready-probe")
                    .key("probe")
                    .body(aws_sdk_s3::primitives::ByteStream::from_static(b"probe"))
                    .send()
                    .await
                    .is_ok()
            });
            if ok {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("weed exited with {st} while starting:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "private SeaweedFS not ready after 60 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s). Its data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signals a child we own.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the stopped server again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn s3_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base))
    }

    pub fn target(&self) -> S3Target {
        S3Target {
            endpoint: format!("http://{}", self.s3_addr()),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            region: "us-east-1".into(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("weed-{}.log", self.starts)))
            .unwrap_or_default()
    }
}

impl Drop for WeedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A base port whose five service ports and their gRPC twins (+10000) are all free now.
///
/// All of them stay below Linux's ephemeral range (32768 up): a twin chosen at 34736 was free
/// when chosen and taken by some client's outgoing connection by the time the server was
/// restarted in the outage test ("bind: address already in use", CI 2026-12-04).
fn free_base_port() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    for i in 0..500u64 {
        let base = 12_000 + ((seed + i * 7919) % 10_000) as u16 / 8 * 8;
        let free = PORT_OFFSETS.iter().all(|o| {
            TcpListener::bind(("127.0.0.1", base + o)).is_ok()
                && TcpListener::bind(("127.0.0.1", base + o + 10_000)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free port range for a private SeaweedFS");
}

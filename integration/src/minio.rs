//! MinIO through testcontainers, used by the S3 tests when no `TEST_S3_ENDPOINT` is given and a
//! Docker daemon answers (scripts/test.sh then withholds its SeaweedFS from the cargo tests). One
//! container per test binary; testcontainers' reaper removes it when the binary exits.

use crate::s3::S3Target;
use std::sync::{Mutex, OnceLock};
use testcontainers_modules::minio::MinIO;
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::Container;

static TARGET: OnceLock<Option<S3Target>> = OnceLock::new();
static CONTAINER: Mutex<Option<Container<MinIO>>> = Mutex::new(None);

/// Whether a Docker daemon answers on `DOCKER_HOST` (unix sockets) or the default socket.
pub fn docker_answers() -> bool {
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(h) => match h.strip_prefix("unix://") {
            Some(p) => p.to_string(),
            // A TCP daemon: let testcontainers try it.
            None => return !h.is_empty(),
        },
        Err(_) => "/var/run/docker.sock".to_string(),
    };
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// The MinIO server of this test binary, started on first use; `None` without Docker.
/// A daemon that answers but cannot run MinIO is a failure, not a skip.
pub fn target() -> Option<S3Target> {
    TARGET
        .get_or_init(|| {
            if !docker_answers() {
                return None;
            }
            // testcontainers' blocking runner makes its own runtime: keep it off the test's.
            let t = std::thread::spawn(|| {
                let c = MinIO::default()
                    .start()
                    .unwrap_or_else(|e| panic!("Docker answers, but MinIO did not start: {e}"));
                let host = c.get_host().expect("MinIO host");
                let port = c.get_host_port_ipv4(9000).expect("MinIO port");
                *CONTAINER.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
                S3Target {
                    endpoint: format!("http://{host}:{port}"),
                    access_key: "minioadmin".into(),
                    secret_key: "minioadmin".into(),
                    region: "us-east-1".into(),
                }
            })
            .join()
            .expect("start MinIO");
            eprintln!("S3 tests use MinIO (testcontainers) at {}", t.endpoint);
            Some(t)
        })
        .clone()
}

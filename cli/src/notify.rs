//! systemd's notify protocol (sd_notify(3)), which is one datagram per message on the unix socket
//! named by `NOTIFY_SOCKET`. Implemented directly: it is a few lines, and a crate would add nothing.
//!
//! `READY=1` is sent once the config is loaded and every monitor runs, *not* after a first upload:
//! a network that is down at boot must not turn into a start timeout and a restart loop. `STATUS=`
//! carries the sync summary; `WATCHDOG=1` is sent at half of `WATCHDOG_USEC` while the runtime is
//! alive. Without `NOTIFY_SOCKET` every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to the service manager, if there is one.
pub struct Notifier {
    sock: UnixDatagram,
    addr: Target,
}

enum Target {
    Path(std::path::PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> Option<Notifier> {
        let v = std::env::var_os("NOTIFY_SOCKET")?;
        let s = v.to_string_lossy().into_owned();
        if s.is_empty() {
            return None;
        }
        let addr = match s.strip_prefix('@') {
            #[cfg(target_os = "linux")]
            Some(name) => Target::Abstract(name.as_bytes().to_vec()),
            #[cfg(not(target_os = "linux"))]
            Some(_) => return None,
            None => Target::Path(s.into()),
        };
        // Non-blocking: a manager that stops reading (its queue holds ~10 datagrams) must cost a
        // lost STATUS line, never a blocked runtime thread.
        match UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|_| s)) {
            Ok(sock) => Some(Notifier { sock, addr }),
            Err(e) => {
                tracing::warn!(error = %e, "sd_notify: cannot create a socket");
                None
            }
        }
    }

    /// Sends one message (`KEY=value` lines). Failures are logged, never fatal.
    pub fn send(&self, msg: &str) {
        let res = match &self.addr {
            Target::Path(p) => self.sock.send_to(msg.as_bytes(), p),
            #[cfg(target_os = "linux")]
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| self.sock.send_to_addr(msg.as_bytes(), &a))
            }
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

/// The watchdog period asked for by the service manager: half of `WATCHDOG_USEC`, when
/// `WATCHDOG_PID` is unset or names this process.
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Escapes nothing but newlines: a `STATUS=` value is one line.
pub fn status_line(s: &str) -> String {
    format!("STATUS={}", s.replace('\n', " "))
}

/// Keeps `STATUS=` current (every 2 s, sent only when it changes) and pings the watchdog.
pub async fn run(n: std::sync::Arc<Notifier>, health: std::sync::Arc<crate::health::Shared>) {
    let watchdog = watchdog_period();
    let step = watchdog
        .map(|w| w.min(Duration::from_secs(2)))
        .unwrap_or(Duration::from_secs(2));
    let mut last_status = String::new();
    let mut last_ping = std::time::Instant::now();
    loop {
        tokio::time::sleep(step).await;
        let status = status_line(&health.get().summary());
        let mut msg = Vec::new();
        if status != last_status {
            msg.push(status.clone());
            last_status = status;
        }
        if watchdog.is_some_and(|w| last_ping.elapsed() + step > w) {
            msg.push("WATCHDOG=1".to_string());
            last_ping = std::time::Instant::now();
        }
        if !msg.is_empty() {
            n.send(&msg.join("\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("notify");
        let server = UnixDatagram::bind(&p).unwrap();
        let n = Notifier {
            sock: UnixDatagram::unbound().unwrap(),
            addr: Target::Path(p),
        };
        n.send("READY=1\nSTATUS=starting");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=starting");
        assert_eq!(status_line("a\nb"), "STATUS=a b");
    }
}

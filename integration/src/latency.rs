//! A TCP proxy that adds latency: every chunk a client sends waits `delay` before it reaches the
//! server, about one round trip per request, as an object store in another building adds. The
//! answers pass straight through. Restores of long histories are judged through it: a restore
//! that makes its requests one after another pays the delay once per object, one that keeps
//! several in flight pays it once per window.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Counts of what passed through the proxy.
#[derive(Debug, Default)]
pub struct ProxyCounts {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Chunks clients sent (each delayed once): about one per request.
    pub writes: AtomicU64,
    /// Chunks being delayed at this moment, over all connections.
    pub delayed_now: AtomicU64,
    /// The most chunks ever delayed at once: 1 means requests went one after another.
    pub most_delayed: AtomicU64,
    /// What clients sent, when the proxy was started with [`LatencyProxy::recording`] (at most
    /// [`RECORD_MAX`] bytes): what a client asked the server, as the server received it.
    pub sent: Mutex<Vec<u8>>,
    record: AtomicBool,
}

/// The most client bytes a recording proxy keeps.
pub const RECORD_MAX: usize = 32 << 20;

/// A running proxy; stops accepting when dropped (open connections end with their peers).
pub struct LatencyProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counts: Arc<ProxyCounts>,
}

impl LatencyProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target`, delaying client chunks.
    pub fn start(target: SocketAddr, delay: Duration) -> std::io::Result<LatencyProxy> {
        LatencyProxy::start_on(0, target, delay)
    }

    /// As [`LatencyProxy::start`], on a chosen port of 127.0.0.1 (0: any free one).
    pub fn start_on(
        port: u16,
        target: SocketAddr,
        delay: Duration,
    ) -> std::io::Result<LatencyProxy> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(ProxyCounts::default());
        let (s, c) = (stop.clone(), counts.clone());
        std::thread::Builder::new()
            .name("latency-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    c.connections.fetch_add(1, Ordering::Relaxed);
                    let c = c.clone();
                    std::thread::spawn(move || serve(client, target, delay, &c));
                }
            })?;
        Ok(LatencyProxy { addr, stop, counts })
    }

    /// A proxy that adds no delay and keeps what clients send ([`ProxyCounts::sent`]): what a
    /// client really asked for, where the server would not show it (an emulator that
    /// normalises names, for one).
    pub fn recording(target: SocketAddr) -> std::io::Result<LatencyProxy> {
        let p = LatencyProxy::start(target, Duration::ZERO)?;
        p.counts.record.store(true, Ordering::SeqCst);
        Ok(p)
    }

    /// A proxy in front of an `http://IP:PORT` endpoint (the suite's S3 server).
    pub fn in_front_of(endpoint: &str, delay: Duration) -> std::io::Result<LatencyProxy> {
        let target: SocketAddr = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("not an http://IP:PORT endpoint: {endpoint}"),
                )
            })?;
        LatencyProxy::start(target, delay)
    }

    /// The proxy's address (`http://{addr}` is the endpoint to give a client).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What has passed so far.
    pub fn counts(&self) -> &ProxyCounts {
        &self.counts
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A connection with no traffic either way for this long is closed, as object stores and load
/// balancers close idle connections. A client that leaks its connections (Litestream v0.3.13
/// leaves one open per WAL segment it restores) would otherwise run the proxy out of
/// descriptors within a few thousand requests.
const IDLE_CLOSE: Duration = Duration::from_secs(5);

fn serve(client: TcpStream, target: SocketAddr, delay: Duration, counts: &ProxyCounts) {
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Woken every second to look at the idle clock.
    let _ = client.set_read_timeout(Some(Duration::from_secs(1)));
    let (client, server) = (Arc::new(client), Arc::new(server));
    let started = std::time::Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let touch = move |last: &AtomicU64| {
        last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    };
    // Answers: straight through.
    let back = {
        let (client, server, last) = (client.clone(), server.clone(), last.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match (&*server).read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        touch(&last);
                        if (&*client).write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            // The server closed: so does the client's connection, whole, as the server's would.
            let _ = client.shutdown(Shutdown::Both);
        })
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match (&*client).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                touch(&last);
                counts.writes.fetch_add(1, Ordering::Relaxed);
                if counts.record.load(Ordering::Relaxed) {
                    let mut sent = counts.sent.lock().unwrap_or_else(|e| e.into_inner());
                    let room = RECORD_MAX.saturating_sub(sent.len()).min(n);
                    sent.extend_from_slice(&buf[..room]);
                }
                let now = counts.delayed_now.fetch_add(1, Ordering::SeqCst) + 1;
                counts.most_delayed.fetch_max(now, Ordering::SeqCst);
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                counts.delayed_now.fetch_sub(1, Ordering::SeqCst);
                if (&*server).write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let idle = started.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                if idle >= IDLE_CLOSE.as_millis() as u64 {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // The client is gone (or idle): close both ends at once. A half-close would leave the
    // server's side open until the server's own idle timeout.
    let _ = server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
    let _ = back.join();
}

//! A replica whose downloads share a bandwidth cap: what a restore drill reads through, so that a
//! scheduled check of a large database never saturates the server's link (or disk) while the
//! application and the uploads use it. Uploads, listings and deletes pass through untouched.
//!
//! A drill also stops here: once its stop token is cancelled every read fails at once (a pacing
//! wait included). A drill's decoder reads on a blocking thread through the runtime; if that
//! thread were still waiting on a pacing timer while `replicate` shut the runtime down, the timer
//! would panic ("context is being shutdown"). Stopping the reads first lets the shipper wait for
//! the drill to end before the runtime goes.

use crate::replica::{ByteReader, DynReplica, WrappedReads};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Bytes read so far by every reader of one throttled replica, against a rate from its start.
#[derive(Debug)]
struct Pacer {
    start: Instant,
    bytes_per_sec: u64,
    read: AtomicU64,
}

impl Pacer {
    /// Counts `n` more bytes; returns when reading may go on without exceeding the rate.
    fn add(&self, n: u64) -> Instant {
        let total = self.read.fetch_add(n, Ordering::Relaxed) + n;
        self.start + Duration::from_secs_f64(total as f64 / self.bytes_per_sec as f64)
    }
}

/// `inner` with every download paced to `bytes_per_sec` on average, all downloads together; every
/// read fails once `stop` is cancelled.
pub fn throttled(inner: DynReplica, bytes_per_sec: u64, stop: CancellationToken) -> DynReplica {
    let pacer = Arc::new(Pacer {
        start: Instant::now(),
        bytes_per_sec: bytes_per_sec.max(1),
        read: AtomicU64::new(0),
    });
    WrappedReads::wrap(
        inner,
        Arc::new(move |r| {
            Box::new(PacedReader {
                inner: r,
                pacer: pacer.clone(),
                wait: None,
                stopped: Box::pin(stop.clone().cancelled_owned()),
            }) as ByteReader
        }),
    )
}

struct PacedReader {
    inner: ByteReader,
    pacer: Arc<Pacer>,
    wait: Option<Pin<Box<Sleep>>>,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
}

fn stopped() -> std::io::Error {
    std::io::Error::other("download stopped: walship is shutting down")
}

impl AsyncRead for PacedReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Before the timer: a stopped reader must not poll it (the runtime may be going away).
        if self.stopped.as_mut().poll(cx).is_ready() {
            self.wait = None;
            return Poll::Ready(Err(stopped()));
        }
        if let Some(w) = self.wait.as_mut() {
            if w.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let n = (buf.filled().len() - before) as u64;
            if n > 0 {
                let until = self.pacer.add(n);
                if until > Instant::now() {
                    self.wait = Some(Box::pin(tokio::time::sleep_until(until)));
                }
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::{PutSource, Replica};
    use crate::testing::MemoryReplica;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn downloads_together_keep_to_the_rate() {
        let mem = Arc::new(MemoryReplica::default());
        for k in ["a", "b"] {
            mem.put(k, PutSource::Bytes(vec![7u8; 60_000].into()))
                .await
                .unwrap();
        }
        let t = throttled(mem, 200_000, CancellationToken::new());
        let started = Instant::now();
        let (mut a, mut b) = (t.get("a").await.unwrap(), t.get("b").await.unwrap());
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let (ra, rb) = tokio::join!(a.read_to_end(&mut x), b.read_to_end(&mut y));
        assert_eq!((ra.unwrap(), rb.unwrap()), (60_000, 60_000));
        // 120 KB at 200 KB/s: about 0.6 s (the last read's wait is not taken).
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(450), "{took:?}");
        assert!(took <= Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn a_stopped_download_fails_at_once_even_while_it_waits() {
        let mem = Arc::new(MemoryReplica::default());
        mem.put("a", PutSource::Bytes(vec![7u8; 200_000].into()))
            .await
            .unwrap();
        let stop = CancellationToken::new();
        // 1 KB/s: the first read is followed by a wait of minutes.
        let t = throttled(mem, 1_000, stop.clone());
        let mut a = t.get("a").await.unwrap();
        let mut buf = vec![0u8; 64 << 10];
        assert!(a.read(&mut buf).await.unwrap() > 0);
        let started = Instant::now();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.cancel();
        });
        let e = a.read(&mut buf).await.unwrap_err();
        canceller.await.unwrap();
        assert!(e.to_string().contains("shutting down"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // And every read after it.
        assert!(a.read(&mut buf).await.is_err());
    }
}

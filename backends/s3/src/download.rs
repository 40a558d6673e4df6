//! A GetObject body that survives a broken connection: when the body fails (or ends early)
//! mid-read, it re-issues a ranged GET from the offset reached, a few times, with backoff.
//! The SDK never retries a body read, and the core retry layer cannot either (the stream is
//! already in the caller's hands), so this is the one place that does.

use futures::future::BoxFuture;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use walship_core::replica::ByteReader;
use walship_core::Result;

/// Opens the object again from a byte offset (a ranged GET pinned to the same ETag).
pub(crate) type Reopen = Arc<dyn Fn(u64) -> BoxFuture<'static, Result<ByteReader>> + Send + Sync>;

/// Consecutive failures without progress before the read fails.
pub(crate) const MAX_RESUMES: u32 = 5;

enum State {
    Reading(ByteReader),
    Reopening(BoxFuture<'static, Result<ByteReader>>),
    Failed,
}

pub(crate) struct ResumingReader {
    state: State,
    offset: u64,
    len: Option<u64>,
    reopen: Reopen,
    failures: u32,
    max_failures: u32,
    base_delay: Duration,
    what: String,
    /// Total resumes made, for tests and logs.
    pub(crate) resumes: u32,
}

impl ResumingReader {
    pub(crate) fn new(first: ByteReader, len: Option<u64>, reopen: Reopen, what: String) -> Self {
        ResumingReader {
            state: State::Reading(first),
            offset: 0,
            len,
            reopen,
            failures: 0,
            max_failures: MAX_RESUMES,
            base_delay: Duration::from_millis(200),
            what,
            resumes: 0,
        }
    }

    #[cfg(test)]
    fn with_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }

    /// The body broke: schedule a resume, or give up with the error.
    fn broken(&mut self, err: io::Error, retryable: bool) -> Option<io::Error> {
        self.failures += 1;
        if !retryable || self.failures > self.max_failures {
            self.state = State::Failed;
            return Some(io::Error::new(
                err.kind(),
                format!("{} at byte {}: {err}", self.what, self.offset),
            ));
        }
        let delay = self.base_delay * 2u32.pow(self.failures - 1).min(16);
        tracing::warn!(object = %self.what, offset = self.offset, error = %err, retry_in = ?delay,
            "s3 download broke, resuming with a ranged GET");
        self.resumes += 1;
        let reopen = self.reopen.clone();
        let offset = self.offset;
        self.state = State::Reopening(Box::pin(async move {
            tokio::time::sleep(delay).await;
            reopen(offset).await
        }));
        None
    }
}

impl AsyncRead for ResumingReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Failed => {
                    return Poll::Ready(Err(io::Error::other(format!(
                        "{}: read after failure",
                        this.what
                    ))))
                }
                State::Reading(r) => {
                    let before = buf.filled().len();
                    let res = Pin::new(r).poll_read(cx, buf);
                    let n = (buf.filled().len() - before) as u64;
                    this.offset += n;
                    match res {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) if n > 0 => {
                            this.failures = 0;
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Ok(())) => match this.len {
                            Some(len) if this.offset < len => {
                                let e = io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    format!("body ended early ({len} bytes expected)"),
                                );
                                if let Some(e) = this.broken(e, true) {
                                    return Poll::Ready(Err(e));
                                }
                            }
                            _ => return Poll::Ready(Ok(())),
                        },
                        Poll::Ready(Err(e)) => {
                            if n > 0 {
                                this.failures = 0;
                            }
                            if let Some(e) = this.broken(e, true) {
                                return Poll::Ready(Err(e));
                            }
                        }
                    }
                }
                State::Reopening(f) => match f.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(r)) => this.state = State::Reading(r),
                    Poll::Ready(Err(e)) => {
                        let retryable = e.is_retryable();
                        if let Some(e) = this.broken(io::Error::other(e), retryable) {
                            return Poll::Ready(Err(e));
                        }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::AsyncReadExt;
    use walship_core::Error;

    /// Serves `data[from..]`, failing with a connection reset after `cut` bytes (if `Some`), or
    /// ending early after `cut` bytes when `eof` is set.
    struct Flaky {
        data: Vec<u8>,
        pos: usize,
        stop_at: Option<usize>,
        eof: bool,
    }

    impl AsyncRead for Flaky {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let end = self.stop_at.unwrap_or(self.data.len()).min(self.data.len());
            if self.pos >= end {
                if end < self.data.len() && !self.eof {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "connection reset by peer",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            // Small reads, so failures land mid-stream.
            let n = (end - self.pos).min(buf.remaining()).min(1000);
            let pos = self.pos;
            buf.put_slice(&self.data[pos..pos + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    fn data() -> Vec<u8> {
        (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Every connection delivers at most `chunk` bytes before breaking.
    fn reader(
        chunk: usize,
        eof: bool,
        fail_reopens: u32,
        permanent: bool,
    ) -> (ResumingReader, Arc<AtomicU32>) {
        let d = Arc::new(data());
        let opens = Arc::new(AtomicU32::new(0));
        let mk = {
            let d = d.clone();
            move |from: usize| -> ByteReader {
                Box::new(Flaky {
                    data: d[from..].to_vec(),
                    pos: 0,
                    stop_at: Some(chunk),
                    eof,
                })
            }
        };
        let first = mk(0);
        let o = opens.clone();
        let reopen: Reopen = Arc::new(move |off| {
            let n = o.fetch_add(1, Ordering::SeqCst);
            let r = if permanent {
                Err(Error::new(
                    walship_core::ErrorKind::Invalid,
                    "PreconditionFailed (HTTP 412)",
                ))
            } else if n < fail_reopens {
                Err(Error::transient("connection refused"))
            } else {
                Ok(mk(off as usize))
            };
            Box::pin(async move { r })
        });
        let r = ResumingReader::new(
            first,
            Some(d.len() as u64),
            reopen,
            "GetObject s3://b/k".into(),
        )
        .with_delay(Duration::from_millis(1));
        (r, opens)
    }

    #[tokio::test]
    async fn resumes_from_the_offset_reached() {
        let (mut r, opens) = reader(12_345, false, 0, false);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data());
        assert_eq!(
            opens.load(Ordering::SeqCst),
            4,
            "50000 bytes in 12345-byte pieces"
        );
        assert_eq!(r.resumes, 4);
    }

    #[tokio::test]
    async fn early_eof_resumes_too_and_reopen_failures_are_retried() {
        let (mut r, _) = reader(20_000, true, 2, false);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data());
    }

    #[tokio::test]
    async fn gives_up_without_progress_and_on_permanent_errors() {
        let (mut r, opens) = reader(10_000, false, 100, false);
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).await.unwrap_err();
        assert!(
            e.to_string().contains("GetObject s3://b/k at byte 10000"),
            "{e}"
        );
        assert_eq!(opens.load(Ordering::SeqCst), MAX_RESUMES);
        let (mut r, opens) = reader(10_000, false, 0, true);
        let e = r.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(e.to_string().contains("PreconditionFailed"), "{e}");
        assert_eq!(
            opens.load(Ordering::SeqCst),
            1,
            "a permanent error is not retried"
        );
    }
}

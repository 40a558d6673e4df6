//! A download that survives a broken connection: when the body fails (or ends early) mid-read,
//! it opens the object again from the byte reached ([`crate::replica::Replica::get_from`],
//! pinned to the version first read), with the retry policy's backoff. No SDK retries a body
//! read, and a plain retry cannot either (the stream is already in the caller's hands), so the
//! retry layer wraps every download in this, for every backend.

use crate::replica::ByteReader;
use crate::retry::RetryPolicy;
use crate::Result;
use futures::future::BoxFuture;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};

/// Opens the object again from a byte offset (pinned to the version first read).
pub type Reopen = Arc<dyn Fn(u64) -> BoxFuture<'static, Result<ByteReader>> + Send + Sync>;

enum State {
    Reading(ByteReader),
    Reopening(BoxFuture<'static, Result<ByteReader>>),
    Failed,
}

/// A download resumed from the byte reached whenever its body breaks, as the retry policy allows:
/// the policy's attempts count failures in a row without a byte of progress.
pub struct ResumingReader {
    state: State,
    offset: u64,
    /// Where the object ends, when the store said: a body that ends before it broke.
    end: Option<u64>,
    reopen: Reopen,
    policy: RetryPolicy,
    /// The waits of the current run of failures without progress.
    delays: Box<dyn Iterator<Item = Duration> + Send + Sync>,
    what: String,
    /// Total resumes made, for tests and logs.
    pub resumes: u32,
}

impl ResumingReader {
    /// Reads `first` (the object from byte `offset`), reopening through `reopen`; `what` names
    /// the download in errors and logs.
    pub fn new(
        first: ByteReader,
        offset: u64,
        end: Option<u64>,
        reopen: Reopen,
        policy: RetryPolicy,
        what: String,
    ) -> Self {
        ResumingReader {
            state: State::Reading(first),
            offset,
            end,
            reopen,
            delays: policy.delays(),
            policy,
            what,
            resumes: 0,
        }
    }

    /// Bytes arrived: the next failure starts a fresh run of attempts.
    fn progressed(&mut self) {
        self.delays = self.policy.delays();
    }

    /// The body broke: schedule a resume, or give up with the error.
    fn broken(&mut self, err: io::Error, retryable: bool) -> Option<io::Error> {
        let delay = match self.delays.next() {
            Some(d) if retryable => d,
            _ => {
                self.state = State::Failed;
                return Some(io::Error::new(
                    err.kind(),
                    format!("{} at byte {}: {err}", self.what, self.offset),
                ));
            }
        };
        tracing::warn!(object = %self.what, offset = self.offset, error = %err, retry_in = ?delay,
            "download broke, resuming from the byte reached");
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
                            this.progressed();
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Ok(())) => match this.end {
                            Some(end) if this.offset < end => {
                                let e = io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    format!("body ended early ({end} bytes expected)"),
                                );
                                if let Some(e) = this.broken(e, true) {
                                    return Poll::Ready(Err(e));
                                }
                            }
                            _ => return Poll::Ready(Ok(())),
                        },
                        Poll::Ready(Err(e)) => {
                            if n > 0 {
                                this.progressed();
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
    use crate::Error;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::AsyncReadExt;

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
                    crate::ErrorKind::Invalid,
                    "PreconditionFailed (HTTP 412)",
                ))
            } else if n < fail_reopens {
                Err(Error::transient("connection refused"))
            } else {
                Ok(mk(off as usize))
            };
            Box::pin(async move { r })
        });
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_attempts: 6,
            jitter: false,
        };
        let r = ResumingReader::new(
            first,
            0,
            Some(d.len() as u64),
            reopen,
            policy,
            "GetObject s3://b/k".into(),
        );
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
        assert_eq!(opens.load(Ordering::SeqCst), 5, "the policy's 6 attempts");
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

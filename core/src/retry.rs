//! Retry as a layer: one policy for every backend, so attempts never multiply.
//!
//! Only errors that say they are retryable are retried, with exponential backoff, jitter and a cap.
//! `put` sources re-open from the start, so a replayed upload is byte-identical. A download that
//! breaks midway is resumed here too ([`crate::resume`]), from the byte it reached, pinned to the
//! object's version when the store has one. [`RetryPolicy::delays`] is walship's one backoff rule:
//! the layer, the resumed download, S3's multipart parts and the shipper's wait after a failed
//! round all draw their waits from it.

use crate::error::Result;
use crate::replica::{ByteReader, ObjectMeta, ObjectReader, PutSource, Replica};
use crate::resume::{Reopen, ResumingReader};
use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Backoff settings of the retry layer.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay before the first retry; later delays double, up to `max_delay`.
    pub min_delay: Duration,
    /// Upper bound on any one delay between attempts.
    pub max_delay: Duration,
    /// Attempts in all, the first included: 0 or 1 means no retry.
    pub max_attempts: usize,
    /// Adds a random part to each delay, so many clients that failed together do not retry
    /// together.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: 6,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The waits before retry 1, 2, ... (as many as `max_attempts` allows): `min_delay` doubling
    /// up to `max_delay`, with jitter when set.
    pub fn delays(&self) -> Box<dyn Iterator<Item = Duration> + Send + Sync> {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1));
        if self.jitter {
            Box::new(b.with_jitter().build())
        } else {
            Box::new(b.build())
        }
    }
}

/// Wraps any replica; transient failures are retried, everything else passes through.
#[derive(Debug)]
pub struct RetryLayer {
    inner: Arc<dyn Replica>,
    policy: RetryPolicy,
    /// Database path ("-" when there is none, e.g. `restore URL`) and replica name: every log
    /// line about a replica names both, or a host with many databases cannot tell them apart.
    db: String,
    replica: String,
}

impl RetryLayer {
    /// Wraps `inner`; log lines name database `-` and no replica until [`RetryLayer::labelled`].
    pub fn new(inner: Arc<dyn Replica>, policy: RetryPolicy) -> Self {
        RetryLayer {
            inner,
            policy,
            db: "-".into(),
            replica: String::new(),
        }
    }

    /// Names the database and replica in this layer's log lines and, through a span around each
    /// attempt, in the backend's own (an S3 part retry, a broken download resumed).
    pub fn labelled(mut self, db: impl Into<String>, replica: impl Into<String>) -> Self {
        self.db = db.into();
        self.replica = replica.into();
        self
    }

    /// Always enabled (error level), so a backend's warnings keep their context at any
    /// `logging.level`.
    fn span(&self) -> tracing::Span {
        tracing::error_span!("replica", db = %self.db, replica = %self.replica)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the policy's attempts are spent; a
    /// retryable failure it gave up on says so ([`crate::Error::exhausted`]).
    async fn retrying<T, F, Fut>(&self, op: &'static str, key: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut delays = self.policy.delays();
        let mut attempts = 1u32;
        loop {
            let err = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            // Exhausted already: a backend that retried a part of the operation on its own
            // (S3's multipart parts) gave up; starting the whole operation again would multiply
            // attempts.
            if !err.is_retryable() || err.attempts().is_some() {
                return Err(err);
            }
            let Some(wait) = delays.next() else {
                return Err(if attempts > 1 {
                    err.exhausted(attempts)
                } else {
                    err
                });
            };
            tracing::warn!(db = %self.db, replica = %self.replica, operation = op, key, error = %err, retry_in = ?wait, "transient replica error, retrying");
            tokio::time::sleep(wait).await;
            attempts += 1;
        }
    }

    /// A download of `key` from `offset` whose opening is retried and whose body, should it break
    /// midway, is resumed from the byte reached (pinned to the version first read).
    async fn resuming_get(&self, key: &str, offset: u64) -> Result<ObjectReader> {
        let first = self
            .retrying("GET", key, || {
                self.inner
                    .get_from(key, offset, None)
                    .instrument(self.span())
            })
            .await?;
        let (inner, okey, version, span) = (
            self.inner.clone(),
            key.to_string(),
            first.version.clone(),
            self.span(),
        );
        let reopen: Reopen = Arc::new(move |at| {
            let (inner, okey, version, span) =
                (inner.clone(), okey.clone(), version.clone(), span.clone());
            Box::pin(async move {
                inner
                    .get_from(&okey, at, version.as_deref())
                    .instrument(span)
                    .await
                    .map(|o| o.reader)
            })
        });
        let what = format!("replica {:?}: GET {key}", self.replica);
        let reader = ResumingReader::new(
            first.reader,
            offset,
            first.remaining.map(|n| offset + n),
            reopen,
            self.policy,
            what,
        );
        Ok(ObjectReader {
            reader: Box::new(reader),
            remaining: first.remaining,
            version: first.version,
        })
    }
}

#[async_trait]
impl Replica for RetryLayer {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn target(&self) -> String {
        self.inner.target()
    }
    async fn put(&self, key: &str, source: PutSource) -> Result<u64> {
        self.retrying("PUT", key, || {
            self.inner.put(key, source.clone()).instrument(self.span())
        })
        .await
    }
    async fn get(&self, key: &str) -> Result<ByteReader> {
        Ok(self.resuming_get(key, 0).await?.reader)
    }
    async fn get_from(
        &self,
        key: &str,
        offset: u64,
        version: Option<&str>,
    ) -> Result<ObjectReader> {
        match version {
            // A caller pinning a version resumes by itself: one attempt, as asked.
            Some(_) => {
                self.inner
                    .get_from(key, offset, version)
                    .instrument(self.span())
                    .await
            }
            None => self.resuming_get(key, offset).await,
        }
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.retrying("LIST", prefix, || {
            self.inner.list(prefix).instrument(self.span())
        })
        .await
    }
    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<ObjectMeta>> {
        self.retrying("LIST", prefix, || {
            self.inner
                .list_after(prefix, start_after)
                .instrument(self.span())
        })
        .await
    }
    async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        self.retrying("LIST", prefix, || {
            self.inner.list_names(prefix).instrument(self.span())
        })
        .await
    }
    fn lists_after_natively(&self) -> bool {
        self.inner.lists_after_natively()
    }
    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.retrying("HEAD", key, || self.inner.stat(key).instrument(self.span()))
            .await
    }
    async fn delete(&self, keys: &[String]) -> Result<()> {
        let first = keys.first().map(String::as_str).unwrap_or("");
        self.retrying("DELETE", first, || {
            self.inner.delete(keys).instrument(self.span())
        })
        .await
    }
    async fn check(&self) -> Result<()> {
        self.inner.check().instrument(self.span()).await
    }
    async fn remove_stale_temporaries(&self) -> Result<usize> {
        self.retrying("CLEANUP", "generations/", || {
            self.inner
                .remove_stale_temporaries()
                .instrument(self.span())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails the first `fail` calls with the given error, then succeeds.
    #[derive(Debug)]
    struct Flaky {
        calls: AtomicUsize,
        fail: usize,
        transient: bool,
    }

    #[async_trait]
    impl Replica for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        fn target(&self) -> String {
            "mem".into()
        }
        async fn put(&self, _key: &str, source: PutSource) -> Result<u64> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut source.open().unwrap(), &mut buf).unwrap();
            if n < self.fail {
                return Err(if self.transient {
                    Error::transient("connection reset by peer")
                } else {
                    Error::config("bad key")
                });
            }
            Ok(buf.len() as u64)
        }
        async fn get(&self, key: &str) -> Result<ByteReader> {
            Err(Error::not_found(key.to_string()))
        }
        async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>> {
            Ok(vec![])
        }
        async fn delete(&self, _keys: &[String]) -> Result<()> {
            Ok(())
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            jitter: false,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_attempts: 4,
        }
    }

    #[tokio::test]
    async fn retries_transient_and_replays_source() {
        let inner = Arc::new(Flaky {
            calls: AtomicUsize::new(0),
            fail: 2,
            transient: true,
        });
        let r = RetryLayer::new(inner.clone(), fast());
        let n = r
            .put("k", PutSource::Bytes(bytes::Bytes::from_static(b"abc")))
            .await
            .unwrap();
        assert_eq!(n, 3, "each attempt must see the whole source");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn does_not_retry_permanent_errors_and_gives_up() {
        let inner = Arc::new(Flaky {
            calls: AtomicUsize::new(0),
            fail: 10,
            transient: false,
        });
        let r = RetryLayer::new(inner.clone(), fast());
        let e = r
            .put("k", PutSource::Bytes(bytes::Bytes::new()))
            .await
            .unwrap_err();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        assert_eq!(e.attempts(), None, "not retried, so not exhausted: {e}");
        let inner = Arc::new(Flaky {
            calls: AtomicUsize::new(0),
            fail: 10,
            transient: true,
        });
        let r = RetryLayer::new(inner.clone(), fast());
        let e = r
            .put("k", PutSource::Bytes(bytes::Bytes::new()))
            .await
            .unwrap_err();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 4);
        // Still retryable by kind (the next sync may succeed), and marked as given up on.
        assert!(e.is_retryable());
        assert_eq!(e.attempts(), Some(4));
        assert!(e.to_string().ends_with("(gave up after 4 attempts)"), "{e}");
    }

    /// A download cut midway is resumed by the layer from the byte reached, as a second get of
    /// the backend; every byte arrives once, in order.
    #[tokio::test]
    async fn a_broken_download_is_resumed_from_the_byte_reached() {
        use crate::testing::{Calls, Fault, Faulty, MemoryReplica, Op};
        use tokio::io::AsyncReadExt;
        let mem = MemoryReplica::new();
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        mem.put("k", PutSource::Bytes(bytes::Bytes::from(body.clone())))
            .await
            .unwrap();
        let faulty = Faulty::new(mem.clone());
        faulty.inject(Op::Get, Calls::Nth(1), Fault::Cut(30_000));
        faulty.inject(Op::Get, Calls::Nth(2), Fault::Cut(20_000));
        let r = RetryLayer::new(faulty.clone(), fast());
        let mut got = Vec::new();
        r.get("k")
            .await
            .unwrap()
            .read_to_end(&mut got)
            .await
            .unwrap();
        assert!(got == body, "{} bytes", got.len());
        assert_eq!(faulty.calls(Op::Get), 3, "opened, then resumed twice");
        // Without the layer the cut is the caller's error.
        faulty.inject(Op::Get, Calls::Nth(4), Fault::Cut(10));
        let mut rd = faulty.get("k").await.unwrap();
        assert!(rd.read_to_end(&mut Vec::new()).await.is_err());
    }

    /// An error a backend already retried to exhaustion is not retried again by the layer.
    #[tokio::test]
    async fn an_exhausted_error_is_not_retried_again() {
        #[derive(Debug)]
        struct Exhausted(AtomicUsize);
        #[async_trait]
        impl Replica for Exhausted {
            fn kind(&self) -> &'static str {
                "x"
            }
            fn target(&self) -> String {
                "x".into()
            }
            async fn put(&self, _key: &str, _source: PutSource) -> Result<u64> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Err(Error::transient("part 3: connection reset").exhausted(6))
            }
            async fn get(&self, key: &str) -> Result<ByteReader> {
                Err(Error::not_found(key.to_string()))
            }
            async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>> {
                Ok(vec![])
            }
            async fn delete(&self, _keys: &[String]) -> Result<()> {
                Ok(())
            }
        }
        let inner = Arc::new(Exhausted(AtomicUsize::new(0)));
        let r = RetryLayer::new(inner.clone(), fast());
        let e = r
            .put("k", PutSource::Bytes(bytes::Bytes::new()))
            .await
            .unwrap_err();
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        assert_eq!(e.attempts(), Some(6));
    }
}

//! Retry as a layer: one policy for every backend, so attempts never multiply.
//!
//! Only errors that say they are retryable are retried, with exponential backoff, jitter and a cap.
//! `put` sources re-open from the start, so a replayed upload is byte-identical.

use crate::error::Result;
use crate::replica::{ByteReader, ObjectMeta, PutSource, Replica};
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Backoff settings of the retry layer.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay before the first retry; later delays grow exponentially, with jitter.
    pub min_delay: Duration,
    /// Upper bound on any one delay between attempts.
    pub max_delay: Duration,
    /// Attempts in all, the first included: 0 or 1 means no retry.
    pub max_attempts: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: 6,
        }
    }
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1))
            .with_jitter()
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
    async fn retrying<T, F, Fut>(&self, op: &'static str, key: &str, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let retries = std::sync::atomic::AtomicU32::new(0);
        attempt
            .retry(self.policy.backoff())
            .when(|e| e.is_retryable())
            .notify(|err, dur| {
                retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(db = %self.db, replica = %self.replica, operation = op, key, error = %err, retry_in = ?dur, "transient replica error, retrying");
            })
            .await
            .map_err(|e| match retries.into_inner() {
                n if n > 0 && e.is_retryable() => e.exhausted(n + 1),
                _ => e,
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
        self.retrying("GET", key, || self.inner.get(key).instrument(self.span()))
            .await
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
}

//! Restore progress: a bar on stderr (indicatif) when stderr is a terminal, nothing extra
//! otherwise (the restore's own log lines say what happens). Progress is counted in downloaded
//! bytes by wrapping the replica, so the engine knows nothing about terminals.

use async_trait::async_trait;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use walship_core::replica::{ByteReader, DynReplica, ObjectMeta, PutSource, Replica};
use walship_core::Result;

/// A progress bar over `total` bytes, or `None` when stderr is not a terminal.
pub fn bar(total: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "restoring {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style);
    }
    Some(pb)
}

/// Counts the bytes read from every `get` into the bar.
#[derive(Debug)]
pub struct Counting {
    inner: DynReplica,
    pb: ProgressBar,
}

impl Counting {
    pub fn wrap(inner: DynReplica, pb: ProgressBar) -> DynReplica {
        Arc::new(Counting { inner, pb })
    }
}

#[async_trait]
impl Replica for Counting {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn target(&self) -> String {
        self.inner.target()
    }
    async fn put(&self, key: &str, source: PutSource) -> Result<u64> {
        self.inner.put(key, source).await
    }
    async fn get(&self, key: &str) -> Result<ByteReader> {
        let r = self.inner.get(key).await?;
        Ok(Box::new(CountingReader {
            inner: r,
            pb: self.pb.clone(),
        }))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list_after(prefix, start_after).await
    }
    async fn delete(&self, keys: &[String]) -> Result<()> {
        self.inner.delete(keys).await
    }
    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }
    async fn remove_stale_temporaries(&self) -> Result<usize> {
        self.inner.remove_stale_temporaries().await
    }
}

struct CountingReader {
    inner: ByteReader,
    pb: ProgressBar,
}

impl AsyncRead for CountingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.pb.inc(n as u64);
        }
        res
    }
}

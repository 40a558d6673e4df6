//! Uploads: one request for a small object, a multipart upload for a large one, streamed from
//! the source a part at a time so memory stays bounded whatever the object's size.

use crate::store::ObjectStoreReplica;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use object_store::retry::{RetryContext, RetryFailure, RetryPolicy};
use object_store::{PutMultipartOptions, PutOptions, PutPayload};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use walship_core::replica::PutSource;
use walship_core::{Error, Result};

/// Objects up to this size go in one request; larger ones in parts of this size (GCS wants at
/// least 5 MiB per part but the last, Azure at most 4,000 MiB per block).
pub const PART_SIZE: usize = 8 << 20;

/// Parts of one upload in flight at once; with one part read ahead, an upload holds at most
/// `(PART_CONCURRENCY + 2) × PART_SIZE` bytes.
pub const PART_CONCURRENCY: usize = 4;

/// Attempts of one part after its first (a multipart upload is not restarted whole for one
/// part's hiccup).
const PART_RETRIES: usize = 4;

/// Retries a failed part alone: server errors, throttling and transport failures, with
/// exponential backoff from 0.5 s; the request's own retries are off ([`crate::retry_config`]).
#[derive(Debug, Default)]
pub struct PartRetry;

/// Whether a failure of one part is worth another attempt. Pure, for the tests.
fn part_retryable(f: &RetryFailure) -> bool {
    match f {
        RetryFailure::Status(s) => s.is_server_error() || matches!(s.as_u16(), 408 | 429),
        RetryFailure::Transport(_) => true,
        _ => false,
    }
}

#[async_trait]
impl RetryPolicy for PartRetry {
    async fn retry(&self, ctx: RetryContext) -> bool {
        if ctx.attempt > PART_RETRIES || !part_retryable(&ctx.failure) {
            return false;
        }
        let exp = u32::try_from(ctx.attempt.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(4);
        tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(exp)).await;
        true
    }
}

/// A backend's own upload of a whole object (see [`crate::Client::upload`]).
#[async_trait]
pub trait Upload: Send + Sync {
    /// Stores the chunks at the full object name `name` (`what` names it in errors), each
    /// request bounded by `timeout`; returns the bytes stored.
    async fn put(&self, name: &str, what: &str, chunks: Chunks, timeout: Duration) -> Result<u64>;
}

/// The source of an upload, [`PART_SIZE`] bytes at a time, read on a blocking thread one chunk
/// ahead of the consumer. The last chunk is shorter than [`PART_SIZE`] (empty when the source
/// ends on a part boundary).
pub struct Chunks {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
}

impl Chunks {
    /// Starts reading `source`.
    pub fn start(source: PutSource) -> Chunks {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::task::spawn_blocking(move || read_parts(source, tx));
        Chunks { rx }
    }

    /// The next chunk; `what` names the object in errors.
    pub async fn next(&mut self, what: &str) -> Result<Bytes> {
        match self.rx.recv().await {
            Some(Ok(b)) => Ok(b),
            Some(Err(e)) => Err(Error::io(format!("read the source of {what}"), e)),
            None => Err(Error::io(
                format!("read the source of {what}"),
                std::io::Error::other("the reading thread ended early"),
            )),
        }
    }
}

fn read_parts(source: PutSource, tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) {
    let mut src = match source.open() {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    loop {
        let mut buf = vec![0u8; PART_SIZE];
        let mut n = 0;
        while n < PART_SIZE {
            match src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        buf.truncate(n);
        let last = n < PART_SIZE;
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() || last {
            return;
        }
    }
}

/// Stores `source` at `key`; returns the bytes stored.
pub(crate) async fn put(r: &ObjectStoreReplica, key: &str, source: PutSource) -> Result<u64> {
    let shared = r.client()?;
    let what = r.what(key);
    let mut chunks = Chunks::start(source);
    if let Some(up) = &shared.upload {
        let _slot = shared.slot().await;
        return up
            .put(&r.full(key), &what, chunks, r.operation_timeout())
            .await;
    }
    let path = r.path(key)?;
    let first = chunks.next(&what).await?;
    if first.len() < PART_SIZE {
        let n = first.len() as u64;
        let _slot = shared.slot().await;
        r.timed(
            "Put",
            key,
            shared
                .store
                .put_opts(&path, PutPayload::from(first), PutOptions::default()),
        )
        .await?;
        return Ok(n);
    }
    let opts = PutMultipartOptions::default().with_retry_policy(Arc::new(PartRetry));
    let mut upload = {
        let _slot = shared.slot().await;
        r.timed(
            "CreateMultipartUpload",
            key,
            shared.store.put_multipart_opts(&path, opts),
        )
        .await?
    };
    // Each part may take its attempts and their backoff (0.5 + 1 + 2 + 4 + 8 s).
    let part_limit = r.operation_timeout() * (PART_RETRIES as u32 + 1) + Duration::from_secs(16);
    let mut total = 0u64;
    let res: Result<()> = async {
        let mut inflight = FuturesUnordered::new();
        let mut chunk = Some(first);
        while let Some(c) = chunk.take() {
            let last = c.len() < PART_SIZE;
            if !c.is_empty() {
                total += c.len() as u64;
                let slot = shared.slot().await;
                let part = upload.put_part(PutPayload::from(c));
                inflight.push(async move {
                    let _slot = slot;
                    tokio::time::timeout(part_limit, part).await
                });
            }
            while inflight.len() >= PART_CONCURRENCY {
                part_done(r, key, inflight.next().await)?;
            }
            if !last {
                chunk = Some(chunks.next(&what).await?);
            }
        }
        while let Some(done) = inflight.next().await {
            part_done(r, key, Some(done))?;
        }
        Ok(())
    }
    .await;
    match res {
        Ok(()) => {
            let _slot = shared.slot().await;
            r.timed("CompleteMultipartUpload", key, upload.complete())
                .await?;
            Ok(total)
        }
        Err(e) => {
            // Parts already stored would otherwise be billed until the service drops them.
            if let Err(a) = upload.abort().await {
                tracing::debug!(key, error = %a, "abort of a failed multipart upload");
            }
            Err(e)
        }
    }
}

type PartResult = std::result::Result<object_store::Result<()>, tokio::time::error::Elapsed>;

fn part_done(r: &ObjectStoreReplica, key: &str, done: Option<PartResult>) -> Result<()> {
    match done {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(r.error("UploadPart", key, e)),
        Some(Err(_)) => Err(Error::transient(format!(
            "UploadPart {}: a part got no answer in time",
            r.what(key)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::client::HttpErrorKind;

    #[test]
    fn parts_are_retried_on_server_errors_and_transport_failures_only() {
        let status = |n: u16| RetryFailure::Status(n.try_into().unwrap());
        assert!(part_retryable(&status(503)));
        assert!(part_retryable(&status(500)));
        assert!(part_retryable(&status(429)));
        assert!(!part_retryable(&status(403)));
        assert!(!part_retryable(&status(400)));
        assert!(part_retryable(&RetryFailure::Transport(
            HttpErrorKind::Connect
        )));
    }
}

//! Uploads: one PutObject up to [`PART_SIZE`], multipart above it with parts of [`PART_SIZE`]
//! and at most [`PART_CONCURRENCY`] in flight. Each part is retried on its own on transient
//! errors; a failed upload is aborted. The source is a blocking `Read`, so it is opened and read
//! on blocking threads, one part at a time (memory stays near `PART_SIZE × (concurrency + 1)`).

use crate::errors::{map_sdk, what};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use std::io::Read;
use tokio::task::JoinSet;
use walship_core::replica::PutSource;
use walship_core::retry::RetryPolicy;
use walship_core::{Error, ErrorKind, Result};

/// Size of each multipart part (S3 needs ≥ 5 MiB for all but the last) and the largest object
/// sent as a single PutObject.
pub const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once, per upload.
pub const PART_CONCURRENCY: usize = 4;
/// S3's limit on the number of parts.
const MAX_PARTS: i32 = 10_000;

type Source = Box<dyn Read + Send>;

/// Reads up to `PART_SIZE` bytes on a blocking thread; returns the reader for the next call.
async fn read_part(mut src: Source, what: &str) -> Result<(Source, Bytes)> {
    let w = what.to_string();
    tokio::task::spawn_blocking(move || {
        // Grown as read: most objects are a few KiB, and a full part's capacity reserved for
        // each of a thousand tenants' first snapshots at once is gigabytes of address space.
        let mut buf = Vec::new();
        (&mut src)
            .take(PART_SIZE as u64)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("{w}: read source"), e))?;
        buf.shrink_to_fit();
        Ok((src, Bytes::from(buf)))
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Other, format!("{what}: reader task failed: {e}")))?
}

async fn open_source(source: PutSource, what: &str) -> Result<Source> {
    let w = what.to_string();
    tokio::task::spawn_blocking(move || {
        source
            .open()
            .map_err(|e| Error::io(format!("{w}: open source"), e))
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Other, format!("{what}: reader task failed: {e}")))?
}

/// Stores `source` at `key`; returns the number of bytes stored.
pub(crate) async fn put(
    client: &Client,
    bucket: &str,
    key: &str,
    source: PutSource,
) -> Result<u64> {
    let w = what("PutObject", bucket, key);
    let src = open_source(source, &w).await?;
    let (src, first) = read_part(src, &w).await?;
    if first.len() < PART_SIZE {
        return put_single(client, bucket, key, first).await;
    }
    let (src, second) = read_part(src, &w).await?;
    if second.is_empty() {
        return put_single(client, bucket, key, first).await;
    }
    let wm = what("CreateMultipartUpload", bucket, key);
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| map_sdk(&wm, e))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Other,
                format!("s3 {wm}: no upload id in the answer"),
            )
        })?
        .to_string();
    let res = multipart(client, bucket, key, &upload_id, src, [first, second]).await;
    if res.is_err() {
        let abort = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .send()
            .await;
        if let Err(e) = abort {
            tracing::warn!(bucket, key, error = %map_sdk(&what("AbortMultipartUpload", bucket, key), e),
                "could not abort a failed multipart upload; the bucket's lifecycle rules must clean it up");
        }
    }
    res
}

async fn put_single(client: &Client, bucket: &str, key: &str, body: Bytes) -> Result<u64> {
    let n = body.len() as u64;
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_length(n as i64)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| map_sdk(&what("PutObject", bucket, key), e))?;
    Ok(n)
}

async fn multipart(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    mut src: Source,
    first: [Bytes; 2],
) -> Result<u64> {
    let w = what("UploadPart", bucket, key);
    let mut queued: std::collections::VecDeque<Bytes> = first.into_iter().collect();
    let mut tasks: JoinSet<Result<CompletedPart>> = JoinSet::new();
    let mut parts = Vec::new();
    let mut next_number: i32 = 1;
    let mut total: u64 = 0;
    let mut eof = false;
    loop {
        // Fill the window, reading the next part while the others upload.
        while tasks.len() < PART_CONCURRENCY && !(eof && queued.is_empty()) {
            let body = match queued.pop_front() {
                Some(b) => b,
                None => {
                    let (s, b) = read_part(src, &w).await?;
                    src = s;
                    if b.len() < PART_SIZE {
                        eof = true;
                    }
                    if b.is_empty() {
                        continue;
                    }
                    b
                }
            };
            if next_number > MAX_PARTS {
                return Err(Error::invalid(format!(
                    "s3 {w}: object larger than {MAX_PARTS} parts of {PART_SIZE} bytes"
                )));
            }
            total += body.len() as u64;
            let (c, b, k, u) = (
                client.clone(),
                bucket.to_string(),
                key.to_string(),
                upload_id.to_string(),
            );
            let number = next_number;
            next_number += 1;
            tasks.spawn(async move { upload_part(&c, &b, &k, &u, number, body).await });
        }
        match tasks.join_next().await {
            None => break,
            Some(Ok(Ok(part))) => parts.push(part),
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!("s3 {w}: part task failed: {e}"),
                ))
            }
        }
    }
    parts.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| map_sdk(&what("CompleteMultipartUpload", bucket, key), e))?;
    Ok(total)
}

/// One part, retried on its own on transient errors (the body is `Bytes`, so it replays), with
/// the core retry policy; a part it gave up on fails the upload as exhausted, so the retry layer
/// above does not start the whole upload again (attempts would multiply).
async fn upload_part(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    number: i32,
    body: Bytes,
) -> Result<CompletedPart> {
    let w = format!("{} part {number}", what("UploadPart", bucket, key));
    let mut delays = RetryPolicy::default().delays();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let res = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .map_err(|e| map_sdk(&w, e));
        match res {
            Ok(out) => {
                return Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build())
            }
            Err(e) if e.is_retryable() => match delays.next() {
                Some(delay) => {
                    tracing::warn!(part = number, error = %e, retry_in = ?delay, "s3 part upload failed, retrying the part");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(e.exhausted(attempt)),
            },
            Err(e) => return Err(e),
        }
    }
}

//! The S3 replica: objects under `<prefix>/` in one bucket.

use crate::client;
use crate::config::S3Config;
use crate::errors::{map_sdk, what};
use crate::upload;
use async_trait::async_trait;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::OnceCell;
use walship_core::replica::{ByteReader, ObjectMeta, ObjectReader, PutSource, Replica};
use walship_core::{Error, ErrorKind, Result};

/// DeleteObjects accepts at most this many keys per call.
const DELETE_BATCH: usize = 1000;

#[derive(Debug)]
pub struct S3Replica {
    cfg: Arc<S3Config>,
    /// Built at first use: the default credential chain and the region lookup are async.
    client: OnceCell<client::Shared>,
}

impl S3Replica {
    pub fn new(cfg: S3Config) -> Self {
        S3Replica {
            cfg: Arc::new(cfg),
            client: OnceCell::new(),
        }
    }

    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// The client, and room for one request in flight ([`client::Shared::slot`]).
    async fn client(&self) -> Result<(&Client, tokio::sync::OwnedSemaphorePermit)> {
        let shared = self
            .client
            .get_or_try_init(|| client::shared(&self.cfg))
            .await?;
        Ok((&shared.client, shared.slot().await))
    }

    /// Every object under `prefix`, after the full key `start_after` when given.
    async fn list_from(
        &self,
        prefix: &str,
        start_after: Option<String>,
    ) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        self.pages(prefix, start_after, None, |w, _, page| {
            for o in page.contents() {
                let Some(k) = o.key() else { continue };
                let Some(rel) = self.cfg.relative_key(k) else {
                    continue;
                };
                let modified = o
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Corrupt,
                            format!("s3 {w}: object {k} has no LastModified"),
                        )
                    })?;
                out.push(ObjectMeta {
                    key: rel.to_string(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    modified,
                });
            }
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Runs ListObjectsV2 under `prefix` to its last page, handing `f` each page with the
    /// request's description and the prefix as sent (the replica's root joined).
    async fn pages(
        &self,
        prefix: &str,
        start_after: Option<String>,
        delimiter: Option<&str>,
        mut f: impl FnMut(&str, &str, ListObjectsV2Output) -> Result<()>,
    ) -> Result<()> {
        let (client, _slot) = self.client().await?;
        let full = self.cfg.object_key(prefix);
        let w = what("ListObjectsV2", &self.cfg.bucket, &full);
        let mut pages = client
            .list_objects_v2()
            .bucket(&self.cfg.bucket)
            .prefix(&full)
            .set_start_after(start_after)
            .set_delimiter(delimiter.map(str::to_owned))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            f(&w, &full, page.map_err(|e| map_sdk(&w, e))?)?;
        }
        Ok(())
    }
}

/// Issues a GetObject (ranged from `offset` when > 0, pinned to `etag` when known).
async fn get_object(
    client: &Client,
    bucket: &str,
    key: &str,
    offset: u64,
    etag: Option<&str>,
) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
    let mut req = client.get_object().bucket(bucket).key(key);
    if offset > 0 {
        req = req.range(format!("bytes={offset}-"));
    }
    if let Some(t) = etag {
        req = req.if_match(t);
    }
    req.send().await.map_err(|e| {
        let e = map_sdk(&what("GetObject", bucket, key), e);
        if e.kind() == ErrorKind::NotFound {
            Error::not_found(format!("object {key} not found in s3://{bucket}")).with_source(e)
        } else {
            e
        }
    })
}

#[async_trait]
impl Replica for S3Replica {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn target(&self) -> String {
        self.cfg.target()
    }

    async fn put(&self, key: &str, source: PutSource) -> Result<u64> {
        let (client, _slot) = self.client().await?;
        upload::put(client, &self.cfg.bucket, &self.cfg.object_key(key), source).await
    }

    async fn get(&self, key: &str) -> Result<ByteReader> {
        Ok(self.get_from(key, 0, None).await?.reader)
    }

    /// A ranged GET pinned to the ETag when resuming (`If-Match`), so a resumed download never
    /// splices two versions of an object.
    async fn get_from(
        &self,
        key: &str,
        offset: u64,
        version: Option<&str>,
    ) -> Result<ObjectReader> {
        // The slot covers the request, not the body a caller may read for long after.
        let (client, _slot) = self.client().await?;
        let okey = self.cfg.object_key(key);
        let out = get_object(client, &self.cfg.bucket, &okey, offset, version).await?;
        Ok(ObjectReader {
            remaining: out.content_length().and_then(|n| u64::try_from(n).ok()),
            version: out.e_tag().map(str::to_owned),
            reader: Box::new(out.body.into_async_read()),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.list_from(prefix, None).await
    }

    /// ListObjectsV2's `StartAfter`: the store skips what comes before, page by page.
    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<ObjectMeta>> {
        let start = (!start_after.is_empty()).then(|| self.cfg.object_key(start_after));
        self.list_from(prefix, start).await
    }

    fn lists_after_natively(&self) -> bool {
        true
    }

    /// ListObjectsV2 with delimiter `/`: one page per 1,000 names, no objects.
    async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.pages(prefix, None, Some("/"), |_, full, page| {
            for p in page.common_prefixes() {
                let name = p
                    .prefix()
                    .and_then(|p| p.strip_prefix(full))
                    .and_then(|n| n.strip_suffix('/'))
                    .filter(|n| !n.is_empty() && !n.contains('/'));
                if let Some(n) = name {
                    out.push(n.to_string());
                }
            }
            Ok(())
        })
        .await?;
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn delete(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let (client, _slot) = self.client().await?;
        for batch in keys.chunks(DELETE_BATCH) {
            let first = self.cfg.object_key(&batch[0]);
            let w = if batch.len() > 1 {
                format!(
                    "{} (+{} more)",
                    what("DeleteObjects", &self.cfg.bucket, &first),
                    batch.len() - 1
                )
            } else {
                what("DeleteObjects", &self.cfg.bucket, &first)
            };
            let objects = batch
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(self.cfg.object_key(k))
                        .build()
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::new(ErrorKind::Other, format!("s3 {w}: {e}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| Error::new(ErrorKind::Other, format!("s3 {w}: {e}")))?;
            let out = client
                .delete_objects()
                .bucket(&self.cfg.bucket)
                .delete(delete)
                .customize()
                .mutate_request(client::delete_objects_md5)
                .send()
                .await
                .map_err(|e| map_sdk(&w, e))?;
            // Quiet mode reports failures only; a missing key is not one.
            let failed: Vec<_> = out
                .errors()
                .iter()
                .filter(|e| e.code() != Some("NoSuchKey"))
                .collect();
            if let Some(e) = failed.first() {
                let code = e.code().unwrap_or("error");
                let kind =
                    crate::errors::classify(crate::errors::Failure::Service, None, Some(code));
                return Err(Error::new(
                    kind,
                    format!(
                        "s3 DeleteObjects s3://{}/{}: {code}: {} ({} of {} keys failed)",
                        self.cfg.bucket,
                        e.key().unwrap_or("?"),
                        e.message().unwrap_or(""),
                        failed.len(),
                        batch.len()
                    ),
                ));
            }
        }
        Ok(())
    }
}

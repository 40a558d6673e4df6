//! Uploads through the GCS JSON API: one media upload up to a part, a resumable upload above
//! (chunks of [`PART_SIZE`], each resent from what the server says it holds when a request
//! fails).

use crate::api::{answer_error, enc, JsonApi};
use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use std::time::Duration;
use walship_core::{Error, ErrorKind, Result};
use walship_objstore::{Chunks, Upload, PART_SIZE};

/// Attempts of one chunk after its first.
const CHUNK_RETRIES: u32 = 4;

/// `Range: bytes=0-N` of a 308 answer: how many bytes the server holds (0 without the header).
fn persisted(range: Option<&HeaderValue>) -> Option<u64> {
    let Some(r) = range else { return Some(0) };
    let end = r.to_str().ok()?.strip_prefix("bytes=0-")?;
    end.trim().parse::<u64>().ok().map(|n| n + 1)
}

impl JsonApi {
    fn upload_url(&self, kind: &str, name: &str) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o?uploadType={kind}&name={}",
            self.base,
            enc(&self.bucket),
            enc(name)
        )
    }

    /// How many bytes the resumable session holds; None when it is complete.
    async fn session_status(
        &self,
        session: &str,
        what: &str,
        timeout: Duration,
    ) -> Result<Option<u64>> {
        let req = self
            .http
            .put(session)
            .header(CONTENT_RANGE, "bytes */*")
            .header(CONTENT_LENGTH, 0);
        let resp = self.send("QueryUpload", what, req, timeout).await?;
        match resp.status().as_u16() {
            200 | 201 => Ok(None),
            308 => persisted(resp.headers().get(RANGE))
                .map(Some)
                .ok_or_else(|| {
                    Error::invalid(format!("QueryUpload {what}: unreadable Range header"))
                }),
            _ => Err(answer_error("QueryUpload", what, resp).await),
        }
    }

    /// Sends `data`, which starts at byte `offset` of the object; `total` is the object's size
    /// when this is its last chunk. Resent from what the server holds after a failure.
    async fn put_chunk(
        &self,
        session: &str,
        what: &str,
        data: &Bytes,
        offset: u64,
        total: Option<u64>,
        timeout: Duration,
    ) -> Result<()> {
        let end = offset + data.len() as u64;
        let mut from = offset;
        let mut failures = 0;
        loop {
            let body = data.slice((from - offset) as usize..);
            let range = match (body.is_empty(), total) {
                (true, Some(t)) => format!("bytes */{t}"),
                (true, None) => return Ok(()),
                (false, t) => format!(
                    "bytes {from}-{}/{}",
                    end - 1,
                    t.map_or("*".to_owned(), |t| t.to_string())
                ),
            };
            let req = self
                .http
                .put(session)
                .header(CONTENT_RANGE, range)
                .header(CONTENT_LENGTH, body.len())
                .body(body);
            let failed = match self.send("UploadChunk", what, req, timeout).await {
                Ok(resp) => match resp.status().as_u16() {
                    200 | 201 if total.is_some() => return Ok(()),
                    // Part of the chunk kept (a last chunk too): send the rest, not a failure.
                    308 => match persisted(resp.headers().get(RANGE)) {
                        Some(held) if total.is_none() && held >= end => return Ok(()),
                        Some(held) if held > from && held < end => {
                            from = held;
                            continue;
                        }
                        _ => Error::transient(format!(
                            "UploadChunk {what}: the server kept nothing of the chunk"
                        )),
                    },
                    _ => answer_error("UploadChunk", what, resp).await,
                },
                Err(e) => e,
            };
            failures += 1;
            if failed.kind() != ErrorKind::Transient || failures > CHUNK_RETRIES {
                return Err(failed);
            }
            tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(failures - 1)).await;
            match self.session_status(session, what, timeout).await? {
                None if total.is_some() => return Ok(()),
                None => {
                    return Err(Error::invalid(format!(
                        "UploadChunk {what}: the upload completed before its last chunk"
                    )))
                }
                Some(held) if held < offset => {
                    return Err(Error::transient(format!(
                        "UploadChunk {what}: the server lost bytes it had acknowledged"
                    )))
                }
                Some(held) => from = held.min(end),
            }
        }
    }
}

#[async_trait]
impl Upload for JsonApi {
    async fn put(
        &self,
        name: &str,
        what: &str,
        mut chunks: Chunks,
        timeout: Duration,
    ) -> Result<u64> {
        let first = chunks.next(what).await?;
        if first.len() < PART_SIZE {
            let n = first.len() as u64;
            let req = self
                .http
                .post(self.upload_url("media", name))
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(first);
            let resp = self.send("Put", what, req, timeout).await?;
            if !resp.status().is_success() {
                return Err(answer_error("Put", what, resp).await);
            }
            return Ok(n);
        }
        let req = self
            .http
            .post(self.upload_url("resumable", name))
            .header("X-Upload-Content-Type", "application/octet-stream")
            .header(CONTENT_TYPE, "application/json")
            .body("{}");
        let resp = self
            .send("StartResumableUpload", what, req, timeout)
            .await?;
        if !resp.status().is_success() {
            return Err(answer_error("StartResumableUpload", what, resp).await);
        }
        let session = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "StartResumableUpload {what}: no session URL in the answer"
                ))
            })?;
        let mut offset = 0u64;
        let mut chunk = first;
        let res = async {
            loop {
                let last = chunk.len() < PART_SIZE;
                let total = last.then(|| offset + chunk.len() as u64);
                self.put_chunk(&session, what, &chunk, offset, total, timeout)
                    .await?;
                offset += chunk.len() as u64;
                if last {
                    return Ok(offset);
                }
                chunk = chunks.next(what).await?;
            }
        }
        .await;
        if res.is_err() {
            // An abandoned session expires on its own after a week; cancel it now.
            let _ = self
                .send("CancelUpload", what, self.http.delete(&session), timeout)
                .await;
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(persisted(None), Some(0));
        assert_eq!(
            persisted(Some(&HeaderValue::from_static("bytes=0-8388607"))),
            Some(8 << 20)
        );
        assert_eq!(
            persisted(Some(&HeaderValue::from_static("bytes=5-9"))),
            None
        );
    }
}

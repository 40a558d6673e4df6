//! Downloads through the GCS JSON API (`objects.get?alt=media`): ranged, and pinned to the
//! object's generation when a broken download resumes, so it never splices two versions.

use crate::api::{answer_error, enc, transport, JsonApi};
use async_trait::async_trait;
use futures::TryStreamExt;
use reqwest::header::RANGE;
use std::time::Duration;
use walship_core::replica::ObjectReader;
use walship_core::{Error, Result};
use walship_objstore::Download;

/// The answer header that names the version served.
const GENERATION: &str = "x-goog-generation";

impl JsonApi {
    fn media_url(&self, name: &str, version: Option<&str>) -> String {
        let mut url = format!(
            "{}/storage/v1/b/{}/o/{}?alt=media",
            self.base,
            enc(&self.bucket),
            enc(name)
        );
        if let Some(g) = version {
            url.push_str(&format!("&ifGenerationMatch={}", enc(g)));
        }
        url
    }
}

#[async_trait]
impl Download for JsonApi {
    async fn get(
        &self,
        name: &str,
        offset: u64,
        version: Option<&str>,
        what: &str,
        timeout: Duration,
    ) -> Result<ObjectReader> {
        let mut req = self.http.get(self.media_url(name, version));
        if offset > 0 {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        let req = self.authorize(req, what).await?;
        // Headers within operation-timeout; the body may take longer (the client's read
        // timeout catches a stall).
        let resp = match tokio::time::timeout(timeout, req.send()).await {
            Err(_) => {
                return Err(Error::transient(format!(
                    "Get {what}: no answer within operation-timeout ({timeout:?})"
                )))
            }
            Ok(r) => r.map_err(|e| transport("Get", what, e))?,
        };
        match resp.status().as_u16() {
            206 => {}
            200 if offset == 0 => {}
            200 => {
                return Err(Error::invalid(format!(
                    "Get {what}: the server ignored the range from byte {offset}"
                )))
            }
            404 => return Err(Error::not_found(format!("object {what} not found"))),
            412 => {
                return Err(Error::invalid(format!(
                    "Get {what}: the object was replaced while it was read (generation {} is gone)",
                    version.unwrap_or("?")
                )))
            }
            // Asked from its end: nothing left to read.
            416 => {
                return Ok(ObjectReader {
                    reader: Box::new(tokio::io::empty()),
                    remaining: Some(0),
                    version: version.map(str::to_owned),
                })
            }
            _ => return Err(answer_error("Get", what, resp).await),
        }
        let generation = resp
            .headers()
            .get(GENERATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let remaining = resp.content_length();
        let what = what.to_owned();
        let body = resp
            .bytes_stream()
            .map_err(move |e| std::io::Error::other(format!("read {what}: {e}")));
        Ok(ObjectReader {
            reader: Box::new(tokio_util::io::StreamReader::new(body)),
            remaining,
            version: generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_urls_encode_names_and_pin_generations() {
        let api = JsonApi {
            http: reqwest::Client::new(),
            base: "http://127.0.0.1:4443".into(),
            bucket: "b-1".into(),
            credentials: std::sync::Arc::new(object_store::StaticCredentialProvider::new(
                object_store::gcp::GcpCredential {
                    bearer: String::new(),
                },
            )),
        };
        assert_eq!(
            api.media_url("p/generations/x.lz4", None),
            "http://127.0.0.1:4443/storage/v1/b/b%2D1/o/p%2Fgenerations%2Fx%2Elz4?alt=media"
        );
        assert!(api
            .media_url("k", Some("1733"))
            .ends_with("/o/k?alt=media&ifGenerationMatch=1733"));
    }
}

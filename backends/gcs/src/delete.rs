//! Deletes through the GCS JSON API (`objects.delete`), a few at a time. The JSON API's batch
//! endpoint takes a multipart body of sub-requests; retention deletes at most a generation's
//! objects at once, and a handful of requests in flight on one connection pool does that fast.

use crate::api::{answer_error, enc, JsonApi};
use async_trait::async_trait;
use std::time::Duration;
use walship_core::Result;
use walship_objstore::Delete;

/// Deletes in flight at once (in batches of this many).
const IN_FLIGHT: usize = 8;

impl JsonApi {
    fn object_url(&self, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base,
            enc(&self.bucket),
            enc(name)
        )
    }

    async fn delete_one(&self, name: &str, what: &str, timeout: Duration) -> Result<()> {
        let resp = self
            .send(
                "Delete",
                what,
                self.http.delete(self.object_url(name)),
                timeout,
            )
            .await?;
        match resp.status().as_u16() {
            200 | 204 | 404 => Ok(()),
            _ => Err(answer_error("Delete", what, resp).await),
        }
    }
}

#[async_trait]
impl Delete for JsonApi {
    async fn delete(&self, names: &[String], what: &str, timeout: Duration) -> Result<()> {
        for chunk in names.chunks(IN_FLIGHT) {
            let mut batch = Vec::with_capacity(chunk.len());
            for n in chunk {
                batch.push(self.delete_one(n, what, timeout));
            }
            futures::future::try_join_all(batch).await?;
        }
        Ok(())
    }
}

//! Listing through the GCS JSON API (`objects.list`), every page, from a start name on.

use crate::api::{answer_error, enc, transport, JsonApi};
use async_trait::async_trait;
use serde::Deserialize;
use std::time::{Duration, SystemTime};
use walship_core::{Error, Result};
use walship_objstore::{List, Listed};

/// Names a page holds at most (the API's own maximum).
const PAGE: u32 = 1000;

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    items: Vec<Item>,
    #[serde(rename = "nextPageToken")]
    next: Option<String>,
}

/// A delimiter listing's page: the prefixes only.
#[derive(Deserialize)]
struct NamesPage {
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(rename = "nextPageToken")]
    next: Option<String>,
}

#[derive(Deserialize)]
struct Item {
    name: String,
    /// A decimal string in the API ("uint64 as string"); a number from some emulators.
    size: Number,
    updated: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Text(String),
    Int(u64),
}

/// The objects of one page, as the replica sees them. Pure, for the tests.
fn parse_page(body: &[u8], what: &str) -> Result<(Vec<Listed>, Option<String>)> {
    let bad = |m: String| Error::invalid(format!("List {what}: unreadable answer: {m}"));
    let page: Page = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::with_capacity(page.items.len());
    for it in page.items {
        let size = match it.size {
            Number::Int(n) => n,
            Number::Text(t) => t
                .parse()
                .map_err(|_| bad(format!("object {:?} has size {t:?}", it.name)))?,
        };
        let modified: SystemTime = time::OffsetDateTime::parse(
            &it.updated,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| {
            bad(format!(
                "object {:?} updated {:?}: {e}",
                it.name, it.updated
            ))
        })?
        .into();
        out.push(Listed {
            name: it.name,
            size,
            modified,
        });
    }
    Ok((out, page.next.filter(|t| !t.is_empty())))
}

/// The prefixes of a delimiter listing's page. Pure, for the tests.
fn parse_names_page(body: &[u8], what: &str) -> Result<(Vec<String>, Option<String>)> {
    let page: NamesPage = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("List {what}: unreadable answer: {e}")))?;
    Ok((page.prefixes, page.next.filter(|t| !t.is_empty())))
}

impl JsonApi {
    /// `objects.list` from `url` (every parameter but the page token), each page parsed by
    /// `parse`, to the last page.
    async fn pages<T>(
        &self,
        url: &str,
        what: &str,
        timeout: Duration,
        parse: impl Fn(&[u8], &str) -> Result<(Vec<T>, Option<String>)>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page_url = match &token {
                Some(t) => format!("{url}&pageToken={}", enc(t)),
                None => url.to_owned(),
            };
            let resp = self
                .send("List", what, self.http.get(&page_url), timeout)
                .await?;
            if !resp.status().is_success() {
                return Err(answer_error("List", what, resp).await);
            }
            let body = resp.bytes().await.map_err(|e| transport("List", what, e))?;
            let (items, next) = parse(&body, what)?;
            out.extend(items);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl List for JsonApi {
    async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        what: &str,
        timeout: Duration,
    ) -> Result<Vec<Listed>> {
        let mut url = format!(
            "{}/storage/v1/b/{}/o?maxResults={PAGE}&fields=nextPageToken,items(name,size,updated)&prefix={}",
            self.base,
            enc(&self.bucket),
            enc(prefix)
        );
        if let Some(s) = start {
            url.push_str(&format!("&startOffset={}", enc(s)));
        }
        self.pages(&url, what, timeout, parse_page).await
    }

    async fn names(&self, prefix: &str, what: &str, timeout: Duration) -> Result<Vec<String>> {
        let url = format!(
            "{}/storage/v1/b/{}/o?maxResults={PAGE}&delimiter=%2F&fields=nextPageToken,prefixes&prefix={}",
            self.base,
            enc(&self.bucket),
            enc(prefix)
        );
        self.pages(&url, what, timeout, parse_names_page).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn pages_parse_with_sizes_as_text_or_number() {
        let body = br#"{"kind":"storage#objects","nextPageToken":"abc","items":[
            {"name":"db/generations/0000000000000001/wal/00000000/00000000.wal.lz4","size":"1234","updated":"2026-12-06T10:00:01.250Z"},
            {"name":"db/x","size":7,"updated":"2026-12-06T10:00:02Z"}]}"#;
        let (items, next) = parse_page(body, "gcs://b/db").unwrap();
        assert_eq!(next.as_deref(), Some("abc"));
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].size, 1234);
        assert_eq!(items[1].size, 7);
        let secs = items[0].modified.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(secs.as_millis() % 1000, 250);
        let (none, end) = parse_page(br#"{"kind":"storage#objects"}"#, "w").unwrap();
        assert!(none.is_empty() && end.is_none());
        let (_, end) = parse_page(br#"{"nextPageToken":""}"#, "w").unwrap();
        assert!(end.is_none());
    }

    #[test]
    fn a_delimiter_page_gives_its_prefixes() {
        let body = br#"{"kind":"storage#objects","prefixes":["db/generations/a/","db/generations/b/"],"nextPageToken":"t"}"#;
        let (names, next) = parse_names_page(body, "w").unwrap();
        assert_eq!(names, ["db/generations/a/", "db/generations/b/"]);
        assert_eq!(next.as_deref(), Some("t"));
        let (none, end) = parse_names_page(br#"{"kind":"storage#objects"}"#, "w").unwrap();
        assert!(none.is_empty() && end.is_none());
    }

    #[test]
    fn a_bad_page_names_the_listing_and_the_object() {
        let e = parse_page(
            br#"{"items":[{"name":"k","size":"x","updated":"2026-12-06T10:00:00Z"}]}"#,
            "gcs://b/p",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("gcs://b/p") && e.contains("\"k\""), "{e}");
        let e = parse_page(b"<html>", "gcs://b/p").unwrap_err().to_string();
        assert!(e.contains("unreadable"), "{e}");
    }
}

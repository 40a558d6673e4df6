//! The GCS JSON API, which every GCS server and emulator serves: walship uploads, lists and reads
//! through it (`object_store` does these through the XML API, which fake-gcs-server, the emulator
//! the tests run, does not serve for uploads, and answers for listings and reads only when the
//! Host header is its `-public-host`, so never through a proxy).

use object_store::gcp::GcpCredentialProvider;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;
use std::time::Duration;
use walship_core::{Error, ErrorKind, Result};

pub(crate) struct JsonApi {
    pub http: reqwest::Client,
    /// `https://storage.googleapis.com`, or the emulator.
    pub base: String,
    pub bucket: String,
    pub credentials: GcpCredentialProvider,
}

/// The walship kind of an HTTP answer. Pure, for the tests.
pub(crate) fn status_kind(s: StatusCode) -> ErrorKind {
    match s.as_u16() {
        404 => ErrorKind::Config,
        401 | 403 => ErrorKind::PermissionDenied,
        408 | 429 => ErrorKind::Transient,
        n if n >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Invalid,
    }
}

pub(crate) fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

pub(crate) fn transport(op: &str, what: &str, e: reqwest::Error) -> Error {
    // A URL in the text names the bucket and object only; the token travels in a header.
    let msg = format!("{op} {what}: {e}");
    if e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() {
        Error::transient(msg)
    } else {
        Error::new(ErrorKind::Other, msg)
    }
}

pub(crate) async fn answer_error(op: &str, what: &str, resp: reqwest::Response) -> Error {
    let status = resp.status();
    let body: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    let kind = status_kind(status);
    let hint = match kind {
        ErrorKind::Config => " (the bucket does not exist, or the credentials cannot see it)",
        ErrorKind::PermissionDenied => {
            " (check the replica's credentials and their access to the bucket)"
        }
        _ => "",
    };
    Error::new(kind, format!("{op} {what}: HTTP {status}: {body}{hint}"))
}

impl JsonApi {
    pub(crate) async fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::RequestBuilder> {
        let cred = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| walship_objstore::map_error("GetToken", what, e, &[]))?;
        Ok(if cred.bearer.is_empty() {
            req
        } else {
            req.header(AUTHORIZATION, format!("Bearer {}", cred.bearer))
        })
    }

    pub(crate) async fn send(
        &self,
        op: &str,
        what: &str,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response> {
        let req = self.authorize(req.timeout(timeout), what).await?;
        req.send().await.map_err(|e| transport(op, what, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_names() {
        assert_eq!(
            status_kind(StatusCode::SERVICE_UNAVAILABLE),
            ErrorKind::Transient
        );
        assert_eq!(
            status_kind(StatusCode::TOO_MANY_REQUESTS),
            ErrorKind::Transient
        );
        assert_eq!(
            status_kind(StatusCode::FORBIDDEN),
            ErrorKind::PermissionDenied
        );
        assert_eq!(status_kind(StatusCode::NOT_FOUND), ErrorKind::Config);
        assert_eq!(status_kind(StatusCode::BAD_REQUEST), ErrorKind::Invalid);
        assert_eq!(enc("a/b c"), "a%2Fb%20c");
    }
}

//! `object_store` errors onto walship's [`ErrorKind`], once, at the edge. Messages name the
//! operation and the object; SAS tokens and keys never reach them (`object_store` leaves the URL
//! of a signed request out of its errors, and [`map_error`] scrubs any secret it is given).

use object_store::client::{HttpError, HttpErrorKind};
use std::error::Error as StdError;
use walship_core::{Error, ErrorKind};

/// The walship kind of an `object_store` failure, and the HTTP status when one was answered.
pub fn classify(e: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => ErrorKind::Config,
        // A resumed download pinned to an ETag found another version of the object.
        E::Precondition { .. } | E::NotModified { .. } | E::AlreadyExists { .. } => {
            ErrorKind::Invalid
        }
        E::JoinError { .. } => ErrorKind::Transient,
        _ => classify_chain(e),
    }
}

/// A generic error: a transport failure anywhere in the chain is transient; otherwise the
/// status the service answered decides, as for S3.
fn classify_chain(e: &(dyn StdError + 'static)) -> ErrorKind {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    let mut status = None;
    while let Some(c) = cur {
        if let Some(h) = c.downcast_ref::<HttpError>() {
            return match h.kind() {
                HttpErrorKind::Connect
                | HttpErrorKind::Request
                | HttpErrorKind::Timeout
                | HttpErrorKind::Interrupted
                | HttpErrorKind::Decode => ErrorKind::Transient,
                _ => ErrorKind::Other,
            };
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            // Below an HTTP client, I/O is the connection: worth another attempt.
            return match io.kind() {
                std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                _ => ErrorKind::Transient,
            };
        }
        status = status.or_else(|| status_in(&c.to_string()));
        cur = c.source();
    }
    match status {
        Some(404) => ErrorKind::NotFound,
        Some(401 | 403) => ErrorKind::PermissionDenied,
        Some(408 | 429) => ErrorKind::Transient,
        Some(s) if s >= 500 => ErrorKind::Transient,
        Some(400 | 409 | 412 | 416) => ErrorKind::Invalid,
        _ => ErrorKind::Other,
    }
}

/// The HTTP status in `object_store`'s text for an error answer ("... status code: 503 ...").
fn status_in(text: &str) -> Option<u16> {
    let rest = &text[text.find("status code: ")? + "status code: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (digits.len() == 3).then(|| digits.parse().ok()).flatten()
}

/// Maps an error of `operation` on `what` (e.g. `gcs://bucket/key`), removing every secret.
pub fn map_error(operation: &str, what: &str, e: object_store::Error, secrets: &[String]) -> Error {
    let kind = classify(&e);
    let mut msg = format!("{operation} {what}: {}", chain_text(&e));
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        msg = msg.replace(s.as_str(), "***");
    }
    if kind == ErrorKind::PermissionDenied {
        msg.push_str(
            " (check the replica's credentials and their access to the bucket or container)",
        );
    }
    // Writes and listings name no object that could be missing: the bucket or container is.
    // (A read, a HEAD or a delete names one; a missing container then shows in the listings.)
    if kind == ErrorKind::NotFound
        && !operation.starts_with("Get")
        && !operation.starts_with("Head")
        && !operation.starts_with("Delete")
    {
        msg.push_str(" (the bucket or container does not exist, or the credentials cannot see it)");
        return Error::new(ErrorKind::Config, msg);
    }
    Error::new(kind, msg)
}

/// The error and its causes, each once (`object_store` often repeats a cause in its own text).
fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Text(&'static str);
    impl std::fmt::Display for Text {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Text {}

    fn generic(source: Box<dyn StdError + Send + Sync>) -> object_store::Error {
        object_store::Error::Generic {
            store: "test",
            source,
        }
    }

    #[test]
    fn kinds_follow_the_answer() {
        let nf = object_store::Error::NotFound {
            path: "a".into(),
            source: Box::new(Text("gone")),
        };
        assert_eq!(classify(&nf), ErrorKind::NotFound);
        let t = |s: &'static str| classify(&generic(Box::new(Text(s))));
        assert_eq!(
            t("Error performing PUT http://x/b/k in 2ms - Server returned non-2xx status code: 503 Service Unavailable: "),
            ErrorKind::Transient
        );
        assert_eq!(
            t("... status code: 429 Too Many Requests"),
            ErrorKind::Transient
        );
        assert_eq!(
            t("... status code: 400 Bad Request: InvalidBlockList"),
            ErrorKind::Invalid
        );
        assert_eq!(t("... status code: 404 Not Found"), ErrorKind::NotFound);
        assert_eq!(t("something else"), ErrorKind::Other);
        let transport = generic(Box::new(HttpError::new(
            HttpErrorKind::Connect,
            Text("refused"),
        )));
        assert_eq!(classify(&transport), ErrorKind::Transient);
        let io = generic(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(classify(&io), ErrorKind::Transient);
    }

    #[test]
    fn secrets_are_scrubbed_and_causes_named_once() {
        let e = generic(Box::new(Text(
            "GET https://a.blob/c/k?sig=SeCrEtSiG failed",
        )));
        let m = map_error("GetBlob", "abs://a@c/k", e, &["SeCrEtSiG".into()]);
        assert!(!m.to_string().contains("SeCrEtSiG"), "{m}");
        assert!(m.to_string().contains("GetBlob abs://a@c/k"), "{m}");
        assert_eq!(status_in("x status code: 5031"), None);
        assert_eq!(status_in("status code: 500 Internal"), Some(500));
    }
}

//! SDK errors onto walship's [`ErrorKind`], once, at the edge. Messages name the operation, the
//! bucket and the key; they never contain credentials (the SDK never puts them in errors).

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use walship_core::{Error, ErrorKind};

/// How a request failed, before looking at the service's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The request could not be built (bad config, missing region or credentials).
    Construction,
    /// No response in time (connect or attempt timeout).
    Timeout,
    /// Connection refused/reset, DNS, TLS, I/O: the request may not have reached the server.
    Dispatch,
    /// A response arrived but could not be read or parsed (e.g. cut off).
    Response,
    /// The service answered with an error.
    Service,
}

/// The walship kind of an S3 failure. Pure, so the table is unit-tested.
pub(crate) fn classify(failure: Failure, status: Option<u16>, code: Option<&str>) -> ErrorKind {
    match failure {
        Failure::Construction => return ErrorKind::Config,
        Failure::Timeout | Failure::Dispatch | Failure::Response => return ErrorKind::Transient,
        Failure::Service => {}
    }
    match code.unwrap_or("") {
        "NoSuchKey" | "NotFound" => return ErrorKind::NotFound,
        "NoSuchBucket"
        | "AuthorizationHeaderMalformed"
        | "PermanentRedirect"
        | "InvalidBucketName" => return ErrorKind::Config,
        "AccessDenied"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "AccountProblem"
        | "InvalidToken"
        | "ExpiredToken"
        | "AllAccessDisabled" => return ErrorKind::PermissionDenied,
        "SlowDown"
        | "InternalError"
        | "ServiceUnavailable"
        | "RequestTimeout"
        | "RequestTimeTooSkewed"
        | "OperationAborted"
        | "Throttling"
        | "ThrottlingException"
        | "TooManyRequests"
        | "RequestTimeoutException" => return ErrorKind::Transient,
        _ => {}
    }
    match status {
        Some(404) => ErrorKind::NotFound,
        Some(401 | 403) => ErrorKind::PermissionDenied,
        Some(408 | 429) => ErrorKind::Transient,
        Some(s) if s >= 500 => ErrorKind::Transient,
        Some(301 | 307 | 400) => ErrorKind::Invalid,
        _ => ErrorKind::Other,
    }
}

/// Maps an SDK error; `what` is e.g. `PutObject s3://bucket/key`.
pub(crate) fn map_sdk<E>(what: &str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let failure = match &err {
        SdkError::ConstructionFailure(_) => Failure::Construction,
        SdkError::TimeoutError(_) => Failure::Timeout,
        SdkError::DispatchFailure(d) if d.is_user() => Failure::Construction,
        SdkError::DispatchFailure(_) => Failure::Dispatch,
        SdkError::ResponseError(_) => Failure::Response,
        SdkError::ServiceError(_) => Failure::Service,
        _ => Failure::Dispatch,
    };
    if failure == Failure::Dispatch {
        if let Some(why) = certificate_refused(&DisplayErrorContext(&err).to_string()) {
            return Error::new(
                ErrorKind::Config,
                format!(
                    "s3 {what}: the server's TLS certificate was refused ({why}); use a \
                     certificate the system trusts, or skip-verify: true for a self-hosted store \
                     on a network you trust"
                ),
            )
            .with_source(err);
        }
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    let kind = classify(failure, status, code.as_deref());
    let detail = match (&failure, code.as_deref(), err.message()) {
        (Failure::Service, Some(c), Some(m)) => format!("{c}: {m}"),
        (Failure::Service, Some(c), None) => c.to_string(),
        (Failure::Timeout, _, _) => format!("timed out ({})", DisplayErrorContext(&err)),
        _ => DisplayErrorContext(&err).to_string(),
    };
    let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    Error::new(kind, format!("s3 {what}: {detail}{status}")).with_source(err)
}

/// The TLS verification failure in an error's text, if that is what it is. Retrying cannot
/// help: the same certificate comes back.
pub(crate) fn certificate_refused(context: &str) -> Option<&str> {
    let start = context.find("invalid peer certificate")?;
    let rest = &context[start..];
    // The SDK appends the Debug form in parentheses; keep the readable part.
    let end = rest.find(" (").unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `Operation s3://bucket/key` for messages.
pub(crate) fn what(op: &str, bucket: &str, key: &str) -> String {
    format!("{op} s3://{bucket}/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_failures_are_recognised() {
        let ctx = "dispatch failure: io error: client error (Connect): invalid peer certificate: \
                   UnknownIssuer (DispatchFailure(DispatchFailure { .. }))";
        assert_eq!(
            certificate_refused(ctx),
            Some("invalid peer certificate: UnknownIssuer")
        );
        assert_eq!(
            certificate_refused("dispatch failure: io error: connection reset by peer"),
            None
        );
    }

    #[test]
    fn classification_table() {
        use ErrorKind::*;
        use Failure::*;
        type Case = (Failure, Option<u16>, Option<&'static str>, ErrorKind, bool);
        let cases: &[Case] = &[
            (Service, Some(404), Some("NoSuchKey"), NotFound, false),
            (Service, Some(404), None, NotFound, false),
            (
                Service,
                Some(403),
                Some("AccessDenied"),
                PermissionDenied,
                false,
            ),
            (
                Service,
                Some(403),
                Some("InvalidAccessKeyId"),
                PermissionDenied,
                false,
            ),
            (
                Service,
                Some(403),
                Some("SignatureDoesNotMatch"),
                PermissionDenied,
                false,
            ),
            (Service, Some(403), None, PermissionDenied, false),
            (Service, Some(500), Some("InternalError"), Transient, true),
            (Service, Some(503), Some("SlowDown"), Transient, true),
            (Service, Some(503), None, Transient, true),
            (Service, Some(502), None, Transient, true),
            (Service, Some(400), Some("RequestTimeout"), Transient, true),
            (Service, Some(404), Some("NoSuchBucket"), Config, false),
            (
                Service,
                Some(400),
                Some("AuthorizationHeaderMalformed"),
                Config,
                false,
            ),
            (Service, Some(400), Some("EntityTooSmall"), Invalid, false),
            (Timeout, None, None, Transient, true),
            (Dispatch, None, None, Transient, true),
            (Response, Some(200), None, Transient, true),
            (Construction, None, None, Config, false),
        ];
        for &(f, s, c, want, retry) in cases {
            let k = classify(f, s, c);
            assert_eq!(k, want, "{f:?} {s:?} {c:?}");
            assert_eq!(
                Error::new(k, "x").is_retryable(),
                retry,
                "{f:?} {s:?} {c:?}"
            );
        }
    }
}

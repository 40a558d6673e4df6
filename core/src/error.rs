//! One error type for the engine and every backend.
//!
//! Callers need two answers from any failure: *what* went wrong (so a user can act on it) and
//! *whether trying again can help* (so the retry decorator and the shipper can decide without
//! string matching). Backends map their SDK errors onto [`ErrorKind`] once, at the edge.

use std::fmt;

/// What kind of failure this is; drives retry decisions and exit messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object or path does not exist.
    NotFound,
    /// Credentials were refused or access was denied.
    PermissionDenied,
    /// The configuration or a flag is invalid.
    Config,
    /// Stored data failed a checksum or does not decode.
    Corrupt,
    /// A network or server hiccup: retrying may succeed.
    Transient,
    /// Local I/O or SQLite failure.
    Io,
    /// A precondition of the operation does not hold (e.g. output path exists).
    Invalid,
    /// Anything else.
    Other,
}

/// The error of every walship operation: a kind, a message naming the object, an optional source.
#[derive(thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind`, retryable exactly when `kind` is [`ErrorKind::Transient`] (see
    /// [`Error::retryable`] to override).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            retryable: kind == ErrorKind::Transient,
            source: None,
        }
    }

    /// Attaches the underlying cause: reachable through `source()`, not part of the message.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Overrides the default retry decision of the kind (a backend may know better).
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Prefixes the message with context such as the replica name or operation.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }

    /// The failure category, for callers that branch on it instead of matching message text.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the same operation may succeed if tried again; the retry layer retries only these.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The message, with every [`Error::context`] prefix, but without the source's text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A [`ErrorKind::NotFound`] error: the object or path does not exist.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, msg)
    }
    /// A [`ErrorKind::Config`] error: the configuration or a flag is invalid.
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, msg)
    }
    /// A [`ErrorKind::Corrupt`] error: stored data fails a checksum or does not decode.
    pub fn corrupt(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, msg)
    }
    /// A [`ErrorKind::Invalid`] error: a precondition of the operation does not hold.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, msg)
    }
    /// A [`ErrorKind::Transient`] (so retryable) error: trying again may succeed.
    pub fn transient(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, msg)
    }

    /// Wraps a local I/O error; interrupted/timed-out I/O counts as transient.
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::Interrupted
            | K::TimedOut
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof => ErrorKind::Transient,
            K::InvalidData => ErrorKind::Corrupt,
            _ => ErrorKind::Io,
        };
        Error::new(kind, format!("{what}: {err}")).with_source(err)
    }

    /// Wraps a SQLite error as [`ErrorKind::Io`] (not retryable), prefixed with `what`.
    pub fn sqlite(what: impl fmt::Display, err: rusqlite::Error) -> Self {
        Error::new(ErrorKind::Io, format!("{what}: {err}")).with_source(err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

/// `Result` whose error defaults to walship's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_io_is_retryable() {
        let e = Error::io(
            "put x",
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer"),
        );
        assert!(e.is_retryable());
        assert_eq!(e.kind(), ErrorKind::Transient);
        let e = Error::io("put x", std::io::Error::other("disk on fire"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn context_prefixes_message() {
        let e = Error::not_found("generations/x").context("replica file");
        assert_eq!(e.to_string(), "replica file: generations/x");
    }
}

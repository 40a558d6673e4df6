//! One error type for the engine and every backend.
//!
//! Callers need two answers from any failure: *what* went wrong (so a user can act on it) and
//! *whether trying again can help* (so the retry decorator and the shipper can decide without
//! string matching). Backends map their SDK errors onto [`ErrorKind`] once, at the edge.

use std::fmt;

/// What kind of failure this is; drives retry decisions, the `check` command's causes and the
/// exit code. More kinds may come (a new backend's failure modes), so matches need a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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

/// The error of every walship operation: a kind, what was being done to which object of which
/// replica (fields, so callers and logs need not parse text), a message, an optional source.
///
/// Displayed as `replica "NAME": OPERATION KEY: MESSAGE (gave up after N attempts)`, each part only
/// when known. The message of an error built by [`Error::io`] or [`Error::sqlite`] already ends
/// with its source's text, so a printer walks no further than this error (the CLI's `main`).
#[derive(thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    operation: Option<&'static str>,
    key: Option<String>,
    replica: Option<String>,
    /// Attempts the retry layer made before it gave up on a retryable failure.
    attempts: Option<u32>,
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
            operation: None,
            key: None,
            replica: None,
            attempts: None,
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

    /// Prefixes the message with free-form context (a location that is neither a replica name
    /// nor a key); prefer the fields below.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }

    /// What was being done ("write snapshot") to `key` when this failed.
    pub fn with_operation(mut self, operation: &'static str, key: impl Into<String>) -> Self {
        self.operation = Some(operation);
        self.key = Some(key.into());
        self
    }

    /// The configured replica this failure belongs to (kept when one is already set: the
    /// innermost caller knows best).
    pub fn with_replica(mut self, replica: impl Into<String>) -> Self {
        if self.replica.is_none() {
            self.replica = Some(replica.into());
        }
        self
    }

    /// Marks a retryable failure the retry layer gave up on after `attempts` attempts: trying
    /// again at once will not help, the next sync or a later run may.
    pub fn exhausted(mut self, attempts: u32) -> Self {
        self.attempts = Some(attempts);
        self
    }

    /// The operation set by [`Error::with_operation`].
    pub fn operation(&self) -> Option<&'static str> {
        self.operation
    }
    /// The object key set by [`Error::with_operation`].
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
    /// The replica set by [`Error::with_replica`].
    pub fn replica(&self) -> Option<&str> {
        self.replica.as_deref()
    }
    /// Attempts made before the retry layer gave up; None when it did not retry.
    pub fn attempts(&self) -> Option<u32> {
        self.attempts
    }

    /// The process exit code for a command that failed with this error: 1 for every kind, the
    /// contract v0.3.13's users script against (usage errors, found by the argument parser
    /// before any operation, exit 2).
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::NotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::Config
            | ErrorKind::Corrupt
            | ErrorKind::Transient
            | ErrorKind::Io
            | ErrorKind::Invalid
            | ErrorKind::Other => 1,
        }
    }

    /// The failure category, for callers that branch on it instead of matching message text.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the same operation may succeed if tried again; the retry layer retries only these.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The message, with every [`Error::context`] prefix, without the fields' parts.
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
        if let Some(r) = &self.replica {
            write!(f, "replica {r:?}: ")?;
        }
        match (self.operation, &self.key) {
            (Some(op), Some(key)) => write!(f, "{op} {key}: ")?,
            (Some(op), None) => write!(f, "{op}: ")?,
            _ => {}
        }
        f.write_str(&self.message)?;
        if let Some(n) = self.attempts {
            write!(f, " (gave up after {n} attempts)")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {self}", self.kind)
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
    fn fields_are_kept_and_rendered_in_one_order() {
        let e = Error::transient("connection reset")
            .with_operation(
                "write snapshot",
                "generations/g/snapshots/00000000.snapshot.lz4",
            )
            .with_replica("spaces")
            .with_replica("outer caller")
            .exhausted(6);
        assert_eq!(
            e.to_string(),
            "replica \"spaces\": write snapshot generations/g/snapshots/00000000.snapshot.lz4: \
             connection reset (gave up after 6 attempts)"
        );
        assert_eq!(e.replica(), Some("spaces"));
        assert_eq!(e.operation(), Some("write snapshot"));
        assert_eq!(
            e.key(),
            Some("generations/g/snapshots/00000000.snapshot.lz4")
        );
        assert_eq!(e.attempts(), Some(6));
        assert_eq!(e.message(), "connection reset");
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn context_prefixes_message() {
        let e = Error::not_found("generations/x").context("replica file");
        assert_eq!(e.to_string(), "replica file: generations/x");
    }
}

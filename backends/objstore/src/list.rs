//! A backend's own listing, download and delete, for a service whose listings and reads `object_store`
//! makes in a way not every server of that service answers (see [`crate::Client::list`]).

use async_trait::async_trait;
use std::time::{Duration, SystemTime};
use walship_core::Result;

/// One object of a listing, by its full name (the replica's root included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    pub modified: SystemTime,
}

#[async_trait]
pub trait List: Send + Sync {
    /// Every object whose full name starts with `prefix` (a string prefix), from `start` on
    /// (inclusive) when given, in any order, every page. `what` names the listing in errors;
    /// `timeout` bounds each request.
    async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        what: &str,
        timeout: Duration,
    ) -> Result<Vec<Listed>>;

    /// The full names of the "directories" one level below `prefix` (which ends in `/`): a
    /// delimiter listing's prefixes, each ending in `/`, every page, without the objects.
    async fn names(&self, prefix: &str, what: &str, timeout: Duration) -> Result<Vec<String>>;
}

/// A backend's own download, for a service whose reads `object_store` makes in a way not every
/// server of that service answers (see [`crate::Client::download`]).
#[async_trait]
pub trait Download: Send + Sync {
    /// Streams the object with full name `name` from byte `offset`; with `version` (one this
    /// returned before), fails with [`walship_core::ErrorKind::Invalid`] rather than read another
    /// version. A missing object is [`walship_core::ErrorKind::NotFound`]. `timeout` bounds the
    /// wait for the answer's headers, not the body.
    async fn get(
        &self,
        name: &str,
        offset: u64,
        version: Option<&str>,
        what: &str,
        timeout: Duration,
    ) -> Result<walship_core::replica::ObjectReader>;
}

/// A backend's own delete (see [`crate::Client::delete`]).
#[async_trait]
pub trait Delete: Send + Sync {
    /// Deletes the objects with these full names; one already gone is not an error. `what`
    /// names the first in errors; `timeout` bounds each request.
    async fn delete(&self, names: &[String], what: &str, timeout: Duration) -> Result<()>;
}

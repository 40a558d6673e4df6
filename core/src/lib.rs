//! walship-core: the replication engine, independent of any storage service.
//!
//! - [`replica::Replica`]: the storage trait every backend implements, with [`retry::RetryLayer`]
//!   as the one retry policy and [`registry`] for `inventory`-based registration.
//! - [`layout`], [`wal`], [`codec`], [`crypt`]: the v0.3.13 object format (LZ4, optional age),
//!   pure and unit-tested.
//! - [`db::Db`]: the monitor that copies committed WAL frames into the shadow WAL without losing one.
//! - [`shipper::Shipper`]: uploads segments and snapshots and enforces retention, per replica.
//! - [`plan`] and [`restore`]: point-in-time restore.

#![warn(missing_docs)]

pub mod codec;
pub mod crypt;
pub mod db;
pub mod drill;
pub mod duration;
pub mod error;
pub mod follow;
pub mod layout;
pub mod listing;
pub mod local;
pub mod meta;
pub mod monitor;
pub mod pace;
pub mod plan;
pub mod registry;
pub mod replica;
pub mod restore;
pub mod resume;
pub mod retention;
pub mod retry;
pub mod shipper;
pub mod snapshot;
pub mod sqlite;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod throttle;
pub mod timefmt;
pub mod trim;
pub mod wal;
pub mod watch;

pub use error::{Error, ErrorKind, Result};
pub use inventory;

//! Building blocks of `walship-bench`: process accounting, a follower of the live `-wal` file, and
//! a poller that sees when a replica's listing holds a commit.
//!
//! Compiled into the `walship-bench` binary only (via `#[path]`), not into the test harness.

pub mod follow;
pub mod history;
pub mod lag;
pub mod many;
pub mod procstat;

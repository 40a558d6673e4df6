//! `litestream.yml` parsing for walship.
//!
//! Reads Litestream v0.3.13 configuration files unchanged (same keys, `$VAR` expansion, Go
//! durations, non-strict about unknown keys) plus walship's optional additions, and reports what
//! v0.3.13 would silently ignore as [`Warning`]s. Defaults are left to the engine: a field is
//! `None` when the file does not set it.
//!
//! Line numbers refer to the text after environment expansion; they only differ from the file's
//! own lines when an expanded variable contains a newline.

// The option checks read the backends' registrations (walship_core::registry::option_spec).
#[cfg(test)]
use walship_s3 as _;
#[cfg(test)]
use walship_sftp as _;

mod decode;
mod dirs;
mod env;
mod error;
mod model;
mod paths;
mod url;
mod yaml;

pub use dirs::{join_url, DirConfig, Skip};
pub use env::expand_env;
pub use error::{ConfigError, Warning};
pub use model::{AgeConfig, Config, DbConfig, LogLevel, LoggingConfig, ReplicaConfig};
pub use paths::resolve_config_path;
pub use url::file_url_path;
pub use walship_core::duration::parse_duration;

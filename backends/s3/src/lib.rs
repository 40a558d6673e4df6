//! walship-s3: a replica in an S3 bucket or any S3-compatible store (`type: s3`, `s3://`):
//! AWS, DigitalOcean Spaces, MinIO, Cloudflare R2, Backblaze B2, Linode, Scaleway, Filebase,
//! SeaweedFS, Garage.
//!
//! - [`S3Config`]: v0.3.13's keys (`bucket`, `path`, `endpoint`, `region`, `force-path-style`,
//!   `skip-verify`, `access-key-id`, `secret-access-key`), URL host rules and credential order,
//!   plus walship's `operation-timeout`.
//! - [`S3Replica`]: single PutObject up to 8 MiB, multipart above (8 MiB parts, 4 in flight,
//!   each part retried on its own, aborted on failure); downloads stream and resume with a ranged
//!   GET when the body breaks; listings page through any number of keys; deletes go in batches
//!   of 1000. The SDK's retries are off: core's retry layer is the one policy.

mod client;
mod config;
mod errors;
mod insecure;
mod store;
mod trust;
mod upload;

pub use config::{parse_host, CredentialSource, HostInfo, S3Config};
pub use store::S3Replica;
pub use upload::{PART_CONCURRENCY, PART_SIZE};
use walship_core::registry::{Backend, OptionSpec, ReplicaSettings};
use walship_core::replica::DynReplica;
use walship_core::Result;

/// Builds an S3 replica from its section (credentials from the environment when the section
/// has none).
pub fn open(settings: &ReplicaSettings) -> Result<DynReplica> {
    let cfg = S3Config::from_settings(settings, &|k| std::env::var(k).ok())?;
    Ok(std::sync::Arc::new(S3Replica::new(cfg)))
}

/// Every key of an s3 replica section besides `url` and `path` (README "Configuration").
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::text("bucket"),
    OptionSpec::text("endpoint"),
    OptionSpec::text("region"),
    OptionSpec::text("access-key-id"),
    OptionSpec::text("secret-access-key"),
    OptionSpec::flag("force-path-style"),
    OptionSpec::flag("skip-verify"),
    OptionSpec::duration("operation-timeout", "120s"),
];

walship_core::inventory::submit! {
    Backend { kind: "s3", schemes: &["s3"], options: OPTIONS, open }
}

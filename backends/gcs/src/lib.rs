//! walship-gcs: a replica in a Google Cloud Storage bucket (`type: gcs`, `gcs://bucket/path`,
//! and `gs://` as a walship addition), on `object_store` through `walship-objstore`.
//!
//! Credentials are Google's Application Default Credentials, as v0.3.13's client found them:
//! the JSON file named by `GOOGLE_APPLICATION_CREDENTIALS` (a service account or an authorized
//! user), then gcloud's own file, then the metadata server of the VM. `STORAGE_EMULATOR_HOST`
//! (`host:port` or a URL) sends every request to an emulator, without credentials, as every
//! Google client library does. Uploads, listings, reads and deletes go through the JSON API (a
//! resumable upload above one part), so object names are exactly v0.3.13's (a `path:` that
//! starts with `/` keeps it); credentials are `object_store`'s.

mod api;
mod config;
mod delete;
mod download;
mod list;
mod upload;

pub use config::GcsConfig;
use walship_core::registry::{Backend, OptionSpec, ReplicaSettings};
use walship_core::replica::DynReplica;
use walship_core::Result;

/// Builds a GCS replica from its section; credentials come from the environment.
pub fn open(settings: &ReplicaSettings) -> Result<DynReplica> {
    let cfg = GcsConfig::from_settings(settings, &|k| std::env::var(k).ok())?;
    Ok(std::sync::Arc::new(cfg.replica()?))
}

/// Every key of a gcs replica section besides `url` and `path` (README "Google Cloud Storage").
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::text("bucket"),
    OptionSpec::duration("operation-timeout", "120s"),
];

walship_core::inventory::submit! {
    Backend { kind: "gcs", schemes: &["gcs", "gs"], options: OPTIONS, open }
}

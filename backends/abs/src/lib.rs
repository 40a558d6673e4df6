//! walship-abs: a replica in an Azure Blob Storage container (`type: abs`,
//! `abs://[account@]container/path`), on `object_store` through `walship-objstore`.
//!
//! v0.3.13's keys: `account-name` (or the URL's user), `account-key` (or
//! `LITESTREAM_AZURE_ACCOUNT_KEY`), `bucket` as the container, `endpoint` (default
//! `https://<account>.blob.core.windows.net`). Walship additions: `sas-token` (a shared access
//! signature instead of the key), managed identity when neither is given (the VM's or the
//! user-assigned one named by `AZURE_CLIENT_ID`), and `operation-timeout`.

mod config;

pub use config::{AbsAuth, AbsConfig};
use walship_core::registry::{Backend, OptionSpec, ReplicaSettings};
use walship_core::replica::DynReplica;
use walship_core::Result;

/// Builds an Azure Blob Storage replica from its section.
pub fn open(settings: &ReplicaSettings) -> Result<DynReplica> {
    let cfg = AbsConfig::from_settings(settings, &|k| std::env::var(k).ok())?;
    Ok(std::sync::Arc::new(cfg.replica()?))
}

/// Every key of an abs replica section besides `url` and `path` (README "Azure Blob Storage").
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::text("account-name"),
    OptionSpec::text("account-key"),
    OptionSpec::text("sas-token"),
    OptionSpec::text("bucket"),
    OptionSpec::text("endpoint"),
    OptionSpec::duration("operation-timeout", "120s"),
];

walship_core::inventory::submit! {
    Backend { kind: "abs", schemes: &["abs"], options: OPTIONS, open }
}

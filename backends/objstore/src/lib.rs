//! walship-objstore: walship's [`Replica`](walship_core::replica::Replica) on an Apache Arrow
//! `object_store` client, shared by the GCS (`walship-gcs`) and Azure Blob Storage
//! (`walship-abs`) backends, which only turn a replica section into a client.
//!
//! - [`ObjectStoreReplica`]: keys under a root prefix; one PUT up to [`PART_SIZE`], a multipart
//!   upload above it (Azure: staged blocks) with [`PART_CONCURRENCY`] parts in flight, each part
//!   retried alone ([`PartRetry`]) and the upload aborted on failure, so memory stays bounded
//!   whatever the object's size; a backend may bring its own [`Upload`] instead (GCS: the JSON
//!   API's resumable upload, which every GCS server and emulator serves) and its own [`List`],
//!   [`Download`] and [`Delete`] (GCS: the JSON API's); ranged downloads pinned
//!   to the ETag when resumed; listings page through any number of keys; deletes in bulk where
//!   the API has it.
//! - The client's own request retries are off: core's retry layer is the one policy
//!   (`object_store`'s are set to zero by [`client_options`] and [`retry_config`]).
//! - [`shared`]: one client per store and credentials in a process, whatever the number of
//!   databases replicating to it.

pub mod config;
mod errors;
mod list;
mod shared;
mod store;
mod upload;

pub use errors::{classify, map_error};
pub use list::{Delete, Download, List, Listed};
pub use shared::{shared, Build, Client, Shared};
pub use store::{ObjectStoreReplica, Parts};
pub use upload::{Chunks, PartRetry, Upload, PART_CONCURRENCY, PART_SIZE};

use std::time::Duration;

/// Time allowed to open a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP settings every walship object_store client uses: no whole-request timeout (a large
/// download may take long), a connect timeout, and `read_timeout` as the longest silence
/// before a stalled response counts as failed (`operation-timeout`).
pub fn client_options(operation_timeout: Duration) -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_read_timeout(operation_timeout)
        .with_default_content_type("application/octet-stream")
}

/// No retries inside the client: core's retry layer retries whole operations, and
/// [`PartRetry`] single parts of a multipart upload.
pub fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 0,
        ..Default::default()
    }
}

//! One client per store and credentials in a process (per runtime), and a bound on its
//! requests in flight.

use object_store::ObjectStore;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use walship_core::Result;

/// Requests one shared client has in flight at most: ten thousand tenant databases starting at
/// once would otherwise open a connection each for their first listings and snapshots (as seen
/// with S3), where a few dozen connections carry the same work as fast.
const IN_FLIGHT: usize = 64;

/// What a backend builds for a replica section.
pub struct Client {
    /// The store; keys are full object names (the replica adds its root).
    pub store: Arc<dyn ObjectStore>,
    /// The backend's own upload path, when `object_store`'s does not serve (GCS: the JSON API's
    /// resumable upload, which every GCS server and emulator has).
    pub upload: Option<Arc<dyn crate::Upload>>,
    /// The backend's own listing (GCS: the JSON API's; `object_store` lists through the XML
    /// API, which fake-gcs-server answers only for its `-public-host`, so never through a proxy).
    pub list: Option<Arc<dyn crate::List>>,
    /// The backend's own download (GCS: the JSON API's media download; fake-gcs-server answers
    /// the XML API's reads only for its `-public-host`).
    pub download: Option<Arc<dyn crate::Download>>,
    /// The backend's own delete (GCS: the JSON API's, which names any object, one whose name
    /// starts with `/` included).
    pub delete: Option<Arc<dyn crate::Delete>>,
}

/// Builds a client for a replica section (the same closure for every replica of one store).
pub type Build = Arc<dyn Fn() -> Result<Client> + Send + Sync>;

/// A client shared by many replicas, and the limit on their requests in flight.
#[derive(Clone)]
pub struct Shared {
    /// The store; keys are full object names (the replica adds its root).
    pub store: Arc<dyn ObjectStore>,
    /// See [`Client::upload`].
    pub upload: Option<Arc<dyn crate::Upload>>,
    /// See [`Client::list`].
    pub list: Option<Arc<dyn crate::List>>,
    /// See [`Client::download`].
    pub download: Option<Arc<dyn crate::Download>>,
    /// See [`Client::delete`].
    pub delete: Option<Arc<dyn crate::Delete>>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("free", &self.slots.available_permits())
            .finish()
    }
}

impl Shared {
    /// Waits for room for one more request; the request runs while the permit lives.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

/// The client for `key` (a backend's description of store and credentials, never printed),
/// built by `build` the first time this runtime asks. Clients are per runtime: a connection
/// pool outliving the runtime that drives its connections hangs.
pub fn shared(key: &str, build: &Build) -> Result<Shared> {
    type Cache = Vec<((String, Option<tokio::runtime::Id>), Shared)>;
    static CLIENTS: Mutex<Cache> = Mutex::new(Vec::new());
    let id = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
    let find = |c: &Cache| {
        c.iter()
            .find(|((k, r), _)| k == key && *r == id)
            .map(|(_, s)| s.clone())
    };
    if let Some(s) = find(&CLIENTS.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(s);
    }
    let client = build()?;
    let built = Shared {
        store: client.store,
        upload: client.upload,
        list: client.list,
        download: client.download,
        delete: client.delete,
        slots: Arc::new(Semaphore::new(IN_FLIGHT)),
    };
    let mut cache = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = find(&cache) {
        return Ok(s);
    }
    cache.push(((key.to_owned(), id), built.clone()));
    Ok(built)
}

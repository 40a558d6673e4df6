//! The aws-sdk-s3 client with the settings S3-compatible stores need (notes/test-infra.md §2–3):
//! checksums only when required, explicit region, path style for custom endpoints, connect and
//! attempt timeouts, and the SDK's own retries off (core's retry layer is the one policy).

use crate::config::{CredentialSource, S3Config, CONNECT_TIMEOUT};
use crate::errors::map_sdk;
use aws_sdk_s3::config::{
    retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Credentials, Region,
    RequestChecksumCalculation, ResponseChecksumValidation, SharedCredentialsProvider,
};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use walship_core::Result;

/// Region used when none is configured and it cannot (or need not) be looked up.
const DEFAULT_REGION: &str = "us-east-1";

fn base_config(
    cfg: &S3Config,
    region: &str,
    creds: SharedCredentialsProvider,
    http: Option<&SharedHttpClient>,
) -> aws_sdk_s3::config::Builder {
    let mut b = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(creds)
        .force_path_style(cfg.force_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(cfg.operation_timeout)
                .build(),
        );
    if let Some(e) = &cfg.endpoint {
        b = b.endpoint_url(e);
    }
    if let Some(h) = http {
        b = b.http_client(h.clone());
    }
    b
}

/// The HTTP client when the SDK's default will not do: `skip-verify`, or `AWS_CA_BUNDLE`.
fn http_client(cfg: &S3Config) -> Result<Option<SharedHttpClient>> {
    if cfg.skip_verify {
        return Ok(Some(crate::insecure::client(CONNECT_TIMEOUT)));
    }
    cfg.ca_bundle
        .as_deref()
        .map(crate::trust::client_with_bundle)
        .transpose()
}

async fn credentials(cfg: &S3Config) -> SharedCredentialsProvider {
    match &cfg.credentials {
        CredentialSource::Static {
            access_key_id,
            secret_access_key,
            session_token,
            origin,
        } => SharedCredentialsProvider::new(Credentials::new(
            access_key_id,
            secret_access_key,
            session_token.clone(),
            None,
            origin,
        )),
        CredentialSource::DefaultChain => {
            let region = cfg.region.clone().unwrap_or_else(|| DEFAULT_REGION.into());
            SharedCredentialsProvider::new(
                aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .region(Region::new(region))
                    .build()
                    .await,
            )
        }
    }
}

/// Builds the client; resolves the region first when it is not configured (v0.3.13: the
/// bucket's location on AWS, `us-east-1` for a custom endpoint).
pub(crate) async fn build(cfg: &S3Config) -> Result<Client> {
    let creds = credentials(cfg).await;
    let http = http_client(cfg)?;
    let region = match (&cfg.region, &cfg.endpoint) {
        (Some(r), _) => r.clone(),
        (None, Some(_)) => DEFAULT_REGION.to_string(),
        (None, None) => {
            let probe = Client::from_conf(
                base_config(cfg, DEFAULT_REGION, creds.clone(), http.as_ref()).build(),
            );
            let out = probe
                .get_bucket_location()
                .bucket(&cfg.bucket)
                .send()
                .await
                .map_err(|e| map_sdk(&format!("GetBucketLocation s3://{}", cfg.bucket), e))?;
            match out.location_constraint().map(|c| c.as_str()) {
                None | Some("") => DEFAULT_REGION.to_string(),
                Some(r) => r.to_string(),
            }
        }
    };
    tracing::debug!(bucket = %cfg.bucket, region = %region, endpoint = ?cfg.endpoint, "s3 client");
    Ok(Client::from_conf(
        base_config(cfg, &region, creds, http.as_ref()).build(),
    ))
}

/// Requests one shared client has in flight at most. Ten thousand tenant databases starting at
/// once otherwise opened a connection each for their first listings and snapshots (the bench's
/// proxy ran out of threads; DigitalOcean Spaces answers such a burst with 503 SlowDown), where
/// a few dozen connections carry the same work as fast.
const IN_FLIGHT: usize = 64;

/// A client shared by many replicas, and the limit on their requests in flight.
#[derive(Clone)]
pub(crate) struct Shared {
    pub client: Client,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
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
    pub async fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

/// The client for `cfg`, shared by every replica of this runtime that differs only in bucket and
/// prefix: each client carries its own HTTP connection pool and TLS set-up, and a thousand
/// tenant replicas with one client each held about 0.5 MiB apiece (walship-bench `many`).
/// Clients are per runtime: a connection pool outliving the runtime that drives it hangs.
pub(crate) async fn shared(cfg: &S3Config) -> Result<Shared> {
    type Cache = Vec<((S3Config, tokio::runtime::Id), Shared)>;
    static CLIENTS: std::sync::Mutex<Cache> = std::sync::Mutex::new(Vec::new());
    let mut key = cfg.clone();
    key.prefix.clear();
    // Without a region or an endpoint, the region is the bucket's own (looked up).
    if key.region.is_some() || key.endpoint.is_some() {
        key.bucket.clear();
    }
    let key = (key, tokio::runtime::Handle::current().id());
    let find = |c: &Cache| c.iter().find(|(k, _)| *k == key).map(|(_, c)| c.clone());
    if let Some(c) = find(&CLIENTS.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(c);
    }
    let built = Shared {
        client: build(cfg).await?,
        slots: std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
    };
    let mut cache = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = find(&cache) {
        return Ok(c);
    }
    cache.push((key, built.clone()));
    Ok(built)
}

/// DeleteObjects: send `Content-MD5` (MinIO before 2025, OVH, s3proxy... require it) and drop
/// the CRC32 headers the SDK adds even under `WhenRequired`.
pub(crate) fn delete_objects_md5(req: &mut aws_sdk_s3::config::http::HttpRequest) {
    use md5::{Digest, Md5};
    if let Some(body) = req.body().bytes() {
        let md5 = aws_smithy_types::base64::encode(Md5::digest(body));
        req.headers_mut().insert("content-md5", md5);
        req.headers_mut().remove("x-amz-checksum-crc32");
        req.headers_mut().remove("x-amz-sdk-checksum-algorithm");
    }
}

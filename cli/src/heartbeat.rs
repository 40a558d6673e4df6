//! Heartbeat (`heartbeat-url`, `heartbeat-interval`): an HTTP GET every interval while every
//! replica of every database is healthy (see [`crate::health`]), for a dead-man's-switch service
//! that alerts when the pings stop. A failed ping is logged, never fatal.

use crate::health::Shared;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// Tests (only) may lower the minimum, e.g. `WALSHIP_HEARTBEAT_MIN_INTERVAL=1s`.
const MIN_ENV: &str = "WALSHIP_HEARTBEAT_MIN_INTERVAL";

/// The interval to use: the configured one (default 5m), raised to the minimum with a warning.
pub fn interval(configured: Option<Duration>) -> Duration {
    let min = std::env::var(MIN_ENV)
        .ok()
        .and_then(|v| walship_config::parse_duration(&v).ok())
        .unwrap_or(MIN_INTERVAL);
    let want = configured.unwrap_or(DEFAULT_INTERVAL);
    if want < min {
        tracing::warn!(configured = ?want, minimum = ?min, "heartbeat-interval is below the minimum; using the minimum");
        return min;
    }
    want
}

/// The URL without user info or query (tokens often live there), for logs.
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            let mut s = u.to_string();
            if let Some(seg) = u.path_segments().and_then(|mut s| s.next_back()) {
                if seg.len() > 8 {
                    // Ping services put the check's secret id in the path: keep only its start.
                    s = s.replace(seg, &format!("{}…", &seg[..4]));
                }
            }
            s
        }
        Err(_) => "(invalid url)".into(),
    }
}

/// Checks the URL once at start, so a typo fails `replicate` instead of silently never pinging.
pub fn validate(url: &str) -> anyhow::Result<()> {
    let u = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("invalid heartbeat-url: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        anyhow::bail!("invalid heartbeat-url: scheme must be http or https");
    }
    Ok(())
}

/// Pings `url` every `every` while healthy; runs until dropped.
pub async fn run(url: String, every: Duration, health: Arc<Shared>) {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    // A private CA for the S3 store is usually the one for the monitoring endpoint too.
    if let Some(bundle) = std::env::var_os("AWS_CA_BUNDLE").filter(|v| !v.is_empty()) {
        match std::fs::read(&bundle)
            .map_err(|e| e.to_string())
            .and_then(|b| reqwest::Certificate::from_pem_bundle(&b).map_err(|e| e.to_string()))
        {
            Ok(certs) => builder = builder.tls_certs_merge(certs),
            Err(e) => tracing::warn!(
                bundle = %std::path::Path::new(&bundle).display(),
                error = %e,
                "heartbeat: AWS_CA_BUNDLE not used"
            ),
        }
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "heartbeat disabled: cannot build an HTTP client");
            return;
        }
    };
    let target = shown(&url);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let health = health.get();
        if !health.all_healthy() {
            tracing::warn!(url = %target, status = %health.summary(), "heartbeat skipped: not every replica is healthy");
            continue;
        }
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(url = %target, status = %r.status(), "heartbeat sent")
            }
            Ok(r) => {
                tracing::warn!(url = %target, status = %r.status(), "heartbeat ping refused")
            }
            Err(e) => {
                tracing::warn!(url = %target, error = %e.without_url(), "heartbeat ping failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_validated_and_shown_without_secrets() {
        assert!(validate("https://hc-ping.com/abc").is_ok());
        assert!(validate("ftp://x/y").is_err());
        assert!(validate("not a url").is_err());
        let s = shown("https://user:pw@hc-ping.com/0123456789abcdef?token=x");
        assert!(
            !s.contains("pw") && !s.contains("token") && !s.contains("0123456789abcdef"),
            "{s}"
        );
        assert!(s.starts_with("https://hc-ping.com/0123"), "{s}");
    }

    #[test]
    fn interval_default_and_minimum() {
        assert_eq!(interval(None), DEFAULT_INTERVAL);
        if std::env::var_os(MIN_ENV).is_none() {
            assert_eq!(interval(Some(Duration::from_secs(5))), MIN_INTERVAL);
        }
        assert_eq!(
            interval(Some(Duration::from_secs(600))),
            Duration::from_secs(600)
        );
    }
}

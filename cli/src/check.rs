//! `replicate -dry-run` and `check`: validate the config, build every replica client (resolving
//! credentials) and run each backend's self-check, a probe object put, listed, read and deleted at
//! the replica root outside `generations/`. One line per database and replica; nothing else is
//! written anywhere (no meta directory, no database connection).

use crate::setup;
use crate::table::render;
use anyhow::Result;
use std::time::Duration;
use walship_config::Config;
use walship_core::{Error, ErrorKind};

/// Longest one replica's self-check may take: an endpoint that swallows packets must not hang a
/// pre-start check (the backends' own connect timeouts are shorter).
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Checks every replica of every database; returns the exit code (0 only if all are ok).
pub async fn run(cfg: &Config) -> Result<i32> {
    if cfg.dbs.is_empty() {
        println!("no databases specified in configuration");
        return Ok(1);
    }
    let mut rows = vec![["database", "replica", "type", "target", "result"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()];
    let mut failed = 0usize;
    let mut checks = Vec::new();
    for db in &cfg.dbs {
        if db.replicas.is_empty() {
            failed += 1;
            rows.push(vec![
                db.path.display().to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "FAILED config: no replicas configured".into(),
            ]);
        }
        for r in &db.replicas {
            let opened =
                setup::replica_options(r).and_then(|_| setup::open_replica(r, Some(&db.path)));
            checks.push(async move {
                let (kind, target, result) = match opened {
                    Err(e) => (
                        r.kind.clone(),
                        "-".to_string(),
                        Err(format!("config: {e:#}")),
                    ),
                    Ok(client) => {
                        let res = match tokio::time::timeout(CHECK_TIMEOUT, client.check()).await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(format!("{}: {e}", cause(&e))),
                            Err(_) => {
                                // The probe may have been written before the deadline: remove
                                // it (best effort, briefly), so a dry run leaves nothing behind.
                                let _ = tokio::time::timeout(
                                    std::time::Duration::from_secs(10),
                                    async {
                                        if let Ok(objs) = client.list(".walship-probe-").await {
                                            let keys: Vec<String> =
                                                objs.into_iter().map(|o| o.key).collect();
                                            let _ = client.delete(&keys).await;
                                        }
                                    },
                                )
                                .await;
                                Err(format!(
                                    "unreachable: no answer within {}s",
                                    CHECK_TIMEOUT.as_secs()
                                ))
                            }
                        };
                        (client.kind().to_string(), client.target(), res)
                    }
                };
                (
                    db.path.display().to_string(),
                    r.name.clone(),
                    kind,
                    target,
                    result,
                )
            });
        }
    }
    // Replicas are checked concurrently: a dead endpoint does not delay the others' verdicts.
    for (db, name, kind, target, result) in futures::future::join_all(checks).await {
        let verdict = match result {
            Ok(()) => "ok".to_string(),
            Err(why) => {
                failed += 1;
                tracing::debug!(db = %db, replica = %name, error = %why, "replica check failed");
                format!("FAILED {}", short(&why))
            }
        };
        rows.push(vec![db, name, kind, target, verdict]);
    }
    print!("{}", render(&rows));
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Keeps a verdict on one line: SDK error chains may contain newlines.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Longest verdict text; the whole error goes to the debug log (`WALSHIP_LOG=walship=debug`).
const VERDICT_MAX: usize = 200;

/// One short line a user acts on: the cause and the library's own words, without the Debug dump
/// of its error types that SDK messages end with (a DNS failure was 490 characters).
fn short(why: &str) -> String {
    let line = one_line(why);
    let cut = debug_dump_start(&line).unwrap_or(line.len());
    let kept = line[..cut].trim_end();
    if kept.chars().count() <= VERDICT_MAX {
        return kept.to_string();
    }
    let mut s: String = kept.chars().take(VERDICT_MAX - 1).collect();
    s.push('…');
    s
}

/// Where ` (SomeType {` or ` (SomeType(` begins: Rust `Debug` output of a library's error.
fn debug_dump_start(line: &str) -> Option<usize> {
    line.match_indices(" (").map(|(i, _)| i).find(|&i| {
        let rest = &line[i + 2..];
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        ident.starts_with(|c: char| c.is_ascii_uppercase())
            && (rest[ident.len()..].starts_with(" {") || rest[ident.len()..].starts_with('('))
    })
}

/// The cause a user acts on, from the backend error's kind and message: DNS, TLS, auth, bucket
/// missing, permission, host key, unreachable. Backends keep the service's error code and the
/// transport's own words in the message, so this reads both. Pure, unit-tested below.
pub fn cause(e: &Error) -> &'static str {
    classify(e.kind(), e.message())
}

fn classify(kind: ErrorKind, message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    if has(&["host key"]) {
        return "host key";
    }
    if has(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "no such host",
        "nodename nor servname",
        "temporary failure in name resolution",
    ]) {
        return "DNS";
    }
    if has(&[
        "certificate",
        "tls handshake",
        "tls error",
        "invalidcertificate",
        "unknownissuer",
        "ssl",
    ]) {
        return "TLS";
    }
    if has(&[
        "nosuchbucket",
        "bucket does not exist",
        "specified bucket does not exist",
    ]) {
        return "bucket missing";
    }
    if has(&[
        "invalidaccesskeyid",
        "signaturedoesnotmatch",
        "invalidtoken",
        "expiredtoken",
        "authentication",
        "authorizationheadermalformed",
        "no credentials",
        "credentials",
        // The SFTP backend's login refusal (backends/sftp/src/conn.rs).
        "refused (tried",
    ]) {
        return "auth";
    }
    if kind == ErrorKind::PermissionDenied || has(&["accessdenied", "permission denied"]) {
        return "permission";
    }
    if has(&[
        "connection refused",
        "timed out",
        "timeout",
        "unreachable",
        "connection reset",
        "dispatch failure",
    ]) || kind == ErrorKind::Transient
    {
        return "unreachable";
    }
    match kind {
        ErrorKind::Config => "config",
        ErrorKind::NotFound => "not found",
        ErrorKind::Corrupt => "corrupt",
        ErrorKind::Io => "I/O",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind::*;

    #[test]
    fn causes_from_backend_errors() {
        let cases: &[(ErrorKind, &str, &str)] = &[
            (
                Transient,
                "s3 PutObject s3://b/k: dispatch failure: io error: error trying to connect: dns error: failed to lookup address information: Name or service not known",
                "DNS",
            ),
            (
                Transient,
                "s3 PutObject s3://b/k: dispatch failure: io error: error trying to connect: tcp connect error: Connection refused (os error 111)",
                "unreachable",
            ),
            (Transient, "s3 PutObject s3://b/k: timed out (x)", "unreachable"),
            (
                Transient,
                "s3 PutObject s3://b/k: dispatch failure: io error: invalid peer certificate: UnknownIssuer",
                "TLS",
            ),
            (
                Config,
                "s3 PutObject s3://b/k: NoSuchBucket: The specified bucket does not exist (HTTP 404)",
                "bucket missing",
            ),
            (
                PermissionDenied,
                "s3 PutObject s3://b/k: SignatureDoesNotMatch: The request signature we calculated does not match (HTTP 403)",
                "auth",
            ),
            (
                PermissionDenied,
                "s3 PutObject s3://b/k: InvalidAccessKeyId: x (HTTP 403)",
                "auth",
            ),
            (
                PermissionDenied,
                "s3 PutObject s3://b/k: AccessDenied: Access Denied (HTTP 403)",
                "permission",
            ),
            (
                PermissionDenied,
                "put .walship-probe-1: Permission denied (os error 13)",
                "permission",
            ),
            (
                PermissionDenied,
                "sftp [127.0.0.1]:2222: unknown host key for [127.0.0.1]:2222: the server presented ssh-ed25519 SHA256:x",
                "host key",
            ),
            (
                PermissionDenied,
                "sftp [h]:22: HOST KEY CHANGED for [h]:22: the server presented x",
                "host key",
            ),
            (
                PermissionDenied,
                "sftp 127.0.0.1:2222: authentication failed for user root",
                "auth",
            ),
            // Regression: the SFTP backend's real login refusal was reported as "permission".
            (
                PermissionDenied,
                "sftp 127.0.0.1:2222: login as \"app\" refused (tried key /k, password); the server accepts: publickey,password",
                "auth",
            ),
            (Config, "sftp replica host required", "config"),
            (Io, "write x: disk full", "I/O"),
        ];
        for (kind, msg, want) in cases {
            assert_eq!(classify(*kind, msg), *want, "{msg}");
        }
    }

    #[test]
    fn verdicts_stay_on_one_line() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }

    /// Issue 16.13: a DNS failure's verdict was the SDK's whole error, Debug dump included (490
    /// characters); it keeps the cause and the library's words.
    #[test]
    fn verdicts_drop_library_debug_dumps() {
        let dns =
            "DNS: s3 PutObject s3://bkt/db/.walship-probe-5f1e2d: dispatch failure: io error: \
            error trying to connect: dns error: failed to lookup address information: Name or \
            service not known (DispatchFailure(DispatchFailure { source: ConnectorError { kind: \
            Io, source: hyper_util::client::legacy::Error(Connect, ConnectError(\"dns error\", \
            Custom { kind: Uncategorized, error: \"failed to lookup address information: Name or \
            service not known\" })), connection: Unknown } }))";
        let v = short(dns);
        assert!(v.len() <= VERDICT_MAX, "{} chars: {v}", v.len());
        assert!(v.starts_with("DNS: s3 PutObject s3://bkt/db/"), "{v}");
        assert!(v.ends_with("Name or service not known"), "{v}");
        // Parentheses that are words stay.
        let refused = "unreachable: tcp connect error: Connection refused (os error 111)";
        assert_eq!(short(refused), refused);
        let s3 = "bucket missing: NoSuchBucket: The specified bucket does not exist (HTTP 404)";
        assert_eq!(short(s3), s3);
        let long = "x".repeat(500);
        assert_eq!(short(&long).chars().count(), VERDICT_MAX);
    }
}

//! The little URL handling config needs: the scheme (it decides the replica type) and hiding
//! passwords (an `sftp://user:pass@host` URL must never reach a log).
//!
//! Full parsing is the backends' business; a URL crate here would only duplicate it.

/// The lowercased scheme of `s` (Go `url.Parse` lowercases it too), or `None` when `s` does not
/// start with `scheme://` (v0.3.13 tells URLs from paths by that `://`).
pub(crate) fn scheme(s: &str) -> Option<String> {
    let (head, rest) = s.split_once(':')?;
    if !rest.starts_with("//") {
        return None;
    }
    let mut chars = head.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    Some(head.to_ascii_lowercase())
}

/// The directory a `file:` replica URL names, read as v0.3.13 reads it (Go's `url.Parse`, the
/// scheme dropped, the rest re-serialised, then `path.Clean`) and made absolute (`~` expanded,
/// relative to the working directory) as v0.3.13 then does: `file:///abs` and `file:/abs` are
/// `/abs`, `file://host/p` is `/host/p`, `file:rel` is `<cwd>/rel`. `None` when `url` is not a
/// file URL; `Some(Err)` when it names no directory (`file://`).
pub fn file_url_path(url: &str) -> Option<Result<std::path::PathBuf, String>> {
    let (scheme, rest) = url.split_once(':')?;
    if !scheme.eq_ignore_ascii_case("file") {
        return None;
    }
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let raw = match rest.strip_prefix("//") {
        Some(after) => {
            let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            if authority.is_empty() {
                path.to_string()
            } else {
                format!("/{authority}{path}")
            }
        }
        None => rest.to_string(),
    };
    if raw.is_empty() {
        return Some(Err("file replica path required".into()));
    }
    Some(crate::paths::absolutize(std::path::Path::new(&raw)))
}

/// `s` with the password of its userinfo replaced, like Go's `URL.Redacted`.
pub(crate) fn redact(s: &str) -> String {
    let Some(start) = s.find("://").map(|i| i + 3) else {
        return s.to_owned();
    };
    let rest = &s[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let Some(at) = authority.rfind('@') else {
        return s.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return s.to_owned();
    };
    format!(
        "{}{}:xxxxx{}",
        &s[..start],
        &authority[..colon],
        &s[start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `file://host/p` was read as the relative path `host/p`, and
    /// `file:/abs` and `file:rel` (which v0.3.13 reads) were refused.
    #[test]
    fn file_url_forms_as_v0_3_13_reads_them() {
        let cwd = std::env::current_dir().unwrap();
        let p = |u: &str| file_url_path(u).map(|r| r.map(|p| p.display().to_string()));
        let ok = |s: &str| Some(Ok(s.to_string()));
        assert_eq!(p("file:///var/backups/x"), ok("/var/backups/x"));
        assert_eq!(p("file:///var/backups/x/"), ok("/var/backups/x"));
        assert_eq!(p("FILE:///a/../b"), ok("/b"));
        assert_eq!(p("file://host/p"), ok("/host/p"));
        assert_eq!(p("file:/abs/p"), ok("/abs/p"));
        assert_eq!(
            p("file:rel/p"),
            Some(Ok(cwd.join("rel/p").display().to_string()))
        );
        assert_eq!(p("file:///x?q=1"), ok("/x"));
        assert!(matches!(p("file://"), Some(Err(_))));
        assert!(matches!(p("file:"), Some(Err(_))));
        assert_eq!(p("s3://b/p"), None);
        assert_eq!(p("/plain/path"), None);
    }

    #[test]
    fn schemes() {
        assert_eq!(scheme("s3://bucket/p").as_deref(), Some("s3"));
        assert_eq!(scheme("S3://bucket/p").as_deref(), Some("s3"));
        assert_eq!(scheme("file:///tmp/x").as_deref(), Some("file"));
        assert_eq!(scheme("sftp://u:p@h:22/x").as_deref(), Some("sftp"));
        assert_eq!(scheme("git+ssh://x").as_deref(), Some("git+ssh"));
        assert_eq!(scheme("/tmp/x"), None);
        assert_eq!(scheme("://x"), None);
        assert_eq!(scheme("3s://x"), None);
        assert_eq!(scheme("a b://x"), None);
        assert_eq!(scheme(""), None);
        assert_eq!(scheme("s3:bucket"), None);
        assert_eq!(scheme("localhost:9000/b"), None);
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("sftp://user:hunter2@host:22/path"),
            "sftp://user:xxxxx@host:22/path"
        );
        assert_eq!(redact("sftp://user@host/p"), "sftp://user@host/p");
        assert_eq!(redact("s3://bucket/p:a@b"), "s3://bucket/p:a@b");
        assert_eq!(redact("sftp://u:p@ss@h"), "sftp://u:xxxxx@h");
        assert_eq!(redact("no url"), "no url");
        assert_eq!(redact("x://"), "x://");
    }
}

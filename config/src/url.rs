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

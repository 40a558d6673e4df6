//! Which replica keys mean what. One table, so decoding, warnings and redaction agree.

/// Option keys some walship backend reads; anything else is kept but warned about, because a
/// typo (`acess-key-id`) would otherwise silently fall back to other credentials.
pub(crate) const KNOWN_OPTIONS: &[&str] = &[
    "bucket",
    "endpoint",
    "region",
    "force-path-style",
    "skip-verify",
    "access-key-id",
    "secret-access-key",
    "host",
    "user",
    "password",
    "key-path",
    "host-key",
    "known-hosts-path",
    "key-passphrase",
    "insecure-ignore-host-key",
    "operation-timeout",
    "account-name",
    "account-key",
];

/// Options that must be booleans; checked at load time so the error can name the file.
pub(crate) const BOOL_OPTIONS: &[&str] = &[
    "force-path-style",
    "skip-verify",
    "insecure-ignore-host-key",
];

/// Options that must be durations; checked at load time for the same reason.
pub(crate) const DURATION_OPTIONS: &[&str] = &["operation-timeout"];

/// Whether a value under `key` must be hidden from `Debug` output and error messages: the one
/// rule of the registry, which also redacts replica settings.
pub(crate) fn is_secret(key: &str) -> bool {
    walship_core::registry::is_secret_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_options_are_known() {
        for k in BOOL_OPTIONS.iter().chain(DURATION_OPTIONS) {
            assert!(KNOWN_OPTIONS.contains(k), "{k}");
        }
    }
}

//! Host-key verification. v0.3.13 accepted any host key (a published advisory); walship refuses
//! an unknown or changed key unless the user pins one, names a known_hosts file, or opts out
//! with `insecure-ignore-host-key: true`.
//!
//! The known_hosts reader is our own rather than russh's helper: that one treats a missing file
//! like an unknown host but fails on one malformed line, splits on single spaces only, and knows
//! no wildcards, negations or `@revoked` markers, all of which OpenSSH's files contain.

use hmac::{Hmac, Mac};
use russh::keys::{HashAlg, PublicKey};
use std::fmt;
use std::path::{Path, PathBuf};

/// How a server's host key is judged.
#[derive(Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// `host-key`: only these keys (or fingerprints) are accepted.
    Pinned(Vec<Pin>),
    /// `known-hosts-path`, or the default lookup order: the first file that knows the host
    /// decides; a host no file knows is refused.
    KnownHosts(Vec<PathBuf>),
    /// `insecure-ignore-host-key: true`: anything is accepted (with a warning at every start).
    Insecure,
}

impl fmt::Debug for HostKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKeyPolicy::Pinned(p) => write!(f, "Pinned({} keys)", p.len()),
            HostKeyPolicy::KnownHosts(files) => f.debug_tuple("KnownHosts").field(files).finish(),
            HostKeyPolicy::Insecure => f.write_str("Insecure"),
        }
    }
}

/// One pinned key: a whole public key, or its `SHA256:` fingerprint.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Pin {
    Key(Box<PublicKey>),
    Fingerprint(String),
}

/// The known_hosts files looked up when the replica names none: the running user's, then
/// walship's system-wide file, then OpenSSH's (a system service has no useful home directory).
pub fn default_known_hosts(home: Option<&Path>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(h) = home {
        v.push(h.join(".ssh/known_hosts"));
    }
    v.push("/etc/walship/known_hosts".into());
    v.push("/etc/ssh/ssh_known_hosts".into());
    v
}

/// Parses `host-key`: one or more lines (or `,`-separated entries), each a public key as
/// `ssh-keyscan` or a `.pub` file prints it (`[host] type base64 [comment]`), or a
/// `SHA256:...` fingerprint as `ssh-keygen -lf` prints it.
pub fn parse_pins(text: &str) -> Result<Vec<Pin>, String> {
    let mut pins = Vec::new();
    for entry in text
        .split(['\n', ','])
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if entry.starts_with('#') {
            continue;
        }
        if let Some(fp) = entry.strip_prefix("SHA256:") {
            if fp.is_empty() || fp.contains(char::is_whitespace) {
                return Err(format!("invalid fingerprint {entry:?}"));
            }
            pins.push(Pin::Fingerprint(entry.to_string()));
            continue;
        }
        let words: Vec<&str> = entry.split_whitespace().collect();
        let key = words
            .windows(2)
            .find_map(|w| parse_key(w[0], w[1]))
            .ok_or_else(|| {
                format!(
                    "expected a public key line such as \"ssh-ed25519 AAAA...\" (from \
                     ssh-keyscan or the server's host key .pub file) or a SHA256: fingerprint, \
                     got {:?}",
                    shorten(entry)
                )
            })?;
        pins.push(Pin::Key(Box::new(key)));
    }
    if pins.is_empty() {
        return Err("no key given".into());
    }
    Ok(pins)
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

fn parse_key(kind: &str, b64: &str) -> Option<PublicKey> {
    let k = PublicKey::from_openssh(&format!("{kind} {b64}")).ok()?;
    (k.algorithm().as_str() == kind).then_some(k)
}

/// `SHA256:...` of a key, as OpenSSH prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// `ED25519 SHA256:...`: the key type and fingerprint, for messages.
pub fn describe(key: &PublicKey) -> String {
    let kind = key.algorithm().as_str().to_string();
    let short = kind
        .trim_start_matches("ssh-")
        .split('-')
        .next()
        .unwrap_or(&kind)
        .to_ascii_uppercase();
    format!("{short} {}", fingerprint(key))
}

/// The name a known_hosts file records for a host: `host`, or `[host]:port` off port 22.
pub fn host_pattern_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// What one known_hosts file says about a host and key.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A line records exactly this key for this host.
    Match,
    /// The key is marked `@revoked` (line number, 1-based).
    Revoked(usize),
    /// The host is recorded with another key of the same type (first such line).
    Changed(usize),
    /// The host is recorded only with keys of other types.
    OtherTypes,
    /// The host is not in the file.
    Unknown,
}

/// Looks a host and key up in the text of a known_hosts file.
pub fn lookup(text: &str, host: &str, port: u16, key: &PublicKey) -> Lookup {
    let name = host_pattern_name(host, port);
    let mut changed = None;
    let mut other_types = false;
    let mut matched = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let mut first = words.next().unwrap_or("");
        let marker = first.strip_prefix('@').map(str::to_owned);
        if marker.is_some() {
            first = words.next().unwrap_or("");
        }
        let (Some(kind), Some(b64)) = (words.next(), words.next()) else {
            continue;
        };
        if !hosts_match(first, &name) {
            continue;
        }
        let Some(recorded) = parse_key(kind, b64) else {
            continue;
        };
        let same = recorded.key_data() == key.key_data();
        match marker.as_deref() {
            Some("revoked") if same => return Lookup::Revoked(i + 1),
            Some(_) => continue, // @cert-authority (certificates are not used) or unknown
            None => {}
        }
        if same {
            matched = true;
        } else if recorded.algorithm() == key.algorithm() {
            changed.get_or_insert(i + 1);
        } else {
            other_types = true;
        }
    }
    match (matched, changed) {
        (true, _) => Lookup::Match,
        (false, Some(line)) => Lookup::Changed(line),
        _ if other_types => Lookup::OtherTypes,
        _ => Lookup::Unknown,
    }
}

/// OpenSSH host-list semantics: comma-separated patterns, `!` negates (a negated match wins),
/// `*` and `?` wildcards, and `|1|salt|hash` hashed names.
fn hosts_match(list: &str, name: &str) -> bool {
    let mut hit = false;
    for pat in list.split(',') {
        if let Some(hashed) = pat.strip_prefix("|1|") {
            if hashed_match(hashed, name) {
                hit = true;
            }
        } else if let Some(neg) = pat.strip_prefix('!') {
            if glob(neg.as_bytes(), name.as_bytes()) {
                return false;
            }
        } else if glob(pat.as_bytes(), name.as_bytes()) {
            hit = true;
        }
    }
    hit
}

fn hashed_match(salt_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_hash.split_once('|') else {
        return false;
    };
    let b64 = data_encoding::BASE64;
    let (Ok(salt), Ok(hash)) = (b64.decode(salt.as_bytes()), b64.decode(hash.as_bytes())) else {
        return false;
    };
    let Ok(mac) = <Hmac<sha1::Sha1> as Mac>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(name.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// Case-insensitive glob with `*` and `?` (host names are case-insensitive).
/// OpenSSH's `*`/`?` pattern match, case-insensitive.
///
/// Iterative, remembering only the last `*`: the recursive form took time exponential in the
/// number of stars, and a known_hosts line of 75 `*` (found by the fuzzer) hung start-up.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(b'?') => {
                pi += 1;
                si += 1;
            }
            Some(a) if a.eq_ignore_ascii_case(&s[si]) => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                // Let the last star take one more byte and try again from there.
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Why a host key was refused: the one-line message shown to the user.
pub fn verify(
    policy: &HostKeyPolicy,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> Result<(), String> {
    let name = host_pattern_name(host, port);
    let shown = describe(key);
    let how_to_pin = format!(
        "if this is the server's real key (compare with `ssh-keygen -lf` on the server), pin it \
         in the replica section with host-key: \"{}\" or add it to a known_hosts file \
         (`ssh-keyscan -p {port} {host}`)",
        key_line(key)
    );
    match policy {
        HostKeyPolicy::Insecure => Ok(()),
        HostKeyPolicy::Pinned(pins) => {
            let fp = fingerprint(key);
            let ok = pins.iter().any(|p| match p {
                Pin::Key(k) => k.key_data() == key.key_data(),
                Pin::Fingerprint(f) => f.trim_end_matches('=') == fp.trim_end_matches('='),
            });
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "host key of {name} does not match the pinned host-key: the server \
                     presented {shown}; refusing to connect (a man-in-the-middle, or the \
                     server's key was replaced); {how_to_pin}"
                ))
            }
        }
        HostKeyPolicy::KnownHosts(files) => {
            let mut looked = Vec::new();
            let mut other_types = None;
            for f in files {
                let text = match std::fs::read_to_string(f) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        looked.push(format!("{} (missing)", f.display()));
                        continue;
                    }
                    Err(e) => {
                        looked.push(format!("{} (unreadable: {e})", f.display()));
                        continue;
                    }
                };
                looked.push(f.display().to_string());
                match lookup(&text, host, port, key) {
                    Lookup::Match => return Ok(()),
                    Lookup::Revoked(line) => {
                        return Err(format!(
                            "host key of {name} ({shown}) is marked @revoked at line {line} of \
                             {}; refusing to connect",
                            f.display()
                        ))
                    }
                    Lookup::Changed(line) => {
                        return Err(format!(
                            "HOST KEY CHANGED for {name}: the server presented {shown} but line \
                             {line} of {} records a different key; refusing to connect (a \
                             man-in-the-middle, or the server's key was replaced); if the change \
                             is expected, remove that line, then {how_to_pin}",
                            f.display()
                        ))
                    }
                    Lookup::OtherTypes => {
                        other_types.get_or_insert_with(|| f.display().to_string());
                    }
                    Lookup::Unknown => {}
                }
            }
            let other = other_types
                .map(|f| format!(" ({f} has keys of other types for it)"))
                .unwrap_or_default();
            Err(format!(
                "unknown host key for {name}: the server presented {shown}, which is in no \
                 known_hosts file (looked in {}){other}; refusing to connect; {how_to_pin}",
                looked.join(", ")
            ))
        }
    }
}

/// `type base64` of a key, as a pin.
pub fn key_line(key: &PublicKey) -> String {
    let mut k = key.clone();
    k.set_comment("");
    k.to_openssh()
        .unwrap_or_else(|_| fingerprint(key))
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";
    const E1: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBABhS9by5VHsSgotRnr6Wgd9AZ1XpePnLbIdbThEOnTWN2B1mXquqiPklQo4x87fWe69n3CkImCDGL+2ShVeA10=";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    /// Regression (found by `fuzz/` known_hosts): many stars took exponential time.
    #[test]
    fn glob_is_fast_and_right() {
        let many = format!("[{}exa", "*".repeat(75));
        let t = std::time::Instant::now();
        assert!(!glob(
            many.as_bytes(),
            b"example.com-not-matching-at-all-xxxxxxxxxxxxxxx"
        ));
        assert!(t.elapsed() < std::time::Duration::from_millis(100));
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/regressions/known_hosts-many-stars"
        ))
        .unwrap();
        let t = std::time::Instant::now();
        let (host, rest) = text.split_once('\n').unwrap();
        let _ = lookup(rest, host, 22, &key(K2));
        assert!(t.elapsed() < std::time::Duration::from_millis(100));
        for (p, s, want) in [
            ("*", "", true),
            ("*", "abc", true),
            ("a*c", "abc", true),
            ("a*c", "abd", false),
            ("*.example.com", "host.EXAMPLE.com", true),
            ("?", "", false),
            ("??", "ab", true),
            ("a**b", "ab", true),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b", "xxaxxbxxc", false),
            ("", "", true),
            ("", "a", false),
            ("10.0.0.?", "10.0.0.1", true),
        ] {
            assert_eq!(glob(p.as_bytes(), s.as_bytes()), want, "{p:?} {s:?}");
        }
    }

    #[test]
    fn lookup_rules() {
        let k1 = key(K1);
        let text = format!(
            "# comment\n\n[127.0.0.1]:2222 {K2}\nother.example {K1}\n[127.0.0.1]:2222\t{E1} c\n"
        );
        assert_eq!(lookup(&text, "127.0.0.1", 2222, &k1), Lookup::Changed(3));
        assert_eq!(lookup(&text, "other.example", 22, &k1), Lookup::Match);
        assert_eq!(lookup(&text, "OTHER.example", 22, &k1), Lookup::Match);
        assert_eq!(lookup(&text, "other.example", 2222, &k1), Lookup::Unknown);
        assert_eq!(lookup(&text, "nowhere", 22, &k1), Lookup::Unknown);
        // A matching line anywhere wins over a same-type mismatch (several keys per host).
        let text2 = format!("{text}[127.0.0.1]:2222 {K1}\n");
        assert_eq!(lookup(&text2, "127.0.0.1", 2222, &k1), Lookup::Match);
        // Only other key types known.
        let text3 = format!("h {E1}\n");
        assert_eq!(lookup(&text3, "h", 22, &k1), Lookup::OtherTypes);
        // Malformed lines are skipped, not fatal.
        let text4 = format!("garbage\nh ssh-ed25519 !!!notbase64\nh {K1}\n");
        assert_eq!(lookup(&text4, "h", 22, &k1), Lookup::Match);
    }

    #[test]
    fn patterns_markers_and_hashes() {
        let k1 = key(K1);
        assert_eq!(
            lookup(
                &format!("*.example.com,!bad.example.com {K1}\n"),
                "a.example.com",
                22,
                &k1
            ),
            Lookup::Match
        );
        assert_eq!(
            lookup(
                &format!("*.example.com,!bad.example.com {K1}\n"),
                "bad.example.com",
                22,
                &k1
            ),
            Lookup::Unknown
        );
        assert_eq!(lookup(&format!("h? {K1}\n"), "h1", 22, &k1), Lookup::Match);
        assert_eq!(
            lookup(&format!("@revoked * {K1}\nh {K1}\n"), "h", 22, &k1),
            Lookup::Revoked(1)
        );
        assert_eq!(
            lookup(&format!("@cert-authority h {K2}\n"), "h", 22, &k1),
            Lookup::Unknown
        );
        // Hashed entry from russh's own test data (host "example.com").
        let hashed = "|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF\n";
        assert_eq!(lookup(hashed, "example.com", 22, &key(K2)), Lookup::Match);
        assert_eq!(lookup(hashed, "example.org", 22, &key(K2)), Lookup::Unknown);
    }

    #[test]
    fn pins() {
        let k1 = key(K1);
        let fp = fingerprint(&k1);
        assert!(fp.starts_with("SHA256:"));
        for text in [
            K1.to_string(),
            format!("[127.0.0.1]:2222 {K1}"),
            format!("{K1} root@host"),
            format!("{K2}\n{K1}\n"),
            fp.clone(),
        ] {
            let p = parse_pins(&text).unwrap();
            verify(&HostKeyPolicy::Pinned(p), "h", 22, &k1)
                .unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        let e = verify(
            &HostKeyPolicy::Pinned(parse_pins(K2).unwrap()),
            "h",
            2222,
            &k1,
        )
        .unwrap_err();
        assert!(
            e.contains(&fp) && e.contains("host-key: \"ssh-ed25519 AAAA") && e.contains("[h]:2222"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        assert!(parse_pins("ssh-ed25519").is_err());
        assert!(parse_pins("").is_err());
        assert!(parse_pins("SHA256:").is_err());
        assert_eq!(key_line(&key(&format!("{K1} comment"))), K1);
        assert_eq!(describe(&k1), format!("ED25519 {fp}"));
        assert!(describe(&key(E1)).starts_with("ECDSA SHA256:"));
    }

    #[test]
    fn known_hosts_files_in_order() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::write(&a, format!("other {K2}\n")).unwrap();
        std::fs::write(&b, format!("[h]:2222 {K1}\n")).unwrap();
        let k1 = key(K1);
        let missing = d.path().join("missing");
        let pol = HostKeyPolicy::KnownHosts(vec![missing.clone(), a.clone(), b.clone()]);
        verify(&pol, "h", 2222, &k1).unwrap();
        // The first file that knows the host decides: a changed key is not overruled later.
        std::fs::write(&a, format!("[h]:2222 {K2}\n")).unwrap();
        let e = verify(&pol, "h", 2222, &k1).unwrap_err();
        assert!(
            e.starts_with("HOST KEY CHANGED for [h]:2222") && e.contains("line 1 of"),
            "{e}"
        );
        let e = verify(&HostKeyPolicy::KnownHosts(vec![missing]), "h", 2222, &k1).unwrap_err();
        assert!(
            e.starts_with("unknown host key for [h]:2222")
                && e.contains("(missing)")
                && e.contains(&fingerprint(&k1)),
            "{e}"
        );
        assert_eq!(
            default_known_hosts(Some(Path::new("/root"))),
            vec![
                PathBuf::from("/root/.ssh/known_hosts"),
                "/etc/walship/known_hosts".into(),
                "/etc/ssh/ssh_known_hosts".into()
            ]
        );
        assert_eq!(default_known_hosts(None).len(), 2);
        assert!(verify(&HostKeyPolicy::Insecure, "h", 22, &k1).is_ok());
    }
}

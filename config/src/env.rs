//! `$VAR` / `${VAR}` expansion with Go `os.ExpandEnv` semantics.
//!
//! Users move their v0.3.13 files over unchanged, so this reproduces Go's quirks on purpose
//! (special one-character names, `${}` dropped, no `${VAR:-default}`), rather than offering a
//! friendlier shell-like syntax that would read the same file differently.

/// Expands environment variables in `text` exactly like Go's `os.ExpandEnv`.
pub fn expand_env(text: &str) -> String {
    expand_with(text, lookup)
}

/// Expands like [`expand_env`] and also names every variable that expanded to nothing, with
/// its 1-based line, outside comment lines: an unset `DIGITALOCEAN_SPACES_ENDPOINT` silently
/// turned a Spaces replica into an AWS one.
pub fn expand_env_reporting(text: &str) -> (String, Vec<(usize, String)>) {
    expand_reporting_with(text, lookup)
}

pub(crate) fn expand_reporting_with(
    text: &str,
    mut lookup: impl FnMut(&str) -> String,
) -> (String, Vec<(usize, String)>) {
    let mut empty = Vec::new();
    let out = expand_with_positions(text, |name, at| {
        let v = lookup(name);
        if v.is_empty() {
            empty.push((at, name.to_string()));
        }
        v
    });
    let mut found: Vec<(usize, String)> = Vec::new();
    for (at, name) in empty {
        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        if text[start..].trim_start().starts_with('#') {
            continue;
        }
        let line = text[..at].bytes().filter(|&b| b == b'\n').count() + 1;
        if !found.iter().any(|(l, n)| *l == line && *n == name) {
            found.push((line, name));
        }
    }
    (out, found)
}

/// The expansion itself, with the lookup injected so tests don't touch the process environment.
pub(crate) fn expand_with(text: &str, mut lookup: impl FnMut(&str) -> String) -> String {
    expand_with_positions(text, |name, _| lookup(name))
}

/// [`expand_with`] whose lookup also gets the byte offset of the `$`.
fn expand_with_positions(text: &str, mut lookup: impl FnMut(&str, usize) -> String) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    // `i` is the start of the not-yet-copied run; every index we cut at is an ASCII byte
    // (`$`, `{`, `}` or the end of an ASCII name), so slicing the `str` is always on a boundary.
    let mut i = 0;
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.push_str(&text[i..j]);
            let (name, width) = shell_name(&text[j + 1..]);
            match name {
                // Invalid syntax (`${}` or an unterminated `${`): Go eats the characters.
                None if width > 0 => {}
                // `$` not followed by a name: kept as is.
                None => out.push('$'),
                Some(name) => out.push_str(&lookup(name, j)),
            }
            j += width;
            i = j + 1;
        }
        j += 1;
    }
    out.push_str(&text[i.min(text.len())..]);
    out
}

fn is_special(c: u8) -> bool {
    matches!(
        c,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

fn is_alnum(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// Go's `getShellName`: the name after a `$` and how many bytes it used.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match b.iter().skip(1).position(|&c| c == b'}') {
            Some(0) => (None, 2),
            Some(p) => (Some(&s[1..p + 1]), p + 2),
            None => (None, 1),
        };
    }
    if is_special(b[0]) {
        return (Some(&s[..1]), 1);
    }
    let n = b.iter().take_while(|&&c| is_alnum(c)).count();
    if n == 0 {
        (None, 0)
    } else {
        (Some(&s[..n]), n)
    }
}

/// `os.Getenv`: unset and unreadable names read as empty.
fn lookup(name: &str) -> String {
    // The platform rejects these names; Go would find nothing either.
    if name.is_empty() || name.contains(['=', '\0']) {
        return String::new();
    }
    std::env::var_os(name)
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(s: &str) -> String {
        expand_with(s, |name| match name {
            "HOME" => "/home/u".into(),
            "A" => "1".into(),
            "A_B2" => "ab".into(),
            "1" => "one".into(),
            "$" => "pid".into(),
            "VAR:-default" => "weird".into(),
            "é" => "accent".into(),
            _ => String::new(),
        })
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(exp("$HOME/x"), "/home/u/x");
        assert_eq!(exp("${HOME}/x"), "/home/u/x");
        assert_eq!(exp("a${A}b"), "a1b");
        assert_eq!(exp("$A_B2-"), "ab-");
        assert_eq!(exp("$Ax"), "");
        assert_eq!(exp("${A}x"), "1x");
    }

    /// Regression: a variable that expanded to nothing was silent.
    #[test]
    fn empty_expansions_are_named_with_their_line() {
        let text = "a: ${A}\nb: ${NOPE}\n# c: ${IN_COMMENT}\nd: $NOPE and ${NOPE} and $EMPTY\n";
        let (out, empty) = expand_reporting_with(text, |n| match n {
            "A" => "1".into(),
            _ => String::new(),
        });
        assert_eq!(out, "a: 1\nb: \n# c: \nd:  and  and \n");
        assert_eq!(
            empty,
            vec![
                (2, "NOPE".to_string()),
                (4, "NOPE".to_string()),
                (4, "EMPTY".to_string())
            ]
        );
    }

    #[test]
    fn unset_is_empty() {
        assert_eq!(exp("x=$NOPE;"), "x=;");
        assert_eq!(exp("${NOPE}"), "");
    }

    #[test]
    fn special_single_char_names() {
        assert_eq!(exp("$1x"), "onex");
        assert_eq!(exp("$12"), "one2");
        assert_eq!(exp("$$"), "pid");
        assert_eq!(exp("${1}"), "one");
        assert_eq!(exp("${$}"), "pid");
        assert_eq!(exp("$@"), "");
        assert_eq!(exp("p@ss$#word"), "p@ssword");
        // `${12}` is not a special-var form: scans to the brace, looks up "12".
        assert_eq!(exp("${12}"), "");
    }

    #[test]
    fn invalid_syntax() {
        assert_eq!(exp("a${}b"), "ab");
        assert_eq!(exp("a${b"), "ab");
        assert_eq!(exp("a${"), "a");
        assert_eq!(exp("cost $5"), "cost ");
        assert_eq!(exp("a $ b"), "a $ b");
        assert_eq!(exp("a$"), "a$");
        assert_eq!(exp("$"), "$");
        assert_eq!(exp("a$/b"), "a$/b");
        assert_eq!(exp("$é"), "$é");
    }

    #[test]
    fn no_default_syntax() {
        assert_eq!(exp("${VAR:-default}"), "weird");
        assert_eq!(exp("${X:-d}"), "");
        assert_eq!(exp("${é}"), "accent");
    }

    #[test]
    fn untouched_without_dollar() {
        assert_eq!(exp(""), "");
        assert_eq!(exp("no vars here: µs ✓"), "no vars here: µs ✓");
        assert_eq!(exp("# comment $A\n"), "# comment 1\n");
    }

    #[test]
    fn real_environment_lookup() {
        // PATH is set in every test environment; an `=` in a name is never looked up.
        assert_eq!(
            expand_env("${PATH}"),
            std::env::var("PATH").unwrap_or_default()
        );
        assert_eq!(expand_env("${A=B}"), "");
        assert_eq!(expand_env("${\0}"), "");
        assert_eq!(
            expand_env("$WALSHIP_SURELY_UNSET_VARIABLE_XYZ"),
            String::new()
        );
    }
}

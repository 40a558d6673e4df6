//! Go `flag` compatibility: `-config x`, `-config=x` and `--config x` all work.

/// Rewrites single-dash long flags (`-config`) to clap's `--config`, up to the first positional
/// argument or `--`, as Go's flag package stops there too.
///
/// A flag that takes a value is joined to it (`--index=-1`): Go's flag package takes the next
/// argument as the value whatever it looks like, while clap would read `-1` as a flag and say
/// "unknown argument" instead of what is wrong with the value.
pub fn go_style(args: Vec<String>, takes_value: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    if let Some(first) = it.next() {
        out.push(first);
    }
    let mut flags_done = false;
    let mut pending: Option<String> = None;
    for a in it {
        if let Some(flag) = pending.take() {
            out.push(format!("{flag}={a}"));
            continue;
        }
        if flags_done {
            out.push(a);
            continue;
        }
        if a == "--" {
            flags_done = true;
            out.push(a);
            continue;
        }
        let Some(body) = a.strip_prefix('-') else {
            // First positional: Go stops parsing flags here; keep clap from seeing later `-x`.
            flags_done = true;
            out.push("--".into());
            out.push(a);
            continue;
        };
        let body = body.strip_prefix('-').unwrap_or(body);
        let name = body.split('=').next().unwrap_or("");
        let flag = if name.chars().count() == 1 {
            format!("-{body}")
        } else {
            format!("--{body}")
        };
        if takes_value.contains(&name) && !body.contains('=') {
            pending = Some(flag);
        } else {
            out.push(flag);
        }
    }
    // A value flag at the end: clap says its value is missing.
    out.extend(pending);
    out
}

/// clap's help and errors in the single-dash form users type and the README uses (`-config`,
/// `-dry-run`): a `--` before a lowercase letter, at the start of a word, loses one dash.
pub fn single_dash(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev: Option<char> = None;
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        if c == '-' && prev.is_none_or(|p| !(p.is_alphanumeric() || p == '-')) {
            let mut ahead = it.clone();
            if ahead.next() == Some('-') && ahead.next().is_some_and(|n| n.is_ascii_lowercase()) {
                // Keep one dash: skip the second. After a space (a help table's flag column) a
                // space takes its place, so the descriptions stay aligned.
                it.next();
                if prev.is_some_and(char::is_whitespace) {
                    out.push(' ');
                }
            }
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_shows_single_dash_flags() {
        assert_eq!(
            single_dash("  --config <PATH>  Configuration\n      --dry-run   x\n  -o <PATH>"),
            "   -config <PATH>  Configuration\n       -dry-run   x\n  -o <PATH>"
        );
        assert_eq!(
            single_dash("unexpected argument '--foo' found; [--no-expand-env]"),
            "unexpected argument '-foo' found; [-no-expand-env]"
        );
        // Not a flag: a lone `--`, and dashes inside words.
        assert_eq!(
            single_dash("walship restore -- DB a--b --"),
            "walship restore -- DB a--b --"
        );
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn rewrites_go_flags() {
        assert_eq!(
            go_style(
                v(&["restore", "-config", "/x.yml", "-o", "/out", "/db"]),
                &["config", "o"]
            ),
            v(&["restore", "--config=/x.yml", "-o=/out", "--", "/db"])
        );
        assert_eq!(
            go_style(
                v(&["restore", "--timestamp=2020-01-01T00:00:00Z", "/db"]),
                &["timestamp"]
            ),
            v(&["restore", "--timestamp=2020-01-01T00:00:00Z", "--", "/db"])
        );
        // A value that looks like a flag stays a value.
        assert_eq!(
            go_style(v(&["replicate", "-exec", "-x"]), &["exec"]),
            v(&["replicate", "--exec=-x"])
        );
        // Negative numbers reach the value's own check.
        assert_eq!(
            go_style(v(&["restore", "-index", "-1", "/db"]), &["index"]),
            v(&["restore", "--index=-1", "--", "/db"])
        );
        // A value flag without its value is left for clap to report.
        assert_eq!(
            go_style(v(&["restore", "-o"]), &["o"]),
            v(&["restore", "-o"])
        );
    }
}

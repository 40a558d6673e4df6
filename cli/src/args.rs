//! Go `flag` compatibility: `-config x`, `-config=x` and `--config x` all work.

/// Rewrites single-dash long flags (`-config`) to clap's `--config`, up to the first positional
/// argument or `--`, as Go's flag package stops there too.
pub fn go_style(args: Vec<String>, takes_value: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    if let Some(first) = it.next() {
        out.push(first);
    }
    let mut flags_done = false;
    let mut expect_value = false;
    for a in it {
        if flags_done || expect_value {
            expect_value = false;
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
        if takes_value.contains(&name) && !body.contains('=') {
            expect_value = true;
        }
        if name.chars().count() == 1 {
            out.push(format!("-{body}"));
        } else {
            out.push(format!("--{body}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
            v(&["restore", "--config", "/x.yml", "-o", "/out", "--", "/db"])
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
            v(&["replicate", "--exec", "-x"])
        );
    }
}

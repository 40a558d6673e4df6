//! Output helpers matching v0.3.13: Go tabwriter columns (padding 2, spaces) and Go durations.

use std::time::{Duration, SystemTime};

/// Renders rows like Go's `tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)` with tab-separated cells:
/// every cell but the last of a row is padded to its column's width plus two spaces.
pub fn render(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.push('\n');
    }
    out
}

/// RFC 3339 in UTC with whole seconds, as Go's `time.RFC3339` prints.
pub fn rfc3339(t: SystemTime) -> String {
    walship_core::timefmt::rfc3339(t)
}

/// v0.3.13's `truncateDuration`, then Go's `Duration.String`.
pub fn go_duration(nanos: i128) -> String {
    let abs = nanos.unsigned_abs();
    let unit: u128 = if abs > 10_000_000_000 {
        1_000_000_000
    } else if abs > 1_000_000_000 {
        100_000_000
    } else if abs > 1_000_000 {
        1_000_000
    } else if abs > 1_000 {
        1_000
    } else {
        1
    };
    let t = abs / unit * unit;
    let sign = if nanos < 0 && t != 0 { "-" } else { "" };
    format!("{sign}{}", go_duration_string(t))
}

fn frac(v: u128, digits: u32) -> String {
    let s = format!("{:0width$}", v, width = digits as usize);
    let s = s.trim_end_matches('0');
    if s.is_empty() {
        String::new()
    } else {
        format!(".{s}")
    }
}

fn go_duration_string(n: u128) -> String {
    if n == 0 {
        return "0s".into();
    }
    if n < 1_000 {
        return format!("{n}ns");
    }
    if n < 1_000_000 {
        return format!("{}{}µs", n / 1_000, frac(n % 1_000, 3));
    }
    if n < 1_000_000_000 {
        return format!("{}{}ms", n / 1_000_000, frac(n % 1_000_000, 6));
    }
    let secs = n / 1_000_000_000;
    let sub = frac(n % 1_000_000_000, 9);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}{sub}s")
    } else if m > 0 {
        format!("{m}m{s}{sub}s")
    } else {
        format!("{s}{sub}s")
    }
}

pub fn signed_between(later: SystemTime, earlier: SystemTime) -> i128 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

#[allow(dead_code)]
pub fn dur(d: Duration) -> String {
    go_duration(d.as_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_padding() {
        let rows = vec![
            vec!["name".into(), "generation".into(), "end".into()],
            vec!["file".into(), "0123456789abcdef".into(), "x".into()],
        ];
        assert_eq!(
            render(&rows),
            "name  generation        end\nfile  0123456789abcdef  x\n"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(19 * 60 * 1_000_000_000 + 123_000_000), "19m0s");
        assert_eq!(go_duration(-3_456_789), "-3ms");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_600_000_000_000 + 1_000_000_000), "1h0m1s");
        assert_eq!(go_duration(2_500), "2µs");
    }

    #[test]
    fn rfc3339_whole_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_739_967_080_500);
        assert_eq!(rfc3339(t), "2025-02-19T12:11:20Z");
    }
}

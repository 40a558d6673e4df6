//! Go `time.ParseDuration` syntax, for the config loader and for backends' duration options.
//!
//! v0.3.13 decodes every interval with Go's parser, so files contain things like `1h30m`, `1.5h`
//! or `300ms`; anything Go accepts must mean the same here.

use std::time::Duration;

const NS: u64 = 1;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const LIMIT: u64 = 1 << 63;

/// Parses a Go duration (`"1s"`, `"10m"`, `"1h30m"`, `"1.5h"`, `"300ms"`, `"2us"`, `"1µs"`).
///
/// A bare integer is nanoseconds (YAML integers reach us that way), `"0"` is zero, and a
/// negative duration is refused because every interval in the config is a wait time.
/// The error reads `invalid duration "<s>": <reason>`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let fail = |why: &str| format!("invalid duration {s:?}: {why}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(fail("empty"));
    }
    if rest.bytes().all(|c| c.is_ascii_digit()) {
        let n: u64 = rest.parse().map_err(|_| fail("out of range"))?;
        return finish(n, neg, &fail);
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let b = rest.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(fail("expected a number"));
        }
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut whole: u64 = 0;
        for &c in &b[..int_len] {
            whole = whole
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .filter(|v| *v <= LIMIT)
                .ok_or_else(|| fail("out of range"))?;
        }
        rest = &rest[int_len..];
        let (mut frac, mut scale, mut frac_len) = (0u64, 1f64, 0usize);
        if rest.starts_with('.') {
            rest = &rest[1..];
            let mut overflow = false;
            for &c in rest.as_bytes().iter().take_while(|c| c.is_ascii_digit()) {
                frac_len += 1;
                if overflow {
                    continue;
                }
                match frac.checked_mul(10).map(|v| v + u64::from(c - b'0')) {
                    Some(v) if v <= LIMIT => {
                        frac = v;
                        scale *= 10.0;
                    }
                    _ => overflow = true,
                }
            }
            rest = &rest[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(fail("expected a number"));
        }
        let unit_len = rest
            .bytes()
            .take_while(|c| *c != b'.' && !c.is_ascii_digit())
            .count();
        if unit_len == 0 {
            return Err(fail("missing unit"));
        }
        let unit_name = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit = match unit_name {
            "ns" => NS,
            "us" | "µs" | "μs" => US,
            "ms" => MS,
            "s" => S,
            "m" => 60 * S,
            "h" => 3600 * S,
            _ => return Err(fail(&format!("unknown unit {unit_name:?}"))),
        };
        let mut v = whole
            .checked_mul(unit)
            .filter(|v| *v <= LIMIT)
            .ok_or_else(|| fail("out of range"))?;
        if frac > 0 {
            // Same float arithmetic as Go, so fractional hours round identically.
            v = v.saturating_add((frac as f64 * (unit as f64 / scale)) as u64);
            if v > LIMIT {
                return Err(fail("out of range"));
            }
        }
        total = total
            .checked_add(v)
            .filter(|t| *t <= LIMIT)
            .ok_or_else(|| fail("out of range"))?;
    }
    finish(total, neg, &fail)
}

fn finish(ns: u64, neg: bool, fail: &dyn Fn(&str) -> String) -> Result<Duration, String> {
    if neg && ns > 0 {
        return Err(fail("must not be negative"));
    }
    if ns >= LIMIT {
        return Err(fail("out of range"));
    }
    Ok(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn go_examples() {
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("24h"), Duration::from_secs(86_400));
        assert_eq!(ok("1h30m"), Duration::from_secs(5_400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5_400));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("2us"), Duration::from_micros(2));
        assert_eq!(ok("1µs"), Duration::from_micros(1));
        assert_eq!(ok("1μs"), Duration::from_micros(1));
        assert_eq!(ok("5ns"), Duration::from_nanos(5));
        assert_eq!(ok("2h45m30.5s"), Duration::from_millis(9_930_500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("+1s"), Duration::from_secs(1));
        assert_eq!(ok("1m1m"), Duration::from_secs(120));
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
        assert_eq!(ok("0.0000000001s"), Duration::ZERO);
    }

    #[test]
    fn zero_and_bare_integers() {
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(ok("+0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("-0s"), Duration::ZERO);
        assert_eq!(ok("1000000000"), Duration::from_secs(1));
        assert_eq!(ok("7"), Duration::from_nanos(7));
    }

    #[test]
    fn limits() {
        assert_eq!(
            ok("9223372036854775807ns"),
            Duration::from_nanos(i64::MAX as u64)
        );
        assert!(parse_duration("9223372036854775808ns").is_err());
        assert!(parse_duration("9223372036854775808").is_err());
        assert!(parse_duration("2562048h").is_err());
        assert!(parse_duration("99999999999999999999999s").is_err());
        assert!(parse_duration("1.99999999999999999999999999999h").is_ok());
    }

    #[test]
    fn errors() {
        for bad in [
            "", "-", "+", "s", ".s", "-.s", "10x", "1d", "1.5", "1s2", "a1s", "1 s", " 1s", "1s ",
            "--1s", "1e3s", "1h-1m", "µs", "1sµ", ".", "0x10s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn negative_is_refused() {
        let e = parse_duration("-1s").unwrap_err();
        assert!(e.contains("negative"), "{e}");
        assert!(parse_duration("-5").is_err());
    }

    #[test]
    fn messages() {
        assert_eq!(
            parse_duration("10x").unwrap_err(),
            "invalid duration \"10x\": unknown unit \"x\""
        );
        assert_eq!(
            parse_duration("1.5").unwrap_err(),
            "invalid duration \"1.5\": missing unit"
        );
    }
}

//! RFC 3339 text for any `SystemTime`, as Go prints it.
//!
//! The `time` crate's `OffsetDateTime::from(SystemTime)` panics outside years -9999..=9999, and
//! object times come from outside (a file's mtime, an S3 `LastModified`): one object dated after
//! 9999 made `snapshots`, `generations` and `restore` exit 101. Go formats such years with more
//! digits (`10000-01-01T00:00:00Z`), and so does this, from plain integer arithmetic.

use std::time::{Duration, SystemTime};

/// Seconds and nanoseconds since the Unix epoch, negative before it.
fn unix(t: SystemTime) -> (i128, u32) {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (i128::from(d.as_secs()), d.subsec_nanos()),
        Err(e) => {
            let d: Duration = e.duration();
            let (s, n) = (i128::from(d.as_secs()), d.subsec_nanos());
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    }
}

/// Proleptic Gregorian (year, month, day) of a day number since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), exact for every `i128` day a `SystemTime` can hold.
fn civil(days: i128) -> (i128, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i128::from(m <= 2);
    (y, m, d)
}

/// `2006-01-02T15:04:05Z` (Go's `time.RFC3339` of a UTC time: whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    format(t, false)
}

/// `2006-01-02T15:04:05.999999999Z` (Go's `time.RFC3339Nano`: trailing zeros dropped).
pub fn rfc3339_nano(t: SystemTime) -> String {
    format(t, true)
}

fn format(t: SystemTime, nanos: bool) -> String {
    let (secs, ns) = unix(t);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil(days);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let year = if y < 0 {
        format!("-{:04}", -y)
    } else {
        format!("{y:04}")
    };
    let mut out = format!("{year}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    if nanos && ns > 0 {
        let frac = format!("{ns:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn matches_the_time_crate_where_it_works() {
        let fmt =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
        let mut s: u64 = 1;
        while s < 253_402_300_799 {
            let t = at(s, 0);
            assert_eq!(
                rfc3339(t),
                time::OffsetDateTime::from(t).format(&fmt).unwrap(),
                "{s}"
            );
            s = s * 7 + 13_337;
        }
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400, 0)), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn years_past_9999_and_before_the_epoch_do_not_panic() {
        assert_eq!(rfc3339(at(253_402_300_800, 0)), "10000-01-01T00:00:00Z");
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64);
        assert!(rfc3339(far).ends_with('Z'));
        let before = SystemTime::UNIX_EPOCH - Duration::new(1, 500_000_000);
        assert_eq!(rfc3339_nano(before), "1969-12-31T23:59:58.5Z");
        assert_eq!(rfc3339(before), "1969-12-31T23:59:58Z");
    }

    #[test]
    fn nanoseconds_as_go_prints_them() {
        assert_eq!(rfc3339_nano(at(1, 120_000_000)), "1970-01-01T00:00:01.12Z");
        assert_eq!(rfc3339_nano(at(1, 0)), "1970-01-01T00:00:01Z");
        assert_eq!(
            rfc3339_nano(at(1, 999_999_999)),
            "1970-01-01T00:00:01.999999999Z"
        );
    }
}

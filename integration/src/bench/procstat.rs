//! CPU time and memory of a running process, from `/proc`, and of a finished child, from
//! `/usr/bin/time` (or `getrusage(RUSAGE_CHILDREN)` when it is missing).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a live process (all its threads), in seconds.
pub fn cpu_secs(pid: i32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is field 3, utime 14, stime 15.
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / clk_tck())
}

/// A `kB` field of `/proc/PID/status` (`VmHWM`, `VmRSS`), in KiB.
pub fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Wall time, CPU time and peak RSS of a command run to completion.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub wall: f64,
    pub cpu: f64,
    pub max_rss_kib: u64,
    pub ok: bool,
}

fn children_rusage() -> (f64, u64) {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss as u64)
}

/// Runs `bin args` with its output in `log`, measured by `/usr/bin/time` when present. Bounded by
/// `timeout` (killed after it).
pub fn run_measured(bin: &Path, args: &[&str], log: &Path, timeout: Duration) -> Usage {
    let gnu_time = Path::new("/usr/bin/time");
    let tfile = log.with_extension("time");
    let f = std::fs::File::create(log).expect("log file");
    let mut cmd = if gnu_time.exists() {
        let mut c = Command::new(gnu_time);
        c.arg("-o")
            .arg(&tfile)
            .arg("-f")
            .arg("%e %U %S %M")
            .arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .env_remove("WALSHIP_CONFIG")
        .env_remove("LITESTREAM_CONFIG")
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("log file"))
        .stderr(f);
    let before = children_rusage();
    let t0 = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot run {}: {e}", bin.display());
            return Usage::default();
        }
    };
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if t0.elapsed() > timeout {
            eprintln!(
                "{} {args:?} still running after {timeout:?}: killed",
                bin.display()
            );
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = t0.elapsed().as_secs_f64();
    let ok = status.is_some_and(|s| s.success());
    if gnu_time.exists() {
        let text = std::fs::read_to_string(&tfile).unwrap_or_default();
        // The last line holds the numbers (earlier lines: "Command exited with non-zero status").
        let v: Vec<f64> = text
            .lines()
            .last()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [e, u, s, m] = v[..] {
            return Usage {
                wall: e,
                cpu: u + s,
                max_rss_kib: m as u64,
                ok,
            };
        }
    }
    // Fallback: RUSAGE_CHILDREN deltas. ru_maxrss is the maximum over all children so far.
    let after = children_rusage();
    Usage {
        wall,
        cpu: after.0 - before.0,
        max_rss_kib: after.1,
        ok,
    }
}

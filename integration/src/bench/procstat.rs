//! CPU time and memory of a running process, from `/proc`, and of a finished child, from
//! `walship-peak-rss` (a small parent, so a child's peak RSS is its own).

use std::path::Path;
use std::process::Stdio;
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

/// Runs `bin args` with its output in `log`, measured by `walship-peak-rss` (the command's own CPU
/// time and peak RSS, not this process's). Bounded by `timeout` (killed after it).
pub fn run_measured(bin: &Path, args: &[&str], log: &Path, timeout: Duration) -> Usage {
    let tfile = log.with_extension("time");
    let _ = std::fs::remove_file(&tfile);
    let f = std::fs::File::create(log).expect("log file");
    let mut cmd = walship_integration::peak_rss_command(bin, args, &tfile);
    cmd.env_remove("WALSHIP_CONFIG")
        .env_remove("LITESTREAM_CONFIG")
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("log file"))
        .stderr(f);
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
            // The command runs as the helper's child: killing the helper alone would leave it.
            kill_tree(child.id() as i32);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ok = status.is_some_and(|s| s.success());
    match walship_integration::read_peak_rss(&tfile) {
        Some(m) => Usage {
            wall: m.wall,
            cpu: m.cpu,
            max_rss_kib: m.max_rss_kib,
            ok,
        },
        // Killed at the timeout: no figures.
        None => Usage {
            wall: t0.elapsed().as_secs_f64(),
            ok,
            ..Usage::default()
        },
    }
}

/// Kills `pid` and its children (read from `/proc/PID/task/*/children`).
fn kill_tree(pid: i32) {
    let children = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|x| x.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    // SAFETY: kill(2) with a pid we read; a reused pid is the only risk, within milliseconds.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    for c in children {
        kill_tree(c);
    }
}

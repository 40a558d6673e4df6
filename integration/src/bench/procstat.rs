//! CPU time and memory of a running process, from `/proc`, and of a finished child, from
//! `walship-peak-rss` (a small parent, so a child's peak RSS is its own).

use std::collections::HashMap;
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

/// CPU a live process spends from [`CpuWindow::start`] on.
///
/// `/proc/PID/stat` counts in clock ticks (10 ms): a replicator using 3 ms of CPU a second reads,
/// over a 60 s run, to within about a tenth, more than the difference being measured. Each thread's
/// run time in `/proc/PID/task/*/schedstat` is in nanoseconds but is gone once the thread exits
/// (an idle blocking-pool thread does). So the window is summed per thread when every thread of its
/// start is still there at its end (threads born in between count whole), in ticks otherwise.
pub struct CpuWindow {
    pid: i32,
    ticks: Option<f64>,
    threads: Option<HashMap<i32, u64>>,
}

impl CpuWindow {
    pub fn start(pid: i32) -> CpuWindow {
        CpuWindow {
            pid,
            ticks: cpu_secs(pid),
            threads: thread_run_ns(pid),
        }
    }

    /// Seconds of CPU since the start; `None` once the process is gone.
    pub fn secs(&self) -> Option<f64> {
        let ticks = cpu_secs(self.pid)
            .zip(self.ticks)
            .map(|(now, then)| now - then);
        let exact = self
            .threads
            .as_ref()
            .zip(thread_run_ns(self.pid))
            .and_then(|(then, now)| window_ns(then, &now));
        match exact {
            Some(ns) => Some(ns as f64 / 1e9),
            None => {
                if ticks.is_some() {
                    eprintln!(
                        "  (process {}: a thread exited during the window; CPU read in clock ticks)",
                        self.pid
                    );
                }
                ticks
            }
        }
    }
}

/// Run time of each thread of `pid` (thread id -> ns), from `schedstat`.
fn thread_run_ns(pid: i32) -> Option<HashMap<i32, u64>> {
    let mut out = HashMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let t = t.ok()?;
        let Some(tid) = t.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A thread that exits between the listing and the read is left out; `window_ns` then
        // sees it missing at the end and gives up on the exact sum.
        let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        out.insert(tid, s.split_whitespace().next()?.parse().ok()?);
    }
    Some(out)
}

/// Run time spent between two per-thread readings; `None` when a thread of the first is gone
/// (or its count went back: a new thread under a reused id) and its time would be lost.
fn window_ns(then: &HashMap<i32, u64>, now: &HashMap<i32, u64>) -> Option<u64> {
    let mut sum = 0u64;
    for (tid, &ns) in now {
        let before = then.get(tid).copied().unwrap_or(0);
        sum += ns.checked_sub(before)?;
    }
    then.keys().all(|t| now.contains_key(t)).then_some(sum)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_summed_per_thread_only_while_no_thread_is_lost() {
        let m = |v: &[(i32, u64)]| v.iter().copied().collect::<HashMap<_, _>>();
        let then = m(&[(1, 100), (2, 1_000)]);
        // Thread 3 was born in the window: all of its time counts.
        assert_eq!(
            window_ns(&then, &m(&[(1, 150), (2, 1_500), (3, 70)])),
            Some(620)
        );
        // Thread 2 exited: its time in the window is unknown.
        assert_eq!(window_ns(&then, &m(&[(1, 150), (3, 70)])), None);
        // A count that went back is another thread under a reused id.
        assert_eq!(window_ns(&then, &m(&[(1, 150), (2, 10)])), None);
    }

    #[test]
    fn a_busy_process_is_read_finer_than_a_tick() {
        // One thread, busy: nothing exits during the window, so it is summed per thread.
        let mut child = std::process::Command::new("yes")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("yes");
        std::thread::sleep(Duration::from_millis(20));
        let w = CpuWindow::start(child.id() as i32);
        std::thread::sleep(Duration::from_millis(50));
        let s = w.secs();
        let _ = child.kill();
        let _ = child.wait();
        let s = s.expect("a live process");
        assert!(s > 0.005 && s < 1.0, "{s} s of CPU in a 50 ms window");
        // In clock ticks it would be a whole number of 10 ms (a nanosecond sum is one by chance
        // once in ten million).
        let ticks = s * 100.0;
        assert!((ticks - ticks.round()).abs() > 1e-6, "{s} s: read in ticks");
    }
}

//! `walship-peak-rss OUT CMD [ARGS...]`: runs CMD with this process's stdio and writes
//! `WALL_S USER_S SYS_S MAXRSS_KIB` to OUT; exits with CMD's status.
//!
//! Why a separate process: on Linux a child's `ru_maxrss` includes the peak RSS of the process
//! it was spawned from (exec folds the old address space's high-water mark into the new
//! process's), so a test process that once held 200 MiB reports every child as at least 200 MiB.
//! Spawned from this small process instead, the figure is the command's own (plus this
//! process's few MiB).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};
use std::time::Instant;

// The child is reaped by wait4 (for its rusage), not by std's Child::wait.
#[allow(clippy::zombie_processes)]
fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let [out, cmd, rest @ ..] = &args[..] else {
        eprintln!("usage: walship-peak-rss OUT CMD [ARGS...]");
        return ExitCode::from(2);
    };
    let t0 = Instant::now();
    let child = match Command::new(cmd).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "walship-peak-rss: cannot run {}: {e}",
                cmd.to_string_lossy()
            );
            return ExitCode::from(127);
        }
    };
    let mut status = 0;
    // SAFETY: wait4 on our own child with out-pointers to locals; std's Child is not waited.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    if r <= 0 {
        eprintln!(
            "walship-peak-rss: wait4: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(125);
    }
    let wall = t0.elapsed().as_secs_f64();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let line = format!(
        "{wall:.3} {:.3} {:.3} {}\n",
        tv(ru.ru_utime),
        tv(ru.ru_stime),
        ru.ru_maxrss
    );
    if let Err(e) = std::fs::write(out, line) {
        eprintln!("walship-peak-rss: write {}: {e}", out.to_string_lossy());
        return ExitCode::from(125);
    }
    let st = std::process::ExitStatus::from_raw(status);
    match (st.code(), st.signal()) {
        (Some(c), _) => ExitCode::from(c as u8),
        (None, Some(sig)) => ExitCode::from(128u8.wrapping_add(sig as u8)),
        _ => ExitCode::from(125),
    }
}

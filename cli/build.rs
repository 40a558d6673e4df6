//! Build metadata and link flags for the `walship` binary.

use std::process::Command;

fn main() {
    // The commit goes into `walship version` so a report names the exact code. A build from a
    // source tarball has no git: WALSHIP_COMMIT says it, else "unknown".
    println!("cargo:rerun-if-env-changed=WALSHIP_COMMIT");
    let commit = std::env::var("WALSHIP_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WALSHIP_COMMIT={commit}");
    // Rebuild the version string when HEAD moves (a commit, a checkout).
    // Only paths that exist: cargo reruns the script (and rebuilds the crate) at every build
    // while a watched path is missing (`packed-refs` often is).
    if let Some(dir) = git_dir() {
        for p in ["HEAD", "refs/heads", "packed-refs"] {
            let path = format!("{dir}/{p}");
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    // No `-z pack-relative-relocs`: its DT_RELR needs glibc >= 2.36 at run time, and the released
    // binary must start on glibc 2.31 (Debian 11, Ubuntu 20.04). Measured on the release binary,
    // the unpacked relocations cost about 1.3 MB resident (docs/release.md).
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn git_commit() -> Option<String> {
    git(&["rev-parse", "--short=12", "HEAD"])
}

fn git_dir() -> Option<String> {
    git(&["rev-parse", "--absolute-git-dir"])
}

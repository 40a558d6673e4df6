//! walship-sftp: a replica on an SFTP server (`type: sftp`, `sftp://user[:pass]@host[:port]/path`),
//! on russh + russh-sftp (pure Rust, async).
//!
//! Litestream v0.3.13 accepted any host key (a published advisory); walship verifies it by
//! default: a pinned `host-key`, a `known-hosts-path`, or the known_hosts files
//! `~/.ssh/known_hosts`, `/etc/walship/known_hosts`, `/etc/ssh/ssh_known_hosts` in that order.
//! `insecure-ignore-host-key: true` turns the check off and says so at every start.
//!
//! - [`SftpConfig`]: v0.3.13's keys plus `host-key`, `known-hosts-path`,
//!   `insecure-ignore-host-key`, `key-passphrase`, `operation-timeout`.
//! - [`SftpReplica`]: temp file + `posix-rename@openssh.com` for atomic writes, streamed uploads
//!   and downloads, recursive listings, reconnect after a dropped connection.

mod config;
mod conn;
mod hostkey;
mod store;

pub use config::SftpConfig;
pub use hostkey::{default_known_hosts, HostKeyPolicy};
pub use store::SftpReplica;
use walship_core::registry::{Backend, ReplicaSettings};
use walship_core::replica::DynReplica;
use walship_core::Result;

/// Builds an SFTP replica from its section; the private key is read now, the connection is
/// opened at first use.
pub fn open(settings: &ReplicaSettings) -> Result<DynReplica> {
    let cfg = SftpConfig::from_settings(settings, home_dir().as_deref())?;
    if cfg.host_key == HostKeyPolicy::Insecure {
        tracing::warn!(
            replica = %settings.name,
            target = %cfg.target(),
            "insecure-ignore-host-key is set: the SFTP server's host key is NOT verified, so \
             anyone who can intercept the connection can read and alter the backups; pin the \
             key with host-key instead"
        );
    }
    Ok(std::sync::Arc::new(SftpReplica::new(cfg)?))
}

/// The running user's home directory from the password database (as OpenSSH does: a service
/// may run with `$HOME` unset or pointing elsewhere), else `$HOME`.
fn home_dir() -> Option<std::path::PathBuf> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; 16 * 1024];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into our buffers; `out` is null or points at `pw`.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        )
    };
    if rc == 0 && !out.is_null() && !pw.pw_dir.is_null() {
        // SAFETY: pw_dir is a NUL-terminated string inside `buf`.
        let dir = unsafe { CStr::from_ptr(pw.pw_dir) };
        if !dir.to_bytes().is_empty() {
            return Some(std::ffi::OsStr::from_bytes(dir.to_bytes()).into());
        }
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(Into::into)
}

walship_core::inventory::submit! {
    Backend { kind: "sftp", schemes: &["sftp"], open }
}

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

/// Entry points for the fuzz targets in `fuzz/` (not an API): the parsers that read text a
/// user or an attacker controls.
#[doc(hidden)]
pub mod fuzzing {
    /// Looks up every spelling of a host in a known_hosts text, and reads it as pins.
    pub fn known_hosts(text: &str, host: &str, port: u16) {
        let key = russh::keys::PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF",
        )
        .expect("a valid fixed key");
        let _ = crate::hostkey::lookup(text, host, port, &key);
        let _ = crate::hostkey::host_pattern_name(host, port);
        let _ = crate::hostkey::parse_pins(text);
    }
}
use walship_core::registry::{Backend, OptionSpec, ReplicaSettings};
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

/// Every key of an sftp replica section besides `url` and `path` (README "SFTP").
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::text("host"),
    OptionSpec::text("user"),
    OptionSpec::text("password"),
    OptionSpec::text("key-path"),
    OptionSpec::text("key-passphrase"),
    OptionSpec::text("host-key"),
    OptionSpec::text("known-hosts-path"),
    OptionSpec::flag("insecure-ignore-host-key"),
    OptionSpec::duration("operation-timeout", "30s"),
];

walship_core::inventory::submit! {
    Backend { kind: "sftp", schemes: &["sftp"], options: OPTIONS, open }
}

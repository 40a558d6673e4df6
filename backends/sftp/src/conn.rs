//! One SSH connection with one SFTP channel: connect, verify the host key, log in, start the
//! SFTP subsystem; and the mapping of SSH/SFTP failures onto walship's error kinds (done once,
//! here, so the retry layer can tell a dropped connection from a refused login).

use crate::config::SftpConfig;
use crate::hostkey::{self, HostKeyPolicy};
use russh::client::{self, AuthResult};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::StatusCode;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use walship_core::{Error, ErrorKind, Result};

/// Time allowed for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the SSH handshake, login and SFTP start, together.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Keepalives find a dead server on an idle connection (3 missed ⇒ closed, reconnect next time).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A live connection. Requests are pipelined on its one SFTP channel, so replicas share it.
pub(crate) struct Conn {
    ssh: client::Handle<Client>,
    pub sftp: Arc<RawSftpSession>,
    /// The server offers `posix-rename@openssh.com` (atomic replace); plain SFTPv3 rename fails
    /// on an existing target.
    pub posix_rename: bool,
    /// The server offers `fsync@openssh.com`: objects are on its disk before they are renamed.
    pub fsync: bool,
}

impl Conn {
    pub fn is_closed(&self) -> bool {
        self.ssh.is_closed()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.sftp.close_session();
    }
}

/// The russh handler: judges the host key and remembers why it refused one.
struct Client {
    policy: Arc<HostKeyPolicy>,
    host: String,
    port: u16,
    refused: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKey) -> Result<bool, Self::Error> {
        match hostkey::verify(&self.policy, &self.host, self.port, key) {
            Ok(()) => Ok(true),
            Err(why) => {
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                Ok(false)
            }
        }
    }
}

/// Reads and decrypts the private key named by `key-path` (at open time, so a bad key fails
/// the command before anything starts).
pub(crate) fn load_key(path: &Path, passphrase: Option<&str>) -> Result<Arc<PrivateKey>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::Config,
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        };
        Error::new(
            kind,
            format!("key-path {shown}: cannot read the private key: {e}"),
        )
        .retryable(false)
    })?;
    russh::keys::decode_secret_key(&text, passphrase)
        .map(Arc::new)
        .map_err(|e| {
            let msg = match (&e, passphrase) {
                (russh::keys::Error::KeyIsEncrypted, None) => {
                    format!("key-path {shown}: the private key is encrypted; set key-passphrase")
                }
                (_, Some(_)) => format!(
                    "key-path {shown}: cannot decrypt the private key (wrong key-passphrase?): {e}"
                ),
                (_, None) => format!("key-path {shown}: not a usable private key: {e}"),
            };
            Error::config(msg)
        })
}

/// Opens a connection: TCP, SSH handshake with host-key check, login (key first, then
/// password), SFTP subsystem.
pub(crate) async fn connect(cfg: &SftpConfig, key: Option<&Arc<PrivateKey>>) -> Result<Conn> {
    let addr = cfg.addr();
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await
    .map_err(|_| Error::transient(format!("sftp {addr}: connect timed out")))?
    .map_err(|e| Error::transient(format!("sftp {addr}: connect: {e}")).with_source(e))?;
    let _ = tcp.set_nodelay(true);
    let refused = Arc::new(Mutex::new(None));
    let handler = Client {
        policy: Arc::new(cfg.host_key.clone()),
        host: cfg.host.clone(),
        port: cfg.port,
        refused: refused.clone(),
    };
    let ssh_cfg = Arc::new(client::Config {
        keepalive_interval: Some(KEEPALIVE),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    });
    let login = async {
        let mut ssh = client::connect_stream(ssh_cfg, tcp, handler)
            .await
            .map_err(|e| {
                match refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    // Not retryable: a refused host key stays refused until a human acts.
                    Some(why) => {
                        Error::new(ErrorKind::PermissionDenied, format!("sftp {addr}: {why}"))
                    }
                    None => map_ssh(&addr, "handshake", e),
                }
            })?;
        login(cfg, &mut ssh, key).await?;
        let ch = ssh
            .channel_open_session()
            .await
            .map_err(|e| map_ssh(&addr, "open session", e))?;
        ch.request_subsystem(true, "sftp")
            .await
            .map_err(|e| map_ssh(&addr, "start sftp subsystem", e))?;
        let sftp_cfg = russh_sftp::client::Config {
            request_timeout_secs: cfg.operation_timeout.as_secs().max(1),
            ..Default::default()
        };
        let sftp = RawSftpSession::new_with_config(ch.into_stream(), sftp_cfg);
        let version = sftp
            .init()
            .await
            .map_err(|e| map_sftp(&format!("sftp {addr}: init"), e).0)?;
        let has = |ext: &str| version.extensions.get(ext).is_some_and(|v| v == "1");
        Ok(Conn {
            posix_rename: has("posix-rename@openssh.com"),
            fsync: has("fsync@openssh.com"),
            ssh,
            sftp: Arc::new(sftp),
        })
    };
    tokio::time::timeout(LOGIN_TIMEOUT, login)
        .await
        .map_err(|_| Error::transient(format!("sftp {addr}: login timed out")))?
}

async fn login(
    cfg: &SftpConfig,
    ssh: &mut client::Handle<Client>,
    key: Option<&Arc<PrivateKey>>,
) -> Result<()> {
    let addr = cfg.addr();
    let mut tried = Vec::new();
    let mut offered = String::new();
    let mut note = |r: &AuthResult| {
        if let AuthResult::Failure {
            remaining_methods, ..
        } = r
        {
            let m: Vec<&str> = remaining_methods.iter().map(|m| m.into()).collect();
            offered = m.join(",");
        }
    };
    if let (Some(key), Some(path)) = (key, &cfg.key_path) {
        let hash = if key.algorithm().is_rsa() {
            ssh.best_supported_rsa_hash().await.ok().flatten().flatten()
        } else {
            None
        };
        let r = ssh
            .authenticate_publickey(&cfg.user, PrivateKeyWithHashAlg::new(key.clone(), hash))
            .await
            .map_err(|e| map_ssh(&addr, "public key login", e))?;
        if r.success() {
            return Ok(());
        }
        note(&r);
        tried.push(format!("key {}", path.display()));
    }
    if let Some(pw) = &cfg.password {
        let r = ssh
            .authenticate_password(&cfg.user, pw)
            .await
            .map_err(|e| map_ssh(&addr, "password login", e))?;
        if r.success() {
            return Ok(());
        }
        note(&r);
        tried.push("password".to_string());
    }
    let offered = if offered.is_empty() {
        String::new()
    } else {
        format!("; the server accepts: {offered}")
    };
    Err(Error::new(
        ErrorKind::PermissionDenied,
        format!(
            "sftp {addr}: login as {:?} refused (tried {}){offered}",
            cfg.user,
            tried.join(", ")
        ),
    ))
}

/// An SSH-level failure during connect/login: transient unless it is about keys or algorithms.
fn map_ssh(addr: &str, what: &str, e: russh::Error) -> Error {
    use russh::Error as E;
    let kind = match &e {
        E::NoCommonAlgo { .. } | E::UnknownAlgo | E::Version | E::NoAuthMethod => ErrorKind::Config,
        E::NotAuthenticated | E::UnknownKey | E::KeyChanged { .. } => ErrorKind::PermissionDenied,
        E::Keys(_) => ErrorKind::Config,
        _ => ErrorKind::Transient,
    };
    Error::new(kind, format!("sftp {addr}: {what}: {e}")).with_source(e)
}

/// Maps an SFTP request failure; the flag says whether the connection must be dropped
/// (anything but a status answer from the server means the channel can no longer be trusted).
pub(crate) fn map_sftp(what: &str, e: SftpError) -> (Error, bool) {
    match &e {
        SftpError::Status(s) => {
            let kind = match s.status_code {
                StatusCode::NoSuchFile => ErrorKind::NotFound,
                StatusCode::PermissionDenied => ErrorKind::PermissionDenied,
                StatusCode::NoConnection | StatusCode::ConnectionLost => ErrorKind::Transient,
                StatusCode::OpUnsupported | StatusCode::BadMessage => ErrorKind::Invalid,
                _ => ErrorKind::Other,
            };
            let lost = kind == ErrorKind::Transient;
            let detail = if s.error_message.is_empty() {
                s.status_code.to_string()
            } else {
                s.error_message.clone()
            };
            (Error::new(kind, format!("{what}: {detail}")), lost)
        }
        SftpError::Timeout => (
            Error::transient(format!("{what}: no answer from the server in time")),
            true,
        ),
        _ => (
            Error::transient(format!("{what}: connection lost ({e})")),
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh_sftp::protocol::Status;

    fn status(code: StatusCode, msg: &str) -> SftpError {
        SftpError::Status(Status {
            id: 1,
            status_code: code,
            error_message: msg.into(),
            language_tag: "en".into(),
        })
    }

    #[test]
    fn sftp_error_kinds() {
        let cases = [
            (
                status(StatusCode::NoSuchFile, "No such file"),
                ErrorKind::NotFound,
                false,
                false,
            ),
            (
                status(StatusCode::PermissionDenied, "Permission denied"),
                ErrorKind::PermissionDenied,
                false,
                false,
            ),
            (
                status(StatusCode::Failure, "Failure"),
                ErrorKind::Other,
                false,
                false,
            ),
            (
                status(StatusCode::ConnectionLost, ""),
                ErrorKind::Transient,
                true,
                true,
            ),
            (SftpError::Timeout, ErrorKind::Transient, true, true),
            (
                SftpError::UnexpectedBehavior("session closed".into()),
                ErrorKind::Transient,
                true,
                true,
            ),
            (
                SftpError::IO("broken pipe".into()),
                ErrorKind::Transient,
                true,
                true,
            ),
        ];
        for (e, kind, retry, lost) in cases {
            let shown = e.to_string();
            let (err, drop) = map_sftp("open /x", e);
            assert_eq!(err.kind(), kind, "{shown}");
            assert_eq!(err.is_retryable(), retry, "{shown}");
            assert_eq!(drop, lost, "{shown}");
            assert!(err.to_string().starts_with("open /x: "), "{err}");
        }
    }

    #[test]
    fn key_file_errors_are_clear_and_permanent() {
        let d = tempfile::tempdir().unwrap();
        let e = load_key(&d.path().join("nope"), None).unwrap_err();
        assert!(
            e.to_string().contains("nope: cannot read the private key"),
            "{e}"
        );
        assert!(!e.is_retryable());
        let junk = d.path().join("junk");
        std::fs::write(&junk, "not a key").unwrap();
        let e = load_key(&junk, None).unwrap_err();
        assert!(e.to_string().contains("not a usable private key"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Config);
    }
}

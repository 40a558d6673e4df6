//! Optional age encryption of stored objects (format §2): `age(lz4(payload))`, binary age v1,
//! X25519 keys only, object names unchanged.
//!
//! Why these rules:
//! - Encrypt iff recipients are configured, decrypt iff identities are, exactly as v0.3.13 does,
//!   so a replica written by either tool is read by the other with the same `age:` section.
//! - On read the object itself says whether it is encrypted (the age header is unambiguous next to
//!   an LZ4 frame), so a replica that switched encryption on halfway still restores, and a missing
//!   identity is reported as such instead of as "corrupt LZ4".
//! - Both directions stream with bounded memory: age encrypts 64 KiB chunks, and the encryptor is
//!   wrapped as a pull-based `Read` so a `put` source can be rebuilt from its start on a retry.
//! - Identities are secrets: they never reach `Debug`, logs or error messages (messages name the
//!   config entry and line instead).

use crate::error::{Error, ErrorKind, Result};
use age::x25519;

/// The age crate itself, so tests and tools generate keys with exactly the version core reads.
pub use age;
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// First bytes of every binary age v1 file.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// A replica's age keys. The default value neither encrypts nor decrypts.
#[derive(Clone, Default)]
pub struct Age {
    recipients: Arc<Vec<x25519::Recipient>>,
    identities: Arc<Vec<x25519::Identity>>,
}

impl fmt::Debug for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Age")
            .field("recipients", &self.recipients)
            .field(
                "identities",
                &format_args!(
                    "{}",
                    if self.identities.is_empty() {
                        "[]"
                    } else {
                        "***"
                    }
                ),
            )
            .finish()
    }
}

/// Key lines of one config string: v0.3.13 (Go age `ParseIdentities`/`ParseRecipients`) reads
/// each string as a file, one key per line, skipping blank lines and `#` comments. Surrounding
/// whitespace is tolerated (YAML block scalars and CRLF files carry it).
fn key_lines(s: &str) -> impl Iterator<Item = (usize, &str)> {
    s.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Parses every key of `entries`; a string without any key is an error, as in Go age.
fn parse_keys<T: FromStr<Err = &'static str>>(
    entries: &[String],
    what: &str,
    kind: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for (n, s) in entries.iter().enumerate() {
        let mut found = 0;
        for (line, l) in key_lines(s) {
            // The message names the entry and line, never the text: it may be a secret key.
            let key = l.parse::<T>().map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("age.{what}[{n}], line {line}: malformed {kind} ({e})"),
                )
            })?;
            out.push(key);
            found += 1;
        }
        if found == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                format!("age.{what}[{n}]: no {kind} found"),
            ));
        }
    }
    Ok(out)
}

impl Age {
    /// Parses a replica's `age.identities` and `age.recipients` (README "Encryption": each string may hold
    /// several keys, one per line, with blank lines and `#` comments).
    pub fn parse(identities: &[String], recipients: &[String]) -> Result<Age> {
        Ok(Age {
            identities: Arc::new(parse_keys(identities, "identities", "secret key")?),
            recipients: Arc::new(parse_keys(recipients, "recipients", "recipient")?),
        })
    }

    /// Whether uploads are encrypted.
    pub fn encrypts(&self) -> bool {
        !self.recipients.is_empty()
    }

    /// Whether encrypted objects can be read.
    pub fn decrypts(&self) -> bool {
        !self.identities.is_empty()
    }

    /// Wraps an (already compressed) stream so that reading it yields the stored bytes:
    /// the stream itself when no recipients are configured, else its age encryption.
    pub fn encrypt<R: Read + Send + 'static>(&self, inner: R) -> io::Result<Box<dyn Read + Send>> {
        if !self.encrypts() {
            return Ok(Box::new(inner));
        }
        Ok(Box::new(EncryptReader::new(inner, &self.recipients)?))
    }

    /// Wraps a stored object so that reading it yields its compressed payload. Decrypts when the
    /// object starts with the age header; fails before any payload byte when that is impossible
    /// (no identity configured, or none of them matches). `key` only names the object in errors.
    pub fn decrypt<R: Read + Send + 'static>(
        &self,
        key: &str,
        mut inner: R,
    ) -> Result<Box<dyn Read + Send>> {
        let mut head = Vec::with_capacity(AGE_MAGIC.len());
        (&mut inner)
            .take(AGE_MAGIC.len() as u64)
            .read_to_end(&mut head)
            .map_err(|e| Error::io(format!("object {key}: cannot read"), e))?;
        let whole = io::Cursor::new(head).chain(inner);
        if whole.get_ref().0.get_ref().as_slice() != AGE_MAGIC {
            return Ok(Box::new(whole));
        }
        if !self.decrypts() {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("object {key} is age-encrypted but the replica has no age identities configured (age.identities in the config file; a replica URL cannot carry them)"),
            ));
        }
        let dec = age::Decryptor::new_buffered(io::BufReader::with_capacity(CHUNK, whole))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Corrupt,
                    format!("object {key}: invalid age header ({e})"),
                )
            })?;
        let ids = self.identities.iter().map(|i| i as &dyn age::Identity);
        match dec.decrypt(ids) {
            Ok(r) => Ok(Box::new(DecryptErrors(r))),
            Err(age::DecryptError::NoMatchingKeys) => Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("object {key}: none of the replica's age identities can decrypt it (wrong identity?)"),
            )),
            Err(e) => Err(Error::new(
                ErrorKind::Corrupt,
                format!("object {key}: cannot decrypt ({e})"),
            )),
        }
    }
}

/// age reports a failed chunk authentication as `InvalidData` already; a truncated file as
/// `UnexpectedEof`. Both mean the object is corrupt, which callers classify by `InvalidData`.
struct DecryptErrors<R>(R);

impl<R: Read> Read for DecryptErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                io::Error::new(io::ErrorKind::InvalidData, format!("age: {e}"))
            }
            _ => e,
        })
    }
}

/// Where age's `StreamWriter` puts ciphertext; the reader drains it. Shared because the writer
/// owns its output and offers no access to it before `finish`.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    fn take_into(&self, out: &mut Vec<u8>) {
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *b, out);
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const CHUNK: usize = 64 * 1024;

/// Encrypts everything read from `inner` on demand: each `read` pulls at most one 64 KiB chunk
/// through the encryptor, so memory stays bounded whatever the object size, and no thread is
/// needed.
struct EncryptReader<R> {
    inner: R,
    writer: Option<age::stream::StreamWriter<Shared>>,
    shared: Shared,
    out: Vec<u8>,
    out_pos: usize,
    chunk: Vec<u8>,
}

impl<R: Read> EncryptReader<R> {
    fn new(inner: R, recipients: &[x25519::Recipient]) -> io::Result<Self> {
        let enc =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| io::Error::other(format!("age: {e}")))?;
        let shared = Shared::default();
        let writer = enc.wrap_output(shared.clone())?;
        Ok(EncryptReader {
            inner,
            writer: Some(writer),
            shared,
            out: Vec::new(),
            out_pos: 0,
            chunk: vec![0; CHUNK],
        })
    }

    fn fill(&mut self) -> io::Result<()> {
        while self.out_pos >= self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            // Ciphertext already produced (the header, or chunks) goes first.
            self.shared.take_into(&mut self.out);
            if !self.out.is_empty() {
                return Ok(());
            }
            let Some(w) = self.writer.as_mut() else {
                return Ok(());
            };
            let n = loop {
                match self.inner.read(&mut self.chunk) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                self.writer.take().expect("checked above").finish()?;
            } else {
                w.write_all(&self.chunk[..n])?;
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for EncryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill()?;
        let avail = &self.out[self.out_pos..];
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn keypair() -> (String, String) {
        let id = x25519::Identity::generate();
        (
            id.to_string().expose_secret().to_string(),
            id.to_public().to_string(),
        )
    }

    fn both(id: &str, rcpt: &str) -> Age {
        Age::parse(&[id.to_string()], &[rcpt.to_string()]).unwrap()
    }

    fn encrypt_all(age: &Age, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        age.encrypt(io::Cursor::new(data.to_vec()))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn decrypt_all(age: &Age, data: Vec<u8>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        age.decrypt("k", io::Cursor::new(data))?
            .read_to_end(&mut out)
            .map_err(|e| Error::io("read", e))?;
        Ok(out)
    }

    #[test]
    fn roundtrip_sizes_with_one_byte_reads() {
        let (id, rcpt) = keypair();
        let age = both(&id, &rcpt);
        for size in [0usize, 1, 65535, 65536, 65537, 3 * 65536 + 5, 1 << 20] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let enc = encrypt_all(&age, &data);
            assert!(enc.starts_with(AGE_MAGIC), "size {size}");
            assert_eq!(decrypt_all(&age, enc.clone()).unwrap(), data, "size {size}");
            // A consumer reading one byte at a time sees the same stream.
            let mut r = age.encrypt(io::Cursor::new(data.clone())).unwrap();
            let mut small = Vec::new();
            let mut b = [0u8; 1];
            while r.read(&mut b).unwrap() == 1 {
                small.push(b[0]);
            }
            // (Lengths differ between runs: age adds random "grease" stanzas to the header.)
            assert!(small.starts_with(AGE_MAGIC));
            assert_eq!(decrypt_all(&age, small).unwrap(), data);
        }
    }

    #[test]
    fn encryption_is_streamed_not_buffered() {
        // 64 MiB of input, produced lazily: the adapter must never hold more than a few chunks.
        struct Gen(u64);
        impl Read for Gen {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = (buf.len() as u64).min(self.0) as usize;
                buf[..n].fill(7);
                self.0 -= n as u64;
                Ok(n)
            }
        }
        let (_, rcpt) = keypair();
        let age = Age::parse(&[], &[rcpt]).unwrap();
        let mut r = EncryptReader::new(Gen(64 << 20), &age.recipients).unwrap();
        let mut buf = vec![0u8; 8192];
        let mut total = 0u64;
        let mut peak = 0usize;
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
            peak = peak.max(r.out.capacity());
        }
        assert!(total > 64 << 20);
        assert!(peak <= 4 * CHUNK, "buffered {peak} bytes");
    }

    #[test]
    fn plain_objects_pass_through() {
        let (id, rcpt) = keypair();
        let lz4 = crate::codec::compress(b"payload");
        for age in [Age::default(), both(&id, &rcpt)] {
            assert_eq!(decrypt_all(&age, lz4.clone()).unwrap(), lz4);
            assert_eq!(decrypt_all(&age, b"ab".to_vec()).unwrap(), b"ab");
            assert_eq!(decrypt_all(&age, Vec::new()).unwrap(), b"");
        }
        // Without recipients nothing is encrypted.
        let only_id = Age::parse(&[id], &[]).unwrap();
        assert_eq!(encrypt_all(&only_id, b"x"), b"x");
    }

    #[test]
    fn missing_or_wrong_identity_names_the_object() {
        let (id, rcpt) = keypair();
        let (other, _) = keypair();
        let enc = encrypt_all(
            &Age::parse(&[], std::slice::from_ref(&rcpt)).unwrap(),
            b"secret",
        );
        let e = decrypt_all(&Age::parse(&[], &[rcpt]).unwrap(), enc.clone()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("object k is age-encrypted"), "{e}");
        let e = decrypt_all(
            &Age::parse(std::slice::from_ref(&other), &[]).unwrap(),
            enc.clone(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("object k: none of"), "{e}");
        assert!(!e.to_string().contains(&other));
        let ok = Age::parse(&[format!("{other}\n{id}")], &[]).unwrap();
        assert_eq!(decrypt_all(&ok, enc).unwrap(), b"secret");
    }

    #[test]
    fn tampering_and_truncation_are_corruption() {
        let (id, rcpt) = keypair();
        let age = both(&id, &rcpt);
        let data = vec![5u8; 200_000];
        let enc = encrypt_all(&age, &data);
        let mut flipped = enc.clone();
        let last = flipped.len() - 10;
        flipped[last] ^= 1;
        let mut cut = enc.clone();
        cut.truncate(enc.len() - 70_000);
        for bad in [flipped, cut] {
            let mut out = Vec::new();
            let err = age
                .decrypt("k", io::Cursor::new(bad))
                .unwrap()
                .read_to_end(&mut out)
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        }
        let mut header = enc.clone();
        header[30] ^= 1;
        let e = decrypt_all(&age, header).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::PermissionDenied),
            "{e}"
        );
    }

    #[test]
    fn key_strings_hold_several_keys_comments_and_blank_lines() {
        let (id1, r1) = keypair();
        let (id2, r2) = keypair();
        let ids = [
            format!("# created: 2024-01-01\n# public key: {r1}\n{id1}\r\n\n  {id2}  \n"),
            id1.clone(),
        ];
        let rcpts = [format!("{r1}\n# backup key\n{r2}\n")];
        let age = Age::parse(&ids, &rcpts).unwrap();
        assert_eq!(age.identities.len(), 3);
        assert_eq!(age.recipients.len(), 2);
        // Either identity decrypts what was encrypted to both recipients.
        let enc = encrypt_all(&age, b"x");
        for id in [&id1, &id2] {
            let a = Age::parse(std::slice::from_ref(id), &[]).unwrap();
            assert_eq!(decrypt_all(&a, enc.clone()).unwrap(), b"x");
        }
    }

    #[test]
    fn bad_keys_are_config_errors_without_the_secret() {
        let (id, rcpt) = keypair();
        let mut broken = id.clone();
        broken.pop();
        broken.push(if id.ends_with('Q') { 'P' } else { 'Q' });
        let e = Age::parse(&[format!("# c\n{broken}")], &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.to_string()
                .contains("age.identities[0], line 2: malformed secret key"),
            "{e}"
        );
        assert!(!e.to_string().contains(&broken[16..]), "{e}");
        // A recipient where an identity belongs, and the reverse.
        assert!(Age::parse(std::slice::from_ref(&rcpt), &[]).is_err());
        let e = Age::parse(&[], &[String::new(), id.clone()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("age.recipients[0]: no recipient found"),
            "{e}"
        );
        let e = Age::parse(&[], std::slice::from_ref(&id)).unwrap_err();
        assert!(
            e.to_string()
                .contains("age.recipients[0], line 1: malformed recipient"),
            "{e}"
        );
        assert!(!e.to_string().contains(&id[16..]), "{e}");
    }

    #[test]
    fn debug_never_prints_identities() {
        let (id, rcpt) = keypair();
        let d = format!("{:?}", both(&id, &rcpt));
        assert!(!d.contains(&id) && !d.contains(&id[15..]), "{d}");
        assert!(d.contains("***") && d.contains(&rcpt), "{d}");
        assert_eq!(
            format!("{:?}", Age::default()),
            "Age { recipients: [], identities: [] }"
        );
    }
}

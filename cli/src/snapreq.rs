//! `walship snapshot DB_PATH` through a running `replicate`.
//!
//! The running process holds the database's instance lock, so `walship snapshot` cannot open the
//! database itself; it asks instead. The request is a file in the meta directory (the one place
//! both processes already share, with the database owner's permissions), and SIGUSR1 tells the
//! holder to look. The holder hands the request to every replica's shipper, which ships its WAL
//! and takes the snapshot between its own syncs, and writes the answers next to the request.
//! A signal costs nothing while idle (no socket, no polling), and the lock file says whether its
//! holder takes requests: SIGUSR1 would kill any other process.

use anyhow::{anyhow, bail, Result};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use walship_core::meta::{LockHolder, MetaDir};
use walship_core::monitor::{Answer, Running};

/// How long a request may wait before the holder takes it: SIGUSR1 is handled at once, so a
/// request still there after this was never seen (the holder is stuck or not a replicate).
const TAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the asker looks for the answer.
const POLL: Duration = Duration::from_millis(100);
/// Answers older than this were abandoned by their asker.
const STALE_ANSWER: Duration = Duration::from_secs(3600);

/// What a request file asks for: its content (empty for a snapshot, as older walships wrote).
pub const VERIFY: &str = "verify";

/// Asks the replicate holding `meta`'s lock for a snapshot on every replica of `db`, waits for
/// the answers and logs them. Returns the exit code.
pub async fn ask(db: &Path, meta: &MetaDir, holder: &LockHolder) -> Result<i32> {
    let text = ask_raw(db, meta, holder, "").await?;
    let answers = decode(&text);
    if answers.is_empty() {
        tracing::error!(db = %db.display(), "the running replicate has no replica for this database");
        return Ok(1);
    }
    let mut code = 0;
    for (replica, a) in answers {
        match a {
            Ok(pos) => {
                tracing::info!(db = %db.display(), replica = %replica, position = %pos, "snapshot written")
            }
            Err(e) => {
                tracing::error!(db = %db.display(), replica = %replica, error = %e, "snapshot failed");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// Leaves request `kind` for the replicate holding `meta`'s lock, signals it and waits for its
/// answer file; returns the answer's text.
pub async fn ask_raw(db: &Path, meta: &MetaDir, holder: &LockHolder, kind: &str) -> Result<String> {
    let what = if kind == VERIFY { "verify" } else { "snapshot" };
    let pid = match holder.pid {
        Some(pid) if holder.takes_requests => pid,
        Some(pid) => bail!(
            "database {} is held by process {pid}, which does not take {what} requests (replicate -once, walship snapshot or an older walship); wait for it to finish, or stop it",
            db.display()
        ),
        None => bail!(
            "database {} is held by a process that does not name itself in {}",
            db.display(),
            meta.lock_file().display()
        ),
    };
    let id = request_id();
    let req = meta.snapshot_request(&id);
    let resp = meta.snapshot_response(&id);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&req)
        .and_then(|mut f| f.write_all(kind.as_bytes()))
        .map_err(|e| anyhow!("cannot write {what} request {}: {e}", req.display()))?;
    meta.own_file(&req);
    // SAFETY: kill(2) with a plain signal number; no memory is shared.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) } != 0 {
        let e = std::io::Error::last_os_error();
        let _ = std::fs::remove_file(&req);
        bail!(
            "cannot signal replicate (pid {pid}) for database {}: {e} (run as the service's user or root)",
            db.display()
        );
    }
    tracing::info!(db = %db.display(), pid, "{what} requested from the running replicate");
    let asked = Instant::now();
    let text = loop {
        tokio::time::sleep(POLL).await;
        match std::fs::read_to_string(&resp) {
            Ok(t) => break t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("cannot read the answer {}: {e}", resp.display()),
        }
        if walship_core::local::lock_held(&meta.lock_file()) == Some(false) {
            let _ = std::fs::remove_file(&req);
            bail!(
                "replicate (pid {pid}) stopped before it answered the snapshot request for {}",
                db.display()
            );
        }
        if asked.elapsed() > TAKE_TIMEOUT && req.exists() {
            let _ = std::fs::remove_file(&req);
            bail!(
                "replicate (pid {pid}) did not take the snapshot request for {} within {}s",
                db.display(),
                TAKE_TIMEOUT.as_secs()
            );
        }
    };
    let _ = std::fs::remove_file(&resp);
    Ok(text)
}

/// Unique per asker and moment; only `[0-9-]`, which the meta directory's name check accepts.
fn request_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

/// The holder's side, on SIGUSR1: takes every request waiting for this database and answers
/// each in the background (a snapshot of a large database may take minutes; the signal loop
/// must not wait for it).
pub fn answer(running: &Running) {
    let meta = running.db.meta().clone();
    meta.remove_stale_responses(STALE_ANSWER);
    for id in meta.pending_snapshot_requests() {
        let kind = std::fs::read_to_string(meta.snapshot_request(&id)).unwrap_or_default();
        // Removing the request claims it; one that is gone was withdrawn by its asker.
        if std::fs::remove_file(meta.snapshot_request(&id)).is_err() {
            continue;
        }
        let db = running.db.path().display().to_string();
        let verify = kind.trim() == VERIFY;
        let what = if verify { "restore drill" } else { "snapshot" };
        tracing::info!(db = %db, request = %id, "{what} requested");
        let requester = running.requester();
        let meta = meta.clone();
        tokio::spawn(async move {
            let text = if verify {
                crate::drill::encode(&requester.verify_all().await)
            } else {
                encode(&requester.snapshot_all().await)
            };
            if let Err(e) = write_answer(&meta, &id, &text) {
                tracing::error!(db = %db, request = %id, error = %e, "cannot write the {what} answer");
            }
        });
    }
}

/// Written whole under another name, then renamed: the asker never reads half an answer.
fn write_answer(meta: &MetaDir, id: &str, text: &str) -> std::io::Result<()> {
    let resp = meta.snapshot_response(id);
    let mut part = resp.clone().into_os_string();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let mut f = std::fs::File::create(&part)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    meta.own_file(&part);
    std::fs::rename(&part, &resp)
}

/// One line per replica: `ok<TAB>name<TAB>generation/index:offset` or `error<TAB>name<TAB>why`.
fn encode(answers: &[(String, Answer)]) -> String {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    answers
        .iter()
        .map(|(name, a)| match a {
            Ok(pos) => format!(
                "ok\t{}\t{}/{}:{}\n",
                clean(name),
                pos.generation,
                pos.index,
                pos.offset
            ),
            Err(e) => format!("error\t{}\t{}\n", clean(name), clean(e)),
        })
        .collect()
}

fn decode(text: &str) -> Vec<(String, Answer)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let (kind, name, rest) = (f.next()?, f.next()?, f.next()?);
            let a = match kind {
                "ok" => {
                    let (generation, at) = rest.split_once('/')?;
                    let (index, offset) = at.split_once(':')?;
                    Ok(walship_core::layout::Pos::new(
                        generation.to_string(),
                        index.parse().ok()?,
                        offset.parse().ok()?,
                    ))
                }
                _ => Err(rest.to_string()),
            };
            Some((name.to_string(), a))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_core::layout::Pos;

    #[test]
    fn answers_survive_the_file() {
        let answers = vec![
            (
                "s3".to_string(),
                Ok(Pos::new("0123456789abcdef".to_string(), 7, 4152)),
            ),
            (
                "with\ttab".to_string(),
                Err("put failed:\nconnection refused".to_string()),
            ),
        ];
        let back = decode(&encode(&answers));
        assert_eq!(back[0], answers[0]);
        assert_eq!(back[1].0, "with tab");
        assert_eq!(back[1].1, Err("put failed: connection refused".to_string()));
    }

    #[test]
    fn a_damaged_answer_is_not_a_success() {
        assert!(decode("ok\ts3\tnot-a-position\n").is_empty());
        assert!(decode("garbage").is_empty());
    }

    #[test]
    fn request_ids_are_names_the_holder_accepts() {
        let d = tempfile::tempdir().unwrap();
        let m = MetaDir::new(d.path().to_path_buf());
        let id = request_id();
        std::fs::write(m.snapshot_request(&id), "").unwrap();
        assert_eq!(m.pending_snapshot_requests(), vec![id]);
    }
}

//! Restore execution: download, decode, verify, apply, rename. Nothing is left behind on failure
//! and nothing is ever written at the output path except the finished database.

use crate::codec;
use crate::crypt::Age;
use crate::error::{Error, ErrorKind, Result};
use crate::listing::SegmentInfo;
use crate::plan::Plan;
use crate::replica::Replica;
use crate::wal::{self, WalHeader, HEADER_SIZE};
use futures::StreamExt;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::io::SyncIoBridge;

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Streams the decoded payload of `key` (age-decrypted when encrypted, then LZ4-decoded) into
/// `out`, named `dest` in messages; returns the decoded length.
///
/// A failure says which side failed, in the user's words: the local file that could not be
/// written (a full disk), the object that is corrupt, or the object that could not be read.
pub async fn download_decoded<W: Write + Send + 'static>(
    replica: Arc<dyn Replica>,
    age: &Age,
    key: String,
    dest: &str,
    out: W,
) -> Result<(u64, W)> {
    let reader = replica.get(&key).await?;
    let handle = tokio::runtime::Handle::current();
    decode_into(age, key, dest, out, move || {
        let _guard = handle.enter();
        SyncIoBridge::new(reader)
    })
    .await
}

/// Decodes a stored object already fetched into memory (see [`download_index`]) into `out`.
async fn decode_fetched<W: Write + Send + 'static>(
    age: &Age,
    key: String,
    dest: &str,
    out: W,
    body: bytes::Bytes,
) -> Result<(u64, W)> {
    decode_into(age, key, dest, out, move || std::io::Cursor::new(body)).await
}

/// Decrypts and LZ4-decodes the stored bytes `source` opens (on the blocking pool) into `out`.
async fn decode_into<W, R, F>(
    age: &Age,
    key: String,
    dest: &str,
    out: W,
    source: F,
) -> Result<(u64, W)>
where
    W: Write + Send + 'static,
    R: std::io::Read + Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let age = age.clone();
    let dest = dest.to_string();
    tokio::task::spawn_blocking(move || {
        let mut dec = codec::decoder(age.decrypt(&key, source())?);
        let mut out = Tracked {
            inner: out,
            failed: false,
        };
        match std::io::copy(&mut dec, &mut out) {
            Ok(n) => Ok((n, out.inner)),
            Err(e) if out.failed => Err(Error::io(format!("cannot write {dest}"), e)),
            Err(e) => Err(read_error(&key, e)),
        }
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Other, format!("decode task failed: {e}")))?
}

/// A writer that remembers whether a write failed, so a copy's error can be told apart from a
/// read's.
struct Tracked<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

/// Names what went wrong reading an object: bytes that do not decode are corruption (with the
/// decoder's jargon translated), anything else is the transfer.
fn read_error(key: &str, e: std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::UnexpectedEof => Error::corrupt(format!(
            "object {key} is corrupt: it ends before its LZ4 frame does (truncated)"
        )),
        K::InvalidData | K::InvalidInput => {
            let what = e.to_string();
            let plain = if what.contains("WrongMagicNumber") {
                "it is not an LZ4 frame (wrong magic number)".to_string()
            } else if what.contains("ContentChecksumError") {
                "its content checksum does not match".to_string()
            } else if what.contains("BlockChecksumError") {
                "a block checksum does not match".to_string()
            } else if what.contains("BlockTooBig") {
                "an LZ4 block is larger than its frame allows".to_string()
            } else if what.contains("HeaderChecksumError") {
                "its LZ4 frame header checksum does not match".to_string()
            } else {
                format!("it does not decode ({what})")
            };
            Error::corrupt(format!("object {key} is corrupt: {plain}"))
        }
        _ => Error::io(format!("cannot read object {key}"), e),
    }
}

/// Removes the named temp files when dropped, unless disarmed.
struct TempFiles(Vec<PathBuf>);
impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

/// Restores `plan` from `replica` into `output` (which must not exist), decrypting with `age`.
pub async fn execute(
    replica: Arc<dyn Replica>,
    age: &Age,
    plan: &Plan,
    output: &Path,
    parallelism: usize,
) -> Result<()> {
    if let Some(dir) = output.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            // A database holds the application's data: directories walship creates for it are
            // private, as v0.3.13 makes them (0700), whatever the umask.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(format!("create directory {}", dir.display()), e))?;
        }
    }
    let tmp = with_suffix(output, ".tmp");
    let mut temps = TempFiles(vec![
        tmp.clone(),
        with_suffix(output, ".tmp-wal"),
        with_suffix(output, ".tmp-shm"),
    ]);
    for (i, _) in &plan.indexes {
        temps
            .0
            .push(with_suffix(output, &format!(".tmp-{i:08x}-wal")));
    }
    tracing::info!(generation = %plan.generation, index = plan.snapshot.index, key = %plan.snapshot.key, "restoring snapshot");
    if plan.indexes.is_empty() {
        // walship uploads the snapshot's index from offset 0 before the snapshot, so for its
        // replicas this means lost objects; v0.3.13 uploads the snapshot first, and a generation
        // it left right after one has no WAL at all. The snapshot alone is then all there is.
        tracing::warn!(
            generation = %plan.generation,
            index = format!("{:08x}", plan.snapshot.index),
            "no WAL segment at or after the snapshot's index: restoring the snapshot alone (a replica written by walship has lost objects)"
        );
    }
    let f = create_private(&tmp)?;
    let (len, w) = download_decoded(
        replica.clone(),
        age,
        plan.snapshot.key.clone(),
        &tmp.display().to_string(),
        BufWriter::new(f),
    )
    .await?;
    finish_file(w, &tmp)?;
    // The snapshot's own WAL index is replayed from offset 0 when the plan has it: pages a
    // concurrent checkpoint had not yet written when the image was read come back from it.
    let replayed = plan
        .indexes
        .first()
        .is_some_and(|(i, _)| *i == plan.snapshot.index);
    check_snapshot(&tmp, len, &plan.snapshot.key, replayed)?;

    tracing::info!(indexes = plan.indexes.len(), "restoring wal files");
    let budget = Arc::new(tokio::sync::Semaphore::new(PREFETCH_BUDGET_KIB as usize));
    let disk = Arc::new(tokio::sync::Semaphore::new(AHEAD_DISK_KIB as usize));
    let jobs = plan.indexes.iter().cloned().map(|(index, segs)| {
        let replica = replica.clone();
        let age = age.clone();
        let path = with_suffix(output, &format!(".tmp-{index:08x}-wal"));
        let budget = budget.clone();
        let disk = disk.clone();
        async move {
            // Held until the index is applied; taken in index order (the semaphore is fair),
            // so the index applied next always has its share. An index larger than the whole
            // budget waits for the others and goes alone.
            let stored: u64 = segs.iter().map(|s| s.size).sum();
            let kib = stored.div_ceil(1024).clamp(1, u64::from(AHEAD_DISK_KIB)) as u32;
            let held = disk
                .acquire_many_owned(kib)
                .await
                .map_err(|e| Error::new(ErrorKind::Other, format!("restore window: {e}")))?;
            download_index(replica, &age, index, segs, path.clone(), budget)
                .await
                .map(|_| (index, path, held))
        }
    });
    let window = parallelism.max(INDEXES_AHEAD);
    let mut ready = futures::stream::iter(jobs).buffered(window);
    while let Some(res) = ready.next().await {
        let (index, path, held) = res?;
        let tmp = tmp.clone();
        tokio::task::spawn_blocking(move || apply_wal(&tmp, &path, index))
            .await
            .map_err(|e| Error::new(ErrorKind::Other, format!("apply task failed: {e}")))??;
        drop(held);
        tracing::info!(index = format!("{index:08x}"), "applied wal");
    }
    // Durable before it takes the output's name (the checkpoints above did not sync).
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("sync {}", tmp.display()), e))?;
    tracing::info!(path = %output.display(), "renaming database from temporary location");
    fs::rename(&tmp, output).map_err(|e| {
        Error::io(
            format!("rename {} to {}", tmp.display(), output.display()),
            e,
        )
    })?;
    crate::meta::sync_dir(output.parent().unwrap_or(Path::new(".")));
    drop(temps);
    Ok(())
}

/// Creates a file only its owner can read (0600, as v0.3.13 restores): the umask's usual 0644
/// would let every local user read a database restored into a shared directory. SQLite gives
/// the `-wal` and `-shm` it creates beside it the same mode.
fn create_private(path: &Path) -> Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))
}

/// Refuses a decoded snapshot that is not a whole SQLite database, naming the object.
fn check_snapshot(path: &Path, len: u64, key: &str, replayed: bool) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut head = vec![0u8; crate::snapshot::HEADER_LEN.min(len as usize)];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut head, 0))
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    crate::snapshot::check_image(&head, len, replayed)
        .map_err(|m| Error::corrupt(format!("object {key} is corrupt: {m}")))
}

/// Flushes a temporary file. Not synced: the restored database is synced once, whole, before
/// it takes the output's name, and the temporary WAL files are gone by then (one fsync per WAL
/// index was most of the time of restoring hundreds of small indexes).
fn finish_file(w: BufWriter<File>, path: &Path) -> Result<()> {
    w.into_inner()
        .map(drop)
        .map_err(|e| Error::io(format!("write {}", path.display()), e.into_error()))
}

/// Requests in flight per WAL index while its segments are restored: fetched one after another,
/// a long history cost one request latency per segment (thousands of segments per day at a 10 s
/// sync-interval).
const PREFETCH_REQUESTS: usize = 16;
/// The largest stored object fetched ahead into memory; a larger one is streamed in its turn.
const PREFETCH_OBJECT: u64 = 1 << 20;
/// Stored bytes fetched ahead and not yet decoded, in KiB, over the whole restore (every index
/// together): what bounds the prefetch's memory whatever `-parallelism` is.
pub(crate) const PREFETCH_BUDGET_KIB: u32 = 16 * 1024;
/// WAL indexes downloaded ahead of the one being applied, at least (`-parallelism` raises it):
/// a history of many small indexes (a busy database with a low max-checkpoint-page-count) is
/// otherwise one request latency per few indexes.
const INDEXES_AHEAD: usize = 32;
/// Stored bytes of the WAL indexes downloaded ahead and not yet applied, in KiB: the disk the
/// temporary WAL files may take beside the output, whatever the window above.
const AHEAD_DISK_KIB: u32 = 256 * 1024;

/// A segment's stored bytes fetched ahead (holding their share of the budget), or none: it is
/// streamed when its turn comes.
enum Ahead {
    Fetched(bytes::Bytes, tokio::sync::OwnedSemaphorePermit),
    Stream,
}

fn budget_kib(size: u64) -> u32 {
    size.div_ceil(1024).clamp(1, u64::from(PREFETCH_BUDGET_KIB)) as u32
}

/// Downloads every segment of one index into one WAL file, proving the segments are contiguous
/// and that the result is a valid WAL ending on a commit.
///
/// Up to [`PREFETCH_REQUESTS`] small segments are fetched ahead while earlier ones are decoded
/// and written, in order. Their share of `budget` is taken in segment order, so the segment a
/// decoder waits for always holds its share first and every index makes progress.
async fn download_index(
    replica: Arc<dyn Replica>,
    age: &Age,
    index: u32,
    segs: Vec<SegmentInfo>,
    path: PathBuf,
    budget: Arc<tokio::sync::Semaphore>,
) -> Result<()> {
    let f = create_private(&path)?;
    let mut w = BufWriter::new(f);
    let mut end = 0u64;
    let dest = path.display().to_string();
    let fetch = |s: SegmentInfo, permit: Option<tokio::sync::OwnedSemaphorePermit>| {
        let replica = replica.clone();
        async move {
            let Some(permit) = permit else {
                return Ok((s, Ahead::Stream));
            };
            let mut body = Vec::with_capacity(s.size as usize);
            let mut r = replica.get(&s.key).await?;
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut body)
                .await
                .map_err(|e| read_error(&s.key, e))?;
            Ok::<_, Error>((s, Ahead::Fetched(body.into(), permit)))
        }
    };
    let ahead = futures::stream::iter(segs.iter().cloned())
        .then(|s| {
            let budget = budget.clone();
            async move {
                if s.size > PREFETCH_OBJECT {
                    return (s, None);
                }
                let permit = budget.acquire_many_owned(budget_kib(s.size)).await.ok();
                (s, permit)
            }
        })
        .map(|(s, permit)| fetch(s, permit))
        .buffered(PREFETCH_REQUESTS);
    futures::pin_mut!(ahead);
    while let Some(next) = ahead.next().await {
        let (s, fetched) = next?;
        if s.offset != end {
            return Err(Error::corrupt(format!(
                "gap in WAL index {index:08x} of generation {}: segment {} starts at offset {} but the previous segments end at {end}",
                s.generation, s.key, s.offset
            )));
        }
        tracing::debug!(key = %s.key, "downloaded wal");
        let (n, back) = match fetched {
            Ahead::Fetched(body, permit) => {
                let r = decode_fetched(age, s.key.clone(), &dest, w, body).await?;
                drop(permit);
                r
            }
            Ahead::Stream => {
                download_decoded(replica.clone(), age, s.key.clone(), &dest, w).await?
            }
        };
        w = back;
        if n == 0 {
            return Err(Error::corrupt(format!(
                "object {}: empty WAL segment",
                s.key
            )));
        }
        end += n;
    }
    finish_file(w, &path)?;
    // Validate now, so corruption names the object instead of SQLite silently stopping early.
    let scan = wal::scan(std::io::BufReader::new(
        File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?,
    ))
    .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let key_at = |off: u64| {
        segs.iter()
            .rev()
            .find(|s| s.offset <= off)
            .map(|s| s.key.clone())
            .unwrap_or_default()
    };
    let scan =
        scan.map_err(|e| Error::corrupt(format!("object {}: invalid WAL header: {e}", key_at(0))))?;
    if scan.committed_len != end {
        return Err(Error::corrupt(format!(
            "object {}: WAL index {index:08x} is invalid after byte {} of {end} (bad checksum, salt or missing commit)",
            key_at(scan.committed_len),
            scan.committed_len
        )));
    }
    let _: WalHeader = scan.header;
    debug_assert!(end >= HEADER_SIZE as u64);
    Ok(())
}

/// Applies one WAL file to the temporary database with a TRUNCATE checkpoint.
fn apply_wal(db: &Path, wal_file: &Path, index: u32) -> Result<()> {
    let wal_target = with_suffix(db, "-wal");
    fs::rename(wal_file, &wal_target)
        .map_err(|e| Error::io(format!("rename {}", wal_file.display()), e))?;
    let conn = rusqlite::Connection::open(db)
        .map_err(|e| Error::sqlite(format!("open {}", db.display()), e))?;
    // The temporary file becomes a database only through the rename at the end, after one
    // fsync of the whole file there; SQLite's default would fsync at every index's checkpoint,
    // which a history of hundreds of small indexes pays hundreds of times.
    conn.pragma_update(None, "synchronous", "OFF")
        .map_err(|e| Error::sqlite(format!("open {}", db.display()), e))?;
    let ck = crate::sqlite::checkpoint(&conn, crate::sqlite::CheckpointMode::Truncate)
        .map_err(|e| Error::sqlite(format!("apply WAL index {index:08x}"), e))?;
    if ck.busy {
        return Err(Error::new(
            ErrorKind::Io,
            format!("truncation checkpoint failed during restore of WAL index {index:08x}"),
        ));
    }
    conn.close()
        .map_err(|(_, e)| Error::sqlite(format!("close {}", db.display()), e))?;
    let _ = fs::remove_file(&wal_target);
    let _ = fs::remove_file(with_suffix(db, "-shm"));
    Ok(())
}

/// Reads a whole decoded object into memory (small objects only: the last segment, probes).
pub async fn read_decoded(replica: Arc<dyn Replica>, age: &Age, key: &str) -> Result<Vec<u8>> {
    let (_, v) = download_decoded(replica, age, key.to_string(), "memory", Vec::new()).await?;
    Ok(v)
}

/// Decoded length of an object, streaming (v0.3 resumes from the end of the last segment).
pub async fn decoded_len(replica: Arc<dyn Replica>, age: &Age, key: &str) -> Result<u64> {
    let (n, _) =
        download_decoded(replica, age, key.to_string(), "nowhere", std::io::sink()).await?;
    Ok(n)
}

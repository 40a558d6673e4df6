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
use std::io::{BufWriter, Read, Write};
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

/// Stored objects up to this size are decoded on the task that fetched them. A WAL segment of
/// a trickle is a few KiB and decodes in microseconds, less than the thread wake-ups of a
/// hand-off to the blocking pool: a restore of 10,000 such segments from S3 used 13 % less CPU
/// once they stopped making that round trip (medians of six runs, 4.17 to 3.62 s; voluntary
/// context switches 73,000 to 57,000). Larger objects, and encrypted ones (an age header costs
/// a key agreement), still go to the pool.
const INLINE_DECODE_MAX: usize = 64 * 1024;

/// At most this much of an object's decoded output is produced on the fetching task; the rest
/// is finished on the blocking pool. LZ4 expands up to 255-fold, so a small stored object can
/// hold megabytes of pages (a run of zeros), and the fetching task is the restore's (or a
/// drill's, inside `replicate`) only driver of its downloads: no decode may hold it for long.
/// 256 KiB is about 0.1 ms of LZ4 decoding.
const INLINE_OUTPUT_MAX: u64 = 256 * 1024;

/// Decodes a stored object already fetched into memory (see [`download_index`]) into `out`.
async fn decode_fetched<W: Write + Send + 'static>(
    age: &Age,
    key: String,
    dest: &str,
    out: W,
    body: bytes::Bytes,
) -> Result<(u64, W)> {
    if body.len() > INLINE_DECODE_MAX || age.decrypts() {
        return decode_into(age, key, dest, out, move || std::io::Cursor::new(body)).await;
    }
    let mut dec = codec::decoder(age.decrypt(&key, std::io::Cursor::new(body))?);
    let mut out = Tracked::new(out);
    let first = copy_decoded(&key, dest, (&mut dec).take(INLINE_OUTPUT_MAX), &mut out)?;
    if first < INLINE_OUTPUT_MAX {
        return Ok((first, out.inner));
    }
    let dest = dest.to_string();
    on_pool(move || {
        let rest = copy_decoded(&key, &dest, dec, &mut out)?;
        Ok((first + rest, out.inner))
    })
    .await
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
    on_pool(move || {
        let dec = codec::decoder(age.decrypt(&key, source())?);
        let mut out = Tracked::new(out);
        let n = copy_decoded(&key, &dest, dec, &mut out)?;
        Ok((n, out.inner))
    })
    .await
}

/// Runs a decode on the blocking pool.
async fn on_pool<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Other, format!("decode task failed: {e}")))?
}

/// Copies decoded bytes into `out` on the calling thread, naming the side that failed.
fn copy_decoded<W: Write>(
    key: &str,
    dest: &str,
    mut dec: impl Read,
    out: &mut Tracked<W>,
) -> Result<u64> {
    std::io::copy(&mut dec, out).map_err(|e| {
        if out.failed {
            Error::io(format!("cannot write {dest}"), e)
        } else {
            read_error(key, e)
        }
    })
}

/// A writer that remembers whether a write failed, so a copy's error can be told apart from a
/// read's.
struct Tracked<W> {
    inner: W,
    failed: bool,
}

impl<W> Tracked<W> {
    fn new(inner: W) -> Self {
        Tracked {
            inner,
            failed: false,
        }
    }
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
    let mut temps = TempFiles(vec![tmp.clone()]);
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
    let page_size = check_snapshot(&tmp, len, &plan.snapshot.key, replayed)?;
    let db = Arc::new(
        fs::OpenOptions::new()
            .write(true)
            .open(&tmp)
            .map_err(|e| Error::io(format!("open {}", tmp.display()), e))?,
    );

    tracing::info!(indexes = plan.indexes.len(), "restoring wal files");
    let budget = Arc::new(tokio::sync::Semaphore::new(PREFETCH_BUDGET_KIB as usize));
    let disk = Arc::new(tokio::sync::Semaphore::new(AHEAD_DISK_KIB as usize));
    let memory = Arc::new(tokio::sync::Semaphore::new(SPOOL_MEMORY_KIB as usize));
    let jobs = plan.indexes.iter().cloned().map(|(index, segs)| {
        let replica = replica.clone();
        let age = age.clone();
        let spool = Spool::new(
            with_suffix(output, &format!(".tmp-{index:08x}-wal")),
            memory.clone(),
        );
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
            let first = segs.first().map(|s| s.key.clone()).unwrap_or_default();
            download_index(replica, &age, index, segs, spool, budget)
                .await
                .map(|(wal, upto)| (index, first, wal, upto, held))
        }
    });
    let window = parallelism.max(INDEXES_AHEAD);
    let mut ready = futures::stream::iter(jobs).buffered(window);
    while let Some(res) = ready.next().await {
        let (index, first, wal, upto, held) = res?;
        let db = db.clone();
        let tmp = tmp.clone();
        tokio::task::spawn_blocking(move || {
            apply_wal(&db, &tmp, page_size, wal, upto, index, &first)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Other, format!("apply task failed: {e}")))??;
        drop(held);
        tracing::info!(index = format!("{index:08x}"), "applied wal");
    }
    // Durable before it takes the output's name (nothing above synced it).
    db.sync_all()
        .map_err(|e| Error::io(format!("sync {}", tmp.display()), e))?;
    drop(db);
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

/// Refuses a decoded snapshot that is not a whole SQLite database, naming the object; returns
/// its page size.
fn check_snapshot(path: &Path, len: u64, key: &str, replayed: bool) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut head = vec![0u8; crate::snapshot::HEADER_LEN.min(len as usize)];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut head, 0))
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    crate::snapshot::check_image(&head, len, replayed)
        .map_err(|m| Error::corrupt(format!("object {key} is corrupt: {m}")))?;
    crate::snapshot::page_size(&head)
        .ok_or_else(|| Error::corrupt(format!("object {key} is corrupt: invalid page size")))
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
const INDEXES_AHEAD: usize = 64;
/// Stored (compressed) bytes of the WAL indexes downloaded ahead and not yet applied, in KiB:
/// what bounds the temporary WAL files beside the output whatever the window above. They hold
/// decoded bytes, so the disk they take is this times the WAL's compression ratio; the bound is
/// taken before a download, in index order, when only the stored size is known.
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
    spool: Spool,
    budget: Arc<tokio::sync::Semaphore>,
) -> Result<(Spooled, u64)> {
    let mut w = spool;
    let mut end = 0u64;
    let dest = w.path.display().to_string();
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
        if s.offset > end {
            return Err(Error::corrupt(format!(
                "gap in WAL index {index:08x} of generation {}: segment {} starts at offset {} but the previous segments end at {end}",
                s.generation, s.key, s.offset
            )));
        }
        // Litestream v0.3.13 sometimes ships part of an index again from an earlier offset
        // (its own restore then fails with "missing WAL offset"). The shadow WAL of one index
        // is append-only, so both copies hold the same frames: keep what is here, take only
        // what the segment adds. The scan below proves the whole index is still one valid WAL.
        let overlap = end - s.offset;
        if overlap > 0 {
            tracing::warn!(key = %s.key, overlap, "WAL segment overlaps the previous segments (as Litestream v0.3.13 sometimes writes them): using only the bytes after them");
        }
        tracing::debug!(key = %s.key, "downloaded wal");
        let skipping = Skip {
            inner: w,
            left: overlap,
        };
        let (n, back) = match fetched {
            Ahead::Fetched(body, permit) => {
                let r = decode_fetched(age, s.key.clone(), &dest, skipping, body).await?;
                drop(permit);
                r
            }
            Ahead::Stream => {
                download_decoded(replica.clone(), age, s.key.clone(), &dest, skipping).await?
            }
        };
        w = back.inner;
        if n == 0 {
            return Err(Error::corrupt(format!(
                "object {}: empty WAL segment",
                s.key
            )));
        }
        end = end.max(s.offset + n);
    }
    let wal = w.finish()?;
    // Validate now, so corruption names the object instead of a replay stopping early.
    let scan = wal
        .scan()
        .map_err(|e| Error::io(format!("read {dest}"), e))?;
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
    Ok((wal, end))
}

/// A writer that drops the first `left` bytes written to it: the part of an overlapping WAL
/// segment already held.
pub(crate) struct Skip<W> {
    pub(crate) inner: W,
    pub(crate) left: u64,
}

impl<W: Write> Write for Skip<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let drop = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if drop > 0 {
            self.left -= drop as u64;
            return Ok(drop);
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Decoded WAL bytes of one index kept in memory, across every index ahead, in KiB. Each index
/// in a history of many small ones is a few hundred KiB: a temporary file for each (create,
/// write, read twice, unlink) was most of a restore's CPU.
const SPOOL_MEMORY_KIB: u32 = 16 * 1024;
/// The most one index keeps in memory; a larger one goes to a temporary file whole.
const SPOOL_INDEX_KIB: usize = 1024;

/// Where one WAL index is decoded: memory while it is small and the shared budget allows, else a
/// temporary file beside the output (created when the first byte does not fit). Memory taken is
/// counted by capacity, so the budget bounds what is allocated, not only what is written.
struct Spool {
    path: PathBuf,
    mem: Vec<u8>,
    held: Option<tokio::sync::OwnedSemaphorePermit>,
    budget: Arc<tokio::sync::Semaphore>,
    file: Option<BufWriter<File>>,
}

impl Spool {
    fn new(path: PathBuf, budget: Arc<tokio::sync::Semaphore>) -> Spool {
        Spool {
            path,
            mem: Vec::new(),
            held: None,
            budget,
            file: None,
        }
    }

    /// Room in memory for `more` bytes, if the index stays small and the budget has it.
    fn reserve(&mut self, more: usize) -> bool {
        let need = self.mem.len() + more;
        if need <= self.mem.capacity() {
            return true;
        }
        let cap = need.max(self.mem.capacity() * 2).max(64 * 1024);
        if cap > SPOOL_INDEX_KIB * 1024 {
            return false;
        }
        let kib = (cap - self.mem.capacity()).div_ceil(1024) as u32;
        let Ok(p) = self.budget.clone().try_acquire_many_owned(kib) else {
            return false;
        };
        match &mut self.held {
            Some(h) => h.merge(p),
            None => self.held = Some(p),
        }
        self.mem.reserve_exact(cap - self.mem.len());
        true
    }

    fn spill(&mut self) -> std::io::Result<&mut BufWriter<File>> {
        if self.file.is_none() {
            let f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&self.path)?;
            let mut w = BufWriter::new(f);
            w.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.held = None;
            self.file = Some(w);
        }
        Ok(self.file.as_mut().expect("just created"))
    }

    /// The decoded index, flushed (not synced: see [`finish_file`]).
    fn finish(self) -> Result<Spooled> {
        match self.file {
            None => Ok(Spooled::Memory {
                bytes: self.mem,
                _held: self.held,
            }),
            Some(w) => {
                finish_file(w, &self.path)?;
                Ok(Spooled::File(self.path))
            }
        }
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() && self.reserve(buf.len()) {
            self.mem.extend_from_slice(buf);
            return Ok(buf.len());
        }
        self.spill()?.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// One decoded WAL index: in memory (holding its share of the memory budget) or in a file.
enum Spooled {
    Memory {
        bytes: Vec<u8>,
        _held: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    File(PathBuf),
}

impl Spooled {
    fn reader(&self) -> std::io::Result<Box<dyn std::io::Read + '_>> {
        Ok(match self {
            Spooled::Memory { bytes, .. } => Box::new(&bytes[..]),
            Spooled::File(p) => {
                Box::new(std::io::BufReader::with_capacity(1 << 18, File::open(p)?))
            }
        })
    }

    fn scan(&self) -> std::io::Result<std::result::Result<wal::WalScan, wal::WalError>> {
        wal::scan(self.reader()?)
    }

    fn describe(&self) -> String {
        match self {
            Spooled::Memory { .. } => "memory".into(),
            Spooled::File(p) => p.display().to_string(),
        }
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        if let Spooled::File(p) = self {
            let _ = fs::remove_file(p);
        }
    }
}

/// Replays one downloaded WAL index (validated up to `upto`) onto the temporary database, as
/// SQLite's checkpoint would, and sets the file to the size of its last commit. A page size other
/// than the snapshot's would make SQLite refuse the WAL; here it is named as corruption.
fn apply_wal(
    db: &File,
    db_path: &Path,
    page_size: u64,
    wal: Spooled,
    upto: u64,
    index: u32,
    first_key: &str,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let source = wal.describe();
    let mut head = [0u8; HEADER_SIZE];
    wal.reader()
        .and_then(|mut r| r.read_exact(&mut head))
        .map_err(|e| Error::io(format!("read {source}"), e))?;
    let wal_page = WalHeader::parse(&head)
        .map_err(|e| Error::corrupt(format!("object {first_key}: invalid WAL header: {e}")))?
        .page_size;
    if u64::from(wal_page) != page_size {
        return Err(Error::corrupt(format!(
            "object {first_key}: WAL index {index:08x} has {wal_page}-byte pages, the snapshot {page_size}-byte pages"
        )));
    }
    let written = |e: std::io::Error| Error::io(format!("write {}", db_path.display()), e);
    let mut write_failed = None;
    let size = wal::replay(
        wal.reader()
            .map_err(|e| Error::io(format!("read {source}"), e))?,
        upto,
        |page_no, page| {
            db.write_all_at(page, u64::from(page_no - 1) * page_size)
                .inspect_err(|_| write_failed = Some(()))
        },
    )
    .map_err(|e| match (write_failed, e.kind()) {
        (Some(()), _) => written(e),
        (None, std::io::ErrorKind::InvalidData) => Error::corrupt(format!(
            "WAL index {index:08x} ({source}) changed after it was checked: {e}"
        )),
        (None, _) => Error::io(format!("read {source}"), e),
    })?
    .map_err(|e| Error::corrupt(format!("object {first_key}: invalid WAL header: {e}")))?;
    if let Some(pages) = size {
        db.set_len(u64::from(pages) * page_size).map_err(written)?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn rows(path: &Path) -> Vec<(i64, Vec<u8>)> {
        let c = Connection::open(path).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let mut st = c.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// Replaying a WAL index by hand gives what SQLite's own checkpoint gives, through growth,
    /// overwrites and a VACUUM that shrinks the file (the commit size cuts it).
    #[test]
    fn replaying_a_wal_matches_sqlites_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        let c = Connection::open(&src).unwrap();
        c.pragma_update(None, "journal_mode", "wal").unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);")
            .unwrap();
        for i in 0..300 {
            c.execute(
                "INSERT INTO t(v) VALUES (randomblob(?1))",
                [100 + i * 37 % 5000],
            )
            .unwrap();
        }
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        // The image a snapshot holds, then one WAL life on top of it.
        let base = dir.path().join("base.db");
        fs::copy(&src, &base).unwrap();
        c.execute_batch(
            "UPDATE t SET v = randomblob(3000) WHERE id % 3 = 0;
             DELETE FROM t WHERE id > 120;
             VACUUM;
             INSERT INTO t(v) VALUES (randomblob(10));",
        )
        .unwrap();
        let wal_copy = dir.path().join("index-wal");
        fs::copy(dir.path().join("src.db-wal"), &wal_copy).unwrap();
        let upto = wal::scan(File::open(&wal_copy).unwrap())
            .unwrap()
            .unwrap()
            .committed_len;
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        drop(c);

        let bytes = fs::read(&wal_copy).unwrap();
        let page = u64::from(WalHeader::parse(&bytes).unwrap().page_size);
        // Once from a file, once from memory: the two ways an index is held.
        let from_memory = dir.path().join("memory.db");
        fs::copy(&base, &from_memory).unwrap();
        for (out, wal) in [
            (&base, Spooled::File(wal_copy.clone())),
            (&from_memory, Spooled::Memory { bytes, _held: None }),
        ] {
            let db = fs::OpenOptions::new().write(true).open(out).unwrap();
            apply_wal(&db, out, page, wal, upto, 1, "k").unwrap();
            drop(db);
            assert_eq!(
                fs::metadata(out).unwrap().len(),
                fs::metadata(&src).unwrap().len()
            );
            assert_eq!(rows(out), rows(&src));
        }
        assert!(!wal_copy.exists(), "the applied WAL file is removed");
    }

    /// A small index stays in memory within the budget; a large one, or one the budget cannot
    /// hold, goes to its file whole, and the budget is returned when the index is dropped.
    #[test]
    fn the_spool_keeps_small_indexes_in_memory_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(tokio::sync::Semaphore::new(200));
        let mut small = Spool::new(dir.path().join("a"), budget.clone());
        small.write_all(&[1u8; 100_000]).unwrap();
        let small = small.finish().unwrap();
        assert!(matches!(&small, Spooled::Memory { bytes, .. } if bytes.len() == 100_000));
        assert_eq!(budget.available_permits(), 200 - 98);
        // The budget left cannot hold a second one: it spills, with every byte.
        let mut second = Spool::new(dir.path().join("b"), budget.clone());
        second.write_all(&[2u8; 70_000]).unwrap();
        second.write_all(&[3u8; 70_000]).unwrap();
        let second = second.finish().unwrap();
        let Spooled::File(p) = &second else {
            panic!("expected a file")
        };
        let on_disk = fs::read(p).unwrap();
        assert_eq!(on_disk.len(), 140_000);
        assert_eq!((on_disk[0], on_disk[139_999]), (2, 3));
        drop(second);
        assert!(
            !dir.path().join("b").exists(),
            "a spilled index's file goes with it"
        );
        drop(small);
        assert_eq!(budget.available_permits(), 200);
        // Larger than one index may keep: a file, whatever the budget.
        let big_budget = Arc::new(tokio::sync::Semaphore::new(1 << 20));
        let mut big = Spool::new(dir.path().join("c"), big_budget);
        big.write_all(&vec![0u8; SPOOL_INDEX_KIB * 1024 + 1])
            .unwrap();
        assert!(matches!(big.finish().unwrap(), Spooled::File(_)));
    }

    /// Records which thread wrote how many bytes.
    #[derive(Default)]
    struct ByThread {
        data: Vec<u8>,
        writes: Vec<(std::thread::ThreadId, usize)>,
    }

    impl Write for ByThread {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.writes.push((std::thread::current().id(), buf.len()));
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A small fetched segment is decoded on the task that fetched it (the test's thread);
    /// a large stored object and an encrypted one are decoded on the blocking pool; a small
    /// object whose output is large (zeros) yields only its first `INLINE_OUTPUT_MAX` bytes
    /// on the fetching task and the rest on the pool. Every output is exact, and a corrupt
    /// object is named either way.
    #[test]
    fn small_fetched_segments_decode_where_they_were_fetched() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let me = std::thread::current().id();
        let plain = Age::parse(&[], &[]).unwrap();
        // Bytes written on this thread, and the whole output.
        let run = |age: &Age, key: &str, stored: Vec<u8>| -> Result<(usize, Vec<u8>)> {
            let (n, out) = rt.block_on(decode_fetched(
                age,
                key.to_string(),
                "dest",
                ByThread::default(),
                bytes::Bytes::from(stored),
            ))?;
            assert_eq!(n as usize, out.data.len());
            let here = out.writes.iter().filter(|w| w.0 == me).map(|w| w.1).sum();
            Ok((here, out.data))
        };

        let small: Vec<u8> = (0..20_000u32).flat_map(|i| (i / 7).to_le_bytes()).collect();
        let stored = codec::compress(&small);
        assert!(stored.len() <= INLINE_DECODE_MAX && (small.len() as u64) < INLINE_OUTPUT_MAX);
        let (here, out) = run(&plain, "a", stored).unwrap();
        assert_eq!(here, small.len(), "bytes decoded on the fetching task");
        assert!(out == small);

        let zeros = vec![0u8; 4 << 20];
        let stored = codec::compress(&zeros);
        assert!(stored.len() <= INLINE_DECODE_MAX);
        let (here, out) = run(&plain, "z", stored).unwrap();
        assert_eq!(
            here as u64, INLINE_OUTPUT_MAX,
            "bytes decoded on the fetching task"
        );
        assert!(out == zeros);

        // Incompressible bytes: stored larger than the inline bound.
        let large = codec::noise(INLINE_DECODE_MAX + 4096);
        let stored = codec::compress(&large);
        assert!(stored.len() > INLINE_DECODE_MAX);
        let (here, out) = run(&plain, "b", stored).unwrap();
        assert_eq!(here, 0, "bytes decoded on the fetching task");
        assert!(out == large);

        let id = age::x25519::Identity::generate();
        let secret = {
            use age::secrecy::ExposeSecret;
            id.to_string().expose_secret().to_string()
        };
        let enc = Age::parse(&[secret], &[id.to_public().to_string()]).unwrap();
        let mut stored = Vec::new();
        enc.encrypt(std::io::Cursor::new(codec::compress(&small)))
            .unwrap()
            .read_to_end(&mut stored)
            .unwrap();
        assert!(stored.len() <= INLINE_DECODE_MAX);
        let (here, out) = run(&enc, "e", stored).unwrap();
        assert_eq!(here, 0, "bytes decoded on the fetching task");
        assert!(out == small);

        let err = run(&plain, "wal/bad.wal.lz4", b"not an lz4 frame".to_vec()).unwrap_err();
        assert!(
            err.to_string()
                .contains("object wal/bad.wal.lz4 is corrupt"),
            "{err}"
        );
    }

    /// A WAL index whose page size differs from the snapshot's is corruption, named by object.
    #[test]
    fn a_wal_of_another_page_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.db");
        fs::write(&base, vec![0u8; 8192]).unwrap();
        let wal_file = dir.path().join("w");
        fs::write(&wal_file, wal::tests::build_wal(1024, (1, 2), 0, &[1])).unwrap();
        let db = fs::OpenOptions::new().write(true).open(&base).unwrap();
        let wal = Spooled::File(wal_file);
        let e = apply_wal(&db, &base, 4096, wal, 32 + 1048, 7, "gens/x/wal/7.wal.lz4").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("gens/x/wal/7.wal.lz4"), "{e}");
        assert_eq!(fs::read(&base).unwrap(), vec![0u8; 8192], "nothing written");
    }
}

//! Replication lag: when does the replica's listing hold a given commit?
//!
//! The writer side follows the real `-wal` file incrementally ([`WalFollower`]) and records, after
//! a commit, `(instant, salts, committed end offset)`. The replica side ([`Poller`]) notes when
//! each WAL segment appears (inotify) and later works out its end offset (and, at offset 0, the
//! salts of its WAL header), so it knows when each `(generation, index)` first reached each end.
//! A commit is held when an index with the same salts reaches an end at or past its offset.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use walship_core::wal::{FrameReader, WalHeader, HEADER_SIZE};

/// A commit as seen by the writer.
#[derive(Debug, Clone, Copy)]
pub struct Commit {
    pub at: Instant,
    pub salts: (u32, u32),
    pub end: u64,
}

/// Follows the live WAL: current header, committed offset and checksum seed.
pub struct WalFollower {
    path: PathBuf,
    file: Option<File>,
    header: Option<WalHeader>,
    offset: u64,
    seed: (u32, u32),
}

impl WalFollower {
    pub fn new(db: &Path) -> WalFollower {
        let mut p = db.as_os_str().to_owned();
        p.push("-wal");
        WalFollower {
            path: PathBuf::from(p),
            file: None,
            header: None,
            offset: 0,
            seed: (0, 0),
        }
    }

    /// Brings the state up to the end of the committed log; returns (salts, committed end).
    pub fn poll(&mut self) -> Option<((u32, u32), u64)> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let f = self.file.as_ref()?;
        let mut hb = [0u8; HEADER_SIZE];
        if f.read_exact_at(&mut hb, 0).is_err() {
            return None;
        }
        let h = WalHeader::parse(&hb).ok()?;
        if self.header.map(|o| o.raw) != Some(h.raw) {
            // A new WAL life (restart after a checkpoint): start again after the header.
            self.header = Some(h);
            self.offset = HEADER_SIZE as u64;
            self.seed = h.checksum;
        }
        let mut r = f;
        r.seek(SeekFrom::Start(self.offset)).ok()?;
        let mut fr = FrameReader::new(BufReader::with_capacity(1 << 18, r), h, self.seed);
        let mut pos = self.offset;
        while let Ok(Some((fh, _))) = fr.next_frame() {
            pos += h.frame_size();
            if fh.commit_size != 0 {
                self.offset = pos;
                self.seed = fh.checksum;
            }
        }
        Some(((h.salt1, h.salt2), self.offset))
    }
}

/// A segment as it appeared in the replica.
struct Seen {
    generation: String,
    index: u32,
    offset: u64,
    path: PathBuf,
    at: Instant,
}

#[derive(Default)]
struct State {
    seen: HashSet<PathBuf>,
    appeared: Vec<Seen>,
}

/// What the appearances mean, worked out after the fact: (generation, index) -> salts, and
/// (generation, index, end, first seen) per segment.
#[derive(Default)]
struct Resolved {
    salts: HashMap<(String, u32), (u32, u32)>,
    events: Vec<(String, u32, u64, Instant)>,
    /// Segment path -> decoded end, so a later resolve does not decode it again.
    ends: HashMap<PathBuf, u64>,
}

impl Resolved {
    /// When the replica first held `c`, if it does.
    fn held_at(&self, c: &Commit) -> Option<Instant> {
        self.events
            .iter()
            .filter(|(g, i, end, _)| {
                *end >= c.end && self.salts.get(&(g.clone(), *i)) == Some(&c.salts)
            })
            .map(|e| e.3)
            .min()
    }
}

/// Watches a file replica's `generations/*/wal/` directories with inotify in a background thread
/// and records when each segment appears (both tools write a temporary file and rename it).
///
/// The watcher only notes names and times: the segments' ends and salts are worked out later,
/// mostly from names (a segment ends where the next one of its index starts), so the apparatus
/// does not compete with the writer for CPU. An earlier version listed the replica every 10 ms
/// and decoded every segment while the writer ran, which cost the writer more CPU the faster a
/// tool shipped.
pub struct Poller {
    state: Arc<Mutex<State>>,
    resolved: Mutex<Resolved>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn parse_segment(name: &str) -> Option<(u32, u64)> {
    let (i, o) = name.strip_suffix(".wal.lz4")?.split_once('_')?;
    Some((
        u32::from_str_radix(i, 16).ok()?,
        u64::from_str_radix(o, 16).ok()?,
    ))
}

/// Decoded length and, when it starts with one, the WAL header's salts.
fn decode(path: &Path, whole: bool) -> std::io::Result<(u64, Option<(u32, u32)>)> {
    let mut r = walship_core::codec::decoder(File::open(path)?);
    let mut buf = vec![0u8; 1 << 18];
    let mut head = Vec::new();
    let mut len = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < HEADER_SIZE {
            let take = (HEADER_SIZE - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        len += n as u64;
        if !whole && head.len() >= HEADER_SIZE {
            break;
        }
    }
    let salts = WalHeader::parse(&head).ok().map(|h| (h.salt1, h.salt2));
    Ok((len, salts))
}

/// inotify with the watched directories' meaning.
struct Watcher {
    fd: i32,
    root: PathBuf,
    /// Watch descriptor -> (directory, generation it belongs to, is a `wal` directory).
    dirs: HashMap<i32, (PathBuf, Option<String>, bool)>,
}

const MASK: u32 = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE;

impl Watcher {
    fn new(replica: &Path) -> Watcher {
        // SAFETY: plain syscall; the descriptor is closed on drop.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        Watcher {
            fd,
            root: replica.join("generations"),
            dirs: HashMap::new(),
        }
    }

    /// Watches `dir`, then looks at what it already holds (entries made before the watch).
    fn add(&mut self, dir: &Path, generation: Option<String>, wal: bool, st: &Mutex<State>) {
        if self.dirs.values().any(|d| d.0 == dir) {
            return;
        }
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
            return;
        };
        // SAFETY: valid descriptor and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd, c.as_ptr(), MASK) };
        if wd < 0 {
            return;
        }
        self.dirs
            .insert(wd, (dir.to_path_buf(), generation.clone(), wal));
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            self.entry(dir, generation.clone(), wal, &name, st);
        }
    }

    fn entry(
        &mut self,
        dir: &Path,
        generation: Option<String>,
        wal: bool,
        name: &str,
        st: &Mutex<State>,
    ) {
        let path = dir.join(name);
        match (generation, wal) {
            (None, _) => self.add(&path, Some(name.to_string()), false, st),
            (Some(g), false) if name == "wal" => self.add(&path, Some(g), true, st),
            (Some(g), true) => {
                if let Some((index, offset)) = parse_segment(name) {
                    let mut s = st.lock().unwrap();
                    if s.seen.insert(path.clone()) {
                        s.appeared.push(Seen {
                            generation: g,
                            index,
                            offset,
                            path,
                            at: Instant::now(),
                        });
                    }
                }
            }
            _ => {}
        }
    }

    fn run(&mut self, st: &Mutex<State>, stop: &AtomicBool) {
        let root = self.root.clone();
        self.add(&root, None, false, st);
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            if self.dirs.is_empty() {
                // The replica has no generations directory yet.
                std::thread::sleep(Duration::from_millis(10));
                self.add(&root, None, false, st);
                continue;
            }
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 50) };
            // SAFETY: reading into an owned buffer of the given length.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                continue;
            }
            let (n, header) = (n as usize, std::mem::size_of::<libc::inotify_event>());
            let mut off = 0;
            while off + header <= n {
                // SAFETY: the kernel wrote whole events; read_unaligned copes with the buffer.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                let name = &buf[off + header..off + header + ev.len as usize];
                off += header + ev.len as usize;
                let name = String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or(&[]))
                    .into_owned();
                if let Some((dir, g, wal)) = self.dirs.get(&ev.wd).cloned() {
                    self.entry(&dir, g, wal, &name, st);
                }
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours.
        unsafe { libc::close(self.fd) };
    }
}

impl Poller {
    pub fn start(replica: &Path) -> Poller {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            let mut w = Watcher::new(replica);
            std::thread::spawn(move || w.run(&state, &stop))
        };
        Poller {
            state,
            resolved: Mutex::new(Resolved::default()),
            stop,
            thread: Some(thread),
        }
    }

    /// Works out the ends and salts of the segments seen so far. A segment ends where the next
    /// one of its index starts; only the last of each index is decoded (and offset-0 segments
    /// far enough for their header).
    fn resolve(&self) -> std::sync::MutexGuard<'_, Resolved> {
        let mut appeared: Vec<(String, u32, u64, PathBuf, Instant)> = self
            .state
            .lock()
            .unwrap()
            .appeared
            .iter()
            .map(|s| {
                (
                    s.generation.clone(),
                    s.index,
                    s.offset,
                    s.path.clone(),
                    s.at,
                )
            })
            .collect();
        appeared.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
        let mut r = self.resolved.lock().unwrap();
        let mut events = Vec::with_capacity(appeared.len());
        for (k, (g, i, off, path, at)) in appeared.iter().enumerate() {
            if *off == 0 && !r.salts.contains_key(&(g.clone(), *i)) {
                if let Ok((_, Some(s))) = decode(path, false) {
                    r.salts.insert((g.clone(), *i), s);
                }
            }
            let next = appeared
                .get(k + 1)
                .filter(|n| &n.0 == g && n.1 == *i)
                .map(|n| n.2);
            let end = match next {
                Some(e) => Some(e),
                None => match r.ends.get(path) {
                    Some(e) => Some(*e),
                    None => decode(path, true).ok().map(|(len, _)| off + len),
                },
            };
            if let Some(end) = end {
                r.ends.insert(path.clone(), end);
                events.push((g.clone(), *i, end, *at));
            }
        }
        r.events = events;
        r
    }

    /// When `c` was first held, waiting for it up to `timeout`.
    pub fn wait_held(&self, c: &Commit, timeout: Duration) -> Option<Instant> {
        let t0 = Instant::now();
        loop {
            if let Some(t) = self.resolve().held_at(c) {
                return Some(t);
            }
            if t0.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lags of `commits` (held ones) in milliseconds, sorted, and the number never held.
    pub fn lags_ms(&self, commits: &[Commit]) -> (Vec<f64>, usize) {
        let st = self.resolve();
        // Per salts: running maximum end over time, for a binary search per commit.
        let mut by_salts: HashMap<(u32, u32), Vec<(Instant, u64)>> = HashMap::new();
        let mut events = st.events.clone();
        events.sort_by_key(|e| e.3);
        for (g, i, end, t) in events {
            let Some(s) = st.salts.get(&(g, i)) else {
                continue;
            };
            let v = by_salts.entry(*s).or_default();
            let m = v.last().map_or(end, |l| l.1.max(end));
            v.push((t, m));
        }
        let mut lags = Vec::with_capacity(commits.len());
        let mut missing = 0;
        for c in commits {
            let hit = by_salts.get(&c.salts).and_then(|v| {
                let k = v.partition_point(|e| e.1 < c.end);
                v.get(k).map(|e| e.0)
            });
            match hit {
                Some(t) => lags.push(t.saturating_duration_since(c.at).as_secs_f64() * 1e3),
                None => missing += 1,
            }
        }
        lags.sort_by(f64::total_cmp);
        (lags, missing)
    }

    /// Segments whose index never showed an offset-0 header (their commits cannot be matched).
    pub fn indexes_without_header(&self) -> usize {
        let st = self.resolve();
        let idx: HashSet<(String, u32)> = st.events.iter().map(|e| (e.0.clone(), e.1)).collect();
        idx.iter().filter(|k| !st.salts.contains_key(*k)).count()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `q` quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

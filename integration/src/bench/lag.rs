//! Replication lag: when does the replica's listing hold a given commit?
//!
//! The writer side follows the real `-wal` file incrementally ([`WalFollower`]) and records, after
//! a commit, `(instant, salts, committed end offset)`. The replica side ([`Poller`]) lists the
//! replica every 10 ms, decodes each new WAL segment to learn its end offset (and, at offset 0, the
//! salts of its WAL header) and remembers when each `(generation, index)` first reached each end.
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

#[derive(Default)]
struct State {
    seen: HashSet<PathBuf>,
    salts: HashMap<(String, u32), (u32, u32)>,
    /// (generation, index, end, first seen), in the order observed.
    events: Vec<(String, u32, u64, Instant)>,
    decode_errors: u64,
}

impl State {
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

/// Lists a file replica every 10 ms in a background thread.
pub struct Poller {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn list_segments(replica: &Path) -> Vec<(String, u32, u64, PathBuf)> {
    let mut out = Vec::new();
    let Ok(gens) = std::fs::read_dir(replica.join("generations")) else {
        return out;
    };
    for g in gens.flatten() {
        let gen = g.file_name().to_string_lossy().into_owned();
        let Ok(rd) = std::fs::read_dir(g.path().join("wal")) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((i, o)) = name
                .strip_suffix(".wal.lz4")
                .and_then(|s| s.split_once('_'))
            else {
                continue;
            };
            let (Ok(i), Ok(o)) = (u32::from_str_radix(i, 16), u64::from_str_radix(o, 16)) else {
                continue;
            };
            out.push((gen.clone(), i, o, e.path()));
        }
    }
    out.sort();
    out
}

/// Decoded length and, when it starts with one, the WAL header's salts.
fn decode(path: &Path) -> std::io::Result<(u64, Option<(u32, u32)>)> {
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
    }
    let salts = WalHeader::parse(&head).ok().map(|h| (h.salt1, h.salt2));
    Ok((len, salts))
}

fn poll_once(replica: &Path, state: &Mutex<State>) {
    for (gen, idx, off, path) in list_segments(replica) {
        if state.lock().unwrap().seen.contains(&path) {
            continue;
        }
        let now = Instant::now();
        let mut st = match decode(&path) {
            Ok((len, salts)) => {
                let mut st = state.lock().unwrap();
                if off == 0 {
                    if let Some(s) = salts {
                        st.salts.insert((gen.clone(), idx), s);
                    }
                }
                st.events.push((gen, idx, off + len, now));
                st
            }
            Err(_) => {
                // Not complete yet, or removed meanwhile: retry on the next pass.
                let mut st = state.lock().unwrap();
                st.decode_errors += 1;
                if st.decode_errors > 10_000 {
                    st.seen.insert(path);
                }
                continue;
            }
        };
        st.seen.insert(path);
    }
}

impl Poller {
    pub fn start(replica: &Path) -> Poller {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, replica) = (state.clone(), stop.clone(), replica.to_path_buf());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    poll_once(&replica, &state);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Poller {
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn held(&self, c: &Commit) -> bool {
        self.state.lock().unwrap().held_at(c).is_some()
    }

    /// Waits (bounded) until `c` is held; the time it took from now, or `None` on timeout.
    pub fn wait_held(&self, c: &Commit, timeout: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.held(c) {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Lags of `commits` (held ones) in milliseconds, sorted, and the number never held.
    pub fn lags_ms(&self, commits: &[Commit]) -> (Vec<f64>, usize) {
        let st = self.state.lock().unwrap();
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
        let st = self.state.lock().unwrap();
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

//! Following a replica (`restore -f`): restore the latest state, then apply the primary's new WAL
//! segments as they appear, so the output is a read replica that any process may open while it
//! follows.
//!
//! The invariants (ARCHITECTURE.md, "Read replicas"):
//! - Every state a reader of the output can see is the primary's state after one of its commits:
//!   segments are applied whole transactions at a time, in one SQLite transaction of the output
//!   ([`apply`]), and a switch to a fresh restore (a new generation, lost segments, an unknown
//!   position after a crash) is one such transaction too ([`Follower::rebase`]).
//! - A poll's cost does not grow with the replica's retention: it lists only what follows the
//!   follower's position (`list_after` the last applied segment) where the store can list from
//!   a key (S3, GCS), and elsewhere asks for the next segment by name (`Replica::stat`), with a
//!   listing once per `generation_check` and wherever names cannot tell what comes next.
//! - The position beside the output ([`state`]) is never ahead of the output; when it may be
//!   behind or ahead (a crash around a commit), the follower re-bases instead of guessing.
//! - The output is only ever written through SQLite, and only if it is a follower's output (its
//!   state file exists): a user's database at that path is never overwritten.

pub mod apply;
pub mod state;

use crate::crypt::Age;
use crate::error::{Error, ErrorKind, Result};
use crate::layout;
use crate::listing::{Listing, SegmentInfo};
use crate::plan::{self, Plan, Target};
use crate::replica::DynReplica;
use crate::restore;
use rusqlite::Connection;
use state::{Position, State};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How a follower polls.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Time between polls when nothing new was found (`-follow-interval`).
    pub interval: Duration,
    /// Decoded WAL bytes one batch gathers at most before it is applied (a follower far behind
    /// applies in several transactions, each a state of the primary, instead of one huge one).
    pub max_batch_bytes: u64,
    /// How often the generations are listed again, to see a new generation on the primary; on
    /// stores polled by name, also how often the WAL is listed anyway.
    pub generation_check: Duration,
    /// How long a missing WAL segment may stay missing (an upload still under way) before the
    /// follower re-bases on a fresh restore.
    pub gap_grace: Duration,
    /// Passed to the restores (`-parallelism`).
    pub parallelism: usize,
    /// Where the follower reports, shared before it starts so that `-addr` answers during the
    /// first restore too.
    pub status: std::sync::Arc<std::sync::Mutex<FollowStatus>>,
}

impl FollowOptions {
    /// Options for polls every `interval`: the generations are listed again, and a missing
    /// segment waited for, 30 intervals (at least a second) before anything drastic.
    pub fn every(interval: Duration) -> FollowOptions {
        let patience = (interval * 30).max(Duration::from_secs(1));
        FollowOptions {
            interval,
            max_batch_bytes: 256 << 20,
            generation_check: patience,
            gap_grace: patience,
            parallelism: 8,
            status: std::sync::Arc::new(std::sync::Mutex::new(FollowStatus {
                started: Some(SystemTime::now()),
                ..FollowStatus::default()
            })),
        }
    }
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Commits of the primary applied.
    Applied {
        /// How many.
        commits: usize,
        /// The batch was full: more may be waiting, poll again at once.
        more: bool,
    },
    /// Nothing new.
    Idle,
    /// The output was replaced by a fresh restore of `generation`, for `reason`.
    Rebased {
        /// The generation the output now holds.
        generation: String,
        /// Why (logged too).
        reason: &'static str,
    },
}

/// What a follower reports (its `-addr` metrics, its log), shared with whoever serves it.
#[derive(Debug, Clone, Default)]
pub struct FollowStatus {
    /// The position the output holds: generation, WAL index, offset of a commit's end.
    pub generation: String,
    /// See `generation`.
    pub index: u32,
    /// See `generation`.
    pub offset: u64,
    /// When the follower started (the lag counts from it until the first catch-up).
    pub started: Option<SystemTime>,
    /// The last poll that reached the replica.
    pub last_poll: Option<SystemTime>,
    /// The last poll after which the output held everything the replica held.
    pub caught_up: Option<SystemTime>,
    /// Upload time of the newest WAL segment applied.
    pub applied_upload: Option<SystemTime>,
    /// Commits of the primary applied since start.
    pub commits: u64,
    /// Re-bases since start: fresh restores that replaced the output's content.
    pub rebases: u64,
    /// Polls that failed since start.
    pub poll_errors: u64,
}

impl FollowStatus {
    /// Time since the output last held everything the replica held: about the follow interval
    /// while the follower keeps up, growing while it is behind or cannot reach the replica. The
    /// primary's own lag (commit to replica) adds to it; its `-addr` metrics show that one.
    pub fn lag(&self, now: SystemTime) -> Duration {
        self.caught_up
            .or(self.started)
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default()
    }
}

/// A follower of one replica, writing one output database.
pub struct Follower {
    replica: DynReplica,
    age: Age,
    output: PathBuf,
    state_path: PathBuf,
    conn: Connection,
    pos: Position,
    opts: FollowOptions,
    generation_checked: Instant,
    /// The last poll that listed the WAL (rather than probing the next names).
    wal_listed: Instant,
    /// The next poll lists the WAL whatever the store: after a start or a re-base, after a
    /// listing that ended at a gap, and when names could not tell what comes next.
    list_due: bool,
    gap_since: Option<Instant>,
    /// The generation names of the last look for a new one (empty: the next look reads all).
    known_generations: Vec<String>,
    status: std::sync::Arc<std::sync::Mutex<FollowStatus>>,
}

impl Follower {
    /// Resumes the follower of `output`, or restores it first when it does not exist. An output
    /// that exists without a follower's state file is refused: it is not ours to overwrite.
    pub async fn start(
        replica: DynReplica,
        age: Age,
        output: &Path,
        opts: FollowOptions,
    ) -> Result<Follower> {
        let state_path = state::path_for(output);
        if output.exists() {
            let st = match state::read(&state_path) {
                Ok(Some(s)) => Some(s),
                Ok(None) => {
                    return Err(Error::invalid(format!(
                    "{} exists and is not a follower's output (no {}): refusing to write to it; \
                         give -o a new path",
                    output.display(),
                    state_path.display()
                )))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "follower state unreadable: restoring afresh");
                    None
                }
            };
            let conn = apply::open_output(output)?;
            let pos = st.as_ref().map_or_else(
                || Position {
                    generation: String::new(),
                    index: 0,
                    offset: 0,
                    header: None,
                    seed: (0, 0),
                    after: String::new(),
                },
                |s| s.applied.clone(),
            );
            let mut f = Follower::with(replica, age, output, state_path, conn, pos, opts);
            match st {
                Some(s) if !s.pending => {
                    tracing::info!(output = %output.display(), position = %f.position(), "following: resuming");
                }
                Some(_) => {
                    f.rebase("a commit was under way when the follower stopped")
                        .await?;
                }
                None => {
                    f.rebase("the follower's state file was unreadable").await?;
                }
            }
            return Ok(f);
        }
        let (staged, pos) = fresh_restore(&replica, &age, output, opts.parallelism).await?;
        // The state first, then the output: a crash between them leaves no output, which the
        // next start restores again; the other order would leave an output without a state.
        let done = (|| {
            state::write(
                &state_path,
                &State {
                    applied: pos.clone(),
                    pending: false,
                },
                true,
            )
            .map_err(|e| Error::io(format!("write {}", state_path.display()), e))?;
            std::fs::hard_link(&staged, output)
                .map_err(|e| Error::io(format!("create {}", output.display()), e))
        })();
        discard(&staged);
        done?;
        let conn = apply::open_output(output)?;
        let f = Follower::with(replica, age, output, state_path, conn, pos, opts);
        tracing::info!(output = %output.display(), position = %f.position(), "following: restored");
        Ok(f)
    }

    fn with(
        replica: DynReplica,
        age: Age,
        output: &Path,
        state_path: PathBuf,
        conn: Connection,
        pos: Position,
        opts: FollowOptions,
    ) -> Follower {
        Follower {
            replica,
            age,
            output: output.to_path_buf(),
            state_path,
            conn,
            pos,
            generation_checked: Instant::now(),
            wal_listed: Instant::now(),
            list_due: true,
            gap_since: None,
            known_generations: Vec::new(),
            status: opts.status.clone(),
            opts,
        }
        .noted(|_| {})
    }

    /// Updates the shared status (the position always, then `f`).
    fn note(&self, f: impl FnOnce(&mut FollowStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.generation.clone_from(&self.pos.generation);
        s.index = self.pos.index;
        s.offset = self.pos.offset;
        f(&mut s);
    }

    fn noted(self, f: impl FnOnce(&mut FollowStatus)) -> Self {
        self.note(f);
        self
    }

    /// The status this follower keeps up to date, for metrics.
    pub fn status(&self) -> std::sync::Arc<std::sync::Mutex<FollowStatus>> {
        self.status.clone()
    }

    /// A copy of the status now.
    pub fn status_now(&self) -> FollowStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `generation/index:offset`, as walship logs positions.
    pub fn position(&self) -> String {
        format!(
            "{}/{:08x}:{}",
            self.pos.generation, self.pos.index, self.pos.offset
        )
    }

    /// Polls until `stop` resolves: applies what is new, waits `interval` when nothing is. A
    /// store that cannot be reached is logged and tried again; the output keeps its last state.
    pub async fn run(&mut self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(stop);
        let mut failing = false;
        let mut report = Report::new();
        loop {
            let polled = self.poll().await;
            if polled.is_err() {
                self.note(|s| s.poll_errors += 1);
            }
            report.maybe(&self.status_now());
            let wait = match polled {
                Ok(Step::Applied { more: true, .. }) => Duration::ZERO,
                Ok(_) => {
                    if failing {
                        tracing::info!(position = %self.position(), "following: the replica answers again");
                        failing = false;
                    }
                    self.opts.interval
                }
                Err(e) if e.kind() == ErrorKind::Invalid || e.kind() == ErrorKind::Io => {
                    return Err(e)
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, position = %self.position(), "following: poll failed; the output keeps its last state, trying again");
                        failing = true;
                    }
                    self.opts.interval
                }
            };
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One poll: find what follows the position (a listing from it, or the next names),
    /// download it, apply the whole transactions in it. Re-bases when the primary moved to another generation, or when a segment stays missing
    /// longer than `gap_grace` (retention deleted it before the follower applied it).
    pub async fn poll(&mut self) -> Result<Step> {
        // A primary that starts a new generation stops shipping to the old one, so only a
        // follower that has seen nothing new for a while looks for one, at most once per
        // `generation_check`: it lists the generations' names (one delimiter listing), and reads
        // the whole replica only when a name it has not seen appears, since a new generation
        // always has a new random name.
        if self.generation_checked.elapsed() >= self.opts.generation_check {
            self.generation_checked = Instant::now();
            let prefix = format!("{}/", layout::GENERATIONS_DIR);
            let mut names = self.replica.list_names(&prefix).await?;
            names.retain(|n| layout::is_generation(n));
            let look = !names.contains(&self.pos.generation)
                || names.iter().any(|n| !self.known_generations.contains(n));
            if look {
                let listing = Listing::fetch(self.replica.as_ref(), None).await?;
                let latest = plan::choose_generation(&listing, None, Target::Latest)?;
                if latest != self.pos.generation {
                    // Known only once the switch is done: a failed re-base looks again.
                    let step = self
                        .rebase_step("the primary started a new generation")
                        .await?;
                    self.known_generations = settled(&names, &listing);
                    return Ok(step);
                }
                self.known_generations = settled(&names, &listing);
            }
        }
        let g = self.pos.generation.clone();
        // What the output holds once this poll's commits are applied is the replica as listed now.
        let listed_at = SystemTime::now();
        let mut probed = None;
        let mut relist = false;
        if let Some(from) = self.probe_from() {
            match self.gather_probing(from).await {
                Ok((gathered, unsure)) => {
                    relist = unsure;
                    // Nothing taken yet: list now rather than a poll later.
                    if !(unsure && gathered.spools.is_empty()) {
                        probed = Some(Ok(gathered));
                    }
                }
                Err(e) => probed = Some(Err(e)),
            }
        }
        let gathered = match probed {
            Some(r) => r,
            None => {
                relist = false;
                self.wal_listed = Instant::now();
                let listed = self
                    .replica
                    .list_after(&layout::wal_prefix(&g), &self.pos.after)
                    .await?;
                let mut segs: Vec<SegmentInfo> = listed
                    .into_iter()
                    .filter_map(|o| match layout::parse_key(&o.key) {
                        Some(layout::Entry::WalSegment {
                            generation,
                            index,
                            offset,
                        }) if generation == g => {
                            Some(SegmentInfo::listed(generation, index, offset, o))
                        }
                        _ => None,
                    })
                    .collect();
                segs.sort_by_key(|s| (s.index, s.offset));
                let r = self.gather(&segs).await;
                // A gap stays in view: the next polls list too, until it fills or the grace ends.
                if let Ok(gathered) = &r {
                    relist = gathered.gap;
                }
                r
            }
        };
        self.list_due = relist;
        let gathered = match gathered {
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                tracing::error!(error = %e, position = %self.position(), "following: a shipped WAL segment is damaged");
                return self.rebase_step("a shipped WAL segment is damaged").await;
            }
            r => r?,
        };
        let caught_up = !gathered.gap && !gathered.more && !relist;
        self.note(|s| {
            s.last_poll = Some(listed_at);
            if caught_up && gathered.commits == 0 {
                s.caught_up = Some(listed_at);
            }
        });
        if gathered.gap && gathered.commits == 0 {
            let since = *self.gap_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.opts.gap_grace {
                return self
                    .rebase_step("a WAL segment the follower needs is missing from the replica")
                    .await;
            }
        } else {
            self.gap_since = None;
        }
        if gathered.commits == 0 {
            return Ok(Step::Idle);
        }
        self.generation_checked = Instant::now();
        let step = match self.apply(gathered).await? {
            // A listing is due: make it now rather than an interval later.
            Step::Applied { commits, more } => Step::Applied {
                commits,
                more: more || relist,
            },
            other => other,
        };
        if caught_up {
            self.note(|s| s.caught_up = Some(listed_at));
        }
        Ok(step)
    }

    async fn rebase_step(&mut self, reason: &'static str) -> Result<Step> {
        self.rebase(reason).await?;
        Ok(Step::Rebased {
            generation: self.pos.generation.clone(),
            reason,
        })
    }

    /// Replaces the output's content by a fresh restore of the replica's latest state, in one
    /// transaction of the output: readers see the old state or the new one.
    pub async fn rebase(&mut self, reason: &'static str) -> Result<()> {
        tracing::info!(output = %self.output.display(), reason, "following: restoring afresh");
        // The restore holds the replica as listed when it began.
        let listed_at = SystemTime::now();
        let (staged, pos) = fresh_restore(
            &self.replica,
            &self.age,
            &self.output,
            self.opts.parallelism,
        )
        .await?;
        let res = self.write_whole(&staged, &pos);
        discard(&staged);
        res?;
        self.pos = pos;
        self.gap_since = None;
        self.list_due = true;
        self.generation_checked = Instant::now();
        self.note(|s| {
            s.rebases += 1;
            s.last_poll = Some(listed_at);
            s.caught_up = Some(listed_at);
        });
        tracing::info!(output = %self.output.display(), position = %self.position(), "following: restored afresh");
        Ok(())
    }

    fn write_whole(&self, staged: &Path, pos: &Position) -> Result<()> {
        let f =
            File::open(staged).map_err(|e| Error::io(format!("open {}", staged.display()), e))?;
        let len = f
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", staged.display()), e))?
            .len();
        let mut head = [0u8; 100];
        apply::read_at(&f, 0, &mut head)?;
        let page_size = match u16::from_be_bytes([head[16], head[17]]) {
            1 => 65536,
            n => usize::from(n),
        };
        let pages = u32::try_from(len / page_size as u64)
            .map_err(|_| Error::invalid("restored database too large"))?;
        self.commit(
            1..=pages,
            |p, buf| apply::read_at(&f, u64::from(p - 1) * page_size as u64, buf),
            page_size,
            pages,
            pos,
        )
    }

    /// Writes a batch with the state file's two steps around its commit.
    fn commit(
        &self,
        pages: impl IntoIterator<Item = u32>,
        read_page: impl FnMut(u32, &mut [u8]) -> Result<()>,
        page_size: usize,
        size: u32,
        pos: &Position,
    ) -> Result<()> {
        let write_state = |pending: bool| {
            state::write(
                &self.state_path,
                &State {
                    applied: pos.clone(),
                    pending,
                },
                pending,
            )
            .map_err(|e| Error::io(format!("write {}", self.state_path.display()), e))
        };
        apply::write_batch(&self.conn, pages, read_page, page_size, size, || {
            write_state(true)
        })?;
        write_state(false)
    }

    /// Downloads the segments that continue the position, in order, into one spool per index,
    /// until a gap, the end, or `max_batch_bytes`, and scans them.
    ///
    /// A full batch that holds no commit yet keeps gathering (another `max_batch_bytes` at a
    /// time) until one: a transaction larger than a batch would otherwise come back without a
    /// commit at every poll, and the follower would stall on it for ever.
    async fn gather(&self, segs: &[SegmentInfo]) -> Result<Gathered> {
        let mut g = Gathering::new(self);
        for s in segs {
            if g.full(self)? {
                break;
            }
            let starts_index = s.index == g.index + 1 && s.offset == 0;
            let continues = s.index == g.index && s.offset <= g.end;
            if !(starts_index || continues) {
                g.out.gap = true;
                break;
            }
            self.take(&mut g, s).await?;
        }
        self.scanned(g.out)
    }

    /// Where the next segment starts when it can be named without a listing: the follower has
    /// applied every byte of the segments it took (or none of its index yet), so the next one
    /// is `<index>_<offset>`. `None` where the store lists from a key by itself, or when a
    /// listing is due (see `list_due`), with a segment applied only in part, and once every
    /// `generation_check`, so that what names cannot show (segments retention deleted) is
    /// seen within that.
    fn probe_from(&self) -> Option<(u32, u64)> {
        let a = &self.pos.after;
        let whole = a.is_empty() || a.ends_with(".wal.lz4") || a.ends_with('_');
        let probing = !self.replica.lists_after_natively()
            && whole
            && !self.list_due
            && self.gap_since.is_none()
            && self.wal_listed.elapsed() < self.opts.generation_check;
        probing.then_some((self.pos.index, self.pos.offset))
    }

    /// [`Follower::gather`] by names instead of a listing: `stat` the segment that would come
    /// next in the index, take it, and so on. Also says whether a listing must decide what
    /// comes next (`true`): when the next index has begun (`<index+1>_00000000` exists) but
    /// no segment starts where this index's end was taken, the rest of this index may sit in
    /// a segment that starts earlier (v0.3.13 ships again from an earlier offset), or be
    /// missing; names cannot tell, and jumping to the next index would skip commits.
    async fn gather_probing(&self, from: (u32, u64)) -> Result<(Gathered, bool)> {
        let generation = self.pos.generation.clone();
        let mut g = Gathering::new(self);
        (g.index, g.end) = from;
        let mut unsure = false;
        loop {
            if g.full(self)? {
                break;
            }
            let key = layout::wal_segment_key(&generation, g.index, g.end);
            match self.replica.stat(&key).await? {
                Some(o) => {
                    let at = (g.index, g.end);
                    let s = SegmentInfo::listed(generation.clone(), g.index, g.end, o);
                    self.take(&mut g, &s).await?;
                    if (g.index, g.end) == at {
                        // An empty segment: its name would come back for ever.
                        unsure = true;
                        break;
                    }
                }
                None => {
                    let next = layout::wal_segment_key(&generation, g.index + 1, 0);
                    unsure = self.replica.stat(&next).await?.is_some();
                    break;
                }
            }
        }
        Ok((self.scanned(g.out)?, unsure))
    }

    /// Downloads segment `s` (which continues `g`'s position or starts the next index) into
    /// the spool of its index.
    async fn take(&self, g: &mut Gathering, s: &SegmentInfo) -> Result<()> {
        if s.index == g.index + 1 && s.offset == 0 {
            g.index = s.index;
            g.end = 0;
        }
        let (index, end) = (g.index, g.end);
        if g.out.spools.last().is_none_or(|sp| sp.index != index) {
            let file = tempfile_beside(&self.output)?;
            g.out.spools.push(Spool {
                index,
                base: end,
                file,
                len: 0,
                segments: Vec::new(),
            });
        }
        let sp = g.out.spools.last_mut().expect("pushed above");
        let skip = end - s.offset;
        let w = restore::Skip {
            inner: std::io::BufWriter::new(sp.file.try_clone().map_err(|e| Error::io("spool", e))?),
            left: skip,
        };
        let (n, w) =
            restore::download_decoded(self.replica.clone(), &self.age, s.key.clone(), "spool", w)
                .await?;
        let mut inner = w.inner;
        std::io::Write::flush(&mut inner).map_err(|e| Error::io("spool", e))?;
        let seg_end = s.offset + n;
        if seg_end > end {
            sp.len += seg_end - end;
            g.bytes += seg_end - end;
            g.end = seg_end;
        }
        sp.segments
            .push((s.key.clone(), s.offset, seg_end, s.created));
        Ok(())
    }

    /// The gathered spools with their scans.
    fn scanned(&self, mut out: Gathered) -> Result<Gathered> {
        let (scans, commits) = self.scan(&out.spools, out.more)?;
        out.scans = scans;
        out.commits = commits;
        Ok(out)
    }

    /// Scans each spool from the position's checksum chain: the scans and how many commits they
    /// hold. `more`: segments wait after the last spool, so its invalid tail is an unfinished
    /// download rather than damage.
    fn scan(&self, spools: &[Spool], more: bool) -> Result<(Vec<apply::Scanned>, usize)> {
        // A later index means the earlier one's frames after its last commit were never
        // committed (the primary restarted its WAL past them).
        let (mut header, mut seed) = (self.pos.header, self.pos.seed);
        let mut scans = Vec::with_capacity(spools.len());
        let mut commits = 0;
        for (i, sp) in spools.iter().enumerate() {
            let (h, sd) = if sp.base == 0 {
                (None, (0, 0))
            } else {
                (header, seed)
            };
            let sc = apply::scan_spool(&sp.file, i, sp.base, h, sd)?;
            if sc.valid_len < sp.len && i + 1 == spools.len() && !more {
                // Shipped bytes that are not valid frames, at the end of what exists: walship
                // and v0.3.13 ship only frames they read as valid, so these are damaged.
                return Err(Error::corrupt(format!(
                    "WAL index {:08x} of generation {}: the frames shipped from offset {} are not valid past byte {}",
                    sp.index,
                    self.pos.generation,
                    sp.base,
                    sp.base + sc.valid_len
                )));
            }
            header = Some(sc.header);
            if let Some(last) = sc.commits.last() {
                seed = last.seed;
            } else if sp.base == 0 {
                seed = sc.header.checksum;
            }
            commits += sc.commits.len();
            scans.push(sc);
        }
        Ok((scans, commits))
    }

    async fn apply(&mut self, g: Gathered) -> Result<Step> {
        // The last spool with a commit decides the new position.
        let (last_i, last) = g
            .scans
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, sc)| sc.commits.last().map(|c| (i, c.clone())))
            .expect("commits > 0");
        let page_size = g.scans[last_i].header.page_size as usize;
        let (pages, size) = apply::batch_pages(g.scans.iter().flat_map(|s| &s.commits));
        let sp = &g.spools[last_i];
        let pos = Position {
            generation: self.pos.generation.clone(),
            index: sp.index,
            offset: last.end,
            header: Some(g.scans[last_i].header),
            seed: last.seed,
            after: after_key(&sp.segments, last.end),
        };
        let files: Vec<&File> = g.spools.iter().map(|s| &s.file).collect();
        self.commit(
            pages.keys().copied(),
            |p, buf| {
                let at = pages[&p];
                apply::read_at(files[at.spool], at.at, buf)
            },
            page_size,
            size,
            &pos,
        )?;
        let newest = sp
            .segments
            .iter()
            .filter(|(_, start, _, _)| *start < last.end)
            .map(|(_, _, _, t)| *t)
            .max();
        tracing::debug!(position = %format!("{}/{:08x}:{}", pos.generation, pos.index, pos.offset), commits = g.commits, pages = pages.len(), "following: applied");
        self.pos = pos;
        self.note(|s| {
            s.commits += g.commits as u64;
            if newest.is_some() {
                s.applied_upload = newest;
            }
        });
        Ok(Step::Applied {
            commits: g.commits,
            more: g.more,
        })
    }
}

/// The follower's periodic log line: once a minute when commits were applied or the lag is
/// high, so a quiet follower stays quiet and a stuck one says so.
struct Report {
    last: Instant,
    commits: u64,
}

impl Report {
    const EVERY: Duration = Duration::from_secs(60);

    fn new() -> Report {
        Report {
            last: Instant::now(),
            commits: 0,
        }
    }

    fn maybe(&mut self, s: &FollowStatus) {
        if self.last.elapsed() < Self::EVERY {
            return;
        }
        let lag = s.lag(SystemTime::now());
        let applied = s.commits - self.commits.min(s.commits);
        if applied > 0 || lag >= Self::EVERY {
            let position = format!("{}/{:08x}:{}", s.generation, s.index, s.offset);
            if lag >= Self::EVERY {
                tracing::warn!(position = %position, commits = applied, lag = ?lag, "following: behind the replica");
            } else {
                tracing::info!(position = %position, commits = applied, lag = ?lag, "following");
            }
        }
        self.last = Instant::now();
        self.commits = s.commits;
    }
}

/// The generation `names` a follower need not look at again: those with a snapshot in
/// `listing`, and those with no object at all (a deleted generation whose empty directory the
/// store keeps). A generation with objects but no snapshot yet is one being started right now:
/// it stays unknown, so the next look reads it again.
fn settled(names: &[String], listing: &Listing) -> Vec<String> {
    names
        .iter()
        .filter(|n| {
            !listing.keys.contains_key(n.as_str())
                || listing.snapshots.iter().any(|s| &s.generation == *n)
        })
        .cloned()
        .collect()
}

/// One index's new bytes, decoded, from byte `base` of its WAL.
struct Spool {
    index: u32,
    base: u64,
    file: File,
    len: u64,
    /// (key, first byte, end byte, upload time) of each segment in it.
    segments: Vec<(String, u64, u64, SystemTime)>,
}

/// A batch being gathered: the spools so far and where they end.
struct Gathering {
    out: Gathered,
    index: u32,
    end: u64,
    bytes: u64,
    limit: u64,
}

impl Gathering {
    fn new(f: &Follower) -> Gathering {
        Gathering {
            out: Gathered::default(),
            index: f.pos.index,
            end: f.pos.offset,
            bytes: 0,
            limit: f.opts.max_batch_bytes,
        }
    }

    /// Whether the batch is full, which it is only once it holds a commit: a batch without
    /// one applies nothing, and the same batch would come back at every poll.
    fn full(&mut self, f: &Follower) -> Result<bool> {
        if self.bytes < self.limit {
            return Ok(false);
        }
        if f.scan(&self.out.spools, true)?.1 > 0 {
            self.out.more = true;
            return Ok(true);
        }
        tracing::debug!(
            bytes = self.bytes,
            "following: one transaction is larger than a batch; gathering on to its commit"
        );
        // Doubling: each check scans the spools from their start, so the scans of a huge
        // transaction add up to about twice its size.
        self.limit = self
            .bytes
            .saturating_mul(2)
            .max(self.bytes.saturating_add(f.opts.max_batch_bytes));
        Ok(false)
    }
}

#[derive(Default)]
struct Gathered {
    spools: Vec<Spool>,
    scans: Vec<apply::Scanned>,
    commits: usize,
    /// A segment that should come next is not there (yet).
    gap: bool,
    /// The batch is full; more segments wait.
    more: bool,
}

/// Where the next listing continues: after the segment that holds byte `end` when its bytes
/// after `end` are not applied (listing it again), else after the last segment.
fn after_key(segments: &[(String, u64, u64, SystemTime)], end: u64) -> String {
    for (key, start, seg_end, _) in segments {
        if *start <= end && end < *seg_end {
            return key
                .strip_suffix(".wal.lz4")
                .unwrap_or(key.as_str())
                .to_owned();
        }
    }
    segments.last().map(|s| s.0.clone()).unwrap_or_default()
}

fn tempfile_beside(output: &Path) -> Result<File> {
    let dir = output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile_in(dir)
}

/// An unnamed temporary file in `dir` (gone when closed, whatever happens to the process).
/// Filesystems without `O_TMPFILE` (some network and FUSE filesystems, old kernels) get a named
/// file unlinked at once instead: only a crash in between leaves it, under a name that says
/// whose it is.
fn tempfile_in(dir: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e| Error::io(format!("create a temporary file in {}", dir.display()), e);
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
    {
        Ok(f) => Ok(f),
        Err(e) if tmpfile_unsupported(&e) => named_then_unlinked(dir).map_err(failed),
        Err(e) => Err(failed(e)),
    }
}

fn named_then_unlinked(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(
        ".walship-follow-spool.{}-{n}.tmp",
        std::process::id()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// Whether `open(O_TMPFILE)` failed because the filesystem or kernel lacks it (as open(2)
/// lists: EOPNOTSUPP from the filesystem, EISDIR or EINVAL from kernels that do not know it).
fn tmpfile_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
    )
}

fn staging_for(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".walship-follow-restore");
    PathBuf::from(s)
}

fn discard(staged: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut s = staged.as_os_str().to_owned();
        s.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(s));
    }
}

/// Restores the latest state beside `output` and returns it with the position it holds.
async fn fresh_restore(
    replica: &DynReplica,
    age: &Age,
    output: &Path,
    parallelism: usize,
) -> Result<(PathBuf, Position)> {
    let listing = Listing::fetch(replica.as_ref(), None).await?;
    let plan = plan::plan(&listing, None, Target::Latest)?;
    let staged = staging_for(output);
    discard(&staged);
    let res = async {
        restore::execute(replica.clone(), age, &plan, &staged, parallelism).await?;
        quick_check(&staged)?;
        position_after(replica, age, &plan, output).await
    }
    .await;
    match res {
        Ok(pos) => Ok((staged, pos)),
        Err(e) => {
            discard(&staged);
            Err(e)
        }
    }
}

fn quick_check(db: &Path) -> Result<()> {
    let conn = Connection::open(db).map_err(|e| Error::sqlite("quick_check", e))?;
    let ok: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| Error::sqlite("quick_check", e))?;
    if ok != "ok" {
        return Err(Error::corrupt(format!(
            "the restored database fails quick_check: {ok}"
        )));
    }
    Ok(())
}

/// The position a restore of `plan` reached: the last commit of its last index, found by
/// reading that index again (one index, bounded by the primary's checkpoint thresholds).
async fn position_after(
    replica: &DynReplica,
    age: &Age,
    plan: &Plan,
    output: &Path,
) -> Result<Position> {
    let g = plan.generation.clone();
    let Some((index, segs)) = plan.indexes.last() else {
        let index = plan.snapshot.index;
        return Ok(Position {
            after: format!("{}{index:08x}_", layout::wal_prefix(&g)),
            generation: g,
            index,
            offset: 0,
            header: None,
            seed: (0, 0),
        });
    };
    let file = tempfile_beside(output)?;
    let mut end = 0u64;
    let mut segments = Vec::new();
    for s in segs {
        let w = restore::Skip {
            inner: std::io::BufWriter::new(file.try_clone().map_err(|e| Error::io("spool", e))?),
            left: end.saturating_sub(s.offset),
        };
        let (n, w) =
            restore::download_decoded(replica.clone(), age, s.key.clone(), "spool", w).await?;
        let mut inner = w.inner;
        std::io::Write::flush(&mut inner).map_err(|e| Error::io("spool", e))?;
        end = end.max(s.offset + n);
        segments.push((s.key.clone(), s.offset, s.offset + n, s.created));
    }
    let sc = apply::scan_spool(&file, 0, 0, None, (0, 0))?;
    Ok(match sc.commits.last() {
        Some(c) => Position {
            generation: g,
            index: *index,
            offset: c.end,
            header: Some(sc.header),
            seed: c.seed,
            after: after_key(&segments, c.end),
        },
        None => Position {
            after: format!("{}{index:08x}_", layout::wal_prefix(&g)),
            generation: g,
            index: *index,
            offset: 0,
            header: None,
            seed: (0, 0),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_being_started_is_looked_at_again() {
        let mut l = Listing::default();
        for g in ["a", "b"] {
            l.keys
                .insert(g.into(), vec![format!("generations/{g}/wal/x")]);
        }
        l.snapshots.push(crate::listing::SnapshotInfo {
            generation: "a".into(),
            index: 0,
            size: 1,
            created: SystemTime::UNIX_EPOCH,
            key: "generations/a/snapshots/00000000.snapshot.lz4".into(),
        });
        // a: has a snapshot; b: WAL but no snapshot yet (being started); c: no object at all
        // (an empty directory left by a deleted generation).
        let names = ["a", "b", "c"].map(String::from);
        assert_eq!(settled(&names, &l), ["a", "c"]);
    }

    #[test]
    fn the_lag_counts_from_the_last_catch_up_else_from_the_start() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = FollowStatus {
            started: Some(t),
            ..FollowStatus::default()
        };
        assert_eq!(s.lag(t + Duration::from_secs(5)), Duration::from_secs(5));
        s.caught_up = Some(t + Duration::from_secs(4));
        assert_eq!(s.lag(t + Duration::from_secs(5)), Duration::from_secs(1));
        // A clock that stepped back gives no lag rather than a panic.
        assert_eq!(s.lag(t), Duration::ZERO);
        assert_eq!(FollowStatus::default().lag(t), Duration::ZERO);
    }

    /// A primary's database and its WAL, shipped by hand to a replica in memory: a snapshot at
    /// index 0 and the WAL's first transaction, so that a follower can start.
    struct Shipped {
        d: tempfile::TempDir,
        app: Connection,
        mem: std::sync::Arc<crate::testing::MemoryReplica>,
        /// Bytes of the current WAL shipped so far.
        shipped: usize,
        index: u32,
    }

    const G: &str = "0123456789abcdef";

    impl Shipped {
        async fn new() -> Shipped {
            let d = tempfile::tempdir().unwrap();
            let app = Connection::open(d.path().join("src.db")).unwrap();
            app.execute_batch(
                "PRAGMA journal_mode = wal; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (x INTEGER, b BLOB); INSERT INTO t VALUES (0, x'00');
                 PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .unwrap();
            let mut s = Shipped {
                d,
                app,
                mem: crate::testing::MemoryReplica::new(),
                shipped: 0,
                index: 0,
            };
            let snap = std::fs::read(s.d.path().join("src.db")).unwrap();
            s.put(layout::snapshot_key(G, 0), &snap).await;
            s.app
                .execute("INSERT INTO t VALUES (1, x'01')", [])
                .unwrap();
            s.ship(usize::MAX).await;
            s
        }

        async fn put(&self, key: String, raw: &[u8]) {
            use crate::replica::{PutSource, Replica};
            let body = bytes::Bytes::from(crate::codec::compress(raw));
            self.mem.put(&key, PutSource::Bytes(body)).await.unwrap();
        }

        /// Ships what the WAL holds beyond what was shipped, in segments of at most `frames`
        /// frames each.
        async fn ship(&mut self, frames: usize) {
            let wal = std::fs::read(self.d.path().join("src.db-wal")).unwrap();
            let page = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
            let step = frames.saturating_mul(24 + page);
            while self.shipped < wal.len() {
                let end = self.shipped.saturating_add(step).min(wal.len());
                let key = layout::wal_segment_key(G, self.index, self.shipped as u64);
                self.put(key, &wal[self.shipped..end]).await;
                self.shipped = end;
            }
        }

        /// Ships what the WAL holds beyond what was shipped as one segment that starts a frame
        /// early, overlapping the last one (as v0.3.13 may ship again from an earlier offset).
        async fn ship_overlapping(&mut self) {
            let wal = std::fs::read(self.d.path().join("src.db-wal")).unwrap();
            let page = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
            let start = self.shipped - (24 + page);
            assert!(start >= 32, "a frame to overlap");
            let key = layout::wal_segment_key(G, self.index, start as u64);
            self.put(key, &wal[start..]).await;
            self.shipped = wal.len();
        }

        /// An application checkpoint that restarts the WAL: what follows is the next index.
        fn restart_wal(&mut self) {
            self.app
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
            self.index += 1;
            self.shipped = 0;
        }

        fn out(&self) -> PathBuf {
            self.d.path().join("out.db")
        }

        async fn follower(&self, replica: DynReplica, opts: FollowOptions) -> Follower {
            Follower::start(replica, Age::default(), &self.out(), opts)
                .await
                .unwrap()
        }

        fn count(&self) -> i64 {
            Connection::open(self.out())
                .unwrap()
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        }
    }

    /// A transaction split over segments larger than a batch, none of them but the last holding
    /// its commit (a writer may cut segments anywhere between frames): the follower gathers on
    /// to the commit, listing (S3) or probing names (other stores). Before, every poll gathered
    /// the same commit-less batch and came back Idle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_larger_than_a_batch_is_applied() {
        for native in [true, false] {
            let mut s = Shipped::new().await;
            s.mem.set_lists_after_natively(native);
            let opts = FollowOptions {
                max_batch_bytes: 1,
                ..FollowOptions::every(Duration::from_millis(10))
            };
            let mut f = s.follower(s.mem.clone(), opts).await;
            assert_eq!(s.count(), 2);
            // One transaction of ~60 pages, shipped as segments of two frames each.
            s.app
                .execute_batch(
                    "BEGIN; WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 61)
                     INSERT INTO t SELECT i, randomblob(3000) FROM n; COMMIT;",
                )
                .unwrap();
            let before = s.mem.keys().len();
            s.ship(2).await;
            assert!(s.mem.keys().len() - before > 20, "segments shipped");
            let mut steps = Vec::new();
            for _ in 0..5 {
                let step = f.poll().await.unwrap();
                steps.push(step.clone());
                if matches!(step, Step::Applied { .. }) {
                    break;
                }
            }
            // (Probing cannot know that nothing follows a full batch: it may say `more`.)
            assert!(
                matches!(steps.last(), Some(Step::Applied { commits: 1, .. })),
                "native listing {native}: polls {steps:?}"
            );
            assert_eq!(s.count(), 62, "native listing {native}");
        }
    }

    /// A store that cannot list from a key (a local directory, SFTP, Azure): after the first
    /// poll (a listing), an idle poll costs two `stat`s (the next segment of the index, the
    /// first of the next index) and no listing, whatever the history; new segments are found
    /// by name; a WAL restart costs one listing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_of_a_store_without_start_after_probes_the_next_names() {
        use crate::testing::{Faulty, Op};
        let mut s = Shipped::new().await;
        // A long history before the follower's position does not change what a poll costs.
        for i in 0..50 {
            s.app
                .execute("INSERT INTO t VALUES (?1, x'02')", [100 + i])
                .unwrap();
            s.ship(usize::MAX).await;
        }
        let faulty = Faulty::new(s.mem.clone());
        let opts = FollowOptions {
            generation_check: Duration::from_secs(3600),
            ..FollowOptions::every(Duration::from_millis(10))
        };
        let mut f = s.follower(faulty.clone(), opts).await;
        assert_eq!(s.count(), 52);
        let lists = faulty.calls(Op::List);
        assert_eq!(f.poll().await.unwrap(), Step::Idle);
        assert_eq!(faulty.calls(Op::List) - lists, 1, "the first poll lists");
        let (lists, stats) = (faulty.calls(Op::List), faulty.calls(Op::Stat));
        for _ in 0..5 {
            assert_eq!(f.poll().await.unwrap(), Step::Idle);
        }
        assert_eq!(faulty.calls(Op::List) - lists, 0, "idle polls listed");
        assert_eq!(
            faulty.calls(Op::Stat) - stats,
            10,
            "two stats per idle poll"
        );

        // New segments of the index: found by name.
        for x in [200, 201] {
            s.app
                .execute("INSERT INTO t VALUES (?1, x'03')", [x])
                .unwrap();
            s.ship(usize::MAX).await;
        }
        assert_eq!(
            f.poll().await.unwrap(),
            Step::Applied {
                commits: 2,
                more: false
            }
        );
        assert_eq!(faulty.calls(Op::List) - lists, 0, "segments found by name");
        // A WAL restart: the next index's first segment shows it, a listing takes it.
        s.restart_wal();
        s.app
            .execute("INSERT INTO t VALUES (202, x'04')", [])
            .unwrap();
        s.ship(usize::MAX).await;
        assert!(matches!(
            f.poll().await.unwrap(),
            Step::Applied { commits: 1, .. }
        ));
        assert_eq!(s.count(), 55);
        assert_eq!(f.status_now().index, 1);
        assert_eq!(faulty.calls(Op::List) - lists, 1, "one listing per restart");
    }

    /// Polled by name, a segment that overlaps the position (shipped again from an earlier
    /// offset) followed by a WAL restart: the follower lists before it moves to the next index,
    /// and applies the overlapping segment's commit. Before, the first segment of the next index
    /// was taken by name and the overlapping segment's commit was skipped for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_polling_by_name_never_skips_the_rest_of_an_index() {
        let mut s = Shipped::new().await;
        let opts = FollowOptions {
            generation_check: Duration::from_secs(3600),
            ..FollowOptions::every(Duration::from_millis(10))
        };
        let mut f = s.follower(s.mem.clone(), opts).await;
        assert_eq!(f.poll().await.unwrap(), Step::Idle);
        // Several frames, so the overlapping segment starts inside this one.
        s.app
            .execute("INSERT INTO t VALUES (10, randomblob(9000))", [])
            .unwrap();
        s.ship(usize::MAX).await;
        // Overflow pages that only this transaction writes: the next index's images of the
        // table's leaf page cannot bring them back if it is skipped.
        s.app
            .execute("INSERT INTO t VALUES (11, randomblob(20000))", [])
            .unwrap();
        s.ship_overlapping().await;
        s.restart_wal();
        s.app
            .execute("INSERT INTO t VALUES (12, x'0c')", [])
            .unwrap();
        s.ship(usize::MAX).await;
        for _ in 0..5 {
            if f.poll().await.unwrap() == Step::Idle {
                break;
            }
        }
        assert_eq!(
            s.mem.keys().len(),
            5,
            "snapshot, 3 segments of index 0, 1 of index 1"
        );
        assert_eq!(s.count(), 5, "every commit applied");
        assert_eq!(f.status_now().index, 1);
        let content = |c: &Connection| -> (String, String) {
            let rows = c
                .query_row(
                    "SELECT group_concat(x || ':' || hex(b), ',') FROM (SELECT * FROM t ORDER BY x)",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            let check = c
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap_or_else(|e: rusqlite::Error| format!("unreadable: {e}"));
            (rows, check)
        };
        let got = content(&Connection::open(s.out()).unwrap());
        assert_eq!(got.1, "ok");
        assert!(
            got == content(&s.app),
            "the output differs from the primary"
        );
    }

    #[test]
    fn spool_files_fall_back_where_the_filesystem_has_no_tmpfile() {
        for errno in [libc::EOPNOTSUPP, libc::EISDIR, libc::EINVAL] {
            assert!(tmpfile_unsupported(&std::io::Error::from_raw_os_error(
                errno
            )));
        }
        // A directory that is not there, or not ours to write: a real error, not a fallback.
        for errno in [libc::ENOENT, libc::EACCES, libc::ENOSPC] {
            assert!(!tmpfile_unsupported(&std::io::Error::from_raw_os_error(
                errno
            )));
        }
        let d = tempfile::tempdir().unwrap();
        for mut f in [
            tempfile_in(d.path()).unwrap(),
            named_then_unlinked(d.path()).unwrap(),
        ] {
            std::io::Write::write_all(&mut f, b"spool").unwrap();
            let mut back = [0u8; 5];
            apply::read_at(&f, 0, &mut back).unwrap();
            assert_eq!(&back, b"spool");
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn listings_continue_after_what_is_wholly_applied() {
        let t = SystemTime::UNIX_EPOCH;
        let segs = vec![
            ("g/wal/00000001_00000000.wal.lz4".to_owned(), 0, 100, t),
            ("g/wal/00000001_00000064.wal.lz4".to_owned(), 100, 250, t),
        ];
        // Everything applied: continue after the last segment.
        assert_eq!(after_key(&segs, 250), "g/wal/00000001_00000064.wal.lz4");
        // Its tail not applied: list that segment again (the bare name sorts before its key).
        assert_eq!(after_key(&segs, 180), "g/wal/00000001_00000064");
        assert!("g/wal/00000001_00000064" < "g/wal/00000001_00000064.wal.lz4");
        assert_eq!(after_key(&segs, 40), "g/wal/00000001_00000000");
    }
}

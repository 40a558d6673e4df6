//! Restore planning (format §5) as a pure function: which generation, snapshot and WAL segments.
//!
//! Differences from v0.3.13, on purpose: listings are sorted here, never trusted; a timestamp
//! after the newest object restores the newest state; a missing index or a missing initial
//! segment is an error naming the object; indexes below the snapshot are not inspected.

use crate::error::{Error, Result};
use crate::listing::{Listing, SegmentInfo, SnapshotInfo};
use std::time::SystemTime;

/// The state a restore aims for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The newest state the chosen generation holds.
    Latest,
    /// Inclusive upper bound on the WAL index (`-index`).
    Index(u32),
    /// State as of this moment (`-timestamp`).
    Time(SystemTime),
    /// Exactly the WAL up to byte `offset` of index `index` (a restore drill's position, where a
    /// segment ends); segments starting at or after it are left out.
    Position(u32, u64),
}

/// What a restore fetches: one snapshot of one generation and the WAL segments to replay on it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The generation everything comes from.
    pub generation: String,
    /// The snapshot to start from: the newest at or before the target.
    pub snapshot: SnapshotInfo,
    /// Segments grouped per WAL index, ascending, each group ascending by offset from 0.
    pub indexes: Vec<(u32, Vec<SegmentInfo>)>,
    /// Newest creation time in the generation (used to choose among replicas).
    pub updated: SystemTime,
}

/// What a restore reads: the restore budget `walship replicas` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    /// Objects fetched: the snapshot and every segment.
    pub objects: u64,
    /// WAL segments among them (each a request whose latency a long history multiplies).
    pub segments: u64,
    /// WAL indexes replayed (each ends with a checkpoint of the restored file).
    pub indexes: u64,
    /// Stored bytes downloaded (compressed, possibly encrypted).
    pub bytes: u64,
}

impl Plan {
    /// The objects and bytes this plan downloads.
    pub fn reads(&self) -> Reads {
        let segments = self.indexes.iter().map(|(_, v)| v.len() as u64).sum();
        Reads {
            objects: 1 + segments,
            segments,
            indexes: self.indexes.len() as u64,
            bytes: self.snapshot.size
                + self
                    .indexes
                    .iter()
                    .flat_map(|(_, v)| v)
                    .map(|s| s.size)
                    .sum::<u64>(),
        }
    }
}

/// Formats a time for restore messages: UTC RFC 3339 with nanoseconds, like Go's `RFC3339Nano`.
pub fn fmt_time(t: SystemTime) -> String {
    crate::timefmt::rfc3339_nano(t)
}

/// Chooses the generation to restore from (format §5, with v0.3.13's #564 fixed).
pub fn choose_generation(
    listing: &Listing,
    generation: Option<&str>,
    target: Target,
) -> Result<String> {
    let mut best: Option<(SystemTime, SystemTime, String)> = None;
    for g in listing.generations() {
        if generation.is_some_and(|want| want != g) {
            continue;
        }
        let Some((created, updated)) = listing.bounds(&g) else {
            continue;
        };
        let has_snapshot = listing.snapshots.iter().any(|s| {
            s.generation == g
                && match target {
                    Target::Time(t) => s.created <= t,
                    Target::Index(i) | Target::Position(i, _) => s.index <= i,
                    Target::Latest => true,
                }
        });
        if !has_snapshot {
            continue;
        }
        if let Target::Time(t) = target {
            if created > t {
                continue;
            }
        }
        let cand = (updated, created, g);
        if best.as_ref().is_none_or(|b| cand > *b) {
            best = Some(cand);
        }
    }
    if let Some((_, _, g)) = best {
        return Ok(g);
    }
    if listing.snapshots.is_empty() && listing.segments.is_empty() {
        return Err(Error::not_found("no matching backups found"));
    }
    Err(match (target, generation) {
        (Target::Time(t), _) => {
            let oldest = listing
                .snapshots
                .iter()
                .filter(|s| generation.is_none_or(|g| g == s.generation))
                .map(|s| s.created)
                .min();
            match oldest {
                Some(o) => Error::not_found(format!(
                    "no backup covers {}: the oldest retained snapshot is from {}",
                    fmt_time(t),
                    fmt_time(o)
                )),
                None => Error::not_found(
                    "no matching backups found: no snapshot in the selected generation",
                ),
            }
        }
        (_, Some(g)) => Error::not_found(format!("no matching backups found in generation {g}")),
        _ => Error::not_found("no matching backups found: no generation has a snapshot"),
    })
}

/// Chooses the generation, the snapshot and the segments that reach `target`. A gap in the WAL
/// indexes from the snapshot's on, or an index whose first segment is not at offset 0, is a
/// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) error naming it.
pub fn plan(listing: &Listing, generation: Option<&str>, target: Target) -> Result<Plan> {
    let g = choose_generation(listing, generation, target)?;
    let snapshot = listing
        .snapshots
        .iter()
        .filter(|s| s.generation == g)
        .filter(|s| match target {
            Target::Time(t) => s.created <= t,
            Target::Index(i) | Target::Position(i, _) => s.index <= i,
            Target::Latest => true,
        })
        .max_by(|a, b| match target {
            Target::Time(_) => (a.created, a.index).cmp(&(b.created, b.index)),
            _ => (a.index, a.created).cmp(&(b.index, b.created)),
        })
        .cloned()
        .ok_or_else(|| Error::not_found(format!("no snapshots available in generation {g}")))?;
    let mut indexes: Vec<(u32, Vec<SegmentInfo>)> = Vec::new();
    for s in listing
        .segments
        .iter()
        .filter(|s| s.generation == g && s.index >= snapshot.index)
    {
        match target {
            Target::Index(i) if s.index > i => break,
            Target::Position(i, o) if (s.index, s.offset) >= (i, o) => break,
            // Sorted by position: the state at T is the prefix uploaded by T.
            Target::Time(t) if s.created > t => break,
            _ => {}
        }
        match indexes.last_mut() {
            Some((i, v)) if *i == s.index => v.push(s.clone()),
            _ => indexes.push((s.index, vec![s.clone()])),
        }
    }
    let mut expect = snapshot.index;
    for (i, segs) in &indexes {
        if *i != expect {
            return Err(Error::corrupt(format!(
                "missing WAL index: {g}/{expect:08x}"
            )));
        }
        if segs[0].offset != 0 {
            return Err(Error::corrupt(format!(
                "missing initial wal segment: generation={g} index={i:08x} offset={}",
                segs[0].offset
            )));
        }
        expect = i + 1;
    }
    let updated = listing
        .bounds(&g)
        .map(|b| b.1)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(Plan {
        generation: g,
        snapshot,
        indexes,
        updated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::testing::{listing, t};

    const A: &str = "aaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbb";

    fn offsets(p: &Plan) -> Vec<(u32, Vec<u64>)> {
        p.indexes
            .iter()
            .map(|(i, v)| (*i, v.iter().map(|s| s.offset).collect()))
            .collect()
    }

    #[test]
    fn latest_uses_newest_generation_and_all_segments() {
        let l = listing(
            &[(A, 0, 10), (B, 0, 100), (B, 2, 150)],
            &[
                (A, 0, 0, 10),
                (B, 0, 0, 100),
                (B, 1, 0, 120),
                (B, 2, 0, 150),
                (B, 2, 4152, 160),
            ],
        );
        let p = plan(&l, None, Target::Latest).unwrap();
        assert_eq!(p.generation, B);
        assert_eq!(p.snapshot.index, 2);
        assert_eq!(offsets(&p), vec![(2, vec![0, 4152])]);
        assert_eq!(
            p.reads(),
            Reads {
                objects: 3,
                segments: 2,
                indexes: 1,
                // The test listing gives every object a size of 1.
                bytes: 3
            }
        );
    }

    #[test]
    fn timestamp_picks_generation_and_prefix() {
        let l = listing(
            &[(A, 0, 10), (B, 0, 100)],
            &[
                (A, 0, 0, 10),
                (A, 0, 100, 20),
                (A, 0, 200, 30),
                (B, 0, 0, 100),
            ],
        );
        let p = plan(&l, None, Target::Time(t(25))).unwrap();
        assert_eq!(p.generation, A);
        assert_eq!(offsets(&p), vec![(0, vec![0, 100])]);
        // After every upload: the newest state, not "no matching backups" (#564).
        let p = plan(&l, None, Target::Time(t(10_000))).unwrap();
        assert_eq!(p.generation, B);
        // Before everything: a clear error naming the oldest snapshot.
        let e = plan(&l, None, Target::Time(t(5))).unwrap_err();
        assert!(e.to_string().contains("oldest retained snapshot"), "{e}");
    }

    #[test]
    fn index_target_bounds_segments() {
        let l = listing(
            &[(A, 0, 10), (A, 2, 30)],
            &[(A, 0, 0, 10), (A, 1, 0, 20), (A, 2, 0, 30), (A, 3, 0, 40)],
        );
        let p = plan(&l, Some(A), Target::Index(1)).unwrap();
        assert_eq!(p.snapshot.index, 0);
        assert_eq!(offsets(&p), vec![(0, vec![0]), (1, vec![0])]);
    }

    #[test]
    fn position_target_ends_where_a_segment_ends() {
        let l = listing(
            &[(A, 0, 10), (A, 1, 30)],
            &[
                (A, 0, 0, 10),
                (A, 1, 0, 20),
                (A, 1, 4152, 30),
                (A, 1, 8272, 40),
                (A, 2, 0, 50),
            ],
        );
        let p = plan(&l, Some(A), Target::Position(1, 8272)).unwrap();
        assert_eq!(p.snapshot.index, 1);
        assert_eq!(offsets(&p), vec![(1, vec![0, 4152])]);
        // An index that has no byte yet at the position: the state the index before ended in.
        let p = plan(&l, Some(A), Target::Position(1, 0)).unwrap();
        assert_eq!(p.snapshot.index, 1);
        assert!(p.indexes.is_empty());
        let p = plan(&l, Some(A), Target::Position(0, 4152)).unwrap();
        assert_eq!(p.snapshot.index, 0);
        assert_eq!(offsets(&p), vec![(0, vec![0])]);
    }

    #[test]
    fn gaps_are_errors() {
        let l = listing(&[(A, 0, 10)], &[(A, 0, 0, 10), (A, 2, 0, 30)]);
        let e = plan(&l, None, Target::Latest).unwrap_err();
        assert!(e.to_string().contains("missing WAL index"), "{e}");
        let l = listing(&[(A, 0, 10)], &[(A, 0, 4152, 10)]);
        let e = plan(&l, None, Target::Latest).unwrap_err();
        assert!(e.to_string().contains("missing initial wal segment"), "{e}");
    }

    #[test]
    fn half_deleted_indexes_below_snapshot_are_ignored() {
        let l = listing(&[(A, 3, 10)], &[(A, 1, 8272, 5), (A, 3, 0, 10)]);
        let p = plan(&l, None, Target::Latest).unwrap();
        assert_eq!(offsets(&p), vec![(3, vec![0])]);
    }

    #[test]
    fn empty_replica() {
        let e = plan(&Listing::default(), None, Target::Latest).unwrap_err();
        assert_eq!(e.to_string(), "no matching backups found");
    }
}

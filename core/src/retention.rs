//! Retention rules (format §8), as a pure function of a listing and the clock.

use crate::listing::Listing;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

/// What a retention run does to one replica.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    /// No snapshot is young enough: take one first, then plan again.
    pub need_snapshot: bool,
    /// Keys to delete, oldest index first, so an interrupted run never leaves a hole below a
    /// retained index.
    pub delete: Vec<String>,
}

/// The first moment after `now` at which [`plan`] of this listing can change: when its next
/// snapshot grows older than `retention` (only then can something become deletable, or a new
/// snapshot be needed). Snapshots this replicator adds later are younger, so they cannot make it
/// sooner. `None` when the listing has no snapshot younger than `retention`.
pub fn next_change(listing: &Listing, now: SystemTime, retention: Duration) -> Option<SystemTime> {
    listing
        .snapshots
        .iter()
        .filter_map(|s| s.created.checked_add(retention))
        .filter(|t| *t > now)
        .min()
}

/// Keeps, per generation, everything from the lowest index of a snapshot created within
/// `retention` before `now`; generations with no such snapshot are deleted whole. When no
/// snapshot anywhere is that recent, nothing is deleted and a snapshot is asked for first.
pub fn plan(listing: &Listing, now: SystemTime, retention: Duration) -> RetentionPlan {
    let cutoff = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
    let kept: Vec<_> = listing
        .snapshots
        .iter()
        .filter(|s| s.created >= cutoff)
        .collect();
    if kept.is_empty() {
        return RetentionPlan {
            need_snapshot: true,
            delete: vec![],
        };
    }
    let mut delete = Vec::new();
    for generation in listing.generations() {
        let min_kept = kept
            .iter()
            .filter(|s| s.generation == generation)
            .map(|s| s.index)
            .min();
        match min_kept {
            None => {
                // Whole generation: WAL first (oldest first), then snapshots, then anything else.
                let mut keys = listing.keys.get(&generation).cloned().unwrap_or_default();
                let order = |k: &String| {
                    if k.contains("/wal/") {
                        0
                    } else if k.contains("/snapshots/") {
                        1
                    } else {
                        2
                    }
                };
                keys.sort_by(|a, b| (order(a), a).cmp(&(order(b), b)));
                delete.extend(keys);
            }
            Some(m) => {
                let mut old: BTreeSet<(u32, u64, &str)> = BTreeSet::new();
                for s in listing
                    .segments
                    .iter()
                    .filter(|s| s.generation == generation && s.index < m)
                {
                    old.insert((s.index, s.offset, &s.key));
                }
                delete.extend(old.into_iter().map(|(_, _, k)| k.to_string()));
                delete.extend(
                    listing
                        .snapshots
                        .iter()
                        .filter(|s| s.generation == generation && s.index < m)
                        .map(|s| s.key.clone()),
                );
            }
        }
    }
    RetentionPlan {
        need_snapshot: false,
        delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{snapshot_key, wal_segment_key};
    use crate::listing::testing::{listing, t};

    const A: &str = "aaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbb";

    #[test]
    fn nothing_can_change_before_the_next_snapshot_ages_out() {
        let l = listing(&[(A, 0, 10), (A, 3, 100), (B, 0, 200)], &[(A, 0, 0, 11)]);
        let r = Duration::from_secs(160);
        assert_eq!(next_change(&l, t(250), r), Some(t(260)));
        // Until then the plan is the same; at that moment it is not.
        assert_eq!(plan(&l, t(259), r), plan(&l, t(250), r));
        assert_ne!(plan(&l, t(261), r), plan(&l, t(250), r));
        assert_eq!(next_change(&l, t(400), r), None);
    }

    #[test]
    fn keeps_index_of_oldest_kept_snapshot_from_offset_zero() {
        let l = listing(
            &[(A, 0, 10), (A, 3, 100), (A, 5, 200)],
            &[
                (A, 0, 0, 11),
                (A, 2, 0, 50),
                (A, 3, 0, 100),
                (A, 3, 4152, 101),
                (A, 5, 0, 200),
            ],
        );
        let p = plan(&l, t(250), Duration::from_secs(160));
        assert!(!p.need_snapshot);
        assert_eq!(
            p.delete,
            vec![
                wal_segment_key(A, 0, 0),
                wal_segment_key(A, 2, 0),
                snapshot_key(A, 0)
            ]
        );
    }

    #[test]
    fn deletes_whole_generations_without_kept_snapshots() {
        let l = listing(
            &[(A, 0, 10), (B, 0, 200)],
            &[(A, 0, 0, 10), (A, 1, 0, 20), (B, 0, 0, 200)],
        );
        let p = plan(&l, t(250), Duration::from_secs(100));
        assert_eq!(
            p.delete,
            vec![
                wal_segment_key(A, 0, 0),
                wal_segment_key(A, 1, 0),
                snapshot_key(A, 0)
            ]
        );
    }

    #[test]
    fn asks_for_a_snapshot_when_none_is_young_and_deletes_nothing() {
        let l = listing(&[(A, 0, 10)], &[(A, 0, 0, 10)]);
        let p = plan(&l, t(1000), Duration::from_secs(100));
        assert_eq!(
            p,
            RetentionPlan {
                need_snapshot: true,
                delete: vec![]
            }
        );
    }
}

//! A replica's v0.3 tree as typed entries, sorted by core: server order is never trusted.

use crate::error::Result;
use crate::layout::{self, Entry};
use crate::replica::Replica;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// A snapshot object found in a replica's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Generation the snapshot belongs to.
    pub generation: String,
    /// WAL index current when it was taken; a restore replays that index from offset 0 on top.
    pub index: u32,
    /// Stored size in bytes (compressed, possibly encrypted), not the database's size.
    pub size: u64,
    /// The storage's time for the object; restore by timestamp and retention go by it.
    pub created: SystemTime,
    /// Object key relative to the replica root.
    pub key: String,
}

/// A WAL segment object found in a replica's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Generation the segment belongs to.
    pub generation: String,
    /// WAL index the segment's bytes belong to.
    pub index: u32,
    /// Byte offset in the index's shadow WAL where the segment starts (0 includes the header).
    pub offset: u64,
    /// Stored size in bytes (compressed, possibly encrypted), not the WAL bytes it holds.
    pub size: u64,
    /// The storage's time for the object; restore by timestamp goes by it.
    pub created: SystemTime,
    /// Object key relative to the replica root.
    pub key: String,
}

impl SegmentInfo {
    /// The segment a listed object is, given what its key says (`layout::parse_key`).
    pub fn listed(
        generation: String,
        index: u32,
        offset: u64,
        o: crate::replica::ObjectMeta,
    ) -> SegmentInfo {
        SegmentInfo {
            generation,
            index,
            offset,
            size: o.size,
            created: o.modified,
            key: o.key,
        }
    }
}

/// Everything under `generations/`, sorted by (generation, index[, offset]).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Snapshots, sorted by (generation, index, created).
    pub snapshots: Vec<SnapshotInfo>,
    /// WAL segments, sorted by (generation, index, offset).
    pub segments: Vec<SegmentInfo>,
    /// Every key per generation, including ones outside the layout (deleted with the generation).
    pub keys: BTreeMap<String, Vec<String>>,
}

impl Listing {
    /// Lists one generation of `replica` (every generation when `generation` is None) and sorts it.
    /// Keys under a generation but outside the layout appear only in `keys`.
    pub async fn fetch(replica: &dyn Replica, generation: Option<&str>) -> Result<Listing> {
        let prefix = match generation {
            Some(g) => layout::generation_prefix(g),
            None => format!("{}/", layout::GENERATIONS_DIR),
        };
        let objects = replica.list(&prefix).await?;
        let mut l = Listing::default();
        for o in objects {
            if let Some(g) = o
                .key
                .strip_prefix("generations/")
                .and_then(|r| r.split('/').next())
            {
                if layout::is_generation(g) {
                    l.keys.entry(g.to_string()).or_default().push(o.key.clone());
                }
            }
            match layout::parse_key(&o.key) {
                Some(Entry::Snapshot { generation, index }) => l.snapshots.push(SnapshotInfo {
                    generation,
                    index,
                    size: o.size,
                    created: o.modified,
                    key: o.key,
                }),
                Some(Entry::WalSegment {
                    generation,
                    index,
                    offset,
                }) => l
                    .segments
                    .push(SegmentInfo::listed(generation, index, offset, o)),
                None => {}
            }
        }
        l.sort();
        Ok(l)
    }

    /// Restores the order the planner and retention rely on, after entries were added by hand.
    pub fn sort(&mut self) {
        self.snapshots.sort_by(|a, b| {
            (&a.generation, a.index, a.created).cmp(&(&b.generation, b.index, b.created))
        });
        self.segments.sort_by(|a, b| {
            (&a.generation, a.index, a.offset).cmp(&(&b.generation, b.index, b.offset))
        });
        for v in self.keys.values_mut() {
            v.sort();
        }
    }

    /// Every generation that holds at least one key, in ascending order.
    pub fn generations(&self) -> Vec<String> {
        let mut g: Vec<String> = self.keys.keys().cloned().collect();
        g.sort();
        g
    }

    /// (first, last) creation time over all snapshots and segments of a generation.
    pub fn bounds(&self, generation: &str) -> Option<(SystemTime, SystemTime)> {
        let times = self
            .snapshots
            .iter()
            .filter(|s| s.generation == generation)
            .map(|s| s.created)
            .chain(
                self.segments
                    .iter()
                    .filter(|s| s.generation == generation)
                    .map(|s| s.created),
            );
        times.fold(None, |acc, t| match acc {
            None => Some((t, t)),
            Some((a, b)) => Some((a.min(t), b.max(t))),
        })
    }
}

/// Builders for planner and retention tests: listings from (generation, index[, offset], secs).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::layout::{snapshot_key, wal_segment_key};
    use std::time::Duration;

    pub fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    /// Inserted in reverse, so nothing may depend on the order a server lists in.
    pub fn listing(snaps: &[(&str, u32, u64)], segs: &[(&str, u32, u64, u64)]) -> Listing {
        let mut l = Listing::default();
        for &(g, i, c) in snaps.iter().rev() {
            let key = snapshot_key(g, i);
            l.keys.entry(g.into()).or_default().push(key.clone());
            l.snapshots.push(SnapshotInfo {
                generation: g.into(),
                index: i,
                size: 1,
                created: t(c),
                key,
            });
        }
        for &(g, i, o, c) in segs.iter().rev() {
            let key = wal_segment_key(g, i, o);
            l.keys.entry(g.into()).or_default().push(key.clone());
            l.segments.push(SegmentInfo {
                generation: g.into(),
                index: i,
                offset: o,
                size: 1,
                created: t(c),
                key,
            });
        }
        l.sort();
        l
    }
}

#[cfg(test)]
mod tests {
    use super::testing::t;
    use super::*;
    use crate::layout::{snapshot_key, wal_segment_key};
    use crate::replica::PutSource;
    use crate::testing::MemoryReplica;

    const G1: &str = "0000000000000001";
    const G2: &str = "00000000000000f2";

    /// A replica holding two generations, a stray key inside one, and keys outside the layout.
    async fn replica() -> std::sync::Arc<MemoryReplica> {
        let mem = MemoryReplica::new();
        let keys = [
            (snapshot_key(G1, 0), 10),
            (wal_segment_key(G1, 0, 0), 11),
            (wal_segment_key(G1, 0, 4152), 12),
            (wal_segment_key(G1, 1, 0), 13),
            (snapshot_key(G1, 1), 14),
            (format!("generations/{G1}/wal/notes.txt"), 15),
            (snapshot_key(G2, 0), 20),
            (wal_segment_key(G2, 0, 0), 21),
            ("generations/not-a-generation/x".to_string(), 30),
            ("other/file".to_string(), 31),
        ];
        for (k, secs) in keys.iter().rev() {
            let body = bytes::Bytes::from(vec![0u8; *secs as usize]);
            mem.put(k, PutSource::Bytes(body)).await.unwrap();
            mem.set_modified(k, t(*secs));
        }
        mem
    }

    #[tokio::test]
    async fn a_listing_is_typed_and_sorted_whatever_the_server_order() {
        let mem = replica().await;
        let l = Listing::fetch(mem.as_ref(), None).await.unwrap();
        let snaps: Vec<_> = l
            .snapshots
            .iter()
            .map(|s| (s.generation.as_str(), s.index))
            .collect();
        assert_eq!(snaps, [(G1, 0), (G1, 1), (G2, 0)]);
        let segs: Vec<_> = l
            .segments
            .iter()
            .map(|s| (s.generation.as_str(), s.index, s.offset))
            .collect();
        assert_eq!(segs, [(G1, 0, 0), (G1, 0, 4152), (G1, 1, 0), (G2, 0, 0)]);
        // Sizes and times are the store's.
        assert_eq!(l.segments[1].size, 12);
        assert_eq!(l.segments[1].created, t(12));
        // A stray key inside a generation is kept (retention deletes it with the generation);
        // a directory that is not a generation and keys outside `generations/` are not.
        assert_eq!(l.keys[G1].len(), 6);
        assert!(l.keys[G1].contains(&format!("generations/{G1}/wal/notes.txt")));
        assert_eq!(l.generations(), [G1, G2]);
        assert_eq!(l.bounds(G1), Some((t(10), t(14))));
        assert_eq!(l.bounds(G2), Some((t(20), t(21))));
        assert_eq!(l.bounds("0000000000000099"), None);
    }

    #[tokio::test]
    async fn one_generation_is_listed_alone() {
        let mem = replica().await;
        let l = Listing::fetch(mem.as_ref(), Some(G2)).await.unwrap();
        assert_eq!(l.generations(), [G2]);
        assert_eq!(l.snapshots.len(), 1);
        assert_eq!(l.segments.len(), 1);
        assert!(l.snapshots.iter().all(|s| s.generation == G2));
    }
}

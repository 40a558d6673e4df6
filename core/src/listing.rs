//! A replica's v0.3 tree as typed entries, sorted by core: server order is never trusted.

use crate::error::Result;
use crate::layout::{self, Entry};
use crate::replica::Replica;
use std::collections::BTreeMap;
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub generation: String,
    pub index: u32,
    pub size: u64,
    pub created: SystemTime,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub generation: String,
    pub index: u32,
    pub offset: u64,
    pub size: u64,
    pub created: SystemTime,
    pub key: String,
}

/// Everything under `generations/`, sorted by (generation, index[, offset]).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub snapshots: Vec<SnapshotInfo>,
    pub segments: Vec<SegmentInfo>,
    /// Every key per generation, including ones outside the layout (deleted with the generation).
    pub keys: BTreeMap<String, Vec<String>>,
}

impl Listing {
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
                }) => l.segments.push(SegmentInfo {
                    generation,
                    index,
                    offset,
                    size: o.size,
                    created: o.modified,
                    key: o.key,
                }),
                None => {}
            }
        }
        l.sort();
        Ok(l)
    }

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

//! Oracles over a replica's objects, whatever the backend: the WAL a replica holds has no gap.

use walship_core::listing::Listing;
use walship_core::replica::DynReplica;
use walship_core::restore::download_decoded;

/// Keeps the first 32 bytes written (a WAL header) and counts the rest.
struct Head(Vec<u8>);

impl std::io::Write for Head {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let room = 32usize.saturating_sub(self.0.len());
        self.0.extend_from_slice(&b[..room.min(b.len())]);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn salt1(head: &[u8]) -> u32 {
    u32::from_be_bytes([head[16], head[17], head[18], head[19]])
}

/// Checks every generation of the replica: within a WAL index, each segment starts where the
/// previous one ended (decoded lengths), the first starts at offset 0, and WAL indexes follow
/// each other from the oldest snapshot's index on, each index's WAL header exactly one restart
/// after the previous one's (salt-1 + 1: a WAL life in between, whose frames the replica cannot
/// hold, is a gap no offset shows). Returns the number of segments checked.
pub async fn assert_no_wal_gap(replica: &DynReplica) -> usize {
    let listing = Listing::fetch(replica.as_ref(), None)
        .await
        .unwrap_or_else(|e| panic!("{}: list: {e}", replica.target()));
    let mut checked = 0;
    for g in listing.generations() {
        let first_snapshot = listing
            .snapshots
            .iter()
            .filter(|s| s.generation == g)
            .map(|s| s.index)
            .min();
        // WAL before the generation's first snapshot serves no restore: a generation whose first
        // snapshot upload was interrupted by a kill keeps the index-0 segment uploaded before it,
        // and the next run snapshots at its current index (the database file is no longer at 0).
        // Contiguity matters from the first snapshot on.
        let mut segs: Vec<_> = listing
            .segments
            .iter()
            .filter(|s| s.generation == g && first_snapshot.is_none_or(|si| s.index >= si))
            .collect();
        segs.sort_by_key(|s| (s.index, s.offset));
        let Some(first) = segs.first() else { continue };
        if let Some(si) = first_snapshot {
            assert!(
                first.index <= si,
                "generation {g}: WAL starts at index {} after the first snapshot's index {si}",
                first.index
            );
        }
        let mut expect: Option<(u32, u64)> = None;
        let mut prev_salt1: Option<u32> = None;
        for s in segs {
            let (len, head) = download_decoded(
                replica.clone(),
                &Default::default(),
                s.key.clone(),
                "nowhere",
                Head(Vec::new()),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: decode {}: {e}", replica.target(), s.key));
            if s.offset == 0 && head.0.len() == 32 {
                let salt = salt1(&head.0);
                if let Some(p) = prev_salt1 {
                    assert_eq!(
                        salt,
                        p.wrapping_add(1),
                        "generation {g}: {} is not exactly one WAL restart after the previous index",
                        s.key
                    );
                }
                prev_salt1 = Some(salt);
            }
            match expect {
                Some((i, off)) if s.index == i => assert_eq!(
                    s.offset, off,
                    "generation {g}: gap or overlap at {}: expected offset {off:#x}",
                    s.key
                ),
                Some((i, _)) => {
                    assert_eq!(
                        s.index,
                        i + 1,
                        "generation {g}: WAL index gap before {}",
                        s.key
                    );
                    assert_eq!(
                        s.offset, 0,
                        "generation {g}: index {} does not start at 0: {}",
                        s.index, s.key
                    );
                }
                None => assert_eq!(
                    s.offset, 0,
                    "generation {g}: first segment {} does not start at 0",
                    s.key
                ),
            }
            expect = Some((s.index, s.offset + len));
            checked += 1;
        }
    }
    checked
}

/// A directory replica opened through the registry, for the oracles above.
pub fn file_replica(root: &std::path::Path) -> DynReplica {
    let s = walship_core::registry::ReplicaSettings {
        name: "file".into(),
        kind: "file".into(),
        path: Some(root.to_string_lossy().into_owned()),
        ..Default::default()
    };
    walship_core::registry::open(&s).expect("open file replica")
}

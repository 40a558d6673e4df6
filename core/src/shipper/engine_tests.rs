//! The shipper against a replica in memory (crate::testing), with faults at every step: the
//! replica never holds a gap, resumes where it left off, and a snapshot first ships what it owes.

use super::*;
use crate::db::DbOptions;
use crate::plan::{self, Target};
use crate::replica::Replica;
use crate::restore::decoded_len;
use crate::testing::{Calls, Fault, Faulty, MemoryReplica, Op};
use rusqlite::Connection;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A WAL-mode database written by an "application" connection, monitored by a [`Db`].
struct Fixture {
    dir: tempfile::TempDir,
    app: Connection,
    db: Arc<Db>,
    rows: i64,
}

impl Fixture {
    /// Checkpoints after 16 pages (and at most once per millisecond, not once per second), so a
    /// few rounds of writes walk through several WAL indexes.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let app = Connection::open(&path).unwrap();
        app.busy_timeout(Duration::from_secs(10)).unwrap();
        app.query_row("PRAGMA journal_mode=wal", [], |r| r.get::<_, String>(0))
            .unwrap();
        app.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
            .unwrap();
        let opts = DbOptions {
            min_checkpoint_page_count: 16,
            monitor_interval: Duration::from_millis(1),
            ..DbOptions::default()
        };
        let db = Db::open(&path, opts).unwrap();
        Fixture {
            dir,
            app,
            db,
            rows: 0,
        }
    }

    /// Commits `n` rows of 1 KiB, one transaction each, then lets the monitor copy them.
    async fn write(&mut self, n: usize) {
        for _ in 0..n {
            self.rows += 1;
            self.app
                .execute(
                    "INSERT INTO t (id, v) VALUES (?1, randomblob(1000))",
                    [self.rows],
                )
                .unwrap();
        }
        crate::monitor::sync_db(&self.db).await.unwrap();
    }

    fn shipper(&self, replica: DynReplica) -> Shipper {
        Shipper::new(
            self.db.clone(),
            replica,
            ReplicaOptions {
                name: "mem".to_string(),
                ..ReplicaOptions::default()
            },
        )
    }

    /// A replica in memory behind a fault injector, and a shipper to it that has shipped `rows`
    /// first rows (a generation with its snapshot) before any fault is injected.
    async fn shipping(&mut self, rows: usize) -> (Arc<MemoryReplica>, Arc<Faulty>, Shipper) {
        let mem = MemoryReplica::new();
        let faulty = Faulty::new(mem.clone());
        let mut s = self.shipper(faulty.clone());
        self.write(rows).await;
        s.sync().await.unwrap();
        (mem, faulty, s)
    }

    fn content(&self) -> Vec<(i64, Vec<u8>)> {
        content_of(&self.app)
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.db.close();
    }
}

fn content_of(c: &Connection) -> Vec<(i64, Vec<u8>)> {
    let mut st = c.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Restores the latest state into `out` and returns its rows, after `PRAGMA integrity_check`.
async fn restore_latest(replica: DynReplica, out: &Path) -> Result<Vec<(i64, Vec<u8>)>> {
    let listing = Listing::fetch(replica.as_ref(), None).await?;
    let p = plan::plan(&listing, None, Target::Latest)?;
    crate::restore::execute(replica, &Age::default(), &p, out, 2).await?;
    let c = Connection::open(out).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    Ok(content_of(&c))
}

/// Every WAL index of every generation, from its lowest snapshot's index to its last segment,
/// is there and starts at offset 0, and each segment starts where the one before it ends: a
/// point-in-time restore anywhere in the generation finds no hole.
async fn assert_no_gap(replica: &DynReplica) {
    let listing = Listing::fetch(replica.as_ref(), None).await.unwrap();
    for g in listing.generations() {
        let first = listing
            .snapshots
            .iter()
            .filter(|s| s.generation == g)
            .map(|s| s.index)
            .min()
            .expect("a generation with segments has a snapshot");
        let segs: Vec<_> = listing
            .segments
            .iter()
            .filter(|s| s.generation == g && s.index >= first)
            .collect();
        let last = segs.iter().map(|s| s.index).max().unwrap_or(first);
        for index in first..=last {
            let mut expect = 0;
            let mut any = false;
            for s in segs.iter().filter(|s| s.index == index) {
                assert_eq!(
                    s.offset, expect,
                    "generation {g} index {index:08x}: segment {} does not start where the last one ended",
                    s.key
                );
                expect = s.offset
                    + decoded_len(replica.clone(), &Age::default(), &s.key)
                        .await
                        .unwrap();
                any = true;
            }
            assert!(any, "generation {g}: index {index:08x} has no segment");
        }
    }
}

/// Writes in rounds while `replica` fails as it was told to, then lets it recover.
async fn rounds_with_faults(f: &mut Fixture, replica: &Arc<Faulty>) -> DynReplica {
    let dyn_replica: DynReplica = replica.clone();
    let mut s = f.shipper(dyn_replica.clone());
    for _ in 0..6 {
        f.write(40).await;
        let _ = s.sync().await;
    }
    replica.clear();
    f.write(5).await;
    s.sync().await.unwrap();
    dyn_replica
}

#[tokio::test]
async fn no_gap_when_any_call_fails_at_any_step() {
    for op in [Op::Put, Op::List, Op::Get] {
        for n in 1..=6 {
            let mut f = Fixture::new();
            let mem = MemoryReplica::new();
            let faulty = Faulty::new(mem.clone());
            faulty.inject(op, Calls::Nth(n), Fault::Fail(ErrorKind::Transient));
            let r = rounds_with_faults(&mut f, &faulty).await;
            assert!(
                f.db.pos().index >= 2,
                "the fixture should walk through WAL indexes"
            );
            assert_no_gap(&r).await;
            let got = restore_latest(mem.clone(), &f.out(&format!("{op:?}-{n}.db")))
                .await
                .unwrap();
            assert_eq!(got, f.content(), "{op:?} call {n} failed");
        }
    }
}

#[tokio::test]
async fn an_outage_across_wal_indexes_is_caught_up_without_a_gap() {
    let mut f = Fixture::new();
    let (mem, faulty, mut s) = f.shipping(10).await;
    let r: DynReplica = faulty.clone();
    let before = f.db.pos().index;
    faulty.inject(Op::Put, Calls::From(1), Fault::Fail(ErrorKind::Transient));
    for _ in 0..5 {
        f.write(40).await;
        assert!(s.sync().await.is_err());
    }
    assert!(f.db.pos().index >= before + 2, "the outage spans indexes");
    faulty.clear();
    s.sync().await.unwrap();
    assert_no_gap(&r).await;
    assert_eq!(
        restore_latest(mem.clone(), &f.out("out.db")).await.unwrap(),
        f.content()
    );
}

/// A snapshot taken while the replica still owes earlier indexes (a link that was down) ships
/// them first: without it, a point-in-time restore between the old position and the snapshot
/// would walk into a hole.
#[tokio::test]
async fn a_snapshot_first_ships_the_wal_it_owes() {
    let mut f = Fixture::new();
    let (mem, faulty, mut s) = f.shipping(10).await;
    let r: DynReplica = faulty.clone();
    let first = f.db.pos().index;
    faulty.inject(Op::Put, Calls::From(1), Fault::Fail(ErrorKind::Transient));
    for _ in 0..5 {
        f.write(40).await;
        let _ = s.sync().await;
    }
    faulty.clear();
    let at = s.snapshot().await.unwrap();
    assert!(at.index >= first + 2, "the snapshot is indexes ahead");
    assert_no_gap(&r).await;
    assert_eq!(
        restore_latest(mem.clone(), &f.out("out.db")).await.unwrap(),
        f.content()
    );
}

/// A new shipper (a restarted process) resumes after the replica's last segment: it neither
/// uploads what is there again nor leaves a hole.
#[tokio::test]
async fn a_new_shipper_resumes_after_the_last_segment() {
    let mut f = Fixture::new();
    let mem = MemoryReplica::new();
    let r: DynReplica = mem.clone();
    let mut s = f.shipper(r.clone());
    f.write(30).await;
    s.sync().await.unwrap();
    let keys = mem.keys();
    drop(s);
    let mut s = f.shipper(r.clone());
    s.sync().await.unwrap();
    assert_eq!(mem.keys(), keys, "nothing new to ship, nothing uploaded");
    f.write(30).await;
    s.sync().await.unwrap();
    assert_no_gap(&r).await;
    assert_eq!(
        restore_latest(r.clone(), &f.out("out.db")).await.unwrap(),
        f.content()
    );
}

/// The replica's last segment damaged (cut short, or a valid frame of other bytes: what
/// Litestream v0.3.13 leaves when its shutdown race writes one segment twice under one
/// temporary name) does not stop replication: a new shipper finds the damage against the
/// shadow WAL, uploads that segment again under the same key, and the replica restores exactly.
/// Before, every start failed decoding it, for good (a CI handover test stalled on it).
#[tokio::test]
async fn a_damaged_last_segment_is_uploaded_again() {
    for damage in ["cut short", "other bytes"] {
        let mut f = Fixture::new();
        // No fault is injected: the damage is done by hand below.
        let (mem, faulty, mut s) = f.shipping(30).await;
        let r: DynReplica = faulty;
        f.write(3).await;
        s.sync().await.unwrap();
        drop(s);
        let listing = Listing::fetch(r.as_ref(), None).await.unwrap();
        let last = listing
            .segments
            .iter()
            .max_by_key(|s| (s.index, s.offset))
            .unwrap()
            .key
            .clone();
        let good = mem.bytes(&last).unwrap();
        let bad = if damage == "cut short" {
            good.slice(..good.len() / 2)
        } else {
            let mut plain = Vec::new();
            crate::codec::decoder(&good[..])
                .read_to_end(&mut plain)
                .unwrap();
            let i = plain.len() - 100;
            plain[i] ^= 0x55;
            bytes::Bytes::from(crate::codec::compress(&plain))
        };
        mem.replace(&last, bad);
        assert!(
            restore_latest(r.clone(), &f.out("broken.db"))
                .await
                .is_err(),
            "{damage}: the damage breaks restores"
        );
        let mut s = f.shipper(r.clone());
        s.sync().await.unwrap();
        assert_eq!(
            mem.bytes(&last),
            Some(good),
            "{damage}: the segment was uploaded again from the shadow WAL"
        );
        f.write(3).await;
        s.sync().await.unwrap();
        assert_no_gap(&r).await;
        assert_eq!(
            restore_latest(r.clone(), &f.out("out.db")).await.unwrap(),
            f.content(),
            "{damage}"
        );
    }
}

/// Retention keeps the newest snapshot and what follows it, deletes what is older than the
/// retention period, and the replica still restores.
#[tokio::test]
async fn retention_deletes_what_the_newest_snapshot_made_redundant() {
    let mut f = Fixture::new();
    let mem = MemoryReplica::new();
    let r: DynReplica = mem.clone();
    let mut s = Shipper::new(
        f.db.clone(),
        r.clone(),
        ReplicaOptions {
            name: "mem".to_string(),
            retention: Duration::from_secs(3600),
            ..ReplicaOptions::default()
        },
    );
    f.write(60).await;
    s.sync().await.unwrap();
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    for k in mem.keys() {
        mem.set_modified(&k, old);
    }
    let old_keys = mem.keys();
    f.write(60).await;
    s.sync().await.unwrap();
    let newest = s.snapshot().await.unwrap();
    let deleted = s.enforce_retention().await.unwrap();
    assert!(deleted > 0);
    let listing = Listing::fetch(r.as_ref(), None).await.unwrap();
    assert!(
        listing.snapshots.iter().all(|x| x.index == newest.index),
        "only the newest snapshot is left: {:?}",
        listing.snapshots
    );
    assert!(
        listing.segments.iter().all(|x| x.index >= newest.index),
        "segments before the newest snapshot are deleted"
    );
    assert!(old_keys.iter().any(|k| !mem.keys().contains(k)));
    assert_eq!(
        restore_latest(r.clone(), &f.out("out.db")).await.unwrap(),
        f.content()
    );
}

/// A restore that fails at any download (an error, or a stream cut midway) leaves nothing: no
/// output, no temporary file.
#[tokio::test]
async fn a_failed_restore_leaves_nothing_behind() {
    let mut f = Fixture::new();
    let mem = MemoryReplica::new();
    let r: DynReplica = mem.clone();
    let mut s = f.shipper(r.clone());
    for _ in 0..4 {
        f.write(40).await;
        s.sync().await.unwrap();
    }
    let counter = Faulty::new(mem.clone());
    restore_latest(counter.clone(), &f.out("count.db"))
        .await
        .unwrap();
    let gets = counter.calls(Op::Get);
    assert!(gets >= 3, "a snapshot and several segments: {gets}");
    let outdir = f.dir.path().join("restores");
    std::fs::create_dir(&outdir).unwrap();
    for n in 1..=gets {
        for fault in [Fault::Fail(ErrorKind::Transient), Fault::Cut(10)] {
            let faulty = Faulty::new(mem.clone());
            faulty.inject(Op::Get, Calls::Nth(n), fault);
            let out = outdir.join("out.db");
            let res = restore_latest(faulty.clone(), &out).await;
            assert!(
                res.is_err(),
                "get {n} failed with {fault:?}, restore succeeded"
            );
            let left: Vec<_> = std::fs::read_dir(&outdir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "get {n}, {fault:?}: left {left:?}");
        }
    }
}

/// A long history restores with requests in flight together, not one segment after another
/// (request latency times segments was the restore time), and exactly.
#[tokio::test]
async fn a_restore_fetches_segments_concurrently() {
    let mut f = Fixture::new();
    let (mem, _faulty, mut s) = f.shipping(1).await;
    for _ in 0..120 {
        f.write(1).await;
        s.sync().await.unwrap();
    }
    let listing = Listing::fetch(mem.as_ref(), None).await.unwrap();
    assert!(listing.segments.len() >= 100, "{}", listing.segments.len());
    let slow = Faulty::new(mem.clone());
    slow.inject(
        Op::Get,
        Calls::From(1),
        Fault::Delay(Duration::from_millis(20)),
    );
    assert_eq!(
        restore_latest(slow.clone(), &f.out("out.db"))
            .await
            .unwrap(),
        f.content()
    );
    // Two indexes at a time (the restore's parallelism) would be 2 without the prefetch.
    assert!(
        slow.most_in_flight(Op::Get) >= 8,
        "at most {} gets at once",
        slow.most_in_flight(Op::Get)
    );
}

/// What the shipper reports as the restore budget (`walship replicas`, metrics) is what a restore
/// plan of the replica's listing downloads, after uploads across indexes, after a snapshot, and
/// in a new shipper that learns it from the listing.
#[tokio::test]
async fn the_restore_budget_follows_uploads_snapshots_and_restarts() {
    let mut f = Fixture::new();
    let mem = MemoryReplica::new();
    let replica: DynReplica = mem.clone();
    let planned = |mem: Arc<MemoryReplica>| async move {
        let l = Listing::fetch(mem.as_ref(), None).await.unwrap();
        plan::plan(&l, None, Target::Latest).unwrap().reads()
    };
    let mut s = f.shipper(replica.clone());
    let status = s.status();
    for round in 0..6 {
        f.write(10).await;
        s.sync().await.unwrap();
        let want = planned(mem.clone()).await;
        assert_eq!(status.borrow().restore, Some(want), "round {round}");
    }
    assert!(
        planned(mem.clone()).await.indexes >= 2,
        "the rounds walked through several indexes"
    );
    s.snapshot().await.unwrap();
    f.write(10).await;
    s.sync().await.unwrap();
    let after = planned(mem.clone()).await;
    assert_eq!(status.borrow().restore, Some(after));
    assert!(
        after.segments < 10,
        "the snapshot reset the budget: {after:?}"
    );
    drop(s);
    f.write(10).await;
    let mut s = f.shipper(replica);
    let status = s.status();
    s.sync().await.unwrap();
    assert_eq!(status.borrow().restore, Some(planned(mem.clone()).await));
}

/// A restore drill matches the database at its position across several WAL indexes, and catches
/// damage every object still decodes through: the newest snapshot replaced by an older one of
/// the same generation under its name.
#[tokio::test]
async fn a_drill_matches_and_catches_a_stale_snapshot_under_the_newest_name() {
    let mut f = Fixture::new();
    let (mem, _faulty, mut s) = f.shipping(20).await;
    for _ in 0..4 {
        f.write(30).await;
        s.sync().await.unwrap();
    }
    assert!(f.db.pos().index >= 2, "{:?}", f.db.pos());
    // Committed but not yet shipped: the drill ships up to its position first.
    f.write(5).await;
    let r = s.drill_now().await.unwrap().expect("a drill");
    assert_eq!(r.mismatch, None, "{r}");
    assert_eq!(r.pos, f.db.pos().pos());
    assert_eq!(r.pages, {
        let n: i64 = f
            .app
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        n as u64
    });

    s.snapshot().await.unwrap();
    f.write(10).await;
    s.sync().await.unwrap();
    let listing = Listing::fetch(mem.as_ref(), None).await.unwrap();
    let mut snaps: Vec<_> = listing
        .snapshots
        .iter()
        .map(|s| (s.index, s.key.clone()))
        .collect();
    snaps.sort();
    let (older, newest) = (&snaps[0].1, &snaps[snaps.len() - 1].1);
    assert_ne!(older, newest);
    let saved = mem.bytes(newest).unwrap();
    mem.put(newest, PutSource::Bytes(mem.bytes(older).unwrap()))
        .await
        .unwrap();
    let r = s.drill_now().await.unwrap().expect("a drill");
    let m = r
        .mismatch
        .clone()
        .unwrap_or_else(|| panic!("not caught: {r}"));
    assert!(m.contains("page ") && m.contains(newest.as_str()), "{m}");
    assert!(r.to_string().starts_with("MISMATCH at position "), "{r}");
    // Put back, it matches again.
    mem.put(newest, PutSource::Bytes(saved)).await.unwrap();
    let r = s.drill_now().await.unwrap().expect("a drill");
    assert_eq!(r.mismatch, None, "{r}");
}

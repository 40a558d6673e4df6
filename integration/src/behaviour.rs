//! The behaviour suite every backend must pass, whatever stores the objects.
//!
//! Each function takes a fresh, empty replica (its own directory or bucket) and panics with a
//! message naming the backend on the first deviation. Backend tests call them one by one, so a
//! failure names the behaviour.

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;
use walship_core::replica::{DynReplica, ObjectMeta, PutSource};
use walship_core::ErrorKind;

/// Reads an object completely.
pub async fn get_all(r: &DynReplica, key: &str) -> Vec<u8> {
    let mut rd = r
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("{}: get {key}: {e}", r.target()));
    let mut buf = Vec::new();
    rd.read_to_end(&mut buf)
        .await
        .unwrap_or_else(|e| panic!("{}: read {key}: {e}", r.target()));
    buf
}

async fn put_bytes(r: &DynReplica, key: &str, body: &[u8]) {
    let n = r
        .put(key, PutSource::Bytes(Bytes::copy_from_slice(body)))
        .await
        .unwrap_or_else(|e| panic!("{}: put {key}: {e}", r.target()));
    assert_eq!(n, body.len() as u64, "{}: put {key} size", r.target());
}

async fn listing(r: &DynReplica, prefix: &str) -> BTreeMap<String, ObjectMeta> {
    r.list(prefix)
        .await
        .unwrap_or_else(|e| panic!("{}: list {prefix:?}: {e}", r.target()))
        .into_iter()
        .map(|o| (o.key.clone(), o))
        .collect()
}

/// put, get, list (prefix filtering, sizes, modification times) and delete.
pub async fn round_trip(r: DynReplica) {
    let before = SystemTime::now() - Duration::from_secs(120);
    let objects: &[(&str, &[u8])] = &[
        (
            "generations/0123456789abcdef/snapshots/00000000.snapshot.lz4",
            b"snapshot bytes",
        ),
        (
            "generations/0123456789abcdef/wal/00000000_00000000.wal.lz4",
            b"wal 0",
        ),
        (
            "generations/0123456789abcdef/wal/00000000_00001000.wal.lz4",
            b"",
        ),
        (
            "generations/fedcba9876543210/wal/00000001_00000000.wal.lz4",
            b"other generation",
        ),
        ("generationsX/not-under-the-prefix", b"x"),
    ];
    for (k, v) in objects {
        put_bytes(&r, k, v).await;
    }
    for (k, v) in objects {
        assert_eq!(get_all(&r, k).await, *v, "{}: content of {k}", r.target());
    }
    let after = SystemTime::now() + Duration::from_secs(120);
    let all = listing(&r, "generations/").await;
    assert_eq!(all.len(), 4, "{}: listing {:?}", r.target(), all.keys());
    for (k, v) in &objects[..4] {
        let o = &all[*k];
        assert_eq!(o.size, v.len() as u64, "{}: size of {k}", r.target());
        assert!(
            o.modified > before && o.modified < after,
            "{}: modified time of {k}: {:?}",
            r.target(),
            o.modified
        );
    }
    let wal = listing(&r, "generations/0123456789abcdef/wal/").await;
    assert_eq!(wal.len(), 2, "{}: {:?}", r.target(), wal.keys());
    // A prefix that is not a whole directory name (v0.3.13 lists `generations/<gen>` like that).
    let gen = listing(&r, "generations/0123456789abcdef").await;
    assert_eq!(gen.len(), 3, "{}: {:?}", r.target(), gen.keys());
    let keys: Vec<String> = gen.keys().cloned().collect();
    r.delete(&keys)
        .await
        .unwrap_or_else(|e| panic!("{}: delete: {e}", r.target()));
    let left = listing(&r, "generations/").await;
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        vec!["generations/fedcba9876543210/wal/00000001_00000000.wal.lz4"],
        "{}",
        r.target()
    );
    assert_eq!(
        listing(&r, "").await.len(),
        2,
        "{}: whole replica",
        r.target()
    );
}

/// More keys than one S3 listing page (1000) or one DeleteObjects call (1000).
pub async fn many_keys(r: DynReplica) {
    const N: usize = 1100;
    let keys: Vec<String> = (0..N)
        .map(|i| format!("generations/00000000000000aa/wal/{i:08x}_00000000.wal.lz4"))
        .collect();
    stream::iter(keys.iter().cloned())
        .map(|k| {
            let r = r.clone();
            async move {
                r.put(&k, PutSource::Bytes(Bytes::from(k.clone().into_bytes())))
                    .await
                    .map_err(|e| format!("put {k}: {e}"))
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", r.target()));
    let got = listing(&r, "generations/").await;
    assert_eq!(got.len(), N, "{}: listed {} of {N}", r.target(), got.len());
    // A listing that continues from a key: the 600 after the 500th.
    let after = r
        .list_after("generations/", &keys[499])
        .await
        .unwrap_or_else(|e| panic!("{}: list_after: {e}", r.target()));
    let mut after: Vec<String> = after.into_iter().map(|o| o.key).collect();
    after.sort();
    assert_eq!(after, keys[500..].to_vec(), "{}: list_after", r.target());
    for k in &keys {
        assert_eq!(got[k].size, k.len() as u64, "{}: {k}", r.target());
    }
    r.delete(&keys)
        .await
        .unwrap_or_else(|e| panic!("{}: delete {N} keys: {e}", r.target()));
    let left = listing(&r, "generations/").await;
    assert!(
        left.is_empty(),
        "{}: {} keys left after delete",
        r.target(),
        left.len()
    );
}

/// `list_after` returns exactly the keys under the prefix that sort after the start key: from
/// the start (empty key), the middle, a key that is not stored, the last key, and past the end.
pub async fn list_after(r: DynReplica) {
    let g = "generations/00000000000000ab";
    let keys: Vec<String> = (0..5u32)
        .map(|i| format!("{g}/wal/00000001_{:08x}.wal.lz4", i * 4152))
        .collect();
    let other = "generations/00000000000000ac/wal/00000000_00000000.wal.lz4".to_string();
    for k in keys.iter().chain([&other]) {
        put_bytes(&r, k, k.as_bytes()).await;
    }
    let after = |start: String| {
        let r = r.clone();
        async move {
            let mut v: Vec<String> = r
                .list_after(&format!("{g}/"), &start)
                .await
                .unwrap_or_else(|e| panic!("{}: list_after {start}: {e}", r.target()))
                .into_iter()
                .map(|o| o.key)
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(
        after(String::new()).await,
        keys,
        "{}: from the start",
        r.target()
    );
    assert_eq!(
        after(keys[1].clone()).await,
        keys[2..].to_vec(),
        "{}: middle",
        r.target()
    );
    let between = format!("{g}/wal/00000001_00001039.wal.lz4");
    assert_eq!(
        after(between).await,
        keys[2..].to_vec(),
        "{}: unstored start",
        r.target()
    );
    assert!(
        after(keys[4].clone()).await.is_empty(),
        "{}: after the last",
        r.target()
    );
    assert!(
        after(format!("{g}/zzz")).await.is_empty(),
        "{}: past the end",
        r.target()
    );
    // `stat`: one object by its exact key; nothing for a missing key or a "directory".
    let st = r
        .stat(&keys[0])
        .await
        .unwrap_or_else(|e| panic!("{}: stat {}: {e}", r.target(), keys[0]))
        .unwrap_or_else(|| panic!("{}: stat {} found nothing", r.target(), keys[0]));
    assert_eq!(
        (st.key.as_str(), st.size),
        (keys[0].as_str(), keys[0].len() as u64),
        "{}: stat",
        r.target()
    );
    for missing in [
        format!("{g}/wal/00000001_99999999.wal.lz4"),
        format!("{g}/wal"),
    ] {
        let got = r
            .stat(&missing)
            .await
            .unwrap_or_else(|e| panic!("{}: stat {missing}: {e}", r.target()));
        assert!(got.is_none(), "{}: stat {missing}: {got:?}", r.target());
    }
    // Stores that list from a key on their side say so (S3 StartAfter, GCS startOffset).
    assert_eq!(
        r.lists_after_natively(),
        matches!(r.kind(), "s3" | "gcs"),
        "{}: lists_after_natively",
        r.target()
    );
    // `list_names`: the names one level down, not the objects.
    let names = |prefix: String| {
        let r = r.clone();
        async move {
            r.list_names(&prefix)
                .await
                .unwrap_or_else(|e| panic!("{}: list_names {prefix}: {e}", r.target()))
        }
    };
    let gens = names("generations/".into()).await;
    for n in ["00000000000000ab", "00000000000000ac"] {
        assert!(
            gens.iter().any(|g| g == n),
            "{}: list_names misses {n}: {gens:?}",
            r.target()
        );
    }
    assert!(gens.windows(2).all(|w| w[0] < w[1]), "{gens:?}");
    assert_eq!(names(format!("{g}/")).await, ["wal"], "{}", r.target());
    assert!(
        names("generations/00000000000000ff/".into())
            .await
            .is_empty(),
        "{}: names under a prefix that holds nothing",
        r.target()
    );
    let mut all: Vec<String> = keys.clone();
    all.push(other);
    // After a delete, stores that keep empty directories (SeaweedFS) may still name it.
    r.delete(&all)
        .await
        .unwrap_or_else(|e| panic!("{}: delete: {e}", r.target()));
}

/// Deterministic pseudo-random bytes (xorshift), cheap to regenerate for a re-opened source.
struct Noise {
    state: u64,
    left: usize,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Odd-sized reads, so sources never line up with part boundaries by accident.
        let n = buf.len().min(self.left).min(100_003);
        for b in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = self.state as u8;
        }
        self.left -= n;
        Ok(n)
    }
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    Noise {
        state: seed | 1,
        left: len,
    }
    .read_to_end(&mut v)
    .unwrap();
    v
}

/// A 20 MiB object from a streaming source (multipart on S3) and one from a file.
pub async fn large_object(r: DynReplica) {
    const LEN: usize = 20 << 20;
    let key = "generations/00000000000000bb/snapshots/00000000.snapshot.lz4";
    let src = PutSource::stream(|| {
        Ok(Box::new(Noise {
            state: 42 | 1,
            left: LEN,
        }) as Box<dyn Read + Send>)
    });
    let n = r
        .put(key, src)
        .await
        .unwrap_or_else(|e| panic!("{}: put 20 MiB: {e}", r.target()));
    assert_eq!(n, LEN as u64);
    let got = get_all(&r, key).await;
    assert!(
        got == noise(42, LEN),
        "{}: 20 MiB object read back differently",
        r.target()
    );
    assert_eq!(listing(&r, key).await[key].size, LEN as u64);
    // From a file, just over one part plus a tail.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.bin");
    let body = noise(7, (9 << 20) + 12345);
    std::fs::write(&path, &body).unwrap();
    let key2 = "generations/00000000000000bb/snapshots/00000001.snapshot.lz4";
    r.put(key2, PutSource::File(path))
        .await
        .unwrap_or_else(|e| panic!("{}: put file: {e}", r.target()));
    assert!(
        get_all(&r, key2).await == body,
        "{}: file object differs",
        r.target()
    );
    r.delete(&[key.to_string(), key2.to_string()])
        .await
        .unwrap();
}

/// A missing key is `NotFound`, for get; deleting missing keys succeeds.
pub async fn missing_keys(r: DynReplica) {
    match r.get("generations/0000000000000000/wal/nope.wal.lz4").await {
        Ok(_) => panic!("{}: get of a missing key succeeded", r.target()),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::NotFound, "{}: {e}", r.target());
            assert!(
                !e.is_retryable(),
                "{}: NotFound must not be retried",
                r.target()
            );
            assert!(
                e.to_string().contains("nope.wal.lz4"),
                "{}: error names the key: {e}",
                r.target()
            );
        }
    }
    assert!(listing(&r, "generations/").await.is_empty());
    r.delete(&["generations/x/missing-1".into(), "missing-2".into()])
        .await
        .unwrap_or_else(|e| panic!("{}: delete of missing keys: {e}", r.target()));
    r.delete(&[]).await.unwrap();
}

/// A second put replaces the object entirely (shorter content too).
pub async fn overwrite(r: DynReplica) {
    let key = "generations/00000000000000cc/wal/00000000_00000000.wal.lz4";
    put_bytes(&r, key, b"first version, longer than the second").await;
    put_bytes(&r, key, b"second").await;
    assert_eq!(get_all(&r, key).await, b"second");
    let l = listing(&r, "generations/").await;
    assert_eq!(l.len(), 1);
    assert_eq!(l[key].size, 6);
}

/// Many writers at once, on distinct keys and on one key.
pub async fn concurrent_puts(r: DynReplica) {
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                let body = noise(i, 1000 + i as usize * 997);
                let k = format!("generations/00000000000000dd/wal/{i:08x}_00000000.wal.lz4");
                r.put(&k, PutSource::Bytes(Bytes::from(body)))
                    .await
                    .map_err(|e| e.to_string())?;
                r.put(
                    "generations/00000000000000dd/shared",
                    PutSource::Bytes(Bytes::from(format!("writer {i}"))),
                )
                .await
                .map_err(|e| e.to_string())
            })
        })
        .collect();
    for t in tasks {
        t.await
            .unwrap()
            .unwrap_or_else(|e| panic!("{}: concurrent put: {e}", r.target()));
    }
    for i in 0..32u64 {
        let k = format!("generations/00000000000000dd/wal/{i:08x}_00000000.wal.lz4");
        assert!(
            get_all(&r, &k).await == noise(i, 1000 + i as usize * 997),
            "{}: {k}",
            r.target()
        );
    }
    let shared =
        String::from_utf8(get_all(&r, "generations/00000000000000dd/shared").await).unwrap();
    // Exactly one of the written values, whole: not a prefix, a mix or a torn tail.
    assert!(
        (0..32).any(|i| shared == format!("writer {i}")),
        "{}: one whole version wins: {shared:?}",
        r.target()
    );
    assert_eq!(listing(&r, "generations/").await.len(), 33);
}

/// The self-check passes and leaves nothing behind.
pub async fn check(r: DynReplica) {
    r.check()
        .await
        .unwrap_or_else(|e| panic!("{}: check: {e}", r.target()));
    let left = listing(&r, "").await;
    assert!(
        left.is_empty(),
        "{}: check left {:?}",
        r.target(),
        left.keys()
    );
}

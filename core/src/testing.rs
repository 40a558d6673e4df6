//! In-process test doubles for the engine: a replica in memory and a fault-injecting wrapper.
//!
//! Compiled for core's own unit tests and, behind the `testing` feature, for other crates'
//! tests. They exist so the shipper, retention and restore can be tested at every step of
//! failure in milliseconds; the behaviour suite still runs every real backend (file, S3, SFTP)
//! against real servers, and these never stand in for them there.

use crate::error::{Error, ErrorKind, Result};
use crate::replica::{ByteReader, DynReplica, ObjectMeta, ObjectReader, PutSource, Replica};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Objects in a map: puts are atomic (a reader sees the old object or the new one), listings
/// come back in reverse key order so nothing can rely on the server's order.
#[derive(Debug, Default)]
pub struct MemoryReplica {
    objects: Mutex<BTreeMap<String, (Bytes, SystemTime)>>,
    native_list_after: std::sync::atomic::AtomicBool,
}

impl MemoryReplica {
    /// An empty store, shared (`Arc`) so a test can inspect it while a shipper or restore uses it.
    pub fn new() -> Arc<MemoryReplica> {
        Arc::new(MemoryReplica::default())
    }

    /// Makes [`Replica::lists_after_natively`] answer `yes`, as S3 does (the listing itself
    /// stays the same), so a test can take either path of a caller.
    pub fn set_lists_after_natively(&self, yes: bool) {
        self.native_list_after.store(yes, Ordering::SeqCst);
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Backdates (or moves) an object's time, for retention and point-in-time tests.
    pub fn set_modified(&self, key: &str, t: SystemTime) {
        if let Some(o) = self.lock().get_mut(key) {
            o.1 = t;
        }
    }

    /// The stored bytes of `key`.
    pub fn bytes(&self, key: &str) -> Option<Bytes> {
        self.lock().get(key).map(|o| o.0.clone())
    }

    /// Replaces the stored bytes of an existing `key` (damage, for tests).
    pub fn replace(&self, key: &str, bytes: Bytes) {
        if let Some(o) = self.lock().get_mut(key) {
            o.0 = bytes;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, SystemTime)>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Replica for MemoryReplica {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn target(&self) -> String {
        "memory".to_string()
    }

    async fn put(&self, key: &str, source: PutSource) -> Result<u64> {
        // The source reads shadow files and compresses: blocking work, as in every backend.
        let body = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut v = Vec::new();
            source.open()?.read_to_end(&mut v)?;
            Ok(v)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Other, format!("put task failed: {e}")))?
        .map_err(|e| Error::io(format!("read source of {key}"), e))?;
        let n = body.len() as u64;
        self.lock()
            .insert(key.to_string(), (Bytes::from(body), SystemTime::now()));
        Ok(n)
    }

    async fn get(&self, key: &str) -> Result<ByteReader> {
        Ok(self.get_from(key, 0, None).await?.reader)
    }

    async fn get_from(
        &self,
        key: &str,
        offset: u64,
        _version: Option<&str>,
    ) -> Result<ObjectReader> {
        match self.lock().get(key) {
            Some((b, _)) => {
                let rest = b.slice((offset as usize).min(b.len())..);
                Ok(ObjectReader {
                    remaining: Some(rest.len() as u64),
                    reader: Box::new(std::io::Cursor::new(rest)),
                    version: None,
                })
            }
            None => Err(Error::not_found(format!("object {key} not found"))),
        }
    }

    fn lists_after_natively(&self) -> bool {
        self.native_list_after.load(Ordering::SeqCst)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut v: Vec<ObjectMeta> = self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (b, t))| ObjectMeta {
                key: k.clone(),
                size: b.len() as u64,
                modified: *t,
            })
            .collect();
        v.reverse();
        Ok(v)
    }

    async fn delete(&self, keys: &[String]) -> Result<()> {
        let mut m = self.lock();
        for k in keys {
            m.remove(k);
        }
        Ok(())
    }
}

/// The replica operations a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Calls of `put` (uploads).
    Put,
    /// Calls of `get` (downloads).
    Get,
    /// Calls of `list` and of `list_after`.
    List,
    /// Calls of `delete`.
    Delete,
    /// Calls of `stat`.
    Stat,
}

/// What happens to a targeted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with this kind (retryable when the kind is `Transient`), doing nothing.
    Fail(ErrorKind),
    /// The call is made after this delay.
    Delay(Duration),
    /// `get` only: the stream breaks with a reset after this many bytes.
    Cut(u64),
}

/// Which calls of an operation a rule targets, counted from 1 per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// Only the `n`th call (1 is the first).
    Nth(u64),
    /// This call and every later one (an outage), until the rules are cleared.
    From(u64),
}

impl Calls {
    fn matches(self, n: u64) -> bool {
        match self {
            Calls::Nth(k) => n == k,
            Calls::From(k) => n >= k,
        }
    }
}

/// Wraps a replica and injects faults into chosen calls. Calls are counted per operation.
#[derive(Debug)]
pub struct Faulty {
    inner: DynReplica,
    rules: Mutex<Vec<(Op, Calls, Fault)>>,
    counts: [AtomicU64; 5],
    in_flight: [AtomicU64; 5],
    most_in_flight: [AtomicU64; 5],
}

/// Counts a call of one operation as in flight until dropped.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Faulty {
    /// Wraps `inner` with no faults; add them with [`Faulty::inject`].
    pub fn new(inner: DynReplica) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner,
            rules: Mutex::new(Vec::new()),
            counts: Default::default(),
            in_flight: Default::default(),
            most_in_flight: Default::default(),
        })
    }

    /// Adds a rule; rules for the same call apply in the order given (a delay, then a failure).
    pub fn inject(&self, op: Op, calls: Calls, fault: Fault) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((op, calls, fault));
    }

    /// Ends every fault (the outage is over); call counts keep going.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// How many calls of `op` were made (faulted ones included).
    pub fn calls(&self, op: Op) -> u64 {
        self.counts[op as usize].load(Ordering::SeqCst)
    }

    /// The most calls of `op` that were under way at once (from entry until the inner store
    /// answered): whether a caller really sends requests concurrently.
    pub fn most_in_flight(&self, op: Op) -> u64 {
        self.most_in_flight[op as usize].load(Ordering::SeqCst)
    }

    fn track(&self, op: Op) -> InFlight<'_> {
        let now = self.in_flight[op as usize].fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight[op as usize].fetch_max(now, Ordering::SeqCst);
        InFlight(&self.in_flight[op as usize])
    }

    /// Counts the call and applies its faults; Err when it must fail, else any cut for `get`.
    async fn enter(&self, op: Op, what: &str) -> Result<Option<u64>> {
        let n = self.counts[op as usize].fetch_add(1, Ordering::SeqCst) + 1;
        let faults: Vec<Fault> = self
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(o, c, _)| *o == op && c.matches(n))
            .map(|(_, _, f)| *f)
            .collect();
        let mut cut = None;
        for f in faults {
            match f {
                Fault::Delay(d) => tokio::time::sleep(d).await,
                Fault::Fail(kind) => {
                    return Err(Error::new(
                        kind,
                        format!("injected fault: {op:?} call {n} ({what})"),
                    )
                    .retryable(kind == ErrorKind::Transient))
                }
                Fault::Cut(after) => cut = Some(after),
            }
        }
        Ok(cut)
    }
}

#[async_trait]
impl Replica for Faulty {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn target(&self) -> String {
        self.inner.target()
    }

    async fn put(&self, key: &str, source: PutSource) -> Result<u64> {
        let _call = self.track(Op::Put);
        self.enter(Op::Put, key).await?;
        self.inner.put(key, source).await
    }

    async fn get(&self, key: &str) -> Result<ByteReader> {
        let _call = self.track(Op::Get);
        let cut = self.enter(Op::Get, key).await?;
        let r = self.inner.get(key).await?;
        Ok(match cut {
            Some(after) => Box::new(r.take(after).chain(Broken)),
            None => r,
        })
    }

    /// Counted and faulted as a `get` (a resumed download is another download).
    async fn get_from(
        &self,
        key: &str,
        offset: u64,
        version: Option<&str>,
    ) -> Result<ObjectReader> {
        let _call = self.track(Op::Get);
        let cut = self.enter(Op::Get, key).await?;
        let mut o = self.inner.get_from(key, offset, version).await?;
        if let Some(after) = cut {
            o.reader = Box::new(o.reader.take(after).chain(Broken));
        }
        Ok(o)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let _call = self.track(Op::List);
        self.enter(Op::List, prefix).await?;
        self.inner.list(prefix).await
    }

    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<ObjectMeta>> {
        let _call = self.track(Op::List);
        self.enter(Op::List, prefix).await?;
        self.inner.list_after(prefix, start_after).await
    }

    fn lists_after_natively(&self) -> bool {
        self.inner.lists_after_natively()
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let _call = self.track(Op::Stat);
        self.enter(Op::Stat, key).await?;
        self.inner.stat(key).await
    }

    async fn delete(&self, keys: &[String]) -> Result<()> {
        let _call = self.track(Op::Delete);
        self.enter(Op::Delete, &keys.join(",")).await?;
        self.inner.delete(keys).await
    }
}

/// The end of a cut stream: a connection reset.
struct Broken;

impl AsyncRead for Broken {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected fault: stream cut",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_round_trip_and_faults_on_the_chosen_call() {
        let m = MemoryReplica::new();
        let f = Faulty::new(m.clone());
        f.inject(Op::Put, Calls::Nth(2), Fault::Fail(ErrorKind::Transient));
        f.inject(Op::Get, Calls::Nth(1), Fault::Cut(3));
        f.put("a/1", PutSource::Bytes(Bytes::from_static(b"hello")))
            .await
            .unwrap();
        let e = f
            .put("a/2", PutSource::Bytes(Bytes::from_static(b"x")))
            .await
            .unwrap_err();
        assert!(e.is_retryable() && e.kind() == ErrorKind::Transient, "{e}");
        assert_eq!(
            m.keys(),
            vec!["a/1".to_string()],
            "a failed put stores nothing"
        );
        let mut got = Vec::new();
        let e = f
            .get("a/1")
            .await
            .unwrap()
            .read_to_end(&mut got)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
        assert_eq!(got, b"hel");
        got.clear();
        f.get("a/1")
            .await
            .unwrap()
            .read_to_end(&mut got)
            .await
            .unwrap();
        assert_eq!(got, b"hello");
        assert_eq!((f.calls(Op::Put), f.calls(Op::Get)), (2, 2));
        assert_eq!(
            f.get("nope").await.err().map(|e| e.kind()),
            Some(ErrorKind::NotFound)
        );
    }

    #[tokio::test]
    async fn an_outage_lasts_until_cleared() {
        let f = Faulty::new(MemoryReplica::new());
        f.inject(Op::List, Calls::From(2), Fault::Fail(ErrorKind::Io));
        assert!(f.list("").await.is_ok());
        assert!(f.list("").await.is_err());
        assert!(f.list("").await.is_err());
        f.clear();
        assert!(f.list("").await.is_ok());
    }
}

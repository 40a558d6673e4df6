//! Restore progress: a bar on stderr (indicatif) when stderr is a terminal, nothing extra
//! otherwise (the restore's own log lines say what happens). Progress is counted in downloaded
//! bytes by wrapping the replica, so the engine knows nothing about terminals.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use walship_core::replica::{ByteReader, DynReplica, WrappedReads};

/// A progress bar over `total` bytes, or `None` when stderr is not a terminal.
pub fn bar(total: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "restoring {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style);
    }
    Some(pb)
}

/// `inner` with the bytes of every download counted into the bar.
pub fn counting(inner: DynReplica, pb: ProgressBar) -> DynReplica {
    WrappedReads::wrap(
        inner,
        Arc::new(move |r| {
            Box::new(CountingReader {
                inner: r,
                pb: pb.clone(),
            }) as ByteReader
        }),
    )
}

struct CountingReader {
    inner: ByteReader,
    pb: ProgressBar,
}

impl AsyncRead for CountingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.pb.inc(n as u64);
        }
        res
    }
}

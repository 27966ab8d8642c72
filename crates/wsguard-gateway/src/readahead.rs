//! Read-ahead without a per-socket buffer: one system call takes whatever the kernel holds (up
//! to [`SCRATCH`] bytes) into a scratch buffer shared by the thread, and the WebSocket codec is
//! then served from it.
//!
//! Owns [`ReadAhead`]. The codec reads in small steps (`gateway.read_buffer_bytes`, which keeps
//! idle sockets cheap); without this layer each step would be a system call, and a 1 KiB
//! message would cost two reads. Bytes the codec has not taken yet stay with the socket in a
//! buffer sized to them, freed as soon as it is drained, so an idle socket holds nothing here.
//! It must not look at or change the bytes.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

/// Largest single read.
pub const SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// The wrapper. Writes pass straight through.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Read but not yet taken; empty (no allocation) most of the time.
    pending: Vec<u8>,
    taken: usize,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            pending: Vec::new(),
            taken: 0,
        }
    }

    /// Bytes read from the socket that the reader has not taken yet.
    pub fn buffered(&self) -> usize {
        self.pending.len() - self.taken
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.taken < this.pending.len() {
            let n = (this.pending.len() - this.taken).min(buf.remaining());
            buf.put_slice(&this.pending[this.taken..this.taken + n]);
            this.taken += n;
            if this.taken == this.pending.len() {
                this.pending = Vec::new();
                this.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= SCRATCH {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        SCRATCH_BUF.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                // Re-entered on this thread (never in practice): read directly.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            };
            let mut ahead = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut ahead))?;
            let got = ahead.filled();
            let n = got.len().min(buf.remaining());
            buf.put_slice(&got[..n]);
            if got.len() > n {
                this.pending = got[n..].to_vec();
                this.taken = 0;
            }
            Poll::Ready(Ok(()))
        })
    }
}

write_through!(ReadAhead);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn small_reads_are_served_from_one_read_ahead_and_nothing_is_kept() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        tx.write_all(&data).await.unwrap();
        drop(tx);
        let mut r = ReadAhead::new(rx);
        let mut out = Vec::new();
        let mut step = [0u8; 700];
        // The first small read takes everything the pipe holds; the rest comes from memory.
        let n = r.read(&mut step).await.unwrap();
        out.extend_from_slice(&step[..n]);
        assert_eq!(r.buffered(), data.len() - n);
        loop {
            let n = r.read(&mut step).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&step[..n]);
        }
        assert_eq!(out, data, "same bytes, same order");
        assert_eq!(r.buffered(), 0);
        assert_eq!(r.pending.capacity(), 0, "drained: the buffer is freed");
    }

    #[tokio::test]
    async fn large_reads_bypass_the_scratch() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        tx.write_all(&[7u8; 100]).await.unwrap();
        let mut r = ReadAhead::new(rx);
        let mut big = vec![0u8; SCRATCH];
        assert_eq!(r.read(&mut big).await.unwrap(), 100);
        assert_eq!(r.buffered(), 0);
    }
}

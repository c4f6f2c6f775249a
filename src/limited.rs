//! A TCP stream that refuses to read more than a budget until told the budget is over:
//! caps what a stranger may send before the WebSocket handshake completes.
//!
//! tungstenite has a fixed 64 KiB cap on the request; `--max-handshake-bytes` lets an
//! operator go well below that (a browser's upgrade request is well under 4 KiB).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// `TcpStream` plus a read budget, for the handshake only (`into_tcp` ends it).
#[derive(Debug)]
pub struct Limited {
    inner: TcpStream,
    budget: usize,
}

impl Limited {
    /// Wraps `inner`, allowing `budget` bytes to be read until [`Limited::into_tcp`].
    pub fn new(inner: TcpStream, budget: usize) -> Self {
        Limited { inner, budget }
    }

    /// The socket itself, once the handshake is done.
    pub fn into_tcp(self) -> TcpStream {
        self.inner
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let budget = this.budget;
        if budget == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "handshake larger than --max-handshake-bytes",
            )));
        }
        // Read at most the budget, so the limit is exact. Through a small copy: this
        // only runs during the handshake, and it keeps the crate free of `unsafe`.
        let mut tmp = [0u8; 1024];
        let max = budget.min(tmp.len()).min(buf.remaining());
        let mut small = ReadBuf::new(&mut tmp[..max]);
        let result = Pin::new(&mut this.inner).poll_read(cx, &mut small);
        if let Poll::Ready(Ok(())) = result {
            let n = small.filled().len();
            buf.put_slice(small.filled());
            this.budget = budget - n;
        }
        result
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

//! The HTTP door's socket, as hyper sees it: the TCP stream plus the two things hyper 1
//! does not do. A write that makes no progress for the request timeout fails, so a client
//! that stops reading its reply loses its connection instead of holding a slot for ever.
//! And the close lingers: after our answer and FIN it reads and discards what the client
//! still sends, briefly, because closing a socket with unread input makes the kernel
//! reset the connection, which can destroy the answer before the client reads it (a 413
//! to a client still sending its body would arrive as a broken pipe).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, sleep_until};

/// A lingering close ends this long after it began, whatever the client still sends.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// A lingering close ends after this long without input from the client.
const LINGER_QUIET: Duration = Duration::from_millis(200);

/// A door connection's socket (see the module doc).
#[derive(Debug)]
pub(crate) struct DoorSocket {
    tcp: TcpStream,
    /// How long a write may wait for the client to make room.
    stall: Duration,
    /// The one timer: a waiting write's deadline, or the linger's. Made the first time
    /// either is needed (a connection whose writes never wait and whose client closes
    /// first never allocates it).
    timer: Option<Pin<Box<Sleep>>>,
    /// A write has been waiting since the timer was armed.
    write_waits: bool,
    close: Close,
}

#[derive(Debug, Clone, Copy)]
enum Close {
    Open,
    /// FIN sent; discarding input until EOF, a quiet spell, or `until`.
    Lingering {
        until: Instant,
        /// The timer is set for this linger's quiet spell.
        armed: bool,
    },
    Done,
}

impl DoorSocket {
    /// `stall`: how long a write may make no progress before it fails.
    pub(crate) fn new(tcp: TcpStream, stall: Duration) -> DoorSocket {
        DoorSocket {
            tcp,
            stall,
            timer: None,
            write_waits: false,
            close: Close::Open,
        }
    }

    /// Sets the timer to `at`, making it if needed.
    fn arm(&mut self, at: Instant) -> Pin<&mut Sleep> {
        let timer = self.timer.get_or_insert_with(|| Box::pin(sleep_until(at)));
        timer.as_mut().reset(at);
        timer.as_mut()
    }

    /// After a write found the socket full: pending until the stall deadline, then an
    /// error that ends the connection.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timer = match self.timer.as_mut() {
            Some(timer) if self.write_waits => timer.as_mut(),
            _ => {
                self.write_waits = true;
                self.arm(Instant::now() + self.stall)
            }
        };
        ready!(timer.poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read none of its reply for the request timeout",
        )))
    }

    /// Reads and discards until EOF, an error or nothing more to read now; true when
    /// the linger is over (EOF or error).
    fn discard(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut sink = [0u8; 4096];
        let mut read_some = false;
        loop {
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut self.tcp).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(true),
                Poll::Ready(Ok(())) => read_some = true,
                Poll::Ready(Err(_)) => return Poll::Ready(true),
                Poll::Pending if read_some => return Poll::Ready(false),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncRead for DoorSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for DoorSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.tcp).poll_write(cx, buf) {
            Poll::Pending => this.stalled(cx),
            done => {
                this.write_waits = false;
                done
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.stalled(cx),
            done => {
                this.write_waits = false;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    /// FIN, then the linger: input is discarded until the client closes, goes quiet for
    /// [`LINGER_QUIET`], or [`LINGER`] has passed.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.close {
                Close::Open => {
                    ready!(Pin::new(&mut this.tcp).poll_shutdown(cx))?;
                    this.close = Close::Lingering {
                        until: Instant::now() + LINGER,
                        armed: false,
                    };
                }
                Close::Lingering { until, armed } => match this.discard(cx) {
                    Poll::Ready(true) => this.close = Close::Done,
                    Poll::Pending if armed => {
                        ready!(
                            this.timer
                                .as_mut()
                                .map_or(Poll::Ready(()), |t| t.as_mut().poll(cx))
                        );
                        this.close = Close::Done;
                    }
                    // Input came, or the wait begins: the quiet spell starts now. (A client
                    // that has closed already never gets here: no timer for it.)
                    Poll::Ready(false) if Instant::now() >= until => this.close = Close::Done,
                    Poll::Ready(false) | Poll::Pending => {
                        this.write_waits = false;
                        this.arm((Instant::now() + LINGER_QUIET).min(until));
                        this.close = Close::Lingering { until, armed: true };
                    }
                },
                Close::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

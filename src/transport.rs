//! The socket a browser connection runs on after accept: bare TCP, or TCP with a TLS
//! session (`wss://`, see `tls.rs`). Both offer the same non-blocking calls, so framing,
//! the handshake and the session loop are written once.

use std::io::{self, IoSlice};
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::outbox::Socket;
use crate::tls::TlsSocket;

/// A browser's socket, plain or TLS.
#[derive(Debug)]
pub enum Transport {
    /// `ws://`. Shared: once bound, pushes may write frames to it themselves (see
    /// `outbox.rs`, "Writing through").
    Plain(Arc<TcpStream>),
    /// `wss://`. Boxed: a TLS session is a few hundred bytes, a plain socket a pointer's
    /// worth, and most deployments serve one kind. Past a TLS 1.3 handshake its sending
    /// half is shared too, for pushes to write through ([`Transport::through`]).
    Tls(Box<TlsSocket>),
}

impl Transport {
    /// Waits until [`Transport::try_read`] may have input.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.readable().await,
            Transport::Tls(tls) => tls.readable().await,
        }
    }

    /// Reads without waiting (`WouldBlock` when nothing is there); `Ok(0)` at the end.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.try_read(buf),
            Transport::Tls(tls) => tls.try_read(buf),
        }
    }

    /// Waits until [`Transport::try_write`] may take bytes (over TLS: until the queued
    /// ciphertext has left).
    pub async fn writable(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.writable().await,
            Transport::Tls(tls) => tls.writable().await,
        }
    }

    /// Writes without waiting; `WouldBlock` when the socket takes nothing now.
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.try_write(buf),
            Transport::Tls(tls) => tls.try_write(buf),
        }
    }

    /// [`Transport::try_write`] for several buffers.
    pub fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.try_write_vectored(bufs),
            Transport::Tls(tls) => tls.try_write_vectored(bufs),
        }
    }

    /// What pushes may write through to once the connection is bound (`outbox.rs`,
    /// "Writing through"): the plain socket, or a TLS 1.3 session's sending half. `None`
    /// for a TLS 1.2 session, whose records rustls seals in the task.
    pub fn through(&self) -> Option<Arc<dyn Socket>> {
        match self {
            Transport::Plain(tcp) => Some(tcp.clone()),
            Transport::Tls(tls) => tls.through().map(|wire| wire as Arc<dyn Socket>),
        }
    }

    /// Whether bytes counted as written still wait to leave (TLS only): a write is
    /// complete only once this is false.
    pub fn pending_output(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.pending_output(),
        }
    }

    /// Waits until everything counted as written has left (TLS only; a plain socket's
    /// bytes are the kernel's once written).
    pub async fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(tls) => tls.writable().await,
        }
    }
}

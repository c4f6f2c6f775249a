//! Native TLS on the browser port (`wss://`): the certificate and key files, the rustls
//! settings, and one TLS session on a socket.
//!
//! # Why rustls' own API and not tokio-rustls
//! The browser path is readiness-based (`frames.rs`): it writes frames straight from the
//! payload every recipient shares with `try_write`, without waiting and resumable, and it
//! reads with `try_read` inside a `select!` that must stay cancel-safe. tokio-rustls'
//! `AsyncRead`/`AsyncWrite` stream would need a waker per write. rustls' connection is
//! sans-I/O (`read_tls`/`write_tls` over any `Read`/`Write`), so [`TlsSocket`] gives the same
//! `try_read`/`try_write`/`readable`/`writable` the bare socket has, and the rest of the
//! path does not know which one it drives.
//!
//! # Memory
//! rustls is given a 64 KiB limit for plaintext waiting to be encrypted or read, and
//! [`TlsSocket::try_write`] takes no new plaintext while ciphertext from the last write is
//! still queued: a slow TLS reader holds at most one write's worth, like the kernel's
//! send buffer holds for a plain one.

use std::io::{self, IoSlice, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::ServerConnection;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;

/// Where the certificate chain and the private key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Most TLS bytes a client may send before its handshake is complete. A browser's
/// ClientHello is 0.5–2 KiB (with a post-quantum key share); 16 KiB is far above any.
pub const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;

/// Plaintext rustls may hold per connection, either way.
const BUFFER_LIMIT: usize = 64 * 1024;

/// Loads `files` into rustls settings: TLS 1.2 and 1.3 with rustls' safe defaults (no
/// client certificates), ALPN `http/1.1`. The error says which file and what is wrong.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS certificate {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate {}: no certificate in the file",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("TLS key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "TLS key {} and certificate {}: {e}",
                files.key.display(),
                files.cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The settings new TLS connections get; a reload swaps them, and connections already
/// up keep the session they have.
#[derive(Debug)]
pub struct Acceptor {
    config: RwLock<Arc<ServerConfig>>,
}

impl Acceptor {
    /// Loads `files`.
    pub fn new(files: &TlsFiles) -> Result<Acceptor, String> {
        Ok(Acceptor {
            config: RwLock::new(load(files)?),
        })
    }

    /// Reads `files` (the same paths or new ones) for the connections to come; on an
    /// error the settings in use stay and the error is returned.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), String> {
        let fresh = load(files)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs the server side of a TLS handshake on `tcp`. Nothing is allocated for the
    /// session until the client's first byte is here (see `handshake.rs` for why silent
    /// connections must stay cheap). Not bounded in time here: the caller's bind deadline
    /// covers it.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Result<TlsSocket, TlsError> {
        let mut probe = [0u8; 1];
        match tcp.peek(&mut probe).await {
            Ok(0) | Err(_) => return Err(TlsError::Gone),
            Ok(_) => {}
        }
        let mut conn = ServerConnection::new(self.current()).map_err(TlsError::Tls)?;
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        let mut socket = TlsSocket { tcp, conn };
        let mut received = 0;
        while socket.conn.is_handshaking() {
            socket.flush().await.map_err(|_| TlsError::Gone)?;
            if !socket.conn.is_handshaking() {
                break;
            }
            if !socket.conn.wants_read() {
                // Nothing to send and nothing to read: rustls is stuck (never expected).
                return Err(TlsError::Tls(rustls::Error::General(
                    "handshake stalled".into(),
                )));
            }
            match socket.conn.read_tls(&mut Sock(&socket.tcp)) {
                Ok(0) => return Err(TlsError::Gone),
                Ok(n) => {
                    received += n;
                    if received > MAX_HANDSHAKE_BYTES {
                        return Err(TlsError::TooLarge);
                    }
                    if let Err(err) = socket.conn.process_new_packets() {
                        // Tell the client why (an alert), if the socket takes it now.
                        let _ = socket.conn.write_tls(&mut Sock(&socket.tcp));
                        return Err(TlsError::Tls(err));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    socket.tcp.readable().await.map_err(|_| TlsError::Gone)?;
                }
                Err(_) => return Err(TlsError::Gone),
            }
        }
        socket.flush().await.map_err(|_| TlsError::Gone)?;
        Ok(socket)
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub(crate) enum TlsError {
    /// The client went away, or the socket failed.
    Gone,
    /// The client sent more than [`MAX_HANDSHAKE_BYTES`] before finishing.
    TooLarge,
    /// Not TLS, or a TLS the settings refuse (the client got an alert).
    Tls(rustls::Error),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Gone => f.write_str("client went away during the TLS handshake"),
            TlsError::TooLarge => write!(f, "TLS handshake over {MAX_HANDSHAKE_BYTES} bytes"),
            TlsError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

/// A TCP socket with an established TLS session: the same non-blocking calls as the bare
/// socket, over plaintext.
#[derive(Debug)]
pub struct TlsSocket {
    tcp: TcpStream,
    conn: ServerConnection,
}

impl TlsSocket {
    /// Waits until [`TlsSocket::try_read`] may have something: plaintext rustls already
    /// decrypted, or bytes on the socket.
    pub async fn readable(&self) -> io::Result<()> {
        if self.conn.wants_read() {
            self.tcp.readable().await
        } else {
            Ok(())
        }
    }

    /// Reads plaintext without waiting; `Ok(0)` is the end of the stream (the client's
    /// close_notify, or TCP closed).
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.conn.read_tls(&mut Sock(&self.tcp))? == 0 {
                return Ok(0);
            }
            let state = self.conn.process_new_packets();
            // Whatever rustls has to say (an alert, a key update) goes out when it can.
            let _ = self.write_tls();
            if let Err(err) = state {
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
        }
    }

    /// Waits until the socket has taken every queued TLS byte (so a `try_write` will take
    /// new plaintext).
    pub async fn writable(&mut self) -> io::Result<()> {
        self.flush().await
    }

    /// Sends what rustls has queued, waiting for the socket as needed.
    async fn flush(&mut self) -> io::Result<()> {
        loop {
            match self.write_tls() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts as much of `buf` as rustls takes and sends what the socket takes without
    /// waiting. `WouldBlock` while earlier ciphertext is still queued.
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(buf)])
    }

    /// [`TlsSocket::try_write`] for several buffers (one TLS record per call, where they fit).
    pub fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_tls()?;
        let n = self.conn.writer().write_vectored(bufs)?;
        match self.write_tls() {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// Whether ciphertext is queued that the socket has not taken yet.
    pub fn pending_output(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes queued ciphertext until none is left (`Ok`) or the socket is full
    /// (`WouldBlock`).
    fn write_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut Sock(&self.tcp))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Buffers plaintext for the next flush without touching the socket (the 101 of the
    /// upgrade, written through tungstenite's `AsyncWrite`).
    pub(crate) fn buffer(&mut self, data: &[u8]) -> io::Result<usize> {
        self.conn.writer().write(data)
    }
}

/// `Read`/`Write` over the non-blocking calls of a tokio socket, for rustls.
struct Sock<'a>(&'a TcpStream);

impl Read for Sock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Sock<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

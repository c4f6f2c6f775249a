//! Native TLS on the browser port (`wss://`): the certificate and key files, the rustls
//! settings, and one TLS session on a socket.
//!
//! # Why rustls' unbuffered API
//! The browser path is readiness-based (`frames.rs`): it writes frames straight from the
//! payload every recipient shares with `try_write`, without waiting and resumable, and it
//! reads with `try_read` inside a `select!` that must stay cancel-safe. rustls'
//! [`UnbufferedServerConnection`] is sans-I/O and owns no buffer at all: the ciphertext in
//! and out and the decrypted plaintext live in [`TlsSocket`]'s own `Vec`s, which hold bytes
//! only while a record is arriving or leaving and are freed as soon as they are empty. So an
//! idle session costs its keys and state, not buffers (rustls' buffered `ServerConnection`
//! keeps a 4 KiB read buffer per session for good, and allocates it at the first byte).
//! Once a TLS 1.3 handshake is over, even the session goes: its traffic keys are handed
//! over (`tls_records.rs`) and the records are sealed and opened here, so an idle
//! connection keeps ~100 bytes of keys instead of rustls' ~3.4 KiB of state. TLS 1.2
//! sessions stay on rustls.
//! [`TlsSocket`] offers the same `try_read`/`try_write`/`readable`/`writable` as the bare
//! socket, so the rest of the path does not know which one it drives.
//!
//! # Memory
//! A connection that has not sent a whole first record yet has no session: its bytes wait
//! in a buffer that grows with what arrived (see `handshake.rs` for why silent connections
//! must stay cheap). After the handshake a write encrypts at most one record (16 KiB of
//! plaintext), and [`TlsSocket::try_write`] takes no new plaintext while ciphertext of the
//! last one is still queued: a slow TLS reader holds at most one record's worth, like the
//! kernel's send buffer holds for a plain one.
//!
//! # Closing
//! A client's `close_notify` is answered with ours (RFC 8446 §6.1), and a session that ends
//! for any other reason sends its `close_notify` before TCP closes, if the socket takes it
//! at once (a peer that stopped reading gets a bare close).

use std::io::{self, IoSlice};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, InsufficientSizeError,
    UnbufferedStatus,
};
use rustls::{ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;

use crate::tls_records::{self, Opened, Opener, Sealer};

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

/// Plaintext encrypted per write: one full TLS record.
const RECORD: usize = 16 * 1024;

/// Room for a record's header, nonce, tag and content type (22–29 bytes with the suites
/// rustls offers) and a key update rustls may put in front of it.
const SEAL_OVERHEAD: usize = 256;

/// Writes up to this size are encrypted into a stack buffer (the usual push), larger ones
/// into one sized for them.
const SMALL_WRITE: usize = 2048;

/// Bytes read from the socket per `read` (a whole record and its header fit).
const READ_CHUNK: usize = RECORD + SEAL_OVERHEAD;

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
    // A TLS 1.3 session's keys leave rustls once its handshake is over (`tls_records.rs`).
    config.enable_secret_extraction = true;
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

    /// A TLS session on `tcp`, whose client sent `first` (from [`first_record`]); its
    /// handshake is run by [`TlsSocket::handshake`]. Boxed at once: the session is large,
    /// and the future that waits on the handshake should not be.
    pub(crate) fn start(&self, tcp: TcpStream, first: Vec<u8>) -> Result<Box<TlsSocket>, TlsError> {
        let conn = UnbufferedServerConnection::new(self.current()).map_err(TlsError::Tls)?;
        Ok(Box::new(TlsSocket {
            wire: Arc::new(Wire {
                tcp,
                tx: Mutex::new(Tx {
                    sealer: None,
                    out: Vec::new(),
                    out_at: 0,
                }),
            }),
            session: Session {
                conn: Engine::Rustls(Box::new(conn)),
                incoming: first,
                plain: Vec::new(),
                plain_at: 0,
            },
            spent: false,
            eof: false,
            failed: false,
            notified: false,
        }))
    }
}

/// Reads a client's first TLS record (its ClientHello, normally), into a buffer that grows
/// with what arrived: until it is whole there is no session, so a client that sent part of
/// one costs its bytes and nothing else. Returned at once if the bytes cannot begin a TLS
/// handshake record (rustls then answers them with its alert).
pub(crate) async fn first_record(tcp: &TcpStream) -> Result<Vec<u8>, TlsError> {
    let mut first = Vec::new();
    while !first_record_here(&first) {
        match read_some(tcp, &mut first) {
            Ok(0) => return Err(TlsError::Gone),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tcp.readable().await.map_err(|_| TlsError::Gone)?;
            }
            Err(_) => return Err(TlsError::Gone),
        }
    }
    Ok(first)
}

/// Whether the first bytes a client sent should go to rustls now: once its first record is
/// complete, or at once if they cannot begin a TLS handshake record within
/// [`MAX_HANDSHAKE_BYTES`] (rustls then answers them with its alert, or the handshake
/// stops at that limit).
fn first_record_here(buf: &[u8]) -> bool {
    match buf {
        [] => false,
        [0x16, header @ ..] if header.len() < 4 => false,
        [0x16, _, _, hi, lo, body @ ..] => {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            5 + len > MAX_HANDSHAKE_BYTES || body.len() >= len
        }
        _ => true,
    }
}

/// Reads what the socket has into `buf`, without waiting. Not async, so its stack chunk
/// never becomes part of a waiting connection's task.
fn read_some(tcp: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 1024];
    let n = tcp.try_read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
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
pub struct TlsSocket {
    /// The socket and the sending half, shared with the connection's outbox once it is
    /// bound (see [`Wire`]).
    wire: Arc<Wire>,
    session: Session,
    /// rustls has made all it can of `session.incoming`: only new bytes from the socket
    /// can give more plaintext.
    spent: bool,
    /// The client's close_notify came (answered), or TCP ended: reads return 0.
    eof: bool,
    /// rustls failed (and said so with an alert): no close_notify after that.
    failed: bool,
    /// Our close_notify is queued (or sent).
    notified: bool,
}

impl std::fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSocket")
            .field("tcp", &self.wire.tcp)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

/// The socket of a TLS connection and everything that writes to it: the ciphertext queue,
/// and past a TLS 1.3 handshake the sending key and record sequence ([`Sealer`]).
///
/// # Writing through
/// A plain socket is written by a fan-out itself when its connection is idle (`outbox.rs`,
/// "Writing through"); so is a TLS 1.3 one, through this: the fan-out seals the frame into
/// records with the same key and sequence as the task and sends them. `tx` is the one
/// place both take them from, so every record gets the next sequence number and lands on
/// the socket in that order: whoever seals a record also sends it, or queues what the
/// socket did not take in `out`, and nobody seals more while `out` holds anything (the
/// next writer sends the queue first). Who may write a frame at all is the outbox's rule
/// (one writer at a time, frames whole and in order); this lock only orders records, and
/// covers the task's own records too (its close_notify, an alert) that it seals while
/// reading. It is a std mutex, held for a few non-blocking `send()`s and never across an
/// `.await`.
pub(crate) struct Wire {
    tcp: TcpStream,
    tx: Mutex<Tx>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

/// The sending side of a TLS session.
struct Tx {
    /// Past a TLS 1.3 handshake: the key and sequence records are sealed with (before
    /// that, and for a TLS 1.2 session's life, rustls seals them).
    sealer: Option<Sealer>,
    /// Ciphertext made and not yet taken by the socket, from `out_at` on; empty, with
    /// nothing allocated, whenever it has nothing to hold.
    out: Vec<u8>,
    out_at: usize,
}

/// The rustls session (or past a TLS 1.3 handshake, the receiving key) and the bytes that
/// are on their way in. Each `Vec` is empty, with nothing allocated, whenever it has
/// nothing to hold.
struct Session {
    conn: Engine,
    /// Ciphertext received and not yet consumed by rustls (part of a record, normally).
    incoming: Vec<u8>,
    /// Plaintext decrypted and not yet read, from `plain_at` on.
    plain: Vec<u8>,
    plain_at: usize,
}

/// Who protects the records: rustls through the handshake (and for the life of a TLS 1.2
/// session), then for TLS 1.3 only the keys it negotiated (`tls_records.rs`; the sending
/// key is in [`Tx`]).
enum Engine {
    /// Boxed: 1.1 KiB, held only until the handshake ends on TLS 1.3.
    Rustls(Box<UnbufferedServerConnection>),
    Records(Opener),
    /// Between the two: the hand-over failed.
    Gone,
}

/// What [`Session::process`] is asked for once rustls has done all it can with the input.
enum Want<'a> {
    /// Nothing: reading.
    Read,
    /// To encrypt this plaintext (at most one record).
    Write(&'a [u8]),
    /// To queue our close_notify.
    CloseNotify,
}

/// Where [`Session::process`] stopped.
enum Next {
    /// rustls needs more input (and took the plaintext of a `Want::Write`, if the
    /// session is past its handshake: see `Sealed`).
    Input,
    /// The plaintext of a `Want::Write` is encrypted: this many bytes of ciphertext are at
    /// the start of the caller's buffer (0: it went to `out`, after what was queued).
    Sealed(usize),
    /// The client's close_notify: the end of its data.
    PeerClosed,
    /// Both close_notify alerts are sent: nothing more may be written.
    Closed,
}

impl Session {
    /// Runs rustls over `incoming` until it needs more input or has done what `want`
    /// asks: what it has to send goes to `tx.out`, decrypted plaintext to `plain`, and the
    /// ciphertext of a `Want::Write` to `sealed` (or `tx.out` if it does not fit).
    fn process(
        &mut self,
        want: Want<'_>,
        sealed: &mut [u8],
        tx: &mut Tx,
    ) -> Result<Next, rustls::Error> {
        match self.conn {
            Engine::Rustls(_) => self.process_rustls(want, sealed, &mut tx.out),
            Engine::Records(_) => self.process_records(want, sealed, tx),
            Engine::Gone => Err(rustls::Error::General("TLS session lost".into())),
        }
    }

    /// [`Session::process`] past a TLS 1.3 handshake: records opened and sealed here.
    fn process_records(
        &mut self,
        want: Want<'_>,
        sealed: &mut [u8],
        tx: &mut Tx,
    ) -> Result<Next, rustls::Error> {
        let (Engine::Records(opener), Some(sealer)) = (&mut self.conn, &mut tx.sealer) else {
            return Err(rustls::Error::General("TLS session lost".into()));
        };
        match want {
            Want::Read => {
                if self.plain_at == self.plain.len() {
                    self.plain.clear();
                    self.plain_at = 0;
                }
                Ok(match opener.open(&mut self.incoming, &mut self.plain)? {
                    Opened::Input => Next::Input,
                    // A key update is not followed: the session ends as if the client had
                    // closed it, with our close_notify (see `tls_records.rs`).
                    Opened::PeerClosed | Opened::KeyUpdate => Next::PeerClosed,
                })
            }
            Want::Write(_) if sealer.closed() => Ok(Next::Closed),
            Want::Write(plain) => {
                let len = plain.len();
                let need = len + tls_records::OVERHEAD;
                if let Some(record) = sealed.get_mut(..need) {
                    record[tls_records::HEADER..][..len].copy_from_slice(plain);
                    return sealer.seal_data(record, len).map(Next::Sealed);
                }
                let out = &mut tx.out;
                let at = out.len();
                out.resize(at + need, 0);
                out[at + tls_records::HEADER..][..len].copy_from_slice(plain);
                match sealer.seal_data(&mut out[at..], len) {
                    Ok(n) => {
                        out.truncate(at + n);
                        Ok(Next::Sealed(0))
                    }
                    Err(err) => {
                        out.truncate(at);
                        Err(err)
                    }
                }
            }
            Want::CloseNotify => {
                sealer.close_notify(&mut tx.out)?;
                Ok(Next::Closed)
            }
        }
    }

    /// Hands a TLS 1.3 session's records over from rustls to [`Sealer`] and [`Opener`]
    /// once its handshake is done and everything rustls had to send is sent; TLS 1.2
    /// stays.
    fn hand_over(&mut self, tx: &mut Tx) -> Result<(), rustls::Error> {
        let Engine::Rustls(conn) = &self.conn else {
            return Ok(());
        };
        let Some(SupportedCipherSuite::Tls13(suite)) = conn.negotiated_cipher_suite() else {
            return Ok(());
        };
        let limit = suite.common.confidentiality_limit;
        let Engine::Rustls(conn) = std::mem::replace(&mut self.conn, Engine::Gone) else {
            return Ok(());
        };
        let (secrets, _keys_only) = (*conn).dangerous_into_kernel_connection()?;
        let (sealer, opener) = tls_records::split(secrets, limit)?;
        tx.sealer = Some(sealer);
        self.conn = Engine::Records(opener);
        Ok(())
    }

    /// Whether the handshake is still going.
    fn is_handshaking(&self) -> bool {
        match &self.conn {
            Engine::Rustls(conn) => conn.is_handshaking(),
            Engine::Records(_) | Engine::Gone => false,
        }
    }

    /// [`Session::process`] with rustls protecting the records.
    fn process_rustls(
        &mut self,
        want: Want<'_>,
        sealed: &mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<Next, rustls::Error> {
        loop {
            let Engine::Rustls(conn) = &mut self.conn else {
                return Err(rustls::Error::General("TLS session lost".into()));
            };
            let UnbufferedStatus { mut discard, state } =
                conn.process_tls_records(&mut self.incoming);
            let next = match state {
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        let AppDataRecord {
                            discard: more,
                            payload,
                        } = record?;
                        discard += more;
                        if self.plain_at == self.plain.len() {
                            self.plain.clear();
                            self.plain_at = 0;
                        }
                        self.plain.extend_from_slice(payload);
                    }
                    None
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode(&mut data, out)?;
                    None
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    // Sent by the caller, in order, before anything later.
                    data.done();
                    None
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => Some(match want {
                    Want::Read => Next::Input,
                    Want::Write(plain) => match traffic.encrypt(plain, sealed) {
                        Ok(n) => Next::Sealed(n),
                        Err(EncryptError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) => {
                            let at = out.len();
                            out.resize(at + required_size, 0);
                            let n = traffic
                                .encrypt(plain, &mut out[at..])
                                .map_err(|e| rustls::Error::General(e.to_string()))?;
                            out.truncate(at + n);
                            Next::Sealed(0)
                        }
                        Err(err) => return Err(rustls::Error::General(err.to_string())),
                    },
                    Want::CloseNotify => {
                        let at = out.len();
                        out.resize(at + SEAL_OVERHEAD, 0);
                        match traffic.queue_close_notify(&mut out[at..]) {
                            Ok(n) => out.truncate(at + n),
                            Err(err) => {
                                out.truncate(at);
                                return Err(rustls::Error::General(err.to_string()));
                            }
                        }
                        Next::Closed
                    }
                }),
                Ok(ConnectionState::BlockedHandshake) => Some(Next::Input),
                Ok(ConnectionState::PeerClosed) => Some(Next::PeerClosed),
                Ok(ConnectionState::Closed) => Some(Next::Closed),
                // Early data is off (rustls' default), so nothing else is expected.
                Ok(other) => {
                    return Err(rustls::Error::General(format!(
                        "unexpected TLS state {other:?}"
                    )));
                }
                Err(err) => {
                    self.consume(discard);
                    return Err(err);
                }
            };
            self.consume(discard);
            if let Some(next) = next {
                return Ok(next);
            }
        }
    }

    /// Drops `n` processed bytes from the front of `incoming`, and its allocation once
    /// it is empty.
    fn consume(&mut self, n: usize) {
        if n >= self.incoming.len() {
            self.incoming = Vec::new();
        } else if n > 0 {
            self.incoming.drain(..n);
        }
    }

    /// After an error: moves the alert rustls (or the opener) has for the peer into
    /// `tx.out`.
    fn queue_alerts(&mut self, tx: &mut Tx) {
        loop {
            let conn = match &mut self.conn {
                Engine::Rustls(conn) => conn,
                Engine::Records(opener) => {
                    if let Some(sealer) = &mut tx.sealer {
                        sealer.queue_alert(opener.take_alert(), &mut tx.out);
                    }
                    return;
                }
                Engine::Gone => return,
            };
            let UnbufferedStatus { state, .. } = conn.process_tls_records(&mut self.incoming);
            let Ok(ConnectionState::EncodeTlsData(mut data)) = state else {
                return;
            };
            if encode(&mut data, &mut tx.out).is_err() {
                return;
            }
        }
    }

    /// Copies decrypted plaintext into `buf`; returns how much.
    fn take_plain(&mut self, buf: &mut [u8]) -> usize {
        let left = &self.plain[self.plain_at..];
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        self.plain_at += n;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
        n
    }
}

impl Wire {
    fn lock(&self) -> MutexGuard<'_, Tx> {
        // Every update under this lock leaves `Tx` whole (a record sealed and queued, or
        // not), so a poisoned lock is still safe to use.
        self.tx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For a push writing through (`frames.rs`): runs `write` with the sending half, whose
    /// writes go to the kernel directly (see [`Through`]). `None` if this session cannot be
    /// written through (TLS 1.2: rustls seals its records, in the task).
    pub(crate) fn through<T>(&self, write: impl FnOnce(&mut Through<'_>) -> T) -> Option<T> {
        let mut tx = self.lock();
        tx.sealer.as_ref()?;
        let mut through = Through {
            tcp: socket2::SockRef::from(&self.tcp),
            tx: &mut tx,
        };
        Some(write(&mut through))
    }
}

/// The sending half of a TLS 1.3 session as a push writing through sees it: records sealed
/// with the session's key and sent with `send()`, without tokio's readiness bookkeeping
/// (as a plain socket is written through, `frames.rs`). A full socket only leaves the
/// rest of a record in the queue: the connection's task then finds it there, sends it
/// with its own (tokio) writes, and waits for the socket in the usual way.
pub(crate) struct Through<'a> {
    tcp: socket2::SockRef<'a>,
    tx: &'a mut Tx,
}

impl Through<'_> {
    /// [`TlsSocket::try_write_vectored`] for a push writing through.
    pub(crate) fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let tcp = &self.tcp;
        self.tx.write_record(&mut |b: &[u8]| tcp.send(b), bufs)
    }

    /// Whether ciphertext waits in the queue.
    pub(crate) fn pending_output(&self) -> bool {
        self.tx.pending()
    }
}

impl Tx {
    fn pending(&self) -> bool {
        self.out_at < self.out.len()
    }

    /// Writes queued ciphertext with `send` until none is left (`Ok`, the queue freed)
    /// or the socket is full (`WouldBlock`).
    fn send_queued(&mut self, send: &mut impl FnMut(&[u8]) -> io::Result<usize>) -> io::Result<()> {
        while self.out_at < self.out.len() {
            match send(&self.out[self.out_at..])? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => self.out_at += n,
            }
        }
        if !self.out.is_empty() {
            self.out = Vec::new();
            self.out_at = 0;
        }
        Ok(())
    }

    /// [`Tx::send_queued`], with a full socket not an error.
    fn send_queued_soft(
        &mut self,
        send: &mut impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<()> {
        match self.send_queued(send) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Past a TLS 1.3 handshake: sends what is queued (`WouldBlock` if the socket does not
    /// take it all), then seals as much of `bufs` as one record takes, copied once into it,
    /// and sends it; what the socket does not take is queued. Returns the plaintext taken.
    fn write_record(
        &mut self,
        send: &mut impl FnMut(&[u8]) -> io::Result<usize>,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        self.send_queued(send)?;
        let len = bufs.iter().map(|b| b.len()).sum::<usize>().min(RECORD);
        if len == 0 {
            return Ok(0);
        }
        if len <= SMALL_WRITE {
            let mut record = [0u8; SMALL_WRITE + tls_records::OVERHEAD];
            let n = self.seal_record(bufs, &mut record, len, send)?;
            self.send_sealed(&record[..n], send)?;
        } else {
            let mut record = vec![0u8; len + tls_records::OVERHEAD];
            let n = self.seal_record(bufs, &mut record, len, send)?;
            record.truncate(n);
            self.send_sealed_vec(record, send)?;
        }
        Ok(len)
    }

    /// Gathers the first `len` bytes of `bufs` into `record` and seals them there. An
    /// error ends the session: its alert (our close_notify, at the confidentiality limit)
    /// is queued and sent if the socket takes it.
    fn seal_record(
        &mut self,
        bufs: &[IoSlice<'_>],
        record: &mut [u8],
        len: usize,
        send: &mut impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut at = tls_records::HEADER;
        for part in bufs {
            let take = part.len().min(tls_records::HEADER + len - at);
            record[at..at + take].copy_from_slice(&part[..take]);
            at += take;
        }
        let Some(sealer) = &mut self.sealer else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if sealer.closed() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        match sealer.seal_data(record, len) {
            Ok(n) => Ok(n),
            Err(err) => {
                sealer.queue_alert(None, &mut self.out);
                let _ = self.send_queued(send);
                Err(io::Error::new(io::ErrorKind::InvalidData, err))
            }
        }
    }

    /// Sends freshly sealed ciphertext behind what is queued; the socket's refusal is not
    /// an error (the bytes wait in the queue).
    fn send_sealed(
        &mut self,
        sealed: &[u8],
        send: &mut impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<()> {
        if self.out_at < self.out.len() || sealed.is_empty() {
            self.out.extend_from_slice(sealed);
        } else {
            let sent = match send(sealed) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if sent < sealed.len() {
                self.out = sealed[sent..].to_vec();
                self.out_at = 0;
            }
            return Ok(());
        }
        self.send_queued_soft(send)
    }

    /// [`Tx::send_sealed`] for ciphertext in a buffer of its own, which becomes the queue
    /// (no copy) if the socket does not take it all.
    fn send_sealed_vec(
        &mut self,
        sealed: Vec<u8>,
        send: &mut impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<()> {
        if self.out_at < self.out.len() {
            self.out.extend_from_slice(&sealed);
        } else {
            self.out = sealed;
            self.out_at = 0;
        }
        self.send_queued_soft(send)
    }
}

impl TlsSocket {
    /// Runs the server side of the handshake, at most [`MAX_HANDSHAKE_BYTES`] from the
    /// client. Not bounded in time here: the caller's bind deadline covers it.
    pub(crate) async fn handshake(&mut self) -> Result<(), TlsError> {
        let mut received = self.session.incoming.len();
        loop {
            let next = self
                .session
                .process(Want::Read, &mut [], &mut self.wire.lock());
            if let Err(err) = next {
                // Tell the client why (an alert), if the socket takes it now.
                self.failed = true;
                self.session.queue_alerts(&mut self.wire.lock());
                let _ = self.send_queued();
                return Err(TlsError::Tls(err));
            }
            self.flush().await.map_err(|_| TlsError::Gone)?;
            match next {
                Ok(Next::Input) if !self.session.is_handshaking() => break,
                Ok(Next::Input) => {}
                _ => return Err(TlsError::Gone),
            }
            self.spent = true;
            loop {
                match self.fill() {
                    Ok(0) => return Err(TlsError::Gone),
                    Ok(n) => {
                        received += n;
                        if received > MAX_HANDSHAKE_BYTES {
                            return Err(TlsError::TooLarge);
                        }
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.wire.tcp.readable().await.map_err(|_| TlsError::Gone)?;
                    }
                    Err(_) => return Err(TlsError::Gone),
                }
            }
        }
        let handed = self.session.hand_over(&mut self.wire.lock());
        if let Err(err) = handed {
            self.failed = true;
            return Err(TlsError::Tls(err));
        }
        // What the client sent with its Finished (its request, maybe) waits in the
        // session's buffers for `try_read`.
        self.spent = self.session.incoming.is_empty();
        Ok(())
    }

    /// The sending half, for pushes to write through (`outbox.rs`), if this session can be
    /// (TLS 1.3, past its handshake; a TLS 1.2 session's records are rustls', in the task).
    pub(crate) fn through(&self) -> Option<Arc<Wire>> {
        matches!(self.session.conn, Engine::Records(_)).then(|| self.wire.clone())
    }

    /// Waits until [`TlsSocket::try_read`] may have something: plaintext already
    /// decrypted, ciphertext rustls has not looked at, the end, or bytes on the socket.
    pub async fn readable(&self) -> io::Result<()> {
        let s = &self.session;
        if self.eof || s.plain_at < s.plain.len() || !self.spent {
            Ok(())
        } else {
            self.wire.tcp.readable().await
        }
    }

    /// Reads plaintext without waiting; `Ok(0)` is the end of the stream (the client's
    /// close_notify, answered with ours, or TCP closed).
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.session.take_plain(buf);
            if n > 0 || buf.is_empty() || self.eof {
                return Ok(n);
            }
            if self.spent {
                if self.fill()? == 0 {
                    self.eof = true;
                }
                continue;
            }
            let next = self
                .session
                .process(Want::Read, &mut [], &mut self.wire.lock());
            match next {
                Ok(Next::Input | Next::Sealed(_)) => self.spent = true,
                Ok(Next::PeerClosed) => self.peer_closed(),
                Ok(Next::Closed) => self.eof = true,
                Err(err) => return Err(self.fail(err)),
            }
            // Whatever rustls has to say (a key update, our close_notify) goes out when
            // the socket takes it.
            match self.send_queued() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }

    /// Reads what the socket has into the session's input, without waiting; `Ok(0)` when
    /// TCP ended.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK];
        let n = self.wire.tcp.try_read(&mut chunk)?;
        self.session.incoming.extend_from_slice(&chunk[..n]);
        if n > 0 {
            self.spent = false;
        }
        Ok(n)
    }

    /// The client's close_notify: the end of its data, answered with ours (RFC 8446
    /// §6.1; sent with the next flush, or when the socket is dropped).
    fn peer_closed(&mut self) {
        self.eof = true;
        self.close_notify();
    }

    /// Marks the session failed and sends rustls' alert if the socket takes it now.
    fn fail(&mut self, err: rustls::Error) -> io::Error {
        self.failed = true;
        self.session.queue_alerts(&mut self.wire.lock());
        let _ = self.send_queued();
        io::Error::new(io::ErrorKind::InvalidData, err)
    }

    /// Queues our close_notify (once, and never after an error).
    fn close_notify(&mut self) {
        if self.failed || self.notified {
            return;
        }
        self.notified = true;
        loop {
            let next = self
                .session
                .process(Want::CloseNotify, &mut [], &mut self.wire.lock());
            match next {
                Ok(Next::PeerClosed) => self.eof = true,
                Ok(_) => return,
                Err(_) => return self.failed = true,
            }
        }
    }

    /// Waits until the socket has taken every queued TLS byte (so a `try_write` will take
    /// new plaintext).
    pub async fn writable(&mut self) -> io::Result<()> {
        self.flush().await
    }

    /// Sends what is queued, waiting for the socket as needed.
    async fn flush(&mut self) -> io::Result<()> {
        loop {
            match self.send_queued() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wire.tcp.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts as much of `buf` as one record takes and sends what the socket takes
    /// without waiting. `WouldBlock` while earlier ciphertext is still queued.
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(buf)])
    }

    /// [`TlsSocket::try_write`] for several buffers (one TLS record for as many of them as
    /// fit in it).
    pub fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let wire = &*self.wire;
        let mut tx = wire.lock();
        if tx.sealer.is_some() {
            // Past a TLS 1.3 handshake: the buffers are copied once, into the record they
            // are sealed in.
            return tx.write_record(&mut |b: &[u8]| wire.tcp.try_write(b), bufs);
        }
        drop(tx);
        self.send_queued()?;
        let mut parts = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = parts.next() else {
            return Ok(0);
        };
        let joined;
        let plain: &[u8] = if first.len() >= RECORD || parts.next().is_none() {
            &first[..first.len().min(RECORD)]
        } else {
            joined = gather(bufs, RECORD);
            &joined
        };
        if plain.len() <= SMALL_WRITE {
            let mut sealed = [0u8; SMALL_WRITE + SEAL_OVERHEAD];
            let n = self.seal(plain, &mut sealed)?;
            self.send_sealed(&sealed[..n])?;
        } else {
            let mut sealed = vec![0u8; plain.len() + SEAL_OVERHEAD];
            let n = self.seal(plain, &mut sealed)?;
            sealed.truncate(n);
            let wire = &*self.wire;
            wire.lock()
                .send_sealed_vec(sealed, &mut |b: &[u8]| wire.tcp.try_write(b))?;
        }
        Ok(plain.len())
    }

    /// Encrypts `plain` into `sealed` (returns the length), or after what is queued if it
    /// does not fit (returns 0).
    fn seal(&mut self, plain: &[u8], sealed: &mut [u8]) -> io::Result<usize> {
        let next = self
            .session
            .process(Want::Write(plain), sealed, &mut self.wire.lock());
        match next {
            Ok(Next::Sealed(n)) => Ok(n),
            // Never once `accept` returned: the session is past its handshake.
            Ok(Next::Input) => Err(io::ErrorKind::NotConnected.into()),
            Ok(Next::PeerClosed) => {
                self.peer_closed();
                Err(io::ErrorKind::BrokenPipe.into())
            }
            Ok(Next::Closed) => Err(io::ErrorKind::BrokenPipe.into()),
            Err(err) => Err(self.fail(err)),
        }
    }

    /// Sends freshly sealed ciphertext behind what is queued (see [`Tx::send_sealed`]).
    fn send_sealed(&mut self, sealed: &[u8]) -> io::Result<()> {
        let wire = &*self.wire;
        wire.lock()
            .send_sealed(sealed, &mut |b: &[u8]| wire.tcp.try_write(b))
    }

    /// Whether ciphertext is queued that the socket has not taken yet.
    pub fn pending_output(&self) -> bool {
        self.wire.lock().pending()
    }

    /// Writes queued ciphertext until none is left (`Ok`, the queue freed) or the socket
    /// is full (`WouldBlock`).
    fn send_queued(&mut self) -> io::Result<()> {
        let wire = &*self.wire;
        wire.lock()
            .send_queued(&mut |b: &[u8]| wire.tcp.try_write(b))
    }

    /// Encrypts plaintext for the next flush without touching the socket (the 101 of the
    /// upgrade, written through tungstenite's `AsyncWrite`).
    pub(crate) fn buffer(&mut self, data: &[u8]) -> io::Result<usize> {
        for record in data.chunks(RECORD) {
            self.seal(record, &mut [])?;
        }
        Ok(data.len())
    }
}

/// Our close_notify before TCP closes, whoever ends the connection, if the socket takes
/// it at once: the peer then knows the stream was not cut short (RFC 8446 §6.1).
impl Drop for TlsSocket {
    fn drop(&mut self) {
        self.close_notify();
        let _ = self.send_queued();
    }
}

/// Appends a handshake record (or an alert) rustls made to `out`.
fn encode(
    data: &mut rustls::unbuffered::EncodeTlsData<'_, rustls::server::ServerConnectionData>,
    out: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    let at = out.len();
    let need = match data.encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        Err(err) => return Err(rustls::Error::General(err.to_string())),
    };
    out.resize(at + need, 0);
    match data.encode(&mut out[at..]) {
        Ok(n) => {
            out.truncate(at + n);
            Ok(())
        }
        Err(err) => {
            out.truncate(at);
            Err(rustls::Error::General(err.to_string()))
        }
    }
}

/// The first `max` bytes of `bufs`, in one buffer.
fn gather(bufs: &[IoSlice<'_>], max: usize) -> Vec<u8> {
    let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(max);
    let mut joined = Vec::with_capacity(total);
    for part in bufs {
        let room = total - joined.len();
        joined.extend_from_slice(&part[..part.len().min(room)]);
    }
    joined
}

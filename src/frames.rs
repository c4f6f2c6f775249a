//! WebSocket framing after the handshake (RFC 6455 §5), server side, on a bare socket.
//!
//! Why not tungstenite's stream for this part: it keeps ~700 bytes per connection for
//! its whole life (its state, a zero-filled read buffer, two waker proxies), and an idle
//! browser only ever needs a socket. Here an idle connection holds two empty `Vec`s: bytes
//! are buffered only while a frame is arriving. tungstenite still does the HTTP upgrade.
//!
//! Writing sends the server's text frames straight from the payload all recipients share
//! (no per-connection copy), without waiting, resumable after a partial write: from the
//! connection's task, or from the push itself writing through to an idle socket, plain or
//! TLS 1.3 (the [`Socket`] impls; see `outbox.rs`).
//!
//! Reading is cancel-safe (partial input lives in [`FrameReader`], never in the future),
//! so it can sit in a `select!` beside the outbox and the ping timer.

use std::io::{self, IoSlice};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::outbox::Socket;
use crate::transport::Transport;
use crate::wire::Payload;
use crate::wire::envelope::Prefix;

/// A complete message or control frame from the browser.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message (UTF-8 checked).
    Text(String),
    /// A binary message; only its length is kept.
    Binary(usize),
    /// A ping; the payload must be echoed in a pong.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// Why reading stopped; each maps to a close code where the peer can still hear one.
#[derive(Debug)]
pub enum FrameError {
    /// The socket failed.
    Io(io::Error),
    /// The peer closed TCP without a close frame.
    Eof,
    /// A frame broke RFC 6455 (close 1002).
    Protocol(&'static str),
    /// A message over the size limit (close 1009).
    TooBig,
    /// A text message that is not UTF-8 (close 1007).
    BadUtf8,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "socket error: {e}"),
            FrameError::Eof => f.write_str("connection closed without a close frame"),
            FrameError::Protocol(why) => write!(f, "protocol error: {why}"),
            FrameError::TooBig => f.write_str("message too big"),
            FrameError::BadUtf8 => f.write_str("text message is not UTF-8"),
        }
    }
}

/// Bytes read per `read` while a frame is arriving.
const READ_CHUNK: usize = 512;

/// Input state of one connection: unparsed bytes and a fragmented message in progress.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// A fragmented data message: (is text, bytes so far).
    partial: Option<(bool, Vec<u8>)>,
    /// Bytes of a refused frame still to be skipped (see [`FrameReader::parse`]).
    skip: u64,
    /// A close frame arrived, valid or not: the peer has done its half of the closing
    /// handshake.
    peer_closed: bool,
}

impl FrameReader {
    /// Input that arrived before this reader took over (normally none: a client must wait
    /// for the 101 before sending frames).
    pub fn with_pending(bytes: Vec<u8>) -> Self {
        FrameReader {
            buf: bytes,
            partial: None,
            skip: 0,
            peer_closed: false,
        }
    }

    /// Adds input read elsewhere (for tests and fuzzing; `next` reads by itself).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True once a close frame arrived (valid or refused): a server closing in answer
    /// need not wait for another.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Bytes buffered and not yet parsed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Waits for the next message or control frame; messages are at most `max` bytes.
    pub async fn next(&mut self, tcp: &mut Transport, max: usize) -> Result<Incoming, FrameError> {
        loop {
            if let Some(msg) = self.parse(max)? {
                return Ok(msg);
            }
            tcp.readable().await.map_err(FrameError::Io)?;
            // No await inside this block, so the chunk never lives in the task.
            let mut chunk = [0u8; READ_CHUNK];
            match tcp.try_read(&mut chunk) {
                Ok(0) => return Err(FrameError::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
    }

    /// Takes one complete message or control frame out of the buffered input, if there is
    /// one. An error means the stream cannot go on (the connection is closed).
    ///
    /// After an error the stream can go on: the refused frame (and any message it was
    /// part of) is skipped as it arrives, so a closing connection can still read the
    /// peer's answer to its close.
    pub fn parse(&mut self, max: usize) -> Result<Option<Incoming>, FrameError> {
        loop {
            if self.skip > 0 {
                let n =
                    usize::try_from(self.skip).map_or(self.buf.len(), |s| s.min(self.buf.len()));
                self.buf.drain(..n);
                self.skip -= n as u64;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            let b = &self.buf;
            if b.len() < 2 {
                return Ok(None);
            }
            let fin = b[0] & 0x80 != 0;
            let opcode = b[0] & 0x0f;
            let masked = b[1] & 0x80 != 0;
            let (len, head) = match b[1] & 0x7f {
                126 if b.len() < 4 => return Ok(None),
                126 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 if b.len() < 10 => return Ok(None),
                127 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(n), 10)
                }
                n => (u64::from(n), 2),
            };
            // The whole frame, header included: what to skip if it is refused, so a
            // closing connection can read on to the peer's close frame.
            let frame_len = (head as u64 + if masked { 4 } else { 0 }).saturating_add(len);
            let control = opcode >= 8;
            let so_far = self
                .partial
                .as_ref()
                .map_or(0, |(_, data)| data.len() as u64);
            let refused = if b[0] & 0x70 != 0 {
                Some(FrameError::Protocol("reserved bits set"))
            } else if !masked {
                Some(FrameError::Protocol("unmasked client frame"))
            } else if len >> 63 != 0 {
                // §5.2: the most significant bit MUST be 0.
                Some(FrameError::Protocol("64-bit length with the top bit set"))
            } else if control && (!fin || len > 125) {
                Some(FrameError::Protocol("bad control frame"))
            } else if !control && len.saturating_add(so_far) > max as u64 {
                // Checked before the payload is buffered: memory stays bounded by `max`.
                Some(FrameError::TooBig)
            } else {
                None
            };
            if let Some(err) = refused {
                self.peer_closed |= opcode == CLOSE;
                self.skip = frame_len;
                self.partial = None;
                return Err(err);
            }
            let len = len as usize; // at most `max` (or 125, for a control frame)
            let total = head + 4 + len;
            if b.len() < total {
                return Ok(None);
            }
            let mask = [b[head], b[head + 1], b[head + 2], b[head + 3]];
            let payload: Vec<u8> = b[head + 4..total]
                .iter()
                .enumerate()
                .map(|(i, x)| x ^ mask[i % 4])
                .collect();
            self.buf.drain(..total);
            if self.buf.is_empty() {
                // Give the memory back: an idle connection holds nothing.
                self.buf = Vec::new();
            }
            match opcode {
                0x0 => {
                    let Some((_, data)) = &mut self.partial else {
                        return Err(FrameError::Protocol("continuation without a message"));
                    };
                    data.extend_from_slice(&payload);
                    if fin {
                        let Some((text, data)) = self.partial.take() else {
                            continue;
                        };
                        return finish(text, data).map(Some);
                    }
                }
                0x1 | 0x2 => {
                    if self.partial.take().is_some() {
                        return Err(FrameError::Protocol("new message inside a fragmented one"));
                    }
                    if fin {
                        return finish(opcode == 0x1, payload).map(Some);
                    }
                    self.partial = Some((opcode == 0x1, payload));
                }
                CLOSE => {
                    self.peer_closed = true;
                    return close_code(&payload).map(|code| Some(Incoming::Close(code)));
                }
                PING => return Ok(Some(Incoming::Ping(payload))),
                PONG => return Ok(Some(Incoming::Pong)),
                _ => {
                    self.partial = None;
                    return Err(FrameError::Protocol("unknown opcode"));
                }
            }
        }
    }
}

/// The status code of a close frame's payload, which must be empty or a code a peer may
/// send followed by a UTF-8 reason (RFC 6455 §5.5.1, §7.4). What breaks that is answered
/// with 1002 (or 1007 for the reason), never echoed.
fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_allowed(code) {
                return Err(FrameError::Protocol("invalid close code"));
            }
            std::str::from_utf8(reason).map_err(|_| FrameError::BadUtf8)?;
            Ok(Some(code))
        }
    }
}

/// Codes a peer may put on the wire (§7.4): the defined ones except 1004 (reserved) and
/// 1005, 1006, 1015 (local-only), the IANA-registered 1012–1014, and 3000–4999 for
/// libraries and applications.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Opcode of a close frame.
pub const CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const PONG: u8 = 0xA;

fn finish(text: bool, data: Vec<u8>) -> Result<Incoming, FrameError> {
    if text {
        String::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| FrameError::BadUtf8)
    } else {
        Ok(Incoming::Binary(data.len()))
    }
}

/// An unmasked server control frame (ping, pong, close): payload at most 125 bytes.
pub fn control_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len().min(125);
    let mut frame = Vec::with_capacity(2 + len);
    frame.push(0x80 | opcode);
    frame.push(len as u8);
    frame.extend_from_slice(&payload[..len]);
    frame
}

/// A close frame with `code` and `reason` (cut to fit 125 bytes on a char boundary).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    control_frame(CLOSE, &payload)
}

/// Writes all of `bytes`, waiting for the socket as needed, within `limit`.
pub async fn write_raw(tcp: &mut Transport, bytes: &[u8], limit: Duration) -> io::Result<()> {
    let write = async {
        let mut done = 0;
        while done < bytes.len() {
            tcp.writable().await?;
            match tcp.try_write(&bytes[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        tcp.flush().await
    };
    tokio::time::timeout(limit, write)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

// ---- Writing: the server's text frames ----

/// Where frames are written without waiting: a connection's [`Transport`] (its task), or
/// its plain socket shared with the outbox (a push writing through).
pub trait Sink {
    /// Writes from `buf` without waiting; `WouldBlock` when the socket takes nothing now.
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// [`Sink::try_write`] for several buffers.
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Whether bytes counted as written still wait to leave (TLS only).
    fn pending_output(&self) -> bool;
}

impl Sink for Transport {
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Transport::try_write(self, buf)
    }
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Transport::try_write_vectored(self, bufs)
    }
    fn pending_output(&self) -> bool {
        Transport::pending_output(self)
    }
}

/// The plain socket as the kernel sees it, for a push writing through: `send()` without
/// tokio's readiness bookkeeping, a cache miss per recipient of a broadcast (measured in
/// `docs/benchmarks.md`, "Writing through"). Safe beside tokio: a full socket here only
/// queues the frame for the task, whose own (tokio) write then meets the full socket and
/// waits for it in the usual way.
struct Kernel<'a>(socket2::SockRef<'a>);

impl Sink for Kernel<'_> {
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf)
    }
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.send_vectored(bufs)
    }
    fn pending_output(&self) -> bool {
        false
    }
}

/// A push writing through to an idle plain connection: the same frame, from the same
/// code, as its task would write.
impl Socket for TcpStream {
    fn try_send(&self, msg: &Payload, enveloped: bool, sent: usize) -> io::Result<Option<usize>> {
        let mut at = Progress {
            frame: 0,
            offset: sent,
        };
        let mut sink = Kernel(socket2::SockRef::from(self));
        let done = try_write(&mut sink, std::slice::from_ref(msg), enveloped, &mut at)?;
        Ok((!done).then_some(at.offset))
    }
}

/// The sending half of a TLS 1.3 connection, for a push writing through: the same frame,
/// from the same code, sealed with the same key and record sequence as its task would
/// (`tls.rs`, "Writing through"). Once the whole frame is sealed but part of its last
/// record still waits for the socket, the frame counts as written in full (its length is
/// returned): the task sends that ciphertext first, and starts on the next frame.
impl Socket for crate::tls::Wire {
    fn try_send(&self, msg: &Payload, enveloped: bool, sent: usize) -> io::Result<Option<usize>> {
        let mut at = Progress {
            frame: 0,
            offset: sent,
        };
        let batch = std::slice::from_ref(msg);
        let done = self
            .through(|sink| try_write(sink, batch, enveloped, &mut at))
            .unwrap_or(Ok(false))?;
        Ok((!done).then(|| {
            if at.frame > 0 {
                frame_len(msg, enveloped)
            } else {
                at.offset
            }
        }))
    }
}

impl Sink for crate::tls::Through<'_> {
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::tls::Through::try_write_vectored(self, &[IoSlice::new(buf)])
    }
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        crate::tls::Through::try_write_vectored(self, bufs)
    }
    fn pending_output(&self) -> bool {
        crate::tls::Through::pending_output(self)
    }
}

/// How far a batch has been written: the next frame, and bytes of it already sent.
#[derive(Debug, Default)]
pub struct Progress {
    /// Index of the next frame to write.
    pub frame: usize,
    /// Bytes of that frame (header included) already written.
    pub offset: usize,
}

/// Writes as much of `batch` as the socket takes without waiting, as unmasked text
/// frames: a 2–10 byte header, on an `enveloped` (protocol v1) connection the entry's
/// prefix (`m SEQ `, from the stack), then the payload itself, in one vectored write per
/// [`IOV_BATCH`] frames. Returns true once everything is written.
///
/// Why not `ws.send`: tungstenite copies each frame into a per-connection output `Vec`
/// that keeps its largest-ever capacity, so one 1 MiB push to 10k browsers would pin
/// 10 GiB for good. Here the payload shared by all recipients is never copied.
pub fn try_write<S: Sink>(
    stream: &mut S,
    batch: &[Payload],
    enveloped: bool,
    at: &mut Progress,
) -> io::Result<bool> {
    // On the stack: this runs once per wake of every recipient, so no heap allocation.
    let mut heads = [(FrameHeader::EMPTY, Prefix::NONE); IOV_BATCH];
    // Frames already out in full: over TLS a push writing through may have sealed a whole
    // frame whose ciphertext still waits in the session's queue.
    while let Some(item) = batch.get(at.frame) {
        let len = frame_len(item, enveloped);
        if at.offset < len {
            break;
        }
        at.offset -= len;
        at.frame += 1;
    }
    while at.frame < batch.len() {
        if let Some(done) = try_send_small(stream, batch, enveloped, at)? {
            if !done {
                return Ok(false);
            }
            continue;
        }
        let chunk = &batch[at.frame..batch.len().min(at.frame + IOV_BATCH)];
        for (head, item) in heads.iter_mut().zip(chunk) {
            *head = frame_head(item, enveloped);
        }
        let heads = &heads[..chunk.len()];
        let mut slices = [IoSlice::new(&[]); 3 * IOV_BATCH];
        let mut n = 0;
        for ((header, prefix), item) in heads.iter().zip(chunk) {
            slices[n] = IoSlice::new(header.as_bytes());
            n += 1;
            // A seed connection's frames have no prefix: no empty iovec for it either.
            if !prefix.as_bytes().is_empty() {
                slices[n] = IoSlice::new(prefix.as_bytes());
                n += 1;
            }
            slices[n] = IoSlice::new(item.as_bytes());
            n += 1;
        }
        let mut bufs = &mut slices[..n];
        IoSlice::advance_slices(&mut bufs, at.offset);
        let written = match stream.try_write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        };
        // Advance past every frame this write completed.
        let mut done = at.offset + written;
        for ((header, prefix), item) in heads.iter().zip(chunk) {
            let len = header.as_bytes().len() + prefix.as_bytes().len() + item.len();
            if done < len {
                break;
            }
            done -= len;
            at.frame += 1;
        }
        at.offset = done;
    }
    // Over TLS the last bytes may still be queued as ciphertext: not done until they left.
    Ok(!stream.pending_output())
}

/// The length of `msg`'s frame, header and prefix included.
fn frame_len(msg: &Payload, enveloped: bool) -> usize {
    let (header, prefix) = frame_head(msg, enveloped);
    header.as_bytes().len() + prefix.as_bytes().len() + msg.len()
}

/// The header and prefix of `msg`'s frame.
fn frame_head(msg: &Payload, enveloped: bool) -> (FrameHeader, Prefix) {
    let prefix = Prefix::of(msg.seq(), enveloped);
    let header = FrameHeader::text(prefix.as_bytes().len() + msg.len());
    (header, prefix)
}

/// Small batches (the usual case: one short push) are copied into a stack buffer and sent
/// with one `send`, which skips `writev`'s iovec import and file-position locking; that is
/// measurably cheaper per recipient. `None` if the rest of the batch does not fit.
fn try_send_small<S: Sink>(
    stream: &mut S,
    batch: &[Payload],
    enveloped: bool,
    at: &mut Progress,
) -> io::Result<Option<bool>> {
    let mut buf = [0u8; SMALL_SEND];
    let mut len = 0;
    for item in &batch[at.frame..] {
        let (header, prefix) = frame_head(item, enveloped);
        let end = len + header.as_bytes().len() + prefix.as_bytes().len() + item.len();
        if end > SMALL_SEND {
            return Ok(None);
        }
        for part in [header.as_bytes(), prefix.as_bytes(), item.as_bytes()] {
            buf[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
    }
    let pending = &buf[at.offset..len];
    let written = match stream.try_write(pending) {
        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(false)),
        Err(e) => return Err(e),
    };
    let mut done = at.offset + written;
    for item in &batch[at.frame..] {
        let (header, prefix) = frame_head(item, enveloped);
        let frame = header.as_bytes().len() + prefix.as_bytes().len() + item.len();
        if done < frame {
            break;
        }
        done -= frame;
        at.frame += 1;
    }
    at.offset = done;
    Ok(Some(at.frame == batch.len()))
}

/// Bytes a batch may have to take the copying path of [`try_send_small`].
const SMALL_SEND: usize = 2048;

/// Messages per vectored write: up to three iovecs each, well under the kernel's IOV_MAX (1024),
/// and small enough for the iovec arrays to live on the stack.
const IOV_BATCH: usize = 32;

/// The header of an unmasked, final text frame (RFC 6455 §5.2).
#[derive(Clone, Copy)]
struct FrameHeader {
    bytes: [u8; 10],
    len: usize,
}

impl FrameHeader {
    const EMPTY: FrameHeader = FrameHeader {
        bytes: [0; 10],
        len: 0,
    };

    fn text(payload: usize) -> Self {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x81; // FIN + opcode 1 (text)
        let len = if payload < 126 {
            bytes[1] = payload as u8;
            2
        } else if let Ok(short) = u16::try_from(payload) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload as u64).to_be_bytes());
            10
        };
        FrameHeader { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpSocket};

    /// Batches of every size class, written to a socket with a tiny send buffer whose peer
    /// reads only when the writer is stuck: writes end mid-header and mid-payload, on both
    /// the copying and the vectored path, and the byte stream must still be exactly the
    /// frames, in order.
    #[tokio::test]
    async fn partial_writes_resume_exactly() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = TcpSocket::new_v4().unwrap();
        sock.set_send_buffer_size(4096).unwrap();
        let mut writer = Transport::Plain(Arc::new(
            sock.connect(listener.local_addr().unwrap()).await.unwrap(),
        ));
        let (mut reader, _) = listener.accept().await.unwrap();

        let small = [1, 125, 126, 300, 700, 1000, 1500];
        let large = [2040, 2100, 9000, 65535, 65536, 70000];
        let mut expected = Vec::new();
        let mut stuck = 0;
        let mut got = Vec::new();
        for round in 0..400usize {
            // Every third round as an opted-in connection: a prefix before each payload.
            let enveloped = round % 3 == 1;
            let batch: Vec<Payload> = (0..1 + round % 3)
                .map(|k| {
                    let n = if round % 5 == 0 {
                        large[(round / 5 + k) % large.len()]
                    } else {
                        small[(round * 3 + k) % small.len()]
                    };
                    let c = char::from(b'a' + (round % 26) as u8);
                    Payload::from(c.to_string().repeat(n)).numbered((round * 7 + k) as u64)
                })
                .collect();
            for m in &batch {
                let text = String::from_utf8(m.as_bytes().to_vec()).unwrap();
                expected.push(match (enveloped, m.seq()) {
                    (false, _) => text,
                    (true, 0) => format!("b {text}"),
                    (true, seq) => format!("m {seq} {text}"),
                });
            }
            let mut at = Progress::default();
            while !try_write(&mut writer, &batch, enveloped, &mut at).unwrap() {
                stuck += 1;
                // Drain a little at a time until the socket takes more.
                let mut buf = [0u8; 3000];
                loop {
                    tokio::select! {
                        r = writer.writable() => break r.unwrap(),
                        n = reader.read(&mut buf) => got.extend_from_slice(&buf[..n.unwrap()]),
                    }
                }
            }
        }
        drop(writer);
        reader.read_to_end(&mut got).await.unwrap();
        assert!(stuck > 10, "the send buffer never filled ({stuck} stalls)");

        let mut frames = Vec::new();
        let mut rest = &got[..];
        while !rest.is_empty() {
            assert_eq!(rest[0], 0x81, "not a final text frame");
            let (len, head) = match rest[1] {
                126 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            frames.push(String::from_utf8(rest[head..head + len].to_vec()).unwrap());
            rest = &rest[head + len..];
        }
        assert_eq!(frames.len(), expected.len());
        assert!(frames == expected, "frames altered or reordered");
    }

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn parse_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Incoming, String>> {
        let mut r = FrameReader::with_pending(bytes);
        let mut out = Vec::new();
        loop {
            match r.parse(max) {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[test]
    fn messages_fragments_and_controls() {
        let mut input = masked(0x81, b"uid1");
        input.extend(masked(0x01, b"he"));
        input.extend(masked(0x89, b"p"));
        input.extend(masked(0x80, "llo é".as_bytes()));
        input.extend(masked(0x82, &[0; 300]));
        input.extend(masked(0x8A, b""));
        input.extend(masked(0x88, &1000u16.to_be_bytes()));
        assert_eq!(
            parse_all(input, 4096),
            vec![
                Ok(Incoming::Text("uid1".into())),
                Ok(Incoming::Ping(b"p".to_vec())),
                Ok(Incoming::Text("hello é".into())),
                Ok(Incoming::Binary(300)),
                Ok(Incoming::Pong),
                Ok(Incoming::Close(Some(1000))),
            ]
        );
    }

    #[test]
    fn limits_and_violations() {
        let too_big = masked(0x81, &[b'x'; 100]);
        assert!(matches!(
            parse_all(too_big[..10].to_vec(), 64)[..],
            [Err(_)]
        ));
        let mut frag = masked(0x01, &[b'x'; 40]);
        frag.extend(masked(0x80, &[b'x'; 40]));
        assert_eq!(parse_all(frag, 64), vec![Err("message too big".into())]);
        assert!(
            parse_all(vec![0x81, 0x02, b'h', b'i'], 64)[0].is_err(),
            "unmasked"
        );
        assert!(parse_all(masked(0xC1, b"x"), 64)[0].is_err(), "rsv");
        assert!(
            parse_all(masked(0x09, b"x"), 64)[0].is_err(),
            "fragmented ping"
        );
        assert!(
            parse_all(masked(0x80, b"x"), 64)[0].is_err(),
            "lone continuation"
        );
        assert_eq!(
            parse_all(masked(0x81, &[0xff]), 64),
            vec![Err("text message is not UTF-8".into())]
        );
        // Partial input waits.
        let whole = masked(0x81, b"abc");
        assert_eq!(parse_all(whole[..whole.len() - 1].to_vec(), 64), vec![]);
    }

    #[test]
    fn close_frames_are_checked() {
        let close = |payload: &[u8]| parse_all(masked(0x88, payload), 64);
        assert_eq!(close(b""), vec![Ok(Incoming::Close(None))]);
        for code in [1000u16, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999] {
            assert_eq!(
                close(&code.to_be_bytes()),
                vec![Ok(Incoming::Close(Some(code)))]
            );
        }
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert_eq!(
                close(&code.to_be_bytes()),
                vec![Err("protocol error: invalid close code".into())],
                "{code}"
            );
        }
        assert_eq!(
            close(&[0x03]),
            vec![Err(
                "protocol error: close frame with a 1-byte payload".into()
            )]
        );
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xff]);
        assert_eq!(
            close(&bad_reason),
            vec![Err("text message is not UTF-8".into())]
        );
        let mut reason = 1000u16.to_be_bytes().to_vec();
        reason.extend_from_slice("κόσμε".as_bytes());
        assert_eq!(close(&reason), vec![Ok(Incoming::Close(Some(1000)))]);
    }

    #[test]
    fn a_64_bit_length_with_the_top_bit_set_is_a_protocol_error() {
        let mut frame = vec![0x81, 0x80 | 127];
        frame.extend_from_slice(&(1u64 << 63).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            parse_all(frame, 64),
            vec![Err(
                "protocol error: 64-bit length with the top bit set".into()
            )]
        );
    }

    #[test]
    fn server_frames() {
        assert_eq!(control_frame(0x9, b""), vec![0x89, 0]);
        let close = close_frame(1001, "server shutting down");
        assert_eq!(&close[..4], &[0x88, 22, 0x03, 0xE9]);
        assert_eq!(close_frame(4001, &"é".repeat(100)).len(), 2 + 2 + 122);
    }
}

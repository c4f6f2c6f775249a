//! The HTTP side of the browser port: the upgrade request, read within a byte budget, then
//! handed to tungstenite for the 101; and the plain-HTTP refusals (403, 429, 503).
//!
//! # Why the request head is read here first
//! A connection that has not sent its request yet must cost no more than an idle bound
//! socket, because strangers can open thousands of them. tungstenite allocates its read
//! buffers as soon as its handshake starts, before the client has sent a byte (~12 KiB per
//! silent connection, measured). So the connection first waits in [`connect`] with
//! nothing but its task (the handshake's state is boxed and allocated only after that), then
//! the head is read into a buffer that grows only with what arrived, and tungstenite starts
//! once the whole head is here: its buffers then live for the microseconds the 101 takes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::{Acceptor, TlsError};
use crate::transport::Transport;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::info;

/// A completed upgrade: the socket (plain or TLS), what the client sent after its request
/// head (normally nothing: a client must wait for the 101), and the `?token=` of the URL.
pub(crate) struct Upgraded {
    pub(crate) tcp: Transport,
    pub(crate) pending: Vec<u8>,
    pub(crate) query_token: Option<String>,
    /// The URL's whole query string (protocol v1's `pushwire=1&since=`).
    pub(crate) query: Option<String>,
    /// The URL's path (`/app/{key}` is the Pusher door's).
    pub(crate) path: String,
    /// The request's `Origin`, if it names one as text (the Pusher door checks it
    /// against the app's `allowed_origins`).
    pub(crate) origin: Option<String>,
}

/// What a browser port's request opened.
pub(crate) enum Opened {
    /// A WebSocket (the 101 is sent).
    WebSocket(Upgraded),
    /// An event stream (`GET` with `Accept: text/event-stream`; nothing sent yet).
    EventStream(crate::sse::Request),
}

/// Why an upgrade did not happen.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The client went away (or the socket failed) before its request was complete.
    Gone,
    /// The request head is larger than `--max-handshake-bytes`.
    TooLarge,
    /// Refused by policy (an Origin not allowed): answered with an HTTP error.
    Refused(String),
    /// Not a valid WebSocket upgrade request: answered with an HTTP error by tungstenite.
    Invalid(String),
    /// The TLS handshake failed (on a `wss://` port).
    Tls(TlsError),
    /// A plain request for `/pushwire.js`, answered with it.
    Served,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Gone => f.write_str("client went away during the handshake"),
            HandshakeError::TooLarge => f.write_str("handshake larger than --max-handshake-bytes"),
            HandshakeError::Refused(why) => write!(f, "refused: {why}"),
            HandshakeError::Invalid(why) => write!(f, "invalid upgrade request: {why}"),
            HandshakeError::Tls(err) => err.fmt(f),
            HandshakeError::Served => f.write_str("served /pushwire.js"),
        }
    }
}

/// What the upgrade checks, from the configuration.
pub(crate) struct Policy<'a> {
    /// Most bytes the request head may take.
    pub(crate) max_bytes: usize,
    /// Origins allowed to open a WebSocket; `None` allows any.
    pub(crate) allowed_origins: Option<&'a [String]>,
    /// Largest message a browser may send (tungstenite's frame limit).
    pub(crate) max_in: usize,
}

/// The tungstenite settings for the handshake (the only part tungstenite runs): small
/// buffers, since nothing but the upgrade request goes through it.
fn ws_config(max_in: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(0)
        .max_message_size(Some(max_in))
        .max_frame_size(Some(max_in))
}

/// The socket requests are read from, once the client has sent something to act on: its
/// first byte (peeked, so nothing is taken from the socket), and on a `wss://` port
/// (`tls`) its whole first TLS record, then the rest of the TLS handshake. Until then a
/// connection costs its task and its socket, nothing else: `peek` (which, unlike
/// `readable()`, does not return before data arrives on a fresh socket) needs no buffer,
/// and a TLS session is allocated once its ClientHello is whole. Not bounded in time here;
/// the caller's bind deadline covers it.
///
/// Not an `async fn`, here and in `proxied::upgrade`: one keeps each argument twice (as
/// captured and as the local it is moved into), and these futures are what a connection
/// that has not sent its request yet holds.
#[allow(clippy::manual_async_fn)] // measured: see the comment
pub(crate) fn connect(
    tcp: TcpStream,
    tls: Option<&Acceptor>,
) -> impl Future<Output = Result<Transport, HandshakeError>> + '_ {
    async move {
        let mut probe = [0u8; 1];
        match tcp.peek(&mut probe).await {
            Ok(0) | Err(_) => return Err(HandshakeError::Gone),
            Ok(_) => {}
        }
        let Some(acceptor) = tls else {
            return Ok(Transport::Plain(std::sync::Arc::new(tcp)));
        };
        let first = crate::tls::first_record(&tcp)
            .await
            .map_err(HandshakeError::Tls)?;
        let mut tls = acceptor.start(tcp, first).map_err(HandshakeError::Tls)?;
        tls.handshake().await.map_err(HandshakeError::Tls)?;
        Ok(Transport::Tls(tls))
    }
}

/// Answers the upgrade request `head` (from [`read_head`]; `pending` is what came after
/// it): 101, or an HTTP error. Not bounded in time here; the caller's bind deadline covers
/// it.
pub(crate) async fn accept(
    mut io: Transport,
    head: Vec<u8>,
    pending: Vec<u8>,
    policy: &Policy<'_>,
) -> Result<Opened, HandshakeError> {
    if let Some(head_only) = crate::assets::wants_helper(&head) {
        crate::assets::serve_helper(&mut io, head_only).await;
        return Err(HandshakeError::Served);
    }
    if let Some(stream) = event_stream(&head) {
        if let Some(origin) = &stream.origin
            && !origin_allowed(policy.allowed_origins, origin.as_bytes())
        {
            let refusal = "HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 19\r\n\r\norigin not allowed\n";
            let _ = crate::frames::write_raw(&mut io, refusal.as_bytes(), REFUSAL_LIMIT).await;
            return Err(HandshakeError::Refused("origin not allowed".into()));
        }
        return Ok(Opened::EventStream(crate::sse::Request {
            io,
            head: stream,
        }));
    }
    let mut query_token = None;
    let mut query = None;
    let mut path = String::new();
    let mut origin_seen = None;
    let origins = policy.allowed_origins;
    // The callback's signature (and its large error type) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| {
        if let Some(origin) = req.headers().get("origin")
            && !origin_allowed(origins, origin.as_bytes())
        {
            info!(origin = ?origin, "handshake refused: origin not allowed");
            return Err(http_error(StatusCode::FORBIDDEN, "origin not allowed"));
        }
        query_token = req.uri().query().and_then(token_param);
        query = req.uri().query().map(str::to_owned);
        path = req.uri().path().to_owned();
        origin_seen = req
            .headers()
            .get("origin")
            .and_then(|o| o.to_str().ok())
            .map(str::to_owned);
        Ok(resp)
    };
    let stream = Prefixed {
        head,
        at: 0,
        io: &mut io,
    };
    // Boxed: the handshake's state is large and short-lived; inline, it would size the
    // task of every idle connection for its whole life.
    let upgrade = Box::pin(tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        check,
        Some(ws_config(policy.max_in)),
    ))
    .await
    .map(drop);
    // Over TLS the answer (101 or an error) is still in rustls' buffer.
    if io.flush().await.is_err() {
        return Err(HandshakeError::Gone);
    }
    match upgrade {
        Ok(()) => Ok(Opened::WebSocket(Upgraded {
            tcp: io,
            pending,
            query_token,
            query,
            path,
            origin: origin_seen,
        })),
        Err(WsError::Http(resp)) if resp.status() == StatusCode::FORBIDDEN => {
            Err(HandshakeError::Refused("origin not allowed".into()))
        }
        Err(WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed) => {
            Err(HandshakeError::Gone)
        }
        Err(err) => Err(HandshakeError::Invalid(err.to_string())),
    }
}

/// Waits for the request head and returns it (through its blank line) and any bytes after
/// it. Called once the client sent something ([`connect`]); the buffer holds what
/// arrived, at most `max` bytes.
pub(crate) async fn read_head(
    tcp: &mut Transport,
    max: usize,
) -> Result<(Vec<u8>, Vec<u8>), HandshakeError> {
    let mut buf = Vec::new();
    loop {
        if buf.len() >= max {
            return Err(HandshakeError::TooLarge);
        }
        match read_some(tcp, &mut buf, max) {
            Ok(0) => return Err(HandshakeError::Gone),
            Ok(n) => {
                if let Some(end) = head_end(&buf, buf.len().saturating_sub(n + 3)) {
                    let rest = buf.split_off(end);
                    return Ok((buf, rest));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tcp.readable().await.map_err(|_| HandshakeError::Gone)?;
            }
            Err(_) => return Err(HandshakeError::Gone),
        }
    }
}

/// Reads what the socket has, up to `max` bytes in `buf`, without waiting. Not async, so
/// its stack chunk never becomes part of a waiting connection's task.
fn read_some(tcp: &mut Transport, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let mut chunk = [0u8; 1024];
    let want = chunk.len().min(max - buf.len());
    let n = tcp.try_read(&mut chunk[..want])?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// The end of an HTTP head (just past its blank line, `\r\n\r\n` or a bare `\n\n`),
/// searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let tail = &buf[from..];
    (0..tail.len()).find_map(|i| {
        let rest = &tail[i..];
        if rest.starts_with(b"\n\r\n") {
            Some(from + i + 3)
        } else if rest.starts_with(b"\n\n") {
            Some(from + i + 2)
        } else {
            None
        }
    })
}

/// The socket with the already-read request head in front of it, for tungstenite.
struct Prefixed<'a> {
    head: Vec<u8>,
    at: usize,
    io: &'a mut Transport,
}

impl AsyncRead for Prefixed<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.at);
            buf.put_slice(&this.head[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        // The head is complete, so tungstenite has no reason to read on; if it does, it
        // sees end of input rather than the client's first frames.
        Poll::Ready(Ok(()))
    }
}

/// Over TLS, writes only fill rustls' buffer; [`accept`] flushes it once tungstenite is done.
impl AsyncWrite for Prefixed<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut *self.get_mut().io {
            Transport::Plain(tcp) => loop {
                // Shared (`Arc`), so no `&mut` for `AsyncWrite`: tokio's readiness loop.
                std::task::ready!(tcp.poll_write_ready(cx))?;
                match tcp.try_write(data) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            },
            Transport::Tls(tls) => Poll::Ready(tls.buffer(data)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self.get_mut().io {
            Transport::Plain(_) | Transport::Tls(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self.get_mut().io {
            // The connection is dropped (closed) right after a failed upgrade anyway.
            Transport::Plain(_) | Transport::Tls(_) => Poll::Ready(Ok(())),
        }
    }
}

fn http_error(status: StatusCode, why: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(why.to_owned()));
    *resp.status_mut() = status;
    resp
}

/// The plain-HTTP refusals of the browser port, sent before reading anything.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HttpRefusal {
    /// 429: this address holds too much.
    TooManyRequests,
    /// 503: the server-wide budget is spent.
    Unavailable,
}

/// Answers a connection with a plain HTTP error (over TLS, if the port serves it), within
/// `limit`, and closes it.
pub(crate) async fn refuse(
    mut stream: Transport,
    refusal: HttpRefusal,
    body: &str,
    limit: std::time::Duration,
) {
    let status = match refusal {
        HttpRefusal::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        HttpRefusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    let resp = format!(
        "HTTP/1.1 {} {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len() + 1
    );
    let _ = crate::frames::write_raw(&mut stream, resp.as_bytes(), limit).await;
}

/// How long an HTTP refusal may take to leave.
const REFUSAL_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether `origin` may open a connection (`None`: any may).
fn origin_allowed(allowed: Option<&[String]>, origin: &[u8]) -> bool {
    allowed.is_none_or(|list| {
        list.iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(origin))
    })
}

/// An event-stream request: `GET` (any path) with `Accept: text/event-stream` and no
/// `Upgrade`, as `EventSource` sends it.
fn event_stream(head: &[u8]) -> Option<crate::sse::Head> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).ok()?;
    if req.method != Some("GET") {
        return None;
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    if header("upgrade").is_some() || !header("accept")?.contains("text/event-stream") {
        return None;
    }
    let query = req.path?.split_once('?').map(|(_, q)| q.to_owned());
    Some(crate::sse::Head {
        query,
        last_event_id: header("last-event-id").map(str::to_owned),
        origin: header("origin").map(str::to_owned),
    })
}

/// The `token` parameter of a query string, percent-decoded.
fn token_param(query: &str) -> Option<String> {
    String::from_utf8(crate::urlencoded::param(query.as_bytes(), "token")?).ok()
}

#[cfg(test)]
mod tests {
    use super::{head_end, token_param};

    #[test]
    fn query_token() {
        assert_eq!(token_param("a=1&token=x.y.z"), Some("x.y.z".into()));
        assert_eq!(token_param("token=%ff"), None);
    }

    #[test]
    fn head_ends_at_the_blank_line() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nFRAME";
        assert_eq!(head_end(req, 0), Some(req.len() - 5));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: x\n\n", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
        // Found when the blank line straddles two reads.
        let whole = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(head_end(whole, whole.len() - 5), Some(whole.len()));
    }
}

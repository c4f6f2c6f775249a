//! Shared test harness: an in-process server on port 0 and small clients for both ports.
//!
//! Every helper that waits has a deadline and panics when it passes, so a broken server makes
//! a test fail instead of hang. Nothing here sleeps to synchronise: waiting for a condition is
//! always a poll with a deadline.
#![allow(dead_code)]

pub mod chromium;
pub mod gateway_php;
pub mod pusher;
#[macro_use]
pub mod redis;
pub mod netns;
#[allow(unused_imports)]
pub use redis::{Redis, free_port, readyz, spawn_redis, wait_listening};
pub mod v1;
pub mod webhook;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long any single expected event may take before a helper panics.
pub const STEP: Duration = Duration::from_secs(5);

/// A pushwire server running in-process on ephemeral ports: browsers, backends, and (if
/// asked for) the HTTP door.
///
/// Dropping it cancels the server; [`TestServer::shutdown`] also waits for `run` to return.
pub struct TestServer {
    pub ws_addr: SocketAddr,
    pub push_addr: SocketAddr,
    /// The HTTP door, when the server was started with one ([`Addrs::with_http`]).
    pub http_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

/// Where a [`TestServer`] listens: port 0 unless a test restarts on a stopped server's
/// ports.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub ws: SocketAddr,
    pub push: SocketAddr,
    /// `None`: no HTTP door.
    pub http: Option<SocketAddr>,
}

impl Addrs {
    /// Browsers and backends on 127.0.0.1:0, no HTTP door.
    pub fn ephemeral() -> Addrs {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Addrs {
            ws: any,
            push: any,
            http: None,
        }
    }

    /// The same, with the HTTP door on 127.0.0.1:0.
    pub fn with_http(self) -> Addrs {
        Addrs {
            http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..self
        }
    }
}

impl TestServer {
    /// A server with `Config::default()`.
    pub async fn start() -> TestServer {
        TestServer::start_with(pushwire::Config::default()).await
    }

    /// A server with `config`, both listeners on 127.0.0.1:0.
    pub async fn start_with(config: pushwire::Config) -> TestServer {
        TestServer::start_at(config, Addrs::ephemeral()).await
    }

    /// A server with `config` and the HTTP door, every listener on 127.0.0.1:0.
    pub async fn start_http(config: pushwire::Config) -> TestServer {
        TestServer::start_at(config, Addrs::ephemeral().with_http()).await
    }

    /// Like [`TestServer::start_with`], on the given addresses: a stopped server's, to
    /// restart it on the same ports (listeners set `SO_REUSEADDR`, so connections it left
    /// in TIME_WAIT do not block the bind).
    pub async fn start_on(
        config: pushwire::Config,
        ws_addr: SocketAddr,
        push_addr: SocketAddr,
    ) -> TestServer {
        let addrs = Addrs {
            ws: ws_addr,
            push: push_addr,
            http: None,
        };
        TestServer::start_at(config, addrs).await
    }

    /// The generic constructor: binds every listener `addrs` names and serves them with
    /// `pushwire::serve`.
    pub async fn start_at(config: pushwire::Config, addrs: Addrs) -> TestServer {
        TestServer::serving(addrs, |listeners, shutdown| {
            tokio::spawn(pushwire::serve(config, listeners, shutdown))
        })
        .await
    }

    /// Like [`TestServer::start_at`] with the HTTP door, with the state made here and
    /// handed back, for tests that drive the server through the library too (the events
    /// hub) or look inside it.
    pub async fn start_with_state(
        config: pushwire::Config,
    ) -> (TestServer, std::sync::Arc<pushwire::state::State>) {
        let (config, _) = config.validate();
        let state = pushwire::state::State::new(config).expect("server state");
        let server = TestServer::serving(Addrs::ephemeral().with_http(), {
            let state = state.clone();
            |listeners, shutdown| tokio::spawn(pushwire::serve_state(state, listeners, shutdown))
        })
        .await;
        (server, state)
    }

    /// Binds every listener `addrs` names and starts `serve` on them.
    async fn serving(
        addrs: Addrs,
        serve: impl FnOnce(pushwire::Listeners, CancellationToken) -> JoinHandle<std::io::Result<()>>,
    ) -> TestServer {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .unwrap_or_else(|e| panic!("bind {what} {addr}: {e}"))
        };
        let ws = bind(addrs.ws, "ws").await;
        let push = bind(addrs.push, "push").await;
        let http = match addrs.http {
            Some(addr) => Some(bind(addr, "http").await),
            None => None,
        };
        let local = |l: &TcpListener| l.local_addr().expect("local address");
        let (ws_addr, push_addr) = (local(&ws), local(&push));
        let http_addr = http.as_ref().map(local);
        let listeners = pushwire::Listeners {
            ws,
            push,
            push_unix: None,
            http,
            gateway: None,
        };
        let shutdown = CancellationToken::new();
        let handle = serve(listeners, shutdown.clone());
        TestServer {
            ws_addr,
            push_addr,
            http_addr,
            shutdown,
            handle: Some(handle),
        }
    }

    /// `http://127.0.0.1:P` + `path`; panics if the server has no HTTP door.
    pub fn http_url(&self, path: &str) -> String {
        let addr = self.http_addr.expect("started without the HTTP door");
        format!("http://{addr}{path}")
    }

    /// `ws://127.0.0.1:P/`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.ws_addr)
    }

    /// `wss://localhost:P/` (the name the test certificate is for).
    pub fn wss_url(&self) -> String {
        format!("wss://localhost:{}/", self.ws_addr.port())
    }

    /// `ws://127.0.0.1:P` + `path` (path starts with `/`).
    pub fn ws_url_path(&self, path: &str) -> String {
        format!("ws://{}{}", self.ws_addr, path)
    }

    /// The cancellation token `run` was started with, to start a shutdown without waiting.
    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// True once `run` has returned (for tests that check the server ends by itself).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Cancels the token and waits (at most 10 s) for `run` to return its result.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("server handle");
        match timeout(Duration::from_secs(10), handle).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => panic!("server task failed: {join}"),
            Err(_) => panic!("server did not shut down within 10 s"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

static PROBE: AtomicU64 = AtomicU64::new(1);

/// The probe line `bind` pushes: `{"uid":<uid as JSON string>,"probe":N}`.
pub fn probe_line(uid: &str, n: u64) -> String {
    format!(
        "{{\"uid\":{},\"probe\":{n}}}",
        serde_json::to_string(uid).unwrap()
    )
}

/// True if `text` is a probe frame pushed by some [`WsClient::bind`] (they are skipped by
/// [`WsClient::recv_text`], since a bind on one tab also reaches every other tab of that uid).
pub fn is_probe(text: &str) -> bool {
    probe_number(text).is_some()
}

fn probe_number(text: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let obj = v.as_object()?;
    if obj.len() != 2 || !obj.get("uid")?.is_string() {
        return None;
    }
    let n = obj.get("probe")?.as_u64()?;
    (text == probe_line(obj["uid"].as_str()?, n)).then_some(n)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A well-behaved browser: a tokio-tungstenite client.
///
/// Reading helpers keep polling the stream, so tungstenite answers the server's pings.
pub struct WsClient {
    pub ws: Ws,
}

impl WsClient {
    /// Opens a WebSocket to `url` (5 s deadline).
    pub async fn connect(url: &str) -> WsClient {
        let (ws, _resp) = timeout(STEP, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("connect {url}: timed out"))
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        WsClient { ws }
    }

    /// Sends one Text frame.
    pub async fn send_text(&mut self, s: &str) {
        self.ws
            .send(Message::text(s))
            .await
            .unwrap_or_else(|e| panic!("send text: {e}"));
    }

    /// Sends one Binary frame.
    pub async fn send_binary(&mut self, b: &[u8]) {
        self.ws
            .send(Message::binary(b.to_vec()))
            .await
            .unwrap_or_else(|e| panic!("send binary: {e}"));
    }

    /// Sends `uid` as the first frame, then makes sure the server has bound it: pushes probe
    /// lines `{"uid":<uid>,"probe":N}` on a fresh push connection until one reaches *this*
    /// client (an `ok` alone is not enough when another tab already holds the uid). Returns
    /// when the next push to this uid will reach this client. Probe frames that arrive later
    /// (here or at other tabs of the uid) are skipped by `recv_text`.
    pub async fn bind(&mut self, uid: &str, push_addr: SocketAddr) {
        self.send_text(uid).await;
        self.wait_bound(uid, push_addr).await;
    }

    /// The probing half of [`WsClient::bind`], for a uid already sent some other way.
    pub async fn wait_bound(&mut self, uid: &str, push_addr: SocketAddr) {
        let deadline = Instant::now() + STEP;
        let mut push = PushClient::connect(push_addr).await;
        let mut first_sent = None;
        loop {
            assert!(
                Instant::now() < deadline,
                "uid {uid:?} was not bound within {STEP:?}"
            );
            let n = PROBE.fetch_add(1, Ordering::Relaxed);
            first_sent.get_or_insert(n);
            let reply = push.request(&probe_line(uid, n)).await;
            match reply.as_str() {
                "ok\n" => {
                    // Delivered somewhere; wait briefly for it (or an earlier probe of ours) here.
                    let wait_until = Instant::now() + Duration::from_millis(200);
                    while let Some(text) = self.next_text_until(wait_until).await {
                        match probe_number(&text) {
                            Some(m) if m >= first_sent.unwrap() && m <= n => return,
                            Some(_) => {}
                            None => panic!("while binding {uid:?}: unexpected frame {text:?}"),
                        }
                    }
                }
                "fail\n" => {
                    // Not bound anywhere yet: poll again shortly.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => panic!("probe reply {other:?}"),
            }
        }
    }

    /// Next Text frame before `until`, skipping probes' Ping/Pong; None at the deadline.
    /// Panics on Close, Binary, error or end of stream.
    pub async fn next_text_until(&mut self, until: Instant) -> Option<String> {
        loop {
            let msg = match tokio::time::timeout_at(until, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("websocket ended while waiting for a text frame"),
                Ok(Some(Err(e))) => panic!("websocket error while waiting for a text frame: {e}"),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => return Some(t.as_str().to_owned()),
                Message::Ping(_) | Message::Pong(_) => {}
                Message::Close(c) => panic!("expected a text frame, got Close {c:?}"),
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next Text, Close or end of stream (no deadline: wrap it in a timeout). Ping/Pong
    /// are skipped; bind probes are returned like any text (see [`is_probe`]).
    pub async fn next_event(&mut self) -> WsEvent {
        self.next_event_or(false).await
    }

    /// [`WsClient::next_event`], but a connection reset (a server killed with SIGKILL)
    /// is the end of the stream rather than a test failure.
    pub async fn next_event_or_reset(&mut self) -> WsEvent {
        self.next_event_or(true).await
    }

    async fn next_event_or(&mut self, reset_ends: bool) -> WsEvent {
        loop {
            match self.ws.next().await {
                None => return WsEvent::End,
                Some(Err(_)) if reset_ends => return WsEvent::End,
                Some(Err(e)) => panic!("websocket error: {e}"),
                Some(Ok(Message::Text(t))) => return WsEvent::Text(t.as_str().to_owned()),
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return WsEvent::Close(u16::from(code), reason.as_str().to_owned());
                }
                Some(Ok(Message::Close(None))) => return WsEvent::Close(1005, String::new()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Next Text frame (5 s deadline), skipping Ping/Pong and bind probes.
    pub async fn recv_text(&mut self) -> String {
        let until = Instant::now() + STEP;
        loop {
            match self.next_text_until(until).await {
                None => panic!("no text frame within {STEP:?}"),
                Some(t) if is_probe(&t) => {}
                Some(t) => return t,
            }
        }
    }

    /// Next frame must be a Close (5 s deadline; Ping/Pong and bind probes are skipped).
    /// Returns its code and reason (1005 and "" for a Close without payload).
    pub async fn expect_close(&mut self) -> (u16, String) {
        let until = Instant::now() + STEP;
        loop {
            let msg = match tokio::time::timeout_at(until, self.ws.next()).await {
                Err(_) => panic!("no Close frame within {STEP:?}"),
                Ok(None) => panic!("websocket ended without a Close frame"),
                Ok(Some(Err(e))) => panic!("websocket error instead of a Close frame: {e}"),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Close(Some(CloseFrame { code, reason })) => {
                    return (u16::from(code), reason.as_str().to_owned());
                }
                Message::Close(None) => return (1005, String::new()),
                Message::Ping(_) | Message::Pong(_) => {}
                Message::Text(t) if is_probe(t.as_str()) => {}
                other => panic!("expected Close, got {other:?}"),
            }
        }
    }

    /// Keeps reading for `d`; panics if a Text frame (other than a bind probe), a Binary frame,
    /// a Close, an error or the end of the stream arrives meanwhile.
    pub async fn expect_silence(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while let Some(t) = self.next_text_until(until).await {
            assert!(is_probe(&t), "expected silence, got text frame {t:?}");
        }
    }

    /// Every Text frame (bind probes skipped) until none has come for `d`.
    pub async fn texts_until_silence(&mut self, d: Duration) -> Vec<String> {
        let mut texts = Vec::new();
        while let Some(t) = self.next_text_until(Instant::now() + d).await {
            if !is_probe(&t) {
                texts.push(t);
            }
        }
        texts
    }

    /// Sends a normal Close and waits (bounded) for the server's answer or the end of stream.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = timeout(STEP, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// What a [`WsClient`] saw next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    Text(String),
    Close(u16, String),
    End,
}

/// A backend on the push port.
pub struct PushClient {
    pub stream: BufReader<TcpStream>,
}

impl PushClient {
    /// Connects (5 s deadline) and sets nodelay.
    pub async fn connect(addr: SocketAddr) -> PushClient {
        let tcp = timeout(STEP, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect push {addr}: timed out"))
            .unwrap_or_else(|e| panic!("connect push {addr}: {e}"));
        tcp.set_nodelay(true).unwrap();
        PushClient {
            stream: BufReader::new(tcp),
        }
    }

    /// Writes `bytes` as they are (60 s deadline, for the multi-MiB tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        timeout(
            Duration::from_secs(60),
            self.stream.get_mut().write_all(bytes),
        )
        .await
        .expect("push write timed out")
        .unwrap_or_else(|e| panic!("push write: {e}"));
    }

    /// One reply line including its `\n` (5 s deadline). Panics at EOF or on a partial line.
    pub async fn read_reply(&mut self) -> String {
        self.read_reply_within(STEP).await
    }

    /// Like [`PushClient::read_reply`] with a custom deadline.
    pub async fn read_reply_within(&mut self, d: Duration) -> String {
        let mut line = Vec::new();
        let n = timeout(d, self.stream.read_until(b'\n', &mut line))
            .await
            .unwrap_or_else(|_| panic!("no push reply within {d:?} (got {line:?} so far)"))
            .unwrap_or_else(|e| panic!("push read: {e}"));
        assert!(n > 0, "push connection closed while a reply was expected");
        assert!(
            line.ends_with(b"\n"),
            "push connection closed mid-reply: {line:?}"
        );
        String::from_utf8(line).unwrap_or_else(|e| panic!("non-UTF-8 reply: {e}"))
    }

    /// Writes `line` + `\n` and returns the reply.
    pub async fn request(&mut self, line: &str) -> String {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.send_raw(&buf).await;
        self.read_reply().await
    }

    /// Writes `line` + `\n` and returns the reply, which must come within `d`.
    pub async fn request_within(&mut self, line: &str, d: Duration) -> String {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.send_raw(&buf).await;
        self.read_reply_within(d).await
    }

    /// Shuts down the write side (half-close).
    pub async fn shutdown_write(&mut self) {
        self.stream
            .get_mut()
            .shutdown()
            .await
            .unwrap_or_else(|e| panic!("push shutdown: {e}"));
    }

    /// Everything the server sends until it closes the connection (5 s deadline).
    pub async fn read_to_eof(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        timeout(STEP, self.stream.read_to_end(&mut all))
            .await
            .unwrap_or_else(|_| panic!("push connection not closed within {STEP:?}; got {all:?}"))
            .unwrap_or_else(|e| panic!("push read to eof: {e}"));
        all
    }
}

/// A browser written by hand over raw TCP: it does the upgrade and sends frames, and after
/// that reads only when asked, so it can play a dead peer (never answers pings) or a stuck
/// one (never reads, so its TCP buffers fill).
pub struct RawWsClient<S = TcpStream> {
    pub tcp: S,
}

/// A `wss://` [`RawWsClient`]: tokio-rustls over TCP.
pub type RawWssClient = RawWsClient<tokio_rustls::client::TlsStream<TcpStream>>;

impl RawWsClient {
    /// TCP connect + HTTP upgrade to `path`, reading the response head up to its blank line.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWsClient {
        let tcp = timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("raw ws connect timed out")
            .expect("raw ws connect");
        tcp.set_nodelay(true).unwrap();
        RawWsClient::upgrade(tcp, addr, path).await
    }

    /// Like [`RawWsClient::connect`] with a small receive buffer set before connecting, so a
    /// client that never reads fills up after little data.
    pub async fn connect_small_rcvbuf(addr: SocketAddr, path: &str) -> RawWsClient {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let tcp = timeout(STEP, sock.connect(addr))
            .await
            .expect("raw ws connect timed out")
            .expect("raw ws connect");
        tcp.set_nodelay(true).unwrap();
        RawWsClient::upgrade(tcp, addr, path).await
    }
}

impl RawWssClient {
    /// [`RawWsClient::connect_small_rcvbuf`] over TLS, trusting `cert`: a `wss://` browser
    /// that can stop reading.
    pub async fn connect_tls_small_rcvbuf(addr: SocketAddr, cert: &TestCert) -> RawWssClient {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let tcp = timeout(STEP, sock.connect(addr))
            .await
            .expect("raw wss connect timed out")
            .expect("raw wss connect");
        tcp.set_nodelay(true).unwrap();
        let connector = tokio_rustls::TlsConnector::from(cert.client_config());
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = timeout(STEP, connector.connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake");
        RawWsClient::upgrade(tls, addr, "/").await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawWsClient<S> {
    async fn upgrade(mut tcp: S, addr: SocketAddr, path: &str) -> RawWsClient<S> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        // Read byte by byte so nothing after the head is consumed.
        let mut head = Vec::new();
        let read_head = async {
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                let n = tcp.read(&mut b).await.expect("raw ws read head");
                assert!(n == 1, "connection closed during upgrade: {head:?}");
                head.push(b[0]);
            }
        };
        timeout(STEP, read_head)
            .await
            .expect("no upgrade response within 5 s");
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "upgrade refused: {head:?}"
        );
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "bad Sec-WebSocket-Accept: {head:?}"
        );
        RawWsClient { tcp }
    }

    /// Sends one masked Text frame.
    pub async fn send_text(&mut self, s: &str) {
        self.tcp
            .write_all(&masked_frame(0x1, s.as_bytes()))
            .await
            .unwrap();
    }

    /// Reads one server frame (unmasked, FIN assumed) within `d`: `Some((opcode, payload))`,
    /// or None at EOF / connection reset. Panics at the deadline.
    pub async fn read_frame(&mut self, d: Duration) -> Option<(u8, Vec<u8>)> {
        let read = async {
            let mut h = [0u8; 2];
            self.tcp.read_exact(&mut h).await.ok()?;
            assert_eq!(h[1] & 0x80, 0, "server frames must not be masked");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.tcp.read_exact(&mut b).await.ok()?;
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.tcp.read_exact(&mut b).await.ok()?;
                    u64::from_be_bytes(b) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            self.tcp.read_exact(&mut payload).await.ok()?;
            Some((h[0] & 0x0f, payload))
        };
        timeout(d, read)
            .await
            .unwrap_or_else(|_| panic!("no frame (or EOF) within {d:?}"))
    }

    /// Reads frames until a Close (returns its code and reason) or EOF (returns None), within
    /// `d` overall. Text, Binary and Ping frames on the way are discarded.
    pub async fn drain_until_close(&mut self, d: Duration) -> Option<(u16, String)> {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.read_frame(left).await {
                None => return None,
                Some((0x8, p)) if p.len() >= 2 => {
                    let code = u16::from_be_bytes([p[0], p[1]]);
                    return Some((code, String::from_utf8_lossy(&p[2..]).into_owned()));
                }
                Some((0x8, _)) => return Some((1005, String::new())),
                Some(_) => {}
            }
        }
    }

    /// Reads everything until EOF (or reset) within `d`; panics at the deadline.
    pub async fn expect_eof(&mut self, d: Duration) {
        let until = Instant::now() + d;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout_at(until, self.tcp.read(&mut buf)).await {
                Err(_) => panic!("connection still open after {d:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// A client-to-server frame (FIN set, masked) with `opcode` and `payload`.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Polls `f` every 10 ms until it returns true; panics with `what` after `d`.
pub async fn poll_until<F, Fut>(d: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + d;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {d:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Pushes `line` on `push` every 10 ms until the reply is `want`; panics after `d`.
pub async fn push_until(push: &mut PushClient, line: &str, want: &str, d: Duration) {
    let deadline = Instant::now() + d;
    loop {
        let got = push.request(line).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "push {line:?} still answered {got:?} after {d:?} (wanted {want:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `sig` to process `pid` with kill(1). For `STOP`, returns only once every thread
/// of it is stopped: kill(2) wakes one thread to stop the group, and on a loaded machine
/// the others go on running (and answering) until it is scheduled, for milliseconds.
pub async fn send_signal(pid: u32, sig: &str) {
    let status = tokio::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .await
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed: {status}");
    if sig != "STOP" {
        return;
    }
    poll_until(STEP, "every thread stopped", || async move {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().all(|task| {
            // `pid (comm) S ...`: the state follows the last ')'.
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
            })
        })
    })
    .await;
}

/// [`push_until`] `ok`, then `tab` gets `line` next, byte-exact.
pub async fn push_until_received(
    push: &mut PushClient,
    tab: &mut WsClient,
    line: &str,
    d: Duration,
) {
    push_until(push, line, "ok\n", d).await;
    assert_eq!(tab.recv_text().await, line, "byte-exact, once");
}

/// The seed's PHP backend snippet (seed 004), verbatim; tests substitute the address.
pub const SEED_PHP: &str = r#"// 建立socket连接到内部推送端口
$client = stream_socket_client('tcp://127.0.0.1:5678', $errno, $errmsg, 1);
// 推送的数据,包含uid字段,表示是给这个uid推送
$data = array('uid'=>'uid1', 'percent'=>'88%');
// 发送数据,注意5678端口是Text协议的端口,Text协议需要在数据末尾加上换行符
fwrite($client, json_encode($data)."\n");
// 读取推送结果
echo fread($client, 8192);
"#;

/// A TCP connection to `dst` from source address `src` (e.g. 127.0.0.2).
pub async fn tcp_from(src: &str, dst: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap())
        .unwrap_or_else(|e| panic!("bind {src}: {e}"));
    let tcp = timeout(STEP, sock.connect(dst))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect {dst} from {src}: {e}"));
    tcp.set_nodelay(true).unwrap();
    tcp
}

/// The HTTP status of a refused WebSocket handshake.
pub fn http_status(err: &tokio_tungstenite::tungstenite::Error) -> Option<u16> {
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => Some(resp.status().as_u16()),
        _ => None,
    }
}

/// A scratch directory under the temp dir, removed on drop.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    /// A fresh, empty one; `name` shows in its path.
    pub fn new(name: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pushwire-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Scratch(dir)
    }

    /// Writes `name` with `contents`; its path.
    pub fn file(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path.display().to_string()
    }

    /// The path of `name` in it.
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released), for
/// tests that must know a daemon's address before it starts or restart on the same one.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address")
}

// ---------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------

/// `pushwire` (the binary Cargo built for these tests) in a clean environment: none of the
/// caller's `PUSHWIRE_*` variables, no `NOTIFY_SOCKET`, `RUST_LOG=info`, no stdin, stdout
/// discarded, stderr piped, killed when dropped. For a subcommand (`status`, `push`, ...)
/// pipe stdout too.
pub fn pushwire_command() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushwire"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PUSHWIRE_") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// How to start the real daemon: flags, environment, and where it listens.
///
/// By default every listener is on port 0 (`--ws-listen`, `--push-listen` and
/// `--http-listen 127.0.0.1:0`) and the ports are read from the daemon's
/// `listening ws=... push=... http=...` log line; [`Launch::on`] fixes the ws and push
/// ports instead, for tests that restart a daemon on the same ones.
#[derive(Debug, Clone)]
pub struct Launch {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    rust_log: String,
    fixed: Option<(SocketAddr, SocketAddr)>,
    http: String,
    start_within: Duration,
}

impl Default for Launch {
    fn default() -> Self {
        Launch {
            args: Vec::new(),
            envs: Vec::new(),
            rust_log: "info".to_owned(),
            fixed: None,
            http: "127.0.0.1:0".to_owned(),
            start_within: Duration::from_secs(10),
        }
    }
}

impl Launch {
    /// Port 0 everywhere, `RUST_LOG=info`, no other flag.
    pub fn new() -> Launch {
        Launch::default()
    }

    /// More flags (after the listen flags).
    pub fn args(mut self, args: &[&str]) -> Launch {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// An environment variable for the daemon (set after the clean-up, so `PUSHWIRE_*`
    /// ones given here are seen).
    pub fn env(mut self, name: &str, value: &str) -> Launch {
        self.envs.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `RUST_LOG` (default `info`).
    pub fn rust_log(mut self, filter: &str) -> Launch {
        self.rust_log = filter.to_owned();
        self
    }

    /// Fixed browser and backend ports (a previous daemon's, or [`free_addr`]s).
    pub fn on(mut self, ws: SocketAddr, push: SocketAddr) -> Launch {
        self.fixed = Some((ws, push));
        self
    }

    /// `--http-listen` (default `127.0.0.1:0`; `off` for none).
    pub fn http_listen(mut self, listen: &str) -> Launch {
        self.http = listen.to_owned();
        self
    }

    /// Every flag, listen flags first.
    pub fn argv(&self) -> Vec<String> {
        let (ws, push) = match self.fixed {
            Some((ws, push)) => (ws.to_string(), push.to_string()),
            None => ("127.0.0.1:0".to_owned(), "127.0.0.1:0".to_owned()),
        };
        let mut argv = vec![
            "--ws-listen".to_owned(),
            ws,
            "--push-listen".to_owned(),
            push,
            "--http-listen".to_owned(),
            self.http.clone(),
        ];
        argv.extend(self.args.iter().cloned());
        argv
    }

    /// The command this launch runs.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = pushwire_command();
        cmd.args(self.argv()).env("RUST_LOG", &self.rust_log);
        for (name, value) in &self.envs {
            cmd.env(name, value);
        }
        cmd
    }

    /// Starts the daemon and waits (10 s at most) for its `listening` line.
    pub async fn start(self) -> Daemon {
        let mut child = self.command().spawn().expect("spawn pushwire");
        let pid = child.id().expect("child pid");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, log) = watch::channel(Vec::new());
        // Drained for the daemon's whole life, so its logging never blocks on the pipe;
        // raw bytes, so tests can check what exactly was written.
        tokio::spawn(async move {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                tx.send_modify(|log| log.extend_from_slice(&chunk[..n]));
            }
        });
        let mut daemon = Daemon {
            child,
            pid,
            ws_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            push_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            http_addr: None,
            log,
        };
        let line = daemon.wait_line("listening", self.start_within).await;
        let addr = |name: &str| {
            listening_field(&line, name)
                .unwrap_or_else(|| panic!("no {name}= in the listening line {line:?}"))
        };
        daemon.ws_addr = addr("ws")
            .parse()
            .unwrap_or_else(|e| panic!("ws address in {line:?}: {e}"));
        daemon.push_addr = addr("push")
            .parse()
            .unwrap_or_else(|e| panic!("push address in {line:?}: {e}"));
        daemon.http_addr = match addr("http") {
            "off" => None,
            a => Some(
                a.parse()
                    .unwrap_or_else(|e| panic!("http address {a:?}: {e}")),
            ),
        };
        daemon
    }

    /// Runs the daemon's command to its exit (it must exit within `d`: a startup error);
    /// returns its status and stderr.
    pub async fn run_to_exit(self, d: Duration) -> (std::process::ExitStatus, String) {
        let child = self.command().spawn().expect("spawn pushwire");
        let out = timeout(d, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("pushwire {:?} still running after {d:?}", self.argv()))
            .expect("wait for pushwire");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A field of the `listening` log line in either log format: `name=VALUE` (human) or
/// `"name":"VALUE"` (JSON).
fn listening_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let human = format!("{name}=");
    if let Some(v) = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(human.as_str()))
    {
        return Some(v);
    }
    let json = format!("\"{name}\":\"");
    let at = line.find(&json)? + json.len();
    line[at..].split('"').next()
}

/// The real daemon as a child process, started by [`Launch::start`]; killed (SIGKILL)
/// when dropped.
pub struct Daemon {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub ws_addr: SocketAddr,
    pub push_addr: SocketAddr,
    /// `None` with `--http-listen off`.
    pub http_addr: Option<SocketAddr>,
    /// Everything written to stderr so far.
    log: watch::Receiver<Vec<u8>>,
}

impl Daemon {
    /// A daemon on port 0 with `args` (see [`Launch`] for more).
    pub async fn start(args: &[&str]) -> Daemon {
        Launch::new().args(args).start().await
    }

    /// `ws://127.0.0.1:P/`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.ws_addr)
    }

    /// `http://127.0.0.1:P` + `path`; panics without an HTTP door.
    pub fn http_url(&self, path: &str) -> String {
        let addr = self
            .http_addr
            .expect("daemon started with --http-listen off");
        format!("http://{addr}{path}")
    }

    /// Its resident set size (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("the daemon's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Stderr so far, as written.
    pub fn log_bytes(&self) -> Vec<u8> {
        self.log.borrow().clone()
    }

    /// Stderr so far (invalid UTF-8 replaced).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.borrow()).into_owned()
    }

    /// Waits until stderr contains `needle`, then returns all of it; panics (with the
    /// log) at the deadline or if stderr ends first.
    pub async fn wait_log(&self, needle: &str, d: Duration) -> Vec<u8> {
        let log = self
            .wait_for_log(d, |log| log.contains(needle))
            .await
            .unwrap_or_else(|why| panic!("no {needle:?} on stderr: {why}:\n{}", self.log()));
        log.into_bytes()
    }

    /// The first complete log line containing `needle` (waits like [`Daemon::wait_log`]).
    pub async fn wait_line(&self, needle: &str, d: Duration) -> String {
        let line = |log: &str| {
            let complete = &log[..log.rfind('\n').map_or(0, |end| end + 1)];
            complete
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned)
        };
        let log = self
            .wait_for_log(d, |log| line(log).is_some())
            .await
            .unwrap_or_else(|why| panic!("no line with {needle:?}: {why}:\n{}", self.log()));
        line(&log).unwrap_or_default()
    }

    /// Waits until `done(stderr so far)`; the log, or why not.
    pub async fn wait_for_log(
        &self,
        d: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let mut rx = self.log.clone();
        let done = |log: &Vec<u8>| done(&String::from_utf8_lossy(log));
        match timeout(d, rx.wait_for(done)).await {
            Ok(Ok(log)) => Ok(String::from_utf8_lossy(&log).into_owned()),
            Ok(Err(_)) if done(&self.log_bytes()) => Ok(self.log()),
            Ok(Err(_)) => Err("stderr ended first".to_owned()),
            Err(_) => Err(format!("not within {d:?}")),
        }
    }

    /// Sends `sig` (a name such as `TERM`, `HUP`) with kill(1); see [`send_signal`].
    pub async fn signal(&self, sig: &str) {
        send_signal(self.pid, sig).await;
    }

    /// SIGTERM.
    pub async fn sigterm(&self) {
        self.signal("TERM").await;
    }

    /// SIGINT.
    pub async fn sigint(&self) {
        self.signal("INT").await;
    }

    /// SIGKILL, without waiting (see [`Daemon::wait`]).
    pub fn kill9(&mut self) {
        self.child.start_kill().expect("SIGKILL pushwire");
    }

    /// Waits for the process to exit, at most `d`; panics (with the log) after that.
    pub async fn wait(&mut self, d: Duration) -> std::process::ExitStatus {
        match timeout(d, self.child.wait()).await {
            Ok(status) => status.expect("wait for pushwire"),
            Err(_) => panic!(
                "pushwire (pid {}) still running after {d:?}; stderr:\n{}",
                self.pid,
                self.log()
            ),
        }
    }
}

/// Runs `cmd` to its exit with `stdin` as its input (within `d`), capturing its output.
/// A program that cannot be started fails the test: `scripts/test.sh` installs every
/// program the tests run.
pub async fn run_program(
    cmd: &mut tokio::process::Command,
    stdin: &[u8],
    d: Duration,
) -> std::process::Output {
    let what = format!("{:?}", cmd.as_std());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e} (scripts/test.sh installs it)"));
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    // Written alongside the wait, so a program that answers before reading all of its
    // input cannot deadlock the test.
    let writer = tokio::spawn(async move {
        let _ = input.write_all(&stdin).await;
    });
    let out = timeout(d, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} still running after {d:?}"))
        .unwrap_or_else(|e| panic!("wait for {what}: {e}"));
    let _ = writer.await;
    out
}

// ---------------------------------------------------------------------------------------
// TLS: a throw-away certificate and `wss://` clients
// ---------------------------------------------------------------------------------------

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files in a
/// fresh directory, with what clients need to trust it.
pub struct TestCert {
    pub dir: std::path::PathBuf,
    pub cert_pem: String,
    cert_der: rustls::pki_types::CertificateDer<'static>,
    spki_der: Vec<u8>,
}

impl TestCert {
    /// A new certificate (and key) in a new directory, as `cert.pem` and `key.pem`.
    pub fn new(name: &str) -> TestCert {
        let dir = std::env::temp_dir().join(format!(
            "pushwire-cert-{name}-{}-{}",
            std::process::id(),
            PROBE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create cert dir");
        let cert = TestCert::generate(dir);
        cert.write_to(&cert.dir.join("cert.pem"), &cert.dir.join("key.pem"));
        cert
    }

    fn generate(dir: std::path::PathBuf) -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("generate a certificate");
        use rcgen::PublicKeyData;
        let spki_der = made.signing_key.subject_public_key_info();
        let key_pem = made.signing_key.serialize_pem();
        std::fs::write(dir.join("next-key.pem"), key_pem).expect("write key");
        TestCert {
            dir,
            cert_pem: made.cert.pem(),
            cert_der: made.cert.der().clone(),
            spki_der,
        }
    }

    fn write_to(&self, cert: &std::path::Path, key: &std::path::Path) {
        std::fs::write(cert, &self.cert_pem).expect("write cert");
        std::fs::rename(self.dir.join("next-key.pem"), key).expect("write key");
    }

    /// Replaces the files with a new certificate and key (a rotation); from now on this
    /// trusts only the new one.
    pub fn rotate(&mut self) {
        let next = TestCert::generate(self.dir.clone());
        next.write_to(&self.dir.join("cert.pem"), &self.dir.join("key.pem"));
        self.cert_pem = next.cert_pem.clone();
        self.cert_der = next.cert_der.clone();
        self.spki_der = next.spki_der.clone();
        // `next` shares the directory: it must not remove it.
        std::mem::forget(next);
    }

    /// The files, as the daemon takes them.
    pub fn files(&self) -> pushwire::tls::TlsFiles {
        pushwire::tls::TlsFiles {
            cert: self.dir.join("cert.pem"),
            key: self.dir.join("key.pem"),
        }
    }

    /// A rustls client that trusts this certificate only.
    pub fn client_config(&self) -> std::sync::Arc<rustls::ClientConfig> {
        self.client_config_with(
            rustls::crypto::ring::default_provider(),
            rustls::DEFAULT_VERSIONS,
        )
    }

    /// [`TestCert::client_config`] offering only `provider`'s cipher suites and `versions`.
    pub fn client_config_with(
        &self,
        provider: rustls::crypto::CryptoProvider,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> std::sync::Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .expect("trust the test cert");
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_protocol_versions(versions)
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        std::sync::Arc::new(config)
    }

    /// base64(SHA-256(SPKI)): what Chromium's `--ignore-certificate-errors-spki-list` takes.
    pub fn spki_sha256_base64(&self) -> String {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&self.spki_der))
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl WsClient {
    /// Opens `wss://` `url`, trusting only `cert` (5 s deadline).
    pub async fn connect_tls(url: &str, cert: &TestCert) -> WsClient {
        WsClient::try_connect_tls(url, cert.client_config())
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    /// Opens `wss://` `url` (a URL or a request with headers) with the TLS client
    /// `config`; the error if it fails.
    pub async fn try_connect_tls(
        url: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<WsClient, String> {
        let connector = tokio_tungstenite::Connector::Rustls(config);
        let connect =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector));
        match timeout(STEP, connect).await {
            Err(_) => Err("timed out".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok((ws, _resp))) => Ok(WsClient { ws }),
        }
    }
}

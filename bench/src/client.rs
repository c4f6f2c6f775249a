//! Sockets: source-address spreading, the WebSocket client fleet and its receive loop.

use crate::push::Item;
use crate::track::{self, now_ns};
use crate::wsread::{FrameReader, masked_frame};
use futures_util::SinkExt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::either::Either;

/// Set by the ack scenario: v1 clients acknowledge every message they checked (one
/// cumulative `a SEQ` per read).
pub static ACK: AtomicBool = AtomicBool::new(false);

/// Where the server is and how to reach it.
pub struct Net {
    pub ws_url: String,
    pub ws_addr: SocketAddr,
    pub push_addr: SocketAddr,
    /// Number of 127.B.0.X source addresses (X = 2, 3, …) to rotate over; 0 = let the kernel pick.
    pub spread: u32,
    /// B of the source addresses (`--source-block`): processes that hold sockets at once
    /// (cluster-fanout's holders) each get a block of 127.0.0.0/8 of their own.
    pub block: u8,
    /// The second octets of the IPv4 source addresses connections really got (a bit
    /// each): what a holder tells the cluster-fanout parent.
    pub seen_blocks: [AtomicU64; 4],
    /// Set when binding a 127.0.0.X source failed (no such local address here).
    spread_off: AtomicBool,
    pub ws_read_buffer: usize,
    next_src: AtomicU64,
    /// `wss://`: the TLS client (trusting `--tls-ca`) and the server's name.
    pub tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

/// A client's socket: plain TCP, or TLS over it (`wss://`).
pub type Conn = Either<TcpStream, Box<TlsStream<TcpStream>>>;

impl Net {
    pub fn new(
        ws_url: String,
        ws_addr: SocketAddr,
        push_addr: SocketAddr,
        spread: u32,
        ws_read_buffer: usize,
    ) -> Net {
        Net {
            ws_url,
            ws_addr,
            push_addr,
            spread: spread.min(250),
            block: 0,
            seen_blocks: Default::default(),
            spread_off: AtomicBool::new(false),
            ws_read_buffer,
            next_src: AtomicU64::new(0),
            tls: None,
        }
    }

    /// Round-robin source address for a new connection to `target`, when spreading applies.
    /// Each 127.0.0.X gets its own ~28k ephemeral ports, so N connections over S addresses
    /// need about N/S ports per address (TIME_WAIT of the churn scenario included).
    fn source_for(&self, target: SocketAddr) -> Option<SocketAddr> {
        let IpAddr::V4(ip) = target.ip() else {
            return None;
        };
        if self.spread == 0 || !ip.is_loopback() || self.spread_off.load(Ordering::Relaxed) {
            return None;
        }
        let k = self.next_src.fetch_add(1, Ordering::Relaxed) % u64::from(self.spread);
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, self.block, 0, 2 + k as u8)),
            0,
        ))
    }

    /// A TCP connection to `target` with TCP_NODELAY, bound to a rotating loopback source.
    pub async fn tcp(&self, target: SocketAddr) -> std::io::Result<TcpStream> {
        let sock = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(src) = self.source_for(target)
            && let Err(e) = sock.bind(src)
        {
            if e.kind() != std::io::ErrorKind::AddrNotAvailable {
                return Err(e);
            }
            if !self.spread_off.swap(true, Ordering::AcqRel) {
                eprintln!(
                    "pushwire-bench: warning: cannot bind source address {}: {e}; \
                     not spreading sockets over 127.0.0.0/8",
                    src.ip()
                );
            }
        }
        let s = sock.connect(target).await?;
        s.set_nodelay(true)?;
        if let Ok(SocketAddr::V4(local)) = s.local_addr() {
            let b = local.ip().octets()[1];
            self.seen_blocks[usize::from(b / 64)].fetch_or(1 << (b % 64), Ordering::Relaxed);
        }
        Ok(s)
    }

    /// The second octets of the source addresses seen so far, ascending.
    pub fn blocks(&self) -> Vec<u8> {
        (0..=255u8)
            .filter(|&b| {
                self.seen_blocks[usize::from(b / 64)].load(Ordering::Relaxed) & (1 << (b % 64)) != 0
            })
            .collect()
    }

    fn ws_config(&self) -> WebSocketConfig {
        // Small buffers: tungstenite zero-fills (so keeps resident) its whole read buffer.
        WebSocketConfig::default()
            .read_buffer_size(self.ws_read_buffer)
            .write_buffer_size(0)
    }
}

/// How long a client may take to connect, shake hands and bind (or subscribe).
pub const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// The set of bound WebSocket clients, one uid each.
pub struct Fleet {
    pub uids: Box<[String]>,
    /// Handshake done and uid frame written.
    pub connected: AtomicUsize,
    pub failed: AtomicUsize,
    pub alive: AtomicUsize,
    /// Clients the server closed or that errored (never expected).
    pub dropped: AtomicUsize,
    /// Per client: connect start → uid frame written, ns.
    pub took_ns: Box<[AtomicU64]>,
    /// Per client: bench-clock time its uid frame was written.
    pub ready_ns: Box<[AtomicU64]>,
    /// Per client: connected and not (yet) dropped.
    pub up: Box<[AtomicBool]>,
    /// Per client (Pusher and nchan doors): subscribed, as the server confirmed it
    /// (`subscription_succeeded`, or a probe published to the channel received).
    pub ready: Box<[AtomicBool]>,
    pub ready_count: AtomicUsize,
    /// Bench-clock time the last client became ready.
    pub last_ready_ns: AtomicU64,
    pub closing: AtomicBool,
}

impl Fleet {
    /// Client `i` tried to connect from `start` for at most [`CONNECT_LIMIT`] (`steps`:
    /// what that covered): counted failed (an error) or up, and then its connection.
    pub fn connected<T>(
        &self,
        i: usize,
        start: u64,
        res: Result<Result<T, String>, tokio::time::error::Elapsed>,
        steps: &str,
    ) -> Option<T> {
        let uid = &self.uids[i];
        let conn = match res {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.failed.fetch_add(1, Ordering::AcqRel);
                track::error(format!("client {uid}: {e}"));
                return None;
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::AcqRel);
                track::error(format!(
                    "client {uid}: {steps} took over {} s",
                    CONNECT_LIMIT.as_secs()
                ));
                return None;
            }
        };
        let end = now_ns();
        self.ready_ns[i].store(end, Ordering::Release);
        self.took_ns[i].store(end - start, Ordering::Release);
        self.up[i].store(true, Ordering::Release);
        self.alive.fetch_add(1, Ordering::AcqRel);
        self.connected.fetch_add(1, Ordering::AcqRel);
        Some(conn)
    }

    /// Client `i`'s connection ended (`why`): an error unless the bench is closing.
    pub fn ended(&self, i: usize, why: &str) {
        self.up[i].store(false, Ordering::Release);
        self.alive.fetch_sub(1, Ordering::AcqRel);
        if !self.closing.load(Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::AcqRel);
            track::error(format!("client {}: {why}", self.uids[i]));
        }
    }

    pub fn new(n: usize, tag: &str) -> Fleet {
        Fleet {
            uids: (0..n).map(|i| format!("{tag}.{i}")).collect(),
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            alive: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            took_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            ready_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            up: (0..n).map(|_| AtomicBool::new(false)).collect(),
            ready: (0..n).map(|_| AtomicBool::new(false)).collect(),
            ready_count: AtomicUsize::new(0),
            last_ready_ns: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        }
    }

    pub fn len(&self) -> usize {
        self.uids.len()
    }

    /// Marks client `i` subscribed (once).
    pub fn set_ready(&self, i: usize) {
        if !self.ready[i].swap(true, Ordering::AcqRel) {
            self.last_ready_ns.fetch_max(now_ns(), Ordering::AcqRel);
            self.ready_count.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// TCP (and TLS for `wss://`) then the WebSocket handshake to `url`.
pub async fn handshake(net: &Net, url: &str) -> Result<WebSocketStream<Conn>, String> {
    let tcp = net
        .tcp(net.ws_addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let conn = match &net.tls {
        None => Either::Left(tcp),
        Some((connector, name)) => Either::Right(Box::new(
            connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?,
        )),
    };
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(url, conn, Some(net.ws_config()))
        .await
        .map_err(|e| format!("websocket handshake: {e}"))?;
    Ok(ws)
}

async fn connect_ws(net: &Net, uid: &str) -> Result<WebSocketStream<Conn>, String> {
    let mut ws = handshake(net, net.ws_url.as_str()).await?;
    ws.send(Message::text(uid))
        .await
        .map_err(|e| format!("sending uid: {e}"))?;
    Ok(ws)
}

/// One client for its whole life: connect, handshake and send the uid while holding a
/// storm-concurrency permit, announce itself to the storm prober, then receive forever.
pub async fn client(
    net: &'static Net,
    fleet: &'static Fleet,
    i: usize,
    permit: OwnedSemaphorePermit,
    probe: mpsc::UnboundedSender<Item>,
    probe_seq: u64,
) {
    let start = now_ns();
    let uid = &fleet.uids[i];
    let res = tokio::time::timeout(CONNECT_LIMIT, connect_ws(net, uid)).await;
    drop(permit);
    let Some(ws) = fleet.connected(i, start, res, "connect+handshake+uid") else {
        return;
    };
    let _ = probe.send(Item {
        seq: probe_seq,
        uid: i as u32,
    });
    drop(probe);

    // From here on only server frames are read, by the lean reader (the handshake left
    // nothing buffered: the server sends nothing before it has the uid).
    let why = receive(ws.into_inner(), uid, i, net.ws_url.contains("pushwire=1")).await;
    fleet.ended(i, &why);
}

/// Reads server frames until the connection ends; returns why it ended. `v1`: frames may
/// carry protocol v1's envelope, which is taken off before the check.
async fn receive(mut s: Conn, uid: &str, i: usize, v1: bool) -> String {
    let mut r = FrameReader::default();
    let mut pongs = Vec::new();
    let mut rng = track::Rng::new(i as u64 + 1);
    loop {
        if let Err(why) = r.read_from(&mut s).await {
            return why;
        }
        let mut ack = None;
        let on_text = |t: &str| {
            if let Some(body) = if v1 { unwrap_v1(t) } else { Some(t) } {
                track::on_frame(uid, i, body);
            }
            if let Some(seq) = t.strip_prefix("m ").and_then(|r| r.split(' ').next()) {
                ack = Some(seq.to_owned());
            }
        };
        match r.process(on_text, &mut pongs) {
            Ok(None) => {}
            Ok(Some(close)) => {
                let _ = s.write_all(&masked_frame(0x8, &[], key(&mut rng))).await;
                return close;
            }
            Err(e) => return format!("protocol error: {e}"),
        }
        for p in pongs.drain(..) {
            if let Err(e) = s.write_all(&masked_frame(0xA, &p, key(&mut rng))).await {
                return format!("writing pong: {e}");
            }
        }
        if let Some(seq) = ack.filter(|_| v1 && ACK.load(Ordering::Relaxed)) {
            let frame = masked_frame(0x1, format!("a {seq}").as_bytes(), key(&mut rng));
            if let Err(e) = s.write_all(&frame).await {
                return format!("writing an ack: {e}");
            }
        }
        // Give back the memory of an unusually large message.
        if r.buf.is_empty() && r.buf.capacity() > 64 * 1024 {
            r.buf = Vec::new();
        }
    }
}

/// The payload of a protocol v1 frame: `m SEQ PAYLOAD` and `b PAYLOAD` lose their
/// prefix, the status frame (`s ...`) is no message; anything else is bare already.
fn unwrap_v1(text: &str) -> Option<&str> {
    if let Some(rest) = text.strip_prefix("m ") {
        return rest.split_once(' ').map(|(_, payload)| payload);
    }
    if text.starts_with("s ") {
        return None;
    }
    Some(text.strip_prefix("b ").unwrap_or(text))
}

pub fn key(rng: &mut track::Rng) -> [u8; 4] {
    (rng.next_u64() as u32).to_ne_bytes()
}

//! Sockets: source-address spreading, the WebSocket client fleet and its receive loop.

use crate::push::Item;
use crate::track::{self, now_ns};
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Where the server is and how to reach it.
pub struct Net {
    pub ws_url: String,
    pub ws_addr: SocketAddr,
    pub push_addr: SocketAddr,
    /// Number of 127.0.0.X source addresses (X = 2, 3, …) to rotate over; 0 = let the kernel pick.
    pub spread: u32,
    pub ws_read_buffer: usize,
    next_src: AtomicU64,
}

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
            ws_read_buffer,
            next_src: AtomicU64::new(0),
        }
    }

    /// Round-robin source address for a new connection to `target`, when spreading applies.
    /// Each 127.0.0.X gets its own ~28k ephemeral ports, so N connections over S addresses
    /// need about N/S ports per address (TIME_WAIT of the churn scenario included).
    fn source_for(&self, target: SocketAddr) -> Option<SocketAddr> {
        let IpAddr::V4(ip) = target.ip() else {
            return None;
        };
        if self.spread == 0 || !ip.is_loopback() {
            return None;
        }
        let k = self.next_src.fetch_add(1, Ordering::Relaxed) % u64::from(self.spread);
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + k as u8)),
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
        if let Some(src) = self.source_for(target) {
            sock.bind(src)?;
        }
        let s = sock.connect(target).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    fn ws_config(&self) -> WebSocketConfig {
        // Small buffers: tungstenite zero-fills (so keeps resident) its whole read buffer.
        WebSocketConfig::default()
            .read_buffer_size(self.ws_read_buffer)
            .write_buffer_size(0)
    }
}

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
    pub closing: AtomicBool,
}

impl Fleet {
    pub fn new(n: usize, tag: &str) -> Fleet {
        Fleet {
            uids: (0..n).map(|i| format!("{tag}.{i}")).collect(),
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            alive: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            took_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            ready_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            closing: AtomicBool::new(false),
        }
    }

    pub fn len(&self) -> usize {
        self.uids.len()
    }
}

async fn connect_ws(net: &Net, uid: &str) -> Result<WebSocketStream<TcpStream>, String> {
    let tcp = net
        .tcp(net.ws_addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut ws, _resp) = tokio_tungstenite::client_async_with_config(
        net.ws_url.as_str(),
        tcp,
        Some(net.ws_config()),
    )
    .await
    .map_err(|e| format!("websocket handshake: {e}"))?;
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
    let res = tokio::time::timeout(Duration::from_secs(30), connect_ws(net, uid)).await;
    drop(permit);
    let mut ws = match res {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            fleet.failed.fetch_add(1, Ordering::AcqRel);
            track::error(format!("client {uid}: {e}"));
            return;
        }
        Err(_) => {
            fleet.failed.fetch_add(1, Ordering::AcqRel);
            track::error(format!(
                "client {uid}: connect+handshake+uid took over 30 s"
            ));
            return;
        }
    };
    let end = now_ns();
    fleet.ready_ns[i].store(end, Ordering::Release);
    fleet.took_ns[i].store(end - start, Ordering::Release);
    fleet.alive.fetch_add(1, Ordering::AcqRel);
    fleet.connected.fetch_add(1, Ordering::AcqRel);
    let _ = probe.send(Item {
        seq: probe_seq,
        uid: i as u32,
    });
    drop(probe);

    let why = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => track::on_frame(uid, t.as_str()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(cf))) => {
                break match cf {
                    Some(cf) => format!(
                        "closed by server: {} {:?}",
                        u16::from(cf.code),
                        cf.reason.as_str()
                    ),
                    None => "closed by server (no close frame payload)".to_string(),
                };
            }
            Some(Ok(Message::Binary(_))) => {
                track::error(format!("client {uid}: unexpected binary frame"))
            }
            Some(Ok(Message::Frame(_))) => {}
            Some(Err(e)) => break format!("read error: {e}"),
            None => break "connection ended".to_string(),
        }
    };
    fleet.alive.fetch_sub(1, Ordering::AcqRel);
    if !fleet.closing.load(Ordering::Acquire) {
        fleet.dropped.fetch_add(1, Ordering::AcqRel);
        track::error(format!("client {uid}: {why}"));
    }
}

//! Subscribers of the other doors: Pusher Channels (`/app/{key}`, `pusher:subscribe`,
//! confirmed by `pusher_internal:subscription_succeeded`) and nchan (the channel in the
//! URL, `/sub/{channel}`; nchan confirms nothing, so a prober publishes to the channels
//! of clients not known to be subscribed until each has received one). After the
//! handshake (and the subscribe), frames are read by the same lean reader as pushwire's
//! own clients and every delivery goes through the same ledger (`track::on_frame`):
//! exactly once, byte-exact. A Pusher event is checked whole (`{"event":"bench",
//! "channel":C,"data":D}` exactly as the door writes it) and its `data` string is the
//! payload checked.

use crate::Door;
use crate::client::{CONNECT_LIMIT, Conn, Fleet, Net, handshake, key};
use crate::http;
use crate::track::{self, now_ns};
use crate::wsread::{FrameReader, masked_frame};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::Message;

/// The name of the bench's Pusher events.
pub const EVENT: &str = "bench";

/// What a nchan probe payload starts with (not a delivery: it tells a client it is
/// subscribed; several may arrive, from nchan's message buffer).
const PROBE: &str = "{\"probe\":";

/// How the clients of a door subscribe, and where publishes go.
pub struct DoorCfg {
    pub door: Door,
    /// `ws://host:port` of --ws.
    pub base: String,
    /// Host header of publishes.
    pub http_host: String,
    pub pusher_key: String,
    pub pusher_id: String,
    pub pusher_secret: String,
    /// The channel every client subscribes to, or None: each its own (named as its uid).
    pub shared: Option<String>,
}

impl DoorCfg {
    pub fn channel<'a>(&'a self, fleet: &'a Fleet, i: usize) -> &'a str {
        self.shared.as_deref().unwrap_or(&fleet.uids[i])
    }

    /// One publish of `payload` to `channel`, appended to `buf` as an HTTP request.
    pub fn publish_request(&self, buf: &mut Vec<u8>, channel: &str, payload: &[u8]) {
        match self.door {
            Door::Pusher => {
                let data = String::from_utf8_lossy(payload);
                let body = format!(
                    "{{\"name\":\"{EVENT}\",\"channels\":[{}],\"data\":{}}}",
                    serde_json::Value::from(channel),
                    serde_json::Value::from(data.as_ref())
                );
                let path = format!("/apps/{}/events", self.pusher_id);
                let keys = pushwire::wire::pusher::Keys::new(
                    &self.pusher_key,
                    self.pusher_secret.as_bytes(),
                );
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let query = keys.sign_api("POST", &path, &[], body.as_bytes(), now);
                http::post(
                    buf,
                    &self.http_host,
                    &format!("{path}?{query}"),
                    "application/json",
                    body.as_bytes(),
                );
            }
            _ => http::post(
                buf,
                &self.http_host,
                &format!("/pub/{channel}"),
                "text/plain",
                payload,
            ),
        }
    }

    /// Whether a publish's status says it was taken: `Some(true)` taken (nchan: a
    /// subscriber was there), `Some(false)` taken but nobody there (nchan's 202), None
    /// refused.
    pub fn publish_status(&self, status: u16) -> Option<bool> {
        match (self.door, status) {
            (Door::Pusher, 200) => Some(true),
            (Door::Nchan, 201) => Some(true),
            (Door::Nchan, 202) => Some(false),
            _ => None,
        }
    }
}

async fn connect(net: &Net, cfg: &DoorCfg, channel: &str) -> Result<Conn, String> {
    match cfg.door {
        Door::Pusher => {
            let url = format!(
                "{}/app/{}?protocol=7&client=js&version=8.6.0&flash=false",
                cfg.base, cfg.pusher_key
            );
            let mut ws = handshake(net, &url).await?;
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("\"pusher:connection_established\"") => {}
                Some(Ok(m)) => {
                    return Err(format!("first frame is not connection_established: {m:?}"));
                }
                Some(Err(e)) => return Err(format!("reading connection_established: {e}")),
                None => return Err("closed before connection_established".into()),
            }
            let sub =
                serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}});
            ws.send(Message::text(sub.to_string()))
                .await
                .map_err(|e| format!("sending pusher:subscribe: {e}"))?;
            Ok(ws.into_inner())
        }
        _ => {
            let ws = handshake(net, &format!("{}/sub/{channel}", cfg.base)).await?;
            Ok(ws.into_inner())
        }
    }
}

/// One subscriber for its whole life (as `client::client` for pushwire's protocol).
pub async fn client(
    net: &'static Net,
    fleet: &'static Fleet,
    cfg: &'static DoorCfg,
    i: usize,
    permit: OwnedSemaphorePermit,
) {
    let start = now_ns();
    let channel = cfg.channel(fleet, i);
    let res = tokio::time::timeout(CONNECT_LIMIT, connect(net, cfg, channel)).await;
    drop(permit);
    let Some(conn) = fleet.connected(i, start, res, "connect+handshake+subscribe") else {
        return;
    };
    let why = receive(conn, fleet, cfg, i).await;
    fleet.ended(i, &why);
}

fn excerpt(s: &str) -> String {
    s.chars().take(160).collect()
}

/// A Pusher frame: the subscription's confirmation, a ping (answered), or an event.
/// Returns whether a pong is due.
fn pusher_frame(t: &str, fleet: &Fleet, cfg: &DoorCfg, i: usize) -> bool {
    let uid = &fleet.uids[i];
    let channel = cfg.channel(fleet, i);
    let Ok(v) = serde_json::from_str::<serde_json::Value>(t) else {
        track::error(format!("client {uid}: frame is not JSON: {:?}", excerpt(t)));
        return false;
    };
    let str_of = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
    match str_of("event").unwrap_or("") {
        "pusher_internal:subscription_succeeded" if str_of("channel") == Some(channel) => {
            fleet.set_ready(i);
        }
        "pusher:ping" => return true,
        EVENT => {
            let Some(data) = str_of("data") else {
                track::error(format!(
                    "client {uid}: event without a data string: {:?}",
                    excerpt(t)
                ));
                return false;
            };
            let want = format!(
                "{{\"event\":\"{EVENT}\",\"channel\":{},\"data\":{}}}",
                serde_json::Value::from(channel),
                serde_json::Value::from(data)
            );
            if want != t {
                track::error(format!(
                    "client {uid}: event not byte-exact: {:?} (expected {:?})",
                    excerpt(t),
                    excerpt(&want)
                ));
                return false;
            }
            track::on_frame(uid, i, data);
        }
        _ => track::error(format!(
            "client {uid}: unexpected Pusher frame {:?}",
            excerpt(t)
        )),
    }
    false
}

async fn receive(mut s: Conn, fleet: &Fleet, cfg: &DoorCfg, i: usize) -> String {
    let uid = &fleet.uids[i];
    let mut r = FrameReader::default();
    let mut pongs = Vec::new();
    let mut rng = track::Rng::new(i as u64 + 1);
    loop {
        if let Err(why) = r.read_from(&mut s).await {
            return why;
        }
        let mut pusher_pong = false;
        let on_text = |t: &str| match cfg.door {
            Door::Pusher => pusher_pong |= pusher_frame(t, fleet, cfg, i),
            _ if t.starts_with(PROBE) => fleet.set_ready(i),
            _ => track::on_frame(uid, i, t),
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
        if pusher_pong {
            let pong = br#"{"event":"pusher:pong","data":{}}"#;
            if let Err(e) = s.write_all(&masked_frame(0x1, pong, key(&mut rng))).await {
                return format!("writing pusher:pong: {e}");
            }
        }
        if r.buf.is_empty() && r.buf.capacity() > 64 * 1024 {
            r.buf = Vec::new();
        }
    }
}

/// nchan: publishes probes until every connected client has received one (then it is
/// subscribed), or `stop`. Shared channel: once every client has connected, one probe
/// every 50 ms while any is not ready. Own channels: one probe to each connected client not ready, again after
/// 200 ms without it. Returns the probes published.
pub async fn nchan_prober(
    net: &'static Net,
    fleet: &'static Fleet,
    cfg: &'static DoorCfg,
    stop: &'static AtomicBool,
    probes: &'static AtomicU64,
) -> Result<(), String> {
    let conn = net
        .tcp(net.push_addr)
        .await
        .map_err(|e| format!("prober connection: {e}"))?;
    let (rd, mut wr) = conn.into_split();
    let mut rd = BufReader::new(rd);
    let n = fleet.len();
    let mut last = vec![0u64; n];
    let mut k = 0u64;
    while !stop.load(Ordering::Acquire) {
        let now = now_ns();
        let mut buf = Vec::new();
        let mut count = 0;
        let waiting = |i: usize| {
            fleet.up[i].load(Ordering::Acquire) && !fleet.ready[i].load(Ordering::Acquire)
        };
        match &cfg.shared {
            Some(ch) => {
                // Each probe reaches every subscriber: only once every client has
                // connected (or failed), then every 50 ms while one has not received any.
                let settled = fleet.connected.load(Ordering::Acquire)
                    + fleet.failed.load(Ordering::Acquire)
                    >= n;
                if settled && now.saturating_sub(last[0]) > 50_000_000 && (0..n).any(waiting) {
                    last[0] = now;
                    k += 1;
                    cfg.publish_request(&mut buf, ch, format!("{PROBE}{k}}}").as_bytes());
                    count = 1;
                }
            }
            None => {
                for (i, at) in last.iter_mut().enumerate() {
                    if waiting(i) && now.saturating_sub(*at) > 200_000_000 {
                        *at = now;
                        k += 1;
                        cfg.publish_request(
                            &mut buf,
                            &fleet.uids[i],
                            format!("{PROBE}{k}}}").as_bytes(),
                        );
                        count += 1;
                    }
                }
            }
        }
        if count > 0 {
            wr.write_all(&buf)
                .await
                .map_err(|e| format!("prober write: {e}"))?;
            for _ in 0..count {
                let (status, body) = http::read_response(&mut rd).await?;
                if cfg.publish_status(status).is_none() {
                    return Err(format!(
                        "probe publish answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
            }
            probes.fetch_add(count, Ordering::AcqRel);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

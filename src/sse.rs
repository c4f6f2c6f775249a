//! Server-Sent Events on the browser port, for networks that block WebSockets: a `GET`
//! with `Accept: text/event-stream` binds a uid (`?uid=`, or `?token=` with a JWT secret)
//! as a protocol v1 connection and streams its messages as events (`docs/protocol.md`,
//! "SSE"). `EventSource` reconnects by itself and sends `Last-Event-ID`, which resumes
//! from history exactly like `?pushwire=1&since=`.
//!
//! The connection is a registry binding like any tab: it counts in presence, gets the
//! same queue limits and the same slow-consumer policy, and a kick or an eviction ends the
//! response. Events are assembled per connection (prefix, payload, blank line) and copied
//! once into a write buffer: SSE is the fallback path, and a copy costs less than a second
//! framing engine.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, info};

use crate::access::Admitted;
use crate::frames::write_raw;
use crate::metrics::Metric;
use crate::state::State;
use crate::transport::Transport;
use crate::wire::envelope::{Mode, Position, RAW, UNNUMBERED};
use crate::wire::{CloseNotice, Payload};

/// A request for an event stream, read by `handshake.rs`.
pub(crate) struct Request {
    /// The socket, past TLS if the port serves it.
    pub(crate) io: Transport,
    /// What its head said.
    pub(crate) head: Head,
}

/// The parts of an event-stream request head that matter here.
pub(crate) struct Head {
    /// The URL's query string.
    pub(crate) query: Option<String>,
    /// `Last-Event-ID` (sent by `EventSource` when it reconnects).
    pub(crate) last_event_id: Option<String>,
    /// `Origin`, to allow the response to it (CORS): an `EventSource` of a page on
    /// another origin may read the stream only then. Already checked against
    /// `--allowed-origins`.
    pub(crate) origin: Option<String>,
}

/// What `EventSource` is told to wait before it reconnects (its own default is ~3 s).
const RETRY_MS: u64 = 1000;

/// How long an HTTP refusal may take to leave.
const REFUSAL_LIMIT: Duration = Duration::from_secs(1);

/// Serves one event stream from its request to its end. `places` are the connection's
/// admission places; the pending one is given back once the uid is bound.
pub(crate) async fn serve(req: Request, ctx: Arc<State>, places: Admitted) {
    let Request {
        mut io,
        head: Head {
            query,
            last_event_id,
            origin,
        },
    } = req;
    let cors = cors_headers(origin.as_deref());
    let (uid, since) = match identify(query.as_deref(), last_event_id.as_deref(), &ctx) {
        Ok(found) => found,
        Err((status, why)) => {
            info!(status, why, "event stream refused");
            let body = format!("{why}\n");
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n{cors}\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = write_raw(&mut io, head.as_bytes(), REFUSAL_LIMIT).await;
            return;
        }
    };
    let binding = ctx.registry.bind_as(&uid, Mode::V1 { since });
    drop(places.pending);
    debug!(uid = %crate::logsafe::escaped(binding.uid()), "event stream bound");
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
         X-Accel-Buffering: no\r\n{cors}Connection: close\r\n\r\nretry: {RETRY_MS}\n\n"
    );
    let stall = ctx.config.ping_interval + ctx.config.pong_timeout;
    if write_raw(&mut io, head.as_bytes(), stall).await.is_err() {
        return;
    }
    let end = stream(&mut io, &binding, &ctx).await;
    debug!(uid = %crate::logsafe::escaped(&uid), end, "event stream closed");
}

/// `Access-Control-Allow-Origin` for the request's Origin (it passed the allow-list).
fn cors_headers(origin: Option<&str>) -> String {
    match origin {
        Some(o) => format!("Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n"),
        None => String::new(),
    }
}

/// The uid (from `?uid=`, or the `sub` of `?token=` with a JWT secret) and the resume
/// point (`Last-Event-ID`, else `?since=`); or the HTTP status and reason.
fn identify(
    query: Option<&str>,
    last_event_id: Option<&str>,
    ctx: &State,
) -> Result<(String, Option<Position>), (&'static str, String)> {
    let raw = query.unwrap_or_default().as_bytes();
    let param =
        |name| crate::urlencoded::param(raw, name).map(|v| String::from_utf8(v).map_err(|_| name));
    let bad = |why: &str| ("400 Bad Request", why.to_owned());
    let max_uid = ctx.config.max_uid_bytes;
    let uid = match &ctx.settings().jwt_secret {
        Some(secret) => {
            let token = param("token")
                .ok_or_else(|| ("401 Unauthorized", "a token is required (?token=)".into()))?
                .map_err(|_| bad("token is not UTF-8"))?;
            secret
                .verify(&token, std::time::SystemTime::now())
                .map_err(|e| {
                    ctx.metrics.incr(Metric::RefusedToken);
                    ("403 Forbidden", e.to_string())
                })?
        }
        None => param("uid")
            .ok_or_else(|| bad("a uid is required (?uid=)"))?
            .map_err(|_| bad("uid is not UTF-8"))?,
    };
    if uid.is_empty() {
        return Err(bad("empty uid"));
    }
    if uid.len() > max_uid {
        return Err(bad(&format!("uid longer than {max_uid} bytes")));
    }
    let since = match last_event_id
        .map(str::to_owned)
        .or(param("since").and_then(Result::ok))
    {
        None => None,
        // EventSource sends an empty Last-Event-ID before the first id.
        Some(s) if s.is_empty() => None,
        Some(s) => Some(
            Position::parse(&s)
                .ok_or_else(|| bad("bad Last-Event-ID or since (want EPOCH:SEQ)"))?,
        ),
    };
    Ok((uid, since))
}

/// The bound stream's loop: events out, heartbeats, the peer's close. Returns why it
/// ended.
async fn stream(
    io: &mut Transport,
    binding: &crate::registry::Binding,
    ctx: &State,
) -> &'static str {
    let cfg = &ctx.config;
    let outbox = binding.outbox();
    let stall = cfg.ping_interval + cfg.pong_timeout;
    let mut batch = Vec::new();
    let mut out = Vec::new();
    let mut epoch = 0u64;
    let heartbeat = sleep(cfg.ping_interval);
    tokio::pin!(heartbeat);
    let stop = ctx.ws_stop.cancelled();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => {
                // Deliver what was already accepted, then end the response.
                if outbox.try_recv(&mut batch).is_ok() && !batch.is_empty() {
                    encode(&batch, &mut epoch, &mut out);
                    let _ = timeout(cfg.shutdown_timeout, write_raw(io, &out, stall)).await;
                }
                return "shutdown";
            }
            r = outbox.recv(&mut batch) => {
                if let Err(notice) = r {
                    // Kicked or evicted: say why (an EventSource reconnects by itself;
                    // an app can listen for `close` and stop it).
                    out.clear();
                    close_event(&notice, &mut out);
                    let _ = write_raw(io, &out, Duration::from_secs(1)).await;
                    return "closed";
                }
                encode(&batch, &mut epoch, &mut out);
                // A stuck reader must not pin the binding: its queue filling up (the
                // slow-consumer policy closes it) ends the stream at once.
                tokio::select! {
                    r = write_raw(io, &out, stall) => if r.is_err() {
                        return "write failed or stalled";
                    },
                    _ = outbox.closed() => return "evicted",
                }
                binding.written(&mut batch);
                heartbeat.as_mut().reset(Instant::now() + cfg.ping_interval);
            }
            r = io.readable() => {
                if r.is_err() {
                    return "socket error";
                }
                // Nothing is expected from the client; what it sends is dropped.
                let mut sink = [0u8; 512];
                match io.try_read(&mut sink) {
                    Ok(0) => return "client closed",
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return "socket error",
                }
            }
            () = &mut heartbeat => {
                // A comment line: keeps proxies from timing the stream out, and a dead
                // peer shows as a failed or stalled write.
                if write_raw(io, b":\n\n", stall).await.is_err() {
                    return "heartbeat failed or stalled";
                }
                heartbeat.as_mut().reset(Instant::now() + cfg.ping_interval);
            }
        }
    }
}

/// Appends `batch` as events to `out` (cleared first): a message of the uid's history as
/// `id: EPOCH:SEQ` + `data:`, an unnumbered one (`/broadcast`) as `data:` alone, the
/// status frame as `event: status` (it also tells the epoch the ids carry).
fn encode(batch: &[Payload], epoch: &mut u64, out: &mut Vec<u8>) {
    out.clear();
    for item in batch {
        let text = item.as_bytes();
        match item.seq() {
            RAW => {
                // `s KIND EPOCH:SEQ`, from the registry.
                let status = text.strip_prefix(b"s ").unwrap_or(text);
                if let Some(at) = std::str::from_utf8(status)
                    .ok()
                    .and_then(|s| s.rsplit(' ').next())
                    .and_then(Position::parse)
                {
                    *epoch = at.epoch;
                }
                out.extend_from_slice(b"event: status\n");
                data(status, out);
            }
            UNNUMBERED => data(text, out),
            seq => {
                out.extend_from_slice(
                    format!("id: {}\n", Position { epoch: *epoch, seq }).as_bytes(),
                );
                data(text, out);
            }
        }
    }
}

/// `data: LINE` lines and the blank line that ends the event. A CR would end an SSE
/// line, so a payload's CRs become line breaks (the client reads them as LF); JSON never
/// holds a raw CR.
fn data(text: &[u8], out: &mut Vec<u8>) {
    for line in text.split(|&b| b == b'\r' || b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// `event: close` with the close code and reason a WebSocket would have got.
fn close_event(notice: &CloseNotice, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: close\n");
    data(format!("{} {}", notice.code, notice.reason).as_bytes(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events() {
        let batch = vec![
            Payload::from("s new 00000000000000ab:3".to_owned()).numbered(RAW),
            Payload::from(r#"{"uid":"u","n":4}"#.to_owned()).numbered(4),
            Payload::from("all\rof us".to_owned()),
        ];
        let mut epoch = 0;
        let mut out = Vec::new();
        encode(&batch, &mut epoch, &mut out);
        assert_eq!(epoch, 0xab);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: status\ndata: new 00000000000000ab:3\n\n\
             id: 00000000000000ab:4\ndata: {\"uid\":\"u\",\"n\":4}\n\n\
             data: all\ndata: of us\n\n"
        );
    }
}

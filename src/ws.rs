//! The browser side: handshake, uid bind, then one `select!` loop per socket that writes the
//! outbox, reads (and ignores) frames, pings, and watches for shutdown.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Utf8Bytes};
use tracing::{debug, info, trace, warn};

use crate::frames::{
    FrameError, FrameReader, Incoming, Progress, close_frame, control_frame, try_write, write_raw,
};
use crate::limited::Limited;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::CloseNotice;
use crate::server::Context;

/// A browser socket after the upgrade: the bare TCP stream and its frame reader.
/// (tungstenite does the HTTP upgrade only; see `frames.rs` for why.)
struct Ws {
    tcp: TcpStream,
    reader: FrameReader,
    /// Largest message the browser may send.
    max_in: usize,
}

impl Ws {
    async fn next(&mut self) -> Result<Incoming, FrameError> {
        self.reader.next(&self.tcp, self.max_in).await
    }
}

/// How long a close frame may take to leave; the peer may be the reason we are closing.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The tungstenite settings for the handshake (the only part tungstenite runs): small
/// buffers, since nothing but the upgrade request goes through it.
pub(crate) fn ws_config(max_message_bytes: usize, max_uid_bytes: usize) -> WebSocketConfig {
    let max_in = max_message_bytes.max(max_uid_bytes);
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(0)
        .max_message_size(Some(max_in))
        .max_frame_size(Some(max_in))
}

/// Why a bound connection ended; logged once at debug.
#[derive(Debug)]
enum End {
    PeerClosed(Option<u16>),
    PeerError(FrameError),
    PongTimeout,
    WriteStalled,
    Closed(CloseNotice),
    Shutdown,
}

/// Serves one browser connection from TCP accept to close.
pub(crate) async fn serve(stream: TcpStream, ctx: Arc<Context>) {
    let deadline = Instant::now() + ctx.config.bind_timeout;
    let mut query_token = None;
    let origins = ctx.config.allowed_origins.as_deref();
    // The callback's signature (and its large error type) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| {
        if let Some(allowed) = origins
            && let Some(origin) = req.headers().get("origin")
            && !allowed
                .iter()
                .any(|a| a.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
        {
            info!(origin = ?origin, "handshake refused: origin not allowed");
            return Err(http_error(StatusCode::FORBIDDEN, "origin not allowed"));
        }
        query_token = req.uri().query().and_then(token_param);
        Ok(resp)
    };
    // Boxed: the handshake's state is large and short-lived; inline, it would size the
    // task of every idle connection for its whole life.
    let stream = Limited::new(stream, ctx.config.max_handshake_bytes);
    let accept = Box::pin(tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        check,
        Some(ctx.ws_config),
    ));
    let mut ws = tokio::select! {
        r = timeout_at(deadline, accept) => match r {
            Ok(Ok(ws)) => Ws {
                // A client must wait for the 101 before sending frames, so tungstenite
                // holds no input here; from now on frames are ours.
                tcp: ws.into_inner().into_tcp(),
                reader: FrameReader::default(),
                max_in: ctx.config.max_message_bytes.max(ctx.config.max_uid_bytes),
            },
            Ok(Err(WsError::Io(err))) if err.kind() == std::io::ErrorKind::InvalidData => {
                return info!(%err, "handshake refused");
            }
            Ok(Err(err)) => return debug!(%err, "handshake failed"),
            Err(_) => return debug!("handshake timed out"),
        },
        () = ctx.ws_stop.cancelled() => return,
    };
    let uid = tokio::select! {
        r = timeout_at(deadline, Box::pin(identify(&mut ws, query_token, &ctx))) => match r {
            Ok(Ok(uid)) => uid,
            Ok(Err(Some(notice))) => {
                info!(code = notice.code, reason = %notice.reason, "bind refused");
                return Box::pin(close(&mut ws, &notice)).await;
            }
            Ok(Err(None)) => return debug!("closed before binding"),
            Err(_) => {
                debug!("no uid within bind timeout");
                return Box::pin(close(&mut ws, &CloseNotice::BIND_TIMEOUT)).await;
            }
        },
        () = ctx.ws_stop.cancelled() => return Box::pin(close(&mut ws, &CloseNotice::SHUTDOWN)).await,
    };

    let binding = ctx.registry.bind(&uid);
    debug!(uid = binding.uid(), "bound");
    let end = session(&mut ws, binding.outbox(), &ctx).await;
    // Leave the map before the (possibly slow) closing handshake, so pushes fail at once.
    drop(binding);
    match &end {
        End::Closed(notice) => Box::pin(close(&mut ws, notice)).await,
        End::Shutdown => Box::pin(close(&mut ws, &CloseNotice::SHUTDOWN)).await,
        End::PeerClosed(code) => {
            // Answer the close, echoing its code (RFC 6455 §5.5.1); then the socket closes.
            let payload = code.map(u16::to_be_bytes);
            let reply = control_frame(0x8, payload.as_ref().map_or(&[][..], |p| &p[..]));
            let _ = Box::pin(write_raw(&ws.tcp, &reply, CLOSE_GRACE)).await;
        }
        End::PeerError(err) => debug!(%err, "connection error"),
        End::PongTimeout | End::WriteStalled => {}
    }
    debug!(%uid, ?end, "closed");
}

/// Answers a connection over the per-address cap with HTTP 429 and closes it.
pub(crate) async fn refuse_busy_address(mut stream: TcpStream, ip: IpAddr, ctx: &Context) {
    Metrics::incr(&ctx.registry.metrics().refused_per_ip);
    debug!(%ip, "refused: too many connections from this address");
    if ctx.registry.metrics().should_warn_refusal() {
        warn!(%ip, limit = ctx.config.max_connections_per_ip, "refusing connections: too many from one address");
    }
    let body = "too many connections from your address\n";
    let resp = format!(
        "HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = timeout(CLOSE_GRACE, stream.write_all(resp.as_bytes())).await;
}

fn http_error(status: StatusCode, why: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(why.to_owned()));
    *resp.status_mut() = status;
    resp
}

/// The `token` parameter of a query string, percent-decoded.
fn token_param(query: &str) -> Option<String> {
    let raw = query.split('&').find_map(|kv| kv.strip_prefix("token="))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Decides who this connection is: the uid from its first frame, or, with a JWT secret,
/// the `sub` of a valid token from the URL (`?token=`) or the first frame.
/// `Err(None)` means the peer went away; `Err(Some)` says how to refuse it.
async fn identify(
    ws: &mut Ws,
    query_token: Option<String>,
    ctx: &Context,
) -> Result<String, Option<CloseNotice>> {
    let max_uid = ctx.config.max_uid_bytes;
    let Some(secret) = &ctx.config.jwt_secret else {
        return first_text(ws, max_uid).await;
    };
    let token = match query_token {
        Some(token) => token,
        None => first_text(ws, ws.max_in).await?,
    };
    let uid = secret
        .verify(&token, std::time::SystemTime::now())
        .map_err(|e| Some(CloseNotice::token(e)))?;
    if uid.len() > max_uid {
        return Err(Some(CloseNotice::uid_too_long(max_uid)));
    }
    Ok(uid)
}

/// Reads the first data frame: a text frame of at most `max` bytes, exactly as sent.
async fn first_text(ws: &mut Ws, max: usize) -> Result<String, Option<CloseNotice>> {
    loop {
        match ws.next().await {
            Ok(Incoming::Text(uid)) if uid.is_empty() => return Err(Some(CloseNotice::EMPTY_UID)),
            Ok(Incoming::Text(uid)) if uid.len() > max => {
                return Err(Some(CloseNotice::uid_too_long(max)));
            }
            Ok(Incoming::Text(uid)) => return Ok(uid),
            Ok(Incoming::Binary(_)) => return Err(Some(CloseNotice::BINARY_UID)),
            Ok(Incoming::Close(_)) => return Err(None),
            Ok(Incoming::Ping(payload)) => {
                if write_raw(&ws.tcp, &control_frame(0xA, &payload), CLOSE_GRACE)
                    .await
                    .is_err()
                {
                    return Err(None);
                }
            }
            Ok(Incoming::Pong) => {}
            Err(FrameError::TooBig) => return Err(Some(CloseNotice::uid_too_long(max))),
            Err(err) => {
                debug!(%err, "error before bind");
                return Err(refusal(&err));
            }
        }
    }
}

/// The close notice for a frame error the peer can still hear about.
fn refusal(err: &FrameError) -> Option<CloseNotice> {
    match err {
        FrameError::Protocol(why) => Some(CloseNotice {
            code: 1002,
            reason: std::borrow::Cow::Borrowed(why),
        }),
        FrameError::TooBig => Some(CloseNotice::MESSAGE_TOO_BIG),
        FrameError::BadUtf8 => Some(CloseNotice::BAD_UTF8),
        FrameError::Io(_) | FrameError::Eof => None,
    }
}

/// The bound connection's loop. Returns why it ended; the caller closes.
async fn session(ws: &mut Ws, outbox: &Outbox, ctx: &Context) -> End {
    let cfg = &ctx.config;
    let metrics = ctx.registry.metrics();
    let mut batch = Vec::new();
    let timer = sleep(cfg.ping_interval);
    tokio::pin!(timer);
    // Made once: a fresh `cancelled()` per wake would join and leave the token's waiter
    // list, one lock shared by every connection, twice per delivered message.
    let stop = ctx.ws_stop.cancelled();
    tokio::pin!(stop);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            biased;
            () = &mut stop => {
                // Deliver what was already accepted before saying goodbye.
                if let Err(notice) = outbox.try_recv(&mut batch) {
                    return End::Closed(notice);
                }
                let mut at = Progress::default();
                let write = write_all(ws, &batch, &mut at);
                let drained = Box::pin(timeout(cfg.shutdown_timeout, write)).await;
                metrics.add_out(&batch[..at.frame]);
                return match drained {
                    Ok(Ok(())) => End::Shutdown,
                    Ok(Err(err)) => End::PeerError(FrameError::Io(err)),
                    Err(_) => End::WriteStalled,
                };
            }
            r = outbox.recv(&mut batch) => {
                if let Err(notice) = r {
                    return End::Closed(notice);
                }
                // Only `deliver`'s slow path is boxed: an idle connection's task is sized
                // by the states it can sleep in, and a stuck write is not one of them.
                if let Err(end) = deliver(ws, &batch, outbox, ctx).await {
                    return end;
                }
                metrics.add_out(&batch);
                batch.clear();
            }
            frame = ws.reader.next(&ws.tcp, ws.max_in) => {
                if awaiting_pong {
                    awaiting_pong = false;
                    timer.as_mut().reset(Instant::now() + cfg.ping_interval);
                }
                match frame {
                    Ok(Incoming::Close(code)) => return End::PeerClosed(code),
                    Ok(Incoming::Text(t)) => trace!(len = t.len(), "ignoring text message"),
                    Ok(Incoming::Binary(len)) => trace!(len, "ignoring binary message"),
                    Ok(Incoming::Pong) => {}
                    Ok(Incoming::Ping(payload)) => {
                        let pong = control_frame(0xA, &payload);
                        if let Err(err) = Box::pin(write_raw(&ws.tcp, &pong, cfg.pong_timeout)).await {
                            return End::PeerError(FrameError::Io(err));
                        }
                    }
                    Err(err) => match refusal(&err) {
                        Some(notice) => return End::Closed(notice),
                        None => return End::PeerError(err),
                    },
                }
            }
            () = &mut timer => {
                if awaiting_pong {
                    return End::PongTimeout;
                }
                let ping = control_frame(0x9, &[]);
                match Box::pin(write_raw(&ws.tcp, &ping, cfg.pong_timeout)).await {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::TimedOut => return End::WriteStalled,
                    Err(err) => return End::PeerError(FrameError::Io(err)),
                }
                awaiting_pong = true;
                timer.as_mut().reset(Instant::now() + cfg.pong_timeout);
            }
        }
    }
}

/// Writes a batch of text frames. The common case (the socket takes it all at once)
/// costs one `writev` and nothing else: no timer, no allocation for a future.
async fn deliver(
    ws: &mut Ws,
    batch: &[Utf8Bytes],
    outbox: &Outbox,
    ctx: &Context,
) -> Result<(), End> {
    let mut at = Progress::default();
    match try_write(&ws.tcp, batch, &mut at) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(err) => return Err(End::PeerError(FrameError::Io(err))),
    }
    Box::pin(write_guarded(ws, batch, &mut at, outbox, ctx)).await
}

/// The slow path: the socket is full. A stuck socket must not pin this task, so the
/// queue filling up (eviction) or a write that makes no progress for a ping period ends
/// it.
async fn write_guarded(
    ws: &mut Ws,
    batch: &[Utf8Bytes],
    at: &mut Progress,
    outbox: &Outbox,
    ctx: &Context,
) -> Result<(), End> {
    let stall = ctx.config.ping_interval + ctx.config.pong_timeout;
    let write = write_all(ws, batch, at);
    tokio::pin!(write);
    tokio::select! {
        r = &mut write => r.map_err(|e| End::PeerError(FrameError::Io(e))),
        notice = outbox.closed() => {
            // Let the batch in flight finish (briefly) so the close frame lands on a
            // frame boundary; a socket too stuck for that is just dropped.
            match timeout(CLOSE_GRACE, &mut write).await {
                Ok(Ok(())) => Err(End::Closed(notice)),
                Ok(Err(err)) => Err(End::PeerError(FrameError::Io(err))),
                Err(_) => Err(End::WriteStalled),
            }
        }
        () = sleep(stall) => Err(End::WriteStalled),
    }
}

/// Writes the rest of `batch`, waiting for the socket as needed.
async fn write_all(ws: &mut Ws, batch: &[Utf8Bytes], at: &mut Progress) -> std::io::Result<()> {
    while !try_write(&ws.tcp, batch, at)? {
        ws.tcp.writable().await?;
    }
    Ok(())
}

/// Sends a close frame with `notice`, waiting at most [`CLOSE_GRACE`] for it to leave
/// and for the peer's answer (so it sees a clean close rather than a reset).
async fn close(ws: &mut Ws, notice: &CloseNotice) {
    let deadline = Instant::now() + CLOSE_GRACE;
    let frame = close_frame(notice.code, &notice.reason);
    if write_raw(&ws.tcp, &frame, CLOSE_GRACE).await.is_err() {
        return;
    }
    let _ = timeout_at(deadline, async {
        while let Ok(msg) = ws.next().await {
            if let Incoming::Close(_) = msg {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::token_param;

    #[test]
    fn query_token() {
        assert_eq!(token_param("a=1&token=x.y.z"), Some("x.y.z".into()));
        assert_eq!(token_param("token=a%2Eb%zz%4"), Some("a.b%zz%4".into()));
        assert_eq!(token_param("tokens=1"), None);
    }
}

//! The browser side: handshake, uid bind, then one `select!` loop per socket that writes the
//! outbox, reads (and ignores) frames, pings, and watches for shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};
use tracing::{debug, trace};

use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::CloseNotice;
use crate::server::Context;

type Ws = WebSocketStream<TcpStream>;

/// How long a close frame may take to leave; the peer may be the reason we are closing.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Read buffer per socket. tungstenite zero-fills and keeps it for the socket's life, and
/// browsers only ever send a uid (or a token), so a small one costs nothing in speed and
/// saves ~124 KiB per connection over the 128 KiB default.
const READ_BUFFER: usize = 1024;

/// Written frames are batched up to this size before a `write` syscall; `flush` after each
/// outbox batch sends the rest.
const WRITE_BUFFER: usize = 8 * 1024;

/// The tungstenite settings for a browser socket, bounded by what browsers may send.
pub(crate) fn ws_config(max_uid_bytes: usize) -> WebSocketConfig {
    let max_in = max_uid_bytes.max(4096);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max_in))
        .max_frame_size(Some(max_in))
}

/// Why a bound connection ended; logged once at debug.
#[derive(Debug)]
enum End {
    PeerClosed,
    PeerError(WsError),
    PongTimeout,
    WriteStalled,
    Closed(CloseNotice),
    Shutdown,
}

/// Serves one browser connection from TCP accept to close.
pub(crate) async fn serve(stream: TcpStream, ctx: Arc<Context>) {
    let deadline = Instant::now() + ctx.config.bind_timeout;
    let accept = tokio_tungstenite::accept_async_with_config(stream, Some(ctx.ws_config));
    let mut ws = tokio::select! {
        r = timeout_at(deadline, accept) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(err)) => return debug!(%err, "handshake failed"),
            Err(_) => return debug!("handshake timed out"),
        },
        () = ctx.ws_stop.cancelled() => return,
    };
    let uid = tokio::select! {
        r = timeout_at(deadline, first_uid(&mut ws, ctx.config.max_uid_bytes)) => match r {
            Ok(Ok(uid)) => uid,
            Ok(Err(Some(notice))) => {
                debug!(code = notice.code, reason = %notice.reason, "bind refused");
                return close(&mut ws, &notice).await;
            }
            Ok(Err(None)) => return debug!("closed before binding"),
            Err(_) => {
                debug!("no uid within bind timeout");
                return close(&mut ws, &CloseNotice::BIND_TIMEOUT).await;
            }
        },
        () = ctx.ws_stop.cancelled() => return close(&mut ws, &CloseNotice::SHUTDOWN).await,
    };

    let binding = ctx.registry.bind(&uid);
    debug!(uid = binding.uid(), "bound");
    let end = session(&mut ws, binding.outbox(), &ctx).await;
    // Leave the map before the (possibly slow) closing handshake, so pushes fail at once.
    drop(binding);
    match &end {
        End::Closed(notice) => close(&mut ws, notice).await,
        End::Shutdown => close(&mut ws, &CloseNotice::SHUTDOWN).await,
        End::PeerClosed => {
            // tungstenite queued the close reply; let it go out.
            let _ = timeout(CLOSE_GRACE, ws.flush()).await;
        }
        End::PeerError(err) => debug!(%err, "connection error"),
        End::PongTimeout | End::WriteStalled => {}
    }
    debug!(%uid, ?end, "closed");
}

/// Reads the first data frame: a text frame is the uid, exactly as sent.
/// `Err(None)` means the peer went away; `Err(Some)` says how to refuse it.
async fn first_uid(ws: &mut Ws, max: usize) -> Result<String, Option<CloseNotice>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(uid))) if uid.is_empty() => {
                return Err(Some(CloseNotice::EMPTY_UID));
            }
            Some(Ok(Message::Text(uid))) if uid.len() > max => {
                return Err(Some(CloseNotice::uid_too_long(max)));
            }
            Some(Ok(Message::Text(uid))) => return Ok(uid.as_str().to_owned()),
            Some(Ok(Message::Binary(_))) => return Err(Some(CloseNotice::BINARY_UID)),
            Some(Ok(Message::Close(_))) | None => return Err(None),
            Some(Ok(_)) => continue,
            Some(Err(WsError::Capacity(_))) => {
                return Err(Some(CloseNotice::uid_too_long(max)));
            }
            Some(Err(err)) => {
                debug!(%err, "error before bind");
                return Err(None);
            }
        }
    }
}

/// The bound connection's loop. Returns why it ended; the caller closes.
async fn session(ws: &mut Ws, outbox: &Outbox, ctx: &Context) -> End {
    let cfg = &ctx.config;
    let metrics = ctx.registry.metrics();
    let mut batch = Vec::new();
    let timer = sleep(cfg.ping_interval);
    tokio::pin!(timer);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            biased;
            () = ctx.ws_stop.cancelled() => {
                // Deliver what was already accepted before saying goodbye.
                if let Err(notice) = outbox.try_recv(&mut batch) {
                    return End::Closed(notice);
                }
                let _ = timeout(cfg.shutdown_timeout, write_batch(ws, &mut batch, metrics)).await;
                return End::Shutdown;
            }
            r = outbox.recv(&mut batch) => {
                if let Err(notice) = r {
                    return End::Closed(notice);
                }
                // A stuck socket must not pin this task: the queue filling up (eviction)
                // or a write that makes no progress for a ping period ends it.
                tokio::select! {
                    r = write_batch(ws, &mut batch, metrics) => {
                        if let Err(err) = r {
                            return End::PeerError(err);
                        }
                    }
                    notice = outbox.closed() => return End::Closed(notice),
                    () = sleep(cfg.ping_interval + cfg.pong_timeout) => return End::WriteStalled,
                }
            }
            frame = ws.next() => {
                if awaiting_pong {
                    awaiting_pong = false;
                    timer.as_mut().reset(Instant::now() + cfg.ping_interval);
                }
                match frame {
                    Some(Ok(Message::Close(_))) | None => return End::PeerClosed,
                    Some(Ok(Message::Text(t))) => trace!(len = t.len(), "ignoring text frame"),
                    Some(Ok(Message::Binary(b))) => trace!(len = b.len(), "ignoring binary frame"),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return End::PeerError(err),
                }
            }
            () = &mut timer => {
                if awaiting_pong {
                    return End::PongTimeout;
                }
                let ping = ws.send(Message::Ping(Bytes::new()));
                match timeout(cfg.pong_timeout, ping).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => return End::PeerError(err),
                    Err(_) => return End::WriteStalled,
                }
                awaiting_pong = true;
                timer.as_mut().reset(Instant::now() + cfg.pong_timeout);
            }
        }
    }
}

/// Writes every message of `batch` and flushes once.
async fn write_batch(
    ws: &mut Ws,
    batch: &mut Vec<Utf8Bytes>,
    metrics: &Metrics,
) -> Result<(), WsError> {
    let (mut frames, mut bytes) = (0, 0);
    for msg in batch.drain(..) {
        frames += 1;
        bytes += msg.len() as u64;
        ws.feed(Message::Text(msg)).await?;
    }
    ws.flush().await?;
    metrics.add_out(frames, bytes);
    Ok(())
}

/// Sends a close frame with `notice`, waiting at most [`CLOSE_GRACE`] for it to leave.
async fn close(ws: &mut Ws, notice: &CloseNotice) {
    let frame = CloseFrame {
        code: CloseCode::from(notice.code),
        reason: Utf8Bytes::from(notice.reason.as_ref()),
    };
    let deadline = Instant::now() + CLOSE_GRACE;
    if timeout_at(deadline, ws.close(Some(frame))).await.is_err() {
        return;
    }
    // Give the peer a moment to answer, so it sees a clean close rather than a reset.
    let _ = timeout_at(deadline, async { while ws.next().await.is_some() {} }).await;
}

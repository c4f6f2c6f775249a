//! The browser side: handshake, uid bind, then one `select!` loop per socket that writes the
//! outbox, reads (and ignores) frames, pings, and watches for shutdown. A request for
//! `/app/{key}` with Pusher apps configured is a Pusher connection instead ([`pusher`]).

mod pusher;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tracing::{debug, info, trace, warn};

use crate::access::{Admitted, Refused};
use crate::events::ConnEvents;
use crate::frames::{
    CLOSE, FrameError, FrameReader, Incoming, PING, PONG, Progress, close_frame, control_frame,
    try_write, write_raw,
};
use crate::handshake::{self, HandshakeError, HttpRefusal, Opened, Policy};
use crate::metrics::Metric;
use crate::outbox::Outbox;
use crate::proxied::{self, Failed, Proxied};
use crate::registry::Binding;
use crate::state::State;
use crate::transport::Transport;
use crate::wire::envelope::Mode;
use crate::wire::{CloseNotice, Payload};

mod greeted;

/// A browser socket after the upgrade: the socket (plain or TLS) and its frame reader.
/// (tungstenite does the HTTP upgrade only; see `frames.rs` for why.)
struct Ws {
    tcp: Transport,
    reader: FrameReader,
    /// Largest message the browser may send.
    max_in: usize,
    /// Protocol v1: frames carry a prefix (`docs/protocol.md`).
    enveloped: bool,
}

impl Ws {
    async fn next(&mut self) -> Result<Incoming, FrameError> {
        self.reader.next(&mut self.tcp, self.max_in).await
    }
}

/// How long a close frame may take to leave; the peer may be the reason we are closing.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why a connection ended, bound or not; logged once at debug, and it decides how the
/// connection is closed ([`finish`]).
#[derive(Debug)]
enum End {
    PeerClosed(Option<u16>),
    PeerError(FrameError),
    PongTimeout,
    WriteStalled,
    Closed(CloseNotice),
    Shutdown,
}

/// Serves one browser connection from TCP accept to close. `places` are this
/// connection's in [`crate::access::Admission`]: the pending one is given back once the
/// uid is bound, the other at close. `proxied`: from a trusted proxy, so the places are
/// taken for its client once the request head names it.
///
/// The task holds this future for the connection's life, sized by its largest state: so
/// everything between the client's first bytes and its bind is boxed ([`open`]), allocated
/// only once there is something to read and freed at the bind.
#[allow(clippy::manual_async_fn)] // measured: see the comment
pub(crate) fn serve(
    stream: TcpStream,
    ctx: Arc<State>,
    mut places: Admitted,
    proxied: Option<Proxied>,
    greeted: bool,
) -> impl Future<Output = ()> + Send {
    // Not an `async fn`: that moves each argument into a local of its own and keeps both
    // (~200 bytes in every connection's task); a block uses what it captured in place.
    async move {
        let deadline = Instant::now() + ctx.config.bind_timeout;
        // Until the client sends something, the task is all it costs (`handshake.rs`); so is
        // a TLS handshake, past the session itself.
        let io = tokio::select! {
            r = timeout_at(deadline, handshake::connect(stream, ctx.tls.as_ref())) => match r {
                Ok(Ok(io)) => io,
                Ok(Err(err)) => return debug!(error = ?err.to_string(), "handshake failed"),
                Err(_) => return debug!("handshake timed out"),
            },
            () = ctx.ws_stop.cancelled() => return,
        };
        let opened = open(io, &ctx, &mut places, proxied, deadline, greeted);
        let (mut ws, uid, mode, mut events) = match Box::pin(opened).await {
            Opening::Bound(ws, uid, mode, events) => (ws, uid, mode, events),
            // Boxed: a WebSocket connection's task must not keep room for an event stream.
            Opening::EventStream(request) => {
                return Box::pin(crate::sse::serve(request, ctx, places)).await;
            }
            // Boxed, as the event stream: a Pusher connection's state is its own.
            Opening::Pusher(ws, path, query, origin) => {
                return Box::pin(pusher::serve(ws, path, query, origin, ctx, places)).await;
            }
            // Boxed: the greeted mode's state is not every connection's.
            Opening::Greeted(ws, mode) => {
                return Box::pin(greeted::serve(ws, mode, ctx, places)).await;
            }
            Opening::Ended => return,
        };

        let binding = ctx.registry.bind_as(&uid, mode);
        events.bound(&ctx.events, &binding.uid_shared());
        ws.enveloped = binding.enveloped();
        if let Some(socket) = ws.tcp.through() {
            binding.outbox().attach(socket, ws.enveloped);
        }
        drop(places.pending);
        debug!(uid = %crate::logsafe::escaped(binding.uid()), "bound");
        let end = session(&mut ws, &binding, &ctx, &mut events).await;
        let half_written = binding.outbox().detach();
        // Leave the map before the (possibly slow) closing handshake, so pushes fail at once.
        let bound = binding.uid_shared();
        drop(binding);
        closed(events, Some(bound), &end, &ctx);
        debug!(uid = %crate::logsafe::escaped(&uid), ?end, "closed");
        if let Some((msg, sent)) = half_written
            && closes_with_frame(&end)
        {
            // A push wrote part of this frame itself: the close frame goes after the rest.
            let mut at = Progress {
                frame: 0,
                offset: sent,
            };
            let rest = write_all(&mut ws, std::slice::from_ref(&msg), &mut at);
            if !matches!(Box::pin(timeout(CLOSE_GRACE, rest)).await, Ok(Ok(()))) {
                return;
            }
        }
        finish(&mut ws, end).await;
    }
}

/// What a connection became by its bind deadline.
enum Opening {
    /// A WebSocket, with its uid, protocol mode, and events.
    Bound(Ws, String, Mode, ConnEvents),
    /// An event stream (`sse.rs` binds it).
    EventStream(crate::sse::Request),
    /// A Pusher connection at `/app/{key}` (`ws/pusher.rs`), with its path and query.
    Pusher(Ws, String, Option<String>, Option<String>),
    /// A WebSocket on a greeted listener (`--gateway-ws-listen`): it waits to be bound,
    /// speaking the protocol its URL asks for (`?pushwire=1`).
    Greeted(Ws, Mode),
    /// Refused, failed, timed out or shut down: answered (or not) as it should be.
    Ended,
}

/// From the client's first bytes (on `io`, see [`handshake::connect`]) to its bind, by
/// `deadline`: the upgrade (or an event stream, or a refusal), then the uid.
async fn open(
    io: Transport,
    ctx: &State,
    places: &mut Admitted,
    proxied: Option<Proxied>,
    deadline: Instant,
    greeted: bool,
) -> Opening {
    let settings = ctx.settings();
    let policy = Policy {
        max_bytes: ctx.config.max_handshake_bytes,
        allowed_origins: settings.allowed_origins.as_deref(),
        max_in: ctx.config.max_in(),
    };
    let trusted = &settings.trusted_proxies;
    let upgraded = tokio::select! {
        r = timeout_at(deadline, proxied::upgrade(io, &policy, proxied, trusted, places)) => match r {
            Ok(Ok(Opened::WebSocket(upgraded))) => upgraded,
            Ok(Ok(Opened::EventStream(request))) => return Opening::EventStream(request),
            // Boxed: this future is what a handshaking connection holds.
            Ok(Err(Failed::Refused(stream, why))) => {
                Box::pin(refuse_on(Some(stream), why, ctx)).await;
                return Opening::Ended;
            }
            Ok(Err(Failed::Handshake(err @ (HandshakeError::TooLarge | HandshakeError::Refused(_))))) => {
                if let HandshakeError::Refused(_) = err {
                    ctx.metrics.incr(Metric::RefusedOrigin);
                }
                info!(error = %err, "handshake refused");
                return Opening::Ended;
            }
            Ok(Err(Failed::Handshake(err))) => {
                debug!(error = ?err.to_string(), "handshake failed");
                return Opening::Ended;
            }
            Err(_) => {
                debug!("handshake timed out");
                return Opening::Ended;
            }
        },
        () = ctx.ws_stop.cancelled() => return Opening::Ended,
    };
    let mut ws = Ws {
        tcp: upgraded.tcp,
        reader: FrameReader::with_pending(upgraded.pending),
        max_in: ctx.config.max_in(),
        enveloped: false,
    };
    if ctx.config.pusher_apps.is_some() && upgraded.path.starts_with("/app/") {
        return Opening::Pusher(ws, upgraded.path, upgraded.query, upgraded.origin);
    }
    let mode = Mode::from_query(upgraded.query.as_deref());
    if greeted {
        return match mode {
            Ok(mode) => Opening::Greeted(ws, mode),
            Err(notice) => {
                info!(code = notice.code, reason = ?notice.reason, "greeted page refused");
                finish(&mut ws, End::Closed(notice)).await;
                Opening::Ended
            }
        };
    }
    let events = ConnEvents::open(&ctx.events);
    let identified = tokio::select! {
        r = timeout_at(deadline, Box::pin(identify(&mut ws, upgraded.query_token, ctx))) => match r {
            Ok(result) => result,
            Err(_) => Err(End::Closed(CloseNotice::BIND_TIMEOUT)),
        },
        () = ctx.ws_stop.cancelled() => Err(End::Shutdown),
    };
    match identified.and_then(|uid| mode.map(|m| (uid, m)).map_err(End::Closed)) {
        Ok((uid, mode)) => Opening::Bound(ws, uid, mode, events),
        Err(end) => {
            closed(events, None, &end, ctx);
            if let End::Closed(notice) = &end
                && *notice != CloseNotice::BIND_TIMEOUT
            {
                info!(code = notice.code, reason = ?notice.reason, "bind refused");
            }
            debug!(?end, "closed before binding");
            finish(&mut ws, end).await;
            Opening::Ended
        }
    }
}

/// The `close` event of a connection that ended so: the code the browser sees (1005 for
/// its close frame without one, 1006 where no close frame is exchanged), and why.
fn closed(events: ConnEvents, uid: Option<crate::wire::Uid>, end: &End, ctx: &State) {
    closed_as(events, uid, end, ctx, None);
}

/// [`closed`] of a connection the GatewayClient door named `client_id`.
fn closed_as(
    events: ConnEvents,
    uid: Option<crate::wire::Uid>,
    end: &End,
    ctx: &State,
    client_id: Option<&Arc<str>>,
) {
    let (code, reason) = match end {
        End::PeerClosed(code) => (code.unwrap_or(1005), None),
        End::PeerError(_) => (1006, Some("connection lost")),
        End::PongTimeout => (1006, Some("no pong")),
        End::WriteStalled => (1006, Some("write stalled")),
        End::Closed(notice) => (notice.code, Some(&*notice.reason)),
        End::Shutdown => (
            CloseNotice::SHUTDOWN.code,
            Some(&*CloseNotice::SHUTDOWN.reason),
        ),
    };
    events.closed_as(&ctx.events, uid, code, reason, client_id);
}

/// Whether [`finish`] writes a frame for `end`.
fn closes_with_frame(end: &End) -> bool {
    matches!(end, End::Closed(_) | End::Shutdown | End::PeerClosed(_))
}

/// Closes the connection as `end` requires: our close frame with its code, or the echo of
/// the peer's close (RFC 6455 §5.5.1), or nothing for a peer that is gone or stuck.
async fn finish(ws: &mut Ws, end: End) {
    match end {
        End::Closed(notice) => Box::pin(close(ws, &notice)).await,
        End::Shutdown => Box::pin(close(ws, &CloseNotice::SHUTDOWN)).await,
        End::PeerClosed(code) => {
            // Echo its code; the peer then closes TCP (or we do, on drop: nothing is
            // left unread, so no reset).
            let payload = code.map(u16::to_be_bytes);
            let reply = control_frame(CLOSE, payload.as_ref().map_or(&[][..], |p| &p[..]));
            let _ = Box::pin(write_raw(&mut ws.tcp, &reply, CLOSE_GRACE)).await;
        }
        End::PeerError(err) => debug!(%err, "connection error"),
        End::PongTimeout | End::WriteStalled => {}
    }
}

/// Answers a connection refused by [`crate::access::Admission`] with an HTTP error (429
/// per address, 503 when the server-wide pending budget is spent) and closes it.
pub(crate) async fn refuse(stream: TcpStream, why: Refused, ctx: &State) {
    // Over TLS an HTTP answer would first cost a TLS handshake, the very work the budget
    // is there to refuse: the connection is just closed.
    let stream = ctx
        .tls
        .is_none()
        .then(|| Transport::Plain(Arc::new(stream)));
    refuse_on(stream, why, ctx).await;
}

/// [`refuse`] on a socket past its TLS handshake (a trusted proxy's client over a cap), or
/// `None` to close without an answer.
async fn refuse_on(stream: Option<Transport>, why: Refused, ctx: &State) {
    let metrics = &ctx.metrics;
    let (status, body, limit) = match why {
        Refused::Connections => {
            metrics.incr(Metric::RefusedPerIp);
            (
                HttpRefusal::TooManyRequests,
                "too many connections from your address",
                ctx.config.max_connections_per_ip,
            )
        }
        Refused::PendingPerAddress => {
            metrics.incr(Metric::RefusedPending);
            (
                HttpRefusal::TooManyRequests,
                "too many handshakes in progress from your address",
                ctx.config.max_pending_per_ip,
            )
        }
        Refused::Pending => {
            metrics.incr(Metric::RefusedPending);
            (
                HttpRefusal::Unavailable,
                "too many handshakes in progress",
                ctx.config.max_pending_handshakes,
            )
        }
    };
    debug!(?why, "refused");
    if metrics.should_warn_refusal() {
        warn!(reason = body, limit, "refusing connections");
    }
    if let Some(stream) = stream {
        handshake::refuse(stream, status, body, CLOSE_GRACE).await;
    }
}

/// Decides who this connection is: the uid from its first frame, or, with a JWT secret,
/// the `sub` of a valid token from the URL (`?token=`) or the first frame.
async fn identify(ws: &mut Ws, query_token: Option<String>, ctx: &State) -> Result<String, End> {
    let max_uid = ctx.config.max_uid_bytes;
    // Read now, not at accept: a reload between the two applies to this bind.
    let settings = ctx.settings();
    let Some(secret) = &settings.jwt_secret else {
        return first_text(ws, max_uid).await;
    };
    let token = match query_token {
        Some(token) => token,
        None => first_text(ws, ws.max_in).await?,
    };
    let uid = secret
        .verify(&token, std::time::SystemTime::now())
        .map_err(|e| {
            ctx.metrics.incr(Metric::RefusedToken);
            End::Closed(CloseNotice::token(e))
        })?;
    if uid.len() > max_uid {
        return Err(End::Closed(CloseNotice::uid_too_long(max_uid)));
    }
    Ok(uid)
}

/// Reads the first data frame: a text frame of at most `max` bytes, exactly as sent.
async fn first_text(ws: &mut Ws, max: usize) -> Result<String, End> {
    loop {
        match ws.next().await {
            Ok(Incoming::Text(uid)) if uid.is_empty() => {
                return Err(End::Closed(CloseNotice::EMPTY_UID));
            }
            Ok(Incoming::Text(uid)) if uid.len() > max => {
                return Err(End::Closed(CloseNotice::uid_too_long(max)));
            }
            Ok(Incoming::Text(uid)) => return Ok(uid),
            Ok(Incoming::Binary(_)) => return Err(End::Closed(CloseNotice::BINARY_UID)),
            Ok(Incoming::Close(code)) => return Err(End::PeerClosed(code)),
            Ok(Incoming::Ping(payload)) => {
                if let Err(err) =
                    write_raw(&mut ws.tcp, &control_frame(PONG, &payload), CLOSE_GRACE).await
                {
                    return Err(End::PeerError(FrameError::Io(err)));
                }
            }
            Ok(Incoming::Pong) => {}
            Err(FrameError::TooBig) => return Err(End::Closed(CloseNotice::uid_too_long(max))),
            Err(err) => {
                return Err(match refusal(&err) {
                    Some(notice) => End::Closed(notice),
                    None => End::PeerError(err),
                });
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
async fn session(ws: &mut Ws, binding: &Binding, ctx: &State, events: &mut ConnEvents) -> End {
    let outbox = binding.outbox();
    let cfg = &ctx.config;
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
            () = &mut stop => return Box::pin(drain_for_shutdown(ws, outbox, &mut batch, ctx)).await,
            r = outbox.recv(&mut batch) => {
                let sent = match r {
                    Ok(sent) => sent,
                    Err(notice) => return End::Closed(notice),
                };
                // Only `deliver`'s slow path is boxed: an idle connection's task is sized
                // by the states it can sleep in, and a stuck write is not one of them.
                if let Err(end) = deliver(ws, &batch, sent, outbox, ctx).await {
                    return end;
                }
                binding.written(&mut batch);
            }
            frame = ws.reader.next(&mut ws.tcp, ws.max_in) => {
                if awaiting_pong {
                    awaiting_pong = false;
                    timer.as_mut().reset(Instant::now() + cfg.ping_interval);
                }
                match frame {
                    Ok(Incoming::Close(code)) => return End::PeerClosed(code),
                    Ok(Incoming::Text(t)) if binding.text(&t) => {}
                    Ok(Incoming::Text(t)) => {
                        if let Err(notice) = events.message(&ctx.events, binding.uid_ref(), &t) {
                            info!(code = notice.code, reason = %notice.reason, "closing a tab: message events over their bound");
                            return End::Closed(notice);
                        }
                    }
                    Ok(Incoming::Binary(len)) => trace!(len, "ignoring binary message"),
                    Ok(Incoming::Pong) => {}
                    Ok(Incoming::Ping(payload)) => {
                        let pong = control_frame(PONG, &payload);
                        let write = write_control(ws, &pong, &mut batch, binding, ctx);
                        if let Err(end) = Box::pin(write).await {
                            return end;
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
                let ping = control_frame(PING, &[]);
                if let Err(end) = Box::pin(write_control(ws, &ping, &mut batch, binding, ctx)).await {
                    return end;
                }
                awaiting_pong = true;
                timer.as_mut().reset(Instant::now() + cfg.pong_timeout);
            }
        }
    }
}

/// At shutdown: delivers what was already accepted before saying goodbye.
async fn drain_for_shutdown(
    ws: &mut Ws,
    outbox: &Outbox,
    batch: &mut Vec<Payload>,
    ctx: &State,
) -> End {
    let sent = match outbox.try_recv(batch) {
        Ok(sent) => sent.unwrap_or(0),
        Err(notice) => return End::Closed(notice),
    };
    let mut at = Progress {
        frame: 0,
        offset: sent,
    };
    let write = write_all(ws, batch, &mut at);
    let drained = timeout(ctx.config.shutdown_timeout, write).await;
    let written = batch[..at.frame].iter().map(|m| (m.len(), m.received()));
    ctx.metrics.frames_written(written);
    match drained {
        Ok(Ok(())) => End::Shutdown,
        Ok(Err(err)) => End::PeerError(FrameError::Io(err)),
        Err(_) => End::WriteStalled,
    }
}

/// A connection's queue and what books its writes: a uid binding, or a greeted
/// connection (`ws/greeted.rs`).
trait Drained {
    /// The queue its writer drains.
    fn outbox(&self) -> &Outbox;
    /// Books a batch just written, and empties it.
    fn written(&self, batch: &mut Vec<Payload>);
}

impl Drained for Binding {
    fn outbox(&self) -> &Outbox {
        Binding::outbox(self)
    }

    fn written(&self, batch: &mut Vec<Payload>) {
        Binding::written(self, batch);
    }
}

/// Writes a control frame of our own (ping, pong): the socket is taken from pushes first,
/// and what they queued goes out before it, so no frame is cut in two.
async fn write_control(
    ws: &mut Ws,
    frame: &[u8],
    batch: &mut Vec<Payload>,
    binding: &impl Drained,
    ctx: &State,
) -> Result<(), End> {
    let outbox = binding.outbox();
    let sent = outbox.claim(batch).map_err(End::Closed)?;
    if !batch.is_empty() {
        deliver(ws, batch, sent, outbox, ctx).await?;
        binding.written(batch);
    }
    match write_raw(&mut ws.tcp, frame, ctx.config.pong_timeout).await {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::TimedOut => Err(End::WriteStalled),
        Err(err) => Err(End::PeerError(FrameError::Io(err))),
    }
}

/// Writes a batch of text frames, the first from byte `sent` of it on (a push wrote the
/// rest itself). The common case (the socket takes it all at once) costs one `writev`
/// and nothing else: no timer, no allocation for a future.
async fn deliver(
    ws: &mut Ws,
    batch: &[Payload],
    sent: usize,
    outbox: &Outbox,
    ctx: &State,
) -> Result<(), End> {
    let mut at = Progress {
        frame: 0,
        offset: sent,
    };
    match try_write(&mut ws.tcp, batch, ws.enveloped, &mut at) {
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
    batch: &[Payload],
    at: &mut Progress,
    outbox: &Outbox,
    ctx: &State,
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
async fn write_all(ws: &mut Ws, batch: &[Payload], at: &mut Progress) -> std::io::Result<()> {
    while !try_write(&mut ws.tcp, batch, ws.enveloped, at)? {
        ws.tcp.writable().await?;
    }
    Ok(())
}

/// Sends a close frame with `notice`, then reads until the peer's close (or EOF), for at
/// most [`CLOSE_GRACE`] in all, discarding what it still sends: closing a socket with
/// unread input makes the kernel send a reset, which can destroy our close frame before
/// the peer reads it (it would see 1006, not our code).
async fn close(ws: &mut Ws, notice: &CloseNotice) {
    let deadline = Instant::now() + CLOSE_GRACE;
    let frame = close_frame(notice.code, &notice.reason);
    if write_raw(&mut ws.tcp, &frame, CLOSE_GRACE).await.is_err() || ws.reader.peer_closed() {
        // Gone, or its close (even a refused one) already came: nothing more to wait for.
        return;
    }
    let _ = timeout_at(deadline, async {
        loop {
            match ws.next().await {
                Ok(Incoming::Close(_)) | Err(FrameError::Eof | FrameError::Io(_)) => return,
                // A refused frame (often the very one that made us close) is skipped by
                // the reader as it arrives; read on to the peer's close.
                Ok(_) | Err(_) => {}
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, D, E, F: Future>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
        size_of::<F>()
    }

    /// Every browser connection's task, idle or not yet heard from, holds this future
    /// whole (in its largest state, whichever it is in), so a state that is rarely used or
    /// short-lived (the upgrade and the uid, an event stream, a refusal, a stuck write, the
    /// closing handshake) is boxed and this stays near the bound session's own size:
    /// 1,336 bytes in a test build of 2026-12-07 (1,704 on 2026-12-01, with the arguments
    /// kept twice and the upgrade's and the uid's states inline); 1,432 with the
    /// connection's events (`events::ConnEvents`, 32 bytes, and the session's message path).
    #[test]
    fn serve_future_stays_small() {
        let bytes = future_size(super::serve);
        println!("ws::serve future: {bytes} bytes");
        assert!(bytes <= 1536, "ws::serve's future grew to {bytes} bytes");
    }
}

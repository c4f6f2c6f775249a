//! The backend side: read lines, answer each with one reply line, in order.
//!
//! The door only frames lines, checks access (`--push-allow`, `/auth`) and writes replies:
//! each line goes to [`service::handle`], and the replies come back in order through
//! [`Replies`]. On a single node every reply is ready at once, so all replies for what one
//! `read` brought in are written with one `write` (pipelined backends pay one syscall per
//! batch, not per line).
//!
//! `/events [TYPES]` turns the connection into a stream of events once every earlier
//! line is answered (`events::stream`); lines after it are not run.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::access::Peer;
use crate::metrics::Metric;
use crate::reloadable::Reloadable;
use crate::service::{Replies, Reply, Response};
use crate::state::State;
use crate::wire::command::auth_secret;
use crate::wire::{Frame, LineFramer};

/// Replies one connection may have queued behind one that waits (cluster mode) before
/// the door stops reading its lines: bounds the memory a pipelining backend can hold.
const MAX_QUEUED_REPLIES: usize = 1024;

/// Bytes requested per `read`; also the most a buffer exceeds the line limit by.
const READ_CHUNK: usize = 8 * 1024;

/// Serves one backend connection until EOF, error, shutdown, or the idle timeout.
///
/// Reads and writes alternate on one stream (answer what was read, then read more), so
/// no split is needed and a backend that stops reading its replies stops being read:
/// its memory stays bounded by one read buffer and one batch of replies.
///
/// # Idle timeout
/// A backend slot is held until the backend closes, so leaked or pooled connections that
/// never close would fill `--max-push-connections` and shut every other backend out. A
/// connection that sends no byte for `push_idle_timeout` is therefore closed like a
/// refusal: every complete line it sent has been answered by then, an unterminated
/// partial line is discarded unexecuted, then FIN and a brief linger. So a line that got
/// no reply was never executed, and a client may resend it on a new connection (PHP
/// checks a persistent socket when it hands it out again, sees the FIN and reconnects).
/// A backend whose replies do not drain for as long (it stopped reading) is dropped.
pub(crate) async fn serve<S>(mut stream: S, peer: Peer, ctx: Arc<State>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut auth = Auth::new(peer, &ctx.settings());
    if let Auth::Refused(why) = auth {
        info!(%peer, why, "push connection refused");
        ctx.metrics.incr(Metric::RefusedPush);
        let mut out = BytesMut::new();
        Reply::error(why).encode(&mut out);
        stream.write_all(&out).await?;
        return linger_close(stream, REFUSAL_LINGER).await;
    }
    let idle_timeout = ctx.config.push_idle_timeout;
    // Armed once per timeout, not per read: it is moved on only when it fires early.
    let idle = tokio::time::sleep(idle_timeout.unwrap_or(Duration::MAX));
    tokio::pin!(idle);
    // Idle means: nothing from the backend since it last sent a byte or took its replies.
    let mut quiet_since = Instant::now();
    let mut framer = LineFramer::new(ctx.config.max_line_bytes);
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut replies = Replies::default();
    let mut closing = false;
    let mut events = None;
    loop {
        while !closing
            && events.is_none()
            && replies.len() < MAX_QUEUED_REPLIES
            && let Some(frame) = framer.next_frame(&mut buf)
        {
            let first = framer.too_long_first_byte();
            match answer(&frame, first, &mut auth, &ctx, peer, &mut replies, &mut out) {
                After::Read => {}
                After::Close => closing = true,
                After::Stream(sub) => events = Some(sub),
            }
        }
        if let Some(sub) = events {
            drain(&mut replies, &mut out, &ctx).await;
            write_replies(&mut stream, &out, idle_timeout, peer).await?;
            stream_events(&mut stream, sub, &ctx, peer).await;
            return linger_close(stream, REFUSAL_LINGER).await;
        }
        if !out.is_empty() {
            write_replies(&mut stream, &out, idle_timeout, peer).await?;
            out.clear();
            quiet_since = Instant::now();
        }
        if closing {
            drain(&mut replies, &mut out, &ctx).await;
            stream.write_all(&out).await?;
            return linger_close(stream, REFUSAL_LINGER).await;
        }
        buf.reserve(READ_CHUNK);
        // Shutdown stops reading; every complete line already read is answered.
        let n = tokio::select! {
            biased;
            () = replies.flush(&mut out), if !replies.is_empty() => continue,
            r = stream.read_buf(&mut buf), if replies.len() < MAX_QUEUED_REPLIES => r?,
            () = ctx.push_stop.cancelled() => {
                drain(&mut replies, &mut out, &ctx).await;
                stream.write_all(&out).await?;
                return linger_close(stream, ctx.config.shutdown_timeout).await;
            }
            () = &mut idle, if idle_timeout.is_some() && replies.is_empty() => {
                let due = quiet_since + idle_timeout.unwrap_or_default();
                if due > Instant::now() {
                    idle.as_mut().reset(due);
                    continue;
                }
                debug!(%peer, unanswered_bytes = buf.len(), "closing idle push connection");
                return linger_close(stream, REFUSAL_LINGER).await;
            }
        };
        if n == 0 {
            // Half-close: answer the unterminated tail, if any, then close our side.
            // (A refusal is answered too: the peer is done sending, so nothing to linger for.)
            let mut events = None;
            if let Some(frame) = framer.finish(&mut buf) {
                let first = framer.too_long_first_byte();
                if let After::Stream(sub) =
                    answer(&frame, first, &mut auth, &ctx, peer, &mut replies, &mut out)
                {
                    events = Some(sub);
                }
            }
            drain(&mut replies, &mut out, &ctx).await;
            write_replies(&mut stream, &out, idle_timeout, peer).await?;
            if let Some(sub) = events {
                // `printf '/events' | nc -N`: the reader closed its side, it still reads.
                stream_events(&mut stream, sub, &ctx, peer).await;
                return Ok(());
            }
            break;
        }
        quiet_since = Instant::now();
    }
    stream.shutdown().await
}

/// How long one write of an event stream may take when there is no idle timeout.
const STREAM_WRITE_LIMIT: Duration = Duration::from_secs(60);

/// The rest of the connection's life as an `/events` stream; a write may take up to the
/// idle timeout.
async fn stream_events<S>(stream: &mut S, sub: crate::events::Subscription, ctx: &State, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = ctx.config.push_idle_timeout.unwrap_or(STREAM_WRITE_LIMIT);
    let end = crate::events::stream::serve(stream, sub, &ctx.push_stop, limit).await;
    debug!(%peer, ?end, "event stream ended");
}

/// What the door does after a line.
enum After {
    /// Reads the next one.
    Read,
    /// Closes: a refused `/auth`, or no `/auth` where one is required.
    Close,
    /// Becomes an event stream (`/events`), subscribed as of this line.
    Stream(crate::events::Subscription),
}

/// Answers one line after the access check (its response goes to `replies`).
fn answer(
    frame: &Frame,
    too_long_first: Option<u8>,
    auth: &mut Auth,
    ctx: &Arc<State>,
    peer: Peer,
    replies: &mut Replies,
    out: &mut BytesMut,
) -> After {
    let (reply, after) = match auth.check(frame, ctx, peer) {
        Step::Proceed => {
            let asked = match frame {
                Frame::Line(line) => crate::events::stream::request(line),
                Frame::TooLong => None,
            };
            match asked {
                // Subscribed now: what happens while earlier replies drain is not missed.
                Some(Ok(kinds)) => return After::Stream(ctx.events.subscribe(kinds)),
                Some(Err(why)) => (Reply::error(why), After::Read),
                None => {
                    replies.run(ctx, frame, too_long_first, out);
                    return After::Read;
                }
            }
        }
        Step::Answered(reply) => (reply, After::Read),
        Step::Close(reply) => (reply, After::Close),
    };
    replies.push(Response::Now(reply), out);
    after
}

/// Waits (within the shutdown timeout) for every queued reply, encoding them into `out`.
async fn drain(replies: &mut Replies, out: &mut BytesMut, ctx: &State) {
    let all = async {
        while !replies.is_empty() {
            replies.flush(out).await;
        }
    };
    if tokio::time::timeout(ctx.config.shutdown_timeout, all)
        .await
        .is_err()
    {
        warn!(
            left = replies.len(),
            "replies still waiting at the deadline"
        );
    }
}

/// Writes one batch of replies; a backend that does not take them within the idle
/// timeout has stopped reading and is dropped (an error ends the connection).
async fn write_replies<S>(
    stream: &mut S,
    out: &[u8],
    idle_timeout: Option<Duration>,
    peer: Peer,
) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let Some(limit) = idle_timeout else {
        return stream.write_all(out).await;
    };
    match tokio::time::timeout(limit, stream.write_all(out)).await {
        Ok(written) => written,
        Err(_) => {
            debug!(%peer, "dropping push connection: its replies were not read within the idle timeout");
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "replies not read within the idle timeout",
            ))
        }
    }
}

/// One backend connection in `/stats` `push_connections`, from its accept (so the gauge
/// is current when the accept loop finds the limit reached) until it is dropped.
pub(crate) struct Open(Arc<State>);

impl Open {
    pub(crate) fn new(state: &Arc<State>) -> Self {
        state.metrics.incr(Metric::PushConnections);
        Open(state.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.metrics.sub(Metric::PushConnections, 1);
    }
}

/// The warning logged (rate-limited by the accept loop) when every backend slot is taken.
pub(crate) fn warn_limit_reached(ctx: &State) {
    let limit = ctx.config.max_push_connections;
    let open = ctx.metrics.value(Metric::PushConnections);
    match ctx.config.push_idle_timeout {
        Some(idle) => warn!(
            limit,
            open,
            idle_timeout_ms = idle.as_millis() as u64,
            "push connection limit ({limit}) reached: {open} connections open, idle timeout {idle:?}; \
             new backends wait in the backlog. Raise --max-push-connections or let idle backends close"
        ),
        None => warn!(
            limit,
            open,
            "push connection limit ({limit}) reached: {open} connections open, no idle timeout; \
             new backends wait in the backlog. Raise --max-push-connections or set --push-idle-timeout-ms"
        ),
    }
}

/// A lingering close ends after this long without input from the peer.
const LINGER_QUIET: Duration = Duration::from_millis(200);

/// How long a refused backend's late input is drained so it still reads the refusal.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Closes our side after the replies, then discards what the peer still sends for up to
/// `linger`. Closing a socket with unread input makes the kernel send a reset, which
/// destroys replies still in flight; a backend that is still writing when we stop
/// reading (shutdown, refusal) would lose answers to lines we did read.
async fn linger_close<S>(mut stream: S, linger: Duration) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    // Only a peer that is still sending needs this: an idle one (a pooled connection)
    // must not hold shutdown for the whole linger, so a quiet spell ends it.
    let _ = tokio::time::timeout(linger, async {
        while let Ok(Ok(n)) = tokio::time::timeout(LINGER_QUIET, stream.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(())
}

/// Access state of one backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// May push.
    Open,
    /// Must send `/auth SECRET` first.
    Pending,
    /// Refused before reading anything.
    Refused(&'static str),
}

impl Auth {
    fn new(peer: Peer, config: &Reloadable) -> Self {
        if peer.ip().is_none() {
            // Unix socket: file permissions already decided who may connect.
            return Auth::Open;
        }
        if !crate::access::allowed(config.push_allow.as_deref(), peer.ip()) {
            return Auth::Refused("address not allowed");
        }
        if config.push_secret.is_some() {
            Auth::Pending
        } else {
            Auth::Open
        }
    }

    /// Handles `/auth` lines and gates everything else on them. On an open connection
    /// `/auth` is answered `{"ok":true}`, so backends may always send it.
    fn check(&mut self, frame: &Frame, ctx: &State, peer: Peer) -> Step {
        let given = match frame {
            Frame::Line(line) => auth_secret(line),
            Frame::TooLong => None,
        };
        match (*self, given) {
            (Auth::Open, Some(_)) => Step::Answered(Reply::Authorized),
            (Auth::Open, None) => Step::Proceed,
            (Auth::Pending, Some(secret)) => {
                if ctx
                    .settings()
                    .push_secret
                    .as_ref()
                    .is_some_and(|s| s.matches(secret))
                {
                    *self = Auth::Open;
                    Step::Answered(Reply::Authorized)
                } else {
                    warn!(%peer, "push connection refused: bad secret");
                    ctx.metrics.incr(Metric::RefusedPush);
                    Step::Close(Reply::error("bad secret"))
                }
            }
            (Auth::Pending, None) => {
                warn!(%peer, "push connection refused: no /auth line");
                ctx.metrics.incr(Metric::RefusedPush);
                Step::Close(Reply::error(
                    "authentication required: send /auth SECRET first",
                ))
            }
            (Auth::Refused(why), _) => Step::Close(Reply::error(why)),
        }
    }
}

/// What to do with a line after the access check.
#[derive(Debug)]
enum Step {
    /// Handle it as a push or command.
    Proceed,
    /// It was an `/auth` line, answered so.
    Answered(Reply),
    /// Refused: answer so, then close.
    Close(Reply),
}

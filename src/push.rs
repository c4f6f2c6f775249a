//! The backend side: read lines, answer each with one reply line, in order.
//!
//! Every line is handled synchronously (registry calls never wait), so replies are
//! produced in order by construction; all replies for what one `read` brought in are
//! written with one `write` (pipelined backends pay one syscall per batch, not per line).

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::{debug, info, warn};

use crate::command;
use crate::config::Config;
use crate::logsafe::escaped;
use crate::metrics::Metrics;
use crate::protocol::{BadLine, Frame, LineFramer, Reply, push_target_str};
use crate::registry::{Delivery, Registry};
use crate::server::{Context, Peer};

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
pub(crate) async fn serve<S>(mut stream: S, peer: Peer, ctx: Arc<Context>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut auth = Auth::new(peer, &ctx.config);
    if let Auth::Refused(why) = auth {
        info!(%peer, why, "push connection refused");
        stream.write_all(refusal(why).as_bytes()).await?;
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
    let mut closing = false;
    loop {
        while !closing && let Some(frame) = framer.next_frame(&mut buf) {
            match auth.check(&frame, &ctx.config, &mut out, peer) {
                Step::Proceed => {
                    let command = framer.too_long_first_byte() == Some(b'/');
                    handle(frame, command, &ctx, &mut out);
                }
                Step::Answered => {}
                Step::Close => closing = true,
            }
        }
        if !out.is_empty() {
            write_replies(&mut stream, &out, idle_timeout, peer).await?;
            out.clear();
            quiet_since = Instant::now();
        }
        if closing {
            return linger_close(stream, REFUSAL_LINGER).await;
        }
        buf.reserve(READ_CHUNK);
        // Shutdown stops reading; every complete line already read was answered above.
        let n = tokio::select! {
            biased;
            r = stream.read_buf(&mut buf) => r?,
            () = ctx.push_stop.cancelled() => {
                return linger_close(stream, ctx.config.shutdown_timeout).await;
            }
            () = &mut idle, if idle_timeout.is_some() => {
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
            if let Some(frame) = framer.finish(&mut buf)
                && auth.check(&frame, &ctx.config, &mut out, peer) == Step::Proceed
            {
                let command = framer.too_long_first_byte() == Some(b'/');
                handle(frame, command, &ctx, &mut out);
            }
            write_replies(&mut stream, &out, idle_timeout, peer).await?;
            break;
        }
        quiet_since = Instant::now();
    }
    stream.shutdown().await
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
pub(crate) struct Open(Registry);

impl Open {
    pub(crate) fn new(registry: &Registry) -> Self {
        registry.metrics().push_connections.fetch_add(1, Relaxed);
        Open(registry.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.metrics().push_connections.fetch_sub(1, Relaxed);
    }
}

/// The warning logged (rate-limited by the accept loop) when every backend slot is taken.
pub(crate) fn warn_limit_reached(ctx: &Context) {
    let limit = ctx.config.max_push_connections;
    let open = ctx.registry.metrics().push_connections.load(Relaxed);
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
    fn new(peer: Peer, config: &Config) -> Self {
        let Some(ip) = peer.ip() else {
            // Unix socket: file permissions already decided who may connect.
            return Auth::Open;
        };
        if let Some(allow) = &config.push_allow
            && !allow.iter().any(|net| net.contains(ip))
        {
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
    fn check(&mut self, frame: &Frame, config: &Config, out: &mut BytesMut, peer: Peer) -> Step {
        let line = match frame {
            Frame::Line(line) => Some(&line[..]),
            Frame::TooLong => None,
        };
        let given = line.and_then(|l| l.strip_prefix(b"/auth ".as_slice()));
        match (*self, given) {
            (Auth::Open, Some(_)) => {
                out.extend_from_slice(b"{\"ok\":true}\n");
                Step::Answered
            }
            (Auth::Open, None) => Step::Proceed,
            (Auth::Pending, Some(secret)) => {
                if config
                    .push_secret
                    .as_ref()
                    .is_some_and(|s| s.matches(secret))
                {
                    out.extend_from_slice(b"{\"ok\":true}\n");
                    *self = Auth::Open;
                    Step::Answered
                } else {
                    warn!(%peer, "push connection refused: bad secret");
                    out.extend_from_slice(refusal("bad secret").as_bytes());
                    Step::Close
                }
            }
            (Auth::Pending, None) => {
                warn!(%peer, "push connection refused: no /auth line");
                let why = "authentication required: send /auth SECRET first";
                out.extend_from_slice(refusal(why).as_bytes());
                Step::Close
            }
            (Auth::Refused(why), _) => {
                out.extend_from_slice(refusal(why).as_bytes());
                Step::Close
            }
        }
    }
}

/// What to do with a line after the access check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Handle it as a push or command.
    Proceed,
    /// It was an `/auth` line and has been answered.
    Answered,
    /// Refused: write what is in `out`, then close.
    Close,
}

fn refusal(why: &str) -> String {
    format!("{}\n", serde_json::json!({"ok": false, "error": why}))
}

/// One line in, one reply out: a command (`/...`) or a plain push. `command` says an
/// over-long line ([`Frame::TooLong`]) started with `/`: it gets a JSON error, which the
/// README's `json_decode(fgets($c), true)` can read, where an over-long push keeps the
/// seed's `fail`.
fn handle(frame: Frame, command: bool, ctx: &Context, out: &mut BytesMut) {
    let registry = &ctx.registry;
    let metrics = registry.metrics();
    let line = match frame {
        Frame::TooLong if command => {
            Metrics::incr(&metrics.commands);
            let max = ctx.config.max_line_bytes;
            debug!(max, "bad command: line too long");
            let reply = serde_json::json!({
                "ok": false,
                "error": format!("line too long (max {max} bytes)"),
            });
            out.extend_from_slice(reply.to_string().as_bytes());
            out.extend_from_slice(b"\n");
            return;
        }
        Frame::Line(line) if command::is_command(&line) => {
            Metrics::incr(&metrics.commands);
            let reply = match std::str::from_utf8(&line) {
                Ok(text) => command::execute(text, &line, registry, &ctx.config),
                Err(_) => r#"{"ok":false,"error":"command is not UTF-8"}"#.to_owned(),
            };
            out.extend_from_slice(reply.as_bytes());
            out.extend_from_slice(b"\n");
            return;
        }
        Frame::Line(line) => Utf8Bytes::try_from(line).map_err(|_| BadLine::NotUtf8),
        Frame::TooLong => Err(BadLine::TooLong),
    };
    let outcome = line.and_then(|line| push_line(line, registry, ctx.config.max_uid_bytes));
    count(metrics, &outcome);
    match outcome {
        Ok(delivery) if delivery.ok() => Reply::Ok,
        _ => Reply::Fail,
    }
    .encode(out);
}

/// Counts one push line's outcome (plain or `/push`) and logs a malformed one.
pub(crate) fn count(metrics: &Metrics, outcome: &Result<Delivery, BadLine>) {
    let counter = match outcome {
        Ok(d) if d.ok() => &metrics.pushes_ok,
        Ok(_) => &metrics.pushes_fail,
        Err(bad) => {
            debug!(bad = %escaped(&bad.to_string()), "bad push line");
            Metrics::incr(&metrics.bad_lines);
            &metrics.pushes_fail
        }
    };
    Metrics::incr(counter);
}

/// Pushes a plain push line, exactly as received, to every connection of its uid.
/// `line` shares the read buffer: it is the payload every recipient gets, not a copy.
/// A uid longer than `max_uid` is offline by definition (no browser can bind it), so it
/// is not looked up.
pub(crate) fn push_line(
    line: Utf8Bytes,
    registry: &Registry,
    max_uid: usize,
) -> Result<Delivery, BadLine> {
    let uid = push_target_str(line.as_str())?;
    if uid.len() > max_uid {
        return Ok(Delivery::default());
    }
    Ok(registry.push(&uid, &line))
}

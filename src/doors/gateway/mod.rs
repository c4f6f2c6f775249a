//! The GatewayClient door (issue 22): GatewayWorker's gateway endpoint and Register, so an
//! app's unmodified `GatewayClient\Gateway::sendToUid(…)`, `bindUid(…)`, … reach pushwire's
//! browsers. Frames are read with the codecs of `wire::gateway`, each becomes an engine call
//! (`calls.rs`), and a query's answer goes back PHP-serialized. `docs/gateway.md` is the
//! reference.
//!
//! Access is the push port's: the allow-list (`--push-allow`) at accept, and GatewayClient's
//! `$secretKey` (`--gateway-secret`, reloadable) as the first frame of every connection.
//! A frame that cannot be read (a length under its header, over `--gateway-max-frame-bytes`,
//! `ext_data` past its end) closes that connection only, with a log line; a frame that reads
//! but is refused (a BusinessWorker command, a list over `--max-list-uids`, a message that is
//! not text) is logged, and a refused query is answered as GatewayWorker answers one that
//! matches nothing, so no caller waits for a reply that will not come.

mod calls;
pub(crate) mod register;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::access::{Peer, allowed, constant_time_eq};
use crate::auth::Secret;
use crate::metrics::Metric;
use crate::state::State;
use crate::wire::gateway::request::{self, Limits, Request};
use crate::wire::gateway::take_frame;

/// Bytes asked for per read.
const READ_CHUNK: usize = 16 * 1024;

/// Whether `peer` may use the door now (the push port's allow-list, as a reload left it);
/// logs a refusal.
fn admitted(peer: Peer, ctx: &State, endpoint: &str) -> bool {
    if allowed(ctx.settings().push_allow.as_deref(), peer.ip()) {
        return true;
    }
    info!(%peer, endpoint, "gateway door refused: address not allowed (--push-allow)");
    ctx.metrics.incr(Metric::RefusedPush);
    false
}

/// GatewayWorker's rule: with a secret, the given one must be it; without one, none may be
/// given (a client sending a secret to a door that has none is misconfigured, and
/// GatewayWorker closes it too).
fn secret_matches(ours: Option<&Secret>, given: Option<&str>) -> bool {
    match (ours, given) {
        (Some(ours), Some(given)) => constant_time_eq(ours.reveal(), given.as_bytes()),
        (Some(_), None) => false,
        (None, given) => given.is_none_or(str::is_empty),
    }
}

/// Serves one GatewayClient connection: frames in, replies to queries out, until the peer
/// closes, a frame cannot be read, the secret is wrong, it idles past
/// `--push-idle-timeout-ms`, or the daemon stops (frames already read are answered).
pub(crate) async fn serve(mut stream: TcpStream, peer: Peer, ctx: Arc<State>) {
    let Some(gw) = ctx.config.gateway.as_ref() else {
        return;
    };
    if !admitted(peer, &ctx, "gateway") {
        return;
    }
    let limits = Limits::from(ctx.config.command_limits());
    // The secret in force when the connection came (a reload applies to the next ones).
    let secret = ctx.settings().gateway_secret.clone();
    let mut authed = secret.is_none();
    let mut buf = BytesMut::new();
    let idle = ctx.config.push_idle_timeout;
    loop {
        loop {
            let frame = match take_frame(&mut buf, gw.max_frame_bytes) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    warn!(%peer, error = %e, "gateway frame unreadable: closing this connection");
                    ctx.metrics.incr(Metric::BadLines);
                    return;
                }
            };
            let request = request::parse(&frame, &limits);
            if let Ok(Request::Auth { secret_key }) = &request {
                if secret_matches(secret.as_ref(), secret_key.as_deref()) {
                    authed = true;
                    continue;
                }
                warn!(%peer, "gateway connection refused: wrong secret_key");
                ctx.metrics.incr(Metric::RefusedPush);
                return;
            }
            if !authed {
                warn!(%peer, cmd = frame.header.cmd, "gateway connection refused: no secret_key frame first");
                ctx.metrics.incr(Metric::RefusedPush);
                return;
            }
            let answer = match request {
                Ok(request) => calls::run(request, &ctx, peer).await,
                Err(bad) => {
                    info!(%peer, error = %bad, "gateway request refused");
                    ctx.metrics.incr(Metric::BadLines);
                    bad.reply().map(calls::Reply::Value)
                }
            };
            let Some(answer) = answer else { continue };
            let Some(bytes) = answer.encode() else {
                warn!(%peer, "gateway reply longer than 4 GiB: closing");
                return;
            };
            if stream.write_all(&bytes).await.is_err() {
                return;
            }
        }
        buf.reserve(READ_CHUNK);
        let until = idle.map(|d| Instant::now() + d);
        let read = tokio::select! {
            r = stream.read_buf(&mut buf) => r,
            () = ctx.push_stop.cancelled() => return,
            () = sleep_until(until) => {
                return debug!(%peer, "closing idle gateway connection");
            }
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

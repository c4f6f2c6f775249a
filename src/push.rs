//! The backend side: read lines, answer each with one reply line, in order.
//!
//! Every line is handled synchronously (registry calls never wait), so replies are
//! produced in order by construction; all replies for what one `read` brought in are
//! written with one `write` (pipelined backends pay one syscall per batch, not per line).

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::debug;

use crate::metrics::Metrics;
use crate::protocol::{BadLine, Frame, LineFramer, Reply, push_target};
use crate::registry::Registry;
use crate::server::Context;

/// Bytes requested per `read`; also the most a buffer exceeds the line limit by.
const READ_CHUNK: usize = 8 * 1024;

/// Serves one backend connection until EOF, error, or shutdown.
pub(crate) async fn serve(mut stream: TcpStream, ctx: Arc<Context>) -> std::io::Result<()> {
    let (mut rd, mut wr) = stream.split();
    let mut framer = LineFramer::new(ctx.config.max_line_bytes);
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    loop {
        while let Some(frame) = framer.next_frame(&mut buf) {
            handle(frame, &ctx.registry).encode(&mut out);
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
        buf.reserve(READ_CHUNK);
        // Shutdown stops reading; every complete line already read was answered above.
        let n = tokio::select! {
            biased;
            r = rd.read_buf(&mut buf) => r?,
            () = ctx.push_stop.cancelled() => break,
        };
        if n == 0 {
            // Half-close: answer the unterminated tail, if any, then close our side.
            if let Some(frame) = framer.finish(&mut buf) {
                handle(frame, &ctx.registry).encode(&mut out);
                wr.write_all(&out).await?;
            }
            break;
        }
    }
    wr.shutdown().await
}

/// One line in, one reply out.
fn handle(frame: Frame, registry: &Registry) -> Reply {
    let metrics = registry.metrics();
    let reply = match push(frame, registry) {
        Ok(true) => Reply::Ok,
        Ok(false) => Reply::Fail,
        Err(bad) => {
            debug!(%bad, "bad push line");
            Metrics::incr(&metrics.bad_lines);
            Reply::Fail
        }
    };
    Metrics::incr(match reply {
        Reply::Ok => &metrics.pushes_ok,
        Reply::Fail => &metrics.pushes_fail,
    });
    reply
}

/// Pushes the line, exactly as received, to every connection of its uid.
fn push(frame: Frame, registry: &Registry) -> Result<bool, BadLine> {
    let line = match frame {
        Frame::Line(line) => line,
        Frame::TooLong => return Err(BadLine::TooLong),
    };
    // A refcount on the read buffer, not a copy: this is the payload every recipient shares.
    let text = Utf8Bytes::try_from(line).map_err(|_| BadLine::NotUtf8)?;
    let uid = push_target(text.as_bytes())?;
    Ok(registry.push(&uid, &text).ok())
}

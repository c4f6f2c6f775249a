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

use crate::command;
use crate::metrics::Metrics;
use crate::protocol::{BadLine, Frame, LineFramer, Reply, push_target};
use crate::registry::{Delivery, Registry};
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
            handle(frame, &ctx, &mut out);
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
                handle(frame, &ctx, &mut out);
                wr.write_all(&out).await?;
            }
            break;
        }
    }
    wr.shutdown().await
}

/// One line in, one reply out: a command (`/...`) or a plain push.
fn handle(frame: Frame, ctx: &Context, out: &mut BytesMut) {
    let registry = &ctx.registry;
    let metrics = registry.metrics();
    let line = match frame {
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
    let reply = match line.and_then(|line| push_line(line, registry)) {
        Ok(delivery) if delivery.ok() => Reply::Ok,
        Ok(_) => Reply::Fail,
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
    reply.encode(out);
}

/// Pushes a plain push line, exactly as received, to every connection of its uid.
/// `line` shares the read buffer: it is the payload every recipient gets, not a copy.
pub(crate) fn push_line(line: Utf8Bytes, registry: &Registry) -> Result<Delivery, BadLine> {
    let uid = push_target(line.as_bytes())?;
    Ok(registry.push(&uid, &line))
}

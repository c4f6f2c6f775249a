//! The Register endpoint: GatewayClient's discovery. It writes one line
//! (`{"event":"worker_connect","secret_key":"…"}`) and reads one back naming the gateways
//! to send to; pushwire names this node's gateway endpoint (`--gateway-advertise`), which
//! answers for the whole cluster, so there is no fan-out and no single Register.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::access::Peer;
use crate::metrics::Metric;
use crate::state::State;
use crate::wire::gateway::register::{Event, addresses_line, parse_line};

/// Longest Register line: `worker_connect` and a secret.
const MAX_LINE: usize = 4096;

/// How long a Register connection may go without a line (GatewayClient writes at once and
/// waits 5 s for the answer).
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one Register connection: answers each `worker_connect` line, until the peer
/// closes, a line is refused, or it goes quiet.
pub(crate) async fn serve(mut stream: TcpStream, peer: Peer, ctx: Arc<State>) {
    let Some(gw) = ctx.config.gateway.as_ref() else {
        return;
    };
    if !super::admitted(peer, &ctx, "Register") {
        return;
    }
    let mut buf = BytesMut::new();
    loop {
        let line = loop {
            if let Some(at) = buf.iter().position(|&b| b == b'\n') {
                let line = buf.split_to(at + 1);
                break line;
            }
            if buf.len() > MAX_LINE {
                info!(%peer, "Register line longer than {MAX_LINE} bytes: closing");
                return;
            }
            buf.reserve(1024);
            let read = tokio::select! {
                r = tokio::time::timeout(LINE_TIMEOUT, stream.read_buf(&mut buf)) => r,
                () = ctx.push_stop.cancelled() => return,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => return debug!(%peer, "Register connection idle: closing"),
            }
        };
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match parse_line(line) {
            Ok(Event::WorkerConnect { secret_key }) => {
                let secret = ctx.settings().gateway_secret.clone();
                if !super::secret_matches(secret.as_ref(), secret_key.as_deref()) {
                    // GatewayWorker's Register closes without a word; the log says why.
                    warn!(%peer, "Register refused: wrong secret_key");
                    ctx.metrics.incr(Metric::RefusedPush);
                    return;
                }
                if stream
                    .write_all(&addresses_line(&[gw.advertise]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(Event::Ping) => {}
            Ok(Event::GatewayConnect | Event::Other(_)) => {
                info!(%peer, "Register: only worker_connect is served (no gateways register with pushwire): closing");
                return;
            }
            Err(e) => {
                info!(%peer, error = %e, "Register line refused: closing");
                let _ = stream.write_all(format!("{e}\n").as_bytes()).await;
                return;
            }
        }
    }
}

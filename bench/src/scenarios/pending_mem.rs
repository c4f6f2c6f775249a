//! pending-mem: server RSS per connection that never finishes its handshake.

use super::{Ctx, baseline, read_line, rss_per};
use crate::TlsFirst;
use crate::procstat;
use crate::report::Report;
use crate::track;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

pub async fn pending_mem(
    ctx: &mut Ctx,
    request_bytes: usize,
    tls_first: Option<TlsFirst>,
) -> Report {
    let mut rep = Report::new("pending-mem");
    let Some(pid) = ctx.pid() else {
        rep.note("skipped: needs --server-pid");
        return rep.finish();
    };
    let before = baseline(Some(pid));
    let head = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Pad: ";
    let request: Vec<u8> = match tls_first {
        None => head
            .iter()
            .copied()
            .chain(std::iter::repeat(b'x'))
            .take(request_bytes)
            .collect(),
        // A handshake record's content type: the server waits for the rest of the record.
        Some(TlsFirst::Byte) => vec![0x16],
        // Made per connection (each ClientHello has its own key share).
        Some(TlsFirst::Hello) => Vec::new(),
    };
    let hello = (tls_first == Some(TlsFirst::Hello))
        .then(|| {
            ctx.net
                .tls
                .as_ref()
                .map(|(c, name)| (c.config().clone(), name.clone()))
        })
        .flatten();
    let n = ctx.o.clients;
    let gate = Arc::new(Semaphore::new(ctx.o.connect_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (net, gate, request, hello) = (ctx.net, gate.clone(), request.clone(), hello.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let mut tcp = net.tcp(net.ws_addr).await.ok()?;
            let request = match hello {
                Some((config, name)) => client_hello(config, name)?,
                None => request,
            };
            if !request.is_empty() {
                tcp.write_all(&request).await.ok()?;
            }
            Some(tcp)
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(tcp)) = r {
            held.push(tcp);
        }
    }
    tokio::time::sleep(ctx.o.settle()).await;
    // A connection the server closed (refused, timed out) reads as EOF (or a reset) once
    // whatever it sent first (a TLS server's answer to a ClientHello) is read.
    let mut open = 0u64;
    for tcp in &held {
        let mut b = [0u8; 4096];
        let still = loop {
            match tcp.try_read(&mut b) {
                Ok(0) => break false,
                Ok(_) => {}
                Err(e) => break e.kind() == std::io::ErrorKind::WouldBlock,
            }
        };
        open += u64::from(still);
    }
    let after = procstat::server_mem(pid);
    rep.int("connections", "connections attempted", n as u64);
    rep.int("held", "held open by the server", open);
    match tls_first {
        None => rep.int(
            "request_bytes",
            "request bytes sent by each",
            request.len() as u64,
        ),
        Some(TlsFirst::Byte) => rep.text("tls_first", "TLS sent by each", "one byte"),
        Some(TlsFirst::Hello) => rep.text("tls_first", "TLS sent by each", "a ClientHello"),
    }
    match (before.mem, after) {
        (Some(b), Some(a)) if open > 0 => {
            let what = ["server RSS before", "server RSS while held"];
            let per_key = ["rss_per_pending_kib", "rss_per_pending_bytes"];
            rss_per(
                &mut rep,
                what,
                per_key,
                "SERVER RSS PER PENDING CONNECTION",
                (b, a),
                open,
            );
        }
        _ => track::error("pending-mem: could not read the server's RSS".into()),
    }
    if open < n as u64 {
        track::error(format!(
            "pending-mem: the server closed {} of {n} connections (raise its pending budgets \
             and bind timeout for this measurement)",
            n as u64 - open
        ));
    }
    let ping = async {
        let conn = tokio::net::TcpStream::connect(ctx.net.push_addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (rd, mut wr) = conn.into_split();
        wr.write_all(b"/ping\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        read_line(&mut tokio::io::BufReader::new(rd)).await
    };
    match ping.await {
        Ok(r) if r == "pong" => {}
        other => track::error(format!("pending-mem: /ping on the push port: {other:?}")),
    }
    drop(held);
    rep.finish()
}

/// A fresh ClientHello for `name`, as a browser's first flight (no answer is ever read).
fn client_hello(
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
) -> Option<Vec<u8>> {
    let mut conn = rustls::ClientConnection::new(config, name).ok()?;
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).ok()?;
    }
    Some(hello)
}

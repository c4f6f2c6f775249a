//! `resume-storm`: protocol v1's catch-up under load. N clients bind with `?pushwire=1`
//! and note where they are (their status frame); all are cut; `--missed` messages per
//! uid are pushed meanwhile (answered `fail`, kept in history); then all N reconnect at
//! once with `since=EPOCH:SEQ` and each must get `s recovered` and exactly its missed
//! messages, in order. Reports the time until every client has caught up and the
//! server's CPU for the reconnect-and-replay phase.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::procstat::Meter;
use crate::report::Report;
use crate::scenarios::Ctx;
use crate::track::{self, now_ns};

/// Handshakes in flight at once (the server's pending budget is a quarter of its
/// connection limit; a storm past it would measure 503s).
const CONCURRENCY: usize = 500;

pub async fn resume_storm(ctx: &mut Ctx) -> Report {
    let mut rep = Report::new("resume-storm");
    let n = ctx.o.clients.max(1);
    let missed = ctx.o.missed.max(1);
    let sep = if ctx.o.ws.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}pushwire=1", ctx.o.ws);
    rep.int("clients", "clients", n as u64);
    rep.int("missed", "messages missed per client", missed as u64);

    // 1. Bind each uid as a v1 client, note its position, cut it.
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (net, url, gate) = (ctx.net, url.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let mut ws = open(net, &url, i).await?;
            let at = status(&mut ws, "new").await?;
            drop(ws);
            Some(at)
        }));
    }
    let mut points = Vec::with_capacity(n);
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.ok().flatten() {
            Some(at) => points.push(at),
            None => {
                track::error(format!("resume-storm: client {i} did not bind"));
                return rep.finish();
            }
        }
    }
    // 2. Wait until the server has let every one go, then push what they miss.
    let mut conn = match ctx.net.tcp(ctx.net.push_addr).await {
        Ok(s) => tokio::io::BufReader::new(s),
        Err(e) => {
            track::error(format!("resume-storm: push connection: {e}"));
            return rep.finish();
        }
    };
    let mut line = String::new();
    for _ in 0..500 {
        let _ = conn.get_mut().write_all(b"/count\n").await;
        line.clear();
        let _ = conn.read_line(&mut line).await;
        if line.contains("\"connections\":0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut batch = Vec::new();
    for k in 0..missed {
        for i in 0..n {
            batch.extend_from_slice(format!("{{\"uid\":\"rs.{i}\",\"k\":{k}}}\n").as_bytes());
        }
    }
    if conn.get_mut().write_all(&batch).await.is_err() {
        track::error("resume-storm: pushing the missed messages failed".into());
        return rep.finish();
    }
    for _ in 0..n * missed {
        line.clear();
        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
            track::error("resume-storm: push connection closed".into());
            return rep.finish();
        }
    }

    // 3. Everyone back at once, with where they were.
    let meter = Meter::start(ctx.o.server_pid);
    let start = now_ns();
    let mut tasks = Vec::with_capacity(n);
    for (i, at) in points.into_iter().enumerate() {
        let (net, gate) = (ctx.net, gate.clone());
        let url = format!("{url}&since={at}");
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let mut ws = open(net, &url, i).await?;
            status(&mut ws, "recovered").await?;
            let seq: u64 = at.rsplit(':').next()?.parse().ok()?;
            for k in 0..missed {
                let text = next_text(&mut ws).await?;
                let want = format!("m {} {{\"uid\":\"rs.{i}\",\"k\":{k}}}", seq + 1 + k as u64);
                if text != want {
                    track::error(format!(
                        "resume-storm: client {i}: got {text:?}, want {want:?}"
                    ));
                    return None;
                }
            }
            Some(now_ns() - start)
        }));
    }
    let mut took = Vec::with_capacity(n);
    let mut failed = 0u64;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(ns) => took.push(ns),
            None => failed += 1,
        }
    }
    let all_ns = now_ns() - start;
    let usage = meter.stop();
    if failed > 0 {
        track::error(format!("resume-storm: {failed} clients did not catch up"));
    }
    took.sort_unstable();
    rep.num(
        "caught_up_ms",
        "ALL CAUGHT UP",
        all_ns as f64 / 1e6,
        1,
        "ms",
    );
    rep.percentiles_ms(
        "client_caught_up_ms",
        "RECONNECT START → LAST MISSED MESSAGE",
        &took,
    );
    if let Some(ms) = usage.server_ms {
        rep.num(
            "server_cpu_us_per_client",
            "server CPU per resuming client",
            ms * 1000.0 / n as f64,
            1,
            "µs",
        );
    }
    rep.usage(&usage, (n * missed) as u64, ctx.o.server_pid);
    rep.note("server_cpu_us_per_push here is per replayed message (reconnects included)");
    rep.finish()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A v1 client for uid `rs.I`, its uid sent.
async fn open(net: &'static crate::client::Net, url: &str, i: usize) -> Option<Ws> {
    let tcp = net.tcp(net.ws_addr).await.ok()?;
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.ok()?;
    ws.send(Message::text(format!("rs.{i}"))).await.ok()?;
    Some(ws)
}

/// The status frame, which must be of `kind`: its `EPOCH:SEQ`.
async fn status(ws: &mut Ws, kind: &str) -> Option<String> {
    let text = next_text(ws).await?;
    let rest = text.strip_prefix("s ")?;
    let (got, at) = rest.split_once(' ')?;
    if got != kind {
        track::error(format!("resume-storm: status {got:?}, want {kind:?}"));
        return None;
    }
    Some(at.to_owned())
}

async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
            .await
            .ok()??
            .ok()?;
        match msg {
            Message::Text(t) => return Some(t.to_string()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

//! storm: the connect storm that binds every client (see the module docs of `scenarios`).

use super::{Ctx, command_reply};
use crate::BindCheck;
use crate::client::{self, Fleet};
use crate::procstat::Meter;
use crate::push::{self, Item, PipeOpts, Source};
use crate::report::Report;
use crate::track::{self, Run, now_ns};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, Semaphore, mpsc};

pub async fn storm(ctx: &mut Ctx) -> Report {
    let n = ctx.o.clients;
    let mut rep = Report::new("storm");
    let fleet: &'static Fleet = Box::leak(Box::new(Fleet::new(n, &ctx.tag)));
    ctx.fleet = Some(fleet);
    rep.int("clients", "clients", n as u64);
    rep.int(
        "connect_concurrency",
        "connect concurrency",
        ctx.o.connect_concurrency as u64,
    );
    rep.int(
        "source_addrs",
        "source addresses (127.0.0.2..)",
        u64::from(ctx.net.spread),
    );

    let probe_mode = ctx.o.bind_check == BindCheck::Probe;
    rep.text(
        "bind_check",
        "bound = ",
        if probe_mode {
            "a probe push to each uid answered ok"
        } else {
            "/count shows every connection"
        },
    );
    let run = Run::start("storm-probe", n, 0);
    let push_conn = match ctx.net.tcp(ctx.net.push_addr).await {
        Ok(s) => s,
        Err(e) => {
            track::error(format!("storm: push connection: {e}"));
            return rep.finish();
        }
    };
    // --bind-check count: no probe pushes (so no message ever reaches the clients); the
    // server's own `/count` says when every connection is bound.
    let mut counter = None;
    let mut base_conns = 0;
    let mut push_conn = Some(push_conn);
    if !probe_mode && let Some(conn) = push_conn.take() {
        let (rd, wr) = conn.into_split();
        let mut c = (tokio::io::BufReader::new(rd), wr);
        match count_connections(&mut c).await {
            Ok(v) => base_conns = v,
            Err(e) => {
                track::error(format!("storm: /count: {e}"));
                return rep.finish();
            }
        }
        counter = Some(c);
    }
    let (tx, rx) = mpsc::unbounded_channel::<Item>();
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<Item>();
    let stop = Arc::new(Notify::new());
    let again = tx.clone();
    tokio::spawn(async move {
        while let Some(first) = retry_rx.recv().await {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let _ = again.send(first);
            while let Ok(it) = retry_rx.try_recv() {
                let _ = again.send(it);
            }
        }
    });
    // The prober (probe mode only): the clients' items are simply dropped otherwise.
    let prober = push_conn.map(|conn| {
        tokio::spawn(push::pipeline(
            conn,
            run,
            fleet,
            Source::Chan(rx, stop.clone()),
            PipeOpts {
                window: 1024,
                batch: 256,
                prebuild: false,
                retry: Some(retry_tx),
            },
        ))
    });

    let pid = ctx.pid();
    let meter = Meter::start(pid);
    let t0 = now_ns();
    let _p = ctx.progress("storm", move || {
        format!(
            "connected {}/{n}, bound (probe ok) {}, probe retries {}, failed {}",
            fleet.connected.load(Ordering::Relaxed),
            run.oks.load(Ordering::Relaxed),
            run.fails.load(Ordering::Relaxed),
            fleet.failed.load(Ordering::Relaxed)
        )
    });
    let sem = Arc::new(Semaphore::new(ctx.o.connect_concurrency.max(1)));
    for i in 0..n {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        tokio::spawn(client::client(
            ctx.net,
            fleet,
            i,
            permit,
            tx.clone(),
            run.seq(i),
        ));
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_millis(ctx.o.storm_timeout_ms);
    let mut counted_at = 0;
    loop {
        let mut bound = run.oks.load(Ordering::Acquire) as usize;
        let failed = fleet.failed.load(Ordering::Acquire);
        if let Some(c) = counter.as_mut()
            && fleet.connected.load(Ordering::Acquire) + failed >= n
        {
            match count_connections(c).await {
                Ok(v) => bound = v.saturating_sub(base_conns) as usize,
                Err(e) => {
                    track::error(format!("storm: /count: {e}"));
                    break;
                }
            }
            counted_at = now_ns();
        }
        if bound + failed >= n {
            break;
        }
        if Instant::now() >= deadline {
            track::error(format!(
                "storm: only {bound} of {n} clients bound after {} ms",
                ctx.o.storm_timeout_ms
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.notify_one();
    let st = match prober {
        Some(p) => p.await.unwrap_or_default(),
        None => push::PipeStats::default(),
    };
    let drained = run.drain(ctx.o.drain_timeout()).await;
    let usage = meter.stop();
    track::clear_current();
    if !drained {
        track::error("storm: probe frames still missing after the drain timeout".into());
    }
    if probe_mode {
        run.check(true);
    }

    let connected = fleet.connected.load(Ordering::Acquire);
    let mut took: Vec<u64> = (0..n)
        .filter(|&i| fleet.ready_ns[i].load(Ordering::Acquire) > 0)
        .map(|i| fleet.took_ns[i].load(Ordering::Acquire))
        .collect();
    took.sort_unstable();
    let last_ready = fleet
        .ready_ns
        .iter()
        .map(|a| a.load(Ordering::Acquire))
        .max()
        .unwrap_or(t0);
    let bound_at = if probe_mode {
        st.last_ok_ns
    } else {
        counted_at
    };
    let bound_s = bound_at.saturating_sub(t0) as f64 / 1e9;
    rep.num(
        "connected_s",
        "all connected (handshake + uid written)",
        last_ready.saturating_sub(t0) as f64 / 1e9,
        3,
        "s",
    );
    rep.num("bound_s", "ALL BOUND", bound_s, 3, "s");
    if bound_s > 0.0 {
        rep.num(
            "clients_per_s",
            "clients bound per second",
            connected as f64 / bound_s,
            0,
            "",
        );
    }
    rep.percentiles_ms("connect_ms", "per client connect+handshake+uid", &took);
    rep.int(
        "slow_connects_1s",
        "connects slower than 1 s (SYN retransmit?)",
        took.iter().filter(|&&t| t >= 1_000_000_000).count() as u64,
    );
    rep.int(
        "probe_retries",
        "probes answered fail and retried",
        st.fails,
    );
    rep.int(
        "failed",
        "clients that failed to connect",
        fleet.failed.load(Ordering::Acquire) as u64,
    );
    rep.usage(&usage, 0, pid);
    if let Some(ms) = usage.server_ms.filter(|_| connected > 0) {
        rep.num(
            "server_cpu_us_per_client",
            "server CPU per client connect+bind",
            ms * 1000.0 / connected as f64,
            1,
            "µs",
        );
    }
    rep.server_rss(pid);
    if took.iter().any(|&t| t >= 1_000_000_000) {
        rep.note("some connects took over 1 s: SYNs were probably dropped (accept backlog / somaxconn too small)");
    }
    rep.finish()
}

type Counter = (
    tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
);

/// The server's `/count` of WebSocket connections.
async fn count_connections(c: &mut Counter) -> Result<u64, String> {
    c.1.write_all(b"/count\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let v = command_reply(&mut c.0).await?;
    v.get("connections")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("no connections in {v}"))
}

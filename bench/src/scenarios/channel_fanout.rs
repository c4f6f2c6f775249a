//! channel-fanout: the same measurement through any door (`--door own|pusher|nchan`).
//!
//! Every client subscribes: to one shared channel (`--channel-mode shared`; pushwire's
//! own door: a group every uid joins) or each to its own (`per-uid`; own door: its uid).
//! Reported, under the same names whatever the door (so `compare` puts doors side by
//! side):
//!
//! * `channel-subscribe` — the connect storm: every client connected, and subscribed as
//!   the server confirms it (own: a probe push answered `ok`; Pusher:
//!   `pusher_internal:subscription_succeeded`; nchan, which confirms nothing: a probe
//!   published to the channel received), and the server's CPU for it;
//! * `channel-idle-mem` (with `--server-pid`) — server RSS (and PSS) after the clients
//!   are subscribed and idle for `--settle-ms`, minus before they existed, per connection;
//! * `channel-fanout` (shared) — `--rounds` rounds of one publish (own: `/group G PAYLOAD`
//!   on the push port; Pusher: a signed `POST /apps/{id}/events`; nchan: `POST
//!   /pub/{channel}`) that every client must receive exactly once, byte-exact: the time
//!   from the write to the last delivery, and server CPU per delivery;
//! * `channel-per-uid` (per-uid) — rounds of one publish per client's channel (own: push
//!   lines pipelined on the push port; others: requests pipelined on one keep-alive
//!   connection), the same figures.
//!
//! The server is `--server-pid` (nchan: nginx's master, its workers added as children).

use super::fanout::{Rounds, fanout_per_uid};
use super::idle_mem::idle_mem;
use super::storm::storm;
use super::{Ctx, baseline, command_reply, field};
use crate::client::Fleet;
use crate::doors::{self, DoorCfg};
use crate::procstat::Meter;
use crate::report::Report;
use crate::track::{self, Run, now_ns};
use crate::{ChannelMode, Door};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;

pub async fn channel_fanout(ctx: &mut Ctx) -> Result<(), String> {
    let door = ctx.o.door;
    let mode = ctx.o.channel_mode;
    let shared = format!("{}.all", ctx.tag);
    let cfg: &'static DoorCfg = Box::leak(Box::new(door_cfg(ctx, &shared)?));
    let before = baseline(ctx.pid());

    // Subscribe.
    let mut own_push = None;
    if door == Door::Own {
        let mut r = storm(ctx).await;
        r.scenario = "channel-subscribe".into();
        r.text("door", "door", door.name());
        let ok = r.ok;
        ctx.emit(r);
        let conn = ctx
            .net
            .tcp(ctx.net.push_addr)
            .await
            .map_err(|e| format!("push connection: {e}"))?;
        let (rd, wr) = conn.into_split();
        let mut c = (BufReader::new(rd), wr);
        if ok && mode == ChannelMode::Shared {
            let fleet = ctx.fleet.ok_or("no clients")?;
            join_group(&mut c, fleet, &shared).await?;
        }
        own_push = Some(c);
    } else {
        let r = door_storm(ctx, cfg).await;
        ctx.emit(r);
    }

    if ctx.pid().is_some() {
        let mut r = idle_mem(ctx, before).await;
        r.scenario = "channel-idle-mem".into();
        r.text("door", "door", door.name());
        ctx.emit(r);
    }

    let r = match (mode, own_push) {
        (ChannelMode::PerUid, Some(_)) => {
            let mut r = fanout_per_uid(ctx).await;
            r.scenario = "channel-per-uid".into();
            r.text("door", "door", door.name());
            r
        }
        (ChannelMode::PerUid, None) => per_uid_rounds(ctx, cfg).await,
        (ChannelMode::Shared, own) => shared_rounds(ctx, cfg, own, &shared).await,
    };
    ctx.emit(r);
    Ok(())
}

fn door_cfg(ctx: &Ctx, shared: &str) -> Result<DoorCfg, String> {
    let o = &ctx.o;
    let rest =
        o.ws.strip_prefix("ws://")
            .or_else(|| o.ws.strip_prefix("wss://"))
            .ok_or("--ws must be a ws:// or wss:// URL")?;
    let scheme = if o.ws.starts_with("wss://") {
        "wss"
    } else {
        "ws"
    };
    let hostport = rest.split('/').next().unwrap_or(rest);
    let http_host = o.http.clone().unwrap_or_else(|| match o.door {
        Door::Nchan => hostport.to_string(),
        _ => "127.0.0.1:2121".into(),
    });
    Ok(DoorCfg {
        door: o.door,
        base: format!("{scheme}://{hostport}"),
        http_host,
        pusher_key: o.pusher_key.clone(),
        pusher_id: o.pusher_id.clone(),
        pusher_secret: o.pusher_secret.clone(),
        shared: (o.channel_mode == ChannelMode::Shared).then(|| shared.to_string()),
    })
}

type PushConn = (BufReader<OwnedReadHalf>, OwnedWriteHalf);

/// Own door: every uid joins group `g` (500 per `/join`), pipelined.
async fn join_group(c: &mut PushConn, fleet: &Fleet, g: &str) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut lines = 0;
    for chunk in fleet.uids.chunks(500) {
        buf.extend_from_slice(format!("/join {g} ").as_bytes());
        buf.extend_from_slice(serde_json::json!(chunk).to_string().as_bytes());
        buf.push(b'\n');
        lines += 1;
    }
    c.1.write_all(&buf)
        .await
        .map_err(|e| format!("writing /join: {e}"))?;
    let mut added = 0;
    for _ in 0..lines {
        added += field(&command_reply(&mut c.0).await?, "added");
    }
    if added != fleet.len() as u64 {
        return Err(format!(
            "/join added {added} members, expected {}",
            fleet.len()
        ));
    }
    Ok(())
}

/// Pusher and nchan: the connect storm, until every client is subscribed.
async fn door_storm(ctx: &mut Ctx, cfg: &'static DoorCfg) -> Report {
    let n = ctx.o.clients;
    let mut rep = Report::new("channel-subscribe");
    rep.text("door", "door", cfg.door.name());
    let fleet: &'static Fleet = Box::leak(Box::new(Fleet::new(n, &ctx.tag)));
    ctx.fleet = Some(fleet);
    rep.int("clients", "clients", n as u64);
    rep.text(
        "channel",
        "channel",
        cfg.shared.as_deref().unwrap_or("one per client"),
    );
    let pid = ctx.pid();
    let meter = Meter::start(pid);
    let t0 = now_ns();
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let probes: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
    let prober = (cfg.door == Door::Nchan)
        .then(|| tokio::spawn(doors::nchan_prober(ctx.net, fleet, cfg, stop, probes)));
    let _p = ctx.progress("subscribe", move || {
        format!(
            "connected {}/{n}, subscribed {}, failed {}, probes {}",
            fleet.connected.load(Ordering::Relaxed),
            fleet.ready_count.load(Ordering::Relaxed),
            fleet.failed.load(Ordering::Relaxed),
            probes.load(Ordering::Relaxed)
        )
    });
    let sem = Arc::new(Semaphore::new(ctx.o.connect_concurrency.max(1)));
    for i in 0..n {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        tokio::spawn(doors::client(ctx.net, fleet, cfg, i, permit));
    }
    let deadline = Instant::now() + Duration::from_millis(ctx.o.storm_timeout_ms);
    loop {
        let ready = fleet.ready_count.load(Ordering::Acquire);
        let failed = fleet.failed.load(Ordering::Acquire);
        if ready + failed >= n {
            break;
        }
        if prober.as_ref().is_some_and(|p| p.is_finished()) {
            break;
        }
        if Instant::now() >= deadline {
            track::error(format!(
                "subscribe: only {ready} of {n} clients subscribed after {} ms",
                ctx.o.storm_timeout_ms
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.store(true, Ordering::Release);
    if let Some(p) = prober {
        match p.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => track::error(format!("subscribe: nchan prober: {e}")),
            Err(e) => track::error(format!("subscribe: nchan prober: {e}")),
        }
    }
    let usage = meter.stop();
    let connected = fleet.connected.load(Ordering::Acquire);
    let last_ready = fleet
        .ready_ns
        .iter()
        .map(|a| a.load(Ordering::Acquire))
        .max()
        .unwrap_or(t0);
    let mut took: Vec<u64> = (0..n)
        .filter(|&i| fleet.ready_ns[i].load(Ordering::Acquire) > 0)
        .map(|i| fleet.took_ns[i].load(Ordering::Acquire))
        .collect();
    took.sort_unstable();
    rep.num(
        "connected_s",
        "all connected (handshake done)",
        last_ready.saturating_sub(t0) as f64 / 1e9,
        3,
        "s",
    );
    let subscribed_s = fleet
        .last_ready_ns
        .load(Ordering::Acquire)
        .saturating_sub(t0) as f64
        / 1e9;
    rep.num("bound_s", "ALL SUBSCRIBED", subscribed_s, 3, "s");
    rep.percentiles_ms("connect_ms", "per client connect+handshake", &took);
    if cfg.door == Door::Nchan {
        rep.int(
            "probes",
            "probes published (nchan confirms nothing)",
            probes.load(Ordering::Acquire),
        );
    }
    rep.int(
        "failed",
        "clients that failed to connect",
        fleet.failed.load(Ordering::Acquire) as u64,
    );
    rep.usage(&usage, 0, pid);
    if let Some(ms) = usage.server_ms.filter(|_| connected > 0) {
        rep.num(
            "server_cpu_us_per_client",
            "server CPU per client connect+subscribe",
            ms * 1000.0 / connected as f64,
            1,
            "µs",
        );
    }
    rep.server_rss(pid);
    rep.finish()
}

/// One publish per round to the shared channel.
async fn shared_rounds(
    ctx: &mut Ctx,
    cfg: &'static DoorCfg,
    mut own: Option<PushConn>,
    shared: &str,
) -> Report {
    let name = "channel-fanout";
    let mut rep = Report::new(name);
    rep.text("door", "door", cfg.door.name());
    let Some(fleet) = ctx.fleet().await else {
        return rep.finish();
    };
    let mut http = None;
    if own.is_none() {
        match ctx.net.tcp(ctx.net.push_addr).await {
            Ok(c) => {
                let (rd, wr) = c.into_split();
                http = Some((BufReader::new(rd), wr));
            }
            Err(e) => {
                track::error(format!("{name}: publisher connection: {e}"));
                return rep.finish();
            }
        }
    }
    let n = fleet.len();
    let rounds = ctx.o.fanout_rounds();
    let pid = ctx.pid();
    rep.int("clients", "clients", n as u64);
    rep.int("rounds", "rounds (one publish each)", u64::from(rounds));
    let mut acc = Rounds::default();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(if round > 0 { 200 } else { 50 })).await;
        let run = Run::start_per_client(name, n, ctx.o.pad);
        let mut expected = 0u64;
        for i in 0..n {
            if fleet.up[i].load(Ordering::Acquire) {
                run.expect_client(i);
                expected += 1;
            }
        }
        let mut payload = Vec::new();
        track::write_bcast(&mut payload, run.base, now_ns(), ctx.o.pad);
        let mut req = Vec::new();
        match &own {
            Some(_) => {
                req.extend_from_slice(format!("/group {shared} ").as_bytes());
                req.extend_from_slice(&payload);
                req.push(b'\n');
            }
            None => cfg.publish_request(&mut req, shared, &payload),
        }
        let _p = ctx.progress(name, move || {
            format!(
                "round {}: delivered {}/{expected}",
                round + 1,
                run.delivered_total.load(Ordering::Relaxed)
            )
        });
        let meter = Meter::start(pid);
        let t0 = now_ns();
        let answer: Result<(), String> = async {
            if let Some(c) = own.as_mut() {
                c.1.write_all(&req)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                let v = command_reply(&mut c.0).await?;
                if field(&v, "reached") != expected {
                    return Err(format!("reply {v} but {expected} clients are subscribed"));
                }
            } else if let Some(c) = http.as_mut() {
                c.1.write_all(&req)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                let (status, body) = crate::http::read_response(&mut c.0).await?;
                if cfg.publish_status(status) != Some(true) {
                    return Err(format!(
                        "publish answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
            }
            Ok(())
        }
        .await;
        let t_reply = now_ns();
        if let Err(e) = answer {
            track::error(format!("{name}: {e}"));
            break;
        }
        acc.end_round(name, round, run, meter, ctx.o.drain_timeout(), t0, t_reply)
            .await;
    }
    acc.report(&mut rep, 0, pid);
    rep.finish()
}

/// Pusher and nchan: one publish per client's channel, pipelined on one keep-alive
/// connection, per round.
async fn per_uid_rounds(ctx: &mut Ctx, cfg: &'static DoorCfg) -> Report {
    let name = "channel-per-uid";
    let mut rep = Report::new(name);
    rep.text("door", "door", cfg.door.name());
    let Some(fleet) = ctx.fleet().await else {
        return rep.finish();
    };
    let conn = match ctx.net.tcp(ctx.net.push_addr).await {
        Ok(c) => c,
        Err(e) => {
            track::error(format!("{name}: publisher connection: {e}"));
            return rep.finish();
        }
    };
    let (rd, mut wr) = conn.into_split();
    let mut rd = BufReader::new(rd);
    let n = fleet.len();
    let rounds = ctx.o.fanout_rounds();
    let pid = ctx.pid();
    rep.int("clients", "clients (one publish each per round)", n as u64);
    rep.int("rounds", "rounds", u64::from(rounds));
    let mut acc = Rounds::default();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(if round > 0 { 200 } else { 50 })).await;
        let run = Run::start(name, n, ctx.o.pad);
        let mut req = Vec::with_capacity(n * 256);
        let mut line = Vec::new();
        for i in 0..n {
            line.clear();
            track::write_line(&mut line, &fleet.uids[i], run.seq(i), now_ns(), ctx.o.pad);
            line.pop(); // the payload is the line without its newline
            cfg.publish_request(&mut req, &fleet.uids[i], &line);
        }
        let _p = ctx.progress(name, move || {
            format!(
                "round {}: replies {}/{n}, delivered {}",
                round + 1,
                run.oks.load(Ordering::Relaxed) + run.fails.load(Ordering::Relaxed),
                run.delivered_total.load(Ordering::Relaxed)
            )
        });
        let meter = Meter::start(pid);
        let t0 = now_ns();
        let write = async { wr.write_all(&req).await.map_err(|e| format!("write: {e}")) };
        let read = async {
            for i in 0..n {
                let (status, body) = crate::http::read_response(&mut rd).await?;
                match cfg.publish_status(status) {
                    Some(ok) => {
                        run.record_reply(run.seq(i), ok);
                    }
                    None => {
                        return Err(format!(
                            "publish answered {status}: {}",
                            String::from_utf8_lossy(&body)
                        ));
                    }
                }
            }
            Ok(now_ns())
        };
        let (w, r) = tokio::join!(write, read);
        let last_reply = match (w, r) {
            (Ok(()), Ok(t)) => t,
            (Err(e), _) | (_, Err(e)) => {
                track::error(format!("{name}: {e}"));
                break;
            }
        };
        acc.end_round(
            name,
            round,
            run,
            meter,
            ctx.o.drain_timeout(),
            t0,
            last_reply,
        )
        .await;
    }
    acc.report(&mut rep, n as u64 * u64::from(rounds), pid);
    rep.finish()
}

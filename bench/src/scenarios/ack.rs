//! ack: protocol v1's end-to-end ack round trip.

use super::Ctx;
use crate::client;
use crate::procstat::Meter;
use crate::report::Report;
use crate::track::{self, Rng, Run, now_ns};
use std::sync::atomic::Ordering;
use tokio::io::AsyncWriteExt;

/// End-to-end ack round trips (see the module docs).
pub async fn ack(ctx: &mut Ctx) -> Report {
    use tokio::io::AsyncBufReadExt;
    let mut rep = Report::new("ack");
    if !ctx.o.v1 {
        track::error("ack: needs --v1 (only opted-in clients acknowledge)".into());
        return rep.finish();
    }
    client::ACK.store(true, Ordering::Release);
    let Some(fleet) = ctx.fleet().await else {
        return rep.finish();
    };
    let count = ctx.o.pick(ctx.o.pushes, 2000, 200).max(1) as usize;
    let targets = ctx.targets(fleet);
    let pid = ctx.pid();
    let pad = ctx.o.pad;
    rep.int("clients", "clients", fleet.len() as u64);
    rep.int("pushes", "pushes (one at a time)", count as u64);
    let mut conn = match ctx.net.tcp(ctx.net.push_addr).await {
        Ok(s) => tokio::io::BufReader::new(s),
        Err(e) => {
            track::error(format!("ack: push connection: {e}"));
            return rep.finish();
        }
    };
    let run = Run::start("ack", count, pad);
    let mut rng = Rng::new(0xac4 ^ now_ns());
    let mut rtt = Vec::with_capacity(count);
    let mut line = String::new();
    let mut buf = Vec::with_capacity(256);
    let meter = Meter::start(pid);
    for i in 0..count {
        let uid = &fleet.uids[rng.below(targets) as usize];
        buf.clear();
        buf.extend_from_slice(format!("/push a{i} ack=5000 ").as_bytes());
        let sent = now_ns();
        track::write_line(&mut buf, uid, run.seq(i), sent, pad);
        if let Err(e) = conn.get_mut().write_all(&buf).await {
            track::error(format!("ack: push write failed: {e}"));
            break;
        }
        line.clear();
        match conn.read_line(&mut line).await {
            Ok(n) if n > 0 => {}
            other => {
                track::error(format!("ack: no reply to push {i}: {other:?}"));
                break;
            }
        }
        rtt.push(now_ns() - sent);
        let acked = line.contains("\"result\":\"acked\"");
        if !acked {
            track::error(format!("ack: push {i} not acked: {}", line.trim_end()));
        }
        // Delivered either way when a tab took it; the checker wants it exactly once.
        run.record_reply(run.seq(i), acked || line.contains("\"connections\":1"));
    }
    let drained = run.drain(ctx.o.drain_timeout()).await;
    let usage = meter.stop();
    track::clear_current();
    if !drained {
        track::error("ack: frames missing after the drain timeout".into());
    }
    run.check(false);
    rtt.sort_unstable();
    rep.percentiles_ms("ack_rtt_ms", "PUSH WRITTEN → ACKED REPLY", &rtt);
    rep.usage(&usage, count as u64, pid);
    rep.finish()
}

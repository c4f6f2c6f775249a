//! latency: paced pushes on a fixed schedule (open loop); push-to-frame percentiles.

use super::Ctx;
use crate::procstat::Meter;
use crate::push::{Reply, ReplyParser};
use crate::report::Report;
use crate::track::{self, Rng, Run, now_ns};
use std::sync::atomic::Ordering;
use std::time::Duration;

pub async fn latency(ctx: &mut Ctx) -> Report {
    let mut rep = Report::new("latency");
    let Some(fleet) = ctx.fleet().await else {
        return rep.finish();
    };
    let rate = ctx.o.latency_rate();
    let dur = ctx.o.latency_duration();
    let count = ((rate as u128 * dur.as_millis()) / 1000).max(1) as usize;
    let targets = ctx.targets(fleet);
    let pid = ctx.pid();
    rep.int("clients", "clients", fleet.len() as u64);
    rep.int("rate", "scheduled rate (pushes/s)", rate);
    rep.int("pushes", "pushes", count as u64);

    let stream = match ctx
        .net
        .tcp(ctx.net.push_addr)
        .await
        .and_then(|s| s.into_std())
    {
        Ok(s) => s,
        Err(e) => {
            track::error(format!("latency: push connection: {e}"));
            return rep.finish();
        }
    };
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.try_clone())
        .and_then(|r| {
            r.set_read_timeout(Some(Duration::from_secs(30)))?;
            Ok(r)
        });
    let reader_stream = match setup {
        Ok(r) => r,
        Err(e) => {
            track::error(format!("latency: socket setup: {e}"));
            return rep.finish();
        }
    };
    let pad = ctx.o.pad;
    let run = Run::start("latency", count, pad);
    let mut rng = Rng::new(0x1a7e ^ now_ns());
    let uids: Vec<u32> = (0..count).map(|_| rng.below(targets) as u32).collect();
    let interval_ns = 1e9 / rate as f64;
    let start_ns = now_ns() + 50_000_000;
    let sched = move |i: usize| start_ns + (i as f64 * interval_ns) as u64;

    let _p = ctx.progress("latency", move || {
        format!(
            "replies {}/{count}, delivered {}",
            run.oks.load(Ordering::Relaxed) + run.fails.load(Ordering::Relaxed),
            run.delivered_total.load(Ordering::Relaxed)
        )
    });
    let meter = Meter::start(pid);
    let sender = std::thread::spawn(move || {
        use std::io::Write as _;
        let mut s = stream;
        let mut sent = vec![0u64; count];
        let mut buf = Vec::with_capacity(256);
        for (i, slot) in sent.iter_mut().enumerate() {
            let due = sched(i);
            loop {
                let now = now_ns();
                if now >= due {
                    break;
                }
                std::thread::sleep(Duration::from_nanos(due - now));
            }
            buf.clear();
            track::write_line(
                &mut buf,
                &fleet.uids[uids[i] as usize],
                run.seq(i),
                due,
                pad,
            );
            *slot = now_ns();
            if let Err(e) = s.write_all(&buf) {
                track::error(format!("latency: push write failed: {e}"));
                break;
            }
        }
        (sent, s)
    });
    let reader = std::thread::spawn(move || {
        use std::io::Read as _;
        let mut s = reader_stream;
        let mut buf = vec![0u8; 16 * 1024];
        let mut parser = ReplyParser::default();
        let mut k = 0usize;
        while k < count {
            let n = match s.read(&mut buf) {
                Ok(0) => {
                    track::error(format!(
                        "latency: server closed the push connection after {k} replies"
                    ));
                    break;
                }
                Ok(n) => n,
                Err(e) => {
                    track::error(format!("latency: push read failed after {k} replies: {e}"));
                    break;
                }
            };
            let res = parser.feed(&buf[..n], |r| {
                if k < count {
                    run.record_reply(run.seq(k), matches!(r, Reply::Ok));
                }
                k += 1;
            });
            if let Err(e) = res {
                track::error(format!("latency: {e}"));
                break;
            }
        }
        if k > count {
            track::error(format!("latency: {} more replies than pushes", k - count));
        }
    });
    let joined = tokio::task::spawn_blocking(move || (sender.join(), reader.join())).await;
    let sent = match joined {
        Ok((Ok((sent, _stream)), Ok(()))) => sent,
        _ => {
            track::error("latency: sender or reader thread panicked".into());
            return rep.finish();
        }
    };
    let drained = run.drain(ctx.o.drain_timeout()).await;
    let usage = meter.stop();
    track::clear_current();
    if !drained {
        track::error("latency: frames missing after the drain timeout".into());
    }
    run.check(false);

    let mut written = Vec::with_capacity(count);
    let mut from_sched = Vec::with_capacity(count);
    let mut lag = Vec::with_capacity(count);
    for (i, &sent_at) in sent.iter().enumerate() {
        if sent_at == 0 {
            continue;
        }
        lag.push(sent_at.saturating_sub(sched(i)));
        let r = run.recv_ns[i].load(Ordering::Acquire);
        if r > 0 {
            written.push(r.saturating_sub(sent_at));
            from_sched.push(run.lat_ns[i].load(Ordering::Acquire));
        }
    }
    written.sort_unstable();
    from_sched.sort_unstable();
    lag.sort_unstable();
    let first = sched(0);
    let last_sent = sent.iter().copied().max().unwrap_or(first);
    if last_sent > first {
        rep.num(
            "achieved_rate",
            "achieved rate (pushes/s)",
            count as f64 / ((last_sent - first) as f64 / 1e9),
            0,
            "",
        );
    }
    rep.percentiles_ms("latency_ms", "PUSH WRITTEN → FRAME RECEIVED", &written);
    rep.percentiles_ms(
        "latency_from_schedule_ms",
        "scheduled → frame received",
        &from_sched,
    );
    rep.percentiles_ms(
        "pacing_lag_ms",
        "sender pacing lag (written − scheduled)",
        &lag,
    );
    rep.usage(&usage, count as u64, pid);
    rep.server_rss(pid);
    rep.note("written = timestamp just before write(); the server's reply is read on another thread and not waited for");
    rep.finish()
}

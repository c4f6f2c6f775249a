//! throughput: pipelined pushes to random uids on K connections.

use super::Ctx;
use crate::procstat::Meter;
use crate::push::{self, Item, PipeOpts, Source};
use crate::report::Report;
use crate::track::{self, Rng, Run, now_ns};
use std::sync::atomic::Ordering;
use std::time::Instant;

pub async fn throughput(ctx: &mut Ctx) -> Report {
    let mut rep = Report::new("throughput");
    let Some(fleet) = ctx.fleet().await else {
        return rep.finish();
    };
    let total = ctx.o.throughput_pushes();
    let k = ctx.o.conns.max(1) as u64;
    let window = ctx.o.window.max(1);
    let targets = ctx.targets(fleet);
    let pid = ctx.pid();
    rep.int("clients", "clients", fleet.len() as u64);
    rep.int("target_uids", "target uids (random)", targets);
    rep.int("conns", "backend connections", k);
    rep.int("window", "in-flight window per connection", window as u64);
    rep.int("pushes", "pushes", total);

    let mut conns = Vec::new();
    for _ in 0..k {
        match ctx.net.tcp(ctx.net.push_addr).await {
            Ok(s) => conns.push(s),
            Err(e) => {
                track::error(format!("throughput: push connection: {e}"));
                return rep.finish();
            }
        }
    }
    let run = Run::start("throughput", total as usize, ctx.o.pad);
    let started = Instant::now();
    let _p = ctx.progress("throughput", move || {
        let done = run.oks.load(Ordering::Relaxed) + run.fails.load(Ordering::Relaxed);
        format!(
            "replies {done}/{total} ({:.0}/s), delivered {}",
            done as f64 / started.elapsed().as_secs_f64(),
            run.delivered_total.load(Ordering::Relaxed)
        )
    });
    let meter = Meter::start(pid);
    let mut handles = Vec::new();
    for (c, conn) in conns.into_iter().enumerate() {
        let c = c as u64;
        let (lo, hi) = (total * c / k, total * (c + 1) / k);
        let mut rng = Rng::new(0x7407 + c * 7919 + now_ns());
        let base = run.base;
        let items = (lo..hi).map(move |j| Item {
            seq: base + j,
            uid: rng.below(targets) as u32,
        });
        handles.push(tokio::spawn(push::pipeline(
            conn,
            run,
            fleet,
            Source::Iter(Box::new(items)),
            PipeOpts {
                window,
                batch: window,
                prebuild: false,
                retry: None,
            },
        )));
    }
    let mut first = u64::MAX;
    let mut last = 0;
    for h in handles {
        match h.await {
            Ok(st) => {
                first = first.min(st.first_write_ns);
                last = last.max(st.last_reply_ns);
            }
            Err(e) => track::error(format!("throughput: connection task: {e}")),
        }
    }
    let drained = run.drain(ctx.o.drain_timeout()).await;
    let usage = meter.stop();
    track::clear_current();
    if !drained {
        track::error("throughput: frames missing after the drain timeout".into());
    }
    run.check(false);
    if last > first {
        rep.num(
            "pushes_per_s_replies",
            "PUSHES/S (first write → last reply)",
            total as f64 / ((last - first) as f64 / 1e9),
            0,
            "",
        );
    }
    rep.percentiles_ms(
        "delivery_ms",
        "push formatted → frame received",
        &run.latencies(),
    );
    rep.usage(&usage, total, pid);
    rep.server_rss(pid);
    rep.finish()
}

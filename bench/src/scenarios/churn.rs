//! churn: a new TCP connection per push.

use super::{Ctx, ms};
use crate::client::Net;
use crate::procstat::Meter;
use crate::report::{Report, pct};
use crate::track::{self, Rng, Run, now_ns};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn churn_one(net: &Net, line: &[u8]) -> Result<bool, String> {
    let mut s = net
        .tcp(net.push_addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(line).await.map_err(|e| format!("write: {e}"))?;
    let mut r = [0u8; 8];
    let mut got = 0;
    loop {
        let n = s
            .read(&mut r[got..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed before the reply ({:?})",
                String::from_utf8_lossy(&r[..got])
            ));
        }
        got += n;
        if r[..got].contains(&b'\n') || got == r.len() {
            break;
        }
    }
    match &r[..got] {
        b"ok\n" => Ok(true),
        b"fail\n" => Ok(false),
        other => Err(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(other)
        )),
    }
}

pub async fn churn(ctx: &mut Ctx) -> Report {
    let mut rep = Report::new("churn");
    let Some(fleet) = ctx.fleet().await else {
        return rep.finish();
    };
    let total = ctx.o.churn_pushes();
    let workers = ctx.o.churn_workers.max(1);
    let targets = ctx.targets(fleet);
    let pid = ctx.pid();
    let pad = ctx.o.pad;
    let net = ctx.net;
    rep.int("pushes", "pushes (one TCP connection each)", total);
    rep.int("workers", "concurrent workers", workers as u64);
    let run = Run::start("churn", total as usize, pad);
    let next = Arc::new(AtomicU64::new(0));
    let n2 = next.clone();
    let _p = ctx.progress("churn", move || {
        format!("{}/{total} pushes", n2.load(Ordering::Relaxed).min(total))
    });
    let meter = Meter::start(pid);
    let mut handles = Vec::new();
    for w in 0..workers {
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new(0xc4 + w as u64 * 31 + now_ns());
            let mut times = Vec::new();
            let mut buf = Vec::with_capacity(256);
            loop {
                let j = next.fetch_add(1, Ordering::AcqRel);
                if j >= total {
                    break;
                }
                let uid = &fleet.uids[rng.below(targets) as usize];
                buf.clear();
                track::write_line(&mut buf, uid, run.seq(j as usize), now_ns(), pad);
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(10), churn_one(net, &buf)).await {
                    Ok(Ok(ok)) => {
                        run.record_reply(run.seq(j as usize), ok);
                        times.push(t.elapsed().as_nanos() as u64);
                    }
                    Ok(Err(e)) => track::error(format!("churn: push {j}: {e}")),
                    Err(_) => track::error(format!("churn: push {j}: no reply within 10 s")),
                }
            }
            times
        }));
    }
    let mut times = Vec::new();
    for h in handles {
        match h.await {
            Ok(t) => times.extend(t),
            Err(e) => track::error(format!("churn: worker: {e}")),
        }
    }
    let drained = run.drain(ctx.o.drain_timeout()).await;
    let usage = meter.stop();
    track::clear_current();
    if !drained {
        track::error("churn: frames missing after the drain timeout".into());
    }
    run.check(false);
    times.sort_unstable();
    rep.percentiles_ms("op_ms", "connect+write+reply per push", &times);
    rep.usage(&usage, total, pid);
    rep.server_rss(pid);
    if !times.is_empty() {
        rep.note(format!("median op {:.3} ms; the kernel's connect/accept/close is part of the server CPU figure", ms(pct(&times, 50.0))));
    }
    rep.finish()
}

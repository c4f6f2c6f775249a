//! idle-mem: server RSS per bound idle client.

use super::{Baseline, Ctx, rss_per};
use crate::procstat;
use crate::report::Report;
use crate::track;
use std::sync::atomic::Ordering;

pub async fn idle_mem(ctx: &mut Ctx, before: Baseline) -> Report {
    let mut rep = Report::new("idle-mem");
    let Some(pid) = ctx.pid() else {
        rep.note("skipped: needs --server-pid");
        return rep.finish();
    };
    let Some(fleet) = ctx.fleet().await else {
        return rep.finish();
    };
    tokio::time::sleep(ctx.o.settle()).await;
    let n = fleet.alive.load(Ordering::Acquire) as u64;
    let after = procstat::server_mem(pid);
    let tcp_after = procstat::tcp_mem_pages();
    let slab_after = procstat::slab_kib();
    rep.int("clients", "bound idle clients", n);
    rep.int(
        "settle_ms",
        "settle time",
        ctx.o.settle().as_millis() as u64,
    );
    match (before.mem, after) {
        (Some(b), Some(a)) if n > 0 => {
            let what = ["server RSS before clients", "server RSS with clients"];
            let per_key = ["rss_per_conn_kib", "rss_per_conn_bytes"];
            rss_per(
                &mut rep,
                what,
                per_key,
                "SERVER RSS PER IDLE CONNECTION",
                (b, a),
                n,
            );
            let anon = (a.rss_anon_kib as f64 - b.rss_anon_kib as f64) / n as f64;
            if let (Some(bp), Some(ap)) = (b.pss_kib, a.pss_kib) {
                rep.num(
                    "pss_per_conn_kib",
                    "  PSS per connection (pages shared by processes split)",
                    (ap as f64 - bp as f64) / n as f64,
                    2,
                    "KiB",
                );
            }
            rep.num(
                "rss_anon_per_conn_kib",
                "  of which anonymous (heap)",
                anon,
                2,
                "KiB",
            );
        }
        _ => {
            track::error("idle-mem: could not read the server's RSS".into());
        }
    }
    if let (Some(b), Some(a)) = (before.slab_kib, slab_after)
        && n > 0
    {
        let per = (a as f64 - b as f64) * 1024.0 / (2 * n) as f64;
        rep.num(
            "kernel_slab_per_socket_bytes",
            "kernel slab per socket (meminfo Slab)",
            per,
            0,
            "B",
        );
    }
    if let (Some(b), Some(a)) = (before.tcp_pages, tcp_after)
        && n > 0
    {
        let per = (a as f64 - b as f64) * 4096.0 / (2 * n) as f64;
        rep.num(
            "kernel_tcp_buf_per_socket_bytes",
            "kernel TCP buffers per socket (sockstat mem)",
            per,
            0,
            "B",
        );
    }
    rep.note(
        "kernel figures are system-wide deltas: both ends of each connection live on this machine, \
         hence divided by 2N (and disturbed by anything else running)",
    );
    if let Some(m) = procstat::mem("self") {
        rep.num(
            "bench_rss_per_client_kib",
            "bench RSS per client (for scale)",
            m.rss_kib as f64 / n.max(1) as f64,
            2,
            "KiB",
        );
    }
    rep.note("run against a freshly started server: RSS never shrinks back after earlier load");
    rep.finish()
}

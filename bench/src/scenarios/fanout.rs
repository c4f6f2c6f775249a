//! fanout: one line per uid, one `/broadcast`, one `/group`; time to the last delivery.

use super::{Ctx, command_reply, field, ms};
use crate::FanoutMode;
use crate::procstat::{self, Meter};
use crate::push::{self, Item, PipeOpts, Source};
use crate::report::Report;
use crate::track::{self, Run, now_ns};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Runs the fan-out mode(s) chosen by `--fanout-mode`, emitting one report per mode.
pub async fn fanout(ctx: &mut Ctx) {
    let modes: &[FanoutMode] = match ctx.o.fanout_mode {
        FanoutMode::All => &[FanoutMode::PerUid, FanoutMode::Broadcast, FanoutMode::Group],
        FanoutMode::PerUid => &[FanoutMode::PerUid],
        FanoutMode::Broadcast => &[FanoutMode::Broadcast],
        FanoutMode::Group => &[FanoutMode::Group],
    };
    for &m in modes {
        let r = match m {
            FanoutMode::Group => fanout_command(ctx, true).await,
            FanoutMode::Broadcast => fanout_command(ctx, false).await,
            _ => fanout_per_uid(ctx).await,
        };
        ctx.emit(r);
    }
}

/// What the fan-out rounds collected.
#[derive(Default)]
pub(super) struct Rounds {
    last_delivery: Vec<u64>,
    last_reply: Vec<u64>,
    deliveries: Vec<u64>,
    usage: procstat::Usage,
    frames: u64,
}

impl Rounds {
    /// Records one round whose first byte was written at `t0`.
    pub(super) fn add(&mut self, run: &Run, t0: u64, last_reply: u64, u: &procstat::Usage) {
        self.last_delivery
            .push(run.last_recv_ns().saturating_sub(t0));
        self.last_reply.push(last_reply.saturating_sub(t0));
        self.deliveries.extend(
            run.recv_ns
                .iter()
                .map(|a| a.load(Ordering::Acquire))
                .filter(|&r| r > 0)
                .map(|r| r.saturating_sub(t0)),
        );
        self.frames += run.delivered_total.load(Ordering::Acquire);
        let add = |a: &mut Option<f64>, b: Option<f64>| {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0.0) + b);
            }
        };
        self.usage.wall_s += u.wall_s;
        add(&mut self.usage.server_ms, u.server_ms);
        add(&mut self.usage.server_ms_hires, u.server_ms_hires);
        add(&mut self.usage.bench_ms, u.bench_ms);
        add(&mut self.usage.bench_ms_hires, u.bench_ms_hires);
        add(&mut self.usage.other_ms, u.other_ms);
        add(&mut self.usage.softirqd_ms, u.softirqd_ms);
    }

    /// Ends round `round` (from 0) of scenario `name`: waits up to `drain` for its
    /// frames, stops the meter, checks every delivery and records the round, first byte
    /// written at `t0`. Frames still missing after the drain are an error.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn end_round(
        &mut self,
        name: &str,
        round: u32,
        run: &Run,
        meter: Meter,
        drain: Duration,
        t0: u64,
        last_reply: u64,
    ) {
        let drained = run.drain(drain).await;
        let u = meter.stop();
        track::clear_current();
        if !drained {
            track::error(format!(
                "{name} round {}: frames missing after the drain timeout",
                round + 1
            ));
        }
        run.check(false);
        self.add(run, t0, last_reply, &u);
    }

    /// `pushes`: push lines written (per-uid: one per client; broadcast/group: one per round).
    pub(super) fn report(mut self, rep: &mut Report, pushes: u64, pid: Option<u32>) {
        let mut sorted = self.last_delivery.clone();
        sorted.sort_unstable();
        if !sorted.is_empty() {
            let list: Vec<String> = self
                .last_delivery
                .iter()
                .map(|&v| format!("{:.1}", ms(v)))
                .collect();
            rep.text(
                "last_delivery_ms_rounds",
                "last delivery per round (ms)",
                &list.join(", "),
            );
            rep.num(
                "last_delivery_ms",
                "LAST DELIVERY (median of rounds)",
                ms(sorted[sorted.len() / 2]),
                1,
                "ms",
            );
            rep.num(
                "last_delivery_ms_best",
                "last delivery (best round)",
                ms(sorted[0]),
                1,
                "ms",
            );
            self.last_reply.sort_unstable();
            rep.num(
                "last_reply_ms",
                "last reply (median of rounds)",
                ms(self.last_reply[self.last_reply.len() / 2]),
                1,
                "ms",
            );
        }
        self.deliveries.sort_unstable();
        rep.percentiles_ms(
            "delivery_ms",
            "per-client delivery time since first write",
            &self.deliveries,
        );
        rep.usage(&self.usage, pushes, pid);
        if let Some(ms) = self
            .usage
            .server_ms_hires
            .or(self.usage.server_ms)
            .filter(|_| self.frames > 0)
        {
            rep.num(
                "server_cpu_us_per_frame",
                "server CPU per delivered frame (schedstat)",
                ms * 1000.0 / self.frames as f64,
                2,
                "µs",
            );
        }
        // The cross-check in clock ticks: it also counts threads that have exited since.
        if let Some(ms) = self.usage.server_ms.filter(|_| self.frames > 0) {
            rep.num(
                "server_cpu_us_per_frame_ticks",
                "server CPU per delivered frame (utime+stime, 10 ms ticks)",
                ms * 1000.0 / self.frames as f64,
                2,
                "µs",
            );
        }
        rep.server_rss(pid);
    }
}

/// One line per uid, all written at once on one push connection.
pub(super) async fn fanout_per_uid(ctx: &mut Ctx) -> Report {
    let mut rep = Report::new("fanout");
    let Some(fleet) = ctx.fleet().await else {
        return rep.finish();
    };
    let n = fleet.len();
    let rounds = ctx.o.fanout_rounds();
    let pid = ctx.pid();
    rep.int(
        "clients",
        "clients (one push line each per round)",
        n as u64,
    );
    rep.int("rounds", "rounds", u64::from(rounds));
    let mut acc = Rounds::default();
    for round in 0..rounds {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let run = Run::start("fanout", n, ctx.o.pad);
        let conn = match ctx.net.tcp(ctx.net.push_addr).await {
            Ok(s) => s,
            Err(e) => {
                track::error(format!("fanout: push connection: {e}"));
                break;
            }
        };
        let base = run.base;
        let items = (0..n).map(move |i| Item {
            seq: base + i as u64,
            uid: i as u32,
        });
        let _p = ctx.progress("fanout", move || {
            format!(
                "round {}: replies {}/{n}, delivered {}",
                round + 1,
                run.oks.load(Ordering::Relaxed) + run.fails.load(Ordering::Relaxed),
                run.delivered_total.load(Ordering::Relaxed)
            )
        });
        let meter = Meter::start(pid);
        let st = push::pipeline(
            conn,
            run,
            fleet,
            Source::Iter(Box::new(items)),
            PipeOpts {
                window: n,
                batch: n,
                prebuild: true,
                retry: None,
            },
        )
        .await;
        acc.end_round(
            "fanout",
            round,
            run,
            meter,
            ctx.o.drain_timeout(),
            st.first_write_ns,
            st.last_reply_ns,
        )
        .await;
    }
    acc.report(&mut rep, n as u64 * u64::from(rounds), pid);
    rep.finish()
}

/// `/broadcast PAYLOAD` (group = false) or `/group G PAYLOAD` to a group that every client's
/// uid joined first (group = true): one line, every client must receive it exactly once.
async fn fanout_command(ctx: &mut Ctx, group: bool) -> Report {
    let name = if group {
        "fanout-group"
    } else {
        "fanout-broadcast"
    };
    let mut rep = Report::new(name);
    let Some(fleet) = ctx.fleet().await else {
        return rep.finish();
    };
    let n = fleet.len();
    let rounds = ctx.o.fanout_rounds();
    let pid = ctx.pid();
    let conn = match ctx.net.tcp(ctx.net.push_addr).await {
        Ok(s) => s,
        Err(e) => {
            track::error(format!("{name}: push connection: {e}"));
            return rep.finish();
        }
    };
    let (rd, mut wr) = conn.into_split();
    let mut rd = tokio::io::BufReader::new(rd);
    let gname = format!("{}-all", ctx.tag);
    if group {
        // Not measured: every uid joins the group, 500 per /join (the server's default
        // --max-list-uids is 1000), pipelined.
        let mut buf = Vec::new();
        let mut lines = 0;
        for chunk in fleet.uids.chunks(500) {
            buf.extend_from_slice(format!("/join {gname} ").as_bytes());
            buf.extend_from_slice(serde_json::json!(chunk).to_string().as_bytes());
            buf.push(b'\n');
            lines += 1;
        }
        if let Err(e) = wr.write_all(&buf).await {
            track::error(format!("{name}: writing /join: {e}"));
            return rep.finish();
        }
        let mut added = 0;
        for _ in 0..lines {
            match command_reply(&mut rd).await {
                Ok(v) => added += field(&v, "added"),
                Err(e) => {
                    track::error(format!("{name}: /join: {e}"));
                    return rep.finish();
                }
            }
        }
        if added != n as u64 {
            track::error(format!("{name}: /join added {added} members, expected {n}"));
        }
        rep.text("group", "group (every client's uid)", &gname);
    }
    rep.int("clients", "clients", n as u64);
    rep.int(
        "rounds",
        "rounds (one command line each)",
        u64::from(rounds),
    );
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
        let mut line = if group {
            format!("/group {gname} ")
        } else {
            "/broadcast ".to_string()
        }
        .into_bytes();
        track::write_bcast(&mut line, run.base, now_ns(), ctx.o.pad);
        line.push(b'\n');
        let _p = ctx.progress(name, move || {
            format!(
                "round {}: delivered {}/{expected}",
                round + 1,
                run.delivered_total.load(Ordering::Relaxed)
            )
        });
        let meter = Meter::start(pid);
        let t0 = now_ns();
        if let Err(e) = wr.write_all(&line).await {
            track::error(format!("{name}: write: {e}"));
            break;
        }
        let reply = command_reply(&mut rd).await;
        let t_reply = now_ns();
        match reply {
            Ok(v) => {
                let (conns, refused) = (field(&v, "connections"), field(&v, "refused"));
                if refused > 0 {
                    track::error(format!(
                        "{name}: {refused} connection(s) refused the message (queue full)"
                    ));
                }
                // Broadcast also reaches connections that are not the bench's.
                let short = if group {
                    field(&v, "reached") != expected
                } else {
                    conns < expected
                };
                if short {
                    track::error(format!(
                        "{name}: reply {v} but {expected} bench clients are bound"
                    ));
                }
            }
            Err(e) => {
                track::error(format!("{name}: {e}"));
                break;
            }
        }
        acc.end_round(name, round, run, meter, ctx.o.drain_timeout(), t0, t_reply)
            .await;
    }
    acc.report(&mut rep, 0, pid);
    rep.finish()
}

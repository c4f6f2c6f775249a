//! The scenarios. What each one measures, exactly:
//!
//! * **storm** — `--clients` N WebSocket clients connect concurrently (at most
//!   `--connect-concurrency` in the TCP-connect/handshake/uid phase at once). Each client, as soon
//!   as its uid frame is written, hands a probe push for its uid to one pipelined push connection;
//!   a probe answered `fail` (the server had not processed the uid yet) is retried after 2 ms.
//!   *Connected* = first connect started → last uid frame written. *All bound* = first connect
//!   started → last probe answered `ok` (the server's own confirmation that every uid is bound);
//!   every probe frame must then arrive. With `--bind-check count` no probe is pushed: *all
//!   bound* is the first `/count` reply showing every connection (polled once every client has
//!   sent its uid), so the clients never receive a message. Connects slower than 1 s are
//!   counted: they are the signature of SYNs dropped by a full accept queue (1 s retransmit).
//! * **idle-mem** — server VmRSS before the clients exist and after they are bound and idle for
//!   `--settle-ms`; reports (after − before) / N, plus the change in kernel slab memory and TCP
//!   buffer memory per socket (system-wide, both ends of each connection live on this machine,
//!   hence divided by 2N).
//! * **pending-mem** — `--clients` N TCP connections to the WebSocket port that send
//!   nothing (or `--request-bytes` B bytes of an upgrade request that never ends) and are
//!   held for `--settle-ms`: server VmRSS per held connection. Run the server with pending
//!   budgets that admit them all (`--max-pending-per-ip`, `--max-pending-handshakes`) and
//!   a bind timeout longer than the run. Then checks the push port still answers `/ping`.
//! * **fanout** — per-uid: all N lines (one per uid) are formatted first, then written on one
//!   push connection in one go; time from the first write to the last client receiving its
//!   frame (and to the last reply), per round. broadcast: one `/broadcast PAYLOAD` line;
//!   group: every uid joins one group first (not timed), then one `/group G PAYLOAD` line; in
//!   both, every client must receive the payload exactly once. `--fanout-mode` picks one; the
//!   default runs all three (one report each).
//! * **latency** — one push connection, pushes to random uids on a fixed schedule (`--rate` per
//!   second for `--duration-ms`) from a dedicated OS thread that never waits for replies (open
//!   loop; a reader thread takes the replies). Each line embeds its *scheduled* time. Reported:
//!   written→received (timestamp taken just before write()), scheduled→received (includes any
//!   pacing lag: no coordinated omission), and the pacing lag itself (written − scheduled).
//! * **throughput** — `--conns` K push connections each keep up to `--window` pushes in flight to
//!   random uids; `--pushes` in total. Pushes/s over first write → last reply, and server CPU
//!   per push over first write → last frame delivered.
//! * **ack** — protocol v1 (`--v1`): every client acknowledges each message (`a SEQ`) as
//!   soon as it checked it; one push connection sends `/push ID ack=5000 LINE` to random
//!   uids, one at a time. The round trip from the write to the `acked` reply (push →
//!   frame → the client's ack → the daemon → the reply), percentiles; `--pushes` of them.
//! * **churn** — `--churn-workers` workers; each push on a new TCP connection: connect, write the
//!   line, read the reply, close. Server CPU per push and per-operation time.
//!
//! * **channel-fanout** — the same through any `--door` (own, pusher, nchan): subscribe,
//!   idle RSS per subscribed connection, then one publish to a shared channel (or one per
//!   client's channel) per round; see `channel_fanout.rs`.
//!
//! Server CPU is utime+stime of /proc/PID/stat (10 ms ticks) over the measured phase, with the
//! schedstat sum (ns) next to it; the bench's own CPU is shown too, since both share the box,
//! and so are ksoftirqd's CPU and everybody else's (a measurement disturbed by other load
//! says so in a note).

mod ack;
mod channel_fanout;
mod churn;
pub mod cluster_count;
pub mod cluster_fanout;
pub mod events_webhook;
mod fanout;
pub mod floor;
mod idle_mem;
mod latency;
mod pending_mem;
mod resume_storm;
mod storm;
mod throughput;

use ack::ack;
use churn::churn;
use fanout::fanout;
use idle_mem::idle_mem;
use latency::latency;
use pending_mem::pending_mem;
use storm::storm;
use throughput::throughput;

use crate::client::{Fleet, Net};
use crate::procstat::{self, Mem};
use crate::report::{Progress, Report};
use crate::track::{self, Rng, now_ns};
use crate::{Opts, Scenario, TlsFirst};
use std::sync::atomic::Ordering;
use std::time::Duration;

pub struct Ctx {
    pub o: Opts,
    pub net: &'static Net,
    pub fleet: Option<&'static Fleet>,
    pub tag: String,
    all_ok: bool,
}

impl Ctx {
    fn pid(&self) -> Option<u32> {
        self.o.server_pid
    }

    pub fn emit(&mut self, r: Report) {
        self.all_ok &= r.ok;
        r.print(self.o.json_only);
    }

    fn progress<F>(&self, label: &'static str, f: F) -> Progress
    where
        F: Fn() -> String + Send + Sync + 'static,
    {
        let every = self.o.progress();
        Progress::start(
            every.is_some(),
            every.unwrap_or(Duration::from_secs(1)),
            label,
            f,
        )
    }

    /// The bound clients, creating them with a (reported) storm if needed.
    async fn fleet(&mut self) -> Option<&'static Fleet> {
        if self.fleet.is_none() {
            let r = storm(self).await;
            self.emit(r);
        }
        let f = self.fleet?;
        let alive = f.alive.load(Ordering::Acquire);
        if alive == 0 {
            track::error("no bound clients left".into());
            return None;
        }
        Some(f)
    }

    /// Uids to target: the first `--targets` clients (default all).
    fn targets(&self, fleet: &Fleet) -> u64 {
        self.o.targets.unwrap_or(fleet.len()).clamp(1, fleet.len()) as u64
    }
}

/// Server memory and kernel TCP memory before the clients exist.
#[derive(Clone, Copy)]
pub struct Baseline {
    mem: Option<Mem>,
    tcp_pages: Option<u64>,
    slab_kib: Option<u64>,
}

fn baseline(pid: Option<u32>) -> Baseline {
    Baseline {
        mem: pid.and_then(procstat::server_mem),
        tcp_pages: procstat::tcp_mem_pages(),
        slab_kib: procstat::slab_kib(),
    }
}

fn run_tag() -> String {
    let mut r = Rng::new(u64::from(std::process::id()) ^ (now_ns() << 20) ^ 0x5eed);
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..5)
        .map(|_| A[r.below(A.len() as u64) as usize] as char)
        .collect()
}

pub async fn main(o: Opts, net: &'static Net) -> Result<bool, String> {
    // Fail fast when the server is not there.
    for (what, addr) in [("WebSocket", net.ws_addr), ("push", net.push_addr)] {
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("cannot reach the {what} port {addr}: {e}")),
            Err(_) => return Err(format!("cannot reach the {what} port {addr}: timeout")),
        }
    }
    let scenario = o.scenario.clone();
    let mut ctx = Ctx {
        o,
        net,
        fleet: None,
        tag: run_tag(),
        all_ok: true,
    };
    match scenario {
        Scenario::Storm => {
            let r = storm(&mut ctx).await;
            ctx.emit(r);
        }
        Scenario::PendingMem {
            request_bytes,
            tls_first,
        } => {
            if ctx.pid().is_none() {
                return Err("pending-mem needs --server-pid".into());
            }
            if tls_first == Some(TlsFirst::Hello) && ctx.net.tls.is_none() {
                return Err(
                    "pending-mem --tls-first hello needs a wss:// --ws and --tls-ca".into(),
                );
            }
            let r = pending_mem(&mut ctx, request_bytes, tls_first).await;
            ctx.emit(r);
        }
        Scenario::IdleMem => {
            if ctx.pid().is_none() {
                return Err("idle-mem needs --server-pid".into());
            }
            let b = baseline(ctx.pid());
            let r = storm(&mut ctx).await;
            ctx.emit(r);
            let r = idle_mem(&mut ctx, b).await;
            ctx.emit(r);
        }
        Scenario::Fanout => {
            fanout(&mut ctx).await;
        }
        Scenario::ChannelFanout => {
            channel_fanout::channel_fanout(&mut ctx).await?;
        }
        Scenario::Latency => {
            let r = latency(&mut ctx).await;
            ctx.emit(r);
        }
        Scenario::Throughput => {
            let r = throughput(&mut ctx).await;
            ctx.emit(r);
        }
        Scenario::Churn => {
            let r = churn(&mut ctx).await;
            ctx.emit(r);
        }
        Scenario::Holder { tag } => {
            ctx.tag = tag;
            let r = storm(&mut ctx).await;
            ctx.emit(r);
            cluster_fanout::holder(&mut ctx).await;
        }
        Scenario::Ack => {
            let r = ack(&mut ctx).await;
            ctx.emit(r);
        }
        Scenario::ResumeStorm => {
            let r = resume_storm::resume_storm(&mut ctx).await;
            ctx.emit(r);
        }
        Scenario::Compare { .. }
        | Scenario::Floor
        | Scenario::FloorSender { .. }
        | Scenario::ClusterFanout { .. }
        | Scenario::ClusterCount { .. }
        | Scenario::EventsWebhook { .. }
        | Scenario::EventsReceiver => {
            return Err("this scenario runs without a server".into());
        }
        Scenario::All => {
            let b = baseline(ctx.pid());
            let r = storm(&mut ctx).await;
            ctx.emit(r);
            let r = idle_mem(&mut ctx, b).await;
            ctx.emit(r);
            fanout(&mut ctx).await;
            let r = latency(&mut ctx).await;
            ctx.emit(r);
            let r = throughput(&mut ctx).await;
            ctx.emit(r);
            let r = churn(&mut ctx).await;
            ctx.emit(r);
        }
    }
    if let Some(f) = ctx.fleet {
        let dropped = f.dropped.load(Ordering::Acquire);
        if dropped > 0 {
            track::error(format!(
                "{dropped} client(s) were disconnected during the run"
            ));
        }
        f.closing.store(true, Ordering::Release);
    }
    Ok(ctx.all_ok)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Reads one reply line (a command's JSON answer).
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(rd: &mut R) -> Result<String, String> {
    let mut line = String::new();
    let fut = tokio::io::AsyncBufReadExt::read_line(rd, &mut line);
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(Ok(0)) => Err("server closed the push connection".into()),
        Ok(Ok(_)) if line.ends_with('\n') => Ok(line.trim_end_matches('\n').to_string()),
        Ok(Ok(_)) => Err("unterminated reply at EOF".into()),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("no reply within 30 s".into()),
    }
}

/// A command reply as JSON, which must say `"ok":true`.
async fn command_reply<R: tokio::io::AsyncBufRead + Unpin>(
    rd: &mut R,
) -> Result<serde_json::Value, String> {
    let line = read_line(rd).await?;
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|_| format!("reply is not JSON: {line:?}"))?;
    if v.get("ok") != Some(&serde_json::Value::Bool(true)) {
        return Err(format!("command refused: {line}"));
    }
    Ok(v)
}

fn field(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

/// Reports server RSS before/after and its growth per connection, in KiB and bytes.
fn rss_per(
    rep: &mut Report,
    labels: [&str; 2],
    keys: [&str; 2],
    headline: &str,
    (before, after): (Mem, Mem),
    n: u64,
) {
    rep.int("rss_before_kib", labels[0], before.rss_kib);
    rep.int("rss_after_kib", labels[1], after.rss_kib);
    let per = (after.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / n as f64;
    rep.num(keys[0], headline, per / 1024.0, 2, "KiB");
    rep.num(keys[1], "  same, bytes", per, 0, "B");
}

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
//! Server CPU is utime+stime of /proc/PID/stat (10 ms ticks) over the measured phase, with the
//! schedstat sum (ns) next to it; the bench's own CPU is shown too, since both share the box,
//! and so are ksoftirqd's CPU and everybody else's (a measurement disturbed by other load
//! says so in a note).

use crate::client::{self, Fleet, Net};
use crate::procstat::{self, Mem, Meter};
use crate::push::{self, Item, PipeOpts, Reply, ReplyParser, Source};
use crate::report::{Progress, Report, pct};
use crate::track::{self, Rng, Run, now_ns};
use crate::{BindCheck, FanoutMode, Opts, Scenario, TlsFirst};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore, mpsc};

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
        mem: pid.and_then(|p| procstat::mem(&p.to_string())),
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
            crate::cluster::holder(&mut ctx).await;
        }
        Scenario::Ack => {
            let r = ack(&mut ctx).await;
            ctx.emit(r);
        }
        Scenario::ResumeStorm => {
            let r = crate::resume::resume_storm(&mut ctx).await;
            ctx.emit(r);
        }
        Scenario::Compare { .. }
        | Scenario::Floor
        | Scenario::FloorSender { .. }
        | Scenario::ClusterFanout { .. }
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

// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------

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

pub async fn pending_mem(
    ctx: &mut Ctx,
    request_bytes: usize,
    tls_first: Option<TlsFirst>,
) -> Report {
    let mut rep = Report::new("pending-mem");
    let Some(pid) = ctx.pid() else {
        rep.note("skipped: needs --server-pid");
        return rep.finish();
    };
    let before = baseline(Some(pid));
    let head = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Pad: ";
    let request: Vec<u8> = match tls_first {
        None => head
            .iter()
            .copied()
            .chain(std::iter::repeat(b'x'))
            .take(request_bytes)
            .collect(),
        // A handshake record's content type: the server waits for the rest of the record.
        Some(TlsFirst::Byte) => vec![0x16],
        // Made per connection (each ClientHello has its own key share).
        Some(TlsFirst::Hello) => Vec::new(),
    };
    let hello = (tls_first == Some(TlsFirst::Hello))
        .then(|| {
            ctx.net
                .tls
                .as_ref()
                .map(|(c, name)| (c.config().clone(), name.clone()))
        })
        .flatten();
    let n = ctx.o.clients;
    let gate = Arc::new(Semaphore::new(ctx.o.connect_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (net, gate, request, hello) = (ctx.net, gate.clone(), request.clone(), hello.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let mut tcp = net.tcp(net.ws_addr).await.ok()?;
            let request = match hello {
                Some((config, name)) => client_hello(config, name)?,
                None => request,
            };
            if !request.is_empty() {
                tcp.write_all(&request).await.ok()?;
            }
            Some(tcp)
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(tcp)) = r {
            held.push(tcp);
        }
    }
    tokio::time::sleep(ctx.o.settle()).await;
    // A connection the server closed (refused, timed out) reads as EOF (or a reset) once
    // whatever it sent first (a TLS server's answer to a ClientHello) is read.
    let mut open = 0u64;
    for tcp in &held {
        let mut b = [0u8; 4096];
        let still = loop {
            match tcp.try_read(&mut b) {
                Ok(0) => break false,
                Ok(_) => {}
                Err(e) => break e.kind() == std::io::ErrorKind::WouldBlock,
            }
        };
        open += u64::from(still);
    }
    let after = procstat::mem(&pid.to_string());
    rep.int("connections", "connections attempted", n as u64);
    rep.int("held", "held open by the server", open);
    match tls_first {
        None => rep.int(
            "request_bytes",
            "request bytes sent by each",
            request.len() as u64,
        ),
        Some(TlsFirst::Byte) => rep.text("tls_first", "TLS sent by each", "one byte"),
        Some(TlsFirst::Hello) => rep.text("tls_first", "TLS sent by each", "a ClientHello"),
    }
    match (before.mem, after) {
        (Some(b), Some(a)) if open > 0 => {
            let what = ["server RSS before", "server RSS while held"];
            let per_key = ["rss_per_pending_kib", "rss_per_pending_bytes"];
            rss_per(
                &mut rep,
                what,
                per_key,
                "SERVER RSS PER PENDING CONNECTION",
                (b, a),
                open,
            );
        }
        _ => track::error("pending-mem: could not read the server's RSS".into()),
    }
    if open < n as u64 {
        track::error(format!(
            "pending-mem: the server closed {} of {n} connections (raise its pending budgets \
             and bind timeout for this measurement)",
            n as u64 - open
        ));
    }
    let ping = async {
        let conn = tokio::net::TcpStream::connect(ctx.net.push_addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (rd, mut wr) = conn.into_split();
        wr.write_all(b"/ping\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        read_line(&mut tokio::io::BufReader::new(rd)).await
    };
    match ping.await {
        Ok(r) if r == "pong" => {}
        other => track::error(format!("pending-mem: /ping on the push port: {other:?}")),
    }
    drop(held);
    rep.finish()
}

/// A fresh ClientHello for `name`, as a browser's first flight (no answer is ever read).
fn client_hello(
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
) -> Option<Vec<u8>> {
    let mut conn = rustls::ClientConnection::new(config, name).ok()?;
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).ok()?;
    }
    Some(hello)
}

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
    let after = procstat::mem(&pid.to_string());
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

// ---------------------------------------------------------------------------------------------

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
struct Rounds {
    last_delivery: Vec<u64>,
    last_reply: Vec<u64>,
    deliveries: Vec<u64>,
    usage: procstat::Usage,
    frames: u64,
}

impl Rounds {
    /// Records one round whose first byte was written at `t0`.
    fn add(&mut self, run: &Run, t0: u64, last_reply: u64, u: &procstat::Usage) {
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

    /// `pushes`: push lines written (per-uid: one per client; broadcast/group: one per round).
    fn report(mut self, rep: &mut Report, pushes: u64, pid: Option<u32>) {
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
async fn fanout_per_uid(ctx: &mut Ctx) -> Report {
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
        let drained = run.drain(ctx.o.drain_timeout()).await;
        let u = meter.stop();
        track::clear_current();
        if !drained {
            track::error(format!(
                "fanout round {}: frames missing after the drain timeout",
                round + 1
            ));
        }
        run.check(false);
        acc.add(run, st.first_write_ns, st.last_reply_ns, &u);
    }
    acc.report(&mut rep, n as u64 * u64::from(rounds), pid);
    rep.finish()
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
        let drained = run.drain(ctx.o.drain_timeout()).await;
        let u = meter.stop();
        track::clear_current();
        if !drained {
            track::error(format!(
                "{name} round {}: frames missing after the drain timeout",
                round + 1
            ));
        }
        run.check(false);
        acc.add(run, t0, t_reply, &u);
    }
    acc.report(&mut rep, 0, pid);
    rep.finish()
}

// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------

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
